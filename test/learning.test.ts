/**
 * Learning is real: a short ring8 run through the project's own training path (LocalTrainer:
 * planned phases, shard gradients from GanReplica, shard-order averaging, the JS Adam) turns a
 * generator that hits no mode into one that covers the ring with its samples on the modes.
 *
 * The bound is PacGAN's (Lin et al. 2018, sec. 5) on 2,500 samples, kept strict: >= 6 of 8
 * modes captured and >= 50% of the samples "high quality", i.e. within 3 std (0.06) of their
 * nearest mode (neighbouring modes are 1.53 apart). On top, >= 85% of the samples must lie
 * within 0.15 (7.5 std, a tenth of the mode spacing) of a mode: most samples are near a mode,
 * not merely half of them on one.
 *
 * CALIBRATION (wasm backend with shared/backend.ts's matMul transposes, PRESETS.ring8 =
 * mlp2d G 3x64 / D 2x64, noise 4, pack 2, 2 D-steps, batch 256 in 4 shards (the preset's own
 * count: the shard sum tree's grouping is part of the numerics, so each shard count has its own
 * trajectory), Adam 1e-3 / 0.5 / 0.999, label smoothing 0.1, 3,000 iterations; final G on the
 * fixed evaluation noise below). Modes / within 3 std / within 0.15 after 3,000 iterations (each
 * run prints its line as [learning]); GAN_LEARNING_SEEDS=1,2 and =3,4 side by side on a 2-core
 * machine at load ~2:
 *   seed 1: 8/8 78% 96% (51 s)   seed 2: 8/8 75% 96% (44 s)   seed 3: 8/8 92% 96% (50 s)   seed 4: 8/8 80% 96% (45 s)
 * All four pass (seed 3 also meets bench:quality's ring8 target, >= 90%). The suite runs seed 1.
 * Other shard counts, same preset otherwise: 16 shards, seeds 1-5: 8/8 with 74%, 91%, 90%, 86%,
 * 82% (seed 1: 155 s, three times the cost: each shard has a fixed cost, docs/performance.md);
 * 1 shard, seeds 1-10: 8/8 85% 95%, 8/8 67% 94%, 8/8 81% 96%, 8/8 87% 96%, 8/8 86% 95%,
 * 6/8 39% 95%, 8/8 89% 95%, 7/8 58% 94%, 8/8 84% 95%, 8/8 79% 95% (nine of ten passing).
 * A GAN at a constant learning rate does not settle: between 2,250 and
 * 3,250 iterations about 1 evaluation in 10 (any seed) dips below the 3-std bound for a few
 * hundred iterations while >= 88% stay within 0.15, so the strict bound is asserted only on the
 * verified end point of seed 1, whose result is bit-reproducible on this backend.
 * More seeds: GAN_LEARNING_SEEDS=1,2,3 npx vitest run test/learning.test.ts
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource, type DataSource, type MixtureSpec } from '../trainer/data/index.ts';
import { mixtureMetrics } from '../trainer/eval/mixture-metrics.ts';
import { PRESETS } from '../trainer/presets.ts';
import { normalArray } from '../shared/rng.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

/** 3,000 iterations in this process: ~50 s at load ~2 in the preset's 4 shards; 16 shards took 155-204 s at load ~1 and 1,256-1,298 s at load ~20. */
const LEARNING_MS = 2_400_000;
/** Longest stretch of training without giving the event loop a turn. */
const YIELD_EVERY_MS = 250;
const SEEDS = process.env.GAN_LEARNING_SEEDS ? process.env.GAN_LEARNING_SEEDS.split(',').map(Number) : [1];
const EVAL_SAMPLES = 2500;
const EVAL_NOISE_SEED = 99;
const MIN_MODES = 6;
const MIN_HIGH_QUALITY = 0.5;
const NEAR_RADIUS = 0.15;
const MIN_NEAR = 0.85;

let source: DataSource;
let mixture: MixtureSpec;

beforeAll(async () => {
  await initBackend('wasm');
  source = loadDataSource('ring8');
  if (source.kind !== 'mixture') throw new Error('ring8 should be a mixture source');
  mixture = source.mixture;
}, HEAVY_TEST_MS);

/** Share of points within `radius` of their nearest mode. */
function shareNear(points: Float32Array, n: number, m: MixtureSpec, radius: number): number {
  let near = 0;
  for (let i = 0; i < n; i++) {
    let best = Infinity;
    for (let j = 0; j < m.k; j++) {
      const dx = points[2 * i] - m.means[2 * j];
      const dy = points[2 * i + 1] - m.means[2 * j + 1];
      best = Math.min(best, dx * dx + dy * dy);
    }
    if (best <= radius * radius) near++;
  }
  return near / n;
}

function evaluate(t: LocalTrainer) {
  t.syncReplica();
  const z = normalArray(EVAL_SAMPLES * t.config.model.noiseDim, EVAL_NOISE_SEED);
  const points = t.replica.generate(z, EVAL_SAMPLES);
  return { ...mixtureMetrics(points, EVAL_SAMPLES, mixture), near: shareNear(points, EVAL_SAMPLES, mixture, NEAR_RADIUS) };
}

describe('learning (ring8)', () => {
  for (const seed of SEEDS) {
    it(`seed ${seed}: >= ${MIN_MODES}/8 modes, >= ${MIN_HIGH_QUALITY * 100}% of samples within 3 std of a mode`, async () => {
      const cfg = resolveConfig({ ...PRESETS.ring8, seed }, source);
      const t = new LocalTrainer(cfg, source);
      try {
        // The untrained generator fails every part of the bound.
        const before = evaluate(t);
        expect(before.modesCaptured).toBeLessThan(MIN_MODES);
        expect(before.highQuality).toBeLessThan(0.05);
        expect(before.near).toBeLessThan(0.5);

        const t0 = performance.now();
        // Yield to the event loop between slices: a run of minutes without it starves vitest's
        // worker RPC, which under load reports "Timeout calling onTaskUpdate" as an error.
        let slice = performance.now();
        while (!t.state.finished) {
          t.runPhase();
          if (performance.now() - slice > YIELD_EVERY_MS) {
            await new Promise((resolve) => setImmediate(resolve));
            slice = performance.now();
          }
        }
        const seconds = (performance.now() - t0) / 1000;

        const m = evaluate(t);
        const summary =
          `seed ${seed} after ${cfg.train.iterations} iterations (${seconds.toFixed(1)} s): ${m.modesCaptured}/8 modes, ` +
          `${(m.highQuality * 100).toFixed(1)}% within 3 std, ${(m.near * 100).toFixed(1)}% within ${NEAR_RADIUS}, counts [${m.counts}]`;
        console.log(`[learning] ${summary}`); // the figures behind the CALIBRATION note above
        expect(m.modesCaptured, summary).toBeGreaterThanOrEqual(MIN_MODES);
        expect(m.highQuality, summary).toBeGreaterThanOrEqual(MIN_HIGH_QUALITY);
        expect(m.near, summary).toBeGreaterThanOrEqual(MIN_NEAR);
      } finally {
        t.dispose();
      }
    }, LEARNING_MS);
  }
});
