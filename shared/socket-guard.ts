/**
 * The second line of defence for long-running processes (coordinator, worker): an 'error' event
 * from a network socket that somehow reached no listener is logged as a warning
 * (UNEXPECTED_SOCKET_ERROR) instead of ending a multi-day run. The first line is an 'error'
 * listener on every socket before anything else happens to it; this guard only catches what
 * that missed. Any other uncaught exception is a bug: it is logged and the process exits 1, as
 * Node would.
 */
import type { Logger } from './log.ts';
import { clip } from './log.ts';

/** errno codes of a peer or link failing, not of this process misbehaving. */
const SOCKET_ERRNO = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'ECONNREFUSED', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

/** Whether an uncaught error came from a socket or a peer's malformed WebSocket frame. */
export function isSocketError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code !== 'string') return false;
  return code.startsWith('WS_ERR_') || code.startsWith('ERR_SSL_') || SOCKET_ERRNO.has(code);
}

let installed = false;

export function installSocketErrorGuard(log: Logger): void {
  if (installed) return;
  installed = true;
  process.on('uncaughtException', (err) => {
    if (isSocketError(err)) {
      log.warn({ event: 'warning', code: 'UNEXPECTED_SOCKET_ERROR', errCode: (err as NodeJS.ErrnoException).code, err: clip(err.message) }, 'a socket error reached no handler; ignored');
      return;
    }
    log.fatal({ event: 'crashed', err: clip(err.stack ?? err.message, 4000) }, 'uncaught exception');
    process.stderr.write(`${err.stack ?? String(err)}\n`);
    process.exit(1);
  });
}
