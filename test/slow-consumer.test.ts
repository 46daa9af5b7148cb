/**
 * A token holder that authenticates and then never reads: frames for it would queue in the
 * coordinator without bound (it used to grow the coordinator's RSS and stall every phase). The
 * heartbeat is set far out here, so only the send-queue bound can catch it: it is dropped as
 * SLOW_CONSUMER, its shards are counted overdue and recomputed by the honest worker, and the
 * run ends on the reference hash.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawPeer, startHonestRun, type InProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup } from './helpers/processes.ts';

const TOKEN = 'slow-consumer-token';
const TEST_TIMEOUT = 120_000;
/** mlp-small broadcasts ~2 MB per phase, so the bound (~22 MB) is passed within a few dozen phases. */
const FLAGS = ['--dataset', 'mnist', '--model', 'mlp-small', '--iterations', '30', '--batch-size', '32', '--shards', '4', '--backend', 'wasm'];

let c: InProcessCoordinator;
let reference = '';

beforeAll(async () => {
  ({ c, reference } = await startHonestRun({ flags: FLAGS, token: TOKEN, shardDelayMs: 10, network: { heartbeatMs: 600_000 }, schedule: { straggler: { factor: 3, minMs: 500 } }, }));
}, TEST_TIMEOUT);

afterAll(async () => {
  await c?.close();
  await cleanup();
});

describe('a worker that stops reading', () => {
  it('is dropped as SLOW_CONSUMER once its queue passes the model-derived bound; the run ends on the reference hash', async () => {
    const peer = await RawPeer.connect(c.url);
    expect((await peer.handshake('deaf', TOKEN)).welcome).toBeTruthy();
    (peer.ws as unknown as { _socket: Socket })._socket.pause();
    const dropped = await c.waitFor((r) => r.code === 'SLOW_CONSUMER' && String(r.worker).startsWith('deaf#'), 90_000, 'SLOW_CONSUMER for the deaf peer');
    console.log(`[slow-consumer] dropped at iteration ${c.coordinator.state.iteration}, queued ${dropped.queuedBytes} of ${dropped.limit}; overdue ${JSON.stringify(c.records.filter((r) => r.event === 'shard_duplicated').length)} dups`);
    expect(dropped.limit).toBe(c.coordinator.maxQueuedBytes);
    expect(Number(dropped.queuedBytes)).toBeGreaterThan(c.coordinator.maxQueuedBytes);
    expect(c.coordinator.state.finished, 'the run ended before the peer was dropped').toBe(false);
    const left = await c.waitFor((r) => r.event === 'worker_left' && r.worker === 'deaf', 10_000, 'worker_left for the deaf peer');
    expect(left.reason).toBe('SLOW_CONSUMER');
    peer.terminate();

    const result = await c.done;
    expect(result.weightsHash).toBe(reference);
    expect(c.records.filter((r) => r.event === 'worker_left' && r.worker === 'honest')).toEqual([]);
  }, TEST_TIMEOUT);
});
