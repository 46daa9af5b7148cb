/**
 * The `backend_selected` line (issue 18): when auto selection skips the native backend, the
 * readable log says once why wasm was chosen and what installing @tensorflow/tfjs-node would give.
 */
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { backendChoiceLine } from '../shared/backend-choice.ts';
import { cleanup, reservePort, spawnCli, waitForExit } from './helpers/processes.ts';

afterEach(cleanup);

const NOT_FOUND = "Cannot find package '@tensorflow/tfjs-node' imported from /app/shared/backend.ts";

describe('backendChoiceLine', () => {
  it(
    'auto, tfjs-node absent: wasm, because it is not installed, and what installing it gives',
    () => {
      const line = backendChoiceLine({ name: 'wasm', skipped: [{ name: 'tensorflow', reason: NOT_FOUND }] }, 'auto');
      expect(line.fields).toEqual({ backend: 'wasm', requested: 'auto', tensorflow: 'not installed' });
      expect(line.msg).toMatch(/^compute backend: wasm \(WebAssembly, one thread per process\), because @tensorflow\/tfjs-node is not installed/);
      expect(line.msg).toContain('npm install @tensorflow/tfjs-node');
      expect(line.msg).toMatch(/native, multi-threaded TensorFlow backend, typically several times faster/);
    },
    60_000,
  );

  it(
    'auto, tfjs-node broken or wasm failing too; tensorflow in use; an explicit --backend',
    () => {
      const broken = backendChoiceLine({ name: 'wasm', skipped: [{ name: 'tensorflow', reason: 'libtensorflow.so.2: cannot open shared object file' }] }, 'auto');
      expect(broken.fields.tensorflow).toBe('failed to load');
      expect(broken.msg).toContain('could not be loaded (libtensorflow.so.2: cannot open shared object file)');
      const cpu = backendChoiceLine({ name: 'cpu', skipped: [{ name: 'tensorflow', reason: NOT_FOUND }, { name: 'wasm', reason: 'no wasm' }] }, 'auto');
      expect(cpu.msg).toContain('wasm could not be started (no wasm)');
      const native = backendChoiceLine({ name: 'tensorflow', skipped: [] }, 'auto');
      expect(native.fields.tensorflow).toBe('in use');
      expect(native.msg).not.toContain('npm install');
      const explicit = backendChoiceLine({ name: 'wasm', skipped: [] }, 'wasm');
      expect(explicit.fields).toEqual({ backend: 'wasm', requested: 'wasm', tensorflow: 'not tried' });
      expect(explicit.msg).toContain('as requested with --backend wasm');
      expect(explicit.msg).not.toContain('npm install');
    },
    60_000,
  );
});

let tfjsNodeInstalled = true;
try {
  createRequire(import.meta.url).resolve('@tensorflow/tfjs-node');
} catch {
  tfjsNodeInstalled = false;
}

describe('a worker without tfjs-node', () => {
  it.skipIf(tfjsNodeInstalled)(
    'says once, in its readable (--pretty) log, that wasm was chosen because tfjs-node is not installed',
    async () => {
      // Nobody listens on the port: the worker starts, logs, fails to connect once and exits.
      const port = await reservePort();
      const pretty = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--max-retries', '1', '--pretty']);
      const json = spawnCli('worker', ['--coordinator', `ws://127.0.0.1:${port}`, '--max-retries', '1']);
      await Promise.all([waitForExit(pretty, 50_000), waitForExit(json, 50_000)]);
      const lines = pretty.lines.filter((l) => l.includes('backend_selected'));
      expect(lines, pretty.lines.join('\n')).toHaveLength(1);
      expect(lines[0]).toContain('compute backend: wasm');
      expect(lines[0]).toContain('@tensorflow/tfjs-node is not installed');
      expect(lines[0]).toContain('several times faster');
      const events = json.events.filter((e) => e.event === 'backend_selected');
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ backend: 'wasm', requested: 'auto', tensorflow: 'not installed', level: 30 });
    },
    60_000,
  );
});
