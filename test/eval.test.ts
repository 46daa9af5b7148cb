/**
 * Evaluation (issue #6): the 2-D mixture metrics on hand-built sets with known answers, the
 * linear algebra behind the Fréchet distance, the image scores with the shipped classifier
 * (loaded, never retrained here), minibatch standard deviation in D, gan-eval on an export and
 * on a checkpoint, and --eval-every on a distributed run.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { writeCheckpoint } from '../trainer/checkpoint.ts';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig, type GanConfig } from '../shared/config.ts';
import { grid25, loadDataSource, ring8, sampleMixture, type DataSource } from '../trainer/data/index.ts';
import type { Dataset, MixtureSpec } from '../shared/data/types.ts';
import { ConfigError } from '../shared/errors.ts';
import { exportModels, loadExportedModel, readExportMeta } from '../trainer/export.ts';
import { accuracyByClass, DEFAULT_CLASSIFIER_DIR, ImageClassifier, loadClassifier } from '../trainer/eval/classifier.ts';
import { Evaluator, flatMetrics, formatReport, type GenerateFn, type ImageReport } from '../trainer/eval/evaluate.ts';
import { classHistogram, featureStats, inceptionScore } from '../trainer/eval/image-metrics.ts';
import { frechetDistance, gaussianStats, matMul, sqrtmPsd, symmetricEigen, traceSqrtProduct } from '../trainer/eval/linalg.ts';
import { mixtureMetrics } from '../trainer/eval/mixture-metrics.ts';
import { MinibatchStd } from '../shared/layers.ts';
import { GanReplica } from '../shared/replica.ts';
import { normalArray, permutation, Rng } from '../shared/rng.ts';
import { cleanup, makeTempDir, ROOT, spawnCli, waitForEvent, waitForEvents, waitForExit } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const run = promisify(execFile);
const EVAL_BIN = join(ROOT, 'bin', 'gan-eval.js');

let mnist: Extract<DataSource, { kind: 'finite' }>;
let classifier: ImageClassifier;

beforeAll(async () => {
  await initBackend('wasm');
  mnist = loadDataSource('mnist') as Extract<DataSource, { kind: 'finite' }>;
  classifier = await loadClassifier(DEFAULT_CLASSIFIER_DIR);
}, 60_000);

afterEach(cleanup, HEAVY_TEST_MS);
afterAll(() => {
  classifier?.dispose();
  return cleanup();
}, HEAVY_TEST_MS);

// ------------------------------------------------------------------ 2-D mixtures

/** n points of mode `j` of m (mean + std noise). */
function pointsAt(m: MixtureSpec, modes: number[], perMode: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(modes.length * perMode * 2);
  let k = 0;
  for (const j of modes) {
    for (let i = 0; i < perMode; i++) {
      out[k++] = m.means[2 * j] + m.std * rng.normal();
      out[k++] = m.means[2 * j + 1] + m.std * rng.normal();
    }
  }
  return out;
}

describe('2-D mixture metrics', () => {
  it('real samples of the mixture: every mode, ~98.9% high quality (the 3-std disc of a 2-D Gaussian), reverse KL ~0', () => {
    for (const m of [ring8(), grid25()]) {
      const r = mixtureMetrics(sampleMixture(m, 2500, 7), 2500, m);
      expect(r.modesCaptured).toBe(m.k);
      expect(r.modesAny).toBe(m.k);
      expect(r.highQuality).toBeGreaterThan(0.97);
      expect(r.highQuality).toBeLessThanOrEqual(1);
      expect(r.reverseKl).toBeLessThan(0.02);
      expect(r.counts.reduce((a, b) => a + b, 0)).toBe(Math.round(r.highQuality * 2500));
    }
  });

  it('every sample at one mode: 1 mode captured, reverse KL = log k', () => {
    const m = ring8();
    const pts = new Float32Array(2500 * 2);
    for (let i = 0; i < 2500; i++) {
      pts[2 * i] = m.means[6];
      pts[2 * i + 1] = m.means[7];
    }
    const r = mixtureMetrics(pts, 2500, m);
    expect(r.modesCaptured).toBe(1);
    expect(r.highQuality).toBe(1);
    expect(r.counts[3]).toBe(2500);
    expect(r.reverseKl).toBeCloseTo(Math.log(8), 12);
  });

  it('a hand-built set: 4 of 8 modes equally, a fifth of the points far away', () => {
    const m = ring8();
    const good = pointsAt(m, [0, 2, 4, 6], 100, 3);
    const pts = new Float32Array(500 * 2);
    pts.set(good);
    for (let i = 400; i < 500; i++) {
      pts[2 * i] = 10 + i; // far from every mode
      pts[2 * i + 1] = -10;
    }
    const r = mixtureMetrics(pts, 500, m);
    // 3 std covers 98.9% of a mode's points; the threshold is 0.2 x 500 / 8 = 12.5 points.
    expect(r.modesCaptured).toBe(4);
    expect(r.highQuality).toBeGreaterThan(0.78);
    expect(r.highQuality).toBeLessThanOrEqual(0.8);
    expect(r.reverseKl).toBeCloseTo(Math.log(2), 2);
  });

  it('a few stray points do not capture a mode (but count in modesAny)', () => {
    const m = grid25();
    const pts = new Float32Array(2500 * 2);
    pts.set(pointsAt(m, [0], 2490, 5));
    pts.set(pointsAt(m, [12], 10, 6), 2490 * 2); // 10 < 20 = 0.2 x 2500 / 25
    const r = mixtureMetrics(pts, 2500, m);
    expect(r.modesCaptured).toBe(1);
    expect(r.modesAny).toBe(2);
  });

  it('noise: uniform points over the plane are almost never high quality, no mode captured', () => {
    for (const m of [ring8(), grid25()]) {
      const rng = new Rng(11);
      const pts = Float32Array.from({ length: 5000 }, () => (rng.nextFloat() * 2 - 1) * 6);
      const r = mixtureMetrics(pts, 2500, m);
      expect(r.modesCaptured).toBe(0);
      expect(r.highQuality).toBeLessThan(0.05);
    }
    const none = mixtureMetrics(Float32Array.of(100, 100), 1, ring8());
    expect(none.highQuality).toBe(0);
    expect(Number.isNaN(none.reverseKl)).toBe(true);
  });
});

// ------------------------------------------------------------------ linear algebra

/** A random symmetric positive definite n x n matrix: B B^T + eps I. */
function randomSpd(n: number, seed: number, eps = 1e-3): Float64Array {
  const rng = new Rng(seed);
  const b = Float64Array.from({ length: n * n }, () => rng.normal());
  const bt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) bt[j * n + i] = b[i * n + j];
  const a = matMul(b, bt, n);
  for (let i = 0; i < n; i++) a[i * n + i] += eps;
  return a;
}

describe('matrix square root and Fréchet distance', () => {
  it('sqrtm(A)^2 == A for a random SPD matrix; the root is symmetric', () => {
    for (const n of [1, 5, 40]) {
      const a = randomSpd(n, n);
      const s = sqrtmPsd(a, n);
      const s2 = matMul(s, s, n);
      const scale = Math.max(...Array.from(a, Math.abs));
      for (let i = 0; i < n * n; i++) expect(Math.abs(s2[i] - a[i])).toBeLessThan(1e-10 * scale);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) expect(s[i * n + j]).toBe(s[j * n + i]);
    }
  });

  it('Jacobi eigenpairs satisfy A v = lambda v', () => {
    const n = 12;
    const a = randomSpd(n, 4);
    const { values, vectors } = symmetricEigen(a, n);
    for (let c = 0; c < n; c++) {
      for (let r = 0; r < n; r++) {
        let av = 0;
        for (let k = 0; k < n; k++) av += a[r * n + k] * vectors[k * n + c];
        expect(av).toBeCloseTo(values[c] * vectors[r * n + c], 9);
      }
    }
  });

  it('Tr((S1 S2)^1/2) matches commuting (diagonal) matrices, and the closed form in 1-D', () => {
    expect(traceSqrtProduct(Float64Array.of(2, 0, 0, 3), Float64Array.of(8, 0, 0, 12), 2)).toBeCloseTo(4 + 6, 12);
    // N(0, 1) vs N(1, 4): 1 + 1 + 4 - 2 * 2 = 2
    const a = { dim: 1, count: 2, mean: Float64Array.of(0), cov: Float64Array.of(1) };
    const b = { dim: 1, count: 2, mean: Float64Array.of(1), cov: Float64Array.of(4) };
    expect(frechetDistance(a, b)).toBeCloseTo(2, 12);
  });

  it('the distance of a set to itself is ~0 and grows with added noise', () => {
    const rows = 1000;
    const dim = 16;
    const x = normalArray(rows * dim, 3);
    const base = gaussianStats(x, rows, dim);
    expect(frechetDistance(base, base)).toBeLessThan(1e-8);
    let prev = 0;
    for (const sigma of [0.1, 0.3, 0.6, 1.2]) {
      const noise = normalArray(rows * dim, 9);
      const y = x.map((v, i) => v + sigma * noise[i]);
      const d = frechetDistance(base, gaussianStats(y, rows, dim));
      expect(d).toBeGreaterThan(prev);
      prev = d;
    }
  });
});

// ------------------------------------------------------------------ image scores

function rowsOf(ds: Dataset, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * ds.dim);
  for (let i = 0; i < rows.length; i++) out.set(ds.x.subarray(rows[i] * ds.dim, (rows[i] + 1) * ds.dim), i * ds.dim);
  return out;
}

/** A "generator" that returns real digits of the train split (the labels' class when asked). */
function realDigits(ds: Dataset, seed: number): GenerateFn {
  const order = permutation(ds.n, seed);
  const byClass = new Map<number, number[]>();
  for (const r of order) {
    const l = ds.labels![r];
    if (!byClass.has(l)) byClass.set(l, []);
    byClass.get(l)!.push(r);
  }
  let next = 0;
  const cursor = new Map<number, number>();
  return (_z, rows, labels) => {
    const picked: number[] = [];
    for (let i = 0; i < rows; i++) {
      if (labels) {
        const list = byClass.get(labels[i])!;
        const c = cursor.get(labels[i]) ?? 0;
        picked.push(list[c % list.length]);
        cursor.set(labels[i], c + 1);
      } else picked.push(order[next++ % ds.n]);
    }
    return rowsOf(ds, picked);
  };
}

describe('image scores with the shipped classifier', () => {
  let unconditional: GanConfig;
  let evaluator: Evaluator;

  beforeAll(async () => {
    unconditional = resolveConfig({ model: 'mlp-small' }, mnist);
    evaluator = await Evaluator.create(unconditional, mnist, { classifier });
  }, 60_000);

  it('the shipped classifier is at least 97% accurate on the held-out digits (and says so in classifier.json)', () => {
    const { heldOut } = mnist;
    const { probs } = classifier.run(heldOut.x, heldOut.n);
    const acc = accuracyByClass(ImageClassifier.argmax(probs, heldOut.n, 10), heldOut.labels!, 10);
    expect(acc.count).toBe(997);
    expect(acc.accuracy).toBeGreaterThanOrEqual(0.97);
    expect(classifier.meta!.heldOut.accuracy).toBeCloseTo(acc.accuracy, 2);
    expect(classifier.meta!.dataset).toBe('mnist');
    expect(classifier.meta!.weightsBytes).toBeLessThan(1024 * 1024);
  }, HEAVY_TEST_MS);

  it('IS of a generator that outputs one constant image is ~1', () => {
    const digit = mnist.heldOut.x.subarray(0, mnist.heldOut.dim);
    const constant: GenerateFn = (_z, rows) => {
      const out = new Float32Array(rows * digit.length);
      for (let i = 0; i < rows; i++) out.set(digit, i * digit.length);
      return out;
    };
    const r = evaluator.evaluate(constant, { samples: 500 }) as ImageReport;
    expect(r.inceptionScore).toBeCloseTo(1, 4);
    expect(r.frechetDistance).toBeGreaterThan(10 * r.ceiling.frechetDistance);
    // And directly: identical rows, identical distributions.
    expect(inceptionScore(Float32Array.from({ length: 30 }, (_, i) => [0.2, 0.5, 0.3][i % 3]), 10, 3)).toBeCloseTo(1, 12);
    // Every sample in one class: the others are missing, the max/min ratio is infinite and
    // left out of the flat fields while the zero minimum share stays.
    expect(r.classes.counts.reduce((a, b) => a + b, 0)).toBe(500);
    expect(Math.max(...r.classes.counts)).toBe(500);
    expect(r.classes.maxShare).toBe(1);
    expect(r.classes.minShare).toBe(0);
    expect(r.classes.maxMinRatio).toBe(Infinity);
    const flat = flatMetrics(r);
    expect(flat.classMaxShare).toBe(1);
    expect(flat.classMinShare).toBe(0);
    expect('classMaxMin' in flat).toBe(false);
    expect(formatReport(r)).toMatch(/class share max\/min.*inf/);
  }, HEAVY_TEST_MS);

  it('class histogram: samples per class by the argmax, largest and smallest share, their ratio', () => {
    // 6 rows, 3 classes: argmax 0, 1, 1, 2, 1, 0 -> counts [2, 3, 1].
    const probs = Float32Array.of(0.7, 0.2, 0.1, 0.1, 0.8, 0.1, 0.3, 0.4, 0.3, 0.1, 0.1, 0.8, 0.2, 0.5, 0.3, 0.5, 0.25, 0.25);
    const h = classHistogram(probs, 6, 3);
    expect(h.counts).toEqual([2, 3, 1]);
    expect(h.maxShare).toBeCloseTo(0.5, 12);
    expect(h.minShare).toBeCloseTo(1 / 6, 12);
    expect(h.maxMinRatio).toBe(3);
    // Balanced: ratio 1. A missing class: min share 0, ratio infinite.
    expect(classHistogram(Float32Array.of(1, 0, 0, 1), 2, 2).maxMinRatio).toBe(1);
    const missing = classHistogram(Float32Array.of(1, 0, 0, 0.9, 0.1, 0), 2, 3);
    expect(missing.counts).toEqual([2, 0, 0]);
    expect(missing.maxMinRatio).toBe(Infinity);
    expect(() => classHistogram(new Float32Array(0), 0, 3)).toThrow(RangeError);
  });

  it('class histogram of images: real digits are balanced (ratio < 1.5), a generator of only 0-4 misses half the classes, one of mostly 1s is unbalanced', () => {
    const real = evaluator.evaluate(realDigits(mnist.train, 5), { samples: 1000 }) as ImageReport;
    expect(real.classes.counts.reduce((a, b) => a + b, 0)).toBe(1000);
    expect(real.classes.maxMinRatio).toBeLessThan(1.6);
    expect(real.ceiling.classes.counts.reduce((a, b) => a + b, 0)).toBe(997);
    expect(real.ceiling.classes.maxMinRatio).toBeLessThan(1.5);
    const flat = flatMetrics(real);
    expect(flat.classMaxMin).toBeCloseTo(real.classes.maxMinRatio, 3);
    expect(flat.classMaxMinReal).toBeCloseTo(real.ceiling.classes.maxMinRatio, 3);
    expect(formatReport(real)).toMatch(/samples per class \(classifier's argmax\): 0:\d+ 1:\d+/);

    const { train } = mnist;
    // The split is ordered by class: pick rows in a seeded random order.
    const order = Array.from(permutation(train.n, 3));
    const rowsWhere = (keep: (label: number) => boolean): number[] => order.filter((i) => keep(train.labels![i]));
    const fromRows = (rows: number[]): GenerateFn => (_z, n) => {
      const out = new Float32Array(n * train.dim);
      for (let i = 0; i < n; i++) out.set(train.x.subarray(rows[i % rows.length] * train.dim, (rows[i % rows.length] + 1) * train.dim), i * train.dim);
      return out;
    };
    const low = evaluator.evaluate(fromRows(rowsWhere((l) => l < 5)), { samples: 500 }) as ImageReport;
    expect(low.classes.counts.slice(5).reduce((a, b) => a + b, 0)).toBeLessThan(25); // misclassified only
    expect(low.classes.counts.slice(0, 5).every((c) => c > 50)).toBe(true);
    // Half the rows are 1s, the other half random digits: 1 has ~11x the share of the others.
    const ones = rowsWhere((l) => l === 1);
    const mixed = order.slice(0, 1000);
    const skewedRows = Array.from({ length: 1000 }, (_, i) => (i % 2 === 0 ? ones[i] : mixed[i]));
    const skewed = evaluator.evaluate(fromRows(skewedRows), { samples: 1000 }) as ImageReport;
    expect(skewed.classes.counts.indexOf(Math.max(...skewed.classes.counts))).toBe(1);
    expect(skewed.classes.maxShare).toBeGreaterThan(0.5);
    expect(skewed.classes.maxMinRatio).toBeGreaterThan(5);
  }, HEAVY_TEST_MS);

  it('real digits score near the real-data ceiling (held-out digits scored the same way)', () => {
    const r = evaluator.evaluate(realDigits(mnist.train, 5), { samples: 1000 }) as ImageReport;
    expect(r.ceiling.samples).toBe(997);
    expect(r.ceiling.inceptionScore).toBeGreaterThan(8.5);
    expect(r.ceiling.inceptionScore).toBeLessThanOrEqual(10);
    expect(Math.abs(r.inceptionScore - r.ceiling.inceptionScore)).toBeLessThan(0.05 * r.ceiling.inceptionScore);
    expect(r.frechetDistance).toBeLessThan(2 * r.ceiling.frechetDistance + 1);
    const flat = flatMetrics(r);
    expect(flat.inceptionScoreReal).toBeCloseTo(r.ceiling.inceptionScore, 3);
  }, HEAVY_TEST_MS);

  it('the Fréchet distance of feature sets: ~0 against itself, growing with pixel noise', () => {
    const { heldOut } = mnist;
    const clean = classifier.run(heldOut.x, heldOut.n).features;
    const base = featureStats(clean, heldOut.n, classifier.featureDim);
    expect(frechetDistance(base, base)).toBeLessThan(1e-6);
    let prev = 0;
    const noise = normalArray(heldOut.x.length, 17);
    for (const sigma of [0.1, 0.3, 0.6]) {
      const noisy = heldOut.x.map((v, i) => Math.max(-1, Math.min(1, v + sigma * noise[i])));
      const d = frechetDistance(base, featureStats(classifier.run(noisy, heldOut.n).features, heldOut.n, classifier.featureDim));
      expect(d).toBeGreaterThan(prev);
      prev = d;
    }
  }, HEAVY_TEST_MS);

  it('conditional models: label accuracy per requested label, beside the held-out accuracy', async () => {
    const config = resolveConfig({ model: 'mlp-small', conditional: true }, mnist);
    const ev = await Evaluator.create(config, mnist, { classifier });
    const r = ev.evaluate(realDigits(mnist.train, 8), { samples: 300, labels: [3, 7] }) as ImageReport;
    expect(r.conditional!.perLabel.map((l) => [l.label, l.count])).toEqual([
      [3, 150],
      [7, 150],
    ]);
    expect(r.conditional!.accuracy).toBeGreaterThan(0.95);
    expect(r.conditional!.ceiling.perLabel.map((l) => l.label)).toEqual([3, 7]);
    expect(r.conditional!.ceiling.accuracy).toBeGreaterThan(0.95);
    // A generator that ignores its label: right 1 time in 10.
    const wrong = ev.evaluate(realDigits(mnist.train, 9), { samples: 500 }) as ImageReport;
    expect(wrong.conditional!.perLabel).toHaveLength(10);
    expect(wrong.conditional!.accuracy).toBeGreaterThan(0.9);
    const ignoring: GenerateFn = (z, rows) => realDigits(mnist.train, 10)(z, rows);
    expect((ev.evaluate(ignoring, { samples: 500 }) as ImageReport).conditional!.accuracy).toBeLessThan(0.3);
    expect(() => ev.evaluate(ignoring, { samples: 10, labels: [10] })).toThrow(ConfigError);
    ev.dispose();
  }, HEAVY_TEST_MS);
});

// ------------------------------------------------------------------ minibatch std

describe('minibatch standard deviation in D', () => {
  it('appends the group std per row, groups of consecutive rows never mixing', () => {
    const layer = new MinibatchStd({ groupSize: 2 });
    const x = tf.tensor2d([
      [0, 0],
      [2, 2], // group 1: std 1 in each feature
      [5, 5],
      [5, 5], // group 2: std 0
    ]);
    const out = (layer.apply(x) as tf.Tensor).arraySync() as number[][];
    expect(out.map((r) => r.length)).toEqual([3, 3, 3, 3]);
    expect(out[0][2]).toBeCloseTo(1, 4);
    expect(out[1][2]).toBeCloseTo(1, 4);
    expect(out[2][2]).toBeCloseTo(0, 3);
    expect(out[3][2]).toBeCloseTo(0, 3);
    // Batch size not a multiple of the group: the largest divisor below it (3 rows -> groups of 1).
    expect((layer.apply(tf.tensor2d([[1], [2], [3]])) as tf.Tensor).shape).toEqual([3, 2]);
    tf.dispose(x);
  }, HEAVY_TEST_MS);

  it('validates the group against the rows per shard half, trains, exports and loads back', async () => {
    const source = loadDataSource('ring8');
    expect(() => resolveConfig({ batchSize: 16, shards: 2, minibatchStd: 3 }, source)).toThrow(/MINIBATCH_STD_NOT_DIVISIBLE|multiple of the group size/);
    expect(() => resolveConfig({ batchSize: 16, shards: 2, pack: 2, minibatchStd: 8 }, source)).toThrow(ConfigError);
    expect(resolveConfig({}, source).model).not.toHaveProperty('minibatchStd');
    const config = resolveConfig({ batchSize: 16, shards: 2, pack: 2, minibatchStd: 2, iterations: 3, seed: 4 }, source);
    const trainer = new LocalTrainer(config, source);
    while (!trainer.state.finished) trainer.runPhase();
    trainer.syncReplica();
    const dir = makeTempDir('gan-eval-mbstd-');
    await exportModels(trainer.replica, dir, { config, iteration: 3 });
    expect(readExportMeta(dir).discriminator.customLayers).toEqual(['GanMinibatchStd']);
    const d = await loadExportedModel(join(dir, 'discriminator'));
    const x = sampleMixture(ring8(), 8, 1);
    const viaExport = tf.tidy(() => Array.from((d.apply(tf.tensor2d(x, [4, 4])) as tf.Tensor).dataSync()));
    const viaReplica = Array.from(trainer.replica.discriminate(x, 8)).map((p) => Math.log(p / (1 - p)));
    viaExport.forEach((v, i) => expect(v).toBeCloseTo(viaReplica[i], 4));
    d.dispose();
    trainer.dispose();
  }, 30_000);
});

// ------------------------------------------------------------------ gan-eval and --eval-every

describe('gan-eval and --eval-every', () => {
  it('gan-eval reads an export and a checkpoint of the same G and reports the same metrics', async () => {
    const source = loadDataSource('ring8');
    const config = resolveConfig({ batchSize: 16, shards: 2, iterations: 5, seed: 2 }, source);
    const trainer = new LocalTrainer(config, source);
    while (!trainer.state.finished) trainer.runPhase();
    trainer.syncReplica();
    const runDir = makeTempDir('gan-eval-cli-');
    await exportModels(trainer.replica, join(runDir, 'export'), { config, iteration: 5 });
    writeCheckpoint({ runDir, keep: 2 }, trainer.state.snapshot(), { config, runId: 'test', metricsTail: [] });
    trainer.dispose();
    const [fromExport, fromCkpt, table] = await Promise.all([
      run(process.execPath, [EVAL_BIN, '--export', runDir, '--json', '--samples', '500', '--backend', 'wasm'], { cwd: ROOT }),
      run(process.execPath, [EVAL_BIN, '--checkpoint', runDir, '--json', '--samples', '500', '--backend', 'wasm'], { cwd: ROOT }),
      run(process.execPath, [EVAL_BIN, '--export', join(runDir, 'export'), '--backend', 'wasm'], { cwd: ROOT }),
    ]);
    const a = JSON.parse(fromExport.stdout);
    const b = JSON.parse(fromCkpt.stdout);
    expect(a.origin.kind).toBe('export');
    expect(b.origin.kind).toBe('checkpoint');
    expect(a.iteration).toBe(5);
    expect(b.iteration).toBe(5);
    expect(a.metrics).toEqual(b.metrics);
    expect(a.metrics.samples).toBe(500);
    expect(a.metrics.modes).toBe(8);
    expect(a.report.ceiling.modesCaptured).toBe(8);
    expect(table.stdout).toMatch(/2500 generated samples/);
    expect(table.stdout).toMatch(/modes captured\s+\d\/8\s+8\/8/);
    expect(table.stdout).toMatch(/high-quality samples/);
    await expect(run(process.execPath, [EVAL_BIN, '--export', makeTempDir('gan-eval-empty-')], { cwd: ROOT })).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/EXPORT_MISSING/) });
    await expect(run(process.execPath, [EVAL_BIN], { cwd: ROOT })).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/CLI_EVAL_SOURCE/) });
  }, 60_000);

  it('gan-eval on an MNIST generator prints IS and the Fréchet distance beside the real-data ceiling', async () => {
    const config = resolveConfig({ model: 'mlp-small', conditional: true, seed: 3 }, mnist);
    const replica = new GanReplica(config);
    const dir = makeTempDir('gan-eval-mnist-');
    await exportModels(replica, dir, { config, iteration: 0 });
    replica.dispose();
    const { stdout } = await run(process.execPath, [EVAL_BIN, '--export', dir, '--samples', '200', '--labels', '1,2', '--backend', 'wasm'], { cwd: ROOT });
    expect(stdout).toMatch(/held-out accuracy 9\d\.\d%/);
    expect(stdout).toMatch(/Inception Score \(classifier\)\s+[\d.]+\s+[\d.]+/);
    expect(stdout).toMatch(/Fréchet distance \(features\)\s+[\d.]+\s+[\d.]+/);
    expect(stdout).toMatch(/label 1 \(100 samples\)/);
    expect(stdout).toMatch(/label 2 \(100 samples\)/);
    expect(stdout).toMatch(/class share max\/min \(<= 1\.5 wanted\)\s+(inf|[\d.]+)\s+[\d.]+/);
    expect(stdout).toMatch(/samples per class \(classifier's argmax\): 0:\d+ 1:\d+ 2:\d+/);
  }, 60_000);

  it('--eval-every logs eval events with the iteration and the metrics on a distributed run', async () => {
    const runDir = makeTempDir('gan-eval-every-');
    const coord = spawnCli('coordinator', [
      '--dataset', 'ring8', '--preset', 'none', '--iterations', '30', '--batch-size', '32', '--shards', '4', '--backend', 'wasm',
      '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--eval-every', '10', '--eval-samples', '400',
    ]);
    const listening = await waitForEvent(coord, 'listening', 30_000);
    spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${listening.port}`, '--id', 'w1', '--backend', 'wasm']);
    const evals = await waitForEvents(coord, 'eval', 3, 60_000);
    expect(evals.map((e) => e.iteration)).toEqual([10, 20, 30]);
    // Every field is documented for the `eval` event in docs/status-log.md.
    const doc = readFileSync(join(ROOT, 'docs', 'status-log.md'), 'utf8');
    const at = doc.indexOf('### `eval`');
    expect(at).toBeGreaterThan(0);
    const documented = [...doc.slice(at, doc.indexOf('\n### ', at + 1)).matchAll(/^\| `([A-Za-z]+)` \|/gm)].map((m) => m[1]);
    const base = ['level', 'time', 'pid', 'hostname', 'name', 'msg', 'event'];
    for (const e of evals) {
      for (const k of Object.keys(e)) if (!base.includes(k)) expect(documented, `eval field ${k}`).toContain(k);
      expect(e.samples).toBe(400);
      expect(e.generator).toBe('g');
      expect(e.modes).toBe(8);
      expect(typeof e.modesCaptured).toBe('number');
      expect(e.highQuality).toBeGreaterThanOrEqual(0);
    }
    await waitForEvent(coord, 'run_finished', 30_000);
    expect(await waitForExit(coord, 15_000)).toEqual({ code: 0, signal: null });
  }, 90_000);
});
