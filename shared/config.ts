/**
 * The run's configuration, one typed object per concern. A resolved GanConfig is what a
 * worker needs to build identical models (it travels in `welcome`) and what a checkpoint stores.
 */
import { ConfigError } from './errors.ts';
import type { DataSource } from './data/types.ts';
import { WIRE_FORMATS, type WireFormat } from './protocol.ts';
import { DCGAN_DEFAULT_WIDTH, defaultShards, DEFAULT_WIDTHS, G_LOSSES, GAN_OPTIONS, MLP2D_DEFAULT_WIDTH, MODEL_KINDS, OPTIMIZERS, optionDefault, type GanOptionKey, type GanOptions, type GLoss, type ModelKind, type OptimizerName } from './options.ts';

export { DEFAULT_SHARD_ROWS, defaultShards, MAX_DEFAULT_SHARDS } from './options.ts';
export { DCGAN_DEFAULT_WIDTH, DEFAULT_WIDTHS, G_LOSSES, MLP2D_DEFAULT_WIDTH, MODEL_KINDS, OPTIMIZERS, type GanOptions, type GLoss, type ModelKind, type OptimizerName };

export interface ModelConfig {
  kind: ModelKind;
  noiseDim: number;
  /** Shape of one sample, e.g. [28, 28, 1] or [2]. */
  dataShape: number[];
  /** 0 for an unconditional model; otherwise labels are fed to G and D (Mirza & Osindero). */
  numClasses: number;
  /**
   * PacGAN packing (Lin et al. 2018): D judges `pack` samples at once, concatenated, which
   * penalises mode collapse. Packs are formed inside a shard, so sharding is unaffected. 1 = off.
   */
  pack: number;
  /**
   * Minibatch standard deviation in D (MinibatchStd in shared/layers.ts): the group size, i.e.
   * how many consecutive rows of a shard share one statistic. Absent or 0 = off.
   */
  minibatchStd?: number;
  /**
   * Units in every hidden layer of mlp2d (G and D), or dcgan's base channel count (D: width then
   * 2 * width filters; G: 2 * width at 7x7, then width). Absent = the model's default
   * (MLP2D_DEFAULT_WIDTH, DCGAN_DEFAULT_WIDTH), so configs of runs without --width stay exactly
   * as before. Other models have fixed widths.
   */
  width?: number;
}

export interface LossConfig {
  gLoss: GLoss;
  /** One-sided label smoothing: real targets are 1 - labelSmoothing. 0 disables it. */
  labelSmoothing: number;
}

export interface OptimizerConfig {
  name: OptimizerName;
  /** G's learning rate, and D's unless lrD is set. */
  lr: number;
  /** D's own learning rate (--lr-d, a two time-scale update rule); absent: lr. Only in configs that set it. */
  lrD?: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  momentum: number;
}

export interface TrainConfig {
  seed: number;
  dataset: string;
  /** Global minibatch B, split into `shards` equal micro-shards. */
  batchSize: number;
  shards: number;
  /** k in Algorithm 1: D-steps per G-step. */
  dSteps: number;
  iterations: number;
  /**
   * --wire: how weights and gradients travel between coordinator and workers. Part of the
   * training config because fp16 changes the numbers: workers compute on fp16-rounded weights
   * and the coordinator averages fp16-rounded gradients (gan-train applies the same rounding,
   * master weights and optimizer state stay float32). Absent = fp32, so configs of runs without
   * it stay exactly as before.
   */
  wire?: WireFormat;
  /**
   * --g-ema: decay of an exponential moving average of G's weights, updated after every G-step
   * (Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"). Samples,
   * evaluation and exports use the average; training itself never reads it. Absent = off, so
   * configs of runs without it stay exactly as before.
   */
  gEma?: number;
}

export interface GanConfig {
  model: ModelConfig;
  loss: LossConfig;
  optimizer: OptimizerConfig;
  train: TrainConfig;
}

const DEFAULT_NOISE: Record<ModelKind, number> = { mlp: 100, 'mlp-small': 64, dcgan: 100, mlp2d: 4 };
/** Upper bound for --width: beyond it a 2-D toy model only gets slower. */
export const MAX_WIDTH = 4096;
/** Upper bound for dcgan's --width (2 * 512 filters: far past what trains in reasonable time on wasm). */
export const MAX_DCGAN_WIDTH = 512;

function check(cond: boolean, code: string, message: string): void {
  if (!cond) throw new ConfigError(code, message);
}

function isPosInt(v: number): boolean {
  return Number.isInteger(v) && v >= 1;
}

/** Resolves options against the data source into a complete, validated config. */
export function resolveConfig(opts: GanOptions, source: DataSource): GanConfig {
  const dataset = opts.dataset ?? source.spec;
  const isMixture = source.kind === 'mixture';
  const kind = opts.model ?? (isMixture ? 'mlp2d' : 'mlp-small');
  check((MODEL_KINDS as readonly string[]).includes(kind), 'BAD_MODEL', `--model must be one of ${MODEL_KINDS.join(', ')}; got '${kind}'`);
  if (isMixture) {
    check(kind === 'mlp2d', 'MODEL_DATA_MISMATCH', `dataset '${dataset}' holds 2-D points; use --model mlp2d (got '${kind}')`);
  } else {
    check(kind !== 'mlp2d', 'MODEL_DATA_MISMATCH', `--model mlp2d is for 2-D mixtures (ring8, grid25); dataset '${dataset}' holds images`);
  }
  const dataShape = source.kind === 'mixture' ? [2] : source.train.shape;
  if (kind === 'dcgan') {
    check(dataShape.length === 3 && dataShape[0] === 28 && dataShape[1] === 28, 'MODEL_DATA_MISMATCH', `--model dcgan expects 28x28 images; dataset '${dataset}' has shape [${dataShape}]`);
  }
  let numClasses = 0;
  if (opts.conditional) {
    const classes = source.kind === 'finite' ? source.train.numClasses ?? 0 : 0;
    check(classes > 1, 'CONDITIONAL_NEEDS_LABELS', `--conditional needs a labelled dataset; '${dataset}' has no class labels`);
    numClasses = classes;
  }
  const optimizerName = opts.optimizer ?? optionDefault('optimizer');
  check((OPTIMIZERS as readonly string[]).includes(optimizerName), 'BAD_OPTIMIZER', `--optimizer must be adam or sgd; got '${optimizerName}'`);
  const gLoss = opts.gLoss ?? optionDefault('gLoss');
  check((G_LOSSES as readonly string[]).includes(gLoss), 'BAD_G_LOSS', `--g-loss must be non-saturating or minimax; got '${gLoss}'`);
  const cfg: GanConfig = {
    model: {
      kind,
      noiseDim: opts.noiseDim ?? DEFAULT_NOISE[kind],
      dataShape: [...dataShape],
      numClasses,
      pack: opts.pack ?? optionDefault('pack'),
      // Only when on, so configs of runs without it stay exactly as before.
      ...(opts.minibatchStd ? { minibatchStd: opts.minibatchStd } : {}),
      ...(opts.width !== undefined ? { width: opts.width } : {}),
    },
    loss: { gLoss, labelSmoothing: opts.labelSmoothing ?? optionDefault('labelSmoothing') },
    optimizer: {
      name: optimizerName,
      lr: opts.lr ?? (optimizerName === 'adam' ? 2e-4 : 0.01),
      ...(opts.lrD !== undefined ? { lrD: opts.lrD } : {}),
      beta1: opts.beta1 ?? optionDefault('beta1'),
      beta2: opts.beta2 ?? optionDefault('beta2'),
      epsilon: 1e-8,
      momentum: opts.momentum ?? optionDefault('momentum'),
    },
    train: {
      seed: opts.seed ?? optionDefault('seed'),
      dataset,
      batchSize: opts.batchSize ?? optionDefault('batchSize'),
      shards: opts.shards ?? defaultShards(opts.batchSize ?? optionDefault('batchSize'), opts.pack ?? optionDefault('pack')),
      dSteps: opts.dSteps ?? optionDefault('dSteps'),
      iterations: opts.iterations ?? optionDefault('iterations'),
      ...(opts.wire !== undefined && opts.wire !== 'fp32' ? { wire: opts.wire } : {}),
      ...(opts.gEma ? { gEma: opts.gEma } : {}),
    },
  };
  validateConfig(cfg);
  return cfg;
}

/** Checks the invariants of a complete config (also used on configs read from disk or the wire). */
export function validateConfig(cfg: GanConfig): void {
  const { model, loss, optimizer, train } = cfg;
  check(isPosInt(model.noiseDim), 'BAD_NOISE_DIM', `noise dimension must be a whole number >= 1; got ${model.noiseDim}`);
  check(model.dataShape.every(isPosInt), 'BAD_DATA_SHAPE', `data shape must be positive integers; got [${model.dataShape}]`);
  check(Number.isInteger(model.numClasses) && model.numClasses >= 0, 'BAD_NUM_CLASSES', `numClasses must be >= 0; got ${model.numClasses}`);
  check(isPosInt(model.pack), 'BAD_PACK', `--pack must be a whole number >= 1; got ${model.pack}`);
  if (model.pack > 1) {
    check(model.kind !== 'dcgan', 'PACK_UNSUPPORTED', '--pack works with the MLP models (mlp, mlp-small, mlp2d); dcgan does not support it');
    check(model.numClasses === 0, 'PACK_UNSUPPORTED', '--pack cannot be combined with --conditional');
    check(shardRows(train) % model.pack === 0, 'PACK_NOT_DIVISIBLE', `rows per shard (${shardRows(train)} = batch ${train.batchSize} / shards ${train.shards}) must be a multiple of --pack ${model.pack}`);
  }
  const mbstd = model.minibatchStd ?? 0;
  check(Number.isInteger(mbstd) && mbstd >= 0, 'BAD_MINIBATCH_STD', `--minibatch-std must be a whole number >= 0 (a group size; 0 = off); got ${mbstd}`);
  if (mbstd > 0) {
    const perHalf = shardRows(train) / model.pack;
    check(
      Number.isInteger(perHalf) && perHalf % mbstd === 0,
      'MINIBATCH_STD_NOT_DIVISIBLE',
      `--minibatch-std ${mbstd}: the rows D sees per shard half (${shardRows(train)} rows per shard${model.pack > 1 ? ` / pack ${model.pack}` : ''} = ${perHalf}) must be a multiple of the group size, so no group mixes real and generated rows or crosses a shard`,
    );
  }
  if (model.width !== undefined) {
    check(
      model.kind === 'mlp2d' || model.kind === 'dcgan',
      'WIDTH_UNSUPPORTED',
      `--width sets the hidden units of mlp2d or the base channels of dcgan; --model ${model.kind} has fixed layer widths (drop --width)`,
    );
    const max = model.kind === 'dcgan' ? MAX_DCGAN_WIDTH : MAX_WIDTH;
    check(isPosInt(model.width) && model.width <= max, 'BAD_WIDTH', `--width must be a whole number from 1 to ${max}${model.kind === 'dcgan' ? ' for dcgan' : ''}; got ${model.width}`);
  }
  check(loss.labelSmoothing >= 0 && loss.labelSmoothing < 0.5, 'BAD_LABEL_SMOOTHING', `--label-smoothing must be in [0, 0.5); got ${loss.labelSmoothing}`);
  check(optimizer.lr > 0 && Number.isFinite(optimizer.lr), 'BAD_LR', `--lr must be a positive number; got ${optimizer.lr}`);
  if (optimizer.lrD !== undefined) check(optimizer.lrD > 0 && Number.isFinite(optimizer.lrD), 'BAD_LR', `--lr-d must be a positive number; got ${optimizer.lrD}`);
  check(optimizer.beta1 >= 0 && optimizer.beta1 < 1, 'BAD_BETA', `--beta1 must be in [0, 1); got ${optimizer.beta1}`);
  check(optimizer.beta2 >= 0 && optimizer.beta2 < 1, 'BAD_BETA', `--beta2 must be in [0, 1); got ${optimizer.beta2}`);
  check(optimizer.momentum >= 0 && optimizer.momentum < 1, 'BAD_MOMENTUM', `--momentum must be in [0, 1); got ${optimizer.momentum}`);
  check(Number.isInteger(train.seed) && train.seed >= 0 && train.seed <= 0xffffffff, 'BAD_SEED', `--seed must be an integer in [0, 2^32); got ${train.seed}`);
  check(isPosInt(train.batchSize), 'BAD_BATCH_SIZE', `--batch-size must be a whole number >= 1; got ${train.batchSize}`);
  check(isPosInt(train.shards), 'BAD_SHARDS', `--shards must be a whole number >= 1; got ${train.shards}`);
  check(train.batchSize % train.shards === 0, 'BATCH_NOT_DIVISIBLE', `--batch-size ${train.batchSize} must be a multiple of --shards ${train.shards} so every micro-shard has the same number of rows`);
  check(isPosInt(train.dSteps), 'BAD_D_STEPS', `--d-steps must be a whole number >= 1; got ${train.dSteps}`);
  check(isPosInt(train.iterations), 'BAD_ITERATIONS', `--iterations must be a whole number >= 1; got ${train.iterations}`);
  if (train.gEma !== undefined) {
    check(train.gEma > 0 && train.gEma < 1, 'BAD_G_EMA', `--g-ema must be a decay in (0, 1), e.g. 0.999 (0 turns it off); got ${train.gEma}`);
  }
  if (train.wire !== undefined) {
    check((WIRE_FORMATS as readonly string[]).includes(train.wire), 'BAD_WIRE', `--wire must be one of ${WIRE_FORMATS.join(', ')}; got '${String(train.wire)}'`);
  }
}

/** Rows in each micro-shard. */
export function shardRows(train: TrainConfig): number {
  return train.batchSize / train.shards;
}

/** Number of values in one data sample. */
export function sampleDim(model: ModelConfig): number {
  return model.dataShape.reduce((a, b) => a * b, 1);
}

/**
 * Applies the options given on a resume to the config stored in the checkpoint. Changes that
 * keep every tensor's shape and the meaning of the run's position (learning rate, total
 * iterations) are allowed and reported; anything else is a CONFIG_CONFLICT naming the flag.
 */
export function mergeResumeConfig(saved: GanConfig, opts: GanOptions): { config: GanConfig; changes: string[] } {
  const config: GanConfig = JSON.parse(JSON.stringify(saved));
  const changes: string[] = [];
  for (const [key, spec] of Object.entries(GAN_OPTIONS) as [GanOptionKey, (typeof GAN_OPTIONS)[GanOptionKey]][]) {
    const now = opts[key];
    if (now === undefined) continue;
    const rule = spec.resume;
    if ('fixed' in rule) {
      const was = rule.fixed(saved);
      if (now !== was) {
        throw new ConfigError(
          'CONFIG_CONFLICT',
          `--${spec.flag} ${String(now)} conflicts with the checkpoint, which was trained with ${String(was)}; resuming cannot change it (start a new run in another --run-dir instead)`,
        );
      }
    }
  }
  for (const [key, spec] of Object.entries(GAN_OPTIONS) as [GanOptionKey, (typeof GAN_OPTIONS)[GanOptionKey]][]) {
    const now = opts[key];
    const rule = spec.resume as { saved?: (c: GanConfig) => unknown; apply?: (c: GanConfig, v: unknown) => void };
    if (now === undefined || !rule.apply || !rule.saved) continue;
    const was = rule.saved(saved);
    if (now !== was) {
      changes.push(`${key} ${String(was)} -> ${String(now)}`);
      rule.apply(config, now);
    }
  }
  validateConfig(config);
  return { config, changes };
}
