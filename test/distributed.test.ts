/**
 * The distributed trainer end to end: real gan-coordinator / gan-worker / gan-train processes on
 * real sockets (port 0), asserting the core invariant (the final weights hash equals the
 * single-process trainer's, whatever the workers do) and the observable failure handling.
 *
 * ring8 + mlp2d is tiny (~3-4 ms per shard), so every run is 40 iterations x (1 D + 1 G phase) x
 * 8 shards = 640 shards. Every process uses --backend wasm so all compute on the same backend.
 */
import { Packr } from 'msgpackr';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { WS_CLOSE } from '../shared/protocol.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';
import {
  cleanup,
  eventsOf,
  kill,
  makeTempDir,
  readLog,
  reservePort,
  sleep,
  spawnCli,
  waitForEvent,
  waitForEvents,
  waitForExit,
  type LogEvent,
  type Proc,
} from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const TEST_TIMEOUT = 90_000;
/** Generous: two shared cores, several node processes each loading tsx + tfjs-wasm. */
const START_MS = 30_000;
const RUN_MS = 60_000;

const TRAIN_FLAGS = ['--dataset', 'ring8', '--preset', 'none', '--iterations', '40', '--batch-size', '64', '--shards', '8', '--backend', 'wasm'];

interface CoordinatorHandle {
  proc: Proc;
  runDir: string;
  port: number;
  url: string;
}

async function startCoordinator(extra: string[] = [], env: Record<string, string> = {}, port = 0): Promise<CoordinatorHandle> {
  const runDir = makeTempDir('gan-coord-');
  const proc = spawnCli(
    'coordinator',
    [...TRAIN_FLAGS, '--host', '127.0.0.1', '--port', String(port), '--run-dir', runDir, '--sample-every', '0', '--status-interval', '0.5', ...extra],
    { env, name: 'coordinator' },
  );
  const listening = await waitForEvent(proc, 'listening', START_MS);
  const actual = Number(listening.port);
  expect(actual).toBeGreaterThan(0);
  if (port !== 0) expect(actual).toBe(port);
  return { proc, runDir, port: actual, url: `ws://127.0.0.1:${actual}` };
}

function startWorker(url: string, id: string, env: Record<string, string> = {}): Proc {
  return spawnCli('worker', ['--coordinator', url, '--id', id, '--backend', 'wasm'], { env, name: `worker ${id}` });
}

/** Waits for run_finished and a clean exit of the coordinator and the given workers; returns the hash. */
async function finish(c: CoordinatorHandle, workers: Proc[]): Promise<string> {
  const done = await waitForEvent(c.proc, 'run_finished', RUN_MS);
  expect(done.stopped).toBe(false);
  expect(done.iterations).toBe(40);
  expect(await waitForExit(c.proc, 15_000)).toEqual({ code: 0, signal: null });
  for (const w of workers) {
    expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });
    expect(eventsOf(w, 'worker_finished'), w.name).toHaveLength(1);
  }
  return String(done.weightsHash);
}

const indexOf = (log: LogEvent[], pred: (e: LogEvent) => boolean) => log.findIndex(pred);

let referenceHash = '';

beforeAll(async () => {
  const runDir = makeTempDir('gan-train-');
  const train = spawnCli('train', [...TRAIN_FLAGS, '--run-dir', runDir, '--sample-every', '0'], { name: 'gan-train' });
  const done = await waitForEvent(train, 'run_finished', RUN_MS);
  expect(await waitForExit(train, 15_000)).toEqual({ code: 0, signal: null });
  expect(done.iterations).toBe(40);
  referenceHash = String(done.weightsHash);
  expect(referenceHash).toMatch(/^[0-9a-f]{64}$/);
}, TEST_TIMEOUT);

afterEach(cleanup, HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);

describe('distributed training over real sockets', () => {
  it(
    'gives the single-process weights hash with 1 worker and with 3 workers',
    async () => {
      // Both runs at once: the hash must not depend on timing, load or who computed what.
      const one = await startCoordinator();
      const three = await startCoordinator();
      const w1 = startWorker(one.url, 'solo');
      const ws3 = ['a', 'b', 'c'].map((id) => startWorker(three.url, `trio-${id}`));
      const [hash1, hash3] = await Promise.all([finish(one, [w1]), finish(three, ws3)]);
      expect(hash1).toBe(referenceHash);
      expect(hash3).toBe(referenceHash);

      const log3 = readLog(three.runDir);
      const joined = eventsOf(log3, 'worker_joined').map((e) => e.worker);
      expect(new Set(joined)).toEqual(new Set(['trio-a', 'trio-b', 'trio-c']));
      expect(eventsOf(log3, 'run_finished')[0].weightsHash).toBe(referenceHash);
      // Every one of the 640 shards was computed at least once across the workers.
      const computed = ws3.reduce((a, w) => a + Number(eventsOf(w, 'worker_finished')[0].shardsDone), 0);
      expect(computed).toBeGreaterThanOrEqual(640);
      expect(Number(eventsOf(w1, 'worker_finished')[0].shardsDone)).toBe(640);
    },
    TEST_TIMEOUT,
  );

  it(
    'survives a worker SIGKILLed mid-phase and a worker joining later: same hash, shards reassigned',
    async () => {
      // No duplication: the victim's shards may only come back through its departure.
      const c = await startCoordinator(['--straggler-min-ms', '600000']);
      // Two steady workers at ~25 ms per shard keep the run going for several seconds.
      const steady = ['a', 'b'].map((id) => startWorker(c.url, `steady-${id}`, { GAN_TEST_SHARD_DELAY_MS: '20' }));
      await waitForEvents(c.proc, 'worker_joined', 2, START_MS);
      await waitForEvent(c.proc, 'progress', RUN_MS); // mid-run

      // The victim would sit a minute on every shard. It joins at the coordinator's initial
      // 50 ms/shard estimate against >= 20 ms for the others, so it gets >= 1 shard of the next
      // phase (largest-remainder share 8 x 0.02 / (0.02 + 2/20) > 1), and that phase cannot
      // finish until the victim is gone: the kill below lands mid-phase whatever the load.
      const victim = startWorker(c.url, 'victim', { GAN_TEST_SHARD_DELAY_MS: '60000' });
      await waitForEvent(victim, 'welcomed', START_MS);
      await sleep(1000);
      // Another worker joins later, while the phase waits on the victim (so the run cannot
      // finish before it is in); it only gets work once the victim's shards are freed.
      const late = startWorker(c.url, 'late');
      await waitForEvent(c.proc, (e) => e.event === 'worker_joined' && e.worker === 'late', START_MS);
      const progressBeforeKill = eventsOf(c.proc, 'progress').length;
      expect(eventsOf(c.proc, 'run_finished')).toEqual([]);
      expect(eventsOf(c.proc, 'shard_reassigned')).toEqual([]);
      expect(await kill(victim)).toEqual({ code: null, signal: 'SIGKILL' });

      const left = await waitForEvent(c.proc, (e) => e.event === 'worker_left' && e.worker === 'victim', 15_000);
      const reassigned = await waitForEvent(c.proc, (e) => e.event === 'shard_reassigned' && e.from === 'victim', 15_000);
      expect((reassigned.shards as number[]).length).toBeGreaterThan(0);
      expect(left.shardsDone).toBe(0);

      const hash = await finish(c, [...steady, late]);
      expect(hash).toBe(referenceHash);

      const log = readLog(c.runDir);
      const leftAt = indexOf(log, (e) => e.event === 'worker_left' && e.worker === 'victim');
      const reassignedAt = indexOf(log, (e) => e.event === 'shard_reassigned' && e.from === 'victim');
      const finishedAt = indexOf(log, (e) => e.event === 'run_finished');
      expect(leftAt).toBeGreaterThan(0);
      expect(reassignedAt).toBeGreaterThan(leftAt);
      expect(finishedAt).toBeGreaterThan(reassignedAt);
      // The kill landed mid-run, not in the first phase, and the late worker really trained.
      expect(progressBeforeKill).toBeGreaterThan(0);
      expect(Number(log[reassignedAt].iteration)).toBeGreaterThan(0);
      expect(Number(eventsOf(late, 'worker_finished')[0].shardsDone)).toBeGreaterThan(0);
      // Nobody else left before the end.
      expect(eventsOf(log.slice(0, finishedAt), 'worker_left').map((e) => e.worker)).toEqual(['victim']);
    },
    TEST_TIMEOUT,
  );

  it(
    "duplicates a straggler's shards to an idle worker: same hash and shard_duplicated",
    async () => {
      const c = await startCoordinator(['--straggler-min-ms', '300', '--straggler-factor', '2']);
      // The straggler joins first and so holds every shard of the first phase, 3 s each.
      const slow = startWorker(c.url, 'slow', { GAN_TEST_SHARD_DELAY_MS: '3000' });
      await waitForEvent(slow, 'welcomed', START_MS);
      const fast = startWorker(c.url, 'fast');
      const dup = await waitForEvent(c.proc, 'shard_duplicated', RUN_MS);
      expect(dup.to).toBe('fast');
      expect((dup.shards as number[]).length).toBe(1);

      const hash = await finish(c, [slow, fast]);
      expect(hash).toBe(referenceHash);
      const log = readLog(c.runDir);
      expect(eventsOf(log, 'shard_duplicated').length).toBeGreaterThan(0);
      // Nobody left before the end: the slow worker was out-raced, not dropped.
      const finishedAt = indexOf(log, (e) => e.event === 'run_finished');
      expect(eventsOf(log.slice(0, finishedAt), 'worker_left')).toEqual([]);
      expect(eventsOf(slow, 'worker_finished')).toHaveLength(1);
    },
    TEST_TIMEOUT,
  );

  it(
    'refuses a worker with the wrong token (exit 2, clear message) while a correct worker trains on',
    async () => {
      const c = await startCoordinator([], { GAN_TOKEN: 'right' });
      expect((await waitForEvent(c.proc, 'listening', 1000)).auth).toBe('token');
      // Both start together, so the intruder's start-up (seconds on a loaded machine) races the
      // good worker's start-up, not its run: at ~13 ms per shard the run outlasts the difference.
      const good = startWorker(c.url, 'good', { GAN_TOKEN: 'right', GAN_TEST_SHARD_DELAY_MS: '10' });
      const bad = startWorker(c.url, 'intruder', { GAN_TOKEN: 'wrong' });
      await waitForEvent(good, 'welcomed', START_MS);
      expect(await waitForExit(bad, START_MS)).toEqual({ code: 2, signal: null });
      const refused = eventsOf(bad, 'refused');
      expect(refused).toHaveLength(1);
      expect(refused[0].code).toBe('AUTH_FAILED');
      expect(String(refused[0].reason)).toMatch(/token/i);
      expect(String(refused[0].msg)).toMatch(/refused.*token/i);
      expect(eventsOf(bad, 'welcomed')).toEqual([]);

      const hash = await finish(c, [good]);
      expect(hash).toBe(referenceHash);
      const log = readLog(c.runDir);
      const authFailedAt = indexOf(log, (e) => e.event === 'warning' && e.code === 'AUTH_FAILED');
      expect(authFailedAt).toBeGreaterThan(0);
      // Refused during training, never admitted.
      expect(authFailedAt).toBeLessThan(indexOf(log, (e) => e.event === 'run_finished'));
      expect(eventsOf(log, 'worker_joined').map((e) => e.worker)).toEqual(['good']);
    },
    TEST_TIMEOUT,
  );

  it(
    'answers a peer speaking another protocol version with bye + close 4002, without disturbing training',
    async () => {
      const c = await startCoordinator();
      const worker = startWorker(c.url, 'real', { GAN_TEST_SHARD_DELAY_MS: '10' });
      await waitForEvent(worker, 'welcomed', START_MS);

      const packr = new Packr({ moreTypes: true, useRecords: false });
      const peer = new WebSocket(c.url);
      const received: Record<string, unknown>[] = [];
      peer.on('message', (data) => received.push(packr.unpack(data as Buffer) as Record<string, unknown>));
      const closed = new Promise<{ code: number; reason: string }>((resolve) => peer.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
      await new Promise<void>((resolve, reject) => {
        peer.once('open', () => resolve());
        peer.once('error', reject);
      });
      peer.send(
        packr.pack({ type: 'hello', protocol: 99, workerId: 'from-the-future', backend: 'cpu', host: 'test', capabilities: { wire: ['fp32'], maxShards: 16 } }),
      );
      const close = await Promise.race([closed, sleep(10_000).then(() => null)]);
      peer.terminate();
      expect(close).not.toBeNull();
      expect(close!.code).toBe(WS_CLOSE.versionMismatch);
      expect(close!.code).toBe(4002);
      expect(received).toHaveLength(1);
      const bye = received[0];
      expect(bye.type).toBe('bye');
      expect(bye.protocol).toBe(PROTOCOL_VERSION);
      expect(bye.code).toBe('PROTOCOL_MISMATCH');
      expect(String(bye.reason)).toMatch(/\b99\b/);
      expect(String(bye.reason)).toContain(`protocol ${PROTOCOL_VERSION}`);

      const hash = await finish(c, [worker]);
      expect(hash).toBe(referenceHash);
      const log = readLog(c.runDir);
      const mismatch = eventsOf(log, (e) => e.event === 'warning' && e.code === 'PROTOCOL_MISMATCH');
      expect(mismatch).toHaveLength(1);
      expect(indexOf(log, (e) => e.code === 'PROTOCOL_MISMATCH')).toBeLessThan(indexOf(log, (e) => e.event === 'run_finished'));
      // The peer never got in: only the real worker joined, and it never left before the end.
      expect(eventsOf(log, 'worker_joined').map((e) => e.worker)).toEqual(['real']);
      expect(eventsOf(worker, 'disconnected')).toEqual([]);
    },
    TEST_TIMEOUT,
  );

  it(
    'with no workers, warns NO_WORKERS at once and keeps waiting (then stops cleanly on SIGTERM)',
    async () => {
      const c = await startCoordinator();
      const warning = await waitForEvent(c.proc, (e) => e.event === 'warning' && e.code === 'NO_WORKERS', 5_000);
      const listening = eventsOf(c.proc, 'listening')[0];
      expect(Date.parse(String(warning.time)) - Date.parse(String(listening.time))).toBeLessThan(1000);
      expect(warning.iteration).toBe(0);

      await sleep(1500);
      expect(c.proc.exit).toBeNull();
      expect(eventsOf(c.proc, 'run_finished')).toEqual([]);
      // The 10 s repeat interval has not elapsed: exactly one warning so far.
      expect(eventsOf(c.proc, (e) => e.code === 'NO_WORKERS')).toHaveLength(1);
      const status = (await (await fetch(`http://127.0.0.1:${c.port}/status`)).json()) as Record<string, unknown>;
      expect(status).toMatchObject({ iteration: 0, iterations: 40, finished: false, workers: [], run: { backend: 'wasm', wire: 'fp32', gEma: 0 } });

      c.proc.child.kill('SIGTERM');
      const done = await waitForEvent(c.proc, 'run_finished', 15_000);
      expect(done.stopped).toBe(true);
      expect(done.iterations).toBe(0);
      expect(await waitForExit(c.proc, 15_000)).toEqual({ code: 0, signal: null });
    },
    TEST_TIMEOUT,
  );

  it(
    'a worker started before its coordinator keeps retrying, then joins and the run completes',
    async () => {
      const port = await reservePort();
      const url = `ws://127.0.0.1:${port}`;
      const early = startWorker(url, 'early');
      await waitForEvent(early, 'reconnecting', START_MS);
      await sleep(1000);
      expect(early.exit).toBeNull();

      const c = await startCoordinator([], {}, port);
      await waitForEvent(early, 'welcomed', START_MS);
      const hash = await finish(c, [early]);
      expect(hash).toBe(referenceHash);

      // The worker failed at least once before the coordinator existed, then got in.
      const reconnects = eventsOf(early, 'reconnecting');
      expect(reconnects.length).toBeGreaterThanOrEqual(1);
      const welcomedAt = early.events.findIndex((e) => e.event === 'welcomed');
      expect(early.events.findIndex((e) => e.event === 'reconnecting')).toBeLessThan(welcomedAt);
      expect(Date.parse(String(reconnects[0].time))).toBeLessThan(Date.parse(String(eventsOf(c.proc, 'listening')[0].time)));
      // The coordinator was up with nobody there, said so, and waited.
      const log = readLog(c.runDir);
      const noWorkersAt = indexOf(log, (e) => e.event === 'warning' && e.code === 'NO_WORKERS');
      expect(noWorkersAt).toBeGreaterThan(0);
      expect(noWorkersAt).toBeLessThan(indexOf(log, (e) => e.event === 'worker_joined'));
    },
    TEST_TIMEOUT,
  );
});
