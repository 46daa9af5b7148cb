/**
 * The /join page's script (bundled by the coordinator with esbuild, coordinator/browser-join.ts):
 * runs the worker core (worker/worker-core.ts) in this tab on the browser's environment
 * (worker/env-browser.ts), and shows what the tab contributes.
 *
 * The token typed into the page stays in the tab: the worker answers the coordinator's challenge
 * with HMAC-SHA256(token, nonce) through WebCrypto, exactly as gan-worker does.
 *
 * Backends: wasm (default) loads the same tfjs-backend-wasm SIMD binary as a Node worker, served
 * by the coordinator at /join/wasm/ (no external request); threads stay off so it is always that
 * binary, and the tab's results are bit-identical to a Node wasm worker's. WebGL is an opt-in
 * (a checkbox): the GPU may be faster, but its results differ in the last bits, so the
 * coordinator warns MIXED_BACKENDS. Its code is a separate chunk, loaded only when chosen.
 */
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { initBackend } from '../shared/backend.ts';
import { registerTileGradient } from '../shared/tile.ts';
import { browserEnv } from './env-browser.ts';
import { DEFAULT_BACKOFF, WorkerCore, type WorkerLog } from './worker-core.ts';

/** The page's own state, shown in the page and read by tests (window.ganJoin). */
export interface JoinState {
  phase: 'idle' | 'loading' | 'connecting' | 'working' | 'finished' | 'refused' | 'stopped' | 'error';
  message: string;
  backend: string;
  shards: number;
  results: number;
  meanShardMs: number;
  runId: string;
  model: string;
  /** The stable code of a refusal (AUTH_FAILED, BROWSER_WORKERS_REFUSED, ...). */
  code: string;
  /** This tab's worker id (worker_joined / worker_left in the coordinator's log). */
  workerId: string;
}

interface El {
  textContent: string | null;
  value: string;
  checked: boolean;
  disabled: boolean;
  hidden: boolean;
  className: string;
  addEventListener(ev: string, fn: (e: { preventDefault(): void }) => void): void;
  setAttribute(k: string, v: string): void;
  prepend(node: unknown): void;
  childElementCount: number;
  lastElementChild: { remove(): void } | null;
}
interface Doc {
  getElementById(id: string): El | null;
  createElement(tag: string): El;
}
const g = globalThis as unknown as { document: Doc; location: { protocol: string; host: string; hash: string; pathname: string }; history: { replaceState(data: unknown, unused: string, url: string): void }; sessionStorage?: { getItem(k: string): string | null; setItem(k: string, v: string): void }; ganJoin?: JoinState };
const $ = (id: string): El => {
  const el = g.document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
};

const state: JoinState = { phase: 'idle', message: '', backend: '', shards: 0, results: 0, meanShardMs: 0, runId: '', model: '', code: '', workerId: '' };
g.ganJoin = state;

function render(): void {
  $('phase').textContent = state.phase;
  $('phase').className = `phase ${state.phase}`;
  $('message').textContent = state.message;
  $('backend').textContent = state.backend || '-';
  $('shards').textContent = String(state.shards);
  $('ms').textContent = state.shards ? state.meanShardMs.toFixed(1) : '-';
  $('run').textContent = state.runId ? `${state.runId} (${state.model})` : '-';
}

function set(patch: Partial<JoinState>): void {
  Object.assign(state, patch);
  render();
}

/** A worker log that keeps the newest lines in the page (and the console). */
function pageLog(): WorkerLog {
  const line = (level: string, obj: object, msg?: string) => {
    const ev = (obj as { event?: string }).event;
    const text = `${new Date().toISOString().slice(11, 19)} ${level} ${ev ?? ''} ${msg ?? ''}`.trim();
    const list = $('log');
    const li = g.document.createElement('li');
    li.textContent = text;
    list.prepend(li);
    while (list.childElementCount > 40) list.lastElementChild?.remove();
    (level === 'error' ? console.error : level === 'warn' ? console.warn : console.log)(text, obj);
  };
  return {
    info: (o, m) => line('info', o, m),
    warn: (o, m) => line('warn', o, m),
    error: (o, m) => line('error', o, m),
    debug: () => undefined,
  };
}

/** What the coordinator says about browser workers before the tab tries to join. */
interface JoinInfo {
  browserWorkers: boolean;
  auth: boolean;
  runId: string;
  model: string;
  finished: boolean;
  refusal?: string;
}

let backendReady: Promise<string> | null = null;
let webglReady: Promise<string> | null = null;

/**
 * The opt-in GPU backend. Refused where the GPU cannot render float32 textures: tfjs would fall
 * back to float16 there, too coarse for gradients.
 */
async function startWebgl(): Promise<string> {
  tf.env().set('PROD', true);
  registerTileGradient();
  await import('@tensorflow/tfjs-backend-webgl');
  let ok = false;
  try {
    ok = await tf.setBackend('webgl');
  } catch {
    ok = false;
  }
  if (!ok) throw new Error('this browser offers no usable WebGL (no GPU, or it is disabled); untick WebGL to use wasm');
  if (!tf.env().getBool('WEBGL_RENDER_FLOAT32_CAPABLE')) {
    throw new Error('this GPU cannot compute in float32 under WebGL (only float16, too coarse for gradients); untick WebGL to use wasm');
  }
  return 'webgl';
}

async function startBackend(): Promise<string> {
  // Always the single-threaded SIMD binary a Node worker runs (threads would pick another one).
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  setWasmPaths('/join/wasm/');
  const report = await initBackend('wasm');
  return report.name;
}

function workerId(): string {
  // Stable for this tab across reloads (a reload replaces its old session), new in another tab.
  const key = 'gan-join-worker-id';
  const known = g.sessionStorage?.getItem(key);
  if (known) return known;
  const id = `browser-${Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('')}`;
  g.sessionStorage?.setItem(key, id);
  return id;
}

let worker: WorkerCore | null = null;

/** A short-lived join key (coordinator/join-key.ts): "j1.<expiry>.<mac>". */
const JOIN_KEY = /^j1\.(\d{10})\.[A-Za-z0-9_-]{43}$/;

/**
 * A join link's key (#key=...): moved into the token field and out of the address bar (the
 * fragment is never sent to a server, but stays in history and in what gets copied).
 */
function keyFromLink(): void {
  const m = /(?:^#|&)key=([^&]+)/.exec(g.location.hash);
  if (!m) return;
  g.history.replaceState(null, '', g.location.pathname);
  const key = decodeURIComponent(m[1]);
  const k = JOIN_KEY.exec(key);
  if (!k) return set({ message: 'the join link is malformed; enter the token or ask for a new link' });
  $('token').value = key;
  set({ message: `join link valid until ${new Date(Number(k[1]) * 1000).toLocaleString()}: press Join` });
}

async function join(token: string, webgl: boolean): Promise<void> {
  set({ phase: 'loading', message: 'loading the compute backend', code: '' });
  try {
    if (webgl) {
      webglReady ??= startWebgl();
      set({ backend: await webglReady });
    } else {
      backendReady ??= startBackend();
      await backendReady;
      // The wasm backend may have been set aside for WebGL by an earlier join.
      if (tf.getBackend() !== 'wasm') await tf.setBackend('wasm');
      set({ backend: 'wasm' });
    }
  } catch (err) {
    if (webgl) webglReady = null;
    else backendReady = null;
    set({ phase: 'error', message: `could not start the ${webgl ? 'WebGL' : 'wasm'} backend: ${err instanceof Error ? err.message : String(err)}` });
    return;
  }
  set({ phase: 'connecting', message: 'connecting to the coordinator', workerId: workerId() });
  const url = `${g.location.protocol === 'https:' ? 'wss' : 'ws'}://${g.location.host}/`;
  worker = new WorkerCore(
    {
      url,
      token: token || null,
      workerId: state.workerId,
      ...(JOIN_KEY.test(token) ? { joinExpires: Number(JOIN_KEY.exec(token)![1]) } : {}),
      backend: state.backend,
      log: pageLog(),
      stay: false,
      maxRetries: Infinity,
      backoff: DEFAULT_BACKOFF,
      idleTimeoutMs: 30_000,
      testDelayMs: 0,
      progressIntervalMs: 15_000,
      onWelcome: (w) => set({ phase: 'working', message: 'joined the run: computing shards', runId: w.runId, model: w.model }),
      onBlockSent: (b) => set({ shards: b.shardsDone, results: state.results + 1, meanShardMs: b.meanShardMs }),
    },
    browserEnv,
  );
  $('join').disabled = true;
  $('leave').disabled = false;
  const code = await worker.run();
  const fatal = worker.fatal;
  worker = null;
  $('join').disabled = false;
  $('leave').disabled = true;
  if (fatal) {
    const hint = fatal.code === 'AUTH_FAILED' ? ' Check the token (or join link) and try again.' : '';
    set({ phase: 'refused', code: fatal.code, message: `refused (${fatal.code}): ${fatal.reason}.${hint}` });
  } else if (state.phase === 'stopped') {
    set({ message: 'left the run' });
  } else {
    set({ phase: code === 0 ? 'finished' : 'error', message: code === 0 ? 'the run is finished; thank you' : 'gave up reaching the coordinator' });
  }
}

async function main(): Promise<void> {
  render();
  let info: JoinInfo;
  try {
    const res = await fetch('/join/info', { cache: 'no-store' });
    info = (await res.json()) as JoinInfo;
  } catch (err) {
    set({ phase: 'error', message: `cannot reach the coordinator: ${String(err)}` });
    return;
  }
  set({ runId: info.runId, model: info.model });
  if (!info.browserWorkers) {
    $('form').hidden = true;
    set({ phase: 'refused', code: 'BROWSER_WORKERS_REFUSED', message: info.refusal ?? 'this run does not accept browser workers' });
    return;
  }
  if (info.finished) {
    set({ phase: 'finished', message: 'this run is already finished' });
    return;
  }
  if (info.auth && !(globalThis as { isSecureContext?: boolean }).isSecureContext) {
    // WebCrypto (the HMAC) exists only in secure contexts; and a token typed into a page that came
    // over plain http from another machine could have been read by whoever altered the page.
    $('form').hidden = true;
    set({ phase: 'refused', code: 'INSECURE_PAGE', message: 'this page came over plain http from another machine: a browser joins a run with a token only over https (the coordinator needs --tls-cert/--tls-key), or from http://localhost' });
    return;
  }
  if (!info.auth) $('token-row').hidden = true;
  else keyFromLink();
  // Load the backend while the user types the token (its first use compiles the wasm binary).
  backendReady = startBackend();
  backendReady.then(
    (backend) => set({ backend }),
    () => undefined, // join() reports it
  );
  $('form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (worker) return;
    const input = $('token');
    const token = input.value.trim();
    // The token is only needed for the handshake: do not leave it in the page.
    input.value = '';
    void join(token, $('webgl').checked);
  });
  $('leave').addEventListener('click', () => {
    if (!worker) return;
    set({ phase: 'stopped', message: 'leaving the run' });
    worker.stop('page');
  });
}

void main();
