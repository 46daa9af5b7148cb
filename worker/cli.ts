/**
 * gan-worker: joins a coordinator and computes gradients until the run ends.
 */
import { hostname } from 'node:os';
import { loadToken } from '../shared/auth.ts';
import { initBackend } from '../shared/backend.ts';
import { backendChoiceLine } from '../shared/backend-choice.ts';
import { parseCli, printInfo } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { ConfigError } from '../shared/errors.ts';
import { relayUrlProblem } from '../shared/protocol.ts';
import { createLogger } from '../shared/log.ts';
import { loadCaFile } from '../shared/tls.ts';
import { installSocketErrorGuard } from '../shared/socket-guard.ts';
import { DEFAULT_BACKOFF, Worker } from './worker.ts';
import { TreeLink } from './tree-link.ts';
import { WORKER_CLI } from './cli-spec.ts';

// The flag table and help live in cli-spec.ts (no tfjs there: bin/gan-worker.js answers --help
// and --version from it before loading this module).
export { WORKER_FLAGS } from './cli-spec.ts';

async function main(): Promise<number> {
  const v = parseCli(WORKER_CLI, process.argv.slice(2));
  if (printInfo(WORKER_CLI, v)) return 0;
  const url = typeof v.coordinator === 'string' ? v.coordinator : process.env.GAN_COORDINATOR;
  if (!url) throw new ConfigError('NO_COORDINATOR', 'say where the coordinator is: --coordinator ws://<host>:<port> (or GAN_COORDINATOR)');
  if (!/^wss?:\/\//.test(url)) throw new ConfigError('BAD_COORDINATOR_URL', `--coordinator must be a ws:// or wss:// URL; got '${url}'`);
  const ca = loadCaFile(typeof v.ca === 'string' ? v.ca : undefined);
  if (ca && !url.startsWith('wss://')) {
    throw new ConfigError('TLS_CA_WITHOUT_WSS', `--ca only applies to wss:// coordinators; got '${url}' (use wss:// if the coordinator runs with --tls-cert/--tls-key)`);
  }
  // Relay flags are checked before the backend loads: a typo fails at once.
  const relayListen = parseListen(v['relay-listen']);
  const advertise = relayAdvertise(v['relay-advertise']);
  if (advertise && !relayListen) throw new ConfigError('RELAY_ADVERTISE_WITHOUT_LISTEN', '--relay-advertise names the URL of a --relay-listen listener; give --relay-listen too');
  const workerId = typeof v.id === 'string' ? v.id : `${hostname()}-${process.pid}`;
  const log = createLogger({ name: 'worker', pretty: v.pretty === true ? true : undefined }).child({ worker: workerId });
  const token = loadToken(typeof v['token-file'] === 'string' ? v['token-file'] : undefined);
  const backend = await initBackend((v.backend as 'auto') ?? 'auto');
  log.info({ event: 'worker_started', backend: backend.name, backendSkipped: backend.skipped, url, auth: token ? 'token' : 'none', tls: url.startsWith('wss://') ? (ca ? 'ca-file' : 'system-ca') : 'none' }, 'worker started');
  const chosen = backendChoiceLine(backend, (v.backend as 'auto') ?? 'auto');
  log.info({ event: 'backend_selected', ...chosen.fields }, chosen.msg);
  if (Number(process.env.GAN_TEST_CORRUPT_GRADIENT ?? 0)) {
    log.warn({ event: 'warning', code: 'TEST_CORRUPT_GRADIENT', scale: Number(process.env.GAN_TEST_CORRUPT_GRADIENT) }, 'test hook GAN_TEST_CORRUPT_GRADIENT is set: this worker returns wrong gradients');
  }
  const tree = new TreeLink({
    workerId,
    log,
    listen: relayListen,
    advertise,
    // Test hooks (never set them in production): GAN_TEST_RELAY_CORRUPT=1 alters every weights
    // chunk this relay forwards (a malicious relay), GAN_TEST_RELAY_MUTE=1 forwards none (a stalled
    // relay), GAN_TEST_RELAY_DROP_SUMS=1 sends no sums up (its own nor its children's); GAN_TEST_RELAY_STALL_MS
    // shortens the stall timeout.
    corrupt: process.env.GAN_TEST_RELAY_CORRUPT === '1',
    mute: process.env.GAN_TEST_RELAY_MUTE === '1',
    dropSums: process.env.GAN_TEST_RELAY_DROP_SUMS === '1',
    stallMs: Number(process.env.GAN_TEST_RELAY_STALL_MS ?? 0) || undefined,
  });
  if (tree.misbehaving) log.warn({ event: 'warning', code: 'TEST_RELAY_HOOK', hook: tree.misbehaving }, `test hook GAN_TEST_RELAY_${tree.misbehaving.toUpperCase()} is set: this relay ${tree.misbehaving === 'corrupt' ? 'alters the weights it forwards' : tree.misbehaving === 'mute' ? 'withholds the weights it should forward' : 'sends no sums up'}`);
  await tree.prepare();
  const worker = new Worker({
    url,
    token,
    workerId,
    backend: backend.name,
    log,
    stay: v.stay === true,
    maxRetries: v['max-retries'] === undefined ? Infinity : Number(v['max-retries']),
    // Test hook: GAN_TEST_BACKOFF_MS=<ms> waits that long before every reconnect (a test stops a worker mid-wait).
    backoff: Number(process.env.GAN_TEST_BACKOFF_MS ?? 0) > 0 ? { initialMs: Number(process.env.GAN_TEST_BACKOFF_MS), maxMs: Number(process.env.GAN_TEST_BACKOFF_MS) } : DEFAULT_BACKOFF,
    idleTimeoutMs: 30000,
    // Test hooks (never set them in production): GAN_TEST_SHARD_DELAY_MS delays every result
    // (a straggler); GAN_TEST_CORRUPT_GRADIENT=<scale> multiplies every gradient by (1 + scale),
    // a finite but wrong result that only --verify-fraction on the coordinator can catch.
    testDelayMs: Number(process.env.GAN_TEST_SHARD_DELAY_MS ?? 0),
    testCorruptScale: Number(process.env.GAN_TEST_CORRUPT_GRADIENT ?? 0) || 0,
    progressIntervalMs: 1000 * (v['status-interval'] === undefined ? 15 : Number(v['status-interval'])),
    ca,
    tree,
  });
  installSocketErrorGuard(log);
  // The first SIGINT/SIGTERM stops the worker: at once when it is waiting to reconnect, else once
  // its connection is closed (exit 0, worker_finished). A second one forces the exit.
  let signals = 0;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (++signals > 1) process.exit(130);
      log.info({ event: 'stopping', signal: sig }, 'stopping (signal again to force)');
      worker.stop(sig);
    });
  }
  const code = await worker.run();
  await tree.close();
  // The log line has the details; this one is for a person watching the terminal or journal.
  if (worker.fatal) process.stderr.write(`error [${worker.fatal.code}]: ${worker.fatal.reason}\n`);
  return code;
}

/** --relay-listen host:port (an IPv6 host in brackets), or undefined. */
function parseListen(v: unknown): { host: string; port: number } | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ConfigError('BAD_RELAY_LISTEN', `--relay-listen must be <host>:<port> (port 0-65535, e.g. 0.0.0.0:8700), got '${v}'`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

function relayAdvertise(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const problem = v === '' ? 'is empty' : relayUrlProblem(v);
  if (problem) throw new ConfigError('BAD_RELAY_ADVERTISE', `--relay-advertise must be a ws:// or wss:// URL children can dial (e.g. ws://203.0.113.7:8700); '${v}' ${problem}`);
  return v;
}

const isMain = process.argv[1] && /gan-worker(\.js)?$|worker[\\/]cli\.ts$/.test(process.argv[1]);
if (isMain) runMain(main);
