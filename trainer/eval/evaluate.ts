/**
 * What a generator has learned, measured the same way for gan-eval, --eval-every and the
 * quality bench:
 *
 * - 2-D mixtures: modes captured, share of high-quality samples, reverse KL of the mode
 *   histogram (trainer/eval/mixture-metrics.ts), on 2,500 samples by default;
 * - images: Inception Score and Fréchet distance with the project's classifier
 *   (trainer/eval/image-metrics.ts, trainer/eval/classifier.ts), on 1,000 samples by default;
 *   the Fréchet reference is the data source's train split;
 * - conditional models, additionally: the classifier's accuracy on samples generated for each
 *   requested label.
 *
 * Every score comes with its real-data ceiling, the same score of real data of the same size:
 * fresh samples of the mixture, or held-out digits (never used in training; a seeded subset
 * when fewer samples are asked for than there are held-out digits).
 *
 * Noise comes from normalArray(samples * noiseDim, deriveSeed(seed, EVAL_STREAM)) and labels
 * cycle through the requested ones, so a report depends only on (weights, samples, seed, labels).
 */
import type { GanConfig } from '../../shared/config.ts';
import type { DataSource, Dataset, MixtureSpec } from '../../shared/data/types.ts';
import { sampleMixture } from '../data/mixtures.ts';
import { ConfigError, GanError } from '../../shared/errors.ts';
import { deriveSeed, normalArray, permutation } from '../../shared/rng.ts';
import { accuracyByClass, canonicalDataset, classifierDirFor, DEFAULT_CLASSIFIER_DIR, ImageClassifier, loadClassifier, type ClassAccuracy } from './classifier.ts';
import { classHistogram, featureStats, inceptionScore, type ClassHistogram } from './image-metrics.ts';
import { frechetDistance, type GaussianStats } from './linalg.ts';
import { mixtureMetrics, type MixtureMetrics } from './mixture-metrics.ts';

/** Seed stream of evaluation noise, apart from every training stream in shared/rng.ts. */
export const EVAL_STREAM = 0x45564c; // 'EVL'
export const DEFAULT_MIXTURE_SAMPLES = 2500;
export const DEFAULT_IMAGE_SAMPLES = 1000;
const GENERATE_BATCH = 500;

/** G at inference: rows * sampleDim values for `rows` noise vectors (and labels, when conditional). */
export type GenerateFn = (z: Float32Array, rows: number, labels?: Int32Array) => Float32Array;

export interface EvalOptions {
  /** Generated samples (default: 2,500 for mixtures, 1,000 for images). */
  samples?: number;
  /** Noise seed (default 1). */
  seed?: number;
  /** Conditional models: the labels to generate, cycled (default: every class). */
  labels?: number[];
}

export interface MixtureReport {
  kind: 'mixture';
  dataset: string;
  samples: number;
  metrics: MixtureMetrics;
  /** The same metrics of as many samples of the true mixture. */
  ceiling: MixtureMetrics;
}

export interface LabelReport {
  /** The classifier's accuracy on samples generated for each requested label. */
  perLabel: ClassAccuracy[];
  accuracy: number;
  /** Its accuracy on held-out real digits of the same labels. */
  ceiling: { perLabel: ClassAccuracy[]; accuracy: number };
}

export interface ImageReport {
  kind: 'image';
  dataset: string;
  samples: number;
  inceptionScore: number;
  frechetDistance: number;
  /** The classes the classifier sees in the samples. */
  classes: ClassHistogram;
  ceiling: { samples: number; inceptionScore: number; frechetDistance: number; classes: ClassHistogram };
  /** The Fréchet distance compares against this set's classifier features. */
  reference: { split: string; count: number };
  classifier: { dir: string | null; dataset: string | null; heldOutAccuracy: number | null };
  conditional?: LabelReport;
  warnings: string[];
}

export type EvalReport = MixtureReport | ImageReport;

function isImageShape(shape: number[]): boolean {
  return shape.length === 3;
}

/**
 * Holds what every evaluation of one run reuses: the mixture, or the classifier, the reference
 * statistics of the train split and the held-out digits' scores.
 */
export class Evaluator {
  private refStats: GaussianStats | null = null;
  private heldOutScores: { probs: Float32Array; features: Float32Array } | null = null;
  private ceilingCache = new Map<string, { inceptionScore: number; frechetDistance: number; classes: ClassHistogram }>();

  private constructor(
    readonly config: GanConfig,
    readonly source: DataSource,
    readonly classifier: ImageClassifier | null,
    private readonly ownsClassifier: boolean,
  ) {}

  /**
   * Builds an evaluator for a run's config. Image models need a classifier: `classifier` (shared,
   * not disposed here) or the one in `classifierDir` (default: the data set's shipped one,
   * classifierDirFor, else models/classifier/).
   */
  static async create(config: GanConfig, source: DataSource, opts: { classifier?: ImageClassifier; classifierDir?: string } = {}): Promise<Evaluator> {
    if (source.kind === 'mixture') return new Evaluator(config, source, null, false);
    if (!isImageShape(config.model.dataShape)) {
      throw new GanError('EVAL_UNSUPPORTED', `cannot evaluate samples of shape [${config.model.dataShape}]: expected 2-D mixture points or images`);
    }
    const classifier = opts.classifier ?? (await loadClassifier(opts.classifierDir ?? classifierDirFor(source.spec) ?? DEFAULT_CLASSIFIER_DIR));
    const want = config.model.dataShape.join('x');
    if (classifier.inputShape.join('x') !== want) {
      if (!opts.classifier) classifier.dispose();
      throw new GanError('EVAL_CLASSIFIER_SHAPE', `the classifier takes [${classifier.inputShape}] images; this model makes [${config.model.dataShape}]`);
    }
    return new Evaluator(config, source, classifier, !opts.classifier);
  }

  get kind(): 'mixture' | 'image' {
    return this.source.kind === 'mixture' ? 'mixture' : 'image';
  }

  defaultSamples(): number {
    return this.kind === 'mixture' ? DEFAULT_MIXTURE_SAMPLES : DEFAULT_IMAGE_SAMPLES;
  }

  /** Draws `samples` from G with the evaluation noise; returns them and the labels used. */
  sample(generate: GenerateFn, samples: number, seed: number, labels?: number[]): { x: Float32Array; labels?: Int32Array } {
    const { noiseDim, numClasses } = this.config.model;
    const dim = this.config.model.dataShape.reduce((a, b) => a * b, 1);
    const z = normalArray(samples * noiseDim, deriveSeed(seed, EVAL_STREAM));
    let lab: Int32Array | undefined;
    if (numClasses > 0) {
      const wanted = labels && labels.length > 0 ? labels : Array.from({ length: numClasses }, (_, i) => i);
      for (const l of wanted) {
        if (!Number.isInteger(l) || l < 0 || l >= numClasses) throw new ConfigError('BAD_LABEL', `labels must be in 0..${numClasses - 1}; got ${l}`);
      }
      lab = Int32Array.from({ length: samples }, (_, i) => wanted[i % wanted.length]);
    }
    const x = new Float32Array(samples * dim);
    for (let start = 0; start < samples; start += GENERATE_BATCH) {
      const n = Math.min(GENERATE_BATCH, samples - start);
      const out = generate(z.subarray(start * noiseDim, (start + n) * noiseDim), n, lab?.subarray(start, start + n));
      if (out.length !== n * dim) throw new GanError('EVAL_BAD_GENERATOR', `the generator returned ${out.length} values for ${n} samples of ${dim}`);
      x.set(out, start * dim);
    }
    return { x, labels: lab };
  }

  /** Evaluates a generator. */
  evaluate(generate: GenerateFn, opts: EvalOptions = {}): EvalReport {
    const samples = opts.samples ?? this.defaultSamples();
    const seed = opts.seed ?? 1;
    const minSamples = this.kind === 'mixture' ? 1 : 2;
    if (!Number.isInteger(samples) || samples < minSamples) throw new ConfigError('BAD_SAMPLES', `samples must be a whole number >= ${minSamples}; got ${samples}`);
    const { x, labels } = this.sample(generate, samples, seed, opts.labels);
    return this.evaluateSamples(x, samples, labels, seed);
  }

  /** Scores given samples (rows * sampleDim values) as if G had produced them. */
  evaluateSamples(x: Float32Array, samples: number, labels: Int32Array | undefined, seed = 1): EvalReport {
    if (this.source.kind === 'mixture') {
      const m: MixtureSpec = this.source.mixture;
      return {
        kind: 'mixture',
        dataset: this.source.spec,
        samples,
        metrics: mixtureMetrics(x, samples, m),
        ceiling: mixtureMetrics(sampleMixture(m, samples, deriveSeed(seed, EVAL_STREAM, 2)), samples, m),
      };
    }
    const clf = this.classifier!;
    const { train, heldOut } = this.source;
    const warnings: string[] = [];
    const clfDataset = clf.meta?.dataset ?? null;
    if (clfDataset !== null && canonicalDataset(clfDataset) !== canonicalDataset(this.source.spec)) {
      warnings.push(`the classifier was trained on '${clfDataset}', this model on '${this.source.spec}': the scores measure how ${clfDataset}-like the samples are`);
    }
    const { probs, features } = clf.run(x, samples);
    const report: ImageReport = {
      kind: 'image',
      dataset: this.source.spec,
      samples,
      inceptionScore: inceptionScore(probs, samples, clf.classes),
      frechetDistance: frechetDistance(featureStats(features, samples, clf.featureDim), this.reference()),
      classes: classHistogram(probs, samples, clf.classes),
      ceiling: { samples: Math.min(samples, heldOut.n), ...this.ceiling(Math.min(samples, heldOut.n), seed) },
      reference: { split: train.name, count: train.n },
      classifier: { dir: clf.dir, dataset: clfDataset, heldOutAccuracy: clf.meta?.heldOut.accuracy ?? null },
      warnings,
    };
    if (labels && this.config.model.numClasses > 0) report.conditional = this.labelAccuracy(probs, labels);
    return report;
  }

  /** Classifier features of the train split, fitted once. */
  private reference(): GaussianStats {
    if (!this.refStats) {
      const train = (this.source as Extract<DataSource, { kind: 'finite' }>).train;
      const { features } = this.classifier!.run(train.x, train.n);
      this.refStats = featureStats(features, train.n, this.classifier!.featureDim);
    }
    return this.refStats;
  }

  private heldOut(): { ds: Dataset; probs: Float32Array; features: Float32Array } {
    const ds = (this.source as Extract<DataSource, { kind: 'finite' }>).heldOut;
    if (!this.heldOutScores) this.heldOutScores = this.classifier!.run(ds.x, ds.n);
    return { ds, ...this.heldOutScores };
  }

  /** IS and Fréchet distance of n held-out digits (all of them, or a seeded subset). */
  private ceiling(n: number, seed: number): { inceptionScore: number; frechetDistance: number; classes: ClassHistogram } {
    const { ds, probs, features } = this.heldOut();
    const key = n >= ds.n ? `all` : `${n}/${seed}`;
    const hit = this.ceilingCache.get(key);
    if (hit) return hit;
    const clf = this.classifier!;
    let p = probs;
    let f = features;
    if (n < ds.n) {
      // Held-out rows are ordered class by class: a prefix would be a few classes only.
      const rows = permutation(ds.n, deriveSeed(seed, EVAL_STREAM, 3)).subarray(0, n);
      p = new Float32Array(n * clf.classes);
      f = new Float32Array(n * clf.featureDim);
      rows.forEach((r, i) => {
        p.set(probs.subarray(r * clf.classes, (r + 1) * clf.classes), i * clf.classes);
        f.set(features.subarray(r * clf.featureDim, (r + 1) * clf.featureDim), i * clf.featureDim);
      });
    }
    const out = {
      inceptionScore: inceptionScore(p, n, clf.classes),
      frechetDistance: frechetDistance(featureStats(f, n, clf.featureDim), this.reference()),
      classes: classHistogram(p, n, clf.classes),
    };
    this.ceilingCache.set(key, out);
    return out;
  }

  private labelAccuracy(probs: Float32Array, labels: Int32Array): LabelReport {
    const clf = this.classifier!;
    const classes = clf.classes;
    const wanted = new Set(labels);
    const keep = (list: ClassAccuracy[]) => list.filter((c) => wanted.has(c.label));
    const gen = accuracyByClass(ImageClassifier.argmax(probs, labels.length, classes), labels, classes);
    const { ds, probs: hp } = this.heldOut();
    const real = accuracyByClass(ImageClassifier.argmax(hp, ds.n, classes), ds.labels!, classes);
    const realKept = keep(real.perClass);
    const realCount = realKept.reduce((a, c) => a + c.count, 0);
    return {
      perLabel: keep(gen.perClass),
      accuracy: gen.accuracy,
      ceiling: { perLabel: realKept, accuracy: realCount > 0 ? realKept.reduce((a, c) => a + c.correct, 0) / realCount : NaN },
    };
  }

  dispose(): void {
    if (this.ownsClassifier) this.classifier?.dispose();
  }
}

const r4 = (x: number) => Number(x.toFixed(4));

/**
 * The headline numbers of a report as flat fields (the `eval` log event, bench rows). A value
 * that is not a finite number (reverse KL with no high-quality sample, the class max/min ratio
 * when a class got no sample: classMinShare is 0 then) is left out.
 */
export function flatMetrics(report: EvalReport): Record<string, number> {
  const raw: Record<string, number> =
    report.kind === 'mixture'
      ? {
          samples: report.samples,
          modesCaptured: report.metrics.modesCaptured,
          modes: report.metrics.modes,
          highQuality: r4(report.metrics.highQuality),
          reverseKl: r4(report.metrics.reverseKl),
        }
      : {
          samples: report.samples,
          inceptionScore: r4(report.inceptionScore),
          frechetDistance: r4(report.frechetDistance),
          inceptionScoreReal: r4(report.ceiling.inceptionScore),
          frechetDistanceReal: r4(report.ceiling.frechetDistance),
          classMaxShare: r4(report.classes.maxShare),
          classMinShare: r4(report.classes.minShare),
          classMaxMin: r4(report.classes.maxMinRatio),
          classMaxMinReal: r4(report.ceiling.classes.maxMinRatio),
          ...(report.conditional ? { labelAccuracy: r4(report.conditional.accuracy), labelAccuracyReal: r4(report.conditional.ceiling.accuracy) } : {}),
        };
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => Number.isFinite(v)));
}

/** A human-readable table of a report: every score beside its real-data ceiling. */
export function formatReport(report: EvalReport): string {
  const lines: string[] = [];
  const row = (name: string, gen: string, real: string) => lines.push(`  ${name.padEnd(34)}${gen.padStart(12)}${real.padStart(12)}`);
  const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a');
  const fix = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  if (report.kind === 'mixture') {
    const { metrics: m, ceiling: c } = report;
    lines.push(`${report.dataset}: ${report.samples} generated samples; real data: ${c.samples} samples of the true mixture`);
    row('metric', 'generated', 'real data');
    row('modes captured', `${m.modesCaptured}/${m.modes}`, `${c.modesCaptured}/${c.modes}`);
    row('high-quality samples (<= 3 std)', pct(m.highQuality), pct(c.highQuality));
    row('reverse KL (mode histogram)', fix(m.reverseKl, 4), fix(c.reverseKl, 4));
    row('modes with any high-quality sample', `${m.modesAny}/${m.modes}`, `${c.modesAny}/${c.modes}`);
    lines.push(`  high-quality samples per mode: ${m.counts.join(' ')}`);
    return lines.join('\n');
  }
  const acc = report.classifier.heldOutAccuracy;
  lines.push(
    `classifier: ${report.classifier.dir ?? '(in memory)'}${report.classifier.dataset ? `, trained on ${report.classifier.dataset}` : ''}${acc !== null ? `, held-out accuracy ${pct(acc)}` : ''}`,
  );
  lines.push(`${report.dataset}: ${report.samples} generated samples; real data: ${report.ceiling.samples} held-out images; Fréchet reference: ${report.reference.count} images of ${report.reference.split}`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  row('metric', 'generated', 'real data');
  row('Inception Score (classifier)', fix(report.inceptionScore, 3), fix(report.ceiling.inceptionScore, 3));
  row('Fréchet distance (features)', fix(report.frechetDistance, 3), fix(report.ceiling.frechetDistance, 3));
  const ratio = (h: ClassHistogram) => (Number.isFinite(h.maxMinRatio) ? h.maxMinRatio.toFixed(2) : 'inf');
  row('class share max/min (<= 1.5 wanted)', ratio(report.classes), ratio(report.ceiling.classes));
  row('largest / smallest class share', `${pct(report.classes.maxShare)}/${pct(report.classes.minShare)}`, `${pct(report.ceiling.classes.maxShare)}/${pct(report.ceiling.classes.minShare)}`);
  lines.push(`  samples per class (classifier's argmax): ${report.classes.counts.map((c, i) => `${i}:${c}`).join(' ')}`);
  if (report.conditional) {
    const c = report.conditional;
    row('label accuracy (all requested)', pct(c.accuracy), pct(c.ceiling.accuracy));
    c.perLabel.forEach((l, i) => row(`  label ${l.label} (${l.count} samples)`, pct(l.accuracy), pct(c.ceiling.perLabel[i]?.accuracy ?? NaN)));
  }
  return lines.join('\n');
}
