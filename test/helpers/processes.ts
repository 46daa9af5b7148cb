/**
 * Harness for the CLIs as real processes, shared by the tests, the benches and the soak: spawn one (node + bin/<cli>.js + args), collect its
 * stdout as lines and pino JSON events, wait for an event or an exit with a timeout whose error
 * shows the last lines of output, and SIGKILL everything that was spawned when a test ends.
 *
 * Call `cleanup()` (or `killAll()` then `removeTempDirs()`) from afterEach: no process outlives
 * its test, passing or failing. A process 'exit' hook is a last-resort net for a crashed runner.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const BINS = {
  coordinator: join(ROOT, 'bin', 'gan-coordinator.js'),
  worker: join(ROOT, 'bin', 'gan-worker.js'),
  train: join(ROOT, 'bin', 'gan-train.js'),
  eval: join(ROOT, 'bin', 'gan-eval.js'),
  sample: join(ROOT, 'bin', 'gan-sample.js'),
  demo: join(ROOT, 'bin', 'gan-demo.js'),
} as const;
export type CliName = keyof typeof BINS;

/** One parsed pino line; `event` is the project's stable event name. */
export interface LogEvent {
  event?: string;
  msg?: string;
  level?: number;
  [key: string]: unknown;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  /** Label used in error messages, e.g. "worker w1". */
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every stdout line, in order (JSON or not). */
  readonly lines: string[];
  /** Every stderr line, in order. */
  readonly stderr: string[];
  /** The stdout lines that parsed as JSON objects. */
  readonly events: LogEvent[];
  /** Set once the process has exited. */
  exit: ExitInfo | null;
  readonly exited: Promise<ExitInfo>;
  /** Internal: called after every new line and on exit. */
  readonly listeners: Set<() => void>;
  /** Called with every JSON event as it is parsed (the benches stamp and stream them). */
  readonly eventListeners: Set<(e: LogEvent) => void>;
}

export interface SpawnOptions {
  /** Added to a cleaned copy of process.env (GAN_* variables from the outer shell are dropped). */
  env?: Record<string, string | undefined>;
  /** Label in error messages; defaults to the CLI name. */
  name?: string;
  /**
   * A command that execs node, e.g. ['ip', 'netns', 'exec', '<ns>']: runs `prefix... node
   * bin/gan-<cli>.js ...args`. The prefix must exec (not fork) so the pid is node's.
   */
  prefix?: string[];
  /** node/V8 flags before the script, e.g. ['--cpu-prof']. */
  nodeArgs?: string[];
  /** Run this script instead of bin/gan-<cli>.js (e.g. a copy installed elsewhere by npm). */
  script?: string;
  /** Working directory (default: the repository root). */
  cwd?: string;
}

const spawned = new Set<Proc>();
const tempDirs = new Set<string>();

/** Spawns a CLI as `node bin/gan-<cli>.js ...args` with piped stdout/stderr. */
export function spawnCli(cli: CliName, args: string[], opts: SpawnOptions = {}): Proc {
  const env: Record<string, string | undefined> = { ...process.env };
  // Nothing from the outer environment may steer a test run (tokens, hooks, log level).
  for (const k of Object.keys(env)) if (k.startsWith('GAN_')) delete env[k];
  Object.assign(env, opts.env ?? {});
  const argv = [...(opts.prefix ?? []), process.execPath, ...(opts.nodeArgs ?? []), opts.script ?? BINS[cli], ...args];
  const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd ?? ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let resolveExit!: (e: ExitInfo) => void;
  const proc: Proc = {
    name: opts.name ?? cli,
    child,
    pid: child.pid ?? -1,
    lines: [],
    stderr: [],
    events: [],
    exit: null,
    exited: new Promise<ExitInfo>((r) => (resolveExit = r)),
    listeners: new Set(),
    eventListeners: new Set(),
  };
  const notify = () => {
    for (const l of [...proc.listeners]) l();
  };
  const lineReader = (onLine: (line: string) => void) => {
    let buf = '';
    return {
      data(chunk: Buffer) {
        buf += chunk.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          onLine(line);
        }
      },
      end() {
        if (buf) onLine(buf);
        buf = '';
      },
    };
  };
  const out = lineReader((line) => {
    proc.lines.push(line);
    if (line.startsWith('{')) {
      try {
        const v = JSON.parse(line) as unknown;
        if (v && typeof v === 'object' && !Array.isArray(v)) {
          proc.events.push(v as LogEvent);
          for (const l of [...proc.eventListeners]) l(v as LogEvent);
        }
      } catch {
        // not JSON: kept in lines only
      }
    }
    notify();
  });
  const err = lineReader((line) => {
    proc.stderr.push(line);
    notify();
  });
  child.stdout!.on('data', out.data);
  child.stderr!.on('data', err.data);
  // 'close' on the child fires after both streams ended; these only flush a partial last line.
  child.stdout!.on('end', () => out.end());
  child.stderr!.on('end', () => err.end());
  child.on('error', (e) => {
    proc.stderr.push(`[spawn error] ${e.message}`);
  });
  // 'close' (not 'exit') so every line the process wrote has been read before waiters hear of it.
  child.on('close', (code, signal) => {
    proc.exit = { code, signal };
    resolveExit(proc.exit);
    notify();
  });
  spawned.add(proc);
  return proc;
}

/** The last `n` lines of stdout and stderr, for error messages. */
export function tail(proc: Proc, n = 15): string {
  const out = proc.lines.slice(-n).map((l) => `  | ${l}`);
  const err = proc.stderr.slice(-n).map((l) => `  ! ${l}`);
  return [`--- ${proc.name} (pid ${proc.pid}) stdout, last ${out.length} line(s):`, ...out, ...(err.length ? [`--- stderr, last ${err.length} line(s):`, ...err] : [])].join('\n');
}

function describeExit(e: ExitInfo): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}

/**
 * Resolves with the first non-undefined value of `check()`, re-evaluated after every line the
 * process writes. Rejects on timeout, or if the process exits first, with its last lines.
 */
export function waitUntil<T>(proc: Proc, check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolvePromise, reject) => {
    let timer: NodeJS.Timeout | null = null;
    const done = () => {
      proc.listeners.delete(listener);
      if (timer) clearTimeout(timer);
    };
    const listener = () => {
      let v: T | undefined;
      try {
        v = check();
      } catch (e) {
        done();
        reject(e);
        return;
      }
      if (v !== undefined) {
        done();
        resolvePromise(v);
      } else if (proc.exit) {
        done();
        reject(new Error(`${proc.name} ${describeExit(proc.exit)} before ${what}\n${tail(proc)}`));
      }
    };
    proc.listeners.add(listener);
    timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${proc.name}\n${tail(proc)}`));
    }, timeoutMs);
    listener();
  });
}

export type EventMatcher = string | ((e: LogEvent) => boolean);

function matcherOf(m: EventMatcher): (e: LogEvent) => boolean {
  return typeof m === 'string' ? (e) => e.event === m : m;
}

function describeMatcher(m: EventMatcher): string {
  return typeof m === 'string' ? `event '${m}'` : `an event matching ${m.toString().replace(/\s+/g, ' ').slice(0, 160)}`;
}

/**
 * The first event (already logged or still to come) that matches: an event name or a predicate.
 * Rejects on timeout or early exit with the process's last lines.
 */
export function waitForEvent(proc: Proc, matcher: EventMatcher, timeoutMs: number): Promise<LogEvent> {
  const match = matcherOf(matcher);
  return waitUntil(proc, () => proc.events.find(match), timeoutMs, describeMatcher(matcher));
}

/** Resolves once `count` matching events have been logged; returns them all. */
export function waitForEvents(proc: Proc, matcher: EventMatcher, count: number, timeoutMs: number): Promise<LogEvent[]> {
  const match = matcherOf(matcher);
  return waitUntil(
    proc,
    () => {
      const found = proc.events.filter(match);
      return found.length >= count ? found : undefined;
    },
    timeoutMs,
    `${count} x ${describeMatcher(matcher)}`,
  );
}

/** Resolves with the exit code/signal; rejects (with the last lines) if it is still running after timeoutMs. */
export function waitForExit(proc: Proc, timeoutMs: number): Promise<ExitInfo> {
  if (proc.exit) return Promise.resolve(proc.exit);
  return new Promise<ExitInfo>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${proc.name} still running after ${timeoutMs} ms\n${tail(proc)}`)), timeoutMs);
    void proc.exited.then((e) => {
      clearTimeout(timer);
      resolvePromise(e);
    });
  });
}

/** Events of a kind, in order. */
export function eventsOf(proc: Proc | LogEvent[], matcher: EventMatcher): LogEvent[] {
  const list = Array.isArray(proc) ? proc : proc.events;
  return list.filter(matcherOf(matcher));
}

/** SIGKILLs one process and waits for it to be gone. */
export async function kill(proc: Proc, signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitInfo> {
  if (!proc.exit) {
    try {
      proc.child.kill(signal);
    } catch {
      // already gone
    }
  }
  return proc.exited;
}

/** SIGKILLs every process spawned through this module that is still running, and waits for them. */
export async function killAll(timeoutMs = 10_000): Promise<void> {
  const alive = [...spawned].filter((p) => !p.exit);
  for (const p of alive) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  await Promise.race([Promise.all(alive.map((p) => p.exited)), new Promise((r) => setTimeout(r, timeoutMs))]);
  for (const p of spawned) if (p.exit) spawned.delete(p);
}

/** A fresh directory under os.tmpdir(), removed by removeTempDirs(). */
export function makeTempDir(prefix = 'gan-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDirs(): void {
  // KEEP_TEST_DIRS=1 keeps every run directory (its log.jsonl) to read after a failure.
  if (process.env.KEEP_TEST_DIRS) {
    if (tempDirs.size > 0) console.error(`KEEP_TEST_DIRS: kept ${[...tempDirs].join(' ')}`);
    tempDirs.clear();
    return;
  }
  for (const d of tempDirs) {
    rmSync(d, { recursive: true, force: true });
    tempDirs.delete(d);
  }
}

/** For afterEach/afterAll: kill every process, then remove every temp dir. */
export async function cleanup(): Promise<void> {
  await killAll();
  removeTempDirs();
}

/** A run directory and a reserved loopback port: where a coordinator is started, stopped and resumed in place. */
export interface Site {
  runDir: string;
  port: number;
  url: string;
}

export async function newSite(prefix = 'gan-site-'): Promise<Site> {
  const port = await reservePort();
  return { runDir: makeTempDir(prefix), port, url: `ws://127.0.0.1:${port}` };
}

/** gan-coordinator on the site's port and run directory, with a progress line at least every statusInterval seconds. */
export function startSiteCoordinator(site: Site, args: string[], opts: { name?: string; env?: Record<string, string>; statusInterval?: string } = {}): Proc {
  const fixed = ['--host', '127.0.0.1', '--port', String(site.port), '--run-dir', site.runDir, '--status-interval', opts.statusInterval ?? '0.5'];
  return spawnCli('coordinator', [...fixed, ...args], { name: opts.name ?? 'coordinator', env: opts.env });
}

/** A wasm gan-worker for the site's coordinator; with `stay` it waits for the next run instead of exiting. */
export function startSiteWorker(site: Site, id: string, opts: { stay?: boolean; env?: Record<string, string> } = {}): Proc {
  return spawnCli('worker', ['--coordinator', site.url, '--id', id, '--backend', 'wasm', ...(opts.stay ? ['--stay'] : [])], { name: `worker ${id}`, env: opts.env });
}

/** Parses <runDir>/log.jsonl (the coordinator's copy of its stdout log). */
export function readLog(runDir: string): LogEvent[] {
  const file = join(runDir, 'log.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as LogEvent);
}

/** A TCP port that was free a moment ago (bound on 127.0.0.1, then released). */
export function reservePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePromise(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// Last resort: a runner that exits with processes still up (crash, bail) must not leak them.
process.once('exit', () => {
  for (const p of spawned) {
    if (!p.exit) {
      try {
        p.child.kill('SIGKILL');
      } catch {
        // ignore
      }
    }
  }
});
