/**
 * The coordinator's HTTP side, on the same port as the WebSocket endpoint (read-only, GET/HEAD):
 *
 *   GET /                   the live dashboard (one self-contained HTML file, no external requests)
 *   GET /status             the run's position, latest progress line, newest sample, workers (JSON)
 *   GET /history?since=N    progress points with seq > N, oldest first (JSON)
 *   GET /metrics            Prometheus text format (prom-client)
 *   GET /samples/latest.png the newest sample grid; /samples/<7 digits>.png one by iteration
 *   GET /report.html        <run-dir>/report.html (coordinator/run-report.ts), once written
 *   and the coordinator's ctx.routes (Route entries, server.ts): /gan-distributed.tgz, .sha256,
 *   /install.json (coordinator/package-tarball.ts); /export/ and the generator's files
 *   (coordinator/generator-page.ts); /join, /join/* the browser worker page (coordinator/browser-join.ts)
 *
 * Only those exact names are served: a sample file name must match /^\d{7}\.png$/ and is looked
 * up inside <run-dir>/samples, so no request can reach any other file.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../shared/log.ts';
import type { Telemetry } from './metrics.ts';

export interface HttpContext {
  /** The coordinator's own status (position, workers, ...). */
  status(): Record<string, unknown>;
  telemetry: Telemetry;
  /** <run-dir>/samples */
  samplesDir: string;
  /** <run-dir>/report.html (served as /report.html once it exists) */
  reportFile?: string;
  log: Logger;
  /** More GET/HEAD routes (after the built-in ones above). */
  routes?: Route[];
}

/** Writes a response with the server's common headers (no-store, nosniff; HEAD gets no body). */
export interface Reply {
  send(status: number, type: string, body: string | Buffer, headers?: Record<string, string>): void;
  notFound(): void;
}

/**
 * One HTTP route: an exact path (or several), or a matcher for a family of paths. Adding a page
 * to the coordinator is one entry in HttpContext.routes.
 */
export interface Route {
  path: string | string[] | ((path: string) => boolean);
  handle(req: IncomingMessage, res: ServerResponse, url: URL, reply: Reply): void | Promise<void>;
}

export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => void;

const DASHBOARD_FILE = fileURLToPath(new URL('./dashboard.html', import.meta.url));
const SAMPLE_NAME = /^\d{7}\.png$/;

/** The dashboard only talks to this server: no CDN, no external fetch, no inline frames. */
const DASHBOARD_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** report.html is self-contained: inline style and script (its slider), images as data: URLs. */
const REPORT_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const ENDPOINTS = 'GET / (dashboard), /status, /history, /metrics, /samples/latest.png, /report.html, /export/, /gan-distributed.tgz, /join (browser workers)';

export function createHttpHandler(ctx: HttpContext): HttpHandler {
  let dashboard: Buffer | null = null;
  const page = () => (dashboard ??= readFileSync(DASHBOARD_FILE));

  const send = (req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) => {
    res.writeHead(status, {
      'content-type': type,
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      ...headers,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const json = (req: IncomingMessage, res: ServerResponse, value: unknown) => send(req, res, 200, 'application/json; charset=utf-8', JSON.stringify(value));
  const notFound = (req: IncomingMessage, res: ServerResponse) => send(req, res, 404, 'text/plain; charset=utf-8', `not found; try ${ENDPOINTS}\n`);

  /** The newest sample grid on disk (the log's sample_written first, else the directory). */
  const latestSampleFile = (): string | null => {
    const known = ctx.telemetry.latestSample?.name;
    if (known) return known;
    try {
      return readdirSync(ctx.samplesDir).filter((n) => SAMPLE_NAME.test(n)).sort().at(-1) ?? null;
    } catch {
      return null;
    }
  };

  const serveSample = async (req: IncomingMessage, res: ServerResponse, name: string | null) => {
    if (!name || !SAMPLE_NAME.test(name)) return notFound(req, res);
    const root = resolve(ctx.samplesDir);
    const file = resolve(root, name);
    if (!file.startsWith(root + sep)) return notFound(req, res);
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch {
      return notFound(req, res);
    }
    send(req, res, 200, 'image/png', body, { 'x-sample-iteration': String(Number(name.slice(0, 7))) });
  };

  const builtIn: Route[] = [
    { path: ['/', '/index.html'], handle: (req, res) => send(req, res, 200, 'text/html; charset=utf-8', page(), { 'content-security-policy': DASHBOARD_CSP }) },
    { path: '/status', handle: (req, res) => json(req, res, statusJson(ctx)) },
    {
      path: '/history',
      handle: (req, res, url) => {
        const since = Number(url.searchParams.get('since') ?? -1);
        json(req, res, ctx.telemetry.history(Number.isFinite(since) ? since : -1));
      },
    },
    {
      path: '/metrics',
      handle: async (req, res) => {
        const text = await ctx.telemetry.registry.metrics();
        send(req, res, 200, ctx.telemetry.registry.contentType, text);
      },
    },
    {
      path: '/report.html',
      handle: async (req, res) => {
        if (!ctx.reportFile) return notFound(req, res);
        let body: Buffer;
        try {
          body = await readFile(ctx.reportFile);
        } catch {
          return notFound(req, res);
        }
        send(req, res, 200, 'text/html; charset=utf-8', body, { 'content-security-policy': REPORT_CSP });
      },
    },
    { path: '/samples/latest.png', handle: (req, res) => serveSample(req, res, latestSampleFile()) },
    { path: (p) => p.startsWith('/samples/'), handle: (req, res, url) => serveSample(req, res, url.pathname.slice('/samples/'.length)) },
  ];
  // Exact paths first, in table order, then prefix matchers, so an added route cannot shadow a built-in page.
  const routes = [...builtIn, ...(ctx.routes ?? [])];
  const matches = (r: Route, path: string) => (typeof r.path === 'function' ? r.path(path) : Array.isArray(r.path) ? r.path.includes(path) : r.path === path);
  const exact = routes.filter((r) => typeof r.path !== 'function');
  const prefixed = routes.filter((r) => typeof r.path === 'function');

  const route = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(req, res, 405, 'text/plain; charset=utf-8', 'read-only: GET or HEAD\n', { allow: 'GET, HEAD' });
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://coordinator');
    } catch {
      return send(req, res, 400, 'text/plain; charset=utf-8', 'bad request target\n');
    }
    const path = url.pathname;
    const r = exact.find((x) => matches(x, path)) ?? prefixed.find((x) => matches(x, path));
    if (!r) return notFound(req, res);
    return r.handle(req, res, url, { send: (status, type, body, headers) => send(req, res, status, type, body, headers), notFound: () => notFound(req, res) });
  };

  return (req, res) => {
    route(req, res).catch((err: unknown) => {
      ctx.log.warn({ event: 'warning', code: 'HTTP_ERROR', url: req.url?.slice(0, 200), err: err instanceof Error ? err.message : String(err) }, 'HTTP request failed');
      if (!res.headersSent) send(req, res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    });
  };
}

/** GET /status: the coordinator's status plus what the log said last. */
export function statusJson(ctx: HttpContext): Record<string, unknown> {
  const t = ctx.telemetry;
  const p = t.latestProgress;
  const sample = t.latestSample;
  return {
    ...ctx.status(),
    progress: p
      ? Object.fromEntries(Object.entries(p).filter(([k]) => !['level', 'pid', 'name', 'msg', 'event', 'hostname'].includes(k)))
      : null,
    sample: sample ? { iteration: sample.iteration, url: `/samples/${sample.name}`, time: sample.time } : null,
    eval: t.latestEval ? { iteration: t.latestEval.iteration, time: t.latestEval.time, generator: t.latestEval.generator, ...t.latestEval.scores } : null,
    report: ctx.reportFile && existsSync(ctx.reportFile) ? '/report.html' : null,
  };
}
