/**
 * Command-line flags: one table per CLI, strict parsing (unknown flags are errors), help text
 * generated from the same table so it cannot drift from what is accepted.
 */
import { readFileSync } from 'node:fs';
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
  /** The value's name in --help, e.g. '<n>', '<dir>', '<url>' (string flags; else from kind). */
  value?: string;
  /** The heading --help lists the flag under (default 'Options'). */
  group?: string;
  /** One-letter alias, e.g. 'h' for -h. */
  short?: string;
}
export type FlagTable = Record<string, FlagSpec>;

/** What a CLI's --help, --version and argument parsing need, without loading the CLI itself. */
export interface CliSpec {
  /** The command's name, e.g. 'gan-coordinator'. */
  name: string;
  /** 'Usage: ...' lines, a blank line and a short description (each line at most 100 columns). */
  usage: string;
  tables: FlagTable[];
  /** Command lines shown under 'Examples:' (a trailing '# ...' is a comment). */
  examples?: string[];
  /** A rewrite of argv before parsing (gan-coordinator's `--resume <path>`). */
  argv?: (argv: string[]) => string[];
}

/** Help is wrapped to this many columns. */
export const HELP_COLUMNS = 100;

/** Flags that define the training run; shared by gan-train and gan-coordinator. */
export const GAN_FLAGS: FlagTable = {
  preset: { type: 'string', value: '<name>', group: 'Data and model', help: `measured settings for a data set (${Object.keys(PRESETS).join(' | ')}); flags given beside it win` },
  dataset: { type: 'string', value: '<source>', group: 'Data and model', help: 'mnist | fashion | idx:<dir> | ring8 | grid25', defaultText: 'mnist' },
  model: { type: 'string', value: '<kind>', group: 'Data and model', help: MODEL_KINDS.join(' | '), defaultText: 'mlp-small (mlp2d for mixtures)' },
  conditional: { type: 'boolean', group: 'Data and model', help: 'feed class labels to G and D (labelled data sets only)' },
  'noise-dim': { type: 'string', value: '<n>', group: 'Data and model', kind: 'int', help: 'dimension of the noise z', defaultText: 'per model' },
  pack: { type: 'string', value: '<m>', group: 'Data and model', kind: 'int', help: 'PacGAN: D judges this many samples at once (MLP models)', defaultText: '1' },
  'minibatch-std': { type: 'string', value: '<g>', group: 'Data and model', kind: 'int', help: 'minibatch standard deviation in D over groups of this many rows of a shard (0: off)', defaultText: '0' },
  width: { type: 'string', value: '<units>', group: 'Data and model', kind: 'int', help: 'units in each hidden layer of mlp2d (G and D)', defaultText: '64' },
  'g-loss': { type: 'string', value: '<loss>', group: 'Training', help: G_LOSSES.join(' | '), defaultText: 'non-saturating' },
  'label-smoothing': { type: 'string', value: '<s>', group: 'Training', kind: 'number', help: 'one-sided: real targets are 1 - s', defaultText: '0' },
  optimizer: { type: 'string', value: '<name>', group: 'Training', help: OPTIMIZERS.join(' | '), defaultText: 'adam' },
  lr: { type: 'string', value: '<rate>', group: 'Training', kind: 'number', help: 'learning rate', defaultText: '2e-4 (adam), 0.01 (sgd)' },
  beta1: { type: 'string', value: '<b>', group: 'Training', kind: 'number', help: 'adam beta1', defaultText: '0.5' },
  beta2: { type: 'string', value: '<b>', group: 'Training', kind: 'number', help: 'adam beta2', defaultText: '0.999' },
  momentum: { type: 'string', value: '<m>', group: 'Training', kind: 'number', help: 'sgd momentum', defaultText: '0.5' },
  seed: { type: 'string', value: '<n>', group: 'Training', kind: 'int', help: 'run seed: init, data order, noise, dropout', defaultText: '1' },
  'batch-size': { type: 'string', value: '<n>', group: 'Training', kind: 'int', help: 'global minibatch B', defaultText: '64' },
  shards: { type: 'string', value: '<n>', group: 'Training', kind: 'int', help: 'micro-shards S per batch (B must be a multiple; up to S workers share a phase); a worker returns one summed gradient per aligned block of the shards it holds', defaultText: 'batch/16 as a power of two (4 at batch 64)' },
  'd-steps': { type: 'string', value: '<k>', group: 'Training', kind: 'int', help: 'k: D-steps per G-step', defaultText: '1' },
  iterations: { type: 'string', value: '<n>', group: 'Training', kind: 'int', help: 'iterations of Algorithm 1', defaultText: '1000' },
  'g-ema': { type: 'string', value: '<decay>', group: 'Training', kind: 'number', help: "decay of a moving average of G's weights (e.g. 0.999), kept by the coordinator; samples, evaluation and exports use it (0: off)", defaultText: '0' },
  wire: { type: 'string', value: '<format>', group: 'Training', help: 'fp32 | fp16: weights and gradients between coordinator and workers as float32 or float16 (half the bytes; rounds what workers compute on and what is averaged, so gan-train rounds the same way and resume keeps it)', defaultText: 'fp32' },
};

export const COMMON_FLAGS: FlagTable = {
  backend: { type: 'string', value: '<name>', group: 'General', help: 'auto | tensorflow | wasm | cpu', defaultText: 'auto' },
  help: { type: 'boolean', group: 'General', short: 'h', help: 'show this help and exit' },
};

/** --version: the CLIs' own, not shared by the benches that use COMMON_FLAGS. */
export const VERSION_FLAGS: FlagTable = {
  version: { type: 'boolean', group: 'General', help: 'print the version and exit' },
};

export type FlagValues = Record<string, string | boolean | undefined>;

/** Parses argv against a table; unknown flags and malformed numbers are ConfigErrors. */
export function parseFlags(argv: string[], table: FlagTable): FlagValues {
  let values: FlagValues;
  try {
    const options = Object.fromEntries(Object.entries(table).map(([k, v]) => [k, v.short ? { type: v.type, short: v.short } : { type: v.type }]));
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

/** Greedy word wrap to `width` columns; a word longer than that keeps its own line. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/[ \n\t]+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.map((l) => l.replaceAll('\u00a0', ' '));
}

function flagLabel(name: string, spec: FlagSpec): string {
  const value = spec.value ?? (spec.type === 'string' ? (spec.kind === 'int' ? '<n>' : spec.kind === 'number' ? '<x>' : '<value>') : '');
  return `${spec.short ? `-${spec.short}, ` : ''}--${name}${value ? ` ${value}` : ''}`;
}

/**
 * Help text: the usage, then the flags under their group headings (in table order), each flag's
 * text wrapped at HELP_COLUMNS beside its label, then the examples.
 */
export function formatHelp(usage: string, tables: FlagTable[], examples: string[] = []): string {
  const rows = Object.entries(Object.assign({}, ...tables) as FlagTable);
  const labelWidth = Math.min(26, Math.max(...rows.map(([k, v]) => flagLabel(k, v).length)));
  const indent = 2 + labelWidth + 2;
  const groups = new Map<string, string[]>();
  for (const [name, spec] of rows) {
    const label = flagLabel(name, spec);
    // A no-break space keeps '(default:' on the line of its value.
    const text = wrap(`${spec.help}${spec.defaultText ? ` (default:\u00a0${spec.defaultText})` : ''}`, HELP_COLUMNS - indent);
    const lines = label.length > labelWidth ? [`  ${label}`] : [`  ${label.padEnd(labelWidth)}  ${text.shift() ?? ''}`.trimEnd()];
    for (const t of text) lines.push(`${' '.repeat(indent)}${t}`);
    const group = spec.group ?? 'Options';
    groups.set(group, [...(groups.get(group) ?? []), ...lines]);
  }
  const sections = [usage.trimEnd(), ...[...groups].map(([g, lines]) => `${g}:\n${lines.join('\n')}`)];
  if (examples.length > 0) sections.push(`Examples:\n${examples.map((e) => `  ${e}`).join('\n')}`);
  return `${sections.join('\n\n')}\n`;
}

/** Help for a flag table (the benches' helpers use it too). */
export function helpText(usage: string, ...tables: FlagTable[]): string {
  return formatHelp(usage, tables);
}

/** Every flag a CLI accepts. */
export function flagsOf(spec: CliSpec): FlagTable {
  return Object.assign({}, ...spec.tables) as FlagTable;
}

/** Parses a CLI's argv (after its rewrite) against its tables. */
export function parseCli(spec: CliSpec, argv: string[]): FlagValues {
  return parseFlags(spec.argv ? spec.argv(argv) : argv, flagsOf(spec));
}

/** The package's version, from package.json. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Prints --help or --version when asked for; true when it did (the CLI then exits 0). */
export function printInfo(spec: CliSpec, v: FlagValues): boolean {
  if (v.help === true) process.stdout.write(formatHelp(spec.usage, spec.tables, spec.examples));
  else if (v.version === true) process.stdout.write(`${spec.name} ${packageVersion()}\n`);
  else return false;
  return true;
}

/**
 * For bin/*.js: answers -h, --help and --version from the flag table alone, before the CLI module
 * (and with it tfjs, about a second) is loaded. Anything else, including arguments that do not
 * parse, is left to the CLI, which reports it as before.
 */
export function answerInfoFlags(spec: CliSpec, argv: string[]): boolean {
  let v: FlagValues;
  try {
    v = parseCli(spec, argv);
  } catch {
    return false;
  }
  return printInfo(spec, v);
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
