/**
 * Sample grids from one fixed noise batch (fixed for the whole run), so successive PNGs show the
 * same latent points taking shape. Mixtures are drawn as a scatter over the true means.
 */
import { join } from 'node:path';
import type { DataSource } from '../shared/data/types.ts';
import { imageGrid, scatterPlot, writePng } from './png.ts';
import type { GanReplica } from '../shared/replica.ts';
import { deriveSeed, normalArray, STREAM } from '../shared/rng.ts';

const GRID_ROWS = 8;
const SCATTER_POINTS = 1000;

export function sampleFileName(iteration: number): string {
  return `${String(iteration).padStart(7, '0')}.png`;
}

/** Renders G's current samples (the replica must hold the master G weights) into dir; returns the path. */
export function writeSampleImage(replica: GanReplica, source: DataSource, dir: string, iteration: number): string {
  const { model, train } = replica.config;
  const file = join(dir, sampleFileName(iteration));
  const n = source.kind === 'mixture' ? SCATTER_POINTS : GRID_ROWS * GRID_ROWS;
  const z = normalArray(n * model.noiseDim, deriveSeed(train.seed, STREAM.sampleGrid));
  // Conditional grids: row r shows class r % numClasses, so each row is one requested label.
  const labels = model.numClasses > 0 ? Int32Array.from({ length: n }, (_, i) => Math.floor(i / GRID_ROWS) % model.numClasses) : undefined;
  const x = replica.generate(z, n, labels);
  if (source.kind === 'mixture') {
    const range = Math.max(...Array.from(source.mixture.means, Math.abs)) + 1;
    writePng(file, scatterPlot(x, n, { range, means: source.mixture.means }));
  } else {
    const [h, w, c] = model.dataShape;
    writePng(file, imageGrid(x, n, h, w, c as 1 | 3, GRID_ROWS));
  }
  return file;
}
