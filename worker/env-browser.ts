/**
 * The worker's environment in a browser tab: the browser's WebSocket (binary frames as
 * ArrayBuffer), WebCrypto for the HMAC-SHA256 answer to the coordinator's challenge (the token
 * stays in the tab; only the HMAC of the coordinator's nonce is sent, as from gan-worker), and a
 * MessageChannel to yield between shards (setTimeout is throttled in background tabs, a posted
 * message is not throttled the same way).
 *
 * Browsers answer WebSocket pings themselves and do not show them to scripts (seesPings false):
 * the coordinator still detects a dead tab by its missing pongs, and the tab sees a dead
 * coordinator as a closed socket.
 */
import type { ConnectOptions, SocketEvents, WorkerEnv, WorkerSocket } from './env.ts';

// The project type-checks against Node's globals only (no DOM lib, which would clash with them):
// the little of the browser this file uses, declared here.
interface BrowserWebSocket {
  binaryType: string;
  readonly readyState: number;
  onopen: (() => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: (() => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}
interface BrowserGlobals {
  WebSocket: { new (url: string): BrowserWebSocket; readonly OPEN: number };
  navigator: { userAgent: string };
}
const browser = globalThis as unknown as BrowserGlobals;

function connect(url: string, events: SocketEvents, _opts: ConnectOptions): WorkerSocket {
  const ws = new browser.WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => events.open();
  ws.onmessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) events.message(new Uint8Array(ev.data), 0);
  };
  // A browser tells scripts nothing about why a connection failed (no errno, no TLS detail).
  ws.onerror = () => events.error(new Error(`cannot reach the coordinator at ${url}`));
  ws.onclose = (ev) => events.close(ev.code, ev.reason);
  return {
    get open() {
      return ws.readyState === browser.WebSocket.OPEN;
    },
    send: (frame) => ws.send(frame),
    // Browsers only let scripts close with 1000 or 3000-4999.
    close: (code, reason) => ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason.slice(0, 120)),
    terminate: () => ws.close(),
  };
}

async function hmac(token: string, nonce: Uint8Array): Promise<Uint8Array> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    // WebCrypto exists only in secure contexts: https://, or http:// on localhost.
    throw new Error('this page is not a secure context (WebCrypto is unavailable): open it over https://, or as http://localhost');
  }
  const key = await subtle.importKey('raw', new TextEncoder().encode(token), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle.sign('HMAC', key, new Uint8Array(nonce)));
}

/** Resolves after the browser ran other tasks (frames, UI) once. */
function yieldNow(): Promise<void> {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      resolve();
    };
    ch.port2.postMessage(0);
  });
}

export const browserEnv: WorkerEnv = {
  kind: 'browser',
  connect,
  hmac,
  host: () => `browser ${browser.navigator.userAgent}`.slice(0, 256),
  yieldNow,
  seesPings: false,
  resources: (): Record<string, number> => {
    const m = (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory;
    return m ? { heapMb: Math.round(m.usedJSHeapSize / 1e6) } : {};
  },
  fatalConnectError: () => null,
};
