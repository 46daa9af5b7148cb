/**
 * The coordinator's telemetry: Prometheus metrics (prom-client, served at GET /metrics) and the
 * progress history behind the dashboard (GET /history).
 *
 * Most figures come from the status log itself: observe() is fed every line the coordinator logs
 * (shared/log.ts tapLog), so a metric cannot count something the log does not say. Per-phase
 * figures (phases, samples, time split) and per-result compute come from the coordinator
 * directly, and the live position, worker count and byte totals are read at scrape time.
 * docs/status-log.md lists every metric.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LogRecord } from '../shared/log.ts';

/** Live figures read at scrape time. */
export interface TelemetrySources {
  iteration(): number;
  iterations(): number;
  epoch(): number;
  workers(): number;
  bytes(): { sent: number; received: number };
}

/** One progress line as the dashboard plots it. */
export interface ProgressPoint {
  /** Increasing number of the point in this process's history (for GET /history?since=). */
  seq: number;
  time: string;
  iteration: number;
  epoch: number | null;
  lossD: number | null;
  lossG: number | null;
  dReal: number | null;
  dFake: number | null;
  workers: number | null;
  samplesPerSec: number | null;
  etaS: number | null;
}

/** One `eval` event (--eval-every) as the dashboard and report.html plot it: its numeric scores. */
export interface EvalPoint {
  /** Shares the numbering of ProgressPoint.seq (GET /history?since= returns both). */
  seq: number;
  time: string;
  iteration: number;
  /** `g-ema` or `g`: which generator was measured. */
  generator: string | null;
  /** Every finite numeric field of the event but `iteration` and `ms` (modesCaptured, inceptionScore, ...). */
  scores: Record<string, number>;
}

/** A worker as this coordinator process saw it (worker_joined / worker_left), for report.html. */
export interface WorkerSeen {
  id: string;
  host: string | null;
  backend: string | null;
  /** Connections (a reconnect is a new one). */
  sessions: number;
  /** Shard results delivered by its connections that have ended. */
  shardsDone: number;
  firstJoined: string;
  lastLeft: string | null;
  connected: boolean;
  /** The close reason of its last connection, if any. */
  lastReason: string | null;
}

export interface SampleInfo {
  iteration: number;
  file: string;
  name: string;
  time: string;
}

/** History points kept in memory; past this, every other older point is dropped. */
const HISTORY_CAP = 4000;
/** A log.jsonl larger than this is not replayed into the history at start. */
const REPLAY_MAX_BYTES = 256 * 1024 * 1024;

const numOrNull = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export class Telemetry {
  readonly registry = new Registry();
  latestProgress: LogRecord | null = null;
  latestSample: SampleInfo | null = null;
  private points: ProgressPoint[] = [];
  private evalPoints: EvalPoint[] = [];
  private workerRoster = new Map<string, WorkerSeen>();
  private seq = 0;

  private phases: Counter<'phase'>;
  private iterationsDone: Counter;
  private samples: Counter;
  private results: Counter;
  private computeSeconds: Counter;
  private waitingSeconds: Counter;
  private applySeconds: Counter;
  private phaseSeconds: Histogram<'phase'>;
  private loss: Gauge<'net'>;
  private dOutput: Gauge<'input'>;
  private samplesPerSec: Gauge;
  private eta: Gauge;
  private joins: Counter;
  private departures: Counter;
  private reassigned: Counter;
  private duplicated: Counter;
  private warnings: Counter<'code'>;
  private checkpoints: Counter;
  private sampleGrids: Counter;
  private info: Gauge<'run_id' | 'dataset' | 'model' | 'backend'>;

  constructor(sources: TelemetrySources, private batchSize: number) {
    const r = [this.registry];
    const src = sources;
    new Gauge({ name: 'gan_iteration', help: 'Completed iterations of Algorithm 1 (the run position)', registers: r, collect() { this.set(src.iteration()); } });
    new Gauge({ name: 'gan_iterations_target', help: 'Iterations the run is configured for', registers: r, collect() { this.set(src.iterations()); } });
    new Gauge({ name: 'gan_epoch', help: "The data sampler's epoch (0 for mixtures)", registers: r, collect() { this.set(src.epoch()); } });
    new Gauge({ name: 'gan_workers', help: 'Workers connected and past the handshake', registers: r, collect() { this.set(src.workers()); } });
    let sentSeen = 0;
    let receivedSeen = 0;
    new Counter({
      name: 'gan_network_sent_bytes_total',
      help: 'WebSocket frame bytes sent to workers',
      registers: r,
      collect() {
        const now = src.bytes().sent;
        if (now > sentSeen) this.inc(now - sentSeen);
        sentSeen = Math.max(sentSeen, now);
      },
    });
    new Counter({
      name: 'gan_network_received_bytes_total',
      help: 'WebSocket frame bytes received from workers',
      registers: r,
      collect() {
        const now = src.bytes().received;
        if (now > receivedSeen) this.inc(now - receivedSeen);
        receivedSeen = Math.max(receivedSeen, now);
      },
    });
    this.phases = new Counter({ name: 'gan_phases_total', help: 'Phases applied (D-steps and G-steps)', labelNames: ['phase'], registers: r });
    this.iterationsDone = new Counter({ name: 'gan_iterations_total', help: 'Iterations completed by this coordinator process', registers: r });
    this.samples = new Counter({ name: 'gan_samples_total', help: 'Samples processed: real + generated rows in D-steps, generated rows in G-steps', registers: r });
    this.results = new Counter({ name: 'gan_shard_results_total', help: 'Shard results received from workers (including duplicates and late ones)', registers: r });
    this.computeSeconds = new Counter({ name: 'gan_compute_seconds_total', help: 'Worker-seconds of compute reported with shard results', registers: r });
    this.waitingSeconds = new Counter({ name: 'gan_waiting_seconds_total', help: "Phase wall time not covered by the busiest worker's compute", registers: r });
    this.applySeconds = new Counter({ name: 'gan_apply_seconds_total', help: 'Coordinator time planning phases, applying updates and broadcasting weights', registers: r });
    this.phaseSeconds = new Histogram({
      name: 'gan_phase_duration_seconds',
      help: 'Wall time of one phase, from dispatch to its last result',
      labelNames: ['phase'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: r,
    });
    this.loss = new Gauge({ name: 'gan_loss', help: 'Mean loss over the last progress window', labelNames: ['net'], registers: r });
    this.dOutput = new Gauge({ name: 'gan_discriminator_output', help: 'Mean D output over the last progress window: real = D(x), fake = D(G(z))', labelNames: ['input'], registers: r });
    this.samplesPerSec = new Gauge({ name: 'gan_samples_per_second', help: 'Samples per second over the last progress window', registers: r });
    this.eta = new Gauge({ name: 'gan_eta_seconds', help: 'Estimated seconds to the last iteration (at the last progress line)', registers: r });
    this.joins = new Counter({ name: 'gan_worker_joins_total', help: 'worker_joined events', registers: r });
    this.departures = new Counter({ name: 'gan_worker_departures_total', help: 'worker_left events', registers: r });
    this.reassigned = new Counter({ name: 'gan_shards_reassigned_total', help: "Shards put back in the pool after their worker left", registers: r });
    this.duplicated = new Counter({ name: 'gan_shards_duplicated_total', help: 'Shards duplicated to an idle worker (stragglers)', registers: r });
    this.warnings = new Counter({ name: 'gan_warnings_total', help: 'warning events by stable code', labelNames: ['code'], registers: r });
    this.checkpoints = new Counter({ name: 'gan_checkpoints_total', help: 'Checkpoints written by this process', registers: r });
    this.sampleGrids = new Counter({ name: 'gan_sample_grids_total', help: 'Sample grids written by this process', registers: r });
    this.info = new Gauge({ name: 'gan_run_info', help: 'Always 1; the labels describe the run', labelNames: ['run_id', 'dataset', 'model', 'backend'], registers: r });
    collectDefaultMetrics({ register: this.registry });
  }

  /** Fed every line the coordinator logs (info and above). */
  observe(rec: LogRecord): void {
    switch (rec.event) {
      case 'run_started': {
        const config = (rec.config ?? {}) as { train?: { dataset?: string }; model?: { kind?: string } };
        this.info.set({ run_id: String(rec.runId ?? ''), dataset: String(config.train?.dataset ?? ''), model: String(config.model?.kind ?? ''), backend: String(rec.backend ?? '') }, 1);
        return;
      }
      case 'progress':
        this.latestProgress = rec;
        if (typeof rec.lossD === 'number') this.loss.set({ net: 'D' }, rec.lossD);
        if (typeof rec.lossG === 'number') this.loss.set({ net: 'G' }, rec.lossG);
        if (typeof rec.dReal === 'number') this.dOutput.set({ input: 'real' }, rec.dReal);
        if (typeof rec.dFake === 'number') this.dOutput.set({ input: 'fake' }, rec.dFake);
        if (typeof rec.samplesPerSec === 'number') this.samplesPerSec.set(rec.samplesPerSec);
        if (typeof rec.etaS === 'number') this.eta.set(rec.etaS);
        this.addPoint(rec);
        return;
      case 'sample_written':
        this.sampleGrids.inc();
        if (typeof rec.file === 'string') {
          this.latestSample = { iteration: Number(rec.iteration), file: rec.file, name: basename(rec.file), time: String(rec.time ?? new Date().toISOString()) };
        }
        return;
      case 'checkpoint_saved':
        this.checkpoints.inc();
        return;
      case 'eval':
        this.addEval(rec);
        return;
      case 'worker_joined':
        this.joins.inc();
        this.noteWorker(rec, true);
        return;
      case 'worker_left':
        this.departures.inc();
        this.noteWorker(rec, false);
        return;
      case 'shard_reassigned':
        this.reassigned.inc(Array.isArray(rec.shards) ? rec.shards.length : 1);
        return;
      case 'shard_duplicated':
        this.duplicated.inc(Array.isArray(rec.shards) ? rec.shards.length : 1);
        return;
      case 'warning':
        this.warnings.inc({ code: String(rec.code ?? 'UNKNOWN') });
        return;
    }
  }

  /** One shard result arrived (whether it counted or not). */
  resultReceived(computeMs: number): void {
    this.results.inc();
    this.computeSeconds.inc(Math.max(0, computeMs) / 1000);
  }

  /** One phase was applied. Times in ms. */
  phaseApplied(phase: 'D' | 'G', phaseMs: number, waitingMs: number, applyMs: number): void {
    this.phases.inc({ phase });
    if (phase === 'G') this.iterationsDone.inc();
    this.samples.inc(phase === 'D' ? 2 * this.batchSize : this.batchSize);
    this.phaseSeconds.observe({ phase }, phaseMs / 1000);
    this.waitingSeconds.inc(waitingMs / 1000);
    this.applySeconds.inc(applyMs / 1000);
  }

  /** Progress points and eval points with seq > since, oldest first. */
  history(since = -1): { points: ProgressPoint[]; evals: EvalPoint[]; last: number } {
    const points = this.points.filter((p) => p.seq > since);
    const evals = this.evalPoints.filter((p) => p.seq > since);
    return { points, evals, last: this.seq - 1 };
  }

  /** Every `eval` event of the run so far (a resumed run's earlier ones from log.jsonl), oldest first. */
  get evals(): readonly EvalPoint[] {
    return this.evalPoints;
  }

  /** The newest `eval` event, or null. */
  get latestEval(): EvalPoint | null {
    return this.evalPoints.at(-1) ?? null;
  }

  /** Every worker this coordinator process admitted, by id. */
  workersSeen(): WorkerSeen[] {
    return [...this.workerRoster.values()];
  }

  private noteWorker(rec: LogRecord, joined: boolean): void {
    if (typeof rec.worker !== 'string') return;
    const time = String(rec.time ?? new Date().toISOString());
    let w = this.workerRoster.get(rec.worker);
    if (!w) {
      w = { id: rec.worker, host: null, backend: null, sessions: 0, shardsDone: 0, firstJoined: time, lastLeft: null, connected: false, lastReason: null };
      this.workerRoster.set(rec.worker, w);
    }
    if (typeof rec.backend === 'string') w.backend = rec.backend;
    if (joined) {
      w.sessions++;
      w.connected = true;
      if (typeof rec.host === 'string') w.host = rec.host;
    } else {
      w.connected = false;
      w.lastLeft = time;
      if (typeof rec.shardsDone === 'number') w.shardsDone += rec.shardsDone;
      w.lastReason = typeof rec.reason === 'string' ? rec.reason : null;
    }
  }

  private addEval(rec: LogRecord): void {
    const iteration = numOrNull(rec.iteration);
    if (iteration === null) return;
    const scores: Record<string, number> = {};
    for (const [k, v] of Object.entries(rec)) {
      if (k === 'iteration' || k === 'ms' || k === 'level' || k === 'pid' || k === 'time') continue;
      const n = numOrNull(v);
      if (n !== null) scores[k] = n;
    }
    while (this.evalPoints.length > 0 && this.evalPoints[this.evalPoints.length - 1].iteration >= iteration) this.evalPoints.pop();
    this.evalPoints.push({ seq: this.seq++, time: String(rec.time ?? new Date().toISOString()), iteration, generator: typeof rec.generator === 'string' ? rec.generator : null, scores });
    // Evaluations are far rarer than progress lines; thin the same way if a run makes very many.
    if (this.evalPoints.length > HISTORY_CAP) {
      const half = Math.floor(this.evalPoints.length / 2);
      this.evalPoints = [...this.evalPoints.slice(0, half).filter((_, i) => i % 2 === 0), ...this.evalPoints.slice(half)];
    }
  }

  private addPoint(rec: LogRecord): void {
    const iteration = numOrNull(rec.iteration);
    if (iteration === null) return;
    // A rewind (a resumed run replayed from its log) supersedes the points past the resume point.
    while (this.points.length > 0 && this.points[this.points.length - 1].iteration >= iteration) this.points.pop();
    this.points.push({
      seq: this.seq++,
      time: String(rec.time ?? new Date().toISOString()),
      iteration,
      epoch: numOrNull(rec.epoch),
      lossD: numOrNull(rec.lossD),
      lossG: numOrNull(rec.lossG),
      dReal: numOrNull(rec.dReal),
      dFake: numOrNull(rec.dFake),
      workers: numOrNull(rec.workers),
      samplesPerSec: numOrNull(rec.samplesPerSec),
      etaS: numOrNull(rec.etaS),
    });
    if (this.points.length > HISTORY_CAP) {
      // Halve the resolution of the older half; the newest points stay dense.
      const half = Math.floor(this.points.length / 2);
      this.points = [...this.points.slice(0, half).filter((_, i) => i % 2 === 0), ...this.points.slice(half)];
    }
  }

  /**
   * Replays the progress (and eval) lines of an earlier process of this run (a resumed run's log.jsonl) into
   * the history, up to the iteration it resumes from, so the dashboard shows the whole curve.
   */
  replayLog(file: string, upToIteration: number): number {
    if (!existsSync(file) || statSync(file).size > REPLAY_MAX_BYTES) return 0;
    let n = 0;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (!line.includes('"event":"progress"') && !line.includes('"event":"eval"')) continue;
      try {
        const rec = JSON.parse(line) as LogRecord;
        if (typeof rec.iteration !== 'number' || rec.iteration > upToIteration) continue;
        if (rec.event === 'progress') {
          this.addPoint(rec);
          n++;
        } else if (rec.event === 'eval') {
          this.addEval(rec);
        }
      } catch {
        // a torn last line of a killed process
      }
    }
    return n;
  }
}
