/**
 * CLI conventions (issue 18): every CLI answers -h, --help and --version (exit 0, nothing on
 * stderr); help names each value (<n>, <dir>, <url>, ...), groups the flags, shows examples and
 * fits in 100 columns; `npm start -- --help` shows the demo's own defaults; and the help path
 * loads no tfjs (checked on the import graph, not with a clock).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { COORDINATOR_CLI, DEMO_CLI, DEMO_DEFAULTS, EVAL_CLI, resumeArgs, SAMPLE_CLI, TRAIN_CLI } from '../coordinator/cli-specs.ts';
import { answerInfoFlags, flagsOf, formatHelp, HELP_COLUMNS, parseCli, type CliSpec } from '../shared/cli.ts';
import { ConfigError } from '../shared/errors.ts';
import { WORKER_CLI } from '../worker/cli-spec.ts';
import { cleanup, ROOT, spawnCli, waitForExit, type CliName } from './helpers/processes.ts';

afterEach(cleanup);

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const CLIS: [CliName, CliSpec][] = [
  ['coordinator', COORDINATOR_CLI],
  ['worker', WORKER_CLI],
  ['train', TRAIN_CLI],
  ['sample', SAMPLE_CLI],
  ['eval', EVAL_CLI],
  ['demo', DEMO_CLI],
];

async function run(cli: CliName, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = spawnCli(cli, args);
  const exit = await waitForExit(p, 50_000);
  return { code: exit.code, out: p.lines.join('\n'), err: p.stderr.join('\n') };
}

/** What a help text must hold for its spec: every flag with its value name, groups, examples, 100 columns. */
function checkHelp(text: string, spec: CliSpec): void {
  expect(text).toMatch(/^Usage: /);
  expect(text).not.toContain('<val>');
  for (const line of text.split('\n')) expect(line.length, `over ${HELP_COLUMNS} columns: ${line}`).toBeLessThanOrEqual(HELP_COLUMNS);
  for (const [name, f] of Object.entries(flagsOf(spec))) {
    const line = text.split('\n').find((l) => new RegExp(`^  (-\\w, )?--${name}(\\s|$)`).test(l));
    expect(line, `--${name} is listed`).toBeDefined();
    if (f.type === 'string') expect(line, `--${name} names its value`).toMatch(new RegExp(`--${name} <[^>]+>`));
  }
  expect(text).toMatch(/\nGeneral:\n {2}--backend <name>/);
  expect(text).toContain('  -h, --help');
  expect(text).toContain('  --version');
  expect(text).toMatch(/\nExamples:\n {2}\S/);
}

describe('every CLI answers -h, --help and --version', () => {
  for (const [cli, spec] of CLIS) {
    it(
      `${spec.name}`,
      async () => {
        const [h, help, version] = await Promise.all([run(cli, ['-h']), run(cli, ['--help']), run(cli, ['--version'])]);
        for (const r of [h, help, version]) {
          expect(r.code, r.err).toBe(0);
          expect(r.err).toBe('');
        }
        expect(h.out).toBe(help.out);
        checkHelp(`${help.out}\n`, spec);
        expect(help.out).toBe(formatHelp(spec.usage, spec.tables, spec.examples).trimEnd());
        expect(version.out).toBe(`${spec.name} ${VERSION}`);
      },
      60_000,
    );
  }

  it(
    'help among other flags is still help; a bad flag is still an error (exit 2), also with --help',
    async () => {
      const [withFlags, bad, badHelp] = await Promise.all([
        run('coordinator', ['--run-dir', 'runs/x', '--resume', 'runs/x', '--help']),
        run('worker', ['--coordinater', 'ws://x:1']),
        run('train', ['--help', '--bogus']),
      ]);
      expect(withFlags.code).toBe(0);
      expect(withFlags.out).toMatch(/^Usage: gan-coordinator/);
      expect(bad.code).toBe(2);
      expect(bad.err).toMatch(/^error \[CLI_BAD_ARGS\]: Unknown option '--coordinater'/);
      expect(badHelp.code).toBe(2);
      expect(badHelp.err).toMatch(/^error \[CLI_BAD_ARGS\]: Unknown option '--bogus'/);
    },
    60_000,
  );
});

describe('help texts', () => {
  it(
    '`npm start -- --help` shows the demo defaults (1500 iterations, lr 1e-3, g-ema 0.999), not the generic ones',
    () => {
      const r = spawnSync('npm', ['start', '--silent', '--', '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 50_000 });
      expect(r.status, r.stderr).toBe(0);
      checkHelp(r.stdout, DEMO_CLI);
      const line = (flag: string) => {
        const lines = r.stdout.split('\n');
        const at = lines.findIndex((l) => l.startsWith(`  --${flag} `));
        // A flag's text may wrap: its line and the indented continuation lines.
        let text = lines[at];
        for (let i = at + 1; i < lines.length && /^ {4,}\S/.test(lines[i]); i++) text += ` ${lines[i].trim()}`;
        return text;
      };
      expect(line('iterations')).toContain('(default: 1500)');
      expect(line('lr')).toContain('(default: 1e-3)');
      expect(line('g-ema')).toContain('(default: 0.999)');
      expect(line('label-smoothing')).toContain('(default: 0.1)');
      expect(DEMO_DEFAULTS).toMatchObject({ iterations: '1500', lr: '1e-3', 'g-ema': '0.999' });
      // gan-coordinator shows the generic defaults.
      const coord = formatHelp(COORDINATOR_CLI.usage, COORDINATOR_CLI.tables);
      expect(coord).toMatch(/--iterations <n> +iterations of Algorithm 1 \(default: 1000\)/);
    },
    60_000,
  );

  it(
    'defaults quoted in help equal the constants the CLIs use',
    async () => {
      const { DEFAULT_PERIODIC_SAMPLES } = await import('../trainer/eval/periodic.ts');
      const { DEFAULT_IMAGE_SAMPLES, DEFAULT_MIXTURE_SAMPLES } = await import('../trainer/eval/evaluate.ts');
      expect(flagsOf(COORDINATOR_CLI)['eval-samples'].default).toBe(DEFAULT_PERIODIC_SAMPLES);
      expect(flagsOf(EVAL_CLI).samples.defaultText).toBe(`${DEFAULT_MIXTURE_SAMPLES} for 2-D mixtures, ${DEFAULT_IMAGE_SAMPLES} for images`);
      const { defaultShards } = await import('../shared/config.ts');
      expect(flagsOf(TRAIN_CLI).shards.defaultText).toContain(`${defaultShards(64)} at batch 64`);
      const { DCGAN_DEFAULT_WIDTH, MLP2D_DEFAULT_WIDTH } = await import('../shared/config.ts');
      expect(flagsOf(TRAIN_CLI).width.defaultText).toBe(`${MLP2D_DEFAULT_WIDTH} (mlp2d), ${DCGAN_DEFAULT_WIDTH} (dcgan)`);
    },
    60_000,
  );

  it(
    'wraps long flag texts under their column and keeps "(default: x)" together',
    () => {
      const text = formatHelp('Usage: x', [{ a: { type: 'string', value: '<n>', help: 'word '.repeat(60).trim(), defaultText: '12345' } }]);
      const lines = text.split('\n').filter((l) => l.includes('word') || l.includes('default'));
      expect(lines.length).toBeGreaterThan(2);
      for (const l of lines) expect(l.length).toBeLessThanOrEqual(HELP_COLUMNS);
      expect(lines.slice(1).every((l) => l.startsWith(' '.repeat(lines[0].indexOf('word'))))).toBe(true);
      expect(text).toContain('(default: 12345)');
    },
    60_000,
  );
});

describe('parsing is unchanged', () => {
  it(
    '-h is --help; --resume <path> is --resume-from <path>; unknown flags are CLI_BAD_ARGS',
    () => {
      expect(parseCli(WORKER_CLI, ['-h']).help).toBe(true);
      expect(parseCli(COORDINATOR_CLI, ['--resume', 'runs/a/checkpoints/00000300'])['resume-from']).toBe('runs/a/checkpoints/00000300');
      expect(parseCli(COORDINATOR_CLI, ['--resume', '--iterations', '5'])).toMatchObject({ resume: true, iterations: '5' });
      expect(resumeArgs(['--resume', 'x'])).toEqual(['--resume-from', 'x']);
      expect(() => parseCli(TRAIN_CLI, ['--nope'])).toThrow(ConfigError);
      // answerInfoFlags leaves what it cannot parse to the CLI (which reports it).
      expect(answerInfoFlags(TRAIN_CLI, ['--help', '--nope'])).toBe(false);
      expect(answerInfoFlags(TRAIN_CLI, ['--iterations', '5'])).toBe(false);
    },
    60_000,
  );
});

/** Relative modules and packages reached through static imports from `entry`. */
function staticClosure(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]/gm)) {
      const spec = m[1] ?? m[2];
      if (/^import\s+type\s/.test(m[0].trim()) || /^export\s+type\s/.test(m[0].trim())) continue;
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec));
      else packages.add(spec);
    }
  };
  visit(entry);
  return { files, packages };
}

describe('the help path loads no tfjs', () => {
  it(
    'the bins import only shared/cli.ts and the spec modules before deciding, and those reach no @tensorflow package',
    () => {
      for (const bin of ['gan-coordinator', 'gan-worker', 'gan-train', 'gan-sample', 'gan-eval', 'gan-demo']) {
        const text = readFileSync(join(ROOT, 'bin', `${bin}.js`), 'utf8');
        const imports = [...text.matchAll(/await import\('([^']+)'\)/g)].map((m) => m[1]);
        // The first imports are the light ones; the CLI module comes last, only when needed.
        expect(imports.slice(0, 2), bin).toEqual(['../shared/cli.ts', expect.stringMatching(/cli-specs?\.ts$/)]);
        expect(text, bin).toMatch(/if \(!answerInfoFlags\(\w+, process\.argv\.slice\(2\)\)\) await import\(/);
        for (const spec of imports.slice(0, 2)) {
          const { packages, files } = staticClosure(resolve(ROOT, 'bin', spec));
          expect([...packages].filter((p) => p.startsWith('@tensorflow')), `${bin}: ${[...files].join(', ')}`).toEqual([]);
        }
      }
    },
    60_000,
  );
});
