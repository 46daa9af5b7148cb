/**
 * Draws global minibatches of real data. Its position is a few integers, so a checkpoint can
 * store it and a resumed run draws exactly the batches the uninterrupted run would have.
 *  - finite data sets: epochs over a permutation derived from (seed, epoch)
 *  - mixtures: fresh points per batch, from (seed, batch index)
 */
import type { DataSource } from '../shared/data/types.ts';
import { sampleMixture } from './data/mixtures.ts';
import { deriveSeed, permutation, STREAM } from '../shared/rng.ts';

export interface SamplerState {
  epoch: number;
  cursor: number;
  batches: number;
}

export interface RealBatch {
  x: Float32Array;
  labels?: Int32Array;
  /** Finite data sets: the training-set row behind each batch row (lets the coordinator send row codes). */
  rows?: Int32Array;
}

export class Sampler {
  private perm: Uint32Array | null = null;
  private permEpoch = -1;
  private pos: SamplerState;

  constructor(private source: DataSource, private seed: number, state?: SamplerState) {
    this.pos = state ? { ...state } : { epoch: 0, cursor: 0, batches: 0 };
  }

  state(): SamplerState {
    return { ...this.pos };
  }

  private permutationFor(epoch: number, n: number): Uint32Array {
    if (this.permEpoch !== epoch || !this.perm) {
      this.perm = permutation(n, deriveSeed(this.seed, STREAM.data, epoch));
      this.permEpoch = epoch;
    }
    return this.perm;
  }

  next(batchSize: number): RealBatch {
    const src = this.source;
    this.pos.batches++;
    if (src.kind === 'mixture') {
      return { x: sampleMixture(src.mixture, batchSize, deriveSeed(this.seed, STREAM.mixture, this.pos.batches - 1)) };
    }
    const { train } = src;
    const x = new Float32Array(batchSize * train.dim);
    const labels = train.labels ? new Int32Array(batchSize) : undefined;
    const rows = new Int32Array(batchSize);
    for (let r = 0; r < batchSize; r++) {
      if (this.pos.cursor >= train.n) {
        this.pos.epoch++;
        this.pos.cursor = 0;
      }
      const idx = this.permutationFor(this.pos.epoch, train.n)[this.pos.cursor++];
      rows[r] = idx;
      x.set(train.x.subarray(idx * train.dim, (idx + 1) * train.dim), r * train.dim);
      if (labels && train.labels) labels[r] = train.labels[idx];
    }
    return { x, labels, rows };
  }
}
