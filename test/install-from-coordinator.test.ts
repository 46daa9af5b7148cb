/**
 * A worker installed from the coordinator (coordinator/package-tarball.ts):
 *  - the tarball holds exactly what `npm pack` would pack (package.json's `files`: no test/,
 *    bench/, scripts/), and its bytes are reproducible;
 *  - a running coordinator serves it with the sha256 it logged; a fresh directory installs it with
 *    `npm install -g --prefix <dir> http://127.0.0.1:<port>/gan-distributed.tgz` (dependencies
 *    from npm's cache, --prefer-offline, else the registry), and the installed gan-worker, run
 *    from that directory, answers --version and joins the run and computes shards until it ends;
 *    the installed copy packs itself into the same bytes (same sha256).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { buildTarball, packageFiles, PACKAGE_ROOT, TARBALL_PATH } from '../coordinator/package-tarball.ts';
import { cleanup, eventsOf, makeTempDir, ROOT, spawnCli, waitForEvent, waitForExit } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const run = promisify(execFile);
/** npm install from the cache takes ~25 s on an idle 2-core machine; several times that under load. */
const INSTALL_TEST_MS = 300_000;

afterAll(cleanup);

describe('the worker package the coordinator serves', () => {
  it('holds exactly the files npm pack would, none of test/ or bench/, with reproducible bytes', async () => {
    expect(realpathSync(PACKAGE_ROOT)).toBe(realpathSync(ROOT));
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, timeout: 60_000 });
    const npmFiles = (JSON.parse(stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path).sort();
    const ours = packageFiles();
    expect(ours).toEqual(npmFiles);
    expect(ours.some((f) => /^(test|bench|scripts|deploy)\//.test(f))).toBe(false);
    expect(ours).toEqual(expect.arrayContaining(['package.json', 'README.md', 'bin/gan-worker.js', 'worker/cli.ts', 'shared/codec.ts', 'coordinator/dashboard.html', 'models/classifier/weights.bin']));
    const a = buildTarball();
    const b = buildTarball();
    expect(a.sha256).toBe(b.sha256);
    expect(a.sha256).toBe(createHash('sha256').update(a.bytes).digest('hex'));
    // tar lists what it holds: every file under package/, the bins executable.
    const dir = makeTempDir('gan-tgz-');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'p.tgz'), a.bytes);
    const listing = (await run('tar', ['tzvf', join(dir, 'p.tgz')])).stdout.trim().split('\n');
    expect(listing.map((l) => l.split(/\s+/).at(-1)).sort()).toEqual(ours.map((f) => `package/${f}`));
    expect(listing.find((l) => l.endsWith('package/bin/gan-worker.js'))).toMatch(/^-rwxr-xr-x/);
  }, HEAVY_TEST_MS);

  it(
    'a fresh directory installs it from a running coordinator, and its gan-worker joins the run',
    async () => {
      const runDir = join(makeTempDir('gan-install-run-'), 'run');
      const coord = spawnCli('coordinator', [
        '--dataset', 'ring8', '--preset', 'none', '--iterations', '20', '--batch-size', '32', '--shards', '4', '--backend', 'wasm',
        '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--checkpoint-every', '0',
      ]);
      const announced = await waitForEvent(coord, 'worker_package', 60_000);
      const port = Number((await waitForEvent(coord, 'listening', 60_000)).port);
      expect(announced.url).toBe(`http://127.0.0.1:${port}${TARBALL_PATH}`);
      expect(announced.sha256).toMatch(/^[0-9a-f]{64}$/);

      // What the dashboard and a careful user check: the bytes served hash to the logged sha256.
      const base = `http://127.0.0.1:${port}`;
      const body = Buffer.from(await (await fetch(`${base}${TARBALL_PATH}`)).arrayBuffer());
      expect(createHash('sha256').update(body).digest('hex')).toBe(announced.sha256);
      expect(body.length).toBe(announced.bytes);
      expect(await (await fetch(`${base}${TARBALL_PATH}.sha256`)).text()).toBe(`${announced.sha256}  gan-distributed.tgz\n`);
      expect(await (await fetch(`${base}/install.json`)).json()).toMatchObject({ path: TARBALL_PATH, sha256: announced.sha256, bytes: announced.bytes });

      // A fresh directory, nothing but Node and npm: the documented one-command install.
      const home = makeTempDir('gan-install-');
      const prefix = join(home, 'global');
      const started = performance.now();
      await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--omit=optional', `${base}${TARBALL_PATH}`], {
        cwd: home,
        timeout: INSTALL_TEST_MS - 60_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      const installS = (performance.now() - started) / 1000;
      const bin = join(prefix, 'bin', 'gan-worker');
      expect(existsSync(bin)).toBe(true);
      expect(existsSync(join(prefix, 'lib', 'node_modules', 'gan-distributed', 'test'))).toBe(false);
      expect(existsSync(join(prefix, 'lib', 'node_modules', 'gan-distributed', 'bench'))).toBe(false);

      // Reproducible: the installed copy packs itself into the very same bytes (a coordinator run
      // from an installed package serves the same sha256).
      const installed = join(prefix, 'lib', 'node_modules', 'gan-distributed');
      const repack = await run(process.execPath, ['--import', 'tsx/esm', '--input-type=module', '-e', `const { buildTarball } = await import(${JSON.stringify(join(installed, 'coordinator', 'package-tarball.ts'))}); process.stdout.write(buildTarball(${JSON.stringify(installed)}).sha256);`], { cwd: installed, timeout: 60_000 });
      expect(repack.stdout).toBe(announced.sha256);

      const version = spawnCli('worker', ['--version'], { script: bin, cwd: home, name: 'installed gan-worker --version' });
      expect((await waitForExit(version, 60_000)).code).toBe(0);
      expect(version.lines.join('\n')).toMatch(/^gan-worker \d+\.\d+\.\d+/);

      const worker = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'installed', '--backend', 'wasm'], { script: bin, cwd: home, name: 'installed worker' });
      const joined = await waitForEvent(coord, (e) => e.event === 'worker_joined' && e.worker === 'installed', 120_000);
      expect(joined.backend).toBe('wasm');
      const finished = await waitForEvent(coord, 'run_finished', 120_000);
      expect(finished.iterations).toBe(20);
      expect((await waitForExit(worker, 30_000)).code).toBe(0);
      expect(eventsOf(worker, 'worker_finished').length).toBe(1);
      expect(Number(eventsOf(worker, 'worker_finished')[0].shardsDone)).toBeGreaterThan(0);
      console.log(`install from the coordinator: ${(body.length / 1024).toFixed(0)} KiB tarball, npm install ${installS.toFixed(1)} s`);
    },
    INSTALL_TEST_MS,
  );
});
