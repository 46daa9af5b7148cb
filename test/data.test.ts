import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { DataError } from '../shared/errors.ts';
import { canonicalDataset, classifierDirFor, DEFAULT_CLASSIFIER_DIR, FASHION_CLASSIFIER_DIR } from '../trainer/eval/classifier.ts';
import {
  DATA_SOURCES_HELP,
  FASHION_MNIST_DIR,
  loadFashionMnist,
  grid25,
  loadDataSource,
  loadIdxDir,
  loadMnistPackage,
  readIdxFile,
  ring8,
  sampleMixture,
} from '../trainer/data/index.ts';

const TYPE_CODES = { ubyte: 0x08, sbyte: 0x09, short: 0x0b, int: 0x0c, float: 0x0d, double: 0x0e } as const;
const SIZES = { ubyte: 1, sbyte: 1, short: 2, int: 4, float: 4, double: 8 } as const;

/** Builds an IDX file by hand (big-endian), independently of the reader under test. */
function idx(type: keyof typeof TYPE_CODES, dims: number[], values: ArrayLike<number>): Buffer {
  const size = SIZES[type];
  const header = 4 + 4 * dims.length;
  const buf = Buffer.alloc(header + values.length * size);
  buf[2] = TYPE_CODES[type];
  buf[3] = dims.length;
  dims.forEach((d, i) => buf.writeUInt32BE(d, 4 + 4 * i));
  for (let i = 0; i < values.length; i++) {
    const o = header + i * size;
    const v = values[i];
    if (type === 'ubyte') buf.writeUInt8(v, o);
    else if (type === 'sbyte') buf.writeInt8(v, o);
    else if (type === 'short') buf.writeInt16BE(v, o);
    else if (type === 'int') buf.writeInt32BE(v, o);
    else if (type === 'float') buf.writeFloatBE(v, o);
    else buf.writeDoubleBE(v, o);
  }
  return buf;
}

const root = mkdtempSync(join(tmpdir(), 'gan-data-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
function freshDir(files: Record<string, Buffer>): string {
  const dir = join(root, `d${dirCount++}`);
  mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}

/** n images of rows x cols whose pixel p of image i is (i * 7 + p) % 256. */
function imagePixels(n: number, rows: number, cols: number): number[] {
  return Array.from({ length: n * rows * cols }, (_, k) => (Math.floor(k / (rows * cols)) * 7 + (k % (rows * cols))) % 256);
}

const sha = (a: Float32Array | Int32Array) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

function expectDataError(fn: () => unknown, code: string, ...messageParts: string[]): DataError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(DataError);
  const err = caught as DataError;
  expect(err.code).toBe(code);
  for (const part of messageParts) expect(err.message).toContain(part);
  return err;
}

describe('loadMnistPackage', () => {
  const { train, heldOut } = loadMnistPackage();

  it('splits about 9000 / 1000 with 28x28x1 images and 10 classes', () => {
    expect(train.n).toBeGreaterThan(8500);
    expect(train.n).toBeLessThan(9500);
    expect(heldOut.n).toBeGreaterThan(900);
    expect(heldOut.n).toBeLessThan(1100);
    for (const ds of [train, heldOut]) {
      expect(ds.shape).toEqual([28, 28, 1]);
      expect(ds.dim).toBe(784);
      expect(ds.x.length).toBe(ds.n * 784);
      expect(ds.labels!.length).toBe(ds.n);
      expect(ds.numClasses).toBe(10);
    }
  });

  it('scales values to [-1, 1] and uses the whole range', () => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of train.x) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    expect(lo).toBe(-1);
    expect(hi).toBe(1);
  });

  it('has every label 0..9 in both sets, ordered class by class', () => {
    for (const ds of [train, heldOut]) {
      const labels = ds.labels!;
      expect(new Set(labels)).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
      for (let i = 1; i < labels.length; i++) expect(labels[i]).toBeGreaterThanOrEqual(labels[i - 1]);
    }
  });

  it('holds out every 10th digit of each class: ~1/10 per class', () => {
    for (let d = 0; d < 10; d++) {
      const nTrain = train.labels!.filter((l) => l === d).length;
      const nHeld = heldOut.labels!.filter((l) => l === d).length;
      expect(nHeld).toBe(Math.floor((nTrain + nHeld) / 10));
    }
  });

  it('is deterministic: a fresh parse gives identical bytes', async () => {
    vi.resetModules();
    const fresh = (await import('../trainer/data/mnist.ts')).loadMnistPackage();
    expect(fresh.train === train).toBe(false); // really re-parsed, not the cache
    for (const [a, b] of [[fresh.train, train], [fresh.heldOut, heldOut]]) {
      expect(sha(a.x)).toBe(sha(b.x));
      expect(sha(a.labels!)).toBe(sha(b.labels!));
    }
  });

  it('holds out digit indices 9, 19, ... of each class file', () => {
    const file = join(dirname(createRequire(import.meta.url).resolve('mnist/package.json')), 'src', 'digits', '3.json');
    const raw = (JSON.parse(readFileSync(file, 'utf8')) as { data: number[] }).data;
    const digit = (i: number) => raw.slice(i * 784, (i + 1) * 784).map((v) => Math.fround(v * 2 - 1));
    const firstTrain3 = train.labels!.indexOf(3);
    const firstHeld3 = heldOut.labels!.indexOf(3);
    const row = (x: Float32Array, i: number) => Array.from(x.subarray(i * 784, (i + 1) * 784));
    expect(row(train.x, firstTrain3)).toEqual(digit(0));
    expect(row(train.x, firstTrain3 + 9)).toEqual(digit(10));
    expect(row(heldOut.x, firstHeld3)).toEqual(digit(9));
    expect(row(heldOut.x, firstHeld3 + 1)).toEqual(digit(19));
  });
});

describe('readIdxFile', () => {
  it('round-trips ubyte data, plain and gzipped', () => {
    const values = imagePixels(3, 4, 5);
    const plain = idx('ubyte', [3, 4, 5], values);
    const dir = freshDir({ 'a.idx': plain, 'a.idx.gz': gzipSync(plain), 'looks-plain.idx': gzipSync(plain) });
    for (const name of ['a.idx', 'a.idx.gz', 'looks-plain.idx']) {
      const r = readIdxFile(join(dir, name));
      expect(r.dims).toEqual([3, 4, 5]);
      expect(r.data).toBeInstanceOf(Uint8Array);
      expect(Array.from(r.data)).toEqual(values);
    }
  });

  it('decodes every IDX type big-endian', () => {
    const cases: [keyof typeof TYPE_CODES, number[], Function][] = [
      ['sbyte', [-128, -1, 0, 127], Int8Array],
      ['short', [-32768, -2, 258, 32767], Int16Array],
      ['int', [-2147483648, -3, 16909060, 2147483647], Int32Array],
      ['float', [-1.5, 0, 0.25, 1024.5], Float32Array],
      ['double', [-1e-300, Math.PI, 0, 1e300], Float64Array],
    ];
    for (const [type, values, ctor] of cases) {
      const dir = freshDir({ f: idx(type, [2, 2], values) });
      const r = readIdxFile(join(dir, 'f'));
      expect(r.dims).toEqual([2, 2]);
      expect(r.data).toBeInstanceOf(ctor);
      expect(Array.from(r.data)).toEqual(values);
    }
  });

  it('IDX_MISSING_FILE for a path that does not exist', () => {
    const path = join(root, 'nope-idx1-ubyte');
    expectDataError(() => readIdxFile(path), 'IDX_MISSING_FILE', path, 'does not exist');
  });

  it('IDX_BAD_MAGIC for non-zero leading bytes and for an unknown type code, naming the bytes', () => {
    const dir = freshDir({
      text: Buffer.from('hello world'),
      badtype: Buffer.from([0, 0, 0x07, 1, 0, 0, 0, 0]),
    });
    expectDataError(() => readIdxFile(join(dir, 'text')), 'IDX_BAD_MAGIC', join(dir, 'text'), 'found 0x68 0x65 0x6c 0x6c');
    expectDataError(() => readIdxFile(join(dir, 'badtype')), 'IDX_BAD_MAGIC', 'found 0x00 0x00 0x07 0x01');
  });

  it('IDX_TRUNCATED with expected and actual byte counts', () => {
    const full = idx('ubyte', [3, 4, 5], imagePixels(3, 4, 5)); // 16 + 60 bytes
    const dir = freshDir({ short: full.subarray(0, 50), header: full.subarray(0, 10), gz: gzipSync(full.subarray(0, 50)) });
    expectDataError(() => readIdxFile(join(dir, 'short')), 'IDX_TRUNCATED', join(dir, 'short'), 'need 76 bytes', 'file has 50');
    expectDataError(() => readIdxFile(join(dir, 'header')), 'IDX_TRUNCATED', 'needs 16 bytes', 'file has 10');
    expectDataError(() => readIdxFile(join(dir, 'gz')), 'IDX_TRUNCATED', 'need 76 bytes');
  });

  it('IDX_BAD_GZIP for a corrupt gzip stream', () => {
    const gz = gzipSync(idx('ubyte', [10], imagePixels(1, 1, 10)));
    const dir = freshDir({ 'bad.gz': Buffer.concat([gz.subarray(0, 12), Buffer.from('garbage!garbage!')]) });
    expectDataError(() => readIdxFile(join(dir, 'bad.gz')), 'IDX_BAD_GZIP', join(dir, 'bad.gz'), 'gzip');
  });
});

describe('loadIdxDir', () => {
  const trainImgs = imagePixels(20, 3, 2);
  const trainLabels = Array.from({ length: 20 }, (_, i) => i % 4);
  const testImgs = imagePixels(5, 3, 2);
  const testLabels = [4, 0, 1, 2, 3];

  it('loads train + t10k (gzipped names), scaling bytes to [-1, 1]', () => {
    const dir = freshDir({
      'train-images-idx3-ubyte.gz': gzipSync(idx('ubyte', [20, 3, 2], trainImgs)),
      'train-labels-idx1-ubyte.gz': gzipSync(idx('ubyte', [20], trainLabels)),
      't10k-images-idx3-ubyte': idx('ubyte', [5, 3, 2], testImgs),
      't10k-labels-idx1-ubyte': idx('ubyte', [5], testLabels),
    });
    const { train, heldOut } = loadIdxDir(dir);
    expect(train.n).toBe(20);
    expect(heldOut.n).toBe(5);
    expect(train.shape).toEqual([3, 2, 1]);
    expect(train.dim).toBe(6);
    expect(Array.from(train.labels!)).toEqual(trainLabels);
    expect(Array.from(heldOut.labels!)).toEqual(testLabels);
    expect(train.numClasses).toBe(5); // max label 4 is only in t10k
    expect(heldOut.numClasses).toBe(5);
    for (let i = 0; i < trainImgs.length; i++) expect(train.x[i]).toBeCloseTo(trainImgs[i] / 127.5 - 1, 6);
    const scaled = loadIdxDir(freshDir({ 'train-images.idx3-ubyte': idx('ubyte', [2, 1, 1], [0, 255]), 'train-labels.idx1-ubyte': idx('ubyte', [2], [0, 1]) }));
    expect(Array.from(scaled.train.x.subarray(0, 1)).concat(Array.from(scaled.heldOut.x))).toEqual([-1, 1]);
  });

  it('holds out the last 10% of train when there is no t10k set (dot-variant names)', () => {
    const dir = freshDir({
      'train-images.idx3-ubyte': idx('ubyte', [20, 3, 2], trainImgs),
      'train-labels.idx1-ubyte': idx('ubyte', [20], trainLabels),
    });
    const { train, heldOut } = loadIdxDir(dir);
    expect(train.n).toBe(18);
    expect(heldOut.n).toBe(2);
    expect(Array.from(heldOut.labels!)).toEqual(trainLabels.slice(18));
    expect(heldOut.x[0]).toBeCloseTo(trainImgs[18 * 6] / 127.5 - 1, 6);
    expect(train.numClasses).toBe(4);
  });

  it('IDX_MISSING_FILE lists the names looked for and the folder', () => {
    const dir = freshDir({ 'train-images-idx3-ubyte': idx('ubyte', [20, 3, 2], trainImgs) });
    expectDataError(() => loadIdxDir(dir), 'IDX_MISSING_FILE', dir, 'train-labels-idx1-ubyte', 'train-labels-idx1-ubyte.gz', 'train-labels.idx1-ubyte');
    const empty = freshDir({});
    expectDataError(() => loadIdxDir(empty), 'IDX_MISSING_FILE', 'train-images-idx3-ubyte');
    expectDataError(() => loadIdxDir(join(root, 'no-such-dir')), 'IDX_MISSING_FILE', 'no-such-dir');
  });

  it('IDX_COUNT_MISMATCH names both counts', () => {
    const dir = freshDir({
      'train-images-idx3-ubyte': idx('ubyte', [20, 3, 2], trainImgs),
      'train-labels-idx1-ubyte': idx('ubyte', [19], trainLabels.slice(0, 19)),
    });
    expectDataError(() => loadIdxDir(dir), 'IDX_COUNT_MISMATCH', '20 images', '19 labels');
  });

  it('IDX_BAD_SHAPE when images are not 3-D', () => {
    const dir = freshDir({
      'train-images-idx3-ubyte': idx('ubyte', [20, 6], trainImgs),
      'train-labels-idx1-ubyte': idx('ubyte', [20], trainLabels),
    });
    expectDataError(() => loadIdxDir(dir), 'IDX_BAD_SHAPE', '3-D', '[20, 6]');
  });
});

describe('mixtures', () => {
  it('ring8 has 8 means on a circle of radius 2, std 0.02', () => {
    const m = ring8();
    expect(m.k).toBe(8);
    expect(m.std).toBe(0.02);
    expect(m.means.length).toBe(16);
    for (let i = 0; i < 8; i++) {
      expect(m.means[2 * i]).toBeCloseTo(2 * Math.cos((2 * Math.PI * i) / 8), 6);
      expect(m.means[2 * i + 1]).toBeCloseTo(2 * Math.sin((2 * Math.PI * i) / 8), 6);
    }
  });

  it('grid25 has means at {-4..4 step 2}^2, x outer, std 0.05', () => {
    const m = grid25();
    expect(m.k).toBe(25);
    expect(m.std).toBe(0.05);
    expect(Array.from(m.means.subarray(0, 6))).toEqual([-4, -4, -4, -2, -4, 0]);
    expect(Array.from(m.means.subarray(10, 12))).toEqual([-2, -4]);
    expect(Array.from(m.means.subarray(48))).toEqual([4, 4]);
  });

  for (const m of [ring8(), grid25()]) {
    it(`${m.name}: samples lie near a mean and every mode is hit`, () => {
      const n = 4000;
      const s = sampleMixture(m, n, 42);
      expect(s.length).toBe(2 * n);
      const hits = new Array(m.k).fill(0);
      for (let i = 0; i < n; i++) {
        let best = Infinity;
        let arg = -1;
        for (let j = 0; j < m.k; j++) {
          const d = Math.hypot(s[2 * i] - m.means[2 * j], s[2 * i + 1] - m.means[2 * j + 1]);
          if (d < best) [best, arg] = [d, j];
        }
        expect(best).toBeLessThan(6 * m.std);
        hits[arg]++;
      }
      for (const h of hits) expect(h).toBeGreaterThan(n / m.k / 2);
    });
  }

  it('is deterministic for a seed and differs across seeds', () => {
    const m = ring8();
    expect(sampleMixture(m, 100, 7)).toEqual(sampleMixture(m, 100, 7));
    expect(sampleMixture(m, 100, 7)).not.toEqual(sampleMixture(m, 100, 8));
  });
});

describe('loadDataSource', () => {
  it('mnist -> finite', () => {
    const s = loadDataSource('mnist');
    expect(s.kind).toBe('finite');
    if (s.kind !== 'finite') return;
    expect(s.spec).toBe('mnist');
    expect(s.train.shape).toEqual([28, 28, 1]);
    expect(s.heldOut.n).toBeGreaterThan(0);
  });

  it('idx:<dir> -> finite', () => {
    const dir = freshDir({
      'train-images-idx3-ubyte': idx('ubyte', [10, 2, 2], imagePixels(10, 2, 2)),
      'train-labels-idx1-ubyte': idx('ubyte', [10], Array.from({ length: 10 }, (_, i) => i % 2)),
    });
    const s = loadDataSource(`idx:${dir}`);
    expect(s.kind).toBe('finite');
    if (s.kind !== 'finite') return;
    expect(s.train.n + s.heldOut.n).toBe(10);
    expect(s.train.shape).toEqual([2, 2, 1]);
  });

  it('ring8 / grid25 -> mixture of dim 2', () => {
    for (const spec of ['ring8', 'grid25'] as const) {
      const s = loadDataSource(spec);
      expect(s.kind).toBe('mixture');
      if (s.kind !== 'mixture') return;
      expect(s.mixture.name).toBe(spec);
      expect(s.shape).toEqual([2]);
      expect(s.dim).toBe(2);
    }
  });

  it('DATA_UNKNOWN_SOURCE lists the accepted forms', () => {
    for (const spec of ['cifar10', 'idx:', 'MNIST', 'Fashion']) {
      expectDataError(() => loadDataSource(spec), 'DATA_UNKNOWN_SOURCE', `"${spec}"`, 'mnist', 'fashion', 'idx:<dir>', 'ring8', 'grid25');
    }
    expect(DATA_SOURCES_HELP).toContain('idx:<dir>');
    expect(DATA_SOURCES_HELP).toContain(FASHION_MNIST_DIR);
  });
});

describe('fashion (Fashion-MNIST from Debian)', () => {
  it("reads the Debian package's layout (gzipped train + t10k IDX files) from a folder: fashion-train / fashion-test", () => {
    // A tiny stand-in written here, in the package's file names: 12 train and 4 test 28x28 images.
    const dir = freshDir({
      'train-images-idx3-ubyte.gz': gzipSync(idx('ubyte', [12, 28, 28], imagePixels(12, 28, 28))),
      'train-labels-idx1-ubyte.gz': gzipSync(idx('ubyte', [12], Array.from({ length: 12 }, (_, i) => i % 10))),
      't10k-images-idx3-ubyte.gz': gzipSync(idx('ubyte', [4, 28, 28], imagePixels(4, 28, 28))),
      't10k-labels-idx1-ubyte.gz': gzipSync(idx('ubyte', [4], [9, 0, 3, 5])),
    });
    const { train, heldOut } = loadFashionMnist(dir);
    expect([train.name, heldOut.name]).toEqual(['fashion-train', 'fashion-test']);
    expect([train.n, heldOut.n]).toEqual([12, 4]);
    expect(train.shape).toEqual([28, 28, 1]);
    expect(train.numClasses).toBe(10);
    expect(Array.from(heldOut.labels!)).toEqual([9, 0, 3, 5]);
    // The same bytes through idx:<dir>.
    const viaIdx = loadDataSource(`idx:${dir}`);
    expect(viaIdx.kind === 'finite' && sha(viaIdx.train.x)).toBe(sha(train.x));
  });

  it('says how to install the package when its folder is missing', () => {
    expectDataError(() => loadFashionMnist(join(root, 'no-such-folder')), 'IDX_MISSING_FILE', 'apt-get install -y dataset-fashion-mnist', 'idx:<dir>');
  });

  it('one name per data set for the shipped classifiers: idx:<the Debian folder> is fashion', () => {
    expect(canonicalDataset(`idx:${FASHION_MNIST_DIR}`)).toBe('fashion');
    expect(canonicalDataset(`idx:${FASHION_MNIST_DIR}/`)).toBe('fashion');
    expect(canonicalDataset('fashion')).toBe('fashion');
    expect(canonicalDataset('idx:/elsewhere')).toBe('idx:/elsewhere');
    expect(classifierDirFor('mnist')).toBe(DEFAULT_CLASSIFIER_DIR);
    expect(classifierDirFor('fashion')).toBe(FASHION_CLASSIFIER_DIR);
    expect(classifierDirFor(`idx:${FASHION_MNIST_DIR}`)).toBe(FASHION_CLASSIFIER_DIR);
    expect(classifierDirFor('idx:/elsewhere')).toBeNull();
    expect(classifierDirFor('ring8')).toBeNull();
  });

  // Only where the Debian package is installed (CI does not install it: the tests above cover the loader).
  it.runIf(existsSync(FASHION_MNIST_DIR))('loadDataSource("fashion"): 60,000 train and 10,000 test images, 28x28, 10 classes of 6,000 / 1,000', () => {
    const s = loadDataSource('fashion');
    if (s.kind !== 'finite') throw new Error('expected a finite source');
    expect(s.spec).toBe('fashion');
    expect([s.train.n, s.heldOut.n]).toEqual([60000, 10000]);
    expect(s.train.shape).toEqual([28, 28, 1]);
    expect(s.train.numClasses).toBe(10);
    const perClass = new Array(10).fill(0);
    for (const l of s.heldOut.labels!) perClass[l]++;
    expect(perClass).toEqual(new Array(10).fill(1000));
  }, 60_000);
});
