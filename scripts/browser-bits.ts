/**
 * Measurement: does Chromium's wasm backend give the same bits as Node's? For each model, the
 * weights hash of a short run trained only by browser tabs (headless Chromium on the /join page)
 * against gan-train's hash for the same flags (computed here, on Node's wasm backend).
 *
 *   npx tsx scripts/browser-bits.ts            # every model
 *   npx tsx scripts/browser-bits.ts ring8      # one
 *   npx tsx scripts/browser-bits.ts --webgl    # the page's opt-in WebGL backend instead (a GPU,
 *                                              # or Chromium's software GL, SwiftShader)
 *
 * Prints one JSON line per model: same (bool), both hashes, the tab's mean ms per shard.
 * Needs Debian's /usr/bin/chromium (as the dashboard test); downloads nothing.
 */
import { chromium } from 'playwright-core';
import { referenceHash, startInProcessCoordinator } from '../test/helpers/inprocess.ts';

const CASES: Record<string, string[]> = {
  ring8: ['--dataset', 'ring8', '--preset', 'none', '--iterations', '12', '--batch-size', '64', '--shards', '8', '--backend', 'wasm'],
  'mlp-small': ['--dataset', 'mnist', '--model', 'mlp-small', '--iterations', '3', '--batch-size', '32', '--shards', '4', '--backend', 'wasm'],
  mlp: ['--dataset', 'mnist', '--model', 'mlp', '--iterations', '2', '--batch-size', '32', '--shards', '4', '--backend', 'wasm'],
  dcgan: ['--dataset', 'mnist', '--model', 'dcgan', '--iterations', '2', '--batch-size', '16', '--shards', '4', '--backend', 'wasm'],
};

const TOKEN = 'bits-token';

const WEBGL = process.argv.includes('--webgl');
const GL_ARGS = ['--enable-unsafe-swiftshader', '--use-angle=swiftshader', '--ignore-gpu-blocklist'];

async function measure(name: string, flags: string[], tabs: number): Promise<Record<string, unknown>> {
  const node = await referenceHash(flags);
  const c = await startInProcessCoordinator({ flags, token: TOKEN });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', ...(WEBGL ? GL_ARGS : ['--disable-gpu']), '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const pages = [];
  const t0 = performance.now();
  try {
    for (let i = 0; i < tabs; i++) {
      const page = await (await browser.newContext()).newPage();
      page.on('console', (m) => {
        if (m.type() === 'error') console.error(`[${name} tab ${i}]`, m.text());
      });
      page.on('pageerror', (e) => console.error(`[${name} tab ${i}] pageerror`, e.message));
      await page.goto(`http://127.0.0.1:${c.port}/join`);
      await page.fill('#token', TOKEN);
      if (WEBGL) await page.check('#webgl');
      await page.click('#join');
      pages.push(page);
    }
    const result = await Promise.race([
      c.done,
      (async () => {
        // A backend that cannot start ends the measurement instead of waiting for ever.
        for (;;) {
          const st = (await pages[0].evaluate(() => (globalThis as unknown as { ganJoin: Record<string, unknown> }).ganJoin)) as { phase: string; message: string };
          if (st.phase === 'error' || st.phase === 'refused') throw new Error(st.message);
          await new Promise((r) => setTimeout(r, 250));
        }
      })(),
    ]);
    const st = (await pages[0].evaluate(() => (globalThis as unknown as { ganJoin: Record<string, unknown> }).ganJoin)) as { backend: string; meanShardMs: number; shards: number };
    return { backend: st.backend, same: result.weightsHash === node, browser: result.weightsHash, node, msPerShard: st.meanShardMs, shards: st.shards, seconds: Math.round((performance.now() - t0) / 100) / 10 };
  } finally {
    await browser.close();
    await c.close();
  }
}

const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
for (const [name, flags] of Object.entries(CASES)) {
  if (only.length && !only.includes(name)) continue;
  try {
    const r = await measure(name, flags, 1);
    console.log(JSON.stringify({ model: name, flags: flags.join(' '), ...r }));
  } catch (err) {
    console.log(JSON.stringify({ model: name, flags: flags.join(' '), webgl: WEBGL, failed: err instanceof Error ? err.message : String(err) }));
  }
}
process.exit(0);
