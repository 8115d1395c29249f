// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Exponential backoff with full jitter: the one retry schedule of the
 * client (reconnection, restoring registrations) and of the agent (etcd
 * resync and lease restore, removals the backend could not make yet).
 *
 * @module
 */

/** Options of {@linkcode Backoff}. */
export interface BackoffOptions {
  /**
   * Upper bound of the first delay, in milliseconds.
   *
   * @default {100}
   */
  initialDelay?: number;
  /**
   * Largest delay, in milliseconds.
   *
   * @default {5000}
   */
  maxDelay?: number;
  /**
   * Full jitter: each delay is random between 0 and its bound, so that
   * many retrying parties do not hit a recovering server at once. Without
   * it each delay is its bound.
   *
   * @default {true}
   */
  jitter?: boolean;
}

/**
 * A backoff schedule: the bound of attempt `n` is
 * `min(maxDelay, initialDelay * 2^n)`.
 *
 * @example Usage
 * ```ts
 * import { Backoff } from "./backoff.ts";
 * const backoff = new Backoff({ initialDelay: 100, maxDelay: 400, jitter: false });
 * console.log(backoff.next(), backoff.next(), backoff.next(), backoff.next());
 * // 100 200 400 400
 * backoff.reset();
 * console.log(backoff.next()); // 100
 * ```
 */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #jitter: boolean;
  #attempt = 0;

  /**
   * Creates a schedule at its first attempt.
   *
   * @param options Delays and jitter.
   */
  constructor(options: BackoffOptions = {}) {
    this.#initial = options.initialDelay ?? 100;
    this.#max = options.maxDelay ?? 5000;
    this.#jitter = options.jitter ?? true;
    for (
      const [name, value] of [["initialDelay", this.#initial], [
        "maxDelay",
        this.#max,
      ]] as const
    ) {
      if (!Number.isFinite(value) || value < 0) {
        throw new RangeError(
          `'${name}' must be a number of milliseconds, at least 0: current value is ${value}`,
        );
      }
    }
  }

  /** Number of delays handed out since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /**
   * The delay before the next attempt; each call moves the schedule on.
   *
   * @returns Milliseconds.
   */
  next(): number {
    const bound = Math.min(
      this.#max,
      this.#initial * 2 ** Math.min(this.#attempt, 30),
    );
    this.#attempt++;
    return this.#jitter ? Math.random() * bound : bound;
  }

  /** Starts the schedule over (after a success). */
  reset(): void {
    this.#attempt = 0;
  }

  /**
   * Sleeps for {@linkcode Backoff.next}'s delay; an abort ends the sleep
   * early (it resolves, and the caller checks its own state).
   *
   * @param signal Ends the sleep early.
   * @returns A promise that resolves after the delay.
   */
  wait(signal?: AbortSignal): Promise<void> {
    const ms = this.next();
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener("abort", done, { once: true });
    });
  }
}
