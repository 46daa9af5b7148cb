/**
 * The Node worker (gan-worker): the environment-agnostic core (worker/worker-core.ts) on Node's
 * environment (worker/env-node.ts: the ws package, node:crypto, os.hostname). A browser tab runs
 * the same core on worker/env-browser.ts (worker/browser-entry.ts).
 */
import { nodeEnv } from './env-node.ts';
import { WorkerCore, type WorkerOptions } from './worker-core.ts';

export { DEFAULT_BACKOFF, type WorkerLog, type WorkerOptions } from './worker-core.ts';

export class Worker extends WorkerCore {
  constructor(opts: WorkerOptions) {
    super(opts, nodeEnv);
  }
}
