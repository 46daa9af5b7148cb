/**
 * Core invariants of the training code path, on the wasm backend: determinism, phase isolation,
 * shard averaging = full-batch gradient, no tensor leaks, exact optimizer/sampler/RNG state
 * round trips, seeded dropout and config validation.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig, type GanConfig, type GanOptions, type OptimizerConfig } from '../shared/config.ts';
import { loadDataSource, type DataSource } from '../trainer/data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { hashFloats } from '../trainer/hash.ts';
import { SeededDropout, withDropoutSeed } from '../shared/layers.ts';
import { discriminatorLoss, generatorLoss } from '../shared/losses.ts';
import { createOptimizer } from '../trainer/optimizers.ts';
import { shardNoise, type ShardInput } from '../shared/replica.ts';
import type { Net } from '../shared/protocol.ts';
import { deriveSeed, normalArray, Rng, STREAM, uniformArray } from '../shared/rng.ts';
import { Sampler } from '../trainer/sampler.ts';
import { averageShardGradients, shardSeed } from '../trainer/training-state.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

let ring8: DataSource;
let mnist: DataSource;

beforeAll(async () => {
  await initBackend('wasm');
  ring8 = loadDataSource('ring8');
  mnist = loadDataSource('mnist');
}, HEAVY_TEST_MS);

function trainer(opts: GanOptions, source: DataSource): LocalTrainer {
  return new LocalTrainer(resolveConfig(opts, source), source);
}

function runPhases(t: LocalTrainer, n: number): void {
  for (let i = 0; i < n; i++) t.runPhase();
}

/** Max |a - b| over max |b|: a scale-free error for comparing gradients. */
function relMaxAbsError(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  expect(scale).toBeGreaterThan(0);
  return err / scale;
}

describe('determinism', () => {
  const opts: GanOptions = { batchSize: 32, shards: 4, dSteps: 2, iterations: 100, lr: 1e-3 };

  it('same seed and config give the same weights; another seed gives different ones', () => {
    const hashAfter = (seed: number) => {
      const t = trainer({ ...opts, seed }, ring8);
      runPhases(t, 9); // three whole iterations of 2 D-steps + 1 G-step
      const h = t.weightsHash();
      t.dispose();
      return h;
    };
    const a = hashAfter(11);
    expect(hashAfter(11)).toBe(a);
    expect(hashAfter(12)).not.toBe(a);
  }, HEAVY_TEST_MS);

  it('same seed gives the same weights with dropout (paper mlp on mnist)', () => {
    const hashAfter = () => {
      const t = trainer({ model: 'mlp', batchSize: 8, shards: 2, iterations: 10, seed: 5 }, mnist);
      runPhases(t, 2);
      const h = t.weightsHash();
      t.dispose();
      return h;
    };
    expect(hashAfter()).toBe(hashAfter());
  }, HEAVY_TEST_MS);
});

describe('phase isolation', () => {
  it('a D-phase leaves G untouched and a G-phase leaves D untouched', () => {
    const t = trainer({ batchSize: 16, shards: 2, dSteps: 1, seed: 3 }, ring8);
    const hashes = () => ({ G: hashFloats(t.state.weights.G), D: hashFloats(t.state.weights.D) });
    const replicaHashes = () => {
      t.syncReplica();
      return { G: hashFloats(t.replica.getWeights('G')), D: hashFloats(t.replica.getWeights('D')) };
    };
    const before = hashes();
    expect(replicaHashes()).toEqual(before);

    expect(t.state.nextKey().phase).toBe('D');
    t.runPhase();
    const afterD = hashes();
    expect(afterD.G).toBe(before.G);
    expect(afterD.D).not.toBe(before.D);
    expect(t.state.versions).toEqual({ G: 0, D: 1 });
    expect(replicaHashes()).toEqual(afterD);

    expect(t.state.nextKey().phase).toBe('G');
    t.runPhase();
    const afterG = hashes();
    expect(afterG.D).toBe(afterD.D);
    expect(afterG.G).not.toBe(afterD.G);
    expect(t.state.versions).toEqual({ G: 1, D: 1 });
    expect(replicaHashes()).toEqual(afterG);
    t.dispose();
  }, HEAVY_TEST_MS);
});

describe('shard averaging', () => {
  const S = 4;
  const ROWS = 8;

  function flatGrads(vars: tf.Variable[], grads: tf.NamedTensorMap): Float32Array {
    return tf.tidy(() => tf.concat(vars.map((v) => tf.reshape(grads[v.name], [-1])))).dataSync() as Float32Array;
  }

  function setup(kind: 'mlp2d' | 'mlp-small') {
    const source = kind === 'mlp2d' ? ring8 : mnist;
    const cfg: GanConfig = resolveConfig({ model: kind, batchSize: S * ROWS, shards: S, seed: 21 }, source);
    const t = new LocalTrainer(cfg, source);
    // Move away from the initial weights so the gradients are not special.
    runPhases(t, 4);
    t.syncReplica();
    const replica = t.replica;
    const vars = (net: Net) => (net === 'G' ? replica.models.g : replica.models.d).trainableWeights.map((w) => w.read() as tf.Variable);
    const plan = t.state.planNext();
    return { cfg, t, replica, vars, plan };
  }

  function fullBatchNoise(cfg: GanConfig, shards: ShardInput[]): tf.Tensor2D {
    const nz = cfg.model.noiseDim;
    const z = new Float32Array(S * ROWS * nz);
    shards.forEach((s, i) => z.set(shardNoise(s.seed, s.rows, nz), i * ROWS * nz));
    return tf.tensor2d(z, [S * ROWS, nz]);
  }

  for (const kind of ['mlp2d', 'mlp-small'] as const) {
    it(`D phase: mean of ${S} shard gradients = full-batch gradient (${kind})`, () => {
      const { cfg, t, replica, vars, plan } = setup(kind);
      expect(plan.phase).toBe('D');
      const averaged = averageShardGradients(plan.shards.map((s) => replica.computeDGradient(s).gradient));

      const real = new Float32Array(plan.shards.reduce((n, s) => n + s.real!.length, 0));
      let off = 0;
      for (const s of plan.shards) {
        real.set(s.real!, off);
        off += s.real!.length;
      }
      const full = tf.tidy(() => {
        const z = fullBatchNoise(cfg, plan.shards);
        const fake = replica.models.g.apply(z) as tf.Tensor;
        const x = tf.concat([tf.reshape(tf.tensor(real), [S * ROWS, ...cfg.model.dataShape]), fake]);
        const { grads } = tf.variableGrads(() => {
          const logits = replica.models.d.apply(x, { training: true }) as tf.Tensor;
          const half = S * ROWS;
          return discriminatorLoss(tf.slice(logits, [0, 0], [half, 1]), tf.slice(logits, [half, 0], [half, 1]), cfg.loss.labelSmoothing);
        }, vars('D'));
        return grads;
      });
      const fullGrad = flatGrads(vars('D'), full);
      tf.dispose(full);
      expect(relMaxAbsError(averaged, fullGrad)).toBeLessThan(1e-4);
      t.dispose();
    }, HEAVY_TEST_MS);

    it(`G phase: mean of ${S} shard gradients = full-batch gradient (${kind})`, () => {
      const { cfg, t, replica, vars, plan: dPlan } = setup(kind);
      // Complete the D phase so the next plan is a G phase.
      t.state.applyPhase(dPlan, dPlan.shards.map((s) => replica.computeDGradient(s)));
      t.syncReplica();
      const plan = t.state.planNext();
      expect(plan.phase).toBe('G');
      const averaged = averageShardGradients(plan.shards.map((s) => replica.computeGGradient(s).gradient));

      const full = tf.tidy(() => {
        const z = fullBatchNoise(cfg, plan.shards);
        const { grads } = tf.variableGrads(() => {
          const fake = replica.models.g.apply(z, { training: true }) as tf.Tensor;
          const logits = replica.models.d.apply(fake, { training: true }) as tf.Tensor;
          return generatorLoss(logits, cfg.loss.gLoss);
        }, vars('G'));
        return grads;
      });
      const fullGrad = flatGrads(vars('G'), full);
      tf.dispose(full);
      expect(relMaxAbsError(averaged, fullGrad)).toBeLessThan(1e-4);
      t.dispose();
    }, HEAVY_TEST_MS);
  }
});

describe('no tensor leaks', () => {
  const cases: [string, GanOptions][] = [
    ['mlp-small', { model: 'mlp-small', batchSize: 16, shards: 2 }],
    ['paper mlp (dropout, maxout)', { model: 'mlp', batchSize: 8, shards: 2 }],
    ['conditional mlp-small', { model: 'mlp-small', conditional: true, batchSize: 16, shards: 2 }],
  ];
  for (const [name, opts] of cases) {
    it(`numTensors is unchanged by D and G steps: ${name}`, () => {
      const t = trainer({ ...opts, dSteps: 1, seed: 9 }, mnist);
      runPhases(t, 2); // warm-up: first D and G phase
      const before = tf.memory().numTensors;
      t.runPhase();
      expect(tf.memory().numTensors).toBe(before);
      t.runPhase();
      expect(tf.memory().numTensors).toBe(before);
      t.dispose();
    }, HEAVY_TEST_MS);
  }
});

describe('optimizer state round trip', () => {
  const base: OptimizerConfig = { name: 'adam', lr: 1e-3, beta1: 0.5, beta2: 0.999, epsilon: 1e-8, momentum: 0.5 };
  for (const name of ['adam', 'sgd'] as const) {
    it(`${name}: state() -> restore() into a fresh optimizer gives bit-identical updates`, () => {
      const size = 1000;
      const cfg = { ...base, name, lr: name === 'sgd' ? 0.01 : 1e-3 };
      const grad = (k: number) => normalArray(size, deriveSeed(77, k));
      const a = createOptimizer(size, cfg);
      const wa = uniformArray(size, 1, -1, 1);
      for (let k = 0; k < 5; k++) a.apply(wa, grad(k));

      const saved = a.state();
      const b = createOptimizer(size, cfg);
      b.restore(saved);
      const wb = wa.slice();
      for (let k = 5; k < 10; k++) {
        a.apply(wa, grad(k));
        b.apply(wb, grad(k));
      }
      expect(hashFloats(wb)).toBe(hashFloats(wa));
      expect(hashFloats(...b.state().slots)).toBe(hashFloats(...a.state().slots));
      expect(b.state().step).toBe(10);
      // state() is a copy: the later updates did not write into the saved slots.
      const c = createOptimizer(size, cfg);
      c.restore(saved);
      expect(c.state().step).toBe(5);
    }, HEAVY_TEST_MS);
  }

  it('restore() rejects a state for another optimizer or size', () => {
    const adam = createOptimizer(10, base);
    expect(() => createOptimizer(10, { ...base, name: 'sgd' }).restore(adam.state())).toThrow(/adam/);
    expect(() => createOptimizer(11, base).restore(adam.state())).toThrow(expect.objectContaining({ code: 'OPTIMIZER_STATE_MISMATCH' }));
  }, HEAVY_TEST_MS);
});

describe('sampler and RNG', () => {
  const tiny: DataSource = (() => {
    const n = 10;
    const x = new Float32Array(n * 2).map((_, i) => i);
    const labels = new Int32Array(n).map((_, i) => i % 3);
    const ds = { name: 'tiny', x, n, dim: 2, shape: [2], labels, numClasses: 3 };
    return { kind: 'finite', spec: 'tiny', train: ds, heldOut: ds };
  })();

  for (const [name, source] of [['finite (crosses epochs)', () => tiny], ['mixture', () => ring8]] as const) {
    it(`sampler state round trip gives the same subsequent batches: ${name}`, () => {
      const src = source();
      const a = new Sampler(src, 42);
      for (let i = 0; i < 3; i++) a.next(7); // 21 rows: past two epoch boundaries of the tiny set
      const b = new Sampler(src, 42, a.state());
      for (let i = 0; i < 4; i++) {
        const ba = a.next(7);
        const bb = b.next(7);
        expect(hashFloats(bb.x)).toBe(hashFloats(ba.x));
        expect(bb.labels ? Array.from(bb.labels) : undefined).toEqual(ba.labels ? Array.from(ba.labels) : undefined);
      }
      expect(b.state()).toEqual(a.state());
    });
  }

  it('a finite sampler visits every row once per epoch', () => {
    const s = new Sampler(tiny, 1);
    const rows = s.next(10).x;
    const firsts = Array.from({ length: 10 }, (_, i) => rows[2 * i] / 2).sort((p, q) => p - q);
    expect(firsts).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('deriveSeed is deterministic, order-sensitive and integer-only', () => {
    expect(deriveSeed(1, 2, 3)).toBe(deriveSeed(1, 2, 3));
    expect(deriveSeed(1, 2, 3)).not.toBe(deriveSeed(3, 2, 1));
    expect(deriveSeed(1, 2)).not.toBe(deriveSeed(1, 2, 0));
    expect(deriveSeed(2 ** 40)).not.toBe(deriveSeed(0));
    const seeds = new Set<number>();
    for (let s = 0; s < 8; s++) seeds.add(shardSeed(7, { iteration: 0, phase: 'D', dStep: 0 }, s));
    seeds.add(shardSeed(7, { iteration: 0, phase: 'G', dStep: 0 }, 0));
    seeds.add(shardSeed(7, { iteration: 1, phase: 'D', dStep: 0 }, 0));
    seeds.add(shardSeed(7, { iteration: 0, phase: 'D', dStep: 1 }, 0));
    expect(seeds.size).toBe(11);
    const s = deriveSeed(5, STREAM.noise);
    expect(Number.isInteger(s) && s >= 0 && s < 2 ** 32).toBe(true);
    expect(() => deriveSeed(1.5)).toThrow(RangeError);
  });

  it('Rng is deterministic and its state round-trips', () => {
    const a = new Rng(123);
    const b = new Rng(123);
    const c = new Rng(124);
    const seqA = Array.from({ length: 20 }, () => a.nextU32());
    expect(Array.from({ length: 20 }, () => b.nextU32())).toEqual(seqA);
    expect(Array.from({ length: 20 }, () => c.nextU32())).not.toEqual(seqA);
    const resumed = Rng.fromState(a.state());
    expect(Array.from({ length: 20 }, () => resumed.nextFloat())).toEqual(Array.from({ length: 20 }, () => a.nextFloat()));
    expect(hashFloats(normalArray(100, 9))).toBe(hashFloats(normalArray(100, 9)));
    expect(hashFloats(normalArray(100, 9))).not.toBe(hashFloats(normalArray(100, 10)));
  });
});

describe('seeded dropout (paper mlp)', () => {
  it('same shard seed gives the same gradient; different seeds give different masks', () => {
    const cfg = resolveConfig({ model: 'mlp', batchSize: 8, shards: 2, seed: 4 }, mnist);
    const t = new LocalTrainer(cfg, mnist);
    t.syncReplica();
    const plan = t.state.planNext();
    const shard = plan.shards[0];
    const g1 = t.replica.computeDGradient(shard).gradient;
    const g2 = t.replica.computeDGradient(shard).gradient;
    expect(hashFloats(g2)).toBe(hashFloats(g1));

    // D's output on fixed inputs under two dropout seeds: the masks, and so the outputs, differ;
    // the same seed reproduces them; without a seed dropout is the identity (inference).
    const d = t.replica.models.d;
    const x = tf.tensor(shard.real!, [shard.rows, 28, 28, 1]);
    const run = (seed: number | null) => {
      const f = () => tf.tidy(() => (d.apply(x, { training: true }) as tf.Tensor).dataSync() as Float32Array).slice();
      return hashFloats(seed === null ? f() : withDropoutSeed(seed, f));
    };
    const inference = hashFloats((tf.tidy(() => d.predict(x) as tf.Tensor).dataSync() as Float32Array).slice());
    expect(run(1)).toBe(run(1));
    expect(run(2)).not.toBe(run(1));
    expect(run(1)).not.toBe(inference);
    expect(run(null)).toBe(inference);
    x.dispose();

    // The layer itself: a mask is a pure function of (seed, stream id), with about `rate` zeros.
    const layer = new SeededDropout({ rate: 0.5, streamId: 1 });
    const ones = tf.ones([4, 250]);
    const mask = (seed: number, l = layer) =>
      withDropoutSeed(seed, () => tf.tidy(() => (l.apply(ones) as tf.Tensor).dataSync() as Float32Array).slice());
    const m1 = mask(10);
    expect(hashFloats(mask(10))).toBe(hashFloats(m1));
    expect(hashFloats(mask(11))).not.toBe(hashFloats(m1));
    expect(hashFloats(mask(10, new SeededDropout({ rate: 0.5, streamId: 2 })))).not.toBe(hashFloats(m1));
    const zeros = m1.filter((v) => v === 0).length;
    expect(zeros).toBeGreaterThan(400);
    expect(zeros).toBeLessThan(600);
    expect(m1.every((v) => v === 0 || v === 2)).toBe(true);
    ones.dispose();
    t.dispose();
  }, HEAVY_TEST_MS);
});

describe('resolveConfig errors', () => {
  const expectConfigError = (fn: () => unknown, code: string, message: RegExp) => {
    let err: unknown;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe(code);
    expect((err as ConfigError).message).toMatch(message);
  };

  it('batch not divisible by shards', () => {
    expectConfigError(() => resolveConfig({ batchSize: 30, shards: 4 }, ring8), 'BATCH_NOT_DIVISIBLE', /--batch-size 30 must be a multiple of --shards 4/);
  });

  it('mlp2d on images', () => {
    expectConfigError(() => resolveConfig({ model: 'mlp2d' }, mnist), 'MODEL_DATA_MISMATCH', /mlp2d is for 2-D mixtures.*'mnist'/);
  });

  it('image model on a 2-D mixture', () => {
    expectConfigError(() => resolveConfig({ model: 'mlp-small' }, ring8), 'MODEL_DATA_MISMATCH', /'ring8' holds 2-D points; use --model mlp2d/);
  });

  it('conditional on an unlabelled mixture', () => {
    expectConfigError(() => resolveConfig({ conditional: true }, ring8), 'CONDITIONAL_NEEDS_LABELS', /--conditional needs a labelled dataset; 'ring8'/);
  });

  it('valid options resolve with defaults filled in', () => {
    const cfg = resolveConfig({ batchSize: 32, shards: 4 }, ring8);
    expect(cfg.model.kind).toBe('mlp2d');
    expect(cfg.model.dataShape).toEqual([2]);
    expect(cfg.train.batchSize / cfg.train.shards).toBe(8);
  });
});
