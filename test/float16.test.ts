/**
 * shared/float16.ts: IEEE binary16 conversion (exhaustive over all 65,536 halves, checked against
 * an independent reference on ~1.4M float32 values including every rounding tie) and the
 * block-scaled arrays --wire fp16 sends (exact scaling, precision bounds, no overflow).
 */
import { describe, expect, it } from 'vitest';
import {
  blockExponent,
  decodeHalf,
  encodeHalf,
  f32BitsToHalf,
  firstNonFiniteHalf,
  fromHalfBits,
  HALF_BLOCK,
  halfBlocks,
  halfToF32Bits,
  roundToHalf,
  roundTripHalf,
  toHalfBits,
} from '../shared/float16.ts';
import { uniformSource } from '../shared/rng.ts';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number): number => {
  f32[0] = x;
  return u32[0]!;
};
const valueOf = (bits: number): number => {
  u32[0] = bits >>> 0;
  return f32[0]!;
};

/** The value of a half from its definition, in double arithmetic (independent of the module's table). */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Reference rounding of a float32 value to half: find the two neighbouring halves and compare x
 * with their midpoint (exact in double: a midpoint of halves has 12 significant bits). Ties go
 * to the neighbour with the even bit pattern; above 65504 the upper neighbour is 2^16 (Infinity).
 */
function referenceHalf(x: number): number {
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  // Binary search over the positive finite halves 0x0000..0x7bff, which are sorted by value.
  let lo = 0;
  let hi = 0x7bff;
  if (a >= halfValue(hi)) {
    const mid = (65504 + 65536) / 2;
    return sign | (a < mid ? 0x7bff : 0x7c00);
  }
  while (hi - lo > 1) {
    const m = (lo + hi) >> 1;
    if (halfValue(m) <= a) lo = m;
    else hi = m;
  }
  const mid = (halfValue(lo) + halfValue(hi)) / 2;
  if (a < mid) return sign | lo;
  if (a > mid) return sign | hi;
  return sign | (lo % 2 === 0 ? lo : hi);
}

const hex = (h: number) => `0x${h.toString(16).padStart(4, '0')}`;

describe('half <-> float32, scalar', () => {
  it('decodes every one of the 65,536 half bit patterns to its defined value', () => {
    for (let h = 0; h < 65536; h++) {
      const want = halfValue(h);
      const got = fromHalfBits(h);
      if (Number.isNaN(want)) {
        expect(Number.isNaN(got), hex(h)).toBe(true);
        // The float32 pattern is a NaN with the half's sign and payload in its top mantissa bits.
        const bits = halfToF32Bits(h);
        expect(bits >>> 31, hex(h)).toBe(h >>> 15);
        expect((bits >>> 13) & 0x3ff, hex(h)).toBe(h & 0x3ff);
      } else if (!Object.is(got, want)) {
        throw new Error(`${hex(h)} decodes to ${got}, expected ${want}`);
      }
    }
  });

  it('round-trips all 65,536 halves bit for bit (zeros, subnormals, infinities and NaN payloads included)', () => {
    let nan = 0;
    for (let h = 0; h < 65536; h++) {
      const back = f32BitsToHalf(halfToF32Bits(h));
      if (back !== h) throw new Error(`${hex(h)} -> float32 0x${halfToF32Bits(h).toString(16)} -> ${hex(back)}`);
      if (Number.isNaN(halfValue(h))) nan++;
      // Through a JS number too (NaN payloads are not observable there).
      if (!Number.isNaN(halfValue(h))) expect(toHalfBits(fromHalfBits(h))).toBe(h);
    }
    expect(nan).toBe(2 * 1023);
  });

  it('rounds like the reference on a sweep of float32 bit patterns and at every midpoint between halves', () => {
    const check = (bits: number) => {
      const x = valueOf(bits);
      const got = f32BitsToHalf(bits >>> 0);
      if (Number.isNaN(x)) {
        if ((got & 0x7c00) !== 0x7c00 || (got & 0x3ff) === 0) throw new Error(`NaN 0x${(bits >>> 0).toString(16)} -> ${hex(got)}, not a NaN`);
        return;
      }
      const want = referenceHalf(x);
      if (got !== want) throw new Error(`${x} (0x${(bits >>> 0).toString(16)}) -> ${hex(got)}, expected ${hex(want)}`);
    };
    let n = 0;
    // Every 4099th float32 pattern: both signs, every exponent, zeros, subnormals, Inf and NaN.
    for (let b = 0; b < 2 ** 32; b += 4099) {
      check(b);
      n++;
    }
    // Every midpoint between neighbouring halves (the ties), and the float32 values around it.
    for (let h = 0; h < 0x7c00; h++) {
      const mid = (halfValue(h) + (h === 0x7bff ? 65536 : halfValue(h + 1))) / 2;
      const bits = bitsOf(mid);
      expect(valueOf(bits)).toBe(mid); // midpoints are float32 values
      for (let d = -2; d <= 2; d++) {
        check(bits + d);
        check((bits + d) ^ 0x80000000);
        n += 2;
      }
    }
    expect(n).toBeGreaterThan(1_300_000);
  });

  it('breaks ties to even, in the normal and the subnormal range', () => {
    expect(toHalfBits(1 + 2 ** -11)).toBe(0x3c00); // halfway 1 .. 1+2^-10: even is 1
    expect(toHalfBits(1 + 3 * 2 ** -11)).toBe(0x3c02); // halfway 1+2^-10 .. 1+2^-9: even is 1+2^-9
    expect(toHalfBits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above halfway rounds up
    expect(toHalfBits(-(1 + 2 ** -11))).toBe(0xbc00);
    expect(toHalfBits(2 ** -25)).toBe(0x0000); // halfway 0 .. smallest subnormal: even is 0
    expect(toHalfBits(2 ** -25 * (1 + 2 ** -23))).toBe(0x0001);
    expect(toHalfBits(3 * 2 ** -25)).toBe(0x0002); // halfway 1 .. 2 subnormal units: even is 2
    expect(toHalfBits(5 * 2 ** -25)).toBe(0x0002); // halfway 2 .. 3: even is 2
    expect(toHalfBits(2 ** -14 - 2 ** -25)).toBe(0x0400); // halfway largest subnormal .. smallest normal
    expect(toHalfBits(2048 + 1)).toBe(0x6800); // spacing 2 at 2048: 2049 ties to 2048
    expect(toHalfBits(2048 + 3)).toBe(0x6802); // 2051 ties to 2052
  });

  it('overflows to Infinity exactly from 65520 up, keeps signed zeros, Infinity and NaN', () => {
    expect(toHalfBits(65504)).toBe(0x7bff);
    expect(toHalfBits(Math.fround(65519.99))).toBe(0x7bff);
    expect(toHalfBits(65520)).toBe(0x7c00); // the tie between 65504 and 2^16 goes to the even 2^16: out of range
    expect(toHalfBits(-65520)).toBe(0xfc00);
    expect(toHalfBits(1e10)).toBe(0x7c00);
    expect(toHalfBits(3.4e38)).toBe(0x7c00);
    expect(toHalfBits(Infinity)).toBe(0x7c00);
    expect(toHalfBits(-Infinity)).toBe(0xfc00);
    expect(toHalfBits(0)).toBe(0x0000);
    expect(toHalfBits(-0)).toBe(0x8000);
    expect(toHalfBits(1e-30)).toBe(0x0000);
    expect(toHalfBits(-1e-30)).toBe(0x8000);
    expect(Object.is(roundToHalf(-1e-30), -0)).toBe(true);
    expect(Number.isNaN(roundToHalf(NaN))).toBe(true);
    // A float32 NaN whose payload lies only in the low mantissa bits stays a NaN (not Infinity).
    expect(f32BitsToHalf(0x7f800001)).toBe(0x7e00);
    expect(f32BitsToHalf(0xff800001)).toBe(0xfe00);
    expect(f32BitsToHalf(0x7fc00000)).toBe(0x7e00);
    expect(roundToHalf(1 / 3)).toBe(0.333251953125);
  });
});

describe('block-scaled arrays (the --wire fp16 payload)', () => {
  function randomArray(n: number, seed: number, scale: (i: number) => number): Float32Array {
    const r = uniformSource(seed);
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale(i);
    return a;
  }

  it('has one exponent per block of 256 values and puts each block maximum in [2^14, 2^15)', () => {
    expect(HALF_BLOCK).toBe(256);
    for (const n of [0, 1, 255, 256, 257, 1000]) {
      const a = randomArray(n, n + 1, () => 1e-3);
      const p = encodeHalf(a);
      expect(p.half.length).toBe(n);
      expect(p.exp.length).toBe(halfBlocks(n));
      expect(p.exp.length).toBe(Math.ceil(n / 256));
      for (let b = 0; b < p.exp.length; b++) {
        let max = 0;
        for (let i = b * 256; i < Math.min(n, (b + 1) * 256); i++) max = Math.max(max, Math.abs(fromHalfBits(p.half[i]!)));
        expect(max).toBeGreaterThanOrEqual(2 ** 14);
        expect(max).toBeLessThanOrEqual(2 ** 15);
      }
    }
    expect(blockExponent(0)).toBe(0);
    expect(blockExponent(bitsOf(1))).toBe(14);
    expect(blockExponent(bitsOf(2 ** 14))).toBe(0);
    expect(blockExponent(bitsOf(3.4e38))).toBe(-113);
    expect(blockExponent(bitsOf(1e-30))).toBe(114); // 1e-30 is in [2^-100, 2^-99)
    expect(blockExponent(1)).toBe(127); // the smallest float32 subnormal: capped to int8
  });

  it('keeps fp16 relative precision whatever the magnitude of a block (1e-12 .. 1e30)', () => {
    // Blocks of very different magnitudes side by side, as gradients of different layers are.
    const mags = [1e-12, 3e-9, 1e-6, 1e-3, 1, 7e2, 1e5, 1e30];
    const a = randomArray(256 * mags.length, 5, (i) => mags[Math.floor(i / 256)]!);
    const back = roundTripHalf(a);
    for (let i = 0; i < a.length; i++) {
      const blockMax = mags[Math.floor(i / 256)]!;
      const err = Math.abs(back[i]! - a[i]!);
      // Half an ulp of 11 bits relative to the value, or of the subnormal step 2^-24 relative
      // to the scaled block maximum (>= 2^14), whichever is larger.
      const bound = Math.max(Math.abs(a[i]!) * 2 ** -11, blockMax * 2 ** -38);
      if (err > bound) throw new Error(`a[${i}] = ${a[i]} came back as ${back[i]} (error ${err} > ${bound})`);
      expect(Number.isFinite(back[i]!)).toBe(true);
    }
  });

  it('scales exactly: the decoded values are the halves of the scaled values, scaled back', () => {
    const a = randomArray(1000, 9, () => 0.02);
    const p = encodeHalf(a);
    for (let i = 0; i < a.length; i++) {
      const e = p.exp[Math.floor(i / 256)]!;
      expect(p.half[i]).toBe(toHalfBits(a[i]! * 2 ** e));
    }
    const out = decodeHalf(p);
    for (let i = 0; i < a.length; i++) expect(out[i]).toBe(fromHalfBits(p.half[i]!) * 2 ** -p.exp[Math.floor(i / 256)]!);
    // The exponent-field fast path against multiplication, where it is not taken: float32
    // subnormals, values scaled below float32's normal range, and a capped exponent.
    const cases = [
      [2 ** -130, 2 ** -149, -3 * 2 ** -149, 2 ** -140 * 1.37, 0],
      [2 ** 100, 2 ** -20, -(2 ** -30) * 1.5, 2 ** -140, 1],
      [65504, -65520, 1e-9, 2 ** -126, -(2 ** -127)],
    ];
    for (const c of cases) {
      const x = new Float32Array(c);
      const q = encodeHalf(x);
      for (let i = 0; i < x.length; i++) expect(q.half[i], `${x[i]} in [${c}]`).toBe(toHalfBits(x[i]! * 2 ** q.exp[0]!));
    }
  });

  it('is idempotent and sign-symmetric, and maps zeros and all-zero blocks to themselves', () => {
    const a = randomArray(3000, 11, (i) => 10 ** ((i % 13) - 6));
    const once = roundTripHalf(a);
    expect(roundTripHalf(once)).toEqual(once);
    const neg = roundTripHalf(a.map((x) => -x));
    for (let i = 0; i < a.length; i++) expect(neg[i]).toBe(-once[i]!);
    const zeros = new Float32Array(600);
    zeros[300] = -0;
    const p = encodeHalf(zeros);
    expect([...p.exp]).toEqual([0, 0, 0]);
    const z = decodeHalf(p);
    expect(z.every((x) => x === 0)).toBe(true);
    expect(Object.is(z[300], -0)).toBe(true);
  });

  it('never overflows a finite block (up to float32 max), and keeps Inf/NaN non-finite for the codec to reject', () => {
    for (const x of [3e38, -3.3e38, 65519.99, 65520, 1e20, -1, 2 ** -149, 1e-40]) {
      const back = roundTripHalf(new Float32Array([x, x / 3]))[0]!;
      expect(Number.isFinite(back), `${x}`).toBe(true);
      expect(Math.abs(back - Math.fround(x))).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11);
    }
    expect(roundTripHalf(new Float32Array([65520]))[0]).toBe(65536); // Infinity in plain fp16; scaled, 2^16
    expect(roundTripHalf(new Float32Array([65519.99]))[0]).toBe(65504);
    expect(roundTripHalf(new Float32Array([2 ** -149]))[0]).toBe(2 ** -149); // exact: scaled to 2^-22
    // Only within fp16 rounding of float32's largest value does rounding to 11 bits reach 2^128.
    expect(roundTripHalf(new Float32Array([3.4028234e38]))[0]).toBe(Infinity);
    // Within one block, a value 2^40 below the block's largest is lost (documented), 2^20 below is kept.
    const mixed = roundTripHalf(new Float32Array([1, 1e-13, 2 ** -20]));
    expect([...mixed]).toEqual([1, 0, 2 ** -20]);

    const bad = new Float32Array(600).fill(0.5);
    bad[10] = NaN;
    bad[400] = -Infinity;
    const p = encodeHalf(bad);
    expect(firstNonFiniteHalf(p.half)).toBe(10);
    expect(p.half[400]).toBe(0xfc00);
    expect(fromHalfBits(p.half[11]!) * 2 ** -p.exp[0]!).toBe(0.5); // the rest of the block is unaffected
    expect(firstNonFiniteHalf(encodeHalf(new Float32Array(600).fill(-2)).half)).toBe(-1);
    expect(firstNonFiniteHalf(new Uint16Array([0x7bff, 0xfbff, 0x8000, 0x03ff]))).toBe(-1);
    expect(firstNonFiniteHalf(new Uint16Array([0, 0, 0x7c01]))).toBe(2);
  });

  it('encodes and decodes 2.5M floats in well under a second', () => {
    const a = randomArray(2_500_000, 3, (i) => 10 ** ((i >> 8) % 7 - 4));
    encodeHalf(a.subarray(0, 10_000)); // warm up
    const t0 = performance.now();
    const p = encodeHalf(a);
    const t1 = performance.now();
    const back = decodeHalf(p);
    const t2 = performance.now();
    expect(back.length).toBe(a.length);
    console.log(`float16: encode ${(t1 - t0).toFixed(1)} ms, decode ${(t2 - t1).toFixed(1)} ms for 2.5M floats`);
    expect(t1 - t0).toBeLessThan(1000);
    expect(t2 - t1).toBeLessThan(1000);
  });
});
