/**
 * The coordinator's HTTP side on a real training run: the read-only routes (and that no request
 * reaches a file outside <run-dir>/samples), then the dashboard in headless Chromium (Debian's
 * /usr/bin/chromium driven by playwright-core; nothing downloads a browser): it shows the worker
 * count, a loaded sample image and charts with points, updates live, and requests nothing but
 * its own server. A screenshot goes to test/artifacts/dashboard.png (gitignored).
 *
 * A finished run with --linger and --eval-every: the coordinator keeps serving, refuses new
 * workers, /status says finished, the page shows "finished" with the final grid and the eval
 * scores (axis titles on every chart), and after SIGTERM it exits 0 and the page keeps its final
 * state. report.html opens from file:// with no request beyond file: and data:, and shows the
 * curves, the eval scores, a slider over every grid, the config and the workers.
 * Screenshots: test/artifacts/dashboard-finished.png, test/artifacts/report.png.
 */
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { WebSocket } from 'ws';
import { request } from 'node:http';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from './helpers/chromium.ts';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { cleanup, eventsOf, makeTempDir, readLog, ROOT, spawnCli, waitForEvent, waitForEvents, waitForExit, type Proc } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

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
    ['--dataset', 'ring8', '--preset', 'none', '--iterations', '2000', '--shards', '4', '--backend', 'wasm', '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '5', '--log-every', '2', '--checkpoint-every', '0'],
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
      const { port } = await startRun();
      browser = await launchChromium();
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

      // How to add a worker: the one-command install from this coordinator, with the tarball's sha256.
      await waitInPage(page, `!document.getElementById('install').hidden`, 15_000);
      const install = (await page.evaluate(`({ cmd: document.getElementById('install-cmd').textContent, sha: document.getElementById('install-sha').textContent })`)) as { cmd: string; sha: string };
      expect(install.cmd).toBe(`npm install -g ${origin}/gan-distributed.tgz && gan-worker --coordinator ws://127.0.0.1:${port}`);
      expect(install.sha).toBe(((await (await fetch(`${origin}/install.json`)).json()) as { sha256: string }).sha256);

      mkdirSync(ARTIFACTS, { recursive: true });
      const shot = join(ARTIFACTS, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      expect(foreign, 'requests to anything but the coordinator').toEqual([]);
      expect(problems).toEqual([]);
    },
    90_000,
  );
  it(
    'a finished run with --linger shows "finished", the final grid and the eval scores, and writes a self-contained report.html',
    async () => {
      const runDir = makeTempDir('gan-dashboard-finished-');
      // --linger far longer than the test: it ends the linger with SIGTERM, so nothing depends on timing.
      const c = spawnCli(
        'coordinator',
        ['--dataset', 'ring8', '--preset', 'none', '--iterations', '60', '--shards', '4', '--backend', 'wasm', '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '10', '--log-every', '5', '--checkpoint-every', '20', '--eval-every', '20', '--eval-samples', '200', '--linger', '600'],
        { name: 'coordinator' },
      );
      const port = Number((await waitForEvent(c, 'listening', 30_000)).port);
      const w = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'dash-fin', '--backend', 'wasm'], { name: 'worker dash-fin' });
      const finishedEv = await waitForEvent(c, 'run_finished', 60_000);
      expect(finishedEv.stopped).toBe(false);
      const lingering = await waitForEvent(c, 'lingering', 30_000);
      expect(lingering).toMatchObject({ seconds: 600, dashboard: `http://127.0.0.1:${port}/` });
      // The worker was told bye (RUN_FINISHED) and exits 0.
      expect(await waitForExit(w, 30_000)).toEqual({ code: 0, signal: null });

      // Lingering: HTTP answers, new workers are refused as when stopping (close code 4004).
      const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as Record<string, unknown>;
      expect(status).toMatchObject({ finished: true, iteration: 60, report: '/report.html', lingerUntil: expect.any(String) });
      expect((status.sample as { url: string }).url).toBe('/samples/0000060.png');
      expect(status.eval).toMatchObject({ iteration: 60, modes: 8, modesCaptured: expect.any(Number), highQuality: expect.any(Number) });
      const history = (await (await fetch(`http://127.0.0.1:${port}/history`)).json()) as { evals: { iteration: number; scores: Record<string, number> }[] };
      expect(history.evals.map((e) => e.iteration)).toEqual([20, 40, 60]);
      const refused = await new Promise<{ code: number; reason: string }>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        ws.on('error', () => undefined);
        ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
        setTimeout(() => reject(new Error('no close from a lingering coordinator')), 15_000).unref();
      });
      expect(refused).toEqual({ code: 4004, reason: 'SHUTTING_DOWN' });
      expect((await rawGet(port, '/report.html')).status).toBe(200);

      browser = await launchChromium();
      const page = await browser.newPage({ viewport: { width: 1280, height: 960 } });
      const origin = `http://127.0.0.1:${port}`;
      const problems: string[] = [];
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 30_000 });
      await waitInPage(
        page,
        `document.getElementById('state').textContent === 'finished'
          && document.getElementById('sample').naturalWidth > 0
          && !document.getElementById('eval-panel').hidden
          && Number(document.getElementById('chart-eval-modes').dataset.points) === 3`,
        30_000,
      );
      const seen = (await page.evaluate(`({
        sample: document.getElementById('sample').getAttribute('src'),
        caption: document.getElementById('sample-caption').textContent,
        note: document.getElementById('finished-note').textContent,
        noteShown: document.getElementById('finished-note').classList.contains('shown'),
        reportLink: document.querySelector('#finished-note a') && document.querySelector('#finished-note a').getAttribute('href'),
        scores: [...document.querySelectorAll('#eval-scores tr[data-score]')].map((tr) => tr.dataset.score),
        axisTitles: Object.fromEntries(['chart-loss', 'chart-d', 'chart-eval-modes'].map((id) => [id, [...document.querySelectorAll('#' + id + ' text.axis-title')].map((t) => t.textContent)])),
        eta: document.getElementById('eta').textContent,
      })`)) as { sample: string; caption: string; note: string; noteShown: boolean; reportLink: string | null; scores: string[]; axisTitles: Record<string, string[]>; eta: string };
      expect(seen.sample).toBe('/samples/0000060.png');
      expect(seen.caption).toMatch(/^iteration 60\b/);
      expect(seen.noteShown).toBe(true);
      expect(seen.note).toMatch(/run is finished: 60 iterations/);
      expect(seen.reportLink).toBe('/report.html');
      expect(seen.scores).toEqual(expect.arrayContaining(['modesCaptured', 'highQuality']));
      expect(seen.axisTitles).toEqual({
        'chart-loss': ['iteration', 'loss (window mean)'],
        'chart-d': ['iteration', 'mean D output'],
        'chart-eval-modes': ['iteration', 'share'],
      });
      expect(seen.eta).toBe('done');
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-finished.png'), fullPage: true });

      // SIGTERM during the linger: exit 0 now, not in 600 s; the page keeps the finished view.
      c.child.kill('SIGTERM');
      expect(await waitForExit(c, 30_000)).toEqual({ code: 0, signal: null });
      await waitInPage(page, `document.getElementById('updated').textContent === 'coordinator exited'`, 15_000);
      expect(await page.evaluate(`document.getElementById('state').textContent`)).toBe('finished');
      expect(problems.filter((p) => !/Failed to load resource|ERR_CONNECTION_REFUSED/.test(p))).toEqual([]);

      // The log: a report after every checkpoint and one at the end, before run_finished.
      const log = readLog(runDir);
      const names = log.map((e) => e.event);
      expect(eventsOf(log, 'checkpoint_saved').map((e) => e.iteration)).toEqual([20, 40, 60]);
      const reports = eventsOf(log, 'report_written');
      expect(reports.map((e) => e.iteration)).toEqual([20, 40, 60, 60]);
      expect(names.lastIndexOf('report_written')).toBeLessThan(names.indexOf('run_finished'));
      expect(names.indexOf('lingering')).toBeGreaterThan(names.indexOf('run_finished'));
      const last = reports.at(-1)!;
      expect(last).toMatchObject({ grids: 6, gridsEmbedded: 6, file: join(runDir, 'report.html') });

      // report.html: self-contained, opened from disk.
      const reportFile = join(runDir, 'report.html');
      expect(readdirSync(runDir).filter((n) => n.startsWith('report.html.tmp'))).toEqual([]);
      const html = readFileSync(reportFile, 'utf8');
      expect(statSync(reportFile).size).toBe(last.bytes);
      expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+stylesheet|<img[^>]+src="(?!data:)|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
      const report = await browser.newPage({ viewport: { width: 1280, height: 960 } });
      const requests: string[] = [];
      const reportProblems: string[] = [];
      report.on('request', (r) => requests.push(r.url()));
      report.on('pageerror', (e) => reportProblems.push(e.message));
      report.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') reportProblems.push(`console ${m.type()}: ${m.text()}`);
      });
      await report.goto(pathToFileURL(reportFile).href, { waitUntil: 'load', timeout: 30_000 });
      const r = (await report.evaluate(`({
        state: document.getElementById('state').textContent,
        loss: [...document.querySelectorAll('#chart-loss path.series')].map((p) => ({ series: p.dataset.series, segments: (p.getAttribute('d').match(/L/g) || []).length })),
        d: [...document.querySelectorAll('#chart-d path.series')].map((p) => p.dataset.series),
        evalSeries: [...document.querySelectorAll('#chart-eval-modes path.series')].map((p) => p.dataset.series),
        evalRows: document.querySelectorAll('#eval-table tbody tr').length,
        axisTitles: [...document.querySelectorAll('#chart-loss text.axis-title')].map((t) => t.textContent),
        slider: { min: document.getElementById('grid-slider').min, max: document.getElementById('grid-slider').max, value: document.getElementById('grid-slider').value },
        grid: { iteration: document.getElementById('grid').dataset.iteration, w: document.getElementById('grid').naturalWidth, src: document.getElementById('grid').src.slice(0, 22) },
        config: document.getElementById('config-json').textContent,
        workers: [...document.querySelectorAll('#workers-table tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent)),
      })`)) as {
        state: string;
        loss: { series: string; segments: number }[];
        d: string[];
        evalSeries: string[];
        evalRows: number;
        axisTitles: string[];
        slider: { min: string; max: string; value: string };
        grid: { iteration: string; w: number; src: string };
        config: string;
        workers: string[][];
      };
      expect(r.state).toBe('finished');
      expect(r.loss.map((p) => p.series)).toEqual(['lossD', 'lossG']);
      for (const p of r.loss) expect(p.segments, p.series).toBeGreaterThanOrEqual(5);
      expect(r.d).toEqual(['dReal', 'dFake']);
      expect(r.evalSeries).toEqual(['modesShare', 'highQuality']);
      expect(r.evalRows).toBe(3);
      expect(r.axisTitles).toEqual(['iteration', 'loss (window mean)']);
      expect(r.slider).toEqual({ min: '0', max: '5', value: '5' });
      expect(r.grid).toEqual({ iteration: '60', w: expect.any(Number), src: 'data:image/png;base64,' });
      expect(r.grid.w).toBeGreaterThan(0);
      expect(JSON.parse(r.config)).toMatchObject({ train: { dataset: 'ring8', iterations: 60 } });
      expect(r.workers).toHaveLength(1);
      expect(r.workers[0][0]).toBe('dash-fin');
      expect(Number(r.workers[0][4])).toBeGreaterThan(0); // shards done
      // The slider walks the grids: the first one is iteration 10.
      await report.evaluate(`(() => { const s = document.getElementById('grid-slider'); s.value = '0'; s.dispatchEvent(new Event('input')); })()`);
      await waitInPage(report, `document.getElementById('grid').dataset.iteration === '10' && document.getElementById('grid').naturalWidth > 0`, 10_000);
      expect(await report.evaluate(`document.getElementById('grid-caption').textContent`)).toMatch(/iteration 10 .* grid 1 of 6/);
      await report.evaluate(`(() => { const s = document.getElementById('grid-slider'); s.value = '5'; s.dispatchEvent(new Event('input')); })()`);
      await report.screenshot({ path: join(ARTIFACTS, 'report.png'), fullPage: true });
      expect(requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:')), 'report.html requests beyond file: and data:').toEqual([]);
      expect(reportProblems).toEqual([]);
    },
    HEAVY_TEST_MS,
  );
});
