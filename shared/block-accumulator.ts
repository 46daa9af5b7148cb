/**
 * The shards of one aligned block of the sum tree (shared/tree-sum.ts), computed one at a time
 * and summed into the block's raw value once all are in: what a worker sends per block, and what
 * gan-train computes for the whole tree.
 *
 * Where the backend's float32 add is exactly JS's (GanReplica.exactAdd: wasm, cpu) and the run
 * has no wire rounding (--wire fp32), the shards' gradients stay in the backend as per-variable
 * tensors and are added there in the tree's order (GanReplica.blockSum): the same float32
 * additions as blockRawSum, so the same bits, but on the backend's SIMD add and with one read
 * back per block instead of one per shard (and no per-shard concatenation). Otherwise each
 * shard's gradient is read back and summed in JS (blockRawSum, which applies --wire fp16's
 * rounding to internal nodes).
 *
 * Tensors held here live in the backend's memory: a block that will not be completed (stale
 * weights, lost connection) must be dispose()d.
 */
import { disposeShardTensors, type GanReplica, type ShardInput, type ShardResult, type ShardTensors } from './replica.ts';
import type { Phase } from './protocol.ts';
import { blockRawSum, blockShards, blockStats, type BlockStats, type Quantizer, type ShardBlock } from './tree-sum.ts';

export class BlockAccumulator {
  readonly ids: number[];
  private readonly tensors = new Map<number, ShardTensors>();
  private readonly results = new Map<number, ShardResult>();
  private readonly inBackend: boolean;

  constructor(
    private readonly replica: GanReplica,
    readonly shards: number,
    readonly block: ShardBlock,
    private readonly q: Quantizer,
  ) {
    this.ids = blockShards(block, shards);
    this.inBackend = q === null && replica.exactAdd;
  }

  /** Shards computed so far. */
  get size(): number {
    return this.inBackend ? this.tensors.size : this.results.size;
  }

  get complete(): boolean {
    return this.size === this.ids.length;
  }

  /** Computes one of the block's shards and keeps its gradient. */
  compute(phase: Phase, shard: ShardInput): void {
    if (this.inBackend) {
      const t = this.replica.computeShardTensors(phase, shard);
      const old = this.tensors.get(shard.shardId);
      if (old) disposeShardTensors(old);
      this.tensors.set(shard.shardId, t);
    } else {
      this.results.set(shard.shardId, this.replica.computeShard(phase, shard));
    }
  }

  /** The block's raw value (before the wire's rounding) and its statistics (float64 over the same tree); frees what it held. */
  take(): { gradient: Float32Array; stats: BlockStats } {
    const { shards, block } = this;
    try {
      if (this.inBackend) {
        const gradient = this.replica.blockSum(shards, block, (id) => this.tensors.get(id)!.grads);
        return { gradient, stats: blockStats(shards, block, (lo, size) => (size === 1 ? this.tensors.get(lo) : undefined)) };
      }
      const gradient = blockRawSum(shards, block, (id) => this.results.get(id)!.gradient, this.q);
      return { gradient, stats: blockStats(shards, block, (lo, size) => (size === 1 ? this.results.get(lo) : undefined)) };
    } finally {
      this.dispose();
    }
  }

  /** Frees the shards' tensors (idempotent). */
  dispose(): void {
    for (const t of this.tensors.values()) disposeShardTensors(t);
    this.tensors.clear();
    this.results.clear();
  }
}
