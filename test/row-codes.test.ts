/**
 * rows-u8: D-phase tasks carry the real rows of an 8-bit data set as one byte per value into a
 * palette sent with the welcome. What a user relies on: the rows a worker rebuilds are the
 * coordinator's rows bit for bit (so distributed mnist still equals gan-train), a quarter of the
 * bytes travel, older workers (no rows-u8) still get float rows, continuous data is never
 * coded, and a bad code or palette is refused, not computed on.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decode, encode, type DecodeLimits } from '../shared/codec.ts';
import { loadDataSource, type DataSource } from '../trainer/data/index.ts';
import { codesOfRows, rowCodesOf, rowsFromCodes } from '../shared/data/row-codes.ts';
import type { Dataset } from '../shared/data/types.ts';
import { hashFloats } from '../trainer/hash.ts';
import { Sampler } from '../trainer/sampler.ts';
import { RawPeer, referenceHash, startInProcessCoordinator, type InProcessCoordinator } from './helpers/inprocess.ts';
import { cleanup, spawnCli, waitForExit } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const LIMITS: DecodeLimits = { maxFrameBytes: 64 << 20, maxFloats: 16 << 20 };
let mnist: DataSource & { kind: 'finite' };

beforeAll(() => {
  mnist = loadDataSource('mnist') as DataSource & { kind: 'finite' };
});

afterEach(async () => {
  await cleanup();
}, HEAVY_TEST_MS);

const bitsOf = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('row codes of a data set', () => {
  it('mnist: at most 256 ascending values, and every value is its palette entry bit for bit', () => {
    const rc = rowCodesOf(mnist.train)!;
    expect(rc).not.toBeNull();
    expect(rc.palette.length).toBeGreaterThan(2);
    expect(rc.palette.length).toBeLessThanOrEqual(256);
    for (let i = 1; i < rc.palette.length; i++) expect(rc.palette[i]).toBeGreaterThan(rc.palette[i - 1]);
    const rebuilt = rowsFromCodes(rc.palette, rc.codes) as Float32Array;
    expect(Buffer.compare(Buffer.from(bitsOf(rebuilt).buffer), Buffer.from(bitsOf(mnist.train.x).slice().buffer))).toBe(0);
    // Cached: the same object on the next call.
    expect(rowCodesOf(mnist.train)).toBe(rc);
  });

  it("a sampler batch's rows, sent as codes, come back as the same floats", () => {
    const rc = rowCodesOf(mnist.train)!;
    const batch = new Sampler(mnist, 7).next(96);
    const codes = codesOfRows(rc, mnist.train.dim, batch.rows!);
    expect(codes.length).toBe(96 * 784);
    expect(hashFloats(rowsFromCodes(rc.palette, codes) as Float32Array)).toBe(hashFloats(batch.x));
  });

  it('data with more than 256 distinct values has no codes; a code past the palette is refused', () => {
    const ds: Dataset = { name: 'ramp', x: Float32Array.from({ length: 300 }, (_, i) => i / 300), n: 300, dim: 1, shape: [1] };
    expect(rowCodesOf(ds)).toBeNull();
    expect(rowsFromCodes(new Float32Array([0, 1]), new Uint8Array([0, 1, 2]))).toMatch(/code 2 at value 2 is past the end of the 2-value palette/);
  });
});

describe('codec: realCodes and palette', () => {
  const task = (shard: Record<string, unknown>) => ({ type: 'task', taskId: 1, iteration: 0, phase: 'D', dStep: 0, gVersion: 0, dVersion: 0, shards: [{ shardId: 0, seed: 1, rows: 2, ...shard }], shardCount: 1, blocks: [{ first: 0, count: 1 }] }) as never;

  it('a task with realCodes decodes to a Uint8Array', () => {
    const res = decode(encode(task({ realCodes: new Uint8Array([1, 2, 3, 4]) })), LIMITS);
    expect(res.ok).toBe(true);
    if (res.ok && res.msg.type === 'task') expect(res.msg.shards[0].realCodes).toEqual(new Uint8Array([1, 2, 3, 4]));
  });

  it('refuses a shard with both real and realCodes, a codes length that is not a multiple of rows, and a bad palette', () => {
    const both = decode(encode(task({ real: new Float32Array(4), realCodes: new Uint8Array(4) })), LIMITS);
    expect(both).toMatchObject({ ok: false, code: 'BAD_FIELD' });
    expect(!both.ok && both.reason).toMatch(/both real and realCodes/);
    const ragged = decode(encode(task({ realCodes: new Uint8Array(3) })), LIMITS);
    expect(!ragged.ok && ragged.reason).toMatch(/realCodes length 3 must be a positive multiple of rows \(2\)/);
    const welcome = (palette: Float32Array) =>
      decode(encode({ type: 'welcome', runId: 'r', config: {}, palette, g: { version: 0, weights: new Float32Array(2) }, d: { version: 0, weights: new Float32Array(2) } } as never), LIMITS);
    expect(welcome(new Float32Array(256)).ok).toBe(true);
    expect(welcome(new Float32Array(257))).toMatchObject({ ok: false, code: 'BAD_FIELD' });
    expect(welcome(new Float32Array(0))).toMatchObject({ ok: false, code: 'BAD_FIELD' });
    expect(welcome(new Float32Array([NaN]))).toMatchObject({ ok: false, code: 'NON_FINITE' });
  });
});

describe('rows-u8 between a coordinator and workers', () => {
  const FLAGS = ['--dataset', 'mnist', '--model', 'mlp-small', '--iterations', '6', '--batch-size', '32', '--shards', '2', '--backend', 'wasm'];
  let c: InProcessCoordinator | null = null;

  afterAll(async () => {
    await c?.close();
  }, HEAVY_TEST_MS);

  it('a worker listing rows-u8 gets the palette and coded rows; one that does not gets floats; the run equals gan-train', async () => {
    c = await startInProcessCoordinator({ flags: FLAGS });
    const coded = await RawPeer.connect(c.url);
    coded.hello('coded', { capabilities: { wire: ['fp32', 'rows-u8'], maxShards: 64 } });
    const plain = await RawPeer.connect(c.url);
    plain.hello('plain');
    const welcomeCoded = await coded.next((m) => m.type === 'welcome');
    const welcomePlain = await plain.next((m) => m.type === 'welcome');
    expect(welcomeCoded?.features).toContain('rows-u8');
    const palette = welcomeCoded?.palette as Float32Array;
    expect(palette).toBeInstanceOf(Float32Array);
    expect(welcomePlain?.palette).toBeUndefined();

    // The first D-phase task of each: the raw peers never answer, so both hold shards of it.
    const taskCoded = await coded.next((m) => m.type === 'task');
    const taskPlain = await plain.next((m) => m.type === 'task');
    const sc = (taskCoded!.shards as Record<string, unknown>[])[0];
    const sp = (taskPlain!.shards as Record<string, unknown>[])[0];
    expect(sc.real).toBeUndefined();
    expect((sc.realCodes as Uint8Array).length).toBe(16 * 784);
    expect((sp.real as Float32Array).length).toBe(16 * 784);
    expect(sp.realCodes).toBeUndefined();
    // The coded rows are the rows the plan drew (the same phase's plan, shard by shard).
    const plan = new Sampler(mnist, 1).next(32);
    const shardRows = rowsFromCodes(palette, sc.realCodes as Uint8Array) as Float32Array;
    const offset = (sc.shardId as number) * 16 * 784;
    expect(hashFloats(shardRows)).toBe(hashFloats(plan.x.subarray(offset, offset + 16 * 784)));

    // Real workers (which list rows-u8) finish the run once the raw peers are gone: same weights as gan-train.
    coded.terminate();
    plain.terminate();
    const w = spawnCli('worker', ['--coordinator', c.url, '--id', 'real-worker', '--backend', 'wasm']);
    const result = await c.done;
    expect(result.iterations).toBe(6);
    expect(result.weightsHash).toBe(await referenceHash(FLAGS));
    // Closing the coordinator tells the worker the run is over.
    await c.close();
    expect(await waitForExit(w, 30_000)).toMatchObject({ code: 0 });
  }, 120_000);
});
