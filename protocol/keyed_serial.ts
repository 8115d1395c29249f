// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * One queue per key: the agent's sessions keep the register and unregister
 * calls of one instance in order, and the etcd backend its writes of one key,
 * while calls about other keys run meanwhile.
 *
 * @module
 */

/**
 * Runs tasks one at a time per key, in the order they are given; a task
 * starts once every earlier task of its key has settled, whatever its
 * outcome.
 *
 * @example Usage
 * ```ts
 * import { KeyedSerial } from "./keyed_serial.ts";
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
