/**
 * Convolution gradients on the wasm backend (shared/wasm-conv-gradients.ts) and the Tile
 * gradient/kernel (shared/tile.ts): checked against the cpu backend's reference kernels on random
 * shapes, bit-for-bit repeatable, and dcgan trained by coordinator + workers gives gan-train's hash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { initialWeights } from '../shared/models.ts';
import { GanReplica } from '../shared/replica.ts';
import { Rng } from '../shared/rng.ts';
import { cleanup, eventsOf, makeTempDir, spawnCli, waitForEvent, waitForExit, type Proc } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

type Pad = 'same' | 'valid';
interface Case {
  x: [number, number, number, number];
  f: [number, number, number, number];
  stride: number;
  pad: Pad;
}

/** Values in [-1, 1) from a seeded stream (the same on both backends). */
function randomValues(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.nextFloat() * 2 - 1;
  return out;
}

interface Results {
  y: Float32Array;
  dx: Float32Array;
  dw: Float32Array;
  tY: Float32Array;
  tDy: Float32Array;
  tDw: Float32Array;
}

/**
 * conv2d forward and both gradients (through tf.grads: the backend's Conv2DBackpropInput and
 * Conv2DBackpropFilter kernels), and conv2dTranspose forward and both of its gradients, on the
 * active backend.
 */
function convResults(c: Case, seed: number): Results {
  const rng = new Rng(seed);
  return tf.tidy(() => {
    const x = tf.tensor4d(randomValues(rng, c.x.reduce((a, b) => a * b)), c.x);
    const w = tf.tensor4d(randomValues(rng, c.f.reduce((a, b) => a * b)), c.f);
    const y = tf.conv2d(x, w, c.stride, c.pad);
    const dy = tf.tensor4d(randomValues(rng, y.size), y.shape as [number, number, number, number]);
    const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), dy)))([x, w]);
    // conv2dTranspose maps y-shaped inputs to x-shaped outputs with the same filter.
    const up = (a: tf.Tensor, b: tf.Tensor) => tf.conv2dTranspose(a as tf.Tensor4D, b as tf.Tensor4D, c.x, c.stride, c.pad);
    const tY = up(dy, w);
    const dOut = tf.tensor4d(randomValues(rng, tY.size), c.x);
    const [tDy, tDw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(up(a, b), dOut)))([dy, w]);
    const data = (t: tf.Tensor) => t.dataSync() as Float32Array;
    return { y: data(y), dx: data(dx), dw: data(dw), tY: data(tY), tDy: data(tDy), tDw: data(tDw) };
  });
}

/** max |a - b| relative to max |b| (float32 sums in another order differ by a few ulps of the largest terms). */
function relError(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let err = 0;
  let scale = 1e-30;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / scale;
}

/** The shapes dcgan uses (D's two convolutions, G's two transposed ones at shard sizes), then random ones. */
function cases(): Case[] {
  const out: Case[] = [
    { x: [4, 28, 28, 1], f: [4, 4, 1, 64], stride: 2, pad: 'same' },
    { x: [4, 14, 14, 64], f: [4, 4, 64, 128], stride: 2, pad: 'same' },
    { x: [3, 28, 28, 2], f: [4, 4, 2, 64], stride: 2, pad: 'same' }, // conditional D: image + label plane
    // The input gradient's per-phase path (whole blocks, >= 8 channels) beyond dcgan's 4x4 / 2.
    { x: [2, 12, 12, 8], f: [3, 3, 8, 5], stride: 2, pad: 'same' },
    { x: [2, 12, 10, 16], f: [5, 4, 16, 3], stride: 2, pad: 'valid' },
    { x: [2, 12, 9, 8], f: [3, 3, 8, 4], stride: 3, pad: 'same' },
    { x: [2, 12, 9, 8], f: [4, 5, 8, 4], stride: 3, pad: 'valid' },
  ];
  const rng = new Rng(17);
  const pick = <T>(xs: T[]): T => xs[rng.nextInt(xs.length)];
  for (const stride of [1, 2]) {
    for (const pad of ['same', 'valid'] as const) {
      for (let i = 0; i < 3; i++) {
        const kh = pick([1, 2, 3, 4, 5]);
        const kw = pick([1, 2, 3, 4]);
        const cin = pick([1, 3, 8]);
        const x: Case['x'] = [pick([1, 2, 3]), kh + pick([0, 1, 2, 5, 8]), kw + pick([0, 1, 3, 6]), cin];
        out.push({ x, f: [kh, kw, cin, pick([1, 4, 16])], stride, pad });
      }
    }
  }
  return out;
}

beforeAll(async () => {
  await initBackend('wasm');
}, HEAVY_TEST_MS);

afterAll(cleanup);

describe('wasm convolution gradients against the cpu backend', () => {
  it('conv2d dx/dW and conv2dTranspose forward, d(input), d(filter) match cpu on the dcgan shapes and random ones (strides 1, 2 and 3, same and valid)', async () => {
    const all = cases();
    expect(all.length).toBeGreaterThanOrEqual(15);
    for (const [i, c] of all.entries()) {
      await tf.setBackend('cpu');
      const ref = convResults(c, 100 + i);
      await tf.setBackend('wasm');
      const got = convResults(c, 100 + i);
      const label = `${JSON.stringify(c)}`;
      // float32 with sums of up to ~2,000 terms in a different order: a few 1e-7 relative.
      for (const key of ['y', 'dx', 'dw', 'tY', 'tDy', 'tDw'] as const) {
        expect(relError(got[key], ref[key]), `${key} ${label}`).toBeLessThan(2e-5);
      }
    }
  }, HEAVY_TEST_MS);

  it('registers Conv2DBackpropFilter on wasm and frees every temporary', async () => {
    await tf.setBackend('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    const backend = tf.backend() as unknown as { numDataIds(): number };
    convResults(cases()[1], 1); // warm up
    const ids = backend.numDataIds();
    const tensors = tf.memory().numTensors;
    convResults(cases()[1], 2);
    convResults({ x: [2, 9, 7, 3], f: [3, 3, 3, 5], stride: 2, pad: 'valid' }, 3);
    expect(backend.numDataIds()).toBe(ids);
    expect(tf.memory().numTensors).toBe(tensors);
  }, HEAVY_TEST_MS);

  it('is deterministic: the same inputs give the same bits twice', async () => {
    await tf.setBackend('wasm');
    for (const c of cases().slice(0, 4)) {
      const a = convResults(c, 7);
      const b = convResults(c, 7);
      for (const key of ['dx', 'dw', 'tY', 'tDy', 'tDw'] as const) {
        expect(Buffer.from(a[key].buffer).equals(Buffer.from(b[key].buffer)), `${key} ${JSON.stringify(c)}`).toBe(true);
      }
    }
  }, HEAVY_TEST_MS);
});

describe('tf.tile on wasm (LayerNormalization)', () => {
  it('the broadcast Tile kernel equals cpu bit for bit, and its one-Sum gradient matches cpu', async () => {
    const shapes: { x: number[]; reps: number[] }[] = [
      { x: [4, 7, 7, 1], reps: [1, 1, 1, 128] },
      { x: [1, 1, 1, 64], reps: [4, 14, 14, 1] },
      { x: [3, 2], reps: [2, 3] },
      { x: [2, 1, 3], reps: [1, 4, 1] },
      { x: [5], reps: [1] },
    ];
    for (const [i, s] of shapes.entries()) {
      const run = () => {
        const rng = new Rng(300 + i);
        return tf.tidy(() => {
          const x = tf.tensor(randomValues(rng, s.x.reduce((a, b) => a * b)), s.x);
          const y = tf.tile(x, s.reps);
          const dy = tf.tensor(randomValues(rng, y.size), y.shape);
          const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.tile(a, s.reps), dy)))(x);
          return { y: y.dataSync() as Float32Array, dx: dx.dataSync() as Float32Array, shape: y.shape };
        });
      };
      await tf.setBackend('cpu');
      const ref = run();
      await tf.setBackend('wasm');
      const got = run();
      expect(got.shape).toEqual(ref.shape);
      expect(Buffer.from(got.y.buffer).equals(Buffer.from(ref.y.buffer)), JSON.stringify(s)).toBe(true);
      expect(relError(got.dx, ref.dx), JSON.stringify(s)).toBeLessThan(1e-6);
    }
  }, HEAVY_TEST_MS);
});

describe('dcgan training shards on wasm', () => {
  it('D and G shards (unconditional and conditional) leave no tensors or wasm data behind and repeat bit for bit', async () => {
    await tf.setBackend('wasm');
    const source = loadDataSource('mnist');
    if (source.kind !== 'finite') throw new Error('mnist is finite');
    const rows = 4;
    const real = source.train.x.slice(0, rows * 784);
    const backend = tf.backend() as unknown as { numDataIds(): number };
    for (const conditional of [false, true]) {
      const replica = new GanReplica(resolveConfig({ model: 'dcgan', batchSize: rows, shards: 1, conditional }, source));
      replica.setWeights('G', initialWeights(replica.layout.G, 1, 1));
      replica.setWeights('D', initialWeights(replica.layout.D, 1, 2));
      const realLabels = conditional ? source.train.labels!.slice(0, rows) : undefined;
      const both = (seed: number) => [replica.computeShard('D', { shardId: 0, seed, rows, real, realLabels }), replica.computeShard('G', { shardId: 0, seed, rows })];
      const first = both(5);
      const counts = [tf.memory().numTensors, backend.numDataIds()];
      const again = both(5);
      both(6);
      expect([tf.memory().numTensors, backend.numDataIds()]).toEqual(counts);
      for (const i of [0, 1]) {
        expect(Buffer.from(again[i].gradient.buffer).equals(Buffer.from(first[i].gradient.buffer))).toBe(true);
        expect(again[i].gradient.every(Number.isFinite)).toBe(true);
      }
      replica.dispose();
    }
  }, HEAVY_TEST_MS);
});

describe('dcgan on wasm, distributed', () => {
  // Small: 3 iterations of batch 16 in 4 shards (~0.1 s of compute per phase).
  const FLAGS = ['--dataset', 'mnist', '--model', 'dcgan', '--iterations', '3', '--batch-size', '16', '--shards', '4', '--backend', 'wasm', '--sample-every', '0'];

  async function hashOf(proc: Proc): Promise<string> {
    const done = await waitForEvent(proc, 'run_finished', 90_000);
    expect(await waitForExit(proc, 20_000)).toEqual({ code: 0, signal: null });
    expect(done.iterations).toBe(3);
    return String(done.weightsHash);
  }

  it('coordinator + 2 wasm workers give gan-train\'s weights hash, unconditional, conditional and --width 32', async () => {
    const runs = [[], ['--conditional'], ['--width', '32']].map((extra) => {
      const train = spawnCli('train', [...FLAGS, ...extra, '--run-dir', makeTempDir('gan-dcgan-train-')], { name: `gan-train ${extra}` });
      const coordinator = spawnCli(
        'coordinator',
        [...FLAGS, ...extra, '--host', '127.0.0.1', '--port', '0', '--run-dir', makeTempDir('gan-dcgan-coord-')],
        { name: `coordinator ${extra}` },
      );
      return { train, coordinator, extra };
    });
    const workers: Proc[] = [];
    for (const r of runs) {
      const listening = await waitForEvent(r.coordinator, 'listening', 60_000);
      for (const id of ['a', 'b']) {
        workers.push(spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${listening.port}`, '--id', `w-${id}${r.extra.length}`, '--backend', 'wasm'], { name: `worker ${id}` }));
      }
    }
    for (const r of runs) {
      const [reference, distributed] = await Promise.all([hashOf(r.train), hashOf(r.coordinator)]);
      expect(reference).toMatch(/^[0-9a-f]{64}$/);
      expect(distributed, `dcgan ${r.extra.join(' ')}`).toBe(reference);
    }
    for (const w of workers) {
      expect(await waitForExit(w, 20_000), w.name).toEqual({ code: 0, signal: null });
      expect(w.stderr.join('\n')).not.toContain('BACKEND_CANNOT_TRAIN');
    }
    // Both workers of a run took part (the hash holds whoever computed what).
    expect(workers.filter((w) => Number(eventsOf(w, 'worker_finished')[0]?.shardsDone) > 0).length).toBeGreaterThanOrEqual(2);
  }, 150_000);
});
