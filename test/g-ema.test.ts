/**
 * --g-ema: the moving average of G's weights that samples, evaluation and exports use. What a
 * user relies on: it follows the documented update exactly, it survives a checkpoint so a resumed
 * run equals an uninterrupted one, training itself never reads it, and bad values or a changed
 * decay on resume are refused with a clear error.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readCheckpoint, writeCheckpoint } from '../trainer/checkpoint.ts';
import { loadGeneratorFromCheckpoint } from '../trainer/eval-load.ts';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend } from '../shared/backend.ts';
import { mergeResumeConfig, resolveConfig, type GanOptions } from '../shared/config.ts';
import { loadDataSource, type DataSource } from '../trainer/data/index.ts';
import { hashFloats } from '../trainer/hash.ts';
import { cleanup, makeTempDir } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

let ring8: DataSource;
const OPTS: GanOptions = { batchSize: 32, shards: 4, iterations: 40, lr: 1e-3, gEma: 0.9 };

beforeAll(async () => {
  await initBackend('wasm');
  ring8 = loadDataSource('ring8');
}, HEAVY_TEST_MS);

afterAll(cleanup, HEAVY_TEST_MS);

/** Writes the trainer's state as a checkpoint under runDir; returns its directory. */
function checkpoint(t: LocalTrainer, runDir: string): string {
  return writeCheckpoint({ runDir, keep: 2 }, t.state.snapshot(), { config: t.config, runId: 'g-ema-test', metricsTail: [] });
}

function iterate(t: LocalTrainer, iterations: number): void {
  const until = t.state.iteration + iterations;
  while (t.state.iteration < until) t.runPhase();
}

describe('--g-ema', () => {
  it('follows ema = d * ema + (1 - d) * G after every G-step, with d = min(decay, (1 + t) / (10 + t))', () => {
    const t = new LocalTrainer(resolveConfig(OPTS, ring8), ring8);
    // Starts at G's initial weights.
    expect(hashFloats(t.state.generatorWeights)).toBe(hashFloats(t.state.weights.G));
    const expected = Float64Array.from(t.state.weights.G);
    for (let step = 1; step <= 25; step++) {
      t.runPhase(); // D
      t.runPhase(); // G
      const d = Math.min(0.9, (1 + step) / (10 + step));
      const g = t.state.weights.G;
      for (let i = 0; i < expected.length; i++) expected[i] = Math.fround(d * expected[i] + (1 - d) * g[i]);
    }
    const ema = t.state.generatorWeights;
    expect(ema).not.toBe(t.state.weights.G);
    expect(hashFloats(ema)).toBe(hashFloats(Float32Array.from(expected)));
    expect(hashFloats(ema)).not.toBe(hashFloats(t.state.weights.G));
    t.dispose();
  }, HEAVY_TEST_MS);

  it('does not change training: G and D are bit-identical with and without it', () => {
    const plain = new LocalTrainer(resolveConfig({ ...OPTS, gEma: undefined }, ring8), ring8);
    const averaged = new LocalTrainer(resolveConfig(OPTS, ring8), ring8);
    iterate(plain, 15);
    iterate(averaged, 15);
    expect(averaged.weightsHash()).toBe(plain.weightsHash());
    // Sampling from the average in between (it swaps the replica's G) must not leak into training.
    averaged.syncReplica();
    plain.syncReplica();
    iterate(plain, 5);
    iterate(averaged, 5);
    expect(averaged.weightsHash()).toBe(plain.weightsHash());
    plain.dispose();
    averaged.dispose();
  }, HEAVY_TEST_MS);

  it('survives a checkpoint: resumed == uninterrupted, and checkpoints load the average as the generator', () => {
    const config = resolveConfig(OPTS, ring8);
    const straight = new LocalTrainer(config, ring8);
    iterate(straight, 30);

    const first = new LocalTrainer(config, ring8);
    iterate(first, 12);
    const runDir = makeTempDir('g-ema-');
    const dir = checkpoint(first, runDir);
    first.dispose();
    const loaded = readCheckpoint(dir);
    expect(loaded.snapshot.gEma).toBeInstanceOf(Float32Array);
    const resumed = new LocalTrainer(loaded.manifest.config, ring8, loaded.snapshot);
    iterate(resumed, 18);
    expect(resumed.weightsHash()).toBe(straight.weightsHash());
    expect(hashFloats(resumed.state.generatorWeights)).toBe(hashFloats(straight.state.generatorWeights));

    // gan-sample / gan-eval on a checkpoint generate with the average.
    const dir2 = checkpoint(straight, runDir);
    const gen = loadGeneratorFromCheckpoint(dir2);
    straight.syncReplica();
    const z = Float32Array.from({ length: 8 * config.model.noiseDim }, (_, i) => Math.sin(i));
    expect(hashFloats(gen.generate(z, 8))).toBe(hashFloats(straight.replica.generate(z, 8)));
    gen.dispose();
    straight.dispose();
    resumed.dispose();
  }, HEAVY_TEST_MS);

  it('a checkpoint of a --g-ema run without its average is refused as corrupt', () => {
    const config = resolveConfig(OPTS, ring8);
    const t = new LocalTrainer(config, ring8);
    iterate(t, 2);
    const dir = checkpoint(t, makeTempDir('g-ema-'));
    t.dispose();
    const manifestPath = join(dir, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
    delete manifest.blobs['G-ema'];
    writeFileSync(manifestPath, JSON.stringify(manifest));
    let err: unknown;
    try {
      readCheckpoint(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'CHECKPOINT_CORRUPT' });
    expect((err as Error).message).toContain("manifest lists no blob 'G-ema'");
  }, HEAVY_TEST_MS);

  it('refuses a decay outside (0, 1) and a changed decay on resume; 0 means off', () => {
    for (const bad of [1, 1.5, -0.5]) {
      expect(() => resolveConfig({ ...OPTS, gEma: bad }, ring8)).toThrow(/--g-ema must be a decay in \(0, 1\)/);
    }
    expect(resolveConfig({ ...OPTS, gEma: 0 }, ring8).train.gEma).toBeUndefined();
    const saved = resolveConfig(OPTS, ring8);
    expect(() => mergeResumeConfig(saved, { gEma: 0.99 })).toThrow(/--g-ema 0.99 conflicts with the checkpoint, which was trained with 0.9/);
    expect(mergeResumeConfig(saved, { gEma: 0.9 }).config.train.gEma).toBe(0.9);
    const plain = resolveConfig({ ...OPTS, gEma: undefined }, ring8);
    expect(() => mergeResumeConfig(plain, { gEma: 0.999 })).toThrow(/CONFIG_CONFLICT|conflicts with the checkpoint/);
  }, HEAVY_TEST_MS);
});
