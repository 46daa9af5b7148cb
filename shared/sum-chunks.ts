/**
 * Sums up the relay tree in element ranges (docs/performance.md "Relay tree"). The tree sum of
 * shared/tree-sum.ts is elementwise: element i of a node is a function of element i of its
 * leaves only. So a block's flat gradient can travel as ranges [k·C, (k+1)·C) (C = the tree
 * message's sumChunk), a relay can add range k of its children's sums and its own as soon as all
 * of them have range k, and forward it at once: the way up then costs about one copy plus one
 * range per level instead of one copy per level (store-and-forward).
 *
 * Why the ranges give the same bits as whole sums: fp32 addition is elementwise, and the fp16
 * wire's rounding (shared/float16.ts) scales blocks of HALF_BLOCK consecutive values from the
 * start of the array it encodes. C is a multiple of HALF_BLOCK, so a range's scale blocks are
 * exactly the whole array's blocks k·C/HALF_BLOCK .. and q(range of x) = range of q(x): every
 * value is rounded once, in the same block, as in the store-and-forward path.
 *
 * SumAssembly is the coordinator's side: it puts the ranges of each block back together. A block
 * is complete when each of its ranges is known, either as received or as the tree value of
 * blocks inside it whose same range was received (after a relay's bounded wait its ranges may
 * have been forwarded with different covers; every node is a deterministic function of its
 * leaves, so any cover gives the same bits).
 *
 * Imports nothing Node-only.
 */
import { HALF_BLOCK } from './float16.ts';
import { blockKey, shrinkNode, treeValue, type BlockStats, type Quantizer, type ShardBlock } from './tree-sum.ts';

/**
 * Default values per range (a multiple of HALF_BLOCK): 8192 values are 32 KiB in fp32 (16 KiB in
 * fp16), ~2.6 ms at 100 Mbit/s per level; measured against 2048 and 32768 in docs/performance.md.
 */
export const SUM_CHUNK_VALUES = 8192;

/** Number of ranges of a block of `total` values. */
export function rangeCount(total: number, chunk: number): number {
  return Math.max(1, Math.ceil(total / chunk));
}

/** Whether [offset, offset + length) is range offset/chunk of a block of `total` values. */
export function isRange(offset: number, length: number, total: number, chunk: number): boolean {
  return chunk > 0 && chunk % HALF_BLOCK === 0 && offset >= 0 && offset % chunk === 0 && offset < Math.max(total, 1) && length === Math.min(chunk, total - offset);
}

/** One received range of a block. */
export interface RangePart {
  block: ShardBlock;
  offset: number;
  values: Float32Array;
  stats: BlockStats;
}

interface Assembling {
  block: ShardBlock;
  ranges: (Float32Array | undefined)[];
  stats: BlockStats | null;
  done: boolean;
}

/** The coordinator's reassembly of one phase's sums from their ranges. */
export class SumAssembly {
  private readonly blocks = new Map<string, Assembling>();
  private readonly ranges: number;

  constructor(
    private readonly shards: number,
    private readonly total: number,
    private readonly chunk: number,
    private readonly q: Quantizer,
  ) {
    this.ranges = rangeCount(total, chunk);
  }

  /**
   * Records a range (the caller checked isRange and that the sender may send the block); returns
   * the blocks it completed, whole: this one, or blocks around it whose missing ranges are now
   * all known from blocks inside them.
   */
  add(part: RangePart): { block: ShardBlock; gradient: Float32Array; stats: BlockStats }[] {
    const block = shrinkNode(part.block, this.shards);
    const key = blockKey(block.first, block.count);
    let a = this.blocks.get(key);
    if (!a) this.blocks.set(key, (a = { block, ranges: new Array(this.ranges).fill(undefined), stats: null, done: false }));
    const k = part.offset / this.chunk;
    a.ranges[k] ??= part.values;
    a.stats ??= part.stats;
    const out: { block: ShardBlock; gradient: Float32Array; stats: BlockStats }[] = [];
    // This block, then every unfinished block around it (a range of it may complete one of those).
    for (const other of this.blocks.values()) {
      if (other.done) continue;
      const o = other.block;
      if (!(o.first <= block.first && block.first + block.count <= o.first + o.count)) continue;
      const whole = this.complete(other);
      if (whole) out.push({ block: o, gradient: whole, stats: other.stats! });
    }
    return out;
  }

  private complete(a: Assembling): Float32Array | null {
    const filled: Float32Array[] = [];
    for (let k = 0; k < this.ranges; k++) {
      const v = a.ranges[k] ?? this.derive(a.block, k);
      if (!v) return null;
      filled.push(v);
    }
    a.done = true;
    const gradient = new Float32Array(this.total);
    for (let k = 0; k < this.ranges; k++) gradient.set(filled[k]!, k * this.chunk);
    return gradient;
  }

  /** Range k of `block` from received ranges of blocks strictly inside it, or undefined. */
  private derive(block: ShardBlock, k: number): Float32Array | undefined {
    if (block.count === 1) return undefined;
    const known = (lo: number, size: number): Float32Array | undefined => {
      if (lo === block.first && size === block.count) return undefined;
      const s = shrinkNode({ first: lo, count: size }, this.shards);
      return this.blocks.get(blockKey(s.first, s.count))?.ranges[k];
    };
    try {
      return treeValue(this.shards, block.first, block.count, known, this.q);
    } catch {
      // MISSING_SHARDS: not every path below has this range yet.
      return undefined;
    }
  }
}
