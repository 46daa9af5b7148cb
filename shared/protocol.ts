/**
 * Wire protocol between coordinator and workers: every message is one binary WebSocket frame
 * holding one msgpack map (see shared/codec.ts). The shapes below are the whole contract; the
 * codec rejects anything that does not match them exactly, so both sides can trust a decoded
 * message without re-checking it.
 *
 * Handshake: worker sends hello, coordinator answers challenge, worker proves it knows the
 * shared token with auth = HMAC-SHA256(token, nonce), coordinator sends welcome. After that the
 * coordinator streams weights and tasks, the worker streams results, and either side may send
 * bye before closing.
 *
 * Each message is declared once, in MESSAGES: the table gives both its TypeScript type (HelloMsg
 * etc. are Infer<...> of it) and the validator shared/codec.ts runs on every decoded frame
 * (shared/schema.ts). The close and bye codes both sides use are in BYE_CODES below.
 *
 * Over 400 lines because it is the whole contract, every message and every close code, in one
 * place a reader of either side can check.
 */
import { bad, checkShape, describe, f, intArray, Invalid, isPlainObject, int, MAX_INT, f32, keys, shape, str, UINT32_MAX, type DecodeErrorCode, type DecodeLimits, type Fields, type FieldType, type Infer, type Obj, type Shape } from './schema.ts';
import { HALF_BLOCK } from './float16.ts';
import { isAlignedBlock } from './tree-sum.ts';

/**
 * Bumped whenever a message shape or meaning changes incompatibly. Peers refuse to talk across
 * versions rather than guess, because a silently misread gradient corrupts a run without any
 * visible error.
 */
export const PROTOCOL_VERSION = 2;

/**
 * How weights and gradients travel (`--wire`, part of the training config): `fp32` as
 * Float32Array; `fp16` as block-scaled half floats (shared/float16.ts HalfFloats, a map
 * `{ half: Uint16Array, exp: Int8Array }`), half the bytes. Only the float arrays of welcome,
 * weights and result change; the codec converts on encode and back to Float32Array on decode, so
 * the message types always hold Float32Array. Task data rows stay float32.
 */
export const WIRE_FORMATS = ['fp32', 'fp16'] as const;
/** Every wire format this build speaks; a worker advertises them in hello.capabilities.wire. */
export type WireFormat = (typeof WIRE_FORMATS)[number];

/** The two networks; a phase of Algorithm 1 updates the net of the same name. */
export const NETS = ['G', 'D'] as const;
export type Net = (typeof NETS)[number];
export type Phase = Net;
const PHASES = ['D', 'G'] as const satisfies readonly Phase[];

/** Hard cap on shards per task, independent of limits, so one frame cannot fan out without bound. */
export const MAX_TASK_SHARDS = 4096;

/**
 * Optional protocol features, negotiated per connection: the worker lists those it supports in
 * hello.capabilities.wire, the coordinator turns on the ones it wants in welcome.features, and
 * only then does the worker use them. Either side may be older and simply not list a feature.
 *  - timing: results carry `timing` (the time split in the coordinator's progress lines).
 *  - rows-u8: D-phase tasks may carry the real rows as one-byte codes (`realCodes`) into the
 *    welcome's `palette`, a quarter of the bytes of float32 rows.
 *  - relay: the worker can take part in the relay tree (--fan-out; docs/performance.md "Relay
 *    tree"): after the welcome it sends relay-offer, takes weights as weights-head + weights-chunk
 *    and sends its gradients up the tree as sum messages (receipt to the coordinator) once a tree
 *    message placed it. Without the feature (older or browser workers) it stays in the star.
 *  - sum-chunks: sums go up in element ranges (sum.offset/total, tree.sumChunk). The coordinator
 *    turns `relay` on only together with it, so a worker of a build whose sums were whole (it
 *    lists `relay` alone) stays in the star, and a worker of this build under such a coordinator
 *    (which turns `relay` on without `sum-chunks`) stays out of the tree too.
 */
export const PROTOCOL_FEATURES = ['timing', 'rows-u8', 'relay', 'sum-chunks'] as const;
export type ProtocolFeature = (typeof PROTOCOL_FEATURES)[number];

const wireOfLimits = (limits: DecodeLimits): WireFormat => limits.wire ?? 'fp32';

/** A full copy of one network's flattened parameters, tagged with the version it represents. */
const weightsBlob = f.map({
  version: f.int(0),
  // The welcome announces the wire format, so its own floats follow its field, not the limits.
  weights: f.floats((_limits, msg) => (msg.wire as WireFormat | undefined) ?? 'fp32'),
});

/**
 * One micro-shard of a phase's global batch. Workers hold no data set: in the D phase the
 * coordinator ships the real rows (`real`, row-major, `real.length / rows` values per row, and
 * `realLabels` for conditional models); G-phase shards have none. Noise, generated labels and
 * dropout masks all derive from `seed` (uint32). With the `rows-u8` feature and an 8-bit data set
 * the rows come as `realCodes` instead, one byte per value indexing the welcome's `palette`
 * (shared/data/row-codes.ts); a shard has `real` or `realCodes`, never both.
 */
const SHARD = shape({
  shardId: f.custom((s, k, path, _limits, msg) => {
    const shardId = int(s, k, path, 0, MAX_INT);
    if (shardIdsSeen.has(shardId)) bad(`${path}.shardId ${shardId} appears more than once in the task`);
    if (shardId >= (msg.shardCount as number)) bad(`${path}.shardId ${shardId} must be below task.shardCount (${msg.shardCount as number})`);
    shardIdsSeen.add(shardId);
    return shardId;
  }),
  seed: f.int(0, UINT32_MAX),
  rows: f.int(1),
  real: f.optional(
    f.custom((s, k, path, limits): Float32Array => {
      const real = f32(s, k, path, limits);
      const rows = s.rows as number;
      if (real.length === 0 || real.length % rows !== 0) bad(`${path}.real length ${real.length} must be a positive multiple of rows (${rows})`);
      return real;
    }),
  ),
  realCodes: f.optional(
    f.custom((s, k, path, limits): Uint8Array => {
      if (s.real !== undefined) bad(`${path} has both real and realCodes; a shard carries its rows one way`);
      const codes = intArray(s, k, path, limits, Uint8Array);
      const rows = s.rows as number;
      if (codes.length === 0 || codes.length % rows !== 0) bad(`${path}.realCodes length ${codes.length} must be a positive multiple of rows (${rows})`);
      return codes;
    }),
  ),
  realLabels: f.optional(
    f.custom((s, k, path, limits): Int32Array => {
      const labels = intArray(s, k, path, limits, Int32Array);
      const rows = s.rows as number;
      if (labels.length !== rows) bad(`${path}.realLabels length ${labels.length} must equal rows (${rows})`);
      return labels;
    }),
  ),
});
export type ShardSpec = Infer<typeof SHARD.fields>;
/** Shard ids of the task being validated (validation is synchronous, so one set serves all). */
const shardIdsSeen = new Set<number>();

/**
 * An aligned block of the phase's sum tree (shared/tree-sum.ts): shards [first, first + count)
 * clipped to [0, shardCount); count a power of two <= the tree size, first a multiple of count.
 */
export interface BlockSpec {
  first: number;
  count: number;
}

/**
 * A worker's time outside computeMs, accumulated since it sent its previous result (ms, each
 * finite and >= 0). Encoding and sending a result can only be measured after it is built, so
 * `encodeMs` and `sendMs` are those of the previous result this worker sent on this connection.
 *  - decodeMs: decoding + validating frames from the coordinator (weights, task).
 *  - loadMs: loading received weights into the worker's model (the single-process trainer does this too).
 *  - recvMs: receiving frames: first byte read to the whole message reassembled (WebSocket unmasking and concatenation included).
 *  - encodeMs: encoding the previous result.
 *  - sendMs: handing the previous result to the socket (masking, the synchronous part of the write).
 */
const timing = f.map({ decodeMs: f.nonNegative(), loadMs: f.nonNegative(), recvMs: f.nonNegative(), encodeMs: f.nonNegative(), sendMs: f.nonNegative() });
export type WorkerTiming = FieldType<typeof timing>;

/** Most children a tree message may list (the coordinator's --fan-out is capped at it). */
export const MAX_TREE_CHILDREN = 64;
/** Largest weights-chunk payload accepted (the coordinator sends RELAY_CHUNK_BYTES). */
export const MAX_CHUNK_BYTES = 1 << 20;
/** A relay ticket: 16 random bytes, per child and per placement. */
export const TICKET_BYTES = 16;
/** What a tree worker may report about its parent (relay-report). */
export const RELAY_REPORT_CODES = ['RELAY_DIGEST_MISMATCH', 'RELAY_STALLED', 'RELAY_LOST', 'RELAY_UNREACHABLE'] as const;
export type RelayReportCode = (typeof RELAY_REPORT_CODES)[number];
export interface TreeChild {
  workerId: string;
  ticket: Uint8Array;
}
/**
 * Why `url` cannot be a relay's address, or null when it can: '' (no listener) or a ws:// or
 * wss:// URL with a host and no credentials. Children dial what a relay offers, so anything
 * else (http:, ws+unix: sockets on the child's machine, user:pass@) is refused where it enters.
 */
export function relayUrlProblem(url: string): string | null {
  if (url === '') return null;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not a URL';
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return `must be ws:// or wss://, not ${u.protocol}//`;
  if (u.hostname === '') return 'has no host';
  if (u.username !== '' || u.password !== '') return 'must not carry credentials';
  return null;
}

const relayUrl = f.custom((o, k, p): string => {
  const url = str(o, k, p, 0, 512);
  const problem = relayUrlProblem(url);
  if (problem) bad(`${p}.${k} ${problem}`);
  return url;
});

function ticketOf(o: Obj, k: string, p: string, limits: DecodeLimits): Uint8Array {
  const t = intArray(o, k, p, limits, Uint8Array);
  if (t.length !== TICKET_BYTES) bad(`${p}.${k} must be ${TICKET_BYTES} bytes, got ${t.length}`);
  return t;
}

/** Every message: its fields (besides `type` and `protocol`), in the order they are checked. */
export const MESSAGES = {
  /** worker -> coordinator: first frame on a new connection. */
  hello: shape(
    {
      /** Stable across reconnects so the coordinator can replace a stale session. */
      workerId: f.str(1, 128),
      /** Compute backend name, e.g. "cpu", "wasm". */
      backend: f.str(0, 32),
      /** For operators only. */
      host: f.str(0, 256),
      capabilities: f.map({
        /** Wire formats (WIRE_FORMATS) and optional protocol features (PROTOCOL_FEATURES, e.g. `timing`). */
        wire: f.strings(8, 16),
        /** Most shards the worker accepts in one task. */
        maxShards: f.int(1),
      }),
      /**
       * Present (true) when the worker runs in a browser tab (the coordinator's /join page), so a
       * run started with --no-browser-workers can refuse it. Absent for gan-worker.
       */
      browser: f.optional(
        f.custom((o, k, path): true => {
          if (o[k] !== true) bad(`${path}.${k} must be true when present, got ${describe(o[k])}`);
          return true;
        }),
      ),
      /**
       * Present when the worker authenticates with a short-lived join key instead of the run token
       * (coordinator/join-key.ts): the key's expiry, unix seconds. The coordinator derives the key
       * from its token and this expiry and checks the auth HMAC against it.
       */
      joinExpires: f.optional(f.int(0, UINT32_MAX)),
    },
    ['type', 'protocol'],
  ),

  /** coordinator -> worker: 32 random bytes the worker must sign. */
  challenge: shape({ nonce: f.bytes32() }, ['type', 'protocol']),

  /** worker -> coordinator: HMAC-SHA256(token, nonce), 32 bytes. */
  auth: shape({ hmac: f.bytes32() }, ['type', 'protocol']),

  /** coordinator -> worker: accepted; everything the worker needs to start computing. */
  welcome: shape(
    {
      runId: f.str(1, 256),
      /** The model config, a plain JSON-able object; its schema belongs to the model code. */
      config: f.json(),
      /**
       * Encoding of g, d and of every later weights and result message on this connection. Absent
       * means fp32; the coordinator only sends a format the worker listed in hello.capabilities.wire.
       */
      wire: f.optional(f.oneOf(WIRE_FORMATS)),
      g: weightsBlob,
      d: weightsBlob,
      /**
       * Optional protocol features the coordinator turns on for this connection (PROTOCOL_FEATURES),
       * each one the worker listed in hello.capabilities.wire. Absent means none.
       */
      features: f.optional(f.strings(8, 16)),
      /**
       * With the `rows-u8` feature on and an 8-bit data set: the data set's distinct values (1-256,
       * ascending) that tasks' `realCodes` index. Absent otherwise; tasks then carry `real`.
       */
      palette: f.optional(
        f.custom((o, k, path, limits) => {
          const palette = f32(o, k, path, limits);
          if (palette.length < 1 || palette.length > 256) bad(`welcome.palette has ${palette.length} values; it must have 1 to 256`);
          return palette;
        }),
      ),
    },
    ['type', 'protocol'],
  ),

  /** coordinator -> worker: a newer version of one network. */
  weights: shape({ net: f.oneOf(NETS), version: f.int(0), weights: f.floats(wireOfLimits) }, ['type', 'protocol']),

  /**
   * coordinator -> worker: compute gradients for these shards against the given weight versions.
   * `blocks` groups the shards (in order, each shard in exactly one block); the worker answers
   * with one result per block, the sum of its shards' gradients over the fixed tree.
   */
  task: shape(
    {
      taskId: f.int(0),
      iteration: f.int(0),
      phase: f.oneOf(PHASES),
      dStep: f.int(0),
      gVersion: f.int(0),
      dVersion: f.int(0),
      /** S, the phase's shard count (the tree's leaves), >= every shardId + 1. */
      shardCount: f.int(1),
      /** 1..MAX_TASK_SHARDS (and limits.maxShards) entries, shardIds unique. */
      shards: f.custom((o, k, p, limits, msg): ShardSpec[] => {
        const shards = o[k];
        if (!Array.isArray(shards)) {
          if (!Object.hasOwn(o, k)) bad(`${p}.${k} is missing`);
          bad(`task.shards must be an array, got ${describe(shards)}`);
        }
        const cap = Math.min(MAX_TASK_SHARDS, limits.maxShards ?? MAX_TASK_SHARDS);
        if (shards.length > cap) throw new Invalid('ARRAY_TOO_LARGE', `task.shards has ${shards.length} entries, limit is ${cap}`);
        if (shards.length === 0) bad('task.shards must have at least 1 entry, got 0');
        shardIdsSeen.clear();
        for (let i = 0; i < shards.length; i++) {
          const s: unknown = shards[i];
          if (!isPlainObject(s)) bad(`task.shards[${i}] must be a map, got ${describe(s)}`);
          checkShape(s, `task.shards[${i}]`, SHARD as Shape<Fields>, limits, msg);
        }
        shardIdsSeen.clear();
        return shards as ShardSpec[];
      }),
      /** Aligned blocks whose shards, concatenated, are exactly `shards`' ids in order. */
      blocks: f.custom((o, k, p, _limits): BlockSpec[] => {
        const blocks = o[k];
        const shards = o.shards as Obj[];
        const shardCount = o.shardCount as number;
        if (!Array.isArray(blocks)) {
          if (!Object.hasOwn(o, k)) bad(`${p}.${k} is missing`);
          bad(`task.blocks must be an array, got ${describe(blocks)}`);
        }
        if (blocks.length === 0 || blocks.length > shards.length) bad(`task.blocks must have 1 to ${shards.length} entries (one per block of the task's shards), got ${blocks.length}`);
        let next = 0;
        for (let i = 0; i < blocks.length; i++) {
          const b: unknown = blocks[i];
          const path = `task.blocks[${i}]`;
          if (!isPlainObject(b)) bad(`${path} must be a map, got ${describe(b)}`);
          keys(b, path, ['first', 'count']);
          const first = int(b, 'first', path, 0, shardCount - 1);
          const count = int(b, 'count', path, 1, MAX_INT);
          if (!isAlignedBlock(first, count, shardCount)) bad(`${path} [${first}, ${first} + ${count}) is not an aligned block of the sum tree over ${shardCount} shards`);
          const end = Math.min(first + count, shardCount);
          for (let id = first; id < end; id++, next++) {
            const shard = shards[next] as Obj | undefined;
            if (!shard || shard.shardId !== id) bad(`${path} covers shard ${id}, but task.shards[${next}] is ${shard ? `shard ${String(shard.shardId)}` : 'missing'}: blocks must cover exactly the task's shards, in order`);
          }
        }
        if (next !== shards.length) bad(`task.blocks cover ${next} shards, but the task has ${shards.length}`);
        return blocks as BlockSpec[];
      }),
    },
    ['type', 'protocol'],
  ),

  /**
   * worker -> coordinator: the summed gradient of one block of a task (firstShard and count as in
   * the task's blocks): the block's raw tree value (shared/tree-sum.ts blockRawSum; with --wire
   * fp16 the wire rounding then makes it the node's value). `stats` are sums over the block's
   * shards (over the same tree), computeMs the time for all of them.
   */
  result: shape(
    {
      taskId: f.int(0),
      iteration: f.int(0),
      phase: f.oneOf(PHASES),
      dStep: f.int(0),
      firstShard: f.int(0),
      count: f.custom((o, k, p) => {
        const count = int(o, k, p, 1, MAX_INT);
        const firstShard = o.firstShard as number;
        if (count > 2 ** 30 || (count & (count - 1)) !== 0 || firstShard % count !== 0) bad(`result block [${firstShard}, ${firstShard} + ${count}) must be aligned: count a power of two, firstShard a multiple of it`);
        return count;
      }),
      gradient: f.floats(wireOfLimits),
      stats: f.map({ loss: f.finite(), dReal: f.finite(), dFake: f.finite() }),
      computeMs: f.nonNegative(),
      /** Only when the welcome's `features` has `timing`: where the worker's other time went. */
      timing: f.optional(timing),
    },
    ['type', 'protocol'],
  ),

  // ----- relay tree (the `relay` feature; coordinator/relay-tree.ts, worker/tree-link.ts) -----

  /**
   * worker -> coordinator, once after a welcome with the `relay` feature: where children may dial
   * this worker (its --relay-listen / --relay-advertise URL), or '' for a leaf (behind NAT, no listener).
   */
  'relay-offer': shape({ url: relayUrl }, ['type', 'protocol']),

  /**
   * coordinator -> worker: its place in the tree. parentUrl '' means the coordinator itself
   * (weights chunks and sums on this connection); otherwise the worker dials parentUrl and
   * presents `ticket`. `children` are the workers it must accept, each with its own ticket.
   */
  tree: shape(
    {
      parentUrl: relayUrl,
      ticket: f.optional(f.custom((o, k, p, limits) => ticketOf(o, k, p, limits))),
      children: f.custom((o, k, p, limits): TreeChild[] => {
        const list = o[k];
        if (!Array.isArray(list)) {
          if (!Object.hasOwn(o, k)) bad(`${p}.${k} is missing`);
          bad(`${p}.children must be an array, got ${describe(list)}`);
        }
        if (list.length > MAX_TREE_CHILDREN) throw new Invalid('ARRAY_TOO_LARGE', `${p}.children has ${list.length} entries, limit is ${MAX_TREE_CHILDREN}`);
        list.forEach((c: unknown, i: number) => {
          const path = `${p}.children[${i}]`;
          if (!isPlainObject(c)) bad(`${path} must be a map, got ${describe(c)}`);
          keys(c, path, ['workerId', 'ticket']);
          if (typeof c.workerId !== 'string' || c.workerId.length < 1 || c.workerId.length > 128) bad(`${path}.workerId must be a string of 1 to 128 characters`);
          ticketOf(c, 'ticket', path, limits);
        });
        return list as TreeChild[];
      }),
      /** Values per range of a sum (a multiple of the fp16 wire's scale block, shared/sum-chunks.ts). */
      sumChunk: f.custom((o, k, p) => {
        const n = int(o, k, p, HALF_BLOCK, MAX_INT);
        if (n % HALF_BLOCK !== 0) bad(`${p}.sumChunk is ${n}; it must be a multiple of ${HALF_BLOCK}`);
        return n;
      }),
    },
    ['type', 'protocol'],
  ),

  /**
   * coordinator -> every tree worker, directly: the next version of a net travels down the tree
   * as the chunks of one encoded `weights` frame of `bytes` bytes whose SHA-256 is `sha256`. A
   * worker uses reassembled weights only when the digest matches, so a relay cannot inject any.
   */
  'weights-head': shape({ net: f.oneOf(NETS), version: f.int(0), bytes: f.int(1), sha256: f.bytes32() }, ['type', 'protocol']),

  /** coordinator or relay -> child: bytes [offset, offset + data.length) of the frame announced by weights-head. */
  'weights-chunk': shape(
    {
      net: f.oneOf(NETS),
      version: f.int(0),
      total: f.int(1),
      offset: f.int(0),
      data: f.custom((o, k, p): Uint8Array => {
        const data = o[k];
        // Bounded by MAX_CHUNK_BYTES, not by the model's float limit (a chunk is bytes of a frame).
        if (!(data instanceof Uint8Array) || data.constructor !== Uint8Array) {
          if (!Object.hasOwn(o, k)) bad(`${p}.${k} is missing`);
          bad(`${p}.${k} must be a Uint8Array, got ${describe(data)}`);
        }
        if (data.length === 0 || data.length > MAX_CHUNK_BYTES) bad(`${p}.data has ${data.length} bytes; a chunk has 1 to ${MAX_CHUNK_BYTES}`);
        if ((o.offset as number) + data.length > (o.total as number)) bad(`${p} [${o.offset as number}, +${data.length}) runs past total ${o.total as number}`);
        return data;
      }),
    },
    ['type', 'protocol'],
  ),

  /**
   * coordinator -> relay: the shards its subtree (itself included) was handed in this phase so
   * far. The relay forwards its combined sums once they cover them all, or after waitMs with
   * whatever it has (a bounded wait: a child may be gone).
   */
  'relay-expect': shape(
    {
      iteration: f.int(0),
      phase: f.oneOf(PHASES),
      dStep: f.int(0),
      shardCount: f.int(1),
      shards: f.custom((o, k, p, limits): Int32Array => {
        const ids = intArray(o, k, p, limits, Int32Array);
        for (const id of ids) if (id < 0 || id >= (o.shardCount as number)) bad(`${p}.shards has ${id}, outside [0, ${o.shardCount as number})`);
        return ids;
      }),
      waitMs: f.int(1, 600_000),
    },
    ['type', 'protocol'],
  ),

  /**
   * worker -> its parent (a relay, or the coordinator for a top-level child): the raw tree value
   * of one aligned block of the phase, its own or combined from its subtree (shared/tree-sum.ts
   * nodeRawSum; the wire's rounding makes it the node's value, as for result).
   */
  sum: shape(
    {
      iteration: f.int(0),
      phase: f.oneOf(PHASES),
      dStep: f.int(0),
      shardCount: f.int(1),
      firstShard: f.int(0),
      count: f.custom((o, k, p) => {
        const count = int(o, k, p, 1, MAX_INT);
        const first = o.firstShard as number;
        if (!isAlignedBlock(first, count, o.shardCount as number)) bad(`sum block [${first}, ${first} + ${count}) is not an aligned block of the sum tree over ${o.shardCount as number} shards`);
        return count;
      }),
      gradient: f.floats(wireOfLimits),
      /**
       * The element range this frame carries: gradient[i] is element offset + i of the block's
       * flat gradient of `total` values. Sums travel in ranges of the tree message's `sumChunk`
       * values (shared/sum-chunks.ts) so a relay forwards range k as soon as its children's
       * range k is in, not after their whole sums.
       */
      offset: f.int(0),
      /** The block's whole length; the receiver checks it against the model and the range against sumChunk. */
      total: f.int(1),
      stats: f.map({ loss: f.finite(), dReal: f.finite(), dFake: f.finite() }),
    },
    ['type', 'protocol'],
  ),

  /**
   * tree worker -> coordinator, directly: it finished this block of its task (the gradient went up
   * the tree as a sum). Tiny; it keeps the coordinator's speed estimates and liveness per worker.
   */
  receipt: shape(
    {
      taskId: f.int(0),
      firstShard: f.int(0),
      count: f.int(1, 2 ** 30),
      computeMs: f.nonNegative(),
      timing: f.optional(timing),
    },
    ['type', 'protocol'],
  ),

  /** tree worker -> coordinator: something is wrong with its parent; the coordinator re-parents it. */
  'relay-report': shape(
    {
      code: f.oneOf(RELAY_REPORT_CODES),
      /** The parent's URL as the worker knew it. */
      parentUrl: relayUrl,
      net: f.optional(f.oneOf(NETS)),
      version: f.optional(f.int(0)),
      detail: f.str(0, 1024),
    },
    ['type', 'protocol'],
  ),

  /** child -> relay: first frame on a relay connection: who it is and the ticket the coordinator gave it. */
  'relay-hello': shape({ workerId: f.str(1, 128), ticket: f.custom((o, k, p, limits) => ticketOf(o, k, p, limits)) }, ['type', 'protocol']),

  /** relay -> child: the ticket is good; chunks follow. */
  'relay-welcome': shape({}, ['type', 'protocol']),

  /** either direction: the sender is about to close; `code` is a BYE_CODES key (peers may send others). */
  bye: shape({ /** human readable */ reason: f.str(0, 1024), code: f.str(0, 64) }, ['type', 'protocol']),
};

export type MessageType = keyof typeof MESSAGES;
/** Every message type, in declaration order (the codec rejects any other). */
export const MESSAGE_TYPES = Object.keys(MESSAGES) as readonly MessageType[];
/** The message with a given type tag, e.g. MessageOf<'task'> is TaskMsg. */
export type MessageOf<T extends MessageType> = { type: T; protocol: number } & Infer<(typeof MESSAGES)[T]['fields']>;
export type Message = { [T in MessageType]: MessageOf<T> }[MessageType];
export type HelloMsg = MessageOf<'hello'>;
export type ChallengeMsg = MessageOf<'challenge'>;
export type AuthMsg = MessageOf<'auth'>;
export type WelcomeMsg = MessageOf<'welcome'>;
export type WeightsMsg = MessageOf<'weights'>;
export type TaskMsg = MessageOf<'task'>;
export type ResultMsg = MessageOf<'result'>;
export type ByeMsg = MessageOf<'bye'>;
export type WeightsBlob = WelcomeMsg['g'];
export type TreeMsg = MessageOf<'tree'>;
export type WeightsHeadMsg = MessageOf<'weights-head'>;
export type WeightsChunkMsg = MessageOf<'weights-chunk'>;
export type RelayExpectMsg = MessageOf<'relay-expect'>;
export type SumMsg = MessageOf<'sum'>;
export type ReceiptMsg = MessageOf<'receipt'>;
export type RelayReportMsg = MessageOf<'relay-report'>;

/**
 * A message as callers build it: the codec stamps `protocol`. Distributes over unions so that
 * Outgoing<Message> stays a discriminated union (plain Omit would collapse it to common keys).
 */
export type Outgoing<T extends Message = Message> = T extends Message ? Omit<T, 'protocol'> : never;

/** Validates a decoded map whose `type` is a known MessageType (the codec checks version and type first). */
export function checkMessage(type: MessageType, o: Obj, limits: DecodeLimits): void {
  checkShape(o, type, MESSAGES[type] as Shape<Fields>, limits, o);
}

// ---------------------------------------------------------------------------------------------
// Close and bye codes: one table for both sides.

/** WebSocket close codes for protocol-level reasons (the application range is 4000-4999). */
export const WS_CLOSE = {
  /** A frame failed to decode, or a valid message arrived when it makes no sense (e.g. task before welcome). */
  protocolError: 4000,
  /** The auth HMAC was wrong or arrived too late; the worker should not retry with the same token. */
  authFailed: 4001,
  /** The peer speaks another PROTOCOL_VERSION; retrying cannot help until one side is upgraded. */
  versionMismatch: 4002,
  /** The coordinator refuses this worker (too many bad results or failed auths); do not reconnect. */
  banned: 4003,
  /** The sender is stopping cleanly; a worker may reconnect later. */
  shuttingDown: 4004,
  /** A newer connection with the same workerId took over this one; the old one must not reconnect. */
  replaced: 4005,
  /** The worker lacks a capability the run needs (e.g. --wire fp16); retrying cannot help until it is upgraded. */
  unsupported: 4006,
  /** The worker stopped reading: more than the coordinator's bound queued for it (SLOW_CONSUMER). It may reconnect. */
  slowConsumer: 4007,
} as const;
export type WsCloseCode = (typeof WS_CLOSE)[keyof typeof WS_CLOSE];
/** RFC 6455 codes used beside them: a normal closure, and "try again later" (handshakes queued). */
const WS_NORMAL = 1000;
const WS_TRY_AGAIN_LATER = 1013;

interface ByeSpec {
  /** The WebSocket close code sent with this bye. */
  close: number;
  /** Reconnecting cannot help: the worker exits 2 with this code. */
  fatal?: true;
}

const protocolError = { close: WS_CLOSE.protocolError } as const;

/**
 * Every bye code (the `code` of a bye, the reason of the close frame) with its close code. A close
 * code whose every bye is fatal tells a worker to stop even when no bye arrived.
 */
export const BYE_CODES = {
  // decode() rejected a frame (shared/schema.ts DecodeErrorCode)
  FRAME_TOO_LARGE: protocolError,
  FRAME_NOT_MSGPACK: protocolError,
  FRAME_NOT_OBJECT: protocolError,
  UNKNOWN_TYPE: protocolError,
  PROTOCOL_MISMATCH: { close: WS_CLOSE.versionMismatch, fatal: true },
  BAD_FIELD: protocolError,
  NON_FINITE: protocolError,
  ARRAY_TOO_LARGE: protocolError,
  // a valid message at the wrong time, or one the coordinator cannot accept
  TEXT_FRAME: protocolError,
  HANDSHAKE_TIMEOUT: protocolError,
  UNEXPECTED_HELLO: protocolError,
  UNEXPECTED_AUTH: protocolError,
  NOT_AUTHENTICATED: protocolError,
  UNEXPECTED_MESSAGE: protocolError,
  RESULT_NOT_ASSIGNED: protocolError,
  GRADIENT_SIZE: protocolError,
  BAD_WELCOME: protocolError,
  /** A relay connection whose relay-hello names no child this relay was told to accept, or a wrong ticket. */
  RELAY_TICKET: { close: WS_CLOSE.authFailed },
  /** A relay connection whose first frame was not relay-hello, or which took too long to send it. */
  RELAY_HANDSHAKE: protocolError,
  /** A sum for shards the sender's subtree was never handed. */
  SUM_NOT_ASSIGNED: protocolError,
  // refusals
  AUTH_FAILED: { close: WS_CLOSE.authFailed, fatal: true },
  /** A hello with joinExpires whose join key has expired or claims too long a life (coordinator/join-key.ts). */
  JOIN_KEY_EXPIRED: { close: WS_CLOSE.authFailed, fatal: true },
  BANNED: { close: WS_CLOSE.banned, fatal: true },
  REPLACED: { close: WS_CLOSE.replaced, fatal: true },
  WIRE_UNSUPPORTED: { close: WS_CLOSE.unsupported, fatal: true },
  /** A browser hello (hello.browser) on a run started with --no-browser-workers. */
  BROWSER_WORKERS_REFUSED: { close: WS_CLOSE.unsupported, fatal: true },
  SLOW_CONSUMER: { close: WS_CLOSE.slowConsumer },
  TOO_MANY_PENDING: { close: WS_TRY_AGAIN_LATER },
  // the worker's own lasting conditions (it closes, and keeps the code for its exit)
  TOKEN_REQUIRED: { close: WS_NORMAL, fatal: true },
  BACKEND_CANNOT_TRAIN: { close: WS_CLOSE.protocolError, fatal: true },
  /** A browser tab cannot compute the auth HMAC (no WebCrypto: a page over plain http from another machine). */
  HMAC_UNAVAILABLE: { close: WS_NORMAL, fatal: true },
  // clean endings
  SHUTTING_DOWN: { close: WS_CLOSE.shuttingDown },
  RUN_FINISHED: { close: WS_CLOSE.shuttingDown },
  COORDINATOR_STOPPING: { close: WS_CLOSE.shuttingDown },
  WORKER_STOPPING: { close: WS_NORMAL },
  BYE: { close: WS_NORMAL },
} as const satisfies Record<string, ByeSpec> & Record<DecodeErrorCode, ByeSpec>;
export type ByeCode = keyof typeof BYE_CODES;

/** The close code that goes with a bye code (e.g. after decode() rejected a frame with it). */
export function closeCodeFor(code: ByeCode): number {
  return BYE_CODES[code].close;
}

/** Close codes every bye of which is fatal, each with its first bye code (used when no bye arrived). */
const FATAL_CLOSE: ReadonlyMap<number, ByeCode> = (() => {
  const byClose = new Map<number, ByeCode[]>();
  for (const [code, spec] of Object.entries(BYE_CODES) as [ByeCode, ByeSpec][]) byClose.set(spec.close, [...(byClose.get(spec.close) ?? []), code]);
  const out = new Map<number, ByeCode>();
  for (const [close, codes] of byClose) if (codes.every((c) => (BYE_CODES[c] as ByeSpec).fatal)) out.set(close, codes[0]!);
  return out;
})();

/**
 * Why a connection that closed with `close` (after a bye with code `bye`, if any) must not be
 * retried, or undefined when reconnecting may help.
 */
export function fatalCode(close: number, bye: string | undefined): string | undefined {
  const byClose = FATAL_CLOSE.get(close);
  if (byClose) return bye ?? byClose;
  // A fatal bye whose close code is shared with retryable ones (TOKEN_REQUIRED, BACKEND_CANNOT_TRAIN).
  if (bye === undefined || !Object.hasOwn(BYE_CODES, bye)) return undefined;
  const spec: ByeSpec = BYE_CODES[bye as ByeCode];
  if (spec.fatal && !FATAL_CLOSE.has(spec.close)) return bye;
  return undefined;
}
