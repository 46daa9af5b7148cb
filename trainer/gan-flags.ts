/**
 * The training flags of gan-train and gan-coordinator: --preset plus one flag per training option
 * (shared/options.ts GAN_OPTIONS), and their parsing into GanOptions with the preset filled in.
 * No tfjs: bin/*.js print help from these tables before loading tfjs.
 */
import { ConfigError } from '../shared/errors.ts';
import type { FlagSpec, FlagTable, FlagValues } from '../shared/cli.ts';
import { defaultTextOf, GAN_OPTIONS, type GanOptionKey, type GanOptions } from '../shared/options.ts';
import { DATASET_PRESETS, PRESETS } from './presets.ts';

/** Flags that define the training run (--preset and shared/options.ts GAN_OPTIONS); shared by gan-train and gan-coordinator. */
export const GAN_FLAGS: FlagTable = {
  preset: { type: 'string', value: '<name>', group: 'Data and model', help: `measured settings for a data set (${Object.keys(PRESETS).join(' | ')}); flags given beside it win. --dataset ${Object.keys(DATASET_PRESETS).join('/')} imply their own preset; none: the plain defaults` },
  ...Object.fromEntries(
    Object.values(GAN_OPTIONS).map((o): [string, FlagSpec] => {
      const defaultText = defaultTextOf(o);
      const spec: FlagSpec = o.kind === 'boolean' ? { type: 'boolean', group: o.group, help: o.help } : { type: 'string', value: o.value, group: o.group, ...(o.kind !== 'string' ? { kind: o.kind } : {}), help: o.help };
      return [o.flag, defaultText === undefined ? spec : { ...spec, defaultText }];
    }),
  ),
};

/** The preset a command line asks for: named with --preset, or implied by --dataset (DATASET_PRESETS). */
export interface PresetChoice {
  name: string;
  /** Implied by --dataset rather than named: the CLIs say so once, with how to opt out. */
  implied: boolean;
}

/** Which preset applies to parsed GAN_FLAGS values; undefined for none (`--preset none`, or a data set without one). */
export function presetChoice(v: FlagValues): PresetChoice | undefined {
  if (v.preset === 'none') return undefined;
  if (typeof v.preset === 'string') {
    if (!Object.hasOwn(PRESETS, v.preset)) {
      throw new ConfigError('UNKNOWN_PRESET', `--preset must be one of ${Object.keys(PRESETS).join(', ')} or none; got '${v.preset}'`);
    }
    return { name: v.preset, implied: false };
  }
  const dataset = typeof v.dataset === 'string' ? v.dataset : undefined;
  return dataset !== undefined && Object.hasOwn(DATASET_PRESETS, dataset) ? { name: DATASET_PRESETS[dataset]!, implied: true } : undefined;
}

/** The log line for a preset implied by --dataset (undefined otherwise): a user should know where the settings came from. */
export function impliedPresetLine(choice: PresetChoice | undefined): { fields: Record<string, unknown>; msg: string } | undefined {
  if (!choice?.implied) return undefined;
  return {
    fields: { event: 'preset_applied', preset: choice.name, implied: true },
    msg: `--dataset ${choice.name}: using the ${choice.name} preset's measured settings (flags given beside it win; --preset none for the plain defaults)`,
  };
}

/** Maps parsed GAN_FLAGS values to GanOptions. */
export function ganOptionsFrom(v: FlagValues): GanOptions {
  const given = explicitGanOptions(v);
  const choice = presetChoice(v);
  if (choice === undefined) return given;
  // The preset fills in what the command line left open; an explicit flag always wins.
  const merged: GanOptions = { ...PRESETS[choice.name] };
  for (const [key, value] of Object.entries(given) as [keyof GanOptions, unknown][]) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

/**
 * The training options given explicitly as flags (undefined where a flag was not given): what a
 * resume applies. A preset's values are not among them: the checkpoint's config already holds
 * what the run was started with, and `--dataset ring8 --resume` must not put the preset's
 * iteration count back over a `--iterations` the run was started with.
 */
export function explicitGanOptions(v: FlagValues): GanOptions {
  const out: Record<string, unknown> = {};
  for (const [key, o] of Object.entries(GAN_OPTIONS) as [GanOptionKey, (typeof GAN_OPTIONS)[GanOptionKey]][]) {
    const raw = v[o.flag];
    out[key] = o.kind === 'boolean' ? (raw === true ? true : undefined) : typeof raw !== 'string' ? undefined : o.kind === 'string' ? raw : Number(raw);
  }
  return out as GanOptions;
}
