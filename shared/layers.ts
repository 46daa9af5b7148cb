/**
 * Custom tfjs-layers layers the models need and tfjs lacks. Both are registered for
 * serialization so exported models that contain them load in any process that imports this file.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { deriveSeed, uniformArray } from './rng.ts';

type Shape = (number | null)[];

/** Maxout (Goodfellow et al. 2013): max over `pieces` linear pieces; input width = units * pieces. */
export class Maxout extends tfl.layers.Layer {
  static className = 'GanMaxout';
  readonly pieces: number;

  constructor(args: { pieces: number; name?: string }) {
    super({ name: args.name });
    this.pieces = args.pieces;
  }

  computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const s = inputShape as Shape;
    const width = s[s.length - 1];
    return [...s.slice(0, -1), width === null ? null : width / this.pieces];
  }

  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const [n, width] = x.shape;
      return tf.max(tf.reshape(x, [n, width / this.pieces, this.pieces]), 2);
    });
  }

  getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), pieces: this.pieces };
  }
}

/**
 * Where dropout masks come from during a training forward pass. tfjs-layers' Dropout with a seed
 * repeats one mask forever and without one uses Math.random; neither is reproducible per shard.
 * The step functions set a per-shard seed here for the duration of one forward pass; outside of
 * that (sampling, export, evaluation) dropout is the identity, as at inference.
 */
let activeDropoutSeed: number | null = null;

export function withDropoutSeed<T>(seed: number, fn: () => T): T {
  const prev = activeDropoutSeed;
  activeDropoutSeed = seed;
  try {
    return fn();
  } finally {
    activeDropoutSeed = prev;
  }
}

/** Inverted dropout whose mask is a pure function of (active shard seed, this layer's stream id). */
export class SeededDropout extends tfl.layers.Layer {
  static className = 'GanSeededDropout';
  readonly rate: number;
  readonly streamId: number;

  constructor(args: { rate: number; streamId: number; name?: string }) {
    super({ name: args.name });
    this.rate = args.rate;
    this.streamId = args.streamId;
  }

  computeOutputShape(inputShape: Shape | Shape[]): Shape {
    return inputShape as Shape;
  }

  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    if (activeDropoutSeed === null || this.rate === 0) return tf.clone(x);
    const keep = 1 - this.rate;
    const u = uniformArray(x.size, deriveSeed(activeDropoutSeed, this.streamId));
    const mask = new Float32Array(x.size);
    for (let i = 0; i < u.length; i++) mask[i] = u[i] < keep ? 1 / keep : 0;
    return tf.tidy(() => tf.mul(x, tf.tensor(mask, x.shape, 'float32')));
  }

  getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate, streamId: this.streamId };
  }
}

/**
 * Minibatch standard deviation (Karras et al. 2018, ProGAN): appends to every row one feature,
 * the standard deviation of each feature across the row's group (consecutive rows, `groupSize`
 * of them), averaged over the features. A collapsed generator's rows are alike, so D can tell
 * them apart from real rows by this one number.
 *
 * Groups are consecutive rows of the batch D is given, i.e. of one micro-shard: the statistic
 * never looks beyond the shard, so sharding stays exact. In the D phase a shard's real rows come
 * first and its fake rows after; config validation requires the rows of each half (per pack) to
 * be a multiple of the group size, so no group mixes real and fake rows. For any other batch
 * size (inference) the group is the largest divisor of the batch size not above `groupSize`.
 */
export class MinibatchStd extends tfl.layers.Layer {
  static className = 'GanMinibatchStd';
  readonly groupSize: number;

  constructor(args: { groupSize: number; name?: string }) {
    super({ name: args.name });
    this.groupSize = args.groupSize;
  }

  computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const s = inputShape as Shape;
    const width = s[s.length - 1];
    return [...s.slice(0, -1), width === null ? null : width + 1];
  }

  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const [n, width] = x.shape;
      let g = Math.max(1, Math.min(this.groupSize, n));
      while (n % g !== 0) g--;
      const { variance } = tf.moments(tf.reshape(x, [n / g, g, width]), 1);
      const std = tf.mean(tf.sqrt(tf.add(variance, 1e-8)), 1, true); // [groups, 1]
      // Broadcast back to every row of its group (an add, whose gradient sums over the group).
      const perRow = tf.reshape(tf.add(tf.zeros([n / g, g, 1]), tf.expandDims(std, 1)), [n, 1]);
      return tf.concat([x, perRow], 1);
    });
  }

  getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), groupSize: this.groupSize };
  }
}

tf.serialization.registerClass(Maxout);
tf.serialization.registerClass(SeededDropout);
tf.serialization.registerClass(MinibatchStd);
