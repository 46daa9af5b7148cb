/**
 * gan-worker's flag table, usage and examples. This module imports no tfjs: bin/gan-worker.js
 * answers -h, --help and --version from it before loading the worker.
 */
import { COMMON_FLAGS, VERSION_FLAGS, type CliSpec, type FlagTable } from '../shared/cli.ts';

export const WORKER_FLAGS: FlagTable = {
  coordinator: { type: 'string', value: '<url>', group: 'Connection', help: 'coordinator URL, e.g. ws://host:8600 (else GAN_COORDINATOR)' },
  'token-file': { type: 'string', value: '<file>', group: 'Connection', help: 'file whose first line is the shared token (else GAN_TOKEN)' },
  ca: { type: 'string', value: '<file>', group: 'Connection', help: 'PEM file with the CA (or self-signed certificate) to trust for a wss:// coordinator', defaultText: "the system's CAs" },
  id: { type: 'string', value: '<id>', group: 'Connection', help: 'worker id shown in the coordinator log', defaultText: '<hostname>-<pid>' },
  'relay-listen': { type: 'string', value: '<host:port>', group: 'Relay tree', help: 'accept relay-tree children here (coordinator --fan-out): this worker forwards weights to them and combines their gradients (port 0: any free port)', defaultText: 'none: a leaf' },
  'relay-advertise': { type: 'string', value: '<url>', group: 'Relay tree', help: 'the URL children dial to reach --relay-listen (behind NAT or a proxy)', defaultText: 'ws://<relay-listen host>:<port>; for 0.0.0.0 or [::], the address the coordinator sees this worker at' },
  stay: { type: 'boolean', group: 'Connection', help: 'keep waiting for the next run when the coordinator finishes one' },
  'max-retries': { type: 'string', value: '<n>', group: 'Connection', kind: 'int', help: 'give up after N failed connection attempts in a row', defaultText: 'never give up' },
  'status-interval': { type: 'string', value: '<s>', group: 'Output', kind: 'number', help: 'worker_progress line at least every s seconds while computing (and every 500 shards)', defaultText: '15' },
  pretty: { type: 'boolean', group: 'Output', help: 'human-readable log on stdout (default when stdout is a terminal)' },
};

export const WORKER_CLI: CliSpec = {
  name: 'gan-worker',
  usage: `Usage: gan-worker --coordinator ws://<host>:<port> [options]
       gan-worker --coordinator wss://<host>:<port> [--ca <file>] [options]

Computes D and G gradients for the micro-shards the coordinator hands it. Holds no data and
no training state: start, stop or kill workers at any time. A coordinator that refuses this
worker (token, protocol version) or a wss:// certificate that fails verification ends it with
exit code 2; an unreachable coordinator is retried with backoff. SIGINT/SIGTERM stop it (exit 0,
also while it waits to reconnect); a second signal forces the exit (130).`,
  tables: [WORKER_FLAGS, COMMON_FLAGS, VERSION_FLAGS],
  examples: [
    'GAN_TOKEN=<token> gan-worker --coordinator ws://coordinator.example.org:8600',
    'gan-worker --coordinator wss://coordinator.example.org:8600 --ca ca.pem --token-file token',
    'gan-worker --coordinator ws://127.0.0.1:8600 --stay --id gpu-box-1    # wait for the next run',
    'gan-worker --coordinator ws://coord:8600 --relay-listen 0.0.0.0:8700    # relay tree node',
  ],
};
