/**
 * report.html: a self-contained summary of a run, written into the run directory at every
 * checkpoint and at the end (and on a stop), so a run can be looked at after its coordinator
 * exited, or mailed to someone: the loss and D(x)/D(G(z)) curves, the `eval` scores over time, a
 * slider over every sample grid, the config and the workers.
 *
 * One file, no external request: CSS and the slider's few lines of script inline, the charts as
 * inline SVG drawn here (readable without script), the sample grids embedded as data: URLs. Grids
 * are embedded up to EMBED_BUDGET_BYTES of PNG; past that an evenly spaced subset (always the
 * first and the newest) is embedded and the page says how many it shows. Written with
 * writeFileAtomic (trainer/durable-file.ts): a reader or a crash sees the old report or the new one.
 *
 * Over 400 lines because the page is one template with its charts: splitting the HTML from the
 * code that fills it would only scatter one document over several files.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { GanConfig } from '../shared/config.ts';
import { writeFileAtomic } from '../trainer/durable-file.ts';
import type { EvalPoint, ProgressPoint, WorkerSeen } from './metrics.ts';

export const REPORT_FILE = 'report.html';
/** PNG bytes of sample grids embedded at most (base64 makes the page ~4/3 of this). */
export const EMBED_BUDGET_BYTES = 24 * 1024 * 1024;
const SAMPLE_NAME = /^(\d{7})\.png$/;

export interface RunReportInput {
  runDir: string;
  runId: string;
  config: GanConfig;
  backend: string;
  iteration: number;
  iterations: number;
  /** training: written at a checkpoint; finished / stopped: at the end of the run. */
  state: 'training' | 'finished' | 'stopped';
  /** At the end: training seconds of this process and the weights hash (run_finished's). */
  result?: { seconds: number; weightsHash: string };
  progress: readonly ProgressPoint[];
  evals: readonly EvalPoint[];
  workers: readonly WorkerSeen[];
  /** Workers connected now, with the shards their live connections delivered (added to the roster's). */
  live?: readonly { id: string; shardsDone: number }[];
}

export interface ReportWritten {
  file: string;
  bytes: number;
  /** Sample grids in samples/ and how many of them the page embeds. */
  grids: number;
  gridsEmbedded: number;
}

interface Grid {
  iteration: number;
  url: string;
}

/** data: URLs of sample PNGs already read, by path (a grid file never changes once written). */
const gridCache = new Map<string, { size: number; mtimeMs: number; url: string }>();

function gridUrl(file: string, size: number, mtimeMs: number): string {
  const hit = gridCache.get(file);
  if (hit && hit.size === size && hit.mtimeMs === mtimeMs) return hit.url;
  const url = `data:image/png;base64,${readFileSync(file).toString('base64')}`;
  gridCache.set(file, { size, mtimeMs, url });
  return url;
}

/** The grids of samples/, oldest first, thinned evenly to the byte budget (first and newest always kept). */
export function collectGrids(samplesDir: string, budget = EMBED_BUDGET_BYTES): { total: number; grids: Grid[] } {
  let names: string[];
  try {
    names = readdirSync(samplesDir).filter((n) => SAMPLE_NAME.test(n)).sort();
  } catch {
    return { total: 0, grids: [] };
  }
  const files = names.map((n) => {
    const file = join(samplesDir, n);
    const st = statSync(file);
    return { file, iteration: Number(SAMPLE_NAME.exec(n)![1]), size: st.size, mtimeMs: st.mtimeMs };
  });
  let chosen = files;
  const total = files.reduce((s, f) => s + f.size, 0);
  if (total > budget && files.length > 2) {
    const mean = total / files.length;
    const keep = Math.max(2, Math.min(files.length, Math.floor(budget / mean)));
    const idx = new Set<number>();
    for (let i = 0; i < keep; i++) idx.add(Math.round((i * (files.length - 1)) / (keep - 1)));
    chosen = files.filter((_, i) => idx.has(i));
  }
  return { total: files.length, grids: chosen.map((f) => ({ iteration: f.iteration, url: gridUrl(f.file, f.size, f.mtimeMs) })) };
}

/** Renders and writes <run-dir>/report.html atomically. */
export function writeRunReport(input: RunReportInput): ReportWritten {
  const { total, grids } = collectGrids(join(input.runDir, 'samples'));
  const html = renderRunReport(input, grids, total);
  const file = join(input.runDir, REPORT_FILE);
  writeFileAtomic(file, html);
  return { file, bytes: Buffer.byteLength(html), grids: total, gridsEmbedded: grids.length };
}

// ---------------------------------------------------------------- rendering

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function fmt(v: number | null | undefined, digits = 3): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '-';
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(digits)));
}

function niceTicks(lo: number, hi: number, n: number): number[] {
  const span = hi - lo || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(10)));
  return out;
}

interface Series {
  key: string;
  label: string;
  color: string;
  points: [number, number][];
}

interface ChartSpec {
  id: string;
  title: string;
  yTitle: string;
  series: Series[];
  yMin?: number;
  yMax?: number;
  /** A dashed horizontal reference line and its legend label. */
  ref?: { y: number; label: string };
}

/** A line chart as inline SVG: gridlines, ticks, axis titles, one path per series (data-series=key). */
export function svgChart(c: ChartSpec): string {
  const W = 640, H = 250, L = 58, R = 14, T = 12, B = 40;
  const all = c.series.flatMap((s) => s.points);
  const legend = [
    ...c.series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.label)}</span>`),
    ...(c.ref ? [`<span><i class="dash"></i>${esc(c.ref.label)}</span>`] : []),
  ].join('');
  const head = `<h3>${esc(c.title)} <span class="legend">${legend}</span></h3>`;
  if (all.length === 0) return `${head}<p class="empty">no data yet</p>`;
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  if (x0 === x1) [x0, x1] = [Math.max(0, x0 - 1), x1 + 1];
  let y0 = c.yMin;
  let y1 = c.yMax;
  if (y0 === undefined || y1 === undefined) {
    const ys = all.map((p) => p[1]).concat(c.ref ? [c.ref.y] : []);
    const lo = Math.min(...ys), hi = Math.max(...ys);
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 0.1;
    y0 ??= lo - pad;
    y1 ??= hi + pad;
  }
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0!) / (y1! - y0!)) * (H - T - B);
  const parts: string[] = [];
  for (const v of niceTicks(y0, y1, 5)) {
    parts.push(`<line class="gridline" x1="${L}" x2="${W - R}" y1="${sy(v).toFixed(1)}" y2="${sy(v).toFixed(1)}"/>`);
    parts.push(`<text x="${L - 6}" y="${(sy(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
  }
  for (const v of niceTicks(x0, x1, 6)) {
    if (!Number.isInteger(v)) continue;
    parts.push(`<line class="axis" x1="${sx(v).toFixed(1)}" x2="${sx(v).toFixed(1)}" y1="${H - B}" y2="${H - B + 4}"/>`);
    parts.push(`<text x="${sx(v).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${v}</text>`);
  }
  parts.push(`<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>`);
  parts.push(`<text class="axis-title" x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">iteration</text>`);
  parts.push(`<text class="axis-title" transform="translate(14 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yTitle)}</text>`);
  if (c.ref) parts.push(`<line class="ref" x1="${L}" x2="${W - R}" y1="${sy(c.ref.y).toFixed(1)}" y2="${sy(c.ref.y).toFixed(1)}"/>`);
  for (const s of c.series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)} ${sy(p[1]).toFixed(1)}`).join('');
    parts.push(`<path class="series" data-series="${esc(s.key)}" stroke="${s.color}" d="${d}"/>`);
    if (s.points.length < 40) for (const p of s.points) parts.push(`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2.6" fill="${s.color}"/>`);
  }
  return `${head}<svg class="plot" id="${esc(c.id)}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(c.title)}">${parts.join('')}</svg>`;
}

const COLORS = { lossD: '#e8590c', lossG: '#1c7ed6', dReal: '#2b8a3e', dFake: '#9c36b5', a: '#1c7ed6', b: '#e8590c', c: '#2b8a3e' };

function seriesOf<T>(rows: readonly T[], key: string, label: string, color: string, x: (r: T) => number, y: (r: T) => number | null | undefined): Series {
  const points: [number, number][] = [];
  for (const r of rows) {
    const v = y(r);
    if (typeof v === 'number' && Number.isFinite(v)) points.push([x(r), v]);
  }
  return { key, label, color, points };
}

/** The eval charts for the scores a run reports (mixtures or images; conditional adds label accuracy). */
export function evalCharts(evals: readonly EvalPoint[]): ChartSpec[] {
  if (evals.length === 0) return [];
  const last = evals.at(-1)!.scores;
  const s = (key: string, label: string, color: string, f?: (sc: Record<string, number>) => number | undefined) =>
    seriesOf(evals, key, label, color, (e) => e.iteration, (e) => (f ? f(e.scores) : e.scores[key]));
  const charts: ChartSpec[] = [];
  if ('highQuality' in last || 'modesCaptured' in last) {
    charts.push({
      id: 'chart-eval-modes',
      title: 'Sample quality (eval): modes and high-quality samples',
      yTitle: 'share',
      yMin: 0,
      yMax: 1,
      series: [
        s('modesShare', 'modes captured / modes', COLORS.a, (sc) => (sc.modes ? sc.modesCaptured / sc.modes : undefined)),
        s('highQuality', 'high-quality share', COLORS.b),
      ],
    });
  }
  if ('inceptionScore' in last) {
    charts.push({
      id: 'chart-eval-is',
      title: 'Inception Score (eval, higher is better)',
      yTitle: 'Inception Score',
      series: [s('inceptionScore', 'G', COLORS.a)],
      ref: typeof last.inceptionScoreReal === 'number' ? { y: last.inceptionScoreReal, label: `real digits ${fmt(last.inceptionScoreReal)}` } : undefined,
    });
  }
  if ('frechetDistance' in last) {
    charts.push({
      id: 'chart-eval-fd',
      title: 'Fréchet distance (eval, lower is better)',
      yTitle: 'Fréchet distance',
      series: [s('frechetDistance', 'G', COLORS.b)],
      ref: typeof last.frechetDistanceReal === 'number' ? { y: last.frechetDistanceReal, label: `real digits ${fmt(last.frechetDistanceReal)}` } : undefined,
    });
  }
  if ('labelAccuracy' in last) {
    charts.push({
      id: 'chart-eval-labels',
      title: 'Label accuracy (eval, conditional)',
      yTitle: 'accuracy',
      yMin: 0,
      yMax: 1,
      series: [s('labelAccuracy', 'G', COLORS.c)],
      ref: typeof last.labelAccuracyReal === 'number' ? { y: last.labelAccuracyReal, label: `real digits ${fmt(last.labelAccuracyReal)}` } : undefined,
    });
  }
  return charts;
}

/** Score columns of the eval table, in a fixed readable order. */
const EVAL_COLUMNS: [string, string][] = [
  ['modesCaptured', 'modes captured'],
  ['modes', 'modes'],
  ['highQuality', 'high-quality share'],
  ['reverseKl', 'reverse KL'],
  ['inceptionScore', 'Inception Score'],
  ['inceptionScoreReal', 'IS (real)'],
  ['frechetDistance', 'Fréchet distance'],
  ['frechetDistanceReal', 'FD (real)'],
  ['classMaxMin', 'class max/min'],
  ['classMaxMinReal', 'class max/min (real)'],
  ['labelAccuracy', 'label accuracy'],
  ['labelAccuracyReal', 'label acc. (real)'],
  ['samples', 'samples'],
];

function evalTable(evals: readonly EvalPoint[]): string {
  if (evals.length === 0) return '<p class="empty">no evaluations: start the coordinator with <code>--eval-every &lt;n&gt;</code> to score G during training</p>';
  const cols = EVAL_COLUMNS.filter(([k]) => evals.some((e) => k in e.scores));
  const head = `<tr><th class="num">iteration</th>${cols.map(([, l]) => `<th class="num">${esc(l)}</th>`).join('')}<th>generator</th></tr>`;
  const rows = [...evals]
    .reverse()
    .map((e) => `<tr><td class="num">${e.iteration}</td>${cols.map(([k]) => `<td class="num">${fmt(e.scores[k], 4)}</td>`).join('')}<td>${esc(e.generator ?? '-')}</td></tr>`)
    .join('');
  return `<div class="scroll"><table id="eval-table"><thead>${head}</thead><tbody>${rows}</tbody></table></div>`;
}

function workersTable(input: RunReportInput): string {
  const { workers } = input;
  if (workers.length === 0) return '<p class="empty">no worker joined this coordinator process</p>';
  const live = new Map<string, number>();
  for (const l of input.live ?? []) live.set(l.id, (live.get(l.id) ?? 0) + l.shardsDone);
  const still = input.state === 'training' ? 'connected' : 'to the end of the run';
  const rows = [...workers]
    .sort((a, b) => a.id.localeCompare(b.id))
    .map(
      (w) =>
        `<tr><td>${esc(w.id)}</td><td>${esc(w.host ?? '-')}</td><td>${esc(w.backend ?? '-')}</td><td class="num">${w.sessions}</td><td class="num">${w.shardsDone + (w.connected ? (live.get(w.id) ?? 0) : 0)}</td><td>${esc(w.firstJoined)}</td><td>${w.connected ? still : esc(`${w.lastLeft ?? '-'}${w.lastReason ? ` (${w.lastReason})` : ''}`)}</td></tr>`,
    )
    .join('');
  return `<table id="workers-table"><thead><tr><th>worker</th><th>host</th><th>backend</th><th class="num">connections</th><th class="num">shards done</th><th>first joined</th><th>left</th></tr></thead><tbody>${rows}</tbody></table>`;
}

const STYLE = `
  * { box-sizing: border-box; }
  body { margin: 0; background: #f4f5f7; color: #1d2330; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
  header { padding: 16px 24px; background: #fff; border-bottom: 1px solid #e3e6ec; }
  header h1 { margin: 0 0 4px; font-size: 18px; }
  header .meta { color: #6b7385; font-size: 13px; }
  .pill { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; color: #fff; background: #1c7ed6; vertical-align: 2px; margin-left: 8px; }
  .pill.training { background: #2b8a3e; } .pill.stopped { background: #e67700; }
  main { max-width: 1300px; margin: 0 auto; padding: 18px 24px 30px; }
  .cols { display: grid; grid-template-columns: minmax(0, 1.6fr) minmax(300px, 1fr); gap: 14px; }
  @media (max-width: 900px) { .cols { grid-template-columns: minmax(0, 1fr); } }
  section { background: #fff; border: 1px solid #e3e6ec; border-radius: 10px; padding: 12px 16px; margin-bottom: 14px; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  h3 { font-size: 13px; margin: 10px 0 4px; font-weight: 600; display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
  .legend { display: flex; gap: 12px; font-weight: 400; color: #6b7385; font-size: 12px; }
  .legend i { display: inline-block; width: 14px; height: 3px; border-radius: 2px; vertical-align: middle; margin-right: 4px; }
  .legend i.dash { background: repeating-linear-gradient(90deg, #9aa1ae 0 4px, transparent 4px 7px); }
  svg.plot { width: 100%; height: auto; display: block; }
  svg.plot text { fill: #6b7385; font-size: 11px; font-variant-numeric: tabular-nums; }
  svg.plot text.axis-title { fill: #1d2330; font-size: 12px; }
  svg.plot .gridline { stroke: #eef0f4; } svg.plot .axis { stroke: #d5d9e0; }
  svg.plot .ref { stroke: #9aa1ae; stroke-width: 1.2; stroke-dasharray: 5 4; }
  svg.plot path.series { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
  .grid-view { display: flex; flex-direction: column; align-items: center; gap: 8px; }
  #grid { width: 100%; max-width: 420px; aspect-ratio: 1; object-fit: contain; image-rendering: pixelated; border: 1px solid #e3e6ec; border-radius: 6px; background: #fff; }
  #grid-slider { width: 100%; max-width: 420px; }
  #grid-caption { color: #6b7385; font-size: 12px; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 13px; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e6ec; white-space: nowrap; }
  th { color: #6b7385; font-weight: 600; font-size: 12px; }
  td.num, th.num { text-align: right; }
  .scroll { max-height: 360px; overflow: auto; }
  pre { background: #f7f8fa; border: 1px solid #e3e6ec; border-radius: 6px; padding: 10px; overflow: auto; max-height: 460px; font-size: 12px; margin: 0; }
  .empty { color: #6b7385; font-size: 13px; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 14px; margin: 0; font-size: 13px; }
  dt { color: #6b7385; } dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
  footer { color: #6b7385; font-size: 12px; text-align: center; padding-bottom: 20px; }
`;

/** The slider: swaps the grid image; the grids are in a JSON script element. */
const SCRIPT = `
'use strict';
(function () {
  const grids = JSON.parse(document.getElementById('grids').textContent);
  const slider = document.getElementById('grid-slider');
  const img = document.getElementById('grid');
  const caption = document.getElementById('grid-caption');
  if (!slider || grids.length === 0) return;
  function show(i) {
    const g = grids[i];
    img.src = g.url;
    img.dataset.iteration = String(g.iteration);
    caption.textContent = 'iteration ' + g.iteration + ' \\u00b7 grid ' + (i + 1) + ' of ' + grids.length + ' \\u00b7 one fixed noise batch';
  }
  slider.addEventListener('input', () => show(Number(slider.value)));
  show(Number(slider.value));
})();
`;

/** The whole page (no I/O). `totalGrids`: grids in samples/, of which `grids` are embedded. */
export function renderRunReport(input: RunReportInput, grids: readonly Grid[], totalGrids = grids.length): string {
  const { config, progress, evals } = input;
  const cp = (key: keyof ProgressPoint, label: string, color: string) => seriesOf(progress, key, label, color, (p) => p.iteration, (p) => p[key] as number | null);
  const charts = [
    svgChart({ id: 'chart-loss', title: 'Losses', yTitle: 'loss (window mean)', series: [cp('lossD', 'lossD', COLORS.lossD), cp('lossG', 'lossG', COLORS.lossG)] }),
    svgChart({ id: 'chart-d', title: 'Discriminator outputs', yTitle: 'mean D output', yMin: 0, yMax: 1, ref: { y: 0.5, label: '1/2 (equilibrium)' }, series: [cp('dReal', 'D(x)', COLORS.dReal), cp('dFake', 'D(G(z))', COLORS.dFake)] }),
  ].join('');
  const evalSection = evalCharts(evals).map(svgChart).join('') + evalTable(evals);
  const last = grids.at(-1);
  const gridSection = last
    ? `<div class="grid-view"><img id="grid" alt="sample grid" src="${last.url}" data-iteration="${last.iteration}">
       <input type="range" id="grid-slider" min="0" max="${grids.length - 1}" step="1" value="${grids.length - 1}" aria-label="sample grid by iteration">
       <div id="grid-caption">iteration ${last.iteration}</div>
       ${totalGrids > grids.length ? `<div class="empty">${grids.length} of the ${totalGrids} grids in samples/ are embedded (evenly spaced, first and newest included) to keep this file under ${EMBED_BUDGET_BYTES / 1024 / 1024} MB of images</div>` : ''}</div>`
    : '<p class="empty">no sample grid yet</p>';
  const { train, model } = config;
  const title = `${train.dataset} / ${model.kind}`;
  const stateText = input.state === 'training' ? 'in progress' : input.state;
  const facts: [string, string][] = [
    ['iteration', `${input.iteration} of ${input.iterations}`],
    ['run id', input.runId],
    ['backend', input.backend],
    ['batch', `${train.batchSize} in ${train.shards} shards, ${train.dSteps} D-step(s) per G-step`],
    ['seed', String(train.seed)],
    ...(input.result ? ([['training time', `${input.result.seconds} s (this process)`], ['weights sha256', input.result.weightsHash]] as [string, string][]) : []),
    ['report written', new Date().toISOString()],
  ];
  // </script> inside JSON would end the element early; data: URLs and iterations cannot hold '<', but be safe.
  const gridsJson = JSON.stringify(grids).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>${esc(title)}: run report</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>gan-distributed run report: ${esc(title)} <span class="pill ${esc(input.state)}" id="state">${esc(stateText)}</span></h1>
  <div class="meta">${esc(input.runDir)} &middot; iteration ${input.iteration} of ${input.iterations} &middot; written by the coordinator at every checkpoint and at the end</div>
</header>
<main>
<div class="cols">
  <div>
    <section id="curves"><h2>Training curves</h2>${charts}</section>
    <section id="evals"><h2>Sample quality over time (<code>eval</code>)</h2>${evalSection}</section>
  </div>
  <div>
    <section id="samples"><h2>Sample grids</h2>${gridSection}</section>
    <section id="facts"><h2>Run</h2><dl>${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl></section>
  </div>
</div>
<section id="workers"><h2>Workers</h2>${workersTable(input)}</section>
<section id="config"><h2>Config</h2><pre id="config-json">${esc(JSON.stringify(config, null, 2))}</pre></section>
</main>
<footer>one self-contained file: no network requests; sample grids embedded as data: URLs</footer>
<script type="application/json" id="grids">${gridsJson}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
