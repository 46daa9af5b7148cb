/**
 * The deployment files (deploy/: Dockerfile, compose.yaml, k8s/*.yaml, systemd units) and the
 * commands in docs/operations.md, checked without Docker or Kubernetes (neither runs here):
 *
 * - they parse (yaml for compose and Kubernetes; instruction syntax for the Dockerfile; ini
 *   syntax and `systemd-analyze verify` where available for the units);
 * - every gan-coordinator / gan-worker command line in them is accepted by the CLIs' own parser
 *   (parseFlags with the flag tables the CLIs use, imported, not copied);
 * - the pieces agree with each other: ports, service names, secret names and mount paths, the
 *   run directory on the persistent volume, probes on GET /status, and every source directory
 *   and runtime package the CLIs import is in the image.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { COORDINATOR_FLAGS, resumeArgs } from '../coordinator/cli.ts';
import { COMMON_FLAGS, parseFlags, type FlagTable, type FlagValues } from '../shared/cli.ts';
import { GAN_FLAGS } from '../trainer/gan-flags.ts';
import { WORKER_FLAGS } from '../worker/cli.ts';
import { ROOT } from './helpers/processes.ts';
import { HEAVY_TEST_MS } from './helpers/timeouts.ts';

const DEPLOY = join(ROOT, 'deploy');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

// ------------------------------------------------------------------ the CLIs' own parsers

type Cli = 'gan-coordinator' | 'gan-worker';
const TABLES: Record<Cli, FlagTable> = {
  'gan-coordinator': { ...GAN_FLAGS, ...COORDINATOR_FLAGS, ...COMMON_FLAGS },
  'gan-worker': { ...WORKER_FLAGS, ...COMMON_FLAGS },
};

/** 'gan-worker', '/opt/x/bin/gan-worker.js', 'bin/gan-coordinator.js' -> the CLI; null for anything else. */
function cliOf(token: string): Cli | 'other-gan' | null {
  const m = /(?:^|\/)gan-(coordinator|worker|train|sample|demo)(?:\.js)?$/.exec(token);
  if (!m) return null;
  const name = `gan-${m[1]}`;
  return name in TABLES ? (name as Cli) : 'other-gan';
}

interface Command {
  where: string;
  cli: Cli;
  args: string[];
}

/** Parses one command's arguments exactly as the CLI does; a test failure names the file. */
function parseCommand(cmd: Command): FlagValues {
  const argv = cmd.cli === 'gan-coordinator' ? resumeArgs(cmd.args) : cmd.args;
  try {
    return parseFlags(argv, TABLES[cmd.cli]);
  } catch (err) {
    throw new Error(`${cmd.where}: \`${cmd.cli} ${cmd.args.join(' ')}\` is refused by the CLI: ${(err as Error).message}`);
  }
}

/** The command starting at the first gan-* token of an argv (container command + args, ExecStart). */
function commandIn(argv: string[], where: string): Command {
  const at = argv.findIndex((t) => cliOf(t) !== null);
  if (at < 0) throw new Error(`${where}: no gan-coordinator/gan-worker command in ${JSON.stringify(argv)}`);
  const cli = cliOf(argv[at]);
  if (cli === 'other-gan') throw new Error(`${where}: ${argv[at]} has no flag table here; add it to TABLES in test/deploy.test.ts`);
  return { where, cli: cli!, args: argv.slice(at + 1) };
}

/** Shell-ish split: whitespace separates words; quotes and $(...) group; a top-level # starts a comment. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let has = false;
  let quote: string | null = null;
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else cur += c;
      continue;
    }
    if (depth > 0) {
      cur += c;
      if (c === '(') depth++;
      else if (c === ')') depth--;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === '$' && line[i + 1] === '(') {
      cur += '$(';
      i++;
      depth = 1;
      has = true;
    } else if (/\s/.test(c)) {
      if (has) words.push(cur);
      cur = '';
      has = false;
    } else if (c === '#' && !has) {
      break;
    } else if (c === ';') {
      if (has) words.push(cur);
      words.push(';');
      cur = '';
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (has) words.push(cur);
  return words;
}

const SHELL_OPERATORS = new Set(['|', '||', '&&', ';', '&', '>', '>>', '2>&1', '<']);

/**
 * The gan-* commands of one shell line, in command position only: after environment assignments,
 * sudo/exec/npx/node, or as the command of `docker run ... <gan-distributed image>`.
 * (`kubectl scale deployment/gan-worker`, `journalctl -u gan-coordinator` are not commands.)
 */
function commandsInLine(words: string[], where: string): Command[] {
  const out: Command[] = [];
  const segments: string[][] = [[]];
  for (const w of words) {
    if (SHELL_OPERATORS.has(w)) segments.push([]);
    else segments[segments.length - 1].push(w);
  }
  for (const seg of segments) {
    let i = 0;
    while (i < seg.length && (/^[A-Z_][A-Z0-9_]*=/.test(seg[i]) || /^(do|then|else|sudo|exec|nohup|npx|(.*\/)?node)$/.test(seg[i]))) i++;
    if (seg[i] === 'docker' && seg[i + 1] === 'run') {
      const image = seg.findIndex((w, j) => j > i && /(^|\/)gan-distributed(:[\w.-]+)?$/.test(w));
      if (image < 0) continue;
      i = image + 1;
    }
    const cli = i < seg.length ? cliOf(seg[i]) : null;
    if (cli === 'other-gan') throw new Error(`${where}: ${seg[i]} has no flag table here; add it to TABLES in test/deploy.test.ts`);
    if (cli) out.push({ where, cli, args: seg.slice(i + 1) });
  }
  return out;
}

// ------------------------------------------------------------------ Dockerfile

interface Instruction {
  line: number;
  op: string;
  args: string;
}

function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i];
    if (/^\s*(#|$)/.test(line)) continue;
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      line = line.replace(/\\\s*$/, ' ');
      // Comment lines inside a continued instruction are dropped by Docker too.
      do i++;
      while (i < lines.length && /^\s*#/.test(lines[i]));
      line += lines[i] ?? '';
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: not an instruction: ${line}`);
    out.push({ line: start + 1, op: m[1].toUpperCase(), args: m[2].trim() });
  }
  return out;
}

const DOCKER_OPS = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL']);

/** Files the CLIs reach through relative imports from bin/*.js (static, side-effect and dynamic). */
function importClosure(entries: string[]): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = entries.map((e) => join(ROOT, e));
  const specRe = /(?:^|[^.\w])(?:import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(specRe)) {
      if (m[1]) continue; // `import type ... from`: erased
      const spec = m[2] ?? m[3];
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        if (!existsSync(target)) throw new Error(`${relative(ROOT, file)} imports ${spec}, which does not exist`);
        if (/\.(ts|js|mjs)$/.test(target)) queue.push(target);
      } else if (!spec.startsWith('node:') && !builtinModules.includes(spec)) {
        packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
      }
    }
  }
  return { files, packages };
}

describe('deploy/Dockerfile', () => {
  const text = read('deploy/Dockerfile');
  const ins = dockerInstructions(text);
  const stages = ins.filter((i) => i.op === 'FROM').map((i) => ({ line: i.line, image: i.args.split(/\s+/)[0], name: /\sAS\s+(\S+)/i.exec(i.args)?.[1] }));
  const finalStart = ins.findIndex((i) => i.line === stages[stages.length - 1].line);
  const final = ins.slice(finalStart);

  it('is multi-stage, uses only known instructions, and installs with a plain npm ci (optional dependencies included)', () => {
    for (const i of ins) expect(DOCKER_OPS.has(i.op), `line ${i.line}: ${i.op}`).toBe(true);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.image, `FROM at line ${s.line}`).toMatch(/^node:\$\{NODE_VERSION\}-bookworm-slim$|^node:20/);
    // Debian, not Alpine: tfjs-node's prebuilt libtensorflow needs glibc.
    expect(text).not.toMatch(/alpine/i);
    const names = new Set(stages.map((s) => s.name).filter(Boolean));
    for (const c of ins.filter((i) => i.op === 'COPY' && /--from=/.test(i.args))) {
      expect(names.has(/--from=(\S+)/.exec(c.args)![1]), `line ${c.line}: COPY --from a stage that exists`).toBe(true);
    }
    const installs = ins.filter((i) => i.op === 'RUN' && /\bnpm (ci|install)\b/.test(i.args));
    expect(installs).toHaveLength(1);
    expect(installs[0].args).toMatch(/\bnpm ci\b/);
    expect(installs[0].args).not.toMatch(/--omit[= ]optional|--no-optional|--ignore-scripts|--omit[= ]dev[^&]*--omit[= ]optional/);
    // The lock file goes in with package.json, or npm ci refuses.
    const copyManifests = ins.find((i) => i.op === 'COPY' && /package-lock\.json/.test(i.args));
    expect(copyManifests && copyManifests.line < installs[0].line).toBe(true);
  });

  it('copies every source directory and installs every runtime package the CLIs import', () => {
    const copied = final.filter((i) => i.op === 'COPY' && !/--from=/.test(i.args)).flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    for (const src of copied) expect(existsSync(join(ROOT, src)), `COPY ${src}`).toBe(true);
    const bins = readdirSync(join(ROOT, 'bin')).filter((f) => f.endsWith('.js'));
    expect(bins).toEqual(expect.arrayContaining(['gan-coordinator.js', 'gan-worker.js']));
    const { files, packages } = importClosure(bins.map((f) => `bin/${f}`));
    const topDirs = new Set([...files].map((f) => relative(ROOT, f).split(sep)[0]));
    for (const dir of topDirs) expect(copied, `the CLIs import from ${dir}/`).toContain(dir);
    expect(copied).toContain('package.json'); // "type": "module"
    const pkg = JSON.parse(read('package.json')) as Record<string, Record<string, string> | undefined>;
    const runtime = { ...pkg.dependencies, ...pkg.optionalDependencies };
    for (const p of packages) expect(Object.keys(runtime), `${p} is imported at run time but would be omitted by --omit=dev`).toContain(p);
    // And the build context keeps them: the Dockerfile's own ignore file must not exclude them.
    const ignored = read('deploy/Dockerfile.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const src of copied) expect(ignored, `${src} is excluded from the build context`).not.toContain(src);
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'runs', '.git']));
  });

  it('runs unprivileged, exposes the coordinator port, puts the CLIs on PATH, and its CMD is a valid command', () => {
    const users = final.filter((i) => i.op === 'USER').map((i) => i.args);
    expect(users.length).toBeGreaterThan(0);
    expect(users[users.length - 1]).not.toMatch(/^(root|0)(:|$)/);
    expect(final.filter((i) => i.op === 'EXPOSE').map((i) => i.args)).toEqual(['8600']);
    const links = [...text.matchAll(/for cli in ([^;]+); do ln -s "\/app\/bin\/\$cli\.js"/g)].flatMap((m) => m[1].trim().split(/\s+/));
    // Every CLI package.json publishes is on the image's PATH.
    const published = Object.keys((JSON.parse(read('package.json')) as { bin: Record<string, string> }).bin);
    expect(published).toEqual(expect.arrayContaining(['gan-coordinator', 'gan-worker']));
    expect(links).toEqual(expect.arrayContaining(published));
    for (const cli of links) expect(existsSync(join(ROOT, 'bin', `${cli}.js`)), cli).toBe(true);
    const cmd = final.find((i) => i.op === 'CMD')!;
    const argv = JSON.parse(cmd.args) as string[];
    parseCommand(commandIn(argv, 'Dockerfile CMD'));
    // The build-time smoke test runs both CLIs' --help.
    const smoke = final.filter((i) => i.op === 'RUN').map((i) => i.args).join(' ');
    for (const cli of ['gan-coordinator', 'gan-worker']) {
      const m = new RegExp(`${cli} (--help)`).exec(smoke);
      expect(m, `${cli} --help in a RUN`).not.toBeNull();
      parseCommand({ where: 'Dockerfile RUN', cli: cli as Cli, args: ['--help'] });
    }
    expect(final.find((i) => i.op === 'STOPSIGNAL')?.args).toBe('SIGTERM');
  });
});

// ------------------------------------------------------------------ compose

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  ports?: string[];
  volumes?: string[];
  secrets?: string[];
  container_name?: string;
  healthcheck?: { test: string[] };
  restart?: string;
  stop_signal?: string;
  stop_grace_period?: string;
}

describe('deploy/compose.yaml', () => {
  const compose = parseYaml(read('deploy/compose.yaml'), { merge: true }) as {
    services: Record<string, ComposeService>;
    secrets: Record<string, { file?: string }>;
    volumes: Record<string, unknown>;
  };
  const { coordinator, worker } = compose.services;

  it('parses; both services build this repository with deploy/Dockerfile into one image', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['coordinator', 'worker']);
    for (const [name, s] of Object.entries(compose.services)) {
      expect(s.image, name).toBe(`gan-distributed:${(JSON.parse(read('package.json')) as { version: string }).version}`);
      expect(s.build, name).toBeDefined();
      const context = resolve(DEPLOY, s.build!.context);
      expect(context).toBe(ROOT);
      expect(existsSync(join(context, s.build!.dockerfile)), name).toBe(true);
      expect(Array.isArray(s.command), `${name}: command as a list (exec form)`).toBe(true);
    }
  });

  it('every command and flag is one the CLIs accept, and the pieces agree', () => {
    const c = parseCommand(commandIn(coordinator.command!, 'compose coordinator'));
    const w = parseCommand(commandIn(worker.command!, 'compose worker'));
    expect(commandIn(coordinator.command!, '').cli).toBe('gan-coordinator');
    expect(commandIn(worker.command!, '').cli).toBe('gan-worker');

    // Port: published = listened on = the one workers and the health check use.
    expect(c.host).toBe('0.0.0.0');
    expect(coordinator.ports).toEqual([`${c.port}:${c.port}`]);
    const url = new URL(String(w.coordinator));
    expect(url.protocol).toBe('ws:');
    expect(url.hostname).toBe('coordinator');
    expect(url.port).toBe(String(c.port));
    expect(coordinator.healthcheck!.test.join(' ')).toContain(`http://127.0.0.1:${c.port}/status`);

    // Token: one compose secret, read by both through --token-file.
    expect(Object.keys(compose.secrets)).toEqual(['gan_token']);
    expect(compose.secrets.gan_token.file).toBeTruthy();
    for (const [s, v] of [
      [coordinator, c],
      [worker, w],
    ] as const) {
      expect(s.secrets).toEqual(['gan_token']);
      expect(v['token-file']).toBe('/run/secrets/gan_token');
    }

    // Run directory on the named volume; restarts resume.
    const [volume, mount] = coordinator.volumes![0].split(':');
    expect(Object.keys(compose.volumes)).toContain(volume);
    expect(String(c['run-dir']).startsWith(`${mount}/`)).toBe(true);
    expect(c['auto-resume']).toBe(true);
    expect(coordinator.stop_signal).toBe('SIGTERM');
  });

  it('workers can be scaled: no fixed name, no published port', () => {
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports).toBeUndefined();
  });
});

// ------------------------------------------------------------------ Kubernetes

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: any;
  stringData?: Record<string, string>;
  resources?: string[];
}

describe('deploy/k8s', () => {
  const dir = join(DEPLOY, 'k8s');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  const objects: (K8sObject & { file: string })[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${f}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const v = doc.toJS() as K8sObject | null;
      if (v) objects.push({ ...v, file: f });
    }
  }
  const one = (kind: string, name?: string) => {
    const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
    expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
    return found[0];
  };
  const job = one('Job');
  const dep = one('Deployment');
  const secret = one('Secret');
  const kustomization = one('Kustomization');
  const podOf = (o: K8sObject) => o.spec.template.spec;
  const containerOf = (o: K8sObject) => {
    const cs = podOf(o).containers as any[];
    expect(cs).toHaveLength(1);
    return cs[0];
  };
  const argvOf = (o: K8sObject) => [...(containerOf(o).command ?? []), ...(containerOf(o).args ?? [])].map(String);
  const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) => Object.entries(selector).every(([k, v]) => labels[k] === v);
  /** Where a volume-mounted file comes from: the volume's definition and the path inside it. */
  const mountOf = (o: K8sObject, path: string) => {
    const mounts = containerOf(o).volumeMounts as { name: string; mountPath: string }[];
    const m = mounts.find((v) => path.startsWith(`${v.mountPath}/`));
    expect(m, `${path} is on a mounted volume`).toBeDefined();
    const vol = (podOf(o).volumes ?? []).find((v: { name: string }) => v.name === m!.name);
    return { mount: m!, volume: vol, rest: path.slice(m!.mountPath.length + 1) };
  };

  it('parses; every object has apiVersion, kind and a name; kustomization lists the workload files', () => {
    for (const o of objects) {
      expect(o.apiVersion, o.file).toBeTruthy();
      expect(o.kind, o.file).toBeTruthy();
      if (o.kind !== 'Kustomization') expect(o.metadata?.name, o.file).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    expect(new Set(kustomization.resources)).toEqual(new Set(['coordinator.yaml', 'worker.yaml']));
    for (const r of kustomization.resources!) expect(files).toContain(r);
    // The example Secret carries no usable token: an empty one makes the coordinator refuse to start.
    expect(secret.stringData?.token).toBe('');
  });

  it('every command and flag is one the CLIs accept', () => {
    const c = parseCommand(commandIn(argvOf(job), 'k8s Job'));
    const w = parseCommand(commandIn(argvOf(dep), 'k8s Deployment'));
    expect(commandIn(argvOf(job), '').cli).toBe('gan-coordinator');
    expect(commandIn(argvOf(dep), '').cli).toBe('gan-worker');
    expect(c['auto-resume']).toBe(true);
    expect(c.host).toBe('0.0.0.0');
    expect(w.stay).toBe(true);
  });

  it('coordinator: a Job (a finite run ends, it is not restarted), one pod, run directory on a persistent volume, probes on GET /status of its port, a Service in front', () => {
    const c = parseCommand(commandIn(argvOf(job), 'k8s Job'));
    expect(job.apiVersion).toBe('batch/v1');
    // A StatefulSet (or Deployment) restarts a coordinator whose run is over, forever.
    expect(objects.filter((o) => o.kind === 'StatefulSet')).toHaveLength(0);
    expect(job.spec.parallelism).toBe(1);
    expect(job.spec.completions).toBe(1);
    // A crash restarts the container in place and --auto-resume continues; exit 0 completes the Job.
    expect(podOf(job).restartPolicy).toBe('OnFailure');
    expect(c['auto-resume']).toBe(true);
    expect(job.spec.backoffLimit).toBeGreaterThanOrEqual(1);
    // Only the Job's own (generated) selector: a hand-written one would need manualSelector.
    expect(job.spec.selector).toBeUndefined();

    const container = containerOf(job);
    const port = (container.ports as { name: string; containerPort: number }[]).find((p) => p.containerPort === Number(c.port));
    expect(port, `containerPort ${c.port}`).toBeDefined();
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
      const p = container[probe];
      expect(p?.httpGet?.path, probe).toBe('/status');
      expect([port!.name, port!.containerPort], probe).toContain(p.httpGet.port);
    }

    // The run directory (checkpoints) outlives the pod: what --auto-resume resumes from.
    const run = mountOf(job, String(c['run-dir']));
    const claim = one('PersistentVolumeClaim', run.volume?.persistentVolumeClaim?.claimName);
    expect(claim.spec.accessModes).toContain('ReadWriteOnce');
    const token = mountOf(job, String(c['token-file']));
    expect(token.volume.secret.secretName).toBe(secret.metadata.name);
    expect(Object.keys(secret.stringData!)).toContain(token.rest);

    // The client-facing Service selects the coordinator pod and forwards the port.
    const services = objects.filter((o) => o.kind === 'Service');
    expect(services).toHaveLength(1);
    const svc = services[0];
    expect(svc.spec.clusterIP).not.toBe('None');
    expect(matches(svc.spec.selector, job.spec.template.metadata.labels)).toBe(true);
    const sp = (svc.spec.ports as { port: number; targetPort: string | number }[])[0];
    expect([port!.name, port!.containerPort]).toContain(sp.targetPort);
    expect(podOf(job).terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
  });

  it('one image tag everywhere: the manifests, compose, the Dockerfile and the docs build and pull gan-distributed:<package version>', () => {
    const image = `gan-distributed:${(JSON.parse(read('package.json')) as { version: string }).version}`;
    for (const o of [job, dep]) expect(containerOf(o).image, `${o.kind} ${o.metadata.name}`).toBe(image);
    // A pinned tag: IfNotPresent is then safe (a node never runs a stale :latest).
    for (const o of [job, dep]) expect(containerOf(o).imagePullPolicy).toBe('IfNotPresent');
    const compose = parseYaml(read('deploy/compose.yaml'), { merge: true }) as { services: Record<string, ComposeService> };
    for (const [name, s] of Object.entries(compose.services)) expect(s.image, `compose ${name}`).toBe(image);
    for (const file of ['deploy/Dockerfile', 'deploy/compose.yaml', ...files.map((f) => `deploy/k8s/${f}`), 'docs/operations.md', 'README.md']) {
      const text = read(file);
      // Every tagged reference names the one tag (placeholders like <new> aside)...
      for (const m of text.matchAll(/(?<![\w./-])gan-distributed:([\w.-]+)/g)) expect(m[0], file).toBe(image);
      // ...and every docker build / docker run line uses a tagged reference.
      for (const line of text.split('\n').filter((l) => /\bdocker (build|run)\b/.test(l))) {
        expect(line, `${file}: ${line.trim()}`).toContain(image);
      }
    }
  });

  it('workers: a Deployment that reaches the coordinator Service with the same token Secret', () => {
    const c = parseCommand(commandIn(argvOf(job), 'k8s Job'));
    const w = parseCommand(commandIn(argvOf(dep), 'k8s Deployment'));
    expect(dep.spec.replicas).toBeGreaterThanOrEqual(1);
    expect(matches(dep.spec.selector.matchLabels, dep.spec.template.metadata.labels)).toBe(true);
    expect(matches(one('Service', 'gan-coordinator').spec.selector, dep.spec.template.metadata.labels)).toBe(false);
    const url = new URL(String(w.coordinator));
    const svc = one('Service', url.hostname);
    expect(svc.spec.clusterIP).not.toBe('None');
    expect((svc.spec.ports as { port: number }[]).map((p) => String(p.port))).toContain(url.port);
    expect(String(c.port)).toBe(url.port);
    const token = mountOf(dep, String(w['token-file']));
    expect(token.volume.secret.secretName).toBe(secret.metadata.name);
    expect(Object.keys(secret.stringData!)).toContain(token.rest);
    // One core per wasm worker.
    expect(String(containerOf(dep).resources.requests.cpu)).toBe('1');
  });
});

// ------------------------------------------------------------------ systemd

type Unit = Record<string, [string, string][]>;

function parseUnit(text: string, file: string): Unit {
  const unit: Unit = {};
  let section: string | null = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) return;
    const s = /^\[([A-Za-z]+)\]$/.exec(line);
    if (s) {
      section = s[1];
      unit[section] ??= [];
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!kv || !section) throw new Error(`${file}:${i + 1}: not 'Key=value' inside a [Section]: ${raw}`);
    if (line.endsWith('\\')) throw new Error(`${file}:${i + 1}: continued lines are not used in these units`);
    unit[section].push([kv[1], kv[2]]);
  });
  return unit;
}

const get = (u: Unit, section: string, key: string) => (u[section] ?? []).filter(([k]) => k === key).map(([, v]) => v);

describe('deploy/systemd', () => {
  const dir = join(DEPLOY, 'systemd');
  const coordinator = parseUnit(readFileSync(join(dir, 'gan-coordinator.service'), 'utf8'), 'gan-coordinator.service');
  const worker = parseUnit(readFileSync(join(dir, 'gan-worker@.service'), 'utf8'), 'gan-worker@.service');
  /** %d (credentials directory), %H, %i are systemd specifiers; to the CLI they are just values. */
  const execOf = (u: Unit, name: string) => {
    const exec = get(u, 'Service', 'ExecStart');
    expect(exec, name).toHaveLength(1);
    const argv = shellWords(exec[0]);
    expect(argv[0], `${name}: an absolute interpreter path`).toBe('/usr/bin/node');
    return commandIn(argv, name);
  };
  const credentials = (u: Unit) => new Map(get(u, 'Service', 'LoadCredential').map((v) => v.split(':') as [string, string]));

  it('have [Unit], [Service] and [Install] sections with Key=value lines', () => {
    for (const [name, u] of [
      ['gan-coordinator.service', coordinator],
      ['gan-worker@.service', worker],
    ] as const) {
      expect(Object.keys(u).sort(), name).toEqual(['Install', 'Service', 'Unit']);
      expect(get(u, 'Install', 'WantedBy'), name).toEqual(['multi-user.target']);
      expect(get(u, 'Service', 'Restart'), name).toEqual(['on-failure']);
      // Exit 2 is a configuration error or a refusal: restarting would fail the same way.
      expect(get(u, 'Service', 'RestartPreventExitStatus'), name).toEqual(['2']);
      expect(get(u, 'Service', 'KillSignal'), name).toEqual(['SIGTERM']);
    }
  });

  it('every command and flag is one the CLIs accept; secrets come from LoadCredential', () => {
    const cc = execOf(coordinator, 'gan-coordinator.service');
    const wc = execOf(worker, 'gan-worker@.service');
    expect(cc.cli).toBe('gan-coordinator');
    expect(wc.cli).toBe('gan-worker');
    const c = parseCommand(cc);
    const w = parseCommand(wc);
    expect(c['auto-resume']).toBe(true);
    expect(w.stay).toBe(true);
    expect(existsSync(join(ROOT, relative('/opt/gan-distributed', shellWords(get(coordinator, 'Service', 'ExecStart')[0])[1])))).toBe(true);
    expect(existsSync(join(ROOT, relative('/opt/gan-distributed', shellWords(get(worker, 'Service', 'ExecStart')[0])[1])))).toBe(true);

    // Every file flag points into the credentials directory, at a credential the unit loads.
    for (const [u, v, flags] of [
      [coordinator, c, ['token-file', 'tls-cert', 'tls-key']],
      [worker, w, ['token-file', 'ca']],
    ] as const) {
      const creds = credentials(u);
      for (const flag of flags) {
        const value = String(v[flag]);
        expect(value, `--${flag}`).toMatch(/^%d\/[\w-]+$/);
        expect(creds.has(value.slice(3)), `--${flag} ${value}`).toBe(true);
      }
    }
    // The run directory is in the unit's StateDirectory.
    const state = get(coordinator, 'Service', 'StateDirectory')[0];
    expect(String(c['run-dir']).startsWith(`/var/lib/${state}/`)).toBe(true);

    // The worker's URL comes from its EnvironmentFile (GAN_COORDINATOR), a wss:// URL since it passes --ca.
    expect(w.coordinator).toBeUndefined();
    expect(get(worker, 'Service', 'EnvironmentFile')).toEqual(['/etc/gan/worker.env']);
    const env = Object.fromEntries(
      readFileSync(join(dir, 'gan-worker.env'), 'utf8')
        .split('\n')
        .filter((l) => /^\w+=/.test(l))
        .map((l) => l.split(/=(.*)/s).slice(0, 2)),
    );
    expect(new URL(env.GAN_COORDINATOR).protocol).toBe('wss:');
    expect(new URL(env.GAN_COORDINATOR).port).toBe(String(c.port));
  });

  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  const canVerify = analyze.status === 0 && existsSync('/usr/bin/node');
  it.skipIf(!canVerify)('pass `systemd-analyze verify` without warnings (unknown keys, bad values)', () => {
    for (const file of ['gan-coordinator.service', 'gan-worker@.service']) {
      const r = spawnSync('systemd-analyze', ['verify', join(dir, file)], { encoding: 'utf8' });
      // Only lines about our unit: verify also reports on units of the machine it runs on.
      const ours = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.includes('gan-'));
      expect(ours, file).toEqual([]);
      expect(r.status, `${file}: ${r.stderr}`).toBe(0);
    }
  }, HEAVY_TEST_MS);
  if (!canVerify) console.warn('[deploy.test] systemd-analyze (or /usr/bin/node) not available: skipped `systemd-analyze verify` of the units');
});

// ------------------------------------------------------------------ docs

describe('docs/operations.md', () => {
  const text = read('docs/operations.md');

  it('every gan-coordinator / gan-worker command in its code blocks is one the CLIs accept', () => {
    const commands: Command[] = [];
    const blocks = [...text.matchAll(/^```[a-z]*\n([\s\S]*?)^```/gm)].map((m) => m[1]);
    for (const block of blocks) {
      for (const line of block.replace(/\\\n\s*/g, ' ').split('\n')) {
        commands.push(...commandsInLine(shellWords(line), `docs/operations.md: ${line.trim()}`));
      }
    }
    expect(commands.filter((c) => c.cli === 'gan-coordinator').length).toBeGreaterThanOrEqual(3);
    expect(commands.filter((c) => c.cli === 'gan-worker').length).toBeGreaterThanOrEqual(3);
    for (const c of commands) parseCommand(c);
  });

  it('refers only to deploy files that exist', () => {
    const paths = [...text.matchAll(/\bdeploy\/[\w./@-]+[\w@]/g)].map((m) => m[0]).filter((p) => p !== 'deploy/secrets' && !p.startsWith('deploy/secrets/'));
    expect(paths.length).toBeGreaterThan(5);
    for (const p of paths) expect(existsSync(join(ROOT, p)), p).toBe(true);
  });
});

// ------------------------------------------------------------------ the extractor itself

describe('the command extraction these checks rely on', () => {
  it('splits like a shell and finds a bad flag', () => {
    expect(shellWords(`GAN_TOKEN=$(cat /etc/gan/token) npx gan-worker --coordinator 'wss://h:8600' --id "a b" # comment`)).toEqual([
      'GAN_TOKEN=$(cat /etc/gan/token)',
      'npx',
      'gan-worker',
      '--coordinator',
      'wss://h:8600',
      '--id',
      'a b',
    ]);
    expect(() => parseCommand({ where: 'x', cli: 'gan-worker', args: ['--coordinator', 'ws://h:1', '--tls-cert', 'c.pem'] })).toThrow(/refused by the CLI.*tls-cert/);
    expect(() => parseCommand({ where: 'x', cli: 'gan-coordinator', args: ['--port', 'eighty'] })).toThrow(/whole number/);
    expect(parseCommand({ where: 'x', cli: 'gan-coordinator', args: ['--resume', '/runs/x/checkpoints/00000300'] })['resume-from']).toBe('/runs/x/checkpoints/00000300');
    expect(commandsInLine(shellWords('kubectl scale deployment/gan-worker --replicas=8 && journalctl -u gan-coordinator -f'), 'x')).toEqual([]);
    expect(commandsInLine(shellWords('docker run --rm -e GAN_TOKEN gan-distributed:0.1.0 gan-worker --stay | tee log'), 'x')).toEqual([{ where: 'x', cli: 'gan-worker', args: ['--stay'] }]);
    expect(commandsInLine(shellWords('GAN_TOKEN=x npx gan-coordinator --resume; node bin/gan-worker.js --id a'), 'x').map((c) => c.cli)).toEqual(['gan-coordinator', 'gan-worker']);
    // The Dockerfile symlinks bin/*.js onto PATH: they must be executable.
    expect(statSync(join(ROOT, 'bin', 'gan-worker.js')).mode & 0o111).not.toBe(0);
  });
});
