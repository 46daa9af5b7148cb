/**
 * Per-connection bounds the coordinator enforces at the socket, so that neither an
 * unauthenticated peer nor an authenticated one that stops reading can make it buffer without
 * limit: ws's own frame-size limit (raised per connection once a worker is admitted) and the
 * most bytes that may queue in user space for one worker.
 */
import { sampleDim, type GanConfig } from '../shared/config.ts';

// The per-connection frame limit is shared with the relay listener (worker/relay-server.ts).
export { setMessageLimit } from '../shared/ws-frame-limit.ts';

/** Floor of the slow-consumer bound: a few frames in flight on a slow link are normal. */
const MIN_QUEUED_BYTES = 4 * 1024 * 1024;

/**
 * Bytes that may queue for one worker beyond what the kernel's socket buffers hold: four copies
 * of both nets (a welcome plus broadcasts) and two global batches of real rows as float32 (the
 * largest D-phase task), plus a 4 MiB floor. A worker that reads never gets near it; one that
 * stops reading reaches it within a few phases and is dropped (SLOW_CONSUMER).
 */
export function maxQueuedBytesFor(config: GanConfig, weightFloats: number): number {
  const rowBytes = config.train.batchSize * (sampleDim(config.model) + 1) * 4;
  return MIN_QUEUED_BYTES + 4 * weightFloats * 4 + 2 * rowBytes;
}
