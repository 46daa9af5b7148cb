/**
 * The coordinator serves its own package as an npm tarball, so a worker machine needs only Node
 * and the coordinator's address:
 *
 *   npm install -g http://<coordinator>:8600/gan-distributed.tgz
 *   gan-worker --coordinator ws://<coordinator>:8600
 *
 * No name in a public registry is involved (the package is private; `npx gan-worker` outside a
 * checkout would ask the registry for someone else's `gan-worker`). Its dependencies still come
 * from the npm registry (or npm's cache), by the ranges in package.json.
 *
 * The tarball is built in process with `npm pack`'s layout (a `package/` prefix, package.json's
 * `files` plus package.json and README, npm's always-ignored names left out) and is reproducible:
 * entries sorted, every mtime npm's fixed 1985-10-26, modes 0644 (0755 for package.json's bins),
 * no owner names, so the same code always gives the same sha256, also when the coordinator itself
 * runs from a package installed from such a tarball. test/install-from-coordinator.test.ts checks
 * the file list against `npm pack --dry-run`.
 *
 * Routes: GET /gan-distributed.tgz (the tarball), /gan-distributed.tgz.sha256 (`sha256sum -c`
 * format), /install.json (url path, sha256, bytes, the install command; the dashboard shows it).
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { Logger } from '../shared/log.ts';
import type { Route } from './http.ts';

export const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const TARBALL_PATH = '/gan-distributed.tgz';

/** npm's fixed mtime for packed files (1985-10-26T08:15:00Z), so the bytes depend on content only. */
const NPM_MTIME = 499162500;

/** Names npm pack always leaves out (npm-packlist's defaults), wherever they are. */
const ALWAYS_IGNORED = [/^\.git$/, /^\.svn$/, /^\.hg$/, /^CVS$/, /^node_modules$/, /^\.npmrc$/, /^\.DS_Store$/, /^\._/, /\.orig$/, /^\..*\.swp$/, /^npm-debug\.log$/, /^\.gitignore$/, /^\.npmignore$/];
/** npm pack always includes these from the package root (when present). */
const ALWAYS_INCLUDED = /^(package\.json|readme(\..*)?|license(\..*)?|licence(\..*)?)$/i;

export interface Tarball {
  bytes: Buffer;
  sha256: string;
  /** Paths inside the package, sorted ('package/' prefix not included). */
  files: string[];
  name: string;
  version: string;
}

interface PackageJson {
  name: string;
  version: string;
  files?: string[];
  bin?: Record<string, string> | string;
}

/** The files `npm pack` puts in the tarball: package.json's `files` (plain paths) and the always-included ones. */
export function packageFiles(root = PACKAGE_ROOT): string[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;
  if (!Array.isArray(pkg.files)) throw new Error(`${join(root, 'package.json')} has no "files" field: refusing to pack the whole directory`);
  const out = new Set<string>();
  const walk = (rel: string) => {
    const name = posix.basename(rel);
    if (ALWAYS_IGNORED.some((re) => re.test(name))) return;
    const abs = join(root, rel);
    let st;
    try {
      st = lstatSync(abs);
    } catch {
      return;
    }
    if (st.isDirectory()) for (const child of readdirSync(abs)) walk(posix.join(rel, child));
    else if (st.isFile()) out.add(rel);
  };
  for (const entry of pkg.files) {
    if (/[*?[\]{}!]/.test(entry)) throw new Error(`package.json "files" entry ${entry}: globs are not supported here, list plain paths`);
    walk(posix.normalize(entry.replace(/\/+$/, '')));
  }
  for (const name of readdirSync(root)) if (ALWAYS_INCLUDED.test(name) && lstatSync(join(root, name)).isFile()) out.add(name);
  return [...out].sort();
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

/** One ustar header (512 bytes) for a regular file. */
function tarHeader(path: string, size: number, mode: number): Buffer {
  const h = Buffer.alloc(512);
  let name = path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    let i = path.lastIndexOf('/');
    while (i > 0 && (Buffer.byteLength(path.slice(i + 1)) > 100 || Buffer.byteLength(path.slice(0, i)) > 155)) i = path.lastIndexOf('/', i - 1);
    if (i <= 0) throw new Error(`path too long for a tar header: ${path}`);
    prefix = path.slice(0, i);
    name = path.slice(i + 1);
  }
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100, 8, 'ascii');
  h.write(octal(0, 8), 108, 8, 'ascii');
  h.write(octal(0, 8), 116, 8, 'ascii');
  h.write(octal(size, 12), 124, 12, 'ascii');
  h.write(octal(NPM_MTIME, 12), 136, 12, 'ascii');
  h.write('        ', 148, 8, 'ascii');
  h.write('0', 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return h;
}

/** Packs the package at `root` (npm pack's layout; reproducible bytes). */
export function buildTarball(root = PACKAGE_ROOT): Tarball {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;
  const bins = new Set(Object.values(typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : (pkg.bin ?? {})).map((p) => posix.normalize(p)));
  const files = packageFiles(root);
  const parts: Buffer[] = [];
  for (const rel of files) {
    const body = readFileSync(join(root, ...rel.split('/')));
    parts.push(tarHeader(`package/${rel}`, body.length, bins.has(rel) ? 0o755 : 0o644), body);
    const pad = (512 - (body.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024));
  const bytes = gzipSync(Buffer.concat(parts), { level: 9 });
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), files, name: pkg.name, version: pkg.version };
}

/** Built tarballs per package root: one per process, however many coordinators it runs (tests run many). */
const built = new Map<string, { tarball: Tarball | null; error: string | null }>();

/** The tarball, built once on first use (announce() at listen, or the first request) and kept in memory. */
export class WorkerPackage {
  constructor(private readonly root = PACKAGE_ROOT) {}

  private get error(): string | null {
    return built.get(this.root)?.error ?? null;
  }

  get(): Tarball | null {
    let entry = built.get(this.root);
    if (!entry) {
      try {
        entry = { tarball: buildTarball(this.root), error: null };
      } catch (err) {
        entry = { tarball: null, error: err instanceof Error ? err.message : String(err) };
      }
      built.set(this.root, entry);
    }
    return entry.tarball;
  }

  /**
   * Builds the tarball and logs `worker_package` with its URL, size and sha256 (or the
   * WORKER_PACKAGE_UNAVAILABLE warning). `base` is the coordinator's HTTP origin as workers see it.
   */
  announce(log: Logger, addr: { host: string; port: number; tls: boolean }): void {
    const t0 = performance.now();
    const t = this.get();
    if (!t) {
      log.warn({ event: 'warning', code: 'WORKER_PACKAGE_UNAVAILABLE', reason: this.error }, `cannot serve ${TARBALL_PATH}: ${this.error}`);
      return;
    }
    const host = addr.host === '0.0.0.0' || addr.host === '::' ? hostname() : addr.host.includes(':') ? `[${addr.host}]` : addr.host;
    const url = `${addr.tls ? 'https' : 'http'}://${host}:${addr.port}${TARBALL_PATH}`;
    log.info(
      { event: 'worker_package', url, sha256: t.sha256, bytes: t.bytes.length, files: t.files.length, version: t.version, ms: Math.round(performance.now() - t0) },
      `install a worker: npm install -g ${url} (sha256 ${t.sha256})`,
    );
  }

  /** Serves /gan-distributed.tgz, /gan-distributed.tgz.sha256 and /install.json. */
  readonly route: Route = {
    path: [TARBALL_PATH, `${TARBALL_PATH}.sha256`, '/install.json'],
    handle: (_req, _res, url, reply) => {
      const t = this.get();
      if (!t) return reply.send(503, 'text/plain; charset=utf-8', `the worker package is unavailable: ${this.error}\n`);
      const path = url.pathname;
      if (path === TARBALL_PATH) {
        reply.send(200, 'application/gzip', t.bytes, { 'content-disposition': 'attachment; filename="gan-distributed.tgz"', 'x-sha256': t.sha256 });
      } else if (path.endsWith('.sha256')) {
        reply.send(200, 'text/plain; charset=utf-8', `${t.sha256}  gan-distributed.tgz\n`);
      } else {
        reply.send(200, 'application/json; charset=utf-8', JSON.stringify({ path: TARBALL_PATH, sha256: t.sha256, bytes: t.bytes.length, version: t.version, files: t.files.length }));
      }
    },
  };
}
