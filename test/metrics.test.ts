/**
 * GET /metrics: Prometheus text exposition format (checked by a strict parser written here, not
 * by prom-client, which only writes it), counters that move while a real run trains, and the
 * telemetry behind it (warnings by code from the log, the dashboard history and its replay).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Telemetry } from '../coordinator/metrics.ts';
import { cleanup, makeTempDir, sleep, spawnCli, waitForEvent, waitForEvents } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

// ------------------------------------------------------------------ a strict exposition parser

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A float as Prometheus reads it (Go's ParseFloat: NaN and [+-]Inf(inity) in any case). */
function parseValue(s: string, where: string): number {
  if (/^nan$/i.test(s)) return NaN;
  if (/^\+?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) throw new Error(`${where}: bad value '${s}'`);
  return Number(s);
}

/** Parses `name{a="x",b="y"} value [timestamp]`; label values may escape \\, \" and \n. */
function parseSample(line: string, where: string): Sample {
  let i = 0;
  while (i < line.length && /[a-zA-Z0-9_:]/.test(line[i])) i++;
  const name = line.slice(0, i);
  if (!METRIC.test(name)) throw new Error(`${where}: bad metric name in '${line}'`);
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    while (line[i] !== '}') {
      const eq = line.indexOf('=', i);
      if (eq < 0) throw new Error(`${where}: unterminated labels`);
      const label = line.slice(i, eq);
      if (!LABEL.test(label)) throw new Error(`${where}: bad label name '${label}'`);
      if (Object.hasOwn(labels, label)) throw new Error(`${where}: label '${label}' twice`);
      if (line[eq + 1] !== '"') throw new Error(`${where}: label value must be quoted`);
      let j = eq + 2;
      let value = '';
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === '\\') {
          const next = line[++j];
          if (next === 'n') value += '\n';
          else if (next === '\\' || next === '"') value += next;
          else throw new Error(`${where}: bad escape \\${next}`);
        } else value += line[j];
      }
      if (line[j] !== '"') throw new Error(`${where}: unterminated label value`);
      labels[label] = value;
      i = j + 1;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new Error(`${where}: expected , or } after a label`);
    }
    i++;
  }
  if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value`);
  const rest = line.slice(i + 1).split(' ');
  if (rest.length < 1 || rest.length > 2) throw new Error(`${where}: expected 'value [timestamp]'`);
  const value = parseValue(rest[0], where);
  if (rest.length === 2 && !/^-?\d+$/.test(rest[1])) throw new Error(`${where}: bad timestamp`);
  return { name, labels, value };
}

/** The family a sample belongs to (histogram and summary samples carry suffixes). */
function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  if (families.has(sample)) return families.get(sample);
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f;
    }
  }
  return undefined;
}

function parsePrometheus(text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  let current: Family | undefined;
  const closed = new Set<string>();
  text
    .slice(0, -1)
    .split('\n')
    .forEach((line, n) => {
      const where = `line ${n + 1}`;
      if (line === '') return;
      const meta = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (meta) {
        const [, kind, name, rest = ''] = meta;
        if (!METRIC.test(name)) throw new Error(`${where}: bad metric name '${name}'`);
        let f = families.get(name);
        if (f && closed.has(name)) throw new Error(`${where}: ${name} metadata after its samples ended`);
        if (!f) families.set(name, (f = { name, type: 'untyped', help: '', samples: [] }));
        if (current && current !== f) closed.add(current.name);
        current = f;
        if (kind === 'TYPE') {
          if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: bad type '${rest}'`);
          if (f.samples.length) throw new Error(`${where}: TYPE after samples of ${name}`);
          f.type = rest as Family['type'];
        } else f.help = rest;
        return;
      }
      if (line.startsWith('#')) return; // a comment
      const s = parseSample(line, where);
      const f = familyOf(s.name, families);
      if (!f) throw new Error(`${where}: sample ${s.name} without HELP/TYPE`);
      if (closed.has(f.name)) throw new Error(`${where}: samples of ${f.name} are not contiguous`);
      if (current && current !== f) {
        closed.add(current.name);
        current = f;
      }
      const key = `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
      if (seen.has(key)) throw new Error(`${where}: duplicate sample ${key}`);
      seen.add(key);
      if (f.type === 'counter' && (s.value < 0 || Number.isNaN(s.value))) throw new Error(`${where}: counter ${s.name} is ${s.value}`);
      if (f.type === 'histogram' && s.name.endsWith('_bucket') && !('le' in s.labels)) throw new Error(`${where}: bucket without le`);
      f.samples.push(s);
    });
  // Histograms: cumulative buckets per label set, ending in +Inf = _count.
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const groups = new Map<string, Sample[]>();
    for (const s of f.samples.filter((x) => x.name.endsWith('_bucket'))) {
      const { le: _le, ...rest } = s.labels;
      const k = JSON.stringify(Object.entries(rest).sort());
      groups.set(k, [...(groups.get(k) ?? []), s]);
    }
    for (const [k, buckets] of groups) {
      const sorted = [...buckets].sort((a, b) => parseValue(a.labels.le, f.name) - parseValue(b.labels.le, f.name));
      for (let i = 1; i < sorted.length; i++) if (sorted[i].value < sorted[i - 1].value) throw new Error(`${f.name}${k}: buckets not cumulative`);
      const last = sorted.at(-1)!;
      if (last.labels.le !== '+Inf') throw new Error(`${f.name}${k}: no +Inf bucket`);
      const count = f.samples.find((s) => s.name === `${f.name}_count` && JSON.stringify(Object.entries(s.labels).sort()) === k);
      if (!count || count.value !== last.value) throw new Error(`${f.name}${k}: _count differs from the +Inf bucket`);
    }
  }
  return families;
}

/** The value of one sample (labels must match exactly). */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const f = familyOf(name, families);
  const s = f?.samples.find((x) => x.name === name && JSON.stringify(Object.entries(x.labels).sort()) === JSON.stringify(Object.entries(labels).sort()));
  if (!s) throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
  return s.value;
}

// ------------------------------------------------------------------ the parser itself

describe('the strict exposition parser', () => {
  it('accepts valid text and rejects malformed lines', () => {
    const ok = '# HELP a_total A thing\n# TYPE a_total counter\na_total{x="1",y="q\\"uote"} 3\na_total{x="2"} 4e2\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n';
    const f = parsePrometheus(ok);
    expect(value(f, 'a_total', { x: '1', y: 'q"uote' })).toBe(3);
    expect(value(f, 'a_total', { x: '2' })).toBe(400);
    expect(value(f, 'h_count')).toBe(2);
    for (const bad of [
      'a 1\n', // no TYPE/HELP
      '# TYPE a counter\na -1\n', // negative counter
      '# TYPE a counter\na{x=1} 1\n', // unquoted label
      '# TYPE a gauge\na 1\na 2\n', // duplicate
      '# TYPE a gauge\na one\n', // bad value
      '# TYPE a gauge\na 1', // no final newline
      '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n', // not contiguous
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', // not cumulative
      '# TYPE a wibble\na 1\n',
    ]) {
      expect(() => parsePrometheus(bad), JSON.stringify(bad)).toThrow();
    }
  });
});

// ------------------------------------------------------------------ telemetry in process

describe('Telemetry', () => {
  const sources = { iteration: () => 7, iterations: () => 10, epoch: () => 2, workers: () => 3, bytes: () => ({ sent: 100, received: 250 }) };

  it('counts warnings by code and events from the log, and serves valid text', async () => {
    const t = new Telemetry(sources, 64);
    t.observe({ event: 'warning', code: 'NO_WORKERS' });
    t.observe({ event: 'warning', code: 'NO_WORKERS' });
    t.observe({ event: 'warning', code: 'AUTH_FAILED' });
    t.observe({ event: 'shard_reassigned', shards: [1, 2, 3] });
    t.observe({ event: 'progress', iteration: 5, lossD: 1.2, lossG: 0.8, dReal: 0.6, dFake: 0.4, etaS: 12 });
    t.phaseApplied('D', 40, 5, 1);
    t.phaseApplied('G', 20, 2, 1);
    t.resultReceived(30);
    const f = parsePrometheus(await t.registry.metrics());
    expect(value(f, 'gan_warnings_total', { code: 'NO_WORKERS' })).toBe(2);
    expect(value(f, 'gan_warnings_total', { code: 'AUTH_FAILED' })).toBe(1);
    expect(value(f, 'gan_shards_reassigned_total')).toBe(3);
    expect(value(f, 'gan_iteration')).toBe(7);
    expect(value(f, 'gan_epoch')).toBe(2);
    expect(value(f, 'gan_workers')).toBe(3);
    expect(value(f, 'gan_network_received_bytes_total')).toBe(250);
    expect(value(f, 'gan_loss', { net: 'G' })).toBe(0.8);
    expect(value(f, 'gan_discriminator_output', { input: 'fake' })).toBe(0.4);
    expect(value(f, 'gan_samples_total')).toBe(3 * 64);
    expect(value(f, 'gan_iterations_total')).toBe(1);
    expect(value(f, 'gan_phase_duration_seconds_count', { phase: 'D' })).toBe(1);
    expect(value(f, 'gan_compute_seconds_total')).toBeCloseTo(0.03, 9);
    expect(f.get('gan_warnings_total')?.type).toBe('counter');
    expect(f.get('process_cpu_user_seconds_total')?.type).toBe('counter');
  });

  it('keeps a progress history, served incrementally, and replays a resumed run from its log', () => {
    const dir = makeTempDir('gan-telemetry-');
    mkdirSync(dir, { recursive: true });
    const line = (it: number) => JSON.stringify({ level: 30, event: 'progress', iteration: it, lossD: it / 100, lossG: 1, dReal: 0.5, dFake: 0.5 });
    // A first process reached 50 (checkpoint at 40), then was resumed from 40 and reached 60; now resumed from 60.
    writeFileSync(join(dir, 'log.jsonl'), [line(10), line(20), line(30), line(40), line(50), '{"event":"run_started"}', line(50), line(60), line(70), '{"torn'].join('\n'));
    const t = new Telemetry(sources, 64);
    expect(t.replayLog(join(dir, 'log.jsonl'), 60)).toBe(7);
    expect(t.history().points.map((p) => p.iteration)).toEqual([10, 20, 30, 40, 50, 60]);
    const { last } = t.history();
    t.observe({ event: 'progress', iteration: 80, lossD: 1 });
    const next = t.history(last);
    expect(next.points.map((p) => p.iteration)).toEqual([80]);
    expect(next.points[0].lossG).toBeNull();
  });
});

// ------------------------------------------------------------------ a real run

afterEach(cleanup, HEAVY_TEST_MS);
afterAll(cleanup, HEAVY_TEST_MS);

describe('GET /metrics on a training coordinator', () => {
  it(
    'parses as Prometheus text and its counters move between two scrapes',
    async () => {
      const runDir = makeTempDir('gan-metrics-');
      const c = spawnCli(
        'coordinator',
        ['--dataset', 'ring8', '--preset', 'none', '--iterations', '400', '--shards', '4', '--backend', 'wasm', '--host', '127.0.0.1', '--port', '0', '--run-dir', runDir, '--sample-every', '0', '--log-every', '5'],
        { name: 'coordinator' },
      );
      const port = Number((await waitForEvent(c, 'listening', 30_000)).port);
      spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--id', 'metrics-w', '--backend', 'wasm'], { env: { GAN_TEST_SHARD_DELAY_MS: '5' }, name: 'worker' });
      await waitForEvents(c, 'progress', 2, 30_000);

      const scrape = async () => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
        return parsePrometheus(await res.text());
      };
      const a = await scrape();
      await sleep(1500);
      const b = await scrape();

      for (const name of ['gan_iterations_total', 'gan_shard_results_total', 'gan_compute_seconds_total', 'gan_samples_total', 'gan_network_sent_bytes_total', 'gan_network_received_bytes_total', 'gan_waiting_seconds_total', 'gan_apply_seconds_total']) {
        expect(b.get(name)?.type, name).toBe('counter');
        expect(value(b, name), name).toBeGreaterThan(value(a, name));
      }
      expect(value(b, 'gan_phases_total', { phase: 'D' })).toBeGreaterThan(value(a, 'gan_phases_total', { phase: 'D' }));
      expect(value(b, 'gan_phase_duration_seconds_count', { phase: 'G' })).toBeGreaterThan(value(a, 'gan_phase_duration_seconds_count', { phase: 'G' }));
      expect(value(b, 'gan_iteration')).toBeGreaterThan(value(a, 'gan_iteration'));
      // No counter ever goes down.
      for (const f of b.values()) {
        if (f.type !== 'counter') continue;
        for (const s of f.samples) {
          const before = a.get(f.name)?.samples.find((x) => x.name === s.name && JSON.stringify(x.labels) === JSON.stringify(s.labels));
          if (before) expect(s.value, `${s.name}${JSON.stringify(s.labels)}`).toBeGreaterThanOrEqual(before.value);
        }
      }
      // The project's own metrics are always finite (prom-client's nodejs_eventloop_lag_* may be NaN early on).
      for (const f of b.values()) if (f.name.startsWith('gan_')) for (const s of f.samples) expect(Number.isFinite(s.value), s.name).toBe(true);
      expect(value(b, 'gan_workers')).toBe(1);
      expect(value(b, 'gan_iterations_target')).toBe(400);
      expect(value(b, 'gan_worker_joins_total')).toBe(1);
      expect(value(b, 'gan_warnings_total', { code: 'NO_WORKERS' })).toBeGreaterThanOrEqual(1);
      const dReal = value(b, 'gan_discriminator_output', { input: 'real' });
      expect(dReal).toBeGreaterThan(0);
      expect(dReal).toBeLessThan(1);
      const info = b.get('gan_run_info')!.samples[0];
      expect(info.labels).toMatchObject({ dataset: 'ring8', model: 'mlp2d', backend: 'wasm' });
      expect(info.value).toBe(1);
    },
    90_000,
  );
});
