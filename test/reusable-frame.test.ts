import { describe, expect, it } from 'vitest';
import { decode, encode, ReusableFrame } from '../shared/codec.ts';
import type { Message, Outgoing } from '../shared/protocol.ts';

const limits = { maxFrameBytes: 1 << 26, maxFloats: 1 << 24 };
const weights = (n: number, k: number): Outgoing<Message> => ({ type: 'weights', net: 'D', version: k, weights: new Float32Array(n).map((_, i) => Math.sin(i + k)) });
const bytes = (f: Uint8Array) => Buffer.from(f.buffer, f.byteOffset, f.byteLength);

describe('ReusableFrame', () => {
  it('writes the same bytes as encode(), into one buffer only when told the last frame has left', () => {
    const rf = new ReusableFrame();
    const f1 = rf.encode(weights(5000, 1), {}, true); // no buffer yet: fresh memory
    expect(bytes(f1).equals(bytes(encode(weights(5000, 1))))).toBe(true);
    const f2 = rf.encode(weights(5000, 2), {}, true);
    const f3 = rf.encode(weights(5000, 3), {}, true);
    expect(f3.buffer).toBe(f2.buffer);
    expect(bytes(f3).equals(bytes(encode(weights(5000, 3))))).toBe(true);
    // Not free: f3 must stay intact.
    const keep = Buffer.from(bytes(f3));
    const f4 = rf.encode(weights(5000, 4), {}, false);
    expect(f4.buffer).not.toBe(f3.buffer);
    expect(bytes(f3).equals(keep)).toBe(true);
    const d = decode(f4, limits);
    expect(d.ok && d.msg.type === 'weights' && d.msg.version === 4).toBe(true);
  });

  it('never lets another encode() write into its buffer, and grows for a larger frame', () => {
    const rf = new ReusableFrame();
    rf.encode(weights(1000, 1), {}, true);
    const f = rf.encode(weights(1000, 2), {}, true);
    const keep = Buffer.from(bytes(f));
    for (let i = 0; i < 50; i++) encode({ type: 'bye', code: 'RUN_FINISHED', reason: `x${i}` } as Outgoing<Message>);
    encode(weights(3000, 9));
    expect(bytes(f).equals(keep)).toBe(true);
    const big = rf.encode(weights(4000, 3), {}, true);
    expect(bytes(big).equals(bytes(encode(weights(4000, 3))))).toBe(true);
    const big2 = rf.encode(weights(4000, 4), {}, true);
    expect(bytes(big2).equals(bytes(encode(weights(4000, 4))))).toBe(true);
  });

  it('encodes fp16 payloads as encode() does', () => {
    const rf = new ReusableFrame();
    rf.encode(weights(777, 1), { wire: 'fp16' }, true);
    const f = rf.encode(weights(777, 2), { wire: 'fp16' }, true);
    expect(bytes(f).equals(bytes(encode(weights(777, 2), { wire: 'fp16' })))).toBe(true);
  });
});
