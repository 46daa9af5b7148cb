/**
 * Seeded randomness. Everything random in a run (weight init, data order, noise, dropout masks,
 * mixture samples) is drawn from here rather than from tfjs or Math.random, so that any process
 * on any compute backend can regenerate exactly the same numbers from (run seed, coordinates).
 */

/** Mixes one 32-bit value into a running hash (murmur3's finalizer applied to h ^ v). */
function mix32(h: number, v: number): number {
  h = Math.imul(h ^ (v >>> 0), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Derives a 32-bit seed from a base seed and any number of integer coordinates, e.g.
 * deriveSeed(runSeed, STREAM.noise, iteration, phase, dStep, shardId). Order matters.
 * Integers up to 2^53 are accepted (high and low words are both mixed in).
 */
export function deriveSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    if (!Number.isInteger(p)) throw new RangeError(`deriveSeed takes integers, got ${p}`);
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = mix32(mix32(h, lo), hi + 0x632be5ab);
  }
  return mix32(h, parts.length);
}

/** Stream identifiers keep derived seeds for different purposes apart. */
export const STREAM = {
  init: 1,
  data: 2,
  noise: 3,
  dropout: 4,
  mixture: 5,
  sampleGrid: 6,
  labels: 7,
  verify: 8,
} as const;

/** State of an Rng: four 32-bit words (sfc32), plain numbers so it serialises as JSON. */
export type RngState = [number, number, number, number];

/**
 * sfc32: small, fast, passes PractRand to large sizes, and its whole state is four uint32
 * words that a checkpoint can store and restore exactly.
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spareNormal: number | null = null;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.nextU32();
  }

  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    [r.a, r.b, r.c, r.d] = state.map((v) => v >>> 0) as RngState;
    return r;
  }

  /** The state; a normal-pair spare is dropped, so callers snapshot only between whole draws. */
  state(): RngState {
    return [this.a, this.b, this.c, this.d];
  }

  nextU32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  nextInt(n: number): number {
    // Multiply-shift; the bias is < n / 2^32, irrelevant for the sizes used here.
    return Math.floor(this.nextFloat() * n);
  }

  /** Standard normal (Box-Muller, pairs cached). */
  normal(): number {
    if (this.spareNormal !== null) {
      const s = this.spareNormal;
      this.spareNormal = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.nextFloat();
    const v = this.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/**
 * A seeded source of uniform [0, 1) numbers as a plain function, for code that only needs
 * reproducible choices (fuzzers, the soak test's chaos schedule), not a checkpointable state.
 */
export function uniformSource(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.nextFloat();
}

/** n standard-normal float32 values from a seed. */
export function normalArray(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  return out;
}

/** n uniform [lo, hi) float32 values from a seed. */
export function uniformArray(n: number, seed: number, lo = 0, hi = 1): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  const span = hi - lo;
  for (let i = 0; i < n; i++) out[i] = lo + span * rng.nextFloat();
  return out;
}

/** A Fisher-Yates permutation of 0..n-1 from a seed. */
export function permutation(n: number, seed: number): Uint32Array {
  const rng = new Rng(seed);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
