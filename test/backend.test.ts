/**
 * What the compute backend can train: dcgan needs the conv-filter gradient kernel, which
 * tfjs-backend-wasm lacks. Users must hear that at start (exit 2, one clear line), from
 * gan-train and from a worker joining a dcgan run, instead of a crash inside the first D-step.
 */
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { assertCanTrain, initBackend } from '../shared/backend.ts';
import { GanError } from '../shared/errors.ts';
import { cleanup, makeTempDir, spawnCli, waitForEvent, waitForExit } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

afterAll(cleanup, HEAVY_TEST_MS);

describe('assertCanTrain', () => {
  it('refuses dcgan on wasm with BACKEND_CANNOT_TRAIN naming the missing kernel; the MLPs pass', async () => {
    await initBackend('wasm');
    let err: unknown;
    try {
      assertCanTrain('dcgan');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GanError);
    expect((err as GanError).code).toBe('BACKEND_CANNOT_TRAIN');
    expect((err as GanError).message).toContain('Conv2DBackpropFilter');
    expect((err as GanError).message).toContain('--backend cpu');
    for (const kind of ['mlp', 'mlp-small', 'mlp2d']) expect(() => assertCanTrain(kind)).not.toThrow();
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
    'gan-train exits 2 at start with BACKEND_CANNOT_TRAIN and no stack',
    async () => {
      const train = spawnCli('train', ['--dataset', 'mnist', '--model', 'dcgan', '--iterations', '2', '--backend', 'wasm', '--run-dir', makeTempDir('gan-dcgan-')]);
      expect(await waitForExit(train, 60_000)).toEqual({ code: 2, signal: null });
      const stderr = train.stderr.join('\n');
      expect(stderr).toContain('BACKEND_CANNOT_TRAIN');
      expect(stderr).not.toMatch(/\n\s+at /);
    },
    90_000,
  );

  it(
    'a wasm worker joining a dcgan run exits 2 with BACKEND_CANNOT_TRAIN instead of retrying',
    async () => {
      const coordinator = spawnCli(
        'coordinator',
        ['--dataset', 'mnist', '--model', 'dcgan', '--iterations', '2', '--backend', 'cpu', '--host', '127.0.0.1', '--port', '0', '--run-dir', makeTempDir('gan-dcgan-'), '--sample-every', '0'],
        { name: 'coordinator' },
      );
      const listening = await waitForEvent(coordinator, 'listening', 60_000);
      const worker = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${listening.port}`, '--id', 'wasm-w', '--backend', 'wasm'], { name: 'worker' });
      expect(await waitForExit(worker, 60_000)).toEqual({ code: 2, signal: null });
      expect(worker.stderr.join('\n')).toContain('BACKEND_CANNOT_TRAIN');
      coordinator.child.kill('SIGTERM');
      expect((await waitForExit(coordinator, 30_000)).code).toBe(0);
    },
    150_000,
  );
});
