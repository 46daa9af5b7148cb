/**
 * A worker: connects to the coordinator, authenticates, holds a replica of G and D, and turns
 * the shards it is handed into gradients with the shared step functions. It holds no data set
 * and no training state of its own, so it can be killed and restarted at any time; when the
 * coordinator goes away it reconnects with backoff and carries on.
 *
 * This is the environment-agnostic core: it imports nothing Node-only, and takes its socket,
 * HMAC, host name and event-loop yield from a WorkerEnv (worker/env.ts), so the same code runs
 * under Node (worker/worker.ts, worker/env-node.ts) and in a browser tab (worker/browser-entry.ts,
 * worker/env-browser.ts).
 *
 * Over 400 lines because the connection loop (handshake, welcome, tasks, bye, reconnect) and the
 * compute queue it feeds share one connection's state; the protocol itself is shared/protocol.ts.
 */
import { assertCanTrain } from '../shared/backend.ts';
import { decode, encode, floatPayloadBytes, ReusableFrame, type DecodeLimits } from '../shared/codec.ts';
import { sampleDim, validateConfig, type GanConfig } from '../shared/config.ts';
import { GanError } from '../shared/errors.ts';
import type { WorkerEnv, WorkerSocket } from './env.ts';
import { closeCodeFor, fatalCode, MAX_TASK_SHARDS, PROTOCOL_FEATURES, PROTOCOL_VERSION, WIRE_FORMATS, type Net, type Message, type BlockSpec, type Outgoing, type Phase, type RelayExpectMsg, type ResultMsg, type TaskMsg, type TreeMsg, type WeightsChunkMsg, type WeightsHeadMsg, type WireFormat, type WorkerTiming } from '../shared/protocol.ts';
import { GanReplica, type ShardInput } from '../shared/replica.ts';
import { quantizerFor, type BlockStats, type ShardBlock } from '../shared/tree-sum.ts';
import { BlockAccumulator } from '../shared/block-accumulator.ts';
import { rowsFromCodes } from '../shared/data/row-codes.ts';

/** The log calls a worker makes (a pino Logger has them; the browser page brings its own). */
export interface WorkerLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface WorkerOptions {
  url: string;
  token: string | null;
  workerId: string;
  backend: string;
  log: WorkerLog;
  /** Keep waiting for a new run after the coordinator says the run is finished. */
  stay: boolean;
  /** Give up after this many consecutive failed connection attempts (Infinity: never). */
  maxRetries: number;
  backoff: { initialMs: number; maxMs: number };
  /** No frame or ping from the coordinator for this long means the link is dead (ms; only where the environment sees pings). */
  idleTimeoutMs: number;
  /** Test hook: extra delay before each result is sent, to play a straggler (ms). */
  testDelayMs: number;
  /** Test hook: multiply every gradient by (1 + this), a finite but wrong result for --verify-fraction to catch (0: off). */
  testCorruptScale?: number;
  /** A worker_progress line every 500 shards or after this long with shards done, whichever first (ms; default 15 s). */
  progressIntervalMs?: number;
  /** PEM certificate(s) trusted for a wss:// coordinator instead of the system roots (--ca). */
  ca?: string | null;
  /** Wire formats to advertise in hello (default: all this build speaks); tests play an older, fp32-only worker with ['fp32']. */
  wire?: readonly WireFormat[];
  /** The token is a short-lived join key (coordinator/join-key.ts) expiring then (unix seconds): said in hello. */
  joinExpires?: number;
  /** Called after each block's result is sent (the browser page shows what the tab contributes). */
  onBlockSent?: (info: { shards: number; computeMs: number; shardsDone: number; meanShardMs: number }) => void;
  /** Called when the worker joins a run (welcome accepted). */
  onWelcome?: (info: { runId: string; model: string; wire: WireFormat }) => void;
  /** The relay tree (Node gan-worker): advertised as the `relay` feature; absent: star only. */
  tree?: TreeHooks;
}

/** Coordinator messages that belong to the relay tree (handled by TreeHooks). */
export type TreeControlMsg = TreeMsg | WeightsHeadMsg | WeightsChunkMsg | RelayExpectMsg;

/** What the relay tree (worker/tree-link.ts, Node only) needs from the current coordinator connection. */
export interface TreeContext {
  wire: WireFormat;
  /** Decode limits for frames from children and the parent (the coordinator's, from the model's size). */
  limits: DecodeLimits;
  send(msg: Outgoing<Message>): void;
  sendFrame(frame: Uint8Array): void;
  /** The version of `net` this worker holds. */
  version(net: Net): number;
  /** Loads a reassembled, digest-checked weights frame; returns why not, or null. */
  loadWeightsFrame(frame: Uint8Array, net: Net, version: number): string | null;
}

/**
 * The relay tree's side of a worker (coordinator --fan-out): weights from the parent, sums up to
 * it. Injected by the Node CLI (worker/tree-link.ts); absent in a browser tab, which stays in the star.
 */
export interface TreeHooks {
  attach(ctx: TreeContext): void;
  detach(): void;
  onControl(msg: TreeControlMsg, frame: Uint8Array): void;
  /** One of this worker's blocks: false when not placed in the tree (send a plain result). */
  submit(p: { iteration: number; phase: Phase; dStep: number; shardCount: number; block: ShardBlock; gradient: Float32Array; stats: BlockStats }): boolean;
  noteWeights(net: Net, version: number): void;
}

export const DEFAULT_BACKOFF = { initialMs: 250, maxMs: 10000 };

/**
 * The coordinator is trusted more than workers are (it holds the run), but its frames are still
 * decoded and validated; the limits only bound a single frame's size.
 */
const WORKER_LIMITS: DecodeLimits = { maxFrameBytes: 1 << 30, maxFloats: 1 << 28 };

const noTiming = (): WorkerTiming => ({ decodeMs: 0, loadMs: 0, recvMs: 0, encodeMs: 0, sendMs: 0 });

/** A block of a task being computed: its shards' gradients so far (BlockAccumulator), summed and sent when complete. */
interface BlockWork {
  block: BlockSpec;
  acc: BlockAccumulator;
  computeMs: number;
}

interface QueuedShard {
  task: TaskMsg;
  shard: ShardInput;
  ws: WorkerSocket;
  block: BlockWork;
}

export class WorkerCore {
  private replica: GanReplica | null = null;
  private replicaConfigJson = '';
  /** The wire format of the current connection: fp32 until a welcome says otherwise. */
  private wire: WireFormat = 'fp32';
  private versions: Record<Net, number> = { G: -1, D: -1 };
  private queue: QueuedShard[] = [];
  private pumping = false;
  private ws: WorkerSocket | null = null;
  private stopped = false;
  /** The signal that stopped the worker, for its worker_finished line. */
  private signal: string | null = null;
  /** Ends the current reconnect backoff wait early (set only while run() waits). */
  private wakeBackoff: (() => void) | null = null;
  private shardsDone = 0;
  private computeMsTotal = 0;
  private reconnects = 0;
  private lastProgress = { at: performance.now(), shards: 0 };
  /** Optional protocol features the coordinator turned on for this connection (welcome.features). */
  private features = new Set<string>();
  /** rows-u8: the values tasks' realCodes index (welcome.palette), or null. */
  private palette: Float32Array | null = null;
  /** Time outside compute since the last result was sent (sent with the next result when `timing` is on). */
  private timing: WorkerTiming = noTiming();
  /** Result frames are written into one buffer once the previous one has left (shared/codec.ts ReusableFrame). */
  private resultFrame = new ReusableFrame();
  private log: WorkerLog;
  /** Why run() returned 2 (a refusal or a TLS failure retrying cannot fix); null otherwise. */
  fatal: { code: string; reason: string } | null = null;

  constructor(
    readonly opts: WorkerOptions,
    readonly env: WorkerEnv,
  ) {
    this.log = opts.log;
  }

  /** Runs until the run finishes (exit 0), a fatal refusal (exit 2), or stop(). */
  async run(): Promise<number> {
    let failures = 0;
    let delay = this.opts.backoff.initialMs;
    while (!this.stopped) {
      const outcome = await this.connectOnce();
      if (outcome.kind === 'finished' && !this.opts.stay) {
        this.log.info({ event: 'worker_finished', shardsDone: this.shardsDone, meanShardMs: this.meanShardMs(), reconnects: this.reconnects, stopped: false }, 'the coordinator finished the run; exiting');
        return 0;
      }
      if (outcome.kind === 'fatal') {
        this.fatal = { code: outcome.code ?? 'FATAL', reason: outcome.reason };
        if (outcome.tls) {
          // Not the coordinator's refusal: this worker could not (or would not) trust the link.
          this.log.error({ event: 'tls_failed', code: outcome.code, tlsCode: outcome.tls, url: this.opts.url, reason: outcome.reason }, outcome.reason);
        } else {
          this.log.error({ event: 'refused', code: outcome.code, reason: outcome.reason }, `the coordinator refused this worker: ${outcome.reason}`);
        }
        return 2;
      }
      if (this.stopped) break;
      if (outcome.kind === 'connected-then-lost' || outcome.kind === 'finished') {
        failures = 0;
        delay = this.opts.backoff.initialMs;
      } else {
        failures++;
        if (failures > this.opts.maxRetries) {
          this.log.error({ event: 'gave_up', attempts: failures, url: this.opts.url }, `could not reach the coordinator after ${failures} attempts; giving up`);
          return 1;
        }
      }
      // Jitter keeps a fleet of workers from reconnecting in lockstep after a coordinator restart.
      const wait = Math.round(delay * (0.75 + 0.5 * Math.random()));
      this.log.info({ event: 'reconnecting', inMs: wait, attempt: failures + 1, url: this.opts.url, reason: outcome.reason }, `reconnecting in ${wait} ms`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, wait);
        // stop() ends the wait at once: a worker stopped while the coordinator is away exits now.
        this.wakeBackoff = () => {
          clearTimeout(timer);
          r();
        };
      });
      this.wakeBackoff = null;
      if (this.stopped) break;
      delay = Math.min(this.opts.backoff.maxMs, delay * 2);
      this.reconnects++;
    }
    this.log.info(
      { event: 'worker_finished', shardsDone: this.shardsDone, meanShardMs: this.meanShardMs(), reconnects: this.reconnects, stopped: true, ...(this.signal ? { signal: this.signal } : {}) },
      `stopped${this.signal ? ` by ${this.signal}` : ''}; exiting`,
    );
    return 0;
  }

  /** Stops the worker: run() returns 0 once the current connection is closed, or at once from a backoff wait. */
  stop(signal?: string): void {
    this.stopped = true;
    this.signal ??= signal ?? null;
    this.ws?.close(closeCodeFor('WORKER_STOPPING'), 'WORKER_STOPPING');
    this.wakeBackoff?.();
  }

  private send(ws: WorkerSocket, msg: Outgoing<Message>): void {
    if (ws.open) ws.send(encode(msg, { wire: this.wire }));
  }

  private connectOnce(): Promise<{ kind: 'unreachable' | 'connected-then-lost' | 'finished' | 'fatal'; code?: string; reason: string; tls?: string }> {
    return new Promise((resolve) => {
      const ca = this.opts.ca ?? undefined;
      /** The connection error before any frame, if any (TLS verification failures are fatal). */
      let connectError: Error | null = null;
      this.wire = 'fp32';
      this.features = new Set();
      this.timing = noTiming();
      // Per connection: a frame still leaving on a closed socket is never written over.
      this.resultFrame = new ReusableFrame();
      let welcomed = false;
      let bye: { code: string; reason: string } | null = null;
      let idleTimer: ReturnType<typeof setTimeout> | null = null;
      const touch = () => {
        // Without pings a quiet coordinator (no tasks for this worker) looks like a dead one: a
        // browser leaves that to the socket's own close.
        if (!this.env.seesPings) return;
        if (idleTimer) clearTimeout(idleTimer);
        idleTimer = setTimeout(() => {
          this.log.warn({ event: 'warning', code: 'COORDINATOR_SILENT', ms: this.opts.idleTimeoutMs }, 'no word from the coordinator; dropping the connection');
          ws.terminate();
        }, this.opts.idleTimeoutMs);
      };
      const onMessage = (frame: Uint8Array, recvMs: number) => {
        touch();
        this.timing.recvMs += recvMs;
        const t0 = performance.now();
        const res = decode(frame, this.wire === 'fp32' ? WORKER_LIMITS : { ...WORKER_LIMITS, wire: this.wire });
        this.timing.decodeMs += performance.now() - t0;
        if (!res.ok) {
          const reason = res.code === 'PROTOCOL_MISMATCH' ? `this worker speaks protocol ${PROTOCOL_VERSION}; ${res.reason}` : res.reason;
          this.log.error({ event: 'bad_frame', code: res.code, reason }, 'bad frame from the coordinator; disconnecting');
          if (res.code === 'PROTOCOL_MISMATCH') bye = { code: 'PROTOCOL_MISMATCH', reason };
          ws.close(closeCodeFor(res.code), res.code);
          return;
        }
        const msg = res.msg;
        switch (msg.type) {
          case 'challenge': {
            if (!this.opts.token) {
              bye = { code: 'TOKEN_REQUIRED', reason: `the coordinator requires a token: ${this.env.kind === 'browser' ? 'enter the run token' : 'set GAN_TOKEN or pass --token-file'}` };
              ws.close(closeCodeFor('TOKEN_REQUIRED'), 'TOKEN_REQUIRED');
              return;
            }
            const nonce = msg.nonce;
            this.env.hmac(this.opts.token, nonce).then(
              (hmac) => this.send(ws, { type: 'auth', hmac }),
              (err: unknown) => {
                bye = { code: 'HMAC_UNAVAILABLE', reason: err instanceof Error ? err.message : String(err) };
                ws.close(closeCodeFor('HMAC_UNAVAILABLE'), 'HMAC_UNAVAILABLE');
              },
            );
            return;
          }
          case 'welcome':
            try {
              this.onWelcome(msg.config as unknown as GanConfig, msg.g, msg.d, msg.runId, msg.wire ?? 'fp32');
              this.features = new Set(msg.features ?? []);
              this.palette = this.features.has('rows-u8') ? msg.palette ?? null : null;
              welcomed = true;
              // The tree only with ranged sums (sum-chunks): a coordinator that turns `relay` on
              // without it expects whole sums, so this worker stays in the star there.
              if (this.features.has('relay') && this.features.has('sum-chunks') && this.opts.tree) this.attachTree(ws);
            } catch (err) {
              const reason = err instanceof GanError ? `${err.code}: ${err.message}` : String(err);
              this.log.error({ event: 'bad_welcome', reason }, 'cannot build the model the coordinator described');
              // A backend that cannot train the model is the worker's own, lasting condition.
              bye = { code: err instanceof GanError && err.code === 'BACKEND_CANNOT_TRAIN' ? err.code : 'BAD_WELCOME', reason };
              ws.close(closeCodeFor('BAD_WELCOME'), 'BAD_WELCOME');
            }
            return;
          case 'weights':
            if (!welcomed || !this.replica) return;
            this.loadWeights(msg.net, msg.version, msg.weights);
            this.opts.tree?.noteWeights(msg.net, msg.version);
            return;
          case 'tree':
          case 'weights-head':
          case 'weights-chunk':
          case 'relay-expect':
            if (welcomed && this.features.has('relay') && this.features.has('sum-chunks') && this.opts.tree) this.opts.tree.onControl(msg, frame);
            return;
          case 'task': {
            if (!welcomed) return;
            const t0 = performance.now();
            const shards = this.shardInputs(msg);
            this.timing.decodeMs += performance.now() - t0;
            if (typeof shards === 'string') {
              this.log.error({ event: 'bad_frame', code: 'BAD_FIELD', reason: shards }, 'bad frame from the coordinator; disconnecting');
              ws.close(closeCodeFor('BAD_FIELD'), 'BAD_FIELD');
              return;
            }
            // The codec checked that the blocks cover exactly the task's shards, in order.
            let next = 0;
            for (const block of msg.blocks) {
              const work: BlockWork = { block, acc: new BlockAccumulator(this.replica!, msg.shardCount, block, quantizerFor(this.wire)), computeMs: 0 };
              for (const _ of work.acc.ids) this.queue.push({ task: msg, shard: shards[next++], ws, block: work });
            }
            void this.pump();
            return;
          }
          case 'bye':
            bye = { code: msg.code, reason: msg.reason };
            this.log.info({ event: 'coordinator_bye', code: msg.code, reason: msg.reason }, `coordinator says: ${msg.reason}`);
            return;
          default:
            this.log.warn({ event: 'warning', code: 'UNEXPECTED_MESSAGE', type: msg.type }, 'unexpected message from the coordinator; ignored');
        }
      };
      const ws: WorkerSocket = this.env.connect(
        this.opts.url,
        {
          open: () => {
            touch();
            this.log.info({ event: 'connected', url: this.opts.url }, 'connected to the coordinator');
            this.send(ws, {
              type: 'hello',
              workerId: this.opts.workerId,
              backend: this.opts.backend,
              host: this.env.host().slice(0, 256),
              // `relay` (and `sum-chunks`) only where a tree link exists (Node gan-worker), so a browser tab stays in the star.
              capabilities: { wire: [...(this.opts.wire ?? WIRE_FORMATS), ...PROTOCOL_FEATURES.filter((f) => (f !== 'relay' && f !== 'sum-chunks') || this.opts.tree)], maxShards: MAX_TASK_SHARDS },
              ...(this.env.kind === 'browser' ? { browser: true } : {}),
              ...(this.opts.joinExpires !== undefined ? { joinExpires: this.opts.joinExpires } : {}),
            });
          },
          ping: touch,
          message: onMessage,
          error: (err) => {
            if (!welcomed) {
              connectError ??= err;
              this.log.debug({ err: err.message, code: (err as { code?: string }).code }, 'connection error');
            }
          },
          close: (code, closeReason) => {
            if (idleTimer) clearTimeout(idleTimer);
            if (welcomed) this.opts.tree?.detach();
            this.filterQueue((q) => q.ws !== ws);
            const fatalConnect = !welcomed && connectError ? this.env.fatalConnectError(connectError, { url: this.opts.url, ca: Boolean(ca) }) : null;
            if (fatalConnect) return resolve({ kind: 'fatal', code: fatalConnect.code, reason: fatalConnect.reason, tls: fatalConnect.detail });
            const reason = bye?.reason ?? (closeReason || (connectError ? connectError.message : `closed with code ${code}`));
            // Retrying cannot help after a refusal (BYE_CODES' fatal codes), e.g. a backend that cannot train this run's model.
            const fatal = fatalCode(code, bye?.code);
            if (fatal) return resolve({ kind: 'fatal', code: fatal, reason });
            if (bye?.code === 'RUN_FINISHED') return resolve({ kind: 'finished', reason });
            if (welcomed) this.log.warn({ event: 'disconnected', code, reason }, 'lost the coordinator');
            resolve({ kind: welcomed ? 'connected-then-lost' : 'unreachable', reason });
          },
        },
        { maxPayload: WORKER_LIMITS.maxFrameBytes, ...(ca ? { ca } : {}) },
      );
      this.ws = ws;
    });
  }

  private onWelcome(config: GanConfig, g: { version: number; weights: Float32Array }, d: { version: number; weights: Float32Array }, runId: string, wire: WireFormat): void {
    if (!(this.opts.wire ?? WIRE_FORMATS).includes(wire)) {
      throw new GanError('WIRE_UNSUPPORTED', `the coordinator sends --wire ${wire}, which this worker did not offer`);
    }
    const json = JSON.stringify(config);
    let warmupMs: number | undefined;
    if (json !== this.replicaConfigJson) {
      validateConfig(config);
      assertCanTrain(config.model.kind);
      this.replica?.dispose();
      this.replica = new GanReplica(config);
      this.replicaConfigJson = json;
      warmupMs = this.warmUp(config);
    }
    this.replica!.setWeights('G', g.weights);
    this.replica!.setWeights('D', d.weights);
    this.versions = { G: g.version, D: d.version };
    this.filterQueue(() => false);
    // Results on this connection go out in the run's wire format (weights already arrive in it).
    this.wire = wire;
    this.log.info({ event: 'welcomed', runId, model: config.model.kind, gVersion: g.version, dVersion: d.version, wire, reconnects: this.reconnects, warmupMs }, 'joined the run');
    this.opts.onWelcome?.({ runId, model: config.model.kind, wire });
  }

  /** Loads a newer version of one net; tasks that need older weights are from a finished phase and dropped. */
  private loadWeights(net: Net, version: number, weights: Float32Array): void {
    if (version < this.versions[net]) return;
    const t0 = performance.now();
    this.replica!.setWeights(net, weights);
    this.timing.loadMs += performance.now() - t0;
    this.versions[net] = version;
    this.filterQueue((q) => q.task.gVersion >= this.versions.G && q.task.dVersion >= this.versions.D);
    // Tasks may wait for these weights (with the relay tree, a task comes straight from the coordinator, the weights through the tree).
    void this.pump();
  }

  /** Joins the relay tree on this connection (the welcome turned the `relay` feature on). */
  private attachTree(ws: WorkerSocket): void {
    const layout = this.replica!.layout;
    const maxFloats = Math.max(layout.G.total, layout.D.total);
    const limits: DecodeLimits = { maxFrameBytes: floatPayloadBytes(maxFloats, this.wire) + 64 * 1024, maxFloats, wire: this.wire };
    this.opts.tree!.attach({
      wire: this.wire,
      limits,
      send: (msg) => this.send(ws, msg),
      sendFrame: (frame) => {
        if (ws.open) ws.send(frame);
      },
      version: (net) => this.versions[net],
      loadWeightsFrame: (frame, net, version) => {
        if (ws !== this.ws || !this.replica) return 'the connection changed';
        const res = decode(frame, { ...WORKER_LIMITS, wire: this.wire });
        if (!res.ok) return `${res.code}: ${res.reason}`;
        if (res.msg.type !== 'weights' || res.msg.net !== net || res.msg.version !== version) return `the frame is not weights for ${net} v${version}`;
        this.loadWeights(net, version, res.msg.weights);
        return null;
      },
    });
  }

  /**
   * One D and one G shard of the run's size on made-up rows, thrown away: the first pass through
   * a new model compiles kernels and allocates, and would otherwise make this worker's first
   * real result (its speed measurement at the coordinator) several times too slow. Returns ms.
   */
  private warmUp(config: GanConfig): number {
    const t0 = performance.now();
    const rows = config.train.batchSize / config.train.shards;
    const shard: ShardInput = { shardId: 0, seed: 1, rows, real: new Float32Array(rows * sampleDim(config.model)) };
    if (config.model.numClasses > 0) shard.realLabels = new Int32Array(rows);
    this.replica!.computeShard('D', shard);
    this.replica!.computeShard('G', shard);
    return Math.round(performance.now() - t0);
  }

  /** A task's shards with their rows as floats (rows-u8 codes looked up in the palette), or why not. */
  private shardInputs(task: TaskMsg): ShardInput[] | string {
    const out: ShardInput[] = [];
    for (const s of task.shards) {
      if (!s.realCodes) {
        out.push(s);
        continue;
      }
      if (!this.palette) return `task ${task.taskId} shard ${s.shardId} carries realCodes, but the welcome turned on no rows-u8 palette`;
      const real = rowsFromCodes(this.palette, s.realCodes);
      if (typeof real === 'string') return `task ${task.taskId} shard ${s.shardId}: ${real}`;
      out.push({ shardId: s.shardId, seed: s.seed, rows: s.rows, real, ...(s.realLabels ? { realLabels: s.realLabels } : {}) });
    }
    return out;
  }

  /** Keeps the queued shards `keep` accepts; the blocks of the others can no longer complete, so their gradients are freed. */
  private filterQueue(keep: (q: QueuedShard) => boolean): void {
    const kept: QueuedShard[] = [];
    for (const q of this.queue) {
      if (keep(q)) kept.push(q);
      else q.block.acc.dispose();
    }
    this.queue = kept;
  }

  private meanShardMs(): number {
    return this.shardsDone ? Number((this.computeMsTotal / this.shardsDone).toFixed(2)) : 0;
  }

  /** worker_progress every 500 shards, or once progressIntervalMs passed with shards done since the last line. */
  private maybeLogProgress(): void {
    const now = performance.now();
    const since = this.shardsDone - this.lastProgress.shards;
    if (since <= 0) return;
    if (this.shardsDone % 500 !== 0 && now - this.lastProgress.at < (this.opts.progressIntervalMs ?? 15_000)) return;
    const shardsPerSec = Number((since / Math.max(1e-3, (now - this.lastProgress.at) / 1000)).toFixed(2));
    this.lastProgress = { at: now, shards: this.shardsDone };
    this.log.info({ event: 'worker_progress', shardsDone: this.shardsDone, meanShardMs: this.meanShardMs(), shardsPerSec, reconnects: this.reconnects, ...this.env.resources() }, 'worker progress');
  }

  /**
   * Sends a result, with the time split of what happened since the previous one when the
   * coordinator turned `timing` on; this result's own encode and send time go with the next.
   */
  private sendResult(ws: WorkerSocket, msg: Outgoing<ResultMsg>): void {
    if (!ws.open) return;
    const t0 = performance.now();
    const frame = this.resultFrame.encode(this.features.has('timing') ? { ...msg, timing: this.timing } : msg, { wire: this.wire }, ws.flushed === true);
    const t1 = performance.now();
    ws.send(frame);
    this.timing = { ...noTiming(), encodeMs: t1 - t0, sendMs: performance.now() - t1 };
  }

  /** A receipt (relay tree), with the time split like a result's when `timing` is on. */
  private sendReceipt(ws: WorkerSocket, msg: Outgoing<Message> & { type: 'receipt' }): void {
    if (!ws.open) return;
    ws.send(encode(this.features.has('timing') ? { ...msg, timing: this.timing } : msg));
    this.timing = noTiming();
  }

  /**
   * Computes queued shards one at a time, yielding between them so pings are answered; when the
   * last shard of a block is done, sends the block's sum over the fixed tree (one result per block).
   */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        const head = this.queue[0];
        // A task for weights still on their way down the relay tree waits for them (loadWeights pumps again).
        if (head.ws === this.ws && (head.task.gVersion > this.versions.G || head.task.dVersion > this.versions.D)) break;
        const { task, shard, ws, block } = this.queue.shift()!;
        if (ws !== this.ws || !ws.open || !this.replica || task.gVersion !== this.versions.G || task.dVersion !== this.versions.D) {
          block.acc.dispose();
          continue;
        }
        const t0 = performance.now();
        block.acc.compute(task.phase, shard);
        let computeMs = performance.now() - t0;
        if (this.opts.testDelayMs > 0) await new Promise((r) => setTimeout(r, this.opts.testDelayMs));
        block.computeMs += computeMs + this.opts.testDelayMs;
        const blockDone = block.acc.complete;
        if (blockDone) {
          // The block's sum (on the backend where it is exact, see BlockAccumulator) counts as compute.
          const t1 = performance.now();
          const { gradient, stats } = block.acc.take();
          const sumMs = performance.now() - t1;
          computeMs += sumMs;
          block.computeMs += sumMs;
          if (this.opts.testCorruptScale) {
            for (let i = 0; i < gradient.length; i++) gradient[i] *= 1 + this.opts.testCorruptScale;
          }
          const tree = this.opts.tree;
          if (tree?.submit({ iteration: task.iteration, phase: task.phase, dStep: task.dStep, shardCount: task.shardCount, block: block.block, gradient, stats })) {
            // The gradient went up the tree; the coordinator hears directly that this worker did it, and how fast.
            this.sendReceipt(ws, { type: 'receipt', taskId: task.taskId, firstShard: block.block.first, count: block.block.count, computeMs: block.computeMs });
          } else this.sendResult(ws, {
            type: 'result',
            taskId: task.taskId,
            iteration: task.iteration,
            phase: task.phase,
            dStep: task.dStep,
            firstShard: block.block.first,
            count: block.block.count,
            gradient,
            stats: { loss: stats.loss, dReal: stats.dReal, dFake: stats.dFake },
            computeMs: block.computeMs,
          });
        }
        this.shardsDone++;
        this.computeMsTotal += computeMs;
        if (blockDone) this.opts.onBlockSent?.({ shards: block.acc.ids.length, computeMs: block.computeMs, shardsDone: this.shardsDone, meanShardMs: this.meanShardMs() });
        this.maybeLogProgress();
        await this.env.yieldNow();
      }
    } finally {
      this.pumping = false;
    }
  }
}
