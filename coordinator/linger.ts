/**
 * --linger <s>: after a run finishes, the coordinator's HTTP side (dashboard, /status, /history,
 * /samples, /metrics, /report.html) stays up for s seconds so a user watching the page sees the
 * finished run instead of "coordinator unreachable". Workers are told bye (RUN_FINISHED) first,
 * and new WebSocket connections are refused (SHUTTING_DOWN) meanwhile. An abort (Ctrl-C or
 * SIGTERM in the CLI) ends the linger at once.
 */
import { ConfigError } from '../shared/errors.ts';
import type { Coordinator } from './coordinator.ts';

/** Parses --linger: seconds >= 0 (fractions allowed). */
export function parseLinger(v: unknown, fallback = 0): number {
  if (v === undefined) return fallback;
  const s = Number(v);
  if (!Number.isFinite(s) || s < 0) throw new ConfigError('BAD_LINGER', `--linger must be a number of seconds >= 0; got ${String(v)}`);
  return s;
}

/**
 * Tells the workers bye, then keeps serving HTTP for `seconds` or until `abort` fires.
 * Returns how the linger ended ('none' when seconds is 0: nothing happens).
 */
export async function lingerAfterRun(coordinator: Coordinator, seconds: number, abort: AbortSignal): Promise<'none' | 'timeout' | 'signal'> {
  if (seconds <= 0 || abort.aborted) return 'none';
  await coordinator.releaseWorkers('RUN_FINISHED', 'the run is finished');
  if (abort.aborted) return 'signal';
  const until = new Date(Date.now() + seconds * 1000).toISOString();
  coordinator.lingerUntil = until;
  const { address, port } = coordinator.address;
  const host = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address.includes(':') ? `[${address}]` : address;
  const dashboard = `${coordinator.opts.network.tls ? 'https' : 'http'}://${host}:${port}/`;
  coordinator.opts.log.info(
    { event: 'lingering', seconds, until, dashboard },
    `run finished; the dashboard (${dashboard}) and report stay up for ${seconds} s (Ctrl-C to exit now)`,
  );
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      abort.removeEventListener('abort', onAbort);
      resolve('timeout');
    }, seconds * 1000);
    const onAbort = () => {
      clearTimeout(timer);
      resolve('signal');
    };
    abort.addEventListener('abort', onAbort, { once: true });
  });
}
