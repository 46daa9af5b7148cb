/**
 * A generator to evaluate, from either artifact a run leaves behind:
 *
 * - an export (<run-dir>/export: gan.json + generator/model.json, trainer/export.ts), loaded as a
 *   LayersModel; a run directory holding export/ is accepted too;
 * - a checkpoint (a run directory, its checkpoints/ or one checkpoint directory,
 *   trainer/checkpoint.ts): a GanReplica built from the manifest's config with G's weights
 *   from the checkpoint (verified against their sha256).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { findResumeCheckpoint } from './checkpoint.ts';
import type { GanConfig } from '../shared/config.ts';
import { loadExportedModel, META_FILE, readExportMeta } from './export.ts';
import { GanReplica } from '../shared/replica.ts';
import type { GenerateFn } from './eval/evaluate.ts';

export interface LoadedGenerator {
  config: GanConfig;
  iteration: number;
  /** What was loaded, for the report header. */
  origin: { kind: 'export' | 'checkpoint'; path: string };
  generate: GenerateFn;
  dispose(): void;
}

/** The export directory `path` names (itself, or its export/ subdirectory), or null. */
export function exportDirOf(path: string): string | null {
  const abs = resolve(path);
  if (existsSync(join(abs, META_FILE))) return abs;
  if (existsSync(join(abs, 'export', META_FILE))) return join(abs, 'export');
  return null;
}

export async function loadGeneratorFromExport(path: string): Promise<LoadedGenerator> {
  const dir = exportDirOf(path) ?? resolve(path);
  const meta = readExportMeta(dir);
  const g = await loadExportedModel(join(dir, 'generator'));
  const { noiseDim, numClasses } = meta.config.model;
  const generate: GenerateFn = (z, rows, labels) => {
    let out!: Float32Array;
    // Results leave tf.tidy through the closure (see tidyOut in shared/replica.ts).
    tf.tidy(() => {
      const inputs: tf.Tensor[] = [tf.tensor2d(z, [rows, noiseDim])];
      if (numClasses > 0) inputs.push(tf.oneHot(tf.tensor1d(labels ?? new Int32Array(rows), 'int32'), numClasses));
      out = (g.apply(inputs) as tf.Tensor).dataSync() as Float32Array;
    });
    return out;
  };
  return { config: meta.config, iteration: meta.iteration, origin: { kind: 'export', path: dir }, generate, dispose: () => g.dispose() };
}

export function loadGeneratorFromCheckpoint(path: string): LoadedGenerator {
  const { loaded } = findResumeCheckpoint(path);
  const config = loaded.manifest.config;
  const replica = new GanReplica(config);
  // With --g-ema the checkpoint's moving average is the generator the run exports.
  replica.setWeights('G', loaded.snapshot.gEma ?? loaded.snapshot.weights.G);
  return {
    config,
    iteration: loaded.snapshot.iteration,
    origin: { kind: 'checkpoint', path: loaded.dir },
    generate: (z, rows, labels) => replica.generate(z, rows, labels),
    dispose: () => replica.dispose(),
  };
}
