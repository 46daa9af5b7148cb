/**
 * Weights down the relay tree: the coordinator encodes a changed net once as an ordinary
 * `weights` frame, announces its length and SHA-256 to every tree worker directly
 * (weights-head), and sends the frame's bytes to its direct children as weights-chunk frames. A
 * relay forwards each chunk frame as it arrives (one chunk of latency per level, not one copy)
 * and reassembles the frame for itself; a worker decodes the reassembled frame only when its
 * digest matches the head the coordinator sent it, so a relay cannot inject weights.
 *
 * Imports nothing Node-only: the digest function is passed in (node:crypto in worker/tree-link.ts).
 */
import { encode } from './codec.ts';
import type { Net, WeightsChunkMsg, WeightsHeadMsg } from './protocol.ts';

/**
 * Chunk payload the coordinator sends: small enough that a relay forwards early, large enough that
 * framing is noise. Each level of the tree adds one chunk of latency (2.6 ms at 100 Mbit/s for
 * 32 KiB), which matters in a deep tree: in a chain of 8 (--fan-out 1) 128 KiB chunks cost ~63 ms
 * more per phase, and 32 KiB measured faster in paired runs (docs/performance.md "Relay tree").
 */
export const RELAY_CHUNK_BYTES = 32 * 1024;

/** The weights-chunk frames carrying `frame` (an encoded weights message), in order. */
export function chunkFrames(frame: Uint8Array, net: Net, version: number, chunkBytes = RELAY_CHUNK_BYTES): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < frame.byteLength; offset += chunkBytes) {
    // A plain Uint8Array copy: msgpackr sends a Buffer subclass as bin, which the validator refuses.
    const data = new Uint8Array(frame.subarray(offset, Math.min(offset + chunkBytes, frame.byteLength)));
    out.push(encode({ type: 'weights-chunk', net, version, total: frame.byteLength, offset, data }));
  }
  return out;
}

export type Digest = (bytes: Uint8Array) => Uint8Array;

/** Outcome of a reassembly: the verified frame, or why it is refused. */
export type Assembled = { ok: true; net: Net; version: number; frame: Uint8Array } | { ok: false; net: Net; version: number; reason: string };

interface InFlight {
  version: number;
  total: number;
  buf: Uint8Array;
  got: number;
  /** The chunk frames as received, replayed to a child that connects mid-transfer or later. */
  frames: Uint8Array[];
}

/**
 * One worker's reassembly of each net's newest frame. `chunk` and `head` may arrive in either
 * order (different paths); the frame is handed out once both are in and it is complete.
 */
export class WeightsAssembly {
  private readonly inFlight = new Map<Net, InFlight>();
  private readonly heads = new Map<Net, WeightsHeadMsg>();
  /** Versions already handed out (or refused), so a replay cannot hand the same one out twice. */
  private readonly done = new Map<Net, number>();

  constructor(private readonly digest: Digest) {}

  /** The coordinator's announcement; returns a finished assembly if the chunks were all in already. */
  head(msg: WeightsHeadMsg): Assembled | null {
    const prev = this.heads.get(msg.net);
    if (prev && prev.version >= msg.version) return null;
    this.heads.set(msg.net, msg);
    return this.tryFinish(msg.net);
  }

  /** A chunk (decoded) and its frame as received; returns a finished assembly when this completed one. */
  chunk(msg: WeightsChunkMsg, frame: Uint8Array): Assembled | null {
    let f = this.inFlight.get(msg.net);
    if (!f || msg.version > f.version) {
      if (msg.version <= (this.done.get(msg.net) ?? -1)) return null;
      f = { version: msg.version, total: msg.total, buf: new Uint8Array(msg.total), got: 0, frames: [] };
      this.inFlight.set(msg.net, f);
    } else if (msg.version < f.version) return null;
    f.frames.push(frame);
    if (msg.total !== f.total) return { ok: false, net: msg.net, version: msg.version, reason: `chunk says the frame has ${msg.total} bytes, earlier chunks said ${f.total}` };
    f.buf.set(msg.data, msg.offset);
    f.got += msg.data.length;
    return this.tryFinish(msg.net);
  }

  /** Chunk frames of each net's newest transfer, for a child that just connected. */
  replay(): Uint8Array[] {
    return [...this.inFlight.values()].flatMap((f) => f.frames);
  }

  /** The version of `net` the coordinator announced last (undefined: none yet). */
  announced(net: Net): number | undefined {
    return this.heads.get(net)?.version;
  }

  private tryFinish(net: Net): Assembled | null {
    const head = this.heads.get(net);
    const f = this.inFlight.get(net);
    if (!head || !f || f.version !== head.version || f.got < f.total) return null;
    if ((this.done.get(net) ?? -1) >= f.version) return null;
    this.done.set(net, f.version);
    if (f.total !== head.bytes || f.got !== f.total) return { ok: false, net, version: f.version, reason: `reassembled ${f.got} bytes of a ${f.total}-byte frame; the coordinator announced ${head.bytes}` };
    const got = this.digest(f.buf);
    if (!sameBytes(got, head.sha256)) return { ok: false, net, version: f.version, reason: 'the reassembled frame\'s SHA-256 differs from the one the coordinator announced' };
    return { ok: true, net, version: f.version, frame: f.buf };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
