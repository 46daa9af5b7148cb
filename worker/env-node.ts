/**
 * The worker's environment under Node: the ws package (zero-mask client frames, receive timing
 * from the socket's first bytes), node:crypto's HMAC, os.hostname and setImmediate.
 */
import { hostname } from 'node:os';
import { WebSocket } from 'ws';
import { hmacOf } from '../shared/auth.ts';
import { resourceUsage } from '../shared/resources.ts';
import { classifyTlsError } from '../shared/tls.ts';
import type { ConnectOptions, SocketEvents, WorkerEnv, WorkerSocket } from './env.ts';

/**
 * RFC 6455 masks client frames so a hostile page in a browser cannot make its bytes look like
 * HTTP to a caching proxy on the way. A Node worker is not a browser page and chooses its own
 * bytes, so the mask protects nothing here. With an all-zero key (still a masked frame on the
 * wire) ws skips the XOR pass on both sides, and the copy into a fresh buffer it makes to mask a
 * frame it must not modify: one multi-megabyte allocation and copy less per result.
 */
const zeroMask = (mask: Uint8Array): void => {
  mask.fill(0);
};

function connect(url: string, events: SocketEvents, opts: ConnectOptions): WorkerSocket {
  const ws = new WebSocket(url, { maxPayload: opts.maxPayload, handshakeTimeout: 10000, generateMask: zeroMask, ...(opts.ca ? { ca: opts.ca } : {}) });
  // Receive time of a message: its first bytes read (before ws parses them; hence prepend) to
  // the message reassembled.
  let recvSince: number | null = null;
  ws.on('upgrade', (res) => {
    res.socket.prependListener('data', () => {
      recvSince ??= performance.now();
    });
  });
  ws.on('open', () => events.open());
  ws.on('ping', () => events.ping());
  ws.on('message', (data, isBinary) => {
    const recvMs = recvSince === null ? 0 : performance.now() - recvSince;
    recvSince = null;
    if (!isBinary) return;
    // ws hands over a Buffer unless fragmented (then a list); the codec takes both.
    const frame = Array.isArray(data) ? Buffer.concat(data) : (data as Buffer);
    events.message(frame, recvMs);
  });
  ws.on('error', (err) => events.error(err));
  ws.on('close', (code, reason) => events.close(code, reason.toString()));
  return {
    get open() {
      return ws.readyState === WebSocket.OPEN;
    },
    get flushed() {
      return ws.bufferedAmount === 0;
    },
    send: (frame) => ws.send(frame),
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
  };
}

export const nodeEnv: WorkerEnv = {
  kind: 'node',
  connect,
  hmac: async (token, nonce) => hmacOf(token, nonce),
  host: () => hostname().slice(0, 256),
  yieldNow: () => new Promise((r) => setImmediate(r)),
  seesPings: true,
  resources: () => ({ ...resourceUsage() }),
  fatalConnectError(err, ctx) {
    const tls = classifyTlsError(err, ctx);
    return tls ? { code: tls.code, reason: tls.reason, detail: (err as NodeJS.ErrnoException).code ?? 'UNKNOWN' } : null;
  },
};
