import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DataError } from '../../shared/errors.ts';
import type { Dataset } from '../../shared/data/types.ts';

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

interface IdxType {
  name: string;
  size: number;
  make: (n: number) => IdxData;
  get: (v: DataView, off: number) => number;
}

const TYPES: Record<number, IdxType> = {
  0x08: { name: 'ubyte', size: 1, make: (n) => new Uint8Array(n), get: (v, o) => v.getUint8(o) },
  0x09: { name: 'sbyte', size: 1, make: (n) => new Int8Array(n), get: (v, o) => v.getInt8(o) },
  0x0b: { name: 'short', size: 2, make: (n) => new Int16Array(n), get: (v, o) => v.getInt16(o, false) },
  0x0c: { name: 'int', size: 4, make: (n) => new Int32Array(n), get: (v, o) => v.getInt32(o, false) },
  0x0d: { name: 'float', size: 4, make: (n) => new Float32Array(n), get: (v, o) => v.getFloat32(o, false) },
  0x0e: { name: 'double', size: 8, make: (n) => new Float64Array(n), get: (v, o) => v.getFloat64(o, false) },
};

const hex = (b: number | undefined) => (b === undefined ? '<eof>' : '0x' + b.toString(16).padStart(2, '0'));

function readRaw(path: string): Buffer {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new DataError('IDX_MISSING_FILE', `IDX file ${path} does not exist; check the path`, { cause });
    }
    throw new DataError('IDX_READ_FAILED', `cannot read IDX file ${path} (${code ?? String(cause)}); check it is a readable file`, { cause });
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      return gunzipSync(buf);
    } catch (cause) {
      throw new DataError(
        'IDX_BAD_GZIP',
        `IDX file ${path} starts with the gzip magic but does not decompress (${(cause as Error).message}); re-download it or gunzip it by hand to check`,
        { cause },
      );
    }
  }
  return buf;
}

/**
 * Reads an IDX file (the MNIST container format), gunzipping it first when it starts with the
 * gzip magic whatever its name. Multi-byte values are big-endian on disk and are converted to
 * native typed arrays here.
 */
export function readIdxFile(path: string): { dims: number[]; data: IdxData } {
  const buf = readRaw(path);
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || !(buf[2] in TYPES)) {
    const found = [0, 1, 2, 3].map((i) => hex(buf[i])).join(' ');
    throw new DataError(
      'IDX_BAD_MAGIC',
      `${path} is not an IDX file: expected a header 0x00 0x00 <type 0x08/0x09/0x0b/0x0c/0x0d/0x0e> <ndims>, found ${found}; check the file is an uncompressed or gzipped IDX file`,
    );
  }
  const type = TYPES[buf[2]];
  const ndims = buf[3];
  const headerBytes = 4 + 4 * ndims;
  if (buf.length < headerBytes) {
    throw new DataError(
      'IDX_TRUNCATED',
      `${path} is truncated: header of ${ndims} dims needs ${headerBytes} bytes, file has ${buf.length}; re-download it`,
    );
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < ndims; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const count = dims.reduce((a, b) => a * b, 1);
  const expected = headerBytes + count * type.size;
  if (buf.length < expected) {
    throw new DataError(
      'IDX_TRUNCATED',
      `${path} is truncated: dims [${dims.join(', ')}] of ${type.name} need ${expected} bytes, file has ${buf.length}; re-download it`,
    );
  }
  const data = type.make(count);
  if (type.size === 1) {
    // Single bytes have no endianness: copy in one go instead of value by value.
    new Uint8Array(data.buffer).set(buf.subarray(headerBytes, headerBytes + count));
  } else {
    for (let i = 0; i < count; i++) data[i] = type.get(view, headerBytes + i * type.size);
  }
  return { dims, data };
}

const STEMS = {
  trainImages: ['train-images-idx3-ubyte', 'train-images.idx3-ubyte'],
  trainLabels: ['train-labels-idx1-ubyte', 'train-labels.idx1-ubyte'],
  testImages: ['t10k-images-idx3-ubyte', 't10k-images.idx3-ubyte'],
  testLabels: ['t10k-labels-idx1-ubyte', 't10k-labels.idx1-ubyte'],
};

function candidates(stems: string[]): string[] {
  return stems.flatMap((s) => [s, s + '.gz']);
}

function find(dir: string, stems: string[]): string | null {
  for (const name of candidates(stems)) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

function missing(dir: string, stems: string[], why: string): DataError {
  return new DataError(
    'IDX_MISSING_FILE',
    `${why} in ${dir}: looked for ${candidates(stems).join(', ')}; point idx:<dir> at a folder holding the MNIST-style IDX files`,
  );
}

function readPair(imagesPath: string, labelsPath: string): { images: Uint8Array; labels: Int32Array; rows: number; cols: number } {
  const img = readIdxFile(imagesPath);
  if (img.dims.length !== 3) {
    throw new DataError('IDX_BAD_SHAPE', `${imagesPath} should be 3-D [count, rows, cols], found dims [${img.dims.join(', ')}]`);
  }
  if (!(img.data instanceof Uint8Array)) {
    throw new DataError('IDX_BAD_TYPE', `${imagesPath} should hold unsigned bytes (type 0x08), found ${img.data.constructor.name}; convert the images to 0..255 bytes`);
  }
  const lab = readIdxFile(labelsPath);
  if (lab.dims.length !== 1) {
    throw new DataError('IDX_BAD_SHAPE', `${labelsPath} should be 1-D [count], found dims [${lab.dims.join(', ')}]`);
  }
  if (lab.data instanceof Float32Array || lab.data instanceof Float64Array) {
    throw new DataError('IDX_BAD_TYPE', `${labelsPath} should hold integer class ids, found floats`);
  }
  if (img.dims[0] !== lab.dims[0]) {
    throw new DataError(
      'IDX_COUNT_MISMATCH',
      `${imagesPath} has ${img.dims[0]} images but ${labelsPath} has ${lab.dims[0]} labels; they must come from the same set`,
    );
  }
  const labels = Int32Array.from(lab.data);
  const bad = labels.findIndex((v) => v < 0);
  if (bad >= 0) throw new DataError('IDX_BAD_LABEL', `${labelsPath} has negative label ${labels[bad]} at row ${bad}; labels must be class ids >= 0`);
  return { images: img.data, labels, rows: img.dims[1], cols: img.dims[2] };
}

function toDataset(name: string, images: Uint8Array, labels: Int32Array, rows: number, cols: number, from: number, to: number): Dataset {
  const dim = rows * cols;
  const n = to - from;
  const x = new Float32Array(n * dim);
  const src = images.subarray(from * dim, to * dim);
  for (let i = 0; i < x.length; i++) x[i] = src[i] / 127.5 - 1;
  return { name, x, n, dim, shape: [rows, cols, 1], labels: labels.slice(from, to) };
}

/**
 * Loads an MNIST-style folder (MNIST, Fashion-MNIST, KMNIST...). The t10k files become the
 * held-out set when both are present; otherwise the last 10% of train is held out.
 */
export function loadIdxDir(dir: string): { train: Dataset; heldOut: Dataset } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new DataError('IDX_MISSING_FILE', `IDX directory ${dir} does not exist or is not a directory; check the idx:<dir> path`);
  }
  const trainImages = find(dir, STEMS.trainImages);
  if (!trainImages) throw missing(dir, STEMS.trainImages, 'no training images');
  const trainLabels = find(dir, STEMS.trainLabels);
  if (!trainLabels) throw missing(dir, STEMS.trainLabels, 'no training labels');
  const testImages = find(dir, STEMS.testImages);
  const testLabels = find(dir, STEMS.testLabels);
  // One t10k file without the other is almost certainly an incomplete download, not intent.
  if (testImages && !testLabels) throw missing(dir, STEMS.testLabels, `found ${basename(testImages)} but no test labels`);
  if (testLabels && !testImages) throw missing(dir, STEMS.testImages, `found ${basename(testLabels)} but no test images`);

  const base = basename(dir) || 'idx';
  const tr = readPair(trainImages, trainLabels);
  let train: Dataset;
  let heldOut: Dataset;
  if (testImages && testLabels) {
    const te = readPair(testImages, testLabels);
    if (te.rows !== tr.rows || te.cols !== tr.cols) {
      throw new DataError(
        'IDX_BAD_SHAPE',
        `${testImages} has ${te.rows}x${te.cols} images but ${trainImages} has ${tr.rows}x${tr.cols}; both must have the same size`,
      );
    }
    const nTrain = tr.labels.length;
    train = toDataset(`${base}-train`, tr.images, tr.labels, tr.rows, tr.cols, 0, nTrain);
    heldOut = toDataset(`${base}-test`, te.images, te.labels, te.rows, te.cols, 0, te.labels.length);
  } else {
    const n = tr.labels.length;
    const nHeld = n >= 2 ? Math.max(1, Math.floor(n / 10)) : 0;
    train = toDataset(`${base}-train`, tr.images, tr.labels, tr.rows, tr.cols, 0, n - nHeld);
    heldOut = toDataset(`${base}-heldout`, tr.images, tr.labels, tr.rows, tr.cols, n - nHeld, n);
  }
  let maxLabel = -1;
  for (const ds of [train, heldOut]) for (const v of ds.labels!) if (v > maxLabel) maxLabel = v;
  train.numClasses = heldOut.numClasses = maxLabel + 1;
  return { train, heldOut };
}
