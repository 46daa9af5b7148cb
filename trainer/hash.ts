import { createHash } from 'node:crypto';

/** sha256 hex of float arrays' raw bytes, in the order given. The tests' notion of "same weights". */
export function hashFloats(...arrays: Float32Array[]): string {
  const h = createHash('sha256');
  for (const a of arrays) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex');
}
