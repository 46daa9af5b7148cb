/**
 * The phase's gradient sum as a fixed binary tree over shard indices, so it does not depend on
 * who added which shard (float addition is not associative; a fixed tree makes the grouping part
 * of the definition).
 *
 * For S shards let P be the smallest power of two >= S. Every node of the complete binary tree
 * over [0, P) is an aligned block [lo, lo + size) (size a power of two, lo a multiple of size);
 * its shards are the block clipped to [0, S). Its value is:
 *  - a leaf (size 1): q(gradient of shard lo);
 *  - an internal node whose right half is empty (lo + size/2 >= S): its left child's value, with
 *    no operation (the node IS that child);
 *  - otherwise q(f32(left + right)) elementwise (float32 addition, one rounding per element).
 * q is the identity with --wire fp32 and the wire's fp16 rounding (shared/float16.ts,
 * roundTripHalf) with --wire fp16. Because a node's raw value (before q) is what a worker sends
 * for a block and the wire applies q on the way, the coordinator decodes exactly the node's
 * value: q is applied once per node, in the same place, whoever computes it. The phase's average
 * is f32(root / S).
 *
 * Every node is a deterministic function of its leaves, so ANY cover of [0, S) by aligned blocks
 * whose values are known gives the same root, bit for bit: workers may send one partial sum per
 * aligned block they hold, duplicates and re-runs included. This module is the ONE
 * implementation of that tree: the worker (sums of its blocks), the coordinator (the root from
 * the blocks it accepted) and the single-process trainer (the reference) all call it.
 *
 * The statistics (loss, D(x), D(G(z))) are summed over the same tree in float64, so the logged
 * means do not depend on the grouping either.
 */
import { GanError } from './errors.ts';
import { roundTripHalf } from './float16.ts';

/** A block of shards: the aligned node [first, first + count) of the tree (clipped to [0, S)). */
export interface ShardBlock {
  first: number;
  count: number;
}

/** Per-block sums of the per-shard statistics. */
export interface BlockStats {
  loss: number;
  dReal: number;
  dFake: number;
}

/** The rounding a node's value gets when it travels or is combined: identity (fp32) or the fp16 wire rounding. */
export type Quantizer = ((x: Float32Array) => Float32Array) | null;

export function quantizerFor(wire: string | undefined): Quantizer {
  return wire === 'fp16' ? roundTripHalf : null;
}

/** Smallest power of two >= S (S >= 1). */
export function treeSize(shards: number): number {
  let p = 1;
  while (p < shards) p *= 2;
  return p;
}

const isPow2 = (n: number): boolean => Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;

/** Whether [first, first + count) is a node of the tree over S shards with at least one shard. */
export function isAlignedBlock(first: number, count: number, shards: number): boolean {
  return Number.isInteger(first) && first >= 0 && first < shards && isPow2(count) && count <= treeSize(shards) && first % count === 0;
}

/** The shards of a block: [first, min(first + count, S)). */
export function blockShards(block: ShardBlock, shards: number): number[] {
  const out: number[] = [];
  for (let s = block.first; s < Math.min(block.first + block.count, shards); s++) out.push(s);
  return out;
}

/**
 * The fewest aligned blocks covering exactly the contiguous shards [a, b) (0 <= a < b <= S), in
 * order: at most 2 log2(P) of them. A block may reach past S when b = S (its shards are clipped).
 */
export function decomposeRange(a: number, b: number, shards: number): ShardBlock[] {
  const p = treeSize(shards);
  const out: ShardBlock[] = [];
  let lo = a;
  while (lo < b) {
    let size = 1;
    while (size * 2 <= p && lo % (size * 2) === 0 && (lo + size * 2 <= b || b === shards)) size *= 2;
    out.push({ first: lo, count: size });
    lo = Math.min(lo + size, b);
  }
  return out;
}

/**
 * Blocks for an ordered list of distinct shard ids: each maximal run of consecutive ids is
 * decomposed into aligned blocks; ids in `singles` are always blocks of their own.
 */
export function planBlocks(shardIds: readonly number[], shards: number, singles: ReadonlySet<number> = new Set()): ShardBlock[] {
  const out: ShardBlock[] = [];
  let i = 0;
  while (i < shardIds.length) {
    const start = shardIds[i];
    if (singles.has(start)) {
      out.push({ first: start, count: 1 });
      i++;
      continue;
    }
    let j = i + 1;
    while (j < shardIds.length && shardIds[j] === shardIds[j - 1] + 1 && !singles.has(shardIds[j])) j++;
    out.push(...decomposeRange(start, shardIds[j - 1] + 1, shards));
    i = j;
  }
  return out;
}

/**
 * The tree's shape, once: the value of node [lo, lo + size) from `known` (values of nodes given
 * outright, e.g. leaves or blocks received) and `combine` (the two-children operation). A node
 * whose right half is empty is its left child; a node known outright is not looked into.
 */
export function reduceNode<T>(shards: number, lo: number, size: number, known: (lo: number, size: number) => T | undefined, combine: (left: T, right: T) => T): T {
  const v = known(lo, size);
  if (v !== undefined) return v;
  if (size === 1 || lo >= shards) throw new GanError('MISSING_SHARDS', `no value for shard block [${lo}, ${lo + size}) of ${shards}`);
  const half = size / 2;
  const left = reduceNode(shards, lo, half, known, combine);
  if (lo + half >= shards) return left;
  return combine(left, reduceNode(shards, lo + half, half, known, combine));
}

/** A node value and whether the reduction allocated it (so it may be overwritten). */
interface Owned {
  v: Float32Array;
  owned: boolean;
}

function addInto(l: Owned, r: Owned, q: Quantizer, raw: boolean): Owned {
  const len = l.v.length;
  if (r.v.length !== len) throw new GanError('GRADIENT_SIZE_MISMATCH', `shard block gradients have ${l.v.length} and ${r.v.length} values`);
  const out = l.owned ? l.v : r.owned ? r.v : new Float32Array(len);
  const a = l.v;
  const b = r.v;
  for (let i = 0; i < len; i++) out[i] = a[i] + b[i];
  return { v: q && !raw ? q(out) : out, owned: true };
}

/**
 * Final (q-applied) value of node [lo, lo + size) given final values of some nodes. Blocks
 * given may overlap (one nested in another): the outermost known node on each path is used.
 */
export function treeValue(shards: number, lo: number, size: number, known: (lo: number, size: number) => Float32Array | undefined, q: Quantizer): Float32Array {
  const wrap = (a: number, s: number): Owned | undefined => {
    const v = known(a, s);
    return v ? { v, owned: false } : undefined;
  };
  return reduceNode<Owned>(shards, lo, size, wrap, (l, r) => addInto(l, r, q, false)).v;
}

/**
 * A node as small as it can be written: a node whose right half lies past the last shard IS its
 * left child (no operation), so [lo, lo + size) shrinks until its right half holds a shard.
 */
export function shrinkNode(block: ShardBlock, shards: number): ShardBlock {
  let { first, count } = block;
  while (count > 1 && first + count / 2 >= shards) count /= 2;
  return { first, count };
}

/**
 * What a worker sends for a block it computed (before the wire's rounding): the block's raw
 * value, from the raw gradients of its shards. A single-shard block (or one clipped to a single
 * shard) is the raw gradient itself; otherwise the float32 sum of its two children's final
 * values. The wire then applies q, so the coordinator decodes the node's final value.
 */
export function blockRawSum(shards: number, block: ShardBlock, leaf: (shardId: number) => Float32Array, q: Quantizer): Float32Array {
  if (!isAlignedBlock(block.first, block.count, shards)) throw new GanError('BAD_BLOCK', `[${block.first}, ${block.first + block.count}) is not an aligned block of ${shards} shards`);
  const { first: lo, count: size } = shrinkNode(block, shards);
  if (size === 1) return leaf(lo);
  const known = (a: number, s: number): Float32Array | undefined => (s === 1 ? (q ? q(leaf(a)) : leaf(a)) : undefined);
  const half = size / 2;
  const l = { v: treeValue(shards, lo, half, known, q), owned: false };
  const r = { v: treeValue(shards, lo + half, half, known, q), owned: false };
  // Overwrite an intermediate the reduction allocated, never a leaf the caller still holds.
  l.owned = half > 1 || q !== null;
  r.owned = !l.owned && (half > 1 || q !== null);
  return addInto(l, r, q, true).v;
}

/**
 * What a relay sends for a node it combined from blocks of its subtree: the node's raw value
 * (before the wire's rounding) from the FINAL values of aligned blocks inside it (`known`, as
 * decoded from children's sums, or q(raw) of the relay's own blocks): a node clipped to one known
 * block is that block's value; otherwise the float32 sum of its two children's final values.
 * The same tree as blockRawSum, so the coordinator decodes exactly the node's value whoever combined it.
 * A node that IS one known block returns that final value: forward the block's own frame instead
 * of re-encoding it (the wire would round it a second time).
 */
export function nodeRawSum(shards: number, block: ShardBlock, known: (lo: number, size: number) => Float32Array | undefined, q: Quantizer): Float32Array {
  if (!isAlignedBlock(block.first, block.count, shards)) throw new GanError('BAD_BLOCK', `[${block.first}, ${block.first + block.count}) is not an aligned block of ${shards} shards`);
  const { first: lo, count: size } = shrinkNode(block, shards);
  const whole = known(lo, size);
  if (whole) return whole;
  if (size === 1) throw new GanError('MISSING_SHARDS', `no value for shard ${lo} of ${shards}`);
  const half = size / 2;
  // treeValue may return a known block's own array: the sum goes into a fresh one.
  const l = treeValue(shards, lo, half, known, q);
  const r = treeValue(shards, lo + half, half, known, q);
  return addInto({ v: l, owned: false }, { v: r, owned: false }, q, true).v;
}

/** Final value of a block from the raw gradients of its shards: q(blockRawSum). */
export function blockFinalSum(shards: number, block: ShardBlock, leaf: (shardId: number) => Float32Array, q: Quantizer): Float32Array {
  const raw = blockRawSum(shards, block, leaf, q);
  return q ? q(raw) : raw;
}

/** Per-block statistics over the same tree (float64 sums). */
export function blockStats(shards: number, block: ShardBlock, known: (lo: number, size: number) => BlockStats | undefined): BlockStats {
  return reduceNode<BlockStats>(shards, block.first, block.count, known, (l, r) => ({ loss: l.loss + r.loss, dReal: l.dReal + r.dReal, dFake: l.dFake + r.dFake }));
}

/**
 * The phase average from accepted blocks (final values, as decoded): f32(root / S), where root
 * is the tree's value; blocks may overlap. Writes into `out` when given (reused phase to phase).
 */
export function treeAverage(shards: number, known: (lo: number, size: number) => Float32Array | undefined, q: Quantizer, out?: Float32Array): Float32Array {
  // The root is the node [0, size) below which the tree stops being its own left child.
  let size = treeSize(shards);
  while (size > 1 && size / 2 >= shards && known(0, size) === undefined) size /= 2;
  if (q === null && size > 1 && known(0, size) === undefined) {
    // The root's addition and the division in one pass, into `out`: f32(f32(l + r) / S), the
    // same two roundings as storing the root and then dividing it, without a root buffer (with
    // 2 workers the coordinator's only addition).
    const l = treeValue(shards, 0, size / 2, known, q);
    const r = treeValue(shards, size / 2, size / 2, known, q);
    if (r.length !== l.length) throw new GanError('GRADIENT_SIZE_MISMATCH', `shard block gradients have ${l.length} and ${r.length} values`);
    const avg = out && out.length === l.length ? out : new Float32Array(l.length);
    const n = l.length;
    if (isPow2(shards)) {
      const inv = 1 / shards;
      for (let i = 0; i < n; i++) avg[i] = Math.fround(l[i] + r[i]) * inv;
    } else {
      for (let i = 0; i < n; i++) avg[i] = Math.fround(l[i] + r[i]) / shards;
    }
    return avg;
  }
  const root = treeValue(shards, 0, size, known, q);
  const avg = out && out.length === root.length ? out : new Float32Array(root.length);
  const n = root.length;
  if (isPow2(shards)) {
    // x / 2^k and x * 2^-k are the same real number (a float32 in float64 never underflows
    // there), so they round to the same float32; the multiplication is several times cheaper.
    const inv = 1 / shards;
    for (let i = 0; i < n; i++) avg[i] = root[i] * inv;
  } else {
    for (let i = 0; i < n; i++) avg[i] = root[i] / shards;
  }
  return avg;
}

/** Sum of the statistics of the whole phase from accepted blocks (float64 over the tree). */
export function treeStats(shards: number, known: (lo: number, size: number) => BlockStats | undefined): BlockStats {
  return blockStats(shards, { first: 0, count: treeSize(shards) }, known);
}

/** Map key for a block. */
export const blockKey = (first: number, count: number): string => `${first}+${count}`;
