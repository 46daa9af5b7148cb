/**
 * IEEE 754 binary16 ("half") conversion, for `--wire fp16`: weights and gradients cross the
 * network as half floats (2 bytes instead of 4). tfjs has no float16 dtype, so nothing computes
 * in half precision: the codec converts at the edges (shared/codec.ts), and both ends hold and
 * compute float32 values that happen to be exactly representable in half precision.
 *
 * Rounding is round-to-nearest, ties-to-even, correct for every float32 including subnormal
 * halves, overflow (|x| >= 65520 becomes Infinity) and NaN (stays NaN, payload kept when it
 * fits). It works on the float32 bit pattern with integer arithmetic, so it is exact by
 * construction and does not depend on how the JS engine rounds doubles.
 *
 * Scaling (HalfFloats): a half covers 6e-8 .. 65504, while gradient elements can be 1e-9 or 1e3
 * depending on the layer and the phase of training. Each block of HALF_BLOCK consecutive values
 * therefore carries its own power-of-two exponent e (an int8): the encoder multiplies the block
 * by 2^e so that its largest finite magnitude lands in [2^14, 2^15), rounds to half, and the
 * decoder multiplies by 2^-e. Multiplying by a power of two is exact, so the scale adds no
 * rounding of its own: every value keeps fp16's relative precision (2^-11) whatever the
 * magnitude of its block, and nothing overflows (except values within fp16 rounding of float32's
 * largest, |x| > 3.4027e38, which round to 2^128 = Infinity as 11 significant bits must). Only
 * values about 2^29 times smaller than their block's largest lose precision (subnormal halves);
 * about 2^40 times smaller, they become 0. One byte per block of 256 halves costs 0.2% on top of
 * the 2 bytes per value.
 *
 * Determinism: decodeHalf(encodeHalf(x)) is a pure function of x's bits (roundTripHalf), so the
 * single-process trainer applies exactly the values a coordinator decodes from its workers.
 */

/** Values per scale exponent. */
export const HALF_BLOCK = 256;

/** The wire form of a float array under `--wire fp16`: value[i] = half[i] * 2^-exp[floor(i / HALF_BLOCK)]. */
export interface HalfFloats {
  /** IEEE binary16 bit patterns. */
  half: Uint16Array;
  /** One power-of-two exponent per block of HALF_BLOCK values (the last block may be short). */
  exp: Int8Array;
}

/** Number of scale exponents for n values. */
export function halfBlocks(n: number): number {
  return Math.ceil(n / HALF_BLOCK);
}

/** Bytes of the half payload for n values (halves + exponents), without framing. */
export function halfPayloadBytes(n: number): number {
  return 2 * n + halfBlocks(n);
}

// ---------------------------------------------------------------------------------------------
// Scalar conversion

/**
 * float32 bit pattern (uint32) -> half bit pattern (uint16), round-to-nearest-even.
 * Inf -> Inf, NaN -> NaN (top 10 payload bits kept; a payload only in the low bits becomes the
 * quiet bit, so a NaN never turns into Infinity), |x| >= 65520 -> Inf, |x| <= 2^-25 -> +-0.
 */
export function f32BitsToHalf(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) {
    if (abs === 0x7f800000) return sign | 0x7c00;
    return sign | 0x7c00 | ((abs >>> 13) & 0x3ff || 0x200);
  }
  // 0x477ff000 is 65520, halfway between the largest half (65504) and 2^16: ties go to the
  // even neighbour 2^16, which is out of range.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal half (|x| >= 2^-14): rebias the exponent (127 -> 15), then round the 13 dropped
    // mantissa bits: adding 0xfff (+1 when the kept part is odd) carries exactly when the
    // dropped part is above half (or at half with an odd kept part). A carry out of the
    // mantissa correctly bumps the exponent, up to 0x7c00 (Infinity) just below 65520.
    return sign | ((abs - 0x38000000 + 0x0fff + ((abs >>> 13) & 1)) >>> 13);
  }
  // 0x33000000 is 2^-25, half the smallest subnormal half: at or below it, round to zero (a tie
  // at exactly 2^-25 goes to the even neighbour 0).
  if (abs <= 0x33000000) return sign;
  // Subnormal half: the value in units of 2^-24 is m * 2^(e - 126), i.e. m >> (126 - e), with m
  // the 24-bit significand; round the shifted-out bits to nearest even. A carry into 0x400
  // gives the smallest normal half, which is right.
  const e = abs >>> 23; // 102..112
  const m = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  const q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  return sign | (q + (rem > halfway || (rem === halfway && (q & 1) === 1) ? 1 : 0));
}

/** half bit pattern -> float32 bit pattern (exact: every half is a float32). NaN payloads are kept. */
export function halfToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e !== 0) return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
  if (m === 0) return sign >>> 0;
  // Subnormal half m * 2^-24: normalise m so its top bit becomes the implicit one.
  const top = 31 - Math.clz32(m); // 0..9
  const exp = top - 24 + 127; // float32 biased exponent of 2^(top - 24)
  return (sign | (exp << 23) | ((m << (23 - top)) & 0x7fffff)) >>> 0;
}

/** float32 value of every half bit pattern, built once (256 KiB); decoding is one lookup. */
const HALF_TO_F32_BITS = new Uint32Array(65536);
for (let h = 0; h < 65536; h++) HALF_TO_F32_BITS[h] = halfToF32Bits(h);
const HALF_TO_F32 = new Float32Array(HALF_TO_F32_BITS.buffer);

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** A number, first rounded to float32 (as a Float32Array would), to half bits. */
export function toHalfBits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToHalf(scratchU32[0]!);
}

/** The value of a half bit pattern (NaN payloads are not observable through a JS number). */
export function fromHalfBits(h: number): number {
  return HALF_TO_F32[h & 0xffff]!;
}

/** x rounded to the nearest half (as a float32-representable number). */
export function roundToHalf(x: number): number {
  return fromHalfBits(toHalfBits(x));
}

// ---------------------------------------------------------------------------------------------
// Block-scaled arrays

/** 2^k for k in [-128, 128], exact doubles. */
const POW2 = new Float64Array(257);
for (let k = -128; k <= 128; k++) POW2[k + 128] = 2 ** k;
const pow2 = (k: number): number => POW2[k + 128]!;

/**
 * The scale exponent for a block whose largest finite magnitude has float32 bits `maxAbsBits`:
 * e such that max * 2^e is in [2^14, 2^15). 0 for an all-zero block; capped at 127 (int8) for
 * blocks below 2^-113, which then keep less precision (they are far below anything that matters).
 */
export function blockExponent(maxAbsBits: number): number {
  if (maxAbsBits === 0) return 0;
  // floor(log2(max)): from the exponent field, or from the leading bit of a float32 subnormal.
  const log2 = maxAbsBits >= 0x800000 ? (maxAbsBits >>> 23) - 127 : 31 - Math.clz32(maxAbsBits) - 149;
  return Math.min(127, 14 - log2);
}

/**
 * Encodes float32 values as block-scaled halves. Non-finite inputs stay non-finite (Infinity,
 * NaN) so the receiving codec rejects them just as it rejects them in float32.
 */
export function encodeHalf(src: Float32Array): HalfFloats {
  const n = src.length;
  const half = new Uint16Array(n);
  const exp = new Int8Array(halfBlocks(n));
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let b = 0, start = 0; start < n; b++, start += HALF_BLOCK) {
    const end = Math.min(n, start + HALF_BLOCK);
    let maxAbs = 0;
    for (let i = start; i < end; i++) {
      const a = bits[i]! & 0x7fffffff;
      // Bit patterns of finite non-negative floats order like their values; Inf/NaN are skipped.
      if (a > maxAbs && a < 0x7f800000) maxAbs = a;
    }
    const e = blockExponent(maxAbs);
    exp[b] = e;
    if (e === 0) {
      for (let i = start; i < end; i++) half[i] = f32BitsToHalf(bits[i]!);
      continue;
    }
    // x * 2^e, exactly, by adding e to the float32 exponent field. The scaled block maximum is
    // below 2^15, so the field cannot overflow; a result below float32's normal range (< 2^-126)
    // is far under 2^-25 and rounds to a half zero. Float32 subnormals (tiny, rare) and Inf/NaN
    // take the general path.
    const shift = e << 23;
    for (let i = start; i < end; i++) {
      const x = bits[i]!;
      const field = (x >>> 23) & 0xff;
      if (field !== 0 && field !== 0xff) {
        half[i] = field + e > 0 ? f32BitsToHalf((x + shift) >>> 0) : (x >>> 16) & 0x8000;
      } else {
        scratchF32[0] = src[i]! * pow2(e);
        half[i] = f32BitsToHalf(scratchU32[0]!);
      }
    }
  }
  return { half, exp };
}

/**
 * Decodes block-scaled halves into float32 values (into `out` when given). Does not validate:
 * the codec checks lengths and finiteness (see firstNonFiniteHalf) before trusting a payload.
 */
export function decodeHalf(p: HalfFloats, out: Float32Array = new Float32Array(p.half.length)): Float32Array {
  const { half, exp } = p;
  const n = half.length;
  for (let b = 0, start = 0; start < n; b++, start += HALF_BLOCK) {
    const end = Math.min(n, start + HALF_BLOCK);
    const s = pow2(-(exp[b] ?? 0));
    for (let i = start; i < end; i++) out[i] = HALF_TO_F32[half[i]!]! * s;
  }
  return out;
}

/**
 * What a float32 array becomes after travelling as fp16: decodeHalf(encodeHalf(src)). The
 * single-process trainer applies it where the distributed run has a wire in between.
 */
export function roundTripHalf(src: Float32Array): Float32Array {
  return decodeHalf(encodeHalf(src));
}

/** Index of the first Infinity or NaN half bit pattern, or -1. */
export function firstNonFiniteHalf(half: Uint16Array): number {
  let acc = 0;
  const n = half.length;
  // Branch-free pass for the common all-finite case: a half is Inf/NaN when its exponent bits are all set.
  for (let i = 0; i < n; i++) acc |= ((half[i]! & 0x7c00) + 0x0400) & 0x8000;
  if (acc === 0) return -1;
  for (let i = 0; i < n; i++) if ((half[i]! & 0x7c00) === 0x7c00) return i;
  return -1;
}
