// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Equality of instances: when two versions of an instance are the same
 * (no `update` to send, nothing to write), and whether attributes match a
 * filter. The client, the view, the registry and the backends all decide
 * "same" here, so they cannot disagree.
 *
 * @module
 */

import type { Attrs, Filter } from "./types.ts";

/**
 * Whether two attribute maps hold the same keys with the same values (own
 * keys only, order ignored).
 *
 * @example Usage
 * ```ts
 * import { sameAttrs } from "./instance_equal.ts";
 * sameAttrs({ a: "1", b: "2" }, { b: "2", a: "1" }); // true
 * ```
 *
 * @param a One map.
 * @param b The other.
 * @returns Whether they are equal.
 */
export function sameAttrs(a: Attrs, b: Attrs): boolean {
  if (a === b) return true;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const k of keys) {
    if (!Object.hasOwn(b, k) || a[k] !== b[k]) return false;
  }
  return true;
}

/**
 * Whether an instance's attributes match a filter: every attribute named in
 * the filter must be present with exactly the same value.
 *
 * @example Usage
 * ```ts
 * import { matches } from "./instance_equal.ts";
 * matches({ zone: "b", id: "1" }, { attrs: { zone: "b" } }); // true
 * ```
 *
 * @param attrs The instance's attributes.
 * @param filter The filter; an absent filter matches everything.
 * @returns Whether the attributes match.
 */
export function matches(attrs: Attrs, filter: Filter | undefined): boolean {
  const wanted = filter?.attrs;
  if (!wanted) return true;
  for (const key in wanted) {
    if (!Object.hasOwn(attrs, key) || attrs[key] !== wanted[key]) return false;
  }
  return true;
}
