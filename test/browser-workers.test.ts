/**
 * Browser workers (issue 19): the coordinator's /join page runs the worker core in a tab, in
 * headless Chromium (Debian's /usr/bin/chromium driven by playwright-core; nothing downloads).
 *
 *  - one Node worker and two browser tabs train ring8 to gan-train's hash, and closing one tab
 *    mid-phase (stalled in the debugger, like a hung background tab, while it owes shards) gives
 *    that hash: the tab is handled like a killed worker (worker_left, shard_reassigned). This rests on Chromium's wasm backend giving the same
 *    bits as Node's (the same tfjs-backend-wasm SIMD binary; scripts/browser-bits.ts measures it
 *    per model);
 *  - the page requests nothing but its own server, and the token is never in any request;
 *  - a stalled tab (script paused, like a throttled or hung background tab) is a straggler: its shards are
 *    duplicated to the Node worker, and when it wakes up the run still ends on the hash;
 *  - a wrong token in the page is refused with a clear message (AUTH_FAILED);
 *  - a short-lived join link (#key=..., coordinator/join-key.ts) joins without the token; the
 *    page drops the key from its address; an expired key is refused (JOIN_KEY_EXPIRED), and a key
 *    minted from another token fails like a wrong token;
 *  - --no-browser-workers: the page says so, and a browser's hello is refused
 *    (BROWSER_WORKERS_REFUSED) even from a client that skips the page.
 *
 * All three workers join before the run loop starts, so every one of them gets shards; the
 * hash does not depend on who computed what or when the tab closed.
 */
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from './helpers/chromium.ts';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { NetworkConfig, ScheduleConfig } from '../coordinator/coordinator.ts';
import { joinKey } from '../coordinator/join-key.ts';
import { createLogger } from '../shared/log.ts';
import { nodeEnv } from '../worker/env-node.ts';
import { DEFAULT_BACKOFF, WorkerCore, type WorkerOptions } from '../worker/worker-core.ts';
import { Worker } from '../worker/worker.ts';
import { cleanup } from './helpers/processes.ts';
import { referenceHash, RING8_FLAGS, startInProcessCoordinator, type InProcessCoordinator } from './helpers/inprocess.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const TOKEN = 'browser-test-token';
/** Step timeouts: page load + wasm start, joining, the run itself on a loaded 2-core machine. */
const STEP_MS = 30_000;
const RUN_MS = 90_000;

let browser: Browser | null = null;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await browser?.close().catch(() => undefined);
  browser = null;
  for (const c of closers.splice(0)) await c().catch(() => undefined);
  await cleanup();
}, HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);


/** A coordinator listening on 127.0.0.1 (ring8, the test token) whose run loop the test starts (h.start()). */
async function listening(network: Partial<NetworkConfig> = {}, schedule: Partial<ScheduleConfig> = {}): Promise<InProcessCoordinator> {
  const h = await startInProcessCoordinator({ flags: RING8_FLAGS, token: TOKEN, network, schedule, startRun: false });
  closers.push(() => h.close());
  return h;
}

interface JoinState {
  phase: string;
  message: string;
  backend: string;
  shards: number;
  code: string;
  workerId: string;
}

const joinState = (page: Page): Promise<JoinState> => page.evaluate(() => (globalThis as unknown as { ganJoin: JoinState }).ganJoin);

/** Polls the page's state until pred holds (page.evaluate: the page's CSP forbids eval). */
async function waitForState(page: Page, pred: (s: JoinState) => boolean, timeoutMs: number, what: string): Promise<JoinState> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await joinState(page).catch(() => null);
    if (s && pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for the page to be ${what}; it is ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Opens /join in a fresh context, records every request, and waits for the wasm backend. */
async function openJoin(b: Browser, port: number): Promise<{ page: Page; requests: string[] }> {
  const page = await (await b.newContext()).newPage();
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(`http://127.0.0.1:${port}/join`, { timeout: STEP_MS });
  return { page, requests };
}

async function openLink(b: Browser, port: number, key: string): Promise<Page> {
  const page = await (await b.newContext()).newPage();
  await page.goto(`http://127.0.0.1:${port}/join#key=${key}`, { timeout: STEP_MS });
  return page;
}

async function submitToken(page: Page, token: string): Promise<void> {
  // The backend loads while the token is typed; joining waits for it either way.
  await page.fill('#token', token, { timeout: STEP_MS });
  await page.click('#join', { timeout: STEP_MS });
}

describe('browser workers (/join)', () => {
  it(
    "one Node worker and two tabs give gan-train's hash on ring8, also when a tab closes mid-phase",
    async () => {
      const reference = await referenceHash(RING8_FLAGS);
      const h = await listening();
      browser = await launchChromium(STEP_MS);
      const tabs = [await openJoin(browser, h.port), await openJoin(browser, h.port)];
      for (const t of tabs) await submitToken(t.page, TOKEN);
      const states = await Promise.all(tabs.map((t) => waitForState(t.page, (s) => s.phase === 'working', STEP_MS, 'working')));
      for (const s of states) expect(s.backend).toBe('wasm');
      expect(new Set(states.map((s) => s.workerId)).size).toBe(2);
      const opts: WorkerOptions = { url: `ws://127.0.0.1:${h.port}`, token: TOKEN, workerId: 'node-w1', backend: 'wasm', log: createLogger({ name: 'worker', stdout: false }), stay: false, maxRetries: 3, backoff: DEFAULT_BACKOFF, idleTimeoutMs: 30_000, testDelayMs: 0 };
      const node = new Worker(opts);
      const nodeDone = node.run();
      await h.waitFor((r) => r.event === 'worker_joined' && r.worker === 'node-w1', STEP_MS, 'the Node worker to join');
      const joined = h.records.filter((r) => r.event === 'worker_joined');
      expect(joined).toHaveLength(3);
      expect(joined.filter((r) => String(r.host).startsWith('browser '))).toHaveLength(2);

      const done = h.start();
      // Once the second tab has sent results, stall it (its script paused in the debugger, like a
      // hung or throttled background tab) at a moment the coordinator counts shards it still
      // owes, then close it: mid-phase.
      await waitForState(tabs[1].page, (s) => s.shards >= 4, RUN_MS, 'past its first results');
      const closedId = (await joinState(tabs[1].page)).workerId;
      const cdp = await tabs[1].page.context().newCDPSession(tabs[1].page);
      const held = () => (h.coordinator.status().workers as { id: string; shardsHeld: number }[]).find((w) => w.id === closedId)?.shardsHeld ?? 0;
      const deadline = Date.now() + STEP_MS;
      await cdp.send('Debugger.enable');
      for (;;) {
        await cdp.send('Debugger.pause');
        // A result sent just before the pause lands first; then what it holds stays held.
        await new Promise((r) => setTimeout(r, 300));
        if (held() > 0) break;
        expect(Date.now(), 'the tab never held shards while stalled').toBeLessThan(deadline);
        await cdp.send('Debugger.resume');
        await new Promise((r) => setTimeout(r, 20));
      }
      await tabs[1].page.close();
      await h.waitFor((r) => r.event === 'worker_left' && r.worker === closedId, STEP_MS, 'the closed tab to leave');
      await h.waitFor((r) => r.event === 'shard_reassigned' && r.from === closedId, STEP_MS, "the closed tab's shards to be reassigned");

      const result = await Promise.race([done, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('run did not finish')), RUN_MS))]);
      expect(result.weightsHash).toBe(reference);
      // As gan-coordinator does after the last iteration: bye RUN_FINISHED to every worker.
      await h.coordinator.releaseWorkers();
      const finished = await waitForState(tabs[0].page, (s) => s.phase === 'finished', STEP_MS, 'finished');
      expect(finished.shards).toBeGreaterThan(0);
      expect(await nodeDone).toBe(0);
      // The page talked to its own server only, and the token is in no URL.
      for (const url of tabs[0].requests) {
        expect(url.startsWith(`http://127.0.0.1:${h.port}/`) || url.startsWith('data:'), url).toBe(true);
        expect(url).not.toContain(TOKEN);
      }
      expect(tabs[0].requests.some((u) => u.endsWith('/join/wasm/tfjs-backend-wasm-simd.wasm'))).toBe(true);
    },
    HEAVY_TEST_MS,
  );

  it(
    'a stalled (background) tab is a straggler: its shards are duplicated, same hash',
    async () => {
      const reference = await referenceHash(RING8_FLAGS);
      const h = await listening({}, { straggler: { factor: 3, minMs: 300 } });
      browser = await launchChromium(STEP_MS);
      const { page } = await openJoin(browser, h.port);
      await submitToken(page, TOKEN);
      const tab = await waitForState(page, (s) => s.phase === 'working', STEP_MS, 'working');
      const node = new Worker({ url: `ws://127.0.0.1:${h.port}`, token: TOKEN, workerId: 'node-w2', backend: 'wasm', log: createLogger({ name: 'worker', stdout: false }), stay: false, maxRetries: 3, backoff: DEFAULT_BACKOFF, idleTimeoutMs: 30_000, testDelayMs: 0 });
      const nodeDone = node.run();
      await h.waitFor((r) => r.event === 'worker_joined' && r.worker === 'node-w2', STEP_MS, 'the Node worker to join');
      const done = h.start();
      await waitForState(page, (s) => s.shards >= 4, RUN_MS, 'past its first results');
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Debugger.enable');
      await cdp.send('Debugger.pause');
      const dup = await h.waitFor((r) => r.event === 'shard_duplicated' && r.to === 'node-w2', STEP_MS, "the stalled tab's shards to be duplicated");
      expect(Array.isArray(dup.shards)).toBe(true);
      await cdp.send('Debugger.resume');
      const result = await Promise.race([done, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('run did not finish')), RUN_MS))]);
      expect(result.weightsHash).toBe(reference);
      await h.coordinator.releaseWorkers();
      expect(await nodeDone).toBe(0);
      // The stalled tab was slow, not dead: it stayed connected until the run finished.
      const finishedAt = h.records.findIndex((r) => r.event === 'run_finished');
      expect(h.records.slice(0, finishedAt).some((r) => r.event === 'worker_left' && r.worker === tab.workerId)).toBe(false);
    },
    HEAVY_TEST_MS,
  );

  it(
    'a wrong token in the page is refused with a clear message',
    async () => {
      const h = await listening();
      browser = await launchChromium(STEP_MS);
      const { page } = await openJoin(browser, h.port);
      await submitToken(page, 'not-the-token');
      const s = await waitForState(page, (st) => st.phase === 'refused', STEP_MS, 'refused');
      expect(s.code).toBe('AUTH_FAILED');
      const shown = await page.textContent('#message');
      expect(shown).toContain('token does not match');
      expect(shown).toContain('Check the token');
      await h.waitFor((r) => r.code === 'AUTH_FAILED', STEP_MS, 'AUTH_FAILED in the coordinator log');
    },
    HEAVY_TEST_MS,
  );

  it(
    'a short-lived join link joins without the token; an expired or foreign one is refused',
    async () => {
      const h = await listening();
      browser = await launchChromium(STEP_MS);
      const now = Math.floor(Date.now() / 1000);
      const good = await openLink(browser, h.port, joinKey(TOKEN, now + 600));
      await waitForState(good, (st) => st.message.includes('join link valid until'), STEP_MS, 'showing the link');
      expect(good.url()).toBe(`http://127.0.0.1:${h.port}/join`);
      await good.click('#join', { timeout: STEP_MS });
      const joined = await waitForState(good, (st) => st.phase === 'working', STEP_MS, 'working');
      await h.waitFor((r) => r.event === 'worker_joined' && r.worker === joined.workerId, STEP_MS, 'the linked tab to join');

      const expired = await openLink(browser, h.port, joinKey(TOKEN, now - 5));
      await expired.click('#join', { timeout: STEP_MS });
      const e = await waitForState(expired, (st) => st.phase === 'refused', STEP_MS, 'refused');
      expect(e.code).toBe('JOIN_KEY_EXPIRED');
      expect(await expired.textContent('#message')).toContain('expired');

      const foreign = await openLink(browser, h.port, joinKey('some-other-token', now + 600));
      await foreign.click('#join', { timeout: STEP_MS });
      expect((await waitForState(foreign, (st) => st.phase === 'refused', STEP_MS, 'refused')).code).toBe('AUTH_FAILED');
    },
    HEAVY_TEST_MS,
  );

  it(
    '--no-browser-workers: the page says so, and a browser hello is refused',
    async () => {
      const h = await listening({ browserWorkers: false });
      browser = await launchChromium(STEP_MS);
      const { page, requests } = await openJoin(browser, h.port);
      const s = await waitForState(page, (st) => st.phase === 'refused', STEP_MS, 'refused');
      expect(s.code).toBe('BROWSER_WORKERS_REFUSED');
      expect(await page.textContent('#message')).toContain('does not accept browser workers');
      expect(await page.isHidden('#form')).toBe(true);
      // The page never fetched the wasm binaries.
      expect(requests.some((u) => u.includes('/join/wasm/'))).toBe(false);
      // A client that skips the page but says browser in its hello is refused just the same.
      const core = new WorkerCore(
        { url: `ws://127.0.0.1:${h.port}`, token: TOKEN, workerId: 'sneaky-tab', backend: 'wasm', log: createLogger({ name: 'worker', stdout: false }), stay: false, maxRetries: 0, backoff: DEFAULT_BACKOFF, idleTimeoutMs: 30_000, testDelayMs: 0 },
        { ...nodeEnv, kind: 'browser' },
      );
      expect(await core.run()).toBe(2);
      expect(core.fatal?.code).toBe('BROWSER_WORKERS_REFUSED');
      expect(core.fatal?.reason).toContain('--no-browser-workers');
    },
    HEAVY_TEST_MS,
  );
});
