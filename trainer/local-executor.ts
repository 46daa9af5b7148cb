/**
 * gan-train's PhaseExecutor: every phase computed in this process by a LocalTrainer, progress
 * lines with the fields a single process has (docs/status-log.md).
 */
import type { Logger } from '../shared/log.ts';
import type { GanReplica } from '../shared/replica.ts';
import type { PhaseSummary, TrainingState } from './training-state.ts';
import type { LocalTrainer } from './local-trainer.ts';
import { ProgressTracker, roundRecord } from './progress.ts';
import type { PhaseExecutor } from './loop.ts';

export class LocalExecutor implements PhaseExecutor {
  private stopRequested = false;
  private progress: ProgressTracker;
  private tail: unknown[] = [];

  constructor(readonly trainer: LocalTrainer, private readonly log: Logger) {
    this.progress = new ProgressTracker(trainer.config.train.batchSize);
  }

  get state(): TrainingState {
    return this.trainer.state;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** Ends the run at the next phase boundary (SIGINT/SIGTERM). */
  requestStop(): void {
    this.stopRequested = true;
  }

  async executePhase(): Promise<PhaseSummary | null> {
    // A phase is synchronous: yield to the event loop first so a signal can stop the run between phases.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.stopRequested) return null;
    const summary = this.trainer.runPhase();
    this.progress.add(summary);
    return summary;
  }

  /** Every --log-every iterations and at the last one, as soon as it completes. */
  reportProgress(due: boolean): void {
    if (this.progress.pendingIterations === 0 || !(due || this.state.finished)) return;
    const rec = roundRecord(this.progress.flush());
    this.tail = [...this.tail, rec].slice(-10);
    this.log.info({ event: 'progress', ...rec, iterations: this.trainer.config.train.iterations }, 'progress');
  }

  recentProgress(): unknown[] {
    return this.tail;
  }

  outputReplica(_withD: boolean): GanReplica {
    this.trainer.syncReplica();
    return this.trainer.replica;
  }
}
