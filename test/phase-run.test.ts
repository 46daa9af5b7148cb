/**
 * PhaseRun without sockets: proportional assignment, release and reassignment, first-result-wins,
 * straggler duplication deadlines, shard-order results.
 */
import { describe, expect, it } from 'vitest';
import { PhaseRun, type Assignee, type Assignment, type StragglerPolicy } from '../coordinator/phase-run.ts';
import type { ShardResult } from '../shared/replica.ts';
import type { PhasePlan } from '../trainer/training-state.ts';

interface FakeWorker extends Assignee {
  name: string;
  msPerShard: number;
}

let nextSession = 1;
const worker = (name: string, msPerShard: number): FakeWorker => ({ sessionId: nextSession++, name, msPerShard });

function plan(shards: number, phase: 'D' | 'G' = 'D'): PhasePlan {
  return {
    iteration: 3,
    phase,
    dStep: 0,
    shards: Array.from({ length: shards }, (_, s) => ({ shardId: s, seed: 1000 + s, rows: 8 })),
    samplerBefore: { epoch: 0, cursor: 0, batches: 0 },
  };
}

/** A recognisable result: gradient [shardId, tag], loss = shardId. */
const result = (shardId: number, tag = 0): ShardResult => ({ gradient: new Float32Array([shardId, tag]), loss: shardId, dReal: 0.5, dFake: 0.25 });

const POLICY: StragglerPolicy = { factor: 3, minMs: 1000 };

const byWorker = (as: Assignment<FakeWorker>[]) => new Map(as.map((a) => [a.worker.name, a.shardIds]));

/** Every shard exactly once, each worker's block contiguous and ascending. */
function expectPartition(as: Assignment<FakeWorker>[], shards: number[]): void {
  const all = as.flatMap((a) => a.shardIds);
  expect([...all].sort((a, b) => a - b)).toEqual([...shards].sort((a, b) => a - b));
  for (const a of as) {
    expect(a.duplicate).toBe(false);
    expect(a.shardIds.length).toBeGreaterThan(0);
    for (let i = 1; i < a.shardIds.length; i++) expect(a.shardIds[i]).toBe(a.shardIds[i - 1] + 1);
  }
}

describe('PhaseRun assignment', () => {
  it('splits shards in proportion to speed: a 2x faster worker gets 2x the shards, contiguous ids', () => {
    const fast = worker('fast', 10);
    const slow = worker('slow', 20);
    const run = new PhaseRun<FakeWorker>(plan(30), POLICY);
    const as = run.assignUnassigned([fast, slow], 0);
    expectPartition(as, [...Array(30).keys()]);
    expect(byWorker(as).get('fast')).toEqual([...Array(20).keys()]);
    expect(byWorker(as).get('slow')).toEqual([...Array(10).keys()].map((i) => 20 + i));
    expect(run.owes(fast)).toBe(20);
    expect(run.owes(slow)).toBe(10);
    // Everything is out: a second call hands out nothing.
    expect(run.assignUnassigned([fast, slow], 0)).toEqual([]);
  });

  it('rounds so that counts always sum to S (largest remainder), with ~proportional counts', () => {
    // 8 shards, speeds 2:1 -> exact 5.33 / 2.67 -> 5 / 3
    const run = new PhaseRun<FakeWorker>(plan(8), POLICY);
    const as = run.assignUnassigned([worker('a', 5), worker('b', 10)], 0);
    expectPartition(as, [...Array(8).keys()]);
    expect(byWorker(as).get('a')).toEqual([0, 1, 2, 3, 4]);
    expect(byWorker(as).get('b')).toEqual([5, 6, 7]);

    // Many random speed mixes: always a partition, each count within 1 of its exact share.
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(rand() * 6);
      const S = 1 + Math.floor(rand() * 40);
      // Unmeasured workers: each gets the one-shard minimum whenever S >= n.
      const ws = Array.from({ length: n }, (_, i) => worker(`w${i}`, 0.5 + rand() * 100));
      const r = new PhaseRun<FakeWorker>(plan(S), POLICY, [], 0); // no tree alignment: the proportional split
      const out = r.assignUnassigned(ws, 0);
      expectPartition(out, [...Array(S).keys()]);
      const total = ws.reduce((a, w) => a + 1 / w.msPerShard, 0);
      for (const w of ws) {
        const exact = (S * (1 / w.msPerShard)) / total;
        // Within 1 of the exact share; with S >= n the one-shard minimum comes out of bigger
        // shares, so nobody gets more than the exact share rounded up, and everyone gets one.
        if (S < n) expect(Math.abs(r.owes(w) - exact)).toBeLessThan(1);
        else {
          expect(r.owes(w)).toBeLessThanOrEqual(Math.ceil(exact));
          expect(r.owes(w)).toBeGreaterThanOrEqual(1);
        }
      }
      // Workers keep the order they were given: ids ascend from one worker to the next.
      const firsts = out.map((a) => a.shardIds[0]);
      expect(firsts).toEqual([...firsts].sort((a, b) => a - b));
    }
  });

  it('aligns ranges to the sum tree: gradients per phase flat in S (2N - 1 for equal workers), each count within 25% of its share', () => {
    /** Gradients a phase sends up: one per aligned block of every assignment. */
    const gradients = (r: PhaseRun<FakeWorker>, as: Assignment<FakeWorker>[]) => as.reduce((a, x) => a + r.blocksOf(x).length, 0);
    // 3 equal workers at S = 64: 11 gradients with the proportional split, 5 aligned (24 / 24 / 16).
    const three = () => [worker('a', 10), worker('b', 10), worker('c', 10)];
    const flat = new PhaseRun<FakeWorker>(plan(64), POLICY, [], 0);
    expect(gradients(flat, flat.assignUnassigned(three(), 0))).toBe(11);
    const aligned = new PhaseRun<FakeWorker>(plan(64), POLICY);
    const as3 = aligned.assignUnassigned(three(), 0);
    expectPartition(as3, [...Array(64).keys()]);
    expect(gradients(aligned, as3)).toBe(5);
    expect(as3.map((a) => a.shardIds.length)).toEqual([24, 24, 16]);
    // Equal workers: at most 2N - 1 gradients for every S from N to 64 (N exactly for N a power of two).
    for (const S of [4, 8, 16, 32, 64]) {
      for (let n = 1; n <= Math.min(8, S); n++) {
        const r = new PhaseRun<FakeWorker>(plan(S), POLICY);
        const g = gradients(r, r.assignUnassigned(Array.from({ length: n }, (_, i) => worker(`e${i}`, 7)), 0));
        expect(g).toBeLessThanOrEqual((n & (n - 1)) === 0 ? n : 2 * n - 1);
      }
    }
    // Random speed mixes (up to 20x apart), N = 1..8, S = 4..64: at most 3N gradients, never
    // more than the proportional split; each count within 25% of its share.
    let seed = 777;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let trial = 0; trial < 400; trial++) {
      const n = 1 + Math.floor(rand() * 8);
      const S = [4, 8, 16, 32, 64][Math.floor(rand() * 5)];
      const ws = Array.from({ length: n }, (_, i) => ({ ...worker(`w${i}`, 1 + rand() * 20), measured: true }));
      const base = new PhaseRun<FakeWorker>(plan(S), POLICY, [], 0);
      const baseAs = base.assignUnassigned(ws, 0);
      const baseCounts = new Map(baseAs.map((a) => [a.worker, a.shardIds.length]));
      const r = new PhaseRun<FakeWorker>(plan(S), POLICY);
      const as = r.assignUnassigned(ws, 0);
      expectPartition(as, [...Array(S).keys()]);
      const g = gradients(r, as);
      expect(g).toBeLessThanOrEqual(gradients(base, baseAs));
      expect(g).toBeLessThanOrEqual(3 * as.length);
      // Who had shards keeps some; nobody moves by more than 25% of its proportional count
      // (downwards), nor past 1.25x the proportional makespan (upwards).
      const span = Math.max(...[...baseCounts].map(([w, c]) => c * w.msPerShard));
      for (const [w, c] of baseCounts) {
        const got = r.owes(w);
        expect(got).toBeGreaterThanOrEqual(Math.max(1, Math.ceil(0.75 * c)));
        expect(got).toBeLessThanOrEqual(Math.max(c, Math.floor((1.25 * span) / w.msPerShard)));
      }
    }
  });

  it('every worker that is not late gets at least one shard when S >= N: a newcomer is measured at once', () => {
    const fast = worker('fast', 2.5);
    const joiner = worker('joiner', 168); // a slow first (cold) shard
    const run = new PhaseRun<FakeWorker>(plan(8), POLICY);
    const as = run.assignUnassigned([fast, joiner], 0);
    expectPartition(as, [...Array(8).keys()]);
    expect(run.owes(joiner)).toBe(1);
    expect(run.owes(fast)).toBe(7);
    // A late worker (an overdue shard, no result since) keeps only its proportional share: none.
    const late = { ...worker('late', 2000), late: true };
    const run2 = new PhaseRun<FakeWorker>(plan(8), POLICY);
    const as2 = run2.assignUnassigned([fast, late], 0);
    expectPartition(as2, [...Array(8).keys()]);
    expect(run2.owes(late)).toBe(0);
    // A measured worker gets the minimum only if one shard fits in the phase's expected length.
    const measuredSlow = { ...worker('measured-slow', 3000), measured: true };
    const run4 = new PhaseRun<FakeWorker>(plan(8), POLICY);
    run4.assignUnassigned([fast, measuredSlow], 0);
    expect(run4.owes(measuredSlow)).toBe(0);
    const measuredOk = { ...worker('measured-ok', 10), measured: true };
    const run5 = new PhaseRun<FakeWorker>(plan(8), POLICY);
    run5.assignUnassigned([fast, measuredOk], 0); // exact 6.4 / 1.6 -> 6 / 2 already
    expect(run5.owes(measuredOk)).toBeGreaterThanOrEqual(1);
    // Fewer shards than workers: no minimum, the fastest get them.
    const run3 = new PhaseRun<FakeWorker>(plan(1), POLICY);
    run3.assignUnassigned([joiner, fast], 0);
    expect(run3.owes(fast)).toBe(1);
  });

  it('overdue(): a holder past its own deadline, reported first once; a duplicate holder has its own clock', () => {
    const slow = worker('slow', 10);
    const idle = worker('idle', 10);
    const run = new PhaseRun<FakeWorker>(plan(2), { factor: 2, minMs: 100 });
    run.assignUnassigned([slow], 0); // slow holds 0 and 1; expected 10 and 20 ms
    expect(run.overdue(50)).toEqual([]);
    const first = run.overdue(150);
    expect(first.map((o) => [o.worker.name, o.shardId, o.ageMs, o.first])).toEqual([['slow', 0, 150, true], ['slow', 1, 150, true]]);
    expect(run.overdue(200).every((o) => !o.first)).toBe(true);
    // The idle worker takes shard 0 as a duplicate at 200 ms: it is not overdue for it until its own deadline.
    run.duplicateOverdue([idle], 200);
    expect(run.overdue(250).filter((o) => o.worker === idle)).toEqual([]);
    expect(run.overdue(301).filter((o) => o.worker === idle).map((o) => o.shardId)).toEqual([0]);
    // A result ends it for every holder.
    run.accept(idle, 0, result(0));
    expect(run.overdue(400).map((o) => o.shardId)).toEqual([1]);
  });

  it('equal workers get equal shares; no workers means nothing is handed out', () => {
    const run = new PhaseRun<FakeWorker>(plan(8), POLICY);
    expect(run.assignUnassigned([], 0)).toEqual([]);
    const ws = [worker('a', 50), worker('b', 50), worker('c', 50), worker('d', 50)];
    const as = run.assignUnassigned(ws, 0);
    expect(as.map((a) => a.shardIds)).toEqual([[0, 1], [2, 3], [4, 5], [6, 7]]);
  });
});

describe('PhaseRun results', () => {
  it('accepts the first valid result per shard, is done when every shard is in, and orders results by shard', () => {
    const a = worker('a', 10);
    const b = worker('b', 10);
    const run = new PhaseRun<FakeWorker>(plan(4), POLICY);
    run.assignUnassigned([a, b], 0); // a: 0,1  b: 2,3
    expect(run.done).toBe(false);
    expect(run.outstanding).toBe(4);
    // Arrival order differs from shard order.
    expect(run.accept(b, 3, result(3))).toBe('accepted');
    expect(run.accept(a, 1, result(1))).toBe('accepted');
    expect(run.accept(b, 2, result(2))).toBe('accepted');
    expect(run.done).toBe(false);
    expect(() => run.ordered()).toThrow(/shard 0 has no result/);
    expect(run.accept(a, 0, result(0))).toBe('accepted');
    expect(run.done).toBe(true);
    expect(run.outstanding).toBe(0);
    expect(run.ordered().map((r) => r.loss)).toEqual([0, 1, 2, 3]);
    expect(run.ordered().map((r) => r.gradient[0])).toEqual([0, 1, 2, 3]);
  });

  it("a result for a shard never handed to that worker is 'not-assigned' and changes nothing", () => {
    const a = worker('a', 10);
    const b = worker('b', 10);
    const stranger = worker('stranger', 10);
    const run = new PhaseRun<FakeWorker>(plan(4), POLICY);
    run.assignUnassigned([a, b], 0); // a: 0,1  b: 2,3
    expect(run.accept(a, 2, result(2, 99))).toBe('not-assigned');
    expect(run.accept(stranger, 0, result(0, 99))).toBe('not-assigned');
    expect(run.accept(a, 7, result(7, 99))).toBe('not-assigned');
    expect(run.outstanding).toBe(4);
    expect(run.results.every((r) => r === undefined)).toBe(true);
    // The real holders still owe and deliver.
    expect(run.owes(a)).toBe(2);
    expect(run.accept(b, 2, result(2))).toBe('accepted');
    expect(run.results[2]!.gradient[1]).toBe(0);
  });

  it("when a shard is duplicated the first result wins and the loser's is 'duplicate'", () => {
    const slow = worker('slow', 100);
    const idle = worker('idle', 10);
    const run = new PhaseRun<FakeWorker>(plan(2), { factor: 2, minMs: 300 });
    run.assignUnassigned([slow], 0); // slow holds 0 and 1
    expect(run.accept(slow, 0, result(0, 1))).toBe('accepted');
    // Shard 1 was expected after 2 x 100 ms; deadline max(300, 2 x 200) = 400 ms.
    const dup = run.duplicateOverdue([idle], 500);
    expect(dup).toEqual([{ worker: idle, shardIds: [1], duplicate: true }]);
    expect(run.owes(idle)).toBe(1);

    // The duplicate comes back first and wins...
    expect(run.accept(idle, 1, result(1, 2))).toBe('accepted');
    expect(run.done).toBe(true);
    expect(run.owes(slow)).toBe(0);
    // ...and the straggler's own (legitimately assigned) result is a duplicate that changes nothing.
    expect(run.accept(slow, 1, result(1, 1))).toBe('duplicate');
    expect(run.results[1]!.gradient[1]).toBe(2);
    expect(run.ordered().map((r) => r.gradient[1])).toEqual([1, 2]);

    // The same worker sending the same shard twice is a duplicate too, never a second acceptance.
    expect(run.accept(idle, 1, result(1, 3))).toBe('duplicate');
    expect(run.results[1]!.gradient[1]).toBe(2);
  });

  it('the original holder can win the race too; the duplicate holder then no longer owes the shard', () => {
    const slow = worker('slow', 100);
    const idle = worker('idle', 10);
    const run = new PhaseRun<FakeWorker>(plan(1), { factor: 2, minMs: 300 });
    run.assignUnassigned([slow], 0);
    expect(run.duplicateOverdue([idle], 299)).toEqual([]);
    expect(run.duplicateOverdue([idle], 300)).toHaveLength(1);
    expect(run.accept(slow, 0, result(0, 1))).toBe('accepted');
    expect(run.owes(idle)).toBe(0);
    expect(run.accept(idle, 0, result(0, 2))).toBe('duplicate');
    expect(run.results[0]!.gradient[1]).toBe(1);
  });
});

describe('PhaseRun release and reassignment', () => {
  it('release() returns the unfinished shards of a lost worker to the pool; assignUnassigned hands them out', () => {
    const a = worker('a', 10);
    const b = worker('b', 10);
    const c = worker('c', 10);
    const run = new PhaseRun<FakeWorker>(plan(6), POLICY);
    run.assignUnassigned([a, b], 0); // a: 0,1,2  b: 3,4,5
    expect(run.accept(a, 0, result(0))).toBe('accepted');
    expect(run.accept(b, 3, result(3))).toBe('accepted');

    const orphaned = run.release(a);
    expect(orphaned).toEqual([1, 2]);
    expect(run.owes(a)).toBe(0);
    expect(run.outstanding).toBe(4);
    // Its finished shard stays finished.
    expect(run.results[0]!.loss).toBe(0);
    // A lost worker's result no longer counts (it no longer holds anything).
    expect(run.accept(a, 1, result(1, 99))).toBe('not-assigned');

    const again = run.assignUnassigned([c], 10);
    expect(again).toEqual([{ worker: c, shardIds: [1, 2], duplicate: false }]);
    expect(run.accept(c, 2, result(2))).toBe('accepted');
    expect(run.accept(c, 1, result(1))).toBe('accepted');
    expect(run.accept(b, 5, result(5))).toBe('accepted');
    expect(run.accept(b, 4, result(4))).toBe('accepted');
    expect(run.done).toBe(true);
    expect(run.ordered().map((r) => r.loss)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('orphans from several workers come back in shard order and can be split among survivors', () => {
    const ws = [worker('a', 10), worker('b', 10), worker('c', 10), worker('d', 10)];
    const run = new PhaseRun<FakeWorker>(plan(8), POLICY);
    run.assignUnassigned(ws, 0); // a: 0,1  b: 2,3  c: 4,5  d: 6,7
    expect(run.release(ws[2])).toEqual([4, 5]);
    expect(run.release(ws[0])).toEqual([0, 1]);
    const as = run.assignUnassigned([ws[1], ws[3]], 5);
    expectPartition(as, [0, 1, 4, 5]);
    expect(byWorker(as).get('b')).toEqual([0, 1]);
    expect(byWorker(as).get('d')).toEqual([4, 5]);
  });

  it('a shard that another worker also holds (duplicated) is not orphaned when one holder leaves', () => {
    const slow = worker('slow', 100);
    const helper = worker('helper', 10);
    const run = new PhaseRun<FakeWorker>(plan(2), { factor: 1, minMs: 100 });
    run.assignUnassigned([slow], 0); // slow: 0,1 as one block [0, 2), expected after 200 ms
    expect(run.duplicateOverdue([helper], 150)).toEqual([]);
    expect(run.duplicateOverdue([helper], 200)).toEqual([{ worker: helper, shardIds: [0], duplicate: true }]);
    expect(run.release(slow)).toEqual([1]);
    expect(run.accept(helper, 0, result(0))).toBe('accepted');
    expect(run.assignUnassigned([helper], 200)).toEqual([{ worker: helper, shardIds: [1], duplicate: false }]);
    expect(run.accept(helper, 1, result(1))).toBe('accepted');
    expect(run.done).toBe(true);
  });

  it('releasing a worker that holds nothing returns nothing', () => {
    const run = new PhaseRun<FakeWorker>(plan(2), POLICY);
    expect(run.release(worker('nobody', 10))).toEqual([]);
  });
});

describe('PhaseRun straggler duplication', () => {
  it('duplicates a shard only after max(minMs, factor x expected) and never to a worker that holds it', () => {
    const slow = worker('slow', 200);
    const fast = worker('fast', 10);
    const run = new PhaseRun<FakeWorker>(plan(1), { factor: 2, minMs: 300 });
    run.assignUnassigned([slow], 1000); // expected 200 ms -> deadline max(300, 400) = 400 ms
    expect(run.duplicateOverdue([fast], 1000)).toEqual([]);
    expect(run.duplicateOverdue([fast], 1399)).toEqual([]);
    // The holder itself never gets its own shard again.
    expect(run.duplicateOverdue([slow], 5000)).toEqual([]);
    const dup = run.duplicateOverdue([fast], 1400);
    expect(dup).toEqual([{ worker: fast, shardIds: [0], duplicate: true }]);
    // Once both hold it, nobody else is idle: nothing more to duplicate.
    expect(run.duplicateOverdue([fast], 9999)).toEqual([]);
  });

  it('minMs dominates for quick shards', () => {
    const w = worker('w', 1);
    const idle = worker('idle', 1);
    const run = new PhaseRun<FakeWorker>(plan(1), { factor: 3, minMs: 2000 });
    run.assignUnassigned([w], 0); // expected 1 ms -> deadline 2000 ms
    expect(run.duplicateOverdue([idle], 1999)).toEqual([]);
    expect(run.duplicateOverdue([idle], 2000)).toHaveLength(1);
  });

  it('the deadline grows with the queue position of the block on its holder (a block arrives whole)', () => {
    const slow = worker('slow', 100);
    const idle = worker('idle', 10);
    const run = new PhaseRun<FakeWorker>(plan(3), { factor: 1, minMs: 0 }, [2]);
    // Blocks [0, 2) then [2, 1) (shard 2 is verified: a block of its own): shards 0 and 1 expected after 200 ms (with their block), shard 2 after 300 ms.
    expect(run.assignUnassigned([slow], 0).map((a) => run.blocksOf(a))).toEqual([[{ first: 0, count: 2 }, { first: 2, count: 1 }]]);
    const picked = (now: number) => run.duplicateOverdue([worker('probe', 10)], now).flatMap((a) => a.shardIds);
    expect(run.duplicateOverdue([idle], 199)).toEqual([]);
    expect(run.duplicateOverdue([idle], 200).flatMap((a) => a.shardIds)).toEqual([0]);
    expect(picked(250)).toEqual([0]);
    // Shard 2 (expected after 300 ms) is not overdue before then, whoever asks.
    const probe = worker('probe2', 10);
    const seen = new Set<number>();
    for (let i = 0; i < 4; i++) for (const a of run.duplicateOverdue([probe], 299)) a.shardIds.forEach((s) => seen.add(s));
    expect([...seen].sort()).toEqual([0, 1]);
    expect(run.duplicateOverdue([probe], 300).flatMap((a) => a.shardIds)).toEqual([2]);
  });

  it('a block result completes all its shards; a duplicate single shard inside it is not counted twice; blocks() covers the phase', () => {
    const a = worker('a', 10);
    const b = worker('b', 10);
    const run = new PhaseRun<FakeWorker>(plan(6), { factor: 1, minMs: 0 });
    const [as] = run.assignUnassigned([a], 0);
    expect(run.blocksOf(as!)).toEqual([{ first: 0, count: 8 }]);
    expect(run.duplicateOverdue([b], 1000).flatMap((x) => x.shardIds)).toEqual([0]);
    expect(run.accept(b, 0, result(0))).toBe('accepted');
    expect(run.accept(b, { first: 0, count: 2 }, result(0))).toBe('not-assigned');
    expect(run.done).toBe(false);
    expect(run.accept(a, { first: 0, count: 8 }, result(9))).toBe('accepted');
    expect(run.done).toBe(true);
    expect([...run.blocks().keys()].sort()).toEqual(['0+1', '0+8']);
    expect(run.accept(a, { first: 0, count: 8 }, result(9))).toBe('duplicate');
  });

  it('a worker lost mid-block loses the whole block; a verified shard stays a single block', () => {
    const a = worker('a', 10);
    const run = new PhaseRun<FakeWorker>(plan(4), POLICY, [2]);
    const [as] = run.assignUnassigned([a], 0);
    expect(run.blocksOf(as!)).toEqual([{ first: 0, count: 2 }, { first: 2, count: 1 }, { first: 3, count: 1 }]);
    expect(run.accept(a, { first: 0, count: 2 }, result(0))).toBe('accepted');
    expect(run.release(a)).toEqual([2, 3]);
  });

  it('gives each idle worker at most one overdue shard per call, oldest first, and skips finished shards', () => {
    const slow = worker('slow', 100);
    const i1 = worker('i1', 10);
    const i2 = worker('i2', 10);
    const i3 = worker('i3', 10);
    const run = new PhaseRun<FakeWorker>(plan(3), { factor: 1, minMs: 10 });
    run.assignUnassigned([slow], 0); // 0,1,2 issued at t=0
    expect(run.accept(slow, 0, result(0))).toBe('accepted');
    const out = run.duplicateOverdue([i1, i2, i3], 10_000);
    expect(out.map((a) => [a.worker.name, a.shardIds])).toEqual([
      ['i1', [1]],
      ['i2', [2]],
    ]);
    expect(out.every((a) => a.duplicate)).toBe(true);
  });

  it('a released and re-assigned shard gets a fresh deadline', () => {
    const a = worker('a', 10);
    const b = worker('b', 10);
    const idle = worker('idle', 10);
    const run = new PhaseRun<FakeWorker>(plan(1), { factor: 1, minMs: 1000 });
    run.assignUnassigned([a], 0);
    run.release(a);
    run.assignUnassigned([b], 5000);
    expect(run.duplicateOverdue([idle], 5999)).toEqual([]);
    expect(run.duplicateOverdue([idle], 6000)).toHaveLength(1);
  });
});
