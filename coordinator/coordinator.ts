/**
 * The coordinator: holds the master weights and optimizer state (a TrainingState) and trains
 * them with workers. It composes the parts, each owning one responsibility:
 *   coordinator/server.ts     listen, TLS, HTTP routes, connection admission, heartbeats
 *   coordinator/session.ts    one worker's state machine (hello, challenge, auth, ready)
 *   coordinator/scheduler.ts  phases, shards, reassignment, duplication, verification, results
 *   coordinator/run-progress.ts  progress lines and where the time went
 *   trainer/loop.ts           the schedule (log, sample, eval, checkpoint, export, stop), for
 *                             which the coordinator is the distributed PhaseExecutor
 * What is left here: admission (bans, replacing a stale connection, the welcome), the status
 * the HTTP side serves, report.html, and the run's start and end.
 *
 * Nothing from the network is trusted: every frame is decoded and validated, every result is
 * checked against what that worker was actually asked to compute, and a peer that breaks the
 * protocol is disconnected with a reason while training goes on.
 */
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { floatPayloadBytes, type DecodeLimits } from '../shared/codec.ts';
import type { GanConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { ConfigError } from '../shared/errors.ts';
import { clip, tapLog, type Logger } from '../shared/log.ts';
import { PROTOCOL_FEATURES, type ByeCode, type ProtocolFeature, type WireFormat } from '../shared/protocol.ts';
import { GanReplica } from '../shared/replica.ts';
import { TrainingState, type PhaseSummary, type TrainingSnapshot } from '../trainer/training-state.ts';
import type { PeriodicEvaluation } from '../trainer/eval/periodic.ts';
import { Trainer, type CheckpointSchedule, type PhaseExecutor, type TrainResult } from '../trainer/loop.ts';
import { COORDINATOR_FLAGS } from './cli-specs.ts';
import { maxQueuedBytesFor } from './connection-limits.ts';
import { createHttpHandler, type Route } from './http.ts';
import { Telemetry } from './metrics.ts';
import { REPORT_FILE, writeRunReport } from './run-report.ts';
import { RunProgress } from './run-progress.ts';
import { Scheduler, type ScheduleConfig } from './scheduler.ts';
import { LOOPBACK, serverRoutes, WorkerServer, type NetworkConfig } from './server.ts';
import { WorkerPackage } from './package-tarball.ts';
import type { SessionContext, WorkerSession } from './session.ts';
import { BanList } from './verify.ts';
import { RelayTree } from './relay-tree.ts';

export type { NetworkConfig } from './server.ts';
export type { ScheduleConfig } from './scheduler.ts';

export interface ReportConfig {
  /** A progress line after every N-th iteration (iteration % N === 0). */
  logEvery: number;
  /** ...and at least this often (ms) while iterations complete. */
  statusIntervalMs: number;
  /** Write a sample grid every N iterations (0: only at the end). */
  sampleEvery: number;
}

export type CheckpointConfig = CheckpointSchedule;

export interface CoordinatorOptions {
  config: GanConfig;
  source: DataSource;
  runDir: string;
  log: Logger;
  backendName: string;
  network: NetworkConfig;
  schedule: ScheduleConfig;
  report: ReportConfig;
  checkpoint: CheckpointConfig;
  snapshot?: TrainingSnapshot;
  /** --eval-every: evaluate G every N iterations and at the end, logged as `eval` (trainer/eval/periodic.ts); absent: off. */
  evaluation?: PeriodicEvaluation | null;
  /** More HTTP routes beside the dashboard's (coordinator/http.ts Route). */
  routes?: Route[];
}

export const DEFAULT_NETWORK: Omit<NetworkConfig, 'host' | 'port' | 'token' | 'insecure'> = {
  heartbeatMs: 5000,
  handshakeTimeoutMs: 10000,
  maxPendingHandshakes: 64,
};

export const DEFAULT_SCHEDULE: ScheduleConfig = {
  // The CLI's defaults, declared with their flags.
  straggler: { factor: COORDINATOR_FLAGS['straggler-factor']!.default!, minMs: COORDINATOR_FLAGS['straggler-min-ms']!.default! },
  tickMs: 50,
  waitingLogMs: 10000,
};

export type RunResult = TrainResult;

/**
 * Largest frame accepted before the handshake completes (a hello or auth is well under 1 KB).
 * It is ws's own limit until admission, so a larger declared length is refused (close 1009) from
 * the frame header, before anything is buffered.
 */
export const HANDSHAKE_FRAME_BYTES = 16 * 1024;

export class Coordinator implements PhaseExecutor {
  readonly state: TrainingState;
  readonly replica: GanReplica;
  readonly runId = randomUUID();
  private readonly server: WorkerServer;
  private readonly scheduler: Scheduler;
  private readonly progress: RunProgress;
  private readonly sessionContext: SessionContext;
  private stopRequested = false;
  /** Set by --linger (coordinator/linger.ts) while the finished run's HTTP side stays up. */
  lingerUntil: string | null = null;
  private workersReleased = false;
  /** --wire (config.train.wire): how weights and gradients travel; every worker must speak it. */
  private readonly wire: WireFormat;
  private log: Logger;
  /** Prometheus metrics and the dashboard's history (coordinator/metrics.ts). */
  readonly telemetry: Telemetry;
  /** Frame bytes of sessions already closed (live sessions count their own). */
  private retiredBytes = { sent: 0, received: 0 };
  /** Workers caught returning wrong results (--verify-fraction); they may not rejoin this run. */
  readonly banned: BanList;
  /** Bytes that may queue for one worker in user space before it is dropped as SLOW_CONSUMER. */
  readonly maxQueuedBytes: number;
  /** The relay tree (--fan-out > 0, without --verify-fraction), or null: the star. */
  readonly tree: RelayTree | null;

  constructor(readonly opts: CoordinatorOptions) {
    const { network, config } = opts;
    if (!network.token && !network.insecure && !LOOPBACK.has(network.host)) {
      throw new ConfigError(
        'INSECURE_LISTEN',
        `refusing to listen on ${network.host} without a token: set GAN_TOKEN or --token-file, or pass --insecure if this network is trusted`,
      );
    }
    this.log = opts.log;
    this.replica = new GanReplica(config);
    this.state = new TrainingState(config, opts.source, this.replica.layout, opts.snapshot);
    const maxFloats = Math.max(this.replica.layout.G.total, this.replica.layout.D.total);
    this.wire = config.train.wire ?? 'fp32';
    // The largest frame a worker legitimately sends is one result: a gradient plus a few fields.
    const limits: DecodeLimits = { maxFrameBytes: floatPayloadBytes(maxFloats, this.wire) + 64 * 1024, maxFloats, maxShards: config.train.shards, wire: this.wire };
    const handshakeLimits = { ...limits, maxFrameBytes: Math.min(limits.maxFrameBytes, HANDSHAKE_FRAME_BYTES) };
    this.maxQueuedBytes = maxQueuedBytesFor(config, this.replica.layout.G.total + this.replica.layout.D.total);
    this.telemetry = new Telemetry(
      {
        iteration: () => this.state.iteration,
        iterations: () => config.train.iterations,
        epoch: () => this.state.epoch,
        workers: () => this.readyWorkers.length,
        bytes: () => this.bytesTotal(),
      },
      config.train.batchSize,
    );
    // A resumed run's dashboard shows the curve from the start, not from the resume point.
    if (opts.snapshot) this.telemetry.replayLog(join(opts.runDir, 'log.jsonl'), this.state.iteration);
    tapLog(this.log, (rec) => this.telemetry.observe(rec));
    this.banned = new BanList(opts.runDir, Boolean(opts.snapshot));
    this.progress = new RunProgress(config.train.batchSize, this.telemetry, this.log, opts.report.statusIntervalMs);
    const workerPackage = new WorkerPackage();
    const routes = [...serverRoutes({ network, workerPackage, exportDir: join(opts.runDir, 'export'), runId: this.runId, model: config.model.kind, finished: () => this.state.finished, log: this.log }), ...(opts.routes ?? [])];
    const http = createHttpHandler({ status: () => this.status(), telemetry: this.telemetry, samplesDir: join(opts.runDir, 'samples'), reportFile: join(opts.runDir, REPORT_FILE), log: this.log, routes });
    this.server = new WorkerServer({
      network,
      log: this.log,
      http,
      workerPackage,
      handshakeLimits,
      limits,
      maxQueuedBytes: this.maxQueuedBytes,
      clock: this.progress,
      events: {
        refusing: () => this.stopRequested,
        // A frame goes from the server straight into its session's state machine.
        message: (session, msg, recvMs) => session.receive(msg, recvMs, this.sessionContext),
        departed: (session, code, reason) => this.scheduler.depart(session, code, reason),
        closed: (session) => this.onClosed(session),
      },
    });
    const fanOut = opts.schedule.fanOut ?? 0;
    const verifying = (opts.schedule.verifyFraction ?? 0) > 0;
    // Relay links are plain ws:// between workers: a digest guards the weights coming down, but
    // the sums going up would cross them unencrypted and unauthenticated after the handshake,
    // which is not what a user who asked for TLS expects. Until relays speak TLS, TLS means the star.
    const overTls = opts.network.tls != null;
    if (fanOut > 0 && verifying) {
      // Verified shards are compared per worker and per shard; combined sums would hide who computed what.
      this.log.warn({ event: 'warning', code: 'RELAY_TREE_OFF', fanOut, verifyFraction: opts.schedule.verifyFraction }, '--fan-out is ignored with --verify-fraction > 0: verification compares per-worker results, so every worker reports to the coordinator directly (the star)');
    } else if (fanOut > 0 && overTls) {
      this.log.warn({ event: 'warning', code: 'RELAY_TREE_OFF', fanOut, tls: true }, '--fan-out is ignored with --tls-cert: relay links between workers are not encrypted, so every worker reports to the coordinator over TLS directly (the star)');
    }
    this.tree = fanOut > 0 && !verifying && !overTls ? new RelayTree(fanOut, this.log, { moved: (sessions) => this.scheduler.sendCurrentWeights(sessions) }) : null;
    this.scheduler = new Scheduler({
      config,
      source: opts.source,
      state: this.state,
      layout: this.replica.layout,
      schedule: opts.schedule,
      wire: this.wire,
      log: this.log,
      server: this.server,
      progress: this.progress,
      banned: this.banned,
      stopping: () => this.stopRequested,
      tick: () => this.reportProgress(false),
      tree: this.tree,
    });
    this.sessionContext = {
      token: network.token,
      wire: this.wire,
      browserWorkers: network.browserWorkers !== false,
      log: this.log,
      reject: (session, code, reason) => this.server.reject(session, code, reason),
      admit: (session) => this.admit(session),
      result: (session, msg, recvMs) => this.scheduler.onResult(session, msg, recvMs),
      tree: (session, msg, recvMs) => this.scheduler.onTreeMessage(session, msg, recvMs),
    };
  }

  /** Frame bytes sent to and received from workers since this coordinator started. */
  bytesTotal(): { sent: number; received: number } {
    let { sent, received } = this.retiredBytes;
    for (const s of this.server.sessions.values()) {
      sent += s.bytesOut;
      received += s.bytesIn;
    }
    return { sent, received };
  }

  get address(): AddressInfo {
    return this.server.address;
  }

  get readyWorkers(): WorkerSession[] {
    return this.server.readyWorkers;
  }

  /** Binds the HTTP + WebSocket server. */
  listen(): Promise<AddressInfo> {
    return this.server.listen();
  }

  // ---------------------------------------------------------------- HTTP

  status(): Record<string, unknown> {
    const key = this.state.finished ? null : this.state.nextKey();
    const { train, model } = this.opts.config;
    const bytes = this.bytesTotal();
    return {
      runId: this.runId,
      iteration: this.state.iteration,
      iterations: this.opts.config.train.iterations,
      epoch: this.state.epoch,
      phase: key,
      finished: this.state.finished,
      stopping: this.stopRequested,
      /** --linger: the run is over and this server stays up until then (ISO time), else null. */
      lingerUntil: this.lingerUntil,
      versions: this.state.versions,
      run: {
        dataset: train.dataset,
        model: model.kind,
        batchSize: train.batchSize,
        shards: train.shards,
        dSteps: train.dSteps,
        seed: train.seed,
        backend: this.opts.backendName,
        wire: this.wire,
        gEma: train.gEma ?? 0,
      },
      mbSent: Number((bytes.sent / 1e6).toFixed(2)),
      mbReceived: Number((bytes.received / 1e6).toFixed(2)),
      workers: this.readyWorkers.map((s) => ({
        id: s.workerId,
        host: s.host,
        address: s.address,
        backend: s.backend,
        shardsDone: s.shardsDone,
        shardsOverdue: s.shardsOverdue,
        shardsHeld: this.scheduler.shardsHeld(s),
        msPerShard: Number(s.msPerShard.toFixed(2)),
        connectedAt: new Date(s.connectedAt).toISOString(),
        lastSeen: new Date(s.lastSeen).toISOString(),
        parent: this.tree?.isPlaced(s) ? (this.tree.parentOf(s)?.workerId ?? 'coordinator') : undefined,
      })),
      /** The relay tree (--fan-out), or null for the star. */
      tree: this.tree?.status() ?? null,
    };
  }

  // ---------------------------------------------------------------- sessions

  /** The handshake passed: refuse a banned worker, replace a stale connection of the same id, welcome it. */
  private admit(session: WorkerSession): void {
    const ban = this.banned.get(session.workerId);
    if (ban) return this.server.reject(session, 'BANNED', `worker ${session.workerId} is banned from this run: ${ban.reason}`);
    // A reconnecting worker (same id) replaces its stale connection.
    for (const other of this.server.sessions.values()) {
      if (other !== session && other.state === 'ready' && other.workerId === session.workerId) {
        this.server.reject(other, 'REPLACED', 'a newer connection with the same worker id took over');
      }
    }
    session.assumeSpeedOf(this.readyWorkers);
    // Optional features (shared/protocol.ts PROTOCOL_FEATURES) only for workers that listed them.
    const listed = (f: ProtocolFeature) => session.capabilities.includes(f);
    const rowCodes = this.scheduler.rowCodes();
    const usable: Record<ProtocolFeature, boolean> = {
      timing: true,
      // Only where the data set is 8-bit.
      'rows-u8': rowCodes !== null,
      // The tree's relays combine ranges: a worker whose sums are whole (an older build) stays in the star.
      relay: this.tree !== null && listed('sum-chunks'),
      'sum-chunks': this.tree !== null,
    };
    session.enterReady(PROTOCOL_FEATURES.filter((f) => listed(f) && usable[f]));
    this.server.admitted(session);
    const { weights, versions } = this.state;
    session.send({
      type: 'welcome',
      runId: this.runId,
      config: this.opts.config as unknown as Record<string, unknown>,
      ...(session.features.length > 0 ? { features: session.features } : {}),
      ...(rowCodes && session.features.includes('rows-u8') ? { palette: rowCodes.palette } : {}),
      // encode() sends g and d (and must later send weights) in the welcome's wire format.
      ...(this.wire !== 'fp32' ? { wire: this.wire } : {}),
      g: { version: versions.G, weights: weights.G },
      d: { version: versions.D, weights: weights.D },
    });
    session.known = { ...versions };
    const backends = new Set(this.readyWorkers.map((s) => s.backend));
    this.log.info(
      { event: 'worker_joined', worker: session.workerId, sessionId: session.sessionId, address: session.address, host: session.host, backend: session.backend, workers: this.readyWorkers.length },
      `worker ${session.workerId} joined`,
    );
    if (backends.size > 1) {
      this.log.warn({ event: 'warning', code: 'MIXED_BACKENDS', backends: [...backends] }, 'workers use different compute backends; results stay correct but are no longer bit-identical to a single-backend run');
    }
    this.scheduler.wake();
  }

  /** A connection closed: its bytes move to the retired totals. */
  private onClosed(session: WorkerSession): void {
    this.retiredBytes.sent += session.bytesOut;
    this.retiredBytes.received += session.bytesIn;
    if (session.admitted) this.progress.retire(session.sessionId, session.workerId, session.counters());
  }

  /** <run-dir>/report.html (coordinator/run-report.ts); a failure is a warning, never the end of the run. */
  private writeReport(state: 'training' | 'finished' | 'stopped', result?: { seconds: number; weightsHash: string }): void {
    const t0 = performance.now();
    try {
      const { iteration } = this.state;
      const t = this.telemetry;
      const w = writeRunReport({ runDir: this.opts.runDir, runId: this.runId, config: this.opts.config, backend: this.opts.backendName, iteration, iterations: this.opts.config.train.iterations, state, result, progress: t.history().points, evals: t.evals, workers: t.workersSeen(), live: this.readyWorkers.map((s) => ({ id: s.workerId, shardsDone: s.shardsDone })) });
      this.log.info({ event: 'report_written', iteration, ...w, ms: Math.round(performance.now() - t0) }, 'report written');
    } catch (err) {
      this.log.warn({ event: 'warning', code: 'REPORT_FAILED', err: clip(err instanceof Error ? err.message : String(err)) }, 'could not write report.html');
    }
  }

  /** Trains until the configured number of iterations or until stop(), on the shared schedule (trainer/loop.ts). */
  async run(): Promise<RunResult> {
    this.log.info({ event: 'training', iteration: this.state.iteration, iterations: this.opts.config.train.iterations, verifyFraction: this.opts.schedule.verifyFraction || undefined, banned: this.banned.size || undefined }, 'training started');
    this.progress.startRun();
    const { runDir, config, source, log, report, evaluation, checkpoint } = this.opts;
    const trainer = new Trainer(this, { config, source, runDir, runId: this.runId, log, logEvery: report.logEvery, sampleEvery: report.sampleEvery, evaluation, checkpoint });
    const result = await trainer.run();
    if (this.tree) {
      const bytes = this.bytesTotal();
      const c = this.tree.counters;
      this.log.info(
        { event: 'relay_summary', fanOut: this.tree.fanOut, ...c, bytesSent: bytes.sent, bytesReceived: bytes.received, bytesSentPerPhase: Math.round(bytes.sent / Math.max(1, c.phases)), bytesReceivedPerPhase: Math.round(bytes.received / Math.max(1, c.phases)) },
        'relay tree: what the coordinator link carried',
      );
    }
    this.writeReport(result.stopped ? 'stopped' : 'finished', result);
    this.log.info({ event: 'run_finished', ...result, runDir }, result.stopped ? 'run stopped' : 'run finished');
    return result;
  }

  // ---------------------------------------------------------------- PhaseExecutor (trainer/loop.ts)

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** Ready workers, for the terminal progress bar (trainer/loop.ts). */
  workerCount(): number {
    return this.readyWorkers.length;
  }

  async executePhase(): Promise<PhaseSummary | null> {
    const summary = await this.scheduler.runPhase();
    if (summary) this.progress.add(summary);
    return summary;
  }

  /** A progress line when due, or when --status-interval seconds passed (coordinator/run-progress.ts). */
  reportProgress(due: boolean): void {
    this.progress.maybeReport(due, () => ({
      iteration: this.state.iteration,
      iterations: this.opts.config.train.iterations,
      epoch: this.state.epoch,
      workers: this.readyWorkers.length,
      bytes: this.bytesTotal(),
      sessions: [...this.server.sessions.values()].filter((s) => s.admitted).map((s) => ({ key: s.sessionId, worker: s.workerId, counters: s.counters() })),
    }));
  }

  recentProgress(): unknown[] {
    return this.progress.recent();
  }

  outputReplica(withD: boolean): GanReplica {
    // The generator users get (--g-ema: the moving average); the coordinator's replica never trains.
    this.replica.setWeights('G', this.state.generatorWeights);
    if (withD) this.replica.setWeights('D', this.state.weights.D);
    return this.replica;
  }

  checkpointed(): void {
    this.writeReport('training');
  }

  /** Ends the run loop at the next phase boundary (the current phase is abandoned). */
  requestStop(): void {
    this.stopRequested = true;
    this.scheduler.wake();
  }

  /**
   * Says goodbye to every worker (a bye, then cut after a short grace) while the server stays up:
   * new connections are refused (SHUTTING_DOWN) and HTTP keeps serving (--linger). close() does
   * this first if it was not done.
   */
  async releaseWorkers(byeCode: ByeCode = 'RUN_FINISHED', reason = 'the run is finished'): Promise<void> {
    if (this.workersReleased) return;
    this.workersReleased = true;
    this.stopRequested = true;
    await this.server.release(byeCode, reason);
  }

  /** Says goodbye to every worker (unless releaseWorkers() did) and closes the server. */
  async close(byeCode: ByeCode = 'RUN_FINISHED', reason = 'the run is finished'): Promise<void> {
    await this.releaseWorkers(byeCode, reason);
    await this.server.close();
    this.replica.dispose();
    this.opts.evaluation?.evaluator.dispose();
  }
}
