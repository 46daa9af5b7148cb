/**
 * Classifier-based image scores (the classifier: trainer/eval/classifier.ts).
 *
 * Inception Score (Salimans et al. 2016) with the project's MNIST classifier in place of
 * Inception: IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the samples. It is 1
 * when every sample gets the same class distribution and at most the number of classes (10) when
 * every sample is classified with certainty and the classes are equally frequent. Computed over
 * all samples in one split (the original averages 10 splits of 5,000; with 10 classes and
 * ~1,000 samples one split's bias is small, and the real-data ceiling is computed the same way).
 *
 * Fréchet distance (Heusel et al. 2017's FID with the classifier's penultimate features in place
 * of Inception's pool3): the Fréchet distance between Gaussians fitted to the features of the
 * samples and of a reference set (trainer/eval/linalg.ts).
 *
 * Class histogram: how many samples the classifier assigns to each class (its argmax) and the
 * ratio of the most to the least frequent class's share. A generator that makes mostly a few
 * classes can still score a fair IS; the ratio shows the imbalance directly (#17's target for
 * unconditional MNIST is max/min <= 1.5; held-out real digits are about 1.3).
 */
import { frechetDistance, gaussianStats, type GaussianStats } from './linalg.ts';

/** IS of rows x classes probabilities. */
export function inceptionScore(probs: ArrayLike<number>, rows: number, classes: number): number {
  if (rows < 1) throw new RangeError('inceptionScore needs at least one row');
  const marginal = new Float64Array(classes);
  for (let r = 0; r < rows; r++) for (let c = 0; c < classes; c++) marginal[c] += probs[r * classes + c];
  for (let c = 0; c < classes; c++) marginal[c] /= rows;
  let kl = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < classes; c++) {
      const p = probs[r * classes + c];
      if (p > 0) kl += p * (Math.log(p) - Math.log(marginal[c]));
    }
  }
  return Math.exp(kl / rows);
}

export function featureStats(features: ArrayLike<number>, rows: number, dim: number): GaussianStats {
  return gaussianStats(features, rows, dim);
}

/** Fréchet distance between the features of two sets (rows x dim each) or their stats. */
export function featureFrechetDistance(a: GaussianStats, b: GaussianStats): number {
  return frechetDistance(a, b);
}

export interface ClassHistogram {
  /** Samples per class (argmax of the classifier's probabilities). */
  counts: number[];
  /** Largest and smallest class share of the samples (0 when a class got no sample). */
  maxShare: number;
  minShare: number;
  /** maxShare / minShare: 1 for perfectly balanced classes, Infinity when a class is missing. */
  maxMinRatio: number;
}

/** The class histogram of rows x classes probabilities. */
export function classHistogram(probs: ArrayLike<number>, rows: number, classes: number): ClassHistogram {
  if (rows < 1) throw new RangeError('classHistogram needs at least one row');
  const counts = new Array<number>(classes).fill(0);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (probs[r * classes + c] > probs[r * classes + best]) best = c;
    counts[best]++;
  }
  const max = Math.max(...counts);
  const min = Math.min(...counts);
  return { counts, maxShare: max / rows, minShare: min / rows, maxMinRatio: min > 0 ? max / min : Infinity };
}
