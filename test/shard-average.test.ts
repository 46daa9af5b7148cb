/**
 * ShardOrderAverage (shared/training-state.ts): the coordinator folds shard gradients into the
 * shard-order average as results arrive, with reused buffers. Bit-identity across worker counts
 * rests on it computing exactly the float32 operations of the plain definition, whatever the
 * arrival order, so it is compared bit for bit with that definition written out.
 */
import { describe, expect, it } from 'vitest';
import { uniformSource } from '../shared/rng.ts';
import { averageInShardOrder, ShardOrderAverage } from '../shared/training-state.ts';

/** The definition: acc = g0; acc += gs (float32) for s = 1..n-1; acc /= n (float32). */
function reference(gradients: Float32Array[]): Float32Array {
  const acc = gradients[0]!.slice();
  for (let s = 1; s < gradients.length; s++) for (let i = 0; i < acc.length; i++) acc[i] += gradients[s]![i]!;
  for (let i = 0; i < acc.length; i++) acc[i] /= gradients.length;
  return acc;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);


/** Values over many magnitudes plus signed zeros, subnormals, extremes: where rounding differences show. */
function gradients(shards: number, len: number, seed: number): Float32Array[] {
  const r = uniformSource(seed);
  const special = [0, -0, 1e-45, -1e-45, 1.17e-38, 3.4e38, -3.4e38, 1, -1];
  return Array.from({ length: shards }, () => Float32Array.from({ length: len }, () => (r() < 0.05 ? special[Math.floor(r() * special.length)]! : (r() - 0.5) * 10 ** Math.floor(r() * 12 - 8))));
}

describe('ShardOrderAverage', () => {
  it('equals the plain shard-order average bit for bit, in any arrival order, phase after phase with reused buffers', () => {
    const r = uniformSource(7);
    for (const shards of [1, 2, 3, 4, 5, 8]) {
      const avg = new ShardOrderAverage(shards);
      for (const [k, len] of [0, 1, 7, 1000, 4099, 1000].entries()) {
        const gs = gradients(shards, len, 100 * shards + k);
        const want = bits(reference(gs));
        expect(bits(averageInShardOrder(gs)).equals(want), `averageInShardOrder S=${shards} len=${len}`).toBe(true);
        avg.restart();
        const arrived: (Float32Array | undefined)[] = new Array(shards).fill(undefined);
        const order = [...gs.keys()].sort(() => r() - 0.5);
        for (const s of order) {
          arrived[s] = gs[s];
          avg.advance(arrived);
        }
        expect(bits(avg.average(gs)).equals(want), `incremental S=${shards} len=${len} order ${order.join(',')}`).toBe(true);
      }
    }
  });

  it('starts over when a result it folded in was replaced (a banned worker\'s shard recomputed)', () => {
    const gs = gradients(4, 500, 3);
    const avg = new ShardOrderAverage(4);
    const wrong = gs.map((g) => g.map((x) => x * 2));
    avg.advance([wrong[0], wrong[1], wrong[2], undefined]);
    expect(bits(avg.average(gs)).equals(bits(reference(gs)))).toBe(true);
  });

  it('refuses gradients of different lengths or the wrong count', () => {
    const avg = new ShardOrderAverage(3);
    expect(() => avg.average([new Float32Array(4), new Float32Array(4), new Float32Array(5)])).toThrow(/shard gradient 2 has 5 values, expected 4/);
    expect(() => avg.average([new Float32Array(4)])).toThrow(/needs 3 shard gradients, got 1/);
    expect(() => averageInShardOrder([])).toThrow(/zero shard gradients/);
  });
});
