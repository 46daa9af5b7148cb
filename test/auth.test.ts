/**
 * The handshake and the frame limits against hostile peers, while a real worker trains: wrong
 * token, a recorded auth replayed on another connection (fresh nonce) and on its own, auth out of
 * order, no auth within the handshake timeout, a flood of unauthenticated connections (bounded by
 * maxPendingHandshakes: the excess is refused with 1013 at once, the rest time out, and a real
 * worker still gets in), and frames around the size limits (16 KiB before auth; after it the limit
 * derived from the model, past which ws closes with 1009). The run still ends on the reference hash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WS_CLOSE } from '../shared/protocol.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';
import { HANDSHAKE_FRAME_BYTES } from '../coordinator/coordinator.ts';
import { RING8_FLAGS, RawPeer, rawPackr, referenceHash, startInProcessCoordinator, type InProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup, eventsOf, spawnCli, waitForEvent, waitForExit, type Proc } from './helpers/processes.ts';

const TOKEN = 'auth-test-token';
const HANDSHAKE_MS = 600;
const MAX_PENDING = 6;
const TEST_TIMEOUT = 60_000;

let c: InProcessCoordinator;
let slow: Proc;
const workers: Proc[] = [];
let reference = '';

beforeAll(async () => {
  reference = await referenceHash(RING8_FLAGS);
  c = await startInProcessCoordinator({ token: TOKEN, network: { handshakeTimeoutMs: HANDSHAKE_MS, maxPendingHandshakes: MAX_PENDING } });
  // One slow worker keeps the run going (~20 ms per shard) until a second joins after the flood.
  slow = spawnCli('worker', ['--coordinator', c.url, '--id', 'real-slow', '--backend', 'wasm'], { env: { GAN_TOKEN: TOKEN, GAN_TEST_SHARD_DELAY_MS: '20' }, name: 'worker real-slow' });
  workers.push(slow);
  await waitForEvent(slow, 'welcomed', 30_000);
}, TEST_TIMEOUT);

afterAll(async () => {
  await c?.close();
  await cleanup();
}, TEST_TIMEOUT);

/** The coordinator's warning with this code for this peer, logged since `from`. */
const warningFor = (peer: RawPeer, code: string, from = 0) => c.records.slice(from).find((r) => r.event === 'warning' && r.code === code && r.address === peer.address);

/** Asserts a refusal: close code, bye code = close reason, and the matching warning. */
async function expectRefused(peer: RawPeer, close: number, code: string): Promise<void> {
  const got = await peer.waitClose(5000);
  expect(got, `${code}: connection still open`).not.toBeNull();
  expect(got!.code).toBe(close);
  expect(got!.reason).toBe(code);
  expect(peer.bye?.code).toBe(code);
  expect(warningFor(peer, code)).toBeTruthy();
}

const stillTraining = () => expect(c.coordinator.state.finished, 'the run ended before this test; the slow worker is too fast').toBe(false);

describe('authentication and frame limits under attack', () => {
  it('wrong token: AUTH_FAILED, close 4001, never admitted', async () => {
    const peer = await RawPeer.connect(c.url);
    const { welcome } = await peer.handshake('intruder', 'not-the-token');
    expect(welcome).toBeNull();
    await expectRefused(peer, WS_CLOSE.authFailed, 'AUTH_FAILED');
    expect(c.records.some((r) => r.event === 'worker_joined' && r.worker === 'intruder')).toBe(false);
    stillTraining();
  }, TEST_TIMEOUT);

  it('a recorded auth is useless on another connection (fresh nonce) and cannot be sent twice on its own', async () => {
    const a = await RawPeer.connect(c.url);
    const { welcome, authFrame } = await a.handshake('honest-a', TOKEN);
    expect(welcome?.type).toBe('welcome');
    const nonceA = a.received.find((m) => m.type === 'challenge')!.nonce as Uint8Array;

    const b = await RawPeer.connect(c.url);
    b.hello('replayer');
    const challengeB = await b.next((m) => m.type === 'challenge');
    expect(Buffer.from(challengeB!.nonce as Uint8Array).equals(Buffer.from(nonceA))).toBe(false);
    b.send(authFrame!);
    await expectRefused(b, WS_CLOSE.authFailed, 'AUTH_FAILED');
    expect(c.records.some((r) => r.event === 'worker_joined' && r.worker === 'replayer')).toBe(false);

    // The same auth again on the connection it was made for: the nonce is spent.
    a.send(authFrame!);
    await expectRefused(a, WS_CLOSE.protocolError, 'UNEXPECTED_AUTH');

    // An auth before any hello (so before any challenge).
    const early = await RawPeer.connect(c.url);
    early.send(authFrame!);
    await expectRefused(early, WS_CLOSE.protocolError, 'UNEXPECTED_AUTH');

    // A result before the handshake completed.
    const pushy = await RawPeer.connect(c.url);
    pushy.hello('pushy');
    await pushy.next((m) => m.type === 'challenge');
    pushy.sendMsg({ type: 'result', protocol: PROTOCOL_VERSION, taskId: 1, iteration: 0, phase: 'D', dStep: 0, firstShard: 0, count: 1, gradient: new Float32Array(4), stats: { loss: 0, dReal: 0, dFake: 0 }, computeMs: 1 });
    await expectRefused(pushy, WS_CLOSE.protocolError, 'NOT_AUTHENTICATED');
    stillTraining();
  }, TEST_TIMEOUT);

  it('no auth within the handshake timeout: HANDSHAKE_TIMEOUT (after hello, and with nothing at all)', async () => {
    const from = c.records.length;
    const silent = await RawPeer.connect(c.url);
    const helloOnly = await RawPeer.connect(c.url);
    helloOnly.hello('slowpoke');
    await helloOnly.next((m) => m.type === 'challenge');
    const t0 = performance.now();
    await expectRefused(silent, WS_CLOSE.protocolError, 'HANDSHAKE_TIMEOUT');
    await expectRefused(helloOnly, WS_CLOSE.protocolError, 'HANDSHAKE_TIMEOUT');
    expect(performance.now() - t0).toBeLessThan(HANDSHAKE_MS + 2000);
    expect(warningFor(silent, 'HANDSHAKE_TIMEOUT', from)!.stage).toBe('hello');
    expect(warningFor(helloOnly, 'HANDSHAKE_TIMEOUT', from)!.stage).toBe('auth');
    stillTraining();
  }, TEST_TIMEOUT);

  it(`a flood of unauthenticated connections is bounded: past ${MAX_PENDING} pending, 1013 at once; a real worker still gets in`, async () => {
    const from = c.records.length;
    const pending = await Promise.all(Array.from({ length: MAX_PENDING }, () => RawPeer.connect(c.url)));
    const excess = await Promise.all(Array.from({ length: 5 }, () => RawPeer.connect(c.url)));
    for (const peer of excess) {
      const closed = await peer.waitClose(3000);
      expect(closed).toEqual({ code: 1013, reason: 'TOO_MANY_PENDING' });
    }
    const floods = c.records.slice(from).filter((r) => r.event === 'warning' && r.code === 'HANDSHAKE_FLOOD');
    expect(floods).toHaveLength(5);
    expect(floods.every((r) => r.pending === MAX_PENDING)).toBe(true);
    // The pending ones are still open (their slot is held until the timeout)...
    expect(pending.every((p) => p.open)).toBe(true);
    // ...and are then cut off, which frees the slots.
    for (const p of pending) await expectRefused(p, WS_CLOSE.protocolError, 'HANDSHAKE_TIMEOUT');
    stillTraining();

    const late = spawnCli('worker', ['--coordinator', c.url, '--id', 'real-late', '--backend', 'wasm'], { env: { GAN_TOKEN: TOKEN }, name: 'worker real-late' });
    workers.push(late);
    await c.waitFor((r) => r.event === 'worker_joined' && r.worker === 'real-late', 30_000, 'real-late to join');
  }, TEST_TIMEOUT);

  it('frame limits: 16 KiB before auth; after it max(G, D) floats x 4 + 64 KiB, one byte over closes 1009', async () => {
    const { G, D } = c.coordinator.replica.layout;
    const maxFloats = Math.max(G.total, D.total);
    const limit = maxFloats * 4 + 64 * 1024;
    // The largest legitimate frame (a result for the bigger net) fits.
    const biggest = rawPackr.pack({ type: 'result', protocol: PROTOCOL_VERSION, taskId: 2 ** 40, iteration: 2 ** 40, phase: 'D', dStep: 0, firstShard: 4095, count: 1, gradient: new Float32Array(maxFloats), stats: { loss: -1e-300, dReal: 1e300, dFake: 0.1 }, computeMs: 1e9 });
    expect(biggest.length).toBeLessThan(limit);

    // Before auth ws itself holds the limit: one byte over is refused from the frame header (1009).
    const pre = await RawPeer.connect(c.url);
    pre.send(new Uint8Array(HANDSHAKE_FRAME_BYTES + 1).fill(0x90));
    expect((await pre.waitClose(5000))?.code).toBe(1009);
    expect(warningFor(pre, 'FRAME_TOO_LARGE')?.wsCode).toBe('WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
    const preAt = await RawPeer.connect(c.url);
    preAt.send(new Uint8Array(HANDSHAKE_FRAME_BYTES).fill(0xc1));
    await expectRefused(preAt, WS_CLOSE.protocolError, 'FRAME_NOT_MSGPACK');

    // After auth: exactly at the limit is read (and refused for its content)...
    const at = await RawPeer.connect(c.url);
    expect((await at.handshake('limit-at', TOKEN)).welcome).toBeTruthy();
    at.send(new Uint8Array(limit).fill(0xc1));
    await expectRefused(at, WS_CLOSE.protocolError, 'FRAME_NOT_MSGPACK');
    // ...one byte more never reaches the decoder: ws closes with 1009, logged as FRAME_TOO_LARGE.
    const over = await RawPeer.connect(c.url);
    expect((await over.handshake('limit-over', TOKEN)).welcome).toBeTruthy();
    over.send(new Uint8Array(limit + 1).fill(0xc1));
    const closed = await over.waitClose(5000);
    expect(closed?.code).toBe(1009);
    expect(warningFor(over, 'FRAME_TOO_LARGE')?.wsCode).toBe('WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
    stillTraining();
  }, TEST_TIMEOUT);

  it('training went on: the real workers never left and the run ends on the reference hash', async () => {
    const result = await c.done;
    expect(result.iterations).toBe(40);
    expect(result.weightsHash).toBe(reference);
    expect(c.records.filter((r) => r.event === 'worker_left' && String(r.worker).startsWith('real-'))).toEqual([]);
    expect(c.records.filter((r) => (r.level ?? 0) >= 50)).toEqual([]);
    await c.close();
    for (const w of workers) {
      expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });
      expect(eventsOf(w, 'worker_finished'), w.name).toHaveLength(1);
    }
  }, TEST_TIMEOUT);
});
