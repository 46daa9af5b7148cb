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
