/**
 * The relay tree's pure parts: a relay's combination of its subtree's blocks
 * (worker/sum-combiner.ts) gives the coordinator the same root, bit for bit, as the leaves summed
 * over the fixed tree, for any cover and --wire fp32 / fp16; and weights reassembled from chunks
 * are handed out only when their digest matches the coordinator's head (shared/weights-chunks.ts);
 * the scheduler aligns each top-level subtree's shard range as a whole (PhaseRun alignGroups).
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { decode, encode } from '../shared/codec.ts';
import type { WireFormat } from '../shared/protocol.ts';
import { blockRawSum, blockKey, decomposeRange, planBlocks, quantizerFor, treeAverage, type ShardBlock } from '../shared/tree-sum.ts';
import { PhaseRun, type Assignee } from '../coordinator/phase-run.ts';
import type { PhasePlan } from '../trainer/training-state.ts';
import { chunkFrames, WeightsAssembly } from '../shared/weights-chunks.ts';
import { SumCombiner, type SumEntry } from '../worker/sum-combiner.ts';

const LIMITS = { maxFrameBytes: 1 << 26, maxFloats: 1 << 22 };
const sha256 = (b: Uint8Array) => new Uint8Array(createHash('sha256').update(b).digest());

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => ((x = (x * 1664525 + 1013904223) >>> 0), x / 2 ** 32);
}

/** Leaf gradients with a wide range of magnitudes, so rounding differences would show. */
function leaves(S: number, n: number, seed: number): Float32Array[] {
  const r = rng(seed);
  return Array.from({ length: S }, () => Float32Array.from({ length: n }, () => (r() - 0.5) * 10 ** Math.floor(r() * 6 - 3)));
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');

/** A child's sum for a block, as the wire carries it; returns the entry a relay (or the coordinator) decodes. */
function childSum(S: number, block: ShardBlock, leaf: Float32Array[], wire: WireFormat): SumEntry {
  const q = quantizerFor(wire);
  const raw = blockRawSum(S, block, (id) => leaf[id]!, q);
  const frame = encode({ type: 'sum', iteration: 3, phase: 'D', dStep: 0, shardCount: S, firstShard: block.first, count: block.count, gradient: raw, stats: { loss: 1, dReal: 0.5, dFake: 0.25 } }, { wire });
  const res = decode(frame, { ...LIMITS, wire });
  if (!res.ok || res.msg.type !== 'sum') throw new Error('sum did not decode');
  return { iteration: 3, phase: 'D', dStep: 0, shardCount: S, block, final: res.msg.gradient, stats: res.msg.stats, frame };
}

const combiners: SumCombiner[] = [];
afterEach(() => {
  for (const c of combiners) c.close();
  combiners.length = 0;
});

describe('SumCombiner', () => {
  for (const wire of ['fp32', 'fp16'] as const) {
    it(`any split of the shards among a relay's children gives the gan-train root, bit for bit (--wire ${wire})`, () => {
      for (const S of [1, 5, 6, 8, 13]) {
        const leaf = leaves(S, 300, S * 7 + (wire === 'fp16' ? 1 : 0));
        const q = quantizerFor(wire);
        // The reference: every leaf on its own (the single-process trainer's tree).
        const expected = bits(treeAverage(S, (lo, size) => (size === 1 && lo < S ? (q ? q(leaf[lo]!) : leaf[lo]!) : undefined), q));
        const r = rng(S);
        for (let trial = 0; trial < 8; trial++) {
          // Random contiguous ranges for the children, each decomposed into aligned blocks.
          const cuts = [0];
          while (cuts[cuts.length - 1]! < S) cuts.push(Math.min(S, cuts[cuts.length - 1]! + 1 + Math.floor(r() * 4)));
          const blocks = cuts.slice(1).flatMap((b, i) => decomposeRange(cuts[i]!, b, S));
          const up: Uint8Array[] = [];
          const c = new SumCombiner(wire, { up: (f) => up.push(f), hasChildren: () => true, timedOut: () => {} });
          combiners.push(c);
          c.expect({ type: 'relay-expect', protocol: 2, iteration: 3, phase: 'D', dStep: 0, shardCount: S, shards: Int32Array.from({ length: S }, (_, i) => i), waitMs: 60_000 });
          // In a random order, one block twice (a duplicate after a re-parenting).
          const order = [...blocks].sort(() => r() - 0.5);
          order.push(order[0]!);
          for (const b of order) c.add(childSum(S, b, leaf, wire));
          expect(up.length).toBeGreaterThan(0);
          // What the coordinator decodes and sums.
          const known = new Map<string, Float32Array>();
          for (const f of up) {
            const res = decode(f, { ...LIMITS, wire });
            if (!res.ok || res.msg.type !== 'sum') throw new Error('bad frame up');
            known.set(blockKey(res.msg.firstShard, res.msg.count), res.msg.gradient);
          }
          // The cover of [0, S) is one node (the root), whatever the split.
          expect(up.length).toBe(1);
          expect(bits(treeAverage(S, (lo, size) => known.get(blockKey(lo, size)), q))).toBe(expected);
        }
      }
    });
  }

  it('forwards a childless worker\'s block at once, verbatim; after the wait, a partial cover', async () => {
    const S = 8;
    const leaf = leaves(S, 10, 3);
    const up: Uint8Array[] = [];
    const timeouts: number[] = [];
    const leafWorker = new SumCombiner('fp32', { up: (f) => up.push(f), hasChildren: () => false, timedOut: () => {} });
    combiners.push(leafWorker);
    const e = childSum(S, { first: 4, count: 4 }, leaf, 'fp32');
    leafWorker.add(e);
    expect(up).toEqual([e.frame]);

    const relay = new SumCombiner('fp32', { up: (f) => up.push(f), hasChildren: () => true, timedOut: (i) => timeouts.push(i.missing) });
    combiners.push(relay);
    relay.expect({ type: 'relay-expect', protocol: 2, iteration: 3, phase: 'D', dStep: 0, shardCount: S, shards: Int32Array.from([0, 1, 2, 3, 4, 5]), waitMs: 50 });
    relay.add(childSum(S, { first: 0, count: 2 }, leaf, 'fp32'));
    relay.add(childSum(S, { first: 2, count: 2 }, leaf, 'fp32'));
    expect(up).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 150));
    expect(timeouts).toEqual([2]);
    expect(up).toHaveLength(2);
    const res = decode(up[1]!, LIMITS);
    expect(res.ok && res.msg.type === 'sum' && [res.msg.firstShard, res.msg.count]).toEqual([0, 4]);
    // Late blocks go up one by one.
    relay.add(childSum(S, { first: 4, count: 2 }, leaf, 'fp32'));
    expect(up).toHaveLength(3);
  });
});

describe('WeightsAssembly', () => {
  const weights = Float32Array.from({ length: 70_000 }, (_, i) => Math.sin(i));
  const frame = encode({ type: 'weights', net: 'G', version: 7, weights });
  const head = { type: 'weights-head' as const, protocol: 2, net: 'G' as const, version: 7, bytes: frame.byteLength, sha256: sha256(frame) };
  const chunks = chunkFrames(frame, 'G', 7, 64 * 1024).map((f) => {
    const res = decode(f, LIMITS);
    if (!res.ok || res.msg.type !== 'weights-chunk') throw new Error('chunk did not decode');
    return { msg: res.msg, frame: f };
  });

  it('hands out the frame once the chunks and the head are in, in either order', () => {
    expect(chunks.length).toBeGreaterThan(3);
    const a = new WeightsAssembly(sha256);
    for (const c of chunks) expect(a.chunk(c.msg, c.frame)).toBeNull();
    const done = a.head(head);
    expect(done?.ok).toBe(true);
    expect(Buffer.compare(Buffer.from(done!.ok ? done!.frame : []), Buffer.from(frame))).toBe(0);
    expect(a.replay()).toHaveLength(chunks.length);

    const b = new WeightsAssembly(sha256);
    expect(b.head(head)).toBeNull();
    const outs = chunks.map((c) => b.chunk(c.msg, c.frame));
    expect(outs.slice(0, -1).every((o) => o === null)).toBe(true);
    expect(outs[outs.length - 1]?.ok).toBe(true);
    // A replay of the same version is not handed out twice.
    expect(b.chunk(chunks[0]!.msg, chunks[0]!.frame)).toBeNull();
  });

  it('refuses a frame whose bytes a relay altered (digest mismatch)', () => {
    const a = new WeightsAssembly(sha256);
    a.head(head);
    let out = null;
    for (const [i, c] of chunks.entries()) {
      const data = new Uint8Array(c.msg.data);
      if (i === 1) data[10] ^= 0x40;
      out = a.chunk({ ...c.msg, data }, c.frame);
    }
    expect(out?.ok).toBe(false);
    expect(out && !out.ok && out.reason).toMatch(/SHA-256/);
  });
});

describe('PhaseRun with relay groups', () => {
  const plan = (shards: number): PhasePlan => ({
    iteration: 3,
    phase: 'D',
    dStep: 0,
    shards: Array.from({ length: shards }, (_, s) => ({ shardId: s, seed: 1000 + s, rows: 8 })),
    samplerBefore: { epoch: 0, cursor: 0, batches: 0 },
  });
  interface W extends Assignee {
    group: number;
  }
  const mk = (sessionId: number, msPerShard: number, group: number): W => ({ sessionId, msPerShard, group, measured: true });

  /** Aligned nodes covering each group's shards: what the group's relay forwards to the coordinator. */
  const groupCover = (S: number, workers: W[], grouped: boolean): number => {
    const run = new PhaseRun<W>(plan(S), { factor: 3, minMs: 1000 });
    const out = run.assignUnassigned(workers, 0, grouped ? (w) => w.group : undefined);
    expect(out.flatMap((a) => a.shardIds).sort((a, b) => a - b)).toEqual(Array.from({ length: S }, (_, i) => i));
    let nodes = 0;
    for (const g of new Set(workers.map((w) => w.group))) {
      const ids = out.filter((a) => a.worker.group === g).flatMap((a) => a.shardIds).sort((a, b) => a - b);
      if (ids.length > 0) nodes += planBlocks(ids, S).length;
    }
    return nodes;
  };

  it('aligns each top-level subtree\'s range as a whole: fewer nodes reach the coordinator, never more', () => {
    // Three subtrees (the middle one of two workers): 5 nodes with per-worker alignment only, 4 by groups.
    const example = [mk(1, 2, 0), mk(2, 2, 1), mk(3, 1, 1), mk(4, 2, 2)];
    expect(groupCover(8, example, false)).toBe(5);
    expect(groupCover(8, example, true)).toBe(4);
    let x = 7;
    const r = () => ((x = (x * 1103515245 + 12345) % 2 ** 31), x / 2 ** 31);
    let better = 0;
    for (let t = 0; t < 400; t++) {
      const S = r() < 0.5 ? 8 : 16;
      let g = 0;
      const workers = Array.from({ length: 2 + Math.floor(r() * 5) }, (_, i) => mk(i + 1, 1 + Math.floor(r() * 3), i > 0 && r() < 0.5 ? ++g : g));
      const [a, b] = [groupCover(S, workers, false), groupCover(S, workers, true)];
      expect(b).toBeLessThanOrEqual(a);
      if (b < a) better++;
    }
    expect(better).toBeGreaterThan(0);
  });

  it('leaves the split alone when the groups are not contiguous in the order given', () => {
    const workers = [mk(1, 1, 1), mk(2, 1, 2), mk(3, 1, 1)];
    const run = new PhaseRun<W>(plan(6), { factor: 3, minMs: 1000 });
    const out = run.assignUnassigned(workers, 0, (w) => w.group);
    expect(out.flatMap((a) => a.shardIds).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});
