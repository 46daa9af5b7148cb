/**
 * Checkpoints: everything the next step reads (weights, optimizer slots and counters, position
 * in the run, sampler position, resolved config), as a manifest plus binary blobs, each blob with
 * its sha256. Written into a temporary directory, fsynced, renamed into place, and only then is
 * `latest` repointed, so a crash at any instant leaves either the old or the new checkpoint
 * intact and `latest` naming a complete one.
 *
 * The RNG needs no state of its own here: every random draw derives from (run seed, coordinates),
 * and the sampler's position is three integers.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { GanConfig } from '../shared/config.ts';
import { fsyncDir, writeFileSynced } from './durable-file.ts';
import { GanError } from '../shared/errors.ts';
import type { OptimizerState } from './optimizers.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';
import type { Net } from '../shared/protocol.ts';
import type { TrainingSnapshot } from './training-state.ts';

export const CHECKPOINT_FORMAT = 1;
const LATEST = 'latest';

export interface BlobEntry {
  file: string;
  sha256: string;
  floats: number;
}

export interface CheckpointManifest {
  format: number;
  protocol: number;
  createdAt: string;
  runId: string;
  iteration: number;
  dStep: number;
  versions: Record<Net, number>;
  sampler: TrainingSnapshot['sampler'];
  optimizers: Record<Net, Omit<OptimizerState, 'slots'> & { slots: string[] }>;
  config: GanConfig;
  /** The last few progress records, for a glance at where the run was. */
  metricsTail: unknown[];
  blobs: Record<string, BlobEntry>;
}

export interface LoadedCheckpoint {
  dir: string;
  manifest: CheckpointManifest;
  snapshot: TrainingSnapshot;
}

export interface CheckpointWriterConfig {
  runDir: string;
  /** Keep this many newest checkpoints; older ones are deleted after a successful write. */
  keep: number;
  /** Test hook: pause this long after each blob, so a test can kill the process mid-write. */
  stallMs?: number;
}

export function checkpointsDir(runDir: string): string {
  return join(runDir, 'checkpoints');
}

function dirName(iteration: number): string {
  return String(iteration).padStart(8, '0');
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Writes one checkpoint; returns its directory. */
export function writeCheckpoint(
  cfg: CheckpointWriterConfig,
  snap: TrainingSnapshot,
  meta: { config: GanConfig; runId: string; metricsTail: unknown[] },
): string {
  const root = checkpointsDir(cfg.runDir);
  mkdirSync(root, { recursive: true });
  const finalDir = join(root, dirName(snap.iteration));
  const tmpDir = join(root, `.tmp-${dirName(snap.iteration)}-${process.pid}`);
  rmSync(tmpDir, { recursive: true, force: true });
  mkdirSync(tmpDir);
  const blobs: Record<string, BlobEntry> = {};
  const put = (name: string, data: Float32Array) => {
    const file = `${name}.f32`;
    const bytes = bytesOf(data);
    writeFileSynced(join(tmpDir, file), bytes);
    blobs[name] = { file, sha256: sha256(bytes), floats: data.length };
    if (cfg.stallMs) sleepSync(cfg.stallMs);
  };
  put('G', snap.weights.G);
  put('D', snap.weights.D);
  if (snap.gEma) put('G-ema', snap.gEma);
  const optimizers = {} as CheckpointManifest['optimizers'];
  for (const net of ['G', 'D'] as const) {
    const o = snap.optimizers[net];
    const slots = o.slots.map((slot, i) => {
      put(`opt${net}-${i}`, slot);
      return `opt${net}-${i}`;
    });
    optimizers[net] = { name: o.name, step: o.step, beta1Power: o.beta1Power, beta2Power: o.beta2Power, slots };
  }
  const manifest: CheckpointManifest = {
    format: CHECKPOINT_FORMAT,
    protocol: PROTOCOL_VERSION,
    createdAt: new Date().toISOString(),
    runId: meta.runId,
    iteration: snap.iteration,
    dStep: snap.dStep,
    versions: snap.versions,
    sampler: snap.sampler,
    optimizers,
    config: meta.config,
    metricsTail: meta.metricsTail,
    blobs,
  };
  writeFileSynced(join(tmpDir, 'manifest.json'), Buffer.from(JSON.stringify(manifest, null, 2)));
  fsyncDir(tmpDir);
  rmSync(finalDir, { recursive: true, force: true });
  renameSync(tmpDir, finalDir);
  fsyncDir(root);
  // `latest` last: until this rename lands, readers still see the previous complete checkpoint.
  const latestTmp = join(root, `.${LATEST}.tmp-${process.pid}`);
  writeFileSynced(latestTmp, Buffer.from(`${dirName(snap.iteration)}\n`));
  renameSync(latestTmp, join(root, LATEST));
  fsyncDir(root);
  prune(root, cfg.keep);
  return finalDir;
}

function listCheckpointDirs(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => /^\d{8}$/.test(n))
    .sort()
    .reverse();
}

function prune(root: string, keep: number): void {
  for (const name of listCheckpointDirs(root).slice(Math.max(1, keep))) rmSync(join(root, name), { recursive: true, force: true });
  // Leftovers of writes that were killed mid-way.
  for (const name of readdirSync(root)) {
    const leftover = name.startsWith('.tmp-') || name.startsWith(`.${LATEST}.tmp-`);
    if (leftover && !name.endsWith(`-${process.pid}`)) rmSync(join(root, name), { recursive: true, force: true });
  }
}

/** Reads and verifies one checkpoint directory; throws GanError CHECKPOINT_CORRUPT on any problem. */
export function readCheckpoint(dir: string): LoadedCheckpoint {
  const fail = (why: string): never => {
    throw new GanError('CHECKPOINT_CORRUPT', `checkpoint ${dir} is unusable: ${why}`);
  };
  let manifest: CheckpointManifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as CheckpointManifest;
  } catch (err) {
    return fail(`manifest.json cannot be read (${(err as Error).message})`);
  }
  if (manifest.format !== CHECKPOINT_FORMAT) fail(`format ${manifest.format}, this version reads format ${CHECKPOINT_FORMAT}`);
  const blob = (name: string): Float32Array => {
    const entry = manifest.blobs?.[name];
    if (!entry) return fail(`manifest lists no blob '${name}'`);
    let bytes: Buffer;
    try {
      bytes = readFileSync(join(dir, entry.file));
    } catch {
      return fail(`blob ${entry.file} is missing`);
    }
    if (bytes.byteLength !== entry.floats * 4) fail(`blob ${entry.file} has ${bytes.byteLength} bytes, expected ${entry.floats * 4}`);
    if (sha256(bytes) !== entry.sha256) fail(`blob ${entry.file} fails its sha256 check (the file was modified or damaged)`);
    // Copy into an aligned, owned Float32Array.
    const out = new Float32Array(entry.floats);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  };
  const optimizers = {} as TrainingSnapshot['optimizers'];
  for (const net of ['G', 'D'] as const) {
    const o = manifest.optimizers?.[net];
    if (!o) fail(`no optimizer state for ${net}`);
    optimizers[net] = { name: o.name, step: o.step, beta1Power: o.beta1Power, beta2Power: o.beta2Power, slots: o.slots.map(blob) };
  }
  const snapshot: TrainingSnapshot = {
    iteration: manifest.iteration,
    dStep: manifest.dStep,
    weights: { G: blob('G'), D: blob('D') },
    versions: manifest.versions,
    optimizers,
    sampler: manifest.sampler,
  };
  // --g-ema runs carry G's moving average; without it the run could not continue exactly.
  if (manifest.config?.train?.gEma) snapshot.gEma = blob('G-ema');
  return { dir, manifest, snapshot };
}

export interface ResumeReport {
  loaded: LoadedCheckpoint;
  /** Newer checkpoints that failed verification, with why. */
  skipped: { dir: string; reason: string }[];
}

/**
 * Finds the checkpoint to resume from: the one `latest` names, else (or when that one is
 * damaged) the newest that verifies. `path` may name a run directory or one checkpoint directory.
 */
export function findResumeCheckpoint(path: string): ResumeReport {
  const abs = resolve(path);
  if (existsSync(join(abs, 'manifest.json'))) return { loaded: readCheckpoint(abs), skipped: [] };
  const root = existsSync(checkpointsDir(abs)) ? checkpointsDir(abs) : abs;
  const dirs = listCheckpointDirs(root);
  if (dirs.length === 0) {
    throw new GanError('NO_CHECKPOINT', `no checkpoint found under ${root}; start without --resume, or point --resume at a run directory or checkpoint directory`);
  }
  let latest: string | null = null;
  try {
    latest = readFileSync(join(root, LATEST), 'utf8').trim();
  } catch {
    latest = null;
  }
  // `latest` first, then everything older than it, newest first.
  const order = latest && dirs.includes(latest) ? [latest, ...dirs.filter((d) => d < latest!)] : dirs;
  const skipped: ResumeReport['skipped'] = [];
  for (const name of order) {
    try {
      return { loaded: readCheckpoint(join(root, name)), skipped };
    } catch (err) {
      skipped.push({ dir: join(root, name), reason: (err as Error).message });
    }
  }
  throw new GanError('NO_VALID_CHECKPOINT', `every checkpoint under ${root} failed verification: ${skipped.map((s) => s.reason).join('; ')}`);
}
