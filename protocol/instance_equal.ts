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

import type { Attrs, Filter, Health, HealthFilter } from "./types.ts";

/** What an instance says of itself: its attributes and its health. */
export interface InstanceState {
  /** Attributes. */
  attrs: Attrs;
  /** Health; absent means `passing` (records written before health existed). */
  health?: Health;
  /** Why it is critical. */
  note?: string;
}

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

/**
 * Whether two versions of an instance say the same: the same attributes,
 * health and note (an absent health is `passing`). Anything else is an
 * `update` for a subscriber that holds the instance, and a write for the
 * registry.
 *
 * @example Usage
 * ```ts
 * import { sameState } from "./instance_equal.ts";
 * sameState({ attrs: {} }, { attrs: {}, health: "passing" }); // true
 * sameState({ attrs: {} }, { attrs: {}, health: "critical" }); // false
 * ```
 *
 * @param a One version.
 * @param b The other.
 * @returns Whether they are equal.
 */
export function sameState(a: InstanceState, b: InstanceState): boolean {
  return (a.health ?? "passing") === (b.health ?? "passing") &&
    a.note === b.note && sameAttrs(a.attrs, b.attrs);
}

/**
 * Whether an instance belongs to a set: its attributes match the filter,
 * and it is passing unless the set takes `any` health.
 *
 * @example Usage
 * ```ts
 * import { selects } from "./instance_equal.ts";
 * selects({ attrs: { zone: "b" }, health: "critical" }, { attrs: { zone: "b" } }); // false
 * selects({ attrs: { zone: "b" }, health: "critical" }, undefined, "any"); // true
 * ```
 *
 * @param instance The instance.
 * @param filter The set's filter; absent matches every attribute.
 * @param health The set's health filter.
 * @returns Whether the instance is in the set.
 */
export function selects(
  instance: InstanceState,
  filter: Filter | undefined,
  health: HealthFilter = "passing",
): boolean {
  return (health === "any" || instance.health !== "critical") &&
    matches(instance.attrs, filter);
}
