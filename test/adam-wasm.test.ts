import { describe, expect, it } from 'vitest';
import { AdamKernel } from '../trainer/adam-wasm.ts';
import { createOptimizer } from '../trainer/optimizers.ts';
import type { OptimizerConfig } from '../shared/config.ts';

/** The reference: Adam's JS loop as trainer/optimizers.ts had it before the kernel. */
function referenceAdam(n: number, cfg: { lr: number; beta1: number; beta2: number; epsilon: number }) {
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  let b1p = 1;
  let b2p = 1;
  return {
    m,
    v,
    apply(w: Float32Array, g: Float32Array) {
      const { beta1, beta2, epsilon } = cfg;
      b1p *= beta1;
      b2p *= beta2;
      const alpha = (cfg.lr * Math.sqrt(1 - b2p)) / (1 - b1p);
      const c1 = 1 - beta1;
      const c2 = 1 - beta2;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i]!;
        const mi = (m[i] = beta1 * m[i]! + c1 * gi);
        const vi = (v[i] = beta2 * v[i]! + c2 * gi * gi);
        w[i]! -= (alpha * mi) / (Math.sqrt(vi) + epsilon);
      }
    },
  };
}

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

describe('Adam on the WebAssembly SIMD kernel', () => {
  it('is available under Node', () => {
    expect(AdamKernel.create(4)).not.toBeNull();
  });

  for (const n of [1, 2, 7, 10_001]) {
    it(`gives the JS loop's bits (weights and both slots), ${n} values, in its own buffers and in any arrays`, () => {
      const cfg = { name: 'adam', lr: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-8, momentum: 0 } as unknown as OptimizerConfig;
      const ref = referenceAdam(n, cfg as unknown as { lr: number; beta1: number; beta2: number; epsilon: number });
      const own = createOptimizer(n, cfg);
      const plain = createOptimizer(n, cfg);
      const w0 = new Float32Array(n).map((_, i) => Math.sin(i + 1) * 0.05);
      const wRef = w0.slice();
      const wOwn = own.adopt(w0.slice());
      const wPlain = w0.slice();
      const gOwn = own.gradientBuffer() ?? new Float32Array(n);
      for (let step = 0; step < 12; step++) {
        // Ordinary, subnormal (x 1e-40), huge and zero gradients.
        const g = new Float32Array(n).map((_, i) => {
          const r = Math.sin(i * 1.7 + step * 0.3);
          return i % 11 === 3 ? r * 1e-40 : i % 13 === 5 ? r * 1e30 : i % 17 === 0 ? 0 : r * 1e-3;
        });
        ref.apply(wRef, g);
        gOwn.set(g);
        own.apply(wOwn, gOwn);
        plain.apply(wPlain, g);
      }
      expect(same(wOwn, wRef)).toBe(true);
      expect(same(wPlain, wRef)).toBe(true);
      for (const o of [own, plain]) {
        const s = o.state();
        expect(same(s.slots[0]!, ref.m)).toBe(true);
        expect(same(s.slots[1]!, ref.v)).toBe(true);
      }
    });
  }

  it('restores a state into its own memory and carries on identically', () => {
    const cfg = { name: 'adam', lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, momentum: 0 } as unknown as OptimizerConfig;
    const n = 101;
    const a = createOptimizer(n, cfg);
    const w = a.adopt(new Float32Array(n).fill(0.5));
    const g = new Float32Array(n).map((_, i) => (i - 50) * 1e-3);
    a.apply(w, g);
    const b = createOptimizer(n, cfg);
    b.restore(a.state());
    const wb = b.adopt(w.slice());
    a.apply(w, g);
    b.apply(wb, g);
    expect(same(w, wb)).toBe(true);
  });
});
