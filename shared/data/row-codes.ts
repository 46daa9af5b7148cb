/**
 * One-byte codes for the rows of an 8-bit data set, so D-phase tasks can carry a byte per value
 * instead of a float (protocol feature `rows-u8`, shared/protocol.ts).
 *
 * Image data sets come from 8-bit pixels, so a whole data set holds at most 256 distinct float32
 * values. The palette is those values, sorted; a row travels as indices into it, and the worker
 * looks them up. Each value is looked up, not recomputed, so the worker's rows are bit-identical
 * to the coordinator's whatever formula scaled the pixels.
 */
import type { Dataset } from './types.ts';

export interface RowCodes {
  /** The data set's distinct values, ascending (1-256 of them). */
  palette: Float32Array;
  /** Per value of the data set (n * dim), its index in the palette. */
  codes: Uint8Array;
}

export const MAX_PALETTE = 256;

const cache = new WeakMap<Dataset, RowCodes | null>();

/**
 * The data set's palette and codes, or null when it holds more than 256 distinct values (e.g.
 * continuous data). Computed once per data set (about 0.1 s for 7 M values) and cached.
 */
export function rowCodesOf(ds: Dataset): RowCodes | null {
  const hit = cache.get(ds);
  if (hit !== undefined) return hit;
  const codes = computeRowCodes(ds.x);
  cache.set(ds, codes);
  return codes;
}

function computeRowCodes(x: Float32Array): RowCodes | null {
  // Distinct values by bit pattern: -0 and 0 stay apart, so a lookup restores the exact bits.
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const seen = new Set<number>();
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    if (seen.has(b)) continue;
    seen.add(b);
    if (seen.size > MAX_PALETTE) return null;
  }
  const asFloat = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0];
  const sorted = [...seen].sort((a, b) => asFloat(a) - asFloat(b) || a - b);
  const palette = Float32Array.from(sorted, asFloat);
  const index = new Map<number, number>(sorted.map((b, i) => [b, i]));
  const codes = new Uint8Array(x.length);
  // Runs of equal values (background pixels) skip the map lookup.
  let last = -1;
  let lastCode = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    if (b !== last) {
      last = b;
      lastCode = index.get(b)!;
    }
    codes[i] = lastCode;
  }
  return { palette, codes };
}

/** The codes of the given rows of a data set, concatenated (the rows of one shard). */
export function codesOfRows(rc: RowCodes, dim: number, rows: Int32Array): Uint8Array {
  const out = new Uint8Array(rows.length * dim);
  for (let r = 0; r < rows.length; r++) out.set(rc.codes.subarray(rows[r] * dim, (rows[r] + 1) * dim), r * dim);
  return out;
}

/**
 * A worker's side: the float rows for received codes, or a reason they cannot be decoded (a code
 * past the palette's end).
 */
export function rowsFromCodes(palette: Float32Array, codes: Uint8Array): Float32Array | string {
  const out = new Float32Array(codes.length);
  const n = palette.length;
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c >= n) return `code ${c} at value ${i} is past the end of the ${n}-value palette`;
    out[i] = palette[c];
  }
  return out;
}
