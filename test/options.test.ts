/**
 * Options added for the quality targets (issue #6): --width for mlp2d, and the presets that
 * record the verified settings. Each check fails if the option is ignored, mis-validated or not
 * carried into the model that is built.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LocalTrainer } from '../trainer/local-trainer.ts';
import { initBackend } from '../shared/backend.ts';
import { parseFlags } from '../shared/cli.ts';
import { GAN_FLAGS, ganOptionsFrom, impliedPresetLine, presetChoice } from '../trainer/gan-flags.ts';
import { DCGAN_DEFAULT_WIDTH, defaultShards, mergeResumeConfig, MLP2D_DEFAULT_WIDTH, resolveConfig } from '../shared/config.ts';
import { loadDataSource, type DataSource } from '../trainer/data/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { buildModels } from '../shared/models.ts';
import { PRESETS } from '../trainer/presets.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

let grid25: DataSource;
let mnist: DataSource;

beforeAll(async () => {
  await initBackend('wasm');
  grid25 = loadDataSource('grid25');
  mnist = loadDataSource('mnist');
}, HEAVY_TEST_MS);

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

/** Output units of every dense kernel of a model, in order. */
function denseUnits(model: ReturnType<typeof buildModels>['g']): number[] {
  return model.trainableWeights.filter((w) => w.originalName.endsWith('/kernel')).map((w) => w.shape[w.shape.length - 1] as number);
}

describe('--width (mlp2d hidden units)', () => {
  it('defaults to 64 and leaves the config without a width field', () => {
    const cfg = resolveConfig({ dataset: 'grid25' }, grid25);
    expect(cfg.model.width).toBeUndefined();
    expect(MLP2D_DEFAULT_WIDTH).toBe(64);
    const { g, d } = buildModels(cfg.model);
    try {
      expect(denseUnits(g)).toEqual([64, 64, 64, 2]);
      expect(denseUnits(d)).toEqual([64, 64, 1]);
    } finally {
      g.dispose();
      d.dispose();
    }
  });

  it('is stored in the config and sets every hidden layer of G and D', () => {
    const cfg = resolveConfig({ dataset: 'grid25', width: 96 }, grid25);
    expect(cfg.model.width).toBe(96);
    const { g, d } = buildModels(cfg.model);
    try {
      expect(denseUnits(g)).toEqual([96, 96, 96, 2]);
      expect(denseUnits(d)).toEqual([96, 96, 1]);
    } finally {
      g.dispose();
      d.dispose();
    }
    // and training runs on it
    const t = new LocalTrainer(resolveConfig({ dataset: 'grid25', width: 96, batchSize: 16, iterations: 2 }, grid25), grid25);
    try {
      for (let i = 0; i < 4; i++) t.runPhase();
      expect(t.state.iteration).toBe(2);
      expect(t.state.weights.G.every(Number.isFinite)).toBe(true);
    } finally {
      t.dispose();
    }
  }, HEAVY_TEST_MS);

  it('is parsed from the command line', () => {
    expect(ganOptionsFrom(parseFlags(['--width', '128'], GAN_FLAGS)).width).toBe(128);
    expect(ganOptionsFrom(parseFlags([], GAN_FLAGS)).width).toBeUndefined();
    expect(configError(() => parseFlags(['--width', '12.5'], GAN_FLAGS)).code).toBe('CLI_BAD_NUMBER');
  });

  it('rejects bad values and models with fixed widths', () => {
    for (const width of [0, -8, 1.5, 5000]) {
      const err = configError(() => resolveConfig({ dataset: 'grid25', width }, grid25));
      expect(err.code).toBe('BAD_WIDTH');
      expect(err.message).toMatch(/--width must be a whole number from 1 to 4096/);
    }
    const err = configError(() => resolveConfig({ dataset: 'mnist', model: 'mlp-small', width: 128 }, mnist));
    expect(err.code).toBe('WIDTH_UNSUPPORTED');
    expect(err.message).toMatch(/--model mlp-small has fixed layer widths/);
  });

  it('cannot change on a resume (the weights would not fit)', () => {
    const saved = resolveConfig({ dataset: 'grid25', width: 128 }, grid25);
    const err = configError(() => mergeResumeConfig(saved, { width: 64 }));
    expect(err.code).toBe('CONFIG_CONFLICT');
    expect(err.message).toMatch(/--width 64 conflicts with the checkpoint, which was trained with 128/);
    expect(mergeResumeConfig(saved, { width: 128, lr: 1e-4 }).config.model.width).toBe(128);
    // a run saved before --width existed (no field) is the default width
    const old = resolveConfig({ dataset: 'grid25' }, grid25);
    expect(mergeResumeConfig(old, { width: 64 }).config.model.width).toBeUndefined();
    expect(configError(() => mergeResumeConfig(old, { width: 128 })).code).toBe('CONFIG_CONFLICT');
  }, HEAVY_TEST_MS);
});

describe('--lr-d (D\'s own learning rate)', () => {
  /** D's weights before and after the first phase (a D-step) of a grid25 run with these options. */
  function firstDStep(opts: Parameters<typeof resolveConfig>[0]): { before: Float32Array; after: Float32Array; hash: () => string; done: () => void } {
    const t = new LocalTrainer(resolveConfig({ dataset: 'grid25', batchSize: 16, shards: 1, iterations: 2, ...opts }, grid25), grid25);
    const before = Float32Array.from(t.state.weights.D);
    t.runPhase();
    return { before, after: Float32Array.from(t.state.weights.D), hash: () => t.weightsHash(), done: () => t.dispose() };
  }

  it('moves D by its own rate: equal to --lr changes nothing, 3x --lr moves D 3x as far on Adam\'s first step', () => {
    const plain = firstDStep({ lr: 1e-3 });
    const same = firstDStep({ lr: 1e-3, lrD: 1e-3 });
    const fast = firstDStep({ lr: 1e-3, lrD: 3e-3 });
    try {
      expect(Array.from(same.after)).toEqual(Array.from(plain.after));
      // Adam's first step moves each weight by about lr (m / sqrt(v) = g / |g|): the ratio of the moves is the ratio of the rates.
      let ratioSum = 0;
      let n = 0;
      for (let i = 0; i < plain.after.length; i++) {
        const d1 = Math.abs(plain.after[i]! - plain.before[i]!);
        if (d1 < 1e-4) continue; // a zero gradient (an unused unit) moves nothing either way
        ratioSum += Math.abs(fast.after[i]! - fast.before[i]!) / d1;
        n++;
      }
      expect(n).toBeGreaterThan(100);
      expect(ratioSum / n).toBeCloseTo(3, 2);
    } finally {
      for (const r of [plain, same, fast]) r.done();
    }
  }, HEAVY_TEST_MS);

  it('is stored only when given, checked, parsed, and may change on a resume like --lr', () => {
    expect(resolveConfig({ dataset: 'grid25' }, grid25).optimizer).not.toHaveProperty('lrD');
    expect(resolveConfig({ dataset: 'grid25', lrD: 4e-4 }, grid25).optimizer.lrD).toBe(4e-4);
    const err = configError(() => resolveConfig({ dataset: 'grid25', lrD: 0 }, grid25));
    expect(err.code).toBe('BAD_LR');
    expect(err.message).toMatch(/--lr-d must be a positive number/);
    expect(ganOptionsFrom(parseFlags(['--lr-d', '4e-4'], GAN_FLAGS)).lrD).toBe(4e-4);
    const saved = resolveConfig({ dataset: 'grid25', lr: 1e-3 }, grid25);
    // Unset, D's rate is --lr's: giving the same value is no change.
    expect(mergeResumeConfig(saved, { lrD: 1e-3 }).changes).toEqual([]);
    const merged = mergeResumeConfig(saved, { lrD: 2e-3 });
    expect(merged.changes).toEqual(['lrD 0.001 -> 0.002']);
    expect(merged.config.optimizer).toMatchObject({ lr: 1e-3, lrD: 2e-3 });
  });
});

/** Filters (or units) of every kernel of a model, in order: a kernel's last axis, but a transposed convolution's kernel is [kh, kw, out, in]. */
function kernelOutputs(model: ReturnType<typeof buildModels>['g']): number[] {
  return model.trainableWeights
    .filter((w) => w.originalName.endsWith('/kernel'))
    .map((w) => (w.originalName.includes('conv2d_transpose') ? w.shape[2] : w.shape[w.shape.length - 1]) as number);
}

describe('--width on dcgan (base channels)', () => {
  it('defaults to 64: the model dcgan always had (D 64 then 128 filters, G 7x7x128 then 64), no width field in the config', () => {
    const cfg = resolveConfig({ dataset: 'mnist', model: 'dcgan' }, mnist);
    expect(cfg.model.width).toBeUndefined();
    expect(DCGAN_DEFAULT_WIDTH).toBe(64);
    const { g, d } = buildModels(cfg.model);
    try {
      expect(kernelOutputs(g)).toEqual([7 * 7 * 128, 64, 1]);
      expect(kernelOutputs(d)).toEqual([64, 128, 1]);
      expect(g.countParams()).toBe(778_305);
      expect(d.countParams()).toBe(138_561);
    } finally {
      g.dispose();
      d.dispose();
    }
  });

  it('sets w and 2w filters in G and D, and trains', () => {
    const cfg = resolveConfig({ dataset: 'mnist', model: 'dcgan', width: 32 }, mnist);
    expect(cfg.model.width).toBe(32);
    const { g, d } = buildModels(cfg.model);
    try {
      expect(kernelOutputs(g)).toEqual([7 * 7 * 64, 32, 1]);
      expect(kernelOutputs(d)).toEqual([32, 64, 1]);
    } finally {
      g.dispose();
      d.dispose();
    }
    const t = new LocalTrainer(resolveConfig({ dataset: 'mnist', model: 'dcgan', width: 8, batchSize: 8, shards: 2, iterations: 2 }, mnist), mnist);
    try {
      for (let i = 0; i < 4; i++) t.runPhase();
      expect(t.state.iteration).toBe(2);
      expect(t.state.weights.G.every(Number.isFinite)).toBe(true);
      expect(t.state.weights.D.every(Number.isFinite)).toBe(true);
    } finally {
      t.dispose();
    }
  }, HEAVY_TEST_MS);

  it('rejects widths beyond 512 and cannot change on a resume', () => {
    const err = configError(() => resolveConfig({ dataset: 'mnist', model: 'dcgan', width: 513 }, mnist));
    expect(err.code).toBe('BAD_WIDTH');
    expect(err.message).toMatch(/--width must be a whole number from 1 to 512 for dcgan; got 513/);
    const saved = resolveConfig({ dataset: 'mnist', model: 'dcgan', width: 32 }, mnist);
    const conflict = configError(() => mergeResumeConfig(saved, { width: 64 }));
    expect(conflict.code).toBe('CONFIG_CONFLICT');
    expect(conflict.message).toMatch(/--width 64 conflicts with the checkpoint, which was trained with 32/);
    // a dcgan run saved without the field is 64 wide
    const old = resolveConfig({ dataset: 'mnist', model: 'dcgan' }, mnist);
    expect(mergeResumeConfig(old, { width: 64 }).config.model.width).toBeUndefined();
    expect(configError(() => mergeResumeConfig(old, { width: 32 })).code).toBe('CONFIG_CONFLICT');
  });
});

describe('presets', () => {
  it('every preset resolves against its data set', () => {
    for (const [name, preset] of Object.entries(PRESETS)) {
      // fashion: the Debian package may be absent here; MNIST has its shape and classes.
      const source = preset.dataset === 'grid25' ? grid25 : preset.dataset === 'mnist' ? mnist : preset.dataset === 'fashion' ? { ...mnist, spec: 'fashion' } : loadDataSource(preset.dataset ?? 'mnist');
      expect(() => resolveConfig(preset, source), name).not.toThrow();
    }
  });

  it('no preset forces a single shard (issue #15): a second worker always has work', () => {
    for (const [name, preset] of Object.entries(PRESETS)) {
      const source = preset.dataset === 'grid25' ? grid25 : preset.dataset === 'mnist' ? mnist : preset.dataset === 'fashion' ? { ...mnist, spec: 'fashion' } : loadDataSource(preset.dataset ?? 'mnist');
      expect(resolveConfig(preset, source).train.shards, name).toBeGreaterThanOrEqual(2);
    }
    expect(resolveConfig(PRESETS.ring8, loadDataSource('ring8')).train.shards).toBe(4);
  });

  it('--shards defaults to batch/16 rows per shard as a power of two, within 1..64, dividing the batch and --pack', () => {
    expect([16, 32, 64, 96, 100, 128, 256, 2048].map((b) => defaultShards(b))).toEqual([1, 2, 4, 4, 4, 8, 16, 64]);
    expect(defaultShards(256, 3)).toBe(1);
    expect(defaultShards(192, 3)).toBe(8);
    expect(resolveConfig({ dataset: 'ring8' }, loadDataSource('ring8')).train.shards).toBe(4);
    expect(resolveConfig({ dataset: 'ring8', batchSize: 512 }, loadDataSource('ring8')).train.shards).toBe(32);
  });

  it('--preset fills in its settings, an explicit flag beside it wins, an unknown name is UNKNOWN_PRESET', () => {
    const opts = (argv: string[]) => ganOptionsFrom(parseFlags(argv, GAN_FLAGS));
    const cfg = resolveConfig(opts(['--preset', 'grid25']), grid25);
    expect(cfg.model.width).toBe(PRESETS.grid25.width);
    expect(cfg.model.pack).toBe(PRESETS.grid25.pack);
    expect(cfg.train.batchSize).toBe(PRESETS.grid25.batchSize);
    expect(cfg.optimizer.lr).toBe(PRESETS.grid25.lr);
    const mine = resolveConfig(opts(['--preset', 'grid25', '--lr', '5e-4', '--iterations', '7']), grid25);
    expect(mine.optimizer.lr).toBe(5e-4);
    expect(mine.train.iterations).toBe(7);
    expect(mine.model.width).toBe(PRESETS.grid25.width);
    const err = configError(() => opts(['--preset', 'grid52']));
    expect(err.code).toBe('UNKNOWN_PRESET');
    expect(err.message).toContain('grid25');
    expect(err.message).toContain('or none');
  }, HEAVY_TEST_MS);

  it('--dataset ring8 / grid25 / fashion get their own preset unless --preset none (issue #18); mnist keeps the plain defaults', () => {
    const opts = (argv: string[]) => ganOptionsFrom(parseFlags(argv, GAN_FLAGS));
    const ring8 = loadDataSource('ring8');
    // What a user typing only the data set gets is the preset the learning test calibrates.
    expect(resolveConfig(opts(['--dataset', 'ring8']), ring8)).toEqual(resolveConfig(PRESETS.ring8, ring8));
    expect(resolveConfig(opts(['--dataset', 'grid25']), grid25)).toEqual(resolveConfig(PRESETS.grid25, grid25));
    expect(presetChoice(parseFlags(['--dataset', 'fashion'], GAN_FLAGS))).toEqual({ name: 'fashion', implied: true });
    // Flags beside it still win.
    const mine = resolveConfig(opts(['--dataset', 'ring8', '--pack', '1', '--iterations', '9']), ring8);
    expect([mine.model.pack, mine.train.iterations, mine.train.dSteps]).toEqual([1, 9, PRESETS.ring8.dSteps]);
    // --preset none: the plain defaults, as before.
    const plain = resolveConfig(opts(['--dataset', 'ring8', '--preset', 'none']), ring8);
    expect(plain).toEqual(resolveConfig({ dataset: 'ring8' }, ring8));
    expect(plain.model.pack).not.toBe(PRESETS.ring8.pack);
    // mnist's defaults are the demo's unconditional settings; its preset is conditional, asked for by name.
    expect(presetChoice(parseFlags(['--dataset', 'mnist'], GAN_FLAGS))).toBeUndefined();
    expect(resolveConfig(opts(['--dataset', 'mnist']), mnist).model.numClasses).toBe(0);
    // An explicit preset is not "implied", and says nothing extra in the log.
    expect(presetChoice(parseFlags(['--preset', 'grid25', '--dataset', 'grid25'], GAN_FLAGS))).toEqual({ name: 'grid25', implied: false });
    expect(impliedPresetLine(presetChoice(parseFlags(['--dataset', 'ring8'], GAN_FLAGS)))?.msg).toMatch(/ring8 preset.*--preset none/);
    expect(impliedPresetLine(presetChoice(parseFlags(['--preset', 'ring8'], GAN_FLAGS)))).toBeUndefined();
  }, HEAVY_TEST_MS);
});
