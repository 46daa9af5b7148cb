/**
 * A Node worker's part in the relay tree (coordinator --fan-out; docs/performance.md "Relay
 * tree"). The control session with the coordinator stays as it is (worker/worker-core.ts); this
 * carries the bulky traffic:
 *  - weights down: chunks arrive from the parent (a relay, or the coordinator on the control
 *    connection for a top-level child), are forwarded to this worker's children as they arrive
 *    (worker/relay-server.ts) and reassembled; the frame is used only when its SHA-256 matches
 *    the weights-head the coordinator sent directly (shared/weights-chunks.ts). A mismatch, or a
 *    head whose chunks do not complete within stallMs, is reported to the coordinator, which
 *    re-parents this worker and sends it the weights itself.
 *  - gradients up: this worker's blocks and its children's sums are combined range by range
 *    (worker/sum-combiner.ts, shared/sum-chunks.ts) and sent to the parent as each range is
 *    ready; what went up in the current phase is kept and sent again to a new parent after a
 *    re-parenting (the coordinator keeps the first cover).
 *
 * The parent connection is authenticated with the per-placement ticket from the coordinator's
 * tree message; frames from the parent are decoded and validated like any other.
 */
import { createHash } from 'node:crypto';
import { WebSocket } from 'ws';
import { decode, encode, type DecodeLimits } from '../shared/codec.ts';
import { ConfigError } from '../shared/errors.ts';
import { clip } from '../shared/log.ts';
import { closeCodeFor, type Net, type RelayReportCode, type TreeMsg, type WeightsChunkMsg, type WeightsHeadMsg } from '../shared/protocol.ts';
import { isRange, SUM_CHUNK_VALUES } from '../shared/sum-chunks.ts';
import { quantizerFor, type BlockStats, type ShardBlock } from '../shared/tree-sum.ts';
import { WeightsAssembly, type Assembled } from '../shared/weights-chunks.ts';
import { RelayServer } from './relay-server.ts';
import { SumCombiner, type PhaseKey } from './sum-combiner.ts';
import type { TreeContext, TreeHooks, TreeControlMsg, WorkerLog } from './worker-core.ts';

export interface TreeLinkOptions {
  workerId: string;
  log: WorkerLog;
  /** --relay-listen host:port (port 0: any free port); absent: a leaf. */
  listen?: { host: string; port: number };
  /** --relay-advertise: the URL children dial (default ws://<listen host>:<bound port>). */
  advertise?: string;
  /** A head whose chunks have not all arrived after this long is reported as RELAY_STALLED (ms). */
  stallMs?: number;
  /** Test hook (GAN_TEST_RELAY_CORRUPT): alter every chunk forwarded to children. */
  corrupt?: boolean;
  /** Test hook (GAN_TEST_RELAY_MUTE): forward no chunks to children (a stalled relay). */
  mute?: boolean;
  /** Test hook (GAN_TEST_RELAY_DROP_SUMS): send no sums up at all, its own nor its children's, receipts still (a black hole). */
  dropSums?: boolean;
}

const sha256 = (bytes: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(bytes).digest());
const CONNECT_ATTEMPTS = 5;
const DEFAULT_STALL_MS = 20_000;

interface ParentLink {
  url: string;
  ticket: Uint8Array;
  ws: WebSocket | null;
  ready: boolean;
  /** Closed on purpose (re-parented, detached): no report. */
  dropped: boolean;
  attempt: number;
  reported: boolean;
}

export class TreeLink implements TreeHooks {
  private server: RelayServer | null = null;
  offerUrl = '';
  private ctx: TreeContext | null = null;
  private placed = false;
  private parent: ParentLink | null = null;
  private assembly = new WeightsAssembly(sha256);
  private combiner: SumCombiner | null = null;
  /** Sum frames sent up in the newest phase, sent again to a new parent. */
  private kept: { key: string; frames: Uint8Array[] } = { key: '', frames: [] };
  private stallTimers = new Map<Net, ReturnType<typeof setTimeout>>();
  /** Values per range of a sum (the coordinator's tree message). */
  private sumChunk = SUM_CHUNK_VALUES;

  constructor(private readonly opts: TreeLinkOptions) {}

  /** Starts the relay listener when this worker has one; call before run(). */
  async prepare(): Promise<void> {
    const { listen, log } = this.opts;
    if (!listen) return;
    this.server = new RelayServer({
      host: listen.host,
      port: listen.port,
      log,
      corrupt: this.opts.corrupt,
      mute: this.opts.mute,
      limits: () => this.ctx?.limits ?? { maxFrameBytes: 16 * 1024, maxFloats: 1024 },
      ready: (child) => {
        for (const frame of this.assembly.replay()) this.server!.sendTo(child, frame);
      },
      sum: (child, msg, frame) => {
        // A range that is not one of the run's ranges cannot be combined with the others: dropped
        // (the coordinator would refuse it too); the child's shards come up after the bounded wait.
        if (!isRange(msg.offset, msg.gradient.length, msg.total, this.sumChunk)) {
          this.opts.log.warn({ event: 'warning', code: 'SUM_RANGE', child: child.workerId, offset: msg.offset, values: msg.gradient.length, total: msg.total, sumChunk: this.sumChunk }, `sum range [${msg.offset}, ${msg.offset} + ${msg.gradient.length}) of ${msg.total} from ${child.workerId} is not a range of ${this.sumChunk} values; dropped`);
          return;
        }
        this.combiner?.add({ iteration: msg.iteration, phase: msg.phase, dStep: msg.dStep, shardCount: msg.shardCount, block: { first: msg.firstShard, count: msg.count }, offset: msg.offset, total: msg.total, final: msg.gradient, stats: msg.stats, frame });
      },
    });
    let addr;
    try {
      addr = await this.server.listen();
    } catch (err) {
      // The operator asked for a listener: say which address failed and why, and stop (exit 2).
      const e = err as NodeJS.ErrnoException;
      throw new ConfigError('RELAY_LISTEN_FAILED', `--relay-listen ${listen.host}:${listen.port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EADDRNOTAVAIL' ? 'no such local address' : e.message}`);
    }
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    this.offerUrl = this.opts.advertise ?? `ws://${host}:${addr.port}`;
    log.info({ event: 'relay_listening', url: this.offerUrl, host: addr.address, port: addr.port }, `relay listener on ${this.offerUrl}`);
  }

  /** A test hook that makes this relay misbehave is on. */
  get misbehaving(): 'corrupt' | 'mute' | 'drop_sums' | null {
    return this.opts.corrupt ? 'corrupt' : this.opts.mute ? 'mute' : this.opts.dropSums ? 'drop_sums' : null;
  }

  get bytesRelayed(): number {
    return this.server?.bytesRelayed ?? 0;
  }

  attach(ctx: TreeContext): void {
    this.detach();
    this.ctx = ctx;
    this.assembly = new WeightsAssembly(sha256);
    this.combiner = new SumCombiner(ctx.wire, {
      up: (frame, info) => this.up(frame, info),
      hasChildren: () => (this.server?.childCount ?? 0) > 0,
      chunk: () => this.sumChunk,
      timedOut: (info) => this.opts.log.warn({ event: 'warning', code: 'RELAY_WAIT_TIMEOUT', phaseKey: info.key, missing: info.missing, waitMs: info.waitMs }, `forwarding partial sums of phase ${info.key} after ${info.waitMs} ms: ${info.missing} shard(s) of the subtree missing (reassigned by the coordinator)`),
    });
    ctx.send({ type: 'relay-offer', url: this.offerUrl });
  }

  /** The coordinator connection ended: this worker leaves the tree until the next welcome. */
  detach(): void {
    this.placed = false;
    this.dropParent();
    this.server?.setAccepted([]);
    this.combiner?.close();
    this.combiner = null;
    for (const t of this.stallTimers.values()) clearTimeout(t);
    this.stallTimers.clear();
    this.kept = { key: '', frames: [] };
    this.ctx = null;
  }

  onControl(msg: TreeControlMsg, frame: Uint8Array): void {
    switch (msg.type) {
      case 'tree':
        return this.onTree(msg);
      case 'weights-head':
        return this.onHead(msg);
      case 'weights-chunk':
        return this.onChunk(msg, frame);
      case 'relay-expect':
        return this.combiner?.expect(msg);
    }
  }

  /** One of this worker's blocks; false when it is not placed in the tree (the caller sends a plain result). */
  submit(p: PhaseKey & { shardCount: number; block: ShardBlock; gradient: Float32Array; stats: BlockStats }): boolean {
    if (!this.placed || !this.ctx || !this.combiner) return false;
    const q = quantizerFor(this.ctx.wire);
    const total = p.gradient.length;
    const stats = { loss: p.stats.loss, dReal: p.stats.dReal, dFake: p.stats.dFake };
    // Range by range, so the parent can combine and forward range 0 while the rest is on the way.
    for (let offset = 0; offset < Math.max(total, 1); offset += this.sumChunk) {
      const gradient = p.gradient.subarray(offset, Math.min(total, offset + this.sumChunk));
      const frame = encode({ type: 'sum', iteration: p.iteration, phase: p.phase, dStep: p.dStep, shardCount: p.shardCount, firstShard: p.block.first, count: p.block.count, offset, total, gradient, stats }, { wire: this.ctx.wire });
      // The node's value as the coordinator will decode it: the wire's rounding of the raw sum
      // (range by range is the same rounding: sumChunk is a multiple of the fp16 scale block).
      const final = q ? q(gradient) : gradient;
      this.combiner.add({ iteration: p.iteration, phase: p.phase, dStep: p.dStep, shardCount: p.shardCount, block: p.block, offset, total, final, stats: p.stats, frame });
    }
    return true;
  }

  /** The coordinator sent `net` directly (welcome, or after a report): no chunks owed for it up to `version`. */
  noteWeights(net: Net, _version: number): void {
    const t = this.stallTimers.get(net);
    if (t) clearTimeout(t);
    this.stallTimers.delete(net);
  }

  async close(): Promise<void> {
    this.detach();
    await this.server?.close();
  }

  // ------------------------------------------------------------------ internals

  private report(code: RelayReportCode, detail: string, extra: { net?: Net; version?: number } = {}): void {
    const url = this.parent?.url ?? '';
    this.opts.log.warn({ event: 'warning', code, parent: url || 'coordinator', ...extra, detail: clip(detail) }, `reporting the relay parent to the coordinator: ${detail}`);
    this.ctx?.send({ type: 'relay-report', code, parentUrl: url, ...extra, detail: detail.slice(0, 1024) });
  }

  private up(frame: Uint8Array, info: { key: string }): void {
    if (this.opts.dropSums) return;
    if (this.kept.key !== info.key) this.kept = { key: info.key, frames: [] };
    this.kept.frames.push(frame);
    this.sendUp(frame);
  }

  private sendUp(frame: Uint8Array): void {
    if (!this.parent) return this.ctx?.sendFrame(frame);
    const p = this.parent;
    if (p.ready && p.ws?.readyState === WebSocket.OPEN) p.ws.send(frame);
    // Otherwise it stays in `kept` and goes out once the parent welcomes this worker.
  }

  private onTree(msg: TreeMsg): void {
    const wasPlaced = this.placed;
    this.placed = true;
    this.sumChunk = msg.sumChunk;
    if (this.server) this.server.setAccepted(msg.children);
    else if (msg.children.length > 0) this.opts.log.warn({ event: 'warning', code: 'RELAY_NOT_LISTENING', children: msg.children.length }, 'the coordinator placed children under this worker, but it has no --relay-listen');
    const same = this.parent ? this.parent.url === msg.parentUrl && msg.ticket !== undefined && Buffer.compare(this.parent.ticket, msg.ticket) === 0 : msg.parentUrl === '';
    if (same && wasPlaced) return;
    this.dropParent();
    this.opts.log.info({ event: 'relay_parent', parent: msg.parentUrl || 'coordinator', children: msg.children.map((c) => c.workerId) }, `relay tree: parent ${msg.parentUrl || 'the coordinator'}, ${msg.children.length} child(ren)`);
    if (msg.parentUrl === '' || !msg.ticket) {
      for (const f of this.kept.frames) this.sendUp(f);
      return;
    }
    this.parent = { url: msg.parentUrl, ticket: msg.ticket, ws: null, ready: false, dropped: false, attempt: 0, reported: false };
    this.connect(this.parent);
  }

  private dropParent(): void {
    const p = this.parent;
    this.parent = null;
    if (!p) return;
    p.dropped = true;
    p.ws?.close(closeCodeFor('BYE'), 'BYE');
    if (p.ws) {
      const ws = p.ws;
      setTimeout(() => ws.terminate(), 1000).unref();
    }
  }

  private connect(p: ParentLink): void {
    const limits = (): DecodeLimits => this.ctx?.limits ?? { maxFrameBytes: 1 << 20, maxFloats: 1024 };
    p.attempt++;
    const ws = new WebSocket(p.url, { maxPayload: 2 * (1 << 20), handshakeTimeout: 10_000 });
    p.ws = ws;
    ws.on('error', (err) => this.opts.log.debug({ err: err.message, url: p.url }, 'relay parent connection error'));
    ws.on('open', () => ws.send(encode({ type: 'relay-hello', workerId: this.opts.workerId, ticket: p.ticket })));
    ws.on('message', (data, isBinary) => {
      if (p.dropped || !isBinary) return;
      const frame = Array.isArray(data) ? Buffer.concat(data) : (data as Buffer);
      const res = decode(frame, { ...limits(), maxFrameBytes: 2 * (1 << 20) });
      if (!res.ok) {
        this.opts.log.warn({ event: 'warning', code: res.code, parent: p.url, reason: clip(res.reason) }, 'bad frame from the relay parent; dropping it');
        ws.close(closeCodeFor(res.code), res.code);
        return;
      }
      if (res.msg.type === 'relay-welcome') {
        p.ready = true;
        p.attempt = 0;
        this.opts.log.info({ event: 'relay_parent_connected', parent: p.url }, `connected to relay parent ${p.url}`);
        for (const f of this.kept.frames) this.sendUp(f);
      } else if (res.msg.type === 'weights-chunk' && p.ready) {
        this.onChunk(res.msg, frame);
      } else {
        this.opts.log.warn({ event: 'warning', code: 'UNEXPECTED_MESSAGE', parent: p.url, type: res.msg.type }, 'unexpected message from the relay parent; ignored');
      }
    });
    ws.on('close', (code) => {
      if (p.dropped || this.parent !== p) return;
      const wasReady = p.ready;
      p.ready = false;
      if (!wasReady && p.attempt < CONNECT_ATTEMPTS && code !== closeCodeFor('RELAY_TICKET')) {
        setTimeout(() => {
          if (!p.dropped && this.parent === p) this.connect(p);
        }, 250 * p.attempt).unref();
        return;
      }
      // The relay closed the link because the coordinator moved this worker: its tree message is on the way.
      if (wasReady && code === closeCodeFor('RELAY_TICKET')) return;
      if (p.reported) return;
      p.reported = true;
      this.report(wasReady ? 'RELAY_LOST' : 'RELAY_UNREACHABLE', wasReady ? `the connection to relay ${p.url} closed (code ${code})` : `could not join relay ${p.url} after ${p.attempt} attempt(s) (last close code ${code})`);
    });
  }

  private onHead(msg: WeightsHeadMsg): void {
    this.settle(this.assembly.head(msg));
    if (this.ctx && this.ctx.version(msg.net) < msg.version && !this.stallTimers.has(msg.net)) {
      const stallMs = this.opts.stallMs ?? DEFAULT_STALL_MS;
      this.stallTimers.set(
        msg.net,
        setTimeout(() => {
          this.stallTimers.delete(msg.net);
          if (!this.ctx || this.ctx.version(msg.net) >= msg.version) return;
          this.report('RELAY_STALLED', `no complete weights for ${msg.net} v${msg.version} within ${stallMs} ms`, { net: msg.net, version: msg.version });
        }, stallMs),
      );
    }
  }

  private onChunk(msg: WeightsChunkMsg, frame: Uint8Array): void {
    this.server?.forward(frame);
    this.settle(this.assembly.chunk(msg, frame));
  }

  private settle(res: Assembled | null): void {
    if (!res || !this.ctx) return;
    if (res.ok) {
      const err = this.ctx.loadWeightsFrame(res.frame, res.net, res.version);
      if (!err) {
        this.noteWeights(res.net, res.version);
        return;
      }
      this.report('RELAY_DIGEST_MISMATCH', err, { net: res.net, version: res.version });
      return;
    }
    this.opts.log.warn({ event: 'weights_refused', net: res.net, version: res.version, parent: this.parent?.url ?? 'coordinator', reason: res.reason }, `weights for ${res.net} v${res.version} refused: ${res.reason}`);
    this.report('RELAY_DIGEST_MISMATCH', res.reason, { net: res.net, version: res.version });
  }
}

