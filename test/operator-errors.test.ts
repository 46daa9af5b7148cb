/**
 * What operators hit, as real processes: a coordinator on a port already in use and a start with
 * a config error print one `error [CODE]: ...` line, exit 2 and leave no run directory behind;
 * a worker stopped while it waits to reconnect exits at once (worker_finished), and a second
 * signal forces a worker that is still closing its connection.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, eventsOf, makeTempDir, reservePort, spawnCli, waitForEvent, waitForExit, type Proc } from './helpers/processes.ts';

/** Generous bounds for a loaded machine (load average 8 on 2 cores): a CLI start loads tfjs. */
const EXIT_MS = 60_000;
const TEST_MS = 120_000;

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) s.close();
  await cleanup();
});

/** A TCP server on a loopback port, held for the test. */
function holdPort(onSocket: (s: Socket) => void = () => {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer(onSocket);
    servers.push(srv);
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve((srv.address() as { port: number }).port));
  });
}

/** The process's stderr as one error line: exactly one line, `error [CODE]: message`. */
function errorLine(p: Proc): { code: string; message: string } {
  const lines = p.stderr.filter((l) => l.trim());
  expect(lines, `${p.name} stderr`).toHaveLength(1);
  const m = /^error \[([A-Z_]+)\]: (.+)$/.exec(lines[0]);
  expect(m, lines[0]).not.toBeNull();
  return { code: m![1], message: m![2] };
}

describe('coordinator start-up errors', () => {
  it(
    'a port already in use: one line error [PORT_IN_USE], exit 2, before run_started and before anything is written',
    async () => {
      const port = await holdPort();
      const runDir = join(makeTempDir('gan-port-'), 'run');
      const c = spawnCli('coordinator', ['--dataset', 'ring8', '--preset', 'none', '--backend', 'wasm', '--host', '127.0.0.1', '--port', String(port), '--run-dir', runDir]);
      expect((await waitForExit(c, EXIT_MS)).code).toBe(2);
      const { code, message } = errorLine(c);
      expect(code).toBe('PORT_IN_USE');
      expect(message).toContain(`port ${port} on 127.0.0.1 is already in use`);
      expect(message).toMatch(/another --port/);
      expect(message).toMatch(/stop the process/);
      expect(eventsOf(c, 'run_started')).toEqual([]);
      expect(existsSync(runDir), 'the run directory was created').toBe(false);
    },
    TEST_MS,
  );

  it(
    'a port in use leaves an existing run directory as it was (nothing added)',
    async () => {
      const port = await holdPort();
      const runDir = makeTempDir('gan-port-');
      mkdirSync(join(runDir, 'notes'));
      const c = spawnCli('coordinator', ['--dataset', 'ring8', '--preset', 'none', '--backend', 'wasm', '--host', '127.0.0.1', '--port', String(port), '--run-dir', runDir]);
      expect((await waitForExit(c, EXIT_MS)).code).toBe(2);
      expect(errorLine(c).code).toBe('PORT_IN_USE');
      expect(readdirSync(runDir)).toEqual(['notes']);
    },
    TEST_MS,
  );

  it(
    'config errors (coordinator and gan-train) leave no run directory behind',
    async () => {
      const base = makeTempDir('gan-config-');
      const port = String(await reservePort());
      const cases: { proc: Proc; runDir: string; code: string }[] = [];
      const start = (cli: 'coordinator' | 'train', args: string[], code: string) => {
        const runDir = join(base, `run-${cases.length}`);
        const net = cli === 'coordinator' ? ['--port', port] : [];
        cases.push({ proc: spawnCli(cli, ['--dataset', 'ring8', '--preset', 'none', '--backend', 'wasm', ...net, '--run-dir', runDir, ...args], { name: `${cli} ${code}` }), runDir, code });
      };
      start('coordinator', ['--host', '0.0.0.0'], 'INSECURE_LISTEN');
      start('coordinator', ['--host', '127.0.0.1', '--batch-size', '63', '--shards', '4'], 'BATCH_NOT_DIVISIBLE');
      start('train', ['--batch-size', '63', '--shards', '4'], 'BATCH_NOT_DIVISIBLE');
      for (const { proc, runDir, code } of cases) {
        expect((await waitForExit(proc, EXIT_MS)).code, proc.name).toBe(2);
        expect(errorLine(proc).code).toBe(code);
        expect(eventsOf(proc, 'run_started')).toEqual([]);
        expect(existsSync(runDir), `${proc.name}: ${runDir} was created`).toBe(false);
      }
    },
    TEST_MS,
  );
});

describe('stopping a worker', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(
      `${signal} during its reconnect backoff (60 s): exits 0 at once, logging worker_finished`,
      async () => {
        const port = await reservePort(); // nobody listens: connection refused, then the backoff
        const w = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'w-stop', '--backend', 'wasm'], {
          env: { GAN_TEST_BACKOFF_MS: '60000' },
        });
        const waiting = await waitForEvent(w, 'reconnecting', EXIT_MS);
        expect(Number(waiting.inMs)).toBeGreaterThanOrEqual(45_000);
        const sentAt = performance.now();
        w.child.kill(signal);
        const exit = await waitForExit(w, 10_000);
        const ms = performance.now() - sentAt;
        expect(exit).toEqual({ code: 0, signal: null });
        expect(eventsOf(w, 'stopping')).toEqual([expect.objectContaining({ signal })]);
        expect(eventsOf(w, 'worker_finished')).toEqual([expect.objectContaining({ stopped: true, signal, shardsDone: 0, reconnects: 0 })]);
        expect(w.stderr.filter((l) => l.trim())).toEqual([]);
        console.log(`[operator-errors] worker stopped by ${signal} during a ${waiting.inMs} ms backoff exited after ${ms.toFixed(0)} ms`);
      },
      TEST_MS,
    );
  }

  it(
    'a second signal forces a worker that is still closing its connection (exit 130)',
    async () => {
      // A "coordinator" that completes the WebSocket upgrade and then never answers anything, so a
      // stopping worker waits for the close handshake (ws gives it 30 s).
      const port = await holdPort((socket) => {
        socket.on('error', () => {});
        socket.once('data', (req) => {
          const key = /sec-websocket-key:\s*(\S+)/i.exec(req.toString('latin1'))?.[1] ?? '';
          const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
          socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        });
      });
      const w = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'w-force', '--backend', 'wasm']);
      await waitForEvent(w, 'connected', EXIT_MS);
      w.child.kill('SIGTERM');
      await waitForEvent(w, 'stopping', EXIT_MS);
      expect(w.exit, 'the first signal already ended the worker: the test did not reach the forced exit').toBeNull();
      w.child.kill('SIGTERM');
      expect(await waitForExit(w, 10_000)).toEqual({ code: 130, signal: null });
    },
    TEST_MS,
  );
});

describe('worker start-up errors', () => {
  it(
    '--relay-advertise must be a ws:// or wss:// URL (children dial it): one line error [BAD_RELAY_ADVERTISE], exit 2',
    async () => {
      for (const [url, why] of [['ws+unix:/var/run/docker.sock', 'must be ws:// or wss://, not ws+unix://'], ['10.0.0.7:8700', 'is not a URL'], ['ws://user:pw@10.0.0.7:8700', 'must not carry credentials']]) {
        const w = spawnCli('worker', ['--coordinator', 'ws://127.0.0.1:9', '--backend', 'wasm', '--relay-listen', '127.0.0.1:0', '--relay-advertise', url]);
        expect((await waitForExit(w, EXIT_MS)).code, url).toBe(2);
        const { code, message } = errorLine(w);
        expect(code).toBe('BAD_RELAY_ADVERTISE');
        expect(message).toContain(why);
        expect(eventsOf(w, 'connected')).toEqual([]);
      }
    },
    TEST_MS,
  );
});
