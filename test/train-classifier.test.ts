/**
 * npm run train-classifier on a data set other than mnist (#17: a classifier per image data set):
 * a tiny gzipped IDX folder written here in Fashion-MNIST's file layout (no Debian package, no
 * download), trained for one step, saved with classifier.json naming its data set, and loadable
 * by gan-eval's loader; and the refusal to overwrite the MNIST classifier by default.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClassifierMeta } from '../trainer/eval/classifier.ts';
import { cleanup, makeTempDir, ROOT } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const run = promisify(execFile);
const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');
const SCRIPT = join(ROOT, 'scripts', 'train-classifier.ts');

afterAll(cleanup, HEAVY_TEST_MS);

/** An IDX file of unsigned bytes (big-endian header), built by hand. */
function idxBytes(dims: number[], values: ArrayLike<number>): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(Uint8Array.from(values))]);
}

/** n 28x28 images whose class c is a bright horizontal band at rows 2c..2c+4. */
function fixture(dir: string, name: string, n: number): void {
  const labels = Array.from({ length: n }, (_, i) => i % 10);
  const pixels = new Uint8Array(n * 784);
  labels.forEach((c, i) => {
    for (let y = 2 * c; y < 2 * c + 5; y++) for (let x = 4; x < 24; x++) pixels[i * 784 + y * 28 + x] = 255;
  });
  writeFileSync(join(dir, `${name}-images-idx3-ubyte.gz`), gzipSync(idxBytes([n, 28, 28], pixels)));
  writeFileSync(join(dir, `${name}-labels-idx1-ubyte.gz`), gzipSync(idxBytes([n], labels)));
}

describe('train-classifier on another data set', () => {
  it('trains on an idx: folder (gzipped, Fashion-MNIST names) into --out, with classifier.json naming the data set and the subset', async () => {
    const data = makeTempDir('gan-clf-data-');
    fixture(data, 'train', 100);
    fixture(data, 't10k', 20);
    const out = join(makeTempDir('gan-clf-out-'), 'clf');
    const { stdout } = await run(TSX, [SCRIPT, '--dataset', `idx:${data}`, '--out', out, '--epochs', '1', '--batch-size', '16', '--train-limit', '64', '--backend', 'wasm', '--quiet'], { cwd: ROOT });
    expect(stdout).toMatch(/64 train \/ 20 held-out images/);
    for (const f of ['model.json', 'weights.bin', 'classifier.json', 'README.md']) expect(existsSync(join(out, f)), f).toBe(true);
    const meta = JSON.parse(readFileSync(join(out, 'classifier.json'), 'utf8')) as ClassifierMeta;
    expect(meta.dataset).toBe(`idx:${data}`);
    expect(meta.classes).toBe(10);
    expect(meta.heldOut.count).toBe(20);
    expect(meta.training.trainCount).toBe(64);
    expect(meta.training.trainLimit).toBe(64);
    expect(readFileSync(join(out, 'README.md'), 'utf8')).toContain(`npm run train-classifier -- --dataset idx:${data} --train-limit 64 --epochs 1 --batch-size 16`);
  }, HEAVY_TEST_MS);

  it('refuses a data set without a shipped classifier directory unless --out is given (models/classifier/ stays MNIST)', async () => {
    const data = makeTempDir('gan-clf-data-');
    fixture(data, 'train', 20);
    const err = (await run(TSX, [SCRIPT, '--dataset', `idx:${data}`], { cwd: ROOT }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    ))!;
    expect(err).not.toBeNull();
    expect(err.code).toBe(2);
    expect(err.stderr).toContain('--out <dir>');
  }, HEAVY_TEST_MS);
});
