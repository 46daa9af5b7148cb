/**
 * Convolution gradients for tfjs-backend-wasm, built from its forward convolution.
 *
 * tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter kernel, so a conv net cannot be trained on
 * it, and its Conv2DBackpropInput (the input gradient of conv2d, and the forward pass of
 * conv2dTranspose) is a plain C++ loop that runs ~8x slower than its XNNPACK Conv2D on the same
 * shapes. Both are linear maps that can be written as one forward convolution:
 *
 * - filter gradient: dW[kh,kw,ci,co] = sum_{n,oh,ow} x[n, oh*s+kh-top, ow*s+kw-left, ci] dy[n,oh,ow,co]
 *   is a stride-1 convolution of x with batch and channels swapped ([Cin,H,W,N]) by dy with
 *   batch and channels swapped ([OH,OW,N,Cout] as the filter), dilated by the stride.
 * - input gradient: instead of convolving the zero-dilated dy with the flipped filter (s^2 times
 *   the work, mostly on zeros), we split the flipped filter by output phase: the outputs whose
 *   row is r mod s see only taps r, r+s, ... . Stacking the s*s phase filters along the output
 *   channels gives one stride-1 convolution of dy with ceil(K/s) x ceil(K/s) taps and s*s*Cin
 *   output channels, and DepthToSpace(s) interleaves the phases into the image: the same number
 *   of multiply-adds as the direct form (plus a border of at most one phase row), no zeros.
 *
 * Everything runs as wasm kernels (XNNPACK Conv2D, Transpose, DepthToSpace, Slice); only the
 * rearranged filter is built in JavaScript (it is small). The functions are pure and
 * single-threaded, so the same inputs give the same bits in every wasm process: workers stay
 * bit-identical to each other and to gan-train. The summation order differs from the cpu
 * backend's, so results agree with it to float32 rounding, not bit for bit.
 */
import * as tf from '@tensorflow/tfjs-core';

type Info = tf.TensorInfo;
type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
interface WasmBackend {
  disposeData(dataId: object): boolean;
  readSync(dataId: object): Float32Array;
  makeOutput(shape: number[], dtype: 'float32'): Info;
  typedArrayFromHeap(info: Info): Float32Array;
}

/** Runs a wasm kernel directly (not through the engine: no tape, no scopes) and tracks temporaries. */
class KernelRunner {
  private readonly temps: Info[] = [];
  constructor(private readonly backend: WasmBackend) {}

  run(kernelName: string, inputs: Record<string, Info> | Info[], attrs: Record<string, unknown> = {}, keep = false): Info {
    const kernel = tf.getKernel(kernelName, 'wasm');
    if (!kernel) throw new Error(`wasm-conv-gradients: the wasm backend has no ${kernelName} kernel`);
    const out = kernel.kernelFunc({ inputs, backend: this.backend, attrs } as never) as Info;
    if (!keep) this.temps.push(out);
    return out;
  }

  /** Frees `t` with the other temporaries at the end. */
  adopt(t: Info): Info {
    this.temps.push(t);
    return t;
  }

  /** Takes `t` off the list of temporaries (it is the result). */
  keep(t: Info): void {
    const i = this.temps.indexOf(t);
    if (i >= 0) this.temps.splice(i, 1);
  }

  /**
   * Frees every temporary and returns `out`. Each temporary holds one reference (a Reshape
   * shares its input's data and adds a reference), so one disposeData per kernel call is exact.
   */
  finish(out: Info): Info {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
    return out;
  }

  abort(): void {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
  }
}

/** [before, after] padding along one axis; a negative amount means that many entries are cut off. */
interface Span { before: number; after: number }

/**
 * Cuts off negative padding with a Slice and returns the non-negative explicit padding left for
 * the convolution (XNNPACK pads for free, without copying the image).
 */
function trimNegative(r: KernelRunner, x: Info, h: Span, w: Span): { x: Info; pad: tf.backend_util.ExplicitPadding } {
  const cutTop = Math.max(0, -h.before), cutBottom = Math.max(0, -h.after);
  const cutLeft = Math.max(0, -w.before), cutRight = Math.max(0, -w.after);
  let out = x;
  if (cutTop || cutBottom || cutLeft || cutRight) {
    const [n, hh, ww, c] = x.shape;
    out = r.run('Slice', { x }, { begin: [0, cutTop, cutLeft, 0], size: [n, hh - cutTop - cutBottom, ww - cutLeft - cutRight, c] });
  }
  return {
    x: out,
    pad: [[0, 0], [Math.max(0, h.before), Math.max(0, h.after)], [Math.max(0, w.before), Math.max(0, w.after)], [0, 0]],
  };
}

function convInfo(xShape: number[], filterShape: number[], strides: number | [number, number], pad: Pad, dimRoundingMode?: 'floor' | 'round' | 'ceil') {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
}

interface FilterAttrs {
  strides: number | [number, number];
  pad: Pad;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

/** dW of y = conv2d(x, W): a dilated convolution of x^T (batch <-> channels) by dy^T. */
export function conv2DBackpropFilterWasm(args: { inputs: { x: Info; dy: Info }; backend: unknown; attrs: FilterAttrs }): Info {
  const { inputs, attrs } = args;
  const backend = args.backend as WasmBackend;
  if (attrs.dataFormat === 'NCHW') throw new Error('wasm Conv2DBackpropFilter supports dataFormat NHWC only');
  const info = convInfo(inputs.x.shape, attrs.filterShape, attrs.strides, attrs.pad, attrs.dimRoundingMode);
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, outHeight: oh, outWidth: ow, inHeight: h, inWidth: w } = info;
  const r = new KernelRunner(backend);
  try {
    // The taps of output row 0..oh-1 cover padded rows [0, (oh-1)*sh + kh); rows past the end are
    // padding (after > 0) or never read (after < 0, sliced off).
    const spanH = { before: info.padInfo.top, after: (oh - 1) * sh + kh - info.padInfo.top - h };
    const spanW = { before: info.padInfo.left, after: (ow - 1) * sw + kw - info.padInfo.left - w };
    const t = trimNegative(r, inputs.x, spanH, spanW);
    const xT = r.run('Transpose', { x: t.x }, { perm: [3, 1, 2, 0] }); // [Cin, H, W, N]
    const dyT = r.run('Transpose', { x: inputs.dy }, { perm: [1, 2, 0, 3] }); // [OH, OW, N, Cout]
    const g = r.run('Conv2D', { x: xT, filter: dyT }, { strides: [1, 1], pad: t.pad, dataFormat: 'NHWC', dilations: [sh, sw] }); // [Cin, KH, KW, Cout]
    return r.finish(r.run('Transpose', { x: g }, { perm: [1, 2, 0, 3] }, true));
  } catch (err) {
    r.abort();
    throw err;
  }
}

interface InputAttrs {
  strides: number | [number, number];
  pad: Pad;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  inputShape: [number, number, number, number];
}

/**
 * Writes the flipped taps of phase (rh, rw) of W [KH, KW, Cin, Cout] into dst, laid out as a
 * filter [T, U, Cout, outCh] at channels chan .. chan+Cin-1: dst[t, u, co, chan + ci] =
 * W[rh + (T-1-t)*s, rw + (U-1-u)*s, ci, co]. Taps past the kernel are left as they are (zero).
 */
function writePhaseTaps(src: Float32Array, shape: number[], s: number, rh: number, rw: number, T: number, U: number, dst: Float32Array, outCh: number, chan: number): void {
  const [kh, kw, cin, cout] = shape;
  for (let t = 0; t < T; t++) {
    const i = rh + (T - 1 - t) * s;
    if (i >= kh) continue;
    for (let u = 0; u < U; u++) {
      const j = rw + (U - 1 - u) * s;
      if (j >= kw) continue;
      const srcBase = (i * kw + j) * cin * cout;
      const dstBase = (t * U + u) * cout * outCh + chan;
      for (let ci = 0; ci < cin; ci++) {
        const sRow = srcBase + ci * cout;
        for (let co = 0; co < cout; co++) dst[dstBase + co * outCh + ci] = src[sRow + co];
      }
    }
  }
}

/** A zeroed float32 wasm tensor and a view of it; `fill` writes through views taken after allocation. */
function newFilter(backend: WasmBackend, shape: number[], filter: Info, fill: (src: Float32Array, dst: Float32Array) => void): Info {
  const out = backend.makeOutput(shape, 'float32');
  // Views only after makeOutput: allocating may grow (and detach) the wasm heap.
  const dst = backend.typedArrayFromHeap(out);
  dst.fill(0);
  fill(backend.typedArrayFromHeap(filter), dst);
  return out;
}

/** [N*M, Mw, s, s*C] -> [N*M, s, Mw, s*C] = [N, M*s, Mw*s, C]: DepthToSpace(s) as one 4-D transpose (the wasm DepthToSpace kernel is ~7x slower). */
function interleavePhases(r: KernelRunner, y: Info, s: number, cin: number): Info {
  const [n, mh, mw] = y.shape;
  if (s === 1) return y;
  const y4 = r.run('Reshape', { x: y }, { shape: [n * mh, mw, s, s * cin] });
  const yt = r.run('Transpose', { x: y4 }, { perm: [0, 2, 1, 3] });
  return r.run('Reshape', { x: yt }, { shape: [n, mh * s, mw * s, cin] });
}

const CONV_STRIDE_1 = { strides: [1, 1], dataFormat: 'NHWC', dilations: [1, 1] };

/**
 * dx of y = conv2d(x, W) (also conv2dTranspose's forward pass) from stride-1 convolutions of dy.
 * Row i of dx is phase p = i mod s of block b = floor(i/s); with i + top = m*s + r, it reads
 * dy[m - t] W[r + t*s] for t = 0 .. ceil((K - r)/s) - 1, where r = (p + top) mod s and
 * m = b + floor((p + top)/s).
 *
 * - Per phase (dcgan's case: the image divides into whole blocks, Cin >= 8): one convolution per
 *   phase with exactly its own taps and rows, concatenated along channels and interleaved.
 *   No multiply-add is wasted.
 * - Otherwise: one convolution with every phase's taps stacked along the output channels over a
 *   common block range (padded with zero taps where phases have fewer), interleaved and cropped:
 *   at most one extra block row and column and ceil(K/s)*s - K zero taps.
 *
 * Different strides per axis and NCHW go to the backend's own kernel.
 */
export function makeConv2DBackpropInputWasm(fallback: tf.KernelFunc) {
  return (args: { inputs: { dy: Info; filter: Info }; backend: unknown; attrs: InputAttrs }): Info => {
    const { inputs, attrs } = args;
    const backend = args.backend as WasmBackend;
    const info = convInfo(attrs.inputShape, inputs.filter.shape, attrs.strides, attrs.pad, attrs.dimRoundingMode);
    if (attrs.dataFormat === 'NCHW' || info.strideHeight !== info.strideWidth) return fallback(args as never) as Info;
    const s = info.strideHeight;
    const { filterHeight: kh, filterWidth: kw, inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, batchSize: n, inChannels: cin } = info;
    const { top, left } = info.padInfo;
    const fShape = inputs.filter.shape;
    const r = new KernelRunner(backend);
    try {
      if (h % s === 0 && w % s === 0 && kh >= s && kw >= s && cin >= 8) {
        const parts: Info[] = [];
        for (let ph = 0; ph < s; ph++) {
          const rh = (ph + top) % s, offH = Math.floor((ph + top) / s), T = Math.ceil((kh - rh) / s);
          for (let pw = 0; pw < s; pw++) {
            const rw = (pw + left) % s, offW = Math.floor((pw + left) / s), U = Math.ceil((kw - rw) / s);
            const v = r.adopt(newFilter(backend, [T, U, fShape[3], cin], inputs.filter, (src, dst) => writePhaseTaps(src, fShape, s, rh, rw, T, U, dst, cin, 0)));
            // Block b reads dy rows b+off-T+1 .. b+off: front padding T-1-off, h/s blocks.
            const spanH = { before: T - 1 - offH, after: h / s - oh + offH };
            const spanW = { before: U - 1 - offW, after: w / s - ow + offW };
            const t = trimNegative(r, inputs.dy, spanH, spanW);
            parts.push(r.run('Conv2D', { x: t.x, filter: v }, { ...CONV_STRIDE_1, pad: t.pad })); // [N, h/s, w/s, Cin]
          }
        }
        const y = parts.length === 1 ? parts[0] : r.run('Concat', parts as never, { axis: 3 });
        const out = interleavePhases(r, y, s, cin);
        r.keep(out);
        return r.finish(out);
      }
      const T = Math.ceil(kh / s), U = Math.ceil(kw / s);
      // Blocks m0 .. m0+M-1 cover every row; block m reads dy rows m-T+1 .. m.
      const m0h = Math.floor(top / s), mh = Math.floor((h - 1 + top) / s) - m0h + 1;
      const m0w = Math.floor(left / s), mw = Math.floor((w - 1 + left) / s) - m0w + 1;
      const outCh = s * s * cin;
      const wp = r.adopt(newFilter(backend, [T, U, fShape[3], outCh], inputs.filter, (src, dst) => {
        for (let rh = 0; rh < s; rh++) for (let rw = 0; rw < s; rw++) writePhaseTaps(src, fShape, s, rh, rw, T, U, dst, outCh, (rh * s + rw) * cin);
      }));
      const t = trimNegative(r, inputs.dy, { before: T - 1 - m0h, after: mh + m0h - oh }, { before: U - 1 - m0w, after: mw + m0w - ow });
      const y = interleavePhases(r, r.run('Conv2D', { x: t.x, filter: wp }, { ...CONV_STRIDE_1, pad: t.pad }), s, cin); // [N, mh*s, mw*s, Cin]
      const cropTop = top - m0h * s, cropLeft = left - m0w * s;
      if (cropTop === 0 && cropLeft === 0 && y.shape[1] === h && y.shape[2] === w) {
        r.keep(y);
        return r.finish(y);
      }
      const crop = r.run('StridedSlice', { x: y }, {
        begin: [0, cropTop, cropLeft, 0], end: [n, cropTop + h, cropLeft + w, cin], strides: [1, 1, 1, 1],
        beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0,
      }, true);
      return r.finish(crop);
    } catch (err) {
      r.abort();
      throw err;
    }
  };
}

let registered = false;
let builtinInput: tf.KernelFunc | null = null;

/** tfjs-backend-wasm's own Conv2DBackpropInput (a direct loop), for comparison in bench/conv.ts. */
export function builtinConv2DBackpropInput(): tf.KernelFunc | null {
  return builtinInput;
}

/**
 * Registers Conv2DBackpropFilter on wasm and replaces its Conv2DBackpropInput with the faster
 * form above. Call after tf.setBackend('wasm') resolved (kernels' setup ran). Idempotent.
 */
export function registerWasmConvGradients(): void {
  if (registered) return;
  const original = tf.getKernel('Conv2DBackpropInput', 'wasm');
  if (!original || !tf.getKernel('Conv2D', 'wasm') || !tf.getKernel('DepthToSpace', 'wasm')) return;
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) {
    tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: conv2DBackpropFilterWasm as unknown as tf.KernelFunc });
  }
  const fallback = original.kernelFunc;
  builtinInput = fallback;
  tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
  tf.registerKernel({ kernelName: 'Conv2DBackpropInput', backendName: 'wasm', kernelFunc: makeConv2DBackpropInputWasm(fallback) as unknown as tf.KernelFunc });
  registered = true;
}
