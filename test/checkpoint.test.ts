/**
 * Checkpoints and resume, end to end with real gan-coordinator / gan-worker / gan-train processes
 * (plus a unit block for the on-disk format). The invariant throughout: however a run is cut
 * (a clean finish, SIGTERM mid-phase, SIGKILL mid-write, a damaged newest checkpoint) and resumed,
 * its final weights hash equals a straight single-process run of the same number of iterations.
 *
 * Every coordinator gets a fixed port reserved up front, because --stay workers must find the
 * restarted coordinator at the same address. ring8 + mlp2d with --backend wasm everywhere, so all
 * processes compute on the same backend and a shard takes a few ms.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkpointsDir, findResumeCheckpoint, readCheckpoint, writeCheckpoint } from '../trainer/checkpoint.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { GanError } from '../shared/errors.ts';
import { hashFloats } from '../trainer/hash.ts';
import type { TrainingSnapshot } from '../trainer/training-state.ts';
import {
  cleanup,
  eventsOf,
  kill,
  makeTempDir,
  newSite,
  sleep,
  spawnCli,
  startSiteCoordinator,
  startSiteWorker,
  tail,
  waitForEvent,
  waitForExit,
  waitUntil,
  type LogEvent,
  type Proc,
  type Site,
} from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

/** Generous: two shared cores, several node processes each loading tsx + tfjs-wasm. */
const START_MS = 30_000;
const RUN_MS = 60_000;
const EXIT_MS = 15_000;
const TEST_MS = 120_000;

/** Batch size and shard count are left at their defaults (64, 4) so a resume may omit them. */
const COMMON = ['--dataset', 'ring8', '--preset', 'none', '--sample-every', '0', '--backend', 'wasm'];
const N = 40;

const CLEAN_EXIT = { code: 0, signal: null };

afterEach(async () => {
  await cleanup();
}, HEAVY_TEST_MS);

// ------------------------------------------------------------------ helpers

const straightRuns = new Map<number, string>();

/** The weights hash of a straight single-process run of n iterations (memoised). */
async function straightHash(n: number): Promise<string> {
  const known = straightRuns.get(n);
  if (known) return known;
  const runDir = makeTempDir('gan-ck-train-');
  const p = spawnCli('train', [...COMMON, '--iterations', String(n), '--run-dir', runDir], { name: `gan-train ${n}` });
  const done = await waitForEvent(p, 'run_finished', RUN_MS);
  expect(await waitForExit(p, EXIT_MS)).toEqual(CLEAN_EXIT);
  expect(done.iterations).toBe(n);
  const hash = String(done.weightsHash);
  expect(hash).toMatch(/^[0-9a-f]{64}$/);
  straightRuns.set(n, hash);
  return hash;
}

/** Checkpoint runs share COMMON and frequent progress lines; their workers --stay unless told otherwise. */
function startCoordinator(site: Site, args: string[], env: Record<string, string> = {}, name = 'coordinator'): Proc {
  return startSiteCoordinator(site, [...COMMON, ...args], { env, name, statusInterval: '0.2' });
}

function startWorker(site: Site, id: string, opts: { stay?: boolean; env?: Record<string, string> } = {}): Proc {
  return startSiteWorker(site, id, { stay: opts.stay ?? true, env: opts.env });
}

async function listening(c: Proc, site: Site): Promise<void> {
  const e = await waitForEvent(c, 'listening', START_MS);
  expect(e.port).toBe(site.port);
}

/** Waits for run_finished and a clean exit; returns the run_finished event. */
async function finished(c: Proc, iterations: number): Promise<LogEvent> {
  const done = await waitForEvent(c, 'run_finished', RUN_MS);
  expect(await waitForExit(c, EXIT_MS)).toEqual(CLEAN_EXIT);
  expect(done.stopped).toBe(false);
  expect(done.iterations).toBe(iterations);
  return done;
}

function ckDir(site: Site, iteration: number): string {
  return join(checkpointsDir(site.runDir), String(iteration).padStart(8, '0'));
}

function numberedDirs(site: Site): string[] {
  const root = checkpointsDir(site.runDir);
  return existsSync(root) ? readdirSync(root).filter((n) => /^\d{8}$/.test(n)).sort() : [];
}

function latestName(site: Site): string {
  return readFileSync(join(checkpointsDir(site.runDir), 'latest'), 'utf8').trim();
}

/** Every numbered checkpoint dir must verify (manifest + every blob's sha256). */
function expectAllCheckpointsVerify(site: Site): void {
  for (const name of numberedDirs(site)) {
    const loaded = readCheckpoint(join(checkpointsDir(site.runDir), name));
    expect(loaded.manifest.iteration, name).toBe(Number(name));
  }
}

/** Polls a filesystem (or other) condition every 10 ms. */
async function pollFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** The worker process was never restarted: it is still running and every line it logged carries its pid. */
function expectSameProcess(w: Proc): void {
  expect(w.exit, `${w.name} exited`).toBeNull();
  expect(w.events.length).toBeGreaterThan(0);
  for (const e of w.events) expect(e.pid, w.name).toBe(w.pid);
}

interface PhaseKeyJson {
  iteration: number;
  phase: 'D' | 'G';
  dStep: number;
}

async function phaseOf(site: Site): Promise<PhaseKeyJson | null> {
  const status = (await (await fetch(`http://127.0.0.1:${site.port}/status`)).json()) as { phase: PhaseKeyJson | null };
  return status.phase;
}

/**
 * Freezes the run inside a phase of the wanted kind: SIGSTOP every worker (the phase in flight
 * then cannot finish), read the phase from GET /status, and if it is the other kind, SIGCONT,
 * let a phase or two pass and try again. Returns with the workers stopped.
 */
async function freezeIn(site: Site, workers: Proc[], phase: 'D' | 'G'): Promise<PhaseKeyJson> {
  for (let attempt = 0; attempt < 40; attempt++) {
    for (const w of workers) process.kill(w.pid, 'SIGSTOP');
    await sleep(150); // results already on the wire land; the next phase's tasks go unanswered
    // Two equal reads 100 ms apart: the coordinator has settled in that phase.
    const first = await phaseOf(site);
    await sleep(100);
    const second = await phaseOf(site);
    if (second?.phase === phase && JSON.stringify(first) === JSON.stringify(second)) return second;
    for (const w of workers) process.kill(w.pid, 'SIGCONT');
    await sleep(5 + ((attempt * 7) % 23));
  }
  throw new Error(`could not catch the run inside a ${phase}-phase`);
}

/**
 * SIGTERMs a coordinator whose workers are frozen, checks the stop events, wakes the workers.
 * wake 'after-abandon': the workers wake once the phase is dropped and answer the close handshake;
 * 'after-exit': they stay frozen until the coordinator is gone (it must not wait on them for long).
 */
async function sigtermWhileFrozen(c: Proc, workers: Proc[], wake: 'after-abandon' | 'after-exit'): Promise<{ abandoned: LogEvent; saved: LogEvent }> {
  const isBye = (e: LogEvent) => e.event === 'coordinator_bye' && e.code === 'COORDINATOR_STOPPING';
  const byesBefore = workers.map((w) => eventsOf(w, isBye).length);
  const reconnectsBefore = workers.map((w) => eventsOf(w, 'reconnecting').length);
  const wakeAll = () => {
    for (const w of workers) if (!w.exit) process.kill(w.pid, 'SIGCONT');
  };
  c.child.kill('SIGTERM');
  try {
    if (wake === 'after-abandon') {
      await waitForEvent(c, 'phase_abandoned', EXIT_MS);
      wakeAll();
    }
    const t0 = performance.now();
    expect(await waitForExit(c, EXIT_MS)).toEqual(CLEAN_EXIT);
    // ws would wait 30 s for a close handshake from a frozen peer; the coordinator cuts it short.
    if (wake === 'after-exit') expect(performance.now() - t0).toBeLessThan(10_000);
  } finally {
    wakeAll();
  }
  expect(eventsOf(c, 'stopping')).toEqual([expect.objectContaining({ signal: 'SIGTERM' })]);
  const abandoned = eventsOf(c, 'phase_abandoned');
  expect(abandoned).toHaveLength(1);
  const saved = eventsOf(c, 'checkpoint_saved');
  expect(saved).toHaveLength(1);
  expect(eventsOf(c, 'run_finished')).toEqual([expect.objectContaining({ stopped: true, iterations: saved[0].iteration })]);
  // Once awake, each worker goes back to reconnecting. A worker that was awake for the close reads
  // its bye first; a frozen one may not (the coordinator cut its connection, possibly with a
  // weights frame still queued in front of the bye), and sees an abnormal close instead.
  for (const [i, w] of workers.entries()) {
    await waitUntil(w, () => (eventsOf(w, 'reconnecting').length > reconnectsBefore[i] ? true : undefined), EXIT_MS, 'reconnecting');
    if (wake === 'after-abandon') expect(eventsOf(w, isBye).length, tail(w, 30)).toBeGreaterThan(byesBefore[i]);
  }
  return { abandoned: abandoned[0], saved: saved[0] };
}

/** Waits until every worker has been welcomed into this coordinator's run. */
async function bothJoined(c: Proc, workers: Proc[]): Promise<void> {
  const runId = String((await waitForEvent(c, 'run_started', START_MS)).runId);
  for (const w of workers) await waitForEvent(w, (e) => e.event === 'welcomed' && e.runId === runId, RUN_MS);
}

function runIdOf(c: Proc): string {
  const started = eventsOf(c, 'run_started');
  expect(started).toHaveLength(1);
  return String(started[0].runId);
}

// ------------------------------------------------------------------ end to end

describe('checkpoint + resume (real processes)', () => {
  beforeAll(async () => {
    await straightHash(N);
  }, TEST_MS);

  it('N/2 iterations, a coordinator restart with --resume --iterations N, equals N straight; --stay workers ride through', async () => {
    const t0 = performance.now();
    const site = await newSite('gan-ck-run-');
    // Both workers take part in run 1 whatever the load: they are up (retrying every 200 ms)
    // before the coordinator starts, and ~20 ms per shard makes its 160 shards last seconds.
    const workerEnv = { GAN_TEST_SHARD_DELAY_MS: '20', GAN_TEST_BACKOFF_MS: '200' };
    const workers = [startWorker(site, 'w1', { env: workerEnv }), startWorker(site, 'w2', { env: workerEnv })];
    for (const w of workers) await waitForEvent(w, 'reconnecting', START_MS);
    const c1 = startCoordinator(site, ['--iterations', String(N / 2), '--checkpoint-every', '10'], {}, 'coordinator 1');
    await listening(c1, site);
    const r1 = await finished(c1, N / 2);
    const run1 = runIdOf(c1);
    expect(numberedDirs(site)).toEqual(['00000010', '00000020']);
    expect(latestName(site)).toBe('00000020');

    // Both workers were in run 1, were told it finished, and (with --stay) keep reconnecting.
    for (const w of workers) {
      await waitUntil(
        w,
        () => {
          const bye = w.events.findIndex((e) => e.event === 'coordinator_bye' && e.code === 'RUN_FINISHED');
          return bye >= 0 && w.events.slice(bye).some((e) => e.event === 'reconnecting') ? true : undefined;
        },
        EXIT_MS,
        'coordinator_bye RUN_FINISHED, then reconnecting',
      );
      expect(eventsOf(w, (e) => e.event === 'welcomed' && e.runId === run1), w.name).toHaveLength(1);
    }

    const c2 = startCoordinator(site, ['--resume', '--iterations', String(N)], {}, 'coordinator 2');
    const resumed = await waitForEvent(c2, 'resumed', START_MS);
    expect(resumed.iteration).toBe(N / 2);
    expect(resumed.from).toBe(ckDir(site, N / 2));
    expect(resumed.changes).toEqual([`iterations ${N / 2} -> ${N}`]);
    expect(resumed.skipped).toEqual([]);
    const r2 = await finished(c2, N);
    const run2 = runIdOf(c2);
    expect(run2).not.toBe(run1);
    expect(r2.weightsHash).not.toBe(r1.weightsHash);
    expect(r2.weightsHash).toBe(await straightHash(N));

    // Same worker processes throughout: alive, one pid each, rejoined run 2 after reconnecting.
    const joinedRun2 = workers.filter((w) => eventsOf(w, (e) => e.event === 'welcomed' && e.runId === run2).length > 0);
    expect(joinedRun2.length).toBeGreaterThanOrEqual(1);
    for (const w of workers) expectSameProcess(w);
    for (const w of joinedRun2) {
      const welcome = eventsOf(w, (e) => e.event === 'welcomed' && e.runId === run2)[0];
      expect(Number(welcome.reconnects), w.name).toBeGreaterThan(0);
    }
    const joinedIds = eventsOf(c2, 'worker_joined').map((e) => e.worker);
    expect(new Set(joinedIds)).toEqual(new Set(joinedRun2.map((w) => w.name.replace('worker ', ''))));
    console.log(`[checkpoint] restart test: ${joinedRun2.length}/2 workers rejoined run 2; ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, TEST_MS);

  it('SIGTERM mid-phase (a D-phase, then a G-phase): exit 0, phase abandoned and checkpointed; resuming to N equals N straight', async () => {
    const t0 = performance.now();
    const site = await newSite('gan-ck-run-');
    const c1 = startCoordinator(site, ['--iterations', '100000', '--checkpoint-every', '0'], {}, 'coordinator 1');
    await listening(c1, site);
    const workers = [startWorker(site, 'w1'), startWorker(site, 'w2')];
    await bothJoined(c1, workers);
    await waitForEvent(c1, (e) => e.event === 'progress' && Number(e.iteration) >= 8, RUN_MS);

    // Stop 1 lands in a D-phase: its real rows were drawn already, so the sampler must roll back.
    const dKey = await freezeIn(site, workers, 'D');
    const s1 = await sigtermWhileFrozen(c1, workers, 'after-exit');
    expect(s1.abandoned).toMatchObject({ iteration: dKey.iteration, phase: 'D', dStep: 0 });
    expect(s1.saved).toMatchObject({ iteration: dKey.iteration, dStep: 0 });

    // Stop 2 lands in a G-phase: the checkpoint sits mid-iteration (D-step done, dStep 1).
    const c2 = startCoordinator(site, ['--resume'], {}, 'coordinator 2');
    const resumed2 = await waitForEvent(c2, 'resumed', START_MS);
    expect(resumed2).toMatchObject({ iteration: dKey.iteration, dStep: 0, changes: [] });
    await bothJoined(c2, workers); // they reconnect with backoff, so this can take a few seconds
    await waitForEvent(c2, (e) => e.event === 'progress' && Number(e.iteration) >= dKey.iteration + 5, RUN_MS);
    const gKey = await freezeIn(site, workers, 'G');
    const s2 = await sigtermWhileFrozen(c2, workers, 'after-abandon');
    expect(s2.abandoned).toMatchObject({ iteration: gKey.iteration, phase: 'G', dStep: 0 });
    expect(s2.saved).toMatchObject({ iteration: gKey.iteration, dStep: 1 });
    expect(latestName(site)).toBe(String(gKey.iteration).padStart(8, '0'));
    expectAllCheckpointsVerify(site);

    const n = gKey.iteration + 10;
    const c3 = startCoordinator(site, ['--resume', '--iterations', String(n)], {}, 'coordinator 3');
    const straight = straightHash(n); // concurrently with the resumed run
    const resumed3 = await waitForEvent(c3, 'resumed', START_MS);
    expect(resumed3).toMatchObject({ iteration: gKey.iteration, dStep: 1, changes: [`iterations 100000 -> ${n}`] });
    const r3 = await finished(c3, n);
    expect(r3.weightsHash).toBe(await straight);
    for (const w of workers) expectSameProcess(w);
    console.log(`[checkpoint] SIGTERM test: stopped in D of iteration ${dKey.iteration}, in G of iteration ${gKey.iteration}, resumed to ${n}; ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, TEST_MS);

  it('SIGKILL while a checkpoint is being written: resume uses the previous one, nothing is corrupted, the run completes', async () => {
    const t0 = performance.now();
    const site = await newSite('gan-ck-run-');
    const root = checkpointsDir(site.runDir);
    // 6 blobs (G, D, Adam m and v for each) x 1 s stall each: a write takes ~6 s.
    const c1 = startCoordinator(site, ['--iterations', String(N), '--checkpoint-every', '5'], { GAN_TEST_CHECKPOINT_STALL_MS: '1000' }, 'coordinator 1');
    await listening(c1, site);
    const w = startWorker(site, 'w1');
    const first = await waitForEvent(c1, 'checkpoint_saved', RUN_MS);
    expect(first.iteration).toBe(5);
    const tmp = await pollFor(() => readdirSync(root).find((n) => n.startsWith('.tmp-00000010-')), RUN_MS, 'the second checkpoint write to start');
    await sleep(1500); // mid-write: a blob or two are on disk, the manifest is not
    expect(c1.exit, 'coordinator 1 must still be writing').toBeNull();
    expect(eventsOf(c1, 'checkpoint_saved')).toHaveLength(1);
    await kill(c1);

    // On disk: the first checkpoint intact and named by `latest`, the second only as a partial temp dir.
    expect(numberedDirs(site)).toEqual(['00000005']);
    expect(latestName(site)).toBe('00000005');
    const partial = readdirSync(join(root, tmp));
    expect(partial).not.toContain('manifest.json');
    expect(partial.length).toBeGreaterThan(0);
    expectAllCheckpointsVerify(site);

    const c2 = startCoordinator(site, ['--resume', '--checkpoint-every', '5'], {}, 'coordinator 2');
    const resumed = await waitForEvent(c2, 'resumed', START_MS);
    expect(resumed.iteration).toBe(first.iteration);
    expect(resumed.from).toBe(ckDir(site, 5));
    expect(resumed.skipped).toEqual([]);
    expect(eventsOf(c2, (e) => e.event === 'warning' && e.code === 'CHECKPOINT_CORRUPT')).toEqual([]);
    const r2 = await finished(c2, N);
    expect(r2.weightsHash).toBe(await straightHash(N));
    expectSameProcess(w);

    expect(numberedDirs(site)).toEqual(['00000030', '00000035', '00000040']);
    expect(latestName(site)).toBe('00000040');
    expectAllCheckpointsVerify(site);
    // The killed writer's temp dir is swept by the next successful write.
    expect(readdirSync(root).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    console.log(`[checkpoint] SIGKILL mid-write test: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, TEST_MS);

  it('a flipped byte in the newest checkpoint: CHECKPOINT_CORRUPT warning, resume from the previous one, same final hash', async () => {
    const t0 = performance.now();
    const site = await newSite('gan-ck-run-');
    const c1 = startCoordinator(site, ['--iterations', '20', '--checkpoint-every', '5'], {}, 'coordinator 1');
    await listening(c1, site);
    const w = startWorker(site, 'w1');
    await finished(c1, 20);
    expect(numberedDirs(site)).toEqual(['00000010', '00000015', '00000020']);

    const newest = ckDir(site, 20);
    const manifest = JSON.parse(readFileSync(join(newest, 'manifest.json'), 'utf8')) as { blobs: Record<string, { file: string }> };
    const gFile = join(newest, manifest.blobs.G.file);
    const bytes = readFileSync(gFile);
    bytes[bytes.length >> 1] ^= 0x01;
    writeFileSync(gFile, bytes);

    const c2 = startCoordinator(site, ['--resume', '--iterations', String(N), '--checkpoint-every', '5'], {}, 'coordinator 2');
    const warning = await waitForEvent(c2, (e) => e.event === 'warning' && e.code === 'CHECKPOINT_CORRUPT', START_MS);
    expect(warning.dir).toBe(newest);
    expect(String(warning.reason)).toContain('sha256');
    const resumed = await waitForEvent(c2, 'resumed', START_MS);
    expect(resumed.from).toBe(ckDir(site, 15));
    expect(resumed.iteration).toBe(15);
    expect(resumed.skipped).toEqual([newest]);
    const r2 = await finished(c2, N);
    expect(r2.weightsHash).toBe(await straightHash(N));
    expectSameProcess(w);
    // The damaged 00000020 was rewritten (or pruned) by the resumed run.
    expectAllCheckpointsVerify(site);
    console.log(`[checkpoint] corrupt-blob test: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, TEST_MS);

  it('config rules on resume: conflicting flags exit 2 with CONFIG_CONFLICT, --lr is a logged change, a used run dir needs --resume', async () => {
    const t0 = performance.now();
    const site = await newSite('gan-ck-run-');
    const c1 = startCoordinator(site, ['--iterations', '5', '--checkpoint-every', '0'], {}, 'coordinator 1');
    await listening(c1, site);
    startWorker(site, 'w1', { stay: false });
    await finished(c1, 5);
    expect(numberedDirs(site)).toEqual(['00000005']);
    const configBefore = readFileSync(join(site.runDir, 'config.json'), 'utf8');

    // These all fail before binding, so they can share the (now free) port and run side by side.
    const cases = [
      { args: ['--resume', '--batch-size', '128'], code: 'CONFIG_CONFLICT', mention: '--batch-size 128' },
      { args: ['--resume', '--seed', '2'], code: 'CONFIG_CONFLICT', mention: '--seed 2' },
      { args: [], code: 'RUN_DIR_HAS_CHECKPOINTS', mention: '--resume' },
    ];
    const procs = cases.map((k) => startCoordinator(site, k.args, {}, `coordinator ${k.args.join(' ') || '(no --resume)'}`));
    for (const [i, k] of cases.entries()) {
      const p = procs[i];
      expect(await waitForExit(p, START_MS), p.name).toEqual({ code: 2, signal: null });
      const stderr = p.stderr.join('\n');
      expect(stderr, p.name).toContain(`error [${k.code}]:`);
      expect(stderr, p.name).toContain(k.mention);
      expect(eventsOf(p, 'listening'), p.name).toEqual([]);
    }
    // A refused resume changes nothing on disk.
    expect(readFileSync(join(site.runDir, 'config.json'), 'utf8')).toBe(configBefore);
    expect(numberedDirs(site)).toEqual(['00000005']);
    expectAllCheckpointsVerify(site);

    const c2 = startCoordinator(site, ['--resume', '--lr', '0.001'], {}, 'coordinator --lr');
    const resumed = await waitForEvent(c2, 'resumed', START_MS);
    expect(resumed.changes).toEqual(['lr 0.0002 -> 0.001']);
    expect(resumed.iteration).toBe(5);
    const started = eventsOf(c2, 'run_started')[0] as { config: { optimizer: { lr: number }; train: { iterations: number } } };
    expect(started.config.optimizer.lr).toBe(0.001);
    expect(started.config.train.iterations).toBe(5);
    await listening(c2, site);
    console.log(`[checkpoint] config-rules test: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, TEST_MS);
});

// ------------------------------------------------------------------ unit level

describe('checkpoint format (unit)', () => {
  const config = resolveConfig({ dataset: 'ring8' }, loadDataSource('ring8'));

  function randomFloats(n: number, seed: number): Float32Array {
    const a = new Float32Array(n);
    let s = seed >>> 0;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      a[i] = (s / 2 ** 32 - 0.5) * 8;
    }
    return a;
  }

  function snapshotAt(iteration: number, dStep = 0): TrainingSnapshot {
    // G as a view with a non-zero byteOffset: the writer must store the view, not its whole buffer.
    const gBacking = randomFloats(1003, iteration * 10 + 1);
    return {
      iteration,
      dStep,
      weights: { G: gBacking.subarray(3), D: randomFloats(777, iteration * 10 + 2) },
      versions: { G: iteration, D: iteration + dStep },
      optimizers: {
        G: { name: 'adam', step: iteration, beta1Power: 0.5 ** iteration, beta2Power: 0.999 ** iteration, slots: [randomFloats(1000, iteration * 10 + 3), randomFloats(1000, iteration * 10 + 4)] },
        D: { name: 'adam', step: iteration + dStep, beta1Power: 0.5 ** (iteration + dStep), beta2Power: 0.999 ** (iteration + dStep), slots: [randomFloats(777, iteration * 10 + 5), randomFloats(777, iteration * 10 + 6)] },
      },
      sampler: { epoch: 0, cursor: 0, batches: iteration + dStep },
    };
  }

  const meta = { config, runId: 'unit-test', metricsTail: [{ iteration: 1 }] };

  function codeOf(fn: () => unknown): string {
    try {
      fn();
    } catch (err) {
      expect(err).toBeInstanceOf(GanError);
      return (err as GanError).code;
    }
    throw new Error('expected a GanError');
  }

  it('writeCheckpoint + readCheckpoint round-trips every array, counter and the sampler position', () => {
    const runDir = makeTempDir('gan-ck-unit-');
    const snap = snapshotAt(7, 1);
    const dir = writeCheckpoint({ runDir, keep: 3 }, snap, meta);
    expect(dir).toBe(join(runDir, 'checkpoints', '00000007'));
    expect(readFileSync(join(runDir, 'checkpoints', 'latest'), 'utf8').trim()).toBe('00000007');

    const { manifest, snapshot } = readCheckpoint(dir);
    expect(hashFloats(snapshot.weights.G)).toBe(hashFloats(snap.weights.G));
    expect(snapshot.weights.G.length).toBe(1000);
    expect(hashFloats(snapshot.weights.D)).toBe(hashFloats(snap.weights.D));
    for (const net of ['G', 'D'] as const) {
      const want = snap.optimizers[net];
      const got = snapshot.optimizers[net];
      expect({ ...got, slots: got.slots.map((s) => hashFloats(s)) }).toEqual({ ...want, slots: want.slots.map((s) => hashFloats(s)) });
    }
    expect(snapshot.iteration).toBe(7);
    expect(snapshot.dStep).toBe(1);
    expect(snapshot.versions).toEqual(snap.versions);
    expect(snapshot.sampler).toEqual(snap.sampler);
    expect(manifest.config).toEqual(config);
    expect(manifest.runId).toBe('unit-test');
    expect(manifest.metricsTail).toEqual(meta.metricsTail);

    const found = findResumeCheckpoint(runDir);
    expect(found.loaded.dir).toBe(dir);
    expect(found.skipped).toEqual([]);
    // A checkpoint directory itself is accepted too.
    expect(findResumeCheckpoint(dir).loaded.snapshot.iteration).toBe(7);
  });

  it('keep-K pruning leaves exactly K numbered dirs and sweeps temp dirs of dead writers', () => {
    const runDir = makeTempDir('gan-ck-unit-');
    const root = checkpointsDir(runDir);
    mkdirSync(join(root, '.tmp-00000099-999999999'), { recursive: true });
    writeFileSync(join(root, '.latest.tmp-999999999'), '00000099\n');
    for (let it = 1; it <= 6; it++) writeCheckpoint({ runDir, keep: 3 }, snapshotAt(it), meta);
    expect(readdirSync(root).sort()).toEqual(['00000004', '00000005', '00000006', 'latest']);
    for (const n of ['00000004', '00000005', '00000006']) expect(readCheckpoint(join(root, n)).snapshot.iteration).toBe(Number(n));
    writeCheckpoint({ runDir, keep: 1 }, snapshotAt(7), meta);
    expect(readdirSync(root).sort()).toEqual(['00000007', 'latest']);
  });

  it('findResumeCheckpoint: NO_CHECKPOINT on an empty dir; damaged or missing newest falls back to the previous one', () => {
    const empty = makeTempDir('gan-ck-unit-');
    expect(codeOf(() => findResumeCheckpoint(empty))).toBe('NO_CHECKPOINT');
    mkdirSync(checkpointsDir(empty));
    expect(codeOf(() => findResumeCheckpoint(empty))).toBe('NO_CHECKPOINT');

    const runDir = makeTempDir('gan-ck-unit-');
    const root = checkpointsDir(runDir);
    for (const it of [1, 2, 3]) writeCheckpoint({ runDir, keep: 3 }, snapshotAt(it), meta);
    // Truncate the newest D blob.
    const d3 = join(root, '00000003', 'D.f32');
    writeFileSync(d3, readFileSync(d3).subarray(0, 100));
    expect(codeOf(() => readCheckpoint(join(root, '00000003')))).toBe('CHECKPOINT_CORRUPT');
    let found = findResumeCheckpoint(runDir);
    expect(found.loaded.snapshot.iteration).toBe(2);
    expect(found.skipped.map((s) => s.dir)).toEqual([join(root, '00000003')]);
    expect(found.skipped[0].reason).toContain('D.f32');

    // `latest` naming a dir that is gone: the newest that verifies is used.
    writeFileSync(join(root, 'latest'), '00000042\n');
    found = findResumeCheckpoint(runDir);
    expect(found.loaded.snapshot.iteration).toBe(2);

    // Nothing usable at all.
    writeFileSync(join(root, '00000002', 'manifest.json'), '{ not json');
    writeFileSync(join(root, '00000001', 'G.f32'), Buffer.alloc(4000));
    expect(codeOf(() => findResumeCheckpoint(runDir))).toBe('NO_VALID_CHECKPOINT');
  });
});
