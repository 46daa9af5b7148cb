/**
 * The coordinator: holds the master weights and optimizer state (a TrainingState), accepts
 * workers over WebSockets, hands each phase's micro-shards to them in aligned blocks, averages
 * the block sums they return over the fixed tree of shared/tree-sum.ts and applies Algorithm 1's
 * alternating updates.
 *
 * Nothing from the network is trusted: every frame is decoded and validated, every result is
 * checked against what that worker was actually asked to compute, and a peer that breaks the
 * protocol is disconnected with a reason while training goes on.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { verifyHmac, newNonce } from '../shared/auth.ts';
import { decode, encode, closeCodeFor, floatPayloadBytes, WS_CLOSE, type DecodeLimits } from '../shared/codec.ts';
import { sampleDim, type GanConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { ConfigError } from '../shared/errors.ts';
import { listenError } from './listen-error.ts';
import { hashFloats } from '../shared/hash.ts';
import { clip, tapLog, type Logger } from '../shared/log.ts';
import { blockKey, blockShards } from '../shared/tree-sum.ts';
import { PROTOCOL_FEATURES, PROTOCOL_VERSION, WIRE_FORMATS, type HelloMsg, type Message, type ResultMsg, type ShardSpec, type WireFormat } from '../shared/protocol.ts';
import { GanReplica, type Net } from '../shared/replica.ts';
import { TrainingState, type PhaseSummary, type TrainingSnapshot } from '../shared/training-state.ts';
import { describeTlsClientError, type TlsServerFiles } from '../shared/tls.ts';
import { exportModels } from '../shared/export.ts';
import { writeCheckpoint, type CheckpointWriterConfig } from './checkpoint.ts';
import { PhaseRun, type Assignment, type StragglerPolicy } from './phase-run.ts';
import { createHttpHandler, type HttpHandler } from './http.ts';
import { generatorPageRoute } from './generator-page.ts';
import { WorkerPackage } from './package-tarball.ts';
import { LiveProgress } from '../shared/progress-bar.ts';
import { authSecret, browserRefusal, createJoinHandler } from './browser-join.ts';
import { Telemetry } from './metrics.ts';
import { ByteWindows, EtaEstimator, ProgressTracker, roundRecord, TimeSplit } from './progress.ts';
import { writeSampleImage } from './samples.ts';
import { REPORT_FILE, writeRunReport } from './run-report.ts';
import { runPeriodicEvaluation, type PeriodicEvaluation } from '../shared/eval/periodic.ts';
import { WorkerSession } from './session.ts';
import { maxQueuedBytesFor, setMessageLimit } from './connection-limits.ts';
import { BanList, selectVerifiedShards } from './verify.ts';
import { resourceUsage } from '../shared/resources.ts';
import { codesOfRows, rowCodesOf, type RowCodes } from '../shared/data/row-codes.ts';

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

export interface ScheduleConfig {
  straggler: StragglerPolicy;
  /** How often the phase loop re-checks for idle workers, orphaned and overdue shards (ms). */
  tickMs: number;
  /** With no workers, repeat the "waiting for workers" line this often (ms). */
  waitingLogMs: number;
  /** Fraction of shards recomputed on a second worker and compared bit for bit (0: none; coordinator/verify.ts). */
  verifyFraction?: number;
}

export interface ReportConfig {
  /** A progress line after every N-th iteration (iteration % N === 0). */
  logEvery: number;
  /** ...and at least this often (ms) while iterations complete. */
  statusIntervalMs: number;
  /** Write a sample grid every N iterations (0: only at the end). */
  sampleEvery: number;
}

export interface CheckpointConfig extends Omit<CheckpointWriterConfig, 'runDir'> {
  /** Checkpoint every N iterations (0: only at the end and on shutdown). */
  every: number;
}

export interface CoordinatorOptions {
  config: GanConfig;
  source: DataSource;
  runDir: string;
  log: Logger;
  backendName: string;
  network: NetworkConfig;
  schedule: ScheduleConfig;
  report: ReportConfig;
  checkpoint: CheckpointConfig;
  snapshot?: TrainingSnapshot;
  /** --eval-every: evaluate G every N iterations and at the end, logged as `eval` (shared/eval/periodic.ts); absent: off. */
  evaluation?: PeriodicEvaluation | null;
}

export const DEFAULT_NETWORK: Omit<NetworkConfig, 'host' | 'port' | 'token' | 'insecure'> = {
  heartbeatMs: 5000,
  handshakeTimeoutMs: 10000,
  maxPendingHandshakes: 64,
};

export const DEFAULT_SCHEDULE: ScheduleConfig = {
  straggler: { factor: 3, minMs: 2000 },
  tickMs: 50,
  waitingLogMs: 10000,
};

export interface RunResult {
  iterations: number;
  weightsHash: string;
  seconds: number;
  stopped: boolean;
}

/**
 * Largest frame accepted before the handshake completes (a hello or auth is well under 1 KB).
 * It is ws's own limit until admission, so a larger declared length is refused (close 1009) from
 * the frame header, before anything is buffered.
 */
export const HANDSHAKE_FRAME_BYTES = 16 * 1024;

/** A refused connection is cut this long after its close frame, whether or not the peer answered. */
const REFUSED_LINGER_MS = 1000;

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export class Coordinator {
  readonly state: TrainingState;
  readonly replica: GanReplica;
  readonly runId = randomUUID();
  private http: Server | HttpsServer | null = null;
  private wss: WebSocketServer | null = null;
  private sessions = new Map<number, WorkerSession>();
  private nextSessionId = 1;
  private nextTaskId = 1;
  private phase: PhaseRun<WorkerSession> | null = null;
  private wakePhase: (() => void) | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private stopping = false;
  /** Set by --linger (coordinator/linger.ts) while the finished run's HTTP side stays up. */
  lingerUntil: string | null = null;
  private workersReleased = false;
  private limits: DecodeLimits;
  /** --wire (config.train.wire): how weights and gradients travel; every worker must speak it. */
  private readonly wire: WireFormat;
  /** Limits for frames before the handshake completes. */
  private handshakeLimits: DecodeLimits;
  private progress: ProgressTracker;
  private lastStatusAt = performance.now();
  /** -Infinity: the first "no workers" warning goes out at once (performance.now() starts at process start, not 0 s ago). */
  private lastWaitingLogAt = -Infinity;
  private metricsTail: unknown[] = [];
  /** iteration/dStep of the newest checkpoint written by this process. */
  private lastCheckpointAt: string | null = null;
  private log: Logger;
  /** Prometheus metrics and the dashboard's history (coordinator/metrics.ts). */
  readonly telemetry: Telemetry;
  private httpHandler: HttpHandler;
  /** GET /gan-distributed.tgz: this package, for `npm install -g` on worker machines (coordinator/package-tarball.ts). */
  private workerPackage = new WorkerPackage();
  /** The live progress bar on a terminal (shared/progress-bar.ts; a no-op otherwise). */
  private liveBar = new LiveProgress();
  /** Sessions authenticating with a short-lived join key instead of the token: that key (coordinator/join-key.ts). */
  private authSecrets = new WeakMap<WorkerSession, string>();
  private timeSplit = new TimeSplit();
  private eta = new EtaEstimator();
  /** Frame bytes of sessions already closed (live sessions count their own). */
  private retiredBytes = { sent: 0, received: 0 };
  /** Reported compute (ms) per session for the current phase: its busiest worker bounds the phase. */
  private phaseCompute = new Map<number, number>();
  /** Per session, the current phase's reported codec and transfer time (result.timing), for the critical-path split. */
  private phaseWorkerTiming = new Map<number, { codec: number; transfer: number }>();
  /** The coordinator's receive time (ms) of the newest result of the current phase: at the end, the one that completed it. */
  private lastResultRecvMs = 0;
  /** Per-worker bytes per progress window. */
  private byteWindows = new ByteWindows<number>();
  /** Workers caught returning wrong results (--verify-fraction); they may not rejoin this run. */
  readonly banned: BanList;
  private lastVerifyWaitLogAt = -Infinity;
  /** `${workers}/${shards}` of the last WORKERS_IDLE warning ('' while every worker has work). */
  private idleWarnedFor = '';
  /** Bytes that may queue for one worker in user space before it is dropped as SLOW_CONSUMER. */
  readonly maxQueuedBytes: number;

  constructor(readonly opts: CoordinatorOptions) {
    const { network, config } = opts;
    if (!network.token && !network.insecure && !LOOPBACK.has(network.host)) {
      throw new ConfigError(
        'INSECURE_LISTEN',
        `refusing to listen on ${network.host} without a token: set GAN_TOKEN or --token-file, or pass --insecure if this network is trusted`,
      );
    }
    this.log = opts.log;
    this.replica = new GanReplica(config);
    this.state = new TrainingState(config, opts.source, this.replica.layout, opts.snapshot);
    const maxFloats = Math.max(this.replica.layout.G.total, this.replica.layout.D.total);
    this.wire = config.train.wire ?? 'fp32';
    // The largest frame a worker legitimately sends is one result: a gradient plus a few fields.
    this.limits = { maxFrameBytes: floatPayloadBytes(maxFloats, this.wire) + 64 * 1024, maxFloats, maxShards: config.train.shards, wire: this.wire };
    this.handshakeLimits = { ...this.limits, maxFrameBytes: Math.min(this.limits.maxFrameBytes, HANDSHAKE_FRAME_BYTES) };
    this.maxQueuedBytes = maxQueuedBytesFor(config, this.replica.layout.G.total + this.replica.layout.D.total);
    this.progress = new ProgressTracker(config.train.batchSize);
    this.telemetry = new Telemetry(
      {
        iteration: () => this.state.iteration,
        iterations: () => config.train.iterations,
        epoch: () => this.state.epoch,
        workers: () => this.readyWorkers.length,
        bytes: () => this.bytesTotal(),
      },
      config.train.batchSize,
    );
    // A resumed run's dashboard shows the curve from the start, not from the resume point.
    if (opts.snapshot) this.telemetry.replayLog(join(opts.runDir, 'log.jsonl'), this.state.iteration);
    tapLog(this.log, (rec) => this.telemetry.observe(rec));
    this.banned = new BanList(opts.runDir, Boolean(opts.snapshot));
    const joinPage = createJoinHandler({ browserWorkers: network.browserWorkers !== false, auth: Boolean(network.token), runId: this.runId, model: config.model.kind, finished: () => this.state.finished, log: this.log });
    this.httpHandler = createHttpHandler({ status: () => this.status(), telemetry: this.telemetry, samplesDir: join(opts.runDir, 'samples'), reportFile: join(opts.runDir, REPORT_FILE), log: this.log, join: joinPage, routes: [this.workerPackage.route, generatorPageRoute(join(opts.runDir, 'export'))] });
  }

  /** Frame bytes sent to and received from workers since this coordinator started. */
  bytesTotal(): { sent: number; received: number } {
    let { sent, received } = this.retiredBytes;
    for (const s of this.sessions.values()) {
      sent += s.bytesOut;
      received += s.bytesIn;
    }
    return { sent, received };
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
    const handler = (req: IncomingMessage, res: ServerResponse) => this.handleHttp(req, res);
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
    // Every connection starts with the handshake limit; admit() raises it for that connection.
    this.wss = new WebSocketServer({ server: this.http, maxPayload: this.handshakeLimits.maxFrameBytes });
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
    this.heartbeat = setInterval(() => this.checkHeartbeats(), network.heartbeatMs);
    const addr = this.address;
    this.log.info(
      { event: 'listening', host: addr.address, port: addr.port, auth: network.token ? 'token' : 'none', tls: Boolean(network.tls), url: `${network.tls ? 'wss' : 'ws'}://${network.host}:${addr.port}` },
      network.token ? `listening${network.tls ? ' (TLS)' : ''}; workers must present the shared token` : `listening${network.tls ? ' (TLS)' : ''} without a token${LOOPBACK.has(network.host) ? ' on loopback only (set GAN_TOKEN to accept remote workers)' : ' (--insecure)'}`,
    );
    this.workerPackage.announce(this.log, { host: network.host, port: addr.port, tls: Boolean(network.tls) });
    return addr;
  }

  /** Per remote address, when its last failed TLS handshake was logged (port scanners and TCP health checks repeat). */
  private tlsErrorLoggedAt = new Map<string, number>();

  private onTlsClientError(err: Error, address: string): void {
    const now = Date.now();
    if (now - (this.tlsErrorLoggedAt.get(address) ?? -Infinity) < 60_000) return;
    this.tlsErrorLoggedAt.set(address, now);
    if (this.tlsErrorLoggedAt.size > 1024) this.tlsErrorLoggedAt.clear();
    const { code, hint } = describeTlsClientError(err);
    this.log.warn({ event: 'warning', code: 'TLS_HANDSHAKE_FAILED', address, tlsCode: code, reason: hint }, `TLS handshake with ${address} failed: ${hint}`);
  }

  // ---------------------------------------------------------------- HTTP

  /** GET /, /status, /history, /metrics, /samples/*: see coordinator/http.ts. */
  private handleHttp(req: IncomingMessage, res: ServerResponse): void {
    this.httpHandler(req, res);
  }

  status(): Record<string, unknown> {
    const key = this.state.finished ? null : this.state.nextKey();
    const { train, model } = this.opts.config;
    const bytes = this.bytesTotal();
    return {
      runId: this.runId,
      iteration: this.state.iteration,
      iterations: this.opts.config.train.iterations,
      epoch: this.state.epoch,
      phase: key,
      finished: this.state.finished,
      stopping: this.stopping,
      /** --linger: the run is over and this server stays up until then (ISO time), else null. */
      lingerUntil: this.lingerUntil,
      versions: this.state.versions,
      run: {
        dataset: train.dataset,
        model: model.kind,
        batchSize: train.batchSize,
        shards: train.shards,
        dSteps: train.dSteps,
        seed: train.seed,
        backend: this.opts.backendName,
        wire: this.wire,
        gEma: train.gEma ?? 0,
      },
      mbSent: Number((bytes.sent / 1e6).toFixed(2)),
      mbReceived: Number((bytes.received / 1e6).toFixed(2)),
      workers: this.readyWorkers.map((s) => ({
        id: s.workerId,
        host: s.host,
        address: s.address,
        backend: s.backend,
        shardsDone: s.shardsDone,
        shardsOverdue: s.shardsOverdue,
        shardsHeld: this.phase?.owes(s) ?? 0,
        msPerShard: Number(s.msPerShard.toFixed(2)),
        connectedAt: new Date(s.connectedAt).toISOString(),
        lastSeen: new Date(s.lastSeen).toISOString(),
      })),
    };
  }

  // ---------------------------------------------------------------- connections

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    const address = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    // Before anything else can happen to it: an EventEmitter 'error' without a listener throws,
    // and a malformed frame from any peer (even one we are refusing) emits one.
    let session: WorkerSession | null = null;
    ws.on('error', (err) => this.onSocketError(session, address, err));
    if (this.stopping) return this.refuse(ws, WS_CLOSE.shuttingDown, 'SHUTTING_DOWN');
    const pending = [...this.sessions.values()].filter((s) => s.state === 'hello' || s.state === 'auth').length;
    if (pending >= this.opts.network.maxPendingHandshakes) {
      this.log.warn({ event: 'warning', code: 'HANDSHAKE_FLOOD', address, pending }, 'too many connections still in their handshake; refusing this one');
      return this.refuse(ws, 1013, 'TOO_MANY_PENDING');
    }
    session = new WorkerSession(this.nextSessionId++, ws, address);
    session.socket = req.socket;
    session.maxQueuedBytes = this.maxQueuedBytes;
    this.track(session, req);
  }

  /** Wires a new connection's events to its session (the 'error' listener is attached already). */
  private track(session: WorkerSession, req: IncomingMessage): void {
    const { ws, address } = session;
    session.clock = this.timeSplit;
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
        session.close(WS_CLOSE.protocolError, 'HANDSHAKE_TIMEOUT', `handshake not completed within ${this.opts.network.handshakeTimeoutMs} ms`);
      }
    }, this.opts.network.handshakeTimeoutMs);
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
        this.reject(session, WS_CLOSE.protocolError, 'TEXT_FRAME', 'text frames are not part of the protocol');
        return;
      }
      // Before the handshake completes only hello and auth (< 1 KB) are legitimate.
      const t0 = performance.now();
      const res = decode(frame, session.state === 'ready' ? this.limits : this.handshakeLimits);
      this.timeSplit.addCodec(performance.now() - t0);
      if (!res.ok) {
        const reason = res.code === 'PROTOCOL_MISMATCH' ? `coordinator speaks protocol ${PROTOCOL_VERSION}; ${res.reason}` : res.reason;
        this.reject(session, closeCodeFor(res.code), res.code, reason);
        return;
      }
      this.onMessage(session, res.msg, recvMs);
    });
    ws.on('close', (code, reason) => {
      clearTimeout(handshakeTimer);
      this.onClosed(session, code, reason.toString());
    });
  }

  /**
   * A refused connection: a close code and reason, no session, and no waiting for the peer's
   * half of the close handshake (a flood of silent peers would otherwise hold sockets for 30 s).
   */
  private refuse(ws: WebSocket, closeCode: number, code: string): void {
    ws.close(closeCode, code);
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
    const reason = `${queuedBytes} bytes queued for this worker (limit ${this.maxQueuedBytes}): it stopped reading`;
    this.log.warn({ event: 'warning', code: 'SLOW_CONSUMER', worker: session.label, address: session.address, queuedBytes, limit: this.maxQueuedBytes }, `dropping worker ${session.label}: ${reason}`);
    // A close handshake cannot get through a peer that does not read: cut the connection.
    session.state = 'closed';
    session.ws.terminate();
    this.depart(session, WS_CLOSE.slowConsumer, 'SLOW_CONSUMER');
  }

  /** Closes a misbehaving connection with a stable code and logs it; training carries on. */
  private reject(session: WorkerSession, closeCode: number, code: string, reason: string): void {
    this.log.warn({ event: 'warning', code, worker: session.label, address: session.address, reason }, `closing connection: ${reason}`);
    session.close(closeCode, code, reason);
    // Release its shards now rather than after the close handshake (up to 30 s with a silent peer).
    this.depart(session, closeCode, code);
  }

  private onMessage(session: WorkerSession, msg: Message, recvMs = 0): void {
    switch (msg.type) {
      case 'hello':
        if (session.state !== 'hello') return this.reject(session, WS_CLOSE.protocolError, 'UNEXPECTED_HELLO', 'hello sent twice');
        return this.onHello(session, msg);
      case 'auth': {
        if (session.state !== 'auth' || !session.nonce || !this.opts.network.token) {
          return this.reject(session, WS_CLOSE.protocolError, 'UNEXPECTED_AUTH', 'auth sent without a pending challenge');
        }
        const ok = verifyHmac(this.authSecrets.get(session) ?? this.opts.network.token, session.nonce, msg.hmac);
        session.nonce = null; // one answer per nonce: a replayed or second auth fails
        if (!ok) return this.reject(session, WS_CLOSE.authFailed, 'AUTH_FAILED', 'authentication failed: the worker token does not match the coordinator token');
        return this.admit(session);
      }
      case 'result':
        if (session.state !== 'ready') return this.reject(session, WS_CLOSE.protocolError, 'NOT_AUTHENTICATED', 'result before the handshake completed');
        return this.onResult(session, msg, recvMs);
      case 'bye':
        this.log.info({ event: 'worker_bye', worker: session.label, code: clip(msg.code), reason: clip(msg.reason) }, 'worker says goodbye');
        session.state = 'closed';
        session.ws.close(1000, 'BYE');
        return;
      default:
        return this.reject(session, WS_CLOSE.protocolError, 'UNEXPECTED_MESSAGE', `workers do not send '${msg.type}' messages`);
    }
  }

  private onHello(session: WorkerSession, msg: HelloMsg): void {
    session.workerId = msg.workerId;
    session.backend = msg.backend;
    session.host = msg.host;
    session.capabilities = msg.capabilities.wire;
    const refusal = browserRefusal(msg, this.opts.network.browserWorkers !== false);
    if (refusal) return this.reject(session, WS_CLOSE.unsupported, refusal.code, refusal.reason);
    if (this.wire !== 'fp32' && !msg.capabilities.wire.includes(this.wire)) {
      return this.reject(
        session,
        WS_CLOSE.unsupported,
        'WIRE_UNSUPPORTED',
        `this run sends weights and gradients as --wire ${this.wire}, and worker ${msg.workerId} only speaks ${msg.capabilities.wire.filter((w) => (WIRE_FORMATS as readonly string[]).includes(w)).join(', ') || 'no wire format this coordinator knows'}: upgrade the worker, or start a run with --wire fp32`,
      );
    }
    if (this.opts.network.token) {
      const auth = authSecret(this.opts.network.token, msg);
      if ('code' in auth) return this.reject(session, WS_CLOSE.authFailed, auth.code, auth.reason);
      this.authSecrets.set(session, auth.secret);
      session.state = 'auth';
      session.nonce = newNonce();
      session.send({ type: 'challenge', nonce: session.nonce });
    } else {
      this.admit(session);
    }
  }

  private admit(session: WorkerSession): void {
    const ban = this.banned.get(session.workerId);
    if (ban) return this.reject(session, WS_CLOSE.banned, 'BANNED', `worker ${session.workerId} is banned from this run: ${ban.reason}`);
    // A reconnecting worker (same id) replaces its stale connection.
    for (const other of this.sessions.values()) {
      if (other !== session && other.state === 'ready' && other.workerId === session.workerId) {
        this.reject(other, WS_CLOSE.replaced, 'REPLACED', 'a newer connection with the same worker id took over');
      }
    }
    session.assumeSpeedOf(this.readyWorkers);
    session.state = 'ready';
    session.admitted = true;
    setMessageLimit(session.ws, this.limits.maxFrameBytes);
    // Optional features (shared/protocol.ts PROTOCOL_FEATURES) only for workers that listed them;
    // rows-u8 only where the data set is 8-bit.
    const rowCodes = this.rowCodes();
    session.features = PROTOCOL_FEATURES.filter((f) => session.capabilities.includes(f) && (f !== 'rows-u8' || rowCodes !== null));
    const { weights, versions } = this.state;
    session.send({
      type: 'welcome',
      runId: this.runId,
      config: this.opts.config as unknown as Record<string, unknown>,
      ...(session.features.length > 0 ? { features: session.features } : {}),
      ...(rowCodes && session.features.includes('rows-u8') ? { palette: rowCodes.palette } : {}),
      // encode() sends g and d (and must later send weights) in the welcome's wire format.
      ...(this.wire !== 'fp32' ? { wire: this.wire } : {}),
      g: { version: versions.G, weights: weights.G },
      d: { version: versions.D, weights: weights.D },
    });
    session.known = { ...versions };
    const backends = new Set(this.readyWorkers.map((s) => s.backend));
    this.log.info(
      { event: 'worker_joined', worker: session.workerId, sessionId: session.sessionId, address: session.address, host: session.host, backend: session.backend, workers: this.readyWorkers.length },
      `worker ${session.workerId} joined`,
    );
    if (backends.size > 1) {
      this.log.warn({ event: 'warning', code: 'MIXED_BACKENDS', backends: [...backends] }, 'workers use different compute backends; results stay correct but are no longer bit-identical to a single-backend run');
    }
    this.wakePhase?.();
  }

  private onClosed(session: WorkerSession, code: number, reason: string): void {
    session.state = 'closed';
    if (this.sessions.delete(session.sessionId)) {
      this.retiredBytes.sent += session.bytesOut;
      this.retiredBytes.received += session.bytesIn;
      if (session.admitted) this.byteWindows.retire(session.sessionId, session.workerId, session.counters());
    }
    this.depart(session, code, reason);
  }

  /** Once per admitted session: its unfinished shards go back to the pool, and it is logged. */
  private depart(session: WorkerSession, code: number, reason: string): void {
    if (!session.admitted || session.departed) return;
    session.departed = true;
    const orphaned = this.phase ? this.phase.release(session) : [];
    this.log.info(
      { event: 'worker_left', worker: session.workerId, sessionId: session.sessionId, address: session.address, backend: session.backend, code, reason: reason || undefined, shardsDone: session.shardsDone, workers: this.readyWorkers.length },
      `worker ${session.workerId} left`,
    );
    if (orphaned.length > 0 && this.phase) {
      const { iteration, phase, dStep } = this.phase.plan;
      this.log.info({ event: 'shard_reassigned', from: session.workerId, shards: orphaned, iteration, phase, dStep }, `${orphaned.length} unfinished shard(s) go back to the pool`);
    }
    this.wakePhase?.();
  }

  /**
   * Every heartbeatMs: a worker that answered neither the previous ping nor with a result since
   * is dropped; the others get a fresh ping. Pongs count only when they echo our ping's payload.
   */
  private checkHeartbeats(): void {
    for (const s of this.sessions.values()) {
      if (s.state !== 'ready') continue;
      if (!s.pingOrExpire()) {
        this.log.warn({ event: 'warning', code: 'HEARTBEAT_TIMEOUT', worker: s.label }, 'worker stopped answering pings; dropping it');
        s.ws.terminate();
      }
    }
  }

  // ---------------------------------------------------------------- results

  private onResult(session: WorkerSession, msg: ResultMsg, recvMs = 0): void {
    const task = session.task(msg.taskId);
    const block = { first: msg.firstShard, count: msg.count };
    const key = blockKey(block.first, block.count);
    if (!task || !task.blocks.has(key) || task.iteration !== msg.iteration || task.phase !== msg.phase || task.dStep !== msg.dStep) {
      return this.reject(session, WS_CLOSE.protocolError, 'RESULT_NOT_ASSIGNED', `result for shard block [${msg.firstShard}, ${msg.firstShard} + ${msg.count}) of task ${msg.taskId} (iteration ${msg.iteration} ${msg.phase}) that was never handed to this worker`);
    }
    // Checked for late results too, so a wrong length is refused whatever the timing.
    const expected = this.replica.layout[msg.phase as Net].total;
    if (msg.gradient.length !== expected) {
      return this.reject(session, WS_CLOSE.protocolError, 'GRADIENT_SIZE', `gradient for ${msg.phase} has ${msg.gradient.length} values; the model has ${expected}`);
    }
    session.proveAlive();
    const shardsIn = blockShards(block, this.opts.config.train.shards).length;
    const run = this.phase;
    const current = run && run.plan.iteration === msg.iteration && run.plan.phase === msg.phase && run.plan.dStep === msg.dStep;
    if (!current) {
      // Still a timing sample: a straggler whose results always arrive after its shards were
      // duplicated must not keep its optimistic initial estimate (and its share of every phase).
      session.recordCompute(msg.computeMs, shardsIn);
      this.noteCompute(session, msg.computeMs, false);
      this.log.debug({ worker: session.label, iteration: msg.iteration, phase: msg.phase, firstShard: msg.firstShard, count: msg.count }, 'late result for a finished phase dropped');
      return;
    }
    session.recordCompute(msg.computeMs, shardsIn);
    this.noteCompute(session, msg.computeMs, true);
    this.lastResultRecvMs = recvMs;
    if (msg.timing) {
      const t = msg.timing;
      const acc = this.phaseWorkerTiming.get(session.sessionId) ?? { codec: 0, transfer: 0 };
      acc.codec += t.decodeMs + t.loadMs + t.encodeMs;
      acc.transfer += t.recvMs + t.sendMs;
      this.phaseWorkerTiming.set(session.sessionId, acc);
    }
    const verdict = run.accept(session, block, { gradient: msg.gradient, loss: msg.stats.loss, dReal: msg.stats.dReal, dFake: msg.stats.dFake });
    if (verdict === 'disputed' || verdict === 'wrong') {
      const { iteration, phase, dStep } = run.plan;
      this.log.warn(
        { event: 'warning', code: 'VERIFY_MISMATCH', workers: verdict === 'wrong' ? [session.workerId] : run.opinionGivers(msg.firstShard), shardId: msg.firstShard, iteration, phase, dStep, settled: verdict === 'wrong' },
        verdict === 'wrong' ? `worker ${session.workerId} returned a result that differs from the verified one` : `two workers disagree on shard ${msg.firstShard}; another worker decides`,
      );
    }
    for (const convicted of run.takeConvicted()) this.ban(convicted, msg.firstShard);
    // Whatever the verdict, the worker may be idle now (or the phase done).
    this.wakePhase?.();
  }

  /**
   * A worker returned a result that differs from one two other workers agree on: it is closed
   * with WS_CLOSE.banned, may not rejoin this run (its workerId is kept in banned.json), and all
   * it contributed to the current phase is recomputed.
   */
  private ban(session: WorkerSession, shardId: number): void {
    const run = this.phase;
    const recomputed = run ? run.discard(session) : [];
    const { iteration, phase, dStep } = run?.plan ?? { iteration: this.state.iteration, phase: undefined, dStep: undefined };
    const reason = `its result for shard ${shardId} of iteration ${iteration}${phase ? ` ${phase}` : ''} differs from the one other workers agree on`;
    if (!this.banned.has(session.workerId)) this.banned.add({ workerId: session.workerId, reason, iteration, at: new Date().toISOString() });
    this.log.warn(
      { event: 'worker_banned', code: 'WRONG_RESULT', worker: session.workerId, sessionId: session.sessionId, address: session.address, backend: session.backend, shardId, iteration, phase, dStep, recomputed, banned: this.banned.size },
      `worker ${session.workerId} banned: ${reason}`,
    );
    for (const s of [...this.sessions.values()]) {
      if (s.workerId === session.workerId && s.state !== 'closed') this.reject(s, WS_CLOSE.banned, 'BANNED', `banned from this run: ${reason}`);
    }
  }

  /** Time split bookkeeping (docs/status-log.md): every result's compute, per phase per worker. */
  private noteCompute(session: WorkerSession, computeMs: number, currentPhase: boolean): void {
    this.timeSplit.addCompute(computeMs);
    this.telemetry.resultReceived(computeMs);
    if (currentPhase) this.phaseCompute.set(session.sessionId, (this.phaseCompute.get(session.sessionId) ?? 0) + computeMs);
  }

  // ---------------------------------------------------------------- scheduling

  private sendTasks(assignments: Assignment<WorkerSession>[]): void {
    const run = this.phase!;
    const { plan } = run;
    const { versions } = this.state;
    for (const a of assignments) {
      const taskId = this.nextTaskId++;
      const codes = a.worker.features.includes('rows-u8') ? this.rowCodes() : null;
      const shards: ShardSpec[] = a.shardIds.map((id) => {
        const s = plan.shards[id];
        const spec: ShardSpec = { shardId: s.shardId, seed: s.seed, rows: s.rows };
        // A byte per value instead of a float where the worker and the data set allow it.
        if (s.realRows && codes) spec.realCodes = codesOfRows(codes, sampleDim(this.opts.config.model), s.realRows);
        else if (s.real) spec.real = s.real;
        if (s.realLabels) spec.realLabels = s.realLabels;
        return spec;
      });
      const blocks = run.blocksOf(a);
      a.worker.rememberTask(taskId, { iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, shardIds: new Set(a.shardIds), blocks: new Set(blocks.map((b) => blockKey(b.first, b.count))) });
      a.worker.send({ type: 'task', taskId, iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, gVersion: versions.G, dVersion: versions.D, shards, shardCount: plan.shards.length, blocks });
      if (a.duplicate) {
        this.log.info({ event: 'shard_duplicated', to: a.worker.workerId, shards: a.shardIds, iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep }, 'straggler: shard duplicated to an idle worker');
      }
    }
  }

  /** Hands out unassigned shards and duplicates overdue ones. */
  private dispatch(): void {
    const run = this.phase;
    if (!run || run.done) return;
    for (const late of run.overdue()) late.worker.noteOverdue(late.ageMs, late.first);
    const ready = this.readyWorkers;
    const idle = ready.filter((w) => run.owes(w) === 0);
    this.sendTasks(run.assignUnassigned(idle.length > 0 ? idle : ready));
    this.sendTasks(run.assignVerification(ready));
    this.sendTasks(run.duplicateOverdue(ready.filter((w) => run.owes(w) === 0)));
  }

  private async runPhase(): Promise<PhaseSummary | null> {
    const t0 = performance.now();
    const plan = this.state.planNext();
    const verified = selectVerifiedShards(this.opts.config.train.seed, plan, plan.shards.length, this.opts.schedule.verifyFraction ?? 0);
    const run = new PhaseRun<WorkerSession>(plan, this.opts.schedule.straggler, verified);
    this.phase = run;
    this.warnIfWorkersIdle(plan.shards.length);
    this.phaseCompute.clear();
    this.phaseWorkerTiming.clear();
    this.lastResultRecvMs = 0;
    const tDispatch = performance.now();
    const tick = this.opts.schedule.tickMs;
    while (!run.done) {
      if (this.stopping) {
        this.state.abandon(plan);
        this.phase = null;
        this.log.info({ event: 'phase_abandoned', iteration: plan.iteration, phase: plan.phase, dStep: plan.dStep, shardsIn: plan.shards.length - run.outstanding }, 'stopping: the unfinished phase is dropped and will be recomputed on resume');
        return null;
      }
      if (this.readyWorkers.length === 0) {
        const now = performance.now();
        if (now - this.lastWaitingLogAt >= this.opts.schedule.waitingLogMs) {
          this.lastWaitingLogAt = now;
          this.log.warn({ event: 'warning', code: 'NO_WORKERS', iteration: plan.iteration, phase: plan.phase }, 'no workers connected; waiting for workers to join');
        }
      } else {
        this.lastWaitingLogAt = -Infinity;
      }
      this.dispatch();
      this.warnIfVerificationStuck(run);
      this.maybeReportStatus();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, tick);
        this.wakePhase = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wakePhase = null;
    }
    const tResults = performance.now();
    const summary = this.state.applyBlocks(plan, run.blocks());
    this.phase = null;
    const before = this.timeSplit.pendingOwnMs();
    this.broadcastWeights(plan.phase);
    const broadcastOwn = this.timeSplit.pendingOwnMs();
    const tEnd = performance.now();
    const phaseMs = tResults - tDispatch;
    const applyMs = tDispatch - t0 + (tEnd - tResults);
    // The critical worker: the one with the most compute in this phase.
    let busiest = 0;
    let critical = -1;
    for (const [id, ms] of this.phaseCompute) if (ms > busiest || critical < 0) [busiest, critical] = [ms, id];
    const workerTiming = this.phaseWorkerTiming.get(critical) ?? { codec: 0, transfer: 0 };
    const waitingMs = this.timeSplit.addPhase({
      wallMs: tEnd - t0,
      resultsMs: phaseMs,
      applyMs,
      broadcastCodecMs: broadcastOwn.codec - before.codec,
      broadcastSendMs: broadcastOwn.send - before.send,
      busiestComputeMs: busiest,
      criticalCodecMs: workerTiming.codec,
      criticalTransferMs: workerTiming.transfer + this.lastResultRecvMs,
    });
    this.telemetry.phaseApplied(plan.phase, phaseMs, waitingMs, applyMs);
    return summary;
  }

  /**
   * Verified shards wait for a second (or tie-breaking) worker rather than count unverified; when
   * no connected worker may check them, say so at once and then every waitingLogMs.
   */
  private warnIfVerificationStuck(run: PhaseRun<WorkerSession>): void {
    if (run.verified.size === 0 || run.done || this.readyWorkers.length === 0) return;
    const waiting = run.awaitingOpinion();
    if (waiting.shards.length === 0) {
      this.lastVerifyWaitLogAt = -Infinity;
      return;
    }
    const now = performance.now();
    if (now - this.lastVerifyWaitLogAt < this.opts.schedule.waitingLogMs) return;
    this.lastVerifyWaitLogAt = now;
    const { iteration, phase, dStep } = run.plan;
    const code = waiting.disputed ? 'VERIFY_NEEDS_ANOTHER_WORKER' : 'VERIFY_NEEDS_TWO_WORKERS';
    const on = waiting.backend ? ` on backend ${waiting.backend}` : '';
    this.log.warn(
      { event: 'warning', code, iteration, phase, dStep, shards: waiting.shards, backend: waiting.backend ?? undefined, workers: this.readyWorkers.length },
      waiting.disputed
        ? `workers disagree on shard(s) ${waiting.shards.join(',')} and no other worker${on} is connected to decide; waiting for one to join`
        : `--verify-fraction needs results from two different workers${on}; waiting for another worker to join (nothing unverified is applied)`,
    );
  }

  /**
   * More workers than shards: the rest idle every phase. Said once per (workers, shards) pair,
   * with the --shards that would use them all (a divisor of the batch, so it is valid).
   */
  private warnIfWorkersIdle(shards: number): void {
    const workers = this.readyWorkers.filter((w) => !w.late).length;
    const key = workers > shards ? `${workers}/${shards}` : '';
    if (key === this.idleWarnedFor) return;
    this.idleWarnedFor = key;
    if (!key) return;
    const { batchSize } = this.opts.config.train;
    let suggest = workers;
    while (suggest < batchSize && batchSize % suggest !== 0) suggest++;
    this.log.warn(
      { event: 'warning', code: 'WORKERS_IDLE', workers, shardsPerPhase: shards, idle: workers - shards, suggestShards: suggest },
      `${workers} workers share ${shards} shard(s) per phase, so ${workers - shards} idle in every phase; a run with --shards ${suggest} (a divisor of --batch-size ${batchSize}) would use them all`,
    );
  }

  /** The training set's one-byte row codes (computed once, shared/data/row-codes.ts), or null: not 8-bit, or a mixture. */
  private rowCodes(): RowCodes | null {
    const { source } = this.opts;
    return source.kind === 'finite' ? rowCodesOf(source.train) : null;
  }

  /** After an update, every worker gets the net that changed (and only that one). */
  private broadcastWeights(net: Net): void {
    const version = this.state.versions[net];
    const weights = this.state.weights[net];
    let frame: Uint8Array | null = null;
    for (const s of this.readyWorkers) {
      if (s.known[net] === version) continue;
      // One encoding of a multi-megabyte net serves every worker.
      if (!frame) {
        const t0 = performance.now();
        frame = encode({ type: 'weights', net, version, weights }, { wire: this.wire });
        this.timeSplit.addCodec(performance.now() - t0);
      }
      s.sendFrame(frame);
      s.known[net] = version;
    }
  }

  /**
   * A progress line (fields: docs/status-log.md) when `due` (every --log-every iterations, and at
   * the end) or when --status-interval seconds passed since the last one; never for a window in
   * which no iteration completed (while waiting, NO_WORKERS says why).
   */
  private maybeReportStatus(due = false): void {
    const now = performance.now();
    if (this.progress.pendingIterations === 0) return;
    if (!due && now - this.lastStatusAt < this.opts.report.statusIntervalMs) return;
    this.lastStatusAt = now;
    const rec = roundRecord(this.progress.flush());
    const split = roundRecord(this.timeSplit.flush(now));
    const iterations = this.opts.config.train.iterations;
    const bytes = this.bytesTotal();
    this.metricsTail = [...this.metricsTail, rec].slice(-10);
    this.log.info(
      {
        event: 'progress',
        ...rec,
        iterations,
        epoch: this.state.epoch,
        workers: this.readyWorkers.length,
        ...split,
        mbSent: Number((bytes.sent / 1e6).toFixed(2)),
        mbReceived: Number((bytes.received / 1e6).toFixed(2)),
        workerBytes: this.byteWindows.flush([...this.sessions.values()].filter((s) => s.admitted).map((s) => ({ key: s.sessionId, worker: s.workerId, counters: s.counters() }))),
        etaS: this.eta.update(this.state.iteration, iterations, now),
        ...resourceUsage(),
      },
      'progress',
    );
  }

  private writeSample(): void {
    // The generator users get (--g-ema: the moving average); the coordinator's replica never trains.
    this.replica.setWeights('G', this.state.generatorWeights);
    const file = writeSampleImage(this.replica, this.opts.source, join(this.opts.runDir, 'samples'), this.state.iteration);
    this.log.info({ event: 'sample_written', iteration: this.state.iteration, file }, 'sample written');
  }

  /** One `eval` event: G's metrics on a few samples (shared/eval/periodic.ts). */
  private evaluate(): void {
    this.replica.setWeights('G', this.state.generatorWeights);
    const fields = runPeriodicEvaluation(this.opts.evaluation!, (z, rows, labels) => this.replica.generate(z, rows, labels), this.state.iteration, this.opts.config.train.seed);
    // `generator` says which G was measured: with --g-ema, the moving average.
    this.log.info({ event: 'eval', ...fields, generator: this.opts.config.train.gEma ? 'g-ema' : 'g' }, 'evaluation');
  }

  /** Writes a checkpoint of the current state (a phase boundary), unless this one exists already. */
  saveCheckpoint(): string | null {
    const key = `${this.state.iteration}/${this.state.dStep}`;
    if (this.lastCheckpointAt === key) return null;
    const t0 = performance.now();
    const { every: _every, ...writer } = this.opts.checkpoint;
    const dir = writeCheckpoint({ ...writer, runDir: this.opts.runDir }, this.state.snapshot(), {
      config: this.opts.config,
      runId: this.runId,
      metricsTail: this.metricsTail,
    });
    this.lastCheckpointAt = key;
    this.log.info({ event: 'checkpoint_saved', iteration: this.state.iteration, dStep: this.state.dStep, dir, ms: Math.round(performance.now() - t0) }, 'checkpoint saved');
    this.writeReport('training');
    return dir;
  }

  /** <run-dir>/report.html (coordinator/run-report.ts); a failure is a warning, never the end of the run. */
  private writeReport(state: 'training' | 'finished' | 'stopped', result?: { seconds: number; weightsHash: string }): void {
    const t0 = performance.now();
    try {
      const { iteration } = this.state;
      const t = this.telemetry;
      const w = writeRunReport({ runDir: this.opts.runDir, runId: this.runId, config: this.opts.config, backend: this.opts.backendName, iteration, iterations: this.opts.config.train.iterations, state, result, progress: t.history().points, evals: t.evals, workers: t.workersSeen(), live: this.readyWorkers.map((s) => ({ id: s.workerId, shardsDone: s.shardsDone })) });
      this.log.info({ event: 'report_written', iteration, ...w, ms: Math.round(performance.now() - t0) }, 'report written');
    } catch (err) {
      this.log.warn({ event: 'warning', code: 'REPORT_FAILED', err: clip(err instanceof Error ? err.message : String(err)) }, 'could not write report.html');
    }
  }

  /** Trains until the configured number of iterations or until stop(). */
  async run(): Promise<RunResult> {
    const started = performance.now();
    const { sampleEvery } = this.opts.report;
    this.log.info({ event: 'training', iteration: this.state.iteration, iterations: this.opts.config.train.iterations, verifyFraction: this.opts.schedule.verifyFraction || undefined, banned: this.banned.size || undefined }, 'training started');
    this.eta.start(this.state.iteration);
    while (!this.state.finished && !this.stopping) {
      const summary = await this.runPhase();
      if (!summary) break;
      this.progress.add(summary);
      this.liveBar.phase(summary, this.opts.config.train.iterations, this.readyWorkers.length);
      if (summary.phase !== 'G') continue;
      const it = this.state.iteration;
      this.maybeReportStatus(it % this.opts.report.logEvery === 0);
      if (sampleEvery > 0 && it % sampleEvery === 0) this.writeSample();
      if (this.opts.evaluation && it % this.opts.evaluation.every === 0) this.evaluate();
      if (this.opts.checkpoint.every > 0 && it % this.opts.checkpoint.every === 0) this.saveCheckpoint();
    }
    this.liveBar.end();
    this.maybeReportStatus(true);
    this.saveCheckpoint();
    if (sampleEvery === 0 || this.state.iteration % sampleEvery !== 0) this.writeSample();
    if (this.opts.evaluation && this.state.iteration % this.opts.evaluation.every !== 0) this.evaluate();
    const weightsHash = hashFloats(this.state.weights.G, this.state.weights.D);
    this.replica.setWeights('G', this.state.generatorWeights);
    this.replica.setWeights('D', this.state.weights.D);
    const exported = await exportModels(this.replica, join(this.opts.runDir, 'export'), { config: this.opts.config, iteration: this.state.iteration, weightsHash });
    this.log.info({ event: 'exported', iteration: this.state.iteration, ...exported }, 'G and D exported as TensorFlow.js LayersModels');
    const result: RunResult = {
      iterations: this.state.iteration,
      weightsHash,
      seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
      stopped: this.stopping,
    };
    this.writeReport(this.stopping ? 'stopped' : 'finished', result);
    this.log.info({ event: 'run_finished', ...result, runDir: this.opts.runDir }, this.stopping ? 'run stopped' : 'run finished');
    return result;
  }

  /** Ends the run loop at the next phase boundary (the current phase is abandoned). */
  requestStop(): void {
    this.stopping = true;
    this.wakePhase?.();
  }

  /**
   * Says goodbye to every worker (a bye, then cut after a short grace) while the server stays up:
   * new connections are refused (SHUTTING_DOWN) and HTTP keeps serving (--linger). close() does
   * this first if it was not done.
   */
  async releaseWorkers(byeCode = 'RUN_FINISHED', reason = 'the run is finished'): Promise<void> {
    if (this.workersReleased) return;
    this.workersReleased = true;
    this.stopping = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const s of this.sessions.values()) s.close(WS_CLOSE.shuttingDown, byeCode, reason);
    // A hung or partitioned worker would hold its close handshake for ws's 30 s close timeout.
    // Wait briefly for the sessions to close, then cut the rest.
    const closed = [...this.sessions.values()].map((s) => (s.ws.readyState === s.ws.CLOSED ? undefined : new Promise<void>((resolve) => s.ws.once('close', () => resolve()))));
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (grace = setTimeout(resolve, 2000)))]);
    clearTimeout(grace);
    for (const s of this.sessions.values()) s.ws.terminate();
  }

  /** Says goodbye to every worker (unless releaseWorkers() did) and closes the server. */
  async close(byeCode = 'RUN_FINISHED', reason = 'the run is finished'): Promise<void> {
    await this.releaseWorkers(byeCode, reason);
    // ws@8 calls back only once every client finished its close handshake: cut whatever is left.
    const closed = new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    await closed;
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections?.();
    this.replica.dispose();
    this.opts.evaluation?.evaluator.dispose();
  }
}
