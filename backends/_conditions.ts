// Copyright the discover authors. BSD-3-Clause license.

/**
 * The conditions of a write (`WriteOptions`: `ifOwner`, `ifKept`,
 * `ifVersion`) checked against what a backend knows of the stored record,
 * the same way by every backend: etcd (a key's owner, modification
 * revision and lease) and ZooKeeper (a znode's owner, `mzxid` and session).
 *
 * @module
 */

import type { WriteOptions } from "./backend.ts";

/** What a backend knows of a stored record, as the conditions need it. */
export interface KnownRecord {
  /** The record's owner (`null`: what is stored is not a record). */
  owner: string | null;
  /** The store's version of the record (etcd: mod revision; ZooKeeper: mzxid). */
  version: string;
  /** Whether this agent keeps the record alive (its lease or session, current or lost). */
  ours: boolean;
}

/**
 * Whether a write has a condition to check against the stored record.
 *
 * @example Usage
 * ```ts
 * import { isConditional } from "./_conditions.ts";
 * isConditional({}); // false
 * isConditional({ ifOwner: null }); // true
 * ```
 *
 * @param options The write's options.
 * @returns Whether it is conditional.
 */
export function isConditional(options: WriteOptions): boolean {
  return options.ifOwner !== undefined || options.ifKept === true ||
    options.ifVersion !== undefined;
}

/**
 * Whether a write's conditions hold for the record as `known` says it is.
 *
 * @example Usage
 * ```ts
 * import { allows } from "./_conditions.ts";
 * allows({ owner: "a", version: "5", ours: true }, { ifOwner: "a" }); // true
 * allows(undefined, { ifKept: true }); // false
 * ```
 *
 * @param known What the store holds for the record, if anything.
 * @param options The write's conditions.
 * @returns Whether the write may go ahead.
 */
export function allows(
  known: KnownRecord | undefined,
  options: WriteOptions,
): boolean {
  const owner = known?.owner ?? null;
  if (options.ifOwner !== undefined && owner !== options.ifOwner) {
    return false;
  }
  // Absent, or kept alive by another agent: not ours to remove.
  if (options.ifKept && !known?.ours) return false;
  // Written again since: not the record the write was meant for, unless
  // only this agent moved it (a restore; any other write through this
  // agent withdraws a pending removal first).
  if (
    options.ifVersion !== undefined &&
    known?.version !== options.ifVersion &&
    !(known?.ours && owner === options.ifOwner)
  ) {
    return false;
  }
  return true;
}
