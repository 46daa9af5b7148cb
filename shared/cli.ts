/**
 * Command-line flags: one table per CLI, strict parsing (unknown flags are errors), help text
 * generated from the same table so it cannot drift from what is accepted.
 */
import { parseArgs } from 'node:util';
import { ConfigError } from './errors.ts';
import type { GanOptions } from './config.ts';
import { G_LOSSES, MODEL_KINDS, OPTIMIZERS } from './config.ts';
import { PRESETS } from './presets.ts';

export interface FlagSpec {
  type: 'string' | 'boolean';
  /** How a string value is checked and converted. */
  kind?: 'int' | 'number' | 'string';
  help: string;
  /** Shown in --help only; defaults are applied by the config resolver. */
  defaultText?: string;
}
export type FlagTable = Record<string, FlagSpec>;

/** Flags that define the training run; shared by gan-train and gan-coordinator. */
export const GAN_FLAGS: FlagTable = {
  preset: { type: 'string', help: `measured settings for a data set (${Object.keys(PRESETS).join(' | ')}); flags given beside it win` },
  dataset: { type: 'string', help: 'mnist | idx:<dir> | ring8 | grid25', defaultText: 'mnist' },
  model: { type: 'string', help: MODEL_KINDS.join(' | '), defaultText: 'mlp-small (mlp2d for mixtures)' },
  conditional: { type: 'boolean', help: 'feed class labels to G and D (labelled data sets only)' },
  'noise-dim': { type: 'string', kind: 'int', help: 'dimension of the noise z', defaultText: 'per model' },
  pack: { type: 'string', kind: 'int', help: 'PacGAN: D judges this many samples at once (MLP models)', defaultText: '1' },
  'minibatch-std': { type: 'string', kind: 'int', help: 'minibatch standard deviation in D over groups of this many rows of a shard (0: off)', defaultText: '0' },
  width: { type: 'string', kind: 'int', help: 'units in each hidden layer of mlp2d (G and D)', defaultText: '64' },
  'g-loss': { type: 'string', help: G_LOSSES.join(' | '), defaultText: 'non-saturating' },
  'label-smoothing': { type: 'string', kind: 'number', help: 'one-sided: real targets are 1 - s', defaultText: '0' },
  optimizer: { type: 'string', help: OPTIMIZERS.join(' | '), defaultText: 'adam' },
  lr: { type: 'string', kind: 'number', help: 'learning rate', defaultText: '2e-4 (adam), 0.01 (sgd)' },
  beta1: { type: 'string', kind: 'number', help: 'adam beta1', defaultText: '0.5' },
  beta2: { type: 'string', kind: 'number', help: 'adam beta2', defaultText: '0.999' },
  momentum: { type: 'string', kind: 'number', help: 'sgd momentum', defaultText: '0.5' },
  seed: { type: 'string', kind: 'int', help: 'run seed: init, data order, noise, dropout', defaultText: '1' },
  'batch-size': { type: 'string', kind: 'int', help: 'global minibatch B', defaultText: '64' },
  shards: { type: 'string', kind: 'int', help: 'micro-shards S per batch (B must be a multiple); each returns one full gradient', defaultText: '4' },
  'd-steps': { type: 'string', kind: 'int', help: 'k: D-steps per G-step', defaultText: '1' },
  iterations: { type: 'string', kind: 'int', help: 'iterations of Algorithm 1', defaultText: '1000' },
  'g-ema': { type: 'string', kind: 'number', help: "decay of a moving average of G's weights (e.g. 0.999), kept by the coordinator; samples, evaluation and exports use it (0: off)", defaultText: '0' },
  wire: { type: 'string', help: 'fp32 | fp16: weights and gradients between coordinator and workers as float32 or float16 (half the bytes; rounds what workers compute on and what is averaged, so gan-train rounds the same way and resume keeps it)', defaultText: 'fp32' },
};

export const COMMON_FLAGS: FlagTable = {
  backend: { type: 'string', help: 'auto | tensorflow | wasm | cpu', defaultText: 'auto' },
  help: { type: 'boolean', help: 'show this help' },
};

export type FlagValues = Record<string, string | boolean | undefined>;

/** Parses argv against a table; unknown flags and malformed numbers are ConfigErrors. */
export function parseFlags(argv: string[], table: FlagTable): FlagValues {
  let values: FlagValues;
  try {
    const options = Object.fromEntries(Object.entries(table).map(([k, v]) => [k, { type: v.type }]));
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (err) {
    throw new ConfigError('CLI_BAD_ARGS', `${(err as Error).message}. Run with --help to see the accepted flags.`);
  }
  for (const [name, spec] of Object.entries(table)) {
    const v = values[name];
    if (typeof v !== 'string' || !spec.kind || spec.kind === 'string') continue;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || (spec.kind === 'int' && !Number.isInteger(n))) {
      throw new ConfigError('CLI_BAD_NUMBER', `--${name} expects ${spec.kind === 'int' ? 'a whole number' : 'a number'}, got '${v}'`);
    }
  }
  return values;
}

export function helpText(usage: string, ...tables: FlagTable[]): string {
  const rows = tables.flatMap((t) => Object.entries(t));
  const width = Math.max(...rows.map(([k, v]) => k.length + (v.type === 'string' ? 6 : 0))) + 4;
  const lines = rows.map(([k, v]) => {
    const flag = `--${k}${v.type === 'string' ? ' <val>' : ''}`;
    return `  ${flag.padEnd(width)}${v.help}${v.defaultText ? ` (default: ${v.defaultText})` : ''}`;
  });
  return `${usage}\n\nOptions:\n${lines.join('\n')}\n`;
}

const num = (v: string | boolean | undefined): number | undefined => (typeof v === 'string' ? Number(v) : undefined);
const str = <T extends string>(v: string | boolean | undefined): T | undefined => (typeof v === 'string' ? (v as T) : undefined);

/** Maps parsed GAN_FLAGS values to GanOptions. */
export function ganOptionsFrom(v: FlagValues): GanOptions {
  const given = explicitGanOptions(v);
  const name = str(v.preset);
  if (name === undefined) return given;
  if (!Object.hasOwn(PRESETS, name)) {
    throw new ConfigError('UNKNOWN_PRESET', `--preset must be one of ${Object.keys(PRESETS).join(', ')}; got '${name}'`);
  }
  // The preset fills in what the command line left open; an explicit flag always wins.
  const merged: GanOptions = { ...PRESETS[name] };
  for (const [key, value] of Object.entries(given) as [keyof GanOptions, unknown][]) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

/** The training options given explicitly as flags (undefined where a flag was not given). */
function explicitGanOptions(v: FlagValues): GanOptions {
  return {
    dataset: str(v.dataset),
    model: str(v.model),
    conditional: v.conditional === true ? true : undefined,
    noiseDim: num(v['noise-dim']),
    pack: num(v.pack),
    minibatchStd: num(v['minibatch-std']),
    width: num(v.width),
    gLoss: str(v['g-loss']),
    labelSmoothing: num(v['label-smoothing']),
    optimizer: str(v.optimizer),
    lr: num(v.lr),
    beta1: num(v.beta1),
    beta2: num(v.beta2),
    momentum: num(v.momentum),
    seed: num(v.seed),
    batchSize: num(v['batch-size']),
    shards: num(v.shards),
    dSteps: num(v['d-steps']),
    iterations: num(v.iterations),
    wire: str(v.wire),
    gEma: num(v['g-ema']),
  };
}
