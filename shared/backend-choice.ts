/**
 * The `backend_selected` log line: which compute backend a process uses and why, said once at
 * start in words a user can act on. On a machine where the optional @tensorflow/tfjs-node did not
 * install (its installer downloads libtensorflow from outside the npm registry), auto selection
 * silently falls back to wasm; this line says so and what installing it would give.
 */
import type { BackendChoice, BackendName, BackendReport } from './backend.ts';

const WHAT: Record<BackendName, string> = {
  tensorflow: 'native TensorFlow via @tensorflow/tfjs-node, multi-threaded',
  wasm: 'WebAssembly, one thread per process',
  cpu: 'plain JavaScript, the slowest',
};

export interface BackendChoiceLine {
  fields: {
    backend: BackendName;
    requested: BackendChoice;
    /** The native backend's state: 'in use', 'not installed', 'failed to load', 'not tried'. */
    tensorflow: string;
  };
  msg: string;
}

/** Whether a failed import of tfjs-node means "not installed" (rather than broken). */
function notInstalled(reason: string): boolean {
  return /Cannot find (package|module) '@tensorflow\/tfjs-node'|ERR_MODULE_NOT_FOUND/.test(reason);
}

export function backendChoiceLine(report: BackendReport, requested: BackendChoice): BackendChoiceLine {
  const skippedTf = report.skipped.find((s) => s.name === 'tensorflow');
  const tensorflow = report.name === 'tensorflow' ? 'in use' : skippedTf ? (notInstalled(skippedTf.reason) ? 'not installed' : 'failed to load') : 'not tried';
  let msg = `compute backend: ${report.name} (${WHAT[report.name]})`;
  if (requested !== 'auto') {
    msg += `, as requested with --backend ${requested}`;
  } else if (skippedTf) {
    const why = tensorflow === 'not installed' ? '@tensorflow/tfjs-node is not installed (npm skips this optional package where its installer cannot download libtensorflow)' : `@tensorflow/tfjs-node could not be loaded (${skippedTf.reason})`;
    const others = report.skipped.filter((s) => s.name !== 'tensorflow').map((s) => `; ${s.name} could not be started (${s.reason})`).join('');
    msg += `, because ${why}${others}. Installing it (npm install @tensorflow/tfjs-node) gives the native, multi-threaded TensorFlow backend, typically several times faster`;
  }
  return { fields: { backend: report.name, requested, tensorflow }, msg };
}
