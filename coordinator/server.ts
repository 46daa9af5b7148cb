/**
 * The coordinator's network edge: binds HTTP or HTTPS (TLS) and the WebSocket endpoint on one
 * port, serves the HTTP routes (coordinator/http.ts, plus serverRoutes(): the worker package, the
 * generator page, /join for browser workers), admits connections (refusals while
 * stopping or under a handshake flood, the handshake timeout, heartbeats) and turns every frame
 * into a validated message for its session (coordinator/session.ts). It knows nothing of
 * training: what a message means is the session's and the coordinator's business (ServerEvents).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { decode, type DecodeLimits } from '../shared/codec.ts';
import { clip, type Logger } from '../shared/log.ts';
import { closeCodeFor, PROTOCOL_VERSION, type ByeCode, type Message } from '../shared/protocol.ts';
import { describeTlsClientError, type TlsServerFiles } from '../shared/tls.ts';
import { setMessageLimit } from './connection-limits.ts';
import { createJoinHandler } from './browser-join.ts';
import { generatorPageRoute } from './generator-page.ts';
import type { HttpHandler, Route } from './http.ts';
import { listenError } from './listen-error.ts';
import type { WorkerPackage } from './package-tarball.ts';
import { Heartbeat, WorkerSession, type SessionClock } from './session.ts';

export interface NetworkConfig {
  host: string;
  port: number;
  /** Shared secret for the HMAC handshake; null disables auth (loopback only unless insecure). */
  token: string | null;
  insecure: boolean;
  heartbeatMs: number;
  handshakeTimeoutMs: number;
  /** Connections still in their handshake beyond this are refused at once. */
  maxPendingHandshakes: number;
  /** Serve https + wss:// with this certificate and key (see shared/tls.ts); absent or null: plain http + ws://. */
  tls?: TlsServerFiles | null;
  /** Accept workers running in a browser tab (/join; coordinator/browser-join.ts). Default true; false with --no-browser-workers. */
  browserWorkers?: boolean;
}

export const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** When closing, HTTP connections still busy after this long are cut (keep-alive clients would hold the server open). */
const HTTP_CLOSE_GRACE_MS = 1000;

/** A refused connection is cut this long after its close frame, whether or not the peer answered. */
const REFUSED_LINGER_MS = 1000;

/** What the server reports to its owner. */
export interface ServerEvents {
  /** New connections are refused (SHUTTING_DOWN) while this is true. */
  refusing(): boolean;
  /** A validated message from a session that is not closed. */
  message(session: WorkerSession, msg: Message, recvMs: number): void;
  /** A session was rejected or its connection closed: release what it held (once per admitted session). */
  departed(session: WorkerSession, code: number, reason: string): void;
  /** A session's connection closed (after departed). */
  closed(session: WorkerSession): void;
}

export interface ServerOptions {
  network: NetworkConfig;
  log: Logger;
  http: HttpHandler;
  /** Frame limits before the handshake completes and after admission. */
  handshakeLimits: DecodeLimits;
  limits: DecodeLimits;
  /** Bytes that may queue for one worker before it is dropped as SLOW_CONSUMER. */
  maxQueuedBytes: number;
  /** Where codec and send time go (the time split). */
  clock: SessionClock;
  events: ServerEvents;
  /** The package it serves to worker machines (its routes are in serverRoutes()); announced once listening. */
  workerPackage?: WorkerPackage;
}

/**
 * The HTTP routes of the coordinator's network edge beside the dashboard's (coordinator/http.ts):
 * the worker package (/gan-distributed.tgz, .sha256, /install.json), the generator page and the
 * run's export (/export/), and the browser worker page (/join, /join/*).
 */
export function serverRoutes(o: { network: NetworkConfig; workerPackage: WorkerPackage; exportDir: string; runId: string; model: string; finished(): boolean; log: Logger }): Route[] {
  const join = createJoinHandler({ browserWorkers: o.network.browserWorkers !== false, auth: Boolean(o.network.token), runId: o.runId, model: o.model, finished: o.finished, log: o.log });
  return [o.workerPackage.route, generatorPageRoute(o.exportDir), { path: (p) => p === '/join' || p.startsWith('/join/'), handle: (req, res, url) => join(req, res, url.pathname) }];
}

export class WorkerServer {
  private http: Server | HttpsServer | null = null;
  private wss: WebSocketServer | null = null;
  readonly sessions = new Map<number, WorkerSession>();
  private nextSessionId = 1;
  private heartbeat: Heartbeat | null = null;
  /** Per remote address, when its last failed TLS handshake was logged (port scanners and TCP health checks repeat). */
  private tlsErrorLoggedAt = new Map<string, number>();
  private readonly log: Logger;

  constructor(readonly opts: ServerOptions) {
    this.log = opts.log;
  }

  get address(): AddressInfo {
    return this.http!.address() as AddressInfo;
  }

  get readyWorkers(): WorkerSession[] {
    return [...this.sessions.values()].filter((s) => s.state === 'ready');
  }

  /** Binds the HTTP + WebSocket server. */
  async listen(): Promise<AddressInfo> {
    const { network } = this.opts;
    const handler = this.opts.http;
    this.http = network.tls ? createHttpsServer({ cert: network.tls.cert, key: network.tls.key }, handler) : createServer(handler);
    if (network.tls) {
      // When a handshake fails its sockets are already destroyed and have forgotten their peer:
      // note the address when the TCP connection arrives (the TLS socket's _parent is that socket).
      const peers = new WeakMap<object, string>();
      this.http.on('connection', (socket: { remoteAddress?: string }) => peers.set(socket, socket.remoteAddress ?? 'unknown'));
      this.http.on('tlsClientError', (err: Error, socket: { remoteAddress?: string; _parent?: object }) =>
        this.onTlsClientError(err, (socket._parent && peers.get(socket._parent)) ?? socket.remoteAddress ?? 'unknown'),
      );
    }
    // Every connection starts with the handshake limit; admission raises it for that connection.
    this.wss = new WebSocketServer({ server: this.http, maxPayload: this.opts.handshakeLimits.maxFrameBytes });
    this.wss.on('connection', (ws, req) => this.onConnection(ws, req));
    // After binding, a server error must not end the run: log it (while binding, listen() below turns it into a clear error).
    const serverError = (err: Error) => this.log.warn({ event: 'warning', code: 'SOCKET_ERROR', err: clip(err.message) }, 'server socket error');
    this.wss.on('error', serverError);
    await new Promise<void>((resolve, reject) => {
      // ws re-emits the server's errors on the WebSocketServer: both need a listener while binding.
      const fail = (err: Error) => reject(listenError(err, network.host, network.port));
      this.http!.once('error', fail);
      this.wss!.once('error', fail);
      this.http!.listen(network.port, network.host, () => {
        this.http!.off('error', fail);
        this.wss!.off('error', fail);
        this.http!.on('error', serverError);
        resolve();
      });
    });
    this.heartbeat = new Heartbeat(network.heartbeatMs, () => this.sessions.values(), (s) => {
      this.log.warn({ event: 'warning', code: 'HEARTBEAT_TIMEOUT', worker: s.label }, 'worker stopped answering pings; dropping it');
      s.ws.terminate();
    });
    const addr = this.address;
    this.log.info(
      { event: 'listening', host: addr.address, port: addr.port, auth: network.token ? 'token' : 'none', tls: Boolean(network.tls), url: `${network.tls ? 'wss' : 'ws'}://${network.host}:${addr.port}` },
      network.token ? `listening${network.tls ? ' (TLS)' : ''}; workers must present the shared token` : `listening${network.tls ? ' (TLS)' : ''} without a token${LOOPBACK.has(network.host) ? ' on loopback only (set GAN_TOKEN to accept remote workers)' : ' (--insecure)'}`,
    );
    this.opts.workerPackage?.announce(this.log, { host: network.host, port: addr.port, tls: Boolean(network.tls) });
    return addr;
  }

  private onTlsClientError(err: Error, address: string): void {
    const now = Date.now();
    if (now - (this.tlsErrorLoggedAt.get(address) ?? -Infinity) < 60_000) return;
    this.tlsErrorLoggedAt.set(address, now);
    if (this.tlsErrorLoggedAt.size > 1024) this.tlsErrorLoggedAt.clear();
    const { code, hint } = describeTlsClientError(err);
    this.log.warn({ event: 'warning', code: 'TLS_HANDSHAKE_FAILED', address, tlsCode: code, reason: hint }, `TLS handshake with ${address} failed: ${hint}`);
  }

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    const address = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    // Before anything else can happen to it: an EventEmitter 'error' without a listener throws,
    // and a malformed frame from any peer (even one we are refusing) emits one.
    let session: WorkerSession | null = null;
    ws.on('error', (err) => this.onSocketError(session, address, err));
    if (this.opts.events.refusing()) return this.refuse(ws, 'SHUTTING_DOWN');
    const pending = [...this.sessions.values()].filter((s) => s.state === 'hello' || s.state === 'auth').length;
    if (pending >= this.opts.network.maxPendingHandshakes) {
      this.log.warn({ event: 'warning', code: 'HANDSHAKE_FLOOD', address, pending }, 'too many connections still in their handshake; refusing this one');
      return this.refuse(ws, 'TOO_MANY_PENDING');
    }
    session = new WorkerSession(this.nextSessionId++, ws, address);
    session.socket = req.socket;
    session.maxQueuedBytes = this.opts.maxQueuedBytes;
    this.track(session, req);
  }

  /** Wires a new connection's events to its session (the 'error' listener is attached already). */
  private track(session: WorkerSession, req: IncomingMessage): void {
    const { ws, address } = session;
    const { clock, events, network } = this.opts;
    session.clock = clock;
    session.onOverflow = (queued) => this.dropSlowConsumer(session, queued);
    this.sessions.set(session.sessionId, session);
    // Receive time of a message: its first bytes read (before ws parses them; hence prepend) to
    // the message reassembled. Bytes that wait while we are busy are not counted.
    let recvSince: number | null = null;
    req.socket.prependListener('data', () => {
      recvSince ??= performance.now();
    });
    const handshakeTimer = setTimeout(() => {
      if (session.state === 'hello' || session.state === 'auth') {
        this.log.warn({ event: 'warning', code: 'HANDSHAKE_TIMEOUT', address, stage: session.state }, 'no complete handshake in time; closing');
        session.close('HANDSHAKE_TIMEOUT', `handshake not completed within ${network.handshakeTimeoutMs} ms`);
      }
    }, network.handshakeTimeoutMs);
    ws.on('pong', (payload) => session.pong(payload));
    ws.on('message', (data: RawData, isBinary: boolean) => {
      // ws hands over a Buffer already (binaryType 'nodebuffer'); Buffer.from(buffer) would copy it.
      const frame = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const recvMs = recvSince === null ? 0 : performance.now() - recvSince;
      recvSince = null;
      session.bytesIn += frame.byteLength;
      session.framesIn++;
      session.lastSeen = Date.now();
      // Frames still in flight after we closed (or the peer said bye) are not acted on.
      if (session.state === 'closed') return;
      if (!isBinary) {
        this.reject(session, 'TEXT_FRAME', 'text frames are not part of the protocol');
        return;
      }
      // Before the handshake completes only hello and auth (< 1 KB) are legitimate.
      const t0 = performance.now();
      const res = decode(frame, session.state === 'ready' ? this.opts.limits : this.opts.handshakeLimits);
      clock.addCodec(performance.now() - t0);
      if (!res.ok) {
        const reason = res.code === 'PROTOCOL_MISMATCH' ? `coordinator speaks protocol ${PROTOCOL_VERSION}; ${res.reason}` : res.reason;
        this.reject(session, res.code, reason);
        return;
      }
      events.message(session, res.msg, recvMs);
    });
    ws.on('close', (code, reason) => {
      clearTimeout(handshakeTimer);
      session.state = 'closed';
      const known = this.sessions.delete(session.sessionId);
      if (known) events.closed(session);
      events.departed(session, code, reason.toString());
    });
  }

  /**
   * A refused connection: a close code and reason, no session, and no waiting for the peer's
   * half of the close handshake (a flood of silent peers would otherwise hold sockets for 30 s).
   */
  private refuse(ws: WebSocket, code: ByeCode): void {
    ws.close(closeCodeFor(code), code);
    setTimeout(() => ws.terminate(), REFUSED_LINGER_MS).unref();
  }

  /**
   * ws reports a frame over the limit (close 1009), a malformed WebSocket frame (bad opcode, RSV
   * bits, masking, UTF-8) or a socket failure. Refused connections (no session) log at debug
   * only: whoever floods us must not also flood the log.
   */
  private onSocketError(session: WorkerSession | null, address: string, err: Error): void {
    const wsCode = (err as NodeJS.ErrnoException).code;
    const code = wsCode === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'FRAME_TOO_LARGE' : wsCode?.startsWith('WS_ERR_') ? 'WS_PROTOCOL_ERROR' : 'SOCKET_ERROR';
    const fields = { event: 'warning', code, wsCode, worker: session?.label, address, err: clip(err.message) };
    if (!session) return void this.log.debug(fields, 'error on a refused connection');
    this.log.warn(fields, code === 'SOCKET_ERROR' ? 'socket error' : `closing connection: ${clip(err.message)}`);
  }

  /** The worker stopped reading: frames for it would queue without bound. */
  private dropSlowConsumer(session: WorkerSession, queuedBytes: number): void {
    const limit = this.opts.maxQueuedBytes;
    const reason = `${queuedBytes} bytes queued for this worker (limit ${limit}): it stopped reading`;
    this.log.warn({ event: 'warning', code: 'SLOW_CONSUMER', worker: session.label, address: session.address, queuedBytes, limit }, `dropping worker ${session.label}: ${reason}`);
    // A close handshake cannot get through a peer that does not read: cut the connection.
    session.state = 'closed';
    session.ws.terminate();
    this.opts.events.departed(session, closeCodeFor('SLOW_CONSUMER'), 'SLOW_CONSUMER');
  }

  /** Closes a misbehaving connection with a stable code and logs it; training carries on. */
  reject(session: WorkerSession, code: ByeCode, reason: string): void {
    this.log.warn({ event: 'warning', code, worker: session.label, address: session.address, reason }, `closing connection: ${reason}`);
    session.close(code, reason);
    // Release its shards now rather than after the close handshake (up to 30 s with a silent peer).
    this.opts.events.departed(session, closeCodeFor(code), code);
  }

  /** Raises an admitted connection's frame limit from the handshake's to a result's. */
  admitted(session: WorkerSession): void {
    setMessageLimit(session.ws, this.opts.limits.maxFrameBytes);
  }

  /**
   * Says goodbye to every worker (a bye, then cut after a short grace) while the server stays up.
   * Stops the heartbeats.
   */
  async release(byeCode: ByeCode, reason: string): Promise<void> {
    this.heartbeat?.stop();
    for (const s of this.sessions.values()) s.close(byeCode, reason);
    // A hung or partitioned worker would hold its close handshake for ws's 30 s close timeout.
    // Wait briefly for the sessions to close, then cut the rest.
    const closed = [...this.sessions.values()].map((s) => (s.ws.readyState === s.ws.CLOSED ? undefined : new Promise<void>((resolve) => s.ws.once('close', () => resolve()))));
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (grace = setTimeout(resolve, 2000)))]);
    clearTimeout(grace);
    for (const s of this.sessions.values()) s.ws.terminate();
  }

  /** Closes the WebSocket and HTTP servers (after release()). */
  async close(): Promise<void> {
    // ws@8 calls back only once every client finished its close handshake: cut whatever is left.
    const closed = new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    await closed;
    // close() ends idle keep-alive connections only: one busy at that moment (a dashboard polling
    // /status) is kept alive by its next request and would hold the server open. Cut them soon.
    const httpClosed = new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    const cut = setTimeout(() => this.http?.closeAllConnections?.(), HTTP_CLOSE_GRACE_MS);
    await httpClosed;
    clearTimeout(cut);
    this.http?.closeAllConnections?.();
  }
}
