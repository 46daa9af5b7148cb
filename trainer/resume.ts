/**
 * A run directory's start: a new run (refused where checkpoints already are, so a run is never
 * overwritten by accident), or a resume from the newest valid checkpoint (--resume, --resume-from,
 * --auto-resume) with the options a resume may change applied (shared/options.ts). Shared by
 * gan-coordinator and gan-train, which use the same run-directory layout.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FlagValues } from '../shared/cli.ts';
import { mergeResumeConfig, resolveConfig, type GanConfig, type GanOptions } from '../shared/config.ts';
import { explicitGanOptions } from './gan-flags.ts';
import { loadDataSource } from './data/index.ts';
import type { DataSource } from '../shared/data/types.ts';
import { ConfigError } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import type { TrainingSnapshot } from './training-state.ts';
import { findResumeCheckpoint } from './checkpoint.ts';

/** Whether a run directory holds at least one checkpoint (valid or not). */
export function hasCheckpoints(runDir: string): boolean {
  const dir = join(runDir, 'checkpoints');
  return existsSync(dir) && readdirSync(dir).some((n) => /^\d{8}$/.test(n));
}

export interface RunStart {
  config: GanConfig;
  source: DataSource;
  snapshot?: TrainingSnapshot;
  /** Set on a resume: the checkpoint, the logged config changes, damaged checkpoints skipped. */
  resumedFrom: { dir: string; changes: string[]; skipped: { dir: string; reason: string }[] } | null;
}

/**
 * Resolves the run's config and starting state from the flags (--resume, --resume-from,
 * --auto-resume). `opts` (preset filled in) starts a new run; a resume applies only the flags
 * given on its command line to the checkpoint's config.
 */
export function startOrResume(v: FlagValues, opts: GanOptions, runDir: string, log: Logger): RunStart {
  const autoResume = v['auto-resume'] === true && hasCheckpoints(runDir);
  const resumePath = typeof v['resume-from'] === 'string' ? v['resume-from'] : v.resume || autoResume ? runDir : null;
  if (resumePath) {
    const found = findResumeCheckpoint(resumePath);
    for (const s of found.skipped) log.warn({ event: 'warning', code: 'CHECKPOINT_CORRUPT', dir: s.dir, reason: s.reason }, 'damaged checkpoint skipped; trying the previous one');
    const merged = mergeResumeConfig(found.loaded.manifest.config, explicitGanOptions(v));
    return { config: merged.config, source: loadDataSource(merged.config.train.dataset), snapshot: found.loaded.snapshot, resumedFrom: { dir: found.loaded.dir, changes: merged.changes, skipped: found.skipped } };
  }
  if (hasCheckpoints(runDir)) {
    throw new ConfigError('RUN_DIR_HAS_CHECKPOINTS', `${runDir} already holds checkpoints; pass --resume to continue that run, or choose another --run-dir`);
  }
  const source = loadDataSource(opts.dataset ?? 'mnist');
  return { config: resolveConfig(opts, source), source, resumedFrom: null };
}
