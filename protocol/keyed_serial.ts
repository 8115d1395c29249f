// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * One queue per key: the agent's sessions keep the register and unregister
 * calls of one instance in order, and the etcd backend its writes of one key,
 * while calls about other keys run meanwhile.
 *
 * @module
 */

/** Where the first task of an idle key starts from. */
const IDLE: Promise<void> = Promise.resolve();

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
    const tails = this.#tails;
    const previous = tails.get(key);
    const run = previous === undefined ? IDLE.then(fn) : previous.then(fn, fn);
    // Settles (never rejects) once `run` has; the key is forgotten then,
    // unless a later task is queued behind it.
    const done = () => {
      if (tails.get(key) === settled) tails.delete(key);
    };
    const settled: Promise<void> = run.then(done, done);
    tails.set(key, settled);
    return run;
  }
}
