/**
 * The one training loop. A Trainer owns the run's schedule: after every G-step it asks for a
 * progress line every --log-every iterations, writes a sample grid every --sample-every, evaluates
 * every --eval-every and checkpoints every --checkpoint-every; at the end (or when stopped) it
 * reports, checkpoints, samples, evaluates and exports what the remaining schedule left out.
 * How a phase is computed is the executor's business: LocalTrainer (trainer/local-trainer.ts)
 * computes every shard in this process (gan-train), the Coordinator hands them to workers. Both
 * apply them to the same TrainingState, so the schedule cannot drift between the two modes.
 */
import { LiveProgress } from '../shared/progress-bar.ts';
import { join } from 'node:path';
import type { GanConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { exportModels } from './export.ts';
import { hashFloats } from './hash.ts';
import type { Logger } from '../shared/log.ts';
import type { GanReplica } from '../shared/replica.ts';
import type { PhaseSummary, TrainingState } from './training-state.ts';
import { runPeriodicEvaluation, type PeriodicEvaluation } from './eval/periodic.ts';
import { writeCheckpoint, type CheckpointWriterConfig } from './checkpoint.ts';
import { writeSampleImage } from './samples.ts';

/** Runs phases of Algorithm 1 against a TrainingState. */
export interface PhaseExecutor {
  readonly state: TrainingState;
  /** A stop was requested: the loop ends at the next phase boundary. */
  readonly stopping: boolean;
  /** Plans, computes and applies the next phase; null when a stop abandoned it. */
  executePhase(): Promise<PhaseSummary | null>;
  /**
   * A progress line for the iterations since the last one: `due` every --log-every iterations
   * and at the end; an executor may also report on its own clock (the coordinator's --status-interval).
   */
  reportProgress(due: boolean): void;
  /** The last few progress records, stored in checkpoints. */
  recentProgress(): unknown[];
  /**
   * A replica holding the generator users get (the moving average with --g-ema, else G), and with
   * `withD` the master D; for samples, evaluation and export. Training never reads it.
   */
  outputReplica(withD: boolean): GanReplica;
  /** After a checkpoint was written (the coordinator refreshes report.html). */
  checkpointed?(): void;
  /** Workers computing now, for the terminal progress bar (absent: one process). */
  workerCount?(): number;
}

export interface CheckpointSchedule extends Omit<CheckpointWriterConfig, 'runDir'> {
  /** Checkpoint every N iterations (0: only at the end and when stopped). */
  every: number;
}

export interface TrainerSchedule {
  config: GanConfig;
  source: DataSource;
  runDir: string;
  runId: string;
  log: Logger;
  /** A progress line after every N-th iteration (iteration % N === 0). */
  logEvery: number;
  /** A sample grid every N iterations (0: only at the end). */
  sampleEvery: number;
  /** --eval-every (trainer/eval/periodic.ts); null: off. */
  evaluation?: PeriodicEvaluation | null;
  /** null: no checkpoints (gan-train without --checkpoint-every). */
  checkpoint: CheckpointSchedule | null;
}

export interface TrainResult {
  iterations: number;
  weightsHash: string;
  seconds: number;
  stopped: boolean;
}

export class Trainer {
  /** iteration/dStep of the newest checkpoint written by this process. */
  private lastCheckpointAt: string | null = null;
  /** The live progress bar on a terminal (shared/progress-bar.ts; a no-op otherwise). */
  private liveBar = new LiveProgress();

  constructor(readonly executor: PhaseExecutor, readonly schedule: TrainerSchedule) {}

  private get state(): TrainingState {
    return this.executor.state;
  }

  /** Trains until the configured number of iterations or until the executor is stopping. */
  async run(): Promise<TrainResult> {
    const started = performance.now();
    const { sampleEvery, logEvery, evaluation, checkpoint } = this.schedule;
    const ex = this.executor;
    while (!this.state.finished && !ex.stopping) {
      const summary = await ex.executePhase();
      if (!summary) break;
      this.liveBar.phase(summary, this.schedule.config.train.iterations, ex.workerCount?.());
      if (summary.phase !== 'G') continue;
      const it = this.state.iteration;
      ex.reportProgress(it % logEvery === 0);
      if (sampleEvery > 0 && it % sampleEvery === 0) this.writeSample();
      if (evaluation && it % evaluation.every === 0) this.evaluate();
      if (checkpoint && checkpoint.every > 0 && it % checkpoint.every === 0) this.saveCheckpoint();
    }
    this.liveBar.end();
    ex.reportProgress(true);
    if (checkpoint) this.saveCheckpoint();
    if (sampleEvery === 0 || this.state.iteration % sampleEvery !== 0) this.writeSample();
    if (evaluation && this.state.iteration % evaluation.every !== 0) this.evaluate();
    const weightsHash = hashFloats(this.state.weights.G, this.state.weights.D);
    const exported = await exportModels(ex.outputReplica(true), join(this.schedule.runDir, 'export'), { config: this.schedule.config, iteration: this.state.iteration, weightsHash });
    this.schedule.log.info({ event: 'exported', iteration: this.state.iteration, ...exported }, 'G and D exported as TensorFlow.js LayersModels');
    return {
      iterations: this.state.iteration,
      weightsHash,
      seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
      stopped: ex.stopping,
    };
  }

  private writeSample(): void {
    const { source, runDir, log } = this.schedule;
    const file = writeSampleImage(this.executor.outputReplica(false), source, join(runDir, 'samples'), this.state.iteration);
    log.info({ event: 'sample_written', iteration: this.state.iteration, file }, 'sample written');
  }

  /** One `eval` event: G's metrics on a few samples (trainer/eval/periodic.ts). */
  private evaluate(): void {
    const { config, log } = this.schedule;
    const replica = this.executor.outputReplica(false);
    const fields = runPeriodicEvaluation(this.schedule.evaluation!, (z, rows, labels) => replica.generate(z, rows, labels), this.state.iteration, config.train.seed);
    // `generator` says which G was measured: with --g-ema, the moving average.
    log.info({ event: 'eval', ...fields, generator: config.train.gEma ? 'g-ema' : 'g' }, 'evaluation');
  }

  /** Writes a checkpoint of the current state (a phase boundary), unless this one exists already. */
  saveCheckpoint(): string | null {
    const { checkpoint, runDir, config, runId, log } = this.schedule;
    if (!checkpoint) return null;
    const key = `${this.state.iteration}/${this.state.dStep}`;
    if (this.lastCheckpointAt === key) return null;
    const t0 = performance.now();
    const { every: _every, ...writer } = checkpoint;
    const dir = writeCheckpoint({ ...writer, runDir }, this.state.snapshot(), { config, runId, metricsTail: this.executor.recentProgress() });
    this.lastCheckpointAt = key;
    log.info({ event: 'checkpoint_saved', iteration: this.state.iteration, dStep: this.state.dStep, dir, ms: Math.round(performance.now() - t0) }, 'checkpoint saved');
    this.executor.checkpointed?.();
    return dir;
  }
}
