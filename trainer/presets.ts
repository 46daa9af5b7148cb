/**
 * Named option sets for `--preset <name>` (gan-train, gan-coordinator, the demo): measured
 * hyperparameters per data set, as GanOptions. Flags given beside --preset win over its values.
 * test/learning.test.ts trains PRESETS.ring8; bench/quality.ts's VARIANTS give the same
 * settings as flags.
 */
import type { GanOptions } from '../shared/config.ts';

export const PRESETS: Record<string, Partial<GanOptions>> = {
  /**
   * ring8 (8 modes on a circle of radius 2, std 0.02) with mlp2d (G 3x64 relu, D 2x64 leaky
   * ReLU, noise 4). Calibrated by test/learning.test.ts on the wasm backend. With 1 shard (until
   * #15): after 3,000 iterations (~30 s of one core) seeds 1-10 ended with >= 6/8 modes (8/8 on 8
   * of them) and 39-89% of 2,500 samples within 3 std (0.06) of a mode, >= 94% within 0.15; nine
   * of ten met PacGAN's bound (>= 6/8, >= 50%). In its 4 shards (each shard count is its
   * own tree grouping, so its own trajectory): seeds 1-4 end with 8/8 modes and 75-92% within
   * 3 std (16 shards: seeds 1-5, 74-91%). So bench:quality's ring8 target (8/8 and >= 90% within
   * 3 std) is met at 3,000 iterations by some seeds only; its `ring8` variant
   * (minibatch std, batch 128, lr 5e-4 then 1e-4, ~12,500 iterations) meets it.
   * PacGAN packing (2), two D-steps per G-step, a batch of 256 and one-sided label smoothing 0.1
   * are what make it fast and stable: without packing it collapses onto one mode, without the
   * others it oscillates between modes. 4 shards (64 rows each): up to 4 workers share a phase, and
   * a 3,000-iteration run costs ~50 s of one core against ~155 s in 16 shards (each shard has a
   * fixed cost); test/learning.test.ts calibrates it. Give `--shards 16` for more workers.
   */
  ring8: {
    dataset: 'ring8',
    model: 'mlp2d',
    noiseDim: 4,
    pack: 2,
    dSteps: 2,
    batchSize: 256,
    optimizer: 'adam',
    lr: 1e-3,
    beta1: 0.5,
    beta2: 0.999,
    labelSmoothing: 0.1,
    shards: 4,
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
   * smoothing 0.1, and samples, evaluation and the export from the moving average of G
   * (--g-ema 0.999). Measured with `npm run bench:quality -- --runs mnist --stop-at-target`
   * (coordinator + 2 workers, idle machine, 10.6 it/s): IS 8.51 (held-out real digits 9.51)
   * first at iteration 4,750 (446 s), 8.59 at 5,000, Frechet distance 10.5, label accuracy 91.2%
   * (bench/results/quality-2026-11-26T14-29-51.md, run as variant mnist-ema). Without --g-ema
   * (now variant mnist-no-ema) the same settings had IS 7.75 at iteration 5,000 and met the
   * target at 8,250 (757 s), just before the learning-rate step
   * (bench/results/quality-2026-11-26T14-40-05.md, run as variant mnist).
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
    gEma: 0.999,
    iterations: 10000,
  },
  /**
   * mnist, unconditional, with the conv net (dcgan: G dense -> 7x7x2w, two 4x4 stride-2
   * transposed convolutions with LayerNormalization; D two 4x4 stride-2 convolutions with w and
   * 2w filters and leaky ReLU), Adam beta1 0.5 as in DCGAN, one-sided label smoothing 0.1, and the
   * moving average of G (--g-ema 0.999, which scored 0.5-0.8 IS above G itself for mlp-small).
   * - --width 32 and batch 32 (in 2 shards, one per worker of the usual coordinator + 2 workers):
   *   #17's budget is 30 minutes of 2 cores, and per unit of compute the narrow model with the
   *   small batch learns fastest. gan-train (the bit-identical reference, so the same quality per
   *   iteration as the distributed run), CPU seconds per iteration measured on the same loaded
   *   machine (load 5-16): 64 wide, batch 64 (the preset before) 0.67 s; 32 wide, batch 64
   *   0.24 s; 32 wide, batch 32 0.16 s. At about the same compute (~270-330 CPU s) 32 wide batch
   *   32 had IS 5.60 / Frechet distance 41.6 (iteration 2,000), 32 wide batch 64 about 5.1 / 50
   *   (1,000-1,500), 64 wide batch 64 4.49 / 79.1 (iteration 400, the 2026-12-07 bench run); 64
   *   wide needs ~1,300 iterations (~870 CPU s) to pass FD 35, 32 wide batch 32 ~3,000 (~480).
   *   32 wide batch 32 went on to IS 6.40 / FD 30.9 / class max/min 2.08 at 4,000 and 6.44 / 29.0
   *   / 2.69 at 5,000 (1,000 samples each). Coordinator + 2 workers: ~0.17 CPU s per iteration
   *   in all three processes (300 iterations in 73 s at load 6-7), against ~0.7 for 64 wide.
   *   `npm run bench:quality -- --runs mnist-dcgan --minutes 30` (load 4.4 falling to 1.9):
   *   20,743 iterations (11.5 it/s), IS 6.99, FD 15.42, max/min 2.13
   *   (bench/results/quality-2026-12-08T01-18-14.md): ahead of the 64-wide model's 28-minute
   *   idle run in IS and FD at every matching time up to 27 minutes, level with its end (6.92 /
   *   15.72 / 1.92), class balance slightly worse (1.9-2.5 vs 1.9-2.2); both flatten out
   *   near IS 7 / FD 15.5, short of #17's IS >= 9, FD <= 5, max/min <= 1.5.
   * - lr 5e-4 rather than DCGAN's 2e-4: two 8-minute `npm run bench:quality` runs of the 64-wide
   *   model on a loaded 2-core machine (load 7-11, 0.8 it/s) gave IS 4.53 / Frechet distance 78.9
   *   after 384 iterations with 5e-4 (bench/results/quality-2026-12-05T12-37-36.md, variant
   *   mnist-dcgan-lr5e-4) against IS 3.79 / FD 194.8 after 376 with 2e-4
   *   (quality-2026-12-05T12-26-43.md). For the 32-wide model, dropping to 2e-4 at iteration
   *   2,000 gave IS 6.05 / FD 37.3 at 3,000 against 6.29 / 35.2 without the drop, and 2e-4 or
   *   1e-4 from 5,000 gave FD 26.6 / 27.5 at 6,500 against 24.9; 1e-3 from 2,000 was no better
   *   (IS 6.22 / FD 33.6 / max/min 2.81 at 3,000).
   * `--width 64 --batch-size 64` gives the preset's earlier model (bench variant mnist-dcgan-w64).
   */
  'mnist-dcgan': {
    dataset: 'mnist',
    model: 'dcgan',
    width: 32,
    batchSize: 32,
    shards: 2,
    optimizer: 'adam',
    lr: 5e-4,
    beta1: 0.5,
    beta2: 0.999,
    labelSmoothing: 0.1,
    gEma: 0.999,
    // ~15 minutes of coordinator + 2 workers at the bench's 11.5 it/s: IS 6.88, FD 19.2 at 10,000.
    iterations: 10000,
  },
  /**
   * Fashion-MNIST (`--dataset fashion`, Debian's dataset-fashion-mnist), unconditional mlp-small
   * with the demo's settings: Adam 1e-3, one-sided label smoothing 0.1, the moving average of G
   * (--g-ema 0.999). Scored with models/classifier-fashion/; figures in the README.
   */
  fashion: {
    dataset: 'fashion',
    model: 'mlp-small',
    batchSize: 64,
    shards: 4,
    optimizer: 'adam',
    lr: 1e-3,
    beta1: 0.5,
    beta2: 0.999,
    labelSmoothing: 0.1,
    gEma: 0.999,
    iterations: 1500,
  },
};

/**
 * The preset a data set gets when it is named with --dataset and no --preset is given: its
 * measured settings are what a user gets unless they override them (issue #18: `--dataset ring8`
 * on the plain defaults gave a diffuse cloud with no mode after 3,000 iterations). mnist is not
 * here: the built-in defaults are its unconditional settings (the demo's), and its preset is
 * class-conditional, a different model a user asks for by name. `--preset none` keeps the plain
 * defaults for any data set.
 */
export const DATASET_PRESETS: Readonly<Record<string, string>> = { ring8: 'ring8', grid25: 'grid25', fashion: 'fashion' };
