/**
 * npm run bench:quality: what distributed training learns against wall time.
 *
 * For each selected run: a coordinator and --workers workers as real processes (bin/gan-*.js on
 * loopback, as a user would start them), training for --minutes of wall time with --eval-every
 * (the `eval` events give the metrics against time), then SIGTERM (the coordinator stops at a
 * phase boundary, checkpoints and exports) and gan-eval on the export for the final figures.
 * Results go to bench/results/quality-<date>.json and a Markdown table beside it.
 *
 * Targets (each within 15 minutes on 2 cores):
 *   ring8   8/8 modes and >= 90% high-quality samples (2,500 samples)
 *   grid25  >= 24/25 modes and >= 85% high-quality samples (2,500 samples)
 *   mnist   Inception Score >= 8.5 (classifier-based; 1,000 samples)
 *   mnist-dcgan* (unconditional, #17; within 30 minutes): IS >= 9.0, Frechet distance <= 5 and
 *           class share max/min <= 1.5
 *   fashion none yet (run `fashion`: Fashion-MNIST, figures only)
 *
 *   npm run bench:quality                                   # the recommended settings, 15 min each
 *   npm run bench:quality -- --minutes 2 --runs ring8       # a short check
 *   npm run bench:quality -- --runs all                     # every variant, baselines included
 *   npm run bench:quality -- --stop-at-target               # end a run once its target has held
 *
 * --stop-at-target ends a run early once two consecutive periodic evaluations meet the target
 * (it is still stopped, exported and scored by gan-eval like a full run); the first evaluation
 * that met it is reported as the time to target either way, and the load average is recorded
 * at the start and end of every run, since other jobs on the machine slow the runs down.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { COMMON_FLAGS, helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { ConfigError } from '../shared/errors.ts';
import { FASHION_MNIST_DIR } from '../trainer/data/index.ts';
import { BINS, kill, ROOT, spawnCli, waitForEvent, waitForExit, type CliName, type Proc } from '../test/helpers/processes.ts';


type Dataset = 'ring8' | 'grid25' | 'mnist' | 'fashion';

interface Variant {
  name: string;
  dataset: Dataset;
  /** Training flags for gan-coordinator beyond --dataset. */
  args: string[];
  evalEvery: number;
  evalSamples: number;
  /** Part of the default selection. */
  recommended: boolean;
  /** Learning-rate step: at this fraction of the time, stop and resume with this --lr. */
  lrStep?: { at: number; lr: number };
  /** A target of its own instead of its data set's (TARGETS): the unconditional dcgan runs use #17's. */
  target?: Target;
  note: string;
}

type Metrics = Record<string, number | null>;

interface Target {
  text: string;
  met: (m: Metrics) => boolean;
}

/** Issue #17's target for an unconditional MNIST generator: sharp digits (IS), close to the data (FD), every class about equally often. */
export const UNCONDITIONAL_MNIST_TARGET: Target = {
  text: 'IS >= 9.0, FD <= 5, classes max/min <= 1.5 (#17)',
  met: (m) => (m.inceptionScore ?? 0) >= 9 && (m.frechetDistance ?? Infinity) <= 5 && (m.classMaxMin ?? Infinity) <= 1.5,
};

/**
 * The settings. The recommended ones use the techniques against mode collapse (PacGAN packing,
 * minibatch standard deviation in D on ring8) and a learning-rate step (stop, resume with a lower
 * --lr), which damps the late oscillation of the high-quality share; baselines are plain GANs
 * with the same budget. grid25 needs a wider mlp2d (--width 128) and PacGAN2 with label
 * smoothing: in a single-process probe of those settings (1 shard) every mode appeared between
 * iterations 7,000 and 9,000 and the high-quality share passed 85% by 12,000, while minibatch
 * std alone (grid25-mbstd) stalled at 17/25. The mnist run is class-conditional (see
 * bench/results/ for the unconditional baselines) and is scored on the moving average of G
 * (--g-ema), which is what lifts it past the target: on an idle machine, at iteration 5,000,
 * IS 8.59 with it and 7.75 without (mnist-no-ema). A plain GAN collapses grid25 onto a streak
 * through one or two modes.
 */
export const VARIANTS: Variant[] = [
  {
    name: 'ring8',
    dataset: 'ring8',
    args: ['--pack', '2', '--minibatch-std', '4', '--batch-size', '128', '--lr', '5e-4'],
    lrStep: { at: 0.7, lr: 1e-4 },
    evalEvery: 500,
    evalSamples: 2500,
    recommended: true,
    note: 'PacGAN2 + minibatch std (groups of 4), batch 128, Adam lr 5e-4, then 1e-4 for the last 30% (resume)',
  },
  { name: 'ring8-baseline', dataset: 'ring8', args: ['--batch-size', '128', '--lr', '5e-4'], evalEvery: 500, evalSamples: 2500, recommended: false, note: 'plain GAN, batch 128, Adam lr 5e-4' },
  {
    name: 'grid25',
    dataset: 'grid25',
    args: ['--width', '128', '--noise-dim', '8', '--pack', '2', '--label-smoothing', '0.1', '--batch-size', '256', '--shards', '2', '--lr', '1e-3'],
    lrStep: { at: 0.7, lr: 2e-4 },
    evalEvery: 500,
    evalSamples: 2500,
    recommended: true,
    note: 'mlp2d 128 wide, noise 8, PacGAN2, label smoothing 0.1, batch 256 in 2 shards, Adam lr 1e-3, then 2e-4 for the last 30% (resume)',
  },
  {
    name: 'grid25-mbstd',
    dataset: 'grid25',
    args: ['--width', '128', '--noise-dim', '8', '--minibatch-std', '4', '--batch-size', '256', '--lr', '1e-3'],
    lrStep: { at: 0.7, lr: 2e-4 },
    evalEvery: 500,
    evalSamples: 2500,
    recommended: false,
    note: 'mlp2d 128 wide, noise 8, minibatch std (groups of 4), batch 256, Adam lr 1e-3, then 2e-4 for the last 30% (resume); stalled at 17/25',
  },
  {
    name: 'grid25-64',
    dataset: 'grid25',
    args: ['--minibatch-std', '4', '--batch-size', '128', '--lr', '1e-3'],
    lrStep: { at: 0.7, lr: 2e-4 },
    evalEvery: 500,
    evalSamples: 2500,
    recommended: false,
    note: 'default mlp2d (64 wide, noise 4), minibatch std (groups of 4), batch 128, Adam lr 1e-3, then 2e-4 for the last 30% (resume)',
  },
  {
    name: 'grid25-pacgan',
    dataset: 'grid25',
    args: ['--pack', '2', '--minibatch-std', '4', '--batch-size', '128', '--lr', '5e-4'],
    lrStep: { at: 0.7, lr: 1e-4 },
    evalEvery: 500,
    evalSamples: 2500,
    recommended: false,
    note: 'PacGAN2 + minibatch std (groups of 4), batch 128, Adam lr 5e-4, then 1e-4 for the last 30% (resume)',
  },
  { name: 'grid25-baseline', dataset: 'grid25', args: ['--batch-size', '128', '--lr', '5e-4'], evalEvery: 500, evalSamples: 2500, recommended: false, note: 'plain GAN, batch 128, Adam lr 5e-4' },
  {
    name: 'mnist',
    dataset: 'mnist',
    args: ['--model', 'mlp-small', '--conditional', '--lr', '1e-3', '--label-smoothing', '0.1', '--g-ema', '0.999'],
    lrStep: { at: 0.85, lr: 2e-4 },
    evalEvery: 250,
    evalSamples: 1000,
    recommended: true,
    note: 'class-conditional mlp-small (labels cycled 0-9 when sampling), label smoothing 0.1, Adam lr 1e-3, then 2e-4 for the last 15% (resume); evaluates the moving average of G (--g-ema 0.999)',
  },
  {
    name: 'mnist-no-ema',
    dataset: 'mnist',
    args: ['--model', 'mlp-small', '--conditional', '--lr', '1e-3', '--label-smoothing', '0.1'],
    lrStep: { at: 0.85, lr: 2e-4 },
    evalEvery: 250,
    evalSamples: 1000,
    recommended: false,
    note: 'as mnist without --g-ema: evaluates G itself',
  },
  {
    name: 'mnist-lr5e-4',
    dataset: 'mnist',
    args: ['--model', 'mlp-small', '--conditional', '--lr', '5e-4'],
    evalEvery: 250,
    evalSamples: 1000,
    recommended: false,
    note: 'class-conditional mlp-small, Adam lr 5e-4 (slower start than lr 1e-3 + smoothing in single-process probes)',
  },
  {
    name: 'mnist-mbstd',
    dataset: 'mnist',
    args: ['--model', 'mlp-small', '--minibatch-std', '4', '--lr', '5e-4'],
    evalEvery: 200,
    evalSamples: 1000,
    recommended: false,
    note: 'unconditional mlp-small + minibatch std (groups of 4), Adam lr 5e-4',
  },
  { name: 'mnist-baseline', dataset: 'mnist', args: ['--model', 'mlp-small'], evalEvery: 200, evalSamples: 1000, recommended: false, note: 'unconditional mlp-small, defaults' },
  {
    name: 'mnist-dcgan',
    dataset: 'mnist',
    args: ['--preset', 'mnist-dcgan'],
    // Every 500: an evaluation of 1,000 samples takes ~5 s, which at every 100 iterations of the
    // narrow model would take a third of the run.
    evalEvery: 500,
    evalSamples: 1000,
    recommended: false,
    target: UNCONDITIONAL_MNIST_TARGET,
    note: 'unconditional dcgan (the mnist-dcgan preset: --width 32, batch 32 in 2 shards, Adam 5e-4 beta1 0.5, label smoothing 0.1, --g-ema 0.999)',
  },
  {
    name: 'mnist-dcgan-w64',
    dataset: 'mnist',
    args: ['--preset', 'mnist-dcgan', '--width', '64', '--batch-size', '64'],
    evalEvery: 100,
    evalSamples: 1000,
    recommended: false,
    target: UNCONDITIONAL_MNIST_TARGET,
    note: 'the mnist-dcgan preset before --width: dcgan 64 wide (D 64/128 filters, G 128/64), batch 64 in 2 shards (IS 6.92, FD 15.7, max/min 1.92 after 4,520 iterations in 28 min, quality-2026-12-07T20-49-01)',
  },
  {
    name: 'fashion',
    dataset: 'fashion',
    args: ['--preset', 'fashion'],
    evalEvery: 200,
    evalSamples: 1000,
    recommended: false,
    note: "Fashion-MNIST (Debian's dataset-fashion-mnist), the fashion preset: unconditional mlp-small, Adam 1e-3, label smoothing 0.1, --g-ema 0.999; scored with models/classifier-fashion/",
  },
  {
    name: 'mnist-dcgan-lr2e-4',
    dataset: 'mnist',
    args: ['--preset', 'mnist-dcgan', '--width', '64', '--batch-size', '64', '--lr', '2e-4'],
    evalEvery: 100,
    evalSamples: 1000,
    recommended: false,
    target: UNCONDITIONAL_MNIST_TARGET,
    note: "as mnist-dcgan-w64 with DCGAN's Adam lr 2e-4 (slower: IS 3.79 vs 4.53 at ~380 iterations)",
  },
];

const targetOf = (v: Variant): Target => v.target ?? TARGETS[v.dataset];

export const TARGETS: Record<Dataset, Target> = {
  ring8: { text: '8/8 modes, >= 90% high quality', met: (m) => m.modesCaptured === 8 && (m.highQuality ?? 0) >= 0.9 },
  grid25: { text: '>= 24/25 modes, >= 85% high quality', met: (m) => (m.modesCaptured ?? 0) >= 24 && (m.highQuality ?? 0) >= 0.85 },
  mnist: { text: 'Inception Score >= 8.5', met: (m) => (m.inceptionScore ?? 0) >= 8.5 },
  // No target yet: the run records IS, Fréchet distance and class balance against time.
  fashion: { text: 'none (figures only)', met: () => false },
};

/** spawnCli, with every log line stamped with the time it arrived (the series' wall-clock axis). */
function startStamped(cli: CliName, args: string[], name: string): Proc {
  const proc = spawnCli(cli, args, { name });
  proc.eventListeners.add((e) => {
    e.receivedAt = Date.now();
  });
  return proc;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));


interface SeriesPoint {
  seconds: number;
  iteration: number;
  metrics: Metrics;
}

interface RunRecord {
  name: string;
  dataset: Dataset;
  note: string;
  flags: string[];
  lrStep?: { at: number; lr: number };
  target: string;
  minutes: number;
  workers: number;
  iterations: number;
  trainingSeconds: number;
  iterationsPerSecond: number;
  series: SeriesPoint[];
  /** gan-eval --json on the final export (the full sample count). */
  final: Metrics | null;
  finalReport?: unknown;
  reached: boolean;
  /** Wall seconds (since training started) of the first periodic evaluation that met the target. */
  secondsToTarget: number | null;
  iterationsToTarget: number | null;
  /** --stop-at-target: wall seconds of the second consecutive evaluation meeting the target, where the run was stopped. */
  stoppedAtTargetSeconds?: number;
  /** Load averages (1, 5, 15 min) when the run started and when it ended. */
  loadAtStart?: string;
  loadAtEnd?: string;
  error?: string;
}

/** A free TCP port on loopback (the coordinator keeps it across a resume, so workers reconnect). */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolvePort(port));
    });
  });
}

const loadText = () => loadavg().map((x) => x.toFixed(2)).join(' ');

async function runOne(v: Variant, minutes: number, workers: number, keepRuns: boolean, stopAtTarget: boolean, say: (s: string) => void): Promise<RunRecord> {
  const runDir = mkdtempSync(join(tmpdir(), `gan-quality-${v.name}-`));
  // A variant's args are relative to the plain defaults (the measurements recorded were made so):
  // --preset none keeps --dataset ring8/grid25/fashion from bringing in their own preset.
  const flags = ['--dataset', v.dataset, ...(v.args.includes('--preset') ? [] : ['--preset', 'none']), ...v.args, '--iterations', '100000000'];
  const rec: RunRecord = {
    name: v.name,
    dataset: v.dataset,
    note: v.note,
    flags,
    ...(v.lrStep ? { lrStep: v.lrStep } : {}),
    target: targetOf(v).text,
    minutes,
    workers,
    iterations: 0,
    trainingSeconds: 0,
    iterationsPerSecond: 0,
    series: [],
    final: null,
    reached: false,
    secondsToTarget: null,
    iterationsToTarget: null,
    loadAtStart: loadText(),
  };
  const procs: Proc[] = [];
  const workerProcs: Proc[] = [];
  const port = await freePort();
  const common = [
    '--host', '127.0.0.1',
    '--port', String(port),
    '--run-dir', runDir,
    '--eval-every', String(v.evalEvery),
    '--eval-samples', String(v.evalSamples),
    '--sample-every', '0',
    '--checkpoint-every', '0',
    '--status-interval', '30',
    '--backend', 'wasm',
  ];
  let t0 = 0;
  let metInARow = 0;
  const onEval = (e: Record<string, unknown>) => {
    if (e.event !== 'eval') return;
    const { event: _e, receivedAt, iteration, ms: _ms, level: _l, time: _t, pid: _p, hostname: _h, name: _n, msg: _m, ...metrics } = e;
    const point: SeriesPoint = { seconds: Number((((receivedAt as number) - t0) / 1000).toFixed(1)), iteration: iteration as number, metrics: metrics as Metrics };
    rec.series.push(point);
    const met = targetOf(v).met(point.metrics);
    if (rec.secondsToTarget === null && met) {
      rec.secondsToTarget = point.seconds;
      rec.iterationsToTarget = point.iteration;
    }
    metInARow = met ? metInARow + 1 : 0;
    say(`  ${v.name} ${point.seconds.toFixed(0).padStart(5)} s  it ${String(point.iteration).padStart(7)}  ${summarize(v.dataset, point.metrics)}${met ? '  (target met)' : ''}`);
    if (stopAtTarget && metInARow >= 2 && rec.stoppedAtTargetSeconds === undefined) {
      rec.stoppedAtTargetSeconds = point.seconds;
      say(`  ${v.name} target met by two consecutive evaluations: stopping (--stop-at-target)`);
    }
  };
  /** SIGTERM: the coordinator drops the unfinished phase, checkpoints, exports and exits; returns its run_finished. */
  const stop = async (coord: Proc): Promise<Record<string, unknown>> => {
    coord.child.kill('SIGTERM');
    let code: number | null;
    try {
      code = (await waitForExit(coord, 180_000)).code;
    } catch {
      coord.child.kill('SIGKILL');
      throw new Error('the coordinator did not stop within 180 s of SIGTERM');
    }
    const finished = coord.events.find((e) => e.event === 'run_finished');
    if (!finished) throw new Error(`the coordinator exited (code ${code}) without run_finished; stderr: ${coord.stderr.slice(-5).join(' | ')}`);
    return finished;
  };
  const until = async (coord: Proc, deadline: number) => {
    while (Date.now() < deadline && coord.child.exitCode === null && rec.stoppedAtTargetSeconds === undefined) await sleep(Math.min(1000, Math.max(10, deadline - Date.now())));
  };
  try {
    let coord = startStamped('coordinator', [...flags, ...common], 'coordinator');
    procs.push(coord);
    await waitForEvent(coord, 'listening', 120_000);
    const url = `ws://127.0.0.1:${port}`;
    for (let i = 0; i < workers; i++) workerProcs.push(startStamped('worker', ['--coordinator', url, '--id', `bench-w${i + 1}`, '--backend', 'wasm'], `worker ${i + 1}`));
    procs.push(...workerProcs);
    const training = await waitForEvent(coord, 'training', 120_000);
    t0 = training.receivedAt as number;
    coord.eventListeners.add(onEval);
    const deadline = t0 + minutes * 60_000;
    if (v.lrStep && rec.stoppedAtTargetSeconds === undefined) {
      // The learning-rate step: stop, then resume the same run with the new --lr (a change a
      // resume allows); the workers keep reconnecting to the same port meanwhile.
      await until(coord, t0 + v.lrStep.at * minutes * 60_000);
      await stop(coord);
    }
    if (v.lrStep && rec.stoppedAtTargetSeconds === undefined) {
      say(`  ${v.name} ${((Date.now() - t0) / 1000).toFixed(0).padStart(5)} s  resuming with --lr ${v.lrStep.lr}`);
      coord = startStamped('coordinator', [...flags, ...common, '--resume', '--lr', String(v.lrStep.lr)], 'coordinator (resumed)');
      procs.push(coord);
      coord.eventListeners.add(onEval);
      await waitForEvent(coord, 'training', 120_000);
    }
    await until(coord, deadline);
    const finished = await stop(coord);
    rec.loadAtEnd = loadText();
    rec.iterations = finished.iterations as number;
    rec.trainingSeconds = Number((((finished.receivedAt as number) - t0) / 1000).toFixed(1));
    rec.iterationsPerSecond = Number((rec.iterations / Math.max(1e-9, rec.trainingSeconds)).toFixed(2));
    // A stopped (not finished) run leaves workers reconnecting; they hold no state.
    for (const w of workerProcs) w.child.kill('SIGKILL');
    const ev = spawnSync(process.execPath, [BINS.eval, '--export', join(runDir, 'export'), '--json', '--backend', 'wasm'], { cwd: ROOT, encoding: 'utf8', timeout: 600_000 });
    if (ev.status !== 0) throw new Error(`gan-eval failed (${ev.status}): ${ev.stderr.slice(-500)}`);
    const out = JSON.parse(ev.stdout) as { metrics: Metrics; report: unknown };
    rec.final = out.metrics;
    rec.finalReport = out.report;
    rec.reached = targetOf(v).met(out.metrics);
  } catch (err) {
    rec.error = (err as Error).message;
  } finally {
    await Promise.all(procs.map((p) => kill(p)));
    if (!keepRuns) rmSync(runDir, { recursive: true, force: true });
    else say(`  run directory kept: ${runDir}`);
  }
  return rec;
}

/** The class histogram's balance: max/min class share (target <= 1.5), or the missing class. */
function classText(m: Metrics): string {
  if (typeof m.classMinShare !== 'number') return '';
  const real = typeof m.classMaxMinReal === 'number' ? ` (real ${m.classMaxMinReal.toFixed(2)})` : '';
  if (m.classMinShare === 0) return `, classes max/min inf: a class missing${real}`;
  return `, classes max/min ${typeof m.classMaxMin === 'number' ? m.classMaxMin.toFixed(2) : 'n/a'}${real}`;
}

function summarize(ds: Dataset, m: Metrics): string {
  const pct = (x: number | null | undefined) => (typeof x !== 'number' ? 'n/a' : `${(100 * x).toFixed(1)}%`);
  if (ds === 'mnist' || ds === 'fashion') {
    const acc = m.labelAccuracy !== undefined ? `, label acc ${pct(m.labelAccuracy)} (real ${pct(m.labelAccuracyReal)})` : '';
    return `IS ${m.inceptionScore?.toFixed(2)} (real ${m.inceptionScoreReal?.toFixed(2)}), FD ${m.frechetDistance?.toFixed(2)} (real ${m.frechetDistanceReal?.toFixed(2)})${acc}${classText(m)}`;
  }
  return `modes ${m.modesCaptured}/${m.modes}, high quality ${pct(m.highQuality ?? null)}, reverse KL ${typeof m.reverseKl === 'number' ? m.reverseKl.toFixed(3) : 'n/a'}`;
}

function markdown(meta: Record<string, unknown>, runs: RunRecord[]): string {
  const lines = [
    `# Quality bench, ${meta.date}`,
    '',
    `${meta.cpus} CPUs (${meta.cpuModel}), load average at start ${meta.loadAtStart}, Node ${meta.node}, wasm backend; coordinator + ${meta.workers} workers on loopback; ${meta.minutes} min of training per run${meta.stopAtTarget ? ', or less with --stop-at-target (a run ends once two consecutive evaluations meet its target)' : ''}. Other jobs share the machine: the load average (1/5/15 min) is given per run.`,
    '',
    '| run | settings | iterations (it/s) | final (gan-eval) | target | reached | first eval meeting it | load at start / end |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of runs) {
    const final = r.error ? `error: ${r.error.slice(0, 120)}` : r.final ? summarize(r.dataset, r.final) : 'n/a';
    const when = r.secondsToTarget === null ? '—' : `${r.secondsToTarget} s (it ${r.iterationsToTarget})${r.stoppedAtTargetSeconds !== undefined ? `; held, stopped at ${r.stoppedAtTargetSeconds} s` : ''}`;
    const lrText = r.lrStep ? `, then \`--lr ${r.lrStep.lr}\` from ${Math.round(100 * r.lrStep.at)}% of the time (resume)` : '';
    lines.push(`| ${r.name} | \`${r.flags.filter((f, i, a) => f !== '--iterations' && a[i - 1] !== '--iterations').join(' ')}\`${lrText} | ${r.iterations} (${r.iterationsPerSecond}) | ${final} | ${r.target} | ${r.reached ? 'yes' : 'no'} | ${when} | ${r.loadAtStart ?? '?'} / ${r.loadAtEnd ?? '?'} |`);
  }
  for (const r of runs) {
    if (r.series.length === 0) continue;
    lines.push('', `## ${r.name}: metrics against wall time`, '', '| seconds | iteration | metrics |', '| --- | --- | --- |');
    const step = Math.max(1, Math.ceil(r.series.length / 20));
    r.series.forEach((p, i) => {
      if (i % step === 0 || i === r.series.length - 1) lines.push(`| ${p.seconds} | ${p.iteration} | ${summarize(r.dataset, p.metrics)} |`);
    });
  }
  return lines.join('\n') + '\n';
}

const FLAGS: FlagTable = {
  minutes: { type: 'string', kind: 'number', help: 'wall-clock training time per run', defaultText: '15' },
  runs: { type: 'string', help: `comma-separated runs, or 'all' (${VARIANTS.map((v) => v.name).join(', ')})`, defaultText: VARIANTS.filter((v) => v.recommended).map((v) => v.name).join(',') },
  workers: { type: 'string', kind: 'int', help: 'worker processes per run', defaultText: '2' },
  out: { type: 'string', help: 'results directory', defaultText: 'bench/results' },
  'keep-runs': { type: 'boolean', help: 'keep the run directories (printed) instead of deleting them' },
  'stop-at-target': { type: 'boolean', help: 'end a run once two consecutive periodic evaluations meet its target (then export and score it as usual)' },
  help: COMMON_FLAGS.help,
};

const USAGE = `Usage: npm run bench:quality -- [options]

Distributed runs (gan-coordinator + workers as processes on loopback) on ring8, grid25 and mnist,
metrics against wall time, into bench/results/quality-<date>.{json,md}.`;

runMain(async () => {
  const v = parseFlags(process.argv.slice(2), FLAGS);
  if (v.help) {
    process.stdout.write(helpText(USAGE, FLAGS));
    return 0;
  }
  const minutes = v.minutes === undefined ? 15 : Number(v.minutes);
  const workers = v.workers === undefined ? 2 : Number(v.workers);
  if (!(minutes > 0) || workers < 1) throw new ConfigError('CLI_BAD_NUMBER', '--minutes must be > 0 and --workers >= 1');
  const names = typeof v.runs === 'string' ? (v.runs === 'all' ? VARIANTS.map((x) => x.name) : v.runs.split(',').map((s) => s.trim())) : VARIANTS.filter((x) => x.recommended).map((x) => x.name);
  let selected = names.map((n) => {
    const found = VARIANTS.find((x) => x.name === n);
    if (!found) throw new ConfigError('BENCH_UNKNOWN_RUN', `unknown run '${n}'; choose from ${VARIANTS.map((x) => x.name).join(', ')} or all`);
    return found;
  });
  // Fashion-MNIST comes from a Debian package nothing downloads: 'all' skips it (saying so) when it
  // is absent, instead of ending a long bench with an error; naming a fashion run still fails loudly.
  if (v.runs === 'all' && !existsSync(FASHION_MNIST_DIR)) {
    const skipped = selected.filter((x) => x.dataset === 'fashion').map((x) => x.name);
    if (skipped.length > 0) process.stdout.write(`skipping ${skipped.join(', ')}: Fashion-MNIST is not installed (${FASHION_MNIST_DIR}); sudo apt-get install dataset-fashion-mnist to include it\n`);
    selected = selected.filter((x) => x.dataset !== 'fashion');
  }
  const outDir = resolve(typeof v.out === 'string' ? v.out : join(ROOT, 'bench', 'results'));
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const date = new Date().toISOString().replace(/\..*$/, '').replace(/:/g, '-');
  const meta = {
    date,
    minutes,
    workers,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    loadAtStart: loadText(),
    node: process.version,
    stopAtTarget: v['stop-at-target'] === true,
  };
  say(`quality bench: ${selected.map((s) => s.name).join(', ')}; ${minutes} min each, coordinator + ${workers} workers (${meta.cpus} CPUs, load ${meta.loadAtStart})`);
  const runs: RunRecord[] = [];
  const write = () => {
    mkdirSync(outDir, { recursive: true });
    const base = join(outDir, `quality-${date}`);
    writeFileSync(`${base}.json`, JSON.stringify({ ...meta, targets: Object.fromEntries(Object.entries(TARGETS).map(([k, t]) => [k, t.text])), runs }, null, 2) + '\n');
    writeFileSync(`${base}.md`, markdown(meta, runs));
    return base;
  };
  for (const variant of selected) {
    say(`${variant.name}: ${variant.note}`);
    const rec = await runOne(variant, minutes, workers, v['keep-runs'] === true, v['stop-at-target'] === true, say);
    runs.push(rec);
    say(
      rec.error
        ? `${variant.name}: error: ${rec.error}`
        : `${variant.name}: ${rec.iterations} iterations in ${rec.trainingSeconds} s; final ${rec.final ? summarize(variant.dataset, rec.final) : 'n/a'}; target (${rec.target}) ${rec.reached ? 'reached' : 'not reached'}`,
    );
    write(); // after every run, so a long bench leaves partial results
  }
  const base = write();
  say(`results: ${relative(process.cwd(), base)}.json, .md`);
  return runs.some((r) => r.error) ? 1 : 0;
});
