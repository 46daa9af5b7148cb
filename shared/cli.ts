/**
 * Command-line flags: one table per CLI, strict parsing (unknown flags are errors), help text
 * generated from the same table so it cannot drift from what is accepted.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from './errors.ts';

export interface FlagSpec {
  type: 'string' | 'boolean';
  /** How a string value is checked and converted. */
  kind?: 'int' | 'number' | 'string';
  help: string;
  /** A number flag's default: shown in --help (unless defaultText says more) and applied by numberFlag(). */
  default?: number;
  /** --help's default when there is no plain `default` (training options' defaults are applied by resolveConfig). */
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
    const defaultText = spec.defaultText ?? (spec.default === undefined ? undefined : String(spec.default));
    const text = wrap(`${spec.help}${defaultText ? ` (default:\u00a0${defaultText})` : ''}`, HELP_COLUMNS - indent);
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

/** A number flag's value, or its table default when not given. */
export function numberFlag(v: FlagValues, table: FlagTable, name: string): number {
  const given = v[name];
  if (typeof given === 'string') return Number(given);
  const d = table[name]?.default;
  if (d === undefined) throw new Error(`--${name} has no default in its flag table`);
  return d;
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
