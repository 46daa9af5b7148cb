/**
 * The terminal progress display (shared/progress-bar.ts, terminalLines in shared/log.ts): the bar
 * and the event lines fit the terminal's width, the bar drops its least useful parts first, and
 * the ETA is hidden until measured, ignores start-up time, and stays close to the truth.
 * Pure functions with synthetic clocks: nothing here depends on timing.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { terminalLines } from '../shared/log.ts';
import { fitLine, formatBar, formatDuration, RateMeter, TerminalStatus, visibleLength, wrapLine, type BarState } from '../shared/progress-bar.ts';

const state = (over: Partial<BarState> = {}): BarState => ({ iteration: 420, iterations: 3000, rate: 11.8, eta: 218.6, lossD: 1.2134, lossG: 0.9312, workers: 2, ...over });

describe('formatBar', () => {
  it('fits every width, and shows counts, percentage, ETA, it/s and losses on 80 columns', () => {
    for (const cols of [20, 30, 40, 60, 80, 100, 120, 200]) {
      for (const s of [state(), state({ iteration: 0, rate: null, eta: null }), state({ iteration: 3000, eta: 0 }), state({ iterations: 1_000_000, iteration: 123_456, eta: 86_400 * 3 })]) {
        const line = formatBar(s, cols);
        expect(visibleLength(line), `${cols} columns: ${line}`).toBeLessThanOrEqual(cols - 1);
      }
    }
    const line = formatBar(state(), 80);
    expect(line).toMatch(/^█+░+ +420\/3000 {2}14% · ETA 3m39s · 12 it\/s · lossD 1\.213 lossG 0\.931/);
    expect(visibleLength(line)).toBe(79);
  });

  it('drops the workers, then the losses, then it/s as the terminal narrows; never the counts or the ETA', () => {
    const wide = formatBar(state(), 120);
    expect(wide).toContain('2 workers');
    const at = (cols: number) => formatBar(state(), cols);
    expect(at(80)).not.toContain('workers');
    expect(at(60)).not.toContain('lossD');
    expect(at(60)).toContain('it/s');
    expect(at(45)).not.toContain('it/s');
    for (const cols of [45, 60, 80, 120]) expect(at(cols)).toMatch(/420\/3000 +14% · ETA 3m39s/);
    // Too narrow for a bar: the text alone, cut.
    expect(at(20)).not.toContain('█');
  });

  it('says "ETA …" until measured and "done" at the end; the bar is full at the end', () => {
    expect(formatBar(state({ rate: null, eta: null }), 80)).toContain('ETA …');
    const done = formatBar(state({ iteration: 3000, eta: 0 }), 80);
    expect(done).toContain('done');
    expect(done).not.toContain('░');
  });
});

describe('RateMeter (the ETA)', () => {
  it('is hidden until 5 iterations and 2 s are measured, and does not count the time before the first iteration', () => {
    const m = new RateMeter();
    // Launch at 0; workers join and warm up: the first iteration completes after 60 s.
    let t = 60_000;
    m.tick(1, t);
    expect(m.eta(120)).toBeNull();
    for (let i = 2; i <= 5; i++) m.tick(i, (t += 1000)); // 4 iterations in 4 s
    expect(m.eta(120)).toBeNull();
    m.tick(6, (t += 1000));
    // 1 it/s from the first iteration on: 114 left, 114 s, not the 3 h a clock from launch would give.
    expect(m.eta(120)).toBeCloseTo(114, 5);
    expect(formatDuration(m.eta(120)!)).toBe('1m54s');
  });

  it('needs 2 s too: a fast start shows no ETA before then', () => {
    const m = new RateMeter();
    for (let i = 1; i <= 30; i++) m.tick(i, i * 50); // 20 it/s for 1.5 s
    expect(m.rate()).toBeNull();
    m.tick(50, 2600);
    expect(m.rate()).toBeCloseTo(49 / 2.55, 5);
  });

  it('stays within 15% of the true remaining time under jitter, and follows a change of speed within its 30 s window', () => {
    const m = new RateMeter();
    let t = 5_000;
    const target = 2000;
    let seed = 7;
    const jitter = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.6; // +-30% per iteration
    const worst: number[] = [];
    for (let i = 1; i <= 1000; i++) {
      t += 100 * (1 + jitter()); // ~10 it/s
      m.tick(i, t);
      const eta = m.eta(target);
      if (i > 50 && eta !== null) worst.push(Math.abs(eta - (target - i) / 10) / ((target - i) / 10));
    }
    expect(Math.max(...worst)).toBeLessThan(0.15);
    for (let i = 1001; i <= 1400; i++) m.tick(i, (t += 200)); // now 5 it/s for 80 s
    expect(m.rate()).toBeCloseTo(5, 1);
    expect(m.eta(target)).toBeCloseTo(600 / 5, 0);
  });

  it('is 0 at the target and starts again when the iteration goes backwards (a new run)', () => {
    const m = new RateMeter();
    for (let i = 1; i <= 10; i++) m.tick(i, i * 1000);
    expect(m.eta(10)).toBe(0);
    m.tick(1, 20_000);
    expect(m.rate()).toBeNull();
  });
});

describe('event lines on a terminal', () => {
  const rec = (over: Record<string, unknown>) => ({ level: 30, time: '2026-12-07T12:01:07.000Z', name: 'coordinator', pid: 1, hostname: 'h', ...over });

  it('fitLine and wrapLine keep within columns - 1', () => {
    const long = 'word '.repeat(100).trim();
    expect(visibleLength(fitLine(long, 80))).toBe(79);
    expect(fitLine(long, 80).endsWith('…')).toBe(true);
    expect(fitLine('short', 80)).toBe('short');
    const wrapped = wrapLine(long, 80, '  ', 20);
    for (const l of wrapped) expect(visibleLength(l)).toBeLessThanOrEqual(79);
    expect(wrapped.join(' ').replace(/\s+/g, ' ').trim()).toBe(long);
    expect(wrapLine(long, 40, '  ', 3)).toHaveLength(3);
    expect(wrapLine('  report:   a/b.html  (curves)', 80)).toEqual(['  report: a/b.html (curves)']);
  });

  it('a progress line is one line of at most 79 columns on 80, without the log ETA (the bar has its own)', () => {
    const lines = terminalLines(
      rec({ event: 'progress', msg: 'progress', iteration: 20, iterations: 3000, epoch: 0, lossD: 1.3862, lossG: 0.6931, dReal: 0.5, dFake: 0.5, workers: 2, samplesPerSec: 812.4, computeS: 1.2, waitingS: 0.1, applyS: 0.05, mbSent: 10.5, mbReceived: 12.25, etaS: 10_980 }),
      80,
    );
    expect(lines).toHaveLength(1);
    expect(visibleLength(lines[0])).toBeLessThanOrEqual(79);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d progress: it 20\/3000/);
    expect(lines[0]).not.toContain('3h03m');
    expect(lines[0]).not.toContain('ETA');
  });

  it('an info line is cut to one line; a warning is wrapped so its remedy stays readable', () => {
    const info = terminalLines(rec({ event: 'worker_joined', msg: 'worker joined', worker: 'box2-1', address: '10.0.0.12:51324', backend: 'wasm', workers: 3, shardsPerPhase: 4, extra: 'x'.repeat(200) }), 80);
    expect(info).toHaveLength(1);
    expect(visibleLength(info[0])).toBeLessThanOrEqual(79);
    expect(info[0]).toMatch(/^\d\d:\d\d:\d\d worker joined {2}worker=box2-1 address=10\.0\.0\.12:51324/);

    const msg = 'no workers connected; waiting for workers to join: start one with gan-worker --coordinator ws://<this host>:8600 (install it with npm install -g http://<this host>:8600/gan-distributed.tgz)';
    const warn = terminalLines(rec({ level: 40, event: 'warning', code: 'NO_WORKERS', msg }), 80, true);
    expect(warn.length).toBeGreaterThan(1);
    for (const l of warn) expect(visibleLength(l)).toBeLessThanOrEqual(79);
    expect(warn[0]).toContain('\x1b[33mWARN\x1b[0m');
    const text = warn.map((l) => l.replace(/\x1b\[[0-9;]*m/g, '')).join(' ').replace(/\s+/g, ' ');
    expect(text).toContain('gan-distributed.tgz)');
    expect(text).toContain('code=NO_WORKERS');
  });

  it("an info message that holds a command is wrapped whole; only its key=value details are cut", () => {
    const url = 'http://box1.example.org:8600/gan-distributed.tgz';
    const sha = 'ab'.repeat(32);
    const lines = terminalLines(rec({ event: 'worker_package', msg: `install a worker: npm install -g ${url} (sha256 ${sha})`, url, sha256: sha, bytes: 619471 }), 80);
    expect(lines.length).toBeGreaterThan(1);
    for (const l of lines) expect(visibleLength(l)).toBeLessThanOrEqual(79);
    const text = lines.join(' ');
    expect(text).toContain(url);
    expect(text).toContain(sha);
  });

  it('on 200 columns nothing is cut', () => {
    const [line] = terminalLines(rec({ event: 'checkpoint_saved', msg: 'checkpoint saved', iteration: 100, dStep: 0, dir: '/runs/x/checkpoints/00000100', ms: 12 }), 200);
    expect(line).toMatch(/checkpoint saved {2}iteration=100 dStep=0 dir=\/runs\/x\/checkpoints\/00000100 ms=12$/);
  });
});

describe('TerminalStatus', () => {
  it('prints event lines above the status line and redraws it after each; clear() removes it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gan-term-'));
    const file = join(dir, 'out');
    const fd = openSync(file, 'w');
    try {
      const term = new TerminalStatus(fd, () => 80);
      term.line('before');
      term.status('[bar 1]', true, 0);
      term.status('[bar 2]', false, 50); // within 100 ms: remembered, not drawn
      term.line('event');
      term.status('[bar 3]', false, 500);
      term.clear();
      closeSync(fd);
      expect(readFileSync(file, 'utf8')).toBe('before\n\r\x1b[K[bar 1]\r\x1b[Kevent\n[bar 2]\r\x1b[K[bar 3]\r\x1b[K');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
