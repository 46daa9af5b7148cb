/**
 * The relay tree's pure parts: a relay's combination of its subtree's blocks, range by range
 * (worker/sum-combiner.ts), and the coordinator's reassembly of the ranges (shared/sum-chunks.ts)
 * give the same root, bit for bit, as the leaves summed over the fixed tree, for any cover, any
 * split into ranges, any arrival order and --wire fp32 / fp16; and weights reassembled from chunks
 * are handed out only when their digest matches the coordinator's head (shared/weights-chunks.ts);
 * the scheduler aligns each top-level subtree's shard range as a whole (PhaseRun alignGroups).
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { decode, encode } from '../shared/codec.ts';
import type { WireFormat } from '../shared/protocol.ts';
import { isRange, SUM_CHUNK_VALUES, SumAssembly } from '../shared/sum-chunks.ts';
import { blockRawSum, blockKey, decomposeRange, planBlocks, quantizerFor, treeAverage, type ShardBlock } from '../shared/tree-sum.ts';
import { PhaseRun, type Assignee } from '../coordinator/phase-run.ts';
import type { PhasePlan } from '../trainer/training-state.ts';
import { chunkFrames, RELAY_CHUNK_BYTES, WeightsAssembly } from '../shared/weights-chunks.ts';
import { relayTuning } from '../coordinator/relay-tree.ts';
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

/** A child's sum for a block, as the wire carries it, range by range; the entries a relay decodes. */
function childSums(S: number, block: ShardBlock, leaf: Float32Array[], wire: WireFormat, chunk: number): SumEntry[] {
  const q = quantizerFor(wire);
  const raw = blockRawSum(S, block, (id) => leaf[id]!, q);
  const out: SumEntry[] = [];
  for (let offset = 0; offset < raw.length; offset += chunk) {
    const frame = encode({ type: 'sum', iteration: 3, phase: 'D', dStep: 0, shardCount: S, firstShard: block.first, count: block.count, gradient: raw.subarray(offset, offset + chunk), offset, total: raw.length, stats: { loss: 1, dReal: 0.5, dFake: 0.25 } }, { wire });
    out.push(entryOf(frame, wire));
  }
  return out;
}

/** What a relay (or the coordinator) makes of a sum frame. */
function entryOf(frame: Uint8Array, wire: WireFormat): SumEntry {
  const res = decode(frame, { ...LIMITS, wire });
  if (!res.ok || res.msg.type !== 'sum') throw new Error('sum did not decode');
  const m = res.msg;
  return { iteration: m.iteration, phase: m.phase, dStep: m.dStep, shardCount: m.shardCount, block: { first: m.firstShard, count: m.count }, offset: m.offset, total: m.total, final: m.gradient, stats: m.stats, frame };
}

/** The coordinator's side: ranges into whole blocks (SumAssembly), then the phase average over what completed. */
function coordinatorAverage(S: number, frames: Uint8Array[], wire: WireFormat, total: number, chunk: number): string | null {
  const q = quantizerFor(wire);
  const asm = new SumAssembly(S, total, chunk, q);
  const known = new Map<string, Float32Array>();
  for (const f of frames) {
    const e = entryOf(f, wire);
    expect(isRange(e.offset, e.final.length, e.total, chunk)).toBe(true);
    for (const w of asm.add({ block: e.block, offset: e.offset, values: e.final, stats: e.stats })) if (!known.has(blockKey(w.block.first, w.block.count))) known.set(blockKey(w.block.first, w.block.count), w.gradient);
  }
  try {
    // The lookup TrainingState.applyBlocks makes.
    return bits(treeAverage(S, (lo, size) => known.get(blockKey(lo, size)), q));
  } catch {
    return null;
  }
}

/** The single-process trainer's root: every leaf on its own over the fixed tree. */
function reference(S: number, leaf: Float32Array[], wire: WireFormat): string {
  const q = quantizerFor(wire);
  return bits(treeAverage(S, (lo, size) => (size === 1 && lo < S ? (q ? q(leaf[lo]!) : leaf[lo]!) : undefined), q));
}

function shuffle<T>(xs: T[], r: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

const expectAll = (S: number, shards: number[] = Array.from({ length: S }, (_, i) => i), waitMs = 60_000) => ({ type: 'relay-expect' as const, protocol: 2, iteration: 3, phase: 'D' as const, dStep: 0, shardCount: S, shards: Int32Array.from(shards), waitMs });

const combiners: SumCombiner[] = [];
afterEach(() => {
  for (const c of combiners) c.close();
  combiners.length = 0;
  vi.useRealTimers();
});

describe('SumCombiner', () => {
  for (const wire of ['fp32', 'fp16'] as const) {
    it(`any split of the shards among a relay's children, ranges in any order, gives the gan-train root, bit for bit (--wire ${wire})`, () => {
      for (const S of [1, 5, 6, 8, 13]) {
        const n = 1000;
        const leaf = leaves(S, n, S * 7 + (wire === 'fp16' ? 1 : 0));
        const expected = reference(S, leaf, wire);
        const r = rng(S);
        for (let trial = 0; trial < 8; trial++) {
          const chunk = 256 * (1 + Math.floor(r() * 4));
          // Random contiguous ranges for the children, each decomposed into aligned blocks.
          const cuts = [0];
          while (cuts[cuts.length - 1]! < S) cuts.push(Math.min(S, cuts[cuts.length - 1]! + 1 + Math.floor(r() * 4)));
          const blocks = cuts.slice(1).flatMap((b, i) => decomposeRange(cuts[i]!, b, S));
          const up: Uint8Array[] = [];
          const c = new SumCombiner(wire, { up: (f) => up.push(f), hasChildren: () => true, chunk: () => chunk, timedOut: () => {} });
          combiners.push(c);
          c.expect(expectAll(S));
          // Every range of every block in a random order, one block twice (a duplicate after a re-parenting).
          const entries = shuffle(blocks.flatMap((b) => childSums(S, b, leaf, wire, chunk)), r);
          entries.push(...childSums(S, blocks[0]!, leaf, wire, chunk));
          for (const e of entries) c.add(e);
          // The cover of [0, S) is one node (the root) per range, whatever the split and order.
          expect(up.length).toBe(Math.ceil(n / chunk));
          expect(coordinatorAverage(S, up, wire, n, chunk)).toBe(expected);
        }
      }
    });

    it(`a tree of relays, every range forwarded as soon as it is covered, gives the gan-train root, bit for bit (--wire ${wire})`, () => {
      const r = rng(wire === 'fp16' ? 99 : 98);
      for (let trial = 0; trial < 30; trial++) {
        const S = 1 + Math.floor(r() * 16);
        const n = 256 + Math.floor(r() * 2000);
        const chunk = 256 * (1 + Math.floor(r() * 3));
        const leaf = leaves(S, n, trial + 5);
        // A random tree of workers over contiguous shard ranges: each holds a part of its
        // subtree's range (maybe none) and hands the rest to 0-3 child subtrees.
        interface Node { own: ShardBlock[]; shards: number[]; parent: number; combiner: SumCombiner }
        const nodes: Node[] = [];
        const queue: { to: number; frame: Uint8Array }[] = [];
        const atCoordinator: Uint8Array[] = [];
        const build = (a: number, b: number, parent: number): void => {
          const id = nodes.length;
          const ownEnd = b - a <= 1 || r() < 0.3 ? b : a + Math.floor(r() * (b - a));
          const c = new SumCombiner(wire, { up: (f) => (parent < 0 ? atCoordinator.push(f) : queue.push({ to: parent, frame: f })), hasChildren: () => ownEnd < b, chunk: () => chunk, timedOut: () => {} });
          combiners.push(c);
          nodes.push({ own: ownEnd > a ? decomposeRange(a, ownEnd, S) : [], shards: Array.from({ length: b - a }, (_, i) => a + i), parent, combiner: c });
          let lo = ownEnd;
          while (lo < b) {
            const hi = Math.min(b, lo + 1 + Math.floor(r() * (b - lo)));
            build(lo, hi, id);
            lo = hi;
          }
        };
        build(0, S, -1);
        for (const node of nodes) node.combiner.expect(expectAll(S, node.shards));
        // Own blocks enter as queued frames too, so every arrival order is possible.
        nodes.forEach((node, id) => {
          for (const b of node.own) for (const e of childSums(S, b, leaf, wire, chunk)) queue.push({ to: id, frame: e.frame });
        });
        while (queue.length > 0) {
          const { to, frame } = queue.splice(Math.floor(r() * queue.length), 1)[0]!;
          nodes[to]!.combiner.add(entryOf(frame, wire));
        }
        expect(atCoordinator.length).toBe(Math.ceil(n / chunk));
        expect(coordinatorAverage(S, atCoordinator, wire, n, chunk)).toBe(reference(S, leaf, wire));
      }
    });

    it(`after the bounded wait, ranges forwarded with different covers still give the root, bit for bit (--wire ${wire})`, () => {
      vi.useFakeTimers();
      const r = rng(wire === 'fp16' ? 7 : 8);
      for (let trial = 0; trial < 20; trial++) {
        const S = 2 + Math.floor(r() * 12);
        const n = 300 + Math.floor(r() * 1500);
        const chunk = 256;
        const leaf = leaves(S, n, trial + 11);
        const up: Uint8Array[] = [];
        const timeouts: number[] = [];
        const c = new SumCombiner(wire, { up: (f) => up.push(f), hasChildren: () => true, chunk: () => chunk, timedOut: (i) => timeouts.push(i.missing) });
        combiners.push(c);
        c.expect(expectAll(S, undefined, 1000));
        const cuts = [0];
        while (cuts[cuts.length - 1]! < S) cuts.push(Math.min(S, cuts[cuts.length - 1]! + 1 + Math.floor(r() * 3)));
        const entries = shuffle(cuts.slice(1).flatMap((b, i) => decomposeRange(cuts[i]!, b, S)).flatMap((b) => childSums(S, b, leaf, wire, chunk)), r);
        // Some ranges before the wait runs out, the rest after (a slow child): the lanes forward
        // different covers, and late ranges go up one by one.
        const early = Math.floor(r() * entries.length);
        for (const e of entries.slice(0, early)) c.add(e);
        vi.advanceTimersByTime(1000);
        for (const e of entries.slice(early)) c.add(e);
        expect(timeouts.length).toBeLessThanOrEqual(1);
        expect(coordinatorAverage(S, up, wire, n, chunk)).toBe(reference(S, leaf, wire));
      }
    });
  }

  it('forwards a childless worker\'s ranges at once, verbatim; after the wait, a partial cover', () => {
    vi.useFakeTimers();
    const S = 8;
    const chunk = 256;
    const leaf = leaves(S, 600, 3);
    const up: Uint8Array[] = [];
    const timeouts: number[] = [];
    const leafWorker = new SumCombiner('fp32', { up: (f) => up.push(f), hasChildren: () => false, chunk: () => chunk, timedOut: () => {} });
    combiners.push(leafWorker);
    const e = childSums(S, { first: 4, count: 4 }, leaf, 'fp32', chunk);
    expect(e).toHaveLength(3);
    for (const x of e) leafWorker.add(x);
    expect(up).toEqual(e.map((x) => x.frame));
    up.length = 0;

    const relay = new SumCombiner('fp32', { up: (f) => up.push(f), hasChildren: () => true, chunk: () => chunk, timedOut: (i) => timeouts.push(i.missing) });
    combiners.push(relay);
    relay.expect(expectAll(S, [0, 1, 2, 3, 4, 5], 50));
    for (const x of childSums(S, { first: 0, count: 2 }, leaf, 'fp32', chunk)) relay.add(x);
    for (const x of childSums(S, { first: 2, count: 2 }, leaf, 'fp32', chunk)) relay.add(x);
    expect(up).toHaveLength(0);
    vi.advanceTimersByTime(50);
    expect(timeouts).toEqual([2]);
    // One [0, 4) per range.
    expect(up.map((f) => entryOf(f, 'fp32')).map((x) => [x.block.first, x.block.count, x.offset])).toEqual([
      [0, 4, 0],
      [0, 4, 256],
      [0, 4, 512],
    ]);
    // Late ranges go up one by one, verbatim.
    const late = childSums(S, { first: 4, count: 2 }, leaf, 'fp32', chunk);
    for (const x of late) relay.add(x);
    expect(up.slice(3)).toEqual(late.map((x) => x.frame));
  });

  it('a range arriving before its relay-expect waits for it; every range of a phase clears the wait', () => {
    vi.useFakeTimers();
    const S = 4;
    const chunk = 256;
    const leaf = leaves(S, 512, 5);
    const up: Uint8Array[] = [];
    const timeouts: number[] = [];
    const relay = new SumCombiner('fp32', { up: (f) => up.push(f), hasChildren: () => true, chunk: () => chunk, timedOut: (i) => timeouts.push(i.missing) });
    combiners.push(relay);
    const a = childSums(S, { first: 0, count: 2 }, leaf, 'fp32', chunk);
    const b = childSums(S, { first: 2, count: 2 }, leaf, 'fp32', chunk);
    relay.add(a[0]!);
    relay.add(b[0]!);
    expect(up).toHaveLength(0);
    relay.expect(expectAll(S, undefined, 100));
    expect(up).toHaveLength(1);
    relay.add(b[1]!);
    relay.add(a[1]!);
    expect(up).toHaveLength(2);
    vi.advanceTimersByTime(10_000);
    expect(timeouts).toEqual([]);
    expect(coordinatorAverage(S, up, 'fp32', 512, chunk)).toBe(reference(S, leaf, 'fp32'));
  });
});

describe('SumAssembly', () => {
  it('completes a block from its own ranges or, range by range, from blocks inside it', () => {
    for (const wire of ['fp32', 'fp16'] as const) {
      const S = 8;
      const chunk = 256;
      const n = 700;
      const leaf = leaves(S, n, 21);
      const q = quantizerFor(wire);
      const asm = new SumAssembly(S, n, chunk, q);
      const whole = childSums(S, { first: 0, count: 8 }, leaf, wire, chunk);
      const halves = [childSums(S, { first: 0, count: 4 }, leaf, wire, chunk), childSums(S, { first: 4, count: 4 }, leaf, wire, chunk)];
      const add = (e: SumEntry) => asm.add({ block: e.block, offset: e.offset, values: e.final, stats: e.stats });
      // Range 0 of the root, ranges 1 and 2 only as the two halves: the root completes when the last half's range 2 is in.
      expect(add(whole[0]!)).toEqual([]);
      expect(add(halves[0]![1]!)).toEqual([]);
      expect(add(halves[1]![1]!)).toEqual([]);
      expect(add(halves[0]![2]!)).toEqual([]);
      const done = add(halves[1]![2]!);
      expect(done.map((d) => [d.block.first, d.block.count])).toEqual([[0, 8]]);
      const direct = new Float32Array(n);
      whole.forEach((e) => direct.set(e.final, e.offset));
      expect(bits(done[0]!.gradient)).toBe(bits(direct));
      // Each range counts once: the root's own range 1 arriving later changes nothing.
      expect(add(whole[1]!)).toEqual([]);
    }
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

describe('relayTuning', () => {
  it('takes the chunk sizes from the environment, else the defaults; a bad value is a configuration error with a stable code', () => {
    expect(relayTuning({})).toEqual({ sumChunk: SUM_CHUNK_VALUES, weightsChunkBytes: RELAY_CHUNK_BYTES });
    expect(relayTuning({ GAN_RELAY_SUM_CHUNK: '2048', GAN_RELAY_CHUNK_BYTES: '16384' })).toEqual({ sumChunk: 2048, weightsChunkBytes: 16384 });
    for (const env of [{ GAN_RELAY_SUM_CHUNK: '1000' }, { GAN_RELAY_SUM_CHUNK: '0' }, { GAN_RELAY_CHUNK_BYTES: '12' }, { GAN_RELAY_CHUNK_BYTES: 'big' }]) {
      expect(() => relayTuning(env)).toThrow(expect.objectContaining({ name: 'ConfigError', code: 'BAD_RELAY_TUNING' }));
    }
  });
});
