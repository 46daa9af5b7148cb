/**
 * Process resources for the periodic progress lines (coordinator `progress`, worker
 * `worker_progress`): live tfjs tensors and memory. A long run (npm run soak) asserts they stay
 * flat: a tensor leaked per shard or per phase shows up here within minutes.
 */
import { memory } from '@tensorflow/tfjs-core';

export interface ResourceUsage {
  /** tf.memory().numTensors: tensors allocated and not disposed. */
  numTensors: number;
  /** Resident set size of the process (MB). */
  rssMb: number;
  /** V8 heap in use (MB). */
  heapMb: number;
}

export function resourceUsage(): ResourceUsage {
  const m = process.memoryUsage();
  return { numTensors: memory().numTensors, rssMb: Math.round(m.rss / 1e6), heapMb: Math.round(m.heapUsed / 1e6) };
}
