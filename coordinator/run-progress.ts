/**
 * The coordinator's progress lines and their timing (fields: docs/status-log.md): the loss
 * window, where the wall time went (TimeSplit, with the critical worker's compute, codec and
 * transfer per phase), bytes per worker per window, the ETA. Sessions report encode and send
 * time into it (SessionClock); the scheduler reports results and phase boundaries.
 */
import type { Logger } from '../shared/log.ts';
import type { WorkerTiming } from '../shared/protocol.ts';
import { resourceUsage } from '../shared/resources.ts';
import type { PhaseSummary } from '../trainer/training-state.ts';
import type { Telemetry } from './metrics.ts';
import { ByteWindows, ProgressTracker, roundRecord, TimeSplit, type ByteCounters } from '../trainer/progress.ts';
import { RateMeter } from '../shared/progress-bar.ts';
import type { SessionClock } from './session.ts';

/** Where a phase's wall time went, as the scheduler measured it (performance.now() values). */
export interface PhaseMarks {
  /** Planning started. */
  t0: number;
  /** The first tasks went out. */
  tDispatch: number;
  /** The last result needed came in. */
  tResults: number;
  /** The update was applied and the new weights broadcast. */
  tEnd: number;
  /** The codec and send time of the broadcast (TimeSplit.pendingOwnMs before and after it). */
  broadcast: { codec: number; send: number };
}

/** What a progress line says about the run besides the window's figures. */
export interface RunView {
  iteration: number;
  iterations: number;
  epoch: number;
  workers: number;
  bytes: { sent: number; received: number };
  /** Admitted sessions' cumulative byte counters, for the per-worker window. */
  sessions: { key: number; worker: string; counters: ByteCounters }[];
}

/** The ETA's rate: over the last minute, once 5 iterations over at least 2 s are measured. */
const ETA_WINDOW = { windowS: 60, minIterations: 5, minSeconds: 2 };

export class RunProgress implements SessionClock {
  private readonly timeSplit = new TimeSplit();
  private readonly tracker: ProgressTracker;
  /**
   * The ETA of the progress lines (and so of /status and the dashboard): the terminal bar's
   * estimator, over the last minute of progress lines and null until 5 iterations and 2 s were
   * measured, so time spent waiting for workers before training never inflates it (a first ETA
   * of 3h03m, issue #18).
   */
  private eta = new RateMeter(ETA_WINDOW);
  private readonly byteWindows = new ByteWindows<number>();
  private lastStatusAt = performance.now();
  private metricsTail: unknown[] = [];
  /** Reported compute (ms) per session for the current phase: its busiest worker bounds the phase. */
  private phaseCompute = new Map<number, number>();
  /** Per session, the current phase's reported codec and transfer time (result.timing), for the critical-path split. */
  private phaseWorkerTiming = new Map<number, { codec: number; transfer: number }>();
  /** The coordinator's receive time (ms) of the newest result of the current phase: at the end, the one that completed it. */
  private lastResultRecvMs = 0;

  constructor(
    batchSize: number,
    private readonly telemetry: Telemetry,
    private readonly log: Logger,
    private readonly statusIntervalMs: number,
  ) {
    this.tracker = new ProgressTracker(batchSize);
  }

  /** Training starts (or resumes): the ETA's clock starts at the next progress line, not here, so waiting for workers is not counted. */
  startRun(): void {
    this.eta = new RateMeter(ETA_WINDOW);
  }

  addCodec(ms: number): void {
    this.timeSplit.addCodec(ms);
  }

  addSend(ms: number): void {
    this.timeSplit.addSend(ms);
  }

  /** The coordinator's own codec and send time not yet assigned to a phase. */
  ownMs(): { codec: number; send: number } {
    return this.timeSplit.pendingOwnMs();
  }

  add(summary: PhaseSummary): void {
    this.tracker.add(summary);
  }

  beginPhase(): void {
    this.phaseCompute.clear();
    this.phaseWorkerTiming.clear();
    this.lastResultRecvMs = 0;
  }

  /** Every result's compute, per phase per worker (late results count toward the totals only). */
  noteCompute(sessionId: number, computeMs: number, currentPhase: boolean): void {
    this.timeSplit.addCompute(computeMs);
    this.telemetry.resultReceived(computeMs);
    if (currentPhase) this.phaseCompute.set(sessionId, (this.phaseCompute.get(sessionId) ?? 0) + computeMs);
  }

  /** A result of the current phase: its receive time and the worker's own time split. */
  noteResult(sessionId: number, recvMs: number, timing: WorkerTiming | undefined): void {
    this.lastResultRecvMs = recvMs;
    if (!timing) return;
    const acc = this.phaseWorkerTiming.get(sessionId) ?? { codec: 0, transfer: 0 };
    acc.codec += timing.decodeMs + timing.loadMs + timing.encodeMs;
    acc.transfer += timing.recvMs + timing.sendMs;
    this.phaseWorkerTiming.set(sessionId, acc);
  }

  /** Closes a phase's time split; the critical worker is the one with the most compute in it. */
  endPhase(phase: 'D' | 'G', m: PhaseMarks, before: { codec: number; send: number }): void {
    const phaseMs = m.tResults - m.tDispatch;
    const applyMs = m.tDispatch - m.t0 + (m.tEnd - m.tResults);
    let busiest = 0;
    let critical = -1;
    for (const [id, ms] of this.phaseCompute) if (ms > busiest || critical < 0) [busiest, critical] = [ms, id];
    const workerTiming = this.phaseWorkerTiming.get(critical) ?? { codec: 0, transfer: 0 };
    const waitingMs = this.timeSplit.addPhase({
      wallMs: m.tEnd - m.t0,
      resultsMs: phaseMs,
      applyMs,
      broadcastCodecMs: m.broadcast.codec - before.codec,
      broadcastSendMs: m.broadcast.send - before.send,
      busiestComputeMs: busiest,
      criticalCodecMs: workerTiming.codec,
      criticalTransferMs: workerTiming.transfer + this.lastResultRecvMs,
    });
    this.telemetry.phaseApplied(phase, phaseMs, waitingMs, applyMs);
  }

  /** A closed admitted session: its bytes stay in the current window. */
  retire(sessionId: number, workerId: string, counters: ByteCounters): void {
    this.byteWindows.retire(sessionId, workerId, counters);
  }

  /**
   * A progress line when `due` (every --log-every iterations, and at the end) or when
   * --status-interval seconds passed since the last one; never for a window in which no
   * iteration completed (while waiting, NO_WORKERS says why).
   */
  maybeReport(due: boolean, view: () => RunView): void {
    const now = performance.now();
    if (this.tracker.pendingIterations === 0) return;
    if (!due && now - this.lastStatusAt < this.statusIntervalMs) return;
    this.lastStatusAt = now;
    const rec = roundRecord(this.tracker.flush());
    const split = roundRecord(this.timeSplit.flush(now));
    const v = view();
    this.metricsTail = [...this.metricsTail, rec].slice(-10);
    this.log.info(
      {
        event: 'progress',
        ...rec,
        iterations: v.iterations,
        epoch: v.epoch,
        workers: v.workers,
        ...split,
        mbSent: Number((v.bytes.sent / 1e6).toFixed(2)),
        mbReceived: Number((v.bytes.received / 1e6).toFixed(2)),
        workerBytes: this.byteWindows.flush(v.sessions),
        etaS: this.etaS(v.iteration, v.iterations, now),
        ...resourceUsage(),
      },
      'progress',
    );
  }

  private etaS(iteration: number, iterations: number, now: number): number | null {
    this.eta.tick(iteration, now);
    const eta = this.eta.eta(iterations);
    return eta === null ? null : Math.round(eta);
  }

  /** The last few progress records, for checkpoints. */
  recent(): unknown[] {
    return this.metricsTail;
  }
}
