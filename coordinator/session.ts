/**
 * One worker connection as the coordinator sees it: handshake state, what weights it holds,
 * how fast it is, what it was asked to compute, and byte counters.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { encode } from '../shared/codec.ts';
import { verifyHmac, newNonce } from '../shared/auth.ts';
import { clip, type Logger } from '../shared/log.ts';
import { closeCodeFor, WIRE_FORMATS, type ByeCode, type HelloMsg, type MessageOf, type Outgoing, type Message, type Net, type Phase, type ResultMsg, type WireFormat } from '../shared/protocol.ts';
import type { Assignee } from './phase-run.ts';
import { authSecret, browserRefusal } from './browser-join.ts';
import type { ByteCounters } from '../trainer/progress.ts';

/**
 * What a session's state machine needs from the coordinator: the token, wire format and browser
 * policy it checks the handshake against, and where a rejection, an admission and a result go.
 */
export interface SessionContext {
  token: string | null;
  wire: WireFormat;
  /** Accept workers running in a browser tab (hello.browser); false with --no-browser-workers. */
  browserWorkers: boolean;
  log: Logger;
  reject(session: WorkerSession, code: ByeCode, reason: string): void;
  /** The handshake passed: the coordinator may still refuse (a ban) or admit it with a welcome. */
  admit(session: WorkerSession): void;
  result(session: WorkerSession, msg: ResultMsg, recvMs: number): void;
  /** A relay-tree message (relay-offer, sum, receipt, relay-report) from a ready session. */
  tree(session: WorkerSession, msg: RelayTreeMsg, recvMs: number): void;
}

/** What a worker sends about the relay tree (coordinator/relay-tree.ts). */
export type RelayTreeMsg = MessageOf<'relay-offer'> | MessageOf<'sum'> | MessageOf<'receipt'> | MessageOf<'relay-report'>;

/**
 * Every intervalMs: a ready worker that answered neither the previous ping nor with a result
 * since is expired; the others get a fresh ping. Pongs count only when they echo our payload.
 */
export class Heartbeat {
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs: number, sessions: () => Iterable<WorkerSession>, expired: (session: WorkerSession) => void) {
    this.timer = setInterval(() => {
      for (const s of sessions()) {
        if (s.state === 'ready' && !s.pingOrExpire()) expired(s);
      }
    }, intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Receives the time spent encoding frames and handing them to the socket (ms). */
export interface SessionClock {
  addCodec(ms: number): void;
  addSend(ms: number): void;
}

export type SessionState = 'hello' | 'auth' | 'ready' | 'closed';

export interface TaskRecord {
  iteration: number;
  phase: Phase;
  dStep: number;
  shardIds: Set<number>;
  /** The blocks handed out (blockKey): the only results this task may answer with. */
  blocks: Set<string>;
}

/** How many past tasks a session remembers, to tell a late result from a forged one. */
const TASK_MEMORY = 16;
/** Until a worker has reported, assume this per-shard time (ms). */
const INITIAL_MS_PER_SHARD = 50;

export class WorkerSession implements Assignee {
  state: SessionState = 'hello';
  /** Passed the handshake at some point (so its departure is a worker_left). */
  admitted = false;
  /** Its departure has been handled (shards released, logged). */
  departed = false;
  workerId = '';
  backend = '';
  host = '';
  nonce: Uint8Array | null = null;
  /** What its auth HMAC is keyed with: the run token, or the short-lived join key its hello named (coordinator/join-key.ts). */
  private authKey: string | null = null;
  /** Weight versions this worker holds (after the frames queued to it are delivered). */
  known: Record<Net, number> = { G: -1, D: -1 };
  msPerShard = INITIAL_MS_PER_SHARD;
  shardsDone = 0;
  bytesIn = 0;
  bytesOut = 0;
  framesIn = 0;
  framesOut = 0;
  /** Optional protocol features turned on for this connection (welcome.features). */
  features: string[] = [];
  /** Wire features the worker listed in its hello. */
  capabilities: string[] = [];
  /** The TCP socket under the WebSocket, for byte counts at the wire; null in unit tests. */
  socket: Socket | null = null;
  /**
   * The payload of the coordinator's unanswered ping, or null when the last one was answered.
   * Only a pong echoing it proves the worker reads what we send: unsolicited pongs do not count.
   */
  private pingPayload: Buffer | null = null;
  /** Frames queued in user space (ws bufferedAmount) past which the worker is a slow consumer; Infinity: no bound. */
  maxQueuedBytes = Infinity;
  /** Called once when a send leaves more than maxQueuedBytes queued (the worker stopped reading). */
  onOverflow: ((queuedBytes: number) => void) | null = null;
  /** Shards of this worker that passed their deadline (straggler policy) while it held them. */
  shardsOverdue = 0;
  /** A shard it held went overdue and it has returned no result since (see Assignee.late). */
  late = false;

  get measured(): boolean {
    return this.shardsDone > 0;
  }
  readonly connectedAt = Date.now();
  lastSeen = Date.now();
  private tasks = new Map<number, TaskRecord>();

  /** Where encode and socket-write time go (the coordinator's time split); none in unit tests. */
  clock: SessionClock | null = null;

  constructor(readonly sessionId: number, readonly ws: WebSocket, readonly address: string) {}

  /**
   * Until its first result, assume a newcomer is as fast as the typical worker already here
   * (the median estimate), so it neither takes most of a phase nor next to none of it.
   */
  assumeSpeedOf(others: readonly WorkerSession[]): void {
    const known = others.filter((o) => o !== this && o.measured).map((o) => o.msPerShard).sort((a, b) => a - b);
    if (known.length > 0) this.msPerShard = known[Math.floor(known.length / 2)];
  }

  /** Cumulative byte counters of this connection (progress lines report their per-window deltas). */
  counters(): ByteCounters {
    return {
      sent: this.bytesOut,
      received: this.bytesIn,
      framesSent: this.framesOut,
      framesReceived: this.framesIn,
      wireSent: this.socket?.bytesWritten ?? 0,
      wireReceived: this.socket?.bytesRead ?? 0,
    };
  }

  get label(): string {
    return this.workerId ? `${this.workerId}#${this.sessionId}` : `#${this.sessionId}@${this.address}`;
  }

  send(msg: Outgoing<Message>): void {
    const t0 = performance.now();
    const frame = encode(msg);
    this.clock?.addCodec(performance.now() - t0);
    this.sendFrame(frame);
  }

  /** Everything sent on this connection has been handed to the kernel (no frame's memory is still referenced). */
  get flushed(): boolean {
    return this.ws.bufferedAmount === 0;
  }

  /** Sends an already-encoded frame (a broadcast encodes once for every worker). */
  sendFrame(frame: Uint8Array): void {
    if (this.state === 'closed') return;
    this.bytesOut += frame.byteLength;
    this.framesOut++;
    const t0 = performance.now();
    this.ws.send(frame);
    this.clock?.addSend(performance.now() - t0);
    // A peer that stops reading makes every frame for it queue here: cut it off at a bound.
    if (this.ws.bufferedAmount > this.maxQueuedBytes && this.onOverflow) {
      const overflow = this.onOverflow;
      this.onOverflow = null;
      overflow(this.ws.bufferedAmount);
    }
  }

  /** Liveness check: false if the previous ping is still unanswered; otherwise sends a fresh one. */
  pingOrExpire(): boolean {
    if (this.pingPayload) return false;
    this.pingPayload = randomBytes(8);
    this.ws.ping(this.pingPayload);
    return true;
  }

  /** A pong: counts only if it echoes the outstanding ping. */
  pong(payload: Buffer): void {
    if (this.pingPayload && payload.equals(this.pingPayload)) {
      this.pingPayload = null;
      this.lastSeen = Date.now();
    }
  }

  /** A result for a shard it was handed: as good as a pong. */
  proveAlive(): void {
    this.pingPayload = null;
    this.lastSeen = Date.now();
  }

  /**
   * A shard it holds is overdue by `ageMs`: its estimate becomes at least that, so the next
   * phases give it a share it can finish (none, next to fast workers) until results prove otherwise.
   */
  noteOverdue(ageMs: number, first: boolean): void {
    this.msPerShard = Math.max(this.msPerShard, ageMs);
    this.late = true;
    if (first) this.shardsOverdue++;
  }

  /**
   * The connection's state machine: hello -> (challenge, auth ->) admission -> ready, then
   * results until a bye or a close. A message out of turn is rejected with a stable code.
   */
  receive(msg: Message, recvMs: number, ctx: SessionContext): void {
    switch (msg.type) {
      case 'hello':
        if (this.state !== 'hello') return ctx.reject(this, 'UNEXPECTED_HELLO', 'hello sent twice');
        return this.onHello(msg, ctx);
      case 'auth': {
        if (this.state !== 'auth' || !this.nonce || !ctx.token) return ctx.reject(this, 'UNEXPECTED_AUTH', 'auth sent without a pending challenge');
        const ok = verifyHmac(this.authKey ?? ctx.token, this.nonce, msg.hmac);
        this.nonce = null; // one answer per nonce: a replayed or second auth fails
        if (!ok) return ctx.reject(this, 'AUTH_FAILED', 'authentication failed: the worker token does not match the coordinator token');
        return ctx.admit(this);
      }
      case 'result':
        if (this.state !== 'ready') return ctx.reject(this, 'NOT_AUTHENTICATED', 'result before the handshake completed');
        return ctx.result(this, msg, recvMs);
      case 'relay-offer':
      case 'sum':
      case 'receipt':
      case 'relay-report':
        if (this.state !== 'ready') return ctx.reject(this, 'NOT_AUTHENTICATED', `${msg.type} before the handshake completed`);
        if (!this.features.includes('relay')) return ctx.reject(this, 'UNEXPECTED_MESSAGE', `${msg.type} without the relay feature turned on`);
        return ctx.tree(this, msg, recvMs);
      case 'bye':
        ctx.log.info({ event: 'worker_bye', worker: this.label, code: clip(msg.code), reason: clip(msg.reason) }, 'worker says goodbye');
        this.state = 'closed';
        this.ws.close(closeCodeFor('BYE'), 'BYE');
        return;
      default:
        return ctx.reject(this, 'UNEXPECTED_MESSAGE', `workers do not send '${msg.type}' messages`);
    }
  }

  private onHello(msg: HelloMsg, ctx: SessionContext): void {
    this.workerId = msg.workerId;
    this.backend = msg.backend;
    this.host = msg.host;
    this.capabilities = msg.capabilities.wire;
    const refusal = browserRefusal(msg, ctx.browserWorkers);
    if (refusal) return ctx.reject(this, refusal.code, refusal.reason);
    if (ctx.wire !== 'fp32' && !msg.capabilities.wire.includes(ctx.wire)) {
      return ctx.reject(
        this,
        'WIRE_UNSUPPORTED',
        `this run sends weights and gradients as --wire ${ctx.wire}, and worker ${msg.workerId} only speaks ${msg.capabilities.wire.filter((w) => (WIRE_FORMATS as readonly string[]).includes(w)).join(', ') || 'no wire format this coordinator knows'}: upgrade the worker, or start a run with --wire fp32`,
      );
    }
    if (ctx.token) {
      const auth = authSecret(ctx.token, msg);
      if ('code' in auth) return ctx.reject(this, auth.code, auth.reason);
      this.authKey = auth.secret;
      this.state = 'auth';
      this.nonce = newNonce();
      this.send({ type: 'challenge', nonce: this.nonce });
    } else {
      ctx.admit(this);
    }
  }

  /** Admitted: it now receives weights and tasks, with these optional features turned on. */
  enterReady(features: string[]): void {
    this.state = 'ready';
    this.admitted = true;
    this.features = features;
  }

  /** Says why, then closes with the bye code's close code (the worker prints the reason). */
  close(byeCode: ByeCode, reason: string): void {
    if (this.state === 'closed') return;
    this.send({ type: 'bye', code: byeCode, reason });
    this.state = 'closed';
    // The close frame carries only the code (its reason is limited to 123 bytes); the bye has the text.
    this.ws.close(closeCodeFor(byeCode), byeCode);
  }

  rememberTask(taskId: number, rec: TaskRecord): void {
    this.tasks.set(taskId, rec);
    if (this.tasks.size > TASK_MEMORY) this.tasks.delete(this.tasks.keys().next().value!);
  }

  task(taskId: number): TaskRecord | undefined {
    return this.tasks.get(taskId);
  }

  /** Exponential moving average of reported compute time per shard (a result of `shards` shards took ms). */
  recordCompute(ms: number, shards = 1): void {
    this.late = false;
    const first = this.shardsDone === 0;
    this.shardsDone += shards;
    const perShard = ms / shards;
    this.msPerShard = first ? perShard : 0.8 * this.msPerShard + 0.2 * perShard;
  }
}
