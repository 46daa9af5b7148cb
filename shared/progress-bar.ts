/**
 * Progress on a terminal: a live bar on the last line (iteration, %, it/s, ETA, losses) under the
 * event lines, which are kept to the terminal's width. Only when stdout is a TTY; the JSON log
 * (log.jsonl, and stdout when it is not a terminal) is unchanged.
 *
 *   12:01:07 worker_joined: worker joined  worker=w1 address=127.0.0.1:50312 backend=wasm…
 *   ███████████░░░░░░░░░░░░░  420/1000  42% · 11.8 it/s · ETA 49s · lossD 1.21 lossG 0.93
 *
 * The ETA is sane from the start: the clock starts at the first completed iteration (not at
 * launch, so waiting for workers and warm-up do not count), the rate is the mean over the last
 * 30 s, and nothing is shown until 5 iterations and 2 s have been measured.
 *
 * Pure parts (formatBar, fitLine, wrapLine, RateMeter) are unit-tested in test/progress-bar.test.ts.
 */
import { writeSync } from 'node:fs';

/** Terminal width to format for (process.stdout.columns, 80 when unknown). */
export function terminalColumns(stream: { columns?: number } = process.stdout): number {
  const c = stream.columns;
  return typeof c === 'number' && c >= 20 ? c : 80;
}

/** "45s", "2m05s", "1h02m". */
export function formatDuration(seconds: number): string {
  const t = Math.max(0, Math.round(seconds));
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;
/** Visible width (ANSI colour codes take none). */
export const visibleLength = (s: string): number => s.replace(ANSI, '').length;

/** One line of at most `columns - 1` visible characters (the last column would make terminals wrap); cut with "…". */
export function fitLine(text: string, columns: number): string {
  const max = Math.max(1, columns - 1);
  if (visibleLength(text) <= max) return text;
  const plain = text.replace(ANSI, '');
  return `${plain.slice(0, max - 1)}…`;
}

/** Word-wraps to lines of at most `columns - 1` characters, continuation lines indented; at most `maxLines` (the last cut with "…"). */
export function wrapLine(text: string, columns: number, indent = '    ', maxLines = 6): string[] {
  const max = Math.max(indent.length + 10, columns - 1);
  const plain = text.replace(ANSI, '');
  const lead = /^ */.exec(plain)![0];
  const words = plain.slice(lead.length).split(/ +/);
  const lines: string[] = [];
  let cur = '';
  for (const w of words) {
    const prefix = lines.length === 0 ? lead : indent;
    const candidate = cur ? `${cur} ${w}` : `${prefix}${w}`;
    if (visibleLength(candidate) <= max || !cur) {
      cur = candidate;
    } else {
      lines.push(cur);
      cur = `${indent}${w}`;
    }
  }
  if (cur) lines.push(cur);
  const out = lines.map((l) => fitLine(l, columns));
  if (out.length > maxLines) return [...out.slice(0, maxLines - 1), fitLine(`${out[maxLines - 1]} …`, columns)];
  return out;
}

/**
 * Iterations per second over a sliding window, from the first completed iteration on.
 * rate() and eta() are null until `minIterations` and `minSeconds` have been measured.
 */
export class RateMeter {
  private marks: { t: number; it: number }[] = [];

  constructor(private readonly opts = { windowS: 30, minIterations: 5, minSeconds: 2 }) {}

  /** Records that `iteration` iterations are complete at time `nowMs`. */
  tick(iteration: number, nowMs: number): void {
    const last = this.marks.at(-1);
    if (last && iteration < last.it) this.marks = []; // went backwards (a new run): start again
    // Keep at most ~4 marks a second; the newest position always replaces a recent mark.
    if (this.marks.length >= 2 && nowMs - this.marks[this.marks.length - 2].t < 250) this.marks[this.marks.length - 1] = { t: nowMs, it: iteration };
    else this.marks.push({ t: nowMs, it: iteration });
    const horizon = nowMs - this.opts.windowS * 1000;
    while (this.marks.length > 2 && this.marks[1].t <= horizon) this.marks.shift();
  }

  /** Iterations per second, or null while too little has been measured. */
  rate(): number | null {
    if (this.marks.length < 2) return null;
    const first = this.marks[0];
    const last = this.marks[this.marks.length - 1];
    const di = last.it - first.it;
    const dt = (last.t - first.t) / 1000;
    if (di < this.opts.minIterations || dt < this.opts.minSeconds) return null;
    return di / dt;
  }

  /** Seconds until `target` iterations, or null while unknown. */
  eta(target: number): number | null {
    const last = this.marks.at(-1);
    if (last && last.it >= target) return 0;
    const r = this.rate();
    return r && last ? (target - last.it) / r : null;
  }
}

export interface BarState {
  iteration: number;
  iterations: number;
  /** iterations per second (null: not measured yet) */
  rate: number | null;
  /** seconds (null: not measured yet) */
  eta: number | null;
  lossD?: number;
  lossG?: number;
  workers?: number;
}

/** Fixed width while a loss stays under 10, so the bar does not jitter. */
const num = (v: number): string => (Math.abs(v) < 10 ? v.toFixed(3) : String(Number(v.toPrecision(4))));

/**
 * The bar line, at most `columns - 1` wide. When space runs short it drops, in order: the
 * workers, the losses, it/s; the counts, percentage and ETA stay.
 */
export function formatBar(s: BarState, columns: number): string {
  const max = Math.max(10, columns - 1);
  const frac = s.iterations > 0 ? Math.min(1, Math.max(0, s.iteration / s.iterations)) : 0;
  const width = String(s.iterations).length;
  const head = `${String(s.iteration).padStart(width)}/${s.iterations} ${String(Math.floor(frac * 100)).padStart(3)}%`;
  const eta = s.iteration >= s.iterations ? 'done' : s.eta === null ? 'ETA …' : `ETA ${formatDuration(s.eta)}`;
  const optional: string[] = [];
  if (s.rate !== null) optional.push(`${s.rate >= 10 ? Math.round(s.rate) : s.rate.toFixed(1)} it/s`);
  const losses = s.lossD !== undefined && s.lossG !== undefined && Number.isFinite(s.lossD) && Number.isFinite(s.lossG) ? `lossD ${num(s.lossD)} lossG ${num(s.lossG)}` : '';
  if (losses) optional.push(losses);
  if (s.workers !== undefined) optional.push(`${s.workers} worker${s.workers === 1 ? '' : 's'}`);
  // Which optional parts fit beside a bar of at least 10 cells: drop from the end (workers, losses, rate).
  const MIN_BAR = 10;
  let parts = [head, eta, ...optional];
  const textOf = (p: string[]) => `${p[0]} · ${p.slice(1).join(' · ')}`;
  while (parts.length > 2 && MIN_BAR + 1 + textOf(parts).length > max) parts = parts.slice(0, -1);
  // ETA beside the counts, then the rest.
  const text = textOf(parts);
  const cells = max - 1 - text.length;
  if (cells < MIN_BAR) return fitLine(text, columns);
  const full = Math.round(frac * cells);
  return `${'█'.repeat(full)}${'░'.repeat(cells - full)} ${text}`;
}

/**
 * The terminal's last line as a status line: event lines are printed above it, and it is redrawn
 * after each. Writes synchronously (as the log does) so lines never interleave.
 */
export class TerminalStatus {
  private bar = '';
  private lastDraw = 0;

  constructor(
    private readonly fd = 1,
    readonly columns: () => number = () => terminalColumns(),
  ) {}

  /** Prints a line above the status line. */
  line(text: string): void {
    const body = text.endsWith('\n') ? text : `${text}\n`;
    writeSync(this.fd, this.bar ? `\r\x1b[K${body}${this.bar}` : body);
  }

  /** Shows `text` as the status line (at most ~10 redraws a second unless `force`). */
  status(text: string, force = false, nowMs = performance.now()): void {
    if (!force && text === this.bar) return;
    if (!force && this.bar && nowMs - this.lastDraw < 100) {
      this.bar = text;
      return;
    }
    this.bar = text;
    this.lastDraw = nowMs;
    writeSync(this.fd, `\r\x1b[K${text}`);
  }

  /** Removes the status line. */
  clear(): void {
    if (!this.bar) return;
    this.bar = '';
    writeSync(this.fd, '\r\x1b[K');
  }
}

let terminal: TerminalStatus | null = null;

/**
 * The process's terminal status line, created by the logger when stdout is a TTY (shared/log.ts);
 * null otherwise (then the live bar is off).
 */
export function stdoutTerminal(): TerminalStatus | null {
  return terminal;
}

/** Called by shared/log.ts for a TTY stdout. */
export function enableTerminalStatus(): TerminalStatus {
  if (!terminal) {
    terminal = new TerminalStatus(1);
    const t = terminal;
    process.once('exit', () => t.clear());
  }
  return terminal;
}

/**
 * The live bar of a training loop: fed with every phase (D phases carry lossD, G phases complete
 * an iteration). A no-op when stdout is not a terminal.
 */
export class LiveProgress {
  private meter = new RateMeter();
  private lossD = NaN;
  private lossG = NaN;

  phase(s: { phase: 'D' | 'G'; iteration: number; loss: number }, iterations: number, workers?: number, nowMs = performance.now()): void {
    const term = stdoutTerminal();
    if (!term) return;
    // Smoothed losses (a single phase's loss jumps around).
    const ema = (prev: number, v: number) => (Number.isFinite(prev) ? prev + 0.1 * (v - prev) : v);
    if (s.phase === 'D') {
      this.lossD = ema(this.lossD, s.loss);
      return;
    }
    this.lossG = ema(this.lossG, s.loss);
    const done = s.iteration + 1;
    this.meter.tick(done, nowMs);
    term.status(formatBar({ iteration: done, iterations, rate: this.meter.rate(), eta: this.meter.eta(iterations), lossD: this.lossD, lossG: this.lossG, workers }, term.columns()), done >= iterations, nowMs);
  }

  /** Removes the bar (the run is over). */
  end(): void {
    stdoutTerminal()?.clear();
  }
}
