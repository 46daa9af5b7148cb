/**
 * A compute replica of G and D: the step functions that turn one micro-shard into a gradient.
 * Workers and the single-process trainer both run exactly this code, which is what makes their
 * results bit-identical on the same backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GanConfig } from './config.ts';
import { sampleDim } from './config.ts';
import { GanError } from './errors.ts';
import { withDropoutSeed } from './layers.ts';
import { discriminatorLoss, generatorLoss } from './losses.ts';
import { buildModels, netLayout, type GanModels, type NetLayout } from './models.ts';
import { deriveSeed, normalArray, Rng } from './rng.ts';
import type { Net, Phase, ShardSpec } from './protocol.ts';
import { reduceNode } from './tree-sum.ts';

/**
 * One micro-shard of a global batch: everything needed to recompute it anywhere. It is the task's
 * shard (shared/protocol.ts ShardSpec: shardId; seed, derived from (run seed, iteration, phase,
 * D-step, shard id) for noise, fake labels and dropout; rows; real rows and labels in the D phase)
 * with the rows decoded, plus `realRows` on finite data sets: the training-set row behind each
 * real row, which only the coordinator reads (to send rows as one-byte codes) and never travels.
 */
export type ShardInput = Omit<ShardSpec, 'realCodes'> & { realRows?: Int32Array };

/**
 * One shard's gradient still in the backend: one tensor per trainable variable of the phase's
 * net (layout order), owned by the caller (dispose with disposeShardTensors), with its statistics.
 */
export interface ShardTensors {
  grads: tf.Tensor[];
  loss: number;
  dReal: number;
  dFake: number;
}

export function disposeShardTensors(t: ShardTensors): void {
  tf.dispose(t.grads);
  t.grads = [];
}

export interface ShardResult {
  /** Gradient of the shard's mean loss w.r.t. the phase's net, flat in NetLayout order. */
  gradient: Float32Array;
  loss: number;
  /** Mean D(x) on the shard's real rows (D phase; 0 in the G phase, which sees no real rows). */
  dReal: number;
  /** Mean D(G(z)) on the shard's generated rows. */
  dFake: number;
}

/** Sub-streams of a shard seed. */
const SHARD_STREAM = { noise: 1, labels: 2, dropout: 3 } as const;

export function shardNoise(seed: number, rows: number, noiseDim: number): Float32Array {
  return normalArray(rows * noiseDim, deriveSeed(seed, SHARD_STREAM.noise));
}

export function shardFakeLabels(seed: number, rows: number, numClasses: number): Int32Array {
  const rng = new Rng(deriveSeed(seed, SHARD_STREAM.labels));
  const out = new Int32Array(rows);
  for (let i = 0; i < rows; i++) out[i] = rng.nextInt(numClasses);
  return out;
}

/**
 * tf.tidy walks its return value looking for tensors, element by element through typed arrays
 * (200 ms for one gradient). Results leave the scope through a closure instead.
 */
function tidyOut<T>(fn: () => T): T {
  let out!: T;
  tf.tidy(() => {
    out = fn();
  });
  return out;
}

export class GanReplica {
  readonly models: GanModels;
  readonly layout: Record<Net, NetLayout>;
  private readonly vars: Record<Net, tf.Variable[]>;

  constructor(readonly config: GanConfig) {
    this.models = buildModels(config.model);
    this.layout = { G: netLayout(this.models.g), D: netLayout(this.models.d) };
    this.vars = {
      G: this.models.g.trainableWeights.map((w) => w.read() as tf.Variable),
      D: this.models.d.trainableWeights.map((w) => w.read() as tf.Variable),
    };
  }

  /** Replaces a net's weights with a flat array in layout order. */
  setWeights(net: Net, flat: Float32Array): void {
    const layout = this.layout[net];
    if (flat.length !== layout.total) {
      throw new GanError('WEIGHTS_SIZE_MISMATCH', `${net} weights have ${flat.length} values; this model's ${net} has ${layout.total}`);
    }
    tf.tidy(() => {
      this.vars[net].forEach((v, i) => {
        v.assign(tf.tensor(flat.subarray(layout.offsets[i], layout.offsets[i] + layout.sizes[i]), layout.shapes[i], 'float32'));
      });
    });
  }

  getWeights(net: Net): Float32Array {
    const out = new Float32Array(this.layout[net].total);
    this.vars[net].forEach((v, i) => out.set(v.dataSync() as Float32Array, this.layout[net].offsets[i]));
    return out;
  }

  private oneHot(labels: Int32Array): tf.Tensor {
    return tf.oneHot(tf.tensor1d(labels, 'int32'), this.config.model.numClasses);
  }

  private gInputs(seed: number, rows: number): tf.Tensor[] {
    const { noiseDim, numClasses } = this.config.model;
    const z = tf.tensor2d(shardNoise(seed, rows, noiseDim), [rows, noiseDim]);
    return numClasses > 0 ? [z, this.oneHot(shardFakeLabels(seed, rows, numClasses))] : [z];
  }

  /** Groups consecutive rows into packs for a packed D: [n, ...shape] -> [n / pack, pack * dim]. */
  private packRows(x: tf.Tensor): tf.Tensor {
    const { pack } = this.config.model;
    return pack > 1 ? tf.reshape(x, [x.shape[0] / pack, -1]) : x;
  }

  /** The phase's variables' gradients in layout order, kept past the enclosing tidy. */
  private keptGradients(net: Net, grads: tf.NamedTensorMap): tf.Tensor[] {
    return this.vars[net].map((v) => tf.keep(grads[v.name]));
  }

  /** Per-variable tensors flattened into one Float32Array in layout order (one read from the backend). */
  private flatten(parts: tf.Tensor[]): Float32Array {
    return tidyOut(() => tf.concat(parts.map((t) => tf.reshape(t, [-1]))).dataSync() as Float32Array);
  }

  /**
   * Whether the backend's float32 add is exactly JS's Math.fround(a + b) for every input
   * (IEEE-754 binary32, subnormals kept): wasm (WebAssembly has no flush-to-zero mode) and cpu
   * (plain JS). Native TensorFlow flushes subnormals in its threads and WebGL is not IEEE, so
   * there the tree sum stays in JS (shared/tree-sum.ts).
   */
  get exactAdd(): boolean {
    const b = tf.getBackend();
    return b === 'wasm' || b === 'cpu';
  }

  /**
   * The raw value (before any wire rounding) of an aligned block of the fixed sum tree
   * (shared/tree-sum.ts) from its shards' gradients still in the backend: the same float32
   * additions in the same tree order as blockRawSum with no quantizer, done by the backend's add
   * (only where exactAdd: then the bits are the same), per variable, and read back once. The
   * leaves stay the caller's.
   */
  blockSum(shards: number, block: { first: number; count: number }, leaf: (shardId: number) => tf.Tensor[]): Float32Array {
    return tidyOut(() => {
      const root = reduceNode<tf.Tensor[]>(
        shards,
        block.first,
        block.count,
        (lo, size) => (size === 1 ? leaf(lo) : undefined),
        (l, r) => l.map((t, i) => tf.add(t, r[i]!)),
      );
      return this.flatten(root);
    });
  }

  /** The D phase for one shard: gradient of D's loss on (real rows, G(z) from the shard seed). */
  computeDGradient(shard: ShardInput): ShardResult {
    return this.toResult(this.dShard(shard));
  }

  /** A shard's result with its gradient flattened into a Float32Array; the tensors are disposed. */
  private toResult(t: ShardTensors): ShardResult {
    try {
      return { gradient: this.flatten(t.grads), loss: t.loss, dReal: t.dReal, dFake: t.dFake };
    } finally {
      disposeShardTensors(t);
    }
  }

  /** The D phase for one shard, its gradient left in the backend (ShardTensors). */
  private dShard(shard: ShardInput): ShardTensors {
    const { model, loss: lossCfg } = this.config;
    const { rows, real } = shard;
    const dim = sampleDim(model);
    if (!real || real.length !== rows * dim) {
      throw new GanError('SHARD_BAD_REAL', `D shard ${shard.shardId} needs ${rows * dim} real values, got ${real?.length ?? 0}`);
    }
    if (model.numClasses > 0 && shard.realLabels?.length !== rows) {
      throw new GanError('SHARD_BAD_LABELS', `D shard ${shard.shardId} of a conditional model needs ${rows} real labels`);
    }
    return tidyOut(() => {
      // G's output is a constant here: only D's variables are differentiated.
      const fake = this.models.g.apply(this.gInputs(shard.seed, rows)) as tf.Tensor;
      // Real and fake rows go through D in one pass, so one dropout mask covers the shard.
      const x = this.packRows(tf.concat([tf.reshape(tf.tensor(real), [rows, ...model.dataShape]), fake]));
      const half = rows / model.pack;
      const inputs = [x];
      if (model.numClasses > 0) {
        inputs.push(tf.concat([this.oneHot(shard.realLabels!), this.oneHot(shardFakeLabels(shard.seed, rows, model.numClasses))]));
      }
      let realLogits!: tf.Tensor;
      let fakeLogits!: tf.Tensor;
      const { value, grads } = withDropoutSeed(deriveSeed(shard.seed, SHARD_STREAM.dropout), () =>
        tf.variableGrads(() => {
          const logits = this.models.d.apply(inputs, { training: true }) as tf.Tensor;
          realLogits = tf.keep(tf.slice(logits, [0, 0], [half, 1]));
          fakeLogits = tf.keep(tf.slice(logits, [half, 0], [half, 1]));
          return discriminatorLoss(realLogits, fakeLogits, lossCfg.labelSmoothing);
        }, this.vars.D),
      );
      const out = {
        grads: this.keptGradients('D', grads),
        loss: value.dataSync()[0],
        dReal: tf.mean(tf.sigmoid(realLogits)).dataSync()[0],
        dFake: tf.mean(tf.sigmoid(fakeLogits)).dataSync()[0],
      };
      tf.dispose([realLogits, fakeLogits]);
      return out;
    });
  }

  /** The G phase for one shard: gradient of G's loss through D (D in training mode, not updated). */
  computeGGradient(shard: ShardInput): ShardResult {
    return this.toResult(this.gShard(shard));
  }

  private gShard(shard: ShardInput): ShardTensors {
    const { model, loss: lossCfg } = this.config;
    const { rows } = shard;
    return tidyOut(() => {
      const gIn = this.gInputs(shard.seed, rows);
      let fakeLogits!: tf.Tensor;
      const { value, grads } = withDropoutSeed(deriveSeed(shard.seed, SHARD_STREAM.dropout), () =>
        tf.variableGrads(() => {
          const fake = this.models.g.apply(gIn, { training: true }) as tf.Tensor;
          const dIn = model.numClasses > 0 ? [fake, gIn[1]] : [this.packRows(fake)];
          fakeLogits = tf.keep(this.models.d.apply(dIn, { training: true }) as tf.Tensor);
          return generatorLoss(fakeLogits, lossCfg.gLoss);
        }, this.vars.G),
      );
      const out = { grads: this.keptGradients('G', grads), loss: value.dataSync()[0], dReal: 0, dFake: tf.mean(tf.sigmoid(fakeLogits)).dataSync()[0] };
      tf.dispose(fakeLogits);
      return out;
    });
  }

  computeShard(phase: Phase, shard: ShardInput): ShardResult {
    return phase === 'D' ? this.computeDGradient(shard) : this.computeGGradient(shard);
  }

  /** One shard with its gradient left in the backend, for blockSum (the caller disposes it). */
  computeShardTensors(phase: Phase, shard: ShardInput): ShardTensors {
    return phase === 'D' ? this.dShard(shard) : this.gShard(shard);
  }

  /** G(z) for given noise (and labels), at inference: rows * sampleDim values. */
  generate(z: Float32Array, rows: number, labels?: Int32Array): Float32Array {
    const { noiseDim, numClasses } = this.config.model;
    return tidyOut(() => {
      const inputs: tf.Tensor[] = [tf.tensor2d(z, [rows, noiseDim])];
      if (numClasses > 0) inputs.push(this.oneHot(labels ?? new Int32Array(rows)));
      return (this.models.g.apply(inputs) as tf.Tensor).dataSync() as Float32Array;
    });
  }

  /** D's probability D(x) for rows of data, at inference (one value per pack when packed). */
  discriminate(x: Float32Array, rows: number, labels?: Int32Array): Float32Array {
    const { dataShape, numClasses } = this.config.model;
    return tidyOut(() => {
      const inputs = [this.packRows(tf.tensor(x, [rows, ...dataShape]))];
      if (numClasses > 0) inputs.push(this.oneHot(labels ?? new Int32Array(rows)));
      return tf.sigmoid(this.models.d.apply(inputs) as tf.Tensor).dataSync() as Float32Array;
    });
  }

  dispose(): void {
    this.models.g.dispose();
    this.models.d.dispose();
  }
}
