/**
 * Gradients up the relay tree: a relay collects the phase's aligned blocks of its subtree (its
 * own, and the sums its children send), and forwards the fewest aligned nodes that cover them,
 * each combined with shared/tree-sum.ts (nodeRawSum: the same tree, so the coordinator decodes
 * exactly the node's value whoever combined it, and the root stays bit-identical to gan-train).
 *
 * Sums travel in element ranges (shared/sum-chunks.ts): every block is sent as its ranges
 * [k·C, (k+1)·C) of the flat gradient, and the combiner works range by range ("lanes"): lane k
 * is forwarded as soon as its blocks cover every shard the coordinator said the subtree was
 * handed (relay-expect), without waiting for the other ranges. So a relay forwards range k of
 * its subtree's sum while range k + 1 is still on its children's links: the way up is pipelined
 * like the weights on the way down. The tree sum is elementwise and C is a multiple of the fp16
 * wire's scale block, so every value is the one the whole-sum path would send, bit for bit.
 *
 * It forwards a lane once its blocks cover the expected shards, or, after the phase's bounded
 * wait, every lane with whatever it has (a child may be gone; its shards are reassigned and come
 * up later, one by one; the coordinator rebuilds whole blocks from any cover, shared/sum-chunks.ts
 * SumAssembly). A worker without children forwards at once. A lane's block that is one received
 * block is forwarded as the frame it came in (never re-encoded: with --wire fp16 that would round
 * it twice). Blocks already covered in a lane are dropped (duplicates are harmless anyway: the
 * coordinator keeps the first cover).
 *
 * Imports nothing Node-only.
 */
import { encode } from '../shared/codec.ts';
import type { Phase, RelayExpectMsg, WireFormat } from '../shared/protocol.ts';
import { rangeCount } from '../shared/sum-chunks.ts';
import { blockKey, blockShards, blockStats, nodeRawSum, quantizerFor, shrinkNode, treeSize, type BlockStats, type ShardBlock } from '../shared/tree-sum.ts';

/** Without a relay-expect yet, a relay with children waits this long before forwarding what it has. */
export const DEFAULT_RELAY_WAIT_MS = 2000;

export interface PhaseKey {
  iteration: number;
  phase: Phase;
  dStep: number;
}
export const phaseKey = (p: PhaseKey): string => `${p.iteration}/${p.phase}/${p.dStep}`;

/** One range of one block of a phase: its final value (as the coordinator would decode it) and the frame it travels in. */
export interface SumEntry extends PhaseKey {
  shardCount: number;
  block: ShardBlock;
  /** The range: final[i] is element offset + i of the block's gradient of `total` values. */
  offset: number;
  total: number;
  final: Float32Array;
  stats: BlockStats;
  frame: Uint8Array;
}

/** One element range of a phase. */
interface Lane {
  offset: number;
  entries: Map<string, SumEntry>;
  covered: Set<number>;
  flushed: boolean;
}

interface PhaseSums extends PhaseKey {
  shardCount: number;
  total: number;
  lanes: Map<number, Lane>;
  expected: Set<number> | null;
  waitMs: number;
  timer: ReturnType<typeof setTimeout> | null;
  /** The bounded wait ran out: every lane forwarded what it had, later ranges go up as they come. */
  timedOut: boolean;
}

export interface CombinerHooks {
  /** Sends one sum frame up (to the parent relay or the coordinator). */
  up(frame: Uint8Array, info: { key: string; block: ShardBlock; combined: number; offset: number }): void;
  /** Whether this worker has children now (without, it forwards at once). */
  hasChildren(): boolean;
  /** Values per range (the tree message's sumChunk). */
  chunk(): number;
  /** A forward after the bounded wait with shards still missing (logged by the caller). */
  timedOut(info: { key: string; missing: number; waitMs: number }): void;
}

export class SumCombiner {
  private readonly phases = new Map<string, PhaseSums>();

  constructor(
    private readonly wire: WireFormat,
    private readonly hooks: CombinerHooks,
  ) {}

  private phaseOf(p: PhaseKey, shardCount: number, total: number): PhaseSums {
    const key = phaseKey(p);
    let ph = this.phases.get(key);
    if (!ph) {
      ph = { iteration: p.iteration, phase: p.phase, dStep: p.dStep, shardCount, total, lanes: new Map(), expected: null, waitMs: DEFAULT_RELAY_WAIT_MS, timer: null, timedOut: false };
      this.phases.set(key, ph);
      // Only the newest few phases matter: older ones are finished at the coordinator.
      for (const [k, old] of this.phases) {
        if (this.phases.size <= 3) break;
        if (old.timer) clearTimeout(old.timer);
        this.phases.delete(k);
      }
    }
    // A relay-expect comes before any block: the first block tells the length.
    if (ph.total === 0) ph.total = total;
    return ph;
  }

  /** The coordinator's list of shards this subtree was handed in the phase (replaces the previous list). */
  expect(msg: RelayExpectMsg): void {
    const ph = this.phaseOf(msg, msg.shardCount, 0);
    ph.expected = new Set(msg.shards);
    ph.waitMs = msg.waitMs;
    for (const lane of ph.lanes.values()) this.maybeFlush(ph, lane);
  }

  /** A range of a block: this worker's own or a child's sum. */
  add(e: SumEntry): void {
    const ph = this.phaseOf(e, e.shardCount, e.total);
    if (e.shardCount !== ph.shardCount || e.total !== ph.total) return;
    let lane = ph.lanes.get(e.offset);
    if (!lane) ph.lanes.set(e.offset, (lane = { offset: e.offset, entries: new Map(), covered: new Set(), flushed: false }));
    const block = shrinkNode(e.block, ph.shardCount);
    const ids = blockShards(block, ph.shardCount);
    if (ids.every((id) => lane.covered.has(id))) return;
    if (lane.flushed || ph.timedOut) {
      for (const id of ids) lane.covered.add(id);
      lane.flushed = true;
      this.hooks.up(e.frame, { key: phaseKey(ph), block: e.block, combined: 1, offset: e.offset });
      return;
    }
    // Aligned blocks nest or are disjoint: a bigger one replaces those inside it.
    for (const [k, other] of lane.entries) {
      const o = shrinkNode(other.block, ph.shardCount);
      if (o.first >= block.first && o.first + o.count <= block.first + block.count) lane.entries.delete(k);
    }
    lane.entries.set(blockKey(block.first, block.count), { ...e, block });
    for (const id of ids) lane.covered.add(id);
    this.maybeFlush(ph, lane);
  }

  private maybeFlush(ph: PhaseSums, lane: Lane): void {
    if (lane.flushed || lane.entries.size === 0) return;
    const complete = ph.expected ? [...ph.expected].every((id) => lane.covered.has(id)) : !this.hooks.hasChildren();
    if (complete) {
      this.flush(ph, lane);
      // Every range of the phase went up: the bounded wait is over.
      if (ph.timer && ph.lanes.size >= rangeCount(ph.total, this.hooks.chunk()) && [...ph.lanes.values()].every((l) => l.flushed)) {
        clearTimeout(ph.timer);
        ph.timer = null;
      }
      return;
    }
    ph.timer ??= setTimeout(() => this.waitOver(ph), ph.waitMs);
  }

  /** The bounded wait ran out: every lane forwards what it has; later ranges go up one by one. */
  private waitOver(ph: PhaseSums): void {
    ph.timer = null;
    ph.timedOut = true;
    const missing = new Set<number>();
    for (const lane of ph.lanes.values()) {
      if (lane.flushed) continue;
      if (ph.expected) for (const id of ph.expected) if (!lane.covered.has(id)) missing.add(id);
      if (lane.entries.size > 0) this.flush(ph, lane);
    }
    if (missing.size > 0 || !ph.expected) this.hooks.timedOut({ key: phaseKey(ph), missing: missing.size, waitMs: ph.waitMs });
  }

  /** Sends the fewest aligned nodes covering what arrived in this lane, each combined over the fixed tree. */
  private flush(ph: PhaseSums, lane: Lane): void {
    lane.flushed = true;
    const S = ph.shardCount;
    const q = quantizerFor(this.wire);
    const known = (lo: number, size: number) => lane.entries.get(blockKey(lo, size))?.final ?? lane.entries.get(keyOf(shrinkNode({ first: lo, count: size }, S)))?.final;
    const knownStats = (lo: number, size: number) => lane.entries.get(blockKey(lo, size))?.stats ?? lane.entries.get(keyOf(shrinkNode({ first: lo, count: size }, S)))?.stats;
    const full = (lo: number, size: number) => {
      for (let id = lo; id < Math.min(lo + size, S); id++) if (!lane.covered.has(id)) return false;
      return true;
    };
    const cover: ShardBlock[] = [];
    const walk = (lo: number, size: number) => {
      if (lo >= S) return;
      if (full(lo, size)) return void cover.push(shrinkNode({ first: lo, count: size }, S));
      if (size > 1) {
        walk(lo, size / 2);
        walk(lo + size / 2, size / 2);
      }
    };
    walk(0, treeSize(S));
    for (const node of cover) {
      const one = lane.entries.get(keyOf(node));
      const inside = [...lane.entries.values()].filter((e) => e.block.first >= node.first && e.block.first < node.first + node.count).length;
      if (one) {
        this.hooks.up(one.frame, { key: phaseKey(ph), block: node, combined: 1, offset: lane.offset });
        continue;
      }
      const gradient = nodeRawSum(S, node, known, q);
      const stats = blockStats(S, node, knownStats);
      const frame = encode({ type: 'sum', iteration: ph.iteration, phase: ph.phase, dStep: ph.dStep, shardCount: S, firstShard: node.first, count: node.count, offset: lane.offset, total: ph.total, gradient, stats: { loss: stats.loss, dReal: stats.dReal, dFake: stats.dFake } }, { wire: this.wire });
      this.hooks.up(frame, { key: phaseKey(ph), block: node, combined: inside, offset: lane.offset });
    }
    lane.entries.clear();
  }

  /** Stops the timers (the worker is closing). */
  close(): void {
    for (const ph of this.phases.values()) if (ph.timer) clearTimeout(ph.timer);
    this.phases.clear();
  }
}

const keyOf = (b: ShardBlock): string => blockKey(b.first, b.count);
