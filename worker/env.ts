/**
 * What a worker needs from the place it runs in, kept behind small interfaces so the worker core
 * (worker/worker-core.ts) imports nothing Node-only and the same code runs in a browser tab:
 *
 *   worker/env-node.ts     the ws package, node:crypto's HMAC, os.hostname, setImmediate
 *   worker/env-browser.ts  the browser's WebSocket, WebCrypto (crypto.subtle HMAC-SHA256)
 *
 * Nothing here may import a module that touches Node at load time.
 */

/** One open (or opening) WebSocket to the coordinator. */
export interface WorkerSocket {
  /** The socket is open and frames can be sent. */
  readonly open: boolean;
  send(frame: Uint8Array): void;
  /**
   * Whether every frame sent so far has left this process's hands (ws: bufferedAmount 0, the
   * kernel has all the bytes), so the memory of the last one may be written over; absent where
   * the transport cannot tell (the worker then never reuses a frame buffer).
   */
  readonly flushed?: boolean;
  /** A clean close with a code and a short (<= 123 bytes) reason. */
  close(code: number, reason: string): void;
  /** Drop the connection at once (the coordinator went silent). */
  terminate(): void;
}

/** Callbacks a transport calls on its socket's events, in the order they happen. */
export interface SocketEvents {
  open(): void;
  /**
   * A whole binary message; recvMs is the time from its first byte read to the message
   * reassembled where the transport can tell (0 where it cannot, e.g. in a browser).
   */
  message(frame: Uint8Array, recvMs: number): void;
  /** A WebSocket ping from the coordinator (only transports that see pings call it). */
  ping(): void;
  error(err: Error): void;
  close(code: number, reason: string): void;
}

export interface ConnectOptions {
  /** Largest frame accepted from the coordinator (bytes). */
  maxPayload: number;
  /** PEM CA for wss:// (Node only; a browser trusts what the browser trusts). */
  ca?: string;
}

/** A connection failure retrying cannot fix (an untrusted TLS certificate, ...). */
export interface FatalConnectError {
  code: string;
  reason: string;
  /** The underlying error code, for the log line (e.g. DEPTH_ZERO_SELF_SIGNED_CERT). */
  detail: string;
}

export interface WorkerEnv {
  /** 'node' or 'browser': told to the coordinator in hello (browser: true). */
  readonly kind: 'node' | 'browser';
  connect(url: string, events: SocketEvents, opts: ConnectOptions): WorkerSocket;
  /** HMAC-SHA256(token, nonce): the answer to the coordinator's challenge. */
  hmac(token: string, nonce: Uint8Array): Promise<Uint8Array>;
  /** Told to the coordinator in hello (<= 256 chars), for operators only. */
  host(): string;
  /** Lets the event loop run (pings, incoming frames) between two shards. */
  yieldNow(): Promise<void>;
  /** Whether the transport reports pings: without them the worker cannot tell a quiet coordinator from a dead one by silence. */
  readonly seesPings: boolean;
  /** Process resources for worker_progress lines. */
  resources(): Record<string, number>;
  /** A connection error before the handshake that retrying cannot fix, or null. */
  fatalConnectError(err: Error, ctx: { url: string; ca: boolean }): FatalConnectError | null;
}
