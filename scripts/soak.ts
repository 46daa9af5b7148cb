/**
 * npm run soak [-- --minutes 5 --workers 3 --seed N --checkpoint-every 20 --keep]
 *
 * Chaos for a set time, then proof that nothing was lost: a coordinator (ring8, fixed port,
 * --checkpoint-every N, --auto-resume) and several workers train while this script, at random
 * (seeded) moments, SIGKILLs workers and restarts them, SIGKILLs (every third time: SIGTERMs) the coordinator and
 * restarts it on the same run directory and port (the workers reconnect on their own). One
 * "anchor" worker is never killed, so one long-lived process shows whether memory stays flat.
 *
 * When the time is up the coordinator is SIGKILLed once more and resumed with --iterations T
 * (a little past its position), the run finishes, and this script asserts:
 * - the final weights hash equals a calm `gan-train --iterations T` of the same config
 * - no iteration was lost beyond the last checkpoint: every `resumed` starts at the last
 *   `checkpoint_saved` before it in log.jsonl (or at a newer checkpoint whose log line the kill
 *   cut off), never earlier
 * - no unhandled rejection / uncaught exception in any process's output, no unexpected exit,
 *   no error-level line from the coordinator
 * - tfjs tensor counts (`numTensors` in `progress` and `worker_progress`) are constant within
 *   every process, and the longest-lived processes' RSS does not keep growing
 * and prints what it survived. Exit code 0 when every check passed, 1 otherwise. Not part of
 * `npm test` (it runs for minutes).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { uniformSource } from '../shared/rng.ts';
import { eventsOf, killAll, readLog, reservePort, sleep, spawnCli, waitForEvent, waitForExit, type Proc } from '../test/helpers/processes.ts';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    workers: { type: 'string', default: '3' },
    seed: { type: 'string' },
    'checkpoint-every': { type: 'string', default: '20' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(readFileSync(new URL(import.meta.url), 'utf8').split('*/')[0].replace(/^\/\*\*\n/, '').replace(/^ \* ?/gm, ''));
  process.exit(0);
}

const MINUTES = Number(args.minutes);
const WORKERS = Math.max(2, Number(args.workers));
const CHECKPOINT_EVERY = Number(args['checkpoint-every']);
const SEED = args.seed === undefined ? (Date.now() % 2 ** 31) : Number(args.seed);
const TRAIN = ['--dataset', 'ring8', '--preset', 'none', '--batch-size', '64', '--shards', '8', '--seed', '7', '--backend', 'wasm'];
const START_MS = 60_000;

const rand = uniformSource(SEED);
const between = (lo: number, hi: number) => lo + (hi - lo) * rand();

const runDir = mkdtempSync(join(tmpdir(), 'gan-soak-'));
const port = await reservePort();
const url = `ws://127.0.0.1:${port}`;
const t0 = performance.now();
const elapsed = () => ((performance.now() - t0) / 1000).toFixed(1);
const say = (line: string) => process.stdout.write(`[soak ${elapsed().padStart(6)} s] ${line}\n`);

/** Every process this soak started, for the output checks at the end. */
const all: { proc: Proc; role: 'coordinator' | 'worker' | 'train'; killedByUs: boolean }[] = [];
const stats = { workerKills: 0, workerRestarts: 0, coordinatorKills: 0, coordinatorStops: 0, coordinatorRestarts: 0 };

function startCoordinator(extra: string[] = []): Proc {
  const proc = spawnCli(
    'coordinator',
    [...TRAIN, '--iterations', '1000000', '--host', '127.0.0.1', '--port', String(port), '--run-dir', runDir, '--auto-resume', '--checkpoint-every', String(CHECKPOINT_EVERY), '--keep-checkpoints', '3', '--sample-every', '0', '--log-every', '50', '--status-interval', '5', ...extra],
    { name: `coordinator#${all.filter((p) => p.role === 'coordinator').length + 1}` },
  );
  all.push({ proc, role: 'coordinator', killedByUs: false });
  return proc;
}

function startWorker(id: string): Proc {
  const proc = spawnCli('worker', ['--coordinator', url, '--id', id, '--backend', 'wasm', '--status-interval', '5'], { name: `worker ${id}` });
  all.push({ proc, role: 'worker', killedByUs: false });
  return proc;
}

async function killProc(proc: Proc, signal: NodeJS.Signals): Promise<void> {
  const entry = all.find((p) => p.proc === proc);
  if (entry) entry.killedByUs = true;
  proc.child.kill(signal);
  await waitForExit(proc, 30_000);
}

/** The iteration the coordinator reported last (progress or checkpoint line). */
function lastIteration(proc: Proc): number {
  const e = [...proc.events].reverse().find((x) => x.event === 'progress' || x.event === 'checkpoint_saved' || x.event === 'training');
  return Number(e?.iteration ?? 0);
}

/** Exactly where the coordinator is (GET /status), else its last logged iteration. */
async function positionOf(proc: Proc): Promise<number> {
  try {
    const status = (await (await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(2000) })).json()) as { iteration?: number };
    if (typeof status.iteration === 'number') return status.iteration;
  } catch {
    // fall through
  }
  return lastIteration(proc);
}

/** Coordinator position right before each kill, in kill order. */
const killedAt: number[] = [];

// ------------------------------------------------------------------------------------- chaos

say(`run dir ${runDir}, port ${port}, ${WORKERS} workers, ${MINUTES} min, chaos seed ${SEED}, checkpoint every ${CHECKPOINT_EVERY}`);
let coordinator = startCoordinator();
await waitForEvent(coordinator, 'training', START_MS);
let coordinatorSince = performance.now();
const workerIds = Array.from({ length: WORKERS }, (_, i) => (i === 0 ? 'anchor' : `w${i}`));
const workers = new Map(workerIds.map((id) => [id, startWorker(id)]));
await waitForEvent(coordinator, (e) => e.event === 'worker_joined', START_MS);
say(`coordinator and ${WORKERS} workers up`);

const deadline = performance.now() + MINUTES * 60_000;
while (performance.now() < deadline) {
  await sleep(between(1500, 5000));
  if (performance.now() >= deadline) break;
  const roll = rand();
  // The coordinator gets >= 8 s between kills so it makes progress (and checkpoints) in between.
  const coordinatorOk = performance.now() - coordinatorSince > 8000;
  // ...and is stopped at least every 30 s.
  if ((roll < 0.18 && coordinatorOk) || performance.now() - coordinatorSince > 30_000) {
    // Every third stop is a clean SIGTERM (checkpoint at the phase boundary), the rest SIGKILL.
    const signal = (stats.coordinatorKills + stats.coordinatorStops) % 3 === 2 ? 'SIGTERM' : 'SIGKILL';
    const at = await positionOf(coordinator);
    killedAt.push(at);
    await killProc(coordinator, signal);
    if (signal === 'SIGKILL') stats.coordinatorKills++;
    else stats.coordinatorStops++;
    await sleep(between(200, 3000));
    coordinator = startCoordinator();
    stats.coordinatorRestarts++;
    const training = await waitForEvent(coordinator, 'training', START_MS);
    coordinatorSince = performance.now();
    say(`coordinator ${signal} at iteration ${at}; restarted, training from ${training.iteration}`);
  } else {
    // One or (sometimes) two workers, never the anchor.
    const victims = [...workers.keys()].filter((id) => id !== 'anchor').sort(() => rand() - 0.5).slice(0, rand() < 0.25 ? 2 : 1);
    for (const id of victims) {
      await killProc(workers.get(id)!, 'SIGKILL');
      stats.workerKills++;
    }
    await sleep(between(100, 2500));
    for (const id of victims) {
      workers.set(id, startWorker(id));
      stats.workerRestarts++;
    }
    say(`SIGKILLed and restarted ${victims.join(', ')} (coordinator at ~iteration ${lastIteration(coordinator)})`);
  }
}

// ------------------------------------------------------------------------------- the finish

const before = await positionOf(coordinator);
killedAt.push(before);
await killProc(coordinator, 'SIGKILL');
stats.coordinatorKills++;
const target = before + 2 * CHECKPOINT_EVERY;
say(`time is up: coordinator SIGKILLed at iteration ${before}; resuming with --iterations ${target} to finish`);
coordinator = startCoordinator(['--iterations', String(target)]);
stats.coordinatorRestarts++;
const finished = await waitForEvent(coordinator, 'run_finished', 10 * 60_000);
await waitForExit(coordinator, 30_000);
for (const w of workers.values()) await waitForExit(w, 30_000).catch(() => undefined);
const finalHash = String(finished.weightsHash);
const iterations = Number(finished.iterations);
say(`run finished at iteration ${iterations}: ${finalHash}`);

say(`calm reference: gan-train --iterations ${iterations} ...`);
const calmDir = mkdtempSync(join(tmpdir(), 'gan-soak-calm-'));
const train = spawnCli('train', [...TRAIN, '--iterations', String(iterations), '--run-dir', calmDir, '--sample-every', '0', '--log-every', '1000000'], { name: 'gan-train' });
all.push({ proc: train, role: 'train', killedByUs: false });
const calm = await waitForEvent(train, 'run_finished', 30 * 60_000);
await waitForExit(train, 30_000);
const calmHash = String(calm.weightsHash);

// ---------------------------------------------------------------------------------- checks

const failures: string[] = [];
const check = (ok: boolean, what: string) => {
  if (!ok) failures.push(what);
};

check(finished.stopped === false, 'the final run did not finish normally');
check(iterations === target, `the final run stopped at ${iterations}, not ${target}`);
check(finalHash === calmHash, `final hash ${finalHash} differs from the calm run's ${calmHash}`);

// Resumes vs checkpoints, in log order (log.jsonl holds every coordinator process's lines).
const log = readLog(runDir);
let lastSaved: { iteration: number; dStep: number } | null = null;
const resumes: { at: number; lastSaved: number | null; note: string }[] = [];
for (const e of log) {
  if (e.event === 'checkpoint_saved') lastSaved = { iteration: Number(e.iteration), dStep: Number(e.dStep) };
  if (e.event !== 'resumed') continue;
  const at = Number(e.iteration);
  if (!lastSaved) {
    failures.push(`resumed at ${at} before any checkpoint_saved was logged`);
    continue;
  }
  const same = at === lastSaved.iteration && Number(e.dStep) === lastSaved.dStep;
  let note = 'at the last checkpoint_saved';
  if (!same) {
    if (at > lastSaved.iteration) note = 'at a newer checkpoint whose log line the kill cut off';
    else failures.push(`resumed at ${at}/${e.dStep} but the last checkpoint_saved was ${lastSaved.iteration}/${lastSaved.dStep}: iterations lost`);
  }
  resumes.push({ at, lastSaved: lastSaved.iteration, note });
  const redo = (killedAt[resumes.length - 1] ?? at) - at;
  if (redo > CHECKPOINT_EVERY) failures.push(`resume ${resumes.length} at ${at} redoes ${redo} iterations, more than --checkpoint-every ${CHECKPOINT_EVERY}`);
}
const corrupt = eventsOf(log, (e) => e.code === 'CHECKPOINT_CORRUPT');
check(corrupt.length === 0, `${corrupt.length} CHECKPOINT_CORRUPT warning(s)`);
const errors = log.filter((e) => Number(e.level ?? 0) >= 50);
check(errors.length === 0, `${errors.length} error-level coordinator line(s), first: ${JSON.stringify(errors[0] ?? {}).slice(0, 300)}`);
// Coordinator starts without a checkpoint to resume from (all but the first) would have restarted the run.
const starts = eventsOf(log, 'run_started').length;
check(starts === stats.coordinatorRestarts + 1, `${starts} run_started lines for ${stats.coordinatorRestarts + 1} coordinator starts`);
check(resumes.length === stats.coordinatorRestarts, `${resumes.length} resumes for ${stats.coordinatorRestarts} restarts (a restart before the first checkpoint starts over)`);

// Process output and exits.
const BAD_OUTPUT = /unhandled ?rejection|UnhandledPromiseRejection|uncaught ?exception|FATAL ERROR|heap out of memory/i;
for (const { proc, role, killedByUs } of all) {
  const bad = [...proc.lines, ...proc.stderr].filter((l) => BAD_OUTPUT.test(l));
  check(bad.length === 0, `${proc.name}: ${bad[0]?.slice(0, 300)}`);
  if (!killedByUs) check(proc.exit?.code === 0, `${proc.name} (${role}) exited with ${JSON.stringify(proc.exit)}`);
  const refused = eventsOf(proc, (e) => e.event === 'refused' || e.event === 'gave_up');
  check(refused.length === 0, `${proc.name}: ${refused[0]?.event} ${refused[0]?.code ?? ''}`);
}

// Tensors and memory: constant tensor count per process; RSS of the longest-lived processes.
interface Series {
  name: string;
  tensors: number[];
  rss: number[];
}
const series: Series[] = [];
for (const { proc, role } of all) {
  if (role === 'train') continue;
  const lines = eventsOf(proc, role === 'coordinator' ? 'progress' : 'worker_progress').filter((e) => typeof e.numTensors === 'number');
  if (lines.length > 0) series.push({ name: proc.name, tensors: lines.map((e) => Number(e.numTensors)), rss: lines.map((e) => Number(e.rssMb)) });
}
for (const s of series) {
  // The first line may precede the last lazily created tensors; from the second on, not one more.
  const steady = s.tensors.slice(1);
  check(steady.every((n) => n === steady[0]), `${s.name}: numTensors drifts ${s.tensors.join(',')}`);
}
const longest = (prefix: string) => series.filter((s) => s.name.startsWith(prefix)).sort((a, b) => b.rss.length - a.rss.length)[0];
const memReport: string[] = [];
for (const s of [longest('worker anchor'), longest('coordinator')]) {
  if (!s || s.rss.length < 4) continue;
  // After warm-up (first quarter), RSS may wobble but not keep climbing: last <= max(1.3 x, +40 MB).
  const base = s.rss[Math.floor(s.rss.length / 4)];
  const last = s.rss[s.rss.length - 1];
  memReport.push(`${s.name}: ${s.rss.length} lines, tensors ${s.tensors[0]} -> ${s.tensors[s.tensors.length - 1]}, RSS ${s.rss[0]} -> ${base} -> ${last} MB (max ${Math.max(...s.rss)})`);
  check(last <= Math.max(base * 1.3, base + 40), `${s.name}: RSS grows ${base} -> ${last} MB`);
}
check(series.some((s) => s.name === 'worker anchor' && s.rss.length >= 4) || MINUTES < 1, 'the anchor worker logged too few worker_progress lines to judge memory');

// ---------------------------------------------------------------------------------- report

// Work redone: how far each killed coordinator had got past the checkpoint its successor resumed from.
const recomputed = resumes.map((r, i) => Math.max(0, (killedAt[i] ?? r.at) - r.at));
const report = [
  '',
  `soak: ${MINUTES} min of chaos (seed ${SEED}), ${elapsed()} s in all, run dir ${runDir}`,
  `  survived: ${stats.workerKills} worker SIGKILLs (${stats.workerRestarts} restarts), ${stats.coordinatorKills} coordinator SIGKILLs and ${stats.coordinatorStops} SIGTERMs (${stats.coordinatorRestarts} restarts)`,
  `  resumes: ${resumes.length}, at iterations ${resumes.map((r) => r.at).join(', ')}; all at the last checkpoint_saved${resumes.some((r) => r.note !== 'at the last checkpoint_saved') ? ' or a newer one' : ''}; iterations redone after the kills: ${recomputed.join(', ')} (at most ${CHECKPOINT_EVERY} each: the checkpoint interval)`,
  `  checkpoints saved: ${eventsOf(log, 'checkpoint_saved').length}; workers joined ${eventsOf(log, 'worker_joined').length} times, left ${eventsOf(log, 'worker_left').length}; shards reassigned ${eventsOf(log, 'shard_reassigned').length} times`,
  ...memReport.map((m) => `  memory: ${m}`),
  `  final: iteration ${iterations}, hash ${finalHash}`,
  `  calm : gan-train --iterations ${iterations},  hash ${calmHash}  ${finalHash === calmHash ? '(equal)' : '(DIFFERENT)'}`,
  failures.length === 0 ? 'soak: PASS' : `soak: FAIL\n${failures.map((f) => `  - ${f}`).join('\n')}`,
];
process.stdout.write(`${report.join('\n')}\n`);
await killAll();
if (failures.length === 0 && !args.keep) {
  rmSync(runDir, { recursive: true, force: true });
  rmSync(calmDir, { recursive: true, force: true });
}
process.exit(failures.length === 0 ? 0 : 1);

