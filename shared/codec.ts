/**
 * Frame codec for the protocol in shared/protocol.ts: one msgpack map per binary WebSocket frame.
 *
 * decode() is the trust boundary. It never throws (a peer must not be able to crash us with a
 * frame), and a message it returns matches its interface exactly: known type, right protocol
 * version, every field present with the right type and range, no extra fields, no NaN/Inf in any
 * float, typed arrays as the typed-array classes the interfaces promise. Callers therefore never
 * re-validate and can hand gradients straight to the optimizer.
 *
 * msgpackr behaviour that shapes this file (msgpackr 2.x, as package.json allows):
 * - With moreTypes, Float32Array/Int32Array/Uint8Array travel as msgpack ext 0x74 and decode as
 *   the same class. The decoder always slices them into a fresh ArrayBuffer, so a decoded
 *   Float32Array is aligned (byteOffset 0) and owns its memory; there is exactly one copy of
 *   the payload per frame and none here.
 * - Node Buffers are NOT typed arrays to msgpackr: they go out as plain msgpack bin and come
 *   back as Buffer views into the frame. crypto.randomBytes/createHmac return Buffers, so the
 *   32-byte fields accept any Uint8Array and are normalised to a fresh plain Uint8Array.
 * - Packr.unpack() on a frame with trailing bytes builds its error message by JSON.stringify-ing
 *   the whole decoded value: ~1.7 s of CPU for a 10 MB gradient frame plus one junk byte. We use
 *   unpackMultiple() and stop after the first value, then reject trailing bytes ourselves.
 * - Record extensions still decode with useRecords: false; they only produce plain objects, and
 *   the definitions do not outlive one frame, so validation below covers them.
 *
 * --wire fp16 (shared/float16.ts): encode(msg, { wire: 'fp16' }) sends the weights of welcome and
 * weights messages and the gradient of results as block-scaled halves ({ half: Uint16Array, exp:
 * Int8Array }); decode() validates such a payload (lengths, no Inf/NaN bit patterns, finite after
 * scaling) and hands back the Float32Array the interfaces promise. Which form is expected is not
 * guessed from the frame: a welcome says it in its `wire` field, weights and results must match
 * DecodeLimits.wire, so a peer cannot slip an unrounded float32 gradient into an fp16 run.
 */
import { Packr } from 'msgpackr';
import { encodeHalf, halfBlocks } from './float16.ts';
import { checkMessage, MESSAGE_TYPES, PROTOCOL_VERSION, type Message, type MessageType, type Outgoing, type WireFormat } from './protocol.ts';
import { describe, Invalid, isPlainObject, type DecodeErrorCode, type DecodeLimits } from './schema.ts';

export { DecodeErrorCode, firstNonFinite, type DecodeLimits } from './schema.ts';

export type DecodeResult =
  | { ok: true; msg: Message }
  | {
      ok: false;
      code: DecodeErrorCode;
      reason: string;
      /** Set with PROTOCOL_MISMATCH: the version the peer announced, for "peer speaks X, we speak Y". */
      peerProtocol?: number;
    };

/** Longest rejection reason: it goes into a log line and a bye frame. */
const MAX_REASON_CHARS = 300;

const packr = new Packr({ moreTypes: true, useRecords: false });

export interface EncodeOptions {
  /**
   * fp16: the floats of welcome (g, d), weights and result messages go out as block-scaled
   * halves, and a welcome gets `wire: 'fp16'`. Default fp32 (a welcome's own `wire` counts too).
   */
  wire?: WireFormat;
}

/**
 * Encodes one message, stamping the current protocol version (any `protocol` the caller set is
 * overwritten). Does not validate: the hot path sends a few MB of floats per frame, and the
 * receiving side's decode() is the authority anyway. Use validateMessage() in tests or debug
 * builds to check outgoing messages.
 *
 * The returned bytes are a view into msgpackr's shared output buffer; they stay valid (msgpackr
 * never writes over bytes it has handed out) but may share an ArrayBuffer with other frames.
 */
export function encode(msg: Outgoing<Message> | Message, opts: EncodeOptions = {}): Uint8Array {
  return packr.pack(packable(msg, opts));
}

/** The value msgpack encodes for a message: the protocol version stamped, floats in the wire's form. */
function packable(msg: Outgoing<Message> | Message, opts: EncodeOptions): object {
  const wire = opts.wire ?? (msg.type === 'welcome' ? msg.wire : undefined) ?? 'fp32';
  if (wire === 'fp32') return { ...msg, protocol: PROTOCOL_VERSION };
  switch (msg.type) {
    case 'welcome':
      return {
        ...msg,
        protocol: PROTOCOL_VERSION,
        wire,
        g: { version: msg.g.version, weights: encodeHalf(msg.g.weights) },
        d: { version: msg.d.version, weights: encodeHalf(msg.d.weights) },
      };
    case 'weights':
      return { ...msg, protocol: PROTOCOL_VERSION, weights: encodeHalf(msg.weights) };
    case 'result':
    case 'sum':
      return { ...msg, protocol: PROTOCOL_VERSION, gradient: encodeHalf(msg.gradient) };
    default:
      return { ...msg, protocol: PROTOCOL_VERSION };
  }
}

/**
 * One buffer for a stream of large frames of one kind (a net's weights, a worker's results),
 * written over when the previous frame has left. encode() above writes every frame into fresh
 * memory (msgpackr never writes over bytes it handed out), which for a multi-megabyte frame
 * costs more than the copy itself: new pages, faulted in on first write (1.2 ms against 0.25 ms
 * for 2 MB of weights, measured here). Reusing the buffer is safe only once nothing refers to
 * the previous frame any more: the caller says so (`free`: every socket it was sent on has
 * handed all its bytes to the kernel, i.e. bufferedAmount 0); otherwise the frame goes into
 * fresh memory as with encode(). The bytes are the same either way.
 */
export class ReusableFrame {
  private buf: Buffer | null = null;

  encode(msg: Outgoing<Message> | Message, opts: EncodeOptions, free: boolean): Uint8Array {
    const value = packable(msg, opts);
    // Node only (msgpackr's output buffers are Node Buffers there); a browser's socket copies
    // what it is given anyway, and its transport never says `free`.
    const reusable = free && typeof Buffer === 'function';
    if (!reusable || !this.buf) {
      const frame = packr.pack(value);
      // Sized by the first frame; used from the next one on.
      if (reusable && (!this.buf || this.buf.byteLength < frame.byteLength)) this.buf = Buffer.allocUnsafeSlow(frame.byteLength + 4096);
      return frame;
    }
    packr.useBuffer(this.buf);
    let frame: Uint8Array;
    try {
      frame = packr.pack(value);
    } finally {
      // msgpackr's output buffer is shared by every encode: hand it fresh memory again, so no other
      // frame is ever written into this one.
      packr.useBuffer(Buffer.allocUnsafeSlow(8192));
    }
    // A larger frame than fits went into memory msgpackr allocated: grow for the next one.
    if (frame.buffer !== this.buf.buffer) this.buf = Buffer.allocUnsafeSlow(frame.byteLength + 4096);
    return frame;
  }
}

/**
 * Largest frame carrying `floats` weights or gradient values in this wire format, without the
 * other fields (for frame limits derived from the model).
 */
export function floatPayloadBytes(floats: number, wire: WireFormat = 'fp32'): number {
  return wire === 'fp16' ? 2 * floats + halfBlocks(floats) : 4 * floats;
}

/** Decodes and fully validates one frame. Never throws. */
export function decode(
  frame: Uint8Array | ArrayBuffer | Buffer | Buffer[],
  limits: DecodeLimits,
): DecodeResult {
  try {
    let bytes: Uint8Array;
    if (Array.isArray(frame)) {
      // ws hands over fragmented messages as a list; size-check before paying for the concat
      let total = 0;
      for (const part of frame) {
        if (!(part instanceof Uint8Array)) return fail('FRAME_NOT_MSGPACK', 'frame fragment is not a byte array');
        total += part.byteLength;
      }
      if (total > limits.maxFrameBytes) return tooLarge(total, limits);
      bytes = frame.length === 1 ? frame[0]! : Buffer.concat(frame, total);
    } else if (frame instanceof Uint8Array) {
      bytes = frame;
    } else if (frame instanceof ArrayBuffer) {
      bytes = new Uint8Array(frame);
    } else {
      return fail('FRAME_NOT_MSGPACK', `frame must be bytes, got ${describe(frame)}`);
    }
    if (bytes.byteLength > limits.maxFrameBytes) return tooLarge(bytes.byteLength, limits);
    if (bytes.byteLength === 0) return fail('FRAME_NOT_MSGPACK', 'frame is empty');

    let value: unknown;
    let end = -1;
    try {
      packr.unpackMultiple(bytes, (v: unknown, _start?: number, stop?: number) => {
        value = v;
        end = stop ?? -1;
        return false;
      });
    } catch (err) {
      return fail('FRAME_NOT_MSGPACK', `frame is not valid msgpack: ${errorText(err)}`);
    }
    if (end !== bytes.byteLength) {
      return fail(
        'FRAME_NOT_MSGPACK',
        `frame has trailing bytes: the message ends at byte ${end} of ${bytes.byteLength}`,
      );
    }
    return validateMessage(value, limits);
  } catch (err) {
    // Only reachable through a bug here or in msgpackr; still must not take the process down.
    return fail('FRAME_NOT_MSGPACK', `frame could not be decoded: ${errorText(err)}`);
  }
}

/**
 * Validates an already-decoded value as a Message (what decode() does after parsing). Mutates
 * the value only to normalise 32-byte fields to plain Uint8Arrays and to replace fp16 payloads
 * with the Float32Arrays they decode to. Never throws.
 */
export function validateMessage(value: unknown, limits: DecodeLimits): DecodeResult {
  try {
    if (!isPlainObject(value)) {
      return fail('FRAME_NOT_OBJECT', `frame must hold a msgpack map, got ${describe(value)}`);
    }
    const type = value.type;
    const known = typeof type === 'string' && (MESSAGE_TYPES as readonly string[]).includes(type);
    // Version before type: a newer peer may send a type we have never heard of, and "upgrade"
    // is the useful answer then, not "unknown type".
    const label = known ? (type as string) : 'message';
    if (!Object.hasOwn(value, 'protocol')) return fail('BAD_FIELD', `${label}.protocol is missing`);
    const protocol = value.protocol;
    if (typeof protocol !== 'number' || !Number.isSafeInteger(protocol)) {
      return fail('BAD_FIELD', `${label}.protocol must be an integer, got ${describe(protocol)}`);
    }
    if (protocol !== PROTOCOL_VERSION) {
      return {
        ok: false,
        code: 'PROTOCOL_MISMATCH',
        reason: `peer speaks protocol ${protocol}, this side speaks protocol ${PROTOCOL_VERSION}`,
        peerProtocol: protocol,
      };
    }
    if (!known) {
      return fail(
        'UNKNOWN_TYPE',
        typeof type === 'string'
          ? `unknown message type ${describe(type)}`
          : `message.type must be a string, got ${describe(type)}`,
      );
    }
    checkMessage(type as MessageType, value, limits);
    return { ok: true, msg: value as unknown as Message };
  } catch (err) {
    if (err instanceof Invalid) return fail(err.code, err.message);
    return fail('BAD_FIELD', `message could not be validated: ${errorText(err)}`);
  }
}

function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

function fail(code: DecodeErrorCode, reason: string): DecodeResult {
  // Reasons quote field paths built from the peer's own keys: bound them like any quoted value.
  return { ok: false, code, reason: reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS)}...` : reason };
}

function tooLarge(size: number, limits: DecodeLimits): DecodeResult {
  return fail('FRAME_TOO_LARGE', `frame is ${size} bytes, limit is ${limits.maxFrameBytes}`);
}
