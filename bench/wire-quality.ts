/**
 * bench/wire-quality.ts: what `--wire fp16` does to what G learns, on ring8.
 *
 * Exported (bench/run.ts imports it for `npm run bench`; this is the module's only function):
 *
 *   export async function wireQuality(opts: {
 *     seeds: number[];        // run seeds; each is trained with --wire fp32 and with --wire fp16 (default [1, 2, 3])
 *     iterations?: number;    // default: the ring8 preset's 3,000
 *     backend?: string;       // compute backend, default 'wasm' (the preset's calibration); restored afterwards
 *     say?: (line: string) => void; // progress lines (default: stderr)
 *   }): Promise<WireQualityResult>
 *
 * WireQualityResult (plain JSON: no NaN) = { preset, iterations, samples, backend, command,
 * rows: one per (seed, wire) { seed, wire, modesCaptured, modes, highQuality, reverseKl (null
 * when no sample is high quality), near, seconds }, mean: per wire the means over the seeds,
 * markdown: the table below }.
 *
 * Each run is PRESETS.ring8 (trainer/presets.ts) in this process with the single-process trainer
 * (trainer/local-trainer.ts), which applies exactly the rounding of a distributed fp16 run:
 * shards computed on fp16-rounded weights, fp16-rounded gradients averaged, float32 master
 * weights and Adam state. Its final G (master weights) is then evaluated as test/learning.test.ts
 * does: 2,500 samples from fixed noise (seed 99), PacGAN's metrics (modes captured with >= 1/5 of
 * their uniform share of high-quality samples; share within 3 std of a mode; reverse KL of the
 * high-quality mode histogram against uniform), plus the share within 0.15 of a mode. fp32 and
 * fp16 of a seed start from the same weights and see the same data and noise, so the difference
 * is the rounding alone; a GAN amplifies any difference, so compare the spread over seeds, not
 * one seed's pair.
 *
 * Standalone: tsx bench/wire-quality.ts --seeds 1,2,3 [--iterations 3000] [--backend wasm] [--json]
 * prints the Markdown table (or the JSON) on stdout, progress on stderr.
 */
import * as tf from '@tensorflow/tfjs-core';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend, type BackendChoice } from '../shared/backend.ts';
import { helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource, type MixtureSpec } from '../trainer/data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { mixtureMetrics } from '../trainer/eval/mixture-metrics.ts';
import { PRESETS } from '../trainer/presets.ts';
import type { WireFormat } from '../shared/protocol.ts';
import { normalArray } from '../shared/rng.ts';

const EVAL_SAMPLES = 2500;
const EVAL_NOISE_SEED = 99;
const NEAR_RADIUS = 0.15;
const WIRES: readonly WireFormat[] = ['fp32', 'fp16'];

export interface WireQualityRow {
  seed: number;
  wire: WireFormat;
  modesCaptured: number;
  modes: number;
  /** Share of samples within 3 std of their nearest mode. */
  highQuality: number;
  /** KL(high-quality mode histogram || uniform); null when no sample is high quality. */
  reverseKl: number | null;
  /** Share of samples within 0.15 of a mode. */
  near: number;
  /** Training time of this run (s). */
  seconds: number;
}

export interface WireQualityResult {
  preset: 'ring8';
  iterations: number;
  samples: number;
  backend: string;
  command: string;
  rows: WireQualityRow[];
  mean: Record<WireFormat, { modesCaptured: number; highQuality: number; reverseKl: number | null; near: number }>;
  markdown: string;
}

/** Share of the n points within `radius` of their nearest mode. */
function shareNear(points: Float32Array, n: number, m: MixtureSpec, radius: number): number {
  let near = 0;
  for (let i = 0; i < n; i++) {
    let best = Infinity;
    for (let j = 0; j < m.k; j++) {
      const dx = points[2 * i]! - m.means[2 * j]!;
      const dy = points[2 * i + 1]! - m.means[2 * j + 1]!;
      best = Math.min(best, dx * dx + dy * dy);
    }
    if (best <= radius * radius) near++;
  }
  return near / n;
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

function markdownTable(r: Omit<WireQualityResult, 'markdown'>): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const kl = (x: number | null) => (x === null ? 'n/a' : x.toFixed(3));
  const lines = [
    `ring8 preset, ${r.iterations} iterations, ${r.samples} samples per evaluation, backend ${r.backend} (\`${r.command}\`)`,
    '',
    '| seed | wire | modes | high quality | reverse KL | within 0.15 | train s |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...r.rows.map((x) => `| ${x.seed} | ${x.wire} | ${x.modesCaptured}/${x.modes} | ${pct(x.highQuality)} | ${kl(x.reverseKl)} | ${pct(x.near)} | ${x.seconds.toFixed(1)} |`),
    ...WIRES.map((w) => {
      const m = r.mean[w];
      return `| mean | ${w} | ${m.modesCaptured.toFixed(2)}/8 | ${pct(m.highQuality)} | ${kl(m.reverseKl)} | ${pct(m.near)} | |`;
    }),
  ];
  return lines.join('\n') + '\n';
}

/** Trains ring8 with --wire fp32 and fp16 on each seed and evaluates the final G; see the top of the file. */
export async function wireQuality(opts: { seeds: number[]; iterations?: number; backend?: string; say?: (line: string) => void }): Promise<WireQualityResult> {
  const seeds = opts.seeds?.length ? opts.seeds : [1, 2, 3];
  for (const s of seeds) {
    if (!Number.isInteger(s) || s < 0 || s > 0xffffffff) throw new ConfigError('BAD_SEED', `seeds must be integers in [0, 2^32); got ${s}`);
  }
  const iterations = opts.iterations ?? PRESETS.ring8!.iterations!;
  if (!Number.isInteger(iterations) || iterations < 1) throw new ConfigError('BAD_ITERATIONS', `iterations must be a whole number >= 1; got ${iterations}`);
  const say = opts.say ?? ((line: string) => process.stderr.write(`${line}\n`));
  const backend = opts.backend ?? 'wasm';
  const previous = tf.getBackend();
  await initBackend(backend as BackendChoice);
  try {
    const source = loadDataSource('ring8');
    if (source.kind !== 'mixture') throw new Error('ring8 should be a mixture source');
    const mixture = source.mixture;
    const rows: WireQualityRow[] = [];
    const total = seeds.length * WIRES.length;
    for (const seed of seeds) {
      for (const wire of WIRES) {
        const config = resolveConfig({ ...PRESETS.ring8, seed, iterations, wire }, source);
        const trainer = new LocalTrainer(config, source);
        try {
          const t0 = performance.now();
          let lastSaid = t0;
          while (!trainer.state.finished) {
            trainer.runPhase();
            const now = performance.now();
            if (now - lastSaid > 15_000) {
              lastSaid = now;
              say(`wire-quality: seed ${seed} ${wire}: iteration ${trainer.state.iteration}/${iterations} (${((now - t0) / 1000).toFixed(0)} s)`);
            }
          }
          const seconds = (performance.now() - t0) / 1000;
          trainer.syncReplica();
          const z = normalArray(EVAL_SAMPLES * config.model.noiseDim, EVAL_NOISE_SEED);
          const points = trainer.replica.generate(z, EVAL_SAMPLES);
          const m = mixtureMetrics(points, EVAL_SAMPLES, mixture);
          const row: WireQualityRow = {
            seed,
            wire,
            modesCaptured: m.modesCaptured,
            modes: m.modes,
            highQuality: Number(m.highQuality.toFixed(4)),
            reverseKl: Number.isFinite(m.reverseKl) ? Number(m.reverseKl.toFixed(4)) : null,
            near: Number(shareNear(points, EVAL_SAMPLES, mixture, NEAR_RADIUS).toFixed(4)),
            seconds: Number(seconds.toFixed(1)),
          };
          rows.push(row);
          say(`wire-quality: [${rows.length}/${total}] seed ${seed} ${wire}: ${row.modesCaptured}/${row.modes} modes, ${(row.highQuality * 100).toFixed(1)}% high quality, reverse KL ${row.reverseKl ?? 'n/a'} (${row.seconds} s)`);
        } finally {
          trainer.dispose();
        }
      }
    }
    const meanOf = (w: WireFormat) => {
      const rs = rows.filter((r) => r.wire === w);
      const kls = rs.map((r) => r.reverseKl).filter((x): x is number => x !== null);
      return {
        modesCaptured: Number(mean(rs.map((r) => r.modesCaptured)).toFixed(2)),
        highQuality: Number(mean(rs.map((r) => r.highQuality)).toFixed(4)),
        reverseKl: kls.length ? Number(mean(kls).toFixed(4)) : null,
        near: Number(mean(rs.map((r) => r.near)).toFixed(4)),
      };
    };
    const result: Omit<WireQualityResult, 'markdown'> = {
      preset: 'ring8',
      iterations,
      samples: EVAL_SAMPLES,
      backend,
      command: `tsx bench/wire-quality.ts --seeds ${seeds.join(',')} --iterations ${iterations} --backend ${backend}`,
      rows,
      mean: { fp32: meanOf('fp32'), fp16: meanOf('fp16') },
    };
    return { ...result, markdown: markdownTable(result) };
  } finally {
    if (previous && previous !== tf.getBackend()) await tf.setBackend(previous);
  }
}

const FLAGS: FlagTable = {
  seeds: { type: 'string', help: 'comma-separated run seeds', defaultText: '1,2,3' },
  iterations: { type: 'string', kind: 'int', help: 'iterations per run', defaultText: '3000 (the ring8 preset)' },
  backend: { type: 'string', help: 'wasm | cpu | tensorflow', defaultText: 'wasm' },
  json: { type: 'boolean', help: 'print the result as JSON instead of the Markdown table' },
  help: { type: 'boolean', help: 'show this help' },
};

const isMain = process.argv[1] && /wire-quality(\.ts)?$/.test(process.argv[1]);
if (isMain) {
  runMain(async () => {
    const v = parseFlags(process.argv.slice(2), FLAGS);
    if (v.help) {
      process.stdout.write(helpText('Usage: tsx bench/wire-quality.ts [--seeds 1,2,3] [--iterations N] [--json]\n\nring8 quality after training with --wire fp32 vs fp16 on the same seeds.', FLAGS));
      return 0;
    }
    const seeds = (typeof v.seeds === 'string' ? v.seeds : '1,2,3').split(',').map((s) => Number(s.trim()));
    if (seeds.some((s) => !Number.isInteger(s))) throw new ConfigError('CLI_BAD_NUMBER', `--seeds expects comma-separated whole numbers, got '${String(v.seeds)}'`);
    const result = await wireQuality({ seeds, iterations: v.iterations === undefined ? undefined : Number(v.iterations), backend: typeof v.backend === 'string' ? v.backend : undefined });
    process.stdout.write(v.json ? `${JSON.stringify(result, null, 2)}\n` : result.markdown);
    return 0;
  });
}
