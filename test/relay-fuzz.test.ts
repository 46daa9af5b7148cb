/**
 * A relay's listener (worker/relay-server.ts, gan-worker --relay-listen) is a network surface
 * anyone who can reach the port may talk to, before any token or ticket. This throws thousands
 * of seeded hostile connections at one, in process, while a legitimate child is connected:
 *
 * - before the ticket: random bytes, random msgpack values, relay-hellos with mutated fields
 *   (wrong types, missing and extra fields, tickets of other lengths, other protocol versions),
 *   other message types, truncated frames and trailing bytes, text frames, empty frames, frames
 *   over the 16 KiB handshake limit, and wrong tickets for the real child's id;
 * - after a valid ticket (children the test names in the relay's accepted list): frames that are
 *   not sums, sums with mutated fields (misaligned blocks, NaN, wrong types), oversized frames.
 *
 * Every refusal closes that connection only, with a stable code that matches its close code;
 * nothing invalid ever reaches the relay's sum handler; the legitimate child keeps receiving what
 * the relay forwards and its sums arrive intact; no exception escapes.
 */
import { Packr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { decode, encode, type DecodeLimits } from '../shared/codec.ts';
import { BYE_CODES, closeCodeFor, PROTOCOL_VERSION, type ByeCode, type SumMsg } from '../shared/protocol.ts';
import { uniformSource } from '../shared/rng.ts';
import { RELAY_MAX_PENDING, RelayServer, type RelayChild } from '../worker/relay-server.ts';

const SEED = Number(process.env.GAN_FUZZ_SEED ?? 20261208);
const CASES = Number(process.env.GAN_FUZZ_CASES ?? 1200);
const LANES = 6;
const TEST_TIMEOUT = 120_000;
const LIMITS: DecodeLimits = { maxFrameBytes: 1 << 20, maxFloats: 4096 };
/** ws's own close code for a frame over maxPayload (before our decoder sees it). */
const WS_TOO_BIG = 1009;

type Rng = () => number;
const int = (r: Rng, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[int(r, xs.length)]!;
const raw = new Packr({ moreTypes: true, useRecords: false });

const ticketFor = (seed: number) => Uint8Array.from({ length: 16 }, (_, i) => (seed * 31 + i * 7) & 0xff);
const TICKETS = { good: ticketFor(1), hostile: ticketFor(2), never: ticketFor(3) };

function randomValue(r: Rng, depth = 0): unknown {
  switch (int(r, depth > 2 ? 7 : 10)) {
    case 0: return int(r, 1 << 30) - (1 << 29);
    case 1: return pick(r, [NaN, Infinity, -Infinity, -0, 1e308, 2 ** 53 + 1]);
    case 2: return 'x'.repeat(int(r, 300));
    case 3: return null;
    case 4: return r() < 0.5;
    case 5: return new Uint8Array(int(r, 40));
    case 6: return new Float32Array(int(r, 20)).fill(r() < 0.2 ? NaN : 0.5);
    case 7: return Array.from({ length: int(r, 5) }, () => randomValue(r, depth + 1));
    case 8: return Object.fromEntries(Array.from({ length: int(r, 5) }, () => [pick(r, FIELDS), randomValue(r, depth + 1)]));
    default: return { type: pick(r, TYPES), protocol: PROTOCOL_VERSION };
  }
}
const FIELDS = ['type', 'protocol', 'workerId', 'ticket', 'iteration', 'phase', 'dStep', 'shardCount', 'firstShard', 'count', 'gradient', 'offset', 'total', 'stats', 'net', 'data', '__proto__', 'constructor'];
const TYPES = ['relay-hello', 'relay-welcome', 'sum', 'weights-chunk', 'hello', 'auth', 'result', 'tree', '', 'Relay-Hello'];

function validSum(r: Rng): Record<string, unknown> {
  const shardCount = pick(r, [1, 2, 4, 8]);
  const count = pick(r, [1, 2, 4, 8].filter((c) => c <= shardCount));
  return {
    type: 'sum',
    protocol: PROTOCOL_VERSION,
    iteration: int(r, 50),
    phase: pick(r, ['D', 'G']),
    dStep: 0,
    shardCount,
    firstShard: count * int(r, shardCount / count),
    count,
    gradient: new Float32Array(64).map(() => r() - 0.5),
    offset: 0,
    total: 64,
    stats: { loss: 0.5, dReal: 0.4, dFake: 0.6 },
  };
}

/** Sets an own property, also one named __proto__ (a plain assignment would set the prototype). */
function put(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

/** One field of a message made wrong: removed, retyped, or an extra one. */
function mutate(r: Rng, msg: Record<string, unknown>): Record<string, unknown> {
  const out = { ...msg };
  const keys = Object.keys(out);
  switch (int(r, 6)) {
    case 0: delete out[pick(r, keys)]; break;
    case 1: put(out, pick(r, keys), randomValue(r)); break;
    case 2: put(out, pick(r, FIELDS), randomValue(r)); break;
    case 3: out.protocol = pick(r, [0, PROTOCOL_VERSION + 1, -1, 'x', 1.5]); break;
    case 4: out.ticket = new Uint8Array(pick(r, [0, 15, 17, 32, 1000])); break;
    default: put(out, pick(r, keys), pick(r, [NaN, Infinity, -1, 2 ** 60, '', 'x'.repeat(200)]));
  }
  return out;
}

interface Case {
  /** Frames sent after connecting (and after a good relay-hello when `afterTicket`). */
  frames: (Uint8Array | string)[];
  afterTicket: boolean;
  /** A mutation that left a valid sum: from an accepted child the relay must take it (it cannot know better). */
  validSum: boolean;
  what: string;
}

function hostileCase(r: Rng, i: number): Case {
  const afterTicket = r() < 0.35;
  const id = pick(r, ['child', 'nobody', `hostile-${i % LANES}`, '']);
  const hello = { type: 'relay-hello', protocol: PROTOCOL_VERSION, workerId: id, ticket: r() < 0.5 ? TICKETS.never : new Uint8Array(16) }; // never an accepted ticket
  const message = afterTicket ? (r() < 0.7 ? mutate(r, validSum(r)) : randomValue(r)) : r() < 0.6 ? mutate(r, hello) : randomValue(r);
  const packed = raw.pack(message);
  const kind = int(r, 10);
  let frame: Uint8Array | string;
  let what: string;
  if (kind === 0) [frame, what] = [Uint8Array.from({ length: 1 + int(r, 2000) }, () => int(r, 256)), 'random bytes'];
  else if (kind === 1) [frame, what] = [packed.subarray(0, Math.max(1, int(r, packed.length))), 'truncated'];
  else if (kind === 2) [frame, what] = [Buffer.concat([packed, Uint8Array.of(int(r, 256))]), 'trailing byte'];
  else if (kind === 3) [frame, what] = ['{"type":"relay-hello"}', 'text frame'];
  else if (kind === 4) [frame, what] = [new Uint8Array(0), 'empty frame'];
  else if (kind === 5) [frame, what] = [new Uint8Array(afterTicket ? LIMITS.maxFrameBytes + 1 : 16 * 1024 + 1 + int(r, 4096)), 'over the limit'];
  else if (kind === 6 && !afterTicket) [frame, what] = [encode({ type: 'relay-hello', workerId: 'child', ticket: TICKETS.good.map((b, k) => (k === i % 16 ? b ^ (1 + int(r, 255)) : b)) }), 'wrong ticket for the real child'];
  else if (kind === 7 && !afterTicket) [frame, what] = [raw.pack(validSum(r)), 'a valid sum before relay-hello'];
  else if (kind === 7) [frame, what] = [encode({ type: 'weights-chunk', net: 'D', version: 1, total: 4, offset: 0, data: Uint8Array.of(1, 2, 3, 4) }), 'a valid message other than sum after the ticket'];
  else [frame, what] = [packed, afterTicket ? 'mutated sum or random value' : 'mutated relay-hello or random value'];
  const decoded = typeof frame === 'string' ? null : decode(frame, LIMITS);
  return { frames: [frame], afterTicket, validSum: afterTicket && decoded !== null && decoded.ok && decoded.msg.type === 'sum', what };
}

interface Closed {
  code: number;
  reason: string;
}

async function connect(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { maxPayload: 1 << 22 });
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

function closedOf(ws: WebSocket, timeoutMs = 20_000): Promise<Closed> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`connection not closed within ${timeoutMs} ms`)), timeoutMs);
    ws.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

/** Waits for the next binary message on a socket. */
function nextMessage(ws: WebSocket, timeoutMs = 20_000): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message within ${timeoutMs} ms`)), timeoutMs);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve(new Uint8Array(data as Buffer));
    });
  });
}

describe('a relay listener under hostile connections', () => {
  const warnings: Record<string, unknown>[] = [];
  const sums: { child: string; msg: SumMsg }[] = [];
  const ready: string[] = [];
  let relay: RelayServer;
  let url = '';
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => void uncaught.push(e);

  beforeAll(async () => {
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    const log = { info: () => {}, debug: () => {}, error: (o: object) => void warnings.push(o as Record<string, unknown>), warn: (o: object) => void warnings.push(o as Record<string, unknown>) };
    relay = new RelayServer({
      host: '127.0.0.1',
      port: 0,
      log,
      limits: () => LIMITS,
      ready: (c: RelayChild) => void ready.push(c.workerId),
      sum: (c: RelayChild, msg: SumMsg) => void sums.push({ child: c.workerId, msg }),
    });
    const address = await relay.listen();
    url = `ws://127.0.0.1:${address.port}`;
    relay.setAccepted([{ workerId: 'child', ticket: TICKETS.good }, ...Array.from({ length: LANES }, (_, k) => ({ workerId: `hostile-${k}`, ticket: TICKETS.hostile }))]);
  });

  afterAll(async () => {
    await relay?.close();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });

  it(
    'refuses every hostile case with a stable code on that connection only; the real child keeps relaying',
    async () => {
      // The legitimate child: ticket accepted, welcomed.
      const child = await connect(url);
      const welcomed = nextMessage(child);
      child.send(encode({ type: 'relay-hello', workerId: 'child', ticket: TICKETS.good }));
      const welcome = decode(await welcomed, LIMITS);
      expect(welcome.ok && welcome.msg.type).toBe('relay-welcome');
      expect(ready).toEqual(['child']);

      const rng = uniformSource(SEED);
      const cases = Array.from({ length: CASES }, (_, i) => hostileCase(rng, i));
      const outcomes: { c: Case; closed: Closed }[] = [];
      let next = 0;
      let accepted = 0;
      // Each lane has its own accepted id, so a lane's connection never replaces another's.
      const lane = async (laneId: number) => {
        while (next < cases.length) {
          const c = cases[next++]!;
          const ws = await connect(url);
          const closed = closedOf(ws);
          if (c.afterTicket) {
            const id = `hostile-${laneId}`;
            const welcomedHostile = nextMessage(ws);
            ws.send(encode({ type: 'relay-hello', workerId: id, ticket: TICKETS.hostile }));
            await welcomedHostile;
          }
          for (const f of c.frames) ws.send(f, { binary: typeof f !== 'string' });
          if (c.validSum) {
            // Taken, connection kept: wait for the handler to have it, then leave.
            const before = accepted;
            accepted++;
            const deadline = Date.now() + 20_000;
            while (sums.length <= before && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
            expect(ws.readyState, `${c.what}: a valid sum keeps the connection`).toBe(WebSocket.OPEN);
            ws.close(1000);
            await closed;
            continue;
          }
          const shown = (f: Uint8Array | string) => (typeof f === 'string' ? f : Buffer.from(f.subarray(0, 200)).toString('hex'));
          outcomes.push({ c, closed: await closed.catch((e: Error) => Promise.reject(new Error(`${c.what}${c.afterTicket ? ' (after the ticket)' : ''}: ${e.message}; frame ${shown(c.frames[0]!)}`))) });
        }
      };
      await Promise.all(Array.from({ length: LANES }, (_, k) => lane(k)));

      const codes = new Map<string, number>();
      for (const { c, closed } of outcomes) {
        if (closed.code === WS_TOO_BIG) {
          expect(c.what, `${c.what}: closed by ws as too big`).toBe('over the limit');
          continue;
        }
        // Our refusals: the reason is the stable code, and the close code is that code's.
        expect(Object.hasOwn(BYE_CODES, closed.reason), `${c.what}: close reason '${closed.reason}' (${closed.code}) is a stable code`).toBe(true);
        expect(closed.code, `${c.what}: ${closed.reason}`).toBe(closeCodeFor(closed.reason as ByeCode));
        codes.set(closed.reason, (codes.get(closed.reason) ?? 0) + 1);
      }
      // No hostile connection displaced another (each lane's id is its own).
      expect(codes.get('REPLACED') ?? 0).toBe(0);
      expect(outcomes.length + accepted).toBe(CASES);
      // The seeded mix reaches the decoder's refusals, the ticket check and the handshake rule.
      for (const code of ['FRAME_NOT_MSGPACK', 'FRAME_NOT_OBJECT', 'BAD_FIELD', 'UNKNOWN_TYPE', 'RELAY_TICKET', 'RELAY_HANDSHAKE', 'UNEXPECTED_MESSAGE', 'TEXT_FRAME', 'PROTOCOL_MISMATCH']) expect(codes.get(code) ?? 0, code).toBeGreaterThan(0);
      // Every invalid sum was refused before the handler: it saw only the valid ones, from accepted children.
      expect(sums).toHaveLength(accepted);
      for (const got of sums) expect(got.child).toMatch(/^hostile-\d$/);
      sums.length = 0;
      expect(uncaught).toEqual([]);

      // The real child is still connected and served: a forwarded frame reaches it verbatim...
      const chunk = encode({ type: 'weights-chunk', net: 'G', version: 3, total: 4, offset: 0, data: Uint8Array.of(1, 2, 3, 4) });
      const got = nextMessage(child);
      relay.forward(chunk);
      expect(Buffer.from(await got).equals(Buffer.from(chunk))).toBe(true);
      // ...and its sum reaches the relay intact.
      const gradient = Float32Array.from({ length: 8 }, (_, i) => i / 8);
      child.send(encode({ type: 'sum', iteration: 7, phase: 'G', dStep: 0, shardCount: 4, firstShard: 2, count: 2, gradient, offset: 0, total: gradient.length, stats: { loss: 1, dReal: 0.5, dFake: 0.25 } }));
      const deadline = Date.now() + 20_000;
      while (sums.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(sums).toHaveLength(1);
      expect(sums[0]!.child).toBe('child');
      expect(Array.from(sums[0]!.msg.gradient)).toEqual(Array.from(gradient));
      expect(child.readyState).toBe(WebSocket.OPEN);
      child.close();
    },
    TEST_TIMEOUT,
  );

  it(
    `refuses a flood of connections beyond ${RELAY_MAX_PENDING} before their ticket (1013, TOO_MANY_PENDING); the child gets in once they are gone`,
    async () => {
      const idle = await Promise.all(Array.from({ length: RELAY_MAX_PENDING }, () => connect(url)));
      const extra = await connect(url);
      expect(await closedOf(extra)).toEqual({ code: 1013, reason: 'TOO_MANY_PENDING' });
      expect(warnings.filter((w) => w.code === 'HANDSHAKE_FLOOD').length).toBeGreaterThanOrEqual(1);
      const gone = idle.map((ws) => closedOf(ws));
      for (const ws of idle) ws.close(1000);
      await Promise.all(gone);
      // The server sees each close a moment after the client: try again while it is still counting them.
      for (let attempt = 0; ; attempt++) {
        const child = await connect(url);
        const closed = closedOf(child).catch(() => null);
        const welcomed = nextMessage(child).catch(() => null);
        child.send(encode({ type: 'relay-hello', workerId: 'child', ticket: TICKETS.good }));
        const first = await Promise.race([welcomed, closed]);
        if (first instanceof Uint8Array) {
          const msg = decode(first, LIMITS);
          expect(msg.ok && msg.msg.type).toBe('relay-welcome');
          child.close(1000);
          break;
        }
        expect(first, 'refused for another reason than a full handshake queue').toMatchObject({ code: 1013 });
        expect(attempt).toBeLessThan(50);
        await new Promise((res) => setTimeout(res, 100));
      }
    },
    TEST_TIMEOUT,
  );

  it('closes a connection that never says relay-hello (RELAY_HANDSHAKE) after its deadline', async () => {
    const ws = await connect(url);
    const closed = await closedOf(ws, 30_000);
    expect(closed).toEqual({ code: closeCodeFor('RELAY_HANDSHAKE'), reason: 'RELAY_HANDSHAKE' });
  }, 60_000);
});
