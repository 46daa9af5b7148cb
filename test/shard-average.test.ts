/**
 * The phase's gradient sum over a fixed pairwise tree of shard indices (shared/tree-sum.ts).
 * Bit-identity across worker counts, failures and duplication rests on one property: ANY cover
 * of [0, S) by aligned blocks, each block summed by whoever held it (blockRawSum, then the wire's
 * rounding), gives the same root bit for bit. It is checked here against the definition written
 * out independently, for fp32 and for the fp16 wire's rounding.
 */
import { describe, expect, it } from 'vitest';
import { roundTripHalf } from '../shared/float16.ts';
import { uniformSource } from '../shared/rng.ts';
import { averageShardGradients } from '../trainer/training-state.ts';
import { blockFinalSum, blockKey, blockRawSum, blockShards, decomposeRange, isAlignedBlock, planBlocks, treeAverage, treeSize, treeStats, type Quantizer, type ShardBlock } from '../shared/tree-sum.ts';

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Values over many magnitudes plus signed zeros, subnormals, extremes: where rounding differences show. */
function gradients(shards: number, len: number, seed: number): Float32Array[] {
  const r = uniformSource(seed);
  const special = [0, -0, 1e-45, -1e-45, 1.17e-38, 1e30, -1e30, 1, -1];
  return Array.from({ length: shards }, () => Float32Array.from({ length: len }, () => (r() < 0.05 ? special[Math.floor(r() * special.length)]! : (r() - 0.5) * 10 ** Math.floor(r() * 12 - 8))));
}

/** The definition, written out: node(lo, size) over [0, S) with q on leaves and on every two-child sum. */
function definition(g: Float32Array[], q: Quantizer): Float32Array {
  const S = g.length;
  const Q = (x: Float32Array) => (q ? q(x) : x);
  const node = (lo: number, size: number): Float32Array => {
    if (size === 1) return Q(g[lo]!.slice());
    const l = node(lo, size / 2);
    if (lo + size / 2 >= S) return l;
    const r = node(lo + size / 2, size / 2);
    return Q(Float32Array.from(l, (v, i) => Math.fround(v + r[i]!)));
  };
  let p = 1;
  while (p < S) p *= 2;
  const root = node(0, p);
  return Float32Array.from(root, (v) => Math.fround(v / S));
}

/** A random cover of [0, S) by aligned blocks (nested splits), optionally with overlapping extras. */
function randomCover(S: number, r: () => number, overlap: boolean): ShardBlock[] {
  const out: ShardBlock[] = [];
  const walk = (lo: number, size: number) => {
    if (lo >= S) return;
    if (size === 1 || r() < 0.4) out.push({ first: lo, count: size });
    else {
      walk(lo, size / 2);
      walk(lo + size / 2, size / 2);
    }
  };
  walk(0, treeSize(S));
  if (overlap) {
    // Duplicated shards and re-run blocks: extra nodes that overlap the cover.
    for (let k = 0; k < 3; k++) {
      const size = 2 ** Math.floor(r() * Math.log2(treeSize(S)) + 0.5);
      const first = Math.floor((r() * S) / size) * size;
      if (first < S) out.push({ first, count: size });
    }
  }
  return out;
}

/** The average a coordinator applies from blocks each summed by a worker and sent through the wire (q). */
function viaBlocks(g: Float32Array[], cover: ShardBlock[], q: Quantizer): Float32Array {
  const S = g.length;
  const known = new Map<string, Float32Array>();
  for (const b of cover) {
    const raw = blockRawSum(S, b, (s) => g[s]!, q);
    known.set(blockKey(b.first, b.count), q ? q(raw) : raw);
  }
  return treeAverage(S, (lo, size) => known.get(blockKey(lo, size)), q);
}

describe('tree sum over shard indices', () => {
  for (const [name, q] of [['fp32', null], ['fp16', roundTripHalf]] as const) {
    it(`any cover of aligned blocks gives the definition's average bit for bit (${name}; S = 1, 3, 4, 6, 8, 64)`, () => {
      const r = uniformSource(7);
      for (const S of [1, 3, 4, 6, 8, 64]) {
        const g = gradients(S, 300, S * 31 + 1);
        const snapshot = g.map((x) => x.slice());
        const want = bits(definition(g, q));
        // One process (gan-train): the leaves as final values.
        const leaves = q ? g.map((x) => q(x)) : g;
        expect(bits(averageShardGradients(leaves, q)).equals(want), `gan-train S=${S}`).toBe(true);
        // One worker holding everything, one block per shard, and many random groupings.
        const covers: ShardBlock[][] = [[{ first: 0, count: treeSize(S) }], Array.from({ length: S }, (_, s) => ({ first: s, count: 1 })), decomposeRange(0, S, S)];
        for (let k = 0; k < 30; k++) covers.push(randomCover(S, r, k % 2 === 1));
        for (const cover of covers) {
          expect(bits(viaBlocks(g, cover, q)).equals(want), `S=${S} cover ${JSON.stringify(cover)}`).toBe(true);
        }
        // Nothing summed in place into a caller's gradient.
        g.forEach((x, s) => expect(bits(x).equals(bits(snapshot[s]!))).toBe(true));
      }
    }, 60_000);
  }

  it('blockFinalSum of a block = the definition on its shards (a partial sum is a node of the tree)', () => {
    const g = gradients(6, 50, 3);
    const raw4 = blockFinalSum(6, { first: 4, count: 4 }, (s) => g[s]!, null);
    const raw2 = blockFinalSum(6, { first: 4, count: 2 }, (s) => g[s]!, null);
    expect(bits(raw4).equals(bits(raw2))).toBe(true);
    expect(bits(blockFinalSum(5, { first: 4, count: 4 }, (s) => g[s]!, null)).equals(bits(g[4]!))).toBe(true);
  });

  it('statistics are float64 sums over the same tree, whatever the cover', () => {
    const S = 6;
    const stats = Array.from({ length: S }, (_, s) => ({ loss: 0.1 * (s + 1) + 1e-17, dReal: 1 / (s + 3), dFake: -s / 7 }));
    const leaf = (lo: number, size: number) => (size === 1 ? stats[lo] : undefined);
    const want = treeStats(S, leaf);
    const a = treeStats(S, (lo, size) => (size === 4 && lo === 0 ? treeStats(4, leaf) : lo === 4 && size === 2 ? { loss: stats[4]!.loss + stats[5]!.loss, dReal: stats[4]!.dReal + stats[5]!.dReal, dFake: stats[4]!.dFake + stats[5]!.dFake } : undefined));
    expect(a).toEqual(want);
  });

  it('decomposeRange and planBlocks: aligned blocks covering exactly the shards, in order, at most 2 log2(P)', () => {
    for (const S of [1, 3, 4, 6, 8, 13, 64]) {
      const logP = Math.log2(treeSize(S));
      for (let a = 0; a < S; a++) {
        for (let b = a + 1; b <= S; b++) {
          const blocks = decomposeRange(a, b, S);
          for (const bl of blocks) expect(isAlignedBlock(bl.first, bl.count, S)).toBe(true);
          expect(blocks.flatMap((bl) => blockShards(bl, S))).toEqual(Array.from({ length: b - a }, (_, i) => a + i));
          expect(blocks.length).toBeLessThanOrEqual(Math.max(1, 2 * logP));
        }
      }
      expect(decomposeRange(0, S, S)).toEqual([{ first: 0, count: treeSize(S) }]);
    }
    expect(planBlocks([2, 3, 4, 5, 6, 7], 8, new Set([5]))).toEqual([{ first: 2, count: 2 }, { first: 4, count: 1 }, { first: 5, count: 1 }, { first: 6, count: 2 }]);
    expect(planBlocks([0, 1, 3], 4)).toEqual([{ first: 0, count: 2 }, { first: 3, count: 1 }]);
    expect(isAlignedBlock(4, 4, 6)).toBe(true);
    expect(isAlignedBlock(6, 2, 6)).toBe(false);
    expect(isAlignedBlock(2, 4, 8)).toBe(false);
    expect(isAlignedBlock(0, 16, 8)).toBe(false);
  });

  it('refuses to average nothing, and a missing shard', () => {
    expect(() => averageShardGradients([])).toThrow(/zero shard gradients/);
    expect(() => treeAverage(3, (lo, size) => (size === 1 && lo !== 1 ? new Float32Array(2) : undefined), null)).toThrow(/no value for shard block \[1, 2\)/);
  });
});
