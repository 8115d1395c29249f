// Copyright the discover authors. BSD-3-Clause license.

/**
 * Start a discover agent from a Deno program: for embedding, and for
 * tests. `agent.ts` is the command line (discoverd) on top of it.
 *
 * ```ts ignore
 * import { startAgent } from "@discover/discover/agent";
 * await using agent = await startAgent({ port: 0 });
 * console.log(agent.url); // ws://127.0.0.1:PORT/
 * ```
 *
 * @module
 */

import type { Backend } from "../backends/backend.ts";
import { MemoryBackend } from "../backends/memory.ts";
import type { Limits } from "../protocol/types.ts";
import { validateAddr } from "../protocol/validate.ts";
import { parseAllowHosts } from "./admit.ts";
import { defaultAdvertiseHost, joinHostPort } from "./advertise.ts";
import { parseAllowOrigins } from "./dashboard/origin.ts";
import {
  childLogger,
  createLogger,
  type Logger,
  type LogLevel,
} from "./log.ts";
import { Acl, AuthLimiter } from "./acl.ts";
import { CheckPolicy, Checks } from "./checks.ts";
import { type DnsServer, startDns } from "./dns.ts";
import { Metrics } from "./metrics.ts";
import { Registry } from "./registry.ts";
import { SessionServer } from "./server.ts";
import type { AccessRules } from "./session.ts";
import { DEFAULT_HISTORY_BYTES } from "./view.ts";
import { DEFAULT_IDLE_MS, DEFAULT_MAX_SCOPES, Views } from "./views.ts";

export {
  type CategoryLogger,
  childLogger,
  createLogger,
  jsonFormatter,
  type LineRecord,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  logtapeLogger,
  textFormatter,
} from "./log.ts";
export * from "../backends/mod.ts";

/** Default limits of an agent. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxFrameBytes: 1024 * 1024,
  maxBatch: 1000,
  maxRegistrations: 1000,
  maxSubscriptions: 1000,
  maxSessions: 50_000,
  maxQueueBytes: 16 * 1024 * 1024,
});

/** The smallest value of one limit, and why smaller does not work. */
export interface LimitMinimum {
  /** The smallest value accepted. */
  readonly value: number;
  /** What needs that much, where it is more than 1. */
  readonly reason?: string;
}

/**
 * The smallest value of each limit with which every valid request of a
 * session still works; {@linkcode startAgent} refuses smaller ones. The
 * largest valid request carries attributes of 8192 JSON characters (up to
 * 24 KiB of UTF-8) besides a service, an address and the JSON-RPC
 * envelope: 32 KiB holds it. The largest event carries the same
 * attributes, and a send queue holds at least two of them.
 */
export const LIMIT_MINIMUMS: Readonly<Record<keyof Limits, LimitMinimum>> =
  Object.freeze({
    maxFrameBytes: {
      value: 32 * 1024,
      reason: "what the largest valid request needs",
    },
    maxBatch: { value: 1 },
    maxRegistrations: { value: 1 },
    maxSubscriptions: { value: 1 },
    maxSessions: { value: 1 },
    maxQueueBytes: {
      value: 64 * 1024,
      reason: "room for two events of the largest instance",
    },
  });

/**
 * The agent could not listen where it was asked to. The message names the
 * address and the reason; `cause` is the runtime's error
 * (`Deno.errors.AddrInUse`, `Deno.errors.AddrNotAvailable`, ...).
 *
 * @example Usage
 * ```ts ignore
 * import { ListenError, startAgent } from "./mod.ts";
 * try {
 *   await startAgent({ port: 1111 });
 * } catch (error) {
 *   if (error instanceof ListenError) console.error(error.message);
 *   // cannot listen on 127.0.0.1:1111: address already in use
 * }
 * ```
 */
export class ListenError extends Error {
  /** The address asked for. */
  readonly hostname: string;
  /** The port asked for. */
  readonly port: number;

  /**
   * Creates the error.
   *
   * @param hostname The address asked for.
   * @param port The port asked for.
   * @param cause The runtime's error.
   */
  constructor(hostname: string, port: number, cause: unknown) {
    super(
      `cannot listen on ${joinHostPort(hostname, port)}: ${
        listenReason(cause)
      }`,
      { cause },
    );
    this.name = "ListenError";
    this.hostname = hostname;
    this.port = port;
  }
}

function listenReason(error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) return "address already in use";
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return "no interface of this host has that address";
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return "permission denied (ports below 1024 need privileges)";
  }
  return (error as Error)?.message ?? String(error);
}

/** Options of {@linkcode startAgent}. */
export interface AgentOptions {
  /**
   * Address to listen on.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * Port to listen on; 0 picks a free one.
   *
   * @default {1111}
   */
  port?: number;
  /**
   * Host used for registrations that give only a port.
   *
   * @default {the host's most public non-loopback address, else 127.0.0.1}
   */
  advertiseHost?: string;
  /**
   * Where registrations are kept. The agent opens it, and closes it on shutdown.
   *
   * @default {a new MemoryBackend}
   */
  backend?: Backend;
  /**
   * Path of the access rules (JSON, see `agent/acl.ts`): tokens, stored as
   * SHA-256 hashes, and what each may read, write or administer. Without
   * it every session may do everything. {@linkcode Agent.reloadAcl} reads
   * it again.
   */
  acl?: string;
  /**
   * Most sessions from one remote address at once.
   *
   * @default {1000}
   */
  maxSessionsPerAddress?: number;
  /**
   * Hosts any health check may target besides the instance's own host (and
   * loopback for an instance on this agent's host); `"*"` allows every
   * host. Widening it lets a client make this agent send requests to those
   * hosts.
   *
   * @default {[]}
   */
  checkAllow?: string[];
  /**
   * Grace period, in seconds, before the instances of a lost session go down.
   *
   * @default {10}
   */
  ttl?: number;
  /**
   * Seconds after which a silent peer that answers no ping is dropped (its
   * session is lost); it is pinged after half of this.
   *
   * @default {5}
   */
  idleTimeout?: number;
  /**
   * Changes kept for `since` replays.
   *
   * @default {50000}
   */
  historySize?: number;
  /**
   * Bytes of changes kept for `since` replays, estimated (each change: 256
   * bytes plus the lengths of its service, address and attributes). The
   * oldest changes are dropped beyond this or beyond `historySize`,
   * whichever comes first; resumes from before them get a snapshot. Bounds
   * the history's memory when large attributes change often (16 MiB).
   *
   * @default {16777216}
   */
  historyBytes?: number;
  /**
   * Seconds a service's watch stays open once nothing on this agent uses
   * it (no subscription, registration or lookup): a client that comes
   * back within it finds the service's view warm, with its history.
   *
   * @default {30}
   */
  watchIdle?: number;
  /**
   * Most services watched at once (the oldest idle ones are closed first
   * to make room; beyond it, a subscribe or lookup of another service
   * fails with -32002).
   *
   * @default {10000}
   */
  maxWatches?: number;
  /**
   * Limits; unset fields keep {@linkcode DEFAULT_LIMITS}.
   *
   * @default {DEFAULT_LIMITS}
   */
  limits?: Partial<Limits>;
  /**
   * Log level of the default logger.
   *
   * @default {"info"}
   */
  logLevel?: LogLevel;
  /**
   * Logger; overrides `logLevel`.
   *
   * @default {a logger writing to standard error}
   */
  logger?: Logger;
  /**
   * Origins (`http(s)://host[:port]`) of web pages, besides the agent's own
   * dashboard, that may open WebSocket sessions; `"*"` allows every page.
   * Clients that send no `Origin` (not browsers) are always accepted.
   * Refusing other pages stops any site the user visits from using a local
   * agent (cross-site WebSocket hijacking).
   *
   * @default {[]}
   */
  allowOrigins?: string[];
  /**
   * Host names, besides IP addresses and `localhost` (and names under it),
   * by which clients may reach the agent: every HTTP request, WebSocket
   * upgrades included, whose `Host` header names another host gets 403.
   * This stops DNS rebinding, where a page of the attacker's site reaches a
   * local agent through a name the attacker points at `127.0.0.1`. The
   * listen and advertise hosts are allowed too when they are names. `"*"`
   * allows every name (only behind a proxy that checks `Host` itself).
   *
   * @default {[]}
   */
  allowHosts?: string[];
  /**
   * A certificate chain and its private key, PEM text: the agent then
   * serves `https://` and `wss://` only (its `url` is `wss://...`). The
   * certificate must name the host clients use (a subject alternative
   * name) and be issued by a CA they trust.
   *
   * @default {none: plain http:// and ws://}
   */
  tls?: { cert: string; key: string };
  /**
   * Whether the agent counts what it does and serves it at `GET /metrics`
   * (Prometheus text format); off, `/metrics` answers 404.
   *
   * @default {true}
   */
  metrics?: boolean;
  /**
   * Serves DNS over UDP and TCP on this address (port 0 picks a free one),
   * for the zone `domain` with answers of `ttl` seconds: see `agent/dns.ts`.
   *
   * @default {no DNS server}
   */
  dns?: { hostname: string; port: number; domain?: string; ttl?: number };
  /** Shuts the agent down when aborted. */
  signal?: AbortSignal;
}

/** A running agent. */
export interface Agent extends AsyncDisposable {
  /** WebSocket URL clients connect to, e.g. `ws://127.0.0.1:1111/`. */
  readonly url: string;
  /** Address the agent listens on. */
  readonly hostname: string;
  /** Port the agent listens on. */
  readonly port: number;
  /** Host used for registrations that give only a port. */
  readonly advertiseHost: string;
  /** Number of open sessions. */
  readonly sessions: number;
  /** Highest revision the agent's views have seen. */
  readonly revision: number;
  /** Port of the DNS server (UDP and TCP), when `dns` was given. */
  readonly dnsPort?: number;
  /**
   * Reads the access rules file again (`acl`): sessions keep their
   * connections; one whose token is gone or changed loses its rights at
   * once, and subscriptions see the services they may no longer read go
   * down (and those they may now read come up). A file that does not load
   * rejects, and the rules in force stay.
   */
  reloadAcl(): Promise<void>;
  /** Closes every session with 1001, stops listening and closes the backend. */
  shutdown(): Promise<void>;
  /** Resolves once the agent has shut down. */
  readonly finished: Promise<void>;
}

/** Whether `hostname` is a loopback address or name. */
function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    hostname.startsWith("127.");
}

/** The host in the canonical form addresses have, or a clear error. */
function canonicalHost(host: string): string {
  try {
    const addr = validateAddr(joinHostPort(host, 1), "advertiseHost");
    return addr.slice(0, addr.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1");
  } catch {
    throw new TypeError(
      `'advertiseHost' must be a hostname, an IPv4 address or an IPv6 address: current value is '${host}'`,
    );
  }
}

function positive(name: string, value: number | undefined, fallback: number) {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `'${name}' must be a positive number: current value is ${value}`,
    );
  }
  return value;
}

/**
 * Starts an agent and resolves once it listens and its backend has
 * delivered its state, or has found its store unreachable: then the agent
 * serves as not connected (`/healthz` answers 503, writes fail with
 * -32000) while the backend keeps trying. A port that cannot be listened
 * on rejects with a {@linkcode ListenError}; a bad option with a
 * `TypeError` or `RangeError` naming it.
 *
 * @example Usage
 * ```ts ignore
 * import { startAgent } from "./mod.ts";
 * const agent = await startAgent({ port: 0, logLevel: "warn" });
 * console.log(agent.url);
 * await agent.shutdown();
 * ```
 *
 * @param options Where to listen, the backend, timings and limits.
 * @returns The running agent.
 */
export async function startAgent(options: AgentOptions = {}): Promise<Agent> {
  const ttl = positive("ttl", options.ttl, 10);
  const idleTimeout = positive("idleTimeout", options.idleTimeout, 5);
  const historySize = positive("historySize", options.historySize, 50_000);
  const historyBytes = positive(
    "historyBytes",
    options.historyBytes,
    DEFAULT_HISTORY_BYTES,
  );
  const watchIdle = positive(
    "watchIdle",
    options.watchIdle,
    DEFAULT_IDLE_MS / 1000,
  );
  const maxWatches = Math.floor(
    positive("maxWatches", options.maxWatches, DEFAULT_MAX_SCOPES),
  );
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(options.limits ?? {})) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_LIMITS)) {
      throw new TypeError(
        `'limits.${key}' is not a known limit; known: ${
          Object.keys(DEFAULT_LIMITS).join(", ")
        }`,
      );
    }
    const limit = Math.floor(positive(`limits.${key}`, value, 0));
    const minimum = LIMIT_MINIMUMS[key as keyof Limits];
    if (limit < minimum.value) {
      throw new RangeError(
        `'limits.${key}' must be at least ${minimum.value}${
          minimum.reason ? ` (${minimum.reason})` : ""
        }: current value is ${value}`,
      );
    }
    limits[key as keyof Limits] = limit;
  }
  const allowOrigins = parseAllowOrigins(options.allowOrigins ?? []);
  const allowHosts = parseAllowHosts(options.allowHosts ?? []);
  // One logger per layer: discover.agent, .checks, .registry, .session, .dns.
  const root = options.logger ?? createLogger(options.logLevel ?? "info");
  const log = childLogger(root, "agent");
  const hostname = options.hostname ?? "127.0.0.1";
  const advertiseHost = canonicalHost(
    options.advertiseHost ?? defaultAdvertiseHost(),
  );
  // Names the agent was configured with are its own.
  for (const own of [hostname, advertiseHost]) {
    try {
      allowHosts.push(...parseAllowHosts([own]));
    } catch { /* not a host: Deno.serve reports a bad hostname */ }
  }
  // Read at each scrape, once the views and sessions below exist.
  const metrics: Metrics | undefined = options.metrics === false
    ? undefined
    : new Metrics({
      sessions: () => sessions.sessions,
      queuedBytes: () => sessions.queuedBytes,
      checks: () => registry.counts(),
      connected: () => views.connected,
      view: (scope) => views.peek(scope),
    });
  const store = options.backend ?? new MemoryBackend();
  const backend: Backend = metrics ? metrics.meter(store) : store;
  const views = new Views(backend, {
    historySize,
    historyBytes,
    idleMs: watchIdle * 1000,
    maxScopes: maxWatches,
  });
  const checks = new Checks({
    log: childLogger(root, "checks"),
    onRun: metrics && ((run) => metrics.checkRun(run.ok)),
  });
  const registry = new Registry(backend, views, {
    ttlMs: ttl * 1000,
    maxRegistrations: limits.maxRegistrations,
    log: childLogger(root, "registry"),
    checks,
  });
  const checkPolicy = new CheckPolicy({
    localHosts: [hostname, advertiseHost],
    allow: options.checkAllow ?? [],
  });
  const access: AccessRules | undefined = options.acl === undefined
    ? undefined
    : { acl: await Acl.load(options.acl), limiter: new AuthLimiter() };
  let shuttingDown = false;
  const sessions: SessionServer = new SessionServer({
    views,
    registry,
    backendName: backend.name,
    advertiseHost,
    checkPolicy,
    ttl,
    limits,
    idleTimeout,
    log: childLogger(root, "session"),
    shuttingDown: () => shuttingDown,
    metrics,
    ...(access ? { access } : {}),
  }, {
    idleTimeout,
    agentId: crypto.randomUUID().slice(0, 8),
    maxSessionsPerAddress: options.maxSessionsPerAddress === undefined
      ? undefined
      : Math.floor(
        positive("maxSessionsPerAddress", options.maxSessionsPerAddress, 1),
      ),
    allowOrigins,
    allowHosts,
    tls: options.tls,
  });

  // Listen first: a port in use fails at once, before the backend is
  // reached, and the agent answers (as not connected) while a backend
  // that cannot be reached yet is being retried.
  const port = options.port ?? 1111;
  const { promise: listening, resolve: onListen } = Promise.withResolvers<
    Deno.NetAddr
  >();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port,
      ...sessions.tls,
      onListen: (addr) => onListen(addr as Deno.NetAddr),
    }, sessions.handle);
  } catch (error) {
    throw new ListenError(hostname, port, error);
  }
  const addr = await Promise.race([
    listening,
    server.finished.then(() => {
      throw new Error("the agent's server stopped before it listened");
    }),
  ]);
  const url = `${sessions.tls ? "wss" : "ws"}://${
    joinHostPort(addr.hostname, addr.port)
  }/`;
  let dns: DnsServer | undefined;
  if (options.dns) {
    const { hostname: dnsHost, port: dnsPort, domain, ttl } = options.dns;
    try {
      dns = await startDns(views, {
        hostname: dnsHost,
        port: dnsPort,
        domain,
        ttl,
        log: childLogger(root, "dns"),
      });
    } catch (error) {
      registry.close();
      await server.shutdown();
      if (error instanceof TypeError) throw error; // a bad domain or TTL
      throw new ListenError(dnsHost, dnsPort, error);
    }
  }
  try {
    // Resolves once the backend delivered its state, or once it found the
    // store unreachable (it keeps trying; the view says not connected).
    await views.open();
  } catch (error) {
    registry.close();
    await dns?.close();
    await server.shutdown();
    throw error;
  }

  const { promise: done, resolve: markDone } = Promise.withResolvers<void>();
  let finished: Promise<void> | undefined;
  const shutdown = () =>
    finished ??= (async () => {
      shuttingDown = true;
      log.info("shutting down", { sessions: sessions.sessions });
      await sessions.closeAll();
      registry.close();
      await server.shutdown();
      await dns?.close();
      await views.close();
      await backend.close();
      log.info("stopped");
      markDone();
    })();
  options.signal?.addEventListener("abort", () => void shutdown(), {
    once: true,
  });
  log.info("listening", {
    url,
    backend: backend.name,
    advertiseHost,
    ttl,
    ...(dns ? { dns: joinHostPort(dns.hostname, dns.port) } : {}),
    ...(access ? { acl: options.acl, tokens: access.acl.names.length } : {}),
  });
  if (!access && !isLoopback(addr.hostname)) {
    log.warn(
      "listening beyond this host without access rules: anyone who can reach the agent may register, change and remove any instance; give --acl FILE",
      { hostname: addr.hostname },
    );
  }
  return {
    url,
    hostname: addr.hostname,
    port: addr.port,
    advertiseHost,
    get sessions() {
      return sessions.sessions;
    },
    get revision() {
      return views.revision;
    },
    async reloadAcl() {
      if (!access || options.acl === undefined) {
        throw new Error("the agent was started without access rules (acl)");
      }
      const next = await Acl.load(options.acl);
      const previous = access.acl;
      access.acl = next;
      sessions.reauthorized(previous);
      log.info("access rules loaded again", { tokens: next.names.length });
    },
    dnsPort: dns?.port,
    shutdown,
    finished: done,
    [Symbol.asyncDispose]: shutdown,
  };
}
