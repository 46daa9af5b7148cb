/**
 * TLS: the coordinator serving wss:// with --tls-cert/--tls-key, workers verifying it with --ca.
 *
 * - shared/tls.ts: certificate/key/CA loading errors are ConfigErrors with stable codes; which
 *   connection errors are fatal (verification failures, not TLS at all) and which are retried.
 * - A Worker in process against small local servers: fatal TLS failures end run() with 2 after
 *   one attempt; refused connections and a ws:// client on a TLS port are retried.
 * - Real processes on loopback, with a self-signed certificate made here by openssl: a worker
 *   with --ca trains (same weights hash as gan-train); a worker without it exits 2 with a clear
 *   message, and the coordinator logs the failed handshake.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, get as httpsGet } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { GanError } from '../shared/errors.ts';
import { classifyTlsError, describeTlsClientError, loadCaFile, loadTlsServerFiles } from '../shared/tls.ts';
import { Worker } from '../worker/worker.ts';
import { cleanup, eventsOf, killAll, makeTempDir, readLog, reservePort, spawnCli, waitForEvent, waitForExit, type LogEvent } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const TEST_TIMEOUT = 60_000;
const START_MS = 30_000;
const RUN_MS = 45_000;
const TRAIN_FLAGS = ['--dataset', 'ring8', '--preset', 'none', '--iterations', '40', '--batch-size', '64', '--shards', '8', '--backend', 'wasm'];

let dir = '';
/** Self-signed for IP 127.0.0.1: the coordinator's certificate, and the CA workers need. */
let cert = '';
let key = '';
/** Self-signed for DNS elsewhere.invalid only: names another host, and is another "CA". */
let otherCert = '';
let otherKey = '';

function selfSigned(name: string, san: string): { cert: string; key: string } {
  const out = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
  execFileSync(
    '/usr/bin/openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-addext', `subjectAltName=${san}`, '-keyout', out.key, '-out', out.cert],
    { stdio: 'pipe' },
  );
  return out;
}

beforeAll(() => {
  dir = makeTempDir('gan-tls-');
  ({ cert, key } = selfSigned('gan-test-coordinator', 'IP:127.0.0.1'));
  ({ cert: otherCert, key: otherKey } = selfSigned('gan-test-other', 'DNS:elsewhere.invalid'));
});
afterEach(() => killAll(), HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GanError);
    expect((err as Error).name).toBe('ConfigError');
    return (err as GanError).code;
  }
  throw new Error('expected a ConfigError');
}

describe('loading TLS files (shared/tls.ts)', () => {
  it('accepts a matching certificate and key, and nothing at all (plain ws://)', () => {
    const files = loadTlsServerFiles(cert, key)!;
    expect(files.cert).toContain('BEGIN CERTIFICATE');
    expect(files.key).toContain('PRIVATE KEY');
    expect(loadTlsServerFiles(undefined, undefined)).toBeNull();
    expect(loadCaFile(undefined)).toBeNull();
    expect(loadCaFile(cert)).toContain('BEGIN CERTIFICATE');
  });

  it('refuses broken files with stable codes', () => {
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a pem file\n');
    const missing = join(dir, 'missing.pem');
    expect(codeOf(() => loadTlsServerFiles(cert, undefined))).toBe('TLS_INCOMPLETE');
    expect(codeOf(() => loadTlsServerFiles(undefined, key))).toBe('TLS_INCOMPLETE');
    expect(codeOf(() => loadTlsServerFiles(missing, key))).toBe('TLS_CERT_UNREADABLE');
    expect(codeOf(() => loadTlsServerFiles(cert, missing))).toBe('TLS_KEY_UNREADABLE');
    expect(codeOf(() => loadTlsServerFiles(key, key))).toBe('TLS_CERT_INVALID');
    expect(codeOf(() => loadTlsServerFiles(garbage, key))).toBe('TLS_CERT_INVALID');
    expect(codeOf(() => loadTlsServerFiles(cert, cert))).toBe('TLS_KEY_INVALID');
    expect(codeOf(() => loadTlsServerFiles(cert, otherKey))).toBe('TLS_KEY_MISMATCH');
    // Made valid for 2 days: three days from now it has expired.
    expect(codeOf(() => loadTlsServerFiles(cert, key, new Date(Date.now() + 3 * 86_400_000)))).toBe('TLS_CERT_EXPIRED');
    expect(codeOf(() => loadCaFile(missing))).toBe('TLS_CA_UNREADABLE');
    expect(codeOf(() => loadCaFile(key))).toBe('TLS_CA_INVALID');
    expect(codeOf(() => loadCaFile(garbage))).toBe('TLS_CA_INVALID');
  });
});

describe('which connection errors are fatal (classifyTlsError)', () => {
  const err = (code: string, message = 'x') => Object.assign(new Error(message), { code });
  const ctx = { url: 'wss://coordinator.example:8600', ca: false };

  it('verification failures and "not TLS" are fatal, with what to do', () => {
    const untrusted = classifyTlsError(err('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'), ctx)!;
    expect(untrusted.code).toBe('TLS_CERT_UNTRUSTED');
    expect(untrusted.reason).toMatch(/certificate not trusted.*pass --ca <file> with the coordinator's CA/);
    expect(classifyTlsError(err('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), { ...ctx, ca: true })!.reason).toMatch(/not trusted by the CA given with --ca/);
    for (const code of ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']) expect(classifyTlsError(err(code), ctx)!.code).toBe('TLS_CERT_UNTRUSTED');
    const host = classifyTlsError(err('ERR_TLS_CERT_ALTNAME_INVALID'), ctx)!;
    expect(host.code).toBe('TLS_CERT_HOSTNAME_MISMATCH');
    expect(host.reason).toContain("'coordinator.example'");
    expect(classifyTlsError(err('CERT_HAS_EXPIRED'), ctx)!.code).toBe('TLS_CERT_EXPIRED');
    expect(classifyTlsError(err('CERT_SIGNATURE_FAILURE'), ctx)!.code).toBe('TLS_CERT_REJECTED');
    const notTls = classifyTlsError(err('EPROTO', 'write EPROTO 80:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/x.c:350:'), ctx)!;
    expect(notTls.code).toBe('TLS_NOT_TLS');
    expect(notTls.reason).toContain('EPROTO: wrong version number');
    expect(notTls.reason).toMatch(/use a ws:\/\/ URL, or start the coordinator with --tls-cert and --tls-key/);
  });

  it('network trouble is retried', () => {
    for (const e of [
      err('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.1:8600'),
      err('ECONNRESET', 'socket hang up'),
      err('ETIMEDOUT'),
      err('EHOSTUNREACH'),
      err('ENOTFOUND', 'getaddrinfo ENOTFOUND gan-coordinator'),
      err('EAI_AGAIN'),
      new Error('Opening handshake has timed out'),
      new Error('Unexpected server response: 502'),
    ]) {
      expect(classifyTlsError(e, ctx), e.message).toBeNull();
    }
  });

  it("the coordinator's side names the likely mistake", () => {
    expect(describeTlsClientError(err('ERR_SSL_HTTP_REQUEST', 'http request')).hint).toMatch(/must use wss:\/\//);
    expect(describeTlsClientError(err('ECONNRESET', 'socket hang up')).hint).toMatch(/--ca/);
  });
});

// ------------------------------------------------------------------ a Worker in process

function memoryLog(): { log: pino.Logger; events: LogEvent[] } {
  const events: LogEvent[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void events.push(JSON.parse(line) as LogEvent) });
  return { log, events };
}

function workerFor(url: string, ca: string | null, maxRetries: number) {
  const { log, events } = memoryLog();
  const worker = new Worker({
    url,
    token: 'secret',
    workerId: 'w',
    backend: 'cpu',
    log,
    stay: false,
    maxRetries,
    backoff: { initialMs: 20, maxMs: 40 },
    idleTimeoutMs: 5000,
    testDelayMs: 0,
    ca,
  });
  return { worker, events };
}

async function listen(server: HttpServer | ReturnType<typeof createHttpsServer>): Promise<number> {
  new WebSocketServer({ server });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

describe('a worker against TLS endpoints (in process)', () => {
  const servers: { close(): void; closeAllConnections(): void }[] = [];
  afterAll(() => {
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
  });

  it('gives up at once, exit code 2, when the certificate names another host', async () => {
    const server = createHttpsServer(loadTlsServerFiles(otherCert, otherKey)!);
    servers.push(server);
    const port = await listen(server);
    // Trusted (it is its own CA) but issued for elsewhere.invalid, not 127.0.0.1.
    const { worker, events } = workerFor(`wss://127.0.0.1:${port}`, loadCaFile(otherCert), Infinity);
    expect(await worker.run()).toBe(2);
    expect(worker.fatal?.code).toBe('TLS_CERT_HOSTNAME_MISMATCH');
    const failed = eventsOf(events, 'tls_failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ code: 'TLS_CERT_HOSTNAME_MISMATCH', tlsCode: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(String(failed[0].msg)).toMatch(/does not name '127\.0\.0\.1'/);
    expect(eventsOf(events, 'reconnecting')).toEqual([]);
  });

  it('gives up at once when a wss:// URL points at a coordinator without TLS', async () => {
    const server = createHttpServer();
    servers.push(server);
    const port = await listen(server);
    const { worker, events } = workerFor(`wss://127.0.0.1:${port}`, null, Infinity);
    expect(await worker.run()).toBe(2);
    expect(worker.fatal?.code).toBe('TLS_NOT_TLS');
    expect(eventsOf(events, 'reconnecting')).toEqual([]);
  });

  it('retries a refused connection, and a ws:// client on a TLS port (only --max-retries stops it)', async () => {
    const refusedPort = await reservePort();
    const refused = workerFor(`wss://127.0.0.1:${refusedPort}`, loadCaFile(cert), 2);
    expect(await refused.worker.run()).toBe(1);
    expect(refused.worker.fatal).toBeNull();
    const retries = eventsOf(refused.events, 'reconnecting');
    expect(retries).toHaveLength(2);
    expect(String(retries[0].reason)).toContain('ECONNREFUSED');
    expect(eventsOf(refused.events, 'gave_up')).toHaveLength(1);

    const tls = loadTlsServerFiles(cert, key)!;
    const server = createHttpsServer(tls);
    servers.push(server);
    const seen: unknown[] = [];
    server.on('tlsClientError', (e) => seen.push(e));
    const port = await listen(server);
    const plain = workerFor(`ws://127.0.0.1:${port}`, null, 1);
    expect(await plain.worker.run()).toBe(1);
    expect(eventsOf(plain.events, 'reconnecting')).toHaveLength(1);
    expect(seen.length).toBeGreaterThan(0);
    expect(describeTlsClientError(seen[0]).hint).toMatch(/must use wss:\/\//);
  });
});

// ------------------------------------------------------------------ real processes

function getStatus(port: number, ca: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    httpsGet({ host: '127.0.0.1', port, path: '/status', ca }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    }).on('error', reject);
  });
}

describe('wss:// between real processes', () => {
  it(
    'a worker with --ca trains (same hash as gan-train); one without is refused with a clear message, exit 2',
    async () => {
      const trainDir = makeTempDir('gan-tls-train-');
      const train = spawnCli('train', [...TRAIN_FLAGS, '--run-dir', trainDir, '--sample-every', '0'], { name: 'gan-train' });
      const runDir = makeTempDir('gan-tls-coord-');
      const env = { GAN_TOKEN: 'tls-test-token' };
      const coordinator = spawnCli(
        'coordinator',
        [...TRAIN_FLAGS, '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--status-interval', '0.5', '--tls-cert', cert, '--tls-key', key, '--fan-out', '2'],
        { env, name: 'coordinator' },
      );
      const listening = await waitForEvent(coordinator, 'listening', START_MS);
      expect(listening.tls).toBe(true);
      const port = Number(listening.port);
      expect(listening.url).toBe(`wss://127.0.0.1:${port}`);
      const url = `wss://127.0.0.1:${port}`;

      // The untrusting worker goes first, while the coordinator waits for workers: it cannot
      // outrun a run that has not started (a 40-iteration run can be over in ~3 s).
      const bad = spawnCli('worker', ['--coordinator', url, '--id', 'no-ca', '--backend', 'wasm'], { env, name: 'worker no-ca' });

      // Refused: exit 2, after one attempt, saying what failed and what to do.
      expect(await waitForExit(bad, START_MS)).toEqual({ code: 2, signal: null });
      expect(eventsOf(bad, 'worker_started')[0].tls).toBe('system-ca');
      const failed = eventsOf(bad, 'tls_failed');
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ code: 'TLS_CERT_UNTRUSTED', tlsCode: 'DEPTH_ZERO_SELF_SIGNED_CERT', url });
      expect(String(failed[0].msg)).toMatch(/TLS verification failed: certificate not trusted .*pass --ca <file> with the coordinator's CA certificate/);
      expect(bad.stderr.join('\n')).toMatch(/^error \[TLS_CERT_UNTRUSTED\]: TLS verification failed: certificate not trusted/m);
      expect(eventsOf(bad, 'reconnecting')).toEqual([]);
      expect(eventsOf(bad, 'welcomed')).toEqual([]);

      // GET /status answers over https on the same port (what HTTPS probes use); no worker has
      // joined yet, so the run is certainly not finished.
      const status = await getStatus(port, loadCaFile(cert)!);
      expect(status.status).toBe(200);
      expect(status.body).toMatchObject({ iterations: 40, finished: false, iteration: 0 });

      // It offers to relay, but under TLS the tree is off (relay links would be plain ws://).
      const good = spawnCli('worker', ['--coordinator', url, '--ca', cert, '--id', 'with-ca', '--backend', 'wasm', '--relay-listen', '127.0.0.1:0'], { env, name: 'worker with-ca' });
      await waitForEvent(good, 'welcomed', START_MS);

      const done = await waitForEvent(coordinator, 'run_finished', RUN_MS);
      expect(done).toMatchObject({ iterations: 40, stopped: false });
      expect(await waitForExit(coordinator, 15_000)).toEqual({ code: 0, signal: null });
      expect(await waitForExit(good, 15_000)).toEqual({ code: 0, signal: null });
      expect(eventsOf(good, 'worker_started')[0].tls).toBe('ca-file');
      expect(eventsOf(good, 'worker_finished')).toHaveLength(1);

      const reference = await waitForEvent(train, 'run_finished', RUN_MS);
      expect(done.weightsHash).toBe(reference.weightsHash);

      const log = readLog(runDir);
      expect(eventsOf(log, 'worker_joined').map((e) => e.worker)).toEqual(['with-ca']);
      expect(eventsOf(log, (e) => e.event === 'warning' && e.code === 'RELAY_TREE_OFF')).toMatchObject([{ fanOut: 2, tls: true }]);
      expect(eventsOf(log, 'relay_placed')).toEqual([]);
      const handshake = eventsOf(log, (e) => e.event === 'warning' && e.code === 'TLS_HANDSHAKE_FAILED');
      expect(handshake.length).toBeGreaterThanOrEqual(1);
      expect(handshake[0].address).toBe('127.0.0.1');
    },
    TEST_TIMEOUT,
  );

  it(
    'bad TLS files and flags stop the CLIs at start with their codes (exit 2)',
    async () => {
      const runDir = makeTempDir('gan-tls-bad-');
      const procs = [
        { expect: 'TLS_KEY_MISMATCH', p: spawnCli('coordinator', ['--dataset', 'ring8', '--preset', 'none', '--port', '0', '--run-dir', runDir, '--tls-cert', cert, '--tls-key', otherKey], { name: 'coordinator key mismatch' }) },
        { expect: 'TLS_CA_UNREADABLE', p: spawnCli('worker', ['--coordinator', 'wss://127.0.0.1:1', '--ca', join(dir, 'nope.pem')], { name: 'worker missing ca' }) },
        { expect: 'TLS_CA_WITHOUT_WSS', p: spawnCli('worker', ['--coordinator', 'ws://127.0.0.1:1', '--ca', cert], { name: 'worker ca on ws' }) },
      ];
      for (const { expect: code, p } of procs) {
        expect(await waitForExit(p, START_MS), p.name).toEqual({ code: 2, signal: null });
        expect(p.stderr.join('\n'), p.name).toMatch(new RegExp(`^error \\[${code}\\]: `, 'm'));
      }
    },
    TEST_TIMEOUT,
  );
});
