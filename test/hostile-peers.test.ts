/**
 * Hostile and broken peers against a training coordinator: nothing a peer sends, with or without
 * the token, may crash it, make it buffer without bound, or stall the honest workers' run.
 *
 * - the attack that used to kill the coordinator: fill the pending-handshake slots, then send a
 *   frame with a reserved opcode on the connection being refused (and the same while shutting down)
 * - the pre-handshake frame limit holds at the socket: a larger declared length is refused from
 *   the frame header (close 1009), long before the handshake timeout
 * - a token holder that stops reading (and sends unsolicited pongs) is dropped by the heartbeat,
 *   and one whose queue passes the model-derived bound is dropped as SLOW_CONSUMER
 * - quoted values in refusals are bounded whatever their type
 */
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HANDSHAKE_FRAME_BYTES } from '../coordinator/coordinator.ts';
import { setMessageLimit } from '../coordinator/connection-limits.ts';
import { decode } from '../shared/codec.ts';
import { clip, MAX_QUOTED_CHARS } from '../shared/log.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';
import { isSocketError } from '../shared/socket-guard.ts';
import { RING8_FLAGS, RawPeer, rawPackr, startHonestRun, type InProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup } from './helpers/processes.ts';

const TOKEN = 'hostile-test-token';
const MAX_PENDING = 4;
const TEST_TIMEOUT = 90_000;
/** Long enough that no check below can be satisfied by the handshake timeout instead. */
const HANDSHAKE_MS = 30_000;
const HEARTBEAT_MS = 1500;
/** 120 iterations of ring8 at ~10 ms per shard: the run outlasts every attack below. */
const FLAGS = RING8_FLAGS.map((f, i) => (RING8_FLAGS[i - 1] === '--iterations' ? '120' : f));

/** A masked client frame header (FIN set) declaring `length` payload bytes, with a zero mask key. */
function frameHeader(opcode: number, length: number): Buffer {
  if (length < 126) return Buffer.from([0x80 | opcode, 0x80 | length, 0, 0, 0, 0]);
  if (length < 65536) return Buffer.from([0x80 | opcode, 0x80 | 126, length >> 8, length & 0xff, 0, 0, 0, 0]);
  const h = Buffer.alloc(14);
  h[0] = 0x80 | opcode;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h;
}

interface RawConnection {
  socket: Socket;
  /** Everything the server sent, as bytes (HTTP response, then WebSocket frames). */
  received: () => Buffer;
  closed: Promise<void>;
}

/**
 * A raw TCP client that performs the WebSocket upgrade by hand and writes `after` in the same
 * packet, so the server sees those bytes whatever it decided to do with the connection.
 */
function rawUpgrade(port: number, after: Buffer = Buffer.alloc(0)): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.on('data', (d) => chunks.push(d));
    socket.once('connect', () => {
      const key = randomBytes(16).toString('base64');
      const request = `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
      socket.write(Buffer.concat([Buffer.from(request), after]));
      resolve({ socket, received: () => Buffer.concat(chunks), closed });
    });
    socket.once('error', reject);
  });
}

/** The close code of the first close frame in what the server sent after its 101 response, or null. */
function closeCodeIn(bytes: Buffer): number | null {
  const end = bytes.indexOf('\r\n\r\n');
  if (end < 0) return null;
  let i = end + 4;
  while (i + 2 <= bytes.length) {
    const opcode = bytes[i] & 0x0f;
    let len = bytes[i + 1] & 0x7f;
    let off = i + 2;
    if (len === 126) {
      len = bytes.readUInt16BE(off);
      off += 2;
    } else if (len === 127) {
      len = Number(bytes.readBigUInt64BE(off));
      off += 8;
    }
    if (opcode === 0x8) return len >= 2 ? bytes.readUInt16BE(off) : 1005;
    i = off + len;
  }
  return null;
}

let c: InProcessCoordinator;
let reference = '';

beforeAll(async () => {
  ({ c, reference } = await startHonestRun({ flags: FLAGS, token: TOKEN, shardDelayMs: 10, network: { handshakeTimeoutMs: HANDSHAKE_MS, maxPendingHandshakes: MAX_PENDING, heartbeatMs: HEARTBEAT_MS }, }));
}, TEST_TIMEOUT);

afterAll(async () => {
  await c?.close();
  await cleanup();
});

const stillTraining = () => expect(c.coordinator.state.finished, 'the run ended before this check: the honest worker is too fast').toBe(false);

describe('hostile peers', () => {
  it('handshake flood, then a reserved opcode on the refused connection: refused with 1013, no crash', async () => {
    const from = c.records.length;
    const holders = await Promise.all(Array.from({ length: MAX_PENDING }, () => RawPeer.connect(c.url)));
    // Opcode 3 is reserved: ws's receiver raises WS_ERR_INVALID_OPCODE on this connection, which
    // the coordinator is refusing as a flood. The frame arrives with the upgrade request itself.
    const attacker = await rawUpgrade(c.port, frameHeader(0x3, 0));
    await attacker.closed;
    expect(closeCodeIn(attacker.received())).toBe(1013);
    // A big declared length on another refused connection: refused too, nothing buffered.
    const big = await rawUpgrade(c.port, frameHeader(0x2, 1 << 30));
    await big.closed;
    expect(c.records.slice(from).filter((r) => r.code === 'HANDSHAKE_FLOOD')).toHaveLength(2);
    for (const h of holders) h.terminate();
    stillTraining();
  }, TEST_TIMEOUT);

  it('before authentication ws itself refuses a declared length over 16 KiB (close 1009) at the frame header', async () => {
    const from = c.records.length;
    // Only the header of a 60 KB frame: the old limit (the model's) would wait for the payload
    // until the handshake timeout (30 s here).
    const header = await rawUpgrade(c.port, frameHeader(0x2, 60_000));
    await header.closed;
    expect(closeCodeIn(header.received())).toBe(1009);
    const warning = c.records.slice(from).find((r) => r.code === 'FRAME_TOO_LARGE');
    expect(warning?.wsCode).toBe('WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
    expect(c.records.slice(from).some((r) => r.code === 'HANDSHAKE_TIMEOUT')).toBe(false);

    // Fragments count together: 2 x 9 KiB in one message is over the limit as well.
    const fragmented = await rawUpgrade(c.port, Buffer.concat([Buffer.from([0x02, 0x80 | 126, 0x24, 0x00, 0, 0, 0, 0]), Buffer.alloc(9216), Buffer.from([0x80, 0x80 | 126, 0x24, 0x00, 0, 0, 0, 0])]));
    await fragmented.closed;
    expect(closeCodeIn(fragmented.received())).toBe(1009);

    // Exactly 16 KiB still reaches the decoder (and is refused for its content).
    const at = await RawPeer.connect(c.url);
    at.send(new Uint8Array(HANDSHAKE_FRAME_BYTES).fill(0xc1));
    expect((await at.waitClose(10_000))?.reason).toBe('FRAME_NOT_MSGPACK');
    stillTraining();
  }, TEST_TIMEOUT);

  it('after admission the connection takes frames up to the model-derived limit', async () => {
    const peer = await RawPeer.connect(c.url);
    expect((await peer.handshake('big-but-fine', TOKEN)).welcome).toBeTruthy();
    // 64 KiB of junk: over the handshake limit, under the admitted one, so the decoder answers.
    peer.send(new Uint8Array(64 * 1024).fill(0xc1));
    const closed = await peer.waitClose(10_000);
    expect(closed?.reason).toBe('FRAME_NOT_MSGPACK');
  }, TEST_TIMEOUT);

  it('a token holder that stops reading and sends unsolicited pongs is dropped by the heartbeat; its shards go to the honest worker', async () => {
    const from = c.records.length;
    const peer = await RawPeer.connect(c.url);
    expect((await peer.handshake('deaf', TOKEN)).welcome).toBeTruthy();
    const sock = (peer.ws as unknown as { _socket: Socket })._socket;
    sock.pause();
    const pongs = setInterval(() => peer.ws.pong(randomBytes(8)), 50);
    try {
      const timeout = await c.waitFor((r) => r.code === 'HEARTBEAT_TIMEOUT' && String(r.worker).startsWith('deaf#'), 30_000, 'the deaf peer to be dropped');
      expect(c.records.indexOf(timeout)).toBeGreaterThan(from);
      await c.waitFor((r) => r.event === 'worker_left' && r.worker === 'deaf', 10_000, 'worker_left for the deaf peer');
    } finally {
      clearInterval(pongs);
      peer.terminate();
    }
    stillTraining();
  }, TEST_TIMEOUT);

  it('a reason quoting a huge msgpack bigint stays short (log line and bye)', async () => {
    const from = c.records.length;
    const peer = await RawPeer.connect(c.url);
    // A 12 KB msgpack bigint as the protocol field (msgpackr's ext for big integers).
    const frame = rawPackr.pack({ type: 'hello', protocol: 2n ** 90000n, workerId: 'x', backend: 'wasm', host: 'h', capabilities: { wire: ['fp32'], maxShards: 1 } });
    expect(frame.length).toBeGreaterThan(10_000);
    expect(frame.length).toBeLessThanOrEqual(HANDSHAKE_FRAME_BYTES);
    peer.send(frame);
    await peer.waitClose(10_000);
    const warning = c.records.slice(from).find((r) => r.event === 'warning' && r.address === peer.address);
    expect(warning, 'the refusal was logged').toBeTruthy();
    expect(JSON.stringify(warning).length).toBeLessThan(1000);
    expect(String(peer.bye?.reason ?? '').length).toBeLessThan(400);
    stillTraining();
  }, TEST_TIMEOUT);

  it('the run finishes on the reference hash; the honest worker never left', async () => {
    const result = await c.done;
    expect(result.weightsHash).toBe(reference);
    expect(c.records.filter((r) => r.event === 'worker_left' && r.worker === 'honest')).toEqual([]);
  }, TEST_TIMEOUT);

  it('while shutting down: the same attack on the refused connection does not crash the coordinator', async () => {
    c.coordinator.requestStop();
    const attacker = await rawUpgrade(c.port, frameHeader(0x3, 0));
    await attacker.closed;
    expect(closeCodeIn(attacker.received())).toBe(4004);
    // Still serving: the status endpoint answers.
    const res = await fetch(`http://127.0.0.1:${c.port}/status`);
    expect(res.status).toBe(200);
  }, TEST_TIMEOUT);
});

describe('bounds and guards (units)', () => {
  it('clip() bounds any value; decode reasons stay short for a huge bigint', () => {
    expect(clip('x'.repeat(10_000)).length).toBeLessThan(MAX_QUOTED_CHARS + 30);
    expect(clip(2n ** 60000n).length).toBeLessThan(MAX_QUOTED_CHARS + 30);
    expect(clip('short')).toBe('short');
    const res = decode(rawPackr.pack({ type: 'bye', protocol: PROTOCOL_VERSION, code: 'X', reason: 'r', ['k'.repeat(5000)]: 1 }), { maxFrameBytes: 1 << 20, maxFloats: 10 });
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.reason.length).toBeLessThanOrEqual(310);
    const big = decode(rawPackr.pack({ type: 'bye', protocol: 2n ** 50000n, code: 'X', reason: 'r' }), { maxFrameBytes: 1 << 20, maxFloats: 10 });
    expect(big.ok).toBe(false);
    if (!big.ok) expect(big.reason).toMatch(/-digit bigint/);
  });

  it('setMessageLimit finds ws\'s per-connection limit (fails loudly if ws moved it)', () => {
    const fake = { _receiver: { _maxPayload: 16 } };
    setMessageLimit(fake as never, 1234);
    expect(fake._receiver._maxPayload).toBe(1234);
    expect(() => setMessageLimit({} as never, 1)).toThrow(/WS_INTERNALS_CHANGED|per-connection frame limit/);
  });

  it('the process guard recognises socket errors and nothing else', () => {
    const err = (code: string) => Object.assign(new Error(code), { code });
    expect(isSocketError(err('WS_ERR_INVALID_OPCODE'))).toBe(true);
    expect(isSocketError(err('ECONNRESET'))).toBe(true);
    expect(isSocketError(err('EPIPE'))).toBe(true);
    expect(isSocketError(new TypeError('x is not a function'))).toBe(false);
    expect(isSocketError(err('ERR_ASSERTION'))).toBe(false);
  });
});
