/**
 * The status log against its documentation (docs/status-log.md): the doc's tables are parsed, and
 *  - every event name and warning code in the source is documented (and every documented code
 *    still exists), so doc and code cannot drift apart;
 *  - a short real run (ring8, real coordinator and worker processes) writes JSON lines whose events
 *    carry exactly the documented fields with the documented types: run_started, NO_WORKERS,
 *    worker_joined, progress every --log-every iterations with the time split, sample_written,
 *    checkpoint_saved, report_written, lingering (--linger), a straggler's shard_duplicated, a SIGKILLed worker's worker_left +
 *    shard_reassigned, run_finished, exported; time-based worker_progress on the worker side;
 *  - a resume (with --pretty) adds `resumed`, prints human-readable lines and keeps log.jsonl JSON.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { initBackend } from '../shared/backend.ts';
import { resolveConfig } from '../shared/config.ts';
import type { DataSource } from '../shared/data/types.ts';
import { humanLine } from '../shared/log.ts';
import { GanReplica } from '../shared/replica.ts';
import { TrainingState } from '../trainer/training-state.ts';
import { DecodeErrorCode } from '../shared/codec.ts';
import {
  cleanup,
  eventsOf,
  kill,
  makeTempDir,
  readLog,
  ROOT,
  sleep,
  spawnCli,
  waitForEvent,
  waitForEvents,
  waitForExit,
  type LogEvent,
  type Proc,
} from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const START_MS = 30_000;
const RUN_MS = 60_000;

// ------------------------------------------------------------------ the doc, parsed

interface FieldSpec {
  type: string;
  optional: boolean;
}
interface CodeSpec {
  code: string;
  emitter: string;
  /** Always present for this code. */
  fields: string[];
  /** Present only sometimes (marked `name`? in the doc). */
  maybe: string[];
}
interface DocSpec {
  base: Map<string, FieldSpec>;
  events: Map<string, { fields: Map<string, FieldSpec>; reserved: boolean }>;
  codes: CodeSpec[];
}

const cells = (line: string) =>
  line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());
const ticked = (cell: string) => /^`([^`]+)`$/.exec(cell)?.[1] ?? null;

function parseDoc(text: string): DocSpec {
  const doc: DocSpec = { base: new Map(), events: new Map(), codes: [] };
  let section = '';
  let event: string | null = null;
  let reserved = false;
  for (const line of text.split('\n')) {
    const h2 = /^## (.+)$/.exec(line);
    if (h2) {
      section = h2[1];
      event = null;
      reserved = /^Reserved/.test(section);
      continue;
    }
    const h3 = /^### `([a-z_]+)`\s*$/.exec(line);
    if (h3) {
      event = h3[1];
      doc.events.set(event, { fields: new Map(), reserved });
      continue;
    }
    if (!line.startsWith('| `')) continue;
    const c = cells(line);
    if (c.length === 3) {
      const name = ticked(c[0]);
      if (!name) continue;
      const spec = { type: c[1].replace(/,\s*optional$/, ''), optional: /optional/.test(c[1]) };
      if (/every line/i.test(section)) doc.base.set(name, spec);
      else if (event && section !== 'HTTP endpoints' && section !== 'Metrics') doc.events.get(event)!.fields.set(name, spec);
    } else if (c.length === 4 && section === 'Warnings') {
      const code = ticked(c[0]);
      const listed = [...c[2].matchAll(/`([^`]+)`(\?)?/g)];
      if (code) doc.codes.push({ code, emitter: c[1], fields: listed.filter((m) => !m[2]).map((m) => m[1]), maybe: listed.filter((m) => m[2]).map((m) => m[1]) });
    }
  }
  return doc;
}

const DOC = parseDoc(readFileSync(join(ROOT, 'docs', 'status-log.md'), 'utf8'));

function typeOk(value: unknown, type: string): boolean {
  if (type.includes(' or ')) return type.split(' or ').some((t) => typeOk(value, t.trim()));
  if (type.endsWith('[]')) return Array.isArray(value) && value.every((v) => typeOk(v, type.slice(0, -2)));
  switch (type) {
    case 'integer':
      return Number.isInteger(value);
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'null':
      return value === null;
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    default:
      throw new Error(`docs/status-log.md uses an unknown type '${type}'`);
  }
}

/** Problems with one log line against the doc ([] when it matches exactly). */
function checkLine(rec: LogEvent): string[] {
  const where = `${String(rec.name)} ${String(rec.event)}${rec.code ? ` ${String(rec.code)}` : ''}`;
  const ev = typeof rec.event === 'string' ? DOC.events.get(rec.event) : undefined;
  if (!ev || ev.reserved) return [`${where}: event not documented`];
  const fields = new Map(DOC.base);
  for (const [k, v] of ev.fields) fields.set(k, v);
  if (rec.event !== 'warning') return checkFields(rec, fields, where);
  // The `warning` table types every field a warning may carry; a row of the codes table says
  // which ones its code carries (a code may have several rows: one must match).
  const rows = DOC.codes.filter((c) => c.code === rec.code && c.emitter === rec.name);
  if (rows.length === 0) return [`${where}: warning code not documented for ${String(rec.name)}`];
  let first: string[] | null = null;
  for (const row of rows) {
    const allowed = new Set([...row.fields, ...row.maybe]);
    const missing = [...allowed].filter((f) => !fields.has(f));
    if (missing.length) return [`${where}: field(s) ${missing.join(', ')} of code ${String(rec.code)} not in the warning table`];
    const own = new Map(DOC.base);
    own.set('code', ev.fields.get('code')!);
    for (const f of allowed) own.set(f, { ...fields.get(f)!, optional: !row.fields.includes(f) });
    const problems = checkFields(rec, own, where);
    if (problems.length === 0) return [];
    first ??= problems;
  }
  return first!;
}

function checkFields(rec: LogEvent, fields: Map<string, FieldSpec>, where: string): string[] {
  const problems: string[] = [];
  for (const [k, spec] of fields) {
    const present = Object.hasOwn(rec, k);
    // `worker` is on every worker line (a child binding) and documented per event on the coordinator.
    const optional = spec.optional && !(k === 'worker' && rec.name === 'worker');
    if (!present && !optional) problems.push(`${where}: missing field '${k}'`);
    if (present && !typeOk(rec[k], spec.type)) problems.push(`${where}: field '${k}' should be ${spec.type}, is ${JSON.stringify(rec[k])}`);
  }
  for (const k of Object.keys(rec)) if (!fields.has(k)) problems.push(`${where}: undocumented field '${k}'`);
  return problems;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir))
    .filter((n) => n.endsWith('.ts'))
    .map((n) => readFileSync(join(ROOT, dir, n), 'utf8'));
}

// ------------------------------------------------------------------ doc vs source

describe('docs/status-log.md vs the source', () => {
  it('parses into base fields, events with fields, and warning codes', () => {
    expect([...DOC.base.keys()]).toEqual(expect.arrayContaining(['level', 'time', 'pid', 'name', 'msg', 'event']));
    for (const name of ['run_started', 'worker_joined', 'worker_left', 'shard_reassigned', 'shard_duplicated', 'progress', 'checkpoint_saved', 'resumed', 'sample_written', 'run_finished', 'warning', 'worker_progress']) {
      expect(DOC.events.has(name), name).toBe(true);
      expect(DOC.events.get(name)!.fields.size, name).toBeGreaterThan(0);
    }
    expect(DOC.events.get('eval')?.reserved).toBe(false);
    expect([...DOC.events.get('eval')!.fields.keys()]).toEqual(expect.arrayContaining(['iteration', 'samples', 'modesCaptured', 'highQuality', 'inceptionScore', 'frechetDistance']));
    const progress = [...DOC.events.get('progress')!.fields.keys()];
    expect(progress).toEqual(
      expect.arrayContaining(['iteration', 'epoch', 'lossD', 'lossG', 'dReal', 'dFake', 'workers', 'samplesPerSec', 'computeS', 'waitingS', 'applyS', 'mbSent', 'mbReceived', 'etaS']),
    );
    expect(DOC.codes.length).toBeGreaterThan(20);
  });

  it('documents every event name and warning code the coordinator and worker emit, and no code that is gone', () => {
    // The coordinator process runs trainer/ too (the schedule, checkpoints, samples).
    const coordinator = [...sourceFiles('coordinator'), ...sourceFiles('trainer')].join('\n');
    const worker = sourceFiles('worker').join('\n');
    const events = new Set([...`${coordinator}\n${worker}`.matchAll(/event: '([a-z_]+)'/g)].map((m) => m[1]));
    expect(events.size).toBeGreaterThan(20);
    for (const e of events) expect(DOC.events.has(e), `event '${e}' is emitted but not documented`).toBe(true);

    const emitted: { code: string; emitter: string }[] = [];
    for (const [emitter, src] of [
      ['coordinator', coordinator],
      ['worker', worker],
    ] as const) {
      for (const m of src.matchAll(/event: 'warning', code: '([A-Z_]+)'/g)) emitted.push({ code: m[1], emitter });
    }
    // Rejections: reject(session, 'CODE', ...) and every decode failure code.
    for (const m of coordinator.matchAll(/reject\([^,]+, '([A-Z_]+)'/g)) emitted.push({ code: m[1], emitter: 'coordinator' });
    // Codes chosen at run time: the outcomes of `const code = cond ? 'A' : 'B';` before a warning.
    for (const [emitter, src] of [
      ['coordinator', coordinator],
      ['worker', worker],
    ] as const) {
      for (const m of src.matchAll(/const code = ([^;\n]+);/g)) for (const q of m[1].matchAll(/[?:]\s*'([A-Z][A-Z_]{3,})'/g)) emitted.push({ code: q[1], emitter });
    }
    for (const code of Object.values(DecodeErrorCode)) emitted.push({ code, emitter: 'coordinator' });
    expect(emitted.length).toBeGreaterThan(20);
    const documented = new Set(DOC.codes.map((c) => `${c.emitter}:${c.code}`));
    for (const e of emitted) expect(documented.has(`${e.emitter}:${e.code}`), `${e.emitter} warning ${e.code} is not in docs/status-log.md`).toBe(true);
    const source = [coordinator, worker, ...['codec.ts', 'protocol.ts', 'schema.ts', 'socket-guard.ts'].map((f) => readFileSync(join(ROOT, 'shared', f), 'utf8'))].join('\n');
    for (const c of DOC.codes) expect(source.includes(`'${c.code}'`), `documented code ${c.code} appears nowhere in the source`).toBe(true);
  });
});

// ------------------------------------------------------------------ small units

describe('status log units', () => {
  it('TrainingState.epoch follows the sampler through a finite data set', async () => {
    await initBackend('cpu');
    const n = 100;
    const x = Float32Array.from({ length: n * 16 }, (_, i) => ((i * 37) % 200) / 100 - 1);
    const set = { name: 'tiny', x, n, dim: 16, shape: [4, 4, 1] };
    const source: DataSource = { kind: 'finite', spec: 'tiny', train: set, heldOut: { ...set, n: 0, x: new Float32Array(0) } };
    const config = resolveConfig({ model: 'mlp-small', batchSize: 32, shards: 4, iterations: 10 }, source);
    const replica = new GanReplica(config);
    try {
      const state = new TrainingState(config, source, replica.layout);
      expect(state.epoch).toBe(0);
      // Each D plan draws 32 rows; planning without applying keeps drawing (the key stays the same).
      for (let i = 0; i < 3; i++) state.planNext();
      expect(state.epoch).toBe(0); // 96 of 100 rows
      state.planNext();
      expect(state.epoch).toBe(1); // wrapped into the second pass
      expect(state.snapshot().sampler.epoch).toBe(1);
    } finally {
      replica.dispose();
    }
  }, HEAVY_TEST_MS);

  it('renders progress and other events as one readable line', () => {
    const line = humanLine({ event: 'progress', iteration: 120, iterations: 1000, epoch: 2, lossD: 1.3117, lossG: 0.7812, dReal: 0.55, dFake: 0.4512, workers: 2, samplesPerSec: 1234.5, computeS: 3.2, waitingS: 0.41, applyS: 0.05, mbSent: 12.34, mbReceived: 56.7, etaS: 3725 });
    expect(line).toBe('progress: it 120/1000 ep 2 | lossD 1.31 lossG 0.781 | D(x) 0.55 D(G(z)) 0.451 | 2 workers | 1235 samples/s | compute 3.2s wait 0.41s apply 0.05s | 12.3 MB out 56.7 MB in | ETA 1h02m');
    expect(humanLine({ event: 'warning', code: 'NO_WORKERS', iteration: 0, msg: 'no workers connected', config: { big: 1 } })).toBe('warning: no workers connected  code=NO_WORKERS iteration=0');
  });
});

// ------------------------------------------------------------------ a real run

afterEach(cleanup, HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);

const TRAIN = ['--dataset', 'ring8', '--preset', 'none', '--iterations', '40', '--batch-size', '64', '--shards', '8', '--backend', 'wasm'];

function expectMatchesDoc(lines: LogEvent[], who: string): void {
  expect(lines.length, who).toBeGreaterThan(0);
  const problems = lines.flatMap(checkLine);
  expect(problems, `${who}: lines that do not match docs/status-log.md`).toEqual([]);
}

describe('the status log of a real run', () => {
  it(
    'is JSON lines with the documented events and fields, including a straggler, a SIGKILLed worker and a resume',
    async () => {
      const runDir = makeTempDir('gan-statuslog-');
      const coordArgs = [...TRAIN, '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--log-every', '10', '--sample-every', '10', '--checkpoint-every', '20'];
      // --linger 0.2: after run_finished, `lingering`, then exit 0 (its line is checked against the doc too).
      const c = spawnCli('coordinator', [...coordArgs, '--straggler-min-ms', '1500', '--straggler-factor', '2', '--linger', '0.2'], { name: 'coordinator' });
      const port = Number((await waitForEvent(c, 'listening', START_MS)).port);
      const url = `ws://127.0.0.1:${port}`;
      await waitForEvent(c, (e) => e.event === 'warning' && e.code === 'NO_WORKERS', 5_000);

      // Two steady workers at ~25 ms per shard; one logs worker_progress every second.
      const steady: Proc[] = [
        spawnCli('worker', ['--coordinator', url, '--id', 'steady-a', '--backend', 'wasm', '--status-interval', '1'], { env: { GAN_TEST_SHARD_DELAY_MS: '20' }, name: 'worker steady-a' }),
        spawnCli('worker', ['--coordinator', url, '--id', 'steady-b', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: '20' }, name: 'worker steady-b' }),
      ];
      await waitForEvents(c, 'worker_joined', 2, START_MS);
      await waitForEvent(c, 'progress', RUN_MS);

      // The straggler never returns a result. It joins with the others' speed estimate, so it gets
      // its share of the next phase; 1.5 s later the idle steady workers duplicate its shards
      // (shard_duplicated) and it counts as late: no more shards for it. Then it is SIGKILLed.
      const straggler = spawnCli('worker', ['--coordinator', url, '--id', 'straggler', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: '60000' }, name: 'worker straggler' });
      await waitForEvent(straggler, 'welcomed', START_MS);
      await waitForEvent(c, (e) => e.event === 'shard_duplicated', RUN_MS);
      expect(await kill(straggler)).toEqual({ code: null, signal: 'SIGKILL' });
      await waitForEvent(c, (e) => e.event === 'worker_left' && e.worker === 'straggler', 15_000);

      // The victim is SIGKILLed as soon as /status shows it holding shards of the current phase
      // (every worker that is not late gets at least one per phase), long before they are
      // overdue: worker_left + shard_reassigned.
      const victim = spawnCli('worker', ['--coordinator', url, '--id', 'victim', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: '60000' }, name: 'worker victim' });
      await waitForEvent(victim, 'welcomed', START_MS);
      const deadline = Date.now() + 15_000;
      for (;;) {
        const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { workers: { id: string; shardsHeld: number }[] };
        if ((status.workers.find((w) => w.id === 'victim')?.shardsHeld ?? 0) > 0) break;
        if (Date.now() > deadline) throw new Error('the victim was never handed a shard');
        await sleep(10);
      }
      expect(await kill(victim)).toEqual({ code: null, signal: 'SIGKILL' });
      const left = await waitForEvent(c, (e) => e.event === 'worker_left' && e.worker === 'victim', 15_000);
      expect(left.shardsDone).toBe(0);
      const reassigned = await waitForEvent(c, (e) => e.event === 'shard_reassigned' && e.from === 'victim', 15_000);
      expect((reassigned.shards as number[]).length).toBeGreaterThan(0);

      const done = await waitForEvent(c, 'run_finished', RUN_MS);
      expect(done.stopped).toBe(false);
      expect(await waitForExit(c, 15_000)).toEqual({ code: 0, signal: null });
      for (const w of steady) expect(await waitForExit(w, 15_000), w.name).toEqual({ code: 0, signal: null });

      // log.jsonl: every line is a JSON object; it holds what stdout held.
      const raw = readFileSync(join(runDir, 'log.jsonl'), 'utf8').split('\n').filter(Boolean);
      for (const l of raw) expect(() => JSON.parse(l), l).not.toThrow();
      const log = readLog(runDir);
      expect(log.map((e) => e.event)).toEqual(c.events.map((e) => e.event));
      expectMatchesDoc(log, 'coordinator log.jsonl');
      for (const p of [...steady, straggler, victim]) expectMatchesDoc(p.events, p.name);
      expect(c.lines.every((l) => l.startsWith('{'))).toBe(true); // stdout is a pipe: JSON

      const names = new Set(log.map((e) => e.event));
      for (const e of ['run_started', 'listening', 'training', 'worker_joined', 'worker_left', 'shard_duplicated', 'shard_reassigned', 'progress', 'sample_written', 'checkpoint_saved', 'report_written', 'exported', 'run_finished', 'lingering', 'warning']) {
        expect(names.has(e), `event ${e}`).toBe(true);
      }
      const started = eventsOf(log, 'run_started')[0];
      expect(started.seed).toBe(1);
      expect(started.backend).toBe('wasm');
      expect((started.config as { train: { iterations: number } }).train.iterations).toBe(40);

      // Progress after every 10th iteration (the 30 s fallback never fires in a run this short).
      const progress = eventsOf(log, 'progress');
      expect(progress.map((p) => p.iteration)).toEqual([10, 20, 30, 40]);
      for (const p of progress) {
        expect(p.epoch).toBe(0); // a mixture: fresh points, no epochs
        expect(p.iterations).toBe(40);
        for (const k of ['dReal', 'dFake']) expect(p[k] as number, k).toBeGreaterThan(0);
        for (const k of ['dReal', 'dFake']) expect(p[k] as number, k).toBeLessThan(1);
        for (const k of ['wallS', 'computeS', 'waitingS', 'applyS']) expect(p[k] as number, k).toBeGreaterThanOrEqual(0);
        expect(p.computeS as number).toBeGreaterThan(0);
        expect((p.waitingS as number) + (p.applyS as number)).toBeLessThanOrEqual((p.wallS as number) * 1.01);
        expect(p.workers as number).toBeGreaterThanOrEqual(1);
        expect(p.samplesPerSec as number).toBeGreaterThan(0);
      }
      // Two workers with 20 ms of injected "compute" per shard: compute dominates the windows.
      const sums = { compute: 0, wall: 0 };
      for (const p of progress) {
        sums.compute += p.computeS as number;
        sums.wall += p.wallS as number;
      }
      expect(sums.compute).toBeGreaterThan(0.5 * sums.wall);
      const mb = progress.map((p) => p.mbSent as number);
      expect([...mb].sort((a, b) => a - b)).toEqual(mb);
      expect(mb[0]).toBeGreaterThan(0);
      expect(progress.at(-1)!.etaS).toBe(0);
      expect(eventsOf(log, 'sample_written').map((e) => e.iteration)).toEqual([10, 20, 30, 40]);
      expect(eventsOf(log, 'checkpoint_saved').map((e) => e.iteration)).toEqual([20, 40]);
      // report.html after every checkpoint and once more at the end.
      expect(eventsOf(log, 'report_written').map((e) => e.iteration)).toEqual([20, 40, 40]);
      // Order: worker_left precedes its shard_reassigned.
      const at = (pred: (e: LogEvent) => boolean) => log.findIndex(pred);
      expect(at((e) => e.event === 'shard_reassigned' && e.from === 'victim')).toBeGreaterThan(at((e) => e.event === 'worker_left' && e.worker === 'victim'));

      // Worker side: time-based worker_progress (far fewer than 500 shards apart).
      const wp = eventsOf(steady[0], 'worker_progress');
      expect(wp.length).toBeGreaterThan(0);
      expect(wp.some((e) => (e.shardsDone as number) % 500 !== 0)).toBe(true);
      const finished = eventsOf(steady[0], 'worker_finished')[0];
      expect(finished.meanShardMs as number).toBeGreaterThan(0);

      // A resume with --pretty: human lines on stdout, JSON in log.jsonl, and a `resumed` event.
      const before = log.length;
      const r = spawnCli('coordinator', [...coordArgs, '--resume', '--pretty'], { name: 'coordinator (resume)' });
      expect(await waitForExit(r, RUN_MS)).toEqual({ code: 0, signal: null });
      expect(r.events).toEqual([]);
      expect(r.lines.some((l) => /resumed: resumed at iteration 40/.test(l)), r.lines.join('\n')).toBe(true);
      expect(r.lines.some((l) => /INFO \(coordinator\): run_finished:/.test(l)), r.lines.join('\n')).toBe(true);
      const after = readLog(runDir).slice(before);
      expect(after.map((e) => e.event)).toEqual(expect.arrayContaining(['run_started', 'resumed', 'listening', 'run_finished']));
      expectMatchesDoc(after, 'resumed coordinator log.jsonl');
      expect(eventsOf(after, 'resumed')[0]).toMatchObject({ iteration: 40, dStep: 0, changes: [] });
    },
    120_000,
  );
});
