/**
 * gan-coordinator: holds the model, serves workers, trains.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadToken } from '../shared/auth.ts';
import { initBackend } from '../shared/backend.ts';
import { COMMON_FLAGS, GAN_FLAGS, ganOptionsFrom, helpText, parseFlags, type FlagTable, type FlagValues } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { mergeResumeConfig, resolveConfig, type GanConfig } from '../shared/config.ts';
import type { TrainingSnapshot } from '../shared/training-state.ts';
import { findResumeCheckpoint } from './checkpoint.ts';
import { loadDataSource } from '../shared/data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { createLogger, openLogFile, type Logger } from '../shared/log.ts';
import { loadTlsServerFiles } from '../shared/tls.ts';
import { Coordinator, DEFAULT_NETWORK, DEFAULT_SCHEDULE, type RunResult } from './coordinator.ts';
import { createPeriodicEvaluation, DEFAULT_PERIODIC_SAMPLES } from '../shared/eval/periodic.ts';
import { installSocketErrorGuard } from '../shared/socket-guard.ts';
import { parseVerifyFraction } from './verify.ts';

export const COORDINATOR_FLAGS: FlagTable = {
  host: { type: 'string', help: 'address to listen on', defaultText: '0.0.0.0 with a token, 127.0.0.1 without' },
  port: { type: 'string', kind: 'int', help: 'TCP port for workers and HTTP (0: any free port)', defaultText: '8600' },
  'run-dir': { type: 'string', help: 'run directory: config.json, log.jsonl, samples/', defaultText: 'runs/default' },
  'token-file': { type: 'string', help: 'file whose first line is the shared worker token (else GAN_TOKEN)' },
  insecure: { type: 'boolean', help: 'allow listening beyond loopback without a token' },
  'sample-every': { type: 'string', kind: 'int', help: 'sample grid every N iterations (0: only at the end)', defaultText: '200' },
  'eval-every': { type: 'string', kind: 'int', help: 'evaluate G every N iterations and at the end, logged as `eval` events (gan-eval\'s metrics; 0: off)', defaultText: '0' },
  'eval-samples': { type: 'string', kind: 'int', help: 'samples per --eval-every evaluation', defaultText: String(DEFAULT_PERIODIC_SAMPLES) },
  'checkpoint-every': { type: 'string', kind: 'int', help: 'checkpoint every N iterations (0: only at the end and on SIGINT/SIGTERM)', defaultText: '100' },
  'keep-checkpoints': { type: 'string', kind: 'int', help: 'keep the newest K checkpoints', defaultText: '3' },
  resume: { type: 'boolean', help: 'continue from the newest valid checkpoint in --run-dir (or --resume <path>)' },
  'resume-from': { type: 'string', help: 'a run directory or one checkpoint directory to resume from' },
  'auto-resume': { type: 'boolean', help: 'resume if --run-dir holds checkpoints, else start a new run (for systemd, Docker, Kubernetes restarts)' },
  'tls-cert': { type: 'string', help: 'PEM certificate (chain): serve wss:// and https (needs --tls-key)' },
  'tls-key': { type: 'string', help: 'PEM private key of --tls-cert' },
  'log-every': { type: 'string', kind: 'int', help: 'progress line every N iterations', defaultText: '20' },
  'status-interval': { type: 'string', kind: 'number', help: '...and at least every s seconds while iterations complete', defaultText: '30' },
  pretty: { type: 'boolean', help: 'human-readable log on stdout (default when stdout is a terminal; log.jsonl stays JSON)' },
  'straggler-factor': { type: 'string', kind: 'number', help: 'duplicate a shard out longer than this x its expected time', defaultText: '3' },
  'straggler-min-ms': { type: 'string', kind: 'int', help: '...and out at least this long', defaultText: '2000' },
  'verify-fraction': { type: 'string', kind: 'number', help: 'recompute this fraction of shards (0..1, drawn from the seed) on a second worker and compare bit for bit; a worker that differs is banned', defaultText: '0' },
};

const USAGE = `Usage: gan-coordinator [options]

Holds the master G and D, hands micro-shards of every minibatch to workers that join over
WebSockets (gan-worker --coordinator ws://<host>:<port>; wss:// with --tls-cert/--tls-key),
averages their gradients in shard order and applies Algorithm 1 (k D-steps, then a G-step).
Deploying on several machines: docs/operations.md.`;

export interface CoordinatorRun {
  coordinator: Coordinator;
  log: Logger;
  done: Promise<RunResult>;
}

/** Whether a run directory holds at least one checkpoint (valid or not). */
function hasCheckpoints(runDir: string): boolean {
  const dir = join(runDir, 'checkpoints');
  return existsSync(dir) && readdirSync(dir).some((n) => /^\d{8}$/.test(n));
}

/** Builds and starts a coordinator from parsed flags (also used by the demo). */
export async function startCoordinator(v: FlagValues, env: NodeJS.ProcessEnv = process.env, logStdout = true): Promise<CoordinatorRun> {
  const runDir = resolve(String(v['run-dir'] ?? 'runs/default'));
  // Nothing is written to the run directory until the port is bound and the config is known to
  // be good: a failed start (PORT_IN_USE, a config error) leaves no run directory behind.
  const log = createLogger({ name: 'coordinator', file: join(runDir, 'log.jsonl'), deferFile: true, stdout: logStdout, pretty: v.pretty === true ? true : undefined });
  const token = loadToken(typeof v['token-file'] === 'string' ? v['token-file'] : undefined, env);
  const tls = loadTlsServerFiles(typeof v['tls-cert'] === 'string' ? v['tls-cert'] : undefined, typeof v['tls-key'] === 'string' ? v['tls-key'] : undefined);
  const backend = await initBackend((v.backend as 'auto') ?? 'auto');
  const opts = ganOptionsFrom(v);
  let config: GanConfig;
  let snapshot: TrainingSnapshot | undefined;
  let resumedFrom: { dir: string; changes: string[]; skipped: { dir: string; reason: string }[] } | null = null;
  const autoResume = v['auto-resume'] === true && hasCheckpoints(runDir);
  const resumePath = typeof v['resume-from'] === 'string' ? v['resume-from'] : v.resume || autoResume ? runDir : null;
  if (resumePath) {
    const found = findResumeCheckpoint(resumePath);
    for (const s of found.skipped) log.warn({ event: 'warning', code: 'CHECKPOINT_CORRUPT', dir: s.dir, reason: s.reason }, 'damaged checkpoint skipped; trying the previous one');
    const merged = mergeResumeConfig(found.loaded.manifest.config, opts);
    config = merged.config;
    snapshot = found.loaded.snapshot;
    resumedFrom = { dir: found.loaded.dir, changes: merged.changes, skipped: found.skipped };
  } else {
    if (hasCheckpoints(runDir)) {
      throw new ConfigError('RUN_DIR_HAS_CHECKPOINTS', `${runDir} already holds checkpoints; pass --resume to continue that run, or choose another --run-dir`);
    }
    config = resolveConfig(opts, loadDataSource(opts.dataset ?? 'mnist'));
  }
  const source = loadDataSource(config.train.dataset);
  const evaluation = await createPeriodicEvaluation(
    config,
    source,
    v['eval-every'] === undefined ? 0 : Number(v['eval-every']),
    v['eval-samples'] === undefined ? DEFAULT_PERIODIC_SAMPLES : Number(v['eval-samples']),
  );
  const coordinator = new Coordinator({
    config,
    source,
    runDir,
    log,
    backendName: backend.name,
    network: {
      ...DEFAULT_NETWORK,
      host: String(v.host ?? (token ? '0.0.0.0' : '127.0.0.1')),
      port: v.port === undefined ? 8600 : Number(v.port),
      token,
      insecure: v.insecure === true,
      tls,
    },
    schedule: {
      ...DEFAULT_SCHEDULE,
      straggler: {
        factor: v['straggler-factor'] === undefined ? DEFAULT_SCHEDULE.straggler.factor : Number(v['straggler-factor']),
        minMs: v['straggler-min-ms'] === undefined ? DEFAULT_SCHEDULE.straggler.minMs : Number(v['straggler-min-ms']),
      },
      verifyFraction: parseVerifyFraction(v['verify-fraction']),
    },
    checkpoint: {
      every: v['checkpoint-every'] === undefined ? 100 : Number(v['checkpoint-every']),
      keep: v['keep-checkpoints'] === undefined ? 3 : Math.max(1, Number(v['keep-checkpoints'])),
      // Test hook: stall between blobs so a test can SIGKILL the coordinator mid-write.
      stallMs: Number(env.GAN_TEST_CHECKPOINT_STALL_MS ?? 0) || undefined,
    },
    snapshot,
    evaluation,
    report: {
      logEvery: Math.max(1, v['log-every'] === undefined ? 20 : Number(v['log-every'])),
      statusIntervalMs: 1000 * (v['status-interval'] === undefined ? 30 : Number(v['status-interval'])),
      sampleEvery: v['sample-every'] === undefined ? 200 : Number(v['sample-every']),
    },
  });
  // Bind first (PORT_IN_USE and its kin are GanErrors: one line, exit 2). From here to run() all
  // is synchronous, so no worker can be handled before run_started is logged.
  await coordinator.listen();
  try {
    mkdirSync(runDir, { recursive: true });
    writeFileSync(join(runDir, 'config.json'), JSON.stringify(config, null, 2));
    openLogFile(log);
  } catch (err) {
    await coordinator.close('COORDINATOR_STOPPING', 'the coordinator could not start');
    throw err;
  }
  log.info({ event: 'run_started', runId: coordinator.runId, config, backend: backend.name, backendSkipped: backend.skipped, seed: config.train.seed, runDir }, 'run started');
  if (resumedFrom) {
    log.info({ event: 'resumed', from: resumedFrom.dir, iteration: coordinator.state.iteration, dStep: coordinator.state.dStep, changes: resumedFrom.changes, skipped: resumedFrom.skipped.map((s) => s.dir) }, `resumed at iteration ${coordinator.state.iteration}`);
  }
  const done = coordinator.run();
  return { coordinator, log, done };
}

/** `--resume <path>` is accepted as a spelling of `--resume-from <path>`; bare `--resume` means latest. */
export function resumeArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--resume' && i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      out.push('--resume-from', argv[++i]);
    } else out.push(argv[i]);
  }
  return out;
}

const isMain = process.argv[1] && /gan-coordinator(\.js)?$|coordinator[\\/]cli\.ts$/.test(process.argv[1]);
if (isMain) {
  runMain(async () => {
    const flags = { ...GAN_FLAGS, ...COORDINATOR_FLAGS, ...COMMON_FLAGS };
    const v = parseFlags(resumeArgs(process.argv.slice(2)), flags);
    if (v.help) {
      process.stdout.write(helpText(USAGE, flags));
      return 0;
    }
    const { coordinator, log, done } = await startCoordinator(v);
    installSocketErrorGuard(log);
    let signals = 0;
    const onSignal = (sig: string) => {
      signals++;
      if (signals > 1) process.exit(130);
      coordinator.opts.log.info({ event: 'stopping', signal: sig }, 'stopping at the next phase boundary (signal again to force)');
      coordinator.requestStop();
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    const result = await done;
    await coordinator.close(result.stopped ? 'COORDINATOR_STOPPING' : 'RUN_FINISHED', result.stopped ? 'the coordinator is stopping' : 'the run is finished');
    return 0;
  });
}
