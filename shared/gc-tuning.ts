/**
 * Garbage-collector headroom for processes that move multi-megabyte frames.
 *
 * V8 counts the ArrayBuffer memory allocated since the last full collection against the old
 * generation's limit, and it sets that limit only a little above the live heap (here ~30 MB of
 * code and model objects). Every weights or gradient frame allocates a few MB of ArrayBuffers
 * (WebSocket reassembly, masking, msgpack output, decoded arrays), so a worker or coordinator
 * ran a full mark-compact every few MB: about 2 per phase of mlp-small, ~12 ms of GC and 15-25%
 * more CPU per phase than the same computation without the frames (measured with 40 phases of
 * mlp-small on wasm; the single-process trainer, which allocates far less, ran ~0.5 per phase).
 * Letting the limit grow to 5x the live heap keeps collections rare; the cost is that up to a
 * few times the live heap of dead buffers (~100 MB here) may wait for the next collection.
 * Set for every CLI process (runMain), the single-process trainer included, so benches compare
 * like with like. A --heap-growing-percent given to node explicitly wins.
 */
import { setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 400;

export function tuneGcForLargeFrames(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith('--heap-growing-percent'));
  if (!given) setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
