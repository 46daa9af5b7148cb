/**
 * Measures the fixed pairwise tree sum of shared/tree-sum.ts (issue #15) on real gradients:
 *  - its error against a float64 sum of the same shard gradients, next to the old sequential
 *    (shard-order) float32 sum, for mlp-small D and G phases at S = 4..64;
 *  - its cost per value (the coordinator's reduction of S single-shard leaves, the worst case);
 *  - bytes up per phase for S = 4..64 with 1 and 2 workers: result frames as the codec encodes
 *    them (one per block, gradientsPerPhase) against the old one per shard.
 *
 *     npx tsx scripts/tree-sum-measure.ts          (about a minute on 2 cores, wasm)
 */
import { gradientsPerPhase } from '../bench/lib/accounting.ts';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend } from '../shared/backend.ts';
import { encode } from '../shared/codec.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { averageShardGradients } from '../trainer/training-state.ts';

await initBackend('wasm');
const mnist = loadDataSource('mnist');

function errors(gs: Float32Array[], avg: Float32Array): { maxRel: number; meanRel: number } {
  const S = gs.length;
  let maxRel = 0;
  let sum = 0;
  let n = 0;
  let scale = 0;
  const exact = new Float64Array(avg.length);
  for (const g of gs) for (let i = 0; i < g.length; i++) exact[i] += g[i]!;
  for (let i = 0; i < exact.length; i++) {
    exact[i] /= S;
    scale = Math.max(scale, Math.abs(exact[i]!));
  }
  for (let i = 0; i < exact.length; i++) {
    // Relative to the element, floored at 1e-6 of the largest element (cancellation to ~0 aside).
    const d = Math.abs(avg[i]! - exact[i]!) / Math.max(Math.abs(exact[i]!), 1e-6 * scale);
    maxRel = Math.max(maxRel, d);
    sum += d;
    n++;
  }
  return { maxRel, meanRel: sum / n };
}

function sequential(gs: Float32Array[]): Float32Array {
  const acc = gs[0]!.slice();
  for (let s = 1; s < gs.length; s++) for (let i = 0; i < acc.length; i++) acc[i] += gs[s]![i]!;
  for (let i = 0; i < acc.length; i++) acc[i] /= gs.length;
  return acc;
}

console.log('| S | phase | values | tree max rel | tree mean rel | sequential max rel | sequential mean rel | tree ms | ns per value per add |');
console.log('|---|---|---|---|---|---|---|---|---|');
const bytesRows: string[] = [];
for (const S of [4, 8, 16, 32, 64]) {
  const cfg = resolveConfig({ model: 'mlp-small', batchSize: S * 4, shards: S, seed: 5 }, mnist);
  const t = new LocalTrainer(cfg, mnist);
  for (let i = 0; i < 4; i++) t.runPhase(); // away from the initial weights
  for (const phase of ['D', 'G'] as const) {
    while (t.state.nextKey().phase !== phase) t.runPhase();
    const plan = t.state.planNext();
    t.syncReplica();
    const gs = plan.shards.map((s) => t.replica.computeShard(phase, s).gradient);
    t.state.abandon(plan);
    const tree = averageShardGradients(gs);
    const reps = 5;
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) averageShardGradients(gs);
    const ms = (performance.now() - t0) / reps;
    const seq = sequential(gs);
    const e1 = errors(gs, tree);
    const e2 = errors(gs, seq);
    const ns = (ms * 1e6) / (gs[0]!.length * (S - 1 || 1));
    console.log(`| ${S} | ${phase} | ${gs[0]!.length} | ${e1.maxRel.toExponential(2)} | ${e1.meanRel.toExponential(2)} | ${e2.maxRel.toExponential(2)} | ${e2.meanRel.toExponential(2)} | ${ms.toFixed(1)} | ${ns.toFixed(2)} |`);
    if (phase === 'D') {
      for (const wire of ['fp32', 'fp16'] as const) {
        const frame = encode({ type: 'result', taskId: 1, iteration: 1, phase, dStep: 0, firstShard: 0, count: 1, gradient: gs[0]!, stats: { loss: 0.6, dReal: 0.5, dFake: 0.5 }, computeMs: 3 }, { wire }).byteLength;
        for (const workers of [1, 2]) {
          const blocks = gradientsPerPhase(S, workers);
          bytesRows.push(`| ${S} | ${workers} | ${wire} | ${blocks} | ${((blocks * frame) / 1e6).toFixed(2)} | ${((S * frame) / 1e6).toFixed(2)} |`);
        }
      }
    }
  }
  t.dispose();
}
console.log('\n| S | workers | wire | result frames per phase | MB up per D phase (blocks) | MB up per D phase (before: one per shard) |');
console.log('|---|---|---|---|---|---|');
for (const r of bytesRows) console.log(r);
