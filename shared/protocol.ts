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
export const PROTOCOL_VERSION = 1;

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
 * dropout masks all derive from `seed`.
 */
export interface ShardSpec {
  shardId: number;
  /** uint32 */
  seed: number;
  rows: number;
  real?: Float32Array;
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
    /** Wire features the worker understands, each <= 16 chars, at most 8 entries. */
    wire: string[];
    /** Most shards the worker accepts in one task, >= 1. */
    maxShards: number;
  };
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
 * coordinator -> worker: compute gradients for these shards against the given weight versions.
 * The worker answers with one result per shard.
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
}

/** worker -> coordinator: the gradient for one shard of a task. */
export interface ResultMsg {
  type: 'result';
  protocol: number;
  taskId: number;
  iteration: number;
  phase: Phase;
  dStep: number;
  shardId: number;
  gradient: Float32Array;
  stats: { loss: number; dReal: number; dFake: number };
  computeMs: number;
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
