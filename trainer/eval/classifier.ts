/**
 * The small MNIST classifier behind the image scores (Inception Score, Fréchet distance, label
 * accuracy of conditional samples). It is trained by the project's own script
 * (`npm run train-classifier`, scripts/train-classifier.ts) and shipped in models/classifier/ as a
 * TensorFlow.js LayersModel (model.json + weights.bin) with classifier.json beside it stating its
 * held-out accuracy and how it was trained.
 *
 *     input [28, 28, 1] in [-1, 1] (the data sources' scaling; G's tanh range)
 *     conv 3x3 x16 relu -> max-pool 2 -> conv 3x3 x32 relu -> max-pool 2 -> flatten (1568)
 *     -> dense 64 relu ('features': the penultimate layer the Fréchet distance uses)
 *     -> dense 10 softmax ('probs')
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { FASHION_MNIST_DIR } from '../data/index.ts';
import { GanError } from '../../shared/errors.ts';
import { loadExportedModel, MODEL_FILE } from '../export.ts';

export const CLASSIFIER_FORMAT = 'gan-classifier';
export const CLASSIFIER_VERSION = 1;
export const CLASSIFIER_META_FILE = 'classifier.json';
export const FEATURE_LAYER = 'features';
/** models/classifier/ of this checkout: where `npm run train-classifier` writes and gan-eval reads. */
export const DEFAULT_CLASSIFIER_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'classifier');
/** models/classifier-fashion/: the same network trained on Fashion-MNIST (`--dataset fashion`). */
export const FASHION_CLASSIFIER_DIR = resolve(DEFAULT_CLASSIFIER_DIR, '..', 'classifier-fashion');

/** One name per data set: `idx:` + Debian's Fashion-MNIST folder is `fashion`. */
export function canonicalDataset(spec: string): string {
  if (spec.startsWith('idx:') && resolve(spec.slice(4)) === resolve(FASHION_MNIST_DIR)) return 'fashion';
  return spec;
}

/**
 * The shipped classifier for a data set: models/classifier/ for mnist, models/classifier-fashion/
 * for Fashion-MNIST, null for any other (train one with npm run train-classifier -- --out <dir>).
 */
export function classifierDirFor(dataset: string): string | null {
  const name = canonicalDataset(dataset);
  if (name === 'mnist') return DEFAULT_CLASSIFIER_DIR;
  if (name === 'fashion') return FASHION_CLASSIFIER_DIR;
  return null;
}

export interface ClassAccuracy {
  label: number;
  count: number;
  correct: number;
  accuracy: number;
}

/** The contents of classifier.json. */
export interface ClassifierMeta {
  format: typeof CLASSIFIER_FORMAT;
  version: number;
  /** The data source it was trained on (e.g. "mnist"); scores on other data are not meaningful. */
  dataset: string;
  inputShape: number[];
  classes: number;
  featureLayer: string;
  featureDim: number;
  params: number;
  architecture: string;
  heldOut: { count: number; correct: number; accuracy: number; perClass: ClassAccuracy[] };
  training: {
    trainCount: number;
    /** --train-limit: trained on a seeded subset of this many train images. */
    trainLimit?: number;
    epochs: number;
    batchSize: number;
    lr: number;
    seed: number;
    augmentShift: number;
    backend: string;
    seconds: number;
  };
  weightsBytes: number;
  weightsSha256: string;
  trainedAt: string;
}

/** The classifier's layers, untrained (the training script sets the weights). */
export function buildClassifier(inputShape: number[] = [28, 28, 1], classes = 10, featureDim = 64): tfl.LayersModel {
  const x = tfl.input({ shape: inputShape });
  let h = tfl.layers.conv2d({ name: 'conv1', filters: 16, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(x) as tfl.SymbolicTensor;
  h = tfl.layers.maxPooling2d({ name: 'pool1', poolSize: 2, strides: 2 }).apply(h) as tfl.SymbolicTensor;
  h = tfl.layers.conv2d({ name: 'conv2', filters: 32, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(h) as tfl.SymbolicTensor;
  h = tfl.layers.maxPooling2d({ name: 'pool2', poolSize: 2, strides: 2 }).apply(h) as tfl.SymbolicTensor;
  h = tfl.layers.flatten({ name: 'flatten' }).apply(h) as tfl.SymbolicTensor;
  h = tfl.layers.dense({ name: FEATURE_LAYER, units: featureDim, activation: 'relu' }).apply(h) as tfl.SymbolicTensor;
  const probs = tfl.layers.dense({ name: 'probs', units: classes, activation: 'softmax' }).apply(h) as tfl.SymbolicTensor;
  return tfl.model({ name: 'mnist_classifier', inputs: x, outputs: probs });
}

export interface ClassifierOutput {
  /** rows * classes softmax probabilities. */
  probs: Float32Array;
  /** rows * featureDim penultimate activations. */
  features: Float32Array;
}

/** A loaded classifier: class probabilities and penultimate features for batches of images. */
export class ImageClassifier {
  readonly classes: number;
  readonly featureDim: number;
  readonly inputShape: number[];
  private readonly both: tfl.LayersModel;

  constructor(readonly model: tfl.LayersModel, readonly meta: ClassifierMeta | null, readonly dir: string | null = null) {
    const out = model.outputs[0].shape;
    this.classes = out[out.length - 1] as number;
    const feat = model.getLayer(FEATURE_LAYER).output as tfl.SymbolicTensor;
    this.featureDim = feat.shape[feat.shape.length - 1] as number;
    this.inputShape = model.inputs[0].shape.slice(1) as number[];
    // One pass yields both outputs.
    this.both = tfl.model({ inputs: model.inputs, outputs: [feat, model.outputs[0]] });
  }

  get inputDim(): number {
    return this.inputShape.reduce((a, b) => a * b, 1);
  }

  /** Scores `rows` images (rows * inputDim values in [-1, 1]) in batches. */
  run(x: Float32Array, rows: number, batch = 250): ClassifierOutput {
    const dim = this.inputDim;
    if (x.length < rows * dim) throw new GanError('CLASSIFIER_BAD_INPUT', `classifier input: ${rows} images need ${rows * dim} values, got ${x.length}`);
    const probs = new Float32Array(rows * this.classes);
    const features = new Float32Array(rows * this.featureDim);
    for (let start = 0; start < rows; start += batch) {
      const n = Math.min(batch, rows - start);
      // Results leave tf.tidy through the closure, never as its return value (see tidyOut in shared/replica.ts).
      tf.tidy(() => {
        const input = tf.tensor(x.subarray(start * dim, (start + n) * dim), [n, ...this.inputShape], 'float32');
        const [f, p] = this.both.apply(input) as tf.Tensor[];
        features.set(f.dataSync() as Float32Array, start * this.featureDim);
        probs.set(p.dataSync() as Float32Array, start * this.classes);
      });
    }
    return { probs, features };
  }

  /** Predicted class per row. */
  static argmax(probs: Float32Array, rows: number, classes: number): Int32Array {
    const out = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (probs[r * classes + c] > probs[r * classes + best]) best = c;
      out[r] = best;
    }
    return out;
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** Accuracy overall and per class of predicted labels against true ones. */
export function accuracyByClass(predicted: Int32Array, labels: ArrayLike<number>, classes: number): { count: number; correct: number; accuracy: number; perClass: ClassAccuracy[] } {
  const perClass: ClassAccuracy[] = Array.from({ length: classes }, (_, label) => ({ label, count: 0, correct: 0, accuracy: 0 }));
  let correct = 0;
  for (let i = 0; i < predicted.length; i++) {
    const c = perClass[labels[i]];
    c.count++;
    if (predicted[i] === labels[i]) {
      c.correct++;
      correct++;
    }
  }
  for (const c of perClass) c.accuracy = c.count > 0 ? c.correct / c.count : NaN;
  return { count: predicted.length, correct, accuracy: predicted.length > 0 ? correct / predicted.length : NaN, perClass };
}

export function readClassifierMeta(dir: string): ClassifierMeta {
  const path = join(dir, CLASSIFIER_META_FILE);
  let meta: ClassifierMeta;
  try {
    meta = JSON.parse(readFileSync(path, 'utf8')) as ClassifierMeta;
  } catch (err) {
    throw new GanError('CLASSIFIER_MALFORMED', `cannot read ${path} (${(err as Error).message}); retrain with npm run train-classifier`, { cause: err });
  }
  if (meta.format !== CLASSIFIER_FORMAT || typeof meta.version !== 'number' || meta.version > CLASSIFIER_VERSION) {
    throw new GanError('CLASSIFIER_MALFORMED', `${path} is not a ${CLASSIFIER_FORMAT} v${CLASSIFIER_VERSION} file`);
  }
  return meta;
}

/** Loads the shipped (or another trained) classifier from a directory. */
export async function loadClassifier(dir: string = DEFAULT_CLASSIFIER_DIR): Promise<ImageClassifier> {
  const root = resolve(dir);
  if (!existsSync(join(root, MODEL_FILE)) || !existsSync(join(root, CLASSIFIER_META_FILE))) {
    throw new GanError(
      'CLASSIFIER_MISSING',
      `no classifier at ${root} (needs ${MODEL_FILE}, weights.bin and ${CLASSIFIER_META_FILE}); the repository ships one in models/classifier/, or train one with npm run train-classifier`,
    );
  }
  const meta = readClassifierMeta(root);
  const model = await loadExportedModel(root);
  return new ImageClassifier(model, meta, root);
}
