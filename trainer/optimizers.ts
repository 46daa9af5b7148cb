/**
 * Optimizers over flat Float32Array weights, in plain JS. The master weights live on the
 * coordinator outside tfjs, so the update is the same arithmetic whatever backend the
 * coordinator runs on, and its whole state (slots, step, bias-correction powers) can be read
 * out and restored bit for bit.
 */
import type { OptimizerConfig } from '../shared/config.ts';
import { GanError } from '../shared/errors.ts';
import { AdamKernel } from './adam-wasm.ts';

export interface OptimizerState {
  name: 'adam' | 'sgd';
  step: number;
  /** Running beta1^t and beta2^t for Adam's bias correction (products, not Math.pow, so exact). */
  beta1Power: number;
  beta2Power: number;
  /** adam: [m, v]; sgd: [velocity]. */
  slots: Float32Array[];
}

export interface Optimizer {
  /** Updates `weights` in place with the averaged gradient. */
  apply(weights: Float32Array, grad: Float32Array): void;
  state(): OptimizerState;
  restore(state: OptimizerState): void;
  /** Safe mid-run change (e.g. learning rate on resume). */
  setLearningRate(lr: number): void;
  /**
   * The weights this optimizer will update, moved to where it updates them fastest: a buffer of
   * its own holding a copy of `initial` (Adam's WebAssembly memory), or `initial` itself.
   * apply() takes any arrays; it is fastest with this one and gradientBuffer().
   */
  adopt(initial: Float32Array): Float32Array;
  /** A buffer to write the gradient into before apply() (no copy then), or null. */
  gradientBuffer(): Float32Array | null;
}

class Adam implements Optimizer {
  private m: Float32Array;
  private v: Float32Array;
  private step = 0;
  private b1p = 1;
  private b2p = 1;
  /** The SIMD kernel and its memory (m and v are its views), or null: the JS loop. */
  private readonly kernel: AdamKernel | null;
  constructor(private size: number, private cfg: OptimizerConfig) {
    this.kernel = AdamKernel.create(size);
    this.m = this.kernel ? this.kernel.m : new Float32Array(size);
    this.v = this.kernel ? this.kernel.v : new Float32Array(size);
  }
  adopt(initial: Float32Array): Float32Array {
    if (!this.kernel || initial.length !== this.size) return initial;
    this.kernel.w.set(initial);
    return this.kernel.w;
  }
  gradientBuffer(): Float32Array | null {
    return this.kernel?.g ?? null;
  }
  apply(w: Float32Array, g: Float32Array): void {
    const k = this.kernel;
    if (!k || w.length !== this.size || g.length !== this.size) return this.applyJs(w, g, 0);
    const { beta1, beta2, epsilon } = this.cfg;
    this.step++;
    this.b1p *= beta1;
    this.b2p *= beta2;
    const alpha = (this.cfg.lr * Math.sqrt(1 - this.b2p)) / (1 - this.b1p);
    // Arrays elsewhere are copied in and out (the kernel reads only its own memory).
    if (g !== k.g) k.g.set(g);
    if (w !== k.w) k.w.set(w);
    const done = k.run(alpha, beta1, beta2, 1 - beta1, 1 - beta2, epsilon);
    this.loop(k.w, k.g, alpha, done);
    if (w !== k.w) w.set(k.w);
  }
  /** The whole update in JS (no kernel, or arrays of another size). */
  private applyJs(w: Float32Array, g: Float32Array, from: number): void {
    const { beta1, beta2 } = this.cfg;
    this.step++;
    this.b1p *= beta1;
    this.b2p *= beta2;
    // Folding both bias corrections into the step size (Kingma & Ba, end of section 2).
    const alpha = (this.cfg.lr * Math.sqrt(1 - this.b2p)) / (1 - this.b1p);
    this.loop(w, g, alpha, from);
  }
  /** The update of values [from, w.length) in JS: the reference arithmetic the kernel reproduces. */
  private loop(w: Float32Array, g: Float32Array, alpha: number, from: number): void {
    const { beta1, beta2, epsilon } = this.cfg;
    const { m, v } = this;
    const c1 = 1 - beta1;
    const c2 = 1 - beta2;
    for (let i = from; i < w.length; i++) {
      const gi = g[i];
      const mi = (m[i] = beta1 * m[i] + c1 * gi);
      const vi = (v[i] = beta2 * v[i] + c2 * gi * gi);
      w[i] -= (alpha * mi) / (Math.sqrt(vi) + epsilon);
    }
  }
  state(): OptimizerState {
    return { name: 'adam', step: this.step, beta1Power: this.b1p, beta2Power: this.b2p, slots: [this.m.slice(), this.v.slice()] };
  }
  restore(s: OptimizerState): void {
    checkState(s, 'adam', 2, this.size);
    this.step = s.step;
    this.b1p = s.beta1Power;
    this.b2p = s.beta2Power;
    // Into the existing arrays: with the kernel they are views of its memory.
    this.m.set(s.slots[0]);
    this.v.set(s.slots[1]);
  }
  setLearningRate(lr: number): void {
    this.cfg = { ...this.cfg, lr };
  }
}

class SgdMomentum implements Optimizer {
  private vel: Float32Array;
  private step = 0;
  constructor(private size: number, private cfg: OptimizerConfig) {
    this.vel = new Float32Array(size);
  }
  adopt(initial: Float32Array): Float32Array {
    return initial;
  }
  gradientBuffer(): Float32Array | null {
    return null;
  }
  apply(w: Float32Array, g: Float32Array): void {
    this.step++;
    const { lr, momentum } = this.cfg;
    const vel = this.vel;
    for (let i = 0; i < w.length; i++) {
      const vi = (vel[i] = momentum * vel[i] - lr * g[i]);
      w[i] += vi;
    }
  }
  state(): OptimizerState {
    return { name: 'sgd', step: this.step, beta1Power: 1, beta2Power: 1, slots: [this.vel.slice()] };
  }
  restore(s: OptimizerState): void {
    checkState(s, 'sgd', 1, this.size);
    this.step = s.step;
    this.vel = s.slots[0].slice();
  }
  setLearningRate(lr: number): void {
    this.cfg = { ...this.cfg, lr };
  }
}

function checkState(s: OptimizerState, name: string, slots: number, size: number): void {
  if (s.name !== name || s.slots.length !== slots || s.slots.some((x) => x.length !== size)) {
    throw new GanError(
      'OPTIMIZER_STATE_MISMATCH',
      `optimizer state is for ${s.name} with ${s.slots.length} slot(s) of ${s.slots[0]?.length} values; this run uses ${name} over ${size} values`,
    );
  }
}

export function createOptimizer(size: number, cfg: OptimizerConfig): Optimizer {
  return cfg.name === 'adam' ? new Adam(size, cfg) : new SgdMomentum(size, cfg);
}
