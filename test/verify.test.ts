/**
 * --verify-fraction: PhaseRun's two-agreeing-workers rule without sockets, the seeded choice of
 * verified shards, and end to end over real processes: a worker returning finite but wrong
 * gradients (GAN_TEST_CORRUPT_GRADIENT) is caught, banned (4003, worker_banned) and cannot rejoin,
 * and the run still ends on the single-process hash; with one worker the coordinator says
 * VERIFY_NEEDS_TWO_WORKERS and waits (applies nothing unverified) until a second joins.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PhaseRun, sameResult, type Assignee } from '../coordinator/phase-run.ts';
import { selectVerifiedShards, parseVerifyFraction } from '../coordinator/verify.ts';
import type { ShardResult } from '../shared/replica.ts';
import type { PhasePlan } from '../trainer/training-state.ts';
import { RING8_FLAGS, referenceHash } from './helpers/inprocess.ts';
import { cleanup, eventsOf, makeTempDir, readLog, sleep, spawnCli, waitForEvent, waitForExit, type Proc } from './helpers/processes.ts';

interface W extends Assignee {
  workerId: string;
  backend: string;
  msPerShard: number;
}
let nextSession = 1;
const w = (workerId: string, backend = 'wasm', msPerShard = 10): W => ({ sessionId: nextSession++, workerId, backend, msPerShard });

function plan(shards: number): PhasePlan {
  return {
    iteration: 5,
    phase: 'D',
    dStep: 0,
    shards: Array.from({ length: shards }, (_, s) => ({ shardId: s, seed: 100 + s, rows: 8 })),
    samplerBefore: { epoch: 0, cursor: 0, batches: 0 },
  };
}
const POLICY = { factor: 3, minMs: 1_000_000 };
/** The true result of a shard, and a wrong one (finite, right size). */
const good = (id: number): ShardResult => ({ gradient: new Float32Array([id, 1, 2]), loss: id, dReal: 0.5, dFake: 0.25 });
const bad = (id: number): ShardResult => ({ gradient: new Float32Array([id + 0.5, 1, 2]), loss: id, dReal: 0.5, dFake: 0.25 });

/** Every shard -> the set of worker ids it was handed to. */
function holdersOf(as: { worker: W; shardIds: number[] }[]): Map<number, string[]> {
  const m = new Map<number, string[]>();
  for (const a of as) for (const id of a.shardIds) m.set(id, [...(m.get(id) ?? []), a.worker.workerId]);
  return m;
}

describe('PhaseRun with verified shards', () => {
  it('hands every verified shard to two different workers at once, the others to one', () => {
    const [a, b, c] = [w('a'), w('b'), w('c')];
    const run = new PhaseRun<W>(plan(6), POLICY, [0, 2, 4]);
    const as = [...run.assignUnassigned([a, b, c], 0), ...run.assignVerification([a, b, c], 0)];
    const h = holdersOf(as);
    for (const id of [0, 2, 4]) {
      expect(h.get(id)!.length, `shard ${id}`).toBe(2);
      expect(new Set(h.get(id)).size).toBe(2);
    }
    for (const id of [1, 3, 5]) expect(h.get(id)!.length, `shard ${id}`).toBe(1);
    expect(as.filter((x) => x.verify).flatMap((x) => x.shardIds).sort()).toEqual([0, 2, 4]);
    // Nothing more to hand out until results come in.
    expect(run.assignVerification([a, b, c], 0)).toEqual([]);
  });

  it('a verified shard is final only when a second worker agrees bit for bit', () => {
    const [a, b] = [w('a'), w('b')];
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([a], 0);
    run.assignVerification([a, b], 0);
    expect(run.accept(a, 0, good(0))).toBe('pending');
    expect(run.done).toBe(false);
    expect(run.accept(a, 0, good(0))).toBe('duplicate'); // the same worker twice is not two opinions
    expect(run.accept(b, 0, good(0))).toBe('accepted');
    expect(run.done).toBe(true);
    expect(run.takeConvicted()).toEqual([]);
    expect(sameResult(run.ordered()[0], good(0))).toBe(true);
  });

  it('a reconnected worker (same workerId, new session) is never its own second opinion', () => {
    const a1 = w('a');
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([a1], 0);
    expect(run.accept(a1, 0, good(0))).toBe('pending');
    run.release(a1);
    const a2 = w('a'); // same id, new connection
    expect(run.assignVerification([a2], 0)).toEqual([]);
    expect(run.awaitingOpinion().shards).toEqual([0]);
    const b = w('b');
    const as = run.assignVerification([a2, b], 0);
    expect(as.map((x) => [x.worker.workerId, x.shardIds])).toEqual([['b', [0]]]);
  });

  it('on a disagreement a third worker decides; the dissenter is convicted and the agreed result kept', () => {
    const [a, liar, c] = [w('a'), w('liar'), w('c')];
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([a], 0);
    expect(run.assignVerification([liar, c], 0).map((x) => x.worker.workerId)).toEqual(['liar']);
    expect(run.accept(a, 0, good(0))).toBe('pending');
    expect(run.accept(liar, 0, bad(0))).toBe('disputed');
    expect(run.done).toBe(false);
    // The tie-breaker goes to the one worker that has not seen the shard.
    expect(run.assignVerification([a, liar, c], 0).map((x) => [x.worker.workerId, x.shardIds])).toEqual([['c', [0]]]);
    expect(run.accept(c, 0, good(0))).toBe('accepted');
    expect(run.takeConvicted().map((x) => x.workerId)).toEqual(['liar']);
    expect(run.takeConvicted()).toEqual([]);
    expect(sameResult(run.ordered()[0], good(0))).toBe(true);
  });

  it("the liar can be first too: its result never counts, even when it arrives before the honest ones", () => {
    const [liar, b, c] = [w('liar'), w('b'), w('c')];
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([liar], 0);
    run.assignVerification([liar, b], 0);
    expect(run.accept(liar, 0, bad(0))).toBe('pending');
    expect(run.accept(b, 0, good(0))).toBe('disputed');
    // With only the two of them connected nobody can decide: the shard waits, and says so.
    expect(run.assignVerification([liar, b], 0)).toEqual([]);
    expect(run.awaitingOpinion()).toEqual({ shards: [0], disputed: true, backend: 'wasm' });
    run.assignVerification([liar, b, c], 0);
    expect(run.accept(c, 0, good(0))).toBe('accepted');
    expect(run.takeConvicted().map((x) => x.workerId)).toEqual(['liar']);
    expect(sameResult(run.ordered()[0], good(0))).toBe(true);
  });

  it('a late result that differs from a settled verified shard convicts its sender', () => {
    const [a, b, liar] = [w('a'), w('b'), w('liar')];
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([a], 0);
    run.assignVerification([b], 0);
    run.duplicateOverdue([liar], 2_000_000); // a straggler duplicate to a third worker
    run.accept(a, 0, good(0));
    expect(run.accept(b, 0, good(0))).toBe('accepted');
    expect(run.accept(liar, 0, bad(0))).toBe('wrong');
    expect(run.takeConvicted().map((x) => x.workerId)).toEqual(['liar']);
  });

  it("discard() drops everything a convicted worker gave this phase: its unverified results are recomputed", () => {
    const [a, liar, c] = [w('a'), w('liar'), w('c')];
    const run = new PhaseRun<W>(plan(4), POLICY, [0]);
    // liar computes shards 2, 3 (unverified) and is the second opinion on 0; a holds 0, 1.
    run.assignUnassigned([a, liar], 0);
    run.assignVerification([a, liar], 0);
    expect(run.accept(liar, 2, bad(2))).toBe('accepted');
    expect(run.accept(liar, 3, bad(3))).toBe('accepted');
    expect(run.accept(a, 1, good(1))).toBe('accepted');
    expect(run.accept(a, 0, good(0))).toBe('pending');
    expect(run.accept(liar, 0, bad(0))).toBe('disputed');
    run.assignVerification([a, liar, c], 0);
    expect(run.accept(c, 0, good(0))).toBe('accepted');
    const [convicted] = run.takeConvicted();
    expect(convicted).toBe(liar);
    expect(run.done).toBe(true); // every shard has *a* result...
    expect(run.discard(liar)).toEqual([2, 3]); // ...but the liar's are dropped
    expect(run.done).toBe(false);
    expect(run.outstanding).toBe(2);
    const again = run.assignUnassigned([a, c], 0);
    expect(again.flatMap((x) => x.shardIds).sort()).toEqual([2, 3]);
    for (const x of again) for (const id of x.shardIds) expect(run.accept(x.worker, id, good(id))).toBe('accepted');
    expect(run.done).toBe(true);
    expect(run.ordered().every((r, i) => sameResult(r, good(i)))).toBe(true);
  });

  it('discarding one of the two agreeing workers reopens a verified shard; it needs a new second opinion', () => {
    const [a, b, c] = [w('a'), w('b'), w('c')];
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([a], 0);
    run.assignVerification([b], 0);
    run.accept(a, 0, good(0));
    expect(run.accept(b, 0, good(0))).toBe('accepted');
    expect(run.discard(b)).toEqual([0]); // b was caught lying elsewhere
    expect(run.done).toBe(false);
    expect(run.assignVerification([a, b, c], 0).map((x) => x.worker.workerId)).toEqual(['c']);
    expect(run.accept(c, 0, good(0))).toBe('accepted');
    expect(run.done).toBe(true);
  });

  it('with one worker verified shards wait (awaitingOpinion) while unverified ones complete', () => {
    const solo = w('solo');
    const run = new PhaseRun<W>(plan(4), POLICY, [1, 3]);
    run.assignUnassigned([solo], 0);
    expect(run.assignVerification([solo], 0)).toEqual([]);
    for (let id = 0; id < 4; id++) run.accept(solo, id, good(id));
    expect(run.outstanding).toBe(2);
    expect(run.awaitingOpinion()).toEqual({ shards: [1, 3], disputed: false, backend: 'wasm' });
    const other = w('other');
    expect(run.assignVerification([solo, other], 0).map((x) => [x.worker.workerId, x.shardIds])).toEqual([['other', [1, 3]]]);
    expect(run.awaitingOpinion().shards).toEqual([]);
    run.accept(other, 1, good(1));
    run.accept(other, 3, good(3));
    expect(run.done).toBe(true);
  });

  it('compares only results from the same backend (mixed backends are not bit-identical)', () => {
    const [a, native, b] = [w('a', 'wasm'), w('n', 'tensorflow'), w('b', 'wasm')];
    const run = new PhaseRun<W>(plan(1), POLICY, [0]);
    run.assignUnassigned([a], 0);
    expect(run.assignVerification([native], 0)).toEqual([]);
    expect(run.awaitingOpinion().backend).toBe('wasm');
    run.assignVerification([native, b], 0);
    run.accept(a, 0, good(0));
    expect(run.accept(b, 0, good(0))).toBe('accepted');
  });

  it('unverified phases behave as before: nothing is verified, nothing waits', () => {
    const [a, b] = [w('a'), w('b')];
    const run = new PhaseRun<W>(plan(2), POLICY);
    run.assignUnassigned([a, b], 0);
    expect(run.assignVerification([a, b], 0)).toEqual([]);
    expect(run.accept(a, 0, bad(0))).toBe('accepted');
    expect(run.accept(b, 1, good(1))).toBe('accepted');
    expect(run.awaitingOpinion().shards).toEqual([]);
    expect(run.done).toBe(true);
  });
});

describe('which shards are verified', () => {
  const key = { iteration: 7, phase: 'G' as const, dStep: 0 };
  it('is reproducible from the seed and the phase, and respects the fraction', () => {
    expect(selectVerifiedShards(1, key, 64, 0.3)).toEqual(selectVerifiedShards(1, key, 64, 0.3));
    expect(selectVerifiedShards(1, key, 8, 0)).toEqual([]);
    expect(selectVerifiedShards(1, key, 8, 1)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(selectVerifiedShards(2, key, 64, 0.5)).not.toEqual(selectVerifiedShards(1, key, 64, 0.5));
    expect(selectVerifiedShards(1, { ...key, phase: 'D' }, 64, 0.5)).not.toEqual(selectVerifiedShards(1, key, 64, 0.5));
    let n = 0;
    for (let it = 0; it < 200; it++) n += selectVerifiedShards(1, { ...key, iteration: it }, 8, 0.25).length;
    expect(n / 1600).toBeGreaterThan(0.2);
    expect(n / 1600).toBeLessThan(0.3);
  });

  it('--verify-fraction must be in [0, 1]', () => {
    expect(parseVerifyFraction(undefined)).toBe(0);
    expect(parseVerifyFraction('0.5')).toBe(0.5);
    expect(() => parseVerifyFraction('1.5')).toThrow(/0 to 1/);
    expect(() => parseVerifyFraction('-0.1')).toThrow(/0 to 1/);
  });
});

// ------------------------------------------------------------------------------------------ e2e

const START_MS = 30_000;
const RUN_MS = 60_000;
const TEST_TIMEOUT = 90_000;

interface Coord {
  proc: Proc;
  runDir: string;
  url: string;
  port: number;
}

async function startCoordinator(extra: string[]): Promise<Coord> {
  const runDir = makeTempDir('gan-verify-');
  const proc = spawnCli('coordinator', [...RING8_FLAGS, '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--status-interval', '0.5', ...extra], { name: 'coordinator' });
  const listening = await waitForEvent(proc, 'listening', START_MS);
  const port = Number(listening.port);
  return { proc, runDir, port, url: `ws://127.0.0.1:${port}` };
}

const startWorker = (url: string, id: string, env: Record<string, string> = {}) =>
  spawnCli('worker', ['--coordinator', url, '--id', id, '--backend', 'wasm'], { env, name: `worker ${id}` });

let reference = '';
beforeAll(async () => {
  reference = await referenceHash(RING8_FLAGS);
}, TEST_TIMEOUT);
afterEach(cleanup);
afterAll(cleanup);

describe('--verify-fraction end to end', () => {
  it(
    'bans a worker returning finite but wrong gradients (4003, worker_banned), keeps it out, and ends on the reference hash',
    async () => {
      const c = await startCoordinator(['--verify-fraction', '1']);
      // The corrupt worker joins first: alone it already computes opinions on the first phase's
      // shards (nothing is applied until a second worker joins), so it is certain to be in the
      // run. Joining last, it could miss the whole 40-iteration run (about 3 s) while its first
      // shard still warms up.
      const corrupt = startWorker(c.url, 'corrupt', { GAN_TEST_CORRUPT_GRADIENT: '0.001' });
      await waitForEvent(corrupt, 'welcomed', START_MS);
      const honest = ['a', 'b'].map((id) => startWorker(c.url, `honest-${id}`));

      const banned = await waitForEvent(c.proc, 'worker_banned', RUN_MS);
      expect(banned.worker).toBe('corrupt');
      expect(banned.code).toBe('WRONG_RESULT');
      expect(await waitForExit(corrupt, 15_000)).toEqual({ code: 2, signal: null });
      const refused = eventsOf(corrupt, 'refused');
      expect(refused.map((e) => e.code)).toEqual(['BANNED']);

      // The same worker id cannot come back (it is refused at the handshake, still 4003).
      const again = startWorker(c.url, 'corrupt', { GAN_TEST_CORRUPT_GRADIENT: '0.001' });
      expect(await waitForExit(again, START_MS)).toEqual({ code: 2, signal: null });
      expect(eventsOf(again, 'refused').map((e) => e.code)).toEqual(['BANNED']);
      expect(eventsOf(again, 'welcomed')).toEqual([]);

      const done = await waitForEvent(c.proc, 'run_finished', RUN_MS);
      expect(done.iterations).toBe(40);
      expect(done.weightsHash).toBe(reference);
      expect(await waitForExit(c.proc, 15_000)).toEqual({ code: 0, signal: null });
      for (const h of honest) expect(await waitForExit(h, 15_000), h.name).toEqual({ code: 0, signal: null });

      const log = readLog(c.runDir);
      expect(eventsOf(log, 'training')[0].verifyFraction).toBe(1);
      expect(eventsOf(log, 'worker_banned').map((e) => e.worker)).toEqual(['corrupt']);
      expect(eventsOf(log, (e) => e.code === 'BANNED').length).toBeGreaterThanOrEqual(2); // the ban + the refused rejoin
      // Nobody honest was ever suspected.
      const mismatches = eventsOf(log, (e) => e.code === 'VERIFY_MISMATCH');
      expect(mismatches.length).toBeGreaterThan(0);
      for (const m of mismatches) expect(m.workers as string[]).toContain('corrupt');
      const joined = eventsOf(log, 'worker_joined').map((e) => e.worker);
      expect(joined.filter((id) => id === 'corrupt')).toHaveLength(1);
      const list = JSON.parse(readFileSync(join(c.runDir, 'banned.json'), 'utf8')) as { workerId: string }[];
      expect(list.map((b) => b.workerId)).toEqual(['corrupt']);
      // The honest workers computed every shard at least twice between them (fraction 1).
      const computed = honest.reduce((n, h) => n + Number(eventsOf(h, 'worker_finished')[0].shardsDone), 0);
      expect(computed).toBeGreaterThanOrEqual(2 * 640 - 16);
    },
    TEST_TIMEOUT,
  );

  it(
    'with one worker: warns VERIFY_NEEDS_TWO_WORKERS at once and applies nothing until a second worker joins',
    async () => {
      const c = await startCoordinator(['--verify-fraction', '0.5']);
      const first = startWorker(c.url, 'first');
      const warning = await waitForEvent(c.proc, (e) => e.event === 'warning' && e.code === 'VERIFY_NEEDS_TWO_WORKERS', START_MS);
      expect(warning.iteration).toBe(0);
      expect((warning.shards as number[]).length).toBeGreaterThan(0);
      await sleep(1500);
      const status = (await (await fetch(`http://127.0.0.1:${c.port}/status`)).json()) as { iteration: number; versions: { D: number } };
      expect(status.iteration).toBe(0);
      expect(status.versions.D).toBe(0); // not even the first D-step was applied unverified
      expect(eventsOf(c.proc, (e) => e.code === 'VERIFY_NEEDS_TWO_WORKERS')).toHaveLength(1); // repeated every 10 s, not spammed

      const second = startWorker(c.url, 'second');
      const done = await waitForEvent(c.proc, 'run_finished', RUN_MS);
      expect(done.weightsHash).toBe(reference);
      for (const p of [c.proc, first, second]) expect(await waitForExit(p, 15_000), p.name).toEqual({ code: 0, signal: null });
      expect(eventsOf(c.proc, 'worker_banned')).toEqual([]);
      expect(existsSync(join(c.runDir, 'banned.json'))).toBe(false);
    },
    TEST_TIMEOUT,
  );
});
