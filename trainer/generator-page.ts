/**
 * A web page that uses the trained generator, as tfjs-examples' mnist-acgan does: it loads
 * `generator/model.json` with tf.loadLayersModel and draws new samples on a button press (for a
 * conditional model, a row per label, or 64 samples of one label). Written beside every export as
 * `<export>/index.html`, and served by the coordinator at `/export/` (coordinator/generator-page.ts)
 * and by `gan-sample --serve`.
 *
 * The page is one file that makes no external request: tfjs (core, the cpu backend, layers) is
 * inlined from the browser bundles in node_modules; it fetches only `gan.json` and
 * `generator/model.json` + `weights.bin`, relative to itself. Browsers do not let a page opened as
 * file:// fetch files, so view it through a server (the coordinator's /export/, or
 * `gan-sample --serve --export <dir>`); opened from disk it says so.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { writeFileAtomic } from './durable-file.ts';

export const GENERATOR_PAGE_FILE = 'index.html';

/** The browser bundles inlined into the page, in load order (tf-backend-cpu extends the global `tf` made by tf-core). */
const BUNDLES = ['@tensorflow/tfjs-core/dist/tf-core.es2017.min.js', '@tensorflow/tfjs-backend-cpu/dist/tf-backend-cpu.es2017.min.js', '@tensorflow/tfjs-layers/dist/tf-layers.es2017.min.js'];

/** Scripts and style are inline; the page fetches only files beside it. */
export const GENERATOR_PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

let cached: string | null = null;

function bundle(spec: string): string {
  const require = createRequire(import.meta.url);
  const text = readFileSync(require.resolve(spec), 'utf8').replace(/\/\/# sourceMappingURL=\S+\s*$/, '');
  // Inside an inline <script>, "</script" would end it.
  return text.replace(/<\/script/gi, '<\\/script');
}

/** The page's HTML (built once per process: ~700 KB, most of it tfjs). */
export function generatorPageHtml(): string {
  if (cached) return cached;
  const scripts = BUNDLES.map((b) => `<script>/* ${b} (Apache-2.0) */\n${bundle(b)}\n</script>`).join('\n');
  cached = PAGE.replace('<!--TFJS-->', () => scripts);
  return cached;
}

/** Writes `<exportDir>/index.html` (atomically); returns its path. */
export function writeGeneratorPage(exportDir: string): string {
  const file = join(exportDir, GENERATOR_PAGE_FILE);
  writeFileAtomic(file, generatorPageHtml());
  return file;
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>GAN generator</title>
<style>
  :root { --fg: #1d2430; --muted: #687385; --line: #d9dee6; --accent: #2f6fde; --bg: #f6f7f9; }
  body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
  main { max-width: 920px; margin: 0 auto; padding: 20px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: var(--muted); margin: 0 0 16px; }
  .controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 12px; }
  button { font: inherit; padding: 6px 12px; border: 1px solid var(--line); border-radius: 6px; background: #fff; cursor: pointer; }
  button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
  button[aria-pressed="true"] { border-color: var(--accent); color: var(--accent); font-weight: 600; }
  button:disabled { opacity: .5; cursor: default; }
  canvas { background: #000; border-radius: 6px; image-rendering: pixelated; max-width: 100%; }
  canvas.points { background: #fff; border: 1px solid var(--line); }
  #labels { display: flex; flex-wrap: wrap; gap: 4px; }
  #status { color: var(--muted); margin: 8px 0; }
  #status.error { color: #b3261e; }
  code { font-size: 12px; }
</style>
</head>
<body>
<main>
  <h1>Samples from the trained generator</h1>
  <p class="sub" id="about">loading the model...</p>
  <div class="controls">
    <button class="primary" id="draw" disabled>Draw new samples</button>
    <span id="labels" hidden></span>
  </div>
  <canvas id="canvas" width="8" height="8" data-draws="0"></canvas>
  <p id="status"></p>
</main>
<!--TFJS-->
<script>
'use strict';
const $ = (id) => document.getElementById(id);
const SCATTER_RANGE = 5;
let model = null, noiseDim = 0, numClasses = 0, shape = [], label = -1;

function fail(text) {
  $('status').textContent = text;
  $('status').className = 'error';
  $('about').textContent = 'no generator loaded';
}

async function main() {
  if (location.protocol === 'file:') {
    return fail('This page was opened from disk (file://), where a browser may not fetch the model beside it. View it through a server instead: gan-sample --serve --export <this directory>, or the coordinator\\'s /export/ page while it runs.');
  }
  await tf.setBackend('cpu');
  let meta = null;
  try {
    const res = await fetch('gan.json', { cache: 'no-store' });
    if (res.ok) meta = await res.json();
  } catch (err) { /* gan.json is optional: the model says enough */ }
  try {
    model = await tf.loadLayersModel('generator/model.json');
  } catch (err) {
    return fail('No exported generator here yet (' + err.message + '). The generator is exported when the run ends; reload then.');
  }
  noiseDim = model.inputs[0].shape[1];
  numClasses = model.inputs.length > 1 ? model.inputs[1].shape[1] : 0;
  shape = (meta && meta.config && meta.config.model.dataShape) || model.outputs[0].shape.slice(1);
  const cfg = meta && meta.config;
  $('about').textContent = (cfg ? cfg.train.dataset + ', ' + cfg.model.kind + (numClasses ? ' (conditional, ' + numClasses + ' classes)' : '') + ', after ' + meta.iteration + ' iterations' + (cfg.train.gEma ? ', moving average of G' : '') + '. ' : '')
    + 'Each press draws fresh noise z ~ N(0, 1)' + (numClasses ? ' and feeds a class label.' : '.');
  if (numClasses > 0) {
    const box = $('labels');
    const add = (text, value) => {
      const b = document.createElement('button');
      b.textContent = text;
      b.dataset.label = String(value);
      b.setAttribute('aria-pressed', String(value === label));
      b.addEventListener('click', () => {
        label = value;
        for (const o of box.children) o.setAttribute('aria-pressed', String(Number(o.dataset.label) === label));
        draw();
      });
      box.appendChild(b);
    };
    add('a row per label', -1);
    for (let c = 0; c < numClasses; c++) add('label ' + c, c);
    box.hidden = false;
  }
  $('draw').disabled = false;
  $('draw').addEventListener('click', draw);
  draw();
}

function draw() {
  const points = shape.length === 1 && shape[0] === 2;
  const count = points ? 1000 : numClasses > 0 && label < 0 ? numClasses * 8 : 64;
  const cols = 8;
  const t0 = performance.now();
  const x = tf.tidy(() => {
    const inputs = [tf.randomNormal([count, noiseDim])];
    if (numClasses > 0) {
      const labels = Array.from({ length: count }, (_, i) => (label >= 0 ? label : Math.floor(i / cols) % numClasses));
      inputs.push(tf.oneHot(tf.tensor1d(labels, 'int32'), numClasses));
    }
    return model.apply(inputs).dataSync();
  });
  const canvas = $('canvas');
  const ctx = canvas.getContext('2d');
  if (points) {
    const size = 480;
    canvas.width = size; canvas.height = size; canvas.className = 'points';
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, size, size);
    ctx.fillStyle = 'rgba(47, 111, 222, 0.55)';
    const px = (v) => ((v + SCATTER_RANGE) / (2 * SCATTER_RANGE)) * size;
    for (let i = 0; i < count; i++) ctx.fillRect(px(x[2 * i]) - 1.5, size - px(x[2 * i + 1]) - 1.5, 3, 3);
  } else {
    const [h, w, c] = shape.length === 3 ? shape : [Math.round(Math.sqrt(shape[0])), Math.round(Math.sqrt(shape[0])), 1];
    const rows = Math.ceil(count / cols);
    const img = ctx.createImageData(cols * w, rows * h);
    for (let n = 0; n < count; n++) {
      const ox = (n % cols) * w, oy = Math.floor(n / cols) * h;
      for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) {
        const p = ((oy + y) * cols * w + ox + xx) * 4;
        const q = ((n * h + y) * w + xx) * c;
        for (let k = 0; k < 3; k++) img.data[p + k] = Math.max(0, Math.min(255, Math.round((x[q + (c === 3 ? k : 0)] + 1) * 127.5)));
        img.data[p + 3] = 255;
      }
    }
    const scale = Math.max(1, Math.floor(480 / (cols * w)));
    canvas.width = cols * w * scale; canvas.height = rows * h * scale; canvas.className = '';
    const tmp = document.createElement('canvas');
    tmp.width = cols * w; tmp.height = rows * h;
    tmp.getContext('2d').putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  }
  canvas.dataset.draws = String(Number(canvas.dataset.draws) + 1);
  $('status').className = '';
  $('status').textContent = count + ' samples' + (numClasses > 0 ? (label >= 0 ? ' of label ' + label : ', row r has label r') : '') + ' in ' + Math.round(performance.now() - t0) + ' ms (tfjs ' + tf.version_core + ', ' + tf.getBackend() + ' backend)';
}

main().catch((err) => fail('error: ' + (err && err.message ? err.message : err)));
</script>
</body>
</html>
`;
