import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  decode,
  DecodeErrorCode,
  encode,
  firstNonFinite,
  validateMessage,
  type DecodeLimits,
  type DecodeResult,
} from '../shared/codec.ts';
import {
  closeCodeFor,
  MAX_TASK_SHARDS,
  WS_CLOSE,
  MESSAGE_TYPES,
  PROTOCOL_VERSION,
  type Message,
  type Outgoing,
  type ResultMsg,
  type TaskMsg,
} from '../shared/protocol.ts';
import { uniformSource } from '../shared/rng.ts';
import { floatPayloadBytes } from '../shared/codec.ts';
import { encodeHalf, roundTripHalf } from '../shared/float16.ts';
import type { WeightsMsg, WelcomeMsg } from '../shared/protocol.ts';

const LIMITS: DecodeLimits = { maxFrameBytes: 64 * 1024 * 1024, maxFloats: 4_000_000 };

/** Same wire options as the codec, but no protocol stamping: for crafting hostile frames. */
const raw = new Packr({ moreTypes: true, useRecords: false });
const craft = (value: unknown): Uint8Array => raw.pack(value);


function floats(n: number, seed = 1): Float32Array {
  const r = uniformSource(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r() * 2 - 1;
  return a;
}

function nonce(): Uint8Array {
  const b = new Uint8Array(32);
  for (let i = 0; i < 32; i++) b[i] = (i * 37 + 11) & 0xff;
  return b;
}

const samples: { [K in Message['type']]: Outgoing<Extract<Message, { type: K }>> } = {
  hello: {
    type: 'hello',
    workerId: 'worker-7',
    backend: 'wasm',
    host: 'box-3.local',
    capabilities: { wire: ['f32', 'seeded'], maxShards: 16 },
  },
  challenge: { type: 'challenge', nonce: nonce() },
  auth: { type: 'auth', hmac: nonce().reverse() },
  welcome: {
    type: 'welcome',
    runId: 'run-2024-01',
    config: { model: 'mlp', layers: [256, 256], lr: 0.0002, nested: { beta: [0.5, 0.999], label: null, on: true } },
    g: { version: 3, weights: floats(1000, 2) },
    d: { version: 5, weights: floats(777, 3) },
  },
  weights: { type: 'weights', net: 'D', version: 12, weights: floats(5000, 4) },
  task: {
    type: 'task',
    taskId: 41,
    iteration: 9,
    phase: 'D',
    dStep: 1,
    gVersion: 3,
    dVersion: 5,
    shards: [
      { shardId: 0, seed: 0xffffffff, rows: 4 },
      { shardId: 1, seed: 0, rows: 2, real: floats(2 * 784, 5), realLabels: new Int32Array([3, 9]) },
      { shardId: 7, seed: 123, rows: 3, real: floats(3 * 10, 6) },
    ],
    shardCount: 8,
    blocks: [
      { first: 0, count: 2 },
      { first: 7, count: 1 },
    ],
  },
  result: {
    type: 'result',
    taskId: 41,
    iteration: 9,
    phase: 'G',
    dStep: 0,
    firstShard: 4,
    count: 4,
    gradient: floats(10_000, 7),
    stats: { loss: 0.693, dReal: 0.51, dFake: -0.49 },
    computeMs: 12.5,
  },
  'relay-offer': { type: 'relay-offer', url: 'ws://10.0.0.7:8700' },
  tree: { type: 'tree', parentUrl: 'ws://10.0.0.7:8700', ticket: new Uint8Array(16).fill(7), children: [{ workerId: 'w-9', ticket: new Uint8Array(16).fill(9) }], sumChunk: 8192 },
  'weights-head': { type: 'weights-head', net: 'G', version: 4, bytes: 40_017, sha256: nonce() },
  'weights-chunk': { type: 'weights-chunk', net: 'G', version: 4, total: 40_017, offset: 32_768, data: new Uint8Array(7249).fill(3) },
  'relay-expect': { type: 'relay-expect', iteration: 9, phase: 'D', dStep: 0, shardCount: 8, shards: new Int32Array([0, 1, 2, 5]), waitMs: 2000 },
  sum: { type: 'sum', iteration: 9, phase: 'D', dStep: 0, shardCount: 6, firstShard: 4, count: 4, gradient: floats(3000, 8), offset: 8192, total: 11192, stats: { loss: 1.5, dReal: 0.2, dFake: 0.7 } },
  receipt: { type: 'receipt', taskId: 41, firstShard: 4, count: 2, computeMs: 3.5 },
  'relay-report': { type: 'relay-report', code: 'RELAY_DIGEST_MISMATCH', parentUrl: 'ws://10.0.0.7:8700', net: 'D', version: 12, detail: 'sha256 differs' },
  'relay-hello': { type: 'relay-hello', workerId: 'w-9', ticket: new Uint8Array(16).fill(9) },
  'relay-welcome': { type: 'relay-welcome' },
  bye: { type: 'bye', reason: 'coordinator is shutting down', code: 'SHUTTING_DOWN' },
};

function expectFail(r: DecodeResult, code: DecodeErrorCode, ...mentions: (string | RegExp)[]): string {
  if (r.ok) throw new Error(`expected ${code}, got ok ${r.msg.type}`);
  expect(r.code, r.reason).toBe(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(r.reason).toContain(m);
    else expect(r.reason).toMatch(m);
  }
  return r.reason;
}

function ok(r: DecodeResult): Message {
  if (!r.ok) throw new Error(`expected ok, got ${r.code}: ${r.reason}`);
  return r.msg;
}

/** A valid message of `type` as a plain object with protocol, for mutating into bad frames. */
function valid(type: Message['type']): Record<string, any> {
  const s = structuredClone(samples[type]) as Record<string, any>;
  return { ...s, protocol: PROTOCOL_VERSION };
}

describe('round trip', () => {
  for (const type of MESSAGE_TYPES) {
    it(`${type} comes back equal, with the same typed array classes`, () => {
      const sent = samples[type];
      const msg = ok(decode(encode(sent), LIMITS));
      expect(msg).toEqual({ ...sent, protocol: PROTOCOL_VERSION });
      expect(msg.type).toBe(type);
    });
  }

  it('keeps typed array classes and decodes floats into aligned memory owned by the message', () => {
    const frame = encode(samples.task);
    const msg = ok(decode(frame, LIMITS)) as TaskMsg;
    const shard = msg.shards[1]!;
    expect(shard.real).toBeInstanceOf(Float32Array);
    expect(shard.realLabels).toBeInstanceOf(Int32Array);
    expect(shard.real!.byteOffset % 4).toBe(0);
    // owns its buffer: no view into the frame, so the frame can be dropped or reused
    expect(shard.real!.byteOffset).toBe(0);
    expect(shard.real!.buffer.byteLength).toBe(shard.real!.byteLength);
    expect(shard.real!.buffer).not.toBe(frame.buffer);
    const before = shard.real![0];
    frame.fill(0);
    expect(shard.real![0]).toBe(before);
  });

  it('round trips subarray views (non-zero byteOffset) as just the viewed floats', () => {
    const big = floats(100, 9);
    const view = big.subarray(3, 53);
    const msg = ok(decode(encode({ ...samples.weights, weights: view }), LIMITS));
    expect(msg.type === 'weights' && msg.weights).toEqual(view);
  });

  it('accepts Buffers for 32-byte fields and hands back plain Uint8Arrays', () => {
    // crypto returns Buffers, which msgpackr sends as bin and decodes as a view into the frame
    const n = randomBytes(32);
    const frame = encode({ type: 'challenge', nonce: n });
    const msg = ok(decode(frame, LIMITS));
    if (msg.type !== 'challenge') throw new Error('wrong type');
    expect(msg.nonce.constructor).toBe(Uint8Array);
    expect(Buffer.from(msg.nonce).equals(n)).toBe(true);
    expect(msg.nonce.buffer.byteLength).toBe(32);
  });

  it('stamps the current protocol, overriding whatever the caller set', () => {
    const msg = { ...samples.bye, protocol: 99 } as Message;
    expect(ok(decode(encode(msg), LIMITS)).protocol).toBe(PROTOCOL_VERSION);
  });

  it('accepts ArrayBuffer, plain Uint8Array and fragment lists', () => {
    const frame = encode(samples.result);
    const copy = new Uint8Array(frame);
    expect(ok(decode(copy, LIMITS)).type).toBe('result');
    expect(ok(decode(copy.slice().buffer, LIMITS)).type).toBe('result');
    const b = Buffer.from(frame);
    const parts = [b.subarray(0, 5), b.subarray(5, 1000), b.subarray(1000)];
    expect(ok(decode(parts, LIMITS))).toEqual(ok(decode(frame, LIMITS)));
  });

  it('treats undefined optional shard fields as absent', () => {
    const t = valid('task');
    t.shards[0].real = undefined;
    expect(ok(decode(craft(t), LIMITS)).type).toBe('task');
  });
});

describe('error codes', () => {
  it('FRAME_TOO_LARGE before parsing, for single frames and fragment lists', () => {
    const frame = encode(samples.result);
    const limits = { ...LIMITS, maxFrameBytes: frame.length - 1 };
    expectFail(decode(frame, limits), 'FRAME_TOO_LARGE', `${frame.length} bytes`);
    const b = Buffer.from(frame);
    expectFail(decode([b.subarray(0, 10), b.subarray(10)], limits), 'FRAME_TOO_LARGE');
    expect(decode(frame, { ...limits, maxFrameBytes: frame.length }).ok).toBe(true);
  });

  it('FRAME_NOT_MSGPACK for garbage, empty, truncated and trailing bytes', () => {
    expectFail(decode(new Uint8Array([0xd4, 0x99, 0x00]), LIMITS), 'FRAME_NOT_MSGPACK', 'Unknown extension');
    // 0xc1 is "never used" in the msgpack spec, yet msgpackr decodes it to a sentinel object
    expectFail(decode(new Uint8Array([0xc1]), LIMITS), 'FRAME_NOT_OBJECT', 'C1Type');
    expectFail(decode(new Uint8Array(0), LIMITS), 'FRAME_NOT_MSGPACK', 'empty');
    const frame = encode(samples.hello);
    expectFail(decode(frame.subarray(0, frame.length - 1), LIMITS), 'FRAME_NOT_MSGPACK');
    const longer = new Uint8Array(frame.length + 1);
    longer.set(frame);
    expectFail(decode(longer, LIMITS), 'FRAME_NOT_MSGPACK', 'trailing');
    expectFail(decode('hello' as unknown as Uint8Array, LIMITS), 'FRAME_NOT_MSGPACK');
  });

  it('FRAME_NOT_OBJECT for non-map top levels', () => {
    expectFail(decode(craft([1, 2, 3]), LIMITS), 'FRAME_NOT_OBJECT', 'array');
    expectFail(decode(craft('hello'), LIMITS), 'FRAME_NOT_OBJECT');
    expectFail(decode(craft(null), LIMITS), 'FRAME_NOT_OBJECT');
    expectFail(decode(craft(new Set(['hello'])), LIMITS), 'FRAME_NOT_OBJECT', 'Set');
  });

  it('UNKNOWN_TYPE for unknown, missing and non-string types', () => {
    expectFail(decode(craft({ type: 'gossip', protocol: PROTOCOL_VERSION }), LIMITS), 'UNKNOWN_TYPE', '"gossip"');
    expectFail(decode(craft({ protocol: PROTOCOL_VERSION }), LIMITS), 'UNKNOWN_TYPE', 'message.type');
    expectFail(decode(craft({ type: 3, protocol: PROTOCOL_VERSION }), LIMITS), 'UNKNOWN_TYPE', 'message.type');
    expectFail(decode(craft({ type: 'constructor', protocol: PROTOCOL_VERSION }), LIMITS), 'UNKNOWN_TYPE');
  });

  it('PROTOCOL_MISMATCH with the peer version, even for types this side does not know', () => {
    const newer = PROTOCOL_VERSION + 1;
    const r = decode(craft({ ...valid('hello'), protocol: newer }), LIMITS);
    expectFail(r, 'PROTOCOL_MISMATCH', `protocol ${newer}`, `protocol ${PROTOCOL_VERSION}`);
    expect(!r.ok && r.peerProtocol).toBe(newer);
    expectFail(decode(craft({ type: 'hello2', protocol: newer }), LIMITS), 'PROTOCOL_MISMATCH');
    expectFail(decode(craft({ ...valid('bye'), protocol: 0 }), LIMITS), 'PROTOCOL_MISMATCH');
    expectFail(decode(craft({ ...valid('bye'), protocol: '1' }), LIMITS), 'BAD_FIELD', 'bye.protocol');
    const noProtocol = valid('bye');
    delete noProtocol.protocol;
    expectFail(decode(craft(noProtocol), LIMITS), 'BAD_FIELD', 'bye.protocol is missing');
  });

  it('NON_FINITE names the array and index, for NaN at a random index', () => {
    const r = uniformSource(42);
    for (let trial = 0; trial < 20; trial++) {
      const m = valid('result');
      const at = Math.floor(r() * m.gradient.length);
      m.gradient[at] = NaN;
      const reason = expectFail(decode(craft(m), LIMITS), 'NON_FINITE');
      expect(reason).toBe(`result.gradient[${at}] is NaN`);
    }
  });

  it('NON_FINITE for infinities anywhere floats travel', () => {
    const w = valid('weights');
    w.weights[w.weights.length - 1] = Infinity;
    expectFail(decode(craft(w), LIMITS), 'NON_FINITE', `weights.weights[${w.weights.length - 1}] is Infinity`);
    const t = valid('task');
    t.shards[2].real[4] = -Infinity;
    expectFail(decode(craft(t), LIMITS), 'NON_FINITE', 'task.shards[2].real[4] is -Infinity');
    const wel = valid('welcome');
    wel.d.weights[0] = NaN;
    expectFail(decode(craft(wel), LIMITS), 'NON_FINITE', 'welcome.d.weights[0]');
    const s = valid('result');
    s.stats.loss = NaN;
    expectFail(decode(craft(s), LIMITS), 'NON_FINITE', 'result.stats.loss is NaN');
    const c = valid('result');
    c.computeMs = Infinity;
    expectFail(decode(craft(c), LIMITS), 'NON_FINITE', 'result.computeMs');
    const cfg = valid('welcome');
    cfg.config.nested.beta[1] = NaN;
    expectFail(decode(craft(cfg), LIMITS), 'NON_FINITE', 'welcome.config.nested.beta[1] is NaN');
  });

  it('ARRAY_TOO_LARGE via maxFloats and the shard caps', () => {
    const limits = { ...LIMITS, maxFloats: 9_999 };
    expectFail(decode(encode(samples.result), limits), 'ARRAY_TOO_LARGE', 'result.gradient', '10000', '9999');
    const t = valid('task');
    t.shards[1].realLabels = new Int32Array(20_000);
    t.shards[1].rows = 20_000;
    t.shards[1].real = new Float32Array(20_000);
    expectFail(decode(craft(t), { ...LIMITS, maxFloats: 19_999 }), 'ARRAY_TOO_LARGE', 'task.shards[1].real');
    expectFail(decode(encode(samples.task), { ...LIMITS, maxShards: 2 }), 'ARRAY_TOO_LARGE', 'task.shards', 'limit is 2');
    const many = valid('task');
    many.shards = Array.from({ length: MAX_TASK_SHARDS + 1 }, (_, i) => ({ shardId: i, seed: i, rows: 1 }));
    expectFail(decode(craft(many), { ...LIMITS, maxShards: 1e6 }), 'ARRAY_TOO_LARGE', `limit is ${MAX_TASK_SHARDS}`);
    many.shards.pop();
    many.shardCount = MAX_TASK_SHARDS;
    many.blocks = [{ first: 0, count: MAX_TASK_SHARDS }];
    expect(decode(craft(many), LIMITS).ok).toBe(true);
  });

  it('BAD_FIELD names the field and what was wrong', () => {
    const cases: [Message['type'], (m: Record<string, any>) => void, string][] = [
      ['task', (m) => (m.shards[2].rows = 0), 'task.shards[2].rows must be an integer >= 1, got 0'],
      // Children dial what a relay offers: only ws:// and wss:// hosts, never a local socket or a credential.
      ['relay-offer', (m) => (m.url = 'ws+unix:/var/run/docker.sock:/containers/json'), 'relay-offer.url must be ws:// or wss://, not ws+unix://'],
      ['relay-offer', (m) => (m.url = 'http://10.0.0.7:8700'), 'relay-offer.url must be ws:// or wss://, not http://'],
      ['relay-offer', (m) => (m.url = 'not a url'), 'relay-offer.url is not a URL'],
      ['relay-offer', (m) => (m.url = 'ws://user:pw@10.0.0.7:8700'), 'relay-offer.url must not carry credentials'],
      ['tree', (m) => (m.parentUrl = 'file:///etc/passwd'), 'tree.parentUrl must be ws:// or wss://, not file://'],
      ['task', (m) => (m.shards[0].seed = 2 ** 32), 'task.shards[0].seed must be an integer in [0, 4294967295], got 4294967296'],
      ['task', (m) => (m.shards[0].seed = -1), 'task.shards[0].seed'],
      ['task', (m) => (m.taskId = 1.5), 'task.taskId must be an integer >= 0, got 1.5'],
      ['task', (m) => (m.phase = 'X'), 'task.phase must be one of "D", "G", got "X"'],
      ['task', (m) => (m.shards = []), 'task.shards must have at least 1 entry'],
      ['task', (m) => (m.shards[2].shardId = 1), 'task.shards[2].shardId 1 appears more than once'],
      ['task', (m) => (m.shardCount = 7), 'task.shards[2].shardId 7 must be below task.shardCount (7)'],
      ['task', (m) => delete m.blocks, 'task.blocks is missing'],
      ['task', (m) => (m.blocks = []), 'task.blocks must have 1 to 3 entries'],
      ['task', (m) => (m.blocks[0] = { first: 0, count: 3 }), 'task.blocks[0] [0, 0 + 3) is not an aligned block of the sum tree over 8 shards'],
      ['task', (m) => (m.blocks[0] = { first: 1, count: 2 }), 'task.blocks[0] [1, 1 + 2) is not an aligned block'],
      ['task', (m) => (m.blocks[0] = { first: 0, count: 16 }), 'is not an aligned block of the sum tree over 8 shards'],
      ['task', (m) => (m.blocks[1] = { first: 6, count: 2 }), "task.blocks[1] covers shard 6, but task.shards[2] is shard 7: blocks must cover exactly the task's shards, in order"],
      ['task', (m) => (m.blocks = [{ first: 0, count: 2 }]), 'task.blocks cover 2 shards, but the task has 3'],
      ['task', (m) => (m.blocks = [{ first: 0, count: 1 }, { first: 1, count: 1 }, { first: 7, count: 1 }, { first: 7, count: 1 }]), 'task.blocks must have 1 to 3 entries'],
      ['task', (m) => (m.blocks = [{ first: 0, count: 8 }]), 'task.blocks[0] covers shard 2, but task.shards[2] is shard 7'],
      ['task', (m) => (m.blocks[0].extra = 1), 'task.blocks[0] has unknown field "extra"'],
      ['task', (m) => (m.blocks[0] = [0, 2]), 'task.blocks[0] must be a map'],
      ['result', (m) => (m.count = 3), 'result block [4, 4 + 3) must be aligned'],
      ['result', (m) => (m.firstShard = 2), 'result block [2, 2 + 4) must be aligned'],
      ['result', (m) => (m.count = 0), 'result.count must be an integer >= 1, got 0'],
      ['result', (m) => delete m.firstShard, 'result.firstShard is missing'],
      ['task', (m) => (m.shards[1].realLabels = new Int32Array(3)), 'task.shards[1].realLabels length 3 must equal rows (2)'],
      ['task', (m) => (m.shards[1].realLabels = new Float32Array(2)), 'task.shards[1].realLabels must be an Int32Array, got Float32Array(2)'],
      ['task', (m) => (m.shards[2].real = new Float32Array(31)), 'task.shards[2].real length 31 must be a positive multiple of rows (3)'],
      ['task', (m) => (m.shards[2].real = new Float32Array(0)), 'task.shards[2].real length 0'],
      ['task', (m) => (m.shards[0].extra = 1), 'task.shards[0] has unknown field "extra"'],
      ['task', (m) => (m.shards[0] = 5), 'task.shards[0] must be a map, got 5'],
      ['task', (m) => delete m.dVersion, 'task.dVersion is missing'],
      ['task', (m) => delete m.shards, 'task.shards is missing'],
      ['hello', (m) => delete m.capabilities.wire, 'hello.capabilities.wire is missing'],
      ['result', (m) => (m.gradient = Array.from(m.gradient)), 'result.gradient must be a Float32Array, got an array of 10000'],
      ['result', (m) => (m.gradient = new Float64Array(4)), 'result.gradient must be a Float32Array, got Float64Array(4)'],
      ['result', (m) => (m.computeMs = -1), 'result.computeMs must be >= 0, got -1'],
      ['result', (m) => (m.stats.extra = 0), 'result.stats has unknown field "extra"'],
      ['result', (m) => (m.stats.dFake = '0.5'), 'result.stats.dFake must be a number, got "0.5"'],
      ['result', (m) => delete m.stats, 'result.stats is missing'],
      ['hello', (m) => (m.workerId = ''), 'hello.workerId must be a string of 1..128 chars, got ""'],
      ['hello', (m) => (m.workerId = 'w'.repeat(129)), 'hello.workerId must be a string of 1..128 chars, got a string of 129 chars'],
      ['hello', (m) => (m.backend = 'b'.repeat(33)), 'hello.backend'],
      ['hello', (m) => (m.host = 7), 'hello.host must be a string of at most 256 chars, got 7'],
      ['hello', (m) => (m.capabilities.wire = Array(9).fill('x')), 'hello.capabilities.wire must be an array of at most 8'],
      ['hello', (m) => (m.capabilities.wire = ['x'.repeat(17)]), 'hello.capabilities.wire[0]'],
      ['hello', (m) => (m.capabilities.maxShards = 0), 'hello.capabilities.maxShards must be an integer >= 1, got 0'],
      ['hello', (m) => (m.capabilities = null), 'hello.capabilities must be a map, got null'],
      ['challenge', (m) => (m.nonce = m.nonce.subarray(0, 31)), 'challenge.nonce must be exactly 32 bytes, got Uint8Array(31)'],
      ['auth', (m) => (m.hmac = new Float32Array(8)), 'auth.hmac must be exactly 32 bytes, got Float32Array(8)'],
      ['welcome', (m) => (m.config = [1]), 'welcome.config must be a map, got an array of 1'],
      ['welcome', (m) => (m.config = null), 'welcome.config must be a map, got null'],
      ['welcome', (m) => (m.config.blob = new Float32Array(2)), 'welcome.config.blob must be JSON data, got Float32Array(2)'],
      ['welcome', (m) => (m.runId = ''), 'welcome.runId'],
      ['welcome', (m) => (m.g.version = -1), 'welcome.g.version must be an integer >= 0, got -1'],
      ['welcome', (m) => (m.d.extra = true), 'welcome.d has unknown field "extra"'],
      ['weights', (m) => (m.net = 'E'), 'weights.net must be one of "G", "D", got "E"'],
      ['weights', (m) => (m.version = 2 ** 53), 'weights.version must be an integer >= 0'],
      ['bye', (m) => (m.reason = 'r'.repeat(1025)), 'bye.reason must be a string of at most 1024 chars'],
      ['bye', (m) => (m.code = 'c'.repeat(65)), 'bye.code'],
      ['bye', (m) => (m.extra = 'x'), 'bye has unknown field "extra"'],
    ];
    for (const [type, mutate, reason] of cases) {
      const m = valid(type);
      mutate(m);
      expectFail(decode(craft(m), LIMITS), 'BAD_FIELD', reason);
    }
  });

  it('rejects an extra unknown top-level field on every message type', () => {
    for (const type of MESSAGE_TYPES) {
      expectFail(decode(craft({ ...valid(type), sneaky: 1 }), LIMITS), 'BAD_FIELD', `${type} has unknown field "sneaky"`);
    }
  });

  it('neutralises __proto__ keys instead of letting them reach the prototype', () => {
    // msgpackr renames __proto__ to __proto_; the unknown-field check then rejects it
    const key = Buffer.from('__proto__');
    const frame = Buffer.concat([
      Buffer.from([0x83, 0xa4]), Buffer.from('type'), Buffer.from([0xa3]), Buffer.from('bye'),
      Buffer.from([0xa8]), Buffer.from('protocol'), Buffer.from([PROTOCOL_VERSION]),
      Buffer.from([0xa0 + key.length]), key, Buffer.from([0x81, 0xa8]), Buffer.from('polluted'), Buffer.from([0xc3]),
    ]);
    expectFail(decode(frame, LIMITS), 'BAD_FIELD', 'unknown field');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('rejects cyclic configs built with msgpackr reference extensions', () => {
    const cloner = new Packr({ moreTypes: true, useRecords: false, structuredClone: true });
    // msgpackr cannot even rebuild a cyclic map when decoding maps as objects
    const m = valid('welcome');
    m.config.self = m.config;
    expect(decode(cloner.pack(m), LIMITS).ok).toBe(false);
    // cyclic arrays do decode, and would hang or blow up whoever JSON.stringifies the config
    const a = valid('welcome');
    const loop: unknown[] = [];
    loop.push(loop);
    a.config.loop = loop;
    expectFail(decode(cloner.pack(a), LIMITS), 'BAD_FIELD', 'welcome.config.loop[0][0]', 'deeper than');
  });

  it('maps decode errors to close codes', () => {
    expect(closeCodeFor('PROTOCOL_MISMATCH')).toBe(WS_CLOSE.versionMismatch);
    expect(closeCodeFor('NON_FINITE')).toBe(WS_CLOSE.protocolError);
    for (const code of Object.values(WS_CLOSE)) expect(code >= 4000 && code <= 4999).toBe(true);
    expect(Object.keys(DecodeErrorCode)).toEqual(Object.values(DecodeErrorCode));
  });

  it('validateMessage checks outgoing messages without a round trip', () => {
    expect(validateMessage({ ...samples.bye, protocol: PROTOCOL_VERSION }, LIMITS).ok).toBe(true);
    expectFail(validateMessage({ ...samples.bye }, LIMITS), 'BAD_FIELD', 'bye.protocol is missing');
  });
});

describe('hostile input never throws', () => {
  const validFrames = MESSAGE_TYPES.map((t) => encode(samples[t]));

  function safeDecode(frame: Uint8Array, limits = LIMITS): DecodeResult {
    let r: DecodeResult | undefined;
    expect(() => (r = decode(frame, limits))).not.toThrow();
    return r!;
  }

  it('random bytes (seeded)', () => {
    const r = uniformSource(0xdecafbad);
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(r() * (i % 10 === 0 ? 2000 : 64));
      const frame = new Uint8Array(len);
      for (let j = 0; j < len; j++) frame[j] = Math.floor(r() * 256);
      // bias some frames toward plausible starts so the fuzzer gets past the first byte
      if (len > 0 && i % 3 === 0) frame[0] = 0x80 + Math.floor(r() * 16);
      if (safeDecode(frame).ok) accepted++;
      // msgpackr keeps module-level state; a hostile frame must not poison the next decode
      if (i % 500 === 0) expect(decode(validFrames[i % validFrames.length]!, LIMITS).ok).toBe(true);
    }
    expect(accepted).toBe(0);
  });

  it('valid frames with random bytes flipped', () => {
    const r = uniformSource(7);
    for (let i = 0; i < 3000; i++) {
      const frame = new Uint8Array(validFrames[i % validFrames.length]!);
      const flips = 1 + Math.floor(r() * 4);
      for (let k = 0; k < flips; k++) frame[Math.floor(r() * frame.length)] = Math.floor(r() * 256);
      safeDecode(frame);
    }
    for (const f of validFrames) expect(decode(f, LIMITS).ok).toBe(true);
  });

  it('truncated valid frames', () => {
    const r = uniformSource(99);
    for (const frame of validFrames) {
      const cuts = frame.length <= 2048 ? Array.from({ length: frame.length }, (_, i) => i) : Array.from({ length: 500 }, () => Math.floor(r() * frame.length));
      for (const cut of cuts) expect(safeDecode(frame.subarray(0, cut)).ok).toBe(false);
    }
  });

  it('deeply nested frames (stack overflow inside msgpackr) and lying length headers', () => {
    const deep = new Uint8Array(200_000).fill(0x91);
    deep[deep.length - 1] = 0x01;
    expectFail(safeDecode(deep), 'FRAME_NOT_MSGPACK');
    // array32 claiming 4 billion entries, map32 likewise, bin32 and ext32 far past the end
    for (const head of [[0xdd], [0xdf], [0xc6], [0xc9]]) {
      expectFail(safeDecode(new Uint8Array([...head, 0xff, 0xff, 0xff, 0xff, 0x00])), 'FRAME_NOT_MSGPACK');
    }
    // a Float32Array ext whose payload is not a multiple of 4 bytes
    expectFail(safeDecode(new Uint8Array([0xc7, 4, 0x74, 7, 1, 2, 3])), 'FRAME_NOT_MSGPACK');
    expect(decode(validFrames[0]!, LIMITS).ok).toBe(true);
  });
});

describe('performance', () => {
  const N = 2_500_000;
  const big: Outgoing<ResultMsg> = { ...samples.result, gradient: floats(N, 11) };
  const frame = encode(big);

  it('decodes a 2.5M-float result quickly and intact', () => {
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const msg = ok(decode(frame, LIMITS)) as ResultMsg;
      best = Math.min(best, performance.now() - t);
      expect(msg.gradient.length).toBe(N);
    }
    const msg = ok(decode(frame, LIMITS)) as ResultMsg;
    expect(msg.gradient[N - 1]).toBe(big.gradient[N - 1]);
    // generous: typically ~5 ms; only catches accidental per-element work or extra copies
    expect(best).toBeLessThan(250);
  });

  it('rejects a big frame with one trailing byte without msgpackr stringifying it', () => {
    const longer = new Uint8Array(frame.length + 1);
    longer.set(frame);
    const t = performance.now();
    expectFail(decode(longer, LIMITS), 'FRAME_NOT_MSGPACK', 'trailing');
    expect(performance.now() - t).toBeLessThan(250);
  });

  it('firstNonFinite finds the first bad index and passes clean arrays', () => {
    const a = floats(1000, 3);
    expect(firstNonFinite(a)).toBe(-1);
    a[500] = -Infinity;
    a[900] = NaN;
    expect(firstNonFinite(a)).toBe(500);
    expect(firstNonFinite(new Float32Array(0))).toBe(-1);
    a.fill(-0);
    expect(firstNonFinite(a)).toBe(-1);
    // Every lane of the unrolled pass and the tail after it (lengths not a multiple of 4).
    for (let n = 1; n <= 9; n++) {
      for (let at = 0; at < n; at++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const b = floats(n, 5);
          b[at] = bad;
          expect(firstNonFinite(b), `length ${n}, ${bad} at ${at}`).toBe(at);
        }
      }
    }
  });
});

describe('--wire fp16', () => {
  const FP16: DecodeLimits = { ...LIMITS, wire: 'fp16' };
  /** The three messages whose floats change with the wire format. */
  const floatMessages = ['welcome', 'weights', 'result'] as const;

  it('round trips welcome, weights and result as fp16-rounded Float32Arrays at about half the bytes', () => {
    for (const type of floatMessages) {
      const sent = samples[type];
      const frame = encode(sent, { wire: 'fp16' });
      // A welcome announces its own format; weights and results follow the connection's.
      const msg = ok(decode(frame, type === 'welcome' ? LIMITS : FP16));
      const fp32 = encode(sent);
      expect(frame.byteLength / fp32.byteLength, type).toBeLessThan(0.53);
      expect(frame.byteLength / fp32.byteLength, type).toBeGreaterThan(0.45);
      if (type === 'welcome') {
        const w = msg as WelcomeMsg;
        const s = sent as Outgoing<WelcomeMsg>;
        expect(w.wire).toBe('fp16');
        expect(w.g.weights).toEqual(roundTripHalf(s.g.weights));
        expect(w.d.weights).toEqual(roundTripHalf(s.d.weights));
        expect(w.g.weights).toBeInstanceOf(Float32Array);
        expect({ ...w, g: s.g, d: s.d }).toEqual({ ...s, wire: 'fp16', protocol: PROTOCOL_VERSION });
      } else if (type === 'weights') {
        expect((msg as WeightsMsg).weights).toEqual(roundTripHalf((sent as Outgoing<WeightsMsg>).weights));
        expect((msg as WeightsMsg).weights).toBeInstanceOf(Float32Array);
      } else {
        const r = msg as ResultMsg;
        expect(r.gradient).toEqual(roundTripHalf((sent as Outgoing<ResultMsg>).gradient));
        expect(r.gradient).toBeInstanceOf(Float32Array);
        expect(r.gradient.byteOffset).toBe(0);
        expect({ ...r, gradient: null }).toEqual({ ...sent, gradient: null, protocol: PROTOCOL_VERSION });
      }
    }
    // The rounding is real (these values are not all halves) and idempotent through the wire.
    const w = samples.weights.weights;
    expect(roundTripHalf(w)).not.toEqual(w);
    const again = ok(decode(encode({ ...samples.weights, weights: roundTripHalf(w) }, { wire: 'fp16' }), FP16)) as WeightsMsg;
    expect(again.weights).toEqual(roundTripHalf(w));
    // A welcome that carries wire: 'fp16' itself is encoded in fp16 without the option.
    const self = ok(decode(encode({ ...samples.welcome, wire: 'fp16' }), LIMITS)) as WelcomeMsg;
    expect(self.g.weights).toEqual(roundTripHalf(samples.welcome.g.weights));
  });

  it('leaves fp32 frames byte for byte as they were, and other messages alone', () => {
    for (const type of MESSAGE_TYPES) {
      // What encode() always produced: the message plus the protocol, packed as is.
      const before = craft({ ...samples[type], protocol: PROTOCOL_VERSION });
      expect(Buffer.compare(encode(samples[type], { wire: 'fp32' }), before), type).toBe(0);
      expect(Buffer.compare(encode(samples[type]), before), type).toBe(0);
    }
    expect(Object.hasOwn(ok(decode(encode(samples.welcome), LIMITS)), 'wire')).toBe(false);
    for (const type of ['hello', 'challenge', 'auth', 'task', 'bye'] as const) {
      expect(ok(decode(encode(samples[type], { wire: 'fp16' }), FP16)), type).toEqual({ ...samples[type], protocol: PROTOCOL_VERSION });
    }
    expect(floatPayloadBytes(1000)).toBe(4000);
    expect(floatPayloadBytes(1000, 'fp16')).toBe(2000 + 4);
  });

  it('refuses the other wire format rather than guessing, naming the flag', () => {
    expectFail(decode(encode(samples.result), FP16), 'BAD_FIELD', 'result.gradient', '--wire fp16', 'Float32Array');
    expectFail(decode(encode(samples.weights), FP16), 'BAD_FIELD', 'weights.weights', '--wire fp16');
    expectFail(decode(encode(samples.result, { wire: 'fp16' }), LIMITS), 'BAD_FIELD', 'result.gradient', 'float16', '--wire fp32');
    expectFail(decode(encode(samples.weights, { wire: 'fp16' }), LIMITS), 'BAD_FIELD', 'weights.weights', '--wire fp32');
    // A welcome that claims fp16 but carries float32 weights, and the reverse.
    expectFail(decode(craft({ ...valid('welcome'), wire: 'fp16' }), LIMITS), 'BAD_FIELD', 'welcome.g.weights');
    const halfWelcome = { ...valid('welcome'), g: { version: 1, weights: encodeHalf(floats(10)) } };
    expectFail(decode(craft(halfWelcome), LIMITS), 'BAD_FIELD', 'welcome.g.weights', '--wire fp32');
    expectFail(decode(craft({ ...valid('welcome'), wire: 'bf16' }), LIMITS), 'BAD_FIELD', 'welcome.wire', '"fp32", "fp16"');
    expectFail(decode(craft({ ...valid('welcome'), wire: 16 }), LIMITS), 'BAD_FIELD', 'welcome.wire');
  });

  it('validates a half payload: classes, exponent count, size limit, Inf/NaN and overflow after scaling', () => {
    const result = (gradient: unknown) => craft({ ...valid('result'), gradient });
    const good = encodeHalf(floats(1000, 8));
    expect(ok(decode(result(good), FP16)).type).toBe('result');
    expectFail(decode(result(floats(10)), FP16), 'BAD_FIELD', 'result.gradient must be a float16 payload');
    expectFail(decode(result({ half: new Uint8Array(4), exp: new Int8Array(1) }), FP16), 'BAD_FIELD', 'result.gradient.half must be a Uint16Array');
    expectFail(decode(result({ half: good.half, exp: new Uint8Array(4) }), FP16), 'BAD_FIELD', 'result.gradient.exp must be an Int8Array');
    expectFail(decode(result({ half: good.half }), FP16), 'BAD_FIELD', 'result.gradient.exp is missing');
    expectFail(decode(result({ exp: good.exp }), FP16), 'BAD_FIELD', 'result.gradient.half is missing');
    expectFail(decode(result({ ...good, scale: 1 }), FP16), 'BAD_FIELD', 'unknown field "scale"');
    expectFail(decode(result({ half: good.half, exp: good.exp.subarray(0, 3) }), FP16), 'BAD_FIELD', 'result.gradient.exp has 3 exponents; 1000 values need 4');
    expectFail(decode(result({ half: good.half, exp: new Int8Array(5) }), FP16), 'BAD_FIELD', 'need 4');
    expectFail(decode(result(good), { ...FP16, maxFloats: 999 }), 'ARRAY_TOO_LARGE', 'result.gradient.half has 1000 values, limit is 999');
    for (const [bits, text] of [
      [0x7c00, 'Infinity'],
      [0xfc00, '-Infinity'],
      [0x7e00, 'NaN'],
      [0xfd01, 'NaN'],
    ] as const) {
      const half = good.half.slice();
      half[777] = bits;
      expectFail(decode(result({ half, exp: good.exp }), FP16), 'NON_FINITE', `result.gradient.half[777] is ${text}`);
    }
    // Every half finite, but 65504 * 2^113 is beyond float32.
    const exp = good.exp.slice();
    exp[2] = -113;
    const half = good.half.slice();
    half[600] = 0x7bff;
    expectFail(decode(result({ half, exp }), FP16), 'NON_FINITE', 'result.gradient[600] is Infinity');
    // Empty gradients are well formed (the coordinator rejects the size against the model).
    expect((ok(decode(result(encodeHalf(new Float32Array(0))), FP16)) as ResultMsg).gradient.length).toBe(0);
  });

  it('never throws on hostile fp16 frames', () => {
    const frames = floatMessages.map((t) => encode(samples[t], { wire: 'fp16' }));
    const r = uniformSource(16);
    for (let i = 0; i < 3000; i++) {
      const frame = new Uint8Array(frames[i % frames.length]!);
      const flips = 1 + Math.floor(r() * 4);
      for (let k = 0; k < flips; k++) frame[Math.floor(r() * frame.length)] = Math.floor(r() * 256);
      let res: DecodeResult | undefined;
      expect(() => (res = decode(frame, FP16))).not.toThrow();
      if (res!.ok && res!.msg.type === 'result') expect(firstNonFinite(res!.msg.gradient)).toBe(-1);
      const cut = frame.subarray(0, Math.floor(r() * frame.length));
      expect(() => decode(cut, FP16)).not.toThrow();
    }
    for (const f of frames.slice(1)) expect(decode(f, FP16).ok).toBe(true);
  });
});

describe('optional features: welcome.features and result.timing', () => {
  const timing = { decodeMs: 1.5, loadMs: 0.25, recvMs: 3, encodeMs: 0.75, sendMs: 0 };

  it('round trips a result with timing and a welcome with features; both stay optional', () => {
    const result = { ...samples.result, timing };
    expect(ok(decode(encode(result), LIMITS))).toEqual({ ...result, protocol: PROTOCOL_VERSION });
    const welcome = { ...samples.welcome, features: ['timing'] };
    expect(ok(decode(encode(welcome), LIMITS))).toEqual({ ...welcome, protocol: PROTOCOL_VERSION });
    // The messages of a worker or coordinator that knows no features are as valid as before.
    expect((ok(decode(encode(samples.result), LIMITS)) as ResultMsg).timing).toBeUndefined();
    expect((ok(decode(encode(samples.welcome), LIMITS)) as WelcomeMsg).features).toBeUndefined();
  });

  it('rejects malformed timing and features with the field named', () => {
    const result = (t: unknown) => craft({ ...valid('result'), timing: t });
    expectFail(decode(result({ ...timing, decodeMs: -1 }), LIMITS), 'BAD_FIELD', 'result.timing.decodeMs must be >= 0, got -1');
    expectFail(decode(result({ ...timing, recvMs: NaN }), LIMITS), 'NON_FINITE', 'result.timing.recvMs is NaN');
    expectFail(decode(result({ ...timing, sendMs: '1' }), LIMITS), 'BAD_FIELD', 'result.timing.sendMs must be a number');
    const { loadMs: _drop, ...short } = timing;
    expectFail(decode(result(short), LIMITS), 'BAD_FIELD', 'result.timing.loadMs is missing');
    expectFail(decode(result({ ...timing, queueMs: 1 }), LIMITS), 'BAD_FIELD', 'result.timing has unknown field "queueMs"');
    expectFail(decode(result([1, 2]), LIMITS), 'BAD_FIELD', 'result.timing must be a map');
    const welcome = (f: unknown) => craft({ ...valid('welcome'), features: f });
    expectFail(decode(welcome('timing'), LIMITS), 'BAD_FIELD', 'welcome.features must be an array of at most 8 strings');
    expectFail(decode(welcome(new Array(9).fill('x')), LIMITS), 'BAD_FIELD', 'welcome.features must be an array of at most 8 strings, got an array of 9');
    expectFail(decode(welcome(['timing', 7]), LIMITS), 'BAD_FIELD', 'welcome.features[1] must be a string of at most 16 chars, got 7');
    expectFail(decode(welcome(['x'.repeat(17)]), LIMITS), 'BAD_FIELD', 'welcome.features[0]');
  });
});
