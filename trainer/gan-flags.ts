/**
 * The training flags of gan-train and gan-coordinator: --preset plus one flag per training option
 * (shared/options.ts GAN_OPTIONS), and their parsing into GanOptions with the preset filled in.
 * No tfjs: bin/*.js print help from these tables before loading tfjs.
 */
import { ConfigError } from '../shared/errors.ts';
import type { FlagSpec, FlagTable, FlagValues } from '../shared/cli.ts';
import { defaultTextOf, GAN_OPTIONS, type GanOptionKey, type GanOptions } from '../shared/options.ts';
import { PRESETS } from './presets.ts';

/** Flags that define the training run (--preset and shared/options.ts GAN_OPTIONS); shared by gan-train and gan-coordinator. */
export const GAN_FLAGS: FlagTable = {
  preset: { type: 'string', value: '<name>', group: 'Data and model', help: `measured settings for a data set (${Object.keys(PRESETS).join(' | ')}); flags given beside it win` },
  ...Object.fromEntries(
    Object.values(GAN_OPTIONS).map((o): [string, FlagSpec] => {
      const defaultText = defaultTextOf(o);
      const spec: FlagSpec = o.kind === 'boolean' ? { type: 'boolean', group: o.group, help: o.help } : { type: 'string', value: o.value, group: o.group, ...(o.kind !== 'string' ? { kind: o.kind } : {}), help: o.help };
      return [o.flag, defaultText === undefined ? spec : { ...spec, defaultText }];
    }),
  ),
};

/** Maps parsed GAN_FLAGS values to GanOptions. */
export function ganOptionsFrom(v: FlagValues): GanOptions {
  const given = explicitGanOptions(v);
  const name = typeof v.preset === 'string' ? v.preset : undefined;
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
  const out: Record<string, unknown> = {};
  for (const [key, o] of Object.entries(GAN_OPTIONS) as [GanOptionKey, (typeof GAN_OPTIONS)[GanOptionKey]][]) {
    const raw = v[o.flag];
    out[key] = o.kind === 'boolean' ? (raw === true ? true : undefined) : typeof raw !== 'string' ? undefined : o.kind === 'string' ? raw : Number(raw);
  }
  return out as GanOptions;
}
