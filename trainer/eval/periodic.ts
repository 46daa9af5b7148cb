/**
 * --eval-every N on the coordinator: after every N-th G-step, G is evaluated on a few samples
 * and logged as an `eval` event (iteration + flatMetrics). Off by default; cheap when on
 * (500 samples by default: a fraction of a second for mlp2d and the MNIST MLPs on wasm; the
 * Fréchet reference statistics are computed once, at the first evaluation).
 *
 * Noise is drawn with the run's seed, so successive evaluations look at the same latent points.
 */
import type { GanConfig } from '../../shared/config.ts';
import type { DataSource } from '../../shared/data/types.ts';
import { ConfigError } from '../../shared/errors.ts';
import { Evaluator, flatMetrics, type GenerateFn } from './evaluate.ts';

export const DEFAULT_PERIODIC_SAMPLES = 500;

export interface PeriodicEvaluation {
  every: number;
  samples: number;
  evaluator: Evaluator;
}

/** The evaluation the coordinator runs every `every` iterations; null when `every` is 0. */
export async function createPeriodicEvaluation(
  config: GanConfig,
  source: DataSource,
  every: number,
  samples = DEFAULT_PERIODIC_SAMPLES,
  classifierDir?: string,
): Promise<PeriodicEvaluation | null> {
  if (!Number.isInteger(every) || every < 0) throw new ConfigError('BAD_EVAL_EVERY', `--eval-every must be a whole number >= 0; got ${every}`);
  if (!Number.isInteger(samples) || samples < 2) throw new ConfigError('BAD_SAMPLES', `--eval-samples must be a whole number >= 2; got ${samples}`);
  if (every === 0) return null;
  return { every, samples, evaluator: await Evaluator.create(config, source, { classifierDir }) };
}

/** Runs one evaluation; returns the `eval` event's fields (without `event`). */
export function runPeriodicEvaluation(p: PeriodicEvaluation, generate: GenerateFn, iteration: number, seed: number): Record<string, unknown> {
  const t0 = performance.now();
  const report = p.evaluator.evaluate(generate, { samples: p.samples, seed });
  return { iteration, ...flatMetrics(report), ms: Math.round(performance.now() - t0) };
}
