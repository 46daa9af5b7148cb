/**
 * Generator and discriminator architectures, built with tfjs-layers so they export as
 * LayersModel artifacts. D outputs a logit (not a probability): the losses use softplus on
 * logits, which stays finite where log(sigmoid) would underflow.
 *
 * Conditional variants (numClasses > 0) take a one-hot label as a second input on both nets.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelConfig } from './config.ts';
import { DCGAN_DEFAULT_WIDTH, MLP2D_DEFAULT_WIDTH, sampleDim } from './config.ts';
import { Maxout, MinibatchStd, SeededDropout } from './layers.ts';
import { Rng, deriveSeed, STREAM } from './rng.ts';

type SymbolicTensor = tfl.SymbolicTensor;
type Apply = (x: SymbolicTensor) => SymbolicTensor;

const dense = (units: number, activation?: 'relu' | 'tanh' | 'linear'): Apply => (x) =>
  tfl.layers.dense({ units, activation }).apply(x) as SymbolicTensor;
const leaky: Apply = (x) => tfl.layers.leakyReLU({ alpha: 0.2 }).apply(x) as SymbolicTensor;
const relu: Apply = (x) => tfl.layers.reLU().apply(x) as SymbolicTensor;

function chain(x: SymbolicTensor, ...fns: Apply[]): SymbolicTensor {
  return fns.reduce((acc, f) => f(acc), x);
}

function concat(xs: SymbolicTensor[]): SymbolicTensor {
  return tfl.layers.concatenate({ axis: -1 }).apply(xs) as SymbolicTensor;
}

function generatorBody(kind: ModelConfig['kind'], h: SymbolicTensor, cfg: ModelConfig): SymbolicTensor {
  const dim = sampleDim(cfg);
  const toImage = (x: SymbolicTensor) => tfl.layers.reshape({ targetShape: cfg.dataShape }).apply(x) as SymbolicTensor;
  switch (kind) {
    case 'mlp': // the paper's MNIST generator
      return chain(h, dense(1200, 'relu'), dense(1200, 'relu'), dense(dim, 'tanh'), toImage);
    case 'mlp-small':
      return chain(h, dense(256), leaky, dense(512), leaky, dense(dim, 'tanh'), toImage);
    case 'dcgan': {
      // LayerNormalization instead of BatchNorm: per-sample statistics keep a shard's result
      // independent of which other rows share its batch, which bit-identical sharding needs.
      const ln: Apply = (x) => tfl.layers.layerNormalization({ axis: -1 }).apply(x) as SymbolicTensor;
      const up = (filters: number, activation?: 'tanh'): Apply => (x) =>
        tfl.layers.conv2dTranspose({ filters, kernelSize: 4, strides: 2, padding: 'same', activation }).apply(x) as SymbolicTensor;
      // --width w: w filters after the first transposed convolution, 2w in the 7x7 layer
      // (default 64: 128 and 64, the layers the model always had).
      const w = cfg.width ?? DCGAN_DEFAULT_WIDTH;
      const [hh, ww, c] = cfg.dataShape;
      return chain(
        h,
        dense((hh / 4) * (ww / 4) * 2 * w), ln, relu,
        (x) => tfl.layers.reshape({ targetShape: [hh / 4, ww / 4, 2 * w] }).apply(x) as SymbolicTensor,
        up(w), ln, relu,
        up(c, 'tanh'),
      );
    }
    case 'mlp2d': {
      // 64 wide by default: on the wasm backend this is ~2-3x faster per step than 128 wide and
      // learns ring8 as well (see PRESETS.ring8 and test/learning.test.ts); --width for more modes.
      const w = cfg.width ?? MLP2D_DEFAULT_WIDTH;
      return chain(h, dense(w, 'relu'), dense(w, 'relu'), dense(w, 'relu'), dense(dim, 'linear'));
    }
  }
}

function discriminatorBody(kind: ModelConfig['kind'], x: SymbolicTensor, label: SymbolicTensor | null, cfg: ModelConfig): SymbolicTensor {
  const flat = (t: SymbolicTensor) => tfl.layers.flatten().apply(t) as SymbolicTensor;
  const withLabel = (t: SymbolicTensor) => (label ? concat([t, label]) : t);
  const drop = (rate: number, streamId: number): Apply => (t) => new SeededDropout({ rate, streamId }).apply(t) as SymbolicTensor;
  const maxout = (units: number, pieces: number): Apply => (t) =>
    new Maxout({ pieces }).apply(dense(units * pieces)(t)) as SymbolicTensor;
  // Before D's output layer; no layer at all when off, so such models are exactly as before.
  const mbstd: Apply = (t) => (cfg.minibatchStd ? (new MinibatchStd({ groupSize: cfg.minibatchStd }).apply(t) as SymbolicTensor) : t);
  switch (kind) {
    case 'mlp': // the paper's MNIST discriminator: two maxout layers of 240 units x 5 pieces, dropout
      return chain(withLabel(flat(x)), drop(0.2, 1), maxout(240, 5), drop(0.5, 2), maxout(240, 5), drop(0.5, 3), mbstd, dense(1));
    case 'mlp-small':
      return chain(withLabel(flat(x)), dense(512), leaky, dense(256), leaky, mbstd, dense(1));
    case 'dcgan': {
      const conv = (filters: number): Apply => (t) =>
        tfl.layers.conv2d({ filters, kernelSize: 4, strides: 2, padding: 'same' }).apply(t) as SymbolicTensor;
      let inp = x;
      if (label) {
        // The label becomes an extra image channel, so the convolutions see it everywhere.
        const [hh, ww] = cfg.dataShape;
        const plane = chain(label, dense(hh * ww), (t) => tfl.layers.reshape({ targetShape: [hh, ww, 1] }).apply(t) as SymbolicTensor);
        inp = concat([x, plane]);
      }
      // --width w: w and 2w filters (default 64: 64 and 128).
      const w = cfg.width ?? DCGAN_DEFAULT_WIDTH;
      return chain(inp, conv(w), leaky, conv(2 * w), leaky, flat, mbstd, dense(1));
    }
    case 'mlp2d': {
      const w = cfg.width ?? MLP2D_DEFAULT_WIDTH;
      return chain(withLabel(x), dense(w), leaky, dense(w), leaky, mbstd, dense(1));
    }
  }
}

export interface GanModels {
  g: tfl.LayersModel;
  d: tfl.LayersModel;
}

/** Builds fresh G and D for a model config. Initial values are set separately by initialWeights. */
export function buildModels(cfg: ModelConfig): GanModels {
  const conditional = cfg.numClasses > 0;
  const z = tfl.input({ shape: [cfg.noiseDim] });
  const gLabel = conditional ? tfl.input({ shape: [cfg.numClasses] }) : null;
  const gOut = generatorBody(cfg.kind, gLabel ? concat([z, gLabel]) : z, cfg);
  const g = tfl.model({ inputs: gLabel ? [z, gLabel] : [z], outputs: gOut });

  // A packed D takes `pack` flattened samples side by side.
  const x = tfl.input({ shape: cfg.pack > 1 ? [sampleDim(cfg) * cfg.pack] : cfg.dataShape });
  const dLabel = conditional ? tfl.input({ shape: [cfg.numClasses] }) : null;
  const dOut = discriminatorBody(cfg.kind, x, dLabel, cfg);
  const d = tfl.model({ inputs: dLabel ? [x, dLabel] : [x], outputs: dOut });
  return { g, d };
}

/** Where each trainable variable sits in the flat Float32Array a net's weights travel as. */
export interface NetLayout {
  names: string[];
  shapes: number[][];
  offsets: number[];
  sizes: number[];
  total: number;
}

export function netLayout(model: tfl.LayersModel): NetLayout {
  const layout: NetLayout = { names: [], shapes: [], offsets: [], sizes: [], total: 0 };
  for (const w of model.trainableWeights) {
    const shape = w.shape as number[]; // weights always have fully known shapes
    const size = shape.reduce((a, b) => a * b, 1);
    layout.names.push(w.originalName);
    layout.shapes.push([...shape]);
    layout.offsets.push(layout.total);
    layout.sizes.push(size);
    layout.total += size;
  }
  return layout;
}

/**
 * Initial weights from the run seed alone (Glorot-uniform kernels, zero biases and betas, unit
 * gammas), so initialisation does not depend on tfjs's own initialisers or on the backend.
 */
export function initialWeights(layout: NetLayout, runSeed: number, netId: 1 | 2): Float32Array {
  const out = new Float32Array(layout.total);
  layout.names.forEach((name, i) => {
    const role = name.slice(name.lastIndexOf('/') + 1);
    const shape = layout.shapes[i];
    const view = out.subarray(layout.offsets[i], layout.offsets[i] + layout.sizes[i]);
    if (role === 'gamma') view.fill(1);
    if (role !== 'kernel') return;
    // fan-in/out: dense [in, out]; conv [kh, kw, in, out]; conv-transpose [kh, kw, out, in]
    const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
    const fanIn = receptive * shape[shape.length - 2];
    const fanOut = receptive * shape[shape.length - 1];
    const limit = Math.sqrt(6 / (fanIn + fanOut));
    const rng = new Rng(deriveSeed(runSeed, STREAM.init, netId, i));
    for (let j = 0; j < view.length; j++) view[j] = (rng.nextFloat() * 2 - 1) * limit;
  });
  return out;
}
