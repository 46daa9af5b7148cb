/**
 * What an operator is told when the coordinator cannot bind its port: one stable code and what
 * to do, instead of Node's stack trace (gan-coordinator prints `error [CODE]: ...`, exit 2).
 */
import { GanError } from '../shared/errors.ts';

/** The GanError for a failed listen(host, port), or the error itself when it is not one an operator can fix. */
export function listenError(err: unknown, host: string, port: number): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'EADDRINUSE':
      return new GanError(
        'PORT_IN_USE',
        `port ${port} on ${host} is already in use (another coordinator or another program listens there): pick another --port (0: any free port), or stop the process that holds it (ss -ltnp 'sport = :${port}' shows which)`,
        { cause: err },
      );
    case 'EACCES':
      return new GanError(
        'PORT_NOT_PERMITTED',
        `not allowed to listen on ${host}:${port}: ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a --port of 1024 or above`,
        { cause: err },
      );
    case 'EADDRNOTAVAIL':
      return new GanError('HOST_NOT_LOCAL', `cannot listen on ${host}: it is not an address of this machine; pass --host with one of its addresses, or 0.0.0.0 for all of them`, { cause: err });
    default:
      return err;
  }
}
