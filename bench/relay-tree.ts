/**
 * npm run bench:relay -- [--workers 4] [--fan-out 0,1,2] [--width 256] [--iterations 20] [--wire fp32]
 *
 * The coordinator's link bytes per phase, star (--fan-out 0) against the relay tree, on loopback:
 * one coordinator and N gan-worker processes (all with --relay-listen, so all can relay) train the
 * same mlp2d model on ring8; after the run (--linger) the bench reads /status: the coordinator's
 * frame bytes sent and received, divided by the phases run, and the tree's counters. It measures
 * bytes, not time: on one machine the link is not the limit (see bench:multihost for capped links).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { COMMON_FLAGS, helpText, parseFlags, type FlagTable } from '../shared/cli.ts';

const ROOT = join(import.meta.dirname, '..');
const OPTIONS: FlagTable = {
  workers: { type: 'string', value: '<n>', kind: 'int', help: 'gan-worker processes, every one with --relay-listen', defaultText: '4' },
  'fan-out': { type: 'string', value: '<list>', help: 'comma-separated fan-outs to compare; 0 is the star', defaultText: '0,1,2' },
  width: { type: 'string', value: '<n>', kind: 'int', help: "mlp2d's hidden width (sets the bytes per copy)", defaultText: '256' },
  iterations: { type: 'string', value: '<n>', kind: 'int', help: 'iterations per run', defaultText: '20' },
  wire: { type: 'string', value: '<format>', help: 'fp32 | fp16', defaultText: 'fp32' },
  help: COMMON_FLAGS.help,
};
const v = parseFlags(process.argv.slice(2), OPTIONS);
if (v.help) {
  process.stdout.write(helpText('Usage: npm run bench:relay -- [options]\n\nThe coordinator\'s frame bytes per phase on loopback, star against relay tree.', OPTIONS));
  process.exit(0);
}
const arg = (name: string, dflt: string): string => (typeof v[name] === 'string' ? (v[name] as string) : dflt);
const workers = Number(arg('workers', '4'));
const fanOuts = arg('fan-out', '0,1,2').split(',').map(Number);
const width = arg('width', '256');
const iterations = Number(arg('iterations', '20'));
const wire = arg('wire', 'fp32');
/** How long one run may take, start-up included, before the bench gives up on it. */
const RUN_TIMEOUT_MS = 600_000;
const FLAGS = ['--dataset', 'ring8', '--preset', 'none', '--model', 'mlp2d', '--width', width, '--iterations', String(iterations), '--batch-size', '64', '--shards', '8', '--backend', 'wasm', '--wire', wire];

function start(bin: string, args: string[], onLine: (e: Record<string, unknown>) => void): ChildProcess {
  const p = spawn(process.execPath, [join(ROOT, 'bin', bin), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  createInterface({ input: p.stdout! }).on('line', (l) => {
    try {
      onLine(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not a log line */
    }
  });
  p.stderr!.resume();
  return p;
}

async function runOnce(fanOut: number): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'relay-bench-'));
  const procs: ChildProcess[] = [];
  try {
    let port = 0;
    let finished = false;
    const ready = new Promise<void>((resolve) => {
      procs.push(
        start('gan-coordinator.js', [...FLAGS, '--host', '127.0.0.1', '--port', '0', '--run-dir', dir, '--sample-every', '0', '--linger', '30', '--fan-out', String(fanOut)], (e) => {
          if (e.event === 'listening') {
            port = Number(e.port);
            resolve();
          }
          if (e.event === 'run_finished') finished = true;
        }),
      );
    });
    await ready;
    for (let i = 0; i < workers; i++) procs.push(start('gan-worker.js', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', `w${i}`, '--backend', 'wasm', '--relay-listen', '127.0.0.1:0'], () => {}));
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    while (!finished) {
      if (Date.now() > deadline) throw new Error(`fan-out ${fanOut}: the run did not finish within ${RUN_TIMEOUT_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as Record<string, unknown>;
    const phases = iterations * 2;
    const tree = status.tree as { coordinator: Record<string, number>; nodes: unknown[] } | null;
    return {
      fanOut,
      workers,
      mbSentPerPhase: Number(((status.mbSent as number) / phases).toFixed(3)),
      mbReceivedPerPhase: Number(((status.mbReceived as number) / phases).toFixed(3)),
      weightCopiesPerChange: tree ? Number((tree.coordinator.weightCopies! / Math.max(1, tree.coordinator.weightChanges!)).toFixed(2)) : workers,
      sumsPerPhase: tree ? Number(((tree.coordinator.sumsReceived! + tree.coordinator.resultsReceived!) / phases).toFixed(2)) : undefined,
    };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows = [];
for (const f of fanOuts) rows.push(await runOnce(f));
console.log(JSON.stringify({ width, iterations, wire, rows }, null, 2));
for (const r of rows) console.log(`fan-out ${String(r.fanOut)} N=${String(r.workers)}: coordinator sends ${String(r.mbSentPerPhase)} MB and receives ${String(r.mbReceivedPerPhase)} MB per phase; ${String(r.weightCopiesPerChange)} weight copies per change; ${String(r.sumsPerPhase ?? '-')} sums+results per phase`);
