// Copyright the discover authors. BSD-3-Clause license.

/**
 * The frames of the memory backend's data file (`--data-dir`): each entry
 * of the file is one frame,
 *
 * ```text
 * length   u32, little-endian: bytes of the payload
 * crc      u32, little-endian: CRC-32 (IEEE) of the length bytes and the payload
 * payload  UTF-8 JSON object
 * ```
 *
 * so that a reader finds where a write was cut short (a frame that runs
 * past the end of the file, or zero bytes from where a frame is due to
 * the end of the file: a torn write) and where bytes were damaged (a
 * checksum that does not match), and never takes either for an entry.
 *
 * Zeros to the end are what a crash of the host can leave after the last
 * entries on a file system that grows the file's size before its data
 * reaches the disk (ext4 with delayed allocation, XFS): the writes there
 * never reached the disk. Zeros followed by anything else are damage.
 *
 * @module
 */

import { crc32 as zlibCrc32 } from "node:zlib";

/** Bytes before a frame's payload: its length and its checksum. */
export const FRAME_HEADER_BYTES = 8;

/** Largest payload a frame may have: anything larger is damage, not data. */
export const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

/**
 * CRC-32 (IEEE 802.3, as zlib and gzip compute it) of `bytes`, continuing
 * from `crc` (the result of an earlier call over the bytes before).
 *
 * @example Usage
 * ```ts
 * import { crc32 } from "./_durable_frame.ts";
 * crc32(new TextEncoder().encode("123456789")).toString(16); // "cbf43926"
 * ```
 *
 * @param bytes The bytes.
 * @param crc The CRC of the bytes before, if any.
 * @returns The CRC, as an unsigned 32-bit number.
 */
export function crc32(bytes: Uint8Array, crc = 0): number {
  return zlibCrc32(bytes, crc);
}

/** CRC-32 (IEEE) of each byte value, for the bytes of a frame's length. */
const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/**
 * The CRC-32 of the 4 little-endian bytes of `length`, as {@linkcode crc32}
 * computes it, without making an array of them: four table steps cost
 * less than a call into zlib.
 */
function lengthCrc(length: number): number {
  let c = -1;
  for (let i = 0; i < 4; i++, length >>>= 8) {
    c = CRC_TABLE[(c ^ length) & 0xff] ^ (c >>> 8);
  }
  return ~c >>> 0;
}

const encoder = new TextEncoder();

/**
 * Frames appended one after another into one buffer that is used again:
 * the agent writes a frame per change, and a fresh array per frame costs
 * more than its JSON and checksum together.
 *
 * @example Usage
 * ```ts
 * import { FrameBuffer, readFrame } from "./_durable_frame.ts";
 * const frames = new FrameBuffer();
 * frames.add('{"t":"del","rev":7,"service":"web","addr":"h:1"}');
 * const read = readFrame(frames.bytes(), 0);
 * console.log(read.kind); // "frame"
 * frames.clear();
 * console.log(frames.length); // 0
 * ```
 */
export class FrameBuffer {
  #bytes: Uint8Array;
  #view: DataView;
  #length = 0;
  readonly #initial: number;

  /**
   * Creates an empty buffer.
   *
   * @param capacity Bytes it starts with, and goes back to when cleared
   *   after holding more than 16 times as many.
   */
  constructor(capacity = 64 * 1024) {
    this.#initial = capacity;
    this.#bytes = new Uint8Array(capacity);
    this.#view = new DataView(this.#bytes.buffer);
  }

  /** Bytes of the frames added since the last {@linkcode FrameBuffer.clear}. */
  get length(): number {
    return this.#length;
  }

  /**
   * Appends one frame whose payload is `json`.
   *
   * @param json The JSON text of an object.
   * @throws {RangeError} When its UTF-8 is larger than
   *   {@linkcode MAX_PAYLOAD_BYTES}; nothing is appended then.
   */
  add(json: string): void {
    // Each UTF-16 unit takes at least one byte.
    if (json.length > MAX_PAYLOAD_BYTES) tooLarge(json.length, "at least ");
    const at = this.#length;
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    const room = FRAME_HEADER_BYTES + 3 * json.length;
    if (at + room > this.#bytes.length) this.#grow(at + room);
    const bytes = this.#bytes;
    const payload = at + FRAME_HEADER_BYTES;
    const length = encoder.encodeInto(json, bytes.subarray(payload)).written;
    if (length > MAX_PAYLOAD_BYTES) tooLarge(length, "");
    const view = this.#view;
    view.setUint32(at, length, true);
    view.setUint32(
      at + 4,
      crc32(bytes.subarray(payload, payload + length), lengthCrc(length)),
      true,
    );
    this.#length = payload + length;
  }

  /**
   * The frames added since the last {@linkcode FrameBuffer.clear}, one
   * after another: a view of the buffer, valid until the next `add` or
   * `clear`.
   *
   * @returns Their bytes.
   */
  bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }

  /** Drops the frames added, keeping the buffer for the next ones. */
  clear(): void {
    this.#length = 0;
    if (this.#bytes.length > 16 * this.#initial) {
      this.#bytes = new Uint8Array(this.#initial);
      this.#view = new DataView(this.#bytes.buffer);
    }
  }

  #grow(needed: number): void {
    const bytes = new Uint8Array(Math.max(needed, 2 * this.#bytes.length));
    bytes.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer);
  }
}

function tooLarge(length: number, atLeast: string): never {
  throw new RangeError(
    `a data file entry must be at most ${MAX_PAYLOAD_BYTES} bytes: got ${atLeast}${length}`,
  );
}

/**
 * One frame holding `value` as JSON.
 *
 * @example Usage
 * ```ts
 * import { encodeFrame } from "./_durable_frame.ts";
 * encodeFrame({ t: "del", rev: 7 }).length; // 8 + the JSON's length
 * ```
 *
 * @param value A JSON-serialisable object.
 * @returns The frame's bytes.
 * @throws {RangeError} When the JSON is larger than {@linkcode MAX_PAYLOAD_BYTES}.
 */
export function encodeFrame(value: object): Uint8Array {
  const frame = new FrameBuffer(256);
  frame.add(JSON.stringify(value));
  return frame.bytes().slice();
}

/** What {@linkcode readFrame} found at an offset. */
export type FrameRead =
  | {
    /** A whole frame with a matching checksum. */
    kind: "frame";
    /** Its payload, parsed. */
    value: Record<string, unknown>;
    /** Offset just past it: where the next frame starts. */
    end: number;
  }
  | {
    /**
     * A write cut short: the frame runs past the end of the bytes, or
     * every byte from `offset` to the end is zero.
     */
    kind: "torn";
  }
  | {
    /** The bytes there are no frame: damage. */
    kind: "corrupt";
    /** What is wrong, for a message. */
    reason: string;
  };

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads the frame at `offset` of `bytes`.
 *
 * @example Usage
 * ```ts
 * import { encodeFrame, readFrame } from "./_durable_frame.ts";
 * const read = readFrame(encodeFrame({ t: "head" }), 0);
 * read.kind; // "frame"
 * ```
 *
 * @param bytes The file's bytes.
 * @param offset Where the frame starts.
 * @returns The frame, or why there is none.
 */
export function readFrame(bytes: Uint8Array, offset: number): FrameRead {
  if (bytes.length - offset < FRAME_HEADER_BYTES) return { kind: "torn" };
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const length = view.getUint32(offset, true);
  if (length === 0 && zeroToEnd(bytes, offset + 4)) return { kind: "torn" };
  if (length === 0 || length > MAX_PAYLOAD_BYTES) {
    return {
      kind: "corrupt",
      reason:
        `an entry length of ${length} bytes (from 1 to ${MAX_PAYLOAD_BYTES})`,
    };
  }
  const end = offset + FRAME_HEADER_BYTES + length;
  if (end > bytes.length) return { kind: "torn" };
  const payload = bytes.subarray(offset + FRAME_HEADER_BYTES, end);
  const crc = crc32(payload, lengthCrc(length));
  if (crc !== view.getUint32(offset + 4, true)) {
    return { kind: "corrupt", reason: "a checksum that does not match" };
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    return { kind: "corrupt", reason: "an entry that is not JSON" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "corrupt", reason: "an entry that is not a JSON object" };
  }
  return { kind: "frame", value: value as Record<string, unknown>, end };
}

/** Whether every byte of `bytes` from `from` on is zero. */
function zeroToEnd(bytes: Uint8Array, from: number): boolean {
  for (let at = from; at < bytes.length; at++) {
    if (bytes[at] !== 0) return false;
  }
  return true;
}

/**
 * The offset of the first whole frame with a matching checksum at or after
 * `from`, if any: after damage, it tells damage in the middle of a file
 * (whole entries follow) from a write cut short at its end (none do).
 *
 * @example Usage
 * ```ts
 * import { encodeFrame, nextFrame } from "./_durable_frame.ts";
 * const frame = encodeFrame({ t: "head" });
 * const bytes = new Uint8Array([1, 2, 3, ...frame]);
 * nextFrame(bytes, 0); // 3
 * ```
 *
 * @param bytes The file's bytes.
 * @param from Where to start looking.
 * @returns The offset, or `undefined`.
 */
export function nextFrame(bytes: Uint8Array, from: number): number | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const OPEN_BRACE = 0x7b, CLOSE_BRACE = 0x7d;
  for (let at = from; at + FRAME_HEADER_BYTES < bytes.length; at++) {
    const length = view.getUint32(at, true);
    const end = at + FRAME_HEADER_BYTES + length;
    // Cheap tests first: a JSON object payload that fits.
    if (
      length < 2 || end > bytes.length ||
      bytes[at + FRAME_HEADER_BYTES] !== OPEN_BRACE ||
      bytes[end - 1] !== CLOSE_BRACE
    ) continue;
    if (readFrame(bytes, at).kind === "frame") return at;
  }
  return undefined;
}
