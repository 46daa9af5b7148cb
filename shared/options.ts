/**
 * The training options, each declared once: its flag, its GanOptions key (the table's key), its
 * value type, its default, its help text with the value's name, and what a resume may do with it.
 * From this table come the flag table and help of gan-train and gan-coordinator (shared/cli.ts
 * GAN_FLAGS), the GanOptions type and the parsing of flags into it, the defaults resolveConfig
 * applies, and the resume rules (mergeResumeConfig). Adding an option is one entry here plus the
 * code that uses it. No tfjs: bin/*.js print help from this before loading tfjs.
 */
import type { GanConfig } from './config.ts';
import { WIRE_FORMATS, type WireFormat } from './protocol.ts';

export const MODEL_KINDS = ['mlp', 'mlp-small', 'dcgan', 'mlp2d'] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];
export const G_LOSSES = ['non-saturating', 'minimax'] as const;
export type GLoss = (typeof G_LOSSES)[number];
export const OPTIMIZERS = ['adam', 'sgd'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/**
 * Micro-shards per minibatch when --shards is not given: as many as keep at least
 * DEFAULT_SHARD_ROWS rows per shard, a power of two (aligned blocks of the sum tree), at most
 * MAX_DEFAULT_SHARDS. Workers send one summed gradient per aligned block they hold
 * (shared/tree-sum.ts), so bytes up do not grow with the shard count, but compute does: every
 * shard produces a full-size gradient (weight-gradient products, transposed weight copies, the
 * readout), a fixed cost of ~15-20 ms on mlp-small on wasm whatever its rows. Measured per shard
 * (D / G): 4 rows 20 / 24 ms, 16 rows 16 / 21 ms, 64 rows 66 / 68 ms; gan-train at batch 64,
 * 40 iterations: 7.2 s with 4 shards, 20.8 s with 16 (docs/performance.md). So batch 64 gets 4
 * shards (up to 4 workers per phase) and batch 256 gets 16.
 */
export const DEFAULT_SHARD_ROWS = 16;
export const MAX_DEFAULT_SHARDS = 64;

export function defaultShards(batchSize: number, pack = 1): number {
  let s = 1;
  for (;;) {
    const next = s * 2;
    const rows = batchSize / next;
    if (next > MAX_DEFAULT_SHARDS || !Number.isInteger(rows) || rows < DEFAULT_SHARD_ROWS || rows % pack !== 0) return s;
    s = next;
  }
}

/** mlp2d's hidden width when --width is not given (PRESETS.ring8 and test/learning.test.ts are calibrated on it). */
export const MLP2D_DEFAULT_WIDTH = 64;
/** dcgan's base channel count when --width is not given: D convolves to 64 then 128 filters, G from 128 to 64 (the model before --width applied to it). */
export const DCGAN_DEFAULT_WIDTH = 64;
/** The default --width of each model that has one. */
export const DEFAULT_WIDTHS: Partial<Record<ModelKind, number>> = { mlp2d: MLP2D_DEFAULT_WIDTH, dcgan: DCGAN_DEFAULT_WIDTH };

type Kind = 'int' | 'number' | 'string' | 'boolean';

/**
 * What a resume does with an option given on its command line: `fixed` options must equal what
 * the checkpoint was trained with (`saved` reads it from the stored config; a difference is a
 * CONFIG_CONFLICT); `change` options replace the stored value (`apply`) and are logged.
 */
type ResumeRule<T> = { fixed: (saved: GanConfig) => unknown } | { saved: (saved: GanConfig) => T; apply: (config: GanConfig, value: T) => void };

export interface OptionSpec<T> {
  /** The flag without its dashes. */
  flag: string;
  kind: Kind;
  /** The value's name in --help, e.g. '<n>'. */
  value?: string;
  group: string;
  help: string;
  /** The value resolveConfig uses when the option is not given (absent: derived there, see defaultText). */
  default?: T;
  /** --help's default when it is not just `default`. */
  defaultText?: string;
  resume: ResumeRule<T>;
  /** Phantom: the option's value type. */
  readonly type?: T;
}

const DATA = 'Data and model';
const TRAIN = 'Training';

const opt = <T>(spec: OptionSpec<T>): OptionSpec<T> => spec;

/** Every training option, in --help order. */
export const GAN_OPTIONS = {
  dataset: opt<string>({ flag: 'dataset', kind: 'string', value: '<source>', group: DATA, help: 'mnist | fashion | idx:<dir> | ring8 | grid25', defaultText: 'mnist', resume: { fixed: (c) => c.train.dataset } }),
  model: opt<ModelKind>({ flag: 'model', kind: 'string', value: '<kind>', group: DATA, help: MODEL_KINDS.join(' | '), defaultText: 'mlp-small (mlp2d for mixtures)', resume: { fixed: (c) => c.model.kind } }),
  conditional: opt<boolean>({ flag: 'conditional', kind: 'boolean', group: DATA, help: 'feed class labels to G and D (labelled data sets only)', resume: { fixed: (c) => c.model.numClasses > 0 } }),
  noiseDim: opt<number>({ flag: 'noise-dim', kind: 'int', value: '<n>', group: DATA, help: 'dimension of the noise z', defaultText: 'per model', resume: { fixed: (c) => c.model.noiseDim } }),
  pack: opt<number>({ flag: 'pack', kind: 'int', value: '<m>', group: DATA, help: 'PacGAN: D judges this many samples at once (MLP models)', default: 1, resume: { fixed: (c) => c.model.pack } }),
  minibatchStd: opt<number>({ flag: 'minibatch-std', kind: 'int', value: '<g>', group: DATA, help: 'minibatch standard deviation in D over groups of this many rows of a shard (0: off)', default: 0, resume: { fixed: (c) => c.model.minibatchStd ?? 0 } }),
  width: opt<number>({
    flag: 'width',
    kind: 'int',
    value: '<units>',
    group: DATA,
    help: 'mlp2d: units in each hidden layer (G and D); dcgan: base channels w (D convolves to w then 2w filters, G goes from 2w at 7x7 to w)',
    defaultText: `${MLP2D_DEFAULT_WIDTH} (mlp2d), ${DCGAN_DEFAULT_WIDTH} (dcgan)`,
    resume: { fixed: (c) => c.model.width ?? DEFAULT_WIDTHS[c.model.kind] ?? 'the fixed widths' },
  }),
  gLoss: opt<GLoss>({ flag: 'g-loss', kind: 'string', value: '<loss>', group: TRAIN, help: G_LOSSES.join(' | '), default: 'non-saturating', resume: { fixed: (c) => c.loss.gLoss } }),
  labelSmoothing: opt<number>({ flag: 'label-smoothing', kind: 'number', value: '<s>', group: TRAIN, help: 'one-sided: real targets are 1 - s', default: 0, resume: { fixed: (c) => c.loss.labelSmoothing } }),
  optimizer: opt<OptimizerName>({ flag: 'optimizer', kind: 'string', value: '<name>', group: TRAIN, help: OPTIMIZERS.join(' | '), default: 'adam', resume: { fixed: (c) => c.optimizer.name } }),
  lr: opt<number>({
    flag: 'lr',
    kind: 'number',
    value: '<rate>',
    group: TRAIN,
    help: 'learning rate',
    defaultText: '2e-4 (adam), 0.01 (sgd)',
    resume: { saved: (c) => c.optimizer.lr, apply: (c, v) => void (c.optimizer.lr = v) },
  }),
  lrD: opt<number>({
    flag: 'lr-d',
    kind: 'number',
    value: '<rate>',
    group: TRAIN,
    help: "D's own learning rate (two time-scale updates); --lr is then G's",
    defaultText: '--lr',
    resume: { saved: (c) => c.optimizer.lrD ?? c.optimizer.lr, apply: (c, v) => void (c.optimizer.lrD = v) },
  }),
  beta1: opt<number>({ flag: 'beta1', kind: 'number', value: '<b>', group: TRAIN, help: 'adam beta1', default: 0.5, resume: { fixed: (c) => c.optimizer.beta1 } }),
  beta2: opt<number>({ flag: 'beta2', kind: 'number', value: '<b>', group: TRAIN, help: 'adam beta2', default: 0.999, resume: { fixed: (c) => c.optimizer.beta2 } }),
  momentum: opt<number>({ flag: 'momentum', kind: 'number', value: '<m>', group: TRAIN, help: 'sgd momentum', default: 0.5, resume: { fixed: (c) => c.optimizer.momentum } }),
  seed: opt<number>({ flag: 'seed', kind: 'int', value: '<n>', group: TRAIN, help: 'run seed: init, data order, noise, dropout', default: 1, resume: { fixed: (c) => c.train.seed } }),
  batchSize: opt<number>({ flag: 'batch-size', kind: 'int', value: '<n>', group: TRAIN, help: 'global minibatch B', default: 64, resume: { fixed: (c) => c.train.batchSize } }),
  shards: opt<number>({ flag: 'shards', kind: 'int', value: '<n>', group: TRAIN, help: 'micro-shards S per batch (B must be a multiple; up to S workers share a phase); a worker returns one summed gradient per aligned block of the shards it holds', defaultText: 'batch/16 as a power of two (4 at batch 64)', resume: { fixed: (c) => c.train.shards } }),
  dSteps: opt<number>({ flag: 'd-steps', kind: 'int', value: '<k>', group: TRAIN, help: 'k: D-steps per G-step', default: 1, resume: { fixed: (c) => c.train.dSteps } }),
  iterations: opt<number>({
    flag: 'iterations',
    kind: 'int',
    value: '<n>',
    group: TRAIN,
    help: 'iterations of Algorithm 1',
    default: 1000,
    resume: { saved: (c) => c.train.iterations, apply: (c, v) => void (c.train.iterations = v) },
  }),
  gEma: opt<number>({
    flag: 'g-ema',
    kind: 'number',
    value: '<decay>',
    group: TRAIN,
    help: "decay of a moving average of G's weights (e.g. 0.999), kept by the coordinator; samples, evaluation and exports use it (0: off)",
    default: 0,
    resume: { fixed: (c) => c.train.gEma ?? 0 },
  }),
  wire: opt<WireFormat>({
    flag: 'wire',
    kind: 'string',
    value: '<format>',
    group: TRAIN,
    help: `${WIRE_FORMATS.join(' | ')}: weights and gradients between coordinator and workers as float32 or float16 (half the bytes; rounds what workers compute on and what is averaged, so gan-train rounds the same way and resume keeps it)`,
    default: 'fp32',
    resume: { fixed: (c) => c.train.wire ?? 'fp32' },
  }),
};

export type GanOptionKey = keyof typeof GAN_OPTIONS;
type OptionValue<S> = S extends OptionSpec<infer T> ? T : never;
/** What a user may set; everything else is derived or defaulted. */
export type GanOptions = { [K in GanOptionKey]?: OptionValue<(typeof GAN_OPTIONS)[K]> };

/** The default of an option that has a plain one (see GAN_OPTIONS). */
export function optionDefault<K extends GanOptionKey>(key: K): OptionValue<(typeof GAN_OPTIONS)[K]> {
  return GAN_OPTIONS[key].default as OptionValue<(typeof GAN_OPTIONS)[K]>;
}

/** --help's default text of an option. */
export function defaultTextOf(spec: { default?: unknown; defaultText?: string }): string | undefined {
  return spec.defaultText ?? (spec.default === undefined ? undefined : String(spec.default));
}
