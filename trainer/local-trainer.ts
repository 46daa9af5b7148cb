/**
 * The single-process trainer: Algorithm 1 with the same planning, shard seeds, step functions
 * and tree-sum averaging (shared/tree-sum.ts) as the distributed mode, all in one process. Its weights are the
 * reference the coordinator + workers must match bit for bit.
 *
 * With --wire fp16 there is no wire here, but its rounding is applied where the distributed run
 * has one: shards are computed on the weights as a worker decodes them (roundTripHalf of the
 * master weights), each shard gradient is rounded as the coordinator decodes it, and every
 * two-child node of the sum tree is rounded as it would be on the wire. Master
 * weights, optimizer state, samples and exports stay float32.
 */
import { assertCanTrain } from '../shared/backend.ts';
import type { GanConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { roundTripHalf } from '../shared/float16.ts';
import { hashFloats } from './hash.ts';
import { GanReplica } from '../shared/replica.ts';
import type { Net } from '../shared/protocol.ts';
import { BlockAccumulator } from '../shared/block-accumulator.ts';
import { blockKey, treeSize } from '../shared/tree-sum.ts';
import { TrainingState, type PhaseSummary, type TrainingSnapshot } from './training-state.ts';

export class LocalTrainer {
  readonly state: TrainingState;
  readonly replica: GanReplica;
  /** Weight versions the replica holds (and whether wire-rounded); a net is re-uploaded only after it changed. */
  private synced: Record<Net, { version: number; rounded: boolean }> = { G: { version: -1, rounded: false }, D: { version: -1, rounded: false } };
  private readonly fp16: boolean;

  constructor(readonly config: GanConfig, readonly source: DataSource, snapshot?: TrainingSnapshot) {
    assertCanTrain(config.model.kind);
    this.replica = new GanReplica(config);
    this.state = new TrainingState(config, source, this.replica.layout, snapshot);
    this.fp16 = config.train.wire === 'fp16';
  }

  /**
   * Brings the replica up to the generator users get (G's moving average with --g-ema, else the
   * master G) and the master D, for sampling, evaluation and export.
   */
  syncReplica(): void {
    this.sync(false);
    if (this.config.train.gEma) {
      this.replica.setWeights('G', this.state.generatorWeights);
      // Not the master G: the next training phase must upload it again.
      this.synced.G = { version: -1, rounded: false };
    }
  }

  /** rounded: the weights a worker computes on (fp16-rounded with --wire fp16, else the master weights). */
  private sync(rounded: boolean): void {
    const round = rounded && this.fp16;
    for (const net of ['G', 'D'] as const) {
      const version = this.state.versions[net];
      if (this.synced[net].version !== version || this.synced[net].rounded !== round) {
        this.replica.setWeights(net, round ? roundTripHalf(this.state.weights[net]) : this.state.weights[net]);
        this.synced[net] = { version, rounded: round };
      }
    }
  }

  /** Plans, computes and applies the next phase (a D-step or the G-step). */
  runPhase(): PhaseSummary {
    const plan = this.state.planNext();
    this.sync(true);
    if (!this.fp16 && this.replica.exactAdd) {
      // The whole tree as one block, summed on the backend (BlockAccumulator; the same float32
      // additions in the same order as the JS tree): the root, applied as the only block.
      const S = plan.shards.length;
      const root = { first: 0, count: treeSize(S) };
      const acc = new BlockAccumulator(this.replica, S, root, null);
      try {
        for (const shard of plan.shards) acc.compute(plan.phase, shard);
        const { gradient, stats } = acc.take();
        return this.state.applyBlocks(plan, new Map([[blockKey(root.first, root.count), { gradient, ...stats }]]));
      } finally {
        acc.dispose();
      }
    }
    const results = plan.shards.map((shard) => {
      const r = this.replica.computeShard(plan.phase, shard);
      // What the coordinator would decode from a worker's fp16 result.
      return this.fp16 ? { ...r, gradient: roundTripHalf(r.gradient) } : r;
    });
    return this.state.applyPhase(plan, results);
  }

  weightsHash(): string {
    return hashFloats(this.state.weights.G, this.state.weights.D);
  }

  dispose(): void {
    this.replica.dispose();
  }
}
