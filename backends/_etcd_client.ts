// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend's client settings: deadlines, gRPC keep-alive, TLS and
 * authentication for the `etcd3` client, the member health policy of a
 * cluster client, and the single-member client that probes a member.
 *
 * Every unary call has a deadline (`callTimeout`); streams (watch, lease
 * keep-alive) have none and rely on gRPC keep-alive pings to notice a
 * hung member within seconds. gRPC dials a member that went away again
 * at most {@linkcode RECONNECT_MAX_MS} apart, so an agent reconnects
 * within seconds of etcd's return, however long it was away: the client
 * library's circuit breaker, which would refuse every call for 5 s after
 * three failures in a row, is replaced, and its watch stream reconnects
 * on the same schedule. A failed call does not close the member's
 * connections either: the streams on them would end with them
 * ({@linkcode createClient}).
 *
 * Writes are sent once ({@linkcode clientPool} with `resend: false`). The
 * client sends a call again when it missed its deadline or lost its
 * connection, even though etcd may have applied it: a conditional write
 * sent again then fails its own condition, and reads as a conflict. A
 * write fails instead, its outcome unknown. Reads may be sent again.
 *
 * While etcd is away, every retry loop, lease renewal and watch fails over
 * and over: `QuietLog` (`quiet_log.ts`) logs the first few lines of each
 * kind and then a count, so an outage reads as a handful of lines, not a
 * stream.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { Etcd3, type ICallable, type IOptions } from "etcd3";
import { Backoff } from "../protocol/backoff.ts";
import type { EndpointHealth, HostPolicy } from "./_etcd_health.ts";

type FaultHandling = NonNullable<IOptions["faultHandling"]>;
type PoolHostPolicy = ReturnType<NonNullable<FaultHandling["host"]>>;
type PoolGlobalPolicy = NonNullable<FaultHandling["global"]>;

/** Deadline of a health probe of one member, in ms. */
export const PROBE_TIMEOUT_MS = 1000;

/** Longest wait of gRPC before it dials a member again, in ms. */
export const RECONNECT_MAX_MS = 4000;

/**
 * HTTP/2 flow-control window of every etcd connection and stream, in
 * bytes: 4 MiB, gRPC's default message limit, where HTTP/2 starts at
 * 64 KiB. A page of the full read (`_etcd_read.ts`) comes in one go,
 * without a round trip for each 64 KiB; reading 1,000 records of an
 * agent's format took 3.64 to 3.73 ms (median) instead of 3.97 to 4.03 ms.
 */
export const FLOW_CONTROL_WINDOW = 4 * 1024 * 1024;

/** A policy that runs every call as it is. */
const PASS_THROUGH: HostPolicy = {
  execute: async (fn) => await fn({ signal: new AbortController().signal }),
};

/** What the client connects to, and how. */
export interface ClientSettings {
  /** etcd client URLs. */
  endpoints: string[];
  /** Deadline of every unary call, in milliseconds. */
  callTimeout: number;
  /** TLS: the CA certificate, and a client certificate and key for mutual TLS. */
  tls?: { ca: Uint8Array; cert?: Uint8Array; key?: Uint8Array };
  /** User name and password, for etcd's authentication. */
  auth?: { username: string; password: string };
}

/**
 * The `etcd3` options for `settings`.
 *
 * @example Usage
 * ```ts
 * import { clientOptions } from "./_etcd_client.ts";
 * const options = clientOptions({
 *   endpoints: ["http://127.0.0.1:2379"],
 *   callTimeout: 3000,
 * });
 * console.log(options.hosts); // ["http://127.0.0.1:2379"]
 * ```
 *
 * @param settings Endpoints, deadline, TLS and authentication.
 * @returns The client options.
 */
export function clientOptions(settings: ClientSettings): IOptions {
  const { callTimeout } = settings;
  const options: IOptions = {
    hosts: settings.endpoints,
    dialTimeout: callTimeout,
    // Unary calls get a deadline; streams (watch, keep-alive) rely on
    // gRPC keep-alive pings to notice a hung member. etcd refuses pings
    // more often than every 5 s by default.
    defaultCallOptions: (context) =>
      context.isStream ? {} : { deadline: Date.now() + callTimeout },
    grpcOptions: {
      "grpc.keepalive_time_ms": 6000,
      "grpc.keepalive_timeout_ms": 2000,
      // Only while a call is open: etcd closes a connection that pings
      // with no call on it (GOAWAY "too_many_pings" at the fourth ping),
      // which ends every stream on it.
      "grpc.keepalive_permit_without_calls": 0,
      // A member that was away for minutes is tried again within seconds
      // of its return (gRPC's own backoff grows to two minutes).
      "grpc.initial_reconnect_backoff_ms": 250,
      "grpc.max_reconnect_backoff_ms": RECONNECT_MAX_MS,
      // A read of 1,000 records (about 150 KiB) fits in the window, so
      // etcd sends it without waiting for the agent's window updates.
      "grpc-node.flow_control_window": FLOW_CONTROL_WINDOW,
    },
    faultHandling: {
      // No circuit breaker: the library's own refuses every call for 5 s
      // after three failures, so an agent would stay cut off that long
      // after etcd is back. The callers' retries back off by themselves
      // (`_etcd_retry.ts`), and with several members `withHealth` keeps
      // calls away from the ones that fail.
      host: () => PASS_THROUGH as PoolHostPolicy,
      // With one member as with several: the library's own watch backoff
      // grows to 30 s, and a stream lost in an outage would come back
      // that long after etcd.
      watchBackoff: watchBackoff(),
    },
  };

  if (settings.tls) {
    options.credentials = {
      rootCertificate: Buffer.from(settings.tls.ca),
      certChain: settings.tls.cert && Buffer.from(settings.tls.cert),
      privateKey: settings.tls.key && Buffer.from(settings.tls.key),
    };
  }
  if (settings.auth) options.auth = settings.auth;
  return options;
}

/**
 * `options` with calls kept away from members that `health` left out
 * (see `_etcd_health.ts`).
 *
 * @param options The cluster client's options.
 * @param health The members' health.
 * @returns The options with the per-member policy.
 */
export function withHealth(
  options: IOptions,
  health: EndpointHealth,
): IOptions {
  return {
    ...options,
    faultHandling: {
      ...options.faultHandling,
      host: (endpoint) => health.policy(endpoint) as PoolHostPolicy,
    },
  };
}

/** The delays of one run of {@linkcode watchBackoff}, as `etcd3` takes them. */
export interface WatchDelay {
  /** Milliseconds to wait before this attempt. */
  readonly duration: number;
  /** The delay of the attempt after this one. */
  next(): WatchDelay;
}

/**
 * How the watch stream waits between reconnections: the project's
 * {@linkcode Backoff} (250 ms doubling, with jitter) capped at
 * {@linkcode RECONNECT_MAX_MS}, like the connections themselves; the
 * library's own default grows to 30 s, during which the agent would miss
 * every change after etcd came back.
 *
 * @returns The start of a run: `etcd3` takes its `next()` each time it
 *   starts over (at first and after each success); its own `duration` is
 *   never waited.
 */
export function watchBackoff(): WatchDelay {
  const step = (backoff: Backoff): WatchDelay => {
    const duration = backoff.next();
    let after: WatchDelay | undefined;
    return { duration, next: () => after ??= step(backoff) };
  };
  return {
    duration: 0,
    next: () =>
      step(new Backoff({ initialDelay: 250, maxDelay: RECONNECT_MAX_MS })),
  };
}

/**
 * Options of a client that probes one member: that member only, a short
 * dial timeout, and no retries or circuit breakers of its own.
 *
 * @param options The cluster client's options.
 * @param endpoint The member.
 * @returns The probe client's options.
 */
export function probeOptions(options: IOptions, endpoint: string): IOptions {
  return {
    ...options,
    hosts: [endpoint],
    dialTimeout: PROBE_TIMEOUT_MS,
    faultHandling: {
      host: () => PASS_THROUGH as PoolHostPolicy,
      global: PASS_THROUGH as PoolGlobalPolicy,
    },
  };
}

/**
 * What the etcd backend uses of an `etcd3` client's connection pool (its
 * `pool`, in version 1.x) to make calls besides the client's own methods:
 * the calls of a `KVClient` on it, or calls of its own on a connection
 * (`withConnection`).
 */
export interface ClientPool extends ICallable<unknown> {
  /**
   * The policy the pool's calls run under (`exec` runs every call under
   * it; a caller of `withConnection` runs it around its call): unless the client's options say
   * otherwise, it sends a call that failed in a way deemed recoverable
   * (a missed deadline, `unavailable`, a lost connection) again, up to
   * three times, at once.
   */
  readonly globalPolicy: {
    execute<T>(
      fn: (context: { signal: AbortSignal }) => Promise<T>,
    ): Promise<T>;
  };
  /** Set by the library's own tests: calls go to it instead of etcd. */
  readonly mockImpl?: unknown;
}

/** Options of {@linkcode clientPool}. */
export interface ClientPoolOptions {
  /**
   * Whether a call may be sent again, as the client's own calls are (its
   * global policy). `false` for a write that is not safe to send twice: a
   * write that etcd applied but whose answer was lost (a missed deadline,
   * a cut connection) then fails, its outcome unknown, instead of being
   * applied again or, conditional, failing its own condition the second
   * time. A call that etcd refused before applying it (an expired
   * authentication token) is still made again.
   *
   * @default {true}
   */
  resend?: boolean;
}

/**
 * The connection pool of `client`, whose calls go as the client's own do
 * (the member's fault handling, the authentication token, the default
 * deadline), sent again or not (`options.resend`).
 *
 * @example Usage
 * ```ts
 * import { KVClient } from "etcd3";
 * import { clientOptions, clientPool, createClient } from "./_etcd_client.ts";
 * const client = createClient(clientOptions({
 *   endpoints: ["http://127.0.0.1:2379"],
 *   callTimeout: 3000,
 * }));
 * const pool = clientPool(client, { resend: false });
 * const writes = pool && new KVClient(pool); // writes.txn(...) is sent once
 * client.close();
 * ```
 *
 * @param client The etcd client.
 * @param options Whether calls may be sent again.
 * @returns The pool; `undefined` when the client's pool is not the one
 *   this relies on (another version of `etcd3`).
 */
export function clientPool(
  client: Etcd3,
  options: ClientPoolOptions = {},
): ClientPool | undefined {
  // deno-lint-ignore no-explicit-any
  const pool = (client as any).pool;
  if (
    typeof pool?.exec !== "function" ||
    typeof pool.withConnection !== "function" ||
    typeof pool.globalPolicy?.execute !== "function"
  ) return undefined;
  if (options.resend ?? true) return pool;
  // The same pool, whose `exec` finds this policy instead of its own.
  return Object.create(pool, {
    globalPolicy: { value: PASS_THROUGH },
  }) as ClientPool;
}

/** What {@linkcode createClient} changes in one member of `etcd3`'s pool. */
interface PoolMember {
  resetAllServices(): void;
  close(): void;
  closed: boolean;
}

/**
 * An `etcd3` client for `options` that keeps its gRPC connections when a
 * call fails; {@linkcode Etcd3.close} still closes them.
 *
 * On its own, `etcd3` closes every gRPC client of a member as soon as one
 * call to it fails with an error it deems recoverable (a missed deadline,
 * `unavailable`, a lost stream), so that the next call dials afresh. A
 * closed client's connection drains: the streams still open on it (the
 * watch, the lease keep-alive) carry on until gRPC's next keep-alive ping,
 * which fails on a draining connection and ends them, connection and all
 * (grpc-node issue 3068). Each stream lost that way is itself such a
 * failure, and closes the connection the renewed streams run on: one
 * missed deadline on a healthy connection (a member that stalled for a
 * few seconds) cut the agent's watch every keep-alive period, for as long
 * as the agent ran.
 *
 * The clients are kept instead: gRPC dials a broken connection again by
 * itself (at most {@linkcode RECONNECT_MAX_MS} apart) and notices a hung
 * one by its keep-alive pings.
 *
 * @example Usage
 * ```ts
 * import { clientOptions, createClient } from "./_etcd_client.ts";
 * const client = createClient(clientOptions({
 *   endpoints: ["http://127.0.0.1:2379"],
 *   callTimeout: 3000,
 * }));
 * client.close();
 * ```
 *
 * @param options The client's options, from {@linkcode clientOptions}.
 * @returns The client.
 * @throws {Error} If `etcd3` no longer has the connection pool this
 *   relies on (a version whose internals changed): its connections could
 *   not be kept, nor its writes sent once ({@linkcode clientPool}).
 */
export function createClient(options: IOptions): Etcd3 {
  const client = new Etcd3(options);
  // deno-lint-ignore no-explicit-any
  const members: unknown = (client as any).pool?.hosts;
  const usable = clientPool(client) !== undefined && Array.isArray(members) &&
    members.every((member) =>
      typeof member?.resetAllServices === "function" &&
      typeof member?.close === "function"
    );
  if (!usable) {
    client.close();
    throw new Error(
      "this version of etcd3 has no connection pool of members with resetAllServices() and close(), and exec(), withConnection() and a global policy: the client's connections could not be kept, nor its writes sent once",
    );
  }
  for (const member of members as PoolMember[]) {
    const closeAll = member.resetAllServices;
    member.resetAllServices = () => {};
    member.close = () => {
      closeAll.call(member);
      member.closed = true;
    };
  }
  return client;
}
