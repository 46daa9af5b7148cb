/**
 * Export of trained G and D as standard TensorFlow.js LayersModel artifacts:
 *
 *   <dir>/generator/model.json + weights.bin      (only built-in layers: loads anywhere)
 *   <dir>/discriminator/model.json + weights.bin  (the paper's `mlp` D uses GanMaxout and
 *                                                  GanSeededDropout; see gan.json)
 *   <dir>/gan.json                                 (GanConfig, iteration, weights hash, how to feed G)
 *
 * model.json is the file `tf.loadLayersModel('https://.../model.json')` reads in a browser.
 * Under Node without tfjs-node, `loadExportedModel` reads the same files from disk.
 *
 * Every file is written under a temporary name and renamed into place, so a reader never sees
 * half a file; within a net, weights.bin lands before the model.json that refers to it.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { validateConfig, type GanConfig } from '../shared/config.ts';
import { writeFileAtomic } from './durable-file.ts';
import { GanError } from '../shared/errors.ts';
import { writeGeneratorPage } from './generator-page.ts';
// Registers the custom layers with tfjs serialization, so an exported D deserializes here.
import { Maxout, MinibatchStd, SeededDropout } from '../shared/layers.ts';
import type { GanReplica } from '../shared/replica.ts';

export const EXPORT_FORMAT = 'gan-export';
export const EXPORT_VERSION = 1;
export const MODEL_FILE = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';
export const META_FILE = 'gan.json';

/** Class names of the project's own layers (registered by shared/layers.ts). */
export const CUSTOM_LAYER_CLASSES: readonly string[] = [Maxout.className, SeededDropout.className, MinibatchStd.className];

export interface ExportMeta {
  config: GanConfig;
  iteration: number;
  weightsHash?: string;
}

export interface NetExportInfo {
  /** Relative to the export dir, e.g. "generator/model.json". */
  path: string;
  /** Custom layer classes the net's topology uses; empty means stock tfjs loads it. */
  customLayers: string[];
}

/** The contents of gan.json. */
export interface ExportMetaFile extends ExportMeta {
  format: typeof EXPORT_FORMAT;
  version: number;
  exportedAt: string;
  generator: NetExportInfo & {
    /** In order: noise z ~ N(0, 1) of shape [noiseDim]; then, for conditional models, a one-hot label. */
    inputs: { name: string; shape: (number | null)[]; note: string }[];
    output: { shape: (number | null)[]; note: string };
  };
  discriminator: NetExportInfo & { note: string };
}

/** Every class_name in a Keras-style topology (recursing into nested configs). */
function classNames(node: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(node)) {
    for (const v of node) classNames(v, out);
  } else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'class_name' && typeof v === 'string') out.add(v);
      else classNames(v, out);
    }
  }
  return out;
}

/** The custom (non-tfjs) layer classes a model.json topology refers to. */
export function customLayerClasses(modelTopology: unknown): string[] {
  const names = classNames(modelTopology);
  return CUSTOM_LAYER_CLASSES.filter((c) => names.has(c));
}

/** Saves one LayersModel as model.json + weights.bin in `dir`; returns the model.json path. */
export async function saveLayersModel(model: tfl.LayersModel, dir: string): Promise<{ path: string; customLayers: string[] }> {
  mkdirSync(dir, { recursive: true });
  let customLayers: string[] = [];
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      if (!artifacts.modelTopology || !artifacts.weightSpecs || artifacts.weightData === undefined) {
        throw new GanError('EXPORT_FAILED', `tfjs returned incomplete artifacts for model '${model.name}' (no topology or weights)`);
      }
      const weights = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData));
      // The same fields tfjs's own http/file handlers write (getModelJSONForModelArtifacts).
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{ paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs }],
      };
      if (artifacts.trainingConfig != null) modelJson.trainingConfig = artifacts.trainingConfig;
      if (artifacts.userDefinedMetadata != null) modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
      customLayers = customLayerClasses(artifacts.modelTopology);
      writeFileAtomic(join(dir, WEIGHTS_FILE), weights);
      writeFileAtomic(join(dir, MODEL_FILE), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  return { path: join(dir, MODEL_FILE), customLayers };
}

/**
 * Writes G and D (with the replica's current weights: sync it to the master weights first) and
 * gan.json into `dir`. Returns the paths of the two model.json files.
 */
export async function exportModels(replica: GanReplica, dir: string, meta: ExportMeta): Promise<{ generator: string; discriminator: string; page?: string }> {
  const root = resolve(dir);
  const g = await saveLayersModel(replica.models.g, join(root, 'generator'));
  const d = await saveLayersModel(replica.models.d, join(root, 'discriminator'));
  const { noiseDim, numClasses, dataShape, kind, pack } = meta.config.model;
  const inputs: ExportMetaFile['generator']['inputs'] = [{ name: 'z', shape: [null, noiseDim], note: 'standard normal noise' }];
  if (numClasses > 0) inputs.push({ name: 'label', shape: [null, numClasses], note: 'one-hot class label' });
  const custom = d.customLayers.length
    ? `needs custom layer classes ${d.customLayers.join(', ')}: import shared/layers.ts (registers them) before loading; dropout is the identity at inference`
    : 'built-in tfjs layers only';
  const file: ExportMetaFile = {
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    exportedAt: new Date().toISOString(),
    config: meta.config,
    iteration: meta.iteration,
    ...(meta.weightsHash !== undefined ? { weightsHash: meta.weightsHash } : {}),
    generator: {
      path: 'generator/' + MODEL_FILE,
      customLayers: g.customLayers,
      inputs,
      output: {
        shape: [null, ...dataShape],
        note: kind === 'mlp2d' ? '2-D points (linear output)' : 'images, tanh output in [-1, 1]',
      },
    },
    discriminator: {
      path: 'discriminator/' + MODEL_FILE,
      customLayers: d.customLayers,
      note: `outputs a logit (apply sigmoid for D(x))${pack > 1 ? `; packed: input is ${pack} flattened samples side by side` : ''}; ${custom}`,
    },
  };
  writeFileAtomic(join(root, META_FILE), JSON.stringify(file, null, 2));
  // index.html: draws samples from generator/ in a browser (trainer/generator-page.ts). A nicety:
  // if it cannot be written (tfjs's browser bundles missing from node_modules), the export stands.
  let page: string | undefined;
  try {
    page = writeGeneratorPage(root);
  } catch {
    page = undefined;
  }
  return { generator: g.path, discriminator: d.path, ...(page ? { page } : {}) };
}

const missing = (what: string, path: string): GanError =>
  new GanError(
    'EXPORT_MISSING',
    `no exported model at ${path} (${what} not found); the run must have finished or been exported (point --export at the directory holding gan.json, generator/ and discriminator/)`,
  );

const malformed = (path: string, why: string, cause?: unknown): GanError =>
  new GanError('EXPORT_MALFORMED', `exported model ${path} is malformed: ${why}`, cause === undefined ? undefined : { cause });

function readJson(path: string, what: string): unknown {
  if (!existsSync(path)) throw missing(what, path);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw malformed(path, `cannot be read (${(err as Error).message})`, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw malformed(path, `not valid JSON (${(err as Error).message})`, err);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, string: NaN, complex64: 8 };

/** Reads model.json and its weight files from `dir` into ModelArtifacts, validating as it goes. */
export async function readModelArtifacts(dir: string): Promise<tf.io.ModelArtifacts> {
  const root = resolve(dir);
  if (!existsSync(root)) throw missing('directory', root);
  const modelPath = join(root, MODEL_FILE);
  const json = readJson(modelPath, MODEL_FILE);
  if (!isObject(json)) throw malformed(modelPath, 'expected a JSON object');
  if (!isObject(json.modelTopology)) throw malformed(modelPath, 'no modelTopology object (is this a LayersModel model.json?)');
  if (json.format !== undefined && json.format !== 'layers-model') {
    throw malformed(modelPath, `format is '${String(json.format)}', expected 'layers-model'`);
  }
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest) || manifest.some((g) => !isObject(g) || !Array.isArray(g.paths) || !Array.isArray(g.weights))) {
    throw malformed(modelPath, 'weightsManifest must be a list of {paths: [...], weights: [...]}');
  }
  return tf.io.getModelArtifactsForJSON(json as unknown as tf.io.ModelJSON, async (groups) => {
    const specs: tf.io.WeightsManifestEntry[] = [];
    const buffers: ArrayBuffer[] = [];
    for (const group of groups) {
      let expected = 0;
      for (const spec of group.weights) {
        // Quantized weights are never written here; refusing them keeps the size check exact.
        const bytes = DTYPE_BYTES[spec.dtype] ?? NaN;
        if (!Array.isArray(spec.shape) || spec.quantization || !Number.isFinite(bytes)) {
          throw malformed(modelPath, `weight '${spec.name}' has an unsupported shape, dtype or quantization`);
        }
        expected += spec.shape.reduce((a, b) => a * b, 1) * bytes;
      }
      let actual = 0;
      for (const p of group.paths) {
        if (typeof p !== 'string' || isAbsolute(p)) throw malformed(modelPath, `weight path ${JSON.stringify(p)} must be relative`);
        const file = resolve(root, p);
        const rel = relative(root, file);
        if (rel.startsWith('..') || isAbsolute(rel)) throw malformed(modelPath, `weight path '${p}' leaves the model directory`);
        if (!existsSync(file) || !statSync(file).isFile()) throw malformed(modelPath, `weight file ${file} listed in the manifest is missing`);
        const buf = readFileSync(file);
        // A fresh ArrayBuffer: a Buffer may be a view into a larger shared pool.
        buffers.push(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer);
        actual += buf.byteLength;
      }
      if (actual !== expected) {
        throw malformed(modelPath, `weight files hold ${actual} bytes but the manifest describes ${expected} (truncated or mismatched weights.bin?)`);
      }
      specs.push(...group.weights);
    }
    return [specs, buffers];
  });
}

/**
 * Loads an exported model directory (model.json + weights) in Node, without tfjs-node or
 * file:// handlers. This module imports shared/layers.ts, so a D with custom layers loads too.
 */
export async function loadExportedModel(dir: string): Promise<tfl.LayersModel> {
  const artifacts = await readModelArtifacts(dir);
  const modelPath = join(resolve(dir), MODEL_FILE);
  try {
    return await tfl.loadLayersModel({ load: async () => artifacts });
  } catch (err) {
    if (err instanceof GanError) throw err;
    throw malformed(modelPath, `tfjs could not build the model: ${(err as Error).message.split('\n')[0]}`, err);
  }
}

/** Reads and checks <dir>/gan.json. */
export function readExportMeta(dir: string): ExportMetaFile {
  const root = resolve(dir);
  if (!existsSync(root)) throw missing('directory', root);
  const path = join(root, META_FILE);
  const json = readJson(path, META_FILE);
  if (!isObject(json) || json.format !== EXPORT_FORMAT) throw malformed(path, `not a ${EXPORT_FORMAT} file (format field missing or different)`);
  if (typeof json.version !== 'number' || json.version > EXPORT_VERSION) {
    throw malformed(path, `export version ${String(json.version)} is not supported (this build reads up to ${EXPORT_VERSION})`);
  }
  if (!isObject(json.config) || !isObject(json.config.model) || !isObject(json.config.train)) throw malformed(path, 'no config');
  if (!Number.isInteger(json.iteration) || (json.iteration as number) < 0) throw malformed(path, `bad iteration ${String(json.iteration)}`);
  try {
    validateConfig(json.config as unknown as GanConfig);
  } catch (err) {
    if (err instanceof GanError) throw malformed(path, `invalid config: [${err.code}] ${err.message}`, err);
    throw malformed(path, `invalid config: ${(err as Error).message}`, err);
  }
  return json as unknown as ExportMetaFile;
}
