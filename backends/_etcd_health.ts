// Copyright the discover authors. BSD-3-Clause license.

/**
 * Which etcd members calls may go to.
 *
 * The `etcd3` connection pool picks a member at random for every call and
 * only stops using one after several failures in a row. A member that hangs
 * (stopped process, frozen VM, full disk) keeps being picked, and every call
 * that lands on it waits for its whole deadline before going elsewhere.
 *
 * {@linkcode EndpointHealth} leaves a member out from its first failure that
 * points at the member (deadline exceeded, unavailable, ...), until a probe
 * finds it answering again. While every member is left out,
 * calls go to all of them: being slow beats refusing to try.
 *
 * @module
 */

import { castGrpcError, isRecoverableError, RecoverableError } from "etcd3";

/** Checks one member; rejects when it is not healthy. */
export type EndpointProbe = (endpoint: string) => Promise<void>;

/** What {@linkcode EndpointHealth} logs. */
export interface HealthLogger {
  /** A member left out or taken back. */
  info(message: string, fields?: Record<string, unknown>): void;
}

/** Options for {@linkcode EndpointHealth}. */
export interface EndpointHealthOptions {
  /** How often a member that is left out is probed, in ms. Default 500. */
  probeInterval?: number;
  /** Where to log. */
  log?: HealthLogger;
  /** Called when a member is left out (streams on it may want to move). */
  onDown?: (endpoint: string) => void;
}

/** The error a call gets when it is kept away from a member left out. */
export class EndpointDownError extends Error {
  /** Marks the error as transient, so the pool tries another member. */
  readonly [RecoverableError] = true;

  /**
   * @param endpoint The member left out.
   */
  constructor(endpoint: string) {
    super(`etcd member ${endpoint} is left out until it answers a probe`);
    this.name = "EndpointDownError";
  }
}

/**
 * The part of a cockatiel policy that the `etcd3` connection pool uses for
 * each host.
 */
export interface HostPolicy {
  /** Runs `fn`, or refuses to when the member is left out. */
  execute<T>(
    fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T,
    signal?: AbortSignal,
  ): Promise<T>;
}

/** Tracks which etcd members are healthy and hands out per-member policies. */
export class EndpointHealth {
  readonly #endpoints: readonly string[];
  readonly #probe: EndpointProbe;
  readonly #interval: number;
  readonly #log?: HealthLogger;
  readonly #onDown?: (endpoint: string) => void;
  /** Members left out, and whether a probe of each is running. */
  readonly #down = new Map<string, boolean>();
  #timer?: ReturnType<typeof setInterval>;
  #closed = false;

  /**
   * @param endpoints The members, as given to the connection pool.
   * @param probe Checks one member.
   * @param options Probe interval and logger.
   */
  constructor(
    endpoints: readonly string[],
    probe: EndpointProbe,
    options: EndpointHealthOptions = {},
  ) {
    this.#endpoints = endpoints;
    this.#probe = probe;
    this.#interval = options.probeInterval ?? 500;
    this.#log = options.log;
    this.#onDown = options.onDown;
  }

  /** The members left out now. */
  get down(): string[] {
    return [...this.#down.keys()];
  }

  /**
   * Whether calls are kept away from `endpoint` now: it is left out and at
   * least one other member is not.
   *
   * @param endpoint A member.
   * @returns Whether calls skip it.
   */
  skips(endpoint: string): boolean {
    return this.#down.has(endpoint) &&
      this.#down.size < this.#endpoints.length;
  }

  /**
   * Leaves `endpoint` out until a probe finds it healthy.
   *
   * @param endpoint A member.
   * @param reason What went wrong.
   */
  markDown(endpoint: string, reason?: unknown): void {
    if (this.#closed || this.#down.has(endpoint)) return;
    if (!this.#endpoints.includes(endpoint)) return;
    this.#down.set(endpoint, false);
    this.#log?.info("etcd member left out until it answers", {
      endpoint,
      error: reason,
    });
    this.#timer ??= setInterval(() => this.#probeAll(), this.#interval);
    this.#onDown?.(endpoint);
  }

  /**
   * The policy for one member, for the connection pool's
   * `faultHandling.host`.
   *
   * @param endpoint A member.
   * @returns Its policy.
   */
  policy(endpoint: string): HostPolicy {
    return {
      execute: async (fn) => {
        if (this.skips(endpoint)) throw new EndpointDownError(endpoint);
        try {
          return await fn({ signal: new AbortController().signal });
        } catch (error) {
          const cast = error instanceof Error ? castGrpcError(error) : error;
          if (
            cast instanceof Error && isRecoverableError(cast) &&
            !(cast instanceof EndpointDownError)
          ) {
            this.markDown(endpoint, cast);
          }
          throw error;
        }
      },
    };
  }

  /** Stops probing. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#down.clear();
  }

  #probeAll() {
    for (const [endpoint, probing] of this.#down) {
      if (probing) continue;
      this.#down.set(endpoint, true);
      this.#probe(endpoint).then(
        () => {
          if (!this.#down.delete(endpoint) || this.#closed) return;
          this.#log?.info("etcd member answers again", { endpoint });
          if (this.#down.size === 0) {
            clearInterval(this.#timer);
            this.#timer = undefined;
          }
        },
        () => {
          if (this.#down.has(endpoint)) this.#down.set(endpoint, false);
        },
      );
    }
  }
}
