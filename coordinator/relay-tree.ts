/**
 * The coordinator's relay tree (--fan-out f > 0): who relays for whom, the per-placement tickets,
 * and the tree messages that tell each worker its parent and its children. Placement rules are
 * coordinator/relay-plan.ts; the weights and sums that travel along the tree are the scheduler's
 * (coordinator/scheduler.ts) and the workers' (worker/tree-link.ts).
 *
 * Control star, data tree: every worker keeps its own authenticated session with the coordinator
 * (tasks, receipts, heartbeats, reports); only weights (down, in chunks) and gradient sums (up,
 * combined) move to the tree. A worker joins the tree when it sends relay-offer after its welcome
 * (its listener's URL, or '' for a leaf); until then, and for workers without the `relay`
 * feature, the star carries everything as before.
 *
 * Tickets: 16 random bytes per child and per placement, given to the child (with its parent's
 * URL) and to the parent (in its list of children to accept); a re-placement issues new ones, so
 * an old ticket cannot reach a new parent.
 */
import { randomBytes } from 'node:crypto';
import { ConfigError } from '../shared/errors.ts';
import { HALF_BLOCK } from '../shared/float16.ts';
import type { Logger } from '../shared/log.ts';
import { MAX_CHUNK_BYTES, MAX_TREE_CHILDREN } from '../shared/protocol.ts';
import { SUM_CHUNK_VALUES } from '../shared/sum-chunks.ts';
import { RELAY_CHUNK_BYTES } from '../shared/weights-chunks.ts';
import { RelayPlan, ROOT, type Move } from './relay-plan.ts';
import type { WorkerSession } from './session.ts';

interface Member {
  session: WorkerSession;
  /** Where children dial it; '' for a leaf. */
  url: string;
  /** The ticket it presents to its parent (its current placement's). */
  ticket: Uint8Array;
  /** Bytes of weights chunks it forwarded to its children (as sent by the coordinator: one copy per child). */
  bytesForwarded: number;
  /** Demoted after a report (digest mismatch, stall, unreachable, lost): it relays no more. */
  suspect: string | null;
  /** Children it had when a child reported it lost (RELAY_LOST): they moved before its session ended. */
  childrenAtLoss: number;
}

export interface RelayTreeEvents {
  /** Nodes whose parent changed (with their subtrees): they need the current weights directly. */
  moved(sessions: WorkerSession[]): void;
}

/** Range and chunk sizes of the tree's traffic (docs/performance.md "Relay tree"). */
export interface RelayTuning {
  /** Values per range of a sum going up (a multiple of the fp16 scale block). */
  sumChunk: number;
  /** Bytes per weights-chunk going down. */
  weightsChunkBytes: number;
}

/**
 * The sizes from GAN_RELAY_SUM_CHUNK and GAN_RELAY_CHUNK_BYTES, else the defaults. Environment
 * knobs, not flags: they exist to measure the chunk sizes (bench:relay-multihost), the defaults
 * are the measured choice.
 */
export function relayTuning(env: Record<string, string | undefined> = process.env): RelayTuning {
  const read = (name: string, dflt: number, ok: (n: number) => boolean, rule: string): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return dflt;
    const n = Number(raw);
    if (!Number.isInteger(n) || !ok(n)) throw new ConfigError('BAD_RELAY_TUNING', `${name}=${raw}: it must be ${rule}`);
    return n;
  };
  return {
    sumChunk: read('GAN_RELAY_SUM_CHUNK', SUM_CHUNK_VALUES, (n) => n >= HALF_BLOCK && n % HALF_BLOCK === 0 && n <= 1 << 26, `a multiple of ${HALF_BLOCK} values`),
    weightsChunkBytes: read('GAN_RELAY_CHUNK_BYTES', RELAY_CHUNK_BYTES, (n) => n >= 1024 && n <= MAX_CHUNK_BYTES, `1024 to ${MAX_CHUNK_BYTES} bytes`),
  };
}

export class RelayTree {
  private readonly plan: RelayPlan;
  private readonly members = new Map<number, Member>();
  /** Per relay, sessions that were in its subtree during the current phase (it vouches for their sums). */
  private formerly = new Map<number, Set<number>>();
  /** Counters for /status and the run's relay_summary line. */
  readonly counters = { weightsChunkBytes: 0, weightChanges: 0, weightCopies: 0, weightsDirectBytes: 0, heads: 0, sumsReceived: 0, sumsDropped: 0, resultsReceived: 0, phases: 0 };
  /** Per relay (sessionId): children whose sums did not come up through it (workerIds). */
  private readonly sumsMissingFrom = new Map<number, Set<string>>();
  /** workerId by sessionId, also for members gone (log lines name the relay a child moved away from). */
  private readonly names = new Map<number, string>();

  constructor(
    readonly fanOut: number,
    private readonly log: Logger,
    private readonly events: RelayTreeEvents,
    readonly tuning: RelayTuning = relayTuning(),
  ) {
    if (fanOut > MAX_TREE_CHILDREN) throw new RangeError(`--fan-out is at most ${MAX_TREE_CHILDREN}`);
    this.plan = new RelayPlan(fanOut);
  }

  isPlaced(s: WorkerSession): boolean {
    return this.members.has(s.sessionId);
  }

  /** Members whose parent is the coordinator: the chunks go to them. */
  topLevel(): WorkerSession[] {
    return this.plan.childrenOf(ROOT).map((id) => this.members.get(id)!.session);
  }

  /** Sessions in tree pre-order (each subtree contiguous, so its shards are a contiguous range), then the rest. */
  order(sessions: readonly WorkerSession[]): WorkerSession[] {
    const rank = new Map(this.plan.preorder().map((id, i) => [id, i]));
    return [...sessions].sort((a, b) => (rank.get(a.sessionId) ?? Infinity) - (rank.get(b.sessionId) ?? Infinity) || a.sessionId - b.sessionId);
  }

  /** The top-level subtree a session is in (its ancestor under the coordinator's session id); its own id outside the tree. */
  groupOf(s: WorkerSession): number {
    if (!this.members.has(s.sessionId)) return s.sessionId;
    const up = this.plan.ancestors(s.sessionId);
    return up.length > 0 ? up[up.length - 1]! : s.sessionId;
  }

  /** The member under the coordinator whose subtree holds `s` (s itself at the top level or outside the tree). */
  topOf(s: WorkerSession): WorkerSession {
    const up = this.members.has(s.sessionId) ? this.plan.ancestors(s.sessionId) : [];
    return up.length > 0 ? this.members.get(up[up.length - 1]!)!.session : s;
  }

  /** Sessions under `s` (itself included). */
  subtree(s: WorkerSession): WorkerSession[] {
    if (!this.members.has(s.sessionId)) return [s];
    return this.plan.subtree(s.sessionId).map((id) => this.members.get(id)!.session);
  }

  /** Relays with children now (relay-expect goes to them). */
  relays(): WorkerSession[] {
    return [...this.members.values()].filter((m) => this.plan.childrenOf(m.session.sessionId).length > 0).map((m) => m.session);
  }

  /** Whether `relay` may send sums for shards `holder` holds: holder is in its subtree, or was during this phase. */
  vouches(relay: WorkerSession, holder: WorkerSession): boolean {
    if (relay === holder) return true;
    if (this.formerly.get(relay.sessionId)?.has(holder.sessionId)) return true;
    return this.plan.ancestors(holder.sessionId).includes(relay.sessionId);
  }

  /** A new phase: vouching starts from the tree as it is. */
  beginPhase(): void {
    this.formerly.clear();
    this.counters.phases++;
  }

  /** A worker's relay-offer: it joins the tree (url '' = a leaf). */
  offer(s: WorkerSession, offered: string): void {
    if (this.members.has(s.sessionId)) return;
    const url = dialableUrl(offered, s.socket?.remoteAddress);
    this.members.set(s.sessionId, { session: s, url, ticket: newTicket(), bytesForwarded: 0, suspect: null, childrenAtLoss: 0 });
    this.names.set(s.sessionId, s.workerId);
    this.apply(this.plan.join(s.sessionId, url !== ''));
  }

  /**
   * A member's session ended: its children (with their subtrees) are re-parented. `quiet` when
   * the run is over and every worker is leaving: the tree is only forgotten.
   */
  leave(s: WorkerSession, quiet = false): void {
    if (!this.members.has(s.sessionId)) return;
    if (quiet) {
      this.plan.remove(s.sessionId);
      this.members.delete(s.sessionId);
      return;
    }
    const children = this.plan.childrenOf(s.sessionId).length;
    // A killed relay's children often notice before the coordinator does (their relay socket
    // closes first, they report RELAY_LOST and are moved at once): it is still a relay lost.
    const earlier = this.members.get(s.sessionId)!.childrenAtLoss;
    this.rememberSubtrees(s);
    const moves = this.plan.remove(s.sessionId);
    this.members.delete(s.sessionId);
    if (children > 0) this.log.warn({ event: 'relay_lost', worker: s.workerId, sessionId: s.sessionId, children }, `relay ${s.workerId} left; re-parenting its ${children} child(ren)`);
    else if (earlier > 0) this.log.warn({ event: 'relay_lost', worker: s.workerId, sessionId: s.sessionId, children: earlier, movedBefore: true }, `relay ${s.workerId} left; its ${earlier} child(ren) had already reported it lost and moved`);
    this.apply(moves);
  }

  /** A relay a child reported (bad digest, stall, unreachable, lost): it relays no more; its children move. */
  demote(s: WorkerSession, why: string): void {
    const m = this.members.get(s.sessionId);
    if (!m || m.suspect) return;
    m.suspect = why;
    if (why === 'RELAY_LOST') m.childrenAtLoss = this.plan.childrenOf(s.sessionId).length;
    this.rememberSubtrees(s);
    const moves = this.plan.demote(s.sessionId);
    this.log.warn({ event: 'relay_demoted', worker: s.workerId, sessionId: s.sessionId, code: why, moved: moves.length }, `relay ${s.workerId} is no longer used as a relay (${why})`);
    this.apply(moves);
    // Its own parent link is unchanged, but its list of children is now empty: tell it.
    this.sendTree(s.sessionId);
  }

  /**
   * A member's sums did not come up through its parent: it moves under the coordinator (its kept
   * sums then go there directly). Either it never sent them or the parent swallowed them; the
   * coordinator cannot tell which, so the parent is demoted only once a second child of it had
   * the same trouble (a lying child alone cannot take an honest relay out of the tree).
   */
  sumsMissing(s: WorkerSession, parent: WorkerSession): void {
    const m = this.members.get(parent.sessionId);
    if (!m) return;
    const blamed = (this.sumsMissingFrom.get(parent.sessionId) ?? new Set<string>()).add(s.workerId);
    this.sumsMissingFrom.set(parent.sessionId, blamed);
    this.apply(this.plan.toRoot(s.sessionId));
    if (blamed.size >= 2) this.demote(parent, 'RELAY_SUMS_MISSING');
  }

  /** The URL a member offered for its children ('' for a leaf or a non-member). */
  urlOf(s: WorkerSession): string {
    return this.members.get(s.sessionId)?.url ?? '';
  }

  /** The parent of a member (undefined: the coordinator, or not in the tree). */
  parentOf(s: WorkerSession): WorkerSession | undefined {
    const p = this.plan.parentOf(s.sessionId);
    return p === undefined || p === ROOT ? undefined : this.members.get(p)?.session;
  }

  /** Chunk bytes the coordinator sent to its children for one net: counted per forwarding relay too. */
  noteBroadcast(chunkBytes: number): void {
    this.counters.weightChanges++;
    this.counters.weightCopies += this.plan.childrenOf(ROOT).length;
    this.counters.weightsChunkBytes += chunkBytes * this.plan.childrenOf(ROOT).length;
    for (const m of this.members.values()) m.bytesForwarded += chunkBytes * this.plan.childrenOf(m.session.sessionId).length;
  }

  /** The tree for /status. */
  status(): Record<string, unknown> {
    return {
      fanOut: this.fanOut,
      topLevel: this.topLevel().map((s) => s.workerId),
      nodes: this.plan.preorder().map((id) => {
        const m = this.members.get(id)!;
        const parent = this.plan.parentOf(id)!;
        return {
          id: m.session.workerId,
          parent: parent === ROOT ? null : this.members.get(parent)!.session.workerId,
          depth: this.plan.depthOf(id),
          relay: m.url !== '' && !m.suspect,
          url: m.url || undefined,
          suspect: m.suspect ?? undefined,
          children: this.plan.childrenOf(id).map((c) => this.members.get(c)!.session.workerId),
          bytesRelayed: m.bytesForwarded,
        };
      }),
      coordinator: { ...this.counters },
    };
  }

  private rememberSubtrees(s: WorkerSession): void {
    // Sums its subtree sent it this phase may still come up through it (or through its ancestors).
    const under = this.plan.subtree(s.sessionId);
    for (const relay of [s.sessionId, ...this.plan.ancestors(s.sessionId)]) {
      const set = this.formerly.get(relay) ?? new Set<number>();
      for (const id of under) set.add(id);
      this.formerly.set(relay, set);
    }
  }

  /** Applies the planner's moves: new tickets, tree messages to every node whose parent or children changed. */
  private apply(moves: Move[]): void {
    const touched = new Set<number>();
    const moved: WorkerSession[] = [];
    for (const mv of moves) {
      const m = this.members.get(mv.id);
      if (!m) continue;
      m.ticket = newTicket();
      touched.add(mv.id);
      if (mv.to !== ROOT) touched.add(mv.to);
      if (mv.from !== undefined && mv.from !== ROOT && this.members.has(mv.from)) touched.add(mv.from);
      const parent = mv.to === ROOT ? 'coordinator' : this.members.get(mv.to)!.session.workerId;
      if (mv.from === undefined) {
        this.log.info(
          { event: 'relay_placed', worker: m.session.workerId, sessionId: m.session.sessionId, parent, depth: this.plan.depthOf(mv.id), relay: m.url !== '', overflow: mv.overflow || undefined },
          `relay tree: ${m.session.workerId} placed under ${parent}`,
        );
      } else {
        const from = mv.from === ROOT ? 'coordinator' : (this.names.get(mv.from) ?? `#${mv.from}`);
        this.log.info({ event: 'reparented', worker: m.session.workerId, sessionId: m.session.sessionId, from, to: parent, depth: this.plan.depthOf(mv.id), overflow: mv.overflow || undefined }, `relay tree: ${m.session.workerId} moves from ${from} to ${parent}`);
        moved.push(...this.plan.subtree(mv.id).map((id) => this.members.get(id)!.session));
      }
      if (mv.overflow) this.log.warn({ event: 'warning', code: 'RELAY_TREE_FULL', worker: m.session.workerId, fanOut: this.fanOut }, `no relay has room for ${m.session.workerId}; it hangs off the coordinator beyond --fan-out ${this.fanOut} (start more workers with --relay-listen)`);
    }
    // Parents first: a child may dial its new parent as soon as it hears of it.
    const order = [...touched].sort((a, b) => this.plan.depthOf(a) - this.plan.depthOf(b));
    for (const id of order) this.sendTree(id);
    if (moved.length > 0) this.events.moved([...new Set(moved)]);
  }

  private sendTree(id: number): void {
    const m = this.members.get(id);
    if (!m) return;
    const parent = this.plan.parentOf(id);
    const p = parent === undefined || parent === ROOT ? undefined : this.members.get(parent);
    m.session.send({
      type: 'tree',
      parentUrl: p ? p.url : '',
      ...(p ? { ticket: m.ticket } : {}),
      children: this.plan.childrenOf(id).map((c) => ({ workerId: this.members.get(c)!.session.workerId, ticket: this.members.get(c)!.ticket })),
      sumChunk: this.tuning.sumChunk,
    });
  }
}

function newTicket(): Uint8Array {
  return new Uint8Array(randomBytes(16));
}

/**
 * The URL children should dial for a relay that offered `url`. A relay listening on every
 * interface (`--relay-listen 0.0.0.0:8700` without --relay-advertise) offers ws://0.0.0.0:8700,
 * which on a child's machine means the child itself: put in the address the coordinator sees the
 * relay's connection come from instead (right on a LAN; behind NAT use --relay-advertise).
 */
export function dialableUrl(url: string, remoteAddress: string | undefined): string {
  if (url === '' || !remoteAddress) return url;
  const u = new URL(url);
  if (u.hostname !== '0.0.0.0' && u.hostname !== '[::]') return url;
  const ip = remoteAddress.startsWith('::ffff:') ? remoteAddress.slice('::ffff:'.length) : remoteAddress;
  u.hostname = ip.includes(':') ? `[${ip}]` : ip;
  return u.toString().replace(/\/$/, url.endsWith('/') ? '/' : '');
}
