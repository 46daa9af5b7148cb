/**
 * Result verification (--verify-fraction p) and the ban list.
 *
 * A worker can return a gradient that is finite and the right size but wrong (a bug, bad RAM, a
 * cheat): the codec cannot tell. Because a shard's result does not depend on who computes it, the
 * coordinator can recompute a shard on a second, different worker and compare bit for bit. Which
 * shards are verified is drawn per shard from (run seed, iteration, phase, dStep, shardId), so a
 * run (and a resumed run) verifies the same shards whatever the workers do.
 *
 * PhaseRun (coordinator/phase-run.ts) does the bookkeeping: a verified shard is final only once
 * two workers (different workerIds, same compute backend) agree; on a disagreement a third decides;
 * every worker whose result differs from the agreed one is banned (closed with WS_CLOSE.banned,
 * a `worker_banned` event, its workerId remembered in <run-dir>/banned.json so it cannot rejoin,
 * also after a resume) and everything it contributed to the phase is recomputed.
 *
 * With --wire fp16 nothing changes here: both workers compute on the weights as decoded from
 * fp16 (the coordinator never recomputes a shard itself), and results are compared as decoded,
 * i.e. exactly the fp16-rounded gradients that would be applied. A difference smaller than fp16
 * can resolve is therefore not caught, and could not have changed the run either.
 *
 * With fewer than two eligible workers connected, verified shards wait: the coordinator warns
 * VERIFY_NEEDS_TWO_WORKERS (or VERIFY_NEEDS_ANOTHER_WORKER for a disputed shard) at once and then
 * every waitingLogMs, like NO_WORKERS. It never applies an unverified result in their place.
 *
 * Limits: workerIds are self-declared, so verification catches a faulty or lone cheating worker,
 * not one operator running several colluding workers (they would agree with each other). With
 * p < 1 a wrong worker may contribute to earlier phases before it is caught; p = 1 makes every
 * applied gradient one that two workers agreed on.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../trainer/durable-file.ts';
import { ConfigError } from '../shared/errors.ts';
import type { PhaseKey } from '../trainer/training-state.ts';
import { deriveSeed } from '../shared/rng.ts';

/** Seed stream for the verification draw, apart from shared/rng.ts STREAM values. */
const VERIFY_STREAM = 0x76657269; // "veri"

/** --verify-fraction: a number in [0, 1]; absent means 0 (no verification). */
export function parseVerifyFraction(v: unknown): number {
  if (v === undefined) return 0;
  const p = Number(v);
  if (!Number.isFinite(p) || p < 0 || p > 1) throw new ConfigError('BAD_VERIFY_FRACTION', `--verify-fraction must be a number from 0 to 1, got '${String(v)}'`);
  return p;
}

/**
 * The shards of a phase to verify: each independently with probability `fraction`, reproducibly
 * from the run seed and the phase's position (not from timing or workers).
 */
export function selectVerifiedShards(runSeed: number, key: PhaseKey, shardCount: number, fraction: number): number[] {
  if (!(fraction > 0)) return [];
  const out: number[] = [];
  for (let s = 0; s < shardCount; s++) {
    const u = deriveSeed(runSeed, VERIFY_STREAM, key.iteration, key.phase === 'D' ? 0 : 1, key.dStep, s) / 4294967296;
    if (u < fraction) out.push(s);
  }
  return out;
}

export interface BanRecord {
  workerId: string;
  reason: string;
  iteration: number;
  at: string;
}

/** Banned workerIds of a run, persisted in <run-dir>/banned.json (written atomically). */
export class BanList {
  private bans = new Map<string, BanRecord>();
  private readonly file: string;

  /** `load`: read an existing list (a resumed run); a new run starts empty. */
  constructor(runDir: string, load: boolean) {
    this.file = join(runDir, 'banned.json');
    if (load && existsSync(this.file)) {
      try {
        const list = JSON.parse(readFileSync(this.file, 'utf8')) as BanRecord[];
        for (const b of list) if (b && typeof b.workerId === 'string') this.bans.set(b.workerId, b);
      } catch {
        // A damaged list must not stop a resume; the bans are lost, and verification re-catches.
      }
    }
  }

  has(workerId: string): boolean {
    return this.bans.has(workerId);
  }

  get(workerId: string): BanRecord | undefined {
    return this.bans.get(workerId);
  }

  get size(): number {
    return this.bans.size;
  }

  ids(): string[] {
    return [...this.bans.keys()];
  }

  add(rec: BanRecord): void {
    this.bans.set(rec.workerId, rec);
    writeFileAtomic(this.file, JSON.stringify([...this.bans.values()], null, 2));
  }
}
