/**
 * npm run train-classifier: trains the small CNN that gan-eval scores images with
 * (trainer/eval/classifier.ts) and writes it to models/classifier/ (MNIST; `-- --dataset fashion`:
 * Fashion-MNIST to models/classifier-fashion/): model.json, weights.bin, classifier.json with the
 * held-out accuracy, README.md.
 *
 * Training set: the data source's train split (mnist: the `mnist` package's 9,003 digits;
 * fashion: 60,000 images); evaluation: its held-out split (997 digits; fashion: the 10,000 test
 * images), never seen in training. Everything random comes
 * from --seed: initial weights, batch order, augmentation shifts. With the same seed on the same
 * backend the weights come out bit for bit the same (the sha256 in classifier.json).
 *
 * Why the training forward pass is written out by hand: the wasm backend has no
 * Conv2DBackpropFilter kernel, so a conv layer's kernel gradient cannot be taken there. Each 3x3
 * 'same' convolution is computed instead as im2col (nine shifted slices of the zero-padded input,
 * concatenated on the channel axis in (dy, dx, channel) order) times the kernel reshaped to
 * [9 * in, out], which is exactly tf.conv2d's cross-correlation, and every op involved has a
 * gradient on wasm. The trained weights go into the stock LayersModel (built-in Conv2D layers),
 * whose output is checked against the hand-written forward pass before saving.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/backend.ts';
import { COMMON_FLAGS, helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { loadDataSource, type Dataset } from '../trainer/data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { saveLayersModel, WEIGHTS_FILE } from '../trainer/export.ts';
import {
  accuracyByClass,
  buildClassifier,
  CLASSIFIER_FORMAT,
  CLASSIFIER_META_FILE,
  CLASSIFIER_VERSION,
  classifierDirFor,
  FEATURE_LAYER,
  ImageClassifier,
  type ClassifierMeta,
} from '../trainer/eval/classifier.ts';
import { deriveSeed, permutation, Rng } from '../shared/rng.ts';

const FLAGS: FlagTable = {
  dataset: { type: 'string', help: 'labelled 28x28 data source: mnist | fashion | idx:<dir>', defaultText: 'mnist' },
  out: { type: 'string', help: 'output directory (required for other data sets)', defaultText: 'models/classifier for mnist, models/classifier-fashion for fashion' },
  epochs: { type: 'string', kind: 'int', help: 'passes over the train split', defaultText: '15' },
  'batch-size': { type: 'string', kind: 'int', help: 'minibatch', defaultText: '64' },
  lr: { type: 'string', kind: 'number', help: 'Adam learning rate (divided by 10 for the last third of the epochs)', defaultText: '2e-3' },
  'augment-shift': { type: 'string', kind: 'int', help: 'random translation of each training digit by up to this many pixels', defaultText: '2' },
  seed: { type: 'string', kind: 'int', help: 'seed of init, batch order and augmentation', defaultText: '1' },
  'train-limit': { type: 'string', kind: 'int', help: 'train on a seeded random subset of this many train images (fashion has 60,000)', defaultText: 'all' },
  quiet: { type: 'boolean', help: 'no per-epoch lines' },
};

const USAGE = `Usage: npm run train-classifier -- [options]

Trains the small CNN used by gan-eval (Inception Score, Fréchet distance, label accuracy) on a
data set's train split, evaluates it on the held-out split and saves it as a TensorFlow.js
LayersModel with classifier.json (held-out accuracy) and README.md. --dataset chooses the data:
mnist (models/classifier/), fashion (Fashion-MNIST from Debian's dataset-fashion-mnist;
models/classifier-fashion/) or idx:<dir> (with --out <dir>).`;

const STREAM_CLASSIFIER = 0x434c53; // 'CLS'
const FEATURE_DIM = 64;

interface Param {
  name: string;
  shape: number[];
  v: tf.Variable;
}

/** Glorot-uniform kernels and zero biases from the seed (independent of tfjs's initialisers). */
function initParams(seed: number, classes: number): Param[] {
  const specs: [string, number[]][] = [
    ['conv1/kernel', [3, 3, 1, 16]],
    ['conv1/bias', [16]],
    ['conv2/kernel', [3, 3, 16, 32]],
    ['conv2/bias', [32]],
    [`${FEATURE_LAYER}/kernel`, [7 * 7 * 32, FEATURE_DIM]],
    [`${FEATURE_LAYER}/bias`, [FEATURE_DIM]],
    ['probs/kernel', [FEATURE_DIM, classes]],
    ['probs/bias', [classes]],
  ];
  return specs.map(([name, shape], i) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    if (shape.length > 1) {
      const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
      const limit = Math.sqrt(6 / (receptive * shape[shape.length - 2] + receptive * shape[shape.length - 1]));
      const rng = new Rng(deriveSeed(seed, STREAM_CLASSIFIER, 1, i));
      for (let j = 0; j < size; j++) values[j] = (rng.nextFloat() * 2 - 1) * limit;
    }
    return { name, shape, v: tf.variable(tf.tensor(values, shape, 'float32'), true, `clf_${name.replace('/', '_')}`) };
  });
}

/** 3x3 'same' convolution as im2col x reshaped kernel (see the header). */
function conv3x3(x: tf.Tensor4D, kernel: tf.Tensor, bias: tf.Tensor): tf.Tensor4D {
  const [n, h, w, cin] = x.shape;
  const cout = kernel.shape[3]!;
  const padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]);
  const cols: tf.Tensor4D[] = [];
  for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) cols.push(tf.slice(padded, [0, dy, dx, 0], [n, h, w, cin]));
  const patches = tf.reshape(tf.concat(cols, 3), [n * h * w, 9 * cin]);
  const y = tf.add(tf.matMul(patches, tf.reshape(kernel, [9 * cin, cout])), bias);
  return tf.reshape(y, [n, h, w, cout]);
}

/** The classifier's logits, written with ops that all have gradients on wasm. */
function forwardLogits(p: Param[], x: tf.Tensor4D): tf.Tensor2D {
  let h = tf.maxPool(tf.relu(conv3x3(x, p[0].v, p[1].v)), 2, 2, 'valid');
  h = tf.maxPool(tf.relu(conv3x3(h, p[2].v, p[3].v)), 2, 2, 'valid');
  const flat = tf.reshape(h, [x.shape[0], -1]) as tf.Tensor2D;
  const feat = tf.relu(tf.add(tf.matMul(flat, p[4].v as tf.Tensor2D), p[5].v));
  return tf.add(tf.matMul(feat, p[6].v as tf.Tensor2D), p[7].v) as tf.Tensor2D;
}

/** Copies image `src` of `ds` into `out` at row `row`, translated by (dx, dy); uncovered pixels are background (-1). */
function shiftedCopy(ds: Dataset, src: number, out: Float32Array, row: number, dx: number, dy: number): void {
  const [h, w] = ds.shape;
  const base = row * h * w;
  const from = src * h * w;
  for (let y = 0; y < h; y++) {
    const sy = y - dy;
    for (let x = 0; x < w; x++) {
      const sx = x - dx;
      out[base + y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? ds.x[from + sy * w + sx] : -1;
    }
  }
}

/** n rows of ds picked by a seeded permutation (in that order). */
function subset(ds: Dataset, n: number, seed: number): Dataset {
  const rows = permutation(ds.n, deriveSeed(seed, STREAM_CLASSIFIER, 4)).subarray(0, n);
  const x = new Float32Array(n * ds.dim);
  const labels = new Int32Array(n);
  rows.forEach((r, i) => {
    x.set(ds.x.subarray(r * ds.dim, (r + 1) * ds.dim), i * ds.dim);
    labels[i] = ds.labels![r];
  });
  return { ...ds, name: `${ds.name}[${n}]`, x, n, labels };
}

function logitsAccuracy(p: Param[], ds: Dataset): number {
  let correct = 0;
  const batch = 500;
  for (let start = 0; start < ds.n; start += batch) {
    const n = Math.min(batch, ds.n - start);
    tf.tidy(() => {
      const x = tf.tensor4d(ds.x.subarray(start * ds.dim, (start + n) * ds.dim), [n, ...ds.shape] as [number, number, number, number]);
      const pred = tf.argMax(forwardLogits(p, x), 1).dataSync();
      for (let i = 0; i < n; i++) if (pred[i] === ds.labels![start + i]) correct++;
    });
  }
  return correct / ds.n;
}

runMain(async () => {
  const flags = { ...FLAGS, ...COMMON_FLAGS };
  const v = parseFlags(process.argv.slice(2), flags);
  if (v.help) {
    process.stdout.write(helpText(USAGE, flags));
    return 0;
  }
  const dataset = typeof v.dataset === 'string' ? v.dataset : 'mnist';
  const defaultOut = classifierDirFor(dataset);
  if (typeof v.out !== 'string' && defaultOut === null) {
    throw new ConfigError('CLI_BAD_ARGS', `--dataset ${dataset} has no shipped classifier directory; pass --out <dir> (and later gan-eval --classifier <dir>)`);
  }
  const out = resolve(typeof v.out === 'string' ? v.out : defaultOut!);
  const epochs = v.epochs === undefined ? 15 : Number(v.epochs);
  const batchSize = v['batch-size'] === undefined ? 64 : Number(v['batch-size']);
  const lr = v.lr === undefined ? 2e-3 : Number(v.lr);
  const shift = v['augment-shift'] === undefined ? 2 : Number(v['augment-shift']);
  const seed = v.seed === undefined ? 1 : Number(v.seed);
  if (epochs < 1 || batchSize < 1 || !(lr > 0) || shift < 0) throw new ConfigError('CLI_BAD_NUMBER', '--epochs and --batch-size must be >= 1, --lr > 0, --augment-shift >= 0');
  const say = (line: string) => process.stdout.write(`${line}\n`);

  const backend = await initBackend((v.backend as 'auto') ?? 'wasm');
  const source = loadDataSource(dataset);
  if (source.kind !== 'finite' || !source.train.labels || !source.heldOut.labels) {
    throw new ConfigError('CLASSIFIER_NEEDS_LABELS', `--dataset ${dataset} has no class labels; the classifier needs a labelled image data set (mnist or idx:<dir>)`);
  }
  const { heldOut } = source;
  const limit = v['train-limit'] === undefined ? null : Number(v['train-limit']);
  if (limit !== null && limit < batchSize) throw new ConfigError('CLI_BAD_NUMBER', `--train-limit must be at least the batch size (${batchSize}); got ${limit}`);
  const train = limit !== null && limit < source.train.n ? subset(source.train, limit, seed) : source.train;
  if (train.shape.length !== 3 || train.shape[0] !== 28 || train.shape[1] !== 28 || train.shape[2] !== 1) {
    throw new ConfigError('CLASSIFIER_BAD_SHAPE', `the classifier takes 28x28x1 images; ${dataset} has shape [${train.shape}]`);
  }
  const classes = train.numClasses ?? 10;
  say(`training the classifier on ${dataset}: ${train.n} train / ${heldOut.n} held-out images, ${epochs} epochs, backend ${backend.name}, seed ${seed}`);

  const params = initParams(seed, classes);
  const vars = params.map((p) => p.v);
  const optimizer = tf.train.adam(lr);
  const started = performance.now();
  const xBatch = new Float32Array(batchSize * train.dim);
  const yBatch = new Int32Array(batchSize);
  for (let epoch = 0; epoch < epochs; epoch++) {
    // Step decay: the last third of the epochs at lr / 10.
    (optimizer as unknown as { learningRate: number }).learningRate = epoch >= Math.ceil((2 * epochs) / 3) ? lr / 10 : lr;
    const order = permutation(train.n, deriveSeed(seed, STREAM_CLASSIFIER, 2, epoch));
    const aug = new Rng(deriveSeed(seed, STREAM_CLASSIFIER, 3, epoch));
    let lossSum = 0;
    let steps = 0;
    for (let start = 0; start + batchSize <= train.n; start += batchSize) {
      for (let i = 0; i < batchSize; i++) {
        const src = order[start + i];
        const dx = aug.nextInt(2 * shift + 1) - shift;
        const dy = aug.nextInt(2 * shift + 1) - shift;
        shiftedCopy(train, src, xBatch, i, dx, dy);
        yBatch[i] = train.labels![src];
      }
      const loss = tf.tidy((): tf.Scalar => {
        const x = tf.tensor4d(xBatch, [batchSize, 28, 28, 1]);
        const y = tf.oneHot(tf.tensor1d(yBatch, 'int32'), classes);
        return optimizer.minimize(() => {
          const logits = forwardLogits(params, x);
          // Softmax cross-entropy from logits: logsumexp(l) - l[y].
          return tf.mean(tf.sub(tf.logSumExp(logits, 1), tf.sum(tf.mul(logits, y), 1))) as tf.Scalar;
        }, true, vars)!;
      });
      lossSum += loss.dataSync()[0];
      loss.dispose();
      steps++;
    }
    if (v.quiet !== true) {
      const acc = logitsAccuracy(params, heldOut);
      say(`epoch ${epoch + 1}/${epochs}: loss ${(lossSum / steps).toFixed(4)}, held-out accuracy ${(100 * acc).toFixed(2)}% (${((performance.now() - started) / 1000).toFixed(0)} s)`);
    }
  }
  const seconds = (performance.now() - started) / 1000;

  // Into the stock LayersModel, checked against the training forward pass.
  const model = buildClassifier(train.shape, classes, FEATURE_DIM);
  for (const layer of ['conv1', 'conv2', FEATURE_LAYER, 'probs']) {
    const kernel = params.find((p) => p.name === `${layer}/kernel`)!.v;
    const bias = params.find((p) => p.name === `${layer}/bias`)!.v;
    model.getLayer(layer).setWeights([kernel, bias]);
  }
  const classifier = new ImageClassifier(model, null);
  const { probs } = classifier.run(heldOut.x, heldOut.n);
  let maxDiff = 0;
  tf.tidy(() => {
    const n = Math.min(200, heldOut.n);
    const ref = tf.softmax(forwardLogits(params, tf.tensor4d(heldOut.x.subarray(0, n * heldOut.dim), [n, 28, 28, 1]))).dataSync();
    for (let i = 0; i < n * classes; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i] - probs[i]));
  });
  if (maxDiff > 1e-3) throw new Error(`the LayersModel disagrees with the training forward pass (max |dp| = ${maxDiff}); the conv weight layout is wrong`);
  const acc = accuracyByClass(ImageClassifier.argmax(probs, heldOut.n, classes), heldOut.labels!, classes);

  mkdirSync(out, { recursive: true });
  await saveLayersModel(model, out);
  const weights = readFileSync(join(out, WEIGHTS_FILE));
  const paramCount = params.reduce((a, p) => a + p.v.size, 0);
  const meta: ClassifierMeta = {
    format: CLASSIFIER_FORMAT,
    version: CLASSIFIER_VERSION,
    dataset,
    inputShape: train.shape,
    classes,
    featureLayer: FEATURE_LAYER,
    featureDim: FEATURE_DIM,
    params: paramCount,
    architecture: 'conv3x3x16-relu-maxpool2 / conv3x3x32-relu-maxpool2 / dense64-relu (features) / dense10-softmax; input [-1, 1]',
    heldOut: acc,
    training: { trainCount: train.n, ...(train !== source.train ? { trainLimit: train.n } : {}), epochs, batchSize, lr, seed, augmentShift: shift, backend: backend.name, seconds: Number(seconds.toFixed(1)) },
    weightsBytes: weights.byteLength,
    weightsSha256: createHash('sha256').update(weights).digest('hex'),
    trainedAt: new Date().toISOString(),
  };
  writeFileSync(join(out, CLASSIFIER_META_FILE), JSON.stringify(meta, null, 2) + '\n');
  writeFileSync(join(out, 'README.md'), readme(meta));
  say(`held-out accuracy ${(100 * acc.accuracy).toFixed(2)}% (${acc.correct}/${acc.count}); ${paramCount} parameters, weights.bin ${(weights.byteLength / 1024).toFixed(0)} KiB; saved to ${relative(process.cwd(), out) || out} in ${seconds.toFixed(0)} s`);
  classifier.dispose();
  tf.dispose(vars);
  return 0;
});

function readme(m: ClassifierMeta): string {
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  const rows = m.heldOut.perClass.map((c) => `| ${c.label} | ${c.count} | ${pct(c.accuracy)} |`).join('\n');
  return `# The evaluation classifier

A small CNN trained by \`npm run train-classifier\` (scripts/train-classifier.ts) on the
\`${m.dataset}\` train split (${m.training.trainCount} images) and used by \`gan-eval\` and
\`--eval-every\` for the image scores: the Inception Score from its class probabilities, the
Fréchet distance on its ${m.featureDim}-unit penultimate layer (\`${m.featureLayer}\`), and the label
accuracy of conditional samples.

**Held-out accuracy: ${pct(m.heldOut.accuracy)}** (${m.heldOut.correct} of ${m.heldOut.count} held-out images, never used in training).

- Architecture: ${m.architecture}
- ${m.params} parameters; \`weights.bin\` is ${m.weightsBytes} bytes (sha256 \`${m.weightsSha256}\`)
- Training: Adam, lr ${m.training.lr} (÷10 for the last third), ${m.training.epochs} epochs of batch ${m.training.batchSize},
  random shifts of up to ${m.training.augmentShift} px, seed ${m.training.seed}, ${m.training.backend} backend, ${m.training.seconds} s
- Files: \`model.json\` + \`weights.bin\` (a TensorFlow.js LayersModel of built-in layers, loadable
  with \`tf.loadLayersModel\`), \`classifier.json\` (these figures, machine-readable)

Retrain (same seed and backend: the same weights, bit for bit):

    npm run train-classifier -- ${retrainFlags(m)}

| class | held-out images | accuracy |
| --- | --- | --- |
${rows}
`;
}

/** The flags that reproduce a classifier (the defaults left out). */
function retrainFlags(m: ClassifierMeta): string {
  const t = m.training;
  const flags = [`--dataset ${m.dataset}`];
  if (t.trainLimit !== undefined) flags.push(`--train-limit ${t.trainLimit}`);
  if (t.epochs !== 15) flags.push(`--epochs ${t.epochs}`);
  if (t.batchSize !== 64) flags.push(`--batch-size ${t.batchSize}`);
  if (t.lr !== 2e-3) flags.push(`--lr ${t.lr}`);
  if (t.augmentShift !== 2) flags.push(`--augment-shift ${t.augmentShift}`);
  if (t.seed !== 1) flags.push(`--seed ${t.seed}`);
  return flags.join(' ');
}
