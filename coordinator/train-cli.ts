/**
 * gan-train: the single-process trainer, for a reference run or a machine without workers.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend } from '../shared/backend.ts';
import { backendChoiceLine } from '../shared/backend-choice.ts';
import { ganOptionsFrom, parseCli, printInfo } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../shared/data/index.ts';
import { exportModels } from '../shared/export.ts';
import { createLogger } from '../shared/log.ts';
import { LocalTrainer } from './local-trainer.ts';
import { ProgressTracker, roundRecord } from './progress.ts';
import { LiveProgress } from '../shared/progress-bar.ts';
import { writeSampleImage } from './samples.ts';
import { TRAIN_CLI } from './cli-specs.ts';

runMain(async () => {
  const v = parseCli(TRAIN_CLI, process.argv.slice(2));
  if (printInfo(TRAIN_CLI, v)) return 0;
  const runDir = resolve(String(v['run-dir'] ?? 'runs/local'));
  const sampleEvery = Number(v['sample-every'] ?? 200);
  const logEvery = Math.max(1, Number(v['log-every'] ?? 20));
  const backend = await initBackend((v.backend as 'auto') ?? 'auto');
  const opts = ganOptionsFrom(v);
  const source = loadDataSource(opts.dataset ?? 'mnist');
  const config = resolveConfig(opts, source);
  // Only now that the config is good: a config error leaves no run directory behind.
  const log = createLogger({ name: 'train', file: join(runDir, 'log.jsonl') });
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, 'config.json'), JSON.stringify(config, null, 2));
  log.info({ event: 'run_started', mode: 'local', config, backend: backend.name, backendSkipped: backend.skipped, seed: config.train.seed, runDir }, 'run started');
  const chosen = backendChoiceLine(backend, (v.backend as 'auto') ?? 'auto');
  log.info({ event: 'backend_selected', ...chosen.fields }, chosen.msg);

  const trainer = new LocalTrainer(config, source);
  const progress = new ProgressTracker(config.train.batchSize);
  const liveBar = new LiveProgress();
  const started = performance.now();
  const samplesDir = join(runDir, 'samples');
  const sample = () => {
    trainer.syncReplica();
    const file = writeSampleImage(trainer.replica, source, samplesDir, trainer.state.iteration);
    log.info({ event: 'sample_written', iteration: trainer.state.iteration, file }, 'sample written');
  };
  while (!trainer.state.finished) {
    const summary = trainer.runPhase();
    progress.add(summary);
    liveBar.phase(summary, config.train.iterations);
    if (summary.phase !== 'G') continue;
    const it = trainer.state.iteration;
    if (it % logEvery === 0 || trainer.state.finished) {
      log.info({ event: 'progress', ...roundRecord(progress.flush()), iterations: config.train.iterations }, 'progress');
    }
    if (sampleEvery > 0 && it % sampleEvery === 0) sample();
  }
  liveBar.end();
  if (sampleEvery === 0 || trainer.state.iteration % sampleEvery !== 0) sample();
  trainer.syncReplica();
  const exported = await exportModels(trainer.replica, join(runDir, 'export'), { config, iteration: trainer.state.iteration, weightsHash: trainer.weightsHash() });
  log.info({ event: 'exported', iteration: trainer.state.iteration, ...exported }, 'G and D exported as TensorFlow.js LayersModels');
  const seconds = (performance.now() - started) / 1000;
  log.info({ event: 'run_finished', iterations: trainer.state.iteration, seconds: Number(seconds.toFixed(2)), weightsHash: trainer.weightsHash(), runDir }, 'run finished');
  trainer.dispose();
  return 0;
});
