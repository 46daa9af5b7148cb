/**
 * The relay tree (coordinator --fan-out, worker --relay-listen) end to end with real processes on
 * loopback: the final weights hash equals gan-train's whatever the tree's shape (a chain, fan-out
 * 2), for --wire fp32 and fp16; the coordinator's link carries f copies of each changed net and
 * about f sums per phase; a relay SIGKILLed mid-run has its children re-parented and the run
 * still ends with gan-train's hash; a relay that alters the weights it forwards is caught by its
 * child's digest check; a peer with a wrong or missing ticket is refused without harming the relay.
 *
 * ring8 + mlp2d is tiny (a few ms per shard): 30 iterations x 2 phases x 8 shards. Every process
 * uses --backend wasm so all compute on the same backend. No timing assertions.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { WebSocket } from 'ws';
import { encode } from '../shared/codec.ts';
import { initBackend } from '../shared/backend.ts';
import { createLogger, tapLog, type LogRecord } from '../shared/log.ts';
import { DEFAULT_BACKOFF, Worker } from '../worker/worker.ts';
import { PROTOCOL_VERSION, WS_CLOSE } from '../shared/protocol.ts';
import { cleanup, eventsOf, kill, makeTempDir, readLog, sleep, spawnCli, waitForEvent, waitForExit, type LogEvent, type Proc } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const TEST_TIMEOUT = 120_000;
const START_MS = 30_000;
const RUN_MS = 90_000;
const ITERATIONS = 30;
const TRAIN_FLAGS = ['--dataset', 'ring8', '--preset', 'none', '--iterations', String(ITERATIONS), '--batch-size', '64', '--shards', '8', '--backend', 'wasm'];

interface Coord {
  proc: Proc;
  runDir: string;
  url: string;
}

/**
 * Small sum ranges and weights chunks, so a tiny model's sums travel as several ranges (mlp2d's
 * nets have a few thousand values, under the default 8192 per range) and its weights as several
 * chunks: the pipelined paths run in real processes, not only in test/relay-units.test.ts.
 */
const SMALL_CHUNKS = { GAN_RELAY_SUM_CHUNK: '512', GAN_RELAY_CHUNK_BYTES: '4096' };

async function startCoordinator(extra: string[], env: Record<string, string> = {}): Promise<Coord> {
  const runDir = makeTempDir('gan-relay-');
  const proc = spawnCli('coordinator', [...TRAIN_FLAGS, '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--status-interval', '0.5', ...extra], { name: 'coordinator', env });
  const listening = await waitForEvent(proc, 'listening', START_MS);
  return { proc, runDir, url: `ws://127.0.0.1:${Number(listening.port)}` };
}

function startWorker(url: string, id: string, opts: { relay?: boolean; listen?: string; env?: Record<string, string> } = {}): Proc {
  const args = ['--coordinator', url, '--id', id, '--backend', 'wasm', ...(opts.relay === false ? [] : ['--relay-listen', opts.listen ?? '127.0.0.1:0'])];
  return spawnCli('worker', args, { name: `worker ${id}`, env: opts.env ?? {} });
}

async function finish(c: Coord, workers: Proc[]): Promise<{ hash: string; summary: LogEvent }> {
  const done = await waitForEvent(c.proc, 'run_finished', RUN_MS);
  expect(done.stopped).toBe(false);
  expect(done.iterations).toBe(ITERATIONS);
  expect(await waitForExit(c.proc, 15_000)).toEqual({ code: 0, signal: null });
  for (const w of workers) expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });
  const summary = eventsOf(readLog(c.runDir), 'relay_summary')[0];
  return { hash: String(done.weightsHash), summary };
}

/** Workers computing ~15 ms per shard, so a run outlasts the start-up of the last one on a loaded machine. */
const PACED = { env: { GAN_TEST_SHARD_DELAY_MS: '15' } };

/** Starts workers at once and waits until each is placed in the tree. */
async function startAll(c: Coord, ids: string[], opts: { relay?: boolean; listen?: string; env?: Record<string, string> }[] = []): Promise<Proc[]> {
  const out = ids.map((id, i) => startWorker(c.url, id, opts[i] ?? PACED));
  await Promise.all(ids.map((id) => waitForEvent(c.proc, (e) => e.event === 'relay_placed' && e.worker === id, START_MS)));
  return out;
}

/** Each worker's parent at the end: its placement, then its re-parentings. */
function finalParents(log: LogEvent[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of log) {
    if (e.event === 'relay_placed') out.set(String(e.worker), String(e.parent));
    if (e.event === 'reparented') out.set(String(e.worker), String(e.to));
  }
  return out;
}

/** Starts workers one after the other (each placed before the next joins), so the tree's shape is known. */
async function startInOrder(c: Coord, ids: string[], opts: { relay?: boolean; env?: Record<string, string> }[] = []): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const [i, id] of ids.entries()) {
    out.push(startWorker(c.url, id, opts[i] ?? {}));
    await waitForEvent(c.proc, (e) => e.event === 'relay_placed' && e.worker === id, START_MS);
  }
  return out;
}

const reference: Record<'fp32' | 'fp16', string> = { fp32: '', fp16: '' };

beforeAll(async () => {
  const runs = (['fp32', 'fp16'] as const).map(async (wire) => {
    const train = spawnCli('train', [...TRAIN_FLAGS, '--wire', wire, '--run-dir', makeTempDir('gan-train-'), '--sample-every', '0'], { name: `gan-train ${wire}` });
    const done = await waitForEvent(train, 'run_finished', RUN_MS);
    expect(await waitForExit(train, 15_000)).toEqual({ code: 0, signal: null });
    reference[wire] = String(done.weightsHash);
  });
  await Promise.all(runs);
  expect(reference.fp32).toMatch(/^[0-9a-f]{64}$/);
  expect(reference.fp16).not.toBe(reference.fp32);
}, TEST_TIMEOUT);

afterEach(cleanup, HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);

describe('relay tree', () => {
  it(
    'a chain (--fan-out 1) of 4 workers gives gan-train\'s hash; one copy of each net leaves the coordinator',
    async () => {
      const c = await startCoordinator(['--fan-out', '1'], SMALL_CHUNKS);
      // Listening on every interface without --relay-advertise: they offer ws://0.0.0.0:<port>,
      // and the coordinator hands children the address it sees each relay at (127.0.0.1 here).
      const workers = await startAll(c, ['a', 'b', 'c', 'd'], Array(4).fill({ ...PACED, listen: '0.0.0.0:0' }));
      for (const w of workers) expect(String(eventsOf(w, 'relay_listening')[0].url)).toMatch(/^ws:\/\/0\.0\.0\.0:\d+$/);
      // Whoever joins first heads the chain; each next one hangs under the one before.
      const placed = eventsOf(c.proc, 'relay_placed');
      expect(placed.map((e) => e.depth)).toEqual([1, 2, 3, 4]);
      expect(placed.map((e) => e.parent)).toEqual(['coordinator', ...placed.slice(0, 3).map((e) => e.worker)]);
      const { hash, summary } = await finish(c, workers);
      // Every child reached its relay at the substituted address: nobody reported one unreachable.
      expect(eventsOf(readLog(c.runDir), 'relay_reported')).toEqual([]);
      for (const w of workers) {
        const depth = Number(placed.find((e) => `worker ${String(e.worker)}` === w.name)!.depth);
        if (depth > 1) expect(String(eventsOf(w, 'relay_parent_connected')[0]?.parent), w.name).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
      }
      expect(hash).toBe(reference.fp32);
      // One top-level child: one copy of every changed net, and sums from that child only.
      expect(Number(summary.weightCopies)).toBe(Number(summary.weightChanges));
      expect(Number(summary.weightChanges)).toBeGreaterThan(0);
      expect(Number(summary.sumsReceived)).toBeGreaterThan(0);
      // A chain's head covers [0, 8) with one node per phase once it is complete; partial forwards
      // (a bounded wait under load) and the phases before the tree was whole add a few.
      expect(Number(summary.sumsReceived) + Number(summary.resultsReceived)).toBeLessThan(3 * 2 * ITERATIONS);
      // Deeper workers really received weights through the tree and used them.
      for (const w of workers) expect(Number(eventsOf(w, 'worker_finished')[0].shardsDone), w.name).toBeGreaterThan(0);
    },
    TEST_TIMEOUT,
  );

  it(
    '--fan-out 2 with 4 workers (one a leaf without a listener): gan-train\'s hash; a wrong or missing ticket is refused',
    async () => {
      const c = await startCoordinator(['--fan-out', '2'], SMALL_CHUNKS);
      const workers = await startAll(c, ['r1', 'r2', 'r3', 'leaf'], [PACED, PACED, PACED, { ...PACED, relay: false }]);
      const placed = eventsOf(c.proc, 'relay_placed');
      expect(placed.find((e) => e.worker === 'leaf')!.relay).toBe(false);
      // Whatever the join order: two children of the coordinator, nobody under the leaf, two under one relay.
      const parents = finalParents(eventsOf(c.proc, () => true));
      expect([...parents.values()].filter((p) => p === 'coordinator')).toHaveLength(2);
      expect([...parents.values()]).not.toContain('leaf');
      const byParent = new Map<string, number>();
      for (const p of parents.values()) byParent.set(p, (byParent.get(p) ?? 0) + 1);
      expect([...byParent.values()].sort()).toEqual([2, 2]);

      // Intruders at r1's listener: a wrong ticket, a hello without one, garbage. Each is refused; r1 goes on relaying.
      const url = String(eventsOf(workers[0], 'relay_listening')[0].url);
      const attempt = async (frame: Uint8Array): Promise<number> => {
        const ws = new WebSocket(url);
        ws.on('error', () => {});
        await new Promise<void>((resolve, reject) => {
          ws.once('open', () => resolve());
          ws.once('error', reject);
        });
        const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
        ws.send(frame);
        return closed;
      };
      expect(await attempt(encode({ type: 'relay-hello', workerId: 'r3', ticket: new Uint8Array(16) }))).toBe(WS_CLOSE.authFailed);
      expect(await attempt(encode({ type: 'relay-hello', workerId: 'nobody', ticket: new Uint8Array(16).fill(1) }))).toBe(WS_CLOSE.authFailed);
      expect(await attempt(new Packr({ moreTypes: true }).pack({ type: 'relay-hello', protocol: PROTOCOL_VERSION, workerId: 'r3' }))).toBe(WS_CLOSE.protocolError);
      expect(await attempt(new Uint8Array([0xc1, 0xff, 0x00]))).toBe(WS_CLOSE.protocolError);
      expect(await attempt(encode({ type: 'sum', iteration: 0, phase: 'D', dStep: 0, shardCount: 8, firstShard: 0, count: 8, gradient: new Float32Array(4), offset: 0, total: 4, stats: { loss: 0, dReal: 0, dFake: 0 } }))).toBe(WS_CLOSE.protocolError);

      const { hash, summary } = await finish(c, workers);
      expect(hash).toBe(reference.fp32);
      expect(eventsOf(workers[0], 'warning').filter((e) => e.code === 'RELAY_TICKET').length).toBeGreaterThanOrEqual(2);
      // Two top-level children: two copies of every changed net (the star sends N = 4).
      expect(Number(summary.weightCopies)).toBeLessThanOrEqual(2 * Number(summary.weightChanges));
      expect(Number(summary.weightCopies)).toBeGreaterThan(Number(summary.weightChanges));
      expect(Number(summary.sumsReceived) + Number(summary.resultsReceived)).toBeLessThan(3 * 2 * 2 * ITERATIONS);
      // Nobody was reported during the run.
      expect(eventsOf(readLog(c.runDir), 'relay_digest_mismatch')).toEqual([]);
    },
    TEST_TIMEOUT,
  );

  it(
    '--wire fp16 through a chain and a fan-out 2 tree gives gan-train --wire fp16\'s hash',
    async () => {
      for (const f of [1, 2]) {
        const c = await startCoordinator(['--fan-out', String(f), '--wire', 'fp16'], SMALL_CHUNKS);
        const workers = await startAll(c, ['h1', 'h2', 'h3', 'h4']);
        const placed = eventsOf(c.proc, 'relay_placed');
        if (f === 2) expect(placed.map((e) => e.parent)).toEqual(['coordinator', 'coordinator', placed[0].worker, placed[0].worker]);
        else expect(placed.map((e) => e.depth)).toEqual([1, 2, 3, 4]);
        const { hash, summary } = await finish(c, workers);
        expect(hash, `fan-out ${f}`).toBe(reference.fp16);
        expect(Number(summary.weightCopies)).toBeLessThanOrEqual(f * Number(summary.weightChanges));
      }
    },
    TEST_TIMEOUT,
  );

  it(
    'a relay that forwards no weights: its child reports the stall, is re-parented and the hash is gan-train\'s',
    async () => {
      const c = await startCoordinator(['--fan-out', '1']);
      const workers = await startInOrder(c, ['mute', 'starved'], [{ env: { GAN_TEST_RELAY_MUTE: '1', GAN_TEST_SHARD_DELAY_MS: '15' } }, { env: { GAN_TEST_RELAY_STALL_MS: '1500' } }]);
      const stalled = await waitForEvent(c.proc, (e) => e.event === 'relay_reported' && e.code === 'RELAY_STALLED', RUN_MS);
      expect(stalled).toMatchObject({ worker: 'starved', relay: 'mute' });
      expect(await waitForEvent(c.proc, 'relay_demoted', 20_000)).toMatchObject({ worker: 'mute', code: 'RELAY_STALLED' });
      const { hash } = await finish(c, workers);
      expect(hash).toBe(reference.fp32);
    },
    TEST_TIMEOUT,
  );

  it(
    'a relay that sends no sums up (a black hole heading a chain): the coordinator notices, moves its child away, and the hash is gan-train\'s',
    async () => {
      // Quick duplication of the sink's own overdue shards (it stays in the run as a leaf that never delivers).
      const c = await startCoordinator(['--fan-out', '1', '--straggler-min-ms', '300'], SMALL_CHUNKS);
      const workers = await startInOrder(c, ['sink', 'source'], [{ env: { GAN_TEST_RELAY_DROP_SUMS: '1', GAN_TEST_SHARD_DELAY_MS: '15' } }, {}]);
      const missing = await waitForEvent(c.proc, (e) => e.event === 'warning' && e.code === 'RELAY_SUMS_MISSING', RUN_MS);
      expect(missing).toMatchObject({ worker: 'source', relay: 'sink' });
      // The child moves under the coordinator; one child's trouble alone does not demote the relay.
      expect(await waitForEvent(c.proc, (e) => e.event === 'reparented' && e.worker === 'source', 20_000)).toMatchObject({ from: 'sink', to: 'coordinator' });
      // What this test is about has happened. The sink stays a leaf whose own sums never arrive, so
      // every later phase would wait for its shards to be duplicated: kill it (a lost worker's
      // shards are reassigned at once) instead of spending half a minute on that; the hash must
      // still be gan-train's.
      await kill(workers[0], 'SIGKILL');
      const { hash } = await finish(c, [workers[1]]);
      expect(hash).toBe(reference.fp32);
      // Nobody blamed the honest worker afterwards.
      expect(eventsOf(readLog(c.runDir), 'warning').filter((e) => e.code === 'RELAY_SUMS_MISSING' && e.relay !== 'sink')).toEqual([]);
    },
    TEST_TIMEOUT,
  );

  it(
    'a worker without the relay feature (an older or browser worker) stays in the star beside the tree: same hash',
    async () => {
      await initBackend('wasm');
      const c = await startCoordinator(['--fan-out', '1']);
      const workers = await startAll(c, ['t1', 't2']);
      // In process and without a tree link: its hello does not list `relay`, as a browser tab's does not.
      const records: LogRecord[] = [];
      const log = createLogger({ name: 'worker', stdout: false, level: 'info' });
      tapLog(log, (r) => records.push(r));
      const old = new Worker({ url: c.url, token: null, workerId: 'star-only', backend: 'wasm', log, stay: false, maxRetries: 3, backoff: DEFAULT_BACKOFF, idleTimeoutMs: 30_000, testDelayMs: 15 });
      const oldDone = old.run();
      const { hash, summary } = await finish(c, workers);
      expect(await oldDone).toBe(0);
      expect(hash).toBe(reference.fp32);
      expect(records.some((r) => r.event === 'welcomed')).toBe(true);
      expect(Number(records.find((r) => r.event === 'worker_finished')?.shardsDone)).toBeGreaterThan(0);
      expect(eventsOf(readLog(c.runDir), 'relay_placed').map((e) => e.worker).sort()).toEqual(['t1', 't2']);
      // Its results came the star's way, beside the tree's sums.
      expect(Number(summary.resultsReceived)).toBeGreaterThan(0);
      expect(Number(summary.sumsReceived)).toBeGreaterThan(0);
    },
    TEST_TIMEOUT,
  );

  it(
    'is off with --verify-fraction (a warning says so); --fan-out out of range is a configuration error',
    async () => {
      const c = await startCoordinator(['--fan-out', '2', '--verify-fraction', '0.5']);
      const off = await waitForEvent(c.proc, (e) => e.event === 'warning' && e.code === 'RELAY_TREE_OFF', START_MS);
      expect(off).toMatchObject({ fanOut: 2, verifyFraction: 0.5 });
      await kill(c.proc);
      const bad = spawnCli('coordinator', [...TRAIN_FLAGS, '--port', '0', '--run-dir', makeTempDir('gan-relay-'), '--fan-out', '65'], { name: 'bad coordinator' });
      expect((await waitForExit(bad, START_MS)).code).toBe(2);
      expect(bad.stderr.join('\n')).toContain('BAD_FAN_OUT');
    },
    TEST_TIMEOUT,
  );

  it(
    'a relay SIGKILLed mid-run: its children are re-parented and the run ends with gan-train\'s hash',
    async () => {
      const c = await startCoordinator(['--fan-out', '1', '--straggler-min-ms', '600000']);
      // ~25 ms per shard keeps the run going for several seconds.
      const slow = { env: { GAN_TEST_SHARD_DELAY_MS: '20' } };
      const [top, ...rest] = await startInOrder(c, ['top', 'mid', 'low'], [slow, slow, slow]);
      await waitForEvent(c.proc, 'progress', RUN_MS);
      expect(eventsOf(c.proc, 'run_finished')).toEqual([]);
      expect(await kill(top)).toEqual({ code: null, signal: 'SIGKILL' });
      const lost = await waitForEvent(c.proc, 'relay_lost', 20_000);
      expect(lost.worker).toBe('top');
      const moved = await waitForEvent(c.proc, (e) => e.event === 'reparented' && e.worker === 'mid', 20_000);
      expect(moved.from).toBe('top');
      expect(moved.to).toBe('coordinator');
      const { hash } = await finish(c, rest);
      expect(hash).toBe(reference.fp32);
      // The grandchild stayed under mid; the run went on after the kill.
      const log = readLog(c.runDir);
      expect(eventsOf(log, 'reparented').map((e) => e.worker)).toEqual(['mid']);
      for (const w of rest) expect(Number(eventsOf(w, 'worker_finished')[0].shardsDone), w.name).toBeGreaterThan(0);
    },
    TEST_TIMEOUT,
  );

  it(
    'a relay that alters the weights it forwards: its child refuses them (digest), the relay is demoted, the hash is gan-train\'s',
    async () => {
      const c = await startCoordinator(['--fan-out', '1']);
      const workers = await startInOrder(c, ['evil', 'victim'], [{ env: { GAN_TEST_RELAY_CORRUPT: '1', GAN_TEST_SHARD_DELAY_MS: '15' } }, {}]);
      const mismatch = await waitForEvent(c.proc, 'relay_digest_mismatch', RUN_MS);
      expect(mismatch.worker).toBe('victim');
      expect(mismatch.relay).toBe('evil');
      const demoted = await waitForEvent(c.proc, 'relay_demoted', 20_000);
      expect(demoted.worker).toBe('evil');
      const moved = await waitForEvent(c.proc, (e) => e.event === 'reparented' && e.worker === 'victim', 20_000);
      expect(moved.to).toBe('coordinator');
      const { hash } = await finish(c, workers);
      expect(hash).toBe(reference.fp32);
      expect(eventsOf(workers[1], 'weights_refused').length).toBeGreaterThan(0);
      await sleep(0);
    },
    TEST_TIMEOUT,
  );
});
