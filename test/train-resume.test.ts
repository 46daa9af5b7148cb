/**
 * gan-train on the shared schedule (trainer/loop.ts): a run checkpointed at N/2 and resumed with
 * --resume --iterations N ends on the hash of N iterations straight, and --eval-every writes its
 * eval points (and checkpoints land in the coordinator's run-directory layout).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { findResumeCheckpoint } from '../trainer/checkpoint.ts';
import { cleanup, eventsOf, makeTempDir, spawnCli, waitForEvent, waitForExit, type LogEvent } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const RUN_MS = 60_000;
const EXIT_MS = 15_000;
const COMMON = ['--dataset', 'ring8', '--preset', 'none', '--sample-every', '0', '--backend', 'wasm'];
const N = 40;
const CLEAN_EXIT = { code: 0, signal: null };

afterEach(async () => {
  await cleanup();
}, HEAVY_TEST_MS);

async function train(args: string[], name: string): Promise<{ done: LogEvent; events: LogEvent[] }> {
  const p = spawnCli('train', [...COMMON, ...args], { name });
  const done = await waitForEvent(p, 'run_finished', RUN_MS);
  expect(await waitForExit(p, EXIT_MS)).toEqual(CLEAN_EXIT);
  return { done, events: p.events };
}

describe('gan-train checkpoints, resume and --eval-every', () => {
  it('resumed at N/2 with --iterations N equals N straight; --eval-every logs eval points', async () => {
    const straight = await train(['--iterations', String(N), '--run-dir', makeTempDir('gan-tr-straight-')], 'straight');
    expect(straight.done.iterations).toBe(N);

    const runDir = makeTempDir('gan-tr-resume-');
    const first = await train(['--iterations', String(N / 2), '--run-dir', runDir, '--checkpoint-every', '10', '--eval-every', '10', '--eval-samples', '200'], 'first half');
    expect(eventsOf(first.events, 'checkpoint_saved').map((e) => e.iteration)).toEqual([10, 20]);
    const evals = eventsOf(first.events, 'eval');
    expect(evals.map((e) => e.iteration)).toEqual([10, 20]);
    for (const e of evals) expect(e.generator).toBe('g');
    expect(findResumeCheckpoint(runDir).loaded.manifest.iteration).toBe(N / 2);
    const logged = readFileSync(join(runDir, 'log.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogEvent);
    expect(eventsOf(logged, 'eval')).toHaveLength(2);

    const second = await train(['--resume', '--iterations', String(N), '--run-dir', runDir, '--checkpoint-every', '10'], 'resumed');
    const resumed = eventsOf(second.events, 'resumed')[0]!;
    expect(resumed.iteration).toBe(N / 2);
    expect(resumed.changes).toEqual([`iterations ${N / 2} -> ${N}`]);
    expect(second.done.iterations).toBe(N);
    expect(second.done.weightsHash).toBe(straight.done.weightsHash);
    expect(existsSync(join(runDir, 'export', 'generator', 'model.json'))).toBe(true);
  }, HEAVY_TEST_MS * 2);

  it('a resume applies only the flags given: --dataset ring8 (which implies its preset) does not put the preset\'s iterations back', async () => {
    // Started with the preset implied by --dataset ring8, but a shorter run than the preset's.
    const runDir = makeTempDir('gan-tr-preset-');
    const start = ['--dataset', 'ring8', '--sample-every', '0', '--backend', 'wasm', '--run-dir', runDir];
    const first = spawnCli('train', [...start, '--iterations', '8', '--checkpoint-every', '4'], { name: 'preset run' });
    expect(eventsOf([await waitForEvent(first, 'preset_applied', RUN_MS)], 'preset_applied')).toHaveLength(1);
    expect((await waitForEvent(first, 'run_finished', RUN_MS)).iterations).toBe(8);
    expect(await waitForExit(first, EXIT_MS)).toEqual(CLEAN_EXIT);
    // The same command line again, resuming from iteration 4: the run still ends at 8, not 3000.
    const again = spawnCli('train', [...start, '--resume-from', join(runDir, 'checkpoints', '00000004')], { name: 'preset resume' });
    const resumed = await waitForEvent(again, 'resumed', RUN_MS);
    expect(resumed.iteration).toBe(4);
    expect(resumed.changes).toEqual([]);
    expect((await waitForEvent(again, 'run_finished', RUN_MS)).iterations).toBe(8);
    expect(await waitForExit(again, EXIT_MS)).toEqual(CLEAN_EXIT);
    expect(eventsOf(again.events, 'preset_applied')).toEqual([]);
  }, HEAVY_TEST_MS * 2);

  it('a run directory with checkpoints is not overwritten without --resume', async () => {
    const runDir = makeTempDir('gan-tr-refuse-');
    await train(['--iterations', '4', '--run-dir', runDir, '--checkpoint-every', '0'], 'checkpointed');
    const p = spawnCli('train', [...COMMON, '--iterations', '4', '--run-dir', runDir], { name: 'again' });
    const exit = await waitForExit(p, RUN_MS);
    expect(exit.code).toBe(2);
    expect(p.stderr.join('\n')).toContain('RUN_DIR_HAS_CHECKPOINTS');
  }, HEAVY_TEST_MS);
});
