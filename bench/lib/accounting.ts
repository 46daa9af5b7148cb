/**
 * What npm run bench (bench/run.ts) computes from the status log, kept apart from the process
 * handling so test/bench-bytes.test.ts checks exactly the arithmetic the bench reports.
 *
 * The inputs are `progress` lines (docs/status-log.md) of a coordinator run with --log-every 1,
 * so a window is one iteration; the code still divides by the iterations a window covers.
 */
import type { ByteCounters } from '../../trainer/progress.ts';
import { PhaseRun, type Assignee } from '../../coordinator/phase-run.ts';
import type { PhasePlan } from '../../trainer/training-state.ts';

/** One progress line, as parsed from the coordinator's JSON log. */
export type ProgressLine = Record<string, unknown>;

/** One worker's bytes in one window (progress.workerBytes[]): the coordinator's counters, per window. */
export type WorkerBytes = ByteCounters & { worker: string };

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Iterations each progress line's window covers (its iteration minus the previous line's). */
export function windowIterations(lines: ProgressLine[]): number[] {
  let prev = 0;
  return lines.map((l) => {
    const it = l.iteration as number;
    const n = it - prev;
    prev = it;
    return n;
  });
}

/** A progress window: its line and the iterations it covers. */
export interface Window {
  line: ProgressLine;
  iterations: number;
}

/**
 * The windows to measure: those with exactly `workers` workers connected (a second worker joins
 * a little after the first; null: no such field, gan-train), after skipping the first `warmup`
 * of them (start-up, JIT, the welcome frames), at most `count`.
 */
export function measuredWindows(lines: ProgressLine[], workers: number | null, warmup: number, count = Infinity): Window[] {
  const its = windowIterations(lines);
  const eligible = lines.map((line, i) => ({ line, iterations: its[i]! })).filter((w) => w.iterations > 0 && (workers === null || w.line.workers === workers));
  return eligible.slice(warmup, warmup + count);
}

export function workerBytesOf(line: ProgressLine): WorkerBytes[] {
  return (line.workerBytes as WorkerBytes[] | undefined) ?? [];
}

/**
 * TCP bytes (both directions, WebSocket framing included) per iteration per worker in one window:
 * the sum over the window's workers divided by the worker count and the window's iterations.
 */
export function wireBytesPerIterationPerWorker(w: Window, workers: number): number {
  const total = workerBytesOf(w.line).reduce((a, b) => a + b.wireSent + b.wireReceived, 0);
  return total / workers / w.iterations;
}

/** Message payload bytes (what the codec produced and consumed), likewise. */
export function payloadBytesPerIterationPerWorker(w: Window, workers: number): number {
  const total = workerBytesOf(w.line).reduce((a, b) => a + b.sent + b.received, 0);
  return total / workers / w.iterations;
}

/** Sums of every window's per-worker counters, per worker id (for comparing with the sockets). */
export function totalsByWorker(lines: ProgressLine[]): Map<string, WorkerBytes> {
  const out = new Map<string, WorkerBytes>();
  for (const line of lines) {
    for (const b of workerBytesOf(line)) {
      const t = out.get(b.worker) ?? { worker: b.worker, sent: 0, received: 0, framesSent: 0, framesReceived: 0, wireSent: 0, wireReceived: 0 };
      t.sent += b.sent;
      t.received += b.received;
      t.framesSent += b.framesSent;
      t.framesReceived += b.framesReceived;
      t.wireSent += b.wireSent;
      t.wireReceived += b.wireReceived;
      out.set(b.worker, t);
    }
  }
  return out;
}

export interface MinimumInput {
  /** Trainable parameters of G and D. */
  params: { G: number; D: number };
  shards: number;
  dSteps: number;
  workers: number;
  /** Bytes per weight or gradient value on the wire: 4 (fp32) or 2 (fp16). */
  bytesPerValue: number;
}

/**
 * Gradients sent up per phase by `workers` equally fast workers sharing `shards` micro-shards:
 * each holds the contiguous range PhaseRun.assignUnassigned plans (proportional, then moved by
 * at most 25% to align with the sum tree) and sends one summed gradient per aligned block of it
 * (shared/tree-sum.ts): N when N is a power of two, at most 2N - 1 otherwise, flat in S.
 */
export function gradientsPerPhase(shards: number, workers: number): number {
  const plan: PhasePlan = {
    iteration: 0,
    phase: 'D',
    dStep: 0,
    shards: Array.from({ length: shards }, (_, s) => ({ shardId: s, seed: s, rows: 1 })),
    samplerBefore: { epoch: 0, cursor: 0, batches: 0 },
  };
  const run = new PhaseRun<Assignee>(plan, { factor: 3, minMs: 1000 });
  const ws: Assignee[] = Array.from({ length: workers }, (_, i) => ({ sessionId: i + 1, msPerShard: 10, measured: true }));
  return run.assignUnassigned(ws, 0).reduce((a, x) => a + run.blocksOf(x).length, 0);
}

/**
 * The fewest bytes an iteration can move per worker (issue #7's minimum, with #15's worker-side
 * sums): every worker receives each changed net once per phase (k D-steps change D k times, the
 * G-step changes G once), and one gradient per block of shards it holds comes back
 * (gradientsPerPhase, shared evenly between the workers). Task descriptions, real data rows,
 * message fields and framing are all overhead on top of it.
 */
export function minimumBytesPerIterationPerWorker(m: MinimumInput): { down: number; up: number; total: number } {
  const perPhaseValues = m.dSteps * m.params.D + m.params.G;
  const down = perPhaseValues * m.bytesPerValue;
  const up = (gradientsPerPhase(m.shards, m.workers) * perPhaseValues * m.bytesPerValue) / m.workers;
  return { down, up, total: down + up };
}

/** The per-iteration time split of one window (ms), from the progress line's split fields. */
export interface SplitMs {
  computeMs: number;
  applyMs: number;
  codecMs: number;
  transferMs: number;
  idleMs: number;
  /** The window's wall time per iteration (includes progress logging between phases). */
  iterationMs: number;
  /** Coordinator's own work (apply + its codec + its socket writes). */
  coordinatorMs: number;
}

export function splitOf(w: Window): SplitMs {
  const l = w.line;
  const per = (k: string) => (1000 * ((l[k] as number) ?? NaN)) / w.iterations;
  return {
    computeMs: per('splitComputeS'),
    applyMs: per('splitApplyS'),
    codecMs: per('splitCodecS'),
    transferMs: per('splitTransferS'),
    idleMs: per('splitIdleS'),
    iterationMs: per('wallS'),
    coordinatorMs: per('coordinatorS'),
  };
}

/**
 * Bytes up (worker -> coordinator: TCP payload of the WebSocket connections, framing included)
 * per phase in one window, all workers together: what the coordinator's link receives.
 */
export function upBytesPerPhase(w: Window, phasesPerIteration: number): number {
  return workerBytesOf(w.line).reduce((a, b) => a + b.wireReceived, 0) / w.iterations / phasesPerIteration;
}

/** One /status sample: cumulative shards done and the speed estimate per worker id. */
export interface ShardSample {
  iteration: number;
  done: Record<string, number>;
  msPerShard: Record<string, number>;
}

/** A joiner's shards against all shards done in a window, and its speed-proportional share. */
export interface JoinerShare {
  share: number;
  expected: number;
  shards: number;
  total: number;
}

/** What both benches report for a joiner's run: the window measured and its share (absent on error). */
export interface JoinerWindow extends Partial<JoinerShare> {
  fromIteration?: number;
  toIteration?: number;
  error?: string;
}

/**
 * A joiner's share of the shards done between two /status samples, against its
 * speed-proportional share (1/ms over the sum of 1/ms of the workers, from the later sample's
 * estimates). Null when no shards were done in between or the joiner is missing.
 */
export function joinerShare(from: ShardSample, to: ShardSample, joiner: string): JoinerShare | null {
  const ids = Object.keys(to.done);
  if (!ids.includes(joiner)) return null;
  const delta = (id: string) => (to.done[id] ?? 0) - (from.done[id] ?? 0);
  const total = ids.reduce((a, id) => a + delta(id), 0);
  if (total <= 0) return null;
  const speed = (id: string) => 1 / Math.max(to.msPerShard[id] ?? NaN, 1e-3);
  const expected = speed(joiner) / ids.reduce((a, id) => a + speed(id), 0);
  return { share: delta(joiner) / total, expected, shards: delta(joiner), total };
}
