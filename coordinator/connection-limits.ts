/**
 * Per-connection bounds the coordinator enforces at the socket, so that neither an
 * unauthenticated peer nor an authenticated one that stops reading can make it buffer without
 * limit: ws's own frame-size limit (raised per connection once a worker is admitted) and the
 * most bytes that may queue in user space for one worker.
 */
import type { WebSocket } from 'ws';
import { sampleDim, type GanConfig } from '../shared/config.ts';
import { GanError } from '../shared/errors.ts';

/** ws keeps the frame limit on its Receiver; a WebSocketServer only has one value for every connection. */
interface ReceiverInternals {
  _receiver?: { _maxPayload?: unknown };
}

/**
 * Raises (or lowers) the largest message ws accepts on this connection. ws checks the declared
 * length against `_maxPayload` in the frame header, before buffering the payload; ws 8 has no
 * public per-connection setter, so this writes that field and fails loudly if it moved (a test
 * in test/hostile-peers.test.ts runs this on every install).
 */
export function setMessageLimit(ws: WebSocket, bytes: number): void {
  const receiver = (ws as unknown as ReceiverInternals)._receiver;
  if (!receiver || typeof receiver._maxPayload !== 'number') {
    throw new GanError('WS_INTERNALS_CHANGED', 'this version of ws keeps no per-connection frame limit where expected (Receiver._maxPayload); pin ws to a version of 8.x that does');
  }
  receiver._maxPayload = bytes;
}

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
