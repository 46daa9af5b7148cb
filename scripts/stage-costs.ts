/**
 * What one iteration of a coordinator + 1 worker costs, stage by stage, in one process (no
 * sockets, no scheduling: the CPU work of each stage on its own). mnist, mlp-small, batch 64,
 * default shards (4), wasm, --wire fp32, one D-step. For each phase:
 *
 *   coordinator plan        TrainingState.planNext (draw rows, seed shards)
 *   coordinator task encode codec.encode of the task (rows as one-byte codes)
 *   worker task decode      codec.decode + validation + palette look-up
 *   worker compute          BlockAccumulator.compute x S (GanReplica.computeShardTensors)
 *   worker tree sum         BlockAccumulator.take: the block's sum on the backend, read back once
 *   worker result encode    ReusableFrame.encode of the block's result
 *   coordinator decode      codec.decode + validation (finite check) of the result
 *   coordinator apply       TrainingState.applyBlocks (tree average + Adam)
 *   coordinator encode      ReusableFrame.encode of the changed net's weights
 *   worker weights decode   codec.decode + validation of the weights
 *   worker load             GanReplica.setWeights of the changed net
 *
 * Medians over --reps iterations after a warm-up. For comparison, gan-train's iteration (plan,
 * S shards per phase, apply) is timed in the same process, alternating with the stages.
 *
 *     npx tsx scripts/stage-costs.ts [reps]
 */
import { initBackend } from '../shared/backend.ts';
import { decode, encode, ReusableFrame } from '../shared/codec.ts';
import { BlockAccumulator } from '../shared/block-accumulator.ts';
import { resolveConfig } from '../shared/config.ts';
import { codesOfRows, rowCodesOf } from '../shared/data/row-codes.ts';
import { sampleDim } from '../shared/config.ts';
import type { Net, ResultMsg, TaskMsg, WeightsMsg } from '../shared/protocol.ts';
import { GanReplica, type ShardInput } from '../shared/replica.ts';
import { blockKey, planBlocks } from '../shared/tree-sum.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { TrainingState } from '../trainer/training-state.ts';
import { rowsFromCodes } from '../shared/data/row-codes.ts';

await initBackend('wasm');
const reps = Number(process.argv[2] ?? 15);
const source = loadDataSource('mnist');
const config = resolveConfig({ model: 'mlp-small', batchSize: 64, seed: 1 }, source);
const S = config.train.shards;
const replica = new GanReplica(config);
const state = new TrainingState(config, source, replica.layout);
const single = new LocalTrainer(config, source);
if (source.kind !== 'finite') throw new Error('mnist is finite');
const codes = rowCodesOf(source.train)!;
const dim = sampleDim(config.model);
const limits = { maxFrameBytes: 1 << 30, maxFloats: 1 << 28 };
replica.setWeights('G', state.weights.G);
replica.setWeights('D', state.weights.D);

// As on the coordinator and a Node worker whose sockets have sent the previous frame.
const resultFrames = new ReusableFrame();
const weightFrames = { G: new ReusableFrame(), D: new ReusableFrame() };
const samples = new Map<string, number[]>();
const time = <T>(name: string, fn: () => T): T => {
  const t0 = performance.now();
  const out = fn();
  const ms = performance.now() - t0;
  if (!samples.has(name)) samples.set(name, []);
  samples.get(name)!.push(ms);
  return out;
};

function phase(): void {
  const plan = time(`coord plan`, () => state.planNext());
  const net: Net = plan.phase;
  const shards = plan.shards.map((s) => ({ shardId: s.shardId, seed: s.seed, rows: s.rows, ...(s.realRows ? { realCodes: codesOfRows(codes, dim, s.realRows) } : {}) }));
  const blocks = planBlocks(plan.shards.map((s) => s.shardId), S);
  const taskFrame = time(`coord task encode`, () => encode({ type: 'task', taskId: 1, iteration: plan.iteration, phase: net, dStep: plan.dStep, gVersion: state.versions.G, dVersion: state.versions.D, shards, shardCount: S, blocks }));
  const task = time(`worker task decode`, () => {
    const r = decode(taskFrame, limits);
    if (!r.ok) throw new Error(r.reason);
    const t = r.msg as TaskMsg;
    return t.shards.map((s): ShardInput => ({ shardId: s.shardId, seed: s.seed, rows: s.rows, ...(s.realCodes ? { real: rowsFromCodes(new Float32Array(256).map((_, i) => i / 255), s.realCodes) as Float32Array } : {}) }));
  });
  // Compute on the planned (exact) rows, so the result is the real one.
  void task;
  const block = blocks[0]!;
  const acc = new BlockAccumulator(replica, S, block, null);
  time(`worker compute ${net}`, () => plan.shards.forEach((s) => acc.compute(net, s)));
  const { gradient, stats } = time(`worker tree sum`, () => acc.take());
  const resultFrame = time(`worker result encode`, () => resultFrames.encode({ type: 'result', taskId: 1, iteration: plan.iteration, phase: net, dStep: plan.dStep, firstShard: block.first, count: block.count, gradient, stats, computeMs: 1 }, {}, true));
  const res = time(`coord result decode`, () => {
    const r = decode(resultFrame, limits);
    if (!r.ok) throw new Error(r.reason);
    return r.msg as ResultMsg;
  });
  time(`coord apply ${net}`, () => state.applyBlocks(plan, new Map([[blockKey(block.first, block.count), { gradient: res.gradient, ...res.stats }]])));
  const wFrame = time(`coord weights encode`, () => weightFrames[net].encode({ type: 'weights', net, version: state.versions[net], weights: state.weights[net] }, {}, true));
  const w = time(`worker weights decode`, () => {
    const r = decode(wFrame, limits);
    if (!r.ok) throw new Error(r.reason);
    return r.msg as WeightsMsg;
  });
  time(`worker load ${net}`, () => replica.setWeights(net, w.weights));
}

for (let i = 0; i < 3; i++) {
  phase();
  phase();
  single.runPhase();
  single.runPhase();
}
samples.clear();
for (let i = 0; i < reps; i++) {
  phase();
  phase();
  time('gan-train iteration', () => {
    single.runPhase();
    single.runPhase();
  });
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
let total = 0;
console.log(`| stage | ms (median of ${reps}) |`);
console.log('| --- | ---: |');
for (const [name, xs] of samples) {
  console.log(`| ${name} | ${med(xs).toFixed(2)} |`);
  if (!name.startsWith('gan-train')) total += med(xs);
}
console.log(`| sum of the stages | ${total.toFixed(2)} |`);
