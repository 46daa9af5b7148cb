/**
 * gan-worker: joins a coordinator and computes gradients until the run ends.
 */
import { hostname } from 'node:os';
import { loadToken } from '../shared/auth.ts';
import { initBackend } from '../shared/backend.ts';
import { COMMON_FLAGS, helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { ConfigError } from '../shared/errors.ts';
import { createLogger } from '../shared/log.ts';
import { loadCaFile } from '../shared/tls.ts';
import { installSocketErrorGuard } from '../shared/socket-guard.ts';
import { DEFAULT_BACKOFF, Worker } from './worker.ts';

export const WORKER_FLAGS: FlagTable = {
  coordinator: { type: 'string', help: 'coordinator URL, e.g. ws://host:8600' },
  'token-file': { type: 'string', help: 'file whose first line is the shared token (else GAN_TOKEN)' },
  id: { type: 'string', help: 'worker id shown in the coordinator log', defaultText: '<hostname>-<pid>' },
  stay: { type: 'boolean', help: 'keep waiting for the next run when the coordinator finishes one' },
  'max-retries': { type: 'string', kind: 'int', help: 'give up after N failed connection attempts in a row', defaultText: 'never give up' },
  'status-interval': { type: 'string', kind: 'number', help: 'worker_progress line at least every s seconds while computing (and every 500 shards)', defaultText: '15' },
  pretty: { type: 'boolean', help: 'human-readable log on stdout (default when stdout is a terminal)' },
  ca: { type: 'string', help: "PEM file with the CA (or self-signed certificate) to trust for a wss:// coordinator", defaultText: "the system's CAs" },
};

const USAGE = `Usage: gan-worker --coordinator ws://<host>:<port> [options]
       gan-worker --coordinator wss://<host>:<port> [--ca <file>] [options]

Computes D and G gradients for the micro-shards the coordinator hands it. Holds no data and
no training state: start, stop or kill workers at any time. A coordinator that refuses this
worker (token, protocol version) or a wss:// certificate that fails verification ends it with
exit code 2; an unreachable coordinator is retried with backoff. SIGINT/SIGTERM stop it (exit 0,
also while it waits to reconnect); a second signal forces the exit (130).`;

async function main(): Promise<number> {
  const flags = { ...WORKER_FLAGS, ...COMMON_FLAGS };
  const v = parseFlags(process.argv.slice(2), flags);
  if (v.help) {
    process.stdout.write(helpText(USAGE, flags));
    return 0;
  }
  const url = typeof v.coordinator === 'string' ? v.coordinator : process.env.GAN_COORDINATOR;
  if (!url) throw new ConfigError('NO_COORDINATOR', 'say where the coordinator is: --coordinator ws://<host>:<port> (or GAN_COORDINATOR)');
  if (!/^wss?:\/\//.test(url)) throw new ConfigError('BAD_COORDINATOR_URL', `--coordinator must be a ws:// or wss:// URL; got '${url}'`);
  const ca = loadCaFile(typeof v.ca === 'string' ? v.ca : undefined);
  if (ca && !url.startsWith('wss://')) {
    throw new ConfigError('TLS_CA_WITHOUT_WSS', `--ca only applies to wss:// coordinators; got '${url}' (use wss:// if the coordinator runs with --tls-cert/--tls-key)`);
  }
  const workerId = typeof v.id === 'string' ? v.id : `${hostname()}-${process.pid}`;
  const log = createLogger({ name: 'worker', pretty: v.pretty === true ? true : undefined }).child({ worker: workerId });
  const token = loadToken(typeof v['token-file'] === 'string' ? v['token-file'] : undefined);
  const backend = await initBackend((v.backend as 'auto') ?? 'auto');
  log.info({ event: 'worker_started', backend: backend.name, backendSkipped: backend.skipped, url, auth: token ? 'token' : 'none', tls: url.startsWith('wss://') ? (ca ? 'ca-file' : 'system-ca') : 'none' }, 'worker started');
  if (Number(process.env.GAN_TEST_CORRUPT_GRADIENT ?? 0)) {
    log.warn({ event: 'warning', code: 'TEST_CORRUPT_GRADIENT', scale: Number(process.env.GAN_TEST_CORRUPT_GRADIENT) }, 'test hook GAN_TEST_CORRUPT_GRADIENT is set: this worker returns wrong gradients');
  }
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
  // The log line has the details; this one is for a person watching the terminal or journal.
  if (worker.fatal) process.stderr.write(`error [${worker.fatal.code}]: ${worker.fatal.reason}\n`);
  return code;
}

const isMain = process.argv[1] && /gan-worker(\.js)?$|worker[\\/]cli\.ts$/.test(process.argv[1]);
if (isMain) runMain(main);
