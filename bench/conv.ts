/**
 * npm run bench:conv: how fast dcgan's convolutions and training step run on the wasm backend.
 *
 * 1. The raw kernels at dcgan's shapes (a shard of --rows rows; D sees 2x rows in its phase):
 *    Conv2D (XNNPACK), Conv2DBackpropInput and Conv2DBackpropFilter as registered by
 *    shared/wasm-conv-gradients.ts, and tfjs-backend-wasm's own Conv2DBackpropInput for
 *    comparison, plus the 64x784 @ 784x256 matMul the design notes quote (6-9 GFLOP/s).
 * 2. One shard of a dcgan training step, D phase and G phase (GanReplica.computeShard, what a
 *    worker runs), in ms and GFLOP/s, where FLOPs are 2 x the multiply-adds of the convolutions
 *    and dense layers the step needs (elementwise work not counted), and the kernels the time
 *    went to (top-level kernel calls; the conv-gradient kernels include the Conv2D/Transpose
 *    calls they make). "ran" counts every conv/matmul kernel tfjs actually issued: tfjs's fused
 *    conv2d gradient computes every input's gradient, so D's filter gradients are computed and
 *    dropped in the G phase (and the image gradient of D's first layer in the D phase).
 *
 *   npm run bench:conv
 *   npm run bench:conv -- --rows 32 --reps 10 --backend cpu
 */
import { parseArgs } from 'node:util';
import { cpus, loadavg } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../shared/backend.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { initialWeights } from '../shared/models.ts';
import { GanReplica } from '../shared/replica.ts';
import type { Phase } from '../shared/protocol.ts';
import { builtinConv2DBackpropInput } from '../shared/wasm-conv-gradients.ts';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '16' },
    reps: { type: 'string', default: '10' },
    backend: { type: 'string', default: 'wasm' },
    json: { type: 'boolean', default: false },
  },
});
const rows = Number(args.rows);
const reps = Number(args.reps);
const report = await initBackend(args.backend as BackendChoice);

/** Median ms of fn over reps runs after 2 warm-up runs; fn's result is read back (synchronous). */
function timeMs(fn: () => unknown, n = reps): number {
  const run = () => {
    const r = fn();
    if (r instanceof tf.Tensor) {
      r.dataSync();
      r.dispose();
    }
  };
  run();
  run();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    run();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)];
}

const gflops = (flops: number, ms: number) => flops / ms / 1e6;
const lines: string[] = [];
const out = (s: string) => {
  lines.push(s);
  if (!args.json) console.log(s);
};
const results: Record<string, unknown> = { backend: report.name, rows, reps, cpus: cpus().length, loadavg: loadavg() };

out(`backend ${report.name}, ${cpus().length} cpus, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; shard of ${rows} rows, median of ${reps}`);
out('');
out('| kernel (dcgan shape) | ms | GFLOP/s |');
out('| --- | ---: | ---: |');
const kernels: { name: string; ms: number; gflops: number }[] = [];
const row = (name: string, flops: number, fn: () => tf.Tensor) => {
  const ms = timeMs(fn);
  kernels.push({ name, ms, gflops: gflops(flops, ms) });
  out(`| ${name} | ${ms.toFixed(2)} | ${gflops(flops, ms).toFixed(1)} |`);
};
// D's layers see the shard's real and fake rows together (2 x rows); G's see rows.
const layers = [
  { name: 'D conv1 28x28x1 -> 14x14x64', n: 2 * rows, x: [28, 28, 1], f: [4, 4, 1, 64] },
  { name: 'D conv2 14x14x64 -> 7x7x128', n: 2 * rows, x: [14, 14, 64], f: [4, 4, 64, 128] },
  { name: 'G up1 7x7x128 -> 14x14x64', n: rows, x: [14, 14, 64], f: [4, 4, 64, 128] },
  { name: 'G up2 14x14x64 -> 28x28x1', n: rows, x: [28, 28, 1], f: [4, 4, 1, 64] },
];
const builtin = report.name === 'wasm' ? builtinConv2DBackpropInput() : null;
for (const l of layers) {
  const xShape = [l.n, ...l.x] as [number, number, number, number];
  const x = tf.randomNormal(xShape) as tf.Tensor4D;
  const f = tf.randomNormal(l.f as [number, number, number, number]) as tf.Tensor4D;
  const y = tf.conv2d(x, f, 2, 'same');
  const flops = 2 * y.size * l.f[0] * l.f[1] * l.f[2];
  const up = l.name.startsWith('G');
  // The filter changes every step in training, so XNNPACK's packed filter is rebuilt each time:
  // time with a fresh filter tensor (a copy), as a training step sees it.
  const fresh = () => tf.add(f, 0) as tf.Tensor4D;
  if (!up) row(`${l.name}: Conv2D (forward)`, flops, () => tf.tidy(() => tf.conv2d(x, fresh(), 2, 'same')));
  row(`${l.name}: Conv2DBackpropInput (${up ? 'forward, ' : ''}dx)`, flops, () => tf.tidy(() => tf.conv2dTranspose(y, fresh(), xShape, 2, 'same')));
  if (builtin) {
    row(`${l.name}: tfjs-backend-wasm's own Conv2DBackpropInput`, flops, () =>
      tf.tidy(() => tf.engine().makeTensorFromTensorInfo(builtin({ inputs: { dy: y, filter: fresh() }, backend: tf.backend(), attrs: { strides: 2, pad: 'same', dataFormat: 'NHWC', inputShape: xShape } } as never) as tf.TensorInfo)),
    );
  }
  row(`${l.name}: Conv2DBackpropFilter (dW)`, flops, () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy: y }, { strides: 2, pad: 'same', dataFormat: 'NHWC', filterShape: l.f }) as tf.Tensor);
  if (up) row(`${l.name}: Conv2D (d input)`, flops, () => tf.tidy(() => tf.conv2d(x, fresh(), 2, 'same')));
  tf.dispose([x, f, y]);
}
{
  const a = tf.randomNormal([64, 784]);
  const b = tf.randomNormal([784, 256]);
  row('matMul 64x784 @ 784x256 (reference)', 2 * 64 * 784 * 256, () => tf.tidy(() => tf.matMul(a, tf.add(b, 0))));
  tf.dispose([a, b]);
}
results.kernels = kernels;

// ---- one training shard --------------------------------------------------------------------
/** Multiply-adds per row of each dcgan layer (unconditional; noise 100). */
const MAC = {
  gDense: 100 * 7 * 7 * 128,
  gUp1: 7 * 7 * 128 * 4 * 4 * 64,
  gUp2: 14 * 14 * 64 * 4 * 4 * 1,
  dConv1: 14 * 14 * 64 * 4 * 4 * 1,
  dConv2: 7 * 7 * 128 * 4 * 4 * 64,
  dDense: 7 * 7 * 128,
};
const gFwd = MAC.gDense + MAC.gUp1 + MAC.gUp2;
const dFwd = MAC.dConv1 + MAC.dConv2 + MAC.dDense;
/** FLOPs a phase needs (2 x multiply-adds; each layer's backward = dW + dx where dx is needed). */
const needed: Record<Phase, number> = {
  // G forward (no gradient) on rows; D forward and backward (dW everywhere, dx above conv1) on 2 x rows.
  D: 2 * (rows * gFwd + 2 * rows * (dFwd + dFwd + MAC.dConv2 + MAC.dDense)),
  // G forward, D forward, D backward (dx only), G backward (dW everywhere, dx above the dense layer).
  G: 2 * rows * (gFwd + dFwd + dFwd + gFwd + MAC.gUp1 + MAC.gUp2),
};

/** Times top-level kernel calls by name, and counts the FLOPs of conv/matmul kernels issued. */
const kernelMs = new Map<string, number>();
let ranFlops = 0;
let depth = 0;
const convFlops = (name: string, inputs: Record<string, tf.TensorInfo>, attrs: Record<string, unknown>): number => {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  switch (name) {
    case 'Conv2D':
    case 'FusedConv2D': {
      const [kh, kw, cin, cout] = inputs.filter.shape;
      const info = tf.backend_util.computeConv2DInfo(inputs.x.shape as never, inputs.filter.shape as never, attrs.strides as never, (attrs.dilations ?? 1) as never, attrs.pad as never);
      return 2 * info.batchSize * info.outHeight * info.outWidth * cout * kh * kw * cin;
    }
    case 'Conv2DBackpropInput': {
      const [kh, kw, cin] = inputs.filter.shape;
      return 2 * size(inputs.dy.shape) * kh * kw * cin;
    }
    case 'Conv2DBackpropFilter': {
      const [kh, kw, cin] = attrs.filterShape as number[];
      return 2 * size(inputs.dy.shape) * kh * kw * cin;
    }
    case 'BatchMatMul':
    case '_FusedMatMul': {
      const a = inputs.a.shape, b = inputs.b.shape;
      const k = attrs.transposeA ? a[a.length - 2] : a[a.length - 1];
      return 2 * (size(a) / k) * (attrs.transposeB ? b[b.length - 2] : b[b.length - 1]);
    }
    default:
      return 0;
  }
};
for (const k of tf.getKernelsForBackend(tf.getBackend())) {
  const f = k.kernelFunc;
  tf.unregisterKernel(k.kernelName, k.backendName);
  tf.registerKernel({
    ...k,
    setupFunc: undefined, // already ran when the backend started
    kernelFunc: (a) => {
      if (depth > 0) return f(a);
      depth++;
      const t0 = performance.now();
      try {
        return f(a);
      } finally {
        depth--;
        kernelMs.set(k.kernelName, (kernelMs.get(k.kernelName) ?? 0) + performance.now() - t0);
        const { inputs, attrs } = a as unknown as { inputs: Record<string, tf.TensorInfo>; attrs: Record<string, unknown> };
        ranFlops += convFlops(k.kernelName, inputs, attrs);
      }
    },
  });
}

const source = loadDataSource('mnist');
const config = resolveConfig({ model: 'dcgan', batchSize: rows, shards: 1 }, source);
const replica = new GanReplica(config);
replica.setWeights('G', initialWeights(replica.layout.G, 1, 1));
replica.setWeights('D', initialWeights(replica.layout.D, 1, 2));
if (source.kind !== 'finite') throw new Error('mnist is a finite data set');
const real = source.train.x.slice(0, rows * 784); // the first digits: the values do not change the timing
const steps: Record<string, unknown>[] = [];
out('');
out(`| dcgan shard (${rows} rows) | ms | needed GFLOP | GFLOP/s | ran GFLOP | top kernels (ms) |`);
out('| --- | ---: | ---: | ---: | ---: | --- |');
for (const phase of ['D', 'G'] as const) {
  let seed = 1;
  const shard = () => replica.computeShard(phase, { shardId: 0, seed: seed++, rows, real });
  shard();
  kernelMs.clear();
  ranFlops = 0;
  const ms = timeMs(shard);
  const calls = reps + 2;
  const top = [...kernelMs.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${k} ${(v / calls).toFixed(1)}`).join(', ');
  const step = { phase, ms, neededGflop: needed[phase] / 1e9, gflops: gflops(needed[phase], ms), ranGflop: ranFlops / calls / 1e9, kernelsMs: Object.fromEntries([...kernelMs].map(([k, v]) => [k, v / calls])) };
  steps.push(step);
  out(`| ${phase} phase | ${ms.toFixed(1)} | ${step.neededGflop.toFixed(3)} | ${step.gflops.toFixed(1)} | ${step.ranGflop.toFixed(3)} | ${top} |`);
}
results.steps = steps;
const iter = (steps as { ms: number }[]).reduce((a, s) => a + s.ms, 0);
out('');
out(`one iteration (1 D-step + 1 G-step) of one ${rows}-row shard on one core: ${iter.toFixed(1)} ms; a batch of 64 in shards of ${rows}: ~${((iter * 64) / rows).toFixed(0)} ms of compute (divided among the workers)`);
results.iterationMs = iter;
if (args.json) console.log(JSON.stringify(results, null, 2));
replica.dispose();
