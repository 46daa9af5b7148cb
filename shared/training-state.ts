/**
 * The master side of Algorithm 1: weights, optimizers, data sampler and position in the run.
 * It plans each phase as fixed micro-shards and applies the shard-order average of their
 * gradients. The single-process trainer and the coordinator both drive this one class; only
 * who computes the shards differs.
 */
import type { DataSource } from './data/types.ts';
import type { GanConfig } from './config.ts';
import { shardRows, sampleDim } from './config.ts';
import { GanError } from './errors.ts';
import { initialWeights, type NetLayout } from './models.ts';
import { createOptimizer, type Optimizer, type OptimizerState } from './optimizers.ts';
import type { Net, Phase, ShardInput, ShardResult } from './replica.ts';
import { deriveSeed, STREAM } from './rng.ts';
import { Sampler, type SamplerState } from './sampler.ts';

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
 * Sums shard gradients in shard order, then divides by the shard count. Float addition is not
 * associative, so the fixed order is what makes the result independent of arrival order.
 */
export function averageInShardOrder(gradients: Float32Array[]): Float32Array {
  if (gradients.length === 0) throw new GanError('NO_GRADIENTS', 'cannot average zero shard gradients');
  const avg = new ShardOrderAverage(gradients.length);
  return avg.average(gradients);
}

/**
 * averageInShardOrder, folded in as the shard gradients arrive: the coordinator adds shard s as
 * soon as shards 0..s are all in, while later shards are still being computed, so at the end of
 * a phase only the last shard and the division are left. Every value goes through exactly the
 * float32 operations of the plain definition -- acc = g0; acc = f32(acc + gs) for s = 1..n-1;
 * avg = f32(acc / n) -- so the result is bit-identical whatever the arrival order. The division is
 * fused into the last addition and the first addition reads g0 directly (n - 1 passes over the
 * values instead of n + 1). One instance can serve phase after phase: its two buffers are reused
 * (no fresh multi-megabyte allocation per phase), so an average it returned is only valid until
 * its next average().
 */
export class ShardOrderAverage {
  /** Running sum of shards 0..foldedIn-1 (valid once two are in; shard 0 alone is not copied). */
  private acc: Float32Array | null = null;
  private out: Float32Array | null = null;
  /** The gradients folded in so far, by shard; average() checks they are still the ones given. */
  private foldedIn: Float32Array[] = [];

  constructor(readonly shards: number) {}

  /** Forgets what was folded in (a new phase). */
  restart(): void {
    this.foldedIn = [];
  }

  /** Folds in shards in order for as long as the next one is available (never the last: average() fuses it with the division). */
  advance(gradients: readonly (Float32Array | undefined)[]): void {
    while (this.foldedIn.length < this.shards - 1) {
      const g = gradients[this.foldedIn.length];
      if (!g) return;
      this.fold(g);
    }
  }

  /** The average of all shards' gradients (given in shard order); then ready for the next phase. */
  average(gradients: readonly Float32Array[]): Float32Array {
    const n = this.shards;
    if (gradients.length !== n) throw new GanError('MISSING_SHARDS', `averaging needs ${n} shard gradients, got ${gradients.length}`);
    const len = gradients[0].length;
    for (let s = 1; s < n; s++) {
      if (gradients[s].length !== len) throw new GanError('GRADIENT_SIZE_MISMATCH', `shard gradient ${s} has ${gradients[s].length} values, expected ${len}`);
    }
    // A result folded in earlier may have been replaced since (a worker banned mid-phase): start over.
    if (this.foldedIn.some((g, s) => g !== gradients[s])) this.foldedIn = [];
    while (this.foldedIn.length < n - 1) this.fold(gradients[this.foldedIn.length]);
    const last = gradients[n - 1];
    const out = (this.out = this.out?.length === len ? this.out : new Float32Array(len));
    if (n === 1) {
      for (let i = 0; i < len; i++) out[i] = last[i] / n;
    } else {
      const acc = n === 2 ? this.foldedIn[0] : this.acc!;
      for (let i = 0; i < len; i++) out[i] = Math.fround(acc[i] + last[i]) / n;
    }
    this.foldedIn = [];
    return out;
  }

  private fold(g: Float32Array): void {
    const s = this.foldedIn.length;
    if (s > 0 && g.length !== this.foldedIn[0].length) throw new GanError('GRADIENT_SIZE_MISMATCH', `shard gradient ${s} has ${g.length} values, expected ${this.foldedIn[0].length}`);
    this.foldedIn.push(g);
    if (s === 0) return;
    const len = g.length;
    if (s === 1) {
      const g0 = this.foldedIn[0];
      const acc = (this.acc = this.acc?.length === len ? this.acc : new Float32Array(len));
      for (let i = 0; i < len; i++) acc[i] = g0[i] + g[i];
      return;
    }
    const acc = this.acc!;
    for (let i = 0; i < len; i++) acc[i] += g[i];
  }
}

export class TrainingState {
  iteration = 0;
  dStep = 0;
  readonly weights: Record<Net, Float32Array>;
  readonly versions: Record<Net, number> = { G: 0, D: 0 };
  readonly optimizers: Record<Net, Optimizer>;
  private sampler: Sampler;
  /** --g-ema: the moving average of G's weights, or null when off (see updateGEma). */
  private gEma: Float32Array | null = null;
  /**
   * Per net, the shard-order average applyPhase uses, reused phase after phase (no multi-megabyte
   * allocation per phase). The coordinator folds results into it as they arrive (advance()).
   */
  readonly averages: Record<Net, ShardOrderAverage>;

  constructor(readonly config: GanConfig, readonly source: DataSource, readonly layout: Record<Net, NetLayout>, snapshot?: TrainingSnapshot) {
    const seed = config.train.seed;
    this.averages = { G: new ShardOrderAverage(config.train.shards), D: new ShardOrderAverage(config.train.shards) };
    this.optimizers = {
      G: createOptimizer(layout.G.total, config.optimizer),
      D: createOptimizer(layout.D.total, config.optimizer),
    };
    if (snapshot) {
      for (const net of ['G', 'D'] as const) {
        if (snapshot.weights[net].length !== layout[net].total) {
          throw new GanError('SNAPSHOT_SHAPE_MISMATCH', `snapshot ${net} has ${snapshot.weights[net].length} weights; the configured model has ${layout[net].total}`);
        }
        this.optimizers[net].restore(snapshot.optimizers[net]);
      }
      this.weights = { G: snapshot.weights.G.slice(), D: snapshot.weights.D.slice() };
      this.versions = { ...snapshot.versions };
      this.iteration = snapshot.iteration;
      this.dStep = snapshot.dStep;
      this.sampler = new Sampler(source, seed, snapshot.sampler);
    } else {
      this.weights = { G: initialWeights(layout.G, seed, 1), D: initialWeights(layout.D, seed, 2) };
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
   * Applies a phase's results (one per shard, in shard order) and advances the position. Results
   * already folded into `averages` (by the coordinator, as they arrived) are not added again; the
   * arithmetic is the same either way.
   */
  applyPhase(plan: PhasePlan, results: ShardResult[]): PhaseSummary {
    const expected = this.nextKey();
    if (plan.iteration !== expected.iteration || plan.phase !== expected.phase || plan.dStep !== expected.dStep) {
      throw new GanError('PHASE_OUT_OF_ORDER', `applying ${plan.phase}-phase of iteration ${plan.iteration} step ${plan.dStep}, but ${expected.phase}-phase of iteration ${expected.iteration} step ${expected.dStep} is next`);
    }
    if (results.length !== plan.shards.length) {
      throw new GanError('MISSING_SHARDS', `phase needs ${plan.shards.length} shard results, got ${results.length}`);
    }
    const net: Net = plan.phase;
    const gradients = results.map((r) => r.gradient);
    this.optimizers[net].apply(this.weights[net], this.averages[net].average(gradients));
    this.versions[net]++;
    if (net === 'G') this.updateGEma();
    if (plan.phase === 'D') {
      this.dStep++;
    } else {
      this.dStep = 0;
      this.iteration++;
    }
    const mean = (f: (r: ShardResult) => number) => results.reduce((a, r) => a + f(r), 0) / results.length;
    return { iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, loss: mean((r) => r.loss), dReal: mean((r) => r.dReal), dFake: mean((r) => r.dFake) };
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
