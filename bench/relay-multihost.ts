/**
 * npm run bench:relay-multihost -- [--rate 100] [--workers 1,4,8] [--fan-out 0,2] [--width 256] [--iterations 12] [--sum-chunk n] [--chunk-bytes n]
 *
 * Iteration time against N, star against relay tree, with EVERY host's link capped (tc tbf,
 * test/helpers/netns.ts): one namespace for the coordinator and one per worker, each eth0 capped at
 * --rate Mbit/s both ways, so a relay's own link is as slow as the coordinator's (the regime of
 * issue #16: link-bound, compute small). Every worker listens for relay children
 * (--relay-listen 0.0.0.0:8700, advertised at its namespace address). Per configuration: the
 * median `wallS` of the coordinator's per-iteration progress lines (--log-every 1) after the
 * workers joined and a 4-iteration warm-up, and the coordinator's eth0 bytes per iteration.
 *
 * --sum-chunk (values per range of a sum going up) and --chunk-bytes (bytes per weights chunk
 * going down) set the coordinator's GAN_RELAY_SUM_CHUNK / GAN_RELAY_CHUNK_BYTES, to measure the
 * sizes; without them the defaults.
 *
 * Needs root, iproute2 and sch_tbf. Everything it creates is deleted at the end. Results:
 * bench/results/relay-multihost-<date>.{json,md} (with the command and the load average).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { COMMON_FLAGS, helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { median } from './lib/accounting.ts';
import { createNetwork, netnsUnavailable, tcUnavailable, type Network } from '../test/helpers/netns.ts';
import { killAll, makeTempDir, removeTempDirs, spawnCli, waitForEvent, waitForEvents, type LogEvent } from '../test/helpers/processes.ts';

const OPTIONS: FlagTable = {
  rate: { type: 'string', value: '<mbit>', kind: 'number', help: "tbf rate on every host's link, Mbit/s", defaultText: '100' },
  workers: { type: 'string', value: '<list>', help: 'comma-separated worker counts', defaultText: '1,4,8' },
  'fan-out': { type: 'string', value: '<list>', help: 'comma-separated fan-outs; 0 is the star', defaultText: '0,2' },
  width: { type: 'string', value: '<n>', kind: 'int', help: "mlp2d's hidden width (sets the bytes per copy)", defaultText: '256' },
  iterations: { type: 'string', value: '<n>', kind: 'int', help: 'iterations measured per configuration', defaultText: '12' },
  'sum-chunk': { type: 'string', value: '<n>', kind: 'int', help: 'values per range of a sum going up (GAN_RELAY_SUM_CHUNK)', defaultText: "the coordinator's default" },
  'chunk-bytes': { type: 'string', value: '<n>', kind: 'int', help: 'bytes per weights chunk going down (GAN_RELAY_CHUNK_BYTES)', defaultText: "the coordinator's default" },
  help: COMMON_FLAGS.help,
};
const v = parseFlags(process.argv.slice(2), OPTIONS);
if (v.help) {
  process.stdout.write(helpText("Usage: npm run bench:relay-multihost -- [options]\n\nIteration time against N, star against relay tree, every host's link capped (root, iproute2).", OPTIONS));
  process.exit(0);
}
const arg = (name: string, dflt: string): string => (typeof v[name] === 'string' ? (v[name] as string) : dflt);
const rateMbit = Number(arg('rate', '100'));
const workerCounts = arg('workers', '1,4,8').split(',').map(Number);
const fanOuts = arg('fan-out', '0,2').split(',').map(Number);
const width = arg('width', '256');
const measure = Number(arg('iterations', '12'));
const tuningEnv: Record<string, string> = {
  ...(typeof v['sum-chunk'] === 'string' ? { GAN_RELAY_SUM_CHUNK: v['sum-chunk'] as string } : {}),
  ...(typeof v['chunk-bytes'] === 'string' ? { GAN_RELAY_CHUNK_BYTES: v['chunk-bytes'] as string } : {}),
};
const WARMUP = 4;
const PORT = 8600;
const TOKEN = randomBytes(16).toString('hex');

/** A fresh relay port per configuration: a worker of the previous one may still hold its port while it exits. */
let relayPort = 8700;

async function runConfig(net: Network, n: number, fanOut: number): Promise<Record<string, unknown>> {
  relayPort++;
  const runDir = makeTempDir('gan-relay-mh-');
  const coordinator = spawnCli(
    'coordinator',
    ['--dataset', 'ring8', '--preset', 'none', '--model', 'mlp2d', '--width', width, '--batch-size', '64', '--shards', '8', '--iterations', '100000000', '--host', '0.0.0.0', '--port', String(PORT), '--run-dir', runDir, '--sample-every', '0', '--checkpoint-every', '0', '--log-every', '1', '--status-interval', '3600', '--straggler-min-ms', '600000', '--backend', 'wasm', '--fan-out', String(fanOut)],
    { prefix: net.exec('coordinator'), env: { GAN_TOKEN: TOKEN, ...tuningEnv }, name: `coordinator f${fanOut} n${n}` },
  );
  try {
    await waitForEvent(coordinator, 'listening', 90_000);
    for (let i = 1; i <= n; i++) {
      const host = `w${i}`;
      const addr = net.hosts[host]!.address;
      spawnCli('worker', ['--coordinator', `ws://${net.hosts.coordinator!.address}:${PORT}`, '--id', host, '--backend', 'wasm', '--relay-listen', `0.0.0.0:${relayPort}`, '--relay-advertise', `ws://${addr}:${relayPort}`], { prefix: net.exec(host), env: { GAN_TOKEN: TOKEN }, name: `worker ${host}` });
    }
    await waitForEvents(coordinator, 'worker_joined', n, 120_000);
    if (fanOut > 0) await waitForEvents(coordinator, 'relay_placed', n, 60_000);
    const progress = () => coordinator.events.filter((e) => e.event === 'progress');
    const from = Number(progress().at(-1)?.iteration ?? 0) + WARMUP;
    await waitForEvent(coordinator, (e) => e.event === 'progress' && Number(e.iteration) >= from, 300_000);
    const link0 = net.linkBytes('coordinator');
    const start = Number(progress().at(-1)!.iteration);
    await waitForEvent(coordinator, (e) => e.event === 'progress' && Number(e.iteration) >= start + measure, 600_000);
    const link1 = net.linkBytes('coordinator');
    const window: LogEvent[] = progress().filter((e) => Number(e.iteration) > start && Number(e.iteration) <= start + measure);
    const its = Number(window.at(-1)!.iteration) - start;
    return {
      fanOut,
      workers: n,
      medianIterationS: Number(median(window.map((e) => Number(e.wallS))).toFixed(3)),
      coordinatorTxMBPerIteration: Number(((link1.tx - link0.tx) / its / 1e6).toFixed(3)),
      coordinatorRxMBPerIteration: Number(((link1.rx - link0.rx) / its / 1e6).toFixed(3)),
      reparented: coordinator.events.filter((e) => e.event === 'reparented').length,
    };
  } finally {
    await killAll();
  }
}

async function main(): Promise<void> {
  const why = netnsUnavailable() ?? tcUnavailable();
  if (why) throw new Error(`bench:relay-multihost ${why}`);
  const maxN = Math.max(...workerCounts);
  const hosts = ['coordinator', ...Array.from({ length: maxN }, (_, i) => `w${i + 1}`)];
  const net = createNetwork({ tag: `grl${process.pid.toString(36)}`, subnet: `10.231.${process.pid % 200}`, hosts });
  const rows: Record<string, unknown>[] = [];
  const date = new Date().toISOString().replace(/\..*$/, '').replace(/:/g, '-');
  const loadAtStart = loadavg().map((x) => x.toFixed(2)).join(' ');
  try {
    for (const h of hosts) net.cap(h, { bitsPerSec: rateMbit * 1e6 });
    for (const n of workerCounts) {
      for (const f of fanOuts) {
        const row = await runConfig(net, n, f);
        rows.push(row);
        console.log(JSON.stringify(row));
      }
    }
  } finally {
    await killAll();
    net.destroy();
    removeTempDirs();
  }
  const loadAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ');
  const command = `npm run bench:relay-multihost${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const lines = [
    `${command}`,
    '',
    `${rateMbit} Mbit/s on every host, ring8 mlp2d width ${width}, 8 shards, median of ${measure} iterations; ${cpus().length} CPUs, load average ${loadAtStart} at the start, ${loadAtEnd} at the end${Object.keys(tuningEnv).length ? `; ${Object.entries(tuningEnv).map(([k, x]) => `${k}=${x}`).join(' ')}` : ''}:`,
    '',
    '| workers | fan-out | s / iteration | coordinator MB sent / it | MB received / it |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${String(r.workers)} | ${String(r.fanOut)} | ${String(r.medianIterationS)} | ${String(r.coordinatorTxMBPerIteration)} | ${String(r.coordinatorRxMBPerIteration)} |`),
  ];
  console.log(`\n${lines.join('\n')}`);
  const outDir = join(import.meta.dirname, 'results');
  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, `relay-multihost-${date}`);
  writeFileSync(`${base}.json`, JSON.stringify({ date, command, rateMbit, width, measure, cpus: cpus().length, loadAtStart, loadAtEnd, node: process.version, tuning: tuningEnv, rows }, null, 2) + '\n');
  writeFileSync(`${base}.md`, lines.join('\n') + '\n');
  console.log(`results: ${base}.{json,md}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exit(1);
});
