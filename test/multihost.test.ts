/**
 * A real multi-host run: the coordinator in one network namespace, two workers in two others,
 * each namespace a "machine" with its own eth0 on a bridge (in a fourth, hub namespace), talking
 * over veth links and 10.213.x.0/24 addresses; nothing is reachable over loopback between them.
 * Every link and address lives inside namespaces created here through test/helpers/netns.ts (never
 * in the host's own namespace; bench/multihost.ts builds its network the same way), with names
 * unique to this run, and is removed in afterAll, pass or fail.
 *
 * Needs root and iproute2's `ip`; skipped with the reason printed otherwise.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetwork, ip, netnsUnavailable, type Network } from './helpers/netns.ts';
import { cleanup, eventsOf, makeTempDir, readLog, spawnCli, waitForEvent, waitForEvents, waitForExit, type Proc } from './helpers/processes.ts';

const TEST_TIMEOUT = 90_000;
const START_MS = 30_000;
const RUN_MS = 60_000;
const PORT = 8600; // each namespace has its own ports: no collision with anything on the host
const TOKEN = 'multihost-test-token';
const TRAIN_FLAGS = ['--dataset', 'ring8', '--preset', 'none', '--iterations', '40', '--batch-size', '64', '--shards', '8', '--backend', 'wasm'];

const skipReason = netnsUnavailable();
if (skipReason) console.warn(`[multihost.test] skipped: ${skipReason}`);

// Unique per run: parallel runs (or a leftover from a killed one) never share a namespace.
const tag = `gan${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const subnet = `10.213.${1 + (process.pid % 250)}`;
// Hosts get <subnet>.1, .2, .3 in this order.
const HOSTS = ['coordinator', 'w1', 'w2'] as const;
const ADDR = { coordinator: `${subnet}.1`, w1: `${subnet}.2`, w2: `${subnet}.3` };
let net: Network | null = null;
const NS = (name: (typeof HOSTS)[number]) => net!.hosts[name].ns;
const inNs = (name: (typeof HOSTS)[number]) => net!.exec(name);

function startCoordinator(runDir: string, extra: string[] = []): Proc {
  return spawnCli(
    'coordinator',
    [...TRAIN_FLAGS, '--host', '0.0.0.0', '--port', String(PORT), '--run-dir', runDir, '--sample-every', '0', '--status-interval', '0.5', ...extra],
    { prefix: inNs('coordinator'), env: { GAN_TOKEN: TOKEN }, name: `coordinator@${NS('coordinator')}` },
  );
}

function startWorker(name: 'w1' | 'w2', delayMs: number): Proc {
  return spawnCli('worker', ['--coordinator', `ws://${ADDR.coordinator}:${PORT}`, '--id', name, '--backend', 'wasm'], {
    prefix: inNs(name),
    env: { GAN_TOKEN: TOKEN, GAN_TEST_SHARD_DELAY_MS: String(delayMs) },
    name: `worker ${name}@${NS(name)}`,
  });
}

/** The single-process reference, run in the host namespace (no network involved). */
async function referenceHash(): Promise<string> {
  const train = spawnCli('train', [...TRAIN_FLAGS, '--run-dir', makeTempDir('gan-mh-train-'), '--sample-every', '0'], { name: 'gan-train' });
  const done = await waitForEvent(train, 'run_finished', RUN_MS);
  expect(await waitForExit(train, 15_000)).toEqual({ code: 0, signal: null });
  return String(done.weightsHash);
}

const ipOf = (address: unknown) => String(address).replace(/:\d+$/, '');

describe.skipIf(skipReason !== null)(`several hosts (network namespaces ${tag}-*, ${subnet}.0/24)`, () => {
  let reference: Promise<string>;

  beforeAll(() => {
    // createNetwork also deletes the namespaces on exit if a runner dies without running afterAll.
    net = createNetwork({ tag, subnet, hosts: [...HOSTS] });
    reference = referenceHash();
  }, TEST_TIMEOUT);

  afterAll(async () => {
    await cleanup(); // kill the processes first: a namespace with processes inside outlives `ip netns del`
    net?.destroy();
  }, TEST_TIMEOUT);

  it(
    'coordinator and two workers on three "machines" over veth: both join from their addresses, same hash as gan-train',
    async () => {
      // The namespaces really are separate machines: the coordinator's address is not local to a worker.
      expect(ip('-n', NS('w1'), '-o', 'addr', 'show')).not.toContain(ADDR.coordinator);
      expect(ip('-n', NS('coordinator'), '-o', 'addr', 'show')).toContain(`${ADDR.coordinator}/24`);

      const runDir = makeTempDir('gan-mh-');
      const coordinator = startCoordinator(runDir);
      const listening = await waitForEvent(coordinator, 'listening', START_MS);
      expect(listening).toMatchObject({ host: '0.0.0.0', port: PORT, auth: 'token' });
      // ~6 ms per shard: a run of a few seconds, so both workers are in before it ends.
      const workers = [startWorker('w1', 3), startWorker('w2', 3)];

      const done = await waitForEvent(coordinator, 'run_finished', RUN_MS);
      expect(done).toMatchObject({ iterations: 40, stopped: false });
      expect(await waitForExit(coordinator, 15_000)).toEqual({ code: 0, signal: null });
      for (const w of workers) {
        expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });
        expect(eventsOf(w, 'worker_finished'), w.name).toHaveLength(1);
      }

      const log = readLog(runDir);
      const joined = eventsOf(log, 'worker_joined');
      expect(new Map(joined.map((e) => [e.worker, ipOf(e.address)]))).toEqual(
        new Map([
          ['w1', ADDR.w1],
          ['w2', ADDR.w2],
        ]),
      );
      const shards = workers.map((w) => Number(eventsOf(w, 'worker_finished')[0].shardsDone));
      expect(shards[0] + shards[1]).toBeGreaterThanOrEqual(640);
      expect(done.weightsHash).toBe(await reference);
    },
    TEST_TIMEOUT,
  );

  it(
    'upgrade mid-run over the network: SIGTERM -> checkpoint -> a new coordinator with --auto-resume; workers reconnect by themselves',
    async () => {
      const runDir = makeTempDir('gan-mh-restart-');
      // --auto-resume on an empty run directory: a new run.
      const first = startCoordinator(runDir, ['--auto-resume']);
      await waitForEvent(first, 'listening', START_MS);
      // Slower shards (~23 ms): the run lasts long enough to be interrupted.
      const workers = [startWorker('w1', 20), startWorker('w2', 20)];
      await waitForEvents(first, 'worker_joined', 2, START_MS);
      await waitForEvent(first, (e) => e.event === 'progress' && Number(e.iteration) >= 3, RUN_MS);

      first.child.kill('SIGTERM');
      const stopped = await waitForEvent(first, 'run_finished', 15_000);
      expect(stopped.stopped).toBe(true);
      expect(Number(stopped.iterations)).toBeLessThan(40);
      expect(await waitForExit(first, 15_000)).toEqual({ code: 0, signal: null });
      const saved = eventsOf(first, 'checkpoint_saved').at(-1)!;
      expect(saved.iteration).toBe(stopped.iterations);
      expect(eventsOf(first, 'resumed')).toEqual([]);
      // The workers noticed and keep trying; none of them exited.
      for (const w of workers) await waitForEvent(w, 'reconnecting', 15_000);
      expect(workers.map((w) => w.exit)).toEqual([null, null]);

      // "The new version": same command line, same address and port.
      const second = startCoordinator(runDir, ['--auto-resume']);
      const resumed = await waitForEvent(second, 'resumed', START_MS);
      expect(resumed.iteration).toBe(stopped.iterations);
      const done = await waitForEvent(second, 'run_finished', RUN_MS);
      expect(done).toMatchObject({ iterations: 40, stopped: false });
      expect(await waitForExit(second, 15_000)).toEqual({ code: 0, signal: null });
      for (const w of workers) {
        expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });
        expect(eventsOf(w, 'welcomed').length, w.name).toBe(2);
      }
      const rejoined = eventsOf(second, 'worker_joined');
      expect(new Set(rejoined.map((e) => ipOf(e.address)))).toEqual(new Set([ADDR.w1, ADDR.w2]));
      // Exactly the weights of an uninterrupted run.
      expect(done.weightsHash).toBe(await reference);
    },
    TEST_TIMEOUT,
  );
});
