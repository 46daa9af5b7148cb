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
