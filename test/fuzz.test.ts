/**
 * Coordinator-level fuzzing: while two real gan-worker processes train a short ring8 run, a few
 * raw WebSocket clients throw thousands of seeded hostile cases at the coordinator (in this
 * process, so its log can be checked record by record):
 *
 * - before hello, after hello, after auth: random bytes, random msgpack values, valid messages
 *   with mutated fields (wrong types, missing/extra fields, NaN/Inf, overlong strings, oversized
 *   arrays, other protocol versions), truncated frames, trailing bytes, text frames, empty
 *   frames, frames over the limit (ws closes 1009), messages that make no sense in that state
 * - with a real task in hand: results for shards never handed to that client, stale or future
 *   iterations, the other phase, unknown task ids, wrong gradient lengths, NaN/Inf gradients,
 *   gradients longer than any model
 * - an honest client computing real gradients that sends every result several times
 *   (duplicates) and re-sends results of finished phases (stale): dropped, connection kept
 *
 * Every refusal must close that connection with the expected close code, a bye whose `code` is
 * stable (and equals the close reason), and a `warning` with the same code for that peer's
 * address in the coordinator's log; dropped results must leave the connection open. Training
 * goes on and ends on the single-process weights hash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decode, type DecodeLimits } from '../shared/codec.ts';
import { closeCodeFor, WS_CLOSE } from '../shared/protocol.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';
import { GanReplica } from '../shared/replica.ts';
import type { Net } from '../shared/protocol.ts';
import { uniformSource } from '../shared/rng.ts';
import { blockRawSum, blockShards, blockStats, type ShardBlock } from '../shared/tree-sum.ts';
import type { GanConfig } from '../shared/config.ts';
import { HANDSHAKE_FRAME_BYTES } from '../coordinator/coordinator.ts';
import { RING8_FLAGS, RawPeer, rawPackr, referenceHash, startInProcessCoordinator, type InProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup, eventsOf, sleep, spawnCli, waitForEvent, waitForExit, type Proc } from './helpers/processes.ts';

const SEED = Number(process.env.GAN_FUZZ_SEED ?? 20240909);
/** Cases on the hostile lanes (the honest lane adds its duplicates and stale results on top). */
const CASES = Number(process.env.GAN_FUZZ_CASES ?? 3000);
const LANES = 4;
const TASK_LANES = 8;
const TOKEN = 'fuzz-token-0123456789';
const TEST_TIMEOUT = 120_000;

/** Codes a refusal may carry: the codec's, and the coordinator's own. */
const STABLE_CODES = new Set([
  'FRAME_TOO_LARGE', 'FRAME_NOT_MSGPACK', 'FRAME_NOT_OBJECT', 'UNKNOWN_TYPE', 'PROTOCOL_MISMATCH', 'BAD_FIELD', 'NON_FINITE', 'ARRAY_TOO_LARGE',
  'TEXT_FRAME', 'UNEXPECTED_HELLO', 'UNEXPECTED_AUTH', 'UNEXPECTED_MESSAGE', 'NOT_AUTHENTICATED', 'AUTH_FAILED', 'RESULT_NOT_ASSIGNED', 'GRADIENT_SIZE',
]);

type Rng = () => number;
const int = (r: Rng, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[int(r, xs.length)];

const FIELD_NAMES = ['type', 'protocol', 'workerId', 'backend', 'host', 'capabilities', 'wire', 'maxShards', 'nonce', 'hmac', 'runId', 'config', 'g', 'd', 'net', 'version', 'weights', 'taskId', 'iteration', 'phase', 'dStep', 'gVersion', 'dVersion', 'shards', 'shardId', 'seed', 'rows', 'real', 'realLabels', 'gradient', 'stats', 'loss', 'dReal', 'dFake', 'computeMs', 'reason', 'code', '__proto__', 'constructor'];
const TYPE_NAMES = ['hello', 'challenge', 'auth', 'welcome', 'weights', 'task', 'result', 'bye', 'Hello', 'results', '', 'ping'];

function randomString(r: Rng, max = 40): string {
  const n = int(r, max);
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(r() < 0.9 ? 32 + int(r, 95) : int(r, 0x2fff));
  return s;
}

function randomFloats(r: Rng, n: number, poison = 0.1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r() < poison ? pick(r, [NaN, Infinity, -Infinity]) : r() * 2 - 1;
  return a;
}

/** An own property even for '__proto__' (plain assignment would replace the prototype instead). */
function setKey(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

function randomValue(r: Rng, depth = 0): unknown {
  switch (int(r, depth > 2 ? 10 : 13)) {
    case 0:
      return pick(r, [0, 1, -1, 2 ** 31, 2 ** 32, 2 ** 53 + 2, -(2 ** 40), int(r, 1000)]);
    case 1:
      return pick(r, [NaN, Infinity, -Infinity, -0, 0.5, 1e300, -1e-300, r()]);
    case 2:
      return randomString(r, r() < 0.1 ? 2000 : 30);
    case 3:
      return r() < 0.5;
    case 4:
      return null;
    case 5:
      return randomFloats(r, int(r, 64));
    case 6:
      return Int32Array.from({ length: int(r, 16) }, () => int(r, 2 ** 31));
    case 7:
      return new Uint8Array(r() < 0.5 ? 32 : int(r, 64)).map(() => int(r, 256));
    case 8:
      return pick(r, TYPE_NAMES);
    case 9:
      return BigInt(int(r, 2 ** 31)) * 2n ** 40n;
    case 10:
      return Array.from({ length: int(r, 6) }, () => randomValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = int(r, 8); i > 0; i--) setKey(o, r() < 0.8 ? pick(r, FIELD_NAMES) : randomString(r, 10), randomValue(r, depth + 1));
      return o;
    }
  }
}

/** Valid messages of every type (as a peer could send them; taskIds are never issued). */
function templates(r: Rng, limits: DecodeLimits): Record<string, unknown>[] {
  const p = PROTOCOL_VERSION;
  // Small: before auth anything over 16 KiB is refused as FRAME_TOO_LARGE before it is parsed.
  const grad = randomFloats(r, r() < 0.9 ? int(r, 64) : int(r, limits.maxFloats), 0);
  return [
    { type: 'hello', protocol: p, workerId: `fuzz-${int(r, 1e9)}`, backend: 'wasm', host: 'fuzz', capabilities: { wire: ['fp32'], maxShards: 8 } },
    { type: 'auth', protocol: p, hmac: new Uint8Array(32).map(() => int(r, 256)) },
    { type: 'result', protocol: p, taskId: 2 ** 40 + int(r, 1000), iteration: int(r, 40), phase: pick(r, ['D', 'G']), dStep: 0, firstShard: int(r, 8), count: 1, gradient: grad, stats: { loss: 0.7, dReal: 0.5, dFake: 0.5 }, computeMs: 3 },
    { type: 'bye', protocol: p, reason: 'fuzz', code: 'FUZZ' },
    { type: 'challenge', protocol: p, nonce: new Uint8Array(32) },
    { type: 'weights', protocol: p, net: 'G', version: 3, weights: randomFloats(r, 100, 0) },
    { type: 'task', protocol: p, taskId: 1, iteration: 0, phase: 'D', dStep: 0, gVersion: 0, dVersion: 0, shards: [{ shardId: 0, seed: 1, rows: 8 }], shardCount: 1, blocks: [{ first: 0, count: 1 }] },
    { type: 'welcome', protocol: p, runId: 'x', config: { a: 1 }, g: { version: 0, weights: randomFloats(r, 10, 0) }, d: { version: 0, weights: randomFloats(r, 10, 0) } },
  ];
}

function mutate(r: Rng, msg: Record<string, unknown>, limits: DecodeLimits): Record<string, unknown> {
  const m: Record<string, unknown> = { ...msg };
  for (let n = 1 + int(r, 3); n > 0; n--) {
    const keys = Object.keys(m);
    switch (int(r, 10)) {
      case 0:
        delete m[pick(r, keys)];
        break;
      case 1:
        setKey(m, pick(r, keys), randomValue(r));
        break;
      case 2:
        setKey(m, pick(r, FIELD_NAMES), randomValue(r));
        break;
      case 3:
        m.protocol = pick(r, [0, 2, 99, -1, 1.5, '1', null]);
        break;
      case 4:
        m.type = pick(r, TYPE_NAMES);
        break;
      case 5:
        if ('gradient' in m) m.gradient = pick(r, [randomFloats(r, 1 + int(r, 500), 0.5), new Float32Array(limits.maxFloats + 1 + int(r, 100)), new Float64Array(10), [1, 2, 3]]);
        else m.extra = randomValue(r);
        break;
      case 6:
        if ('stats' in m) m.stats = { loss: pick(r, [NaN, Infinity, 'x', null]), dReal: 0.5, dFake: 0.5 };
        else m.workerId = pick(r, ['', 'x'.repeat(129), 7, null]);
        break;
      case 7:
        m.capabilities = pick(r, [{ wire: Array(9).fill('fp32'), maxShards: 1 }, { wire: ['x'.repeat(17)], maxShards: 1 }, { wire: [], maxShards: 0 }, []]);
        break;
      case 8:
        m.computeMs = pick(r, [-1, NaN, '3', Infinity]);
        break;
      default:
        setKey(m, randomString(r, 12), randomValue(r));
    }
  }
  return m;
}

type Stage = 'fresh' | 'hello' | 'ready';
type Frame = { bytes: Uint8Array; text?: undefined } | { text: string; bytes?: undefined };

/** A hostile frame for a stage, seeded. */
function hostileFrame(r: Rng, limits: DecodeLimits): { frame: Frame; kind: string } {
  const tpl = () => pick(r, templates(r, limits));
  switch (int(r, 9)) {
    case 0: {
      const n = r() < 0.05 ? 0 : r() < 0.9 ? int(r, 64) : int(r, 40_000);
      return { kind: 'random-bytes', frame: { bytes: new Uint8Array(n).map(() => int(r, 256)) } };
    }
    case 1:
      return { kind: 'random-value', frame: { bytes: rawPackr.pack(randomValue(r)) } };
    case 2:
    case 3:
      return { kind: 'mutated', frame: { bytes: rawPackr.pack(mutate(r, tpl(), limits)) } };
    case 4: {
      const full = rawPackr.pack(tpl());
      return { kind: 'truncated', frame: { bytes: full.subarray(0, 1 + int(r, full.length - 1)) } };
    }
    case 5: {
      const full = rawPackr.pack(tpl());
      const junk = new Uint8Array(1 + int(r, 8)).map(() => int(r, 256));
      return { kind: 'trailing-bytes', frame: { bytes: Buffer.concat([full, junk]) } };
    }
    case 6:
      return { kind: 'text', frame: { text: r() < 0.5 ? JSON.stringify(tpl(), (_k, v) => (ArrayBuffer.isView(v) ? [] : v)) : randomString(r, 100) } };
    case 7:
      return { kind: 'valid-out-of-place', frame: { bytes: rawPackr.pack(tpl()) } };
    default: {
      // Around the frame limit: exactly at it (decodes, or not), just over it (ws refuses, 1009).
      const size = limits.maxFrameBytes + pick(r, [1, 2, 1000, 0, -1]);
      return { kind: 'frame-limit', frame: { bytes: new Uint8Array(Math.max(0, size)).fill(0xc1) } };
    }
  }
}

interface Expectation {
  /** Closed by the coordinator with this code... */
  close?: number;
  /** ...and this stable code (bye.code, close reason, warning code). */
  code?: string;
  /** No bye frame (ws itself refused the frame). */
  noBye?: boolean;
  /** Not a refusal: the connection stays open (prove it with a sentinel). */
  open?: 'challenge' | 'dropped';
}

/** What the coordinator must do with a frame at a stage (the codec is the oracle for decoding). */
function expectationFor(stage: Stage, frame: Frame, limits: DecodeLimits): Expectation {
  if (frame.text !== undefined) return { close: WS_CLOSE.protocolError, code: 'TEXT_FRAME' };
  // ws holds the limit of the connection's stage itself: a larger frame never reaches the decoder.
  const stageLimits = stage === 'ready' ? limits : { ...limits, maxFrameBytes: HANDSHAKE_FRAME_BYTES };
  if (frame.bytes.byteLength > stageLimits.maxFrameBytes) return { close: 1009, code: 'FRAME_TOO_LARGE', noBye: true };
  const res = decode(frame.bytes, stageLimits);
  if (!res.ok) return { close: closeCodeFor(res.code), code: res.code };
  const pe = WS_CLOSE.protocolError;
  switch (res.msg.type) {
    case 'hello':
      return stage === 'fresh' ? { open: 'challenge' } : { close: pe, code: 'UNEXPECTED_HELLO' };
    case 'auth':
      return stage === 'hello' ? { close: WS_CLOSE.authFailed, code: 'AUTH_FAILED' } : { close: pe, code: 'UNEXPECTED_AUTH' };
    case 'result':
      return stage === 'ready' ? { close: pe, code: 'RESULT_NOT_ASSIGNED' } : { close: pe, code: 'NOT_AUTHENTICATED' };
    case 'bye':
      return { close: 1000, code: 'BYE', noBye: true };
    default:
      return { close: pe, code: 'UNEXPECTED_MESSAGE' };
  }
}

interface Outcome {
  index: number;
  stage: Stage;
  kind: string;
  expected: Expectation;
  got: string;
  ms: number;
}

let c: InProcessCoordinator;
let workers: Proc[] = [];
let limits: DecodeLimits;
let reference = '';

beforeAll(async () => {
  reference = await referenceHash(RING8_FLAGS);
  c = await startInProcessCoordinator({ token: TOKEN });
  const { G, D } = c.coordinator.replica.layout;
  const maxFloats = Math.max(G.total, D.total);
  limits = { maxFrameBytes: maxFloats * 4 + 64 * 1024, maxFloats, maxShards: 8 };
  // The honest client in the test paces the run to the fuzzing (see honestLane).
  workers = ['a', 'b'].map((id) =>
    spawnCli('worker', ['--coordinator', c.url, '--id', `real-${id}`, '--backend', 'wasm'], { env: { GAN_TOKEN: TOKEN, GAN_TEST_SHARD_DELAY_MS: process.env.GAN_FUZZ_DELAY ?? '5' }, name: `worker real-${id}` }),
  );
  await c.waitFor((r) => r.event === 'worker_joined' && r.worker === 'real-a', 30_000, 'real-a to join');
}, TEST_TIMEOUT);

afterAll(async () => {
  await c?.close();
  await cleanup();
}, TEST_TIMEOUT);

/** Runs one case on a fresh connection; returns a description of what went wrong, or null. */
async function runCase(index: number, outcomes: Outcome[]): Promise<string | null> {
  const r = uniformSource(SEED * 7919 + index);
  const stage: Stage = pick(r, ['fresh', 'fresh', 'hello', 'ready']);
  const t0 = performance.now();
  const peer = await RawPeer.connect(c.url);
  const from = c.records.length;
  try {
    let kind: string;
    let frame: Frame;
    let expected: Expectation;
    if (stage !== 'fresh') {
      if (stage === 'hello') {
        peer.hello(`fuzz-${index}`);
        if (!(await peer.next((m) => m.type === 'challenge', 5000))) return `no challenge (${JSON.stringify(peer.close)})`;
      } else {
        const { welcome } = await peer.handshake(`fuzz-${index}`, TOKEN);
        if (!welcome) return `no welcome (${JSON.stringify(peer.close)} ${JSON.stringify(peer.bye)})`;
      }
    }
    ({ kind, frame } = hostileFrame(r, limits));
    expected = expectationFor(stage, frame, limits);
    if (frame.text !== undefined) peer.send(frame.text);
    else peer.send(frame.bytes);
    const got = await settle(peer, expected, from);
    outcomes.push({ index, stage, kind, expected, got, ms: performance.now() - t0 });
    return got === 'ok' ? null : `${stage}/${kind}: expected ${JSON.stringify(expected)}, got ${got}`;
  } finally {
    peer.terminate();
  }
}

/**
 * Results built from a task this client really holds, broken in one way each (the variants in
 * turn). A new connection only gets shards when a phase starts and it is idle, so this lane
 * waits for tasks while the hostile lanes run.
 */
async function taskLane(lane: number, stop: () => boolean, outcomes: Outcome[], failures: string[]): Promise<void> {
  for (let n = 0; !stop(); n++) {
    const index = n * TASK_LANES + lane;
    const r = uniformSource(SEED * 104729 + index);
    const peer = await RawPeer.connect(c.url);
    const t0 = performance.now();
    try {
      const { welcome } = await peer.handshake(`fuzz-task-${index}`, TOKEN);
      if (!welcome) {
        failures.push(`task case ${index}: no welcome (${JSON.stringify(peer.close)})`);
        continue;
      }
      const built = await taskCase(r, peer);
      if (!built) continue; // no shards for this connection in time: not a case
      const from = c.records.length;
      peer.send(built.frame.bytes!);
      const got = await settle(peer, built.expected, from);
      outcomes.push({ index, stage: 'ready', kind: built.kind, expected: built.expected, got, ms: performance.now() - t0 });
      if (got !== 'ok') failures.push(`task case ${index} ${built.kind}: expected ${JSON.stringify(built.expected)}, got ${got}`);
    } finally {
      peer.terminate();
    }
  }
}

/**
 * Which breakage the next task case gets. Claimed the moment a task arrives (synchronously, so
 * concurrent lanes never take the same one and no variant is skipped): every 8 task cases
 * cover all variants, however the lanes interleave.
 */
let nextTaskVariant = 0;

/** A result built from a task this client really holds, broken in one way. */
async function taskCase(r: Rng, peer: RawPeer): Promise<{ kind: string; frame: Frame; expected: Expectation } | null> {
  const task = await peer.next((m) => m.type === 'task', 2000);
  if (!task) return null;
  let variant = nextTaskVariant++;
  // Nothing precedes iteration 0: such a task gets a future-iteration case, and the next task
  // takes the stale-iteration variant instead.
  if (variant % 8 === 1 && (task.iteration as number) === 0) {
    nextTaskVariant--;
    variant = 7;
  }
  const shards = task.shards as { shardId: number }[];
  const held = new Set(shards.map((s) => s.shardId));
  const phase = task.phase as Net;
  const size = c.coordinator.replica.layout[phase].total;
  const base = {
    type: 'result',
    protocol: PROTOCOL_VERSION,
    taskId: task.taskId as number,
    iteration: task.iteration as number,
    phase,
    dStep: task.dStep as number,
    firstShard: (task.blocks as { first: number; count: number }[])[0].first,
    count: (task.blocks as { first: number; count: number }[])[0].count,
    gradient: randomFloats(r, size, 0),
    stats: { loss: 0.69, dReal: 0.5, dFake: 0.5 },
    computeMs: 4,
  };
  const pe = WS_CLOSE.protocolError;
  const notHeld = [...Array(8).keys()].filter((s) => !held.has(s));
  switch (variant % 8) {
    case 0:
      if (notHeld.length === 0) return { kind: 'unknown-task', frame: { bytes: rawPackr.pack({ ...base, taskId: base.taskId + 1000 }) }, expected: { close: pe, code: 'RESULT_NOT_ASSIGNED' } };
      return { kind: 'shard-not-handed', frame: { bytes: rawPackr.pack({ ...base, firstShard: pick(r, notHeld), count: 1 }) }, expected: { close: pe, code: 'RESULT_NOT_ASSIGNED' } };
    case 1: {
      const iteration = Math.max(0, base.iteration - pick(r, [1, 3, base.iteration]));
      return { kind: 'stale-iteration', frame: { bytes: rawPackr.pack({ ...base, iteration }) }, expected: { close: pe, code: 'RESULT_NOT_ASSIGNED' } };
    }
    case 7:
      return { kind: 'future-iteration', frame: { bytes: rawPackr.pack({ ...base, iteration: base.iteration + pick(r, [1, 2, 1000]) }) }, expected: { close: pe, code: 'RESULT_NOT_ASSIGNED' } };
    case 2:
      return { kind: 'other-phase', frame: { bytes: rawPackr.pack(r() < 0.5 ? { ...base, phase: phase === 'D' ? 'G' : 'D' } : { ...base, dStep: base.dStep + 1 }) }, expected: { close: pe, code: 'RESULT_NOT_ASSIGNED' } };
    case 3: {
      const n = pick(r, [0, 1, size - 1, size + 1, Math.floor(size / 2)]);
      const frame = { bytes: rawPackr.pack({ ...base, gradient: randomFloats(r, n, 0) }) };
      return { kind: 'wrong-length', frame, expected: expectationOrDecode(frame, { close: pe, code: 'GRADIENT_SIZE' }) };
    }
    case 4: {
      const g = randomFloats(r, size, 0);
      g[int(r, size)] = pick(r, [NaN, Infinity, -Infinity]);
      return { kind: 'non-finite-gradient', frame: { bytes: rawPackr.pack({ ...base, gradient: g }) }, expected: { close: pe, code: 'NON_FINITE' } };
    }
    case 5:
      return { kind: 'oversized-gradient', frame: { bytes: rawPackr.pack({ ...base, gradient: new Float32Array(limits.maxFloats + 1 + int(r, 1000)) }) }, expected: { close: pe, code: 'ARRAY_TOO_LARGE' } };
    default:
      return { kind: 'unknown-task', frame: { bytes: rawPackr.pack({ ...base, taskId: base.taskId + 1 + int(r, 1e6) }) }, expected: { close: pe, code: 'RESULT_NOT_ASSIGNED' } };
  }
}

/** A frame the decoder refuses keeps the decoder's code; otherwise the given expectation. */
function expectationOrDecode(frame: Frame, otherwise: Expectation): Expectation {
  const res = decode(frame.bytes!, limits);
  return res.ok ? otherwise : { close: closeCodeFor(res.code), code: res.code };
}

/** Checks the coordinator's reaction; 'ok' or what happened instead. */
async function settle(peer: RawPeer, expected: Expectation, from: number): Promise<string> {
  if (expected.open) {
    if (expected.open === 'challenge' && !(await peer.next((m) => m.type === 'challenge', 5000))) return `no challenge (${JSON.stringify(peer.close)})`;
    // Still open and still listening: a text frame must now be refused as such.
    if (peer.close) return `closed ${JSON.stringify(peer.close)} although the frame is not a refusal`;
    const fromSentinel = c.records.length;
    peer.send('sentinel');
    return settle(peer, { close: WS_CLOSE.protocolError, code: 'TEXT_FRAME' }, fromSentinel);
  }
  const close = await peer.waitClose(5000);
  if (!close) return 'still open after 5 s';
  if (close.code !== expected.close) return `close ${close.code} ${close.reason} bye ${JSON.stringify(peer.bye)}`;
  if (expected.code === 'BYE') return close.reason === 'BYE' ? 'ok' : `close reason ${close.reason}`;
  if (!expected.noBye) {
    const bye = peer.bye;
    if (!bye || bye.code !== expected.code) return `bye ${JSON.stringify(bye)}`;
    if (close.reason !== expected.code) return `close reason ${close.reason}`;
  }
  const logged = c.records.slice(from).some((rec) => rec.event === 'warning' && rec.code === expected.code && rec.address === peer.address);
  return logged ? 'ok' : `no warning ${expected.code} for ${peer.address} in the coordinator log`;
}

/**
 * An honest client: real gradients, each sent 2-4 times, plus re-sends after the phase moved on.
 * It is also the pacemaker: while the hostile lanes run, it holds its results (up to 1.5 s, under
 * the 2 s straggler deadline) whenever training is ahead of the fuzzing, so every case lands
 * mid-run however fast or slow this machine is; afterwards it lets the run finish at full speed.
 */
async function honestLane(stop: () => boolean, behind: () => boolean, counts: { duplicates: number; stale: number; accepted: number; heldMs: number }): Promise<string | null> {
  const peer = await RawPeer.connect(c.url);
  const { welcome } = await peer.handshake('fuzz-honest', TOKEN);
  if (!welcome) return 'honest client got no welcome';
  const replica = new GanReplica(welcome.config as unknown as GanConfig);
  try {
    const versions: Record<Net, number> = { G: -1, D: -1 };
    const setWeights = (net: Net, blob: { version: number; weights: Float32Array }) => {
      replica.setWeights(net, blob.weights);
      versions[net] = blob.version;
    };
    setWeights('G', welcome.g as { version: number; weights: Float32Array });
    setWeights('D', welcome.d as { version: number; weights: Float32Array });
    let seen = peer.received.length;
    let previous: Uint8Array | null = null;
    while (!stop() && !peer.close) {
      await peer.next(() => true, 200, seen);
      for (; seen < peer.received.length; seen++) {
        const m = peer.received[seen];
        if (m.type === 'weights') setWeights(m.net as Net, { version: m.version as number, weights: m.weights as Float32Array });
        if (m.type !== 'task' || m.gVersion !== versions.G || m.dVersion !== versions.D) continue;
        const held = performance.now();
        while (!stop() && !behind() && performance.now() - held < 1500) await sleep(20);
        counts.heldMs += performance.now() - held;
        // One result per block of the task, summed over the tree as a worker does.
        const taskShards = m.shards as { shardId: number; seed: number; rows: number; real?: Float32Array }[];
        for (const block of m.blocks as ShardBlock[]) {
          const t = performance.now();
          const results = new Map(blockShards(block, m.shardCount as number).map((id) => [id, replica.computeShard(m.phase as Net, taskShards.find((sh) => sh.shardId === id)!)]));
          const gradient = blockRawSum(m.shardCount as number, block, (id) => results.get(id)!.gradient, null);
          const st = blockStats(m.shardCount as number, block, (lo, size) => (size === 1 ? results.get(lo) : undefined));
          const computeMs = performance.now() - t;
          const frame = rawPackr.pack({ type: 'result', protocol: PROTOCOL_VERSION, taskId: m.taskId, iteration: m.iteration, phase: m.phase, dStep: m.dStep, firstShard: block.first, count: block.count, gradient, stats: { loss: st.loss, dReal: st.dReal, dFake: st.dFake }, computeMs });
          const copies = 2 + (block.first % 3);
          for (let i = 0; i < copies; i++) peer.send(frame);
          counts.accepted++;
          counts.duplicates += copies - 1;
          // A result of an earlier (finished) phase: dropped, connection kept.
          if (previous) {
            peer.send(previous);
            counts.stale++;
          }
          previous = frame;
        }
      }
    }
    if (peer.close) return `honest client was closed: ${JSON.stringify(peer.close)} ${JSON.stringify(peer.bye)}`;
    const from = c.records.length;
    peer.send('sentinel');
    const got = await settle(peer, { close: WS_CLOSE.protocolError, code: 'TEXT_FRAME' }, from);
    return got === 'ok' ? null : `honest client: ${got}`;
  } finally {
    replica.dispose();
    peer.terminate();
  }
}

describe('coordinator fuzzing while real workers train', () => {
  it(
    `refuses ${CASES} seeded hostile cases with stable codes, drops duplicates and stale results, and ends on the reference hash`,
    async () => {
      const outcomes: Outcome[] = [];
      const failures: string[] = [];
      let next = 0;
      let lanesDone = false;
      const counts = { duplicates: 0, stale: 0, accepted: 0, heldMs: 0 };
      const startIteration = c.coordinator.state.iteration;
      const t0 = performance.now();
      const ticker = process.env.GAN_FUZZ_DEBUG ? setInterval(() => console.log(`t=${((performance.now() - t0) / 1000).toFixed(1)} cases=${outcomes.length} iteration=${c.coordinator.state.iteration}`), 2000) : null;
      const lane = async () => {
        while (next < CASES) {
          const index = next++;
          try {
            const problem = await runCase(index, outcomes);
            if (problem) failures.push(`case ${index} (seed ${SEED}): ${problem}`);
          } catch (err) {
            failures.push(`case ${index} (seed ${SEED}): threw ${(err as Error).message}`);
          }
        }
      };
      // Training may be at iteration 2 + 36 x (share of cases done): it ends after the fuzzing.
      const behind = () => c.coordinator.state.iteration < 2 + Math.floor((36 * next) / CASES);
      const honest = honestLane(() => lanesDone, behind, counts);
      const taskOutcomes: Outcome[] = [];
      // Several waiting connections at once: each gets a shard only now and then (a new worker's
      // share starts small). With 8 lanes a run gets 60-65 task cases on 2 cores; 4 lanes gave
      // 12-26, too close to the bound below once training got faster.
      const tasks = Promise.all(Array.from({ length: TASK_LANES }, (_, i) => taskLane(i, () => lanesDone, taskOutcomes, failures)));
      await Promise.all(Array.from({ length: LANES }, lane));
      lanesDone = true;
      await tasks;
      outcomes.push(...taskOutcomes);
      if (ticker) clearInterval(ticker);
      const honestProblem = await honest;
      const fuzzMs = performance.now() - t0;
      const endIteration = c.coordinator.state.iteration;

      if (process.env.GAN_FUZZ_DEBUG) {
        const by = new Map<string, number[]>();
        for (const o of outcomes) by.set(`${o.stage}/${o.kind}`, [...(by.get(`${o.stage}/${o.kind}`) ?? []), o.ms]);
        for (const [k, v] of [...by].sort()) console.log(k, v.length, (v.reduce((a, b) => a + b, 0) / v.length).toFixed(1), Math.max(...v).toFixed(0));
      }
      expect(failures.slice(0, 10)).toEqual([]);
      expect(honestProblem).toBeNull();
      expect(outcomes.length - taskOutcomes.length).toBe(CASES);
      expect(taskOutcomes.length).toBeGreaterThanOrEqual(14);
      // Fuzzing happened while training ran, not before or after it.
      expect(startIteration).toBeLessThan(20);
      expect(endIteration).toBeGreaterThan(startIteration);
      expect(c.coordinator.state.finished, `fuzzing took ${fuzzMs.toFixed(0)} ms; the run finished first`).toBe(false);
      expect(counts.duplicates).toBeGreaterThan(20);
      expect(counts.stale).toBeGreaterThan(5);

      // Every kind of case, at every stage, was exercised.
      const kinds = new Set(outcomes.map((o) => o.kind));
      for (const k of ['random-bytes', 'random-value', 'mutated', 'truncated', 'trailing-bytes', 'text', 'valid-out-of-place', 'frame-limit', 'shard-not-handed', 'stale-iteration', 'other-phase', 'wrong-length', 'non-finite-gradient', 'oversized-gradient', 'unknown-task']) {
        expect(kinds, k).toContain(k);
      }
      const codes = new Set(outcomes.map((o) => o.expected.code));
      const label = (o: Outcome) => o.expected.code ?? `open:${o.expected.open}`;
      for (const code of ['FRAME_NOT_MSGPACK', 'FRAME_NOT_OBJECT', 'BAD_FIELD', 'NON_FINITE', 'ARRAY_TOO_LARGE', 'PROTOCOL_MISMATCH', 'UNKNOWN_TYPE', 'FRAME_TOO_LARGE', 'TEXT_FRAME', 'UNEXPECTED_HELLO', 'UNEXPECTED_AUTH', 'UNEXPECTED_MESSAGE', 'NOT_AUTHENTICATED', 'AUTH_FAILED', 'RESULT_NOT_ASSIGNED', 'GRADIENT_SIZE']) {
        expect(codes, code).toContain(code);
      }
      // Every warning the coordinator logged carries a stable code.
      for (const rec of c.records.filter((x) => x.event === 'warning')) {
        expect(typeof rec.code === 'string' && (STABLE_CODES.has(rec.code) || ['BANNED', 'NO_WORKERS', 'HANDSHAKE_TIMEOUT', 'REPLACED', 'WORKERS_IDLE'].includes(rec.code)), JSON.stringify(rec)).toBe(true);
      }
      expect(c.records.filter((x) => (x.level ?? 0) >= 50)).toEqual([]);

      // Training went on: the real workers never left, and the weights are the reference's.
      const result = await c.done;
      expect(result.iterations).toBe(40);
      expect(result.weightsHash).toBe(reference);
      const left = c.records.filter((x) => x.event === 'worker_left' && String(x.worker).startsWith('real-'));
      expect(left).toEqual([]);
      await c.close();
      for (const w of workers) {
        expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });
        expect(eventsOf(w, 'disconnected'), w.name).toEqual([]);
      }
      await waitForEvent(workers[0], 'worker_finished', 1000);
      console.log(
        `fuzz: ${outcomes.length} cases + ${counts.duplicates} duplicate and ${counts.stale} stale results in ${(fuzzMs / 1000).toFixed(1)} s (honest client held results ${(counts.heldMs / 1000).toFixed(1)} s), iterations ${startIteration} -> ${endIteration}; ` +
          `outcomes: ${[...new Set(outcomes.map(label))].sort().map((l) => `${l}=${outcomes.filter((o) => label(o) === l).length}`).join(' ')}`,
      );
    },
    TEST_TIMEOUT,
  );
});
