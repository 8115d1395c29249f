// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend's one retry loop (connect at start, resync, lease
 * restore, catch-up), on the shared backoff schedule, and the one line it
 * logs per failed attempt: which members, what went wrong in words (not
 * the gRPC library's text), and when the next attempt is, e.g.
 * `etcd at 127.0.0.1:2379: could not connect (connection refused); retrying in 1.6 s`.
 *
 * @module
 */

import { Backoff, type BackoffOptions } from "../protocol/backoff.ts";
import type { BackendLogger } from "./descriptor.ts";

/** Retries of the start, the resync, the lease restore and the catch-up. */
export const RETRY: BackoffOptions = { initialDelay: 250, maxDelay: 4000 };

/** Options of {@linkcode retrying}. */
export interface RetryingOptions {
  /** Ends the loop (and the wait between attempts). */
  signal: AbortSignal;
  /** The members, as in `etcd at ...`. */
  endpoints: readonly string[];
  /** Where each failure is logged. */
  log?: BackendLogger;
  /** Called with each failure, before the wait. */
  onFailure?: (error: unknown) => void;
  /**
   * The schedule.
   *
   * @default {RETRY}
   */
  backoff?: BackoffOptions;
}

/**
 * Runs `attempt` until it says it is done (`true`) or `signal` aborts; a
 * failure is logged and waits out the backoff, a `false` tries again at
 * once.
 *
 * @example Usage
 * ```ts
 * import { retrying } from "./_etcd_retry.ts";
 * let tries = 0;
 * await retrying("connect", async () => {
 *   if (++tries < 2) throw new Error("connect ECONNREFUSED 127.0.0.1:2379");
 *   return true;
 * }, {
 *   signal: new AbortController().signal,
 *   endpoints: ["http://127.0.0.1:2379"],
 *   backoff: { initialDelay: 1 },
 * });
 * console.log(tries); // 2
 * ```
 *
 * @param what What is attempted, after "could not": `connect`, `resync`.
 * @param attempt One attempt.
 * @param options The end signal, the members, the logger and the schedule.
 * @returns A promise that resolves when done or aborted.
 */
export async function retrying(
  what: string,
  attempt: () => Promise<boolean>,
  options: RetryingOptions,
): Promise<void> {
  const { signal } = options;
  const backoff = new Backoff(options.backoff ?? RETRY);
  /** The last reason that was not the circuit breaker's. */
  let cause: string | undefined;
  while (!signal.aborted) {
    try {
      if (await attempt()) return;
    } catch (error) {
      if (signal.aborted) return;
      options.onFailure?.(error);
      const ms = backoff.next();
      let reason = describeEtcdError(error);
      if (reason !== PAUSED) cause = reason;
      else if (cause) reason = cause;
      options.log?.warn(
        `${
          where(options.endpoints)
        }: could not ${what} (${reason}); retrying in ${seconds(ms)}`,
      );
      await sleep(ms, signal);
    }
  }
}

/**
 * `etcd at host:port, host:port`: the members, as a person names them.
 *
 * @example Usage
 * ```ts
 * import { where } from "./_etcd_retry.ts";
 * where(["http://127.0.0.1:2379"]); // "etcd at 127.0.0.1:2379"
 * ```
 *
 * @param endpoints The client URLs.
 * @returns The phrase.
 */
export function where(endpoints: readonly string[]): string {
  const hosts = endpoints.map((endpoint) => {
    try {
      return new URL(endpoint).host;
    } catch {
      return endpoint;
    }
  });
  return `etcd at ${hosts.join(", ")}`;
}

/**
 * What the client library's circuit breaker says: calls are refused for a
 * while after repeated failures. The retry loop names the last real
 * reason instead.
 */
const PAUSED = "calls paused after repeated failures";

/** The first lines of gRPC errors name the code: `14 UNAVAILABLE: ...`. */
const GRPC_CODE = /^\d+ [A-Z_]+: /;

const REASONS: [RegExp, string][] = [
  [/ECONNREFUSED/, "connection refused"],
  [/ENOTFOUND|EAI_AGAIN|getaddrinfo|Name resolution failed/, "host not found"],
  [/EHOSTUNREACH|ENETUNREACH/, "host unreachable"],
  [/ECONNRESET|EPIPE/, "connection reset"],
  [
    /DEADLINE_EXCEEDED|DeadlineExceeded|ETIMEDOUT|timed? ?out/i,
    "no answer in time",
  ],
  [
    /authentication failed|AuthenticationFailed|invalid auth token/i,
    "authentication failed: check the user name and password",
  ],
  [/permission denied|PermissionDenied/i, "permission denied for this user"],
  [
    /certificate|SSL|TLS|handshake|wrong version number/i,
    "TLS handshake failed: check the certificates and that the endpoints are https",
  ],
  [/lease.*(expired|not found)|LeaseInvalid/i, "the lease expired"],
  [/ClientClosed|client.*closed/i, "the client is closed"],
  [/circuit breaker is open|BrokenCircuit/i, PAUSED],
  [/left out until it answers/, "every member left out until one answers"],
];

/**
 * What went wrong with an etcd call, in a few words: `connection refused`,
 * `no answer in time`, `authentication failed: ...`; else the first line
 * of the error's message without its gRPC status prefix.
 *
 * @example Usage
 * ```ts
 * import { describeEtcdError } from "./_etcd_retry.ts";
 * describeEtcdError(new Error(
 *   "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:2379.",
 * )); // "connection refused"
 * ```
 *
 * @param error What the call rejected with.
 * @returns The description.
 */
export function describeEtcdError(error: unknown): string {
  const name = (error as { constructor?: { name?: string } })?.constructor
    ?.name ?? "";
  const message = error instanceof Error
    ? error.message
    : String(error ?? "unknown error");
  const text = `${name} ${message}`;
  for (const [pattern, reason] of REASONS) {
    if (pattern.test(text)) return reason;
  }
  if (/UNAVAILABLE|No connection established/.test(message)) {
    return "unavailable";
  }
  const first = message.split("\n")[0].replace(GRPC_CODE, "").trim();
  return first.length > 200 ? `${first.slice(0, 197)}...` : first ||
    name || "unknown error";
}

/** A delay as people read it: `250 ms`, `1.5 s`, `12 s`. */
function seconds(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  return `${s >= 10 ? Math.round(s) : Math.round(s * 10) / 10} s`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
