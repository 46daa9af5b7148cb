/**
 * The generator page (trainer/generator-page.ts, coordinator/generator-page.ts): written beside
 * every export as index.html, served by the coordinator at /export/ and by `gan-sample --serve`.
 * In headless Chromium (Debian's, through playwright-core) it loads generator/model.json with
 * tf.loadLayersModel and, on a button press, draws new samples (a canvas that is not blank): a
 * scatter for a 2-D mixture from a real coordinator run, digit grids per label for a conditional
 * image model; and no request leaves the server it came from.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from './helpers/chromium.ts';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig } from '../shared/config.ts';
import { loadDataSource } from '../trainer/data/index.ts';
import { exportModels } from '../trainer/export.ts';
import { GENERATOR_PAGE_FILE } from '../trainer/generator-page.ts';
import { GanReplica } from '../shared/replica.ts';
import { uniformArray } from '../shared/rng.ts';
import { cleanup, kill, killAll, makeTempDir, spawnCli, waitForEvent, waitUntil } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

let browser: Browser | null = null;

afterEach(async () => {
  await browser?.close();
  browser = null;
  await killAll();
});
afterAll(cleanup);

async function openPage(url: string): Promise<{ page: Page; foreign: string[]; problems: string[] }> {
  browser = await launchChromium();
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const origin = new URL(url).origin;
  const foreign: string[] = [];
  const problems: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(origin) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) foreign.push(r.url());
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  return { page, foreign, problems };
}

async function waitInPage(page: Page, expr: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await page.evaluate(expr)) return;
    if (Date.now() > deadline) {
      const status = await page.evaluate(`document.getElementById('status').textContent`);
      throw new Error(`timed out after ${timeoutMs} ms waiting in the page for: ${expr} (status: ${String(status)})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Pixels of the canvas that differ from its background (top-left pixel), and distinct grey levels. */
const CANVAS_STATS = `(() => {
  const c = document.getElementById('canvas');
  // Read a copy: reading the page's own canvas repeatedly makes Chromium warn (willReadFrequently).
  const copy = document.createElement('canvas');
  copy.width = c.width; copy.height = c.height;
  const cx = copy.getContext('2d', { willReadFrequently: true });
  cx.drawImage(c, 0, 0);
  const d = cx.getImageData(0, 0, c.width, c.height).data;
  let differ = 0; const levels = new Set();
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) differ++;
    levels.add(d[i]);
  }
  return { w: c.width, h: c.height, differ, levels: levels.size, draws: Number(c.dataset.draws), hash: Array.from(d.slice(0, 40000)).reduce((a, v, i) => (a * 31 + v * (i + 1)) >>> 0, 7) };
})()`;
type CanvasStats = { w: number; h: number; differ: number; levels: number; draws: number; hash: number };

describe('the generator page', () => {
  let exportDir = '';

  beforeAll(async () => {
    // A conditional image model with non-initial weights: random G still draws visible grids.
    await initBackend('cpu');
    const mnist = loadDataSource('mnist');
    const config = resolveConfig({ model: 'mlp-small', conditional: true, seed: 5 }, mnist);
    const replica = new GanReplica(config);
    replica.setWeights('G', uniformArray(replica.layout.G.total, 7, -0.08, 0.08));
    exportDir = join(makeTempDir('gan-genpage-'), 'export');
    await exportModels(replica, exportDir, { config, iteration: 0 });
    replica.dispose();
  }, HEAVY_TEST_MS);

  it('is written beside the export as one file that loads nothing from elsewhere', () => {
    const html = readFileSync(join(exportDir, GENERATOR_PAGE_FILE), 'utf8');
    expect(html).toContain("tf.loadLayersModel('generator/model.json')");
    expect(html).not.toMatch(/<script[^>]+src=/i);
    expect(html).not.toMatch(/<link[^>]+href="(?!data:)/i);
    expect(html).not.toMatch(/sourceMappingURL/);
  });

  it(
    'gan-sample --serve: a conditional model draws a row per label, then one label, on the buttons, in Chromium',
    async () => {
      const server = spawnCli('sample', ['--export', exportDir, '--serve', '--port', '0'], { name: 'gan-sample --serve' });
      const url = await waitUntil(server, () => server.lines.map((l) => /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(l)?.[1]).find(Boolean), 60_000, 'the serving line');
      const { page, foreign, problems } = await openPage(url);
      await waitInPage(page, `Number(document.getElementById('canvas').dataset.draws) >= 1`, 60_000);
      const first = (await page.evaluate(CANVAS_STATS)) as CanvasStats;
      // 10 labels x 8 samples of 28x28, scaled up.
      expect(first.w / first.h).toBeCloseTo(8 / 10, 5);
      expect(first.differ).toBeGreaterThan(first.w * first.h * 0.2);
      expect(first.levels).toBeGreaterThan(20);
      expect(await page.locator('#labels button').count()).toBe(11);

      await page.click('#draw');
      await waitInPage(page, `Number(document.getElementById('canvas').dataset.draws) >= 2`, 30_000);
      const second = (await page.evaluate(CANVAS_STATS)) as CanvasStats;
      expect(second.hash).not.toBe(first.hash); // fresh noise, new samples

      await page.click('#labels button[data-label="3"]');
      await waitInPage(page, `Number(document.getElementById('canvas').dataset.draws) >= 3`, 30_000);
      const three = (await page.evaluate(CANVAS_STATS)) as CanvasStats;
      expect(three.w).toBe(three.h); // 64 samples, 8 x 8
      expect(three.differ).toBeGreaterThan(three.w * three.h * 0.2);
      expect(await page.textContent('#status')).toMatch(/64 samples of label 3/);
      expect(foreign, 'requests that left the server').toEqual([]);
      expect(problems).toEqual([]);
      await kill(server, 'SIGTERM');
    },
    HEAVY_TEST_MS,
  );

  it(
    "the coordinator's /export/ page draws a 2-D mixture's samples once the run has exported G",
    async () => {
      const runDir = join(makeTempDir('gan-genpage-run-'), 'run');
      const c = spawnCli('coordinator', [
        '--dataset', 'ring8', '--preset', 'none', '--iterations', '10', '--batch-size', '32', '--shards', '4', '--backend', 'wasm',
        '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--checkpoint-every', '0', '--linger', '600',
      ]);
      const port = Number((await waitForEvent(c, 'listening', 60_000)).port);
      spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'page-w1', '--backend', 'wasm']);
      const exported = await waitForEvent(c, 'exported', 90_000);
      expect(exported.page).toBe(join(runDir, 'export', GENERATOR_PAGE_FILE));
      expect(existsSync(exported.page as string)).toBe(true);
      // Only the generator's files are served, nothing else of the run directory.
      for (const path of ['/export/discriminator/model.json', '/export/../config.json', '/export/generator/../gan.json.tmp']) {
        expect((await fetch(`http://127.0.0.1:${port}${path}`)).status, path).toBe(404);
      }
      const { page, foreign, problems } = await openPage(`http://127.0.0.1:${port}/export/`);
      await waitInPage(page, `Number(document.getElementById('canvas').dataset.draws) >= 1`, 60_000);
      await page.click('#draw');
      await waitInPage(page, `Number(document.getElementById('canvas').dataset.draws) >= 2`, 30_000);
      const stats = (await page.evaluate(CANVAS_STATS)) as CanvasStats;
      expect(stats.w).toBe(stats.h);
      expect(stats.differ).toBeGreaterThan(200); // 1000 points drawn on white
      expect(await page.textContent('#about')).toMatch(/ring8, mlp2d, after 10 iterations/);
      expect(foreign, 'requests that left the coordinator').toEqual([]);
      expect(problems).toEqual([]);
      await kill(c, 'SIGTERM');
    },
    HEAVY_TEST_MS,
  );
});
