/**
 * Export of G and D as TensorFlow.js LayersModel artifacts: round trips through
 * loadExportedModel, through the generic tfjs loaders a browser uses (fromMemory, and http with a
 * fetch served from the export dir), custom layers in the paper's D, the gan-sample CLI, and the
 * error codes for missing or broken exports.
 *
 * Outputs are compared for exact equality: on the same backend the loaded model runs the same
 * ops on the same float32 weights as the replica, and they are observed to be bit-identical.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { writeSampleImage, sampleFileName } from '../trainer/samples.ts';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig, type GanConfig, type GanOptions } from '../shared/config.ts';
import { loadDataSource, type DataSource } from '../trainer/data/index.ts';
import { GanError } from '../shared/errors.ts';
import { CUSTOM_LAYER_CLASSES, customLayerClasses, exportModels, loadExportedModel, readExportMeta } from '../trainer/export.ts';
import { withDropoutSeed } from '../shared/layers.ts';
import { GanReplica } from '../shared/replica.ts';
import { deriveSeed, normalArray, uniformArray } from '../shared/rng.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SAMPLE_BIN = join(ROOT, 'bin', 'gan-sample.js');
const run = promisify(execFile);

const tmpDirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'gan-export-test-'));
  tmpDirs.push(d);
  return d;
}

let mnist: DataSource;
let ring8: DataSource;

beforeAll(async () => {
  await initBackend('wasm');
  mnist = loadDataSource('mnist');
  ring8 = loadDataSource('ring8');
}, HEAVY_TEST_MS);

afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
}, HEAVY_TEST_MS);

/** A trainer a few phases in, so G and D hold non-initial weights (biases no longer zero). */
function trained(opts: GanOptions, source: DataSource, phases = 2): LocalTrainer {
  const config = resolveConfig({ batchSize: 8, shards: 2, iterations: 10, seed: 11, ...opts }, source);
  const trainer = new LocalTrainer(config, source);
  for (let i = 0; i < phases; i++) trainer.runPhase();
  trainer.syncReplica();
  return trainer;
}

/** G(z) of a LayersModel at inference, in one batch like GanReplica.generate. */
function applyG(model: tfl.LayersModel, cfg: GanConfig, z: Float32Array, rows: number, labels?: Int32Array): Float32Array {
  let out!: Float32Array;
  tf.tidy(() => {
    const inputs: tf.Tensor[] = [tf.tensor2d(z, [rows, cfg.model.noiseDim])];
    if (cfg.model.numClasses > 0) inputs.push(tf.oneHot(tf.tensor1d(labels!, 'int32'), cfg.model.numClasses));
    out = (model.apply(inputs) as tf.Tensor).dataSync() as Float32Array;
  });
  return out;
}

/** Every trainable weight of a model, flat in its order (the replica's layout order). */
function flatWeights(model: tfl.LayersModel): Float32Array {
  const parts = model.trainableWeights.map((w) => w.read().dataSync() as Float32Array);
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Exact equality with a readable failure (count and worst difference, not 50k lines of diff). */
function expectBitIdentical(actual: Float32Array, expected: Float32Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let mismatches = 0;
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) {
      mismatches++;
      worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
    }
  }
  expect({ mismatches, worst }, `${what}: values differing from the replica`).toEqual({ mismatches: 0, worst: 0 });
}

/** The browser path: tf.loadLayersModel(url) over http, with fetch served from the export dir. */
function fetchFromDir(dir: string, base: string, log: string[]) {
  return async (input: RequestInfo | URL): Promise<Response> => {
    const url = String(input instanceof Request ? input.url : input);
    log.push(url);
    if (!url.startsWith(base)) return new Response('not found', { status: 404 });
    const file = join(dir, decodeURIComponent(url.slice(base.length)));
    if (!existsSync(file)) return new Response('not found', { status: 404 });
    return new Response(readFileSync(file), { status: 200 });
  };
}

function expectGanError(fn: () => unknown, code: string): GanError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GanError);
    expect((err as GanError).code).toBe(code);
    return err as GanError;
  }
  throw new Error(`expected GanError ${code}`);
}

async function expectGanErrorAsync(p: Promise<unknown>, code: string): Promise<GanError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, `expected GanError ${code}`).toBeInstanceOf(GanError);
  expect((err as GanError).code).toBe(code);
  return err as GanError;
}

function pngSize(png: Buffer): { width: number; height: number } {
  expect(Array.from(png.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(png.toString('ascii', 12, 16)).toBe('IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

describe('generator export (mlp-small on mnist)', () => {
  let trainer: LocalTrainer;
  let dir: string;

  beforeAll(async () => {
    trainer = trained({ model: 'mlp-small' }, mnist);
    dir = tempDir();
    await exportModels(trainer.replica, dir, { config: trainer.config, iteration: trainer.state.iteration, weightsHash: trainer.weightsHash() });
  }, HEAVY_TEST_MS);
  afterAll(() => trainer.dispose(), HEAVY_TEST_MS);

  it('writes standard LayersModel artifacts and gan.json', () => {
    for (const net of ['generator', 'discriminator']) {
      const json = JSON.parse(readFileSync(join(dir, net, 'model.json'), 'utf8'));
      expect(json.format).toBe('layers-model');
      expect(json.generatedBy).toMatch(/^TensorFlow\.js tfjs-layers v4\./);
      expect(json.convertedBy).toBeNull();
      expect(json.modelTopology.class_name).toBe('Model');
      expect(json.weightsManifest).toHaveLength(1);
      expect(json.weightsManifest[0].paths).toEqual(['weights.bin']);
      const bytes = (json.weightsManifest[0].weights as { shape: number[]; dtype: string }[]).reduce(
        (a, w) => a + 4 * w.shape.reduce((x, y) => x * y, 1),
        0,
      );
      expect(readFileSync(join(dir, net, 'weights.bin')).byteLength).toBe(bytes);
    }
    const meta = readExportMeta(dir);
    expect(meta.config).toEqual(trainer.config);
    expect(meta.iteration).toBe(trainer.state.iteration);
    expect(meta.weightsHash).toBe(trainer.weightsHash());
    expect(meta.generator.customLayers).toEqual([]);
    expect(meta.discriminator.customLayers).toEqual([]);
    expect(meta.generator.inputs.map((i) => i.shape)).toEqual([[null, 64]]);
  }, HEAVY_TEST_MS);

  it('loadExportedModel gives G with the same weights and bit-identical outputs', async () => {
    const g = await loadExportedModel(join(dir, 'generator'));
    expectBitIdentical(flatWeights(g), trainer.state.weights.G, 'loaded G weights vs master weights');
    const rows = 32;
    const z = normalArray(rows * 64, 123);
    expectBitIdentical(applyG(g, trainer.config, z, rows), trainer.replica.generate(z, rows), 'G(z)');
    // predict (batches of 32 by default) agrees too at this size.
    const viaPredict = tf.tidy(() => (g.predict(tf.tensor2d(z, [rows, 64])) as tf.Tensor).dataSync() as Float32Array);
    expectBitIdentical(viaPredict, trainer.replica.generate(z, rows), 'G.predict(z)');
    g.dispose();
  }, HEAVY_TEST_MS);

  it('loads through the generic tfjs loaders: fromMemory and http with fetch', async () => {
    const gDir = join(dir, 'generator');
    const modelJson = JSON.parse(readFileSync(join(gDir, 'model.json'), 'utf8'));
    const buf = readFileSync(join(gDir, 'weights.bin'));
    const weightData = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
    const rows = 16;
    const z = normalArray(rows * 64, 321);
    const expected = trainer.replica.generate(z, rows);

    const fromMemory = await tfl.loadLayersModel(
      tf.io.fromMemory({ modelTopology: modelJson.modelTopology, weightSpecs: modelJson.weightsManifest[0].weights, weightData }),
    );
    expectBitIdentical(applyG(fromMemory, trainer.config, z, rows), expected, 'G via tf.io.fromMemory');
    fromMemory.dispose();

    // What a browser does with tf.loadLayersModel('https://host/export/generator/model.json').
    const base = 'https://models.example/export/';
    const fetched: string[] = [];
    const viaHttp = await tfl.loadLayersModel(`${base}generator/model.json`, { fetchFunc: fetchFromDir(dir, base, fetched) });
    expect(fetched).toEqual([`${base}generator/model.json`, `${base}generator/weights.bin`]);
    expectBitIdentical(applyG(viaHttp, trainer.config, z, rows), expected, 'G via tf.io.http');
    viaHttp.dispose();
  }, HEAVY_TEST_MS);

  it(
    'gan-sample writes the same PNG as the trainer sample grid, and prints its path',
    async () => {
      const out = join(tempDir(), 'nested', 'x.png');
      const { stdout } = await run(process.execPath, [SAMPLE_BIN, '--export', dir, '--out', out, '--backend', 'wasm'], { cwd: ROOT });
      expect(stdout.trim().split('\n').pop()).toBe(out);
      const png = readFileSync(out);
      // 64 samples of 28x28 in 8 columns with 2 px padding.
      expect(pngSize(png)).toEqual({ width: 8 * 28 + 9 * 2, height: 8 * 28 + 9 * 2 });
      // Default seed = run seed, same noise derivation: byte-identical to the trainer's own grid.
      const refDir = tempDir();
      writeSampleImage(trainer.replica, mnist, refDir, trainer.state.iteration);
      expect(png.equals(readFileSync(join(refDir, sampleFileName(trainer.state.iteration))))).toBe(true);
    },
    60_000,
  );
});

describe('conditional generator export (mlp-small --conditional on mnist)', () => {
  it('takes the one-hot label as a second input; loaded outputs are bit-identical', async () => {
    const trainer = trained({ model: 'mlp-small', conditional: true }, mnist);
    const dir = tempDir();
    await exportModels(trainer.replica, dir, { config: trainer.config, iteration: trainer.state.iteration });
    const meta = readExportMeta(dir);
    expect(meta.weightsHash).toBeUndefined();
    expect(meta.generator.inputs.map((i) => i.name)).toEqual(['z', 'label']);
    expect(meta.generator.inputs[1].shape).toEqual([null, 10]);

    const g = await loadExportedModel(join(dir, 'generator'));
    expect(g.inputs.map((i) => i.shape)).toEqual([
      [null, 64],
      [null, 10],
    ]);
    const rows = 20;
    const z = normalArray(rows * 64, 77);
    const labels = Int32Array.from({ length: rows }, (_, i) => i % 10);
    const expected = trainer.replica.generate(z, rows, labels);
    expectBitIdentical(applyG(g, trainer.config, z, rows, labels), expected, 'conditional G(z, y)');
    // The label matters: the same z with other labels gives other images.
    const shifted = Int32Array.from(labels, (l) => (l + 1) % 10);
    expect(applyG(g, trainer.config, z, rows, shifted)).not.toEqual(expected);

    const base = 'https://models.example/';
    const viaHttp = await tfl.loadLayersModel(`${base}generator/model.json`, { fetchFunc: fetchFromDir(dir, base, []) });
    expectBitIdentical(applyG(viaHttp, trainer.config, z, rows, labels), expected, 'conditional G via tf.io.http');
    viaHttp.dispose();
    g.dispose();
    trainer.dispose();
  }, HEAVY_TEST_MS);
});

describe("discriminator export with custom layers (the paper's mlp)", () => {
  it('loads back in Node; D(x) matches replica.discriminate at inference, and dropout masks match in training mode', async () => {
    const config = resolveConfig({ model: 'mlp', seed: 3 }, mnist);
    const replica = new GanReplica(config);
    // Non-initial weights everywhere, biases included.
    replica.setWeights('D', uniformArray(replica.layout.D.total, 99, -0.05, 0.05));
    replica.setWeights('G', uniformArray(replica.layout.G.total, 98, -0.05, 0.05));
    const dir = tempDir();
    await exportModels(replica, dir, { config, iteration: 0 });

    const meta = readExportMeta(dir);
    expect(meta.discriminator.customLayers).toEqual(['GanMaxout', 'GanSeededDropout']);
    expect(meta.discriminator.note).toMatch(/GanMaxout, GanSeededDropout/);
    expect(meta.generator.customLayers).toEqual([]);

    const d = await loadExportedModel(join(dir, 'discriminator'));
    const custom = d.layers.filter((l) => CUSTOM_LAYER_CLASSES.includes(l.getClassName()));
    expect(custom.map((l) => l.getClassName()).sort()).toEqual(['GanMaxout', 'GanMaxout', 'GanSeededDropout', 'GanSeededDropout', 'GanSeededDropout']);
    expect(custom.map((l) => l.getConfig().pieces ?? l.getConfig().rate)).toEqual([0.2, 5, 0.5, 5, 0.5]);

    const rows = 12;
    const train = mnist.kind === 'finite' ? mnist.train : null;
    const x = train!.x.slice(0, rows * 784);
    let logits!: Float32Array;
    tf.tidy(() => {
      logits = (d.apply(tf.tensor(x, [rows, 28, 28, 1])) as tf.Tensor).dataSync() as Float32Array;
    });
    const probs = Float32Array.from(logits, (l) => 1 / (1 + Math.exp(-l)));
    const expected = replica.discriminate(x, rows);
    // replica.discriminate applies tf.sigmoid; compare logits through tfjs's sigmoid for exactness.
    const viaTfSigmoid = tf.tidy(() => tf.sigmoid(tf.tensor(logits)).dataSync() as Float32Array);
    expectBitIdentical(viaTfSigmoid, expected, 'D(x)');
    for (let i = 0; i < rows; i++) expect(probs[i]).toBeCloseTo(expected[i], 6);

    // Training mode under a dropout seed: streamId and rate survived serialization.
    const seed = deriveSeed(5, 6, 7);
    const trainLogits = (m: tfl.LayersModel) =>
      withDropoutSeed(seed, () => tf.tidy(() => (m.apply(tf.tensor(x, [rows, 28, 28, 1]), { training: true }) as tf.Tensor).dataSync() as Float32Array));
    expectBitIdentical(trainLogits(d), trainLogits(replica.models.d), 'D(x) with dropout');
    expect(trainLogits(d)).not.toEqual(logits);
    d.dispose();
    replica.dispose();
  }, 60_000);
});

describe('every model kind', () => {
  const cases: { kind: GanOptions['model']; conditional: boolean; data: 'mnist' | 'ring8'; width?: number }[] = [
    { kind: 'mlp', conditional: false, data: 'mnist' },
    { kind: 'mlp', conditional: true, data: 'mnist' },
    { kind: 'mlp-small', conditional: false, data: 'mnist' },
    { kind: 'mlp-small', conditional: true, data: 'mnist' },
    { kind: 'dcgan', conditional: false, data: 'mnist' },
    { kind: 'dcgan', conditional: true, data: 'mnist' },
    { kind: 'dcgan', conditional: false, data: 'mnist', width: 16 },
    { kind: 'mlp2d', conditional: false, data: 'ring8' },
  ];
  for (const c of cases) {
    it(`${c.kind}${c.conditional ? ' conditional' : ''}${c.width ? ` --width ${c.width}` : ''}: generator model.json uses built-in layers only and loads back`, async () => {
      const source = c.data === 'mnist' ? mnist : ring8;
      const config = resolveConfig({ model: c.kind, conditional: c.conditional || undefined, width: c.width }, source);
      const replica = new GanReplica(config);
      const dir = tempDir();
      await exportModels(replica, dir, { config, iteration: 0 });
      const text = readFileSync(join(dir, 'generator', 'model.json'), 'utf8');
      expect(text).not.toMatch(/Gan/);
      expect(customLayerClasses(JSON.parse(text).modelTopology)).toEqual([]);
      const dCustom = customLayerClasses(JSON.parse(readFileSync(join(dir, 'discriminator', 'model.json'), 'utf8')).modelTopology);
      expect(dCustom).toEqual(c.kind === 'mlp' ? ['GanMaxout', 'GanSeededDropout'] : []);
      expect(readExportMeta(dir).discriminator.customLayers).toEqual(dCustom);

      const g = await loadExportedModel(join(dir, 'generator'));
      expect(g.outputs[0].shape).toEqual([null, ...config.model.dataShape]);
      // the export has the model's own size (a --width model's, not the default's)
      expect(g.countParams()).toBe(replica.models.g.countParams());
      const d = await loadExportedModel(join(dir, 'discriminator'));
      expect(d.outputs[0].shape).toEqual([null, 1]);
      g.dispose();
      d.dispose();
      replica.dispose();
    }, 60_000);
  }
});

describe('gan-sample on other exports', () => {
  it(
    'draws a scatter plot for 2-D data and a labelled grid for a conditional model',
    async () => {
      const ringTrainer = trained({ model: 'mlp2d' }, ring8);
      const ringDir = tempDir();
      await exportModels(ringTrainer.replica, ringDir, { config: ringTrainer.config, iteration: ringTrainer.state.iteration });
      ringTrainer.dispose();
      const condReplica = new GanReplica(resolveConfig({ model: 'mlp-small', conditional: true }, mnist));
      const condDir = tempDir();
      await exportModels(condReplica, condDir, { config: condReplica.config, iteration: 0 });
      condReplica.dispose();

      const ringOut = join(ringDir, 'scatter.png');
      const condOut = join(condDir, 'sevens.png');
      await Promise.all([
        run(process.execPath, [SAMPLE_BIN, '--export', ringDir, '--out', ringOut, '--backend', 'wasm'], { cwd: ROOT }),
        run(process.execPath, [SAMPLE_BIN, '--export', condDir, '--out', condOut, '--count', '10', '--label', '7', '--seed', '7', '--backend', 'wasm'], { cwd: ROOT }),
      ]);
      expect(pngSize(readFileSync(ringOut))).toEqual({ width: 256, height: 256 });
      // 10 samples -> 4 columns, 3 rows.
      expect(pngSize(readFileSync(condOut))).toEqual({ width: 4 * 28 + 5 * 2, height: 3 * 28 + 4 * 2 });
    },
    60_000,
  );

  it(
    'a missing export dir exits 2 with EXPORT_MISSING; a bad --label exits 2 with its code',
    async () => {
      const missingDir = join(tempDir(), 'no-such-export');
      const unconditional = tempDir();
      const replica = new GanReplica(resolveConfig({ model: 'mlp2d' }, ring8));
      await exportModels(replica, unconditional, { config: replica.config, iteration: 0 });
      replica.dispose();
      const fail = (args: string[]) =>
        run(process.execPath, [SAMPLE_BIN, ...args], { cwd: ROOT }).then(
          () => {
            throw new Error(`gan-sample ${args.join(' ')} should have failed`);
          },
          (err: { code: number; stderr: string }) => err,
        );
      const [missing, label] = await Promise.all([
        fail(['--export', missingDir, '--out', join(missingDir, 'x.png'), '--backend', 'wasm']),
        fail(['--export', unconditional, '--label', '1', '--backend', 'wasm']),
      ]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('EXPORT_MISSING');
      expect(missing.stderr).toContain(missingDir);
      expect(missing.stderr).not.toMatch(/\n\s+at /); // one clear line, no stack
      expect(label.code).toBe(2);
      expect(label.stderr).toContain('LABEL_UNCONDITIONAL');
    },
    60_000,
  );
});

describe('broken exports', () => {
  it('missing and malformed files give EXPORT_MISSING / EXPORT_MALFORMED naming the path', async () => {
    const replica = new GanReplica(resolveConfig({ model: 'mlp2d' }, ring8));
    const dir = tempDir();
    await exportModels(replica, dir, { config: replica.config, iteration: 0 });
    replica.dispose();

    const nowhere = join(dir, 'nope');
    const e1 = await expectGanErrorAsync(loadExportedModel(nowhere), 'EXPORT_MISSING');
    expect(e1.message).toContain(nowhere);
    expect(e1.message).toMatch(/finished or been exported/);
    expect(expectGanError(() => readExportMeta(nowhere), 'EXPORT_MISSING').message).toContain(nowhere);
    // A directory without model.json: names the file.
    const e2 = await expectGanErrorAsync(loadExportedModel(dir), 'EXPORT_MISSING');
    expect(e2.message).toContain(join(dir, 'model.json'));

    const g = join(dir, 'generator');
    const goodJson = readFileSync(join(g, 'model.json'), 'utf8');
    const goodWeights = readFileSync(join(g, 'weights.bin'));

    writeFileSync(join(g, 'model.json'), '{"modelTopology": ');
    expect((await expectGanErrorAsync(loadExportedModel(g), 'EXPORT_MALFORMED')).message).toMatch(/not valid JSON/);
    writeFileSync(join(g, 'model.json'), JSON.stringify({ format: 'layers-model' }));
    expect((await expectGanErrorAsync(loadExportedModel(g), 'EXPORT_MALFORMED')).message).toMatch(/modelTopology/);
    const escaping = JSON.parse(goodJson);
    escaping.weightsManifest[0].paths = ['../../gan.json'];
    writeFileSync(join(g, 'model.json'), JSON.stringify(escaping));
    expect((await expectGanErrorAsync(loadExportedModel(g), 'EXPORT_MALFORMED')).message).toMatch(/leaves the model directory/);
    writeFileSync(join(g, 'model.json'), goodJson);

    writeFileSync(join(g, 'weights.bin'), goodWeights.subarray(0, goodWeights.length - 4));
    expect((await expectGanErrorAsync(loadExportedModel(g), 'EXPORT_MALFORMED')).message).toMatch(/truncated/);
    rmSync(join(g, 'weights.bin'));
    expect((await expectGanErrorAsync(loadExportedModel(g), 'EXPORT_MALFORMED')).message).toMatch(/weights\.bin.*missing/);
    writeFileSync(join(g, 'weights.bin'), goodWeights);
    (await loadExportedModel(g)).dispose();

    writeFileSync(join(dir, 'gan.json'), JSON.stringify({ format: 'something-else' }));
    expectGanError(() => readExportMeta(dir), 'EXPORT_MALFORMED');
    writeFileSync(join(dir, 'gan.json'), JSON.stringify({ format: 'gan-export', version: 1, iteration: 0, config: { model: {}, train: {} } }));
    expect(expectGanError(() => readExportMeta(dir), 'EXPORT_MALFORMED').message).toMatch(/invalid config/);
  }, HEAVY_TEST_MS);
});
