/**
 * The single-process trainer: Algorithm 1 with the same planning, shard seeds, step functions
 * and shard-order averaging as the distributed mode, all in one process. Its weights are the
 * reference the coordinator + workers must match bit for bit.
 */
import { assertCanTrain } from '../shared/backend.ts';
import type { GanConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { hashFloats } from '../shared/hash.ts';
import { GanReplica, type Net } from '../shared/replica.ts';
import { TrainingState, type PhaseSummary, type TrainingSnapshot } from '../shared/training-state.ts';

export class LocalTrainer {
  readonly state: TrainingState;
  readonly replica: GanReplica;
  /** Weight versions the replica holds; a net is re-uploaded only after it changed. */
  private synced: Record<Net, number> = { G: -1, D: -1 };

  constructor(readonly config: GanConfig, readonly source: DataSource, snapshot?: TrainingSnapshot) {
    assertCanTrain(config.model.kind);
    this.replica = new GanReplica(config);
    this.state = new TrainingState(config, source, this.replica.layout, snapshot);
  }

  /** Brings the replica up to the master weights. */
  syncReplica(): void {
    for (const net of ['G', 'D'] as const) {
      if (this.synced[net] !== this.state.versions[net]) {
        this.replica.setWeights(net, this.state.weights[net]);
        this.synced[net] = this.state.versions[net];
      }
    }
  }

  /** Plans, computes and applies the next phase (a D-step or the G-step). */
  runPhase(): PhaseSummary {
    const plan = this.state.planNext();
    this.syncReplica();
    const results = plan.shards.map((shard) => this.replica.computeShard(plan.phase, shard));
    return this.state.applyPhase(plan, results);
  }

  weightsHash(): string {
    return hashFloats(this.state.weights.G, this.state.weights.D);
  }

  dispose(): void {
    this.replica.dispose();
  }
}
