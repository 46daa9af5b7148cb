/**
 * npm run bench:multihost: the coordinator and 3 worker "hosts" in four network namespaces on a
 * bridge (test/helpers/netns.ts), the coordinator's link capped with tc tbf, real
 * bin/gan-coordinator.js and bin/gan-worker.js processes (with a token: they are not on
 * loopback). For every bandwidth cap x wire format x worker count it measures the iteration time
 * (median over iterations after a warm-up, from the coordinator's per-iteration `progress` lines,
 * --log-every 1) and the bytes per iteration (the coordinator's frame counters and its eth0
 * counters), and puts them beside a simple model:
 *
 *   T_model = C / N + A + (L_down + L_up) / R
 *
 *   C       worker-seconds of compute per iteration, as the workers report it (`computeS`: the sum
 *           of every shard result's computeMs). On this box all N workers and the coordinator
 *           share 2 cores, so C grows with N (oversubscription); measuring it in the same run
 *           puts that in the model instead of hiding it in the fit.
 *   N       workers. The coordinator splits a phase's shards in proportion to each worker's speed,
 *           so the busiest worker's compute is about C / N (exact when S is a multiple of N).
 *   A       coordinator apply per iteration (`applyS`: planning, shard-order average, optimizer
 *           step, weight broadcast call).
 *   L_down  bytes the coordinator's eth0 sent per iteration (Ethernet frames: payload + TCP/IP
 *           and Ethernet headers), mostly the changed net x N workers plus the real rows.
 *   L_up    bytes its eth0 received per iteration, mostly one gradient per aligned block of the
 *           shards a worker holds (about one per worker, flat in S: issue #15).
 *   R       the tbf rate (bytes/s, each direction), or with no cap the rate a bulk TCP transfer
 *           reached over the same veth (the calibration at the start of each cap).
 *
 * The sum assumes no overlap of transfer with compute; `A + max(C / N, (L_down + L_up) / R)` is
 * the other extreme (perfect overlap), and the measurement should fall between the two.
 *
 *   npm run bench:multihost                                  # 100 Mbit/s, 1 Gbit/s, uncapped; 1-3 workers
 *   npm run bench:multihost -- --caps 100mbit --workers 3    # one configuration
 *   npm run bench:multihost -- --wire fp32,fp16              # both wire formats (needs gan-coordinator --wire)
 *
 * Needs root, iproute2 (`ip`, `tc`) and the kernel's tbf qdisc. Every namespace, veth and qdisc it
 * creates is deleted at the end, on error and on Ctrl-C; every wait has a timeout.
 * Results: bench/results/multihost-<date>.json and .md.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, getPriority, loadavg } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { COMMON_FLAGS, helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { defaultShards, type GanOptions } from '../shared/config.ts';
import { gradientsPerPhase, joinerShare, type JoinerWindow, type ShardSample } from './lib/accounting.ts';
import { ConfigError } from '../shared/errors.ts';
import { createNetwork, netnsUnavailable, tcUnavailable, type Network } from '../test/helpers/netns.ts';
import { BINS, killAll, makeTempDir, removeTempDirs, ROOT, spawnCli, waitForEvent, waitForEvents, type LogEvent, type Proc } from '../test/helpers/processes.ts';

const PORT = 8600; // the coordinator's own namespace: no clash with anything on the host
const CALIBRATION_PORT = 9000;
const START_MS = 90_000; // a coordinator or worker process up and joined (tsx + tfjs + data on a loaded box)
const TOKEN = randomBytes(16).toString('hex');
const WORKER_HOSTS = ['w1', 'w2', 'w3'] as const;

type Wire = 'fp32' | 'fp16';

interface Cap {
  label: string;
  /** null: no qdisc, the veth as it is. */
  bitsPerSec: number | null;
}

interface Calibration {
  /** Bulk TCP from the coordinator to w1 / from w1 to the coordinator. */
  down: { payloadBytesPerSec: number; linkBytesPerSec: number; bytes: number; seconds: number };
  up: { payloadBytesPerSec: number; linkBytesPerSec: number; bytes: number; seconds: number };
}

interface IterationSample {
  iteration: number;
  wallS: number;
  computeS: number;
  waitingS: number;
  applyS: number;
  workers: number;
  split?: Record<string, number>;
}

interface Row {
  cap: string;
  bitsPerSec: number | null;
  wire: Wire;
  workers: number;
  status: 'ok' | 'truncated' | 'error';
  error?: string;
  /** Iterations measured (after warm-up) and their range. */
  iterations: number;
  fromIteration: number;
  toIteration: number;
  /** Median / mean of the per-iteration wall time (s). */
  iterationS: { median: number; mean: number; min: number; max: number };
  /** Medians per iteration (s). */
  computeS: number;
  waitingS: number;
  applyS: number;
  /** C / (S x (dSteps + 1)): one shard's compute as the workers reported it (ms). */
  computePerShardMs: number;
  /** Median of the coordinator's critical-path codec time (splitCodecS) per iteration, when it logs one: not in the model. */
  codecS?: number;
  /** WebSocket frame bytes per iteration (the coordinator's counters), MB = 1e6 bytes. */
  frameMB: { down: number; up: number };
  /** The minimum: changed weights x workers + real rows down, one gradient per shard up. */
  expectedMB: { down: number; up: number };
  /** The coordinator's eth0 per iteration (Ethernet frames). */
  linkMB: { down: number; up: number };
  model: {
    bandwidthBytesPerSec: number;
    computeS: number;
    applyS: number;
    downS: number;
    upS: number;
    predictedS: number;
    overlapBoundS: number;
    /** measured median / predicted. */
    ratio: number;
  };
  /** Average use of the link over the measured iterations, per direction (0..1). */
  utilization: { down: number; up: number };
  duplicatedShards: number;
  warning?: string;
  loadAverage: number[];
  samples: IterationSample[];
}

interface Sizes {
  gParams: number;
  dParams: number;
  /** Bytes of real rows (and labels) a D-phase's tasks carry. */
  realRowBytes: number;
  dSteps: number;
  shards: number;
  batchSize: number;
}

const say = (s: string) => process.stdout.write(`${s}\n`);
const round = (x: number, digits = 3) => Number(x.toFixed(digits));
/** Median of the finite values; NaN when there are none. */
const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** "100mbit", "1gbit", "500kbit", "none". */
function parseCap(text: string): Cap {
  const t = text.trim().toLowerCase();
  if (t === 'none') return { label: 'none', bitsPerSec: null };
  const m = /^(\d+(?:\.\d+)?)(k|m|g)bit$/.exec(t);
  if (!m) throw new ConfigError('CLI_BAD_ARGS', `--caps: '${text}' is not a rate; use e.g. 100mbit, 1gbit, 500kbit or none`);
  const bits = Number(m[1]) * { k: 1e3, m: 1e6, g: 1e9 }[m[2] as 'k' | 'm' | 'g'];
  if (!(bits >= 1e5)) throw new ConfigError('CLI_BAD_ARGS', `--caps: '${text}' is below 100kbit; the runs would never finish`);
  return { label: t, bitsPerSec: bits };
}

function parseList<T>(flag: string, text: string, parse: (s: string) => T): T[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new ConfigError('CLI_BAD_ARGS', `--${flag} needs at least one value`);
  return items.map(parse);
}

/** Whether this checkout's gan-coordinator accepts `--wire` (another change adds it). */
function coordinatorHasWireFlag(): boolean {
  const r = spawnSync(process.execPath, [BINS.coordinator, '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return r.status === 0 && /--wire\b/.test(r.stdout) && /fp16/.test(r.stdout);
}

/** Parameter counts from the models themselves (tfjs on the cpu backend, in this process). */
async function modelSizes(opts: { dataset: string; model: string; batchSize: number; shards: number }): Promise<Sizes> {
  const { loadDataSource } = await import('../trainer/data/index.ts');
  const { rowCodesOf } = await import('../shared/data/row-codes.ts');
  const { resolveConfig, sampleDim } = await import('../shared/config.ts');
  const { initBackend } = await import('../shared/backend.ts');
  const { buildModels, netLayout } = await import('../shared/models.ts');
  await initBackend('cpu');
  const source = loadDataSource(opts.dataset);
  const cfg = resolveConfig({ dataset: opts.dataset, model: opts.model as GanOptions['model'], batchSize: opts.batchSize, shards: opts.shards }, source);
  const { g, d } = buildModels(cfg.model);
  const sizes: Sizes = {
    gParams: netLayout(g).total,
    dParams: netLayout(d).total,
    // This build's workers take 8-bit data rows as one-byte codes (rows-u8), other data as float32.
    realRowBytes: cfg.train.batchSize * (sampleDim(cfg.model) * (source.kind === 'finite' && rowCodesOf(source.train) ? 1 : 4) + (cfg.model.numClasses > 0 ? 4 : 0)),
    dSteps: cfg.train.dSteps,
    shards: cfg.train.shards,
    batchSize: cfg.train.batchSize,
  };
  g.dispose();
  d.dispose();
  return sizes;
}

/** The minimum bytes per iteration: the changed net to every worker after each update, one gradient per shard back. */
function expectedBytes(s: Sizes, workers: number, wire: Wire): { down: number; up: number } {
  const w = wire === 'fp16' ? 2 : 4;
  const perIterationParams = s.dSteps * s.dParams + s.gParams;
  // Up: one gradient per aligned block a worker holds (PhaseRun's plan for equal workers), not one per shard.
  return { down: workers * perIterationParams * w + s.dSteps * s.realRowBytes, up: gradientsPerPhase(s.shards, workers) * perIterationParams * w };
}

// ------------------------------------------------------------------ calibration

const helpers = new Set<ChildProcess>();

/** Runs `node -e script` inside a host's namespace; resolves with its stdout lines, rejects on timeout/failure. */
function nodeInNs(net: Network, host: string, script: string, args: string[], timeoutMs: number, onLine?: (line: string) => void): { done: Promise<string[]>; child: ChildProcess } {
  const cmd = [...net.exec(host), process.execPath, '-e', script, '--', ...args];
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  helpers.add(child);
  const lines: string[] = [];
  let err = '';
  let buf = '';
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      lines.push(line);
      onLine?.(line);
    }
  });
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const done = new Promise<string[]>((resolveDone, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`calibration helper in ${host} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      helpers.delete(child);
      if (code === 0) resolveDone(lines);
      else reject(new Error(`calibration helper in ${host} exited with ${code}: ${err.trim().slice(-300)}`));
    });
  });
  return { done, child };
}

const SINK = `
const net = require('net');
const srv = net.createServer((c) => {
  let n = 0, t0 = 0n;
  c.on('data', (d) => { if (!t0) t0 = process.hrtime.bigint(); n += d.length; });
  c.on('end', () => { console.log(JSON.stringify({ bytes: n, seconds: Number(process.hrtime.bigint() - t0) / 1e9 })); c.end(); srv.close(); });
});
srv.listen(Number(process.argv[1]), '0.0.0.0', () => console.log('ready'));
setTimeout(() => process.exit(3), 120000).unref();`;

const SOURCE = `
const net = require('net');
const [host, port, total] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const chunk = Buffer.alloc(1 << 20, 7);
const c = net.connect(port, host, () => {
  let sent = 0;
  const pump = () => { while (sent < total) { sent += chunk.length; if (!c.write(chunk)) return c.once('drain', pump); } c.end(); };
  pump();
});
c.on('error', (e) => { console.error(e.message); process.exit(1); });`;

/** One bulk TCP transfer from `from` to `to`: payload rate at the receiver, link rate from the coordinator's counters. */
async function transfer(net: Network, from: string, to: string, bytes: number): Promise<Calibration['down']> {
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const sink = nodeInNs(net, to, SINK, [String(CALIBRATION_PORT)], 90_000, (l) => l === 'ready' && ready());
  const exitedEarly = sink.done.then(() => {
    throw new Error('calibration sink exited before it was ready');
  });
  exitedEarly.catch(() => {}); // awaited below through sink.done; only the race needs this one
  await Promise.race([isReady, exitedEarly]);
  const before = net.linkBytes('coordinator');
  const source = nodeInNs(net, from, SOURCE, [net.hosts[to].address, String(CALIBRATION_PORT), String(bytes)], 90_000);
  const [lines] = await Promise.all([sink.done, source.done]);
  const after = net.linkBytes('coordinator');
  const got = JSON.parse(lines.find((l) => l.startsWith('{'))!) as { bytes: number; seconds: number };
  const linkBytes = from === 'coordinator' ? after.tx - before.tx : after.rx - before.rx;
  return { payloadBytesPerSec: got.bytes / got.seconds, linkBytesPerSec: linkBytes / got.seconds, bytes: got.bytes, seconds: got.seconds };
}

async function calibrate(net: Network, cap: Cap): Promise<Calibration> {
  // About 2 s of traffic at the cap (8-64 MB); 256 MB uncapped.
  const bytes = cap.bitsPerSec === null ? 256 * 2 ** 20 : Math.min(64 * 2 ** 20, Math.max(8 * 2 ** 20, Math.round((cap.bitsPerSec / 8) * 2)));
  return { down: await transfer(net, 'coordinator', 'w1', bytes), up: await transfer(net, 'w1', 'coordinator', bytes) };
}

// ------------------------------------------------------------------ one configuration

interface RunSettings {
  dataset: string;
  model: string;
  batchSize: number;
  shards: number;
  warmup: number;
  measure: number;
  runTimeoutMs: number;
  stallTimeoutMs: number;
}

/** A number field of a log line; NaN when absent or not a number (so a missing field never reads as 0). */
const field = (e: LogEvent, key: string): number => (typeof e[key] === 'number' ? (e[key] as number) : NaN);

/** The critical-path split of the progress lines, kept in the JSON when the coordinator logs it. */
const SPLIT_FIELDS = ['splitComputeS', 'splitApplyS', 'splitCodecS', 'splitTransferS', 'splitIdleS', 'coordinatorS'];

function progressSample(e: LogEvent): IterationSample {
  const split = Object.fromEntries(SPLIT_FIELDS.filter((k) => typeof e[k] === 'number').map((k) => [k, e[k] as number]));
  return {
    iteration: field(e, 'iteration'),
    wallS: field(e, 'wallS'),
    computeS: field(e, 'computeS'),
    waitingS: field(e, 'waitingS'),
    applyS: field(e, 'applyS'),
    workers: field(e, 'workers'),
    ...(Object.keys(split).length ? { split } : {}),
  };
}

async function runConfig(net: Network, cap: Cap, calibration: Calibration, wire: Wire, workers: number, s: RunSettings, sizes: Sizes, label: string): Promise<Row> {
  const runDir = makeTempDir('gan-bench-mh-');
  const coordArgs = [
    '--dataset', s.dataset,
    '--model', s.model,
    '--batch-size', String(s.batchSize),
    '--shards', String(s.shards),
    '--iterations', '100000000',
    '--host', '0.0.0.0',
    '--port', String(PORT),
    '--run-dir', runDir,
    '--sample-every', '0',
    '--checkpoint-every', '0',
    '--log-every', '1',
    '--status-interval', '3600',
    // Shards out long only because the link is slow are not stragglers: no duplicates muddling the bytes.
    '--straggler-min-ms', '600000',
    '--backend', 'wasm',
    ...(wire === 'fp16' ? ['--wire', 'fp16'] : []),
  ];
  const coordinator = spawnCli('coordinator', coordArgs, { prefix: net.exec('coordinator'), env: { GAN_TOKEN: TOKEN }, name: `coordinator (${label})` });
  const deadline = Date.now() + s.runTimeoutMs;
  const left = () => Math.max(1000, deadline - Date.now());
  const procs: Proc[] = [coordinator];
  try {
    await waitForEvent(coordinator, 'listening', Math.min(START_MS, left()));
    for (const host of WORKER_HOSTS.slice(0, workers)) {
      procs.push(
        spawnCli('worker', ['--coordinator', `ws://${net.hosts.coordinator.address}:${PORT}`, '--id', host, '--backend', 'wasm'], {
          prefix: net.exec(host),
          env: { GAN_TOKEN: TOKEN },
          name: `worker ${host} (${label})`,
        }),
      );
    }
    await waitForEvents(coordinator, 'worker_joined', workers, Math.min(START_MS, left()));
    const progress = () => coordinator.events.filter((e) => e.event === 'progress');
    const joinedAt = Number(progress().at(-1)?.iteration ?? 0);
    const start = joinedAt + s.warmup;
    const end = start + s.measure;
    say(`  ${label}: ${workers} worker(s) joined at iteration ${joinedAt}; warm-up to ${start}, measuring ${start}..${end}`);
    const atIteration = (it: number) => (e: LogEvent) => e.event === 'progress' && Number(e.iteration) >= it;
    // Every wait is bounded twice: by the configuration's deadline and by --stall-timeout per iteration.
    const next = async (after: number): Promise<LogEvent> => {
      const limit = Math.min(left(), s.stallTimeoutMs);
      try {
        return await waitForEvent(coordinator, atIteration(after + 1), limit);
      } catch (err) {
        if (coordinator.exit || limit === left()) throw err;
        throw new Error(`no iteration completed within ${Math.round(limit / 1000)} s after iteration ${after} (--stall-timeout)\n${(err as Error).message.split('\n').slice(1).join('\n')}`);
      }
    };
    let seen = joinedAt;
    while (seen < start) seen = Number((await next(seen)).iteration);
    const startEvent = progress().find(atIteration(start))!;
    const linkStart = net.linkBytes('coordinator');
    const t0 = performance.now();
    // Stop at `end`, or at the deadline keeping what was measured (at least 3 iterations).
    let truncated = false;
    let endEvent: LogEvent = startEvent;
    const measuredSoFar = () => progress().filter((e) => Number(e.iteration) > Number(startEvent.iteration));
    while (Number(endEvent.iteration) < end) {
      try {
        endEvent = await next(Number(endEvent.iteration));
      } catch (err) {
        const measured = measuredSoFar();
        if (measured.length < 3 || coordinator.exit) throw err;
        truncated = true;
        endEvent = measured.at(-1)!;
        say(`  ${label}: stopped waiting (${(err as Error).message.split('\n')[0]}); keeping the ${measured.length} iterations measured`);
        break;
      }
      const measured = measuredSoFar();
      if (measured.length % 4 === 0 || Number(endEvent.iteration) >= end) {
        say(`  ${label}: it ${endEvent.iteration}/${end}, median ${median(measured.map((e) => Number(e.wallS))).toFixed(3)} s/it so far`);
      }
    }
    const linkEnd = net.linkBytes('coordinator');
    const seconds = (performance.now() - t0) / 1000;
    const window = progress().filter((e) => Number(e.iteration) > Number(startEvent.iteration) && Number(e.iteration) <= Number(endEvent.iteration));
    const samples = window.map(progressSample);
    const n = Number(endEvent.iteration) - Number(startEvent.iteration);
    const perIt = (a: number, b: number) => (b - a) / n;
    const walls = samples.map((x) => x.wallS);
    const C = median(samples.map((x) => x.computeS));
    const applyMedian = median(samples.map((x) => x.applyS));
    if (!Number.isFinite(C)) throw new Error('the progress lines carry no computeS: cannot model compute');
    // A coordinator that stops logging applyS leaves the model without its apply term (0), said in the row.
    const A = Number.isFinite(applyMedian) ? applyMedian : 0;
    const codec = median(samples.map((x) => x.split?.splitCodecS ?? NaN));
    const linkDown = perIt(linkStart.tx, linkEnd.tx);
    const linkUp = perIt(linkStart.rx, linkEnd.rx);
    const R = cap.bitsPerSec !== null ? cap.bitsPerSec / 8 : Math.min(calibration.down.linkBytesPerSec, calibration.up.linkBytesPerSec);
    const downS = linkDown / R;
    const upS = linkUp / R;
    const predicted = C / workers + A + downS + upS;
    const med = median(walls);
    const exp = expectedBytes(sizes, workers, wire);
    const duplicated = coordinator.events.filter((e) => e.event === 'shard_duplicated').length;
    if (samples.some((x) => x.workers !== workers)) say(`  ${label}: warning: the worker count changed during the measurement (${[...new Set(samples.map((x) => x.workers))].join(', ')})`);
    const row: Row = {
      cap: cap.label,
      bitsPerSec: cap.bitsPerSec,
      wire,
      workers,
      status: truncated ? 'truncated' : 'ok',
      iterations: n,
      fromIteration: Number(startEvent.iteration),
      toIteration: Number(endEvent.iteration),
      iterationS: { median: round(med), mean: round(seconds / n), min: round(Math.min(...walls)), max: round(Math.max(...walls)) },
      computeS: round(C),
      waitingS: round(median(samples.map((x) => x.waitingS))),
      applyS: round(A),
      computePerShardMs: round((1000 * C) / (sizes.shards * (sizes.dSteps + 1)), 1),
      ...(Number.isFinite(codec) ? { codecS: round(codec) } : {}),
      frameMB: { down: round(perIt(Number(startEvent.mbSent), Number(endEvent.mbSent)), 2), up: round(perIt(Number(startEvent.mbReceived), Number(endEvent.mbReceived)), 2) },
      expectedMB: { down: round(exp.down / 1e6, 2), up: round(exp.up / 1e6, 2) },
      linkMB: { down: round(linkDown / 1e6, 2), up: round(linkUp / 1e6, 2) },
      model: {
        bandwidthBytesPerSec: Math.round(R),
        computeS: round(C / workers),
        applyS: round(A),
        downS: round(downS),
        upS: round(upS),
        predictedS: round(predicted),
        overlapBoundS: round(A + Math.max(C / workers, downS + upS)),
        ratio: round(med / predicted),
      },
      utilization: { down: round(linkDown / med / R), up: round(linkUp / med / R) },
      duplicatedShards: duplicated,
      ...(Number.isFinite(applyMedian) ? {} : { warning: 'the progress lines carried no applyS: the model used 0 for apply' }),
      loadAverage: loadavg().map((x) => round(x, 2)),
      samples,
    };
    say(
      `  ${label}: ${row.iterationS.median} s/it measured, model ${row.model.predictedS} s (compute ${row.model.computeS} + apply ${row.model.applyS} + down ${row.model.downS} + up ${row.model.upS}), ` +
        `ratio ${row.model.ratio}; frames ${row.frameMB.down}/${row.frameMB.up} MB down/up per it (minimum ${row.expectedMB.down}/${row.expectedMB.up}); load ${row.loadAverage.join(' ')}`,
    );
    return row;
  } finally {
    await killAll(10_000);
    removeTempDirs();
  }
}

// ------------------------------------------------------------------ a joiner's share

interface JoinRow extends JoinerWindow {
  cap: string;
  wire: Wire;
  loadAverage: number[];
}

/** GET /status of the coordinator, from w1's namespace (the host has no route into the bridge). */
function statusSample(net: Network, iteration: number): Promise<ShardSample> {
  const url = `http://${net.hosts.coordinator.address}:${PORT}/status`;
  const script = `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => process.stdout.write(t), (e) => { console.error(String(e)); process.exit(1); })`;
  const [cmd, ...prefix] = net.exec('w1');
  return new Promise((ok, fail) => {
    const child = spawn(cmd, [...prefix, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return fail(new Error(`GET /status failed (${code}): ${err.slice(0, 200)}`));
      try {
        const st = JSON.parse(out) as { workers: { id: string; shardsDone: number; msPerShard: number }[] };
        const sample: ShardSample = { iteration, done: {}, msPerShard: {} };
        for (const w of st.workers) {
          sample.done[w.id] = w.shardsDone;
          sample.msPerShard[w.id] = w.msPerShard;
        }
        ok(sample);
      } catch (e) {
        fail(e as Error);
      }
    });
  });
}

/**
 * Coordinator + worker w1; after the warm-up w2 joins. Its share of the shards done from the
 * first iteration that starts after it is listed (>= 2 phases after its welcome) over the next
 * `measure` iterations, against its speed-proportional share (/status, read from w1's namespace).
 */
async function runJoin(net: Network, cap: Cap, wire: Wire, s: RunSettings, label: string): Promise<JoinRow> {
  const runDir = makeTempDir('gan-bench-mh-join-');
  const row: JoinRow = { cap: cap.label, wire, loadAverage: [] };
  const coordArgs = ['--dataset', s.dataset, '--model', s.model, '--batch-size', String(s.batchSize), '--shards', String(s.shards), '--iterations', '100000000', '--host', '0.0.0.0', '--port', String(PORT), '--run-dir', runDir, '--sample-every', '0', '--checkpoint-every', '0', '--log-every', '1', '--status-interval', '3600', '--straggler-min-ms', '600000', '--backend', 'wasm', ...(wire === 'fp16' ? ['--wire', 'fp16'] : [])];
  const coordinator = spawnCli('coordinator', coordArgs, { prefix: net.exec('coordinator'), env: { GAN_TOKEN: TOKEN }, name: `coordinator (${label})` });
  const worker = (host: string) => spawnCli('worker', ['--coordinator', `ws://${net.hosts.coordinator.address}:${PORT}`, '--id', host, '--backend', 'wasm'], { prefix: net.exec(host), env: { GAN_TOKEN: TOKEN }, name: `worker ${host} (${label})` });
  const atIteration = (it: number) => (e: LogEvent) => e.event === 'progress' && Number(e.iteration) >= it;
  const last = () => Number(coordinator.events.filter((e) => e.event === 'progress').at(-1)?.iteration ?? 0);
  try {
    await waitForEvent(coordinator, 'listening', START_MS);
    worker('w1');
    await waitForEvents(coordinator, 'worker_joined', 1, START_MS);
    await waitForEvent(coordinator, atIteration(last() + s.warmup), s.runTimeoutMs);
    say(`  ${label}: w2 joins at iteration ${last()}`);
    worker('w2');
    await waitForEvents(coordinator, 'worker_joined', 2, START_MS);
    const listed = last();
    const from = await statusSample(net, (await waitForEvent(coordinator, atIteration(listed + 1), s.runTimeoutMs)).iteration as number);
    const endEvent = await waitForEvent(coordinator, atIteration(from.iteration + s.measure), s.runTimeoutMs);
    const to = await statusSample(net, endEvent.iteration as number);
    const js = joinerShare(from, to, 'w2');
    Object.assign(row, { fromIteration: from.iteration, toIteration: to.iteration, ...(js ?? { error: 'no shards done after the join' }) });
    say(`  ${label}: w2 did ${row.shards}/${row.total} shards from iteration ${from.iteration} to ${to.iteration}: ${((row.share ?? NaN) * 100).toFixed(1)}% vs ${((row.expected ?? NaN) * 100).toFixed(1)}% speed-proportional`);
  } catch (err) {
    row.error = (err as Error).message.split('\n')[0];
    say(`  ${label}: error: ${row.error}`);
  } finally {
    row.loadAverage = loadavg().map((x) => round(x, 2));
    await killAll(10_000);
  }
  return row;
}

// ------------------------------------------------------------------ report

function markdown(meta: Record<string, unknown>, calibrations: Record<string, Calibration>, rows: Row[], notes: string[], joins: JoinRow[] = []): string {
  const mbit = (bytesPerSec: number) => ((bytesPerSec * 8) / 1e6).toFixed(1);
  const lines = [
    `# Multi-host bench, ${meta.date}`,
    '',
    `Command: \`${meta.command}\``,
    '',
    `${meta.cpus} CPUs (${meta.cpuModel}), load average at start ${meta.loadAtStart} and at the end ${meta.loadAtEnd}, nice ${meta.nice}, Node ${meta.node}, wasm backend.`,
    `Coordinator and ${(meta.workerHosts as string[]).length} worker hosts in network namespaces on a bridge; the coordinator's veth capped with tc tbf in both directions.`,
    `Training: \`${meta.training}\` (G ${meta.gParams} and D ${meta.dParams} parameters); ${meta.warmup} warm-up iterations after all workers joined, then ${meta.measure} measured.`,
    '',
    'Model: `T = C/N + A + (L_down + L_up)/R`; C = worker-seconds of compute per iteration as the workers report it (median),',
    'A = coordinator apply (median), L = bytes on the coordinator\'s eth0 per iteration (Ethernet frames), R = the tbf rate (uncapped: the calibrated veth rate).',
    '"overlap" = `A + max(C/N, (L_down + L_up)/R)`, the time if transfer hid entirely behind compute.',
    '',
    '## Calibration (one bulk TCP transfer each way, coordinator <-> w1)',
    '',
    '| cap | down payload Mbit/s | down link Mbit/s | up payload Mbit/s | up link Mbit/s |',
    '| --- | --- | --- | --- | --- |',
    ...Object.entries(calibrations).map(([k, c]) => `| ${k} | ${mbit(c.down.payloadBytesPerSec)} | ${mbit(c.down.linkBytesPerSec)} | ${mbit(c.up.payloadBytesPerSec)} | ${mbit(c.up.linkBytesPerSec)} |`),
    '',
    '## Iterations',
    '',
    '| cap | wire | workers | s/it measured (median) | model s/it | measured / model | overlap s/it | compute C/N | apply A | down L/R | up L/R | codec (not in the model) | ms per shard | frame MB down / up (minimum) | link MB down / up | link use down / up |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    if (r.status === 'error') {
      lines.push(`| ${r.cap} | ${r.wire} | ${r.workers} | error: ${(r.error ?? '').replace(/\|/g, '/').split('\n')[0].slice(0, 160)} |`);
      continue;
    }
    const pct = (x: number) => `${Math.round(100 * x)}%`;
    lines.push(
      `| ${r.cap} | ${r.wire} | ${r.workers} | ${r.iterationS.median.toFixed(3)}${r.status === 'truncated' ? ` (${r.iterations} it)` : ''} | ${r.model.predictedS.toFixed(3)} | ${r.model.ratio.toFixed(2)} | ${r.model.overlapBoundS.toFixed(3)} | ${r.model.computeS.toFixed(3)} | ${r.model.applyS.toFixed(3)} | ${r.model.downS.toFixed(3)} | ${r.model.upS.toFixed(3)} | ${r.codecS === undefined ? 'n/a' : r.codecS.toFixed(3)} | ${r.computePerShardMs} | ${r.frameMB.down} / ${r.frameMB.up} (${r.expectedMB.down} / ${r.expectedMB.up}) | ${r.linkMB.down} / ${r.linkMB.up} | ${pct(r.utilization.down)} / ${pct(r.utilization.up)} |`,
    );
  }
  const ok = rows.filter((r) => r.status !== 'error');
  if (ok.length > 0) {
    const dSteps = Number(meta.dSteps);
    const bpv = (wire: string) => (wire === 'fp16' ? 2 : 4);
    const gradientMB = (wire: string) => ((dSteps * Number(meta.dParams) + Number(meta.gParams)) * bpv(wire)) / 1e6;
    lines.push('', '## Bytes up per phase (issue #15)', '', `Frame MB the coordinator received per phase (per iteration / ${dSteps + 1} phases), against N x one gradient (the mean over the iteration's phases); target <= 1.05 x. S = ${meta.shards}.`, '', '| cap | wire | workers | MB up / phase | x N gradients | gradients planned |', '| --- | --- | --- | --- | --- | --- |');
    for (const r of ok) lines.push(`| ${r.cap} | ${r.wire} | ${r.workers} | ${(r.frameMB.up / (dSteps + 1)).toFixed(3)} | ${(r.frameMB.up / (r.workers * gradientMB(r.wire))).toFixed(3)} | ${gradientsPerPhase(Number(meta.shards), r.workers)} |`);
    lines.push('', '## Targets (issue #15)', '', '| target | measured | met |', '| --- | --- | --- |');
    for (const cap of [...new Set(ok.map((r) => r.cap))]) {
      for (const wire of [...new Set(ok.map((r) => r.wire))]) {
        const one = ok.find((r) => r.cap === cap && r.wire === wire && r.workers === 1);
        const three = ok.find((r) => r.cap === cap && r.wire === wire && r.workers === 3);
        if (!one || !three) continue;
        const x = three.iterationS.median / one.iterationS.median;
        lines.push(`| ${cap} ${wire}: iteration time 3 workers < 1 worker | ${three.iterationS.median.toFixed(3)} s vs ${one.iterationS.median.toFixed(3)} s (${x.toFixed(3)} x) | ${x < 1 ? 'yes' : '**no**'} |`);
      }
    }
  }
  if (joins.length > 0) {
    lines.push('', "## A joiner's share (issue #15)", '', 'Coordinator + w1; w2 joins after the warm-up; its share of the shards done from the first iteration after it is listed (>= 2 phases after its welcome), against its speed-proportional share; target: within 25%.', '', '| cap | wire | iterations | w2 shards / all | share | speed-proportional | ratio | load |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const j of joins) {
      lines.push(j.error ? `| ${j.cap} | ${j.wire} | error: ${j.error.slice(0, 120)} | | | | | ${j.loadAverage.join(' ')} |` : `| ${j.cap} | ${j.wire} | ${j.fromIteration}-${j.toIteration} | ${j.shards} / ${j.total} | ${(100 * j.share!).toFixed(1)}% | ${(100 * j.expected!).toFixed(1)}% | ${(j.share! / j.expected!).toFixed(3)} x${Math.abs(j.share! / j.expected! - 1) <= 0.25 ? '' : ' (**missed**)'} | ${j.loadAverage.join(' ')} |`);
    }
  }
  const rowNotes = rows.flatMap((r) => [
    ...(r.warning ? [`${r.cap} ${r.wire} ${r.workers} workers: ${r.warning}`] : []),
    ...(r.duplicatedShards > 0 ? [`${r.cap} ${r.wire} ${r.workers} workers: ${r.duplicatedShards} shard(s) duplicated as stragglers`] : []),
  ]);
  const allNotes = [...notes, ...rowNotes];
  if (allNotes.length) lines.push('', '## Notes', '', ...allNotes.map((n) => `- ${n}`));
  return lines.join('\n') + '\n';
}

// ------------------------------------------------------------------ main

const FLAGS: FlagTable = {
  caps: { type: 'string', help: 'comma-separated tbf rates on the coordinator\'s link (e.g. 100mbit,1gbit) or none', defaultText: '100mbit,1gbit,none' },
  workers: { type: 'string', help: 'comma-separated worker counts, each 1-3', defaultText: '1,2,3' },
  'no-join': { type: 'boolean', help: "skip the joiner's-share run (w2 joining w1) after each cap's configurations" },
  wire: { type: 'string', help: "fp32, fp16, fp32,fp16, or auto (fp32, plus fp16 if gan-coordinator accepts --wire)", defaultText: 'auto' },
  dataset: { type: 'string', help: 'training data set', defaultText: 'mnist' },
  model: { type: 'string', help: 'model', defaultText: 'mlp-small' },
  'batch-size': { type: 'string', kind: 'int', help: 'global batch B', defaultText: '96' },
  shards: { type: 'string', kind: 'int', help: 'shards S per batch', defaultText: "the trainers' default for the batch" },
  warmup: { type: 'string', kind: 'int', help: 'iterations dropped after all workers joined', defaultText: '3' },
  measure: { type: 'string', kind: 'int', help: 'iterations measured per configuration', defaultText: '12' },
  'run-timeout': { type: 'string', kind: 'number', help: 'seconds per configuration, start-up included (a run cut short keeps >= 3 measured iterations)', defaultText: '180' },
  'stall-timeout': { type: 'string', kind: 'number', help: 'give up on a configuration when no iteration completes for this many seconds', defaultText: '60' },
  out: { type: 'string', help: 'results directory', defaultText: 'bench/results' },
  help: COMMON_FLAGS.help,
};

const USAGE = `Usage: npm run bench:multihost -- [options]

Coordinator + 3 worker hosts in network namespaces, the coordinator's link capped with tc tbf;
iteration time and bytes per iteration beside the model T = C/N + A + (L_down + L_up)/R.
Needs root and iproute2. Results: bench/results/multihost-<date>.{json,md}.`;

runMain(async () => {
  const v = parseFlags(process.argv.slice(2), FLAGS);
  if (v.help) {
    process.stdout.write(helpText(USAGE, FLAGS));
    return 0;
  }
  const caps = parseList('caps', typeof v.caps === 'string' ? v.caps : '100mbit,1gbit,none', parseCap);
  const workerCounts = parseList('workers', typeof v.workers === 'string' ? v.workers : '1,2,3', (x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1 || n > WORKER_HOSTS.length) throw new ConfigError('CLI_BAD_ARGS', `--workers: '${x}' must be a whole number from 1 to ${WORKER_HOSTS.length}`);
    return n;
  });
  const int = (name: string, dflt: number, min: number) => {
    const x = v[name] === undefined ? dflt : Number(v[name]);
    if (x < min) throw new ConfigError('CLI_BAD_NUMBER', `--${name} must be at least ${min}`);
    return x;
  };
  const settings: RunSettings = {
    dataset: typeof v.dataset === 'string' ? v.dataset : 'mnist',
    model: typeof v.model === 'string' ? v.model : 'mlp-small',
    batchSize: int('batch-size', 96, 1),
    shards: int('shards', defaultShards(int('batch-size', 96, 1)), 1),
    warmup: int('warmup', 3, 1),
    measure: int('measure', 12, 3),
    runTimeoutMs: int('run-timeout', 180, 30) * 1000,
    stallTimeoutMs: int('stall-timeout', 60, 5) * 1000,
  };
  const unavailable = netnsUnavailable() ?? tcUnavailable();
  if (unavailable) throw new ConfigError('BENCH_NEEDS_NETNS', `the multi-host bench ${unavailable}; run it as root on Linux with iproute2`);

  const notes: string[] = [];
  const wireText = typeof v.wire === 'string' ? v.wire : 'auto';
  const hasWire = coordinatorHasWireFlag();
  let wires: Wire[];
  if (wireText === 'auto') {
    wires = hasWire ? ['fp32', 'fp16'] : ['fp32'];
    if (!hasWire) notes.push('fp16 rows skipped: this checkout\'s gan-coordinator does not accept `--wire` yet (rerun with `--wire fp32,fp16` once it does).');
  } else {
    wires = parseList('wire', wireText, (x) => {
      if (x !== 'fp32' && x !== 'fp16') throw new ConfigError('CLI_BAD_ARGS', `--wire: '${x}' must be fp32 or fp16`);
      return x;
    });
    if (wires.includes('fp16') && !hasWire) throw new ConfigError('BENCH_NO_WIRE_FLAG', "--wire fp16 needs gan-coordinator's --wire flag, which this checkout does not have; use --wire fp32");
  }

  const outDir = resolve(typeof v.out === 'string' ? v.out : join(ROOT, 'bench', 'results'));
  const date = new Date().toISOString().replace(/\..*$/, '').replace(/:/g, '-');
  const sizes = await modelSizes(settings);
  const meta: Record<string, unknown> = {
    date,
    command: `npm run bench:multihost${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
    nice: getPriority(),
    node: process.version,
    training: `--dataset ${settings.dataset} --model ${settings.model} --batch-size ${settings.batchSize} --shards ${settings.shards} --backend wasm`,
    gParams: sizes.gParams,
    dParams: sizes.dParams,
    shards: settings.shards,
    dSteps: sizes.dSteps,
    realRowBytes: sizes.realRowBytes,
    warmup: settings.warmup,
    measure: settings.measure,
    workerHosts: [...WORKER_HOSTS],
    caps: caps.map((c) => c.label),
    wires,
    workerCounts,
  };
  const rows: Row[] = [];
  const joins: JoinRow[] = [];
  const calibrations: Record<string, Calibration> = {};
  const write = () => {
    meta.loadAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ');
    mkdirSync(outDir, { recursive: true });
    const base = join(outDir, `multihost-${date}`);
    writeFileSync(`${base}.json`, JSON.stringify({ ...meta, notes, calibrations, rows, joins }, null, 2) + '\n');
    writeFileSync(`${base}.md`, markdown(meta, calibrations, rows, notes, joins));
    return base;
  };

  const tag = `ganmh${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const subnet = `10.214.${1 + (process.pid % 250)}`;
  let net: Network | null = null;
  const teardown = async () => {
    for (const c of helpers) c.kill('SIGKILL');
    await killAll(10_000); // processes first: a namespace with processes inside outlives `ip netns del`
    net?.destroy();
    removeTempDirs();
  };
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    say(`\n${sig}: stopping; killing the bench's processes and deleting namespaces ${tag}-*`);
    notes.push(`interrupted by ${sig}: partial results`);
    void teardown().finally(() => {
      if (rows.length) say(`partial results: ${relative(process.cwd(), write())}.json, .md`);
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const total = caps.length * wires.length * workerCounts.length;
  say(`multi-host bench: caps ${caps.map((c) => c.label).join(', ')}; wire ${wires.join(', ')}; workers ${workerCounts.join(', ')} (${total} configurations, at most ${settings.runTimeoutMs / 1000} s each)`);
  say(`  ${meta.training}: G ${sizes.gParams} + D ${sizes.dParams} parameters; ${cpus().length} CPUs, load ${meta.loadAtStart}, nice ${meta.nice}`);
  try {
    net = createNetwork({ tag, subnet, hosts: ['coordinator', ...WORKER_HOSTS] });
    say(`  network: namespaces ${tag}-{hub,coordinator,${WORKER_HOSTS.join(',')}}, ${subnet}.0/24`);
    let done = 0;
    for (const cap of caps) {
      if (cap.bitsPerSec === null) net.uncap('coordinator');
      else net.cap('coordinator', { bitsPerSec: cap.bitsPerSec });
      say(`[${cap.label}] ${cap.bitsPerSec === null ? 'no cap on the coordinator\'s link' : net.describeCap('coordinator')}`);
      const cal = await calibrate(net, cap);
      calibrations[cap.label] = cal;
      const mbit = (x: number) => ((x * 8) / 1e6).toFixed(1);
      say(`[${cap.label}] calibration: down ${mbit(cal.down.payloadBytesPerSec)} Mbit/s payload (${mbit(cal.down.linkBytesPerSec)} on the link), up ${mbit(cal.up.payloadBytesPerSec)} (${mbit(cal.up.linkBytesPerSec)})`);
      for (const wire of wires) {
        for (const workers of workerCounts) {
          done++;
          const label = `[${done}/${total} ${cap.label} ${wire} ${workers}w]`;
          try {
            rows.push(await runConfig(net, cap, cal, wire, workers, settings, sizes, label));
          } catch (err) {
            if (stopping) return 130;
            const message = (err as Error).message;
            say(`  ${label}: error: ${message.split('\n').slice(0, 8).join('\n    ')}`);
            rows.push({ cap: cap.label, bitsPerSec: cap.bitsPerSec, wire, workers, status: 'error', error: message } as Row);
          }
          write(); // after every configuration, so a long bench leaves partial results
        }
      }
      if (v['no-join'] !== true) {
        joins.push(await runJoin(net, cap, wires[0], settings, `[join ${cap.label} ${wires[0]}]`));
        if (stopping) return 130;
        write();
      }
    }
  } finally {
    if (!stopping) await teardown();
  }
  const base = write();
  say(`results: ${relative(process.cwd(), base)}.json, .md`);
  return rows.some((r) => r.status === 'error') ? 1 : 0;
});
