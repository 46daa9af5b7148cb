/**
 * pino JSON lines on stdout and, when a run directory is given, in its log.jsonl. The file is
 * written synchronously so a SIGKILLed process still leaves every line it logged.
 *
 * stdout is human-readable (pino-pretty, one line per event) when it is a terminal or when asked
 * (--pretty); the file is always JSON. The event vocabulary is documented in docs/status-log.md.
 */
import { mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';
import { prettyFactory } from 'pino-pretty';
import { enableTerminalStatus, fitLine, wrapLine } from './progress-bar.ts';

export type Logger = pino.Logger;

/** One parsed log line. */
export type LogRecord = Record<string, unknown> & { event?: string; msg?: string; level?: number };

export interface LogConfig {
  /** Process role, e.g. 'coordinator', 'worker', 'train'. */
  name: string;
  level?: string;
  /** Also append JSON lines here. */
  file?: string;
  /**
   * Keep the file's lines in memory until openLogFile(logger) creates it, so a start that fails
   * (port in use, bad config) leaves no run directory behind.
   */
  deferFile?: boolean;
  /** Write to stdout (default true). */
  stdout?: boolean;
  /** Human-readable stdout (default: when stdout is a terminal). The file stays JSON. */
  pretty?: boolean;
}

export function createLogger(cfg: LogConfig): Logger {
  const level = (cfg.level ?? process.env.GAN_LOG_LEVEL ?? 'info') as pino.Level;
  // Each multistream entry filters on its own level (pino's default: info), so give them the logger's.
  const streams: pino.StreamEntry[] = [];
  if (cfg.stdout !== false) {
    const pretty = cfg.pretty ?? process.stdout.isTTY === true;
    const tty = process.stdout.isTTY === true;
    // On a terminal: short lines above a live progress bar (shared/progress-bar.ts).
    streams.push({ level, stream: pretty && tty ? terminalStdout() : pretty ? prettyStdout(false) : pino.destination({ dest: 1, sync: true }) });
  }
  let deferred: DeferredFile | null = null;
  if (cfg.file && cfg.deferFile) {
    deferred = new DeferredFile(cfg.file);
    streams.push({ level, stream: deferred });
  } else if (cfg.file) {
    mkdirSync(dirname(cfg.file), { recursive: true });
    streams.push({ level, stream: pino.destination({ dest: cfg.file, sync: true, append: true }) });
  }
  const logger = pino(
    { name: cfg.name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.multistream(streams),
  );
  if (deferred) deferredFiles.set(logger, deferred);
  return logger;
}

/** A log file created on demand: lines written before open() wait in memory, in order. */
class DeferredFile {
  private pending: string[] | null = [];
  private fd = -1;
  constructor(readonly path: string) {}

  write(line: string): void {
    if (this.pending) this.pending.push(line);
    else writeSync(this.fd, line);
  }

  open(): void {
    if (!this.pending) return;
    mkdirSync(dirname(this.path), { recursive: true });
    this.fd = openSync(this.path, 'a');
    for (const line of this.pending) writeSync(this.fd, line);
    this.pending = null;
  }
}

const deferredFiles = new WeakMap<Logger, DeferredFile>();

/**
 * Creates the log file of a logger made with `deferFile` (and its directory) and writes the lines
 * logged so far; from then on lines go straight to the file. A no-op for other loggers.
 */
export function openLogFile(logger: Logger): void {
  deferredFiles.get(logger)?.open();
}

/**
 * Calls `fn` with every line the logger writes at info level or above, parsed (the same object
 * that goes to log.jsonl). Returns false when the logger was not made by createLogger.
 */
export function tapLog(logger: Logger, fn: (rec: LogRecord) => void): boolean {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as Partial<pino.MultiStreamRes> | undefined;
  if (!stream || typeof stream.add !== 'function') return false;
  stream.add({
    level: 'info',
    stream: {
      write(line: string) {
        try {
          fn(JSON.parse(line) as LogRecord);
        } catch {
          // an observer must never break logging
        }
      },
    },
  });
  return true;
}

/** Synchronous pretty stdout (a Transform stream would lose the last lines of a process.exit). */
function prettyStdout(colorize: boolean): pino.DestinationStream {
  const format = prettyFactory({
    colorize,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname',
    hideObject: true,
    singleLine: true,
    messageFormat: (rec) => humanLine(rec as LogRecord),
  });
  return {
    write(line: string) {
      const text = format(line);
      writeSync(1, text.endsWith('\n') ? text : `${text}\n`);
    },
  };
}

/** stdout on a terminal: each event as terminalLines(), printed above the progress bar. */
function terminalStdout(): pino.DestinationStream {
  const term = enableTerminalStatus();
  return {
    write(line: string) {
      let rec: LogRecord;
      try {
        rec = JSON.parse(line) as LogRecord;
      } catch {
        term.line(fitLine(line.trimEnd(), term.columns()));
        return;
      }
      for (const l of terminalLines(rec, term.columns(), true)) term.line(l);
    },
  };
}

/**
 * An event for a terminal `columns` wide: "HH:MM:SS " and the human-readable line (without the
 * ETA of progress lines: the bar has a better one), cut to one line for info, word-wrapped for
 * warnings and errors (their remedy matters).
 */
export function terminalLines(rec: LogRecord, columns: number, color = false): string[] {
  const t = typeof rec.time === 'string' ? new Date(rec.time) : new Date();
  const hms = [t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  const level = typeof rec.level === 'number' ? rec.level : 30;
  const tag = level >= 50 ? 'ERROR ' : level >= 40 ? 'WARN ' : '';
  let lines: string[];
  if (rec.event === 'progress' || typeof rec.msg !== 'string') {
    lines = [fitLine(`${hms} ${humanLine({ ...rec, etaS: undefined })}`, columns)];
  } else if (tag) {
    lines = wrapLine(`${hms} ${tag}${humanLine(rec, { eventName: false })}`, columns);
  } else {
    // Info: the message in full (it may hold a URL or a command), the key=value details as far as they fit.
    lines = wrapLine(`${hms} ${humanLine({ ...rec, msg: rec.msg }, { eventName: false, details: false })}`, columns, '    ', 4);
    const kv = detailsText(rec);
    if (kv) lines[lines.length - 1] = fitLine(`${lines[lines.length - 1]}  ${kv}`, columns);
  }
  if (color && tag) lines[0] = lines[0].replace(tag, `\x1b[${level >= 50 ? 31 : 33}m${tag.trimEnd()}\x1b[0m `);
  return lines;
}

const HIDDEN = new Set(['event', 'msg', 'level', 'time', 'pid', 'hostname', 'name', 'config']);

const num = (v: unknown, digits = 3): string => (typeof v === 'number' ? String(Number.isInteger(v) ? v : Number(v.toPrecision(digits))) : '-');

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

/** The human-readable form of one event: a compact line for progress, msg + key=value otherwise. */
export function humanLine(rec: LogRecord, opts: { eventName?: boolean; details?: boolean } = {}): string {
  const who = rec.name === 'worker' && typeof rec.worker === 'string' ? `[${rec.worker}] ` : '';
  // On a terminal the message alone says it (the event name is for machines): shorter lines.
  const named = rec.event && (opts.eventName !== false || !rec.msg || rec.event === 'progress');
  const ev = `${who}${named ? `${rec.event}: ` : ''}`;
  if (rec.event === 'progress' && typeof rec.iteration === 'number') {
    const parts = [
      `it ${rec.iteration}/${rec.iterations ?? '?'}${rec.epoch !== undefined ? ` ep ${rec.epoch}` : ''}`,
      `lossD ${num(rec.lossD)} lossG ${num(rec.lossG)}`,
      `D(x) ${num(rec.dReal)} D(G(z)) ${num(rec.dFake)}`,
    ];
    if (rec.workers !== undefined) parts.push(`${rec.workers} worker${rec.workers === 1 ? '' : 's'}`);
    if (typeof rec.samplesPerSec === 'number') parts.push(`${Math.round(rec.samplesPerSec)} samples/s`);
    if (rec.computeS !== undefined) parts.push(`compute ${num(rec.computeS)}s wait ${num(rec.waitingS)}s apply ${num(rec.applyS)}s`);
    if (typeof rec.mbSent === 'number' && typeof rec.mbReceived === 'number') parts.push(`${rec.mbSent.toFixed(1)} MB out ${rec.mbReceived.toFixed(1)} MB in`);
    if (typeof rec.etaS === 'number') parts.push(`ETA ${formatSeconds(rec.etaS)}`);
    return `${ev}${parts.join(' | ')}`;
  }
  const kv = opts.details === false ? '' : detailsText(rec);
  return `${ev}${rec.msg ?? ''}${kv ? `  ${kv}` : ''}`;
}

/** An event's fields as key=value (what humanLine appends to the message). */
function detailsText(rec: LogRecord): string {
  const kv: string[] = [];
  for (const [k, v] of Object.entries(rec)) {
    // A worker's own lines carry its id on every line: shown once, up front.
    if (HIDDEN.has(k) || v === undefined || v === null || (k === 'worker' && rec.name === 'worker')) continue;
    if (typeof v === 'object') {
      if (Array.isArray(v) && v.length > 0 && v.length <= 16 && v.every((x) => typeof x !== 'object')) kv.push(`${k}=${v.join(',')}`);
      continue;
    }
    kv.push(`${k}=${typeof v === 'number' ? num(v, 4) : String(v)}`);
  }
  return kv.join(' ');
}

/** The most characters of any one peer-supplied value quoted in a log line or a refusal reason. */
export const MAX_QUOTED_CHARS = 200;

/**
 * A peer-supplied value made safe to quote: never more than `max` characters, whatever it is,
 * so a hostile frame cannot turn into a log line (or a bye) many times its own size.
 */
export function clip(value: unknown, max = MAX_QUOTED_CHARS): string {
  const text = typeof value === 'string' ? value : typeof value === 'bigint' ? `${value}n` : String(value);
  return text.length > max ? `${text.slice(0, max)}... (${text.length} chars)` : text;
}
