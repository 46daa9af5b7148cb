/**
 * npm run bench:hostile: what a token holder that stops reading costs an honest run.
 *
 * Real processes: gan-coordinator + one honest gan-worker, trained twice on the same flags,
 *   calm      nothing else connects
 *   attacked  after the warm-up, a peer with the token completes the handshake, then never reads
 *             (its socket paused) and sends unsolicited pongs every 50 ms; with --reconnect it
 *             comes back every time it is dropped
 * and compares the honest run's speed (iterations/s over the measured window, from the
 * coordinator's progress lines) and the coordinator's peak RSS over that window.
 * Targets (issue #13): attacked speed >= 0.8 x calm; peak RSS within 50 MB of the calm run.
 *
 *   npm run bench:hostile
 *   npm run bench:hostile -- --dataset ring8 --iterations 600 --reconnect
 */
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { hmacOf } from '../shared/auth.ts';
import { decode, encode } from '../shared/codec.ts';
import { helpText, parseFlags, type FlagTable } from '../shared/cli.ts';
import { runMain } from '../shared/cli-main.ts';
import { PROTOCOL_FEATURES } from '../shared/protocol.ts';
import { cleanup, kill, makeTempDir, reservePort, spawnCli, waitForEvent, type LogEvent, type Proc } from '../test/helpers/processes.ts';

const FLAGS: FlagTable = {
  dataset: { type: 'string', help: 'data set of both runs', defaultText: 'mnist' },
  model: { type: 'string', help: 'model of both runs', defaultText: 'mlp-small (mlp2d for a mixture)' },
  iterations: { type: 'string', kind: 'int', help: 'iterations per run (the first --warmup are not measured)', defaultText: '200' },
  warmup: { type: 'string', kind: 'int', help: 'iterations before the attacker connects and the measurement starts', defaultText: '20' },
  reconnect: { type: 'boolean', help: 'the attacker reconnects (with the token) every time it is dropped' },
  help: { type: 'boolean', help: 'show this help' },
};

const USAGE = `Usage: npm run bench:hostile -- [options]

An honest coordinator + worker run, calm and with a token holder that stops reading: speed and
the coordinator's peak RSS over the same measured window.`;

const TOKEN = 'bench-hostile-token';

interface RunFigures {
  itPerS: number;
  peakRssMb: number;
  seconds: number;
  drops: Record<string, number>;
  attackerConnections: number;
}

/** Connects with the token, completes the handshake, then stops reading and sends stray pongs. */
function deafPeer(url: string, id: string): Promise<WebSocket | null> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { maxPayload: 1 << 30 });
    ws.on('error', () => resolve(null));
    ws.on('open', () => ws.send(encode({ type: 'hello', workerId: id, backend: 'wasm', host: 'attacker', capabilities: { wire: ['fp32', ...PROTOCOL_FEATURES], maxShards: 4096 } })));
    ws.on('message', (data) => {
      const res = decode(data as Buffer, { maxFrameBytes: 1 << 30, maxFloats: 1 << 28 });
      if (!res.ok) return;
      if (res.msg.type === 'challenge') ws.send(encode({ type: 'auth', hmac: hmacOf(TOKEN, res.msg.nonce) }));
      if (res.msg.type === 'welcome') {
        (ws as unknown as { _socket: Socket })._socket.pause();
        const pongs = setInterval(() => ws.readyState === WebSocket.OPEN && ws.pong(randomBytes(8)), 50);
        ws.on('close', () => clearInterval(pongs));
        resolve(ws);
      }
    });
    ws.on('close', () => resolve(null));
  });
}

async function runOnce(args: string[], warmup: number, attack: 'none' | 'once' | 'reconnect'): Promise<RunFigures> {
  const port = await reservePort();
  const runDir = makeTempDir('gan-bench-hostile-');
  const coord: Proc = spawnCli('coordinator', [...args, '--port', String(port), '--run-dir', runDir, '--log-every', '5', '--status-interval', '1', '--sample-every', '0', '--checkpoint-every', '0'], { env: { GAN_TOKEN: TOKEN }, name: 'coordinator' });
  await waitForEvent(coord, 'listening', 60_000);
  const worker = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'honest', '--backend', 'wasm'], { env: { GAN_TOKEN: TOKEN }, name: 'worker' });
  await waitForEvent(coord, (e: LogEvent) => e.event === 'progress' && Number(e.iteration) >= warmup, 300_000);
  let connections = 0;
  let attacking = attack !== 'none';
  const url = `ws://127.0.0.1:${port}`;
  const attackLoop = (async () => {
    while (attacking) {
      const ws = await deafPeer(url, 'deaf');
      if (!ws) break;
      connections++;
      await new Promise<void>((r) => ws.once('close', () => r()));
      if (attack !== 'reconnect') break;
    }
  })();
  const finished = await waitForEvent(coord, 'run_finished', 1_800_000);
  attacking = false;
  await attackLoop.catch(() => undefined);
  const window = coord.events.filter((e) => e.event === 'progress' && Number(e.iteration) > warmup);
  const first = coord.events.find((e) => e.event === 'progress' && Number(e.iteration) >= warmup)!;
  const last = window.at(-1)!;
  const seconds = (Date.parse(String(last.time)) - Date.parse(String(first.time))) / 1000;
  if (process.env.GAN_BENCH_VERBOSE) console.log(window.map((e) => `${e.iteration}:${Number(e.iterationsPerSec).toFixed(1)}`).join(' '));
  const drops: Record<string, number> = {};
  for (const e of coord.events) if (e.event === 'warning' && ['SLOW_CONSUMER', 'HEARTBEAT_TIMEOUT'].includes(String(e.code))) drops[String(e.code)] = (drops[String(e.code)] ?? 0) + 1;
  await kill(worker, 'SIGTERM');
  void finished;
  return {
    itPerS: (Number(last.iteration) - Number(first.iteration)) / seconds,
    peakRssMb: Math.max(...window.map((e) => Number(e.rssMb))),
    seconds,
    drops,
    attackerConnections: connections,
  };
}

runMain(async () => {
  const v = parseFlags(process.argv.slice(2), FLAGS);
  if (v.help) {
    process.stdout.write(helpText(USAGE, FLAGS));
    return 0;
  }
  const dataset = String(v.dataset ?? 'mnist');
  const mixture = dataset === 'ring8' || dataset === 'grid25';
  const model = String(v.model ?? (mixture ? 'mlp2d' : 'mlp-small'));
  const iterations = Number(v.iterations ?? 200);
  const warmup = Number(v.warmup ?? 20);
  const args = ['--dataset', dataset, '--model', model, '--iterations', String(iterations), '--backend', 'wasm'];
  console.log(`bench:hostile: ${dataset} ${model}, ${iterations} iterations (${warmup} warm-up), coordinator + 1 worker on loopback`);
  try {
    const calm = await runOnce(args, warmup, 'none');
    console.log(`calm:     ${calm.itPerS.toFixed(2)} it/s, coordinator peak RSS ${calm.peakRssMb} MB (${calm.seconds.toFixed(1)} s measured)`);
    const attacked = await runOnce(args, warmup, v.reconnect ? 'reconnect' : 'once');
    console.log(`attacked: ${attacked.itPerS.toFixed(2)} it/s, coordinator peak RSS ${attacked.peakRssMb} MB (${attacked.seconds.toFixed(1)} s measured); attacker connections ${attacked.attackerConnections}, dropped ${JSON.stringify(attacked.drops)}`);
    const speed = attacked.itPerS / calm.itPerS;
    const rss = attacked.peakRssMb - calm.peakRssMb;
    console.log(`speed ratio ${speed.toFixed(3)} (target >= 0.8): ${speed >= 0.8 ? 'met' : 'NOT met'}; RSS difference ${rss} MB (target <= 50): ${rss <= 50 ? 'met' : 'NOT met'}`);
  } finally {
    await cleanup();
  }
  return 0;
});
