/**
 * ws's frame-size limit per connection: the coordinator (coordinator/server.ts) and a relay's
 * listener (worker/relay-server.ts) both accept a handshake-sized frame until a peer is admitted,
 * then raise the limit for that connection only. Node only (the ws package).
 */
import type { WebSocket } from 'ws';
import { GanError } from './errors.ts';

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

