/**
 * Scheduling as a user who adds a machine sees it (issue #15): a worker that joins mid-run gets
 * its speed-proportional share of every phase at once (it warms its model up on the welcome, and
 * a newcomer gets at least one shard of every phase until its results measure it), workers beyond
 * the shard count are reported (WORKERS_IDLE), and none of it changes the weights.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { RING8_FLAGS, referenceHash, startInProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup, spawnCli, waitForEvent } from './helpers/processes.ts';

const TEST_TIMEOUT = 120_000;
/** Injected per-shard time, equal for both workers: it dominates their real compute, so both measure about the same speed. */
const SHARD_MS = '30';
/** Progress lines due every this many iterations: the windows the shares are measured over. */
const LOG_EVERY = 5;

afterAll(cleanup);

/** Shards done per worker (the coordinator's /status) at one progress line. */
interface Snapshot {
  iteration: number;
  done: Record<string, number>;
}

describe('a worker joining mid-run', () => {
  it(
    'gets its speed-proportional share (within 25%) from the second phase after its welcome; the hash is unchanged',
    async () => {
      const flags = RING8_FLAGS.map((f, i) => (RING8_FLAGS[i - 1] === '--iterations' ? '60' : f));
      const reference = await referenceHash(flags);
      const c = await startInProcessCoordinator({ flags, report: { logEvery: LOG_EVERY } });
      // At every progress line (logged synchronously, so status() is read at that moment), the
      // shards each worker has done: a predicate that never matches, run on every new record.
      const snaps: Snapshot[] = [];
      let seen = 0;
      let snapping = true;
      const stopSnapshots = () => (snapping = false);
      void c
        .waitFor(
          () => {
            for (; snapping && seen < c.records.length; seen++) {
              const r = c.records[seen]!;
              if (r.event !== 'progress') continue;
              const st = c.coordinator.status() as { workers: { id: string; shardsDone: number }[] };
              snaps.push({ iteration: Number(r.iteration), done: Object.fromEntries(st.workers.map((w) => [w.id, w.shardsDone])) });
            }
            return !snapping;
          },
          TEST_TIMEOUT,
          'the end of the run',
        )
        .catch(() => undefined);
      try {
        const first = spawnCli('worker', ['--coordinator', c.url, '--id', 'first', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: SHARD_MS }, name: 'worker first' });
        await c.waitFor((r) => r.event === 'progress' && Number(r.iteration) >= 10, 60_000, 'iteration 10');
        const joiner = spawnCli('worker', ['--coordinator', c.url, '--id', 'joiner', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: SHARD_MS }, name: 'worker joiner' });
        const welcomed = await waitForEvent(joiner, 'welcomed', 60_000);
        expect(welcomed.warmupMs as number).toBeGreaterThanOrEqual(0);
        const joined = await c.waitFor((r) => r.event === 'worker_joined' && r.worker === 'joiner', 10_000, 'the joiner');
        const result = await c.done;
        stopSnapshots();
        expect(result.weightsHash).toBe(reference);
        // Shares in shards (a result frame is a block of shards, so frames would not do), per
        // progress window that starts after the join (the first one may straddle it).
        // Only the lines due every --log-every (5) iterations: --status-interval adds lines at any
        // iteration when a loaded machine is slow, and a window of one or two iterations holds too
        // few shards for a share to mean anything (seen in CI: 4 shards between iterations 14 and 15).
        const after = snaps.filter((x) => x.iteration > Number(joined.iteration ?? 0) && x.iteration % LOG_EVERY === 0 && 'joiner' in x.done);
        // The first window may hold the phase in flight when it joined, which it did not get.
        const windows = after.slice(1).map((x, i) => ({ iteration: x.iteration, from: after[i]!, to: x })).slice(1);
        expect(windows.length, 'progress windows after the join').toBeGreaterThanOrEqual(3);
        for (const { iteration, from, to } of windows) {
          const mine = to.done.joiner - from.done.joiner;
          const theirs = (to.done.first ?? 0) - (from.done.first ?? 0);
          expect(mine + theirs, `iteration ${iteration}`).toBeGreaterThan(0);
          // Equal speeds: half each, within 25%.
          expect(mine / (mine + theirs), `joiner's share up to iteration ${iteration}: ${mine} of ${mine + theirs} shards`).toBeGreaterThanOrEqual(0.5 * 0.75);
          expect(mine / (mine + theirs), `joiner's share up to iteration ${iteration}: ${mine} of ${mine + theirs} shards`).toBeLessThanOrEqual(0.5 * 1.25);
        }
        void first;
      } finally {
        await c.close();
      }
    },
    TEST_TIMEOUT,
  );
});

describe('more workers than shards', () => {
  it(
    'warns WORKERS_IDLE once, with a --shards that would use them all; the run is unchanged',
    async () => {
      const flags = [...RING8_FLAGS.map((f, i) => (RING8_FLAGS[i - 1] === '--shards' ? '2' : RING8_FLAGS[i - 1] === '--iterations' ? '20' : f))];
      const reference = await referenceHash(flags);
      const c = await startInProcessCoordinator({ flags });
      try {
        for (const id of ['a', 'b', 'c']) spawnCli('worker', ['--coordinator', c.url, '--id', id, '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: '20' }, name: `worker ${id}` });
        const warning = await c.waitFor((r) => r.code === 'WORKERS_IDLE' && r.workers === 3, 60_000, 'WORKERS_IDLE with 3 workers');
        expect(warning).toMatchObject({ shardsPerPhase: 2, idle: 1, suggestShards: 4 });
        expect(String(warning.msg)).toMatch(/--shards 4/);
        expect((await c.done).weightsHash).toBe(reference);
        expect(c.records.filter((r) => r.code === 'WORKERS_IDLE' && r.workers === 3)).toHaveLength(1);
      } finally {
        await c.close();
      }
    },
    TEST_TIMEOUT,
  );
});
