/**
 * gan-coordinator: holds the model, serves workers, trains.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadToken } from '../shared/auth.ts';
import { initBackend } from '../shared/backend.ts';
import { backendChoiceLine } from '../shared/backend-choice.ts';
import { numberFlag, parseCli, printInfo, type FlagValues } from '../shared/cli.ts';
import { ganOptionsFrom, impliedPresetLine, presetChoice } from '../trainer/gan-flags.ts';
import { runMain } from '../shared/cli-main.ts';
import { startOrResume } from '../trainer/resume.ts';
import { createLogger, openLogFile, type Logger } from '../shared/log.ts';
import { loadTlsServerFiles } from '../shared/tls.ts';
import { Coordinator, DEFAULT_NETWORK, DEFAULT_SCHEDULE, type RunResult } from './coordinator.ts';
import { createPeriodicEvaluation } from '../trainer/eval/periodic.ts';
import { COORDINATOR_CLI, COORDINATOR_FLAGS } from './cli-specs.ts';
import { installSocketErrorGuard } from '../shared/socket-guard.ts';
import { parseVerifyFraction } from './verify.ts';
import { MAX_TREE_CHILDREN } from '../shared/protocol.ts';
import { ConfigError } from '../shared/errors.ts';
import { lingerAfterRun, parseLinger } from './linger.ts';

/** --fan-out: 0 (star) to MAX_TREE_CHILDREN. */
function parseFanOut(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > MAX_TREE_CHILDREN) throw new ConfigError('BAD_FAN_OUT', `--fan-out must be an integer from 0 (star) to ${MAX_TREE_CHILDREN}, got ${n}`);
  return n;
}

// The flag tables and help live in cli-specs.ts (no tfjs there: bin/gan-coordinator.js answers
// --help and --version from them before loading this module).
export { COORDINATOR_FLAGS, resumeArgs } from './cli-specs.ts';

export interface CoordinatorRun {
  coordinator: Coordinator;
  log: Logger;
  done: Promise<RunResult>;
  /** --linger seconds (coordinator/linger.ts): how long to keep serving HTTP after a finished run. */
  linger: number;
}

/** Builds and starts a coordinator from parsed flags (also used by the demo). */
export async function startCoordinator(v: FlagValues, env: NodeJS.ProcessEnv = process.env, logStdout = true): Promise<CoordinatorRun> {
  const runDir = resolve(String(v['run-dir'] ?? 'runs/default'));
  const flag = (name: string) => numberFlag(v, COORDINATOR_FLAGS, name);
  const linger = parseLinger(v.linger);
  // Nothing is written to the run directory until the port is bound and the config is known to
  // be good: a failed start (PORT_IN_USE, a config error) leaves no run directory behind.
  const log = createLogger({ name: 'coordinator', file: join(runDir, 'log.jsonl'), deferFile: true, stdout: logStdout, pretty: v.pretty === true ? true : undefined });
  const token = loadToken(typeof v['token-file'] === 'string' ? v['token-file'] : undefined, env);
  const tls = loadTlsServerFiles(typeof v['tls-cert'] === 'string' ? v['tls-cert'] : undefined, typeof v['tls-key'] === 'string' ? v['tls-key'] : undefined);
  const backend = await initBackend((v.backend as 'auto') ?? 'auto');
  const chosen = backendChoiceLine(backend, (v.backend as 'auto') ?? 'auto');
  log.info({ event: 'backend_selected', ...chosen.fields }, chosen.msg);
  const opts = ganOptionsFrom(v);
  const { config, source, snapshot, resumedFrom } = startOrResume(v, opts, runDir, log);
  // A resume keeps the checkpoint's settings: no preset is applied then.
  const implied = resumedFrom ? undefined : impliedPresetLine(presetChoice(v));
  if (implied) log.info(implied.fields, implied.msg);
  const evaluation = await createPeriodicEvaluation(
    config,
    source,
    flag('eval-every'),
    flag('eval-samples'),
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
      port: flag('port'),
      token,
      insecure: v.insecure === true,
      tls,
      browserWorkers: v['no-browser-workers'] !== true,
    },
    schedule: {
      ...DEFAULT_SCHEDULE,
      straggler: {
        factor: flag('straggler-factor'),
        minMs: flag('straggler-min-ms'),
      },
      verifyFraction: parseVerifyFraction(v['verify-fraction']),
      fanOut: parseFanOut(flag('fan-out')),
    },
    checkpoint: {
      every: flag('checkpoint-every'),
      keep: Math.max(1, flag('keep-checkpoints')),
      // Test hook: stall between blobs so a test can SIGKILL the coordinator mid-write.
      stallMs: Number(env.GAN_TEST_CHECKPOINT_STALL_MS ?? 0) || undefined,
    },
    snapshot,
    evaluation,
    report: {
      logEvery: Math.max(1, flag('log-every')),
      statusIntervalMs: 1000 * flag('status-interval'),
      sampleEvery: flag('sample-every'),
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
  return { coordinator, log, done, linger };
}

const isMain = process.argv[1] && /gan-coordinator(\.js)?$|coordinator[\\/]cli\.ts$/.test(process.argv[1]);
if (isMain) {
  runMain(async () => {
    const v = parseCli(COORDINATOR_CLI, process.argv.slice(2));
    if (printInfo(COORDINATOR_CLI, v)) return 0;
    const { coordinator, log, done, linger } = await startCoordinator(v);
    installSocketErrorGuard(log);
    let signals = 0;
    // A signal while the finished run lingers (--linger) ends the linger at once.
    const lingerAbort = new AbortController();
    let finished = false;
    const onSignal = (sig: string) => {
      if (finished) {
        coordinator.opts.log.info({ event: 'stopping', signal: sig }, 'exiting (the run is finished)');
        return lingerAbort.abort();
      }
      signals++;
      if (signals > 1) process.exit(130);
      coordinator.opts.log.info({ event: 'stopping', signal: sig }, 'stopping at the next phase boundary (signal again to force)');
      coordinator.requestStop();
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    const result = await done;
    finished = true;
    if (!result.stopped) await lingerAfterRun(coordinator, linger, lingerAbort.signal);
    await coordinator.close(result.stopped ? 'COORDINATOR_STOPPING' : 'RUN_FINISHED', result.stopped ? 'the coordinator is stopping' : 'the run is finished');
    return 0;
  });
}
