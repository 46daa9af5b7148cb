/**
 * gan-train: the single-process trainer, for a reference run or a machine without workers. The
 * schedule (progress, samples, --eval-every, checkpoints, export) is trainer/loop.ts's, the same
 * as the coordinator's; so are checkpoints and resume (--checkpoint-every, --resume).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend } from '../shared/backend.ts';
import { backendChoiceLine } from '../shared/backend-choice.ts';
import { numberFlag, parseCli, printInfo } from '../shared/cli.ts';
import { ganOptionsFrom, impliedPresetLine, presetChoice } from './gan-flags.ts';
import { runMain } from '../shared/cli-main.ts';
import { createPeriodicEvaluation } from './eval/periodic.ts';
import { createLogger, openLogFile } from '../shared/log.ts';
import { LocalExecutor } from './local-executor.ts';
import { Trainer } from './loop.ts';
import { startOrResume } from './resume.ts';
import { LocalTrainer } from './local-trainer.ts';
import { TRAIN_CLI, TRAIN_FLAGS } from '../coordinator/cli-specs.ts';

runMain(async () => {
  const v = parseCli(TRAIN_CLI, process.argv.slice(2));
  if (printInfo(TRAIN_CLI, v)) return 0;
  const runDir = resolve(String(v['run-dir'] ?? 'runs/local'));
  const flag = (name: string) => numberFlag(v, TRAIN_FLAGS, name);
  const backend = await initBackend((v.backend as 'auto') ?? 'auto');
  const opts = ganOptionsFrom(v);
  // Nothing is written until the config is good: a config error leaves no run directory behind.
  const log = createLogger({ name: 'train', file: join(runDir, 'log.jsonl'), deferFile: true });
  const { config, source, snapshot, resumedFrom } = startOrResume(v, opts, runDir, log);
  const evaluation = await createPeriodicEvaluation(config, source, flag('eval-every'), flag('eval-samples'));
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, 'config.json'), JSON.stringify(config, null, 2));
  openLogFile(log);
  log.info({ event: 'run_started', mode: 'local', config, backend: backend.name, backendSkipped: backend.skipped, seed: config.train.seed, runDir }, 'run started');
  const chosen = backendChoiceLine(backend, (v.backend as 'auto') ?? 'auto');
  log.info({ event: 'backend_selected', ...chosen.fields }, chosen.msg);
  // A resume keeps the checkpoint's settings: no preset is applied then.
  const implied = resumedFrom ? undefined : impliedPresetLine(presetChoice(v));
  if (implied) log.info(implied.fields, implied.msg);

  const local = new LocalTrainer(config, source, snapshot);
  if (resumedFrom) {
    const { state } = local;
    log.info({ event: 'resumed', from: resumedFrom.dir, iteration: state.iteration, dStep: state.dStep, changes: resumedFrom.changes, skipped: resumedFrom.skipped.map((s) => s.dir) }, `resumed at iteration ${state.iteration}`);
  }
  const executor = new LocalExecutor(local, log);
  const checkpointing = v['checkpoint-every'] !== undefined;
  const trainer = new Trainer(executor, {
    config,
    source,
    runDir,
    runId: randomUUID(),
    log,
    logEvery: Math.max(1, flag('log-every')),
    sampleEvery: flag('sample-every'),
    evaluation,
    checkpoint: checkpointing ? { every: flag('checkpoint-every'), keep: Math.max(1, flag('keep-checkpoints')) } : null,
  });
  if (checkpointing) {
    // As on the coordinator: the first signal stops at the next phase boundary and checkpoints.
    let signals = 0;
    const onSignal = (signal: string) => {
      if (++signals > 1) process.exit(130);
      log.info({ event: 'stopping', signal }, 'stopping at the next phase boundary (signal again to force)');
      executor.requestStop();
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
  }
  const result = await trainer.run();
  log.info(
    { event: 'run_finished', iterations: result.iterations, seconds: result.seconds, weightsHash: result.weightsHash, ...(result.stopped ? { stopped: true } : {}), runDir },
    result.stopped ? 'run stopped' : 'run finished',
  );
  evaluation?.evaluator.dispose();
  local.dispose();
  return 0;
});
