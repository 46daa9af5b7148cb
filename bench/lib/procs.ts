/**
 * The CLIs as child processes for the benches: `node bin/gan-<name>.js ...` with JSON log lines
 * parsed as they arrive, waits with timeouts that say what was last printed, and kill-all.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = (name: string) => join(ROOT, 'bin', `gan-${name}.js`);

export type LogLine = Record<string, unknown>;

export interface Proc {
  name: string;
  child: ChildProcess;
  events: LogLine[];
  stderr: string[];
  exited: Promise<number | null>;
  listeners: Set<(e: LogLine) => void>;
}

/** Starts `node [nodeArgs] bin/gan-<cli>.js args` (GAN_* variables of the outer shell dropped). */
export function startCli(cli: string, args: string[], name = cli, nodeArgs: string[] = []): Proc {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('GAN_')) delete env[k];
  const child = spawn(process.execPath, [...nodeArgs, BIN(cli), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
  const proc: Proc = { name, child, events: [], stderr: [], exited: new Promise((r) => child.on('exit', (code) => r(code))), listeners: new Set() };
  let buf = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      try {
        const e = JSON.parse(line) as LogLine;
        proc.events.push(e);
        for (const l of [...proc.listeners]) l(e);
      } catch {
        // not JSON
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    proc.stderr.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    if (proc.stderr.length > 200) proc.stderr.splice(0, proc.stderr.length - 200);
  });
  return proc;
}

const tail = (p: Proc) => `last stderr of ${p.name}: ${p.stderr.slice(-5).join(' | ') || '(none)'}`;

/** The first event matching pred (already seen or still to come), or an error after ms. */
export function waitForEvent(p: Proc, pred: (e: LogLine) => boolean, ms: number, what: string): Promise<LogLine> {
  const hit = p.events.find(pred);
  if (hit) return Promise.resolve(hit);
  return new Promise((resolveEvent, reject) => {
    const done = () => {
      clearTimeout(timer);
      p.listeners.delete(listener);
    };
    const listener = (e: LogLine) => {
      if (!pred(e)) return;
      done();
      resolveEvent(e);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${p.name}: no ${what} within ${Math.round(ms / 1000)} s; ${tail(p)}`));
    }, ms);
    p.listeners.add(listener);
    void p.exited.then((code) => {
      if (!p.listeners.has(listener)) return;
      done();
      reject(new Error(`${p.name} exited (code ${code}) before ${what}; ${tail(p)}`));
    });
  });
}

/** The exit code, or an error after ms. */
export async function waitForExit(p: Proc, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  try {
    const code = await Promise.race([p.exited, timeout]);
    if (code === 'timeout') throw new Error(`${p.name} did not exit within ${Math.round(ms / 1000)} s; ${tail(p)}`);
    return code;
  } finally {
    clearTimeout(timer);
  }
}

export function killAll(procs: Proc[]): void {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
}
