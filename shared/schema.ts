/**
 * The in-house schema helper behind shared/protocol.ts: a message is declared once as a table of
 * field checkers, and both its TypeScript type (Infer) and its validator (checkFields) come from
 * that table. The checkers are plain functions over the decoded map, in declaration order, so
 * validating stays one pass with no allocation on success; they throw Invalid, which the codec
 * turns into a DecodeResult, so validation as a whole never throws. Paths for error reasons are
 * built only on failure: a task may carry thousands of shards.
 */
import { decodeHalf, firstNonFiniteHalf, fromHalfBits, HALF_BLOCK, halfBlocks } from './float16.ts';
import type { WireFormat } from './protocol.ts';

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

export type Obj = Record<string, unknown>;

export const UINT32_MAX = 0xffffffff;
export const MAX_INT = Number.MAX_SAFE_INTEGER;

// ---------------------------------------------------------------------------------------------
// Fields: what a message declaration is made of.

/**
 * One field of a message or nested map. check() reads o[key] (`path` names o), returns the value
 * with its type, or throws Invalid. `msg` is the whole message; fields declared earlier in it
 * are already valid when a later one is checked (welcome's g and d read its `wire`).
 */
export interface Field<T, Optional extends boolean = boolean> {
  readonly optional: Optional;
  check(o: Obj, key: string, path: string, limits: DecodeLimits, msg: Obj): T;
}
export type Fields = Record<string, Field<unknown>>;
/** The value type of a field. */
export type FieldType<F> = F extends Field<infer T> ? T : never;
type ValueOf<F> = FieldType<F>;
type Simplify<T> = { [K in keyof T]: T[K] } & {};
/** The TypeScript type a table of fields describes: optional fields may be absent. */
export type Infer<F extends Fields> = Simplify<
  { -readonly [K in keyof F as F[K] extends Field<unknown, true> ? never : K]: ValueOf<F[K]> } & {
    -readonly [K in keyof F as F[K] extends Field<unknown, true> ? K : never]?: ValueOf<F[K]>;
  }
>;

/** A compiled table: the allowed keys and the fields in declaration order. */
export interface Shape<F extends Fields> {
  readonly fields: F;
  readonly allowed: readonly string[];
  readonly entries: readonly (readonly [string, Field<unknown>])[];
}

export function shape<F extends Fields>(fields: F, extraKeys: readonly string[] = []): Shape<F> {
  return { fields, allowed: [...extraKeys, ...Object.keys(fields)], entries: Object.entries(fields) };
}

/** Checks o against a shape: no unknown keys, then every field in declaration order. */
export function checkShape(o: Obj, path: string, s: Shape<Fields>, limits: DecodeLimits, msg: Obj): void {
  keys(o, path, s.allowed);
  for (const [key, f] of s.entries) {
    if (f.optional && o[key] === undefined) continue;
    f.check(o, key, path, limits, msg);
  }
}

const field = <T>(check: Field<T>['check']): Field<T, false> => ({ optional: false, check });

/** Field constructors. Ranges are inclusive; `max` defaults to Number.MAX_SAFE_INTEGER. */
export const f = {
  int: (min: number, max = MAX_INT) => field((o, k, p) => int(o, k, p, min, max)),
  finite: () => field((o, k, p) => finite(o, k, p)),
  nonNegative: () =>
    field((o, k, p) => {
      const v = finite(o, k, p);
      if (v < 0) bad(`${p}.${k} must be >= 0, got ${v}`);
      return v;
    }),
  str: (min: number, max: number) => field((o, k, p) => str(o, k, p, min, max)),
  strings: (maxItems: number, maxChars: number) => field((o, k, p) => stringList(o, k, p, maxItems, maxChars)),
  oneOf: <T extends string>(values: readonly T[]) => field((o, k, p) => oneOf(o, k, p, values)),
  bytes32: () => field((o, k, p) => bytes32(o, k, p)),
  f32: () => field((o, k, p, limits) => f32(o, k, p, limits)),
  /** A JSON-able map (bounded walk: no cycles, typed arrays or non-finite numbers). */
  json: () =>
    field((o, k, p): Record<string, unknown> => {
      const v = obj(o, k, p);
      jsonObject(v, `${p}.${k}`);
      return v;
    }),
  /** Weights or gradient values, in the wire format wireOf names (see floats()). */
  floats: (wireOf: (limits: DecodeLimits, msg: Obj) => WireFormat) => field((o, k, p, limits, msg) => floats(o, k, p, limits, wireOf(limits, msg))),
  /** A nested map with its own fields. */
  map: <F extends Fields>(fields: F) => {
    const s = shape(fields);
    return field((o, k, p, limits, msg): Infer<F> => {
      const v = obj(o, k, p);
      checkShape(v, `${p}.${k}`, s, limits, msg);
      return v as Infer<F>;
    });
  },
  /** A field with hand-written checks (cross-field rules); `check` may use the checkers below. */
  custom: <T>(check: Field<T>['check']) => field(check),
  optional: <T>(inner: Field<T>): Field<T, true> => ({ optional: true, check: inner.check }),
};

// ---------------------------------------------------------------------------------------------
// Checkers. Each reads o[key], throws Invalid naming `${path}.${key}` on failure, and returns
// the narrowed value.

export class Invalid extends Error {
  readonly code: DecodeErrorCode;
  constructor(code: DecodeErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export function bad(message: string): never {
  throw new Invalid('BAD_FIELD', message);
}

export function missing(o: Obj, key: string, path: string): void {
  if (!Object.hasOwn(o, key)) bad(`${path}.${key} is missing`);
}

export function keys(o: Obj, path: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) bad(`${path} has unknown field ${describe(k)}`);
  }
}

export function int(o: Obj, key: string, path: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
  missing(o, key, path);
  const range = max === MAX_INT ? `>= ${min}` : `in [${min}, ${max}]`;
  return bad(`${path}.${key} must be an integer ${range}, got ${describe(v)}`);
}

export function finite(o: Obj, key: string, path: string): number {
  const v = o[key];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  missing(o, key, path);
  if (typeof v === 'number') throw new Invalid('NON_FINITE', `${path}.${key} is ${v}`);
  return bad(`${path}.${key} must be a number, got ${describe(v)}`);
}

export function str(o: Obj, key: string, path: string, min: number, max: number): string {
  const v = o[key];
  if (typeof v === 'string' && v.length >= min && v.length <= max) return v;
  missing(o, key, path);
  const size = min > 0 ? `of ${min}..${max} chars` : `of at most ${max} chars`;
  return bad(`${path}.${key} must be a string ${size}, got ${describe(v)}`);
}

/** An array of at most `maxItems` strings of at most `maxChars` chars each. */
export function stringList(o: Obj, key: string, path: string, maxItems: number, maxChars: number): string[] {
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

export function oneOf<T extends string>(o: Obj, key: string, path: string, values: readonly T[]): T {
  const v = o[key];
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  missing(o, key, path);
  return bad(`${path}.${key} must be one of ${values.map((x) => `"${x}"`).join(', ')}, got ${describe(v)}`);
}

export function obj(o: Obj, key: string, path: string): Obj {
  const v = o[key];
  if (isPlainObject(v)) return v;
  missing(o, key, path);
  return bad(`${path}.${key} must be a map, got ${describe(v)}`);
}

export function bytes32(o: Obj, key: string, path: string): Uint8Array {
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

export function f32(o: Obj, key: string, path: string, limits: DecodeLimits): Float32Array {
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
export function intArray<T extends Int32Array | Uint8Array>(o: Obj, key: string, path: string, limits: DecodeLimits, type: { new (n: number): T; name: string }): T {
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

/**
 * A weights or gradient array in the given wire format. fp32: a Float32Array. fp16: a map
 * { half: Uint16Array, exp: Int8Array } with one exponent per HALF_BLOCK values, no Inf/NaN bit
 * pattern and finite after scaling; it is replaced in `o` by the Float32Array it decodes to.
 */
export function floats(o: Obj, key: string, path: string, limits: DecodeLimits, wire: WireFormat): Float32Array {
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
export function jsonObject(root: Obj, rootPath: string): void {
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

export function isPlainObject(v: unknown): v is Obj {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Short, log-safe description of an arbitrary decoded value for error reasons. */
export function describe(v: unknown): string {
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

