/**
 * The coordinator's HTTP side on a real training run: the read-only routes (and that no request
 * reaches a file outside <run-dir>/samples), then the dashboard in headless Chromium (Debian's
 * /usr/bin/chromium driven by playwright-core; nothing downloads a browser): it shows the worker
 * count, a loaded sample image and charts with points, updates live, and requests nothing but
 * its own server. A screenshot goes to test/artifacts/dashboard.png (gitignored).
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { cleanup, makeTempDir, ROOT, spawnCli, waitForEvent, waitForEvents, type Proc } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test', 'artifacts');

let browser: Browser | null = null;
afterEach(async () => {
  await browser?.close().catch(() => undefined);
  browser = null;
  await cleanup();
}, HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);

/** A raw GET whose path is sent exactly as written (fetch would normalise `..` away). */
function rawGet(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function startRun(): Promise<{ c: Proc; port: number; runDir: string }> {
  const runDir = makeTempDir('gan-dashboard-');
  const c = spawnCli(
    'coordinator',
    ['--dataset', 'ring8', '--iterations', '2000', '--shards', '4', '--backend', 'wasm', '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '5', '--log-every', '2', '--checkpoint-every', '0'],
    { name: 'coordinator' },
  );
  const port = Number((await waitForEvent(c, 'listening', 30_000)).port);
  // ~8 ms per shard: a few iterations per second, so the page has something to follow.
  spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'dash-w1', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: '8' }, name: 'worker dash-w1' });
  await waitForEvent(c, 'sample_written', 30_000);
  await waitForEvents(c, 'progress', 3, 30_000);
  return { c, port, runDir };
}

/**
 * Polls a JS expression in the page until it is truthy. (page.waitForFunction with a string would
 * eval() it inside the page, which the dashboard's Content-Security-Policy rightly forbids;
 * page.evaluate goes through the DevTools protocol instead.)
 */
async function waitInPage(page: Page, expr: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await page.evaluate(expr)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting in the page for: ${expr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the coordinator dashboard', () => {
  it(
    'serves read-only routes and only sample PNGs from the run directory',
    async () => {
      const { port } = await startRun();
      const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as Record<string, unknown>;
      expect(status).toMatchObject({ iterations: 2000, finished: false, epoch: 0 });
      expect((status.workers as { id: string }[]).map((w) => w.id)).toEqual(['dash-w1']);
      expect((status.progress as { iteration: number }).iteration).toBeGreaterThan(0);
      const sampleUrl = (status.sample as { url: string }).url;
      expect(sampleUrl).toMatch(/^\/samples\/\d{7}\.png$/);

      const history = (await (await fetch(`http://127.0.0.1:${port}/history`)).json()) as { points: { seq: number; iteration: number }[]; last: number };
      expect(history.points.length).toBeGreaterThanOrEqual(3);
      const more = (await (await fetch(`http://127.0.0.1:${port}/history?since=${history.last}`)).json()) as { points: { seq: number }[] };
      expect(more.points.every((p) => p.seq > history.last)).toBe(true);

      for (const path of ['/samples/latest.png', sampleUrl]) {
        const png = await rawGet(port, path);
        expect(png.status, path).toBe(200);
        expect(png.type).toBe('image/png');
        expect(png.body.subarray(1, 4).toString()).toBe('PNG');
      }
      const page = await rawGet(port, '/');
      expect(page.status).toBe(200);
      expect(page.type).toMatch(/^text\/html/);
      expect(page.body.toString()).not.toMatch(/<script[^>]+src=|<link[^>]+stylesheet|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);

      // Nothing but <7 digits>.png inside samples/ is reachable, however the path is spelled.
      for (const path of [
        '/samples/../config.json',
        '/samples/..%2fconfig.json',
        '/samples/%2e%2e/config.json',
        '/samples/..%5cconfig.json',
        '/samples//etc/passwd',
        '/samples/0000005.png/../../config.json',
        '/samples/00000005.png',
        '/samples/0000005.PNG',
        '/samples/latest.png%00.json',
        '/../../../../etc/passwd',
        '/config.json',
        '/log.jsonl',
        '//etc/passwd',
      ]) {
        const res = await rawGet(port, path);
        expect(res.status, path).toBe(404);
        expect(res.body.toString(), path).not.toMatch(/"model"|root:|"event"/);
      }
      expect((await rawGet(port, '/status', 'POST')).status).toBe(405);
      const head = await rawGet(port, '/status', 'HEAD');
      expect(head.status).toBe(200);
      expect(head.body.length).toBe(0);
    },
    60_000,
  );

  it(
    'shows the workers, the newest sample grid and live charts in headless Chromium',
    async () => {
      expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`).toBe(true);
      const { port } = await startRun();
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        // playwright gives every launch a fresh temporary profile (user-data-dir) and removes it on close.
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
        timeout: 30_000,
      });
      const page = await browser.newPage({ viewport: { width: 1280, height: 960 } });
      const origin = `http://127.0.0.1:${port}`;
      const problems: string[] = [];
      const foreign: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => {
        if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url());
      });
      await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 30_000 });
      await waitInPage(
        page,
        `document.getElementById('workers-count').textContent === '1'
          && document.getElementById('sample').naturalWidth > 0
          && Number(document.getElementById('chart-loss').dataset.points) >= 3
          && Number(document.getElementById('chart-d').dataset.points) >= 3`,
        30_000,
      );
      const seen = (await page.evaluate(`({
        workers: document.getElementById('workers-count').textContent,
        rows: [...document.querySelectorAll('#workers tr')].map((tr) => [...tr.children].map((td) => td.textContent)),
        image: { w: document.getElementById('sample').naturalWidth, h: document.getElementById('sample').naturalHeight, src: document.getElementById('sample').getAttribute('src') },
        lossPaths: [...document.querySelectorAll('#chart-loss path.series')].map((p) => ({ series: p.dataset.series, segments: (p.getAttribute('d').match(/L/g) || []).length })),
        dPaths: [...document.querySelectorAll('#chart-d path.series')].map((p) => p.dataset.series),
        refLine: document.querySelectorAll('#chart-d line.ref').length,
        iteration: Number(document.getElementById('iteration').textContent),
        state: document.getElementById('state').textContent,
      })`)) as {
        workers: string;
        rows: string[][];
        image: { w: number; h: number; src: string };
        lossPaths: { series: string; segments: number }[];
        dPaths: string[];
        refLine: number;
        iteration: number;
        state: string;
      };
      expect(seen.workers).toBe('1');
      expect(seen.rows).toHaveLength(1);
      expect(seen.rows[0].slice(0, 3)).toEqual(['dash-w1', expect.any(String), 'wasm']);
      expect(Number(seen.rows[0][3])).toBeGreaterThan(0); // shards done
      expect(seen.image.w).toBeGreaterThan(0);
      expect(seen.image.src).toMatch(/^\/samples\/\d{7}\.png$/);
      expect(seen.lossPaths.map((p) => p.series)).toEqual(['lossD', 'lossG']);
      for (const p of seen.lossPaths) expect(p.segments, p.series).toBeGreaterThanOrEqual(2);
      expect(seen.dPaths).toEqual(['dReal', 'dFake']);
      expect(seen.refLine).toBe(1);
      expect(seen.state).toBe('training');

      // Live: without a reload, the iteration moves on.
      await waitInPage(page, `Number(document.getElementById('iteration').textContent) > ${seen.iteration}`, 15_000);

      mkdirSync(ARTIFACTS, { recursive: true });
      const shot = join(ARTIFACTS, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      expect(foreign, 'requests to anything but the coordinator').toEqual([]);
      expect(problems).toEqual([]);
    },
    90_000,
  );
});
