/**
 * Frame codec for the protocol in shared/protocol.ts: one msgpack map per binary WebSocket frame.
 *
 * decode() is the trust boundary. It never throws (a peer must not be able to crash us with a
 * frame), and a message it returns matches its interface exactly: known type, right protocol
 * version, every field present with the right type and range, no extra fields, no NaN/Inf in any
 * float, typed arrays as the typed-array classes the interfaces promise. Callers therefore never
 * re-validate and can hand gradients straight to the optimizer.
 *
 * msgpackr notes that shaped this file (checked against msgpackr 2.1.4's source):
 * - With moreTypes, Float32Array/Int32Array/Uint8Array travel as msgpack ext 0x74 and decode as
 *   the same class. The decoder always slices them into a fresh ArrayBuffer, so a decoded
 *   Float32Array is aligned (byteOffset 0) and owns its memory; there is exactly one copy of
 *   the payload per frame and none here.
 * - Node Buffers are NOT typed arrays to msgpackr: they go out as plain msgpack bin and come
 *   back as Buffer views into the frame. crypto.randomBytes/createHmac return Buffers, so the
 *   32-byte fields accept any Uint8Array and are normalised to a fresh plain Uint8Array.
 * - Packr.unpack() on a frame with trailing bytes builds its error message by JSON.stringify-ing
 *   the whole decoded value: ~1.7 s of CPU for a 10 MB gradient frame plus one junk byte. We use
 *   unpackMultiple() and stop after the first value, then reject trailing bytes ourselves.
 * - Record extensions still decode with useRecords: false; they only produce plain objects, and
 *   the definitions do not outlive one frame, so validation below covers them.
 *
 * --wire fp16 (shared/float16.ts): encode(msg, { wire: 'fp16' }) sends the weights of welcome and
 * weights messages and the gradient of results as block-scaled halves ({ half: Uint16Array, exp:
 * Int8Array }); decode() validates such a payload (lengths, no Inf/NaN bit patterns, finite after
 * scaling) and hands back the Float32Array the interfaces promise. Which form is expected is not
 * guessed from the frame: a welcome says it in its `wire` field, weights and results must match
 * DecodeLimits.wire, so a peer cannot slip an unrounded float32 gradient into an fp16 run.
 */
import { Packr } from 'msgpackr';
import { isAlignedBlock } from './tree-sum.ts';
import { decodeHalf, encodeHalf, firstNonFiniteHalf, fromHalfBits, HALF_BLOCK, halfBlocks } from './float16.ts';
import {
  MESSAGE_TYPES,
  PROTOCOL_VERSION,
  WIRE_FORMATS,
  type Message,
  type MessageType,
  type Outgoing,
  type WireFormat,
  type WorkerTiming,
} from './protocol.ts';

/** Stable codes for why a frame was rejected. Never reworded; callers and tests branch on them. */
export const DecodeErrorCode = {
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  FRAME_NOT_MSGPACK: 'FRAME_NOT_MSGPACK',
  FRAME_NOT_OBJECT: 'FRAME_NOT_OBJECT',
  UNKNOWN_TYPE: 'UNKNOWN_TYPE',
  PROTOCOL_MISMATCH: 'PROTOCOL_MISMATCH',
  BAD_FIELD: 'BAD_FIELD',
  NON_FINITE: 'NON_FINITE',
  ARRAY_TOO_LARGE: 'ARRAY_TOO_LARGE',
} as const;
export type DecodeErrorCode = (typeof DecodeErrorCode)[keyof typeof DecodeErrorCode];

/** WebSocket close codes for protocol-level reasons (the application range is 4000-4999). */
export const WS_CLOSE = {
  /** A frame failed to decode, or a valid message arrived when it makes no sense (e.g. task before welcome). */
  protocolError: 4000,
  /** The auth HMAC was wrong or arrived too late; the worker should not retry with the same token. */
  authFailed: 4001,
  /** The peer speaks another PROTOCOL_VERSION; retrying cannot help until one side is upgraded. */
  versionMismatch: 4002,
  /** The coordinator refuses this worker (too many bad results or failed auths); do not reconnect. */
  banned: 4003,
  /** The sender is stopping cleanly; a worker may reconnect later. */
  shuttingDown: 4004,
  /** A newer connection with the same workerId took over this one; the old one must not reconnect. */
  replaced: 4005,
  /** The worker lacks a capability the run needs (e.g. --wire fp16); retrying cannot help until it is upgraded. */
  unsupported: 4006,
  /** The worker stopped reading: more than the coordinator's bound queued for it (SLOW_CONSUMER). It may reconnect. */
  slowConsumer: 4007,
} as const;
export type WsCloseCode = (typeof WS_CLOSE)[keyof typeof WS_CLOSE];

/** The close code to use after decode() rejected a peer's frame. */
export function closeCodeFor(code: DecodeErrorCode): WsCloseCode {
  return code === DecodeErrorCode.PROTOCOL_MISMATCH ? WS_CLOSE.versionMismatch : WS_CLOSE.protocolError;
}

export interface DecodeLimits {
  /** Largest frame accepted, in bytes, checked before parsing. */
  maxFrameBytes: number;
  /** Largest length of any single Float32Array/Int32Array in a message. */
  maxFloats: number;
  /** Most shards in one task; never more than MAX_TASK_SHARDS whatever this says. */
  maxShards?: number;
  /**
   * The form weights and result messages must carry their floats in (default fp32); with fp16
   * they are decoded into Float32Array. A welcome's floats follow its own `wire` field instead.
   */
  wire?: WireFormat;
}

export type DecodeResult =
  | { ok: true; msg: Message }
  | {
      ok: false;
      code: DecodeErrorCode;
      reason: string;
      /** Set with PROTOCOL_MISMATCH: the version the peer announced, for "peer speaks X, we speak Y". */
      peerProtocol?: number;
    };

/** Longest rejection reason: it goes into a log line and a bye frame. */
const MAX_REASON_CHARS = 300;

/** Hard cap on shards per task, independent of limits, so one frame cannot fan out without bound. */
export const MAX_TASK_SHARDS = 4096;

const packr = new Packr({ moreTypes: true, useRecords: false });

export interface EncodeOptions {
  /**
   * fp16: the floats of welcome (g, d), weights and result messages go out as block-scaled
   * halves, and a welcome gets `wire: 'fp16'`. Default fp32 (a welcome's own `wire` counts too).
   */
  wire?: WireFormat;
}

/**
 * Encodes one message, stamping the current protocol version (any `protocol` the caller set is
 * overwritten). Does not validate: the hot path sends a few MB of floats per frame, and the
 * receiving side's decode() is the authority anyway. Use validateMessage() in tests or debug
 * builds to check outgoing messages.
 *
 * The returned bytes are a view into msgpackr's shared output buffer; they stay valid (msgpackr
 * never writes over bytes it has handed out) but may share an ArrayBuffer with other frames.
 */
export function encode(msg: Outgoing<Message> | Message, opts: EncodeOptions = {}): Uint8Array {
  const wire = opts.wire ?? (msg.type === 'welcome' ? msg.wire : undefined) ?? 'fp32';
  if (wire === 'fp32') return packr.pack({ ...msg, protocol: PROTOCOL_VERSION });
  switch (msg.type) {
    case 'welcome':
      return packr.pack({
        ...msg,
        protocol: PROTOCOL_VERSION,
        wire,
        g: { version: msg.g.version, weights: encodeHalf(msg.g.weights) },
        d: { version: msg.d.version, weights: encodeHalf(msg.d.weights) },
      });
    case 'weights':
      return packr.pack({ ...msg, protocol: PROTOCOL_VERSION, weights: encodeHalf(msg.weights) });
    case 'result':
      return packr.pack({ ...msg, protocol: PROTOCOL_VERSION, gradient: encodeHalf(msg.gradient) });
    default:
      return packr.pack({ ...msg, protocol: PROTOCOL_VERSION });
  }
}

/**
 * Largest frame carrying `floats` weights or gradient values in this wire format, without the
 * other fields (for frame limits derived from the model).
 */
export function floatPayloadBytes(floats: number, wire: WireFormat = 'fp32'): number {
  return wire === 'fp16' ? 2 * floats + halfBlocks(floats) : 4 * floats;
}

/** Decodes and fully validates one frame. Never throws. */
export function decode(
  frame: Uint8Array | ArrayBuffer | Buffer | Buffer[],
  limits: DecodeLimits,
): DecodeResult {
  try {
    let bytes: Uint8Array;
    if (Array.isArray(frame)) {
      // ws hands over fragmented messages as a list; size-check before paying for the concat
      let total = 0;
      for (const part of frame) {
        if (!(part instanceof Uint8Array)) return fail('FRAME_NOT_MSGPACK', 'frame fragment is not a byte array');
        total += part.byteLength;
      }
      if (total > limits.maxFrameBytes) return tooLarge(total, limits);
      bytes = frame.length === 1 ? frame[0]! : Buffer.concat(frame, total);
    } else if (frame instanceof Uint8Array) {
      bytes = frame;
    } else if (frame instanceof ArrayBuffer) {
      bytes = new Uint8Array(frame);
    } else {
      return fail('FRAME_NOT_MSGPACK', `frame must be bytes, got ${describe(frame)}`);
    }
    if (bytes.byteLength > limits.maxFrameBytes) return tooLarge(bytes.byteLength, limits);
    if (bytes.byteLength === 0) return fail('FRAME_NOT_MSGPACK', 'frame is empty');

    let value: unknown;
    let end = -1;
    try {
      packr.unpackMultiple(bytes, (v: unknown, _start?: number, stop?: number) => {
        value = v;
        end = stop ?? -1;
        return false;
      });
    } catch (err) {
      return fail('FRAME_NOT_MSGPACK', `frame is not valid msgpack: ${errorText(err)}`);
    }
    if (end !== bytes.byteLength) {
      return fail(
        'FRAME_NOT_MSGPACK',
        `frame has trailing bytes: the message ends at byte ${end} of ${bytes.byteLength}`,
      );
    }
    return validateMessage(value, limits);
  } catch (err) {
    // Only reachable through a bug here or in msgpackr; still must not take the process down.
    return fail('FRAME_NOT_MSGPACK', `frame could not be decoded: ${errorText(err)}`);
  }
}

/**
 * Validates an already-decoded value as a Message (what decode() does after parsing). Mutates
 * the value only to normalise 32-byte fields to plain Uint8Arrays and to replace fp16 payloads
 * with the Float32Arrays they decode to. Never throws.
 */
export function validateMessage(value: unknown, limits: DecodeLimits): DecodeResult {
  try {
    if (!isPlainObject(value)) {
      return fail('FRAME_NOT_OBJECT', `frame must hold a msgpack map, got ${describe(value)}`);
    }
    const type = value.type;
    const known = typeof type === 'string' && (MESSAGE_TYPES as readonly string[]).includes(type);
    // Version before type: a newer peer may send a type we have never heard of, and "upgrade"
    // is the useful answer then, not "unknown type".
    const label = known ? (type as string) : 'message';
    if (!Object.hasOwn(value, 'protocol')) return fail('BAD_FIELD', `${label}.protocol is missing`);
    const protocol = value.protocol;
    if (typeof protocol !== 'number' || !Number.isSafeInteger(protocol)) {
      return fail('BAD_FIELD', `${label}.protocol must be an integer, got ${describe(protocol)}`);
    }
    if (protocol !== PROTOCOL_VERSION) {
      return {
        ok: false,
        code: 'PROTOCOL_MISMATCH',
        reason: `peer speaks protocol ${protocol}, this side speaks protocol ${PROTOCOL_VERSION}`,
        peerProtocol: protocol,
      };
    }
    if (!known) {
      return fail(
        'UNKNOWN_TYPE',
        typeof type === 'string'
          ? `unknown message type ${describe(type)}`
          : `message.type must be a string, got ${describe(type)}`,
      );
    }
    VALIDATORS[type as MessageType](value, limits);
    return { ok: true, msg: value as unknown as Message };
  } catch (err) {
    if (err instanceof Invalid) return fail(err.code, err.message);
    return fail('BAD_FIELD', `message could not be validated: ${errorText(err)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-type validators. Paths are built only on failure: a task may carry thousands of shards.

type Obj = Record<string, unknown>;
type Validator = (o: Obj, limits: DecodeLimits) => void;

const UINT32_MAX = 0xffffffff;
const MAX_INT = Number.MAX_SAFE_INTEGER;
const PHASES = ['D', 'G'] as const;
const NETS = ['G', 'D'] as const;

const VALIDATORS: Record<MessageType, Validator> = {
  hello(o) {
    keys(o, 'hello', ['type', 'protocol', 'workerId', 'backend', 'host', 'capabilities', 'browser', 'joinExpires']);
    if (Object.hasOwn(o, 'joinExpires')) int(o, 'joinExpires', 'hello', 0, UINT32_MAX);
    if (Object.hasOwn(o, 'browser') && o.browser !== true) bad(`hello.browser must be true when present, got ${describe(o.browser)}`);
    str(o, 'workerId', 'hello', 1, 128);
    str(o, 'backend', 'hello', 0, 32);
    str(o, 'host', 'hello', 0, 256);
    const caps = obj(o, 'capabilities', 'hello');
    keys(caps, 'hello.capabilities', ['wire', 'maxShards']);
    const wire = caps.wire;
    if (!Array.isArray(wire) || wire.length > 8) {
      missing(caps, 'wire', 'hello.capabilities');
      bad(`hello.capabilities.wire must be an array of at most 8 strings, got ${describe(wire)}`);
    }
    for (let i = 0; i < wire.length; i++) {
      const w: unknown = wire[i];
      if (typeof w !== 'string' || w.length > 16) {
        bad(`hello.capabilities.wire[${i}] must be a string of at most 16 chars, got ${describe(w)}`);
      }
    }
    int(caps, 'maxShards', 'hello.capabilities', 1, MAX_INT);
  },

  challenge(o) {
    keys(o, 'challenge', ['type', 'protocol', 'nonce']);
    bytes32(o, 'nonce', 'challenge');
  },

  auth(o) {
    keys(o, 'auth', ['type', 'protocol', 'hmac']);
    bytes32(o, 'hmac', 'auth');
  },

  welcome(o, limits) {
    keys(o, 'welcome', ['type', 'protocol', 'runId', 'config', 'wire', 'features', 'palette', 'g', 'd']);
    str(o, 'runId', 'welcome', 1, 256);
    const config = obj(o, 'config', 'welcome');
    jsonObject(config, 'welcome.config');
    // The welcome announces the wire format, so its own floats follow its field, not the limits.
    const wire = o.wire === undefined ? 'fp32' : oneOf(o, 'wire', 'welcome', WIRE_FORMATS);
    weightsBlob(o, 'g', 'welcome', limits, wire);
    weightsBlob(o, 'd', 'welcome', limits, wire);
    if (o.features !== undefined) stringList(o, 'features', 'welcome', 8, 16);
    if (o.palette !== undefined) {
      const palette = f32(o, 'palette', 'welcome', limits);
      if (palette.length < 1 || palette.length > 256) bad(`welcome.palette has ${palette.length} values; it must have 1 to 256`);
    }
  },

  weights(o, limits) {
    keys(o, 'weights', ['type', 'protocol', 'net', 'version', 'weights']);
    oneOf(o, 'net', 'weights', NETS);
    int(o, 'version', 'weights', 0, MAX_INT);
    floats(o, 'weights', 'weights', limits, limits.wire ?? 'fp32');
  },

  task(o, limits) {
    keys(o, 'task', ['type', 'protocol', 'taskId', 'iteration', 'phase', 'dStep', 'gVersion', 'dVersion', 'shards', 'shardCount', 'blocks']);
    int(o, 'taskId', 'task', 0, MAX_INT);
    int(o, 'iteration', 'task', 0, MAX_INT);
    oneOf(o, 'phase', 'task', PHASES);
    int(o, 'dStep', 'task', 0, MAX_INT);
    int(o, 'gVersion', 'task', 0, MAX_INT);
    int(o, 'dVersion', 'task', 0, MAX_INT);
    const shardCount = int(o, 'shardCount', 'task', 1, MAX_INT);
    const shards = o.shards;
    if (!Array.isArray(shards)) {
      missing(o, 'shards', 'task');
      bad(`task.shards must be an array, got ${describe(shards)}`);
    }
    const cap = Math.min(MAX_TASK_SHARDS, limits.maxShards ?? MAX_TASK_SHARDS);
    if (shards.length > cap) {
      throw new Invalid('ARRAY_TOO_LARGE', `task.shards has ${shards.length} entries, limit is ${cap}`);
    }
    if (shards.length === 0) bad('task.shards must have at least 1 entry, got 0');
    const seen = new Set<number>();
    for (let i = 0; i < shards.length; i++) {
      const s: unknown = shards[i];
      if (!isPlainObject(s)) bad(`task.shards[${i}] must be a map, got ${describe(s)}`);
      const path = `task.shards[${i}]`;
      keys(s, path, ['shardId', 'seed', 'rows', 'real', 'realCodes', 'realLabels']);
      const shardId = int(s, 'shardId', path, 0, MAX_INT);
      if (seen.has(shardId)) bad(`${path}.shardId ${shardId} appears more than once in the task`);
      if (shardId >= shardCount) bad(`${path}.shardId ${shardId} must be below task.shardCount (${shardCount})`);
      seen.add(shardId);
      int(s, 'seed', path, 0, UINT32_MAX);
      const rows = int(s, 'rows', path, 1, MAX_INT);
      if (s.real !== undefined) {
        const real = f32(s, 'real', path, limits);
        if (real.length === 0 || real.length % rows !== 0) {
          bad(`${path}.real length ${real.length} must be a positive multiple of rows (${rows})`);
        }
      }
      if (s.realCodes !== undefined) {
        if (s.real !== undefined) bad(`${path} has both real and realCodes; a shard carries its rows one way`);
        const codes = intArray(s, 'realCodes', path, limits, Uint8Array);
        if (codes.length === 0 || codes.length % rows !== 0) {
          bad(`${path}.realCodes length ${codes.length} must be a positive multiple of rows (${rows})`);
        }
      }
      if (s.realLabels !== undefined) {
        const labels = intArray(s, 'realLabels', path, limits, Int32Array);
        if (labels.length !== rows) bad(`${path}.realLabels length ${labels.length} must equal rows (${rows})`);
      }
    }
    // Blocks: aligned blocks of the sum tree whose shards, in order, are exactly the task's.
    const blocks = o.blocks;
    if (!Array.isArray(blocks)) {
      missing(o, 'blocks', 'task');
      bad(`task.blocks must be an array, got ${describe(blocks)}`);
    }
    if (blocks.length === 0 || blocks.length > shards.length) bad(`task.blocks must have 1 to ${shards.length} entries (one per block of the task's shards), got ${blocks.length}`);
    let next = 0;
    for (let i = 0; i < blocks.length; i++) {
      const b: unknown = blocks[i];
      const path = `task.blocks[${i}]`;
      if (!isPlainObject(b)) bad(`${path} must be a map, got ${describe(b)}`);
      keys(b, path, ['first', 'count']);
      const first = int(b, 'first', path, 0, shardCount - 1);
      const count = int(b, 'count', path, 1, MAX_INT);
      if (!isAlignedBlock(first, count, shardCount)) bad(`${path} [${first}, ${first} + ${count}) is not an aligned block of the sum tree over ${shardCount} shards`);
      const end = Math.min(first + count, shardCount);
      for (let id = first; id < end; id++, next++) {
        const shard = shards[next] as Obj | undefined;
        if (!shard || shard.shardId !== id) bad(`${path} covers shard ${id}, but task.shards[${next}] is ${shard ? `shard ${String(shard.shardId)}` : 'missing'}: blocks must cover exactly the task's shards, in order`);
      }
    }
    if (next !== shards.length) bad(`task.blocks cover ${next} shards, but the task has ${shards.length}`);
  },

  result(o, limits) {
    keys(o, 'result', ['type', 'protocol', 'taskId', 'iteration', 'phase', 'dStep', 'firstShard', 'count', 'gradient', 'stats', 'computeMs', 'timing']);
    int(o, 'taskId', 'result', 0, MAX_INT);
    int(o, 'iteration', 'result', 0, MAX_INT);
    oneOf(o, 'phase', 'result', PHASES);
    int(o, 'dStep', 'result', 0, MAX_INT);
    const firstShard = int(o, 'firstShard', 'result', 0, MAX_INT);
    const count = int(o, 'count', 'result', 1, MAX_INT);
    if (count > 2 ** 30 || (count & (count - 1)) !== 0 || firstShard % count !== 0) bad(`result block [${firstShard}, ${firstShard} + ${count}) must be aligned: count a power of two, firstShard a multiple of it`);
    floats(o, 'gradient', 'result', limits, limits.wire ?? 'fp32');
    const stats = obj(o, 'stats', 'result');
    keys(stats, 'result.stats', ['loss', 'dReal', 'dFake']);
    finite(stats, 'loss', 'result.stats');
    finite(stats, 'dReal', 'result.stats');
    finite(stats, 'dFake', 'result.stats');
    const ms = finite(o, 'computeMs', 'result');
    if (ms < 0) bad(`result.computeMs must be >= 0, got ${ms}`);
    if (o.timing !== undefined) {
      const timing = obj(o, 'timing', 'result');
      keys(timing, 'result.timing', TIMING_FIELDS);
      for (const k of TIMING_FIELDS) {
        const t = finite(timing, k, 'result.timing');
        if (t < 0) bad(`result.timing.${k} must be >= 0, got ${t}`);
      }
    }
  },

  bye(o) {
    keys(o, 'bye', ['type', 'protocol', 'reason', 'code']);
    str(o, 'reason', 'bye', 0, 1024);
    str(o, 'code', 'bye', 0, 64);
  },
};

const TIMING_FIELDS = ['decodeMs', 'loadMs', 'recvMs', 'encodeMs', 'sendMs'] as const satisfies readonly (keyof WorkerTiming)[];

// ---------------------------------------------------------------------------------------------
// Field checkers. Each reads o[key], throws Invalid naming `${path}.${key}` on failure, and
// returns the narrowed value.

class Invalid extends Error {
  readonly code: DecodeErrorCode;
  constructor(code: DecodeErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

function bad(message: string): never {
  throw new Invalid('BAD_FIELD', message);
}

function missing(o: Obj, key: string, path: string): void {
  if (!Object.hasOwn(o, key)) bad(`${path}.${key} is missing`);
}

function keys(o: Obj, path: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) bad(`${path} has unknown field ${describe(k)}`);
  }
}

function int(o: Obj, key: string, path: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
  missing(o, key, path);
  const range = max === MAX_INT ? `>= ${min}` : `in [${min}, ${max}]`;
  return bad(`${path}.${key} must be an integer ${range}, got ${describe(v)}`);
}

function finite(o: Obj, key: string, path: string): number {
  const v = o[key];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  missing(o, key, path);
  if (typeof v === 'number') throw new Invalid('NON_FINITE', `${path}.${key} is ${v}`);
  return bad(`${path}.${key} must be a number, got ${describe(v)}`);
}

function str(o: Obj, key: string, path: string, min: number, max: number): string {
  const v = o[key];
  if (typeof v === 'string' && v.length >= min && v.length <= max) return v;
  missing(o, key, path);
  const size = min > 0 ? `of ${min}..${max} chars` : `of at most ${max} chars`;
  return bad(`${path}.${key} must be a string ${size}, got ${describe(v)}`);
}

/** An array of at most `maxItems` strings of at most `maxChars` chars each. */
function stringList(o: Obj, key: string, path: string, maxItems: number, maxChars: number): string[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length > maxItems) {
    missing(o, key, path);
    bad(`${path}.${key} must be an array of at most ${maxItems} strings, got ${describe(v)}`);
  }
  for (let i = 0; i < v.length; i++) {
    const w: unknown = v[i];
    if (typeof w !== 'string' || w.length > maxChars) bad(`${path}.${key}[${i}] must be a string of at most ${maxChars} chars, got ${describe(w)}`);
  }
  return v as string[];
}

function oneOf<T extends string>(o: Obj, key: string, path: string, values: readonly T[]): T {
  const v = o[key];
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  missing(o, key, path);
  return bad(`${path}.${key} must be one of ${values.map((x) => `"${x}"`).join(', ')}, got ${describe(v)}`);
}

function obj(o: Obj, key: string, path: string): Obj {
  const v = o[key];
  if (isPlainObject(v)) return v;
  missing(o, key, path);
  return bad(`${path}.${key} must be a map, got ${describe(v)}`);
}

function bytes32(o: Obj, key: string, path: string): Uint8Array {
  const v = o[key];
  if (!(v instanceof Uint8Array) || v.length !== 32) {
    missing(o, key, path);
    bad(`${path}.${key} must be exactly 32 bytes, got ${describe(v)}`);
  }
  // A Buffer here is a view into the whole frame; copying 32 bytes releases the frame and gives
  // callers the plain Uint8Array the interface promises.
  if (v.constructor === Uint8Array && v.byteOffset === 0 && v.buffer.byteLength === 32) return v;
  const copy = new Uint8Array(v);
  o[key] = copy;
  return copy;
}

function f32(o: Obj, key: string, path: string, limits: DecodeLimits): Float32Array {
  const v = o[key];
  if (!(v instanceof Float32Array)) {
    missing(o, key, path);
    bad(`${path}.${key} must be a Float32Array, got ${describe(v)}`);
  }
  if (v.length > limits.maxFloats) {
    throw new Invalid('ARRAY_TOO_LARGE', `${path}.${key} has ${v.length} floats, limit is ${limits.maxFloats}`);
  }
  const at = firstNonFinite(v);
  if (at >= 0) throw new Invalid('NON_FINITE', `${path}.${key}[${at}] is ${v[at]}`);
  return v;
}

/**
 * An integer array of exactly this class (a Buffer is msgpack bin, a view into the frame, not a
 * Uint8Array field), at most limits.maxFloats entries.
 */
function intArray<T extends Int32Array | Uint8Array>(o: Obj, key: string, path: string, limits: DecodeLimits, type: { new (n: number): T; name: string }): T {
  const v = o[key];
  if (!(v instanceof type) || v.constructor !== type) {
    missing(o, key, path);
    bad(`${path}.${key} must be ${type.name === 'Int32Array' ? 'an' : 'a'} ${type.name}, got ${describe(v)}`);
  }
  if (v.length > limits.maxFloats) {
    throw new Invalid('ARRAY_TOO_LARGE', `${path}.${key} has ${v.length} entries, limit is ${limits.maxFloats}`);
  }
  return v;
}

function weightsBlob(o: Obj, key: string, path: string, limits: DecodeLimits, wire: WireFormat): void {
  const blob = obj(o, key, path);
  const p = `${path}.${key}`;
  keys(blob, p, ['version', 'weights']);
  int(blob, 'version', p, 0, MAX_INT);
  floats(blob, 'weights', p, limits, wire);
}

/**
 * A weights or gradient array in the given wire format. fp32: a Float32Array. fp16: a map
 * { half: Uint16Array, exp: Int8Array } with one exponent per HALF_BLOCK values, no Inf/NaN bit
 * pattern and finite after scaling; it is replaced in `o` by the Float32Array it decodes to.
 */
function floats(o: Obj, key: string, path: string, limits: DecodeLimits, wire: WireFormat): Float32Array {
  if (wire === 'fp32') {
    const v = o[key];
    if (isPlainObject(v) && Object.hasOwn(v, 'half')) {
      bad(`${path}.${key} is a float16 payload, but this connection uses --wire fp32 (a Float32Array is expected)`);
    }
    return f32(o, key, path, limits);
  }
  const v = o[key];
  const p = `${path}.${key}`;
  if (!isPlainObject(v)) {
    missing(o, key, path);
    bad(`${p} must be a float16 payload { half: Uint16Array, exp: Int8Array } (this connection uses --wire fp16), got ${describe(v)}`);
  }
  keys(v, p, ['half', 'exp']);
  const half = v.half;
  if (!(half instanceof Uint16Array)) {
    missing(v, 'half', p);
    bad(`${p}.half must be a Uint16Array, got ${describe(half)}`);
  }
  if (half.length > limits.maxFloats) {
    throw new Invalid('ARRAY_TOO_LARGE', `${p}.half has ${half.length} values, limit is ${limits.maxFloats}`);
  }
  const exp = v.exp;
  if (!(exp instanceof Int8Array)) {
    missing(v, 'exp', p);
    bad(`${p}.exp must be an Int8Array, got ${describe(exp)}`);
  }
  const blocks = halfBlocks(half.length);
  if (exp.length !== blocks) {
    bad(`${p}.exp has ${exp.length} exponents; ${half.length} values need ${blocks} (one per ${HALF_BLOCK})`);
  }
  const at = firstNonFiniteHalf(half);
  if (at >= 0) throw new Invalid('NON_FINITE', `${p}.half[${at}] is ${fromHalfBits(half[at]!)}`);
  const out = decodeHalf({ half, exp });
  // A finite half times 2^-exp can still exceed float32's range (exp <= -113).
  const over = firstNonFinite(out);
  if (over >= 0) {
    throw new Invalid('NON_FINITE', `${p}[${over}] is ${out[over]} (half ${fromHalfBits(half[over]!)} scaled by 2^${-exp[Math.floor(over / HALF_BLOCK)]!})`);
  }
  o[key] = out;
  return out;
}

/**
 * Index of the first NaN/Infinity, or -1. The common all-finite case is one branch-free pass
 * (x * 0 is NaN exactly when x is not finite, and NaN sticks in a sum); four sums instead of one
 * break the chain of dependent additions (0.45 -> 0.30 ms per 540k floats here). Only a bad array
 * pays for a second pass to find the index.
 */
export function firstNonFinite(a: Float32Array): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n = a.length;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s0 += a[i]! * 0;
    s1 += a[i + 1]! * 0;
    s2 += a[i + 2]! * 0;
    s3 += a[i + 3]! * 0;
  }
  for (; i < n; i++) s0 += a[i]! * 0;
  if (s0 + s1 + s2 + s3 === 0) return -1;
  for (let j = 0; j < n; j++) {
    const x = a[j]!;
    if (x - x !== 0) return j;
  }
  return -1;
}

const MAX_CONFIG_DEPTH = 32;
const MAX_CONFIG_NODES = 100_000;

/**
 * The config is consumed as JSON (logged, checkpointed, compared across workers), so a cycle
 * (possible via msgpackr's reference extensions), a typed array or a NaN would only blow up
 * later and far from the socket. The walk is bounded so a hostile config cannot stall us.
 */
function jsonObject(root: Obj, rootPath: string): void {
  let nodes = 0;
  const walk = (v: unknown, path: () => string, depth: number, inObject: boolean): void => {
    if (++nodes > MAX_CONFIG_NODES) bad(`${rootPath} has more than ${MAX_CONFIG_NODES} values`);
    if (depth > MAX_CONFIG_DEPTH) bad(`${path()} nests deeper than ${MAX_CONFIG_DEPTH} levels`);
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
    // JSON.stringify drops undefined properties, so they are harmless inside objects
    if (v === undefined && inObject) return;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new Invalid('NON_FINITE', `${path()} is ${v}`);
      return;
    }
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) walk(v[i], () => `${path()}[${i}]`, depth + 1, false);
      return;
    }
    if (isPlainObject(v)) {
      for (const k of Object.keys(v)) walk(v[k], () => `${path()}.${k}`, depth + 1, true);
      return;
    }
    bad(`${path()} must be JSON data, got ${describe(v)}`);
  };
  walk(root, () => rootPath, 0, true);
}

// ---------------------------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Obj {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Short, log-safe description of an arbitrary decoded value for error reasons. */
function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  switch (typeof v) {
    case 'number':
      return String(v);
    case 'string':
      return v.length > 40 ? `a string of ${v.length} chars` : JSON.stringify(v);
    case 'boolean':
      return String(v);
    case 'bigint': {
      // A 16 KB msgpack bigint is ~38,000 digits: say how big it is instead.
      const digits = `${v}`;
      return digits.length > 24 ? `a ${digits.length}-digit bigint` : `${digits}n`;
    }
    case 'object':
      if (Array.isArray(v)) return `an array of ${v.length}`;
      if (ArrayBuffer.isView(v)) {
        const name = v.constructor?.name ?? 'typed array';
        const len = (v as { length?: number }).length ?? v.byteLength;
        return `${name}(${len})`;
      }
      if (v instanceof ArrayBuffer) return `ArrayBuffer(${v.byteLength})`;
      if (isPlainObject(v)) return 'a map';
      return `a ${(v as object).constructor?.name ?? 'object'}`;
    default:
      return typeof v;
  }
}

function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

function fail(code: DecodeErrorCode, reason: string): DecodeResult {
  // Reasons quote field paths built from the peer's own keys: bound them like any quoted value.
  return { ok: false, code, reason: reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS)}...` : reason };
}

function tooLarge(size: number, limits: DecodeLimits): DecodeResult {
  return fail('FRAME_TOO_LARGE', `frame is ${size} bytes, limit is ${limits.maxFrameBytes}`);
}
