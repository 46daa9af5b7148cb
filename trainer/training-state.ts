/**
 * The master side of Algorithm 1: weights, optimizers, data sampler and position in the run.
 * It plans each phase as fixed micro-shards and applies the average of their gradients summed
 * over a fixed pairwise tree of shard indices (shared/tree-sum.ts). The single-process trainer and the coordinator both drive this one class; only
 * who computes the shards differs.
 */
import type { DataSource } from '../shared/data/types.ts';
import type { GanConfig } from '../shared/config.ts';
import { shardRows, sampleDim } from '../shared/config.ts';
import { GanError } from '../shared/errors.ts';
import { initialWeights, type NetLayout } from '../shared/models.ts';
import { createOptimizer, type Optimizer, type OptimizerState } from './optimizers.ts';
import type { ShardInput, ShardResult } from '../shared/replica.ts';
import type { Net, Phase } from '../shared/protocol.ts';
import { deriveSeed, STREAM } from '../shared/rng.ts';
import { Sampler, type SamplerState } from './sampler.ts';
import { blockKey, quantizerFor, treeAverage, treeStats, type Quantizer } from '../shared/tree-sum.ts';

export interface PhaseKey {
  /** 0-based iteration of Algorithm 1. */
  iteration: number;
  phase: Phase;
  /** D-step index within the iteration (0..k-1); 0 for the G phase. */
  dStep: number;
}

export interface PhasePlan extends PhaseKey {
  shards: ShardInput[];
  /** Sampler position before this plan drew its rows, so an abandoned phase can be undone. */
  samplerBefore: SamplerState;
}

export interface PhaseSummary extends PhaseKey {
  loss: number;
  dReal: number;
  dFake: number;
}

/** Everything needed to continue a run exactly; what a checkpoint stores. */
export interface TrainingSnapshot {
  iteration: number;
  dStep: number;
  weights: Record<Net, Float32Array>;
  versions: Record<Net, number>;
  optimizers: Record<Net, OptimizerState>;
  sampler: SamplerState;
  /** With --g-ema: the moving average of G's weights (absent otherwise). */
  gEma?: Float32Array;
}

export function shardSeed(runSeed: number, key: PhaseKey, shardId: number): number {
  return deriveSeed(runSeed, STREAM.noise, key.iteration, key.phase === 'D' ? 0 : 1, key.dStep, shardId);
}

/**
 * The average of a phase's shard gradients (given in shard order, final values: already
 * wire-rounded where the run has a wire) over the fixed pairwise tree of shared/tree-sum.ts:
 * f32(root / S). `q` is the rounding internal nodes get (the fp16 wire's, or none).
 */
export function averageShardGradients(gradients: readonly Float32Array[], q: Quantizer = null): Float32Array {
  if (gradients.length === 0) throw new GanError('NO_GRADIENTS', 'cannot average zero shard gradients');
  return treeAverage(gradients.length, (lo, size) => (size === 1 ? gradients[lo] : undefined), q);
}

/**
 * Values of nodes of the phase's tree, by blockKey(first, count): the blocks a coordinator
 * accepted (gradient and per-block sums of the statistics), or the single shards of gan-train.
 */
export type BlockResults = ReadonlyMap<string, ShardResult>;

export class TrainingState {
  iteration = 0;
  dStep = 0;
  readonly weights: Record<Net, Float32Array>;
  readonly versions: Record<Net, number> = { G: 0, D: 0 };
  readonly optimizers: Record<Net, Optimizer>;
  private sampler: Sampler;
  /** --g-ema: the moving average of G's weights, or null when off (see updateGEma). */
  private gEma: Float32Array | null = null;
  /** Per net, the buffer the phase average is written into, reused phase after phase. */
  private averageOut: Record<Net, Float32Array | undefined>;
  /** How internal nodes of the sum tree are rounded (--wire fp16), see shared/tree-sum.ts. */
  private readonly quantize: Quantizer;

  constructor(readonly config: GanConfig, readonly source: DataSource, readonly layout: Record<Net, NetLayout>, snapshot?: TrainingSnapshot) {
    const seed = config.train.seed;
    this.quantize = quantizerFor(config.train.wire);
    this.optimizers = {
      G: createOptimizer(layout.G.total, config.optimizer),
      D: createOptimizer(layout.D.total, { ...config.optimizer, lr: config.optimizer.lrD ?? config.optimizer.lr }),
    };
    // The average is written where the optimizer reads it without a copy, when it has such a place.
    this.averageOut = { G: this.optimizers.G.gradientBuffer() ?? undefined, D: this.optimizers.D.gradientBuffer() ?? undefined };
    if (snapshot) {
      for (const net of ['G', 'D'] as const) {
        if (snapshot.weights[net].length !== layout[net].total) {
          throw new GanError('SNAPSHOT_SHAPE_MISMATCH', `snapshot ${net} has ${snapshot.weights[net].length} weights; the configured model has ${layout[net].total}`);
        }
        this.optimizers[net].restore(snapshot.optimizers[net]);
      }
      // Copies, kept where the optimizer updates them fastest (Optimizer.adopt).
      this.weights = { G: this.optimizers.G.adopt(snapshot.weights.G.slice()), D: this.optimizers.D.adopt(snapshot.weights.D.slice()) };
      this.versions = { ...snapshot.versions };
      this.iteration = snapshot.iteration;
      this.dStep = snapshot.dStep;
      this.sampler = new Sampler(source, seed, snapshot.sampler);
    } else {
      this.weights = { G: this.optimizers.G.adopt(initialWeights(layout.G, seed, 1)), D: this.optimizers.D.adopt(initialWeights(layout.D, seed, 2)) };
      this.sampler = new Sampler(source, seed);
    }
    if (config.train.gEma) {
      if (snapshot && !snapshot.gEma) {
        throw new GanError('SNAPSHOT_NO_G_EMA', 'the run uses --g-ema but the snapshot holds no moving average of G');
      }
      if (snapshot?.gEma && snapshot.gEma.length !== layout.G.total) {
        throw new GanError('SNAPSHOT_SHAPE_MISMATCH', `snapshot G average has ${snapshot.gEma.length} weights; the configured model has ${layout.G.total}`);
      }
      // Starts at G's initial weights; the warm-up in updateGEma forgets them quickly.
      this.gEma = snapshot?.gEma ? snapshot.gEma.slice() : this.weights.G.slice();
    }
  }

  /**
   * The generator users get: samples, evaluation and exports. With --g-ema the moving average of
   * G's weights, otherwise G's weights themselves. Training never reads it.
   */
  get generatorWeights(): Float32Array {
    return this.gEma ?? this.weights.G;
  }

  /**
   * ema = d * ema + (1 - d) * G after the G-step numbered t (1, 2, ...), with the decay warmed up
   * as d = min(decay, (1 + t) / (10 + t)) (as tf.train.ExponentialMovingAverage with num_updates)
   * so the average is not dominated by the random initial weights for the first ~1/(1 - decay)
   * steps. Plain float64 arithmetic rounded to float32: the same in every process.
   */
  private updateGEma(): void {
    const ema = this.gEma;
    if (!ema) return;
    const t = this.versions.G;
    const d = Math.min(this.config.train.gEma!, (1 + t) / (10 + t));
    const c = 1 - d;
    const w = this.weights.G;
    for (let i = 0; i < ema.length; i++) ema[i] = d * ema[i] + c * w[i];
  }

  get finished(): boolean {
    return this.iteration >= this.config.train.iterations;
  }

  /** The sampler's epoch: full passes over the training set completed (always 0 for mixtures). */
  get epoch(): number {
    return this.sampler.state().epoch;
  }

  /** The phase that comes next: k D-steps, then the G-step, then the next iteration. */
  nextKey(): PhaseKey {
    const k = this.config.train.dSteps;
    return this.dStep < k
      ? { iteration: this.iteration, phase: 'D', dStep: this.dStep }
      : { iteration: this.iteration, phase: 'G', dStep: 0 };
  }

  /** Plans the next phase: draws its real rows (advancing the sampler) and seeds its shards. */
  planNext(): PhasePlan {
    const key = this.nextKey();
    const samplerBefore = this.sampler.state();
    const { train, model } = this.config;
    const rows = shardRows(train);
    const dim = sampleDim(model);
    const batch = key.phase === 'D' ? this.sampler.next(train.batchSize) : null;
    const shards: ShardInput[] = [];
    for (let s = 0; s < train.shards; s++) {
      const shard: ShardInput = { shardId: s, seed: shardSeed(train.seed, key, s), rows };
      if (batch) {
        shard.real = batch.x.slice(s * rows * dim, (s + 1) * rows * dim);
        if (model.numClasses > 0 && batch.labels) shard.realLabels = batch.labels.slice(s * rows, (s + 1) * rows);
        if (batch.rows) shard.realRows = batch.rows.slice(s * rows, (s + 1) * rows);
      }
      shards.push(shard);
    }
    return { ...key, shards, samplerBefore };
  }

  /**
   * Forgets a planned phase that will not be applied (e.g. the coordinator is stopping mid-phase):
   * the sampler goes back to where it was, so a checkpoint taken now resumes exactly here.
   */
  abandon(plan: PhasePlan): void {
    this.sampler = new Sampler(this.source, this.config.train.seed, plan.samplerBefore);
  }

  /**
   * Applies a phase's results, one per shard in shard order (final values: wire-rounded where the
   * distributed run has a wire), summed over the fixed tree, and advances the position.
   */
  applyPhase(plan: PhasePlan, results: ShardResult[]): PhaseSummary {
    if (results.length !== plan.shards.length) {
      throw new GanError('MISSING_SHARDS', `phase needs ${plan.shards.length} shard results, got ${results.length}`);
    }
    return this.applyBlocks(plan, new Map(results.map((r, s) => [blockKey(s, 1), r])));
  }

  /**
   * Applies a phase from the values of aligned blocks of its sum tree (blocks may overlap; every
   * shard must be covered by at least one): the same root whatever the cover, so the coordinator
   * may pass the blocks its workers sent. Statistics are the per-block sums, averaged over S.
   */
  applyBlocks(plan: PhasePlan, blocks: BlockResults): PhaseSummary {
    const expected = this.nextKey();
    if (plan.iteration !== expected.iteration || plan.phase !== expected.phase || plan.dStep !== expected.dStep) {
      throw new GanError('PHASE_OUT_OF_ORDER', `applying ${plan.phase}-phase of iteration ${plan.iteration} step ${plan.dStep}, but ${expected.phase}-phase of iteration ${expected.iteration} step ${expected.dStep} is next`);
    }
    const shards = plan.shards.length;
    const net: Net = plan.phase;
    const known = (lo: number, size: number) => blocks.get(blockKey(lo, size));
    const avg = treeAverage(shards, (lo, size) => known(lo, size)?.gradient, this.quantize, this.averageOut[net]);
    this.averageOut[net] = avg;
    const stats = treeStats(shards, known);
    this.optimizers[net].apply(this.weights[net], avg);
    this.versions[net]++;
    if (net === 'G') this.updateGEma();
    if (plan.phase === 'D') {
      this.dStep++;
    } else {
      this.dStep = 0;
      this.iteration++;
    }
    return { iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, loss: stats.loss / shards, dReal: stats.dReal / shards, dFake: stats.dFake / shards };
  }

  snapshot(): TrainingSnapshot {
    return {
      iteration: this.iteration,
      dStep: this.dStep,
      weights: { G: this.weights.G.slice(), D: this.weights.D.slice() },
      versions: { ...this.versions },
      optimizers: { G: this.optimizers.G.state(), D: this.optimizers.D.state() },
      sampler: this.sampler.state(),
      ...(this.gEma ? { gEma: this.gEma.slice() } : {}),
    };
  }
}
