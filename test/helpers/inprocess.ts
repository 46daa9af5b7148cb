/**
 * In-process harness for the robustness suites: a real Coordinator (real sockets, real codec)
 * inside the test process so its log can be read record by record, the single-process reference
 * hash computed with the same code gan-train runs, and a raw WebSocket peer that can send
 * anything at all (handshake helpers included).
 */
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { WebSocket } from 'ws';
import { hmacOf } from '../../shared/auth.ts';
import { initBackend } from '../../shared/backend.ts';
import { COMMON_FLAGS, parseFlags } from '../../shared/cli.ts';
import { GAN_FLAGS, ganOptionsFrom } from '../../trainer/gan-flags.ts';
import { resolveConfig, type GanConfig } from '../../shared/config.ts';
import { loadDataSource } from '../../trainer/data/index.ts';
import { createLogger, tapLog, type LogRecord } from '../../shared/log.ts';
import { PROTOCOL_VERSION } from '../../shared/protocol.ts';
import { Coordinator, DEFAULT_NETWORK, DEFAULT_SCHEDULE, type NetworkConfig, type ReportConfig, type RunResult, type ScheduleConfig } from '../../coordinator/coordinator.ts';
import { LocalTrainer } from '../../trainer/local-trainer.ts';
import { makeTempDir, spawnCli, waitForEvent, type Proc } from './processes.ts';

/** 40 iterations x 2 phases x 8 shards of ring8 + mlp2d: ~1.5 s on one core, single-process. */
export const RING8_FLAGS = ['--dataset', 'ring8', '--preset', 'none', '--iterations', '40', '--batch-size', '64', '--shards', '8', '--backend', 'wasm'];

export function configFrom(flags: string[]): GanConfig {
  const v = parseFlags(flags, { ...GAN_FLAGS, ...COMMON_FLAGS });
  const opts = ganOptionsFrom(v);
  return resolveConfig(opts, loadDataSource(opts.dataset ?? 'mnist'));
}

const references = new Map<string, string>();

/** The weights hash gan-train reports for these flags (LocalTrainer: the code gan-train runs). */
export async function referenceHash(flags: string[] = RING8_FLAGS): Promise<string> {
  const key = flags.join(' ');
  const known = references.get(key);
  if (known) return known;
  await initBackend('wasm');
  const config = configFrom(flags);
  const trainer = new LocalTrainer(config, loadDataSource(config.train.dataset));
  while (!trainer.state.finished) trainer.runPhase();
  const hash = trainer.weightsHash();
  trainer.dispose();
  references.set(key, hash);
  return hash;
}

export interface InProcessCoordinator {
  coordinator: Coordinator;
  runDir: string;
  port: number;
  url: string;
  /** Every record the coordinator logged at info or above, in order. */
  records: LogRecord[];
  /** The run loop's result (starts the loop if startRun was false and start() was not called). */
  readonly done: Promise<RunResult>;
  /** Starts the run loop once (a no-op returning the same promise after that). */
  start(): Promise<RunResult>;
  /** Resolves with the first record (already logged or to come) matching; rejects after timeoutMs. */
  waitFor(pred: (r: LogRecord) => boolean, timeoutMs: number, what?: string): Promise<LogRecord>;
  close(): Promise<void>;
}

export interface InProcessOptions {
  flags?: string[];
  token?: string | null;
  network?: Partial<NetworkConfig>;
  schedule?: Partial<ScheduleConfig>;
  report?: Partial<ReportConfig>;
  /** false: listen only; the test starts the run loop with start() (default true). */
  startRun?: boolean;
}

/** Starts a Coordinator on 127.0.0.1 (any free port) and, unless startRun is false, its run loop. */
export async function startInProcessCoordinator(o: InProcessOptions = {}): Promise<InProcessCoordinator> {
  await initBackend('wasm');
  const config = configFrom(o.flags ?? RING8_FLAGS);
  const runDir = makeTempDir('gan-inproc-');
  const log = createLogger({ name: 'coordinator', file: join(runDir, 'log.jsonl'), stdout: false, level: 'info' });
  const records: LogRecord[] = [];
  const listeners = new Set<() => void>();
  tapLog(log, (rec) => {
    records.push(rec);
    for (const l of [...listeners]) l();
  });
  const coordinator = new Coordinator({
    config,
    source: loadDataSource(config.train.dataset),
    runDir,
    log,
    backendName: 'wasm',
    network: { ...DEFAULT_NETWORK, host: '127.0.0.1', port: 0, token: o.token ?? null, insecure: false, ...o.network },
    schedule: { ...DEFAULT_SCHEDULE, ...o.schedule },
    report: { logEvery: 20, statusIntervalMs: 1000, sampleEvery: 0, ...o.report },
    checkpoint: { every: 0, keep: 1 },
  });
  const addr = await coordinator.listen();
  let running: Promise<RunResult> | null = o.startRun === false ? null : coordinator.run();
  const start = () => (running ??= coordinator.run());
  let closed = false;
  return {
    coordinator,
    runDir,
    port: addr.port,
    url: `ws://127.0.0.1:${addr.port}`,
    records,
    get done() {
      return start();
    },
    start,
    waitFor(pred, timeoutMs, what = 'a log record') {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = records.find(pred);
          if (!hit) return false;
          listeners.delete(check);
          clearTimeout(timer);
          resolve(hit);
          return true;
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          const last = records.slice(-8).map((r) => `  | ${JSON.stringify(r).slice(0, 300)}`);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last records:\n${last.join('\n')}`));
        }, timeoutMs);
        if (!check()) listeners.add(check);
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      coordinator.requestStop();
      await running?.catch(() => undefined);
      await coordinator.close();
    },
  };
}

/** Same wire options as shared/codec.ts but no validation or version stamping: anything goes. */
export const rawPackr = new Packr({ moreTypes: true, useRecords: false });

export interface CloseInfo {
  code: number;
  reason: string;
}

/** A WebSocket client that sends whatever it is told to and records what comes back. */
export class RawPeer {
  readonly ws: WebSocket;
  /** Decoded frames from the coordinator (msgpack maps). */
  readonly received: Record<string, unknown>[] = [];
  readonly closed: Promise<CloseInfo>;
  close: CloseInfo | null = null;
  private waiters = new Set<() => void>();

  private constructor(url: string) {
    this.ws = new WebSocket(url, { maxPayload: 1 << 30 });
    this.ws.on('message', (data) => {
      try {
        this.received.push(rawPackr.unpack(data as Buffer) as Record<string, unknown>);
      } catch {
        this.received.push({ type: '<undecodable>' });
      }
      this.notify();
    });
    this.ws.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      this.ws.on('close', (code, reason) => {
        this.close = { code, reason: reason.toString() };
        resolve(this.close);
        this.notify();
      }),
    );
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  static connect(url: string, timeoutMs = 5000): Promise<RawPeer> {
    const peer = new RawPeer(url);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no WebSocket open within ${timeoutMs} ms`)), timeoutMs);
      peer.ws.once('open', () => {
        const sock = (peer.ws as unknown as { _socket?: { localAddress?: string; localPort?: number } })._socket;
        peer.address = `${sock?.localAddress}:${sock?.localPort}`;
        clearTimeout(timer);
        resolve(peer);
      });
      peer.ws.once('close', (code) => {
        clearTimeout(timer);
        // Refused at once (e.g. 1013 for a handshake flood): still a peer whose close can be read.
        resolve(peer);
        void code;
      });
      peer.ws.once('error', (err) => {
        if (peer.ws.readyState === WebSocket.CLOSED) return;
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Where the coordinator sees this peer (its log's `address` field); known once open. */
  address = '';

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(frame: Uint8Array | string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  /** Packs a message as-is (no protocol stamping unless given) and sends it. */
  sendMsg(msg: Record<string, unknown>): void {
    this.send(rawPackr.pack(msg));
  }

  /** The next received message matching `pred` (or any), or null after timeoutMs / on close. */
  next(pred: (m: Record<string, unknown>) => boolean = () => true, timeoutMs = 5000, from = 0): Promise<Record<string, unknown> | null> {
    return new Promise((resolve) => {
      const check = () => {
        const hit = this.received.slice(from).find(pred);
        if (hit || this.close) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve(hit ?? null);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(null);
      }, timeoutMs);
      if (!check()) this.waiters.add(check);
    });
  }

  /** Resolves with the close, or null if still open after timeoutMs. */
  waitClose(timeoutMs: number): Promise<CloseInfo | null> {
    return Promise.race([this.closed, new Promise<null>((r) => setTimeout(() => r(null), timeoutMs))]);
  }

  /** The coordinator's bye, if it sent one. */
  get bye(): Record<string, unknown> | undefined {
    return this.received.find((m) => m.type === 'bye');
  }

  hello(workerId: string, extra: Record<string, unknown> = {}): void {
    this.sendMsg({ type: 'hello', protocol: PROTOCOL_VERSION, workerId, backend: 'wasm', host: 'fuzz', capabilities: { wire: ['fp32'], maxShards: 64 }, ...extra });
  }

  /**
   * hello, then (with a token) answer the challenge; resolves with the welcome, or null if the
   * coordinator closed or never welcomed. Returns the auth frame sent, for replay tests.
   */
  async handshake(workerId: string, token: string | null, timeoutMs = 5000): Promise<{ welcome: Record<string, unknown> | null; authFrame: Uint8Array | null }> {
    this.hello(workerId);
    let authFrame: Uint8Array | null = null;
    if (token !== null) {
      const challenge = await this.next((m) => m.type === 'challenge' || m.type === 'bye', timeoutMs);
      if (!challenge || challenge.type !== 'challenge') return { welcome: null, authFrame };
      authFrame = rawPackr.pack({ type: 'auth', protocol: PROTOCOL_VERSION, hmac: hmacOf(token, challenge.nonce as Uint8Array) });
      this.send(authFrame);
    }
    const welcome = await this.next((m) => m.type === 'welcome' || m.type === 'bye', timeoutMs);
    return { welcome: welcome?.type === 'welcome' ? welcome : null, authFrame };
  }

  terminate(): void {
    this.ws.terminate();
  }
}

export interface HonestRun {
  c: InProcessCoordinator;
  /** gan-train's hash for the same flags. */
  reference: string;
  /** A real gan-worker process that trains the run (the honest one beside whatever the test does). */
  worker: Proc;
}

/**
 * The usual stage of a robustness test: the reference hash, an in-process coordinator and one
 * real worker (GAN_TEST_SHARD_DELAY_MS per shard, so the run outlasts the test's attacks), welcomed.
 */
export async function startHonestRun(o: InProcessOptions & { shardDelayMs: number; workerId?: string }): Promise<HonestRun> {
  const flags = o.flags ?? RING8_FLAGS;
  const reference = await referenceHash(flags);
  const c = await startInProcessCoordinator({ ...o, flags });
  const id = o.workerId ?? 'honest';
  const env: Record<string, string> = { GAN_TEST_SHARD_DELAY_MS: String(o.shardDelayMs), ...(o.token ? { GAN_TOKEN: o.token } : {}) };
  const worker = spawnCli('worker', ['--coordinator', c.url, '--id', id, '--backend', 'wasm'], { env, name: `worker ${id}` });
  await waitForEvent(worker, 'welcomed', 60_000);
  return { c, reference, worker };
}
