/**
 * Scheduling as a user who adds a machine sees it (issue #15): a worker that joins mid-run gets
 * its speed-proportional share of every phase at once (it warms its model up on the welcome, and
 * a newcomer gets at least one shard of every phase until its results measure it), workers beyond
 * the shard count are reported (WORKERS_IDLE), and none of it changes the weights.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { RING8_FLAGS, referenceHash, startInProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup, spawnCli, waitForEvent } from './helpers/processes.ts';
import type { LogRecord } from '../shared/log.ts';

const TEST_TIMEOUT = 120_000;
/** Injected per-shard time, equal for both workers: it dominates their real compute, so both measure about the same speed. */
const SHARD_MS = '30';

afterAll(cleanup);

/** framesReceived per worker in a progress line (one result frame per shard). */
const resultsIn = (rec: LogRecord, worker: string): number =>
  (rec.workerBytes as { worker: string; framesReceived: number }[] | undefined)?.find((w) => w.worker === worker)?.framesReceived ?? 0;

describe('a worker joining mid-run', () => {
  it(
    'gets its speed-proportional share (within 25%) from the second phase after its welcome; the hash is unchanged',
    async () => {
      const flags = RING8_FLAGS.map((f, i) => (RING8_FLAGS[i - 1] === '--iterations' ? '60' : f));
      const reference = await referenceHash(flags);
      const c = await startInProcessCoordinator({ flags, report: { logEvery: 5 } });
      try {
        const first = spawnCli('worker', ['--coordinator', c.url, '--id', 'first', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: SHARD_MS }, name: 'worker first' });
        await c.waitFor((r) => r.event === 'progress' && Number(r.iteration) >= 10, 60_000, 'iteration 10');
        const joiner = spawnCli('worker', ['--coordinator', c.url, '--id', 'joiner', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: SHARD_MS }, name: 'worker joiner' });
        const welcomed = await waitForEvent(joiner, 'welcomed', 60_000);
        expect(welcomed.warmupMs as number).toBeGreaterThanOrEqual(0);
        const joined = await c.waitFor((r) => r.event === 'worker_joined' && r.worker === 'joiner', 10_000, 'the joiner');
        const result = await c.done;
        expect(result.weightsHash).toBe(reference);
        // Progress windows that start after the join (the first one may straddle it).
        const windows = c.records.filter((r) => r.event === 'progress' && c.records.indexOf(r) > c.records.indexOf(joined)).slice(1);
        expect(windows.length, 'progress windows after the join').toBeGreaterThanOrEqual(3);
        for (const w of windows) {
          const mine = resultsIn(w, 'joiner');
          const theirs = resultsIn(w, 'first');
          expect(mine + theirs, `iteration ${w.iteration}`).toBeGreaterThan(0);
          // Equal speeds: half each, within 25%.
          expect(mine / (mine + theirs), `joiner's share up to iteration ${w.iteration}: ${mine} of ${mine + theirs}`).toBeGreaterThanOrEqual(0.5 * 0.75);
          expect(mine / (mine + theirs)).toBeLessThanOrEqual(0.5 * 1.25);
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
