/**
 * tf.tile, made cheap enough for tfjs-layers' LayerNormalization (dcgan's generator uses it).
 *
 * LayerNormalization tiles its mean, variance, gamma and beta to the input's full shape before
 * calling batchNormalization. Two costs follow, both far larger than the layer's arithmetic:
 *
 * - tfjs-core's Tile gradient adds one Slice per repetition: gamma [1,1,1,C] tiled to
 *   [N,H,W,C] is N*H*W slices and adds (19,000 kernel calls, ~3.5 s for one 16-row G shard on
 *   wasm). Tiling is "x broadcast along interleaved repetition axes", so its gradient is dy
 *   reshaped to [r0, x0, r1, x1, ...] summed over the r axes: one Sum.
 * - tfjs-backend-wasm's Tile kernel walks the output with a generic index loop (~4.7 ms for
 *   100k values); the same broadcast as a Multiply by ones is 15-45x faster and exact (x * 1 = x,
 *   NaN and -0 included).
 *
 * The gradient is registered for every backend (gradients are backend-independent); the kernel
 * only on wasm.
 */
import * as tf from '@tensorflow/tfjs-core';

type Info = tf.TensorInfo;

/**
 * The tiled output as a broadcast: x's dims (X) interleaved with the repetitions (R), size-1
 * entries dropped and neighbours of the same kind merged. E.g. x [16,7,7,1] tiled by
 * [1,1,1,128] is [X 784, R 128]: x as [784, 1] times ones [1, 128].
 */
export function tileAsBroadcast(xShape: number[], reps: number[]): { xShape: number[]; onesShape: number[]; repAxes: number[]; shape: number[] } {
  const dims: { kind: 'R' | 'X'; size: number }[] = [];
  const push = (kind: 'R' | 'X', size: number) => {
    if (size === 1) return;
    const last = dims[dims.length - 1];
    if (last && last.kind === kind) last.size *= size;
    else dims.push({ kind, size });
  };
  xShape.forEach((d, i) => {
    push('R', reps[i]);
    push('X', d);
  });
  if (dims.length === 0) dims.push({ kind: 'X', size: 1 });
  return {
    shape: dims.map((d) => d.size),
    xShape: dims.map((d) => (d.kind === 'X' ? d.size : 1)),
    onesShape: dims.map((d) => (d.kind === 'R' ? d.size : 1)),
    repAxes: dims.flatMap((d, i) => (d.kind === 'R' ? [i] : [])),
  };
}

let gradientRegistered = false;

/** Replaces tfjs-core's slice-per-repetition Tile gradient by one Sum. Idempotent. */
export function registerTileGradient(): void {
  if (gradientRegistered) return;
  tf.registerGradient({
    kernelName: 'Tile',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved;
      const { reps } = attrs as unknown as { reps: number[] };
      const b = tileAsBroadcast(x.shape, reps);
      const g = dy as tf.Tensor;
      return {
        x: () => (b.repAxes.length === 0 ? tf.reshape(g, x.shape) : tf.reshape(tf.sum(tf.reshape(g, b.shape), b.repAxes), x.shape)),
      };
    },
  });
  gradientRegistered = true;
}

let kernelRegistered = false;

/** Replaces the wasm Tile kernel by a broadcast Multiply with ones (numeric dtypes). Idempotent. */
export function registerWasmTile(): void {
  if (kernelRegistered) return;
  const original = tf.getKernel('Tile', 'wasm');
  const multiply = tf.getKernel('Multiply', 'wasm');
  const reshape = tf.getKernel('Reshape', 'wasm');
  const fill = tf.getKernel('Fill', 'wasm');
  if (!original || !multiply || !reshape || !fill) return;
  const kernelFunc: tf.KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as { inputs: { x: Info }; backend: { disposeData(id: object): boolean }; attrs: { reps: number[] } };
    const { x } = inputs;
    if (x.dtype !== 'float32' && x.dtype !== 'int32') return original.kernelFunc(args);
    const b = tileAsBroadcast(x.shape, attrs.reps);
    const run = (k: tf.KernelConfig, ins: Record<string, Info>, at: Record<string, unknown>) => k.kernelFunc({ inputs: ins, backend, attrs: at } as never) as Info;
    const xb = run(reshape, { x }, { shape: b.xShape });
    const ones = run(fill, {}, { shape: b.onesShape, value: 1, dtype: x.dtype });
    const prod = run(multiply, { a: xb, b: ones }, {});
    const out = run(reshape, { x: prod }, { shape: x.shape.map((d, i) => d * attrs.reps[i]) });
    for (const t of [xb, ones, prod]) backend.disposeData(t.dataId);
    return out;
  };
  tf.unregisterKernel('Tile', 'wasm');
  tf.registerKernel({ kernelName: 'Tile', backendName: 'wasm', kernelFunc });
  kernelRegistered = true;
}
