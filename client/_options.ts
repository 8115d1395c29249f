// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The one check of every options object of the client's API: plain
 * JavaScript callers get no type checks, so a key the function does not
 * know is a `TypeError` that names it and says where it belongs, never
 * silently dropped.
 *
 * @module
 */

/** How to check one options object. */
export interface OptionsRule {
  /** Where the object goes, as the message shows it: `register()`, `connect()'s reconnect`. */
  where: string;
  /** The keys it accepts. */
  known: readonly string[];
  /**
   * Where an unknown key belongs instead, given the key and its value
   * (e.g. an attribute given as an option); without it, or when it returns
   * `undefined`, the message lists the known keys.
   */
  hint?: (key: string, value: unknown) => string | undefined;
}

function shown(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  return `${typeof value} ${String(value)}`;
}

/**
 * Checks an options object: `undefined` stands for `{}`; anything but a
 * plain object, and any key not in `rule.known`, is a `TypeError`.
 *
 * @example Usage
 * ```ts
 * import { checkOptions } from "./_options.ts";
 * const rule = { where: "status()", known: ["signal"] };
 * checkOptions({ signal: undefined }, rule); // returns the object
 * try {
 *   checkOptions({ timeout: 1 }, rule);
 * } catch (error) {
 *   console.log((error as TypeError).message);
 *   // "'timeout' is not an option of status(): its options are signal"
 * }
 * ```
 *
 * @param options The options given.
 * @param rule Where they go and which keys they may have.
 * @returns The options (an empty object for `undefined`).
 * @throws {TypeError} When `options` is not an object or has an unknown key.
 */
export function checkOptions<T extends object>(
  options: T | undefined,
  rule: OptionsRule,
): T {
  if (options === undefined) return {} as T;
  if (
    options === null || typeof options !== "object" || Array.isArray(options)
  ) {
    throw new TypeError(
      `the options of ${rule.where} must be an object such as {${
        rule.known[0]
      }: ...}: got ${shown(options)}`,
    );
  }
  for (const key of Object.keys(options)) {
    if (rule.known.includes(key)) continue;
    const where = rule.hint?.(key, (options as Record<string, unknown>)[key]) ??
      `its options are ${rule.known.join(", ")}`;
    throw new TypeError(
      `'${key}' is not an option of ${rule.where}: ${where}`,
    );
  }
  return options;
}
