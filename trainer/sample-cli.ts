/**
 * gan-sample: draws samples from an exported generator (see trainer/export.ts) into a PNG, an
 * image grid for image models or a scatter plot for 2-D data. Needs only the export directory.
 *
 * Noise is normalArray(count * noiseDim, deriveSeed(seed, STREAM.sampleGrid)), the derivation the
 * trainers use for their sample grids: with the default seed (the run's) and --count 64 the grid
 * shows the same latent points as the run's own samples/ PNGs.
 */
import { resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/backend.ts';
import { parseCli, printInfo } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { ConfigError } from '../shared/errors.ts';
import { loadExportedModel, readExportMeta } from './export.ts';
import { imageGrid, scatterPlot, writePng } from './png.ts';
import { deriveSeed, normalArray, STREAM } from '../shared/rng.ts';
import { SAMPLE_CLI } from '../coordinator/cli-specs.ts';
import { serveExport } from '../coordinator/generator-page.ts';
import { listenError } from '../coordinator/listen-error.ts';

const MAX_COUNT = 100_000;
const SCATTER_RANGE = 5;

runMain(async () => {
  const v = parseCli(SAMPLE_CLI, process.argv.slice(2));
  if (printInfo(SAMPLE_CLI, v)) return 0;
  if (typeof v.export !== 'string' || v.export === '') {
    throw new ConfigError('CLI_MISSING_EXPORT', '--export <dir> is required: the directory an export wrote (gan.json, generator/, discriminator/)');
  }
  const exportDir = resolve(v.export);
  // gan.json first: a missing or broken export is reported before the backend starts.
  const meta = readExportMeta(exportDir);
  if (v.serve) return serve(exportDir, typeof v.host === 'string' ? v.host : '127.0.0.1', v.port === undefined ? 8601 : Number(v.port));
  const { noiseDim, numClasses, dataShape } = meta.config.model;
  const points = dataShape.length === 1 && dataShape[0] === 2;

  const count = v.count === undefined ? (points ? 1000 : 64) : Number(v.count);
  if (count < 1 || count > MAX_COUNT) throw new ConfigError('BAD_COUNT', `--count must be in 1..${MAX_COUNT}; got ${count}`);
  const seed = v.seed === undefined ? meta.config.train.seed : Number(v.seed);
  if (seed < 0 || seed > 0xffffffff) throw new ConfigError('BAD_SEED', `--seed must be an integer in [0, 2^32); got ${seed}`);
  let label: number | undefined;
  if (v.label !== undefined) {
    label = Number(v.label);
    if (numClasses === 0) throw new ConfigError('LABEL_UNCONDITIONAL', '--label applies to conditional models only; this export has no class input');
    if (label < 0 || label >= numClasses) throw new ConfigError('BAD_LABEL', `--label must be in 0..${numClasses - 1}; got ${label}`);
  }
  if (!points && (dataShape.length !== 3 || (dataShape[2] !== 1 && dataShape[2] !== 3))) {
    throw new ConfigError('SAMPLE_UNSUPPORTED_SHAPE', `cannot draw samples of shape [${dataShape}]: expected [h, w, 1|3] images or [2] points`);
  }
  const out = resolve(typeof v.out === 'string' ? v.out : 'samples.png');

  await initBackend((v.backend as 'auto') ?? 'auto');
  const g = await loadExportedModel(resolve(exportDir, 'generator'));
  const cols = Math.ceil(Math.sqrt(count));
  const z = normalArray(count * noiseDim, deriveSeed(seed, STREAM.sampleGrid));
  let x!: Float32Array;
  tf.tidy(() => {
    const inputs: tf.Tensor[] = [tf.tensor2d(z, [count, noiseDim])];
    if (numClasses > 0) {
      const labels = Int32Array.from({ length: count }, (_, i) => label ?? Math.floor(i / cols) % numClasses);
      inputs.push(tf.oneHot(tf.tensor1d(labels, 'int32'), numClasses));
    }
    // apply, not predict: predict splits into batches of 32, one call keeps rows exactly as the trainer computes them.
    x = (g.apply(inputs) as tf.Tensor).dataSync() as Float32Array;
  });
  g.dispose();
  if (points) {
    writePng(out, scatterPlot(x, count, { range: SCATTER_RANGE }));
  } else {
    const [h, w, c] = dataShape;
    writePng(out, imageGrid(x, count, h, w, c as 1 | 3, cols));
  }
  process.stdout.write(`${out}\n`);
  return 0;
});

/** --serve: the export's generator page over HTTP until SIGINT/SIGTERM (browsers cannot fetch the model from file://). */
async function serve(exportDir: string, host: string, port: number): Promise<number> {
  if (port < 0 || port > 65535) throw new ConfigError('BAD_PORT', `--port must be in 0..65535; got ${port}`);
  let server;
  try {
    server = await serveExport(exportDir, host, port);
  } catch (err) {
    throw listenError(err as Error, host, port);
  }
  const addr = server.address() as { port: number };
  process.stdout.write(`serving the generator page of ${exportDir} at http://${host.includes(':') ? `[${host}]` : host}:${addr.port}/ (Ctrl-C stops)\n`);
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  server.close();
  server.closeAllConnections();
  return 0;
}
