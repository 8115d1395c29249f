// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Finds a key repeated in one object of a JSON text. `JSON.parse` keeps the
 * last of two equal keys without a word, while other parsers keep the first
 * or fail: a frame with a repeated key means different things to different
 * readers, so the JSON-RPC peer refuses it.
 *
 * The scanner runs after `JSON.parse` accepted the text, on every frame: it
 * walks the text once with `charCodeAt`, skips over strings with `indexOf`,
 * and keeps the keys of the open objects on one stack (a `Set` only for an
 * object with many keys). Keys are compared as `JSON.parse` would name the
 * properties: a key with an escape (`"\u0061"`) is decoded first, so it
 * equals the same key written plainly (`"a"`).
 *
 * @module
 */

/** A key that one object of a JSON text holds twice. */
export interface DuplicateKey {
  /** The key, decoded (as `JSON.parse` names the property). */
  key: string;
  /**
   * Where the object that repeats it is: `""` for the top-level value,
   * else its keys and array indexes from the top, such as `params.attrs` or
   * `[2].params` (an empty key is shown as `""`, a key longer than 64
   * characters is cut, and a path longer than 128 characters keeps its end).
   */
  path: string;
}

const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \
const COLON = 0x3a; // :
const COMMA = 0x2c; // ,
const OPEN_OBJECT = 0x7b; // {
const CLOSE_OBJECT = 0x7d; // }
const OPEN_ARRAY = 0x5b; // [
const CLOSE_ARRAY = 0x5d; // ]

/**
 * An object with more keys than this moves them to a `Set`; below it, a
 * linear search of the few keys is faster than hashing them.
 */
const LINEAR_KEYS = 16;

/**
 * Finds the first key (in text order) that repeats a key of the same object.
 * `text` must be valid JSON (`JSON.parse` accepted it); on other text the
 * answer is unspecified, but the function still returns.
 *
 * @example Usage
 * ```ts
 * import { findDuplicateKey } from "./_json_keys.ts";
 * const text = '{"params":{"service":"a","service":"b"}}';
 * console.log(findDuplicateKey(text)); // { key: "service", path: "params" }
 * console.log(findDuplicateKey('{"a":1,"b":{"a":2}}')); // undefined
 * ```
 *
 * @param text A valid JSON text.
 * @returns The repeated key and where its object is, or `undefined` when no
 *   object repeats a key.
 */
export function findDuplicateKey(text: string): DuplicateKey | undefined {
  const at = duplicateKeyAt(text);
  return at < 0 ? undefined : describe(text, at);
}

/**
 * The index of the opening quote of the first repeated key, or -1.
 *
 * Keys are compared where they are in the text, without taking them out
 * of it; a key with an escape is compared by its decoded text (`"a"` and
 * `"\u0061"` are one key). An object with more than
 * {@linkcode LINEAR_KEYS} keys moves them to a `Set`.
 *
 * Whether a string has an escape is read from the string itself: a
 * backslash just before the quote that seems to end it means the quote
 * may be escaped, and a key is looked through for one. The loop uses
 * nothing computed from the whole text: optimized code may redo such a
 * search (`text.indexOf("\\")`) on every character of the loop, which
 * makes the scan quadratic (seconds for a frame of 1 MiB of spaces).
 */
function duplicateKeyAt(text: string): number {
  /** Where the keys of every open object start and end, the innermost's last. */
  const starts: number[] = [];
  const ends: number[] = [];
  /** The decoded text of each key with an escape (`undefined`: none). */
  const decoded: (string | undefined)[] = [];
  /** Keys in `starts`, `ends` and `decoded`. */
  let count = 0;
  /** For each enclosing object: where its keys start, and its `Set`. */
  const bases: number[] = [];
  const sets: (Set<string> | undefined)[] = [];
  let base = 0;
  let set: Set<string> | undefined;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      let end = text.indexOf('"', i + 1);
      // A backslash before the quote may escape it.
      if (text.charCodeAt(end - 1) === BACKSLASH) end = stringEnd(text, i);
      if (end < 0) return -1;
      // A string is a key when a colon follows it.
      const next = skipSpace(text, end + 1);
      if (text.charCodeAt(next) !== COLON) {
        i = end;
        continue;
      }
      const start = i + 1;
      const escaped = hasBackslash(text, start, end)
        ? decodeKey(text, i, end)
        : undefined;
      if (set !== undefined) {
        const key = escaped ?? text.slice(start, end);
        if (set.has(key)) return i;
        set.add(key);
      } else {
        const size = end - start;
        for (let k = base; k < count; k++) {
          if (escaped === undefined && decoded[k] === undefined) {
            if (
              ends[k] - starts[k] === size &&
              sameText(text, starts[k], start, size)
            ) return i;
          } else if (
            (escaped ?? text.slice(start, end)) ===
              (decoded[k] ?? text.slice(starts[k], ends[k]))
          ) return i;
        }
        starts[count] = start;
        ends[count] = end;
        decoded[count] = escaped;
        count++;
        if (count - base > LINEAR_KEYS) {
          set = new Set();
          for (let k = base; k < count; k++) {
            set.add(decoded[k] ?? text.slice(starts[k], ends[k]));
          }
          count = base;
        }
      }
      i = next;
    } else if (c === OPEN_OBJECT) {
      bases.push(base);
      sets.push(set);
      base = count;
      set = undefined;
    } else if (c === CLOSE_OBJECT) {
      if (bases.length === 0) return -1;
      count = base;
      base = bases.pop()!;
      set = sets.pop();
    }
  }
  return -1;
}

/** Whether `text` holds the same `size` characters at `a` and at `b`. */
function sameText(text: string, a: number, b: number, size: number): boolean {
  for (let j = 0; j < size; j++) {
    if (text.charCodeAt(a + j) !== text.charCodeAt(b + j)) return false;
  }
  return true;
}

/** Whether `text` holds a backslash from `start` to before `end`. */
function hasBackslash(text: string, start: number, end: number): boolean {
  for (let j = start; j < end; j++) {
    if (text.charCodeAt(j) === BACKSLASH) return true;
  }
  return false;
}

/**
 * The index of the closing quote of the string whose opening quote is at
 * `start`, or -1 when there is none.
 */
function stringEnd(text: string, start: number): number {
  let end = text.indexOf('"', start + 1);
  while (end > 0) {
    // The quote is escaped when an odd number of backslashes precede it.
    let slashes = 0;
    while (text.charCodeAt(end - 1 - slashes) === BACKSLASH) slashes++;
    if ((slashes & 1) === 0) return end;
    end = text.indexOf('"', end + 1);
  }
  return -1;
}

/** The index of the first character at or after `i` that is not JSON whitespace. */
function skipSpace(text: string, i: number): number {
  let c = text.charCodeAt(i);
  while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
    c = text.charCodeAt(++i);
  }
  return i;
}

/** The key with an escape between the quotes at `start` and `end`, decoded. */
function decodeKey(text: string, start: number, end: number): string {
  try {
    return JSON.parse(text.slice(start, end + 1));
  } catch {
    // not valid JSON after all: the answer is unspecified
    return text.slice(start + 1, end);
  }
}

/** The key between the quotes at `start` and `end`, decoded if it has escapes. */
function keyText(text: string, start: number, end: number): string {
  const raw = text.slice(start + 1, end);
  return raw.indexOf("\\") < 0 ? raw : decodeKey(text, start, end);
}

// ---------------------------------------------------------------------------
// Naming the place: runs only when a key was repeated.

const MAX_KEY_LENGTH = 64;
const MAX_PATH_LENGTH = 128;

/** Describes the repeated key whose opening quote is at `at`. */
function describe(text: string, at: number): DuplicateKey {
  /** For each open container: its current key (object) or index (array). */
  const path: (string | number)[] = [];
  let current: string | number = "";
  for (let i = 0; i < at; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = stringEnd(text, i);
      if (end < 0) break;
      if (text.charCodeAt(skipSpace(text, end + 1)) === COLON) {
        current = keyText(text, i, end);
      }
      i = end;
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      path.push(current);
      current = c === OPEN_ARRAY ? 0 : "";
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      current = path.pop() ?? "";
    } else if (c === COMMA && typeof current === "number") {
      current++;
    }
  }
  // path[0] is what held the top-level value: nothing.
  let shown = "";
  for (let k = 1; k < path.length; k++) {
    const step = path[k];
    shown += typeof step === "number" ? `[${step}]` : (k === 1 ? "" : ".") +
      (step === "" ? '""' : truncate(step, MAX_KEY_LENGTH));
  }
  if (shown.length > MAX_PATH_LENGTH) {
    shown = "..." + shown.slice(shown.length - MAX_PATH_LENGTH + 3);
  }
  const end = stringEnd(text, at);
  return { key: keyText(text, at, end), path: shown };
}

/** `text` cut to `max` characters, with "..." when it was longer. */
function truncate(text: string, max: number): string {
  return text.length > max ? text.slice(0, max - 3) + "..." : text;
}
