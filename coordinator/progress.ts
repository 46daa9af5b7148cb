/**
 * Aggregates phase summaries into per-iteration figures and rates for the status log.
 */
import type { PhaseSummary } from '../shared/training-state.ts';

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
}

/**
 * Accumulates the time split of the current window. The coordinator reports, per result, the
 * worker's computeMs, and per phase its wall time (dispatch to last result), the busiest worker's
 * compute within it and the time spent planning + applying + broadcasting.
 */
export class TimeSplit {
  private computeMs = 0;
  private waitingMs = 0;
  private applyMs = 0;
  private windowStart = performance.now();

  addCompute(ms: number): void {
    this.computeMs += ms;
  }

  /** Returns the phase's waiting time (ms) so callers can count it elsewhere too. */
  addPhase(phaseMs: number, busiestComputeMs: number, applyMs: number): number {
    const waiting = Math.max(0, phaseMs - busiestComputeMs);
    this.waitingMs += waiting;
    this.applyMs += applyMs;
    return waiting;
  }

  flush(now = performance.now()): TimeSplitRecord {
    const rec = {
      wallS: (now - this.windowStart) / 1000,
      computeS: this.computeMs / 1000,
      waitingS: this.waitingMs / 1000,
      applyS: this.applyMs / 1000,
    };
    this.computeMs = this.waitingMs = this.applyMs = 0;
    this.windowStart = now;
    return rec;
  }
}

/**
 * Time to the last iteration from the rate over roughly the last `horizonMs` (at least the last
 * window), so a worker joining or leaving shows up within a minute.
 */
export class EtaEstimator {
  private marks: { t: number; it: number }[] = [];

  constructor(private horizonMs = 60_000) {}

  /** Where the clock starts (training start, or resume). */
  start(iteration: number, now = performance.now()): void {
    this.marks = [{ t: now, it: iteration }];
  }

  /** Records the position at a progress line and returns the ETA in seconds (null: no rate yet). */
  update(iteration: number, target: number, now = performance.now()): number | null {
    this.marks.push({ t: now, it: iteration });
    while (this.marks.length > 2 && now - this.marks[1].t >= this.horizonMs) this.marks.shift();
    const first = this.marks[0];
    const rate = (iteration - first.it) / Math.max(1e-9, (now - first.t) / 1000);
    if (iteration >= target) return 0;
    return rate > 0 ? Math.round((target - iteration) / rate) : null;
  }
}
