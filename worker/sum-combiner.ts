/**
 * Gradients up the relay tree: a relay collects the phase's aligned blocks of its subtree (its
 * own, and the sums its children send), and forwards the fewest aligned nodes that cover them,
 * each combined with shared/tree-sum.ts (nodeRawSum: the same tree, so the coordinator decodes
 * exactly the node's value whoever combined it, and the root stays bit-identical to gan-train).
 *
 * It forwards once the blocks cover every shard the coordinator said the subtree was handed
 * (relay-expect), or after the bounded wait with whatever it has (a child may be gone; its shards
 * are reassigned and come up later, one by one). A worker without children forwards at once.
 * A block that is one received block is forwarded as the frame it came in (never re-encoded:
 * with --wire fp16 that would round it twice). Blocks already covered are dropped (duplicates
 * are harmless anyway: the coordinator keeps the first cover).
 *
 * Imports nothing Node-only.
 */
import { encode } from '../shared/codec.ts';
import type { Phase, RelayExpectMsg, WireFormat } from '../shared/protocol.ts';
import { blockKey, blockShards, blockStats, nodeRawSum, quantizerFor, shrinkNode, treeSize, type BlockStats, type ShardBlock } from '../shared/tree-sum.ts';

/** Without a relay-expect yet, a relay with children waits this long before forwarding what it has. */
export const DEFAULT_RELAY_WAIT_MS = 2000;

export interface PhaseKey {
  iteration: number;
  phase: Phase;
  dStep: number;
}
export const phaseKey = (p: PhaseKey): string => `${p.iteration}/${p.phase}/${p.dStep}`;

/** One block of a phase: its final value (as the coordinator would decode it) and the frame it travels in. */
export interface SumEntry extends PhaseKey {
  shardCount: number;
  block: ShardBlock;
  final: Float32Array;
  stats: BlockStats;
  frame: Uint8Array;
}

interface PhaseSums extends PhaseKey {
  shardCount: number;
  entries: Map<string, SumEntry>;
  covered: Set<number>;
  expected: Set<number> | null;
  waitMs: number;
  timer: ReturnType<typeof setTimeout> | null;
  flushed: boolean;
}

export interface CombinerHooks {
  /** Sends one sum frame up (to the parent relay or the coordinator). */
  up(frame: Uint8Array, info: { key: string; block: ShardBlock; combined: number }): void;
  /** Whether this worker has children now (without, it forwards at once). */
  hasChildren(): boolean;
  /** A forward after the bounded wait with shards still missing (logged by the caller). */
  timedOut(info: { key: string; missing: number; waitMs: number }): void;
}

export class SumCombiner {
  private readonly phases = new Map<string, PhaseSums>();

  constructor(
    private readonly wire: WireFormat,
    private readonly hooks: CombinerHooks,
  ) {}

  private phaseOf(p: PhaseKey, shardCount: number): PhaseSums {
    const key = phaseKey(p);
    let ph = this.phases.get(key);
    if (!ph) {
      ph = { iteration: p.iteration, phase: p.phase, dStep: p.dStep, shardCount, entries: new Map(), covered: new Set(), expected: null, waitMs: DEFAULT_RELAY_WAIT_MS, timer: null, flushed: false };
      this.phases.set(key, ph);
      // Only the newest few phases matter: older ones are finished at the coordinator.
      for (const [k, old] of this.phases) {
        if (this.phases.size <= 3) break;
        if (old.timer) clearTimeout(old.timer);
        this.phases.delete(k);
      }
    }
    return ph;
  }

  /** The coordinator's list of shards this subtree was handed in the phase (replaces the previous list). */
  expect(msg: RelayExpectMsg): void {
    const ph = this.phaseOf(msg, msg.shardCount);
    ph.expected = new Set(msg.shards);
    ph.waitMs = msg.waitMs;
    this.maybeFlush(ph);
  }

  /** A block: this worker's own or a child's sum. */
  add(e: SumEntry): void {
    const ph = this.phaseOf(e, e.shardCount);
    if (e.shardCount !== ph.shardCount) return;
    const block = shrinkNode(e.block, ph.shardCount);
    const ids = blockShards(block, ph.shardCount);
    if (ids.every((id) => ph.covered.has(id))) return;
    if (ph.flushed) {
      for (const id of ids) ph.covered.add(id);
      this.hooks.up(e.frame, { key: phaseKey(ph), block: e.block, combined: 1 });
      return;
    }
    // Aligned blocks nest or are disjoint: a bigger one replaces those inside it.
    for (const [k, other] of ph.entries) {
      const o = shrinkNode(other.block, ph.shardCount);
      if (o.first >= block.first && o.first + o.count <= block.first + block.count) ph.entries.delete(k);
    }
    ph.entries.set(blockKey(block.first, block.count), { ...e, block });
    for (const id of ids) ph.covered.add(id);
    this.maybeFlush(ph);
  }

  private maybeFlush(ph: PhaseSums): void {
    if (ph.flushed || ph.entries.size === 0) return;
    const complete = ph.expected ? [...ph.expected].every((id) => ph.covered.has(id)) : !this.hooks.hasChildren();
    if (complete) return this.flush(ph);
    ph.timer ??= setTimeout(() => {
      ph.timer = null;
      if (ph.flushed) return;
      const missing = ph.expected ? [...ph.expected].filter((id) => !ph.covered.has(id)).length : 0;
      this.hooks.timedOut({ key: phaseKey(ph), missing, waitMs: ph.waitMs });
      this.flush(ph);
    }, ph.waitMs);
  }

  /** Sends the fewest aligned nodes covering what arrived, each combined over the fixed tree. */
  private flush(ph: PhaseSums): void {
    ph.flushed = true;
    if (ph.timer) clearTimeout(ph.timer);
    ph.timer = null;
    const S = ph.shardCount;
    const q = quantizerFor(this.wire);
    const known = (lo: number, size: number) => ph.entries.get(blockKey(lo, size))?.final ?? ph.entries.get(keyOf(shrinkNode({ first: lo, count: size }, S)))?.final;
    const knownStats = (lo: number, size: number) => ph.entries.get(blockKey(lo, size))?.stats ?? ph.entries.get(keyOf(shrinkNode({ first: lo, count: size }, S)))?.stats;
    const full = (lo: number, size: number) => {
      for (let id = lo; id < Math.min(lo + size, S); id++) if (!ph.covered.has(id)) return false;
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
      const one = ph.entries.get(keyOf(node));
      const inside = [...ph.entries.values()].filter((e) => e.block.first >= node.first && e.block.first < node.first + node.count).length;
      if (one) {
        this.hooks.up(one.frame, { key: phaseKey(ph), block: node, combined: 1 });
        continue;
      }
      const gradient = nodeRawSum(S, node, known, q);
      const stats = blockStats(S, node, knownStats);
      const frame = encode({ type: 'sum', iteration: ph.iteration, phase: ph.phase, dStep: ph.dStep, shardCount: S, firstShard: node.first, count: node.count, gradient, stats: { loss: stats.loss, dReal: stats.dReal, dFake: stats.dFake } }, { wire: this.wire });
      this.hooks.up(frame, { key: phaseKey(ph), block: node, combined: inside });
    }
    ph.entries.clear();
  }

  /** Stops the timers (the worker is closing). */
  close(): void {
    for (const ph of this.phases.values()) if (ph.timer) clearTimeout(ph.timer);
    this.phases.clear();
  }
}

const keyOf = (b: ShardBlock): string => blockKey(b.first, b.count);
