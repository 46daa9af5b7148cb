/**
 * --wire fp16 end to end, with real gan-train / gan-coordinator / gan-worker processes: weights
 * and gradients travel as float16, and the invariants hold in fp16 too because the rounding is
 * part of the training config (gan-train applies it where the wire would be):
 *  - gan-train --wire fp16 gives the same weights hash as a coordinator --wire fp16 with 1 and
 *    with 2 workers (and a different one from fp32: the rounding is real);
 *  - the coordinator's byte counters show about half the bytes of an fp32 run;
 *  - a worker that does not speak fp16 is refused with WIRE_UNSUPPORTED (close 4006, exit 2);
 *  - an fp16 run resumed from its checkpoint (the wire comes from the checkpoint) ends with the
 *    uninterrupted hash, and --wire fp32 on that resume is a CONFIG_CONFLICT.
 * ring8 + mlp2d, --backend wasm everywhere, 40 iterations of 8 shards (~3 ms per shard).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findResumeCheckpoint } from '../trainer/checkpoint.ts';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend } from '../shared/backend.ts';
import { parseFlags } from '../shared/cli.ts';
import { GAN_FLAGS, ganOptionsFrom } from '../trainer/gan-flags.ts';
import { WS_CLOSE } from '../shared/protocol.ts';
import { mergeResumeConfig, resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { roundTripHalf } from '../shared/float16.ts';
import { createLogger, tapLog, type LogRecord } from '../shared/log.ts';
import { DEFAULT_BACKOFF, Worker } from '../worker/worker.ts';
import {
  cleanup,
  eventsOf,
  makeTempDir,
  newSite,
  spawnCli,
  startSiteCoordinator,
  startSiteWorker,
  waitForEvent,
  waitForExit,
  waitUntil,
  type LogEvent,
  type Proc,
} from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const START_MS = 30_000;
const RUN_MS = 60_000;
const TEST_MS = 90_000;
const N = 40;
const TRAIN = ['--dataset', 'ring8', '--preset', 'none', '--iterations', String(N), '--batch-size', '64', '--shards', '8', '--backend', 'wasm', '--sample-every', '0'];
const FP16 = ['--wire', 'fp16'];
const CLEAN_EXIT = { code: 0, signal: null };

/** run_finished after N iterations and a clean exit of the coordinator (and of workers that do not --stay). */
async function finished(c: Proc, workers: Proc[], iterations = N): Promise<LogEvent> {
  const done = await waitForEvent(c, 'run_finished', RUN_MS);
  expect(done.stopped).toBe(false);
  expect(done.iterations).toBe(iterations);
  expect(await waitForExit(c, 15_000)).toEqual(CLEAN_EXIT);
  for (const w of workers) expect(await waitForExit(w, 15_000), w.name).toEqual(CLEAN_EXIT);
  return done;
}

/** The last progress line: cumulative MB sent to and received from workers. */
function megabytes(c: Proc): { sent: number; received: number } {
  const last = eventsOf(c, 'progress').at(-1)!;
  return { sent: Number(last.mbSent), received: Number(last.mbReceived) };
}

/** gan-train --wire fp16's hash; started before the tests and awaited where needed, so it overlaps their start-up. */
let fp16Hash: Promise<string>;

async function trainReference(): Promise<string> {
  const runDir = makeTempDir('gan-fp16-train-');
  const train = spawnCli('train', [...TRAIN, ...FP16, '--run-dir', runDir], { name: 'gan-train --wire fp16' });
  const done = await waitForEvent(train, 'run_finished', RUN_MS);
  expect(await waitForExit(train, 15_000)).toEqual(CLEAN_EXIT);
  expect(done.iterations).toBe(N);
  expect(JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8')).train.wire).toBe('fp16');
  const hash = String(done.weightsHash);
  expect(hash).toMatch(/^[0-9a-f]{64}$/);
  return hash;
}

beforeAll(() => {
  fp16Hash = trainReference();
  // Awaited by the tests; this only keeps an early failure from being reported as unhandled.
  fp16Hash.catch(() => {});
}, HEAVY_TEST_MS);

afterAll(cleanup, HEAVY_TEST_MS);

describe('--wire in the config and the single-process trainer', () => {
  it('is a validated training flag that only appears in configs when it is fp16', () => {
    const ring8 = loadDataSource('ring8');
    const opts = (argv: string[]) => ganOptionsFrom(parseFlags(['--dataset', 'ring8', '--preset', 'none', ...argv], GAN_FLAGS));
    expect(resolveConfig(opts(['--wire', 'fp16']), ring8).train.wire).toBe('fp16');
    expect(resolveConfig(opts(['--wire', 'fp32']), ring8).train).not.toHaveProperty('wire');
    expect(resolveConfig(opts([]), ring8).train).not.toHaveProperty('wire');
    expect(() => resolveConfig(opts(['--wire', 'bf16']), ring8)).toThrow(/--wire must be one of fp32, fp16; got 'bf16'/);
  }, HEAVY_TEST_MS);

  it('gan-train --wire fp16 computes on fp16-rounded weights and applies fp16-rounded gradients; master weights stay float32', async () => {
    await initBackend('wasm');
    const source = loadDataSource('ring8');
    const config = resolveConfig({ dataset: 'ring8', batchSize: 16, shards: 2, iterations: 3, wire: 'fp16' }, source);
    const trainer = new LocalTrainer(config, source);
    // The same phases by hand, with the rounding a worker and the coordinator's codec apply.
    const { wire: _wire, ...fp32Train } = config.train;
    const byHand = new LocalTrainer({ ...config, train: fp32Train }, source);
    const plain = new LocalTrainer({ ...config, train: fp32Train }, source);
    try {
      while (!trainer.state.finished) {
        trainer.runPhase();
        plain.runPhase();
        const plan = byHand.state.planNext();
        byHand.replica.setWeights('G', roundTripHalf(byHand.state.weights.G));
        byHand.replica.setWeights('D', roundTripHalf(byHand.state.weights.D));
        const results = plan.shards.map((s) => {
          const r = byHand.replica.computeShard(plan.phase, s);
          return { ...r, gradient: roundTripHalf(r.gradient) };
        });
        // The sum tree's root for S = 2 (shared/tree-sum.ts): the fp16 rounding of the float32
        // sum of the two rounded leaves, as a worker holding both shards sends it through the wire.
        const [a, b] = results as [(typeof results)[0], (typeof results)[0]];
        const root = roundTripHalf(Float32Array.from(a.gradient, (v, i) => v + b.gradient[i]!));
        byHand.state.applyBlocks(plan, new Map([['0+2', { gradient: root, loss: a.loss + b.loss, dReal: a.dReal + b.dReal, dFake: a.dFake + b.dFake }]]));
      }
      expect(trainer.weightsHash()).toBe(byHand.weightsHash());
      expect(trainer.weightsHash()).not.toBe(plain.weightsHash());
      // The master weights are not fp16 values, and sampling / export see them, not the rounded copy.
      expect(roundTripHalf(trainer.state.weights.D)).not.toEqual(trainer.state.weights.D);
      trainer.syncReplica();
      expect(trainer.replica.getWeights('D')).toEqual(trainer.state.weights.D);
      expect(trainer.replica.getWeights('G')).toEqual(trainer.state.weights.G);
    } finally {
      for (const t of [trainer, byHand, plain]) t.dispose();
    }
  }, HEAVY_TEST_MS);
});

describe('--wire fp16 (real processes)', () => {
  // Here, not file-wide: the unit tests above must not kill the reference gan-train started in beforeAll.
  afterEach(cleanup, HEAVY_TEST_MS);

  it(
    "gan-train's hash with 1 and with 2 workers, about half the bytes of fp32, and a worker without fp16 is refused",
    async () => {
      const [one, two, ref32] = await Promise.all([newSite('gan-fp16-'), newSite('gan-fp16-'), newSite('gan-fp16-')]);
      const c1 = startSiteCoordinator(one, [...TRAIN, ...FP16], { name: 'coordinator fp16 x1' });
      const c2 = startSiteCoordinator(two, [...TRAIN, ...FP16], { name: 'coordinator fp16 x2' });
      const c32 = startSiteCoordinator(ref32, TRAIN, { name: 'coordinator fp32 x1' });
      await Promise.all([c1, c2, c32].map((c) => waitForEvent(c, 'listening', START_MS)));

      // Before anyone else joins c2: an older worker that only speaks fp32 (in process, so its
      // exit code and refusal are visible) is turned away at hello.
      const records: LogRecord[] = [];
      const log = createLogger({ name: 'worker', stdout: false, level: 'info' });
      tapLog(log, (r) => records.push(r));
      const old = new Worker({ url: two.url, token: null, workerId: 'old-fp32', backend: 'wasm', log, stay: false, maxRetries: 3, backoff: DEFAULT_BACKOFF, idleTimeoutMs: 30_000, testDelayMs: 0, wire: ['fp32'] });
      expect(await old.run()).toBe(2);
      expect(old.fatal?.code).toBe('WIRE_UNSUPPORTED');
      expect(old.fatal?.reason).toBe('this run sends weights and gradients as --wire fp16, and worker old-fp32 only speaks fp32: upgrade the worker, or start a run with --wire fp32');
      const refused = records.find((r) => r.event === 'refused');
      expect(refused).toMatchObject({ code: 'WIRE_UNSUPPORTED' });
      expect(records.some((r) => r.event === 'welcomed')).toBe(false);
      const warning = await waitForEvent(c2, (e) => e.event === 'warning' && e.code === 'WIRE_UNSUPPORTED', 5_000);
      expect(String(warning.worker)).toContain('old-fp32');
      expect(WS_CLOSE.unsupported).toBe(4006);

      const w1 = startSiteWorker(one, 'solo');
      const w2 = ['a', 'b'].map((id) => startSiteWorker(two, `duo-${id}`));
      const w32 = startSiteWorker(ref32, 'solo-fp32');
      const [d1, d2, d32, reference] = await Promise.all([finished(c1, [w1]), finished(c2, w2), finished(c32, [w32]), fp16Hash]);
      expect(d1.weightsHash).toBe(reference);
      expect(d2.weightsHash).toBe(reference);
      // fp16 really rounds: the fp32 run of the same flags ends elsewhere.
      expect(d32.weightsHash).not.toBe(reference);

      for (const w of [w1, ...w2]) expect(eventsOf(w, 'welcomed')[0]?.wire, w.name).toBe('fp16');
      expect(eventsOf(w32, 'welcomed')[0]?.wire).toBe('fp32');
      expect(eventsOf(c2, 'worker_joined').map((e) => e.worker).sort()).toEqual(['duo-a', 'duo-b']);
      for (const w of w2) expect(Number(eventsOf(w, 'worker_finished')[0]?.shardsDone), w.name).toBeGreaterThan(0);
      expect((eventsOf(c1, 'run_started')[0]?.config as { train: { wire?: string } }).train.wire).toBe('fp16');
      expect((eventsOf(c32, 'run_started')[0]?.config as { train: { wire?: string } }).train).not.toHaveProperty('wire');

      // Same run, same single worker: the weights down and the gradients up take half the bytes.
      const mb16 = megabytes(c1);
      const mb32 = megabytes(c32);
      const sentRatio = mb16.sent / mb32.sent;
      const receivedRatio = mb16.received / mb32.received;
      console.log(
        `[wire-fp16] per iteration, 1 worker: sent ${((mb32.sent / N) * 1000).toFixed(1)} -> ${((mb16.sent / N) * 1000).toFixed(1)} kB (x${sentRatio.toFixed(3)}), ` +
          `received ${((mb32.received / N) * 1000).toFixed(1)} -> ${((mb16.received / N) * 1000).toFixed(1)} kB (x${receivedRatio.toFixed(3)})`,
      );
      expect(receivedRatio).toBeGreaterThan(0.45);
      expect(receivedRatio).toBeLessThan(0.56);
      expect(sentRatio).toBeGreaterThan(0.45);
      expect(sentRatio).toBeLessThan(0.6);
    },
    TEST_MS,
  );

  it(
    'resumes an fp16 run from its checkpoint to the uninterrupted hash; --wire fp32 on resume is a CONFIG_CONFLICT',
    async () => {
      const site = await newSite('gan-fp16-');
      const c1 = startSiteCoordinator(site, [...TRAIN, ...FP16, '--iterations', String(N / 2), '--checkpoint-every', '0'], { name: 'coordinator 1' });
      await waitForEvent(c1, 'listening', START_MS);
      const w = startSiteWorker(site, 'stayer', { stay: true });
      await finished(c1, [], N / 2);

      // The wire format is in the checkpoint; another one on resume is refused, in process and by the CLI.
      const saved = findResumeCheckpoint(site.runDir).loaded.manifest.config;
      expect(saved.train.wire).toBe('fp16');
      expect(mergeResumeConfig(saved, {}).config.train.wire).toBe('fp16');
      expect(mergeResumeConfig(saved, { wire: 'fp16' }).changes).toEqual([]);
      expect(() => mergeResumeConfig(saved, { wire: 'fp32' })).toThrow(/--wire fp32 conflicts with the checkpoint, which was trained with fp16/);
      const { wire: _wire, ...fp32Train } = saved.train;
      expect(() => mergeResumeConfig({ ...saved, train: fp32Train }, { wire: 'fp16' })).toThrow(/--wire fp16 conflicts .* fp32/);
      // The refused resume fails before binding, so it runs beside the real one.
      const conflict = startSiteCoordinator(site, ['--resume', '--wire', 'fp32', '--backend', 'wasm'], { name: 'coordinator --wire fp32' });

      // No --wire: the resumed run keeps fp16 from the checkpoint, and the --stay worker rides through.
      const c2 = startSiteCoordinator(site, ['--resume', '--iterations', String(N), '--backend', 'wasm', '--sample-every', '0'], { name: 'coordinator 2' });
      expect(await waitForExit(conflict, START_MS)).toEqual({ code: 2, signal: null });
      expect(conflict.stderr.join('\n')).toContain('error [CONFIG_CONFLICT]: --wire fp32 conflicts');
      expect(eventsOf(conflict, 'listening')).toEqual([]);
      const resumed = await waitForEvent(c2, 'resumed', START_MS);
      expect(resumed).toMatchObject({ iteration: N / 2, changes: [`iterations ${N / 2} -> ${N}`] });
      expect((eventsOf(c2, 'run_started')[0]?.config as { train: { wire?: string } }).train.wire).toBe('fp16');
      const done = await finished(c2, []);
      expect(done.weightsHash).toBe(await fp16Hash);
      await waitUntil(w, () => (eventsOf(w, 'welcomed').length >= 2 ? true : undefined), 15_000, 'a second welcome');
      expect(eventsOf(w, 'welcomed').map((e) => e.wire)).toEqual(['fp16', 'fp16']);
    },
    TEST_MS,
  );
});
