/**
 * gan-eval: measures what a trained generator learned (trainer/eval/evaluate.ts) and prints every
 * score beside its real-data ceiling.
 *
 *   gan-eval --export runs/ring8/export          # or the run directory holding export/
 *   gan-eval --checkpoint runs/ring8             # newest valid checkpoint of a run
 *   gan-eval --checkpoint runs/mnist/checkpoints/00000300 --samples 2000 --json
 */
import { resolve } from 'node:path';
import { initBackend } from '../shared/backend.ts';
import { parseCli, printInfo } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { loadDataSource } from './data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { Evaluator, flatMetrics, formatReport } from './eval/evaluate.ts';
import { EVAL_CLI } from '../coordinator/cli-specs.ts';
import { exportDirOf, loadGeneratorFromCheckpoint, loadGeneratorFromExport, type LoadedGenerator } from './eval-load.ts';

const MAX_SAMPLES = 200_000;

function parseLabels(text: string): number[] {
  const out = text.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new ConfigError('BAD_LABEL', `--labels expects comma-separated class ids like 0,3,7; got '${text}'`);
  }
  return out;
}

runMain(async () => {
  const v = parseCli(EVAL_CLI, process.argv.slice(2));
  if (printInfo(EVAL_CLI, v)) return 0;
  const exportPath = typeof v.export === 'string' && v.export !== '' ? v.export : null;
  const ckptPath = typeof v.checkpoint === 'string' && v.checkpoint !== '' ? v.checkpoint : null;
  if ((exportPath === null) === (ckptPath === null)) {
    throw new ConfigError('CLI_EVAL_SOURCE', 'pass exactly one of --export <dir> or --checkpoint <run-dir|checkpoint-dir>');
  }
  const samples = v.samples === undefined ? undefined : Number(v.samples);
  if (samples !== undefined && (samples < 2 || samples > MAX_SAMPLES)) throw new ConfigError('BAD_SAMPLES', `--samples must be in 2..${MAX_SAMPLES}; got ${samples}`);
  const seed = v.seed === undefined ? 1 : Number(v.seed);
  if (seed < 0 || seed > 0xffffffff) throw new ConfigError('BAD_SEED', `--seed must be an integer in [0, 2^32); got ${seed}`);
  const labels = typeof v.labels === 'string' ? parseLabels(v.labels) : undefined;

  await initBackend((v.backend as 'auto') ?? 'auto');
  const gen: LoadedGenerator = exportPath
    ? await loadGeneratorFromExport(exportDirOf(exportPath) ?? exportPath)
    : loadGeneratorFromCheckpoint(ckptPath!);
  const { config } = gen;
  if (labels && config.model.numClasses === 0) throw new ConfigError('LABEL_UNCONDITIONAL', '--labels applies to conditional models only; this generator has no class input');
  const source = loadDataSource(typeof v.dataset === 'string' ? v.dataset : config.train.dataset);
  const evaluator = await Evaluator.create(config, source, { classifierDir: typeof v.classifier === 'string' ? resolve(v.classifier) : undefined });
  const t0 = performance.now();
  const report = evaluator.evaluate(gen.generate, { samples, seed, labels });
  const seconds = (performance.now() - t0) / 1000;
  const header = {
    origin: gen.origin,
    iteration: gen.iteration,
    model: config.model.kind,
    dataset: config.train.dataset,
    conditional: config.model.numClasses > 0,
    pack: config.model.pack,
    seed,
    seconds: Number(seconds.toFixed(2)),
  };
  if (v.json === true) {
    process.stdout.write(`${JSON.stringify({ ...header, metrics: flatMetrics(report), report }, null, 2)}\n`);
  } else {
    process.stdout.write(
      `gan-eval: ${gen.origin.kind} ${gen.origin.path} (iteration ${gen.iteration}, ${config.model.kind}${header.conditional ? ', conditional' : ''}${config.model.pack > 1 ? `, pack ${config.model.pack}` : ''})\n${formatReport(report)}\n`,
    );
  }
  evaluator.dispose();
  gen.dispose();
  return 0;
});
