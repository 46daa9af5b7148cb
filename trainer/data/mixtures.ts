import { Rng } from '../../shared/rng.ts';
import type { MixtureSpec } from '../../shared/data/types.ts';

/** The 8-mode ring of the unrolled-GAN / VEEGAN papers: radius 2, tight modes. */
export function ring8(): MixtureSpec {
  const k = 8;
  const means = new Float32Array(k * 2);
  for (let i = 0; i < k; i++) {
    const a = (2 * Math.PI * i) / k;
    means[2 * i] = 2 * Math.cos(a);
    means[2 * i + 1] = 2 * Math.sin(a);
  }
  return { name: 'ring8', means, k, std: 0.02 };
}

/** The 5x5 grid of modes at {-4,-2,0,2,4}^2, x in the outer loop. */
export function grid25(): MixtureSpec {
  const coords = [-4, -2, 0, 2, 4];
  const means = new Float32Array(25 * 2);
  let i = 0;
  for (const x of coords) {
    for (const y of coords) {
      means[i++] = x;
      means[i++] = y;
    }
  }
  return { name: 'grid25', means, k: 25, std: 0.05 };
}

/**
 * n points (n * 2 floats) from the mixture. Per point: component first, then the x and y
 * normals, all from one Rng, so the output depends only on (spec, n, seed).
 */
export function sampleMixture(m: MixtureSpec, n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const c = rng.nextInt(m.k);
    out[2 * i] = m.means[2 * c] + m.std * rng.normal();
    out[2 * i + 1] = m.means[2 * c + 1] + m.std * rng.normal();
  }
  return out;
}
