/**
 * Bookkeeping for one phase of the distributed run: which shard is held by which worker, which
 * results are in, and what to re-issue when a worker is lost or too slow. It owns no sockets:
 * the coordinator asks it what to send and tells it what arrived, which keeps it testable.
 *
 * Workers return one result per aligned block of the phase's sum tree (shared/tree-sum.ts): a
 * worker's contiguous shards are planned as at most 2 log2(S) aligned blocks (blocksOf()), and a
 * block's result completes all its shards. Invariant: shard s is final with the first valid
 * block result covering it, whoever computed it; since a block's value does not depend on who
 * computes it and any cover of the shards by aligned blocks gives the same tree root, duplicates,
 * re-runs and different groupings cannot change the weights. A worker that is lost before a
 * block's result arrives loses the whole block: its shards go back to the pool.
 *
 * Verified shards (--verify-fraction, see coordinator/verify.ts) are always single-shard blocks
 * (results are compared bit for bit per shard), and the exception: their result
 * counts only once two different workers (different workerIds, same compute backend) returned
 * bit-identical results. Each is handed to two workers at once; when their results differ, to a
 * third, and so on until two agree. Every worker whose result differs from the agreed one is
 * "convicted" (takeConvicted()); the coordinator bans it and discard() drops everything it
 * contributed to this phase, so the phase never completes with a suspect gradient.
 *
 * Over 400 lines because one invariant (a shard is final with the first valid block covering it)
 * ties assignment, duplication, loss and verification together; they are kept in one class.
 */
import type { ShardResult } from '../shared/replica.ts';
import type { BlockResults, PhasePlan } from '../trainer/training-state.ts';
import { blockKey, blockShards, isAlignedBlock, planBlocks, type ShardBlock } from '../shared/tree-sum.ts';

export interface Assignee {
  /** Connection-unique id. */
  readonly sessionId: number;
  /** Smoothed compute time per shard (ms); drives proportional assignment and deadlines. */
  readonly msPerShard: number;
  /** Identity across reconnects: a verified shard needs results from two different ones (default: the session). */
  readonly workerId?: string;
  /** Compute backend: verification compares only results computed on the same backend. */
  readonly backend?: string;
  /**
   * A shard it held went overdue and no result from it has arrived since: it gets only its
   * speed-proportional share (next to nothing), not the one-shard minimum of every phase.
   */
  readonly late?: boolean;
  /** It has returned a result, so msPerShard is a measurement rather than a guess. */
  readonly measured?: boolean;
}

export interface Assignment<W extends Assignee> {
  worker: W;
  shardIds: number[];
  duplicate: boolean;
  /** A second (or tie-breaking) opinion on verified shards. */
  verify?: boolean;
}

/**
 * - accepted: the shard's result is final (for a verified shard: a second worker agreed)
 * - pending: a verified shard's first opinion; it waits for another worker's
 * - disputed: a verified shard's opinions differ and none has a second vote yet; another worker decides
 * - duplicate: the shard is final already and this result changes nothing (dropped)
 * - other-backend: an opinion on a verified shard from a worker on another backend (not comparable; dropped)
 * - wrong: the shard is final (verified) and this result differs from it: the sender is convicted
 * - not-assigned: the shard was never handed to this worker
 */
export type ResultVerdict = 'accepted' | 'pending' | 'disputed' | 'duplicate' | 'other-backend' | 'wrong' | 'not-assigned';

/** One worker's result for a verified shard. */
interface Opinion<W> {
  worker: W;
  result: ShardResult;
}

const identityOf = (w: Assignee): string => w.workerId || `#${w.sessionId}`;
const backendOf = (w: Assignee): string => w.backend ?? '';

/** Bit-for-bit equality of two shard results: every gradient float's bits and the three statistics. */
export function sameResult(a: ShardResult, b: ShardResult): boolean {
  if (a.gradient.length !== b.gradient.length) return false;
  if (!Object.is(a.loss, b.loss) || !Object.is(a.dReal, b.dReal) || !Object.is(a.dFake, b.dFake)) return false;
  const x = new Uint8Array(a.gradient.buffer, a.gradient.byteOffset, a.gradient.byteLength);
  const y = new Uint8Array(b.gradient.buffer, b.gradient.byteOffset, b.gradient.byteLength);
  return Buffer.compare(x, y) === 0;
}

export interface StragglerPolicy {
  /** A shard is duplicated once it has been out longer than factor x its holder's expected time... */
  factor: number;
  /** ...and at least this long (ms). */
  minMs: number;
}

/**
 * Default alignSlack: a worker's count may move by up to 25% from its proportional share (the
 * joiner-share target of issue #15 allows 25%) so its range splits into fewer aligned blocks of
 * the sum tree. Gradients per phase are then flat in S: at most 2N - 1 for N equal workers (N
 * when N is a power of two), at most 3N for speeds up to 20x apart (test/phase-run.test.ts),
 * against up to ~2N log2(S / N) for the proportional split (11 for 3 workers at S = 64). N
 * exactly (one aligned block each) would need power-of-two shares: up to 1.5x the compute time
 * of a proportional split for N = 3, and shares 50% off the proportional one.
 */
export const ALIGN_SLACK = 0.25;

export class PhaseRun<W extends Assignee> {
  /** Per shard: the result of the block that made it final (for a single-shard block, the shard's own). */
  readonly results: (ShardResult | undefined)[];
  /** Per shard: that block. */
  private blockOf: (ShardBlock | undefined)[];
  private unassigned: number[];
  /** shardId -> workers that hold it (more than one after duplication). */
  private holders = new Map<number, Set<W>>();
  /** shardId -> when it was first handed out, and what its holder was expected to need. */
  private issued = new Map<number, { at: number; expectMs: number }>();
  /** sessionId -> shards it still owes. */
  private owed = new Map<number, Set<number>>();
  private remaining: number;
  readonly startedAt = performance.now();
  /** Shards whose result needs two agreeing workers. */
  readonly verified: ReadonlySet<number>;
  /** Verified shard -> the opinions in so far (one per identity, all on the shard's backend). */
  private opinions = new Map<number, Opinion<W>[]>();
  /** Final shard -> who it is credited to (the producer, or for a verified shard the agreeing workers). */
  private credited = new Map<number, W[]>();
  /** Workers proven wrong since the last takeConvicted(). */
  private convicted: W[] = [];
  /** Identities discard()ed: never handed anything again in this phase. */
  private excluded = new Set<string>();
  /** Per holder and shard (`${sessionId}:${shardId}`): when it was handed the shard and what it was expected to need. */
  private held = new Map<string, { worker: W; shardId: number; at: number; expectMs: number; reported: boolean }>();

  /**
   * @param alignSlack how far (a fraction) alignToTree may move a worker's count from its
   *   proportional share to save gradients sent up; 0 keeps the proportional split.
   */
  constructor(readonly plan: PhasePlan, private policy: StragglerPolicy, verified: Iterable<number> = [], readonly alignSlack = ALIGN_SLACK) {
    // Dense (not `new Array(n)` holes): ordered() maps over it and must see every missing shard.
    this.results = new Array<ShardResult | undefined>(plan.shards.length).fill(undefined);
    this.blockOf = new Array<ShardBlock | undefined>(plan.shards.length).fill(undefined);
    this.unassigned = plan.shards.map((s) => s.shardId);
    this.remaining = plan.shards.length;
    this.verified = new Set([...verified].filter((id) => id >= 0 && id < plan.shards.length));
  }

  get done(): boolean {
    return this.remaining === 0;
  }

  get outstanding(): number {
    return this.remaining;
  }

  owes(worker: W): number {
    return this.owed.get(worker.sessionId)?.size ?? 0;
  }

  /**
   * How an assignment's shards are grouped into blocks of the sum tree (one result each): the
   * fewest aligned blocks per contiguous run; verified and duplicated shards as single blocks.
   */
  blocksOf(a: Pick<Assignment<W>, 'shardIds' | 'duplicate' | 'verify'>): ShardBlock[] {
    if (a.duplicate || a.verify) return a.shardIds.map((id) => ({ first: id, count: 1 }));
    return planBlocks(a.shardIds, this.plan.shards.length, this.verified);
  }

  private give(worker: W, shardIds: number[], now: number, blocks: ShardBlock[] = this.blocksOf({ shardIds, duplicate: false })): void {
    let owed = this.owed.get(worker.sessionId);
    if (!owed) this.owed.set(worker.sessionId, (owed = new Set()));
    const shards = this.plan.shards.length;
    for (const block of blocks) {
      const ids = blockShards(block, shards);
      for (const id of ids) owed.add(id);
      // Expected completion: everything queued on this worker up to and including this block
      // (a block's shards all arrive with its one result).
      const expectMs = owed.size * worker.msPerShard;
      for (const id of ids) {
        let h = this.holders.get(id);
        if (!h) this.holders.set(id, (h = new Set()));
        h.add(worker);
        if (!this.issued.has(id)) this.issued.set(id, { at: now, expectMs });
        this.held.set(`${worker.sessionId}:${id}`, { worker, shardId: id, at: now, expectMs, reported: false });
      }
    }
  }

  /**
   * Hands every unassigned shard to the given workers in proportion to their speed (shards per
   * ms), keeping shard order contiguous per worker. When there are enough shards, a worker that
   * rounding left with none still gets one if it is a newcomer (its first result is its speed
   * measurement: an estimate only results can change must not starve it) or if one shard fits
   * in the phase's expected length anyway; never a late one, nor a measured one that would make
   * the phase longer. Returns the tasks to send.
   */
  assignUnassigned(workers: W[], now = performance.now(), groupOf?: (w: W) => number): Assignment<W>[] {
    if (this.excluded.size > 0) workers = workers.filter((w) => !this.excluded.has(identityOf(w)));
    if (this.unassigned.length === 0 || workers.length === 0) return [];
    const speeds = workers.map((w) => 1 / Math.max(w.msPerShard, 1e-3));
    const total = speeds.reduce((a, b) => a + b, 0);
    const n = this.unassigned.length;
    // Largest-remainder rounding of n * share, so counts sum to n exactly.
    const exact = speeds.map((s) => (n * s) / total);
    const counts = exact.map(Math.floor);
    let left = n - counts.reduce((a, b) => a + b, 0);
    const order = exact.map((e, i) => [e - Math.floor(e), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    for (let j = 0; left > 0; j = (j + 1) % order.length, left--) counts[order[j][1]]++;
    const makespan = Math.max(...counts.map((c, i) => c * workers[i].msPerShard));
    const owed = workers.map((w, i) => (counts[i] === 0 && !w.late && (!w.measured || w.msPerShard <= makespan) ? i : -1)).filter((i) => i >= 0);
    if (owed.length > 0 && n >= workers.filter((w) => !w.late).length) {
      for (const i of owed) {
        // From the most over-served worker that keeps at least one.
        let donor = -1;
        for (let k = 0; k < counts.length; k++) {
          if (counts[k] >= 2 && (donor < 0 || counts[k] - exact[k] > counts[donor] - exact[donor])) donor = k;
        }
        if (donor < 0) break;
        counts[donor]--;
        counts[i]++;
      }
    }
    this.alignToTree(workers, counts);
    if (groupOf) this.alignGroups(workers, counts, groupOf);
    const out: Assignment<W>[] = [];
    let cursor = 0;
    workers.forEach((w, i) => {
      if (counts[i] === 0) return;
      const ids = this.unassigned.slice(cursor, cursor + counts[i]);
      cursor += counts[i];
      this.give(w, ids, now, this.blocksOf({ shardIds: ids, duplicate: false }));
      out.push({ worker: w, shardIds: ids, duplicate: false });
    });
    this.unassigned = [];
    return out;
  }

  /**
   * Moves the boundaries between workers' contiguous ranges (in place, on `counts`) so the ranges
   * split into as few aligned blocks of the sum tree as possible: every block is one gradient
   * sent up, so fewer blocks means fewer bytes up. Each worker with shards keeps at least one and
   * stays within `alignSlack` of its proportional count (at least (1 - slack) x its count, at most
   * what fits in (1 + slack) x the phase's proportional makespan), so the share a worker gets,
   * and the phase's compute time, move by at most that fraction. Among the cuts allowed, the
   * fewest blocks win, then the shortest makespan, then the smallest move (dynamic programming
   * over cut positions: O(N x S x window)).
   */
  private alignToTree(workers: readonly Assignee[], counts: number[], ids: readonly number[] = this.unassigned): void {
    const slack = this.alignSlack;
    const active = counts.map((c, i) => (c > 0 ? i : -1)).filter((i) => i >= 0);
    if (slack <= 0 || active.length < 2) return;
    const n = ids.length;
    const shards = this.plan.shards.length;
    const ms = (i: number) => Math.max(workers[i].msPerShard, 1e-3);
    const makespan = Math.max(...active.map((i) => counts[i] * ms(i)));
    const blocksMemo = new Map<number, number>();
    const blocks = (a: number, b: number): number => {
      const key = a * (n + 1) + b;
      let v = blocksMemo.get(key);
      if (v === undefined) blocksMemo.set(key, (v = planBlocks(ids.slice(a, b), shards, this.verified).length));
      return v;
    };
    const lo = active.map((i) => Math.max(1, Math.ceil((1 - slack) * counts[i])));
    const hi = active.map((i) => Math.max(counts[i], Math.floor(((1 + slack) * makespan) / ms(i))));
    // Bounded work (a planning step must stay cheap): skip aligning huge phases.
    if ((n + 1) * active.reduce((a, _, j) => a + hi[j] - lo[j] + 1, 0) > 2_000_000) return;
    /** Best way to give the first j workers positions [0, p): per layer, by p. */
    interface Best { blocks: number; span: number; moved: number; count: number; prev: Best | null }
    const better = (x: Best, y: Best | undefined) =>
      !y || x.blocks < y.blocks || (x.blocks === y.blocks && (x.span < y.span || (x.span === y.span && x.moved < y.moved)));
    let layer = new Map<number, Best>([[0, { blocks: 0, span: 0, moved: 0, count: 0, prev: null }]]);
    active.forEach((i, j) => {
      const next = new Map<number, Best>();
      const last = j === active.length - 1;
      for (const [p, b] of layer) {
        for (let c = lo[j]; c <= hi[j] && p + c <= n; c++) {
          if (last && p + c !== n) continue;
          const cand: Best = { blocks: b.blocks + blocks(p, p + c), span: Math.max(b.span, c * ms(i)), moved: b.moved + Math.abs(c - counts[i]), count: c, prev: b };
          if (better(cand, next.get(p + c))) next.set(p + c, cand);
        }
      }
      layer = next;
    });
    let best = layer.get(n);
    if (!best) return; // unreachable: the proportional counts themselves are a solution
    for (let j = active.length - 1; j >= 0 && best; j--, best = best.prev ?? undefined) counts[active[j]] = best.count;
  }

  /**
   * The relay tree (coordinator/relay-tree.ts): workers come in groups (a top-level subtree each,
   * contiguous in `workers`), and a group's blocks are combined at its relay, so what reaches the
   * coordinator is the aligned cover of each GROUP's range. Aligns the group boundaries as
   * alignToTree aligns workers' (each group one worker as fast as its members together), then
   * splits each group's range among its members in proportion to their speed and aligns those
   * cuts inside it. Leaves `counts` alone when the groups are not contiguous.
   */
  private alignGroups(workers: W[], counts: number[], groupOf: (w: W) => number): void {
    const groups: { id: number; members: number[] }[] = [];
    for (let i = 0; i < workers.length; i++) {
      const g = groupOf(workers[i]!);
      if (groups.length > 0 && groups[groups.length - 1]!.id === g) groups[groups.length - 1]!.members.push(i);
      else if (groups.some((x) => x.id === g)) return;
      else groups.push({ id: g, members: [i] });
    }
    if (groups.length < 2 && groups[0]?.members.length === 1) return;
    const speed = (i: number) => 1 / Math.max(workers[i]!.msPerShard, 1e-3);
    const virtual: Assignee[] = groups.map((g, k) => ({ sessionId: -1 - k, msPerShard: 1 / g.members.filter((i) => counts[i]! > 0).reduce((a, i) => a + speed(i), 0) || 1e9, measured: true }));
    const groupCounts = groups.map((g) => g.members.reduce((a, i) => a + counts[i]!, 0));
    this.alignToTree(virtual, groupCounts);
    let start = 0;
    groups.forEach((g, k) => {
      const n = groupCounts[k]!;
      const members = g.members.filter((i) => counts[i]! > 0);
      for (const i of g.members) counts[i] = 0;
      if (n === 0) return;
      if (members.length === 0) members.push(g.members[0]!);
      // Largest remainder within the group, each member with shards keeping at least one where it can.
      const total = members.reduce((a, i) => a + speed(i), 0);
      const exact = members.map((i) => (n * speed(i)) / total);
      const share = exact.map(Math.floor);
      let left = n - share.reduce((a, b) => a + b, 0);
      const order = exact.map((e, j) => [e - Math.floor(e), j] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      for (let j = 0; left > 0; j = (j + 1) % order.length, left--) share[order[j]![1]]!++;
      for (let j = 0; j < share.length; j++) {
        if (share[j] !== 0) continue;
        const donor = share.findIndex((c) => c >= 2);
        if (donor < 0) break;
        share[donor]!--;
        share[j]!++;
      }
      this.alignToTree(members.map((i) => workers[i]!), share, this.unassigned.slice(start, start + n));
      members.forEach((i, j) => (counts[i] = share[j]!));
      start += n;
    });
  }

  /**
   * Records a block's result (a shard id: the single-shard block). It makes final every shard of
   * the block that is not yet (verified shards: the first two single-shard results that agree);
   * 'duplicate' when all were final already.
   */
  accept(worker: W, block: ShardBlock | number, result: ShardResult): ResultVerdict {
    const b = typeof block === 'number' ? { first: block, count: 1 } : block;
    const shards = this.plan.shards.length;
    if (!isAlignedBlock(b.first, b.count, shards)) return 'not-assigned';
    const ids = blockShards(b, shards);
    // Held, not owed: once the first result for a duplicated shard is in, the other holders no
    // longer owe it, but their (late) results were still legitimately asked for.
    if (!ids.every((id) => this.holders.get(id)?.has(worker))) return 'not-assigned';
    // Verified shards are compared one by one: never part of a larger block.
    if (ids.length > 1 && ids.some((id) => this.verified.has(id))) return 'not-assigned';
    for (const id of ids) this.owed.get(worker.sessionId)?.delete(id);
    if (ids.length === 1 && this.verified.has(ids[0])) return this.acceptOpinion(worker, ids[0], result);
    if (ids.every((id) => this.results[id])) return 'duplicate';
    const node = { first: b.first, count: b.count };
    for (const id of ids) if (!this.results[id]) this.finish(id, result, [worker], node);
    return 'accepted';
  }

  /** Who a final shard's result is credited to (the sender of the block that made it final); undefined while open. */
  creditOf(shardId: number): readonly W[] | undefined {
    return this.credited.get(shardId);
  }

  /** Whether a shard's result is final. */
  isFinal(shardId: number): boolean {
    return this.results[shardId] !== undefined;
  }

  /** Shards this worker still owes in the phase (the relay tree's relay-expect is built from them). */
  owedBy(worker: W): number[] {
    return [...(this.owed.get(worker.sessionId) ?? [])];
  }

  /**
   * A block that came up the relay tree from `relay` (coordinator/relay-tree.ts): every shard of
   * it must be held by a worker the relay vouches for (one of its subtree, or itself), else
   * 'not-assigned'. Otherwise like accept(): the first valid block covering a shard wins,
   * duplicates change nothing. Not for verified shards (the tree is off with --verify-fraction).
   */
  acceptRelayed(relay: W, block: ShardBlock, result: ShardResult, vouches: (holder: W) => boolean): ResultVerdict {
    if (!this.mayRelay(block, vouches)) return 'not-assigned';
    const ids = blockShards(block, this.plan.shards.length);
    if (ids.every((id) => this.results[id])) return 'duplicate';
    const node = { first: block.first, count: block.count };
    for (const id of ids) if (!this.results[id]) this.finish(id, result, [relay], node);
    return 'accepted';
  }

  /**
   * Whether a relay may send this block up (acceptRelayed's check, also made for each range of a
   * sum before it is kept): an aligned block, no verified shard, every shard held by a worker the
   * relay vouches for.
   */
  mayRelay(block: ShardBlock, vouches: (holder: W) => boolean): boolean {
    const shards = this.plan.shards.length;
    if (!isAlignedBlock(block.first, block.count, shards)) return false;
    const ids = blockShards(block, shards);
    if (ids.some((id) => this.verified.has(id))) return false;
    return ids.every((id) => [...(this.holders.get(id) ?? [])].some(vouches));
  }

  /**
   * The accepted blocks' results by blockKey, for TrainingState.applyBlocks (only once done).
   * They may overlap (a duplicated shard inside a block that arrived later); every one is a
   * node of the tree, so whichever covers a path first gives the same root.
   */
  blocks(): BlockResults {
    const out = new Map<string, ShardResult>();
    this.results.forEach((r, id) => {
      const b = this.blockOf[id];
      if (r && b) out.set(blockKey(b.first, b.count), r);
    });
    return out;
  }

  private finish(shardId: number, result: ShardResult, credit: W[], block: ShardBlock = { first: shardId, count: 1 }): void {
    this.results[shardId] = result;
    this.blockOf[shardId] = block;
    this.credited.set(shardId, credit);
    this.remaining--;
    // Other holders of a duplicated shard no longer owe it.
    for (const other of this.holders.get(shardId) ?? []) this.owed.get(other.sessionId)?.delete(shardId);
  }

  /** The backend a verified shard is computed on: its first opinion's, else its first holder's. */
  private shardBackend(shardId: number): string | null {
    const first = this.opinions.get(shardId)?.[0];
    if (first) return backendOf(first.worker);
    for (const h of this.holders.get(shardId) ?? []) return backendOf(h);
    return null;
  }

  private acceptOpinion(worker: W, shardId: number, result: ShardResult): ResultVerdict {
    const final = this.results[shardId];
    if (final) {
      // A late opinion on a settled shard: still checked, so a wrong worker is caught either way.
      if (backendOf(worker) !== backendOf(this.credited.get(shardId)![0])) return 'other-backend';
      if (sameResult(final, result)) return 'duplicate';
      this.convicted.push(worker);
      return 'wrong';
    }
    let ops = this.opinions.get(shardId);
    if (!ops) this.opinions.set(shardId, (ops = []));
    if (ops.some((o) => identityOf(o.worker) === identityOf(worker))) return 'duplicate';
    const backend = this.shardBackend(shardId);
    if (ops.length > 0 && backend !== backendOf(worker)) return 'other-backend';
    ops.push({ worker, result });
    const agree = ops.filter((o) => sameResult(o.result, result));
    if (agree.length >= 2) {
      this.finish(shardId, result, agree.map((o) => o.worker));
      for (const o of ops) if (!agree.includes(o)) this.convicted.push(o.worker);
      this.opinions.delete(shardId);
      return 'accepted';
    }
    return ops.length === 1 ? 'pending' : 'disputed';
  }

  /** Who has given an opinion on an unsettled verified shard (workerIds). */
  opinionGivers(shardId: number): string[] {
    return (this.opinions.get(shardId) ?? []).map((o) => identityOf(o.worker));
  }

  /** Workers proven to have returned a wrong result since the last call (each once). */
  takeConvicted(): W[] {
    const out = [...new Set(this.convicted)];
    this.convicted = [];
    return out;
  }

  /**
   * Everything a (banned) worker contributed to this phase is dropped: its opinions, the final
   * results credited to it alone (an unverified shard it computed, or a verified one that loses
   * its second vote), and its holds. Those shards are computed again. Returns them.
   */
  discard(worker: W): number[] {
    const who = identityOf(worker);
    const isWho = (w: W) => identityOf(w) === who;
    this.excluded.add(who);
    for (const h of this.holders.values()) {
      for (const w of h) {
        if (!isWho(w)) continue;
        h.delete(w);
        this.owed.delete(w.sessionId);
      }
    }
    this.owed.delete(worker.sessionId);
    for (const [id, ops] of this.opinions) this.opinions.set(id, ops.filter((o) => !isWho(o.worker)));
    const reopened: number[] = [];
    for (const [id, credit] of [...this.credited]) {
      if (!credit.some(isWho)) continue;
      const result = this.results[id]!;
      this.results[id] = undefined;
      this.blockOf[id] = undefined;
      this.credited.delete(id);
      this.issued.delete(id);
      this.remaining++;
      // A verified shard keeps the surviving agreeing opinion(s) and needs one more.
      if (this.verified.has(id)) this.opinions.set(id, credit.filter((w) => !isWho(w)).map((w) => ({ worker: w, result })));
      reopened.push(id);
    }
    // An unsettled shard that nobody is computing goes back to the pool, unless it is a verified
    // shard with an opinion in (assignVerification finds it a second worker).
    for (let id = 0; id < this.results.length; id++) {
      if (this.results[id] || this.unassigned.includes(id)) continue;
      if ([...(this.holders.get(id) ?? [])].some((h) => this.owed.get(h.sessionId)?.has(id))) continue;
      if (this.verified.has(id) && (this.opinions.get(id)?.length ?? 0) > 0) continue;
      this.issued.delete(id);
      this.unassigned.push(id);
    }
    this.unassigned.sort((a, b) => a - b);
    return reopened.sort((a, b) => a - b);
  }

  /** How many more opinions a verified, unsettled shard needs beyond those in and those being computed. */
  private opinionsWanted(shardId: number): number {
    const ops = this.opinions.get(shardId) ?? [];
    let best = 0;
    for (const o of ops) best = Math.max(best, ops.filter((p) => sameResult(p.result, o.result)).length);
    const opined = new Set(ops.map((o) => identityOf(o.worker)));
    let computing = 0;
    for (const h of this.holders.get(shardId) ?? []) {
      if (!opined.has(identityOf(h)) && this.owed.get(h.sessionId)?.has(shardId)) computing++;
    }
    return Math.max(0, 2 - best - computing);
  }

  /** Whether `w` may give (another) opinion on a verified shard: a new identity on the shard's backend. */
  private canVerify(w: W, shardId: number): boolean {
    const who = identityOf(w);
    if (this.excluded.has(who)) return false;
    for (const h of this.holders.get(shardId) ?? []) if (identityOf(h) === who) return false;
    if ((this.opinions.get(shardId) ?? []).some((o) => identityOf(o.worker) === who)) return false;
    const backend = this.shardBackend(shardId);
    return backend === null || backend === backendOf(w);
  }

  /**
   * Verification: hands each verified shard that is short of opinions (a second one, or a
   * tie-breaker after a disagreement) to eligible workers, least loaded first. Shards still
   * unassigned are left to assignUnassigned. Returns the tasks to send.
   */
  assignVerification(workers: W[], now = performance.now()): Assignment<W>[] {
    if (this.verified.size === 0 || workers.length === 0) return [];
    const load = new Map(workers.map((w) => [w.sessionId, this.owes(w)]));
    const picked = new Map<W, number[]>();
    const pending = new Set(this.unassigned);
    for (const id of [...this.verified].sort((a, b) => a - b)) {
      if (this.results[id] || pending.has(id)) continue;
      for (let want = this.opinionsWanted(id); want > 0; want--) {
        let best: W | null = null;
        let bestCost = Infinity;
        for (const w of workers) {
          if (!this.canVerify(w, id)) continue;
          const cost = (load.get(w.sessionId)! + 1) * Math.max(w.msPerShard, 1e-3);
          if (cost < bestCost) {
            best = w;
            bestCost = cost;
          }
        }
        if (!best) break;
        load.set(best.sessionId, load.get(best.sessionId)! + 1);
        this.give(best, [id], now, [{ first: id, count: 1 }]);
        const list = picked.get(best) ?? [];
        list.push(id);
        picked.set(best, list);
      }
    }
    return [...picked].map(([worker, shardIds]) => ({ worker, shardIds, duplicate: false, verify: true }));
  }

  /**
   * Verified shards that need another opinion nobody is computing (after assignVerification: no
   * eligible worker is connected), and whether any of them is disputed.
   */
  awaitingOpinion(): { shards: number[]; disputed: boolean; backend: string | null } {
    const shards: number[] = [];
    let disputed = false;
    let backend: string | null = null;
    for (const id of this.verified) {
      if (this.results[id] || this.unassigned.includes(id) || this.opinionsWanted(id) === 0) continue;
      shards.push(id);
      disputed ||= (this.opinions.get(id)?.length ?? 0) >= 2;
      backend ??= this.shardBackend(id);
    }
    return { shards: shards.sort((a, b) => a - b), disputed, backend };
  }

  /** A worker is gone: the shards only it held go back to the pool. Returns them. */
  release(worker: W): number[] {
    const owed = this.owed.get(worker.sessionId);
    this.owed.delete(worker.sessionId);
    const orphaned: number[] = [];
    for (const id of owed ?? []) {
      const h = this.holders.get(id);
      h?.delete(worker);
      if (!this.results[id] && (!h || h.size === 0)) {
        this.issued.delete(id);
        orphaned.push(id);
      }
    }
    orphaned.sort((a, b) => a - b);
    this.unassigned.push(...orphaned);
    this.unassigned.sort((a, b) => a - b);
    return orphaned;
  }

  /**
   * Straggler handling: for each idle worker, the oldest overdue shard it does not already hold
   * (one per idle worker per call), so a slow worker cannot hold the phase hostage.
   */
  duplicateOverdue(idle: W[], now = performance.now()): Assignment<W>[] {
    const out: Assignment<W>[] = [];
    const taken = new Set<number>();
    for (const w of idle) {
      if (this.excluded.has(identityOf(w))) continue;
      let pick = -1;
      let oldest = Infinity;
      for (const [id, info] of this.issued) {
        if (this.results[id] || taken.has(id) || this.holders.get(id)?.has(w)) continue;
        if (this.verified.has(id) && !this.canVerify(w, id)) continue;
        if (now - info.at >= this.deadline(info) && info.at < oldest) {
          oldest = info.at;
          pick = id;
        }
      }
      if (pick < 0) continue;
      taken.add(pick);
      this.give(w, [pick], now, [{ first: pick, count: 1 }]);
      out.push({ worker: w, shardIds: [pick], duplicate: true });
    }
    return out;
  }

  /** How long a shard may be out before it counts as overdue (and is duplicated to an idle worker). */
  private deadline(info: { expectMs: number }): number {
    return Math.max(this.policy.minMs, this.policy.factor * info.expectMs);
  }

  /**
   * Holders that still owe a shard past their deadline for it, with how long they have held it;
   * `first` is true the first time a holder is reported for that shard. The coordinator counts these against
   * the worker, so one that stops computing (or reading) loses its share at once.
   */
  overdue(now = performance.now()): { worker: W; shardId: number; ageMs: number; first: boolean }[] {
    const out: { worker: W; shardId: number; ageMs: number; first: boolean }[] = [];
    for (const h of this.held.values()) {
      if (this.results[h.shardId] || !this.owed.get(h.worker.sessionId)?.has(h.shardId)) continue;
      const ageMs = now - h.at;
      if (ageMs < this.deadline(h)) continue;
      out.push({ worker: h.worker, shardId: h.shardId, ageMs, first: !h.reported });
      h.reported = true;
    }
    return out;
  }

  /** Results in shard order; only valid once done. */
  ordered(): ShardResult[] {
    return this.results.map((r, i) => {
      if (!r) throw new Error(`shard ${i} has no result`);
      return r;
    });
  }
}
