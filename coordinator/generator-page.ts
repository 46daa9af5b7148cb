/**
 * Serves the generator page (trainer/generator-page.ts) and the export it loads:
 *
 *   GET /export/  (or /export/index.html)   the page (built in memory: there before the export is)
 *   GET /export/gan.json                     <export>/gan.json
 *   GET /export/generator/model.json         <export>/generator/model.json
 *   GET /export/generator/weights.bin        <export>/generator/weights.bin
 *
 * Only those names: nothing else in the export or the run directory (D's files included) is
 * reachable. Used by the coordinator (its run's export/) and by `gan-sample --serve`.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { GENERATOR_PAGE_CSP, generatorPageHtml } from '../trainer/generator-page.ts';
import type { Route } from './http.ts';

export const EXPORT_PAGE_PATH = '/export/';

const FILES: Record<string, { file: string[]; type: string }> = {
  'gan.json': { file: ['gan.json'], type: 'application/json; charset=utf-8' },
  'generator/model.json': { file: ['generator', 'model.json'], type: 'application/json; charset=utf-8' },
  'generator/weights.bin': { file: ['generator', 'weights.bin'], type: 'application/octet-stream' },
};

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...extra });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** The coordinator's /export/ route (coordinator/http.ts Route) for the export directory `exportDir`. */
export function generatorPageRoute(exportDir: string): Route {
  const serve = exportServer(exportDir, EXPORT_PAGE_PATH);
  return {
    path: (p) => p === EXPORT_PAGE_PATH.slice(0, -1) || p.startsWith(EXPORT_PAGE_PATH),
    handle: async (req, res, url, reply) => {
      if (!(await serve(req, res, url.pathname))) reply.notFound();
    },
  };
}

/** Serves the page and the export's files under `prefix`; false when `path` is none of them. */
function exportServer(exportDir: string, prefix: string): (req: IncomingMessage, res: ServerResponse, path: string) => Promise<boolean> {
  return async (req, res, path) => {
    if (path === prefix.slice(0, -1)) {
      res.writeHead(301, { location: prefix, 'content-length': '0' });
      res.end();
      return true;
    }
    if (!path.startsWith(prefix)) return false;
    const rest = path.slice(prefix.length);
    if (rest === '' || rest === 'index.html') {
      send(req, res, 200, 'text/html; charset=utf-8', generatorPageHtml(), { 'content-security-policy': GENERATOR_PAGE_CSP });
      return true;
    }
    const entry = FILES[rest];
    if (!entry) return false;
    let body: Buffer;
    try {
      body = await readFile(join(exportDir, ...entry.file));
    } catch {
      send(req, res, 404, 'text/plain; charset=utf-8', `not exported yet: ${rest} appears when the run ends\n`);
      return true;
    }
    send(req, res, 200, entry.type, body);
    return true;
  };
}

/**
 * `gan-sample --serve`: a read-only server of the page and one export directory at
 * http://<host>:<port>/ (GET and HEAD only). Resolves once listening.
 */
export async function serveExport(exportDir: string, host: string, port: number): Promise<Server> {
  const route = exportServer(exportDir, '/');
  const server = createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(req, res, 405, 'text/plain; charset=utf-8', 'read-only: GET or HEAD\n', { allow: 'GET, HEAD' });
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://x').pathname;
    } catch {
      return send(req, res, 400, 'text/plain; charset=utf-8', 'bad request target\n');
    }
    Promise.resolve(route(req, res, path))
      .then((served) => {
        if (!served) send(req, res, 404, 'text/plain; charset=utf-8', 'not found: / (the page), /gan.json, /generator/model.json, /generator/weights.bin\n');
      })
      .catch(() => {
        if (!res.headersSent) send(req, res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
