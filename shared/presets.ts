/**
 * Named option sets for `--preset <name>` (gan-train, gan-coordinator, the demo): measured
 * hyperparameters per data set, as GanOptions. Flags given beside --preset win over its values.
 * test/learning.test.ts trains PRESETS.ring8; bench/quality.ts's VARIANTS give the same
 * settings as flags.
 */
import type { GanOptions } from './config.ts';

export const PRESETS: Record<string, Partial<GanOptions>> = {
  /**
   * ring8 (8 modes on a circle of radius 2, std 0.02) with mlp2d (G 3x64 relu, D 2x64 leaky
   * ReLU, noise 4). Calibrated by test/learning.test.ts on the wasm backend: after 3,000
   * iterations (~30 s of one core) seeds 1-10 end with >= 6/8 modes (8/8 on 8 of them) and
   * 39-89% of 2,500 samples within 3 std (0.06) of a mode, >= 94% within 0.15; nine of ten meet
   * PacGAN's bound (>= 6/8, >= 50%) at that end point. PacGAN packing (2), two D-steps per
   * G-step, a batch of 256 and one-sided label smoothing 0.1 are what make it fast and stable:
   * without packing it collapses onto one mode, without the others it oscillates between modes.
   * One shard is cheapest in one process; another shard count gives a different trajectory of
   * similar quality (with 2 shards, 8 of 9 seeds met the bound at 3,000 iterations).
   */
  ring8: {
    dataset: 'ring8',
    model: 'mlp2d',
    noiseDim: 4,
    pack: 2,
    dSteps: 2,
    batchSize: 256,
    shards: 1,
    optimizer: 'adam',
    lr: 1e-3,
    beta1: 0.5,
    beta2: 0.999,
    labelSmoothing: 0.1,
    iterations: 3000,
  },
  /**
   * grid25 (25 modes on a 5x5 grid, spacing 2, std 0.05): mlp2d widened to 128 units (--width)
   * with noise 8, PacGAN2, one-sided label smoothing 0.1, batch 256, Adam 1e-3. Measured:
   * - one process, 1 shard (evaluated every 500 iterations): 25/25 modes at every evaluation
   *   from 9,000 to 14,500 but one (21 at 10,500); high-quality share 69-89%, >= 85% at 12,000,
   *   12,500, 14,000 and 14,500;
   * - `npm run bench:quality -- --runs grid25 --stop-at-target` (coordinator + 2 workers, these
   *   settings with 2 shards): 25/25 and 90.5% first at iteration 15,000 (320 s), 25/25 and
   *   88.8% at 18,042 (392 s); the share still swings between evaluations (70-90%); the bench
   *   adds a learning-rate step at 70% of the time, not reached in that run
   *   (bench/results/quality-2026-11-26T11-58-52.md).
   * Minibatch std instead of packing stalled at 17/25 (bench variant grid25-mbstd); the default
   * 64-wide model (minibatch std, batch 128, one process) had no mode after 3,600 iterations.
   */
  grid25: {
    dataset: 'grid25',
    model: 'mlp2d',
    width: 128,
    noiseDim: 8,
    pack: 2,
    labelSmoothing: 0.1,
    batchSize: 256,
    shards: 2,
    optimizer: 'adam',
    lr: 1e-3,
    beta1: 0.5,
    beta2: 0.999,
    iterations: 15000,
  },
  /**
   * mnist, class-conditional (labels fed to G and D): mlp-small, Adam 1e-3 with one-sided label
   * smoothing 0.1. In single-process probes this started faster than lr 5e-4 without smoothing
   * (IS 2.6 vs 1.9 after 500 iterations). MEASURED, TARGET NOT MET: in `npm run bench:quality --
   * --runs mnist` (coordinator + 2 workers under a load average of 3-6, lr 2e-4 for the last 15%)
   * IS 8.22 (held-out real digits 9.51), Frechet distance 16.7, label accuracy 89.7% after 4,585
   * iterations in 15 minutes, still rising by ~0.2 per 250 iterations
   * (bench/results/quality-2026-11-26T11-43-28.md).
   */
  mnist: {
    dataset: 'mnist',
    model: 'mlp-small',
    conditional: true,
    batchSize: 64,
    shards: 4,
    optimizer: 'adam',
    lr: 1e-3,
    beta1: 0.5,
    beta2: 0.999,
    labelSmoothing: 0.1,
    iterations: 10000,
  },
};
