// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * A promise with its resolve and reject functions, like
 * `Promise.withResolvers`, which Node.js 20 lacks.
 *
 * @module
 */

/** A promise and the functions that settle it. */
export interface Deferred<T> {
  /** The promise. */
  promise: Promise<T>;
  /** Resolves it. */
  resolve: (value: T) => void;
  /** Rejects it. */
  reject: (reason: unknown) => void;
}

/**
 * Creates a deferred promise.
 *
 * @returns The promise and its settling functions.
 */
export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
