/**
 * npm run bench's byte accounting against the bytes the sockets really moved.
 *
 * A coordinator and two workers run as real processes; each worker reaches the coordinator
 * through its own counting TCP proxy, which sees every byte of that connection (HTTP upgrade,
 * WebSocket framing, pings, close frames). The bench's figures come from the per-worker
 * `workerBytes` of the coordinator's progress lines (bench/lib/accounting.ts); summed over all
 * windows they must equal the proxy's count for that worker, except for what follows the last
 * progress line (the goodbye and the WebSocket close frames), bounded by TAIL_BYTES.
 *
 * The bound is tight enough to fail on a wrong account: the framing alone of the frames in this
 * run exceeds TAIL_BYTES (checked below), so counting message payload bytes instead of
 * socket bytes, missing a window or attributing one worker's bytes to the other all fail.
 */
import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { gradientsPerPhase, joinerShare, measuredWindows, upBytesPerPhase, minimumBytesPerIterationPerWorker, totalsByWorker, wireBytesPerIterationPerWorker, type ProgressLine } from '../bench/lib/accounting.ts';
import { cleanup, eventsOf, makeTempDir, spawnCli, waitForEvent, waitForExit } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

/**
 * After the last progress line: down, a bye (~65 bytes) and a close frame (16); up, the close
 * reply (~20); maybe one ping (2) / pong (6). Measured: 85 down, 20 up.
 */
const TAIL_BYTES = 128;
const ITERATIONS = 25;

interface CountingProxy {
  port: number;
  /** Bytes worker -> coordinator and coordinator -> worker. */
  counts: { up: number; down: number };
  /** Resolves once every proxied connection has closed on both sides. */
  idle(): Promise<void>;
  close(): void;
}

function countingProxy(targetPort: number): Promise<CountingProxy> {
  const counts = { up: 0, down: 0 };
  let open = 0;
  let waiters: (() => void)[] = [];
  const server: Server = createServer((client) => {
    open++;
    const upstream = connect(targetPort, '127.0.0.1');
    let closed = 0;
    const onClose = () => {
      if (++closed < 2) return;
      open--;
      if (open === 0) for (const w of waiters.splice(0)) w();
    };
    client.on('data', (d: Buffer) => {
      counts.up += d.length;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      counts.down += d.length;
      client.write(d);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => {
      upstream.destroy();
      onClose();
    });
    upstream.on('close', () => {
      client.destroy();
      onClose();
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        counts,
        idle: () => (open === 0 ? Promise.resolve() : new Promise<void>((r) => waiters.push(r))),
        close: () => {
          waiters = [];
          server.close();
        },
      }),
    );
  });
}

const proxies: CountingProxy[] = [];
afterEach(async () => {
  for (const p of proxies.splice(0)) p.close();
  await cleanup();
}, HEAVY_TEST_MS);

describe('bench byte accounting', () => {
  it('the minimum counts one gradient per block a worker holds, not per shard: flat in S', () => {
    for (const S of [4, 8, 16, 32, 64]) expect(gradientsPerPhase(S, 1), `S=${S}`).toBe(1);
    expect(gradientsPerPhase(64, 2)).toBe(2);
    expect(gradientsPerPhase(6, 2)).toBe(4); // [0, 3) = [0, 2) + [2, 1); [3, 6) = [3, 1) + [4, 4) (clipped to 4, 5)
    // Ranges aligned to the tree (PhaseRun moves a count by up to 25%): 24 / 24 / 16 -> 2 + 2 + 1
    // (the proportional 22 / 21 / 21 would be 11 blocks); flat in S.
    for (const S of [16, 32, 64]) expect(gradientsPerPhase(S, 3), `S=${S}`).toBe(5);
    for (const S of [8, 16, 32, 64]) expect(gradientsPerPhase(S, 4), `S=${S}`).toBe(4);
    expect(gradientsPerPhase(3, 5)).toBe(3);
    // Bytes up per phase: every worker's wireReceived in the window, per iteration and phase.
    const line = { iteration: 4, workerBytes: [{ worker: 'a', sent: 0, received: 0, framesSent: 0, framesReceived: 0, wireSent: 10, wireReceived: 600 }, { worker: 'b', sent: 0, received: 0, framesSent: 0, framesReceived: 0, wireSent: 10, wireReceived: 600 }] };
    expect(upBytesPerPhase({ line, iterations: 2 }, 3)).toBe(200);
    // A joiner's share between two /status samples, against its speed-proportional share.
    const from = { iteration: 3, done: { a: 100, j: 1 }, msPerShard: { a: 10, j: 50 } };
    const to = { iteration: 9, done: { a: 180, j: 21 }, msPerShard: { a: 10, j: 30 } };
    expect(joinerShare(from, to, 'j')).toEqual({ share: 0.2, expected: 0.25, shards: 20, total: 100 });
    expect(joinerShare(from, { ...to, done: { a: 100, j: 1 } }, 'j')).toBeNull();
    expect(joinerShare(from, to, 'nobody')).toBeNull();
    const m = minimumBytesPerIterationPerWorker({ params: { G: 100, D: 50 }, shards: 64, dSteps: 1, workers: 2, bytesPerValue: 4 });
    expect(m).toEqual({ down: 600, up: 600, total: 1200 });
  });

  it('per-worker bytes in the progress lines equal what a TCP proxy in front of each worker counted', async () => {
    const runDir = makeTempDir('gan-bench-bytes-');
    const c = spawnCli('coordinator', [
      // 4 shards: the accounting, not the shard count, is under test (16, the default, is ~2x the compute).
      '--dataset', 'ring8', '--preset', 'none', '--shards', '4', '--iterations', String(ITERATIONS), '--log-every', '1', '--sample-every', '0', '--checkpoint-every', '0',
      '--backend', 'wasm', '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir,
    ]);
    const listening = await waitForEvent(c, 'listening', 20_000);
    for (let i = 0; i < 2; i++) proxies.push(await countingProxy(listening.port as number));
    const workers = proxies.map((p, i) => spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${p.port}`, '--id', `w${i + 1}`, '--backend', 'wasm'], { name: `worker w${i + 1}` }));
    await waitForEvent(c, 'run_finished', HEAVY_TEST_MS / 2);
    expect(await waitForExit(c, 10_000)).toEqual({ code: 0, signal: null });
    for (const w of workers) expect(await waitForExit(w, 10_000), w.name).toEqual({ code: 0, signal: null });
    // Every proxied connection closed on both sides: the proxies' counts are final.
    await Promise.all(proxies.map((p) => p.idle()));

    const progress = eventsOf(c, 'progress') as ProgressLine[];
    expect(progress.at(-1)!.iteration).toBe(ITERATIONS);
    const totals = totalsByWorker(progress);
    expect([...totals.keys()].sort()).toEqual(['w1', 'w2']);
    proxies.forEach((proxy, i) => {
      const t = totals.get(`w${i + 1}`)!;
      const label = `w${i + 1}: proxy up ${proxy.counts.up} down ${proxy.counts.down}; reported wireReceived ${t.wireReceived} wireSent ${t.wireSent}`;
      // Never more than the socket moved, and short only by the tail after the last progress line.
      expect(proxy.counts.up - t.wireReceived, label).toBeGreaterThanOrEqual(0);
      expect(proxy.counts.up - t.wireReceived, label).toBeLessThanOrEqual(TAIL_BYTES);
      expect(proxy.counts.down - t.wireSent, label).toBeGreaterThanOrEqual(0);
      expect(proxy.counts.down - t.wireSent, label).toBeLessThanOrEqual(TAIL_BYTES);
      // The bound can tell socket bytes from message payload bytes: framing (2-14 bytes per frame)
      // and the HTTP upgrade exceed it (measured: 556 to 1408 bytes per direction and worker).
      expect(proxy.counts.up - t.received, label).toBeGreaterThan(TAIL_BYTES);
      expect(proxy.counts.down - t.sent, label).toBeGreaterThan(TAIL_BYTES);
      // Payload + WebSocket headers (2..14 bytes per frame) + the HTTP upgrade (< 1 KB) = socket bytes.
      expect(t.wireReceived - t.received, label).toBeGreaterThanOrEqual(6 * t.framesReceived);
      expect(t.wireReceived - t.received, label).toBeLessThanOrEqual(14 * t.framesReceived + 1024 + 64 * 8);
      expect(t.wireSent - t.sent, label).toBeGreaterThanOrEqual(2 * t.framesSent);
      expect(t.wireSent - t.sent, label).toBeLessThanOrEqual(10 * t.framesSent + 1024 + 64 * 8);
    });

    // The bench's per-iteration figure is the same bytes, per worker and iteration.
    const windows = measuredWindows(progress, 2, 0);
    expect(windows.length).toBeGreaterThan(ITERATIONS / 2);
    const fromFigures = windows.reduce((a, w) => a + wireBytesPerIterationPerWorker(w, 2) * 2 * w.iterations, 0);
    const fromLines = windows.reduce((a, w) => a + (w.line.workerBytes as { wireSent: number; wireReceived: number }[]).reduce((b, x) => b + x.wireSent + x.wireReceived, 0), 0);
    expect(fromFigures).toBeCloseTo(fromLines, 3);

    // The time split partitions each window's phases, and the coordinator's share is part of it.
    for (const p of progress) {
      const parts = ['splitComputeS', 'splitApplyS', 'splitCodecS', 'splitTransferS', 'splitIdleS'].map((k) => p[k] as number);
      for (const x of parts) expect(x).toBeGreaterThanOrEqual(0);
      const phases = parts.reduce((a, b) => a + b, 0);
      expect(phases).toBeLessThanOrEqual((p.wallS as number) * 1.01 + 0.002);
      expect(p.coordinatorS as number).toBeLessThanOrEqual(phases + 0.002);
    }
  }, HEAVY_TEST_MS);
});
