// Copyright the discover authors. BSD-3-Clause license.

/**
 * How the etcd backend orders and guards its writes: the writes of one key
 * run one at a time ({@linkcode KeyedSerial}: a lease restore must not race
 * an unregister), and a conditional write first checks its conditions
 * against what the watch told of the key ({@linkcode allows}), then lets
 * etcd check the key's version atomically with the write.
 *
 * @module
 */

import type { WriteOptions } from "./backend.ts";
import type { Known } from "./_etcd_record.ts";

/**
 * Whether a write has a condition to check against the stored record.
 *
 * @example Usage
 * ```ts
 * import { isConditional } from "./_etcd_write.ts";
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
 * import { allows } from "./_etcd_write.ts";
 * const ours = (lease: string) => lease === "1";
 * allows({ owner: "a", modRevision: "5", lease: "1" }, { ifOwner: "a" }, ours); // true
 * allows(undefined, { ifKept: true }, ours); // false
 * ```
 *
 * @param known What the store holds for the key, if anything.
 * @param options The write's conditions.
 * @param ours Whether a lease is one of this agent's (current or lost).
 * @returns Whether the write may go ahead.
 */
export function allows(
  known: Known | undefined,
  options: WriteOptions,
  ours: (lease: string) => boolean,
): boolean {
  const owner = known?.owner ?? null;
  if (options.ifOwner !== undefined && owner !== options.ifOwner) {
    return false;
  }
  // Absent, or attached to another agent's lease: not ours to remove.
  if (options.ifKept && (!known || !ours(known.lease))) return false;
  // Written again since: not the record the write was meant for, unless
  // only this agent moved it to a new lease (a restore; any other write
  // through this agent withdraws a pending removal first).
  if (
    options.ifVersion !== undefined &&
    known?.modRevision !== options.ifVersion &&
    !(known && ours(known.lease) && owner === options.ifOwner)
  ) {
    return false;
  }
  return true;
}

/**
 * Runs tasks one at a time per key, in the order they are given; a task
 * starts once every earlier task of its key has settled, whatever its
 * outcome.
 *
 * @example Usage
 * ```ts
 * import { KeyedSerial } from "./_etcd_write.ts";
 * const serial = new KeyedSerial();
 * const order: number[] = [];
 * await Promise.all([
 *   serial.run("k", async () => void order.push(1)),
 *   serial.run("k", async () => void order.push(2)),
 * ]);
 * console.log(order); // [1, 2]
 * ```
 */
export class KeyedSerial {
  #tails = new Map<string, Promise<unknown>>();

  /** Number of keys with a task queued or running. */
  get size(): number {
    return this.#tails.size;
  }

  /**
   * Runs `fn` after every earlier task of `key` has settled.
   *
   * @param key The key.
   * @param fn The task.
   * @returns What the task returns.
   */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const settled = run.catch(() => {});
    this.#tails.set(key, settled);
    settled.then(() => {
      if (this.#tails.get(key) === settled) this.#tails.delete(key);
    });
    return run;
  }
}
