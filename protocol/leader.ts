// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Who leads a set: its instance with the lowest `created` revision, ties
 * broken by the lower `addr` (in code-unit order). Every agent and every
 * client derives the same leader from the same instances, with no extra
 * writes: a set's instances are ordered by the backend's one revision
 * counter, and an instance keeps its `created` for as long as it lives (a
 * re-registration keeps it; unregistering and registering again gives a
 * new, greater one).
 *
 * `created` is also the leader's fencing token: a later leader of the same
 * set always has a greater one, since every instance that was in the set
 * before it and is still there precedes it, so a resource that remembers
 * the greatest token it has seen can refuse a deposed leader.
 *
 * @module
 */

/** What deciding the leader needs of an instance. */
export interface Ranked {
  /** Revision at which the instance was first registered in its current life. */
  created: number;
  /** Its canonical address. */
  addr: string;
}

/**
 * Whether `a` comes before `b` for leadership: a lower `created`, or the
 * same and a lower `addr`.
 *
 * @example Usage
 * ```ts
 * import { precedes } from "./leader.ts";
 * precedes({ created: 3, addr: "b:1" }, { created: 5, addr: "a:1" }); // true
 * precedes({ created: 5, addr: "b:1" }, { created: 5, addr: "a:1" }); // false
 * ```
 *
 * @param a One instance.
 * @param b The other.
 * @returns Whether `a` leads over `b`.
 */
export function precedes(a: Ranked, b: Ranked): boolean {
  return a.created < b.created || (a.created === b.created && a.addr < b.addr);
}

/**
 * The leader of a set of instances: the one that {@linkcode precedes} all
 * the others.
 *
 * @example Usage
 * ```ts
 * import { leaderOf } from "./leader.ts";
 * leaderOf([
 *   { created: 9, addr: "a:1" },
 *   { created: 4, addr: "c:1" },
 * ]); // { created: 4, addr: "c:1" }
 * leaderOf([]); // undefined
 * ```
 *
 * @param instances The set's instances.
 * @returns Its leader, or `undefined` when it is empty.
 */
export function leaderOf<T extends Ranked>(
  instances: Iterable<T>,
): T | undefined {
  let leader: T | undefined;
  for (const instance of instances) {
    if (leader === undefined || precedes(instance, leader)) leader = instance;
  }
  return leader;
}
