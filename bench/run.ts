/**
 * npm run bench: what distribution costs on one machine, in one run.
 *
 * For one model, backend, global batch and shard count, as processes a user would start
 * (bin/gan-*.js, workers on loopback):
 *   single   gan-train, the single-process trainer (the baseline)
 *   1        gan-coordinator + 1 gan-worker
 *   2        gan-coordinator + 2 gan-workers
 * Every process logs a progress line per iteration (--log-every 1). After --warmup iterations
 * (counted once all of a mode's workers are connected) the next --iterations are measured; the
 * modes run in turn --rounds times (so drifting background load hits all of them), figures are
 * medians over the pooled iterations and ratios are between modes of this same run. The coordinator's
 * lines carry the critical-path time split and per-worker bytes (docs/status-log.md, `progress`),
 * so the bench adds no instrumentation of its own: bench/lib/accounting.ts turns the lines into
 * the figures, and test/bench-bytes.test.ts checks the byte figures against a TCP proxy.
 *
 * Targets (issue #7): 1 worker >= 0.90 x single process; 2 workers >= 1.6 x 1 worker (2 cores);
 * bytes per iteration per worker <= 1.1 x the minimum; coordinator work <= 10% of an iteration.
 * Issue #15 raises the first to 0.95 x (at batch 64, default shards) and adds two figures:
 *   - bytes up per phase against N and S (--sweep-shards x --sweep-workers, a few iterations
 *     each): all workers' bytes to the coordinator per phase against N x one gradient; flat in S;
 *   - a joiner's share (--no-join skips it): coordinator + 1 worker, a second worker joins after
 *     the warm-up; its share of the shards done from the second phase after its welcome on,
 *     from /status, against its speed-proportional share (target: within 25%).
 * Then (unless --no-quality) bench/wire-quality.ts trains ring8 with --wire fp32 and fp16 on the
 * same seeds (single process, a few minutes) and its quality table is added to the results.
 *
 * Results: bench/results/bench-<date>.json and .md, and the Markdown on stdout.
 *
 *   npm run bench
 *   npm run bench -- --rounds 1 --iterations 20 --warmup 5 --no-quality      # a quick look
 *   npm run bench -- --model mlp --shards 8 --modes 1,2
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { initBackend } from '../shared/backend.ts';
import { helpText, parseFlags, type FlagTable, type FlagValues } from '../shared/cli.ts';
import { GAN_FLAGS, ganOptionsFrom } from '../trainer/gan-flags.ts';
import { runMain } from '../shared/cli-main.ts';
import { resolveConfig, type GanConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { GanReplica } from '../shared/replica.ts';
import {
  measuredWindows,
  median,
  gradientsPerPhase,
  joinerShare,
  type JoinerWindow,
  minimumBytesPerIterationPerWorker,
  payloadBytesPerIterationPerWorker,
  upBytesPerPhase,
  type ShardSample,
  splitOf,
  wireBytesPerIterationPerWorker,
  type ProgressLine,
  type SplitMs,
} from './lib/accounting.ts';
import { kill, ROOT, spawnCli, waitForEvent, type Proc } from '../test/helpers/processes.ts';
import { wireQuality, type WireQualityResult } from './wire-quality.ts';

type ModeName = 'single' | '1' | '2';
const MODE_LABEL: Record<ModeName, string> = { single: 'single process', '1': 'coordinator + 1 worker', '2': 'coordinator + 2 workers' };
const labelOf = (mode: string): string => MODE_LABEL[mode as ModeName] ?? `coordinator + ${mode} workers`;

/** Training flags passed through to gan-train and gan-coordinator (not --iterations: the bench decides). */
const TRAINING_FLAGS: FlagTable = Object.fromEntries(Object.entries(GAN_FLAGS).filter(([k]) => k !== 'iterations'));

const FLAGS: FlagTable = {
  ...TRAINING_FLAGS,
  backend: { type: 'string', help: 'compute backend of every process: wasm | cpu | tensorflow', defaultText: 'wasm' },
  iterations: { type: 'string', kind: 'int', help: 'measured iterations per mode and round (after the warm-up)', defaultText: '30' },
  warmup: { type: 'string', kind: 'int', help: 'iterations skipped per mode once all its workers are connected', defaultText: '8' },
  rounds: { type: 'string', kind: 'int', help: 'run the modes in turn this many times and pool the measured iterations (evens out background load)', defaultText: '3' },
  modes: { type: 'string', help: 'comma-separated: single, 1, 2 (coordinator + that many workers)', defaultText: 'single,1,2' },
  'no-quality': { type: 'boolean', help: 'skip the ring8 --wire fp32 vs fp16 quality comparison (bench/wire-quality.ts, single-process, a few minutes)' },
  'quality-seeds': { type: 'string', help: 'seeds of the quality comparison (each trained with fp32 and fp16)', defaultText: '1,2,3' },
  'quality-iterations': { type: 'string', kind: 'int', help: 'iterations per quality run', defaultText: '3000 (the ring8 preset)' },
  'sweep-shards': { type: 'string', help: "shard counts of the bytes-up sweep, comma-separated ('none' skips it)", defaultText: '4,16,64' },
  'sweep-workers': { type: 'string', help: 'worker counts of the bytes-up sweep', defaultText: '1,2,3' },
  'no-join': { type: 'boolean', help: "skip the joiner's-share run" },
  'node-args': { type: 'string', help: "extra node/V8 flags for every process, space-separated (e.g. '--heap-growing-percent=0' for V8's default GC heuristics)" },
  out: { type: 'string', help: 'results directory', defaultText: 'bench/results' },
  'keep-runs': { type: 'boolean', help: 'keep the temporary run directories (printed)' },
  help: { type: 'boolean', help: 'show this help' },
};

const USAGE = `Usage: npm run bench -- [options]

Single-process trainer vs coordinator + 1 and + 2 workers (real processes on loopback) for one
model/backend/batch/shards: samples/s, the per-iteration time split, bytes per iteration per
worker against the minimum, and the issue #7 targets. Writes bench/results/bench-<date>.{json,md}.`;

interface ModeResult {
  mode: ModeName;
  label: string;
  workers: number;
  /** Iterations measured (progress windows of one iteration each). */
  measured: number;
  loadAtStart: number[];
  samplesPerSec: { median: number; min: number; max: number };
  /** Median samples/s of each round on its own (how much the machine's load moved the figure). */
  samplesPerSecByRound: number[];
  iterationMs: number;
  /** Medians over the measured iterations (ms per iteration); distributed modes only. */
  split?: { computeMs: number; applyMs: number; codecMs: number; transferMs: number; idleMs: number };
  /** Median of (coordinator's own work / iteration wall time). */
  coordinatorShare?: number;
  /** Median TCP bytes per iteration per worker (framing included), message payload bytes, and the minimum. */
  /** CPU milliseconds per measured iteration of each process (from /proc): contention shows as wall time well above it. */
  cpuMsPerIteration?: Record<string, number>;
  bytes?: { wirePerIterationPerWorker: number; payloadPerIterationPerWorker: number; minimumPerIterationPerWorker: number; minimumDown: number; minimumUp: number; ratio: number };
  error?: string;
}

interface Target {
  name: string;
  target: string;
  measured: string;
  met: boolean | null;
}

const say = (s: string) => process.stdout.write(`${s}\n`);
const load1 = () => loadavg().map((x) => Number(x.toFixed(2)));

/** Whether Linux autogroup scheduling is on and this session's autogroup nice ('' where unknown). */
function schedulingContext(): string {
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8').trim();
    } catch {
      return null;
    }
  };
  const enabled = read('/proc/sys/kernel/sched_autogroup_enabled');
  if (enabled === null) return '';
  if (enabled !== '1') return 'autogroup off';
  const group = read('/proc/self/autogroup');
  return `autogroup on (CPU shared fairly between sessions, whatever their processes' nice)${group ? `; this session: ${group}` : ''}`;
}
const fmt = (x: number | undefined, digits = 1) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits));
const mb = (bytes: number | undefined) => (bytes === undefined ? 'n/a' : (bytes / 1e6).toFixed(3));

/** Flags given on the command line for the training config, as argv for gan-train / gan-coordinator. */
function trainingArgv(v: FlagValues): string[] {
  const out: string[] = [];
  for (const [k, spec] of Object.entries(TRAINING_FLAGS)) {
    const val = v[k];
    if (val === undefined) continue;
    if (spec.type === 'boolean') {
      if (val === true) out.push(`--${k}`);
    } else out.push(`--${k}`, String(val));
  }
  return out;
}

interface ModeRun {
  lines: ProgressLine[];
  workers: number;
  loadAtStart: number[];
  /** CPU seconds (user + system) each process used during the measured iterations, by process name. */
  cpuS: Record<string, number>;
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); null elsewhere. */
function cpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    // Fields after the command (which may hold spaces) start after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return null;
  }
}
/** USER_HZ: 100 on every mainstream Linux. */
const CLOCK_TICKS = 100;

/** Runs one mode until `warmup + count` eligible progress windows are in, then kills its processes. */
async function runMode(mode: ModeName, common: string[], backend: string, warmup: number, count: number, keepRuns: boolean, nodeArgs: string[]): Promise<ModeRun> {
  const runDir = mkdtempSync(join(tmpdir(), `gan-bench-${mode}-`));
  const workers = mode === 'single' ? 0 : Number(mode);
  const procs: Proc[] = [];
  const run: ModeRun = { lines: [], workers, loadAtStart: load1(), cpuS: {} };
  const cpuAtStart = new Map<Proc, number | null>();
  const needed = warmup + count;
  // Generous: an iteration of the default model takes well under a second on 2 cores.
  const limitMs = 180_000 + needed * 15_000;
  let eligible = 0;
  let settle!: (err?: Error) => void;
  const enough = new Promise<void>((resolveDone, reject) => (settle = (err) => (err ? reject(err) : resolveDone())));
  const onLine = (e: ProgressLine) => {
    if (e.event !== 'progress') return;
    run.lines.push(e);
    if (workers > 0 && e.workers !== workers) return;
    eligible++;
    if (eligible === warmup) {
      say(`  ${labelOf(mode)}: warm-up done (${warmup} iterations)`);
      for (const p of procs) cpuAtStart.set(p, cpuSeconds(p.child.pid));
    }
    else if (eligible > warmup && (eligible - warmup) % 10 === 0) {
      const recent = run.lines.slice(-10).map((l) => l.samplesPerSec as number);
      say(`  ${labelOf(mode)}: ${eligible - warmup}/${count} measured iterations, ${fmt(median(recent))} samples/s (median of the last 10)`);
    }
    if (eligible >= needed) {
      for (const p of procs) {
        const [a, b] = [cpuAtStart.get(p), cpuSeconds(p.child.pid)];
        if (a != null && b != null) run.cpuS[p.name] = b - a;
      }
      settle();
    }
  };
  const watch = (p: Proc) => {
    procs.push(p);
    p.eventListeners.add(onLine);
    void p.exited.then(({ code }) => {
      if (eligible < needed) settle(new Error(`${p.name} exited (code ${code}) after ${eligible} of ${needed} iterations; last stderr: ${p.stderr.slice(-5).join(' | ') || '(none)'}`));
    });
  };
  const timer = setTimeout(() => settle(new Error(`${labelOf(mode)}: only ${eligible} of ${needed} iterations within ${Math.round(limitMs / 1000)} s`)), limitMs);
  try {
    const args = [...common, '--iterations', '1000000', '--log-every', '1', '--sample-every', '0', '--run-dir', runDir, '--backend', backend];
    if (mode === 'single') {
      watch(spawnCli('train', args, { name: 'gan-train', nodeArgs }));
    } else {
      const coord = spawnCli('coordinator', [...args, '--host', '127.0.0.1', '--port', '0', '--checkpoint-every', '0', '--status-interval', '1000000'], { name: 'gan-coordinator', nodeArgs });
      watch(coord);
      const listening = await Promise.race([waitForEvent(coord, 'listening', 120_000), enough.then(() => null)]);
      if (!listening) throw new Error('the coordinator stopped before listening');
      for (let i = 1; i <= workers; i++) {
        watch(spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${listening.port as number}`, '--id', `bench-w${i}`, '--backend', backend], { name: `gan-worker ${i}`, nodeArgs }));
      }
    }
    await enough;
    return run;
  } finally {
    clearTimeout(timer);
    eligible = Infinity; // the kills below are ours, not failures
    await Promise.all(procs.map((p) => kill(p)));
    if (keepRuns) say(`  run directory kept: ${runDir}`);
    else rmSync(runDir, { recursive: true, force: true });
  }
}

/** One mode's figures over its rounds (each round's measured windows pooled; CPU times summed). */
function summarize(mode: ModeName, rounds: ModeRun[], warmup: number, count: number, minimum: (workers: number) => { down: number; up: number; total: number }): ModeResult {
  const run: ModeRun = { lines: [], workers: rounds[0]!.workers, loadAtStart: rounds[0]!.loadAtStart, cpuS: {} };
  for (const r of rounds) for (const [k, v] of Object.entries(r.cpuS)) run.cpuS[k] = (run.cpuS[k] ?? 0) + v;
  const ws = rounds.flatMap((r) => measuredWindows(r.lines, mode === 'single' ? null : r.workers, warmup, count));
  const sps = ws.map((w) => w.line.samplesPerSec as number);
  const res: ModeResult = {
    mode,
    label: MODE_LABEL[mode],
    workers: run.workers,
    measured: ws.length,
    loadAtStart: run.loadAtStart,
    samplesPerSec: { median: median(sps), min: Math.min(...sps), max: Math.max(...sps) },
    samplesPerSecByRound: rounds.map((r) => Number(median(measuredWindows(r.lines, mode === 'single' ? null : r.workers, warmup, count).map((w) => w.line.samplesPerSec as number)).toFixed(1))),
    iterationMs: median(ws.map((w) => 1000 / (w.line.iterationsPerSec as number))),
  };
  const measuredIterations = ws.reduce((a, w) => a + w.iterations, 0);
  if (Object.keys(run.cpuS).length > 0 && measuredIterations > 0) {
    res.cpuMsPerIteration = Object.fromEntries(Object.entries(run.cpuS).map(([k, v]) => [k, Number(((1000 * v) / measuredIterations).toFixed(1))]));
  }
  if (mode !== 'single') {
    const splits = ws.map(splitOf);
    const med = (k: keyof SplitMs) => median(splits.map((s) => s[k]));
    res.iterationMs = med('iterationMs');
    res.split = { computeMs: med('computeMs'), applyMs: med('applyMs'), codecMs: med('codecMs'), transferMs: med('transferMs'), idleMs: med('idleMs') };
    res.coordinatorShare = median(splits.map((s) => s.coordinatorMs / s.iterationMs));
    const min = minimum(run.workers);
    const wire = median(ws.map((w) => wireBytesPerIterationPerWorker(w, run.workers)));
    res.bytes = {
      wirePerIterationPerWorker: wire,
      payloadPerIterationPerWorker: median(ws.map((w) => payloadBytesPerIterationPerWorker(w, run.workers))),
      minimumPerIterationPerWorker: min.total,
      minimumDown: min.down,
      minimumUp: min.up,
      ratio: wire / min.total,
    };
  }
  return res;
}

/** One point of the bytes-up sweep. */
interface SweepPoint {
  shards: number;
  workers: number;
  /** Median bytes up per phase (all workers), and that over N x one gradient (mean over the iteration's phases). */
  upPerPhase?: number;
  ratio?: number;
  /** Gradients per phase PhaseRun plans for N equal workers (bench/lib/accounting.ts gradientsPerPhase). */
  planned: number;
  loadAtStart?: number[];
  error?: string;
}

/** The joiner's run: its share from the second phase after its welcome on. */
interface JoinResult extends JoinerWindow {
  loadAtStart: number[];
}

/**
 * Coordinator + 1 worker; after `warmup` iterations a second worker (bench-joiner) joins. After
 * every progress line /status is read (shards done and speed per worker); once the joiner has
 * been in for `after` more iterations the run stops. The share is taken from the first sample
 * at least one iteration (dSteps + 1 >= 2 phases) after the first one that lists the joiner.
 */
async function runJoin(common: string[], backend: string, warmup: number, after: number, nodeArgs: string[]): Promise<JoinResult> {
  const runDir = mkdtempSync(join(tmpdir(), 'gan-bench-join-'));
  const procs: Proc[] = [];
  const res: JoinResult = { loadAtStart: load1() };
  const samples: ShardSample[] = [];
  let settle!: (err?: Error) => void;
  const enough = new Promise<void>((ok, fail) => (settle = (err) => (err ? fail(err) : ok())));
  let port = 0;
  let seen = 0;
  let joinedAtSample = -1;
  let chain = Promise.resolve();
  const timer = setTimeout(() => settle(new Error('join run: timed out')), 300_000 + (warmup + after) * 15_000);
  try {
    const args = [...common, '--iterations', '1000000', '--log-every', '1', '--sample-every', '0', '--run-dir', runDir, '--backend', backend, '--host', '127.0.0.1', '--port', '0', '--checkpoint-every', '0'];
    const coord = spawnCli('coordinator', args, { name: 'gan-coordinator', nodeArgs });
    procs.push(coord);
    void coord.exited.then(({ code }) => settle(new Error(`the coordinator exited (code ${code})`)));
    const listening = await waitForEvent(coord, 'listening', 120_000);
    port = listening.port as number;
    const worker = (id: string) => procs.push(spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', id, '--backend', backend], { name: id, nodeArgs }));
    worker('bench-w1');
    coord.eventListeners.add((e) => {
      if (e.event !== 'progress') return;
      const iteration = e.iteration as number;
      chain = chain.then(async () => {
        const st = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { workers: { id: string; shardsDone: number; msPerShard: number }[] };
        const sample: ShardSample = { iteration, done: {}, msPerShard: {} };
        for (const w of st.workers) {
          sample.done[w.id] = w.shardsDone;
          sample.msPerShard[w.id] = w.msPerShard;
        }
        samples.push(sample);
        if (++seen === warmup) {
          say(`  joiner: warm-up done at iteration ${iteration}; bench-joiner joins`);
          worker('bench-joiner');
        }
        if (joinedAtSample < 0 && 'bench-joiner' in sample.done) joinedAtSample = samples.length - 1;
        if (joinedAtSample >= 0 && iteration >= samples[joinedAtSample]!.iteration + 1 + after) settle();
      }).catch((err: Error) => settle(err));
    });
    await enough;
    const first = samples[joinedAtSample]!;
    const from = samples.find((x) => x.iteration >= first.iteration + 1)!;
    const to = samples[samples.length - 1]!;
    const js = joinerShare(from, to, 'bench-joiner');
    Object.assign(res, { fromIteration: from.iteration, toIteration: to.iteration, ...(js ?? { error: 'no shards done after the join' }) });
    return res;
  } catch (err) {
    res.error = (err as Error).message;
    return res;
  } finally {
    clearTimeout(timer);
    settle();
    await Promise.all(procs.map((p) => kill(p)));
    rmSync(runDir, { recursive: true, force: true });
  }
}

function targetsOf(modes: ModeResult[]): Target[] {
  const by = (m: ModeName) => modes.find((x) => x.mode === m && !x.error);
  const single = by('single');
  const one = by('1');
  const two = by('2');
  const out: Target[] = [];
  const ratio = (a?: ModeResult, b?: ModeResult) => (a && b ? a.samplesPerSec.median / b.samplesPerSec.median : undefined);
  const r1 = ratio(one, single);
  out.push({ name: '1 worker vs single process (samples/s; #7: >= 0.90 x)', target: '>= 0.95 x (#15)', measured: r1 === undefined ? 'n/a' : `${r1.toFixed(3)} x`, met: r1 === undefined ? null : r1 >= 0.95 });
  const r2 = ratio(two, one);
  out.push({ name: '2 workers vs 1 worker (samples/s, 2 cores)', target: '>= 1.6 x', measured: r2 === undefined ? 'n/a' : `${r2.toFixed(3)} x`, met: r2 === undefined ? null : r2 >= 1.6 });
  for (const m of [one, two]) {
    if (!m?.bytes) continue;
    out.push({ name: `bytes per iteration per worker, ${m.label}`, target: '<= 1.1 x minimum', measured: `${m.bytes.ratio.toFixed(3)} x (${mb(m.bytes.wirePerIterationPerWorker)} MB vs ${mb(m.bytes.minimumPerIterationPerWorker)} MB)`, met: m.bytes.ratio <= 1.1 });
  }
  for (const m of [one, two]) {
    if (m?.coordinatorShare === undefined) continue;
    out.push({ name: `coordinator work per iteration, ${m.label}`, target: '<= 10%', measured: `${(100 * m.coordinatorShare).toFixed(1)}%`, met: m.coordinatorShare <= 0.1 });
  }
  return out;
}

interface Meta {
  date: string;
  command: string;
  cpus: number;
  cpuModel: string;
  node: string;
  loadAtStart: number[];
  loadAtEnd?: number[];
  /** Linux scheduling context: with autogroup on, other sessions' `nice` jobs still get an equal share of the CPUs. */
  scheduling: string;
  backend: string;
  config: { dataset: string; model: string; batchSize: number; shards: number; dSteps: number; wire: string; seed: number };
  params: { G: number; D: number };
  warmup: number;
  iterations: number;
  rounds: number;
}

type Quality = WireQualityResult | { error: string };

function markdown(meta: Meta, modes: ModeResult[], targets: Target[], quality: Quality | undefined, sweep: SweepPoint[] = [], joined?: JoinResult): string {
  const c = meta.config;
  const lines = [
    `# Bench (single machine), ${meta.date}`,
    '',
    `\`${meta.command}\``,
    '',
    `${meta.cpus} CPUs (${meta.cpuModel}), Node ${meta.node}, backend ${meta.backend}; load average at start ${meta.loadAtStart.join(' ')}${meta.loadAtEnd ? `, at end ${meta.loadAtEnd.join(' ')}` : ''}${meta.scheduling ? `; scheduling: ${meta.scheduling}` : ''}.`,
    `${c.dataset} / ${c.model}: G ${meta.params.G.toLocaleString('en')} and D ${meta.params.D.toLocaleString('en')} parameters; global batch ${c.batchSize} in ${c.shards} shards, ${c.dSteps} D-step(s) per iteration, --wire ${c.wire}, seed ${c.seed}.`,
    `Medians over ${meta.rounds > 1 ? `${meta.rounds} rounds (modes in turn) x ` : ''}${meta.iterations} iterations per mode, each run after ${meta.warmup} warm-up iterations (counted once all of a mode's workers were connected); every process is a real CLI process, workers on loopback.`,
    '',
    '| mode | samples/s (median; min-max) | ms / iteration | worker compute | coordinator apply | encode/decode | transfer | idle | coordinator work | bytes / iteration / worker (minimum) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const m of modes) {
    if (m.error) {
      lines.push(`| ${m.label} | error: ${m.error.slice(0, 160)} | | | | | | | | |`);
      continue;
    }
    const s = m.split;
    const b = m.bytes;
    lines.push(
      `| ${m.label} | ${fmt(m.samplesPerSec.median)} (${fmt(m.samplesPerSec.min)}-${fmt(m.samplesPerSec.max)}) | ${fmt(m.iterationMs)} | ${s ? `${fmt(s.computeMs)} ms` : '—'} | ${s ? `${fmt(s.applyMs)} ms` : '—'} | ${s ? `${fmt(s.codecMs)} ms` : '—'} | ${s ? `${fmt(s.transferMs)} ms` : '—'} | ${s ? `${fmt(s.idleMs)} ms` : '—'} | ${m.coordinatorShare === undefined ? '—' : `${(100 * m.coordinatorShare).toFixed(1)}%`} | ${b ? `${mb(b.wirePerIterationPerWorker)} MB (${mb(b.minimumPerIterationPerWorker)} MB; ${b.ratio.toFixed(3)} x)` : '—'} |`,
    );
  }
  lines.push('', 'Per round, and CPU time per measured iteration by process (user + system, from /proc; wall time well above the CPU time means the process waited or was descheduled):', '', '| mode | samples/s by round | CPU ms / iteration |', '| --- | --- | --- |');
  for (const m of modes) {
    if (m.error) continue;
    lines.push(`| ${m.label} | ${m.samplesPerSecByRound.join(', ')} | ${m.cpuMsPerIteration ? Object.entries(m.cpuMsPerIteration).map(([k, v]) => `${k} ${v}`).join('; ') : 'n/a'} |`);
  }
  lines.push('', '| target | required | measured | met |', '| --- | --- | --- | --- |');
  for (const t of targets) lines.push(`| ${t.name} | ${t.target} | ${t.measured} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
  lines.push(
    '',
    'The time split is per iteration on the critical path (docs/status-log.md, `progress`): each phase\'s wall time, from planning to the end of the weights broadcast, is cut into the coordinator\'s own work (apply; its encoding/decoding; its socket writes, counted as transfer) and the time it waits, which is explained by the busiest worker\'s compute, then that worker\'s decode + weight loading + encode, then its receive/send time and the receive time of the phase\'s last result; the rest is idle. Components are medians per iteration, so they need not add up to the median iteration time, which also holds the progress logging between phases. Bytes are TCP payload bytes of the WebSocket connections (framing, pings and task data rows included) per iteration, summed over workers and divided by their number; the minimum is the changed weights down (each net once per phase it changes) plus one gradient per aligned block of the shards a worker holds up (as PhaseRun plans them).',
  );
  if (sweep.length > 0) {
    const ns = [...new Set(sweep.map((p) => p.workers))];
    lines.push('', '## Bytes up per phase against N and S', '', 'All workers\' TCP bytes to the coordinator per phase (median of the measured iterations), in MB, and over N x one gradient (the mean of the iteration\'s phases; the target is <= 1.05 x, data rows travel down), with the gradients per phase PhaseRun plans for N equal workers:', '');
    lines.push(`| S | ${ns.map((n) => `N = ${n}`).join(' | ')} |`, `| --- | ${ns.map(() => '---').join(' | ')} |`);
    for (const S of [...new Set(sweep.map((p) => p.shards))]) {
      const cell = (n: number) => {
        const p = sweep.find((x) => x.shards === S && x.workers === n);
        if (!p) return '';
        return p.error ? `error: ${p.error.slice(0, 60)}` : `${mb(p.upPerPhase)} MB, ${fmt(p.ratio, 3)} x (${p.planned} planned; load ${p.loadAtStart?.[0] ?? '?'})`;
      };
      lines.push(`| ${S} | ${ns.map(cell).join(' | ')} |`);
    }
  }
  if (joined) {
    lines.push('', "## A joiner's share", '');
    lines.push(
      joined.error
        ? `error: ${joined.error}`
        : `Coordinator + 1 worker; bench-joiner joined after the warm-up (load ${joined.loadAtStart.join(' ')}). From iteration ${joined.fromIteration} (>= 2 phases after it was first listed) to ${joined.toIteration}: it did ${joined.shards} of ${joined.total} shards, a share of ${fmt(100 * (joined.share ?? NaN))}% against a speed-proportional ${fmt(100 * (joined.expected ?? NaN))}% (${fmt(joined.share! / joined.expected!, 3)} x; target within 25%).`,
    );
  }
  if (quality !== undefined) {
    lines.push('', '## ring8 quality, --wire fp32 vs fp16 (bench/wire-quality.ts)', '');
    lines.push('markdown' in quality ? quality.markdown.trimEnd() : `error: ${quality.error}`);
  }
  return lines.join('\n') + '\n';
}

runMain(async () => {
  const v = parseFlags(process.argv.slice(2), FLAGS);
  if (v.help) {
    process.stdout.write(helpText(USAGE, FLAGS));
    return 0;
  }
  const count = v.iterations === undefined ? 30 : Number(v.iterations);
  const warmup = v.warmup === undefined ? 8 : Number(v.warmup);
  const rounds = v.rounds === undefined ? 3 : Number(v.rounds);
  if (count < 1 || warmup < 0 || rounds < 1) throw new ConfigError('CLI_BAD_NUMBER', '--iterations and --rounds must be >= 1 and --warmup >= 0');
  const backend = typeof v.backend === 'string' ? v.backend : 'wasm';
  const modes = (typeof v.modes === 'string' ? v.modes : 'single,1,2').split(',').map((s) => s.trim()) as ModeName[];
  for (const m of modes) if (!(m in MODE_LABEL)) throw new ConfigError('BENCH_UNKNOWN_MODE', `unknown mode '${m}' in --modes; use single, 1 and/or 2`);
  const outDir = resolve(typeof v.out === 'string' ? v.out : join(ROOT, 'bench', 'results'));
  const common = trainingArgv(v);
  const nodeArgs = typeof v['node-args'] === 'string' ? v['node-args'].split(/\s+/).filter(Boolean) : [];

  // The model's size, for the minimum bytes: the same config the processes will resolve.
  await initBackend('cpu');
  const opts = ganOptionsFrom(v);
  const config: GanConfig = resolveConfig({ ...opts, iterations: 1 }, loadDataSource(opts.dataset ?? 'mnist'));
  const replica = new GanReplica(config);
  const params = { G: replica.layout.G.total, D: replica.layout.D.total };
  replica.dispose();
  const wire = (config.train as { wire?: string }).wire ?? 'fp32';
  const minimum = (workers: number) =>
    minimumBytesPerIterationPerWorker({ params, shards: config.train.shards, dSteps: config.train.dSteps, workers, bytesPerValue: wire === 'fp16' ? 2 : 4 });

  const date = new Date().toISOString().replace(/\..*$/, '').replace(/:/g, '-');
  const meta: Meta = {
    date,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    loadAtStart: load1(),
    scheduling: schedulingContext(),
    backend,
    config: { dataset: config.train.dataset, model: config.model.kind, batchSize: config.train.batchSize, shards: config.train.shards, dSteps: config.train.dSteps, wire, seed: config.train.seed },
    params,
    warmup,
    iterations: count,
    rounds,
  };
  say(`bench: ${meta.config.dataset}/${meta.config.model}, batch ${meta.config.batchSize} in ${meta.config.shards} shards, ${backend}, --wire ${wire}; modes ${modes.join(', ')}; ${warmup} warm-up + ${count} measured iterations each (${meta.cpus} CPUs, load ${meta.loadAtStart.join(' ')})`);

  const results: ModeResult[] = [];
  // Rounds run the modes in turn (single, 1, 2, single, 1, 2, ...), so a change in the machine's
  // background load falls on every mode rather than on one.
  const runs = new Map<ModeName, ModeRun[]>(modes.map((m) => [m, []]));
  const failed = new Map<ModeName, string>();
  for (let round = 1; round <= rounds; round++) {
    for (const mode of modes) {
      if (failed.has(mode)) continue;
      say(`${MODE_LABEL[mode]}${rounds > 1 ? `, round ${round}/${rounds}` : ''} (load ${load1().join(' ')})...`);
      try {
        runs.get(mode)!.push(await runMode(mode, common, backend, warmup, count, v['keep-runs'] === true, nodeArgs));
      } catch (err) {
        say(`  ${MODE_LABEL[mode]}: error: ${(err as Error).message}`);
        failed.set(mode, (err as Error).message);
      }
    }
  }
  for (const mode of modes) {
    try {
      const err = failed.get(mode);
      if (err) throw new Error(err);
      const r = summarize(mode, runs.get(mode)!, warmup, count, minimum);
      results.push(r);
      say(`  ${r.label}: ${fmt(r.samplesPerSec.median)} samples/s, ${fmt(r.iterationMs)} ms per iteration${r.split ? `; compute ${fmt(r.split.computeMs)}, apply ${fmt(r.split.applyMs)}, codec ${fmt(r.split.codecMs)}, transfer ${fmt(r.split.transferMs)}, idle ${fmt(r.split.idleMs)} ms; coordinator ${fmt(100 * (r.coordinatorShare ?? NaN))}%` : ''}${r.cpuMsPerIteration ? `; CPU ms/iteration: ${Object.entries(r.cpuMsPerIteration).map(([k, x]) => `${k} ${x}`).join(', ')}` : ''}`);
    } catch (err) {
      results.push({ mode, label: MODE_LABEL[mode], workers: mode === 'single' ? 0 : Number(mode), measured: 0, loadAtStart: [], samplesPerSec: { median: NaN, min: NaN, max: NaN }, samplesPerSecByRound: [], iterationMs: NaN, error: (err as Error).message });
    }
  }
  const targets = targetsOf(results);
  const bytesPerValue = wire === 'fp16' ? 2 : 4;
  const phases = config.train.dSteps + 1;
  const gradientPerPhase = ((config.train.dSteps * params.D + params.G) * bytesPerValue) / phases;
  const sweep: SweepPoint[] = [];
  const sweepShards = typeof v['sweep-shards'] === 'string' ? v['sweep-shards'] : '4,16,64';
  if (sweepShards !== 'none') {
    const ns = (typeof v['sweep-workers'] === 'string' ? v['sweep-workers'] : '1,2,3').split(',').map(Number);
    for (const S of sweepShards.split(',').map(Number)) {
      for (const n of ns) {
        const point: SweepPoint = { shards: S, workers: n, planned: gradientsPerPhase(S, n), loadAtStart: load1() };
        say(`bytes up: S = ${S}, N = ${n} (load ${point.loadAtStart!.join(' ')})...`);
        try {
          const r = await runMode(String(n) as ModeName, trainingArgv({ ...v, shards: String(S) }), backend, 3, 5, false, nodeArgs);
          const ws = measuredWindows(r.lines, n, 3, 5);
          point.upPerPhase = median(ws.map((w) => upBytesPerPhase(w, phases)));
          point.ratio = point.upPerPhase / (n * gradientPerPhase);
          say(`  ${mb(point.upPerPhase)} MB up per phase = ${fmt(point.ratio, 3)} x N gradients (${point.planned} planned)`);
        } catch (err) {
          point.error = (err as Error).message;
          say(`  error: ${point.error}`);
        }
        sweep.push(point);
      }
    }
    const worst = sweep.filter((p) => p.ratio !== undefined);
    if (worst.length > 0) {
      const max = Math.max(...worst.map((p) => p.ratio!));
      targets.push({ name: `bytes up per phase, S ${sweepShards}, N ${ns.join(',')}`, target: '<= 1.05 x N gradients (+ rows)', measured: `max ${max.toFixed(3)} x`, met: max <= 1.05 });
    }
  }
  let joined: JoinResult | undefined;
  if (v['no-join'] !== true) {
    say(`joiner: coordinator + 1 worker, a second joins after ${warmup} iterations (load ${load1().join(' ')})...`);
    joined = await runJoin(common, backend, warmup, 10, nodeArgs);
    say(joined.error ? `  joiner: error: ${joined.error}` : `  joiner: ${joined.shards}/${joined.total} shards = ${fmt(100 * joined.share!)}% vs ${fmt(100 * joined.expected!)}% speed-proportional`);
    if (!joined.error) {
      const r = joined.share! / joined.expected!;
      targets.push({ name: "joiner's share from the 2nd phase after its welcome", target: 'within 25% of speed-proportional', measured: `${(100 * joined.share!).toFixed(1)}% vs ${(100 * joined.expected!).toFixed(1)}% (${r.toFixed(3)} x)`, met: Math.abs(r - 1) <= 0.25 });
    }
  }
  let quality: Quality | undefined;
  if (v['no-quality'] !== true) {
    const seeds = (typeof v['quality-seeds'] === 'string' ? v['quality-seeds'] : '1,2,3').split(',').map((x) => Number(x.trim()));
    if (seeds.some((x) => !Number.isInteger(x) || x < 0)) throw new ConfigError('CLI_BAD_NUMBER', `--quality-seeds expects comma-separated whole numbers, got '${String(v['quality-seeds'])}'`);
    say(`quality: ring8 with --wire fp32 vs fp16, seeds ${seeds.join(',')} (bench/wire-quality.ts; single process, ${backend})...`);
    try {
      quality = await wireQuality({ seeds, iterations: v['quality-iterations'] === undefined ? undefined : Number(v['quality-iterations']), backend, say: (line) => say(`  ${line}`) });
    } catch (err) {
      quality = { error: (err as Error).message };
      say(`quality: error: ${(err as Error).message}`);
    }
  }
  meta.loadAtEnd = load1();
  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, `bench-${date}`);
  writeFileSync(`${base}.json`, JSON.stringify({ ...meta, modes: results, targets, sweep, ...(joined ? { joined } : {}), ...(quality !== undefined ? { quality } : {}) }, null, 2) + '\n');
  const md = markdown(meta, results, targets, quality, sweep, joined);
  writeFileSync(`${base}.md`, md);
  say('');
  say(md);
  say(`results: ${relative(process.cwd(), base)}.json, .md`);
  return results.some((r) => r.error) ? 1 : 0;
});
