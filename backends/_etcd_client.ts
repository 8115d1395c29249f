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
 * within seconds of etcd's return, however long it was away. (In front
 * of a single member, the client library's circuit breaker refuses calls
 * for 5 s after three failures in a row.)
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { IOptions } from "etcd3";
import { Backoff } from "../protocol/backoff.ts";
import type { EndpointHealth, HostPolicy } from "./_etcd_health.ts";

type FaultHandling = NonNullable<IOptions["faultHandling"]>;
type PoolHostPolicy = ReturnType<NonNullable<FaultHandling["host"]>>;
type PoolGlobalPolicy = NonNullable<FaultHandling["global"]>;

/** Deadline of a health probe of one member, in ms. */
export const PROBE_TIMEOUT_MS = 1000;

/** Longest wait of gRPC before it dials a member again, in ms. */
export const RECONNECT_MAX_MS = 4000;

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
      "grpc.keepalive_permit_without_calls": 1,
      // A member that was away for minutes is tried again within seconds
      // of its return (gRPC's own backoff grows to two minutes).
      "grpc.initial_reconnect_backoff_ms": 250,
      "grpc.max_reconnect_backoff_ms": RECONNECT_MAX_MS,
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
      host: (endpoint) => health.policy(endpoint) as PoolHostPolicy,
      watchBackoff: watchBackoff(),
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
