/**
 * The coordinator's scheduling: one phase at a time, its micro-shards handed to the ready workers
 * in aligned blocks (coordinator/phase-run.ts), orphaned shards reassigned, overdue ones
 * duplicated, a seeded fraction verified on a second worker (coordinator/verify.ts); results
 * checked against what that worker was asked to compute, the phase's block sums applied to the
 * TrainingState once complete, and the changed net broadcast.
 */
import { createHash } from 'node:crypto';
import { encode, ReusableFrame } from '../shared/codec.ts';
import { sampleDim, type GanConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { codesOfRows, rowCodesOf, type RowCodes } from '../shared/data/row-codes.ts';
import type { Logger } from '../shared/log.ts';
import type { Net, ResultMsg, ShardSpec, WireFormat } from '../shared/protocol.ts';
import { chunkFrames } from '../shared/weights-chunks.ts';
import type { RelayTree } from './relay-tree.ts';
import type { RelayTreeMsg } from './session.ts';
import type { NetLayout } from '../shared/models.ts';
import { isRange, SumAssembly } from '../shared/sum-chunks.ts';
import { blockKey, blockShards, quantizerFor } from '../shared/tree-sum.ts';
import type { PhaseSummary, TrainingState } from '../trainer/training-state.ts';
import { PhaseRun, type Assignment, type StragglerPolicy } from './phase-run.ts';
import type { RunProgress } from './run-progress.ts';
import type { WorkerServer } from './server.ts';
import type { WorkerSession } from './session.ts';
import { selectVerifiedShards, type BanList } from './verify.ts';

export interface ScheduleConfig {
  straggler: StragglerPolicy;
  /** How often the phase loop re-checks for idle workers, orphaned and overdue shards (ms). */
  tickMs: number;
  /** With no workers, repeat the "waiting for workers" line this often (ms). */
  waitingLogMs: number;
  /** Fraction of shards recomputed on a second worker and compared bit for bit (0: none; coordinator/verify.ts). */
  verifyFraction?: number;
  /** --fan-out: children per node of the relay tree (0 or absent: the star; coordinator/relay-tree.ts). */
  fanOut?: number;
}

export interface SchedulerDeps {
  config: GanConfig;
  source: DataSource;
  state: TrainingState;
  layout: Record<Net, NetLayout>;
  schedule: ScheduleConfig;
  wire: WireFormat;
  log: Logger;
  server: WorkerServer;
  progress: RunProgress;
  banned: BanList;
  /** A stop was requested: the current phase is abandoned. */
  stopping(): boolean;
  /** Called on every tick of a phase (the coordinator's --status-interval lines). */
  tick(): void;
  /** The relay tree (--fan-out > 0), or null: the star. */
  tree: RelayTree | null;
}

/** A relay waits at least this long for its subtree's sums before forwarding what it has (ms). */
const RELAY_MIN_WAIT_MS = 2000;
/** ...and at most this long (ms). */
const RELAY_MAX_WAIT_MS = 60_000;
/** Beyond the relays' bounded waits, how long a receipted block's sum may take to reach the coordinator (ms). */
const RELAY_SUMS_GRACE_MS = 5000;

export class Scheduler {
  private phase: PhaseRun<WorkerSession> | null = null;
  private wakePhase: (() => void) | null = null;
  private nextTaskId = 1;
  /** -Infinity: the first "no workers" warning goes out at once (performance.now() starts at process start, not 0 s ago). */
  private lastWaitingLogAt = -Infinity;
  private lastVerifyWaitLogAt = -Infinity;
  /** `${workers}/${shards}` of the last WORKERS_IDLE warning ('' while every worker has work). */
  private idleWarnedFor = '';
  /** Each net's weights frames go into one buffer once every socket has sent the previous one (ReusableFrame). */
  private readonly weightFrames: Record<Net, ReusableFrame> = { G: new ReusableFrame(), D: new ReusableFrame() };
  /** Per relay (sessionId): the shard list of the last relay-expect it was sent, to send only changes. */
  private expectSent = new Map<number, string>();
  /** Per relay (sessionId): the bounded wait of its last relay-expect (ms). */
  private expectWait = new Map<number, number>();
  /** The current phase's sums being put back together from their ranges. */
  private sumParts: { run: PhaseRun<WorkerSession>; parts: SumAssembly } | null = null;
  /** Per tree worker (sessionId): blocks it reported done this phase (receipts) whose sums must come up the tree. */
  private receipted = new Map<number, { at: number; shards: number[]; parent: number | undefined }[]>();

  constructor(private readonly d: SchedulerDeps) {}

  private get readyWorkers(): WorkerSession[] {
    return this.d.server.readyWorkers;
  }

  /** Re-runs the phase loop now (a worker joined or left, a result came in). */
  wake(): void {
    this.wakePhase?.();
  }

  /** Shards of the current phase this worker still owes. */
  shardsHeld(session: WorkerSession): number {
    return this.phase?.owes(session) ?? 0;
  }

  /** The training set's one-byte row codes (computed once, shared/data/row-codes.ts), or null: not 8-bit, or a mixture. */
  rowCodes(): RowCodes | null {
    const { source } = this.d;
    return source.kind === 'finite' ? rowCodesOf(source.train) : null;
  }

  /** Plans the next phase, runs it to completion on the workers and applies it; null when a stop abandoned it. */
  async runPhase(): Promise<PhaseSummary | null> {
    const { state, schedule, log, progress } = this.d;
    const t0 = performance.now();
    const plan = state.planNext();
    const verified = selectVerifiedShards(this.d.config.train.seed, plan, plan.shards.length, schedule.verifyFraction ?? 0);
    const run = new PhaseRun<WorkerSession>(plan, schedule.straggler, verified);
    this.phase = run;
    this.d.tree?.beginPhase();
    this.expectSent.clear();
    this.expectWait.clear();
    this.receipted.clear();
    this.sumParts = null;
    this.warnIfWorkersIdle(plan.shards.length);
    progress.beginPhase();
    const tDispatch = performance.now();
    while (!run.done) {
      if (this.d.stopping()) {
        state.abandon(plan);
        this.phase = null;
        log.info({ event: 'phase_abandoned', iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, shardsIn: plan.shards.length - run.outstanding }, 'stopping: the unfinished phase is dropped and will be recomputed on resume');
        return null;
      }
      if (this.readyWorkers.length === 0) {
        const now = performance.now();
        if (now - this.lastWaitingLogAt >= schedule.waitingLogMs) {
          this.lastWaitingLogAt = now;
          log.warn({ event: 'warning', code: 'NO_WORKERS', iteration: plan.iteration, phase: plan.phase }, 'no workers connected; waiting for workers to join');
        }
      } else {
        this.lastWaitingLogAt = -Infinity;
      }
      this.dispatch();
      this.warnIfVerificationStuck(run);
      this.d.tick();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, schedule.tickMs);
        this.wakePhase = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wakePhase = null;
    }
    const tResults = performance.now();
    const summary = state.applyBlocks(plan, run.blocks());
    this.phase = null;
    const before = progress.ownMs();
    this.broadcastWeights(plan.phase);
    const broadcast = progress.ownMs();
    progress.endPhase(plan.phase, { t0, tDispatch, tResults, tEnd: performance.now(), broadcast }, before);
    return summary;
  }

  /** Hands out unassigned shards and duplicates overdue ones. */
  private dispatch(): void {
    const run = this.phase;
    if (!run || run.done) return;
    for (const late of run.overdue()) late.worker.noteOverdue(late.ageMs, late.first);
    const tree = this.d.tree;
    // In tree order, so each relay's subtree gets a contiguous range of shards whose blocks merge at the relay.
    const ready = tree ? tree.order(this.readyWorkers) : this.readyWorkers;
    const idle = ready.filter((w) => run.owes(w) === 0);
    // Each top-level subtree's range is aligned as a whole: its relay forwards the range's cover.
    const groupOf = tree ? (w: WorkerSession) => tree.groupOf(w) : undefined;
    const batches = [run.assignUnassigned(idle.length > 0 ? idle : ready, performance.now(), groupOf), run.assignVerification(ready)];
    batches.push(run.duplicateOverdue(ready.filter((w) => run.owes(w) === 0)));
    // Relays hear what their subtree owes before the subtree's tasks go out.
    this.sendExpectations();
    for (const b of batches) this.sendTasks(b);
    this.checkSumsArrive();
  }

  /**
   * A relay that takes its children's sums and never forwards them would hold the phase forever
   * (duplicates of the missing shards may go to the same subtree). A block a worker reported done
   * (receipt) whose shards are not final once every relay above it has had its bounded wait, plus
   * RELAY_SUMS_GRACE_MS, moves the worker under the coordinator, where it sends its kept sums
   * again (RelayTree.sumsMissing: the parent is demoted once two of its children had this trouble).
   */
  private checkSumsArrive(): void {
    const run = this.phase;
    const tree = this.d.tree;
    if (!run || !tree || this.receipted.size === 0) return;
    const now = performance.now();
    for (const s of this.readyWorkers) {
      let list = this.receipted.get(s.sessionId);
      if (!list) continue;
      // Blocks whose sums came up through this worker's own top-level subtree: it delivered.
      const top = tree.topOf(s);
      const delivered = (r: { shards: number[] }) => r.shards.every((id) => run.creditOf(id)?.includes(top));
      if (list.some(delivered)) s.late = false;
      list = list.filter((r) => !delivered(r) && r.shards.some((id) => !run.isFinal(id)));
      this.receipted.set(s.sessionId, list);
      const parent = tree.parentOf(s);
      if (!parent || list.length === 0) continue;
      let limit = RELAY_SUMS_GRACE_MS;
      for (let up: WorkerSession | undefined = parent; up; up = tree.parentOf(up)) limit += this.expectWait.get(up.sessionId) ?? RELAY_MIN_WAIT_MS;
      // Only blocks sent up while it had this parent (after a move they went to another one).
      const stuck = list.filter((r) => r.parent === parent.sessionId && now - r.at > limit && r.shards.some((id) => !run.isFinal(id)));
      if (stuck.length === 0) continue;
      this.receipted.delete(s.sessionId);
      const shards = stuck.flatMap((r) => r.shards).filter((id) => !run.isFinal(id));
      const { iteration, phase, dStep } = run.plan;
      this.d.log.warn(
        { event: 'warning', code: 'RELAY_SUMS_MISSING', worker: s.workerId, relay: parent.workerId, shards, ageMs: Math.round(now - Math.min(...stuck.map((r) => r.at))), iteration, phase, dStep },
        `${s.workerId} finished shard(s) ${shards.join(',')} but their sums have not come up through relay ${parent.workerId}; ${s.workerId} moves under the coordinator`,
      );
      tree.sumsMissing(s, parent);
    }
  }

  /**
   * relay-expect to each relay whose subtree's owed shards changed: it forwards its combined sums
   * once they are all in (or after a bounded wait, when a child is gone).
   */
  private sendExpectations(): void {
    const run = this.phase;
    const tree = this.d.tree;
    if (!run || !tree) return;
    const { plan } = run;
    for (const relay of tree.relays()) {
      const ids = new Set<number>();
      let slowest = 0;
      for (const s of tree.subtree(relay)) {
        const owed = run.owedBy(s);
        for (const id of owed) ids.add(id);
        // A late worker's estimate is the age of its overdue shard, which grows while it stalls;
        // its shards are duplicated elsewhere anyway, so the relay does not wait longer for it.
        if (!s.late) slowest = Math.max(slowest, owed.length * s.msPerShard);
      }
      const shards = Int32Array.from([...ids].sort((a, b) => a - b));
      const key = shards.join(',');
      if (this.expectSent.get(relay.sessionId) === key) continue;
      this.expectSent.set(relay.sessionId, key);
      const waitMs = Math.min(RELAY_MAX_WAIT_MS, Math.round(RELAY_MIN_WAIT_MS + 3 * slowest));
      this.expectWait.set(relay.sessionId, waitMs);
      relay.send({ type: 'relay-expect', iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, shardCount: plan.shards.length, shards, waitMs });
    }
  }

  private sendTasks(assignments: Assignment<WorkerSession>[]): void {
    const run = this.phase!;
    const { plan } = run;
    const { versions } = this.d.state;
    for (const a of assignments) {
      const taskId = this.nextTaskId++;
      const codes = a.worker.features.includes('rows-u8') ? this.rowCodes() : null;
      const shards: ShardSpec[] = a.shardIds.map((id) => {
        const s = plan.shards[id];
        const spec: ShardSpec = { shardId: s.shardId, seed: s.seed, rows: s.rows };
        // A byte per value instead of a float where the worker and the data set allow it.
        if (s.realRows && codes) spec.realCodes = codesOfRows(codes, sampleDim(this.d.config.model), s.realRows);
        else if (s.real) spec.real = s.real;
        if (s.realLabels) spec.realLabels = s.realLabels;
        return spec;
      });
      const blocks = run.blocksOf(a);
      a.worker.rememberTask(taskId, { iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, shardIds: new Set(a.shardIds), blocks: new Set(blocks.map((b) => blockKey(b.first, b.count))) });
      a.worker.send({ type: 'task', taskId, iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, gVersion: versions.G, dVersion: versions.D, shards, shardCount: plan.shards.length, blocks });
      if (a.duplicate) {
        this.d.log.info({ event: 'shard_duplicated', to: a.worker.workerId, shards: a.shardIds, iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep }, 'straggler: shard duplicated to an idle worker');
      }
    }
  }

  /** A result from a ready worker: checked against its task, then counted toward the phase (or dropped as late). */
  onResult(session: WorkerSession, msg: ResultMsg, recvMs = 0): void {
    const { server, progress, log } = this.d;
    const task = session.task(msg.taskId);
    const block = { first: msg.firstShard, count: msg.count };
    const key = blockKey(block.first, block.count);
    if (!task || !task.blocks.has(key) || task.iteration !== msg.iteration || task.phase !== msg.phase || task.dStep !== msg.dStep) {
      return server.reject(session, 'RESULT_NOT_ASSIGNED', `result for shard block [${msg.firstShard}, ${msg.firstShard} + ${msg.count}) of task ${msg.taskId} (iteration ${msg.iteration} ${msg.phase}) that was never handed to this worker`);
    }
    // Checked for late results too, so a wrong length is refused whatever the timing.
    const expected = this.d.layout[msg.phase as Net].total;
    if (msg.gradient.length !== expected) {
      return server.reject(session, 'GRADIENT_SIZE', `gradient for ${msg.phase} has ${msg.gradient.length} values; the model has ${expected}`);
    }
    session.proveAlive();
    const shardsIn = blockShards(block, this.d.config.train.shards).length;
    const run = this.phase;
    const current = run && run.plan.iteration === msg.iteration && run.plan.phase === msg.phase && run.plan.dStep === msg.dStep;
    if (!current) {
      // Still a timing sample: a straggler whose results always arrive after its shards were
      // duplicated must not keep its optimistic initial estimate (and its share of every phase).
      session.recordCompute(msg.computeMs, shardsIn);
      progress.noteCompute(session.sessionId, msg.computeMs, false);
      log.debug({ worker: session.label, iteration: msg.iteration, phase: msg.phase, firstShard: msg.firstShard, count: msg.count }, 'late result for a finished phase dropped');
      return;
    }
    if (this.d.tree) this.d.tree.counters.resultsReceived++;
    session.recordCompute(msg.computeMs, shardsIn);
    progress.noteCompute(session.sessionId, msg.computeMs, true);
    progress.noteResult(session.sessionId, recvMs, msg.timing);
    const verdict = run.accept(session, block, { gradient: msg.gradient, loss: msg.stats.loss, dReal: msg.stats.dReal, dFake: msg.stats.dFake });
    if (verdict === 'disputed' || verdict === 'wrong') {
      const { iteration, phase, dStep } = run.plan;
      log.warn(
        { event: 'warning', code: 'VERIFY_MISMATCH', workers: verdict === 'wrong' ? [session.workerId] : run.opinionGivers(msg.firstShard), shardId: msg.firstShard, iteration, phase, dStep, settled: verdict === 'wrong' },
        verdict === 'wrong' ? `worker ${session.workerId} returned a result that differs from the verified one` : `two workers disagree on shard ${msg.firstShard}; another worker decides`,
      );
    }
    for (const convicted of run.takeConvicted()) this.ban(convicted, msg.firstShard);
    // Whatever the verdict, the worker may be idle now (or the phase done).
    this.wake();
  }

  /** A relay-tree message from a ready session with the `relay` feature (coordinator/relay-tree.ts). */
  onTreeMessage(session: WorkerSession, msg: RelayTreeMsg, recvMs: number): void {
    const { tree } = this.d;
    if (!tree) return this.d.server.reject(session, 'UNEXPECTED_MESSAGE', 'this run has no relay tree (--fan-out 0)');
    switch (msg.type) {
      case 'relay-offer':
        tree.offer(session, msg.url);
        return this.wake();
      case 'receipt':
        return this.onReceipt(session, msg, recvMs);
      case 'sum':
        return this.onSum(session, msg);
      case 'relay-report':
        return this.onRelayReport(session, msg);
    }
  }

  /** A tree worker finished a block of its task (its gradient went up the tree): speed and liveness. */
  private onReceipt(session: WorkerSession, msg: RelayTreeMsg & { type: 'receipt' }, recvMs: number): void {
    const task = session.task(msg.taskId);
    if (!task || !task.blocks.has(blockKey(msg.firstShard, msg.count))) {
      return this.d.server.reject(session, 'RESULT_NOT_ASSIGNED', `receipt for shard block [${msg.firstShard}, ${msg.firstShard} + ${msg.count}) of task ${msg.taskId}, which was never handed to this worker`);
    }
    session.proveAlive();
    const run = this.phase;
    const current = run !== null && run.plan.iteration === task.iteration && run.plan.phase === task.phase && run.plan.dStep === task.dStep;
    // A receipt is the worker's word, not a result: while the worker is `late` (a shard of it went
    // overdue) its receipts neither clear that nor lower its estimate; checkSumsArrive clears it
    // once a block's sum really came up through the worker's own subtree. So a worker that reports
    // work it never delivers keeps the share of a straggler, as in the star.
    if (!session.late) session.recordCompute(msg.computeMs, blockShards({ first: msg.firstShard, count: msg.count }, this.d.config.train.shards).length);
    this.d.progress.noteCompute(session.sessionId, msg.computeMs, current);
    if (current) this.d.progress.noteResult(session.sessionId, recvMs, msg.timing);
    if (current && this.d.tree?.isPlaced(session)) {
      const list = this.receipted.get(session.sessionId) ?? [];
      list.push({ at: performance.now(), shards: blockShards({ first: msg.firstShard, count: msg.count }, run.plan.shards.length), parent: this.d.tree.parentOf(session)?.sessionId });
      this.receipted.set(session.sessionId, list);
    }
    this.wake();
  }

  /**
   * A range of a combined block from a top-level child of the tree (shared/sum-chunks.ts): kept
   * when its subtree was handed every shard of the block; a block counts once all its ranges are
   * in (SumAssembly, which also completes a block from ranges of blocks inside it).
   */
  private onSum(session: WorkerSession, msg: RelayTreeMsg & { type: 'sum' }): void {
    const { tree, log } = this.d;
    const expected = this.d.layout[msg.phase as Net].total;
    const chunk = tree!.tuning.sumChunk;
    if (msg.total !== expected) return this.d.server.reject(session, 'GRADIENT_SIZE', `sum for ${msg.phase} has ${msg.total} values; the model has ${expected}`);
    if (!isRange(msg.offset, msg.gradient.length, msg.total, chunk)) return this.d.server.reject(session, 'GRADIENT_SIZE', `sum range [${msg.offset}, ${msg.offset} + ${msg.gradient.length}) of ${msg.total} values is not a range of ${chunk} values`);
    session.proveAlive();
    if (msg.offset === 0) tree!.counters.sumsReceived++;
    const run = this.phase;
    const current = run && run.plan.iteration === msg.iteration && run.plan.phase === msg.phase && run.plan.dStep === msg.dStep && msg.shardCount === run.plan.shards.length;
    if (!current) return void log.debug({ worker: session.label, iteration: msg.iteration, phase: msg.phase, firstShard: msg.firstShard, count: msg.count, offset: msg.offset }, 'late sum for a finished phase dropped');
    const block = { first: msg.firstShard, count: msg.count };
    const vouches = (holder: WorkerSession) => tree!.vouches(session, holder);
    if (!run.mayRelay(block, vouches)) {
      // Dropped, not fatal: a child that died after its sum reached the relay has no holder any more.
      if (msg.offset === 0) {
        tree!.counters.sumsDropped++;
        log.warn({ event: 'warning', code: 'SUM_NOT_ASSIGNED', worker: session.label, iteration: msg.iteration, phase: msg.phase, firstShard: msg.firstShard, count: msg.count }, `sum for shards [${msg.firstShard}, ${msg.firstShard} + ${msg.count}) that ${session.workerId}'s subtree does not hold; dropped`);
      }
      return;
    }
    if (this.sumParts?.run !== run) this.sumParts = { run, parts: new SumAssembly(run.plan.shards.length, expected, chunk, quantizerFor(this.d.wire)) };
    const whole = this.sumParts.parts.add({ block, offset: msg.offset, values: msg.gradient, stats: msg.stats });
    for (const w of whole) run.acceptRelayed(session, w.block, { gradient: w.gradient, loss: w.stats.loss, dReal: w.stats.dReal, dFake: w.stats.dFake }, () => true);
    this.wake();
  }

  /** A child says its parent relay failed it: the relay is demoted (its children move) and the child gets the weights directly. */
  private onRelayReport(session: WorkerSession, msg: RelayTreeMsg & { type: 'relay-report' }): void {
    const { tree, log } = this.d;
    const parent = tree!.parentOf(session);
    const event = msg.code === 'RELAY_DIGEST_MISMATCH' ? 'relay_digest_mismatch' : 'relay_reported';
    log.warn({ event, code: msg.code, worker: session.workerId, relay: parent?.workerId ?? 'coordinator', net: msg.net, version: msg.version, detail: msg.detail }, `${session.workerId} reports ${msg.code} about ${parent ? `relay ${parent.workerId}` : 'the coordinator link'}: ${msg.detail}`);
    // Only about its current parent: a report about a relay it was already moved away from (the
    // relay closed the link as told, or died and was replaced) must not demote the new one.
    if (parent && tree!.urlOf(parent) === msg.parentUrl) tree!.demote(parent, msg.code);
    // Whatever happened, this worker gets the current weights from the coordinator itself.
    this.sendCurrentWeights([session]);
  }

  /** The current G and D straight to these sessions (after a re-parenting or a report), one encoding each. */
  sendCurrentWeights(sessions: readonly WorkerSession[]): void {
    const { state } = this.d;
    const frames = new Map<Net, Uint8Array>();
    for (const s of sessions) {
      if (s.state !== 'ready') continue;
      for (const net of ['G', 'D'] as const) {
        let frame = frames.get(net);
        if (!frame) frames.set(net, (frame = encode({ type: 'weights', net, version: state.versions[net], weights: state.weights[net] }, { wire: this.d.wire })));
        s.sendFrame(frame);
        s.known[net] = state.versions[net];
        if (this.d.tree) this.d.tree.counters.weightsDirectBytes += frame.byteLength;
      }
    }
  }

  /**
   * A worker returned a result that differs from one two other workers agree on: it is closed
   * with WS_CLOSE.banned, may not rejoin this run (its workerId is kept in banned.json), and all
   * it contributed to the current phase is recomputed.
   */
  private ban(session: WorkerSession, shardId: number): void {
    const { banned, log, server, state } = this.d;
    const run = this.phase;
    const recomputed = run ? run.discard(session) : [];
    const { iteration, phase, dStep } = run?.plan ?? { iteration: state.iteration, phase: undefined, dStep: undefined };
    const reason = `its result for shard ${shardId} of iteration ${iteration}${phase ? ` ${phase}` : ''} differs from the one other workers agree on`;
    if (!banned.has(session.workerId)) banned.add({ workerId: session.workerId, reason, iteration, at: new Date().toISOString() });
    log.warn(
      { event: 'worker_banned', code: 'WRONG_RESULT', worker: session.workerId, sessionId: session.sessionId, address: session.address, backend: session.backend, shardId, iteration, phase, dStep, recomputed, banned: banned.size },
      `worker ${session.workerId} banned: ${reason}`,
    );
    for (const s of [...server.sessions.values()]) {
      if (s.workerId === session.workerId && s.state !== 'closed') server.reject(s, 'BANNED', `banned from this run: ${reason}`);
    }
  }

  /** Once per admitted session: its unfinished shards go back to the pool, and it is logged. */
  depart(session: WorkerSession, code: number, reason: string): void {
    if (!session.admitted || session.departed) return;
    session.departed = true;
    const { log } = this.d;
    const orphaned = this.phase ? this.phase.release(session) : [];
    this.d.tree?.leave(session, this.d.stopping());
    // Relays must not wait for shards a departed worker owed.
    this.sendExpectations();
    log.info(
      { event: 'worker_left', worker: session.workerId, sessionId: session.sessionId, address: session.address, backend: session.backend, code, reason: reason || undefined, shardsDone: session.shardsDone, workers: this.readyWorkers.length },
      `worker ${session.workerId} left`,
    );
    if (orphaned.length > 0 && this.phase) {
      const { iteration, phase, dStep } = this.phase.plan;
      log.info({ event: 'shard_reassigned', from: session.workerId, shards: orphaned, iteration, phase, dStep }, `${orphaned.length} unfinished shard(s) go back to the pool`);
    }
    this.wake();
  }

  /**
   * Verified shards wait for a second (or tie-breaking) worker rather than count unverified; when
   * no connected worker may check them, say so at once and then every waitingLogMs.
   */
  private warnIfVerificationStuck(run: PhaseRun<WorkerSession>): void {
    if (run.verified.size === 0 || run.done || this.readyWorkers.length === 0) return;
    const waiting = run.awaitingOpinion();
    if (waiting.shards.length === 0) {
      this.lastVerifyWaitLogAt = -Infinity;
      return;
    }
    const now = performance.now();
    if (now - this.lastVerifyWaitLogAt < this.d.schedule.waitingLogMs) return;
    this.lastVerifyWaitLogAt = now;
    const { iteration, phase, dStep } = run.plan;
    const code = waiting.disputed ? 'VERIFY_NEEDS_ANOTHER_WORKER' : 'VERIFY_NEEDS_TWO_WORKERS';
    const on = waiting.backend ? ` on backend ${waiting.backend}` : '';
    this.d.log.warn(
      { event: 'warning', code, iteration, phase, dStep, shards: waiting.shards, backend: waiting.backend ?? undefined, workers: this.readyWorkers.length },
      waiting.disputed
        ? `workers disagree on shard(s) ${waiting.shards.join(',')} and no other worker${on} is connected to decide; waiting for one to join`
        : `--verify-fraction needs results from two different workers${on}; waiting for another worker to join (nothing unverified is applied)`,
    );
  }

  /**
   * More workers than shards: the rest idle every phase. Said once per (workers, shards) pair,
   * with the --shards that would use them all (a divisor of the batch, so it is valid).
   */
  private warnIfWorkersIdle(shards: number): void {
    const workers = this.readyWorkers.filter((w) => !w.late).length;
    const key = workers > shards ? `${workers}/${shards}` : '';
    if (key === this.idleWarnedFor) return;
    this.idleWarnedFor = key;
    if (!key) return;
    const { batchSize } = this.d.config.train;
    let suggest = workers;
    while (suggest < batchSize && batchSize % suggest !== 0) suggest++;
    this.d.log.warn(
      { event: 'warning', code: 'WORKERS_IDLE', workers, shardsPerPhase: shards, idle: workers - shards, suggestShards: suggest },
      `${workers} workers share ${shards} shard(s) per phase, so ${workers - shards} idle in every phase; a run with --shards ${suggest} (a divisor of --batch-size ${batchSize}) would use them all`,
    );
  }

  /** After an update, every worker gets the net that changed (and only that one). */
  private broadcastWeights(net: Net): void {
    const { state } = this.d;
    const version = state.versions[net];
    const weights = state.weights[net];
    let frame: Uint8Array | null = null;
    const tree = this.d.tree;
    let head: Uint8Array | null = null;
    for (const s of this.readyWorkers) {
      if (s.known[net] === version) continue;
      if (tree?.isPlaced(s)) {
        // Tree members get the digest directly and the bytes through the tree (chunks below).
        if (!frame) frame = this.encodeWeights(net, version, weights);
        head ??= encode({ type: 'weights-head', net, version, bytes: frame.byteLength, sha256: new Uint8Array(createHash('sha256').update(frame).digest()) });
        s.sendFrame(head);
        tree.counters.heads++;
        s.known[net] = version;
        continue;
      }
      // One encoding of a multi-megabyte net serves every worker.
      if (!frame) frame = this.encodeWeights(net, version, weights);
      s.sendFrame(frame);
      s.known[net] = version;
    }
    if (tree && head && frame) {
      const chunks = chunkFrames(frame, net, version, tree.tuning.weightsChunkBytes);
      for (const s of tree.topLevel()) for (const c of chunks) s.sendFrame(c);
      tree.noteBroadcast(chunks.reduce((a, c) => a + c.byteLength, 0));
    }
  }

  private encodeWeights(net: Net, version: number, weights: Float32Array): Uint8Array {
    const t0 = performance.now();
    // One buffer per net, written over once every socket has sent the previous frame (chunks included).
    const free = [...this.d.server.sessions.values()].every((x) => x.flushed);
    const frame = this.weightFrames[net].encode({ type: 'weights', net, version, weights }, { wire: this.d.wire }, free);
    this.d.progress.addCodec(performance.now() - t0);
    return frame;
  }
}
