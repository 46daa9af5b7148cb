/**
 * Browser workers: the coordinator's /join routes, and the refusal of browser workers when a run
 * is started with --no-browser-workers.
 *
 *   GET /join              the page: asks for the run token, runs the worker in the tab, shows
 *                          shards, ms per shard and the backend
 *   GET /join/info         what the page needs before joining (JSON): whether this run takes
 *                          browser workers, whether it needs a token, run id, model
 *   GET /join/worker.js    worker/browser-entry.ts and the worker core, bundled with esbuild on
 *                          first request (offline: esbuild is a local binary) and kept in memory;
 *                          also with --no-browser-workers, so the page can say why it may not join
 *   GET /join/chunk-*.js   the bundle's lazily loaded parts (the opt-in WebGL backend)
 *   GET /join/wasm/<name>  tfjs-backend-wasm's .wasm binaries from node_modules (three exact names)
 *
 * Nothing else is served and the page requests nothing from any other origin (its
 * Content-Security-Policy allows only this server). The token never crosses the wire: the tab
 * answers the same HMAC challenge as gan-worker, with WebCrypto.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HelloMsg } from '../shared/protocol.ts';
import { joinKeyFor } from './join-key.ts';

export interface BrowserJoinContext {
  /** false with --no-browser-workers: /join says so and a browser's hello is refused. */
  browserWorkers: boolean;
  /** The run needs a token (the page then asks for it). */
  auth: boolean;
  runId: string;
  model: string;
  finished(): boolean;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

export type JoinHandler = (req: IncomingMessage, res: ServerResponse, path: string) => Promise<void>;

const PAGE_FILE = fileURLToPath(new URL('./join.html', import.meta.url));
const ENTRY_FILE = fileURLToPath(new URL('../worker/browser-entry.ts', import.meta.url));
const WASM_FILES = new Set(['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm']);

/**
 * The page's scripts come from this server only ('self'); 'wasm-unsafe-eval' lets it compile the
 * tfjs wasm binary (and nothing else: no eval). connect-src 'self' covers /join/info, the .wasm
 * fetches and the WebSocket to this same host and port.
 */
export const JOIN_CSP =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Why a browser is refused with --no-browser-workers (the page shows it; the bye carries it). */
export const BROWSER_REFUSAL =
  'this run does not accept browser workers: the coordinator was started with --no-browser-workers. Run gan-worker on a machine instead (see docs/operations.md), or ask the operator to restart the run without that flag';

/** A browser hello on a run that refuses browsers: the bye code (shared/protocol.ts BYE_CODES) and reason; else null. */
export function browserRefusal(hello: HelloMsg, browserWorkers: boolean): { code: 'BROWSER_WORKERS_REFUSED'; reason: string } | null {
  return hello.browser && !browserWorkers ? { code: 'BROWSER_WORKERS_REFUSED', reason: BROWSER_REFUSAL } : null;
}

/**
 * The secret a worker's auth must be keyed with: the run token, or for a hello with joinExpires
 * the join key derived from it; or why the hello is refused (JOIN_KEY_EXPIRED).
 */
export function authSecret(token: string, hello: HelloMsg): { secret: string } | { code: 'JOIN_KEY_EXPIRED'; reason: string } {
  if (hello.joinExpires === undefined) return { secret: token };
  const r = joinKeyFor(token, hello.joinExpires);
  return 'key' in r ? { secret: r.key } : r;
}

function wasmDir(): string {
  // The package's main is dist/tf-backend-wasm.node.js; the binaries sit next to it.
  return dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'));
}

/** The bundle's files by name: worker.js and its chunk-<hash>.js parts. */
export type BrowserBundle = Map<string, Uint8Array>;

/**
 * Bundles the browser worker (worker.js about 0.9 MB minified, plus the WebGL backend as a chunk
 * loaded only when a tab opts in; 1-3 s); rejects with esbuild's message.
 */
export async function bundleBrowserWorker(): Promise<BrowserBundle> {
  // esbuild is a local binary (a dependency, also vite's): nothing is downloaded here.
  const esbuild = await import('esbuild');
  const out = await esbuild.build({
    entryPoints: [ENTRY_FILE],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    write: false,
    splitting: true,
    outdir: '/join',
    entryNames: 'worker',
    chunkNames: 'chunk-[hash]',
    logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  return new Map(out.outputFiles.map((f) => [f.path.slice(f.path.lastIndexOf('/') + 1), f.contents]));
}

const BUNDLE_FILE = /^(worker|chunk-[A-Za-z0-9]+)\.js$/;

export function createJoinHandler(ctx: BrowserJoinContext): JoinHandler {
  let page: Buffer | null = null;
  let bundle: Promise<BrowserBundle> | null = null;
  const send = (req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string | Uint8Array, headers: Record<string, string> = {}) => {
    res.writeHead(status, {
      'content-type': type,
      'content-length': String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      ...headers,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const notFound = (req: IncomingMessage, res: ServerResponse) => send(req, res, 404, 'text/plain; charset=utf-8', 'not found; try GET /join\n');

  return async (req, res, path) => {
    if (path === '/join' || path === '/join/') {
      page ??= readFileSync(PAGE_FILE);
      // Start bundling while the page loads: the page asks for the script next.
      if (!bundle) {
        bundle = buildLogged();
        // A failure is logged and answered at /join/worker.js; not an unhandled rejection here.
        bundle.catch(() => undefined);
      }
      return send(req, res, 200, 'text/html; charset=utf-8', page, { 'content-security-policy': JOIN_CSP });
    }
    if (path === '/join/info') {
      const info = { browserWorkers: ctx.browserWorkers, auth: ctx.auth, runId: ctx.runId, model: ctx.model, finished: ctx.finished(), ...(ctx.browserWorkers ? {} : { refusal: BROWSER_REFUSAL }) };
      return send(req, res, 200, 'application/json; charset=utf-8', JSON.stringify(info));
    }
    const file = path.slice('/join/'.length);
    if (BUNDLE_FILE.test(file)) {
      bundle ??= buildLogged();
      let files: BrowserBundle;
      try {
        files = await bundle;
      } catch (err) {
        bundle = null;
        return send(req, res, 500, 'text/plain; charset=utf-8', `could not bundle the browser worker: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
      }
      const js = files.get(file);
      return js ? send(req, res, 200, 'text/javascript; charset=utf-8', js) : notFound(req, res);
    }
    if (path.startsWith('/join/wasm/')) {
      const name = path.slice('/join/wasm/'.length);
      if (!ctx.browserWorkers || !WASM_FILES.has(name)) return notFound(req, res);
      let body: Buffer;
      try {
        body = await readFile(join(wasmDir(), name));
      } catch {
        return notFound(req, res);
      }
      return send(req, res, 200, 'application/wasm', body);
    }
    return notFound(req, res);
  };

  async function buildLogged(): Promise<BrowserBundle> {
    const t0 = performance.now();
    try {
      const files = await bundleBrowserWorker();
      const bytes = [...files.values()].reduce((n, f) => n + f.byteLength, 0);
      ctx.log.info({ event: 'browser_worker_bundled', bytes, ms: Math.round(performance.now() - t0) }, 'bundled the browser worker for /join');
      return files;
    } catch (err) {
      ctx.log.warn({ event: 'warning', code: 'BROWSER_BUNDLE_FAILED', err: err instanceof Error ? err.message.split('\n')[0] : String(err) }, 'could not bundle the browser worker for /join');
      throw err;
    }
  }
}
