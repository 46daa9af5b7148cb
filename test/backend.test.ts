/**
 * What the compute backend can train. dcgan needs convolution-gradient kernels, which
 * tfjs-backend-wasm 4.22 lacks (Conv2DBackpropFilter) until shared/wasm-conv-gradients.ts
 * registers them at backend start. A backend that still lacks a kernel a model's training step
 * needs must be refused at start (exit 2, one clear line), not crash inside the first D-step.
 */
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { assertCanTrain, initBackend } from '../shared/backend.ts';
import { GanError } from '../shared/errors.ts';
import { cleanup, makeTempDir, spawnCli, waitForEvent, waitForExit } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

afterAll(cleanup, HEAVY_TEST_MS);

describe('assertCanTrain', () => {
  it('passes dcgan on wasm once the conv gradients are registered; without Conv2DBackpropFilter it refuses with BACKEND_CANNOT_TRAIN naming the kernel', async () => {
    await initBackend('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(() => assertCanTrain('dcgan')).not.toThrow();
    for (const kind of ['mlp', 'mlp-small', 'mlp2d']) expect(() => assertCanTrain(kind)).not.toThrow();

    // A backend without the kernel (as tfjs-backend-wasm ships) is still refused.
    const registered = tf.getKernel('Conv2DBackpropFilter', 'wasm')!;
    tf.unregisterKernel('Conv2DBackpropFilter', 'wasm');
    let err: unknown;
    try {
      assertCanTrain('dcgan');
    } catch (e) {
      err = e;
    } finally {
      tf.registerKernel(registered);
    }
    expect(err).toBeInstanceOf(GanError);
    expect((err as GanError).code).toBe('BACKEND_CANNOT_TRAIN');
    expect((err as GanError).message).toContain('Conv2DBackpropFilter');
    expect((err as GanError).message).toContain('--backend cpu');
    for (const kind of ['mlp', 'mlp-small', 'mlp2d']) expect(() => assertCanTrain(kind)).not.toThrow();
    expect(() => assertCanTrain('dcgan')).not.toThrow();
  }, HEAVY_TEST_MS);

  it('accepts dcgan on cpu, which has every kernel it needs', async () => {
    await initBackend('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(() => assertCanTrain('dcgan')).not.toThrow();
    await initBackend('wasm');
  }, HEAVY_TEST_MS);
});

describe('dcgan on a wasm process', () => {
  it(
    'gan-train trains dcgan on wasm (no BACKEND_CANNOT_TRAIN) and reports the backend',
    async () => {
      const train = spawnCli('train', ['--dataset', 'mnist', '--model', 'dcgan', '--iterations', '2', '--batch-size', '8', '--shards', '2', '--backend', 'wasm', '--sample-every', '0', '--run-dir', makeTempDir('gan-dcgan-')]);
      const started = await waitForEvent(train, 'run_started', 60_000);
      expect(started.backend).toBe('wasm');
      const done = await waitForEvent(train, 'run_finished', 60_000);
      expect(done.iterations).toBe(2);
      expect(await waitForExit(train, 30_000)).toEqual({ code: 0, signal: null });
      expect(train.stderr.join('\n')).not.toContain('BACKEND_CANNOT_TRAIN');
    },
    HEAVY_TEST_MS,
  );
});

describe('wasm matMul with a transposed operand', () => {
  it(
    'a·b^T computed as (b·a^T)^T for a small a gives the same bits as multiplying by a materialised b^T, and does not leak',
    async () => {
      await initBackend('wasm');
      const { preferTransposedProduct } = await import('../shared/backend.ts');
      // [m, n, k]: a shard's rows against mlp-small's and mlp2d's layers, odd sizes, one where b is small.
      const shapes = [[4, 784, 512], [16, 512, 256], [3, 100, 37], [7, 1, 300], [64, 784, 512]];
      for (const [m, n, k] of shapes) {
        const a = tf.randomNormal([m, k], 0, 1, 'float32', m * 7 + n);
        const b = tf.randomNormal([n, k], 0, 1, 'float32', k * 3 + 1);
        const before = tf.memory().numTensors;
        const viaKernel = tf.tidy(() => tf.matMul(a, b, false, true).dataSync());
        expect(tf.memory().numTensors).toBe(before);
        const bT = tf.transpose(b);
        const plain = tf.tidy(() => tf.matMul(a, bT).dataSync());
        expect(Buffer.from(viaKernel.buffer).equals(Buffer.from(plain.buffer)), `${m}x${k} · (${n}x${k})^T`).toBe(true);
        tf.dispose([a, b, bT]);
      }
      expect(preferTransposedProduct([4, 512], [784, 512])).toBe(true);
      expect(preferTransposedProduct([7, 300], [1, 300])).toBe(false);
      // Batched (rank 3): the same identity per batch entry.
      const a3 = tf.randomNormal([2, 5, 64], 0, 1, 'float32', 11);
      const b3 = tf.randomNormal([2, 200, 64], 0, 1, 'float32', 12);
      const k3 = tf.tidy(() => tf.matMul(a3, b3, false, true).dataSync());
      const p3 = tf.tidy(() => tf.matMul(a3, tf.transpose(b3, [0, 2, 1])).dataSync());
      expect(Buffer.from(k3.buffer).equals(Buffer.from(p3.buffer))).toBe(true);
      tf.dispose([a3, b3]);
    },
    HEAVY_TEST_MS,
  );
});
