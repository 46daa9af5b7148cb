/**
 * Compute backend selection: tensorflow (tfjs-node, native) -> wasm -> cpu.
 * tfjs-node is an optionalDependency whose install downloads libtensorflow; where that failed
 * the import throws and we fall through. All code stays on the shared tfjs API (no tf.node.*),
 * so every backend runs the same model code.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// Gradient functions are registered by side effect. tfjs-core's own register_all_gradients is
// not importable as ESM under Node (directory imports), but tfjs-layers' Node bundle registers
// them all; without it tf.variableGrads fails with "gradient function not found".
import '@tensorflow/tfjs-layers';
import { ConfigError } from './errors.ts';
import { registerTileGradient, registerWasmTile } from './tile.ts';
import { registerWasmConvGradients } from './wasm-conv-gradients.ts';

export const BACKENDS = ['tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];
export type BackendChoice = BackendName | 'auto';

export interface BackendReport {
  name: BackendName;
  /** Why earlier candidates were skipped, for the start-up log line. */
  skipped: { name: BackendName; reason: string }[];
}

/**
 * The Emscripten glue in tfjs-backend-wasm installs process-wide uncaughtException and
 * unhandledRejection handlers that rethrow, so any later crash prints the module's whole minified
 * source instead of our error. We drop the handlers it added and keep our own error reporting.
 */
async function withoutNewProcessHandlers<T>(fn: () => Promise<T>): Promise<T> {
  // In a browser tab (the /join page's worker) there is no process and nothing to undo.
  if (typeof process === 'undefined' || typeof process.listeners !== 'function') return fn();
  const events = ['uncaughtException', 'unhandledRejection'] as const;
  type Listener = (...args: unknown[]) => void;
  const listeners = (e: (typeof events)[number]) => process.listeners(e as 'uncaughtException') as Listener[];
  const before = new Map(events.map((e) => [e, new Set(listeners(e))]));
  try {
    return await fn();
  } finally {
    for (const e of events) {
      for (const l of listeners(e)) {
        if (!before.get(e)!.has(l)) process.removeListener(e, l);
      }
    }
  }
}

/**
 * tfjs-backend-wasm's BatchMatMul is 10-15x slower when asked to read an operand transposed
 * than when given the operand already transposed (its transposed path walks memory with a large
 * stride). Backward passes ask for exactly that (dW = x^T dy, dx = dy W^T), which made it ~75%
 * of a training step's kernel time. We re-register the kernel so a transposed operand is first
 * materialised with the wasm Transpose kernel. Results change in the last bits (another
 * summation order) but stay a pure function of the inputs, so every wasm process still computes
 * the same numbers and bit-identity across workers holds. Idempotent.
 */
let matMulPatched = false;

/**
 * For a·b^T (a [.., m, k], b [.., n, k]; the backward pass's dx = dy·W^T, with W the large
 * operand): whether computing (b·a^T)^T moves fewer values through Transpose than
 * materialising b^T. Both products sum over k in the same order and a product of two floats
 * commutes exactly, so the bits are the same (test/backend.test.ts checks it); the gain is the
 * fixed cost of a small shard: with 4-16 rows against mlp-small's 784x512 layer, 1.5-2 ms
 * instead of 7-9 ms under load.
 */
export function preferTransposedProduct(aShape: readonly number[], bShape: readonly number[]): boolean {
  const r = aShape.length;
  const m = aShape[r - 2], k = aShape[r - 1], n = bShape[bShape.length - 2];
  return n * k > m * k + m * n;
}
function transposeBeforeWasmMatMul(): void {
  if (matMulPatched) return;
  const original = tf.getKernel('BatchMatMul', 'wasm');
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!original || !transpose) return;
  type Info = tf.TensorInfo;
  const swapLast = (x: Info, backend: unknown): Info => {
    const perm = x.shape.map((_, i) => i);
    const r = perm.length;
    [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
    return transpose.kernelFunc({ inputs: { x }, backend, attrs: { perm } } as never) as Info;
  };
  const kernelFunc: tf.KernelFunc = (args) => {
    const { inputs, backend, attrs } = args as unknown as { inputs: { a: Info; b: Info }; backend: { disposeData(id: object): void }; attrs: { transposeA: boolean; transposeB: boolean } };
    if (!attrs.transposeA && !attrs.transposeB) return original.kernelFunc(args);
    if (!attrs.transposeA && preferTransposedProduct(inputs.a.shape, inputs.b.shape)) {
      // a·b^T as (b·a^T)^T: transposes the small a and the small product instead of the large b.
      const aT = swapLast(inputs.a, backend);
      let cT: Info | undefined;
      try {
        cT = original.kernelFunc({ ...args, inputs: { a: inputs.b, b: aT }, attrs: { ...attrs, transposeA: false, transposeB: false } } as never) as Info;
        return swapLast(cT, backend);
      } finally {
        backend.disposeData(aT.dataId);
        if (cT) backend.disposeData(cT.dataId);
      }
    }
    const a = attrs.transposeA ? swapLast(inputs.a, backend) : inputs.a;
    const b = attrs.transposeB ? swapLast(inputs.b, backend) : inputs.b;
    try {
      return original.kernelFunc({ ...args, inputs: { a, b }, attrs: { ...attrs, transposeA: false, transposeB: false } } as never);
    } finally {
      if (a !== inputs.a) backend.disposeData(a.dataId);
      if (b !== inputs.b) backend.disposeData(b.dataId);
    }
  };
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc });
  matMulPatched = true;
}

async function tryLoad(name: BackendName): Promise<string | null> {
  try {
    if (name === 'tensorflow') {
      // A variable specifier keeps bundlers and tsc from insisting the optional package exists.
      const spec = '@tensorflow/tfjs-node';
      await import(spec);
      if (!tf.findBackendFactory('tensorflow')) return 'tfjs-node loaded but registered no backend (two copies of tfjs-core?)';
    } else if (name === 'wasm') {
      await import('@tensorflow/tfjs-backend-wasm');
    }
    // The wasm module adds its handlers when the backend is instantiated, i.e. in setBackend.
    const ok = await withoutNewProcessHandlers(() => tf.setBackend(name));
    if (ok && name === 'wasm') {
      transposeBeforeWasmMatMul();
      registerWasmConvGradients();
      registerWasmTile();
    }
    return ok ? null : `tf.setBackend('${name}') returned false`;
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    return msg;
  }
}

/**
 * Selects and initialises the backend. With 'auto' the first that loads wins; with an explicit
 * choice, failure is an error that names the backend and the reason.
 */
export async function initBackend(choice: BackendChoice = 'auto'): Promise<BackendReport> {
  // The "install the node backend" banner is noise in a status log; PROD silences it.
  tf.env().set('PROD', true);
  // On every backend, so all of them differentiate tf.tile (LayerNormalization) the same way.
  registerTileGradient();
  if (choice !== 'auto') {
    if (!(BACKENDS as readonly string[]).includes(choice)) {
      throw new ConfigError('BAD_BACKEND', `--backend must be one of auto, ${BACKENDS.join(', ')}; got '${choice}'`);
    }
    const reason = await tryLoad(choice);
    if (reason) {
      throw new ConfigError('BACKEND_UNAVAILABLE', `backend '${choice}' could not be started: ${reason}. Use --backend auto to fall back.`);
    }
    return { name: choice, skipped: [] };
  }
  const skipped: BackendReport['skipped'] = [];
  for (const name of BACKENDS) {
    const reason = await tryLoad(name);
    if (!reason) return { name, skipped };
    skipped.push({ name, reason });
  }
  throw new ConfigError('BACKEND_UNAVAILABLE', `no compute backend could be started: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/**
 * Kernels a model's training step needs that not every backend has. The MLP models use only
 * kernels all backends implement; dcgan's convolution gradients need Conv2DBackpropFilter and
 * Conv2DBackpropInput. tfjs-backend-wasm 4.22 ships no Conv2DBackpropFilter:
 * shared/wasm-conv-gradients.ts registers one (built on its XNNPACK Conv2D) when the wasm
 * backend starts, so this check only fires on a backend where that did not happen.
 */
const TRAINING_KERNELS: Record<string, string[]> = {
  dcgan: ['Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter'],
};

/**
 * Fails fast, before any phase runs, when the active backend cannot compute a model's
 * gradients: otherwise the first D-step dies deep inside tfjs with "kernel not registered".
 */
export function assertCanTrain(modelKind: string): void {
  const backend = tf.getBackend();
  const missing = (TRAINING_KERNELS[modelKind] ?? []).filter((k) => !tf.getKernel(k, backend));
  if (missing.length > 0) {
    throw new ConfigError(
      'BACKEND_CANNOT_TRAIN',
      `--model ${modelKind} cannot be trained on the '${backend}' backend: it has no ${missing.join(', ')} kernel. ` +
        `Use --backend cpu (slow), or a machine where @tensorflow/tfjs-node installed (--backend tensorflow); the MLP models train on every backend.`,
    );
  }
}
