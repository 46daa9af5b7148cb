/**
 * Aggregates phase summaries into per-iteration figures and rates for the status log.
 */
import type { PhaseSummary } from './training-state.ts';

export interface ProgressRecord {
  iteration: number;
  lossD: number;
  lossG: number;
  /** Mean D(x) over the window; both drift toward 1/2 at the equilibrium. */
  dReal: number;
  dFake: number;
  samplesPerSec: number;
  iterationsPerSec: number;
}

export class ProgressTracker {
  private d = { loss: 0, dReal: 0, dFake: 0, n: 0 };
  private g = { loss: 0, n: 0 };
  private samples = 0;
  private iterations = 0;
  private windowStart = performance.now();
  lastIteration = 0;

  constructor(private batchSize: number) {}

  add(s: PhaseSummary): void {
    // Samples processed: real + generated rows in D phases, generated rows in G phases.
    if (s.phase === 'D') {
      this.d.loss += s.loss;
      this.d.dReal += s.dReal;
      this.d.dFake += s.dFake;
      this.d.n++;
      this.samples += 2 * this.batchSize;
    } else {
      this.g.loss += s.loss;
      this.g.n++;
      this.samples += this.batchSize;
      this.iterations++;
      this.lastIteration = s.iteration + 1;
    }
  }

  get pendingIterations(): number {
    return this.iterations;
  }

  /** The window's record, and starts a new window. */
  flush(): ProgressRecord {
    const secs = Math.max(1e-9, (performance.now() - this.windowStart) / 1000);
    const avg = (sum: number, n: number) => (n ? sum / n : NaN);
    const rec: ProgressRecord = {
      iteration: this.lastIteration,
      lossD: avg(this.d.loss, this.d.n),
      lossG: avg(this.g.loss, this.g.n),
      dReal: avg(this.d.dReal, this.d.n),
      dFake: avg(this.d.dFake, this.d.n),
      samplesPerSec: this.samples / secs,
      iterationsPerSec: this.iterations / secs,
    };
    this.d = { loss: 0, dReal: 0, dFake: 0, n: 0 };
    this.g = { loss: 0, n: 0 };
    this.samples = 0;
    this.iterations = 0;
    this.windowStart = performance.now();
    return rec;
  }
}

/** Rounds figures for a log line without losing the magnitude. */
export function roundRecord<T extends object>(rec: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rec)) out[k] = typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v;
  return out as T;
}

/** Where the coordinator's wall time went in one progress window (seconds; see docs/status-log.md). */
export interface TimeSplitRecord {
  /** Wall time of the window. */
  wallS: number;
  /** Worker-seconds: the sum of computeMs reported with every result received (all workers). */
  computeS: number;
  /** Per phase, the phase's wall time minus the busiest worker's reported compute in it. */
  waitingS: number;
  /** Coordinator time planning phases, applying updates and broadcasting weights. */
  applyS: number;
  /**
   * The critical-path split: the window's phase wall times (planning to the end of the weights
   * broadcast), each cut into these five parts, so they sum to the phases' wall time.
   */
  splitComputeS: number;
  splitApplyS: number;
  splitCodecS: number;
  splitTransferS: number;
  splitIdleS: number;
  /** Time the coordinator's thread spent on the phases: planning, applying, encoding, decoding, socket writes. */
  coordinatorS: number;
}

/** One phase as the coordinator measured it (ms), for the critical-path split. */
export interface PhaseTiming {
  /** Planning to the end of the weights broadcast. */
  wallMs: number;
  /** Dispatch to the last needed result (what waitingS is measured against). */
  resultsMs: number;
  /** Planning + applying + broadcasting, encoding and socket writes included (the legacy applyS). */
  applyMs: number;
  /** The part of applyMs spent encoding and writing the weights frame (not "apply" in the split). */
  broadcastCodecMs: number;
  broadcastSendMs: number;
  /** The busiest worker's reported compute in the phase... */
  busiestComputeMs: number;
  /** ...and, for its results of this phase, the decode + weight loading + encode it reported... */
  criticalCodecMs: number;
  /** ...and its receive time + socket-write time, plus the coordinator's receive time of the phase's last result. */
  criticalTransferMs: number;
}

/**
 * Accumulates the time split of the current window. The coordinator reports, per result, the
 * worker's computeMs; as they happen, its own encode/decode and socket-write time; and per
 * phase a PhaseTiming.
 *
 * The critical-path split of a phase: the coordinator's thread is either busy -- apply
 * (planning, the averaged update, bookkeeping), codec (encoding tasks and weights, decoding and
 * validating results) or socket writes (transfer) -- or waiting. Its waiting time is explained,
 * in this order and never beyond what is left, by the busiest worker's compute, that worker's
 * decode/load/encode (codec) and its receive and send time plus the receive time of the result
 * that completed the phase (transfer); what remains is idle (scheduling, queuing, a worker
 * waiting for another). Worker time that overlapped the coordinator's own work (e.g. loading new
 * weights while the coordinator plans) is thereby counted where it made the coordinator wait.
 */
export class TimeSplit {
  private computeMs = 0;
  private waitingMs = 0;
  private applyMs = 0;
  private split = { compute: 0, apply: 0, codec: 0, transfer: 0, idle: 0, coordinator: 0 };
  /** Coordinator codec, socket-write and in-phase apply time since the last phase ended (lands in the next phase). */
  private pending = { codec: 0, send: 0, apply: 0 };
  private windowStart = performance.now();

  addCompute(ms: number): void {
    this.computeMs += ms;
  }

  /** Coordinator time encoding or decoding a frame (ms). */
  addCodec(ms: number): void {
    this.pending.codec += ms;
  }

  /** Coordinator time inside a socket write (ws.send) (ms). */
  addSend(ms: number): void {
    this.pending.send += ms;
  }

  /** Apply work the coordinator does while it waits for results (folding gradients in) (ms). */
  addApply(ms: number): void {
    this.pending.apply += ms;
  }

  /** Coordinator codec and socket-write time reported since the last phase ended (ms). */
  pendingOwnMs(): { codec: number; send: number } {
    return { codec: this.pending.codec, send: this.pending.send };
  }

  /** Returns the phase's waiting time (ms) so callers can count it elsewhere too. */
  addPhase(p: PhaseTiming): number {
    const waiting = Math.max(0, p.resultsMs - p.busiestComputeMs);
    this.waitingMs += waiting;
    this.applyMs += p.applyMs;
    const { codec, send } = this.pending;
    // The broadcast's encode/send were reported through addCodec/addSend too: not apply.
    const apply = Math.max(0, p.applyMs - p.broadcastCodecMs - p.broadcastSendMs) + this.pending.apply;
    this.pending = { codec: 0, send: 0, apply: 0 };
    const own = apply + codec + send;
    let rest = Math.max(0, p.wallMs - own);
    const compute = Math.min(rest, Math.max(0, p.busiestComputeMs));
    rest -= compute;
    const workerCodec = Math.min(rest, Math.max(0, p.criticalCodecMs));
    rest -= workerCodec;
    const transfer = Math.min(rest, Math.max(0, p.criticalTransferMs));
    rest -= transfer;
    this.split.compute += compute;
    this.split.apply += apply;
    this.split.codec += codec + workerCodec;
    this.split.transfer += send + transfer;
    this.split.idle += rest;
    this.split.coordinator += own;
    return waiting;
  }

  flush(now = performance.now()): TimeSplitRecord {
    const s = this.split;
    const rec = {
      wallS: (now - this.windowStart) / 1000,
      computeS: this.computeMs / 1000,
      waitingS: this.waitingMs / 1000,
      applyS: this.applyMs / 1000,
      splitComputeS: s.compute / 1000,
      splitApplyS: s.apply / 1000,
      splitCodecS: s.codec / 1000,
      splitTransferS: s.transfer / 1000,
      splitIdleS: s.idle / 1000,
      coordinatorS: s.coordinator / 1000,
    };
    this.computeMs = this.waitingMs = this.applyMs = 0;
    this.split = { compute: 0, apply: 0, codec: 0, transfer: 0, idle: 0, coordinator: 0 };
    this.windowStart = now;
    return rec;
  }
}

/** Byte counters of one worker connection (all cumulative since the connection opened). */
export interface ByteCounters {
  /** WebSocket message payload bytes (what the codec produced / consumed) and message counts. */
  sent: number;
  received: number;
  framesSent: number;
  framesReceived: number;
  /** TCP payload bytes of the connection: WebSocket framing, control frames and the HTTP upgrade included. */
  wireSent: number;
  wireReceived: number;
}

/** One worker's bytes in one progress window. */
export interface WorkerBytesRecord extends ByteCounters {
  worker: string;
}

const ZERO_COUNTERS: ByteCounters = { sent: 0, received: 0, framesSent: 0, framesReceived: 0, wireSent: 0, wireReceived: 0 };

/**
 * Per-worker bytes per progress window: deltas of each connection's cumulative counters since
 * the previous flush. A connection that closed during the window is reported once more (its
 * last bytes), then forgotten; every byte a connection moved lands in exactly one window.
 */
export class ByteWindows<K> {
  private last = new Map<K, ByteCounters>();
  private retired = new Map<K, { worker: string; counters: ByteCounters }>();

  /** A connection ended: its final counters go into the next flush. */
  retire(key: K, worker: string, counters: ByteCounters): void {
    this.retired.set(key, { worker, counters: { ...counters } });
  }

  flush(live: Iterable<{ key: K; worker: string; counters: ByteCounters }>): WorkerBytesRecord[] {
    const out: WorkerBytesRecord[] = [];
    const seen = new Set<K>();
    const add = (key: K, worker: string, now: ByteCounters) => {
      if (seen.has(key)) return;
      seen.add(key);
      const before = this.last.get(key) ?? ZERO_COUNTERS;
      const d = {
        worker,
        sent: now.sent - before.sent,
        received: now.received - before.received,
        framesSent: now.framesSent - before.framesSent,
        framesReceived: now.framesReceived - before.framesReceived,
        wireSent: now.wireSent - before.wireSent,
        wireReceived: now.wireReceived - before.wireReceived,
      };
      this.last.set(key, { ...now });
      if (d.sent || d.received || d.wireSent || d.wireReceived) out.push(d);
    };
    for (const { key, worker, counters } of live) add(key, worker, counters);
    for (const [key, { worker, counters }] of this.retired) {
      add(key, worker, counters);
      this.last.delete(key);
    }
    this.retired.clear();
    return out;
  }
}
