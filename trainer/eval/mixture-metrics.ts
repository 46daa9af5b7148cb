/**
 * Mode coverage for 2-D Gaussian mixtures, with PacGAN's definitions (Lin et al. 2018,
 * after VEEGAN): a sample is high quality when it lies within 3 standard deviations of its
 * nearest mode (for an isotropic 2-D Gaussian, 98.9% of real samples are); the mode histogram
 * counts high-quality samples by nearest mode; reverse KL is KL(histogram || uniform).
 *
 * A mode counts as captured when it holds at least `captureFraction` (default 0.2) of its uniform
 * share of the samples: 20 of 2,500 for grid25, 62.5 of 2,500 for ring8. PacGAN's released
 * evaluation code counts a mode with a single high-quality sample; the threshold keeps a handful
 * of stray points between modes from counting as a captured mode (`modesAny` reports the loose
 * count too).
 */
import type { MixtureSpec } from '../../shared/data/types.ts';

export interface MixtureMetrics {
  samples: number;
  modesCaptured: number;
  /** Modes with at least one high-quality sample (the count in PacGAN's evaluation code). */
  modesAny: number;
  modes: number;
  /** Share of samples within 3 std of their nearest mode. */
  highQuality: number;
  /** KL(mode histogram of the high-quality samples || uniform); NaN when no sample is high quality. */
  reverseKl: number;
  /** High-quality samples per mode. */
  counts: number[];
}

/** The metrics of `n` 2-D points (2n floats) against mixture `m`. */
export function mixtureMetrics(points: Float32Array, n: number, m: MixtureSpec, captureFraction = 0.2): MixtureMetrics {
  const counts = new Array<number>(m.k).fill(0);
  const radius2 = (3 * m.std) ** 2;
  let good = 0;
  for (let i = 0; i < n; i++) {
    const x = points[2 * i];
    const y = points[2 * i + 1];
    let best = 0;
    let bestD = Infinity;
    for (let j = 0; j < m.k; j++) {
      const dx = x - m.means[2 * j];
      const dy = y - m.means[2 * j + 1];
      const d = dx * dx + dy * dy;
      if (d < bestD) {
        bestD = d;
        best = j;
      }
    }
    if (bestD <= radius2) {
      counts[best]++;
      good++;
    }
  }
  const threshold = (captureFraction * n) / m.k;
  const modesCaptured = counts.filter((c) => c > 0 && c >= threshold).length;
  const modesAny = counts.filter((c) => c > 0).length;
  let reverseKl = good > 0 ? 0 : NaN;
  if (good > 0) {
    for (const c of counts) {
      if (c > 0) {
        const p = c / good;
        reverseKl += p * Math.log(p * m.k);
      }
    }
  }
  return { samples: n, modesCaptured, modesAny, modes: m.k, highQuality: good / Math.max(1, n), reverseKl, counts };
}
