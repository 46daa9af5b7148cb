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
 */

/**
 * Bumped whenever a message shape or meaning changes incompatibly. Peers refuse to talk across
 * versions rather than guess, because a silently misread gradient corrupts a run without any
 * visible error.
 */
export const PROTOCOL_VERSION = 2;

export type MessageType =
  | 'hello'
  | 'challenge'
  | 'auth'
  | 'welcome'
  | 'weights'
  | 'task'
  | 'result'
  | 'bye';

/** Kept in one place so the codec can reject unknown types without a parallel hand-kept list. */
export const MESSAGE_TYPES: readonly MessageType[] = [
  'hello',
  'challenge',
  'auth',
  'welcome',
  'weights',
  'task',
  'result',
  'bye',
];

/**
 * How weights and gradients travel (`--wire`, part of the training config): `fp32` as
 * Float32Array; `fp16` as block-scaled half floats (shared/float16.ts HalfFloats, a map
 * `{ half: Uint16Array, exp: Int8Array }`), half the bytes. Only the float arrays of welcome,
 * weights and result change; the codec converts on encode and back to Float32Array on decode, so
 * the interfaces below always hold Float32Array. Task data rows stay float32.
 */
export type WireFormat = 'fp32' | 'fp16';
/** Every wire format this build speaks; a worker advertises them in hello.capabilities.wire. */
export const WIRE_FORMATS: readonly WireFormat[] = ['fp32', 'fp16'];

/** Which network a weights message or training phase refers to. */
export type NetName = 'G' | 'D';
export type Phase = 'D' | 'G';

/** A full copy of one network's flattened parameters, tagged with the version it represents. */
export interface WeightsBlob {
  version: number;
  weights: Float32Array;
}

/**
 * One micro-shard of a phase's global batch. Workers hold no data set: in the D phase the
 * coordinator ships the real rows (`real`, row-major, `real.length / rows` values per row, and
 * `realLabels` for conditional models); G-phase shards have none. Noise, generated labels and
 * dropout masks all derive from `seed`. With the `rows-u8` feature and an 8-bit data set the
 * rows come as `realCodes` instead, one byte per value indexing the welcome's `palette`
 * (shared/data/row-codes.ts); a shard has `real` or `realCodes`, never both.
 */
export interface ShardSpec {
  shardId: number;
  /** uint32 */
  seed: number;
  rows: number;
  real?: Float32Array;
  realCodes?: Uint8Array;
  realLabels?: Int32Array;
}

/** worker -> coordinator: first frame on a new connection. */
export interface HelloMsg {
  type: 'hello';
  protocol: number;
  /** 1..128 chars, stable across reconnects so the coordinator can replace a stale session. */
  workerId: string;
  /** Compute backend name, e.g. "cpu", "wasm"; <= 32 chars. */
  backend: string;
  /** <= 256 chars, for operators only. */
  host: string;
  capabilities: {
    /**
     * Wire features the worker understands, each <= 16 chars, at most 8 entries: wire formats
     * (WIRE_FORMATS) and optional protocol features (PROTOCOL_FEATURES, e.g. `timing`).
     */
    wire: string[];
    /** Most shards the worker accepts in one task, >= 1. */
    maxShards: number;
  };
  /**
   * Present (true) when the worker runs in a browser tab (the coordinator's /join page), so a
   * run started with --no-browser-workers can refuse it. Absent for gan-worker.
   */
  browser?: true;
  /**
   * Present when the worker authenticates with a short-lived join key instead of the run token
   * (coordinator/join-key.ts): the key's expiry, unix seconds. The coordinator derives the key
   * from its token and this expiry and checks the auth HMAC against it.
   */
  joinExpires?: number;
}

/** coordinator -> worker: 32 random bytes the worker must sign. */
export interface ChallengeMsg {
  type: 'challenge';
  protocol: number;
  nonce: Uint8Array;
}

/** worker -> coordinator: HMAC-SHA256(token, nonce), 32 bytes. */
export interface AuthMsg {
  type: 'auth';
  protocol: number;
  hmac: Uint8Array;
}

/** coordinator -> worker: accepted; everything the worker needs to start computing. */
export interface WelcomeMsg {
  type: 'welcome';
  protocol: number;
  runId: string;
  /** The model config, a plain JSON-able object; its schema belongs to the model code. */
  config: Record<string, unknown>;
  /**
   * Encoding of g, d and of every later weights and result message on this connection. Absent
   * means fp32 (so fp32 welcomes are what they were before fp16 existed); the coordinator only
   * sends a format the worker listed in hello.capabilities.wire.
   */
  wire?: WireFormat;
  /**
   * Optional protocol features the coordinator turns on for this connection (PROTOCOL_FEATURES),
   * each one the worker listed in hello.capabilities.wire. Absent means none, so a worker that
   * lists none gets the welcome it always got.
   */
  features?: string[];
  /**
   * With the `rows-u8` feature on and an 8-bit data set: the data set's distinct values (1-256,
   * ascending) that tasks' `realCodes` index. Absent otherwise; tasks then carry `real`.
   */
  palette?: Float32Array;
  g: WeightsBlob;
  d: WeightsBlob;
}

/** coordinator -> worker: a newer version of one network. */
export interface WeightsMsg {
  type: 'weights';
  protocol: number;
  net: NetName;
  version: number;
  weights: Float32Array;
}

/**
 * An aligned block of the phase's sum tree (shared/tree-sum.ts): shards [first, first + count)
 * clipped to [0, shardCount); count a power of two <= the tree size, first a multiple of count.
 */
export interface BlockSpec {
  first: number;
  count: number;
}

/**
 * coordinator -> worker: compute gradients for these shards against the given weight versions.
 * `blocks` groups the shards (in order, each shard in exactly one block); the worker answers
 * with one result per block, the sum of its shards' gradients over the fixed tree.
 */
export interface TaskMsg {
  type: 'task';
  protocol: number;
  taskId: number;
  iteration: number;
  phase: Phase;
  dStep: number;
  gVersion: number;
  dVersion: number;
  /** 1..4096 entries, shardIds unique. */
  shards: ShardSpec[];
  /** S, the phase's shard count (the tree's leaves), >= every shardId + 1. */
  shardCount: number;
  /** Aligned blocks whose shards, concatenated, are exactly `shards`' ids in order. */
  blocks: BlockSpec[];
}

/**
 * worker -> coordinator: the summed gradient of one block of a task (firstShard and count as in
 * the task's blocks): the block's raw tree value (shared/tree-sum.ts blockRawSum; with --wire
 * fp16 the wire rounding then makes it the node's value). `stats` are sums over the block's
 * shards (over the same tree), computeMs the time for all of them.
 */
export interface ResultMsg {
  type: 'result';
  protocol: number;
  taskId: number;
  iteration: number;
  phase: Phase;
  dStep: number;
  firstShard: number;
  count: number;
  gradient: Float32Array;
  stats: { loss: number; dReal: number; dFake: number };
  computeMs: number;
  /** Only when the welcome's `features` has `timing`: where the worker's other time went. */
  timing?: WorkerTiming;
}

/**
 * Optional protocol features, negotiated per connection: the worker lists those it supports in
 * hello.capabilities.wire, the coordinator turns on the ones it wants in welcome.features, and
 * only then does the worker use them. Either side may be older and simply not list a feature.
 *  - timing: results carry `timing` (the time split in the coordinator's progress lines).
 *  - rows-u8: D-phase tasks may carry the real rows as one-byte codes (`realCodes`) into the
 *    welcome's `palette`, a quarter of the bytes of float32 rows.
 */
export const PROTOCOL_FEATURES = ['timing', 'rows-u8'] as const;
export type ProtocolFeature = (typeof PROTOCOL_FEATURES)[number];

/**
 * A worker's time outside computeMs, accumulated since it sent its previous result (ms, each
 * finite and >= 0). Encoding and sending a result can only be measured after it is built, so
 * `encodeMs` and `sendMs` are those of the previous result this worker sent on this connection.
 */
export interface WorkerTiming {
  /** Decoding + validating frames from the coordinator (weights, task). */
  decodeMs: number;
  /** Loading received weights into the worker's model (the single-process trainer does this too). */
  loadMs: number;
  /** Receiving frames: first byte read to the whole message reassembled (WebSocket unmasking and concatenation included). */
  recvMs: number;
  /** Encoding the previous result. */
  encodeMs: number;
  /** Handing the previous result to the socket (masking, the synchronous part of the write). */
  sendMs: number;
}

/** either direction: the sender is about to close; `code` is a stable SCREAMING_SNAKE code. */
export interface ByeMsg {
  type: 'bye';
  protocol: number;
  /** <= 1024 chars, human readable. */
  reason: string;
  /** <= 64 chars. */
  code: string;
}

export type Message =
  | HelloMsg
  | ChallengeMsg
  | AuthMsg
  | WelcomeMsg
  | WeightsMsg
  | TaskMsg
  | ResultMsg
  | ByeMsg;

/** The message interface for a given type tag, e.g. MessageOf<'task'> is TaskMsg. */
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

/**
 * A message as callers build it: the codec stamps `protocol`. Distributes over unions so that
 * Outgoing<Message> stays a discriminated union (plain Omit would collapse it to common keys).
 */
export type Outgoing<T extends Message = Message> = T extends Message ? Omit<T, 'protocol'> : never;
