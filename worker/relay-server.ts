/**
 * A relay's listener (gan-worker --relay-listen): the children the coordinator placed under this
 * worker dial it, present the ticket the coordinator gave them (relay-hello), then receive the
 * weights chunks this worker forwards and send their sums up to it. Only children named in the
 * coordinator's latest tree message, with their exact ticket, get in.
 *
 * Nothing from the network is trusted: the same guards as the coordinator's edge. Every frame is
 * decoded and validated with bounded limits (a handshake limit of 16 KiB until the ticket is
 * checked, a result-sized one after), a handshake has a deadline, a child that stops reading is
 * cut at a bound, a socket 'error' always has a listener, and a bad frame closes that connection
 * only. Node only (the ws package).
 */
import { timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { setMessageLimit } from '../shared/ws-frame-limit.ts';
import { decode, encode, type DecodeLimits } from '../shared/codec.ts';
import { clip } from '../shared/log.ts';
import { closeCodeFor, PROTOCOL_VERSION, type ByeCode, type SumMsg, type TreeChild } from '../shared/protocol.ts';
import type { WorkerLog } from './worker-core.ts';

const HANDSHAKE_BYTES = 16 * 1024;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Connections still before their ticket, at most: a relay's legitimate children (--fan-out of
 * them, 2 by the measurements) dial it only when placed or moved, while anyone who can reach the
 * port can open connections, each holding a socket and a deadline until it is refused. The excess
 * is closed at once with 1013 (try again later; a child retries), as the coordinator does
 * (maxPendingHandshakes).
 */
export const RELAY_MAX_PENDING = 32;

export interface RelayChild {
  workerId: string;
  ws: WebSocket;
  bytesOut: number;
  bytesIn: number;
}

export interface RelayServerOptions {
  host: string;
  port: number;
  log: WorkerLog;
  /** Limits for a child's frames after its ticket checked out (a sum: a gradient and a few fields). */
  limits(): DecodeLimits;
  /** A child passed the ticket check (replay the current weights chunks to it). */
  ready(child: RelayChild): void;
  /** A validated sum from a child. */
  sum(child: RelayChild, msg: SumMsg, frame: Uint8Array): void;
  /** Test hook: alter every forwarded chunk (GAN_TEST_RELAY_CORRUPT; plays a malicious relay). */
  corrupt?: boolean;
  /** Test hook: forward no chunks at all (GAN_TEST_RELAY_MUTE; plays a stalled relay). */
  mute?: boolean;
}

export class RelayServer {
  private wss: WebSocketServer | null = null;
  /** workerId -> ticket this relay accepts (from the coordinator's latest tree message). */
  private accepted = new Map<string, Uint8Array>();
  private readonly children = new Set<RelayChild>();
  /** Connections that have not yet presented a ticket. */
  private pending = 0;
  bytesRelayed = 0;

  constructor(private readonly opts: RelayServerOptions) {}

  async listen(): Promise<AddressInfo> {
    const { host, port, log } = this.opts;
    this.wss = new WebSocketServer({ host, port, maxPayload: HANDSHAKE_BYTES });
    this.wss.on('connection', (ws, req) => this.onConnection(ws, `${req.socket.remoteAddress}:${req.socket.remotePort}`));
    await new Promise<void>((resolve, reject) => {
      this.wss!.once('listening', resolve);
      this.wss!.once('error', reject);
    });
    this.wss.on('error', (err) => log.warn({ event: 'warning', code: 'RELAY_SOCKET_ERROR', err: clip(err.message) }, 'relay listener error'));
    return this.wss.address() as AddressInfo;
  }

  /** The children the coordinator placed here now; connected ones no longer listed are closed. */
  setAccepted(list: readonly TreeChild[]): void {
    this.accepted = new Map(list.map((c) => [c.workerId, c.ticket]));
    for (const c of this.children) {
      const t = this.accepted.get(c.workerId);
      if (!t) this.closeChild(c, 'RELAY_TICKET', 'the coordinator moved this child elsewhere');
    }
  }

  get childCount(): number {
    return this.accepted.size;
  }

  /** Forwards a chunk frame to every ready child (verbatim, or altered by the test hook). */
  forward(frame: Uint8Array): void {
    for (const c of this.children) this.sendTo(c, frame);
  }

  sendTo(c: RelayChild, frame: Uint8Array): void {
    if (c.ws.readyState !== c.ws.OPEN || this.opts.mute) return;
    const out = this.opts.corrupt ? corrupted(frame) : frame;
    c.bytesOut += out.byteLength;
    this.bytesRelayed += out.byteLength;
    c.ws.send(out);
    // A child that stops reading would make this relay buffer every copy: cut it off.
    if (c.ws.bufferedAmount > this.opts.limits().maxFrameBytes * 4 + (64 << 20)) {
      this.opts.log.warn({ event: 'warning', code: 'SLOW_CONSUMER', child: c.workerId, queuedBytes: c.ws.bufferedAmount }, 'relay child stopped reading; dropping it');
      c.ws.terminate();
    }
  }

  private closeChild(c: RelayChild, code: ByeCode, reason: string): void {
    this.children.delete(c);
    c.ws.close(closeCodeFor(code), code);
    this.opts.log.info({ event: 'relay_child_closed', child: c.workerId, code, reason }, `relay connection of ${c.workerId} closed: ${reason}`);
    setTimeout(() => c.ws.terminate(), 1000).unref();
  }

  private onConnection(ws: WebSocket, address: string): void {
    const { log } = this.opts;
    // First: an 'error' without a listener would throw (a malformed frame from anyone emits one).
    ws.on('error', (err) => log.warn({ event: 'warning', code: 'RELAY_SOCKET_ERROR', address, err: clip(err.message) }, 'relay connection error'));
    if (this.pending >= RELAY_MAX_PENDING) {
      log.warn({ event: 'warning', code: 'HANDSHAKE_FLOOD', address, pending: this.pending }, 'too many relay connections still before their ticket; refusing this one');
      ws.close(closeCodeFor('TOO_MANY_PENDING'), 'TOO_MANY_PENDING');
      setTimeout(() => ws.terminate(), 1000).unref();
      return;
    }
    this.pending++;
    let waiting = true;
    /** Leaves the pending count once: at the ticket, or when the connection ends before it. */
    const settle = () => {
      if (waiting) this.pending--;
      waiting = false;
    };
    let child: RelayChild | null = null;
    const refuse = (code: ByeCode, reason: string) => {
      log.warn({ event: 'warning', code, address, child: child?.workerId, reason }, `relay refuses a connection: ${reason}`);
      if (child) this.children.delete(child);
      ws.close(closeCodeFor(code), code);
      setTimeout(() => ws.terminate(), 1000).unref();
    };
    const timer = setTimeout(() => {
      if (!child) refuse('RELAY_HANDSHAKE', `no relay-hello within ${HANDSHAKE_TIMEOUT_MS} ms`);
    }, HANDSHAKE_TIMEOUT_MS);
    ws.on('close', () => {
      settle();
      clearTimeout(timer);
      if (child) this.children.delete(child);
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const frame = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (child) child.bytesIn += frame.byteLength;
      if (!isBinary) return refuse('TEXT_FRAME', 'text frames are not part of the protocol');
      const res = decode(frame, child ? this.opts.limits() : { ...this.opts.limits(), maxFrameBytes: HANDSHAKE_BYTES });
      if (!res.ok) return refuse(res.code, res.code === 'PROTOCOL_MISMATCH' ? `relay speaks protocol ${PROTOCOL_VERSION}; ${res.reason}` : res.reason);
      const msg = res.msg;
      if (!child) {
        if (msg.type !== 'relay-hello') return refuse('RELAY_HANDSHAKE', `expected relay-hello, got ${msg.type}`);
        const ticket = this.accepted.get(msg.workerId);
        if (!ticket || ticket.length !== msg.ticket.length || !timingSafeEqual(ticket, msg.ticket)) {
          return refuse('RELAY_TICKET', `${clip(msg.workerId)} presented no ticket this relay was told to accept`);
        }
        clearTimeout(timer);
        settle();
        // A reconnect of the same child replaces its old connection.
        for (const c of this.children) if (c.workerId === msg.workerId) this.closeChild(c, 'REPLACED', 'a newer connection of the same child took over');
        child = { workerId: msg.workerId, ws, bytesIn: frame.byteLength, bytesOut: 0 };
        this.children.add(child);
        setMessageLimit(ws, this.opts.limits().maxFrameBytes);
        ws.send(encode({ type: 'relay-welcome' }));
        log.info({ event: 'relay_child_connected', child: child.workerId, address }, `child ${child.workerId} connected`);
        this.opts.ready(child);
        return;
      }
      if (msg.type !== 'sum') return refuse('UNEXPECTED_MESSAGE', `children send only sum on a relay connection, got ${msg.type}`);
      this.opts.sum(child, msg, frame);
    });
  }

  async close(): Promise<void> {
    for (const c of this.children) c.ws.terminate();
    this.children.clear();
    await new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
  }
}

/** Test hook: the same chunk with one payload byte flipped (a relay that tampers with weights). */
function corrupted(frame: Uint8Array): Uint8Array {
  const res = decode(frame, { maxFrameBytes: 1 << 30, maxFloats: 1 << 28 });
  if (!res.ok || res.msg.type !== 'weights-chunk') return frame;
  const data = new Uint8Array(res.msg.data);
  data[0] ^= 0x01;
  return encode({ type: 'weights-chunk', net: res.msg.net, version: res.msg.version, total: res.msg.total, offset: res.msg.offset, data });
}
