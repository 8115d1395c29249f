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
 * past the end of the file: a torn write) and where bytes were damaged (a
 * checksum that does not match), and never takes either for an entry.
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

/** Bytes of `text` in UTF-8 (lone surrogates count as U+FFFD, as TextEncoder writes them). */
function utf8Length(text: string): number {
  let length = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) length += 1;
    else if (
      c >= 0xd800 && c < 0xdc00 && i + 1 < text.length &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      length += 2; // a pair: 4 bytes for 2 units
      i++;
    } else length += 2;
  }
  return length;
}

/**
 * Writes `text` as UTF-8 into `out` from `at`: the agent writes a frame
 * per change, and for these short strings a loop costs a fraction of a
 * `TextEncoder` call.
 */
function utf8Into(text: string, out: Uint8Array, at: number): void {
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      out[at++] = c;
      continue;
    }
    if (c < 0x800) {
      out[at++] = 0xc0 | (c >> 6);
      out[at++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c < 0xe000) {
      const next = text.charCodeAt(i + 1);
      if (c < 0xdc00 && (next & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
        out[at++] = 0xf0 | (c >> 18);
        out[at++] = 0x80 | ((c >> 12) & 0x3f);
        out[at++] = 0x80 | ((c >> 6) & 0x3f);
        out[at++] = 0x80 | (c & 0x3f);
        continue;
      }
      c = 0xfffd;
    }
    out[at++] = 0xe0 | (c >> 12);
    out[at++] = 0x80 | ((c >> 6) & 0x3f);
    out[at++] = 0x80 | (c & 0x3f);
  }
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
  const json = JSON.stringify(value);
  const length = utf8Length(json);
  if (length > MAX_PAYLOAD_BYTES) {
    throw new RangeError(
      `a data file entry must be at most ${MAX_PAYLOAD_BYTES} bytes: got ${length}`,
    );
  }
  const frame = new Uint8Array(FRAME_HEADER_BYTES + length);
  utf8Into(json, frame, FRAME_HEADER_BYTES);
  const view = new DataView(frame.buffer);
  view.setUint32(0, length, true);
  const crc = crc32(
    frame.subarray(FRAME_HEADER_BYTES),
    crc32(frame.subarray(0, 4)),
  );
  view.setUint32(4, crc, true);
  return frame;
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
    /** The frame runs past the end of the bytes: a write cut short. */
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
  const crc = crc32(payload, crc32(bytes.subarray(offset, offset + 4)));
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
