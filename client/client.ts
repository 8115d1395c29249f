// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The discover client: what a program registered and the sets it opened,
 * kept across connections. After a reconnection it registers everything
 * again and resumes every open set from its last revision. The connection
 * itself (dialling, pings, reconnection, requests with deadlines) is
 * `_connection.ts`.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import {
  ALL_SERVICES,
  type Attrs,
  type CatalogResult,
  type Check,
  EVENT_NOTIFICATION,
  type EventParams,
  type Health,
  type HealthFilter,
  type Instance,
  type OwnersResult,
  type ServicesParams,
  type StatusResult,
} from "../protocol/types.ts";
import {
  CLIENT_ID_PATTERN,
  CLIENT_ID_RULE,
  MAX_TOKEN_LENGTH,
  validateAddr,
  validateAttrs,
  validateCheck,
  validateHealthFilter,
  validatePort,
  validateServiceName,
  validateSetHealth,
} from "../protocol/validate.ts";
import { Backoff } from "../protocol/backoff.ts";
import {
  agentUrls,
  closedError,
  Connection,
  type HelloRequest,
} from "./_connection.ts";
import { deferred } from "./_deferred.ts";
import { isPermanent } from "./_permanent.ts";
import { checkOptions, type OptionsRule } from "./_options.ts";
import { openSet, type ServiceSet, type SetControl } from "./service_set.ts";
import {
  type Campaign,
  type CampaignOptions,
  startCampaign,
} from "./campaign.ts";

/** A WebSocket constructor: the global one, or one from a library such as npm `ws`. */
export type WebSocketConstructor = new (url: string) => WebSocket;

/** Connection states of a {@linkcode Client}. */
export type ConnectionState = "connected" | "disconnected" | "closed";

/** How the client reconnects after losing its connection. */
export interface ReconnectOptions {
  /**
   * Upper bound of the first delay, in milliseconds. Each attempt waits a
   * random time from 0 to `min(maxDelay, initialDelay * 2^attempt)` (full
   * jitter), so restarted agents are not hit by every client at once.
   *
   * @default {100}
   */
  initialDelay?: number;
  /**
   * Largest delay between attempts, in milliseconds.
   *
   * @default {5000}
   */
  maxDelay?: number;
}

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /** Aborts the first connection attempt (and the wait for an agent). */
  signal?: AbortSignal;
  /**
   * The WebSocket implementation, for runtimes without a global one.
   *
   * @default {globalThis.WebSocket}
   */
  WebSocket?: WebSocketConstructor;
  /**
   * Identity of this client's registrations across its connections: 1 to 64
   * characters of `A-Z a-z 0-9 _ -`. Two processes must not share one.
   *
   * @default {a random id}
   */
  clientId?: string;
  /**
   * A token of the agent's access rules (`discover.authenticate`): the
   * client presents it on every connection and reconnection, before any
   * other call and before restoring registrations and sets. A wrong token
   * fails {@linkcode connect} with a `Forbidden` `RpcError`. Never put it in
   * the URL.
   */
  token?: string;
  /**
   * Milliseconds to wait for one connection to open.
   *
   * @default {10000}
   */
  connectTimeout?: number;
  /**
   * Milliseconds a call may take, including waiting for a reconnection.
   * Keep it below the agent's TTL.
   *
   * @default {5000}
   */
  requestTimeout?: number;
  /**
   * Milliseconds between `$/ping` requests; a ping unanswered within
   * `requestTimeout` ends the connection (and starts a reconnection).
   *
   * @default {2000}
   */
  pingInterval?: number;
  /**
   * Reconnection backoff, or `false` to end the client when the connection
   * is lost (`true`: the defaults).
   *
   * @default {{ initialDelay: 100, maxDelay: 5000 }}
   */
  reconnect?: ReconnectOptions | boolean;
  /**
   * Milliseconds {@linkcode connect} keeps trying while no agent answers,
   * for a program started before its agent: it retries every URL with
   * backoff (up to 1 s apart) and rejects with a `Timeout` `RpcError` once
   * this time has passed. `0` tries each URL once; `Infinity` waits until
   * `signal` aborts.
   *
   * @default {0}
   */
  waitForAgent?: number;
}

/** Options of calls that can wait. */
export interface CallOptions {
  /** Stops waiting for the response (the call may still take effect at the agent). */
  signal?: AbortSignal;
}

/** Options of {@linkcode Client.register}. */
export interface RegisterOptions extends CallOptions {
  /**
   * Attributes; a re-registration replaces the previous ones.
   *
   * @default {{}}
   */
  attrs?: Attrs;
  /**
   * A health check the agent runs for the instance: `{http: URL}` or
   * `{tcp: "host:port"}`, with `interval` and `timeout` in seconds and the
   * thresholds. The instance then starts critical and joins passing sets
   * at its first passing result. A re-registration replaces it.
   */
  check?: Check;
}

/** Options of {@linkcode Client.unregister}. */
export interface UnregisterOptions extends CallOptions {
  /**
   * Removes the instance whoever holds it: needs `admin` access to the
   * service on an agent with access rules.
   */
  force?: boolean;
}

/** Options of {@linkcode Client.setHealth}. */
export interface SetHealthOptions extends CallOptions {
  /** Why, when critical (at most 256 characters). */
  note?: string;
}

/** Options of {@linkcode Client.services} and {@linkcode Client.lookup}. */
export interface ServicesOptions extends CallOptions {
  /**
   * Only instances with every one of these attributes, with these values
   * (an attribute map: its keys are attribute names).
   */
  filter?: Attrs;
  /**
   * `"passing"`: only instances able to serve (an instance that turns
   * critical leaves the set, and comes back when it passes); `"any"`: every
   * instance, a health change being an update.
   *
   * @default {"passing"}
   */
  health?: HealthFilter;
}

/** A register/unregister target: a port on the agent's advertised host, or `host:port`. */
export type Target = number | string;

/**
 * Where a registration stands: `registered` (the agent holds it),
 * `restoring` (the connection was lost; the client registers it again on
 * the next one, retrying with backoff while the agent refuses it for a
 * reason that can pass), or `failed` (after a reconnection the agent
 * refused it for good; the client no longer keeps it).
 */
export type RegistrationState = "registered" | "restoring" | "failed";

/** One registration the client keeps, from {@linkcode Client.registrations}. */
export interface Registration {
  /** The service. */
  readonly service: string;
  /** The port or `host:port` given to {@linkcode Client.register}. */
  readonly at: Target;
  /** The attributes of the latest successful `register()`. */
  readonly attrs: Readonly<Attrs>;
  /** Where it stands. */
  readonly state: RegistrationState;
  /**
   * Why the latest attempt to register it again failed (`restoring`: it
   * is retried; `failed`: it was given up).
   */
  readonly error?: unknown;
}

/**
 * The `error` event of a {@linkcode Client}: a registration or a set could
 * not be restored after a reconnection. `detail` (and `error`) is the
 * error; its message names the instance or service.
 *
 * The event is cancelable: unless a listener calls `preventDefault()`,
 * the client writes one line about it with `console.error`, so that a
 * program without a listener still hears of it.
 */
export class RestoreErrorEvent extends CustomEvent<unknown> {
  /** The error (the same as `detail`). */
  readonly error: unknown;
  /**
   * `false`: the client keeps retrying with backoff (the instance is held
   * by another client, the agent cannot reach its backend, a timeout...).
   * `true`: it gave up, since retrying cannot help (`InvalidParams`,
   * `LimitExceeded`, `MethodNotFound`, `InvalidRequest`): the registration
   * is `failed` in {@linkcode Client.registrations}, the set is closed.
   */
  readonly permanent: boolean;
  /** The registration, when one failed. */
  readonly registration?: Registration;
  /** The set, when one failed. */
  readonly set?: ServiceSet;

  /**
   * Creates the event.
   *
   * @param init The error, whether it is permanent, and what failed.
   */
  constructor(init: {
    error: unknown;
    permanent: boolean;
    registration?: Registration;
    set?: ServiceSet;
  }) {
    super("error", { detail: init.error, cancelable: true });
    this.error = init.error;
    this.permanent = init.permanent;
    this.registration = init.registration;
    this.set = init.set;
  }
}

/** Event map of {@linkcode Client}, for typed listeners. */
export interface ClientEventMap {
  /** The connection was lost; the client is reconnecting. */
  disconnect: Event;
  /**
   * A new connection is up and registrations and sets were restored, or
   * are being retried (each failure is an `error` event).
   */
  reconnect: Event;
  /**
   * A registration or a set could not be restored after a reconnection.
   * Dispatched when an item starts failing, not at every retry; see
   * {@linkcode RestoreErrorEvent}.
   */
  error: RestoreErrorEvent;
  /** The client ended: closed, or lost with reconnection disabled. */
  close: Event;
}

const DEFAULTS = {
  connectTimeout: 10_000,
  requestTimeout: 5_000,
  pingInterval: 2_000,
  initialDelay: 100,
  maxDelay: 5_000,
};

function codeOf(error: unknown): number | undefined {
  return error instanceof RpcError ? error.code : undefined;
}

/** An attribute key as it would be written in an object literal. */
function keyText(key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
}

const CONNECT_RULE: OptionsRule = {
  where: "connect()",
  known: [
    "signal",
    "WebSocket",
    "clientId",
    "token",
    "connectTimeout",
    "requestTimeout",
    "pingInterval",
    "reconnect",
    "waitForAgent",
  ],
};
const RECONNECT_RULE: OptionsRule = {
  where: "connect({reconnect: {...}})",
  known: ["initialDelay", "maxDelay"],
};
const REGISTER_RULE: OptionsRule = {
  where: "register()",
  known: ["attrs", "check", "signal"],
  hint: (_key, value) =>
    typeof value === "string" ? "attributes go in {attrs: {...}}" : undefined,
};
const SET_HEALTH_RULE: OptionsRule = {
  where: "setHealth()",
  known: ["note", "signal"],
};
const UNREGISTER_RULE: OptionsRule = {
  where: "unregister()",
  known: ["signal", "force"],
};
/** `services()` and `lookup()`: an attribute given as an option. */
function filterRule(where: string): OptionsRule {
  return {
    where,
    known: ["filter", "health", "signal"],
    hint: (key, value) =>
      typeof value === "string"
        ? `filter by attributes with {filter: {${keyText(key)}: ${
          JSON.stringify(value)
        }}}`
        : undefined,
  };
}
const SERVICES_RULE = filterRule("services()");
const LOOKUP_RULE = filterRule("lookup()");
const LEADER_RULE = filterRule("leader()");
const OWNERS_RULE = filterRule("owners()");

/**
 * The params of a one-shot read of a set (`discover.services`,
 * `discover.leader`, `discover.owners`), its options checked by `rule`.
 */
function setParams(
  service: string,
  options: ServicesOptions | undefined,
  rule: OptionsRule,
): { params: ServicesParams; signal?: AbortSignal } {
  const { filter: given, health, signal } = checkOptions(options, rule);
  validateServiceName(service);
  const filter = given === undefined
    ? undefined
    : validateAttrs(given, "filter");
  validateHealthFilter(health);
  return {
    params: {
      service,
      ...(filter ? { filter: { attrs: filter } } : {}),
      ...(health ? { health } : {}),
    },
    signal,
  };
}
const CAMPAIGN_RULE: OptionsRule = {
  where: "campaign()",
  known: ["attrs", "filter", "signal"],
  hint: (_key, value) =>
    typeof value === "string" ? "attributes go in {attrs: {...}}" : undefined,
};
const CATALOG_RULE: OptionsRule = { where: "catalog()", known: ["signal"] };
const STATUS_RULE: OptionsRule = { where: "status()", known: ["signal"] };
const OWNED_RULE: OptionsRule = { where: "owned()", known: ["signal"] };

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A number of milliseconds option, checked once. */
function millis(
  name: string,
  value: number | undefined,
  fallback: number,
  least: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || Number.isNaN(value) || value < least) {
    throw new RangeError(
      `'${name}' must be a number of milliseconds, at least ${least}: current value is ${
        String(value)
      }`,
    );
  }
  return value;
}

/** The wire form of a target, and the key of the instance it names. */
function target(
  service: string,
  at: Target,
): { params: { port: number } | { addr: string }; key: string } {
  if (typeof at === "number") {
    // A bare port names the instance at the agent's advertised host,
    // whatever it is: one key per port.
    const port = validatePort(at);
    return { params: { port }, key: instanceKey(service, `:${port}`) };
  }
  const addr = validateAddr(at);
  return { params: { addr }, key: instanceKey(service, addr) };
}

/**
 * Connects to an agent, or to the first of several agents that answers.
 * With several URLs, the client uses one at a time: when it is down (at
 * the first connection and at every reconnection) the client tries the
 * next, in turn, and registers everything again there.
 *
 * @example Usage
 * ```ts ignore
 * import { connect } from "@discover/discover";
 * await using client = await connect("ws://127.0.0.1:1111");
 * await client.register("cache", 6379, { attrs: { zone: "b" } });
 * ```
 *
 * @example Several agents, and a program started before its agent
 * ```ts ignore
 * import { connect } from "@discover/discover";
 * const client = await connect(
 *   ["ws://10.0.0.1:1111", "ws://10.0.0.2:1111"],
 *   { waitForAgent: 30_000 },
 * );
 * ```
 *
 * @param url The agent's WebSocket URL, e.g. `ws://127.0.0.1:1111`, or a
 *   list of them, tried in order.
 * @param options Signal, WebSocket implementation, client id, timings,
 *   reconnection and the wait for an agent.
 * @returns The connected client.
 * @throws {TypeError} (the promise rejects with it) When a URL is not a
 *   valid `ws:`/`wss:` URL without a fragment, the list is empty, an option
 *   is unknown, or there is no WebSocket implementation.
 * @throws {RpcError} `ConnectionClosed` when no agent could be reached
 *   (the message names each URL and what answered there), `Timeout` when
 *   connecting took too long or `waitForAgent` ran out.
 */
export async function connect(
  url: string | URL | readonly (string | URL)[],
  options?: ConnectOptions,
): Promise<Client> {
  const client = new Client(url, options);
  await client.opened(options?.signal);
  return client;
}

/** A registration the client keeps. */
interface Held {
  readonly kind: "registration";
  /** Its key in the client's map. */
  readonly key: string;
  readonly service: string;
  readonly at: Target;
  readonly params: { port: number } | { addr: string };
  readonly attrs: Attrs;
  readonly check?: Check;
  /** The client's latest report of the instance's health, sent again after a reconnection. */
  report?: { health: Health; note?: string };
  state: RegistrationState;
  error?: unknown;
}

/** The optional fields a subscribe asks for (see `SubscribeParams`). */
interface SubscribeWire {
  /** `batch`: initial events in batch frames. */
  batch: boolean;
  /** `chunks`: a snapshot in `snapshot` events. */
  chunks: boolean;
}

/** What a subscribe asks for of an agent that has refused nothing. */
const FULL_WIRE: Readonly<SubscribeWire> = { batch: true, chunks: true };

/** What the client knows of one open set. */
interface SetState {
  readonly kind: "set";
  readonly set: ServiceSet;
  readonly control: SetControl;
  readonly filter?: Attrs;
  readonly health?: HealthFilter;
  /** Subscription id on the current connection. */
  id?: string;
  /** Epoch of the set's revision: sent back with `since`. */
  epoch?: string;
  /**
   * A snapshot under way, and its epoch: that becomes the set's epoch at
   * the snapshot's `current`, together with its revision.
   */
  snapshot?: { epoch: string | undefined };
  /** The latest restore failure, while it lasts. */
  error?: unknown;
}

type Restorable = Held | SetState;

/**
 * A connection to an agent. Registrations live as long as the client (plus
 * the agent's grace TTL when the connection is lost). The client pings the
 * agent in the background; when the connection is lost it reconnects with
 * backoff (to the next agent, when given several), registers everything
 * again and resumes every open set from its last revision, while the sets
 * keep serving their last known state.
 *
 * Every call is idempotent and is retried on the next connection while its
 * `requestTimeout` lasts; a call that runs out of time fails with an
 * {@linkcode RpcError} (`Timeout` or `ConnectionClosed`). Every options
 * object is checked: an unknown key is a `TypeError`.
 */
export class Client extends EventTarget implements AsyncDisposable {
  /** The id that owns this client's registrations. */
  readonly clientId: string;
  readonly #connection: Connection;
  /** By instance key: port registrations by `service/:port`. */
  #registered = new Map<string, Held>();
  /** register() calls under way, by key. */
  #registering = new Map<string, number>();
  #sets = new Map<ServiceSet, SetState>();
  #bySubscription = new Map<string, SetState>();
  /**
   * What subscribes ask for: batch frames, and a snapshot in `snapshot`
   * events (each `false` once the agent refused it, until the next
   * connection, which may reach an agent of another version).
   */
  #wire: SubscribeWire = { ...FULL_WIRE };
  /** Registrations and sets still to restore after a reconnection. */
  #toRestore = new Set<Restorable>();
  /** Items of `#toRestore` with an attempt under way. */
  #inFlight = new Set<Restorable>();
  #restoreLoop?: Promise<void>;
  /** Aborted on every new connection: a restore waiting out its backoff tries at once. */
  #kick = new AbortController();
  /** The close under way, once `close()` was called. */
  #closing?: Promise<void>;
  /** Campaigns under way, by instance key: their instances are theirs alone. */
  #campaigns = new Map<string, Campaign | undefined>();
  /** Milliseconds between pings, and a request's timeout: the loss detection bound is their sum. */
  readonly #timing: { pingInterval: number; requestTimeout: number };

  /**
   * Creates a client; use {@linkcode connect}, which also waits for the
   * first connection.
   *
   * @param url The agent's WebSocket URL, or a list of them.
   * @param options The options of {@linkcode connect}.
   * @throws {TypeError} On a bad URL, an unknown option, or no WebSocket
   *   implementation.
   */
  constructor(
    url: string | URL | readonly (string | URL)[],
    options?: ConnectOptions,
  ) {
    super();
    const opts = checkOptions(options, CONNECT_RULE);
    const Ctor = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof Ctor !== "function") {
      throw new TypeError(
        "no WebSocket implementation: pass options.WebSocket (for example the default export of npm 'ws'), or on Node.js 20 run with --experimental-websocket",
      );
    }
    const clientId = opts.clientId ?? randomId();
    if (typeof clientId !== "string" || !CLIENT_ID_PATTERN.test(clientId)) {
      throw new TypeError(
        `'clientId' must be ${CLIENT_ID_RULE}: current value is ${
          JSON.stringify(clientId)
        }`,
      );
    }
    const token = opts.token;
    if (
      token !== undefined &&
      (typeof token !== "string" || token.length === 0 ||
        token.length > MAX_TOKEN_LENGTH)
    ) {
      throw new TypeError(
        `'token' must be a string of 1 to ${MAX_TOKEN_LENGTH} characters`,
      );
    }
    const urls = agentUrls(url, clientId);
    const requestTimeout = millis(
      "requestTimeout",
      opts.requestTimeout,
      DEFAULTS.requestTimeout,
      1,
    );
    const pingInterval = millis(
      "pingInterval",
      opts.pingInterval,
      DEFAULTS.pingInterval,
      1,
    );
    this.#timing = { pingInterval, requestTimeout };
    const reconnect = opts.reconnect === false ? false : checkOptions(
      opts.reconnect === true ? undefined : opts.reconnect,
      RECONNECT_RULE,
    );
    this.clientId = clientId;
    this.#connection = new Connection({
      urls,
      WebSocket: Ctor,
      connectTimeout: millis(
        "connectTimeout",
        opts.connectTimeout,
        DEFAULTS.connectTimeout,
        1,
      ),
      requestTimeout,
      pingInterval,
      reconnect: reconnect && {
        initialDelay: reconnect.initialDelay ?? DEFAULTS.initialDelay,
        maxDelay: reconnect.maxDelay ?? DEFAULTS.maxDelay,
      },
      waitForAgent: millis("waitForAgent", opts.waitForAgent, 0, 0),
      ...(token === undefined ? {} : {
        hello: async (request: HelloRequest) => {
          await request("discover.authenticate", { token });
        },
      }),
    }, {
      notification: (method, params) => this.#notification(method, params),
      lost: () => this.#lost(),
      reconnected: () => this.#reconnected(),
      ended: () => this.#ended(),
    });
  }

  /** `connected`, `disconnected` (reconnecting, or not yet connected) or `closed`. */
  get state(): ConnectionState {
    return this.#connection.state;
  }

  /** Whether the client has ended. */
  get closed(): boolean {
    return this.#connection.state === "closed";
  }

  /** The URL of the agent in use (or tried next while disconnected). */
  get url(): string {
    return this.#connection.url;
  }

  /**
   * Makes the first connection (once; later calls return the same promise).
   * {@linkcode connect} calls it.
   *
   * @param signal Aborts the attempt.
   * @returns A promise that resolves once connected.
   */
  opened(signal?: AbortSignal): Promise<void> {
    return this.#connection.open(signal);
  }

  /**
   * Registers an instance, or changes the attributes of one this client
   * registered. It stays discoverable until it is unregistered, the client
   * closes, or the client is gone for longer than the agent's TTL. After a
   * reconnection the client registers it again by itself; see
   * {@linkcode Client.registrations} for how that went.
   *
   * @example Usage
   * ```ts ignore
   * await client.register("cache", 6379, { attrs: { id: "cache1" } });
   * await client.register("cache", "10.0.0.7:6379");
   * ```
   *
   * @param service The service name.
   * @param at A port on the agent's advertised host, or a `host:port` address.
   * @param options Attributes and a signal.
   * @returns The instance as the agent stored it.
   * @throws {TypeError} When `options` has a key other than `attrs` and
   *   `signal` (attributes go in `{attrs: {...}}`).
   * @throws {RpcError} `ConnectionClosed` (-32006), without sending
   *   anything, once {@linkcode Client.close} has begun.
   */
  async register(
    service: string,
    at: Target,
    options?: RegisterOptions,
  ): Promise<Instance> {
    const { attrs: given, check: givenCheck, signal } = checkOptions(
      options,
      REGISTER_RULE,
    );
    validateServiceName(service);
    const attrs = validateAttrs(given ?? {});
    const check = givenCheck === undefined
      ? undefined
      : validateCheck(givenCheck);
    const { params, key } = target(service, at);
    this.#notCampaigning(key, "register()");
    this.#notClosing("discover.register");
    const before = this.#registered.get(key);
    // This call is the newest intent: a restore must not send an older one,
    // now or while this call is under way (a reconnection meanwhile queues
    // one; see #reregister).
    const restoring = before !== undefined && this.#toRestore.delete(before);
    this.#registering.set(key, (this.#registering.get(key) ?? 0) + 1);
    let instance: Instance;
    try {
      instance = await this.#connection.request(
        "discover.register",
        { service, ...params, attrs, ...(check ? { check } : {}) },
        { signal },
      );
    } catch (error) {
      // The registration held before this call is still to be restored.
      if (restoring && this.#registered.get(key) === before) {
        this.#toRestore.add(before);
        this.#keepRestoring();
      }
      throw error;
    } finally {
      const left = this.#registering.get(key)! - 1;
      if (left > 0) this.#registering.set(key, left);
      else this.#registering.delete(key);
    }
    // Whatever a reconnection queued of the older registration is moot.
    if (before) this.#toRestore.delete(before);
    this.#registered.set(key, {
      kind: "registration",
      key,
      service,
      at,
      params,
      attrs,
      ...(check ? { check } : {}),
      ...(before?.report ? { report: before.report } : {}),
      state: "registered",
    });
    return instance;
  }

  /**
   * Reports the health of an instance this client registered (the owner's
   * own view, like a TTL check without its writes): `critical` takes it out
   * of passing sets until it reports `passing` again. Combined with its
   * check, if any: the instance is critical while either says so. The
   * client sends it again after a reconnection.
   *
   * @example Usage
   * ```ts ignore
   * await client.setHealth("worker", 9000, "critical", { note: "database unreachable" });
   * await client.setHealth("worker", 9000, "passing");
   * ```
   *
   * @param service The service name.
   * @param at The port or `host:port` given to {@linkcode Client.register}.
   * @param health `"passing"` or `"critical"`.
   * @param options A note (only with `critical`) and a signal.
   * @returns The instance with its health as it is now.
   * @throws {TypeError} When `options` has a key other than `note` and `signal`.
   */
  async setHealth(
    service: string,
    at: Target,
    health: Health,
    options?: SetHealthOptions,
  ): Promise<Instance> {
    const { note, signal } = checkOptions(options, SET_HEALTH_RULE);
    const params = validateSetHealth({
      service,
      ...target(service, at).params,
      health,
      ...(note === undefined ? {} : { note }),
    });
    this.#notCampaigning(target(service, at).key, "setHealth()");
    const instance = await this.#connection.request(
      "discover.setHealth",
      params,
      { signal },
    );
    const held = this.#registered.get(target(service, at).key);
    if (held) held.report = { health, ...(note ? { note } : {}) };
    return instance;
  }

  /**
   * Removes an instance this client registered; with `{force: true}`, any
   * instance, whoever holds it (an admin's force-deregister: it needs a
   * token with `admin` access to the service).
   *
   * @param service The service name.
   * @param at The port or `host:port` given to {@linkcode Client.register}.
   * @param options A signal, and `force`.
   * @returns Whether an instance was removed (`false` also when a retry
   *   after a reconnection found it already removed).
   * @throws {TypeError} When `options` has a key other than `signal` and
   *   `force`.
   */
  async unregister(
    service: string,
    at: Target,
    options?: UnregisterOptions,
  ): Promise<boolean> {
    const { signal, force } = checkOptions(options, UNREGISTER_RULE);
    validateServiceName(service);
    const { params, key } = target(service, at);
    this.#notCampaigning(key, "unregister()");
    const held = this.#registered.get(key);
    this.#registered.delete(key);
    if (held) this.#toRestore.delete(held);
    return await this.#connection.request(
      "discover.unregister",
      { service, ...params, ...(force === true ? { force } : {}) },
      { signal },
    );
  }

  /**
   * Campaigns for the leadership of a set: registers the instance, opens
   * the set (the passing instances of `service` with the attributes of
   * `filter`, by default the instance's own `attrs`) and resolves with a
   * {@linkcode Campaign}. Its `elected` resolves when this instance leads,
   * with its fencing token (also `token`); a `deposed` event says, at
   * once, that this client can no longer be sure it leads (the
   * connection is lost or in doubt, the agent cannot reach its backend or
   * no longer vouches for the instance, another instance leads). After a
   * `deposed`, the campaign registers its instance again in a new life:
   * it leads again only after the instances older than that, with a
   * greater token. `resign()` steps down.
   *
   * The instance is the campaign's: `register()`, `setHealth()` and
   * `unregister()` of it throw while the campaign lasts. It has no health
   * check: an agent-run check could take it out of the set before this
   * client hears of it.
   *
   * @example Usage
   * ```ts ignore
   * const me = await client.campaign("db", 5432, { attrs: { shard: "3" } });
   * me.addEventListener("deposed", () => stopWriting());
   * const token = await me.elected;
   * await me.resign();
   * ```
   *
   * @param service The service name.
   * @param at A port on the agent's advertised host, or a `host:port` address.
   * @param options Attributes, the set's filter, and a signal.
   * @returns The campaign, registered and following its set.
   * @throws {TypeError} When `options` has a key other than `attrs`,
   *   `filter` and `signal`, when `attrs` does not match `filter`, or when
   *   this client already registered the instance or campaigns with it.
   * @throws {RangeError} When the agent's grace TTL is not above the
   *   client's loss detection bound (`pingInterval + requestTimeout`): a
   *   lost client's instance could go before the client knows it is lost.
   * @throws {RpcError} `ConnectionClosed` (-32006), without registering,
   *   once {@linkcode Client.close} has begun.
   */
  async campaign(
    service: string,
    at: Target,
    options?: CampaignOptions,
  ): Promise<Campaign> {
    const { attrs: given, filter: givenFilter, signal } = checkOptions(
      options,
      CAMPAIGN_RULE,
    );
    validateServiceName(service);
    const attrs = validateAttrs(given ?? {});
    const filter = givenFilter === undefined
      ? attrs
      : validateAttrs(givenFilter, "filter");
    for (const [key, value] of Object.entries(filter)) {
      if (attrs[key] !== value) {
        throw new TypeError(
          `campaign(): 'attrs' must match 'filter', or the instance would never be in the set it campaigns in: attribute ${
            keyText(key)
          } is ${JSON.stringify(attrs[key] ?? null)}, the filter wants ${
            JSON.stringify(value)
          }`,
        );
      }
    }
    const { params, key } = target(service, at);
    this.#notClosing("discover.register");
    if (this.#campaigns.has(key) || this.#registered.has(key)) {
      throw new TypeError(
        `campaign(): ${service} at ${
          typeof at === "number" ? `port ${at}` : at
        } is already ${
          this.#campaigns.has(key) ? "campaigning" : "registered"
        } through this client: resign or unregister it first`,
      );
    }
    this.#campaigns.set(key, undefined);
    try {
      const { ttl } = await this.status({ signal });
      const { pingInterval, requestTimeout } = this.#timing;
      const bound = pingInterval + requestTimeout;
      if (ttl * 1000 <= bound) {
        throw new RangeError(
          `campaign(): the agent's grace TTL (${ttl} s, its --ttl) must be above this client's loss detection bound, pingInterval + requestTimeout (${pingInterval} + ${requestTimeout} = ${bound} ms): otherwise the agent could let the instance go before this client knows it is lost; lower the client's timings or raise the agent's --ttl`,
        );
      }
      let campaign: Campaign | undefined = undefined;
      campaign = await startCampaign({
        service,
        interval: pingInterval,
        register: async () => {
          // A campaign still starting when close() began: close does not
          // know of it, so it registers nothing more.
          this.#notClosing("discover.register");
          return await this.#connection.request("discover.register", {
            service,
            ...params,
            attrs,
          });
        },
        unregister: () =>
          this.#connection.request("discover.unregister", {
            service,
            ...params,
          }),
        lease: () => this.#connection.requestNow("discover.lease", undefined),
        leaseBefore: () =>
          this.#connection.request("discover.lease", undefined),
        openSet: (signal) =>
          this.services(service, { filter, health: "passing", signal }),
        connected: () => this.state === "connected",
        ended: () => {
          // Ended while starting: the catch below forgets it.
          if (campaign && this.#campaigns.get(key) === campaign) {
            this.#campaigns.delete(key);
          }
        },
      }, signal);
      if (campaign.ended) {
        this.#campaigns.delete(key);
      } else {
        this.#campaigns.set(key, campaign);
      }
      return campaign;
    } catch (error) {
      if (this.#campaigns.get(key) === undefined) this.#campaigns.delete(key);
      throw error;
    }
  }

  /**
   * The registrations this client keeps (registered and not unregistered),
   * with where each stands. After a reconnection, one the agent refused is
   * `restoring` while the client retries it, or `failed` when retrying
   * cannot help; each is also an `error` event.
   *
   * @example Usage
   * ```ts ignore
   * for (const r of client.registrations()) {
   *   if (r.state === "failed") console.error(r.service, r.at, r.error);
   * }
   * ```
   *
   * @returns A fresh array, in registration order.
   */
  registrations(): Registration[] {
    return [...this.#registered.values()].map(describeHeld);
  }

  /**
   * Opens a live set of the instances of `service` (matching `filter`,
   * applied by the agent). Resolves once the set holds the current state.
   * `"*"` opens a set of the instances of every service, including services
   * that appear later (each instance names its `service`).
   *
   * @example Usage
   * ```ts ignore
   * await using everything = await client.services("*");
   * for (const i of everything.online()) console.log(i.service, i.addr);
   * ```
   *
   * @param service The service name, or `"*"` for every service.
   * @param options Filter and signal.
   * @returns The set; close it when done.
   * @throws {TypeError} When `options` has a key other than `filter` and
   *   `signal` (filter by attributes with `{filter: {zone: "b"}}`).
   */
  async services(
    service: string,
    options?: ServicesOptions,
  ): Promise<ServiceSet> {
    const { filter: given, health, signal } = checkOptions(
      options,
      SERVICES_RULE,
    );
    if (service !== ALL_SERVICES) validateServiceName(service);
    const filter = given === undefined
      ? undefined
      : validateAttrs(given, "filter");
    validateHealthFilter(health);
    const { set, control } = openSet(
      service,
      filter,
      () => this.#unsubscribe(set),
    );
    const state: SetState = {
      kind: "set",
      set,
      control,
      filter,
      ...(health ? { health } : {}),
    };
    this.#sets.set(set, state);
    // The caller's signal ends the wait, never the subscribe request itself:
    // the set is closed instead, which unsubscribes once the id is known.
    const aborted = deferred<never>();
    const onAbort = () => aborted.reject(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    aborted.promise.catch(() => {});
    try {
      signal?.throwIfAborted();
      await Promise.race([this.#subscribe(state), aborted.promise]);
      await Promise.race([control.initialized, aborted.promise]);
    } catch (error) {
      await set.close();
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    return set;
  }

  /**
   * Reads the instances of `service` once, without subscribing.
   *
   * @param service The service name.
   * @param options Filter and signal.
   * @returns The matching instances.
   * @throws {TypeError} When `options` has a key other than `filter` and
   *   `signal`.
   */
  async lookup(
    service: string,
    options?: ServicesOptions,
  ): Promise<Instance[]> {
    const { params, signal } = setParams(service, options, LOOKUP_RULE);
    const result = await this.#connection.request("discover.services", params, {
      signal,
    });
    return result.instances;
  }

  /**
   * Reads the leader of a set once, without subscribing: its instance with
   * the lowest `created` revision (ties broken by `addr`), whose `created`
   * is its fencing token. To follow it, open the set with
   * {@linkcode Client.services} and use `set.leader()` and its `"leader"`
   * events.
   *
   * @example Usage
   * ```ts ignore
   * const leader = await client.leader("db", { filter: { shard: "3" } });
   * console.log(leader?.addr, leader?.created);
   * ```
   *
   * @param service The service name.
   * @param options Filter, health and signal.
   * @returns The leader, or `undefined` when the set is empty.
   * @throws {TypeError} When `options` has a key other than `filter`,
   *   `health` and `signal`.
   */
  async leader(
    service: string,
    options?: ServicesOptions,
  ): Promise<Instance | undefined> {
    const { params, signal } = setParams(service, options, LEADER_RULE);
    const leader = await this.#connection.request("discover.leader", params, {
      signal,
    });
    return leader ?? undefined;
  }

  /**
   * Whose the instances of a set are, for operators: each instance's owner
   * (a short form of its stored hash, never a client id), whether that
   * owner's client is connected to this agent, lost (the instance goes at
   * `expires` unless it comes back) or held elsewhere, and its token name
   * when the agent knows it.
   *
   * @example Usage
   * ```ts ignore
   * const { owners } = await client.owners("db", { health: "any" });
   * for (const o of owners) console.log(o.addr, o.owner, o.client);
   * ```
   *
   * @param service The service name.
   * @param options Filter, health and signal.
   * @returns The revision of the read and one entry per instance, by address.
   * @throws {TypeError} When `options` has a key other than `filter`,
   *   `health` and `signal`.
   */
  async owners(
    service: string,
    options?: ServicesOptions,
  ): Promise<OwnersResult> {
    const { params, signal } = setParams(service, options, OWNERS_RULE);
    return await this.#connection.request("discover.owners", params, {
      signal,
    });
  }

  /**
   * The services that have instances, sorted by name, with their number of
   * instances: a one-shot read (to follow them live, use
   * `services("*")`).
   *
   * @example Usage
   * ```ts ignore
   * const { services } = await client.catalog();
   * for (const s of services) console.log(s.service, s.instances);
   * ```
   *
   * @param options A signal.
   * @returns The revision of the read and the services.
   * @throws {TypeError} When `options` has a key other than `signal`.
   */
  async catalog(options?: CallOptions): Promise<CatalogResult> {
    const { signal } = checkOptions(options, CATALOG_RULE);
    return await this.#connection.request("discover.catalog", undefined, {
      signal,
    });
  }

  /**
   * The instances the agent holds for this client (its client id), sorted
   * by id: the agent's side of {@linkcode Client.registrations}, which says
   * what the client keeps registered. After a reconnection, it shows which
   * registrations are back; an instance another client took over is not
   * listed.
   *
   * @example Usage
   * ```ts ignore
   * for (const i of await client.owned()) console.log(i.service, i.addr);
   * ```
   *
   * @param options A signal.
   * @returns The instances.
   * @throws {TypeError} When `options` has a key other than `signal`.
   */
  async owned(options?: CallOptions): Promise<Instance[]> {
    const { signal } = checkOptions(options, OWNED_RULE);
    const result = await this.#connection.request("discover.owned", undefined, {
      signal,
    });
    return result.instances;
  }

  /**
   * The agent's status: version, backend, connectivity, revision, limits.
   *
   * @param options A signal.
   * @returns The status.
   * @throws {TypeError} When `options` has a key other than `signal`.
   */
  async status(options?: CallOptions): Promise<StatusResult> {
    const { signal } = checkOptions(options, STATUS_RULE);
    return await this.#connection.request("discover.status", undefined, {
      signal,
    });
  }

  /**
   * Stops restoring, resigns campaigns, unregisters what this client
   * registered, closes its sets and the connection (a clean close: the
   * agent removes anything left at once). From its start, `register()`
   * and `campaign()` reject with -32006. Calls made meanwhile share the
   * one close.
   *
   * It resolves once the agent has answered the close frame, so a process
   * may exit right after and still count as a client that is done. An
   * agent that stops answering delays it by the calls made on the way,
   * each bounded by `requestTimeout`: a campaign's resignation (its set's
   * unsubscribe, then its unregister, after any re-entry under way), then
   * the unregisters, all at once; then 1 s at most for the close frame. A
   * client that is disconnected when it closes (or loses the connection
   * meanwhile) can neither unregister nor say it is done: its agent keeps
   * its instances for the grace TTL, as for any lost client.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.closed) return Promise.resolve();
    return this.#closing = this.#close();
  }

  async #close(): Promise<void> {
    // Nothing is restored from now on: a registration sent again after
    // the unregisters below would outlive the client.
    this.#toRestore.clear();
    this.#kick.abort();
    // Campaigns stop believing before their instances go.
    await Promise.allSettled(
      [...this.#campaigns.values()].map((c) => c?.resign()),
    );
    await Promise.allSettled(
      [...this.#registered.values()]
        .filter((held) => held.state !== "failed")
        .map(({ service, params }) =>
          this.#connection.requestNow("discover.unregister", {
            service,
            ...params,
          })
        ),
    );
    this.#registered.clear();
    await this.#connection.close();
  }

  /** Same as {@linkcode Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Throws -32006 once `close()` has begun: what is registered from then
   * on could land after close's unregisters.
   */
  #notClosing(method: string) {
    if (this.#closing) throw closedError(method, { closing: true });
  }

  /** Throws when `key` is a campaign's instance. */
  #notCampaigning(key: string, where: string) {
    if (!this.#campaigns.has(key)) return;
    throw new TypeError(
      `${where}: '${key}' is a campaign's instance: resign the campaign first (a change of it could end its leadership before the campaign knows)`,
    );
  }

  #lost() {
    this.#bySubscription.clear();
    for (const held of this.#registered.values()) {
      if (held.state === "registered") held.state = "restoring";
    }
    for (const state of this.#sets.values()) {
      state.id = undefined;
      state.snapshot = undefined;
      state.control.disconnected();
    }
    this.dispatchEvent(new Event("disconnect"));
  }

  async #reconnected() {
    await this.#restore();
    // The connection may have been lost again while restoring.
    if (this.#connection.state === "connected") {
      this.dispatchEvent(new Event("reconnect"));
    }
  }

  /**
   * After a reconnection: every registration again, every set resumed.
   * Resolves after one attempt at each; what failed for a reason that can
   * pass is retried with backoff (and at once on the next connection) until
   * it succeeds or is withdrawn: an instance taken by another client during
   * a blip comes back to this one as soon as that client lets it go. What
   * failed for good is given up and reported.
   */
  async #restore() {
    // An upgraded agent at the same address serves what this one refused.
    this.#wire = { ...FULL_WIRE };
    for (const held of this.#registered.values()) {
      if (held.state !== "failed") this.#toRestore.add(held);
    }
    for (const state of this.#sets.values()) this.#toRestore.add(state);
    this.#kick.abort();
    this.#kick = new AbortController();
    await this.#restoreOnce();
    this.#keepRestoring();
  }

  /** Retries what is still to restore, unless a loop already does. */
  #keepRestoring() {
    if (this.#toRestore.size === 0 || this.closed) return;
    this.#restoreLoop ??= this.#retryRestore().finally(() =>
      this.#restoreLoop = undefined
    );
  }

  async #retryRestore() {
    const backoff = new Backoff({ initialDelay: 250, maxDelay: 5000 });
    while (this.#toRestore.size > 0 && !this.closed && !this.#closing) {
      await backoff.wait(this.#kick.signal);
      if (this.state === "connected") await this.#restoreOnce();
    }
  }

  /** One attempt at every item still to restore and not being restored. */
  async #restoreOnce() {
    const items = [...this.#toRestore].filter((i) => !this.#inFlight.has(i));
    await Promise.all(items.map(async (item) => {
      this.#inFlight.add(item);
      try {
        if (item.kind === "registration") {
          await this.#reregister(item);
        } else {
          if (!this.#sets.has(item.set)) {
            this.#toRestore.delete(item);
            return;
          }
          await this.#subscribe(item);
          this.#toRestore.delete(item);
          item.error = undefined;
        }
      } catch (error) {
        if (this.closed) return;
        this.#failed(item, error);
      } finally {
        this.#inFlight.delete(item);
      }
    }));
  }

  async #reregister(held: Held) {
    // Withdrawn, or superseded by a newer register() call.
    if (!this.#toRestore.has(held)) return;
    // A register() of the same instance is under way: it carries the newer
    // intent, and sending this older one now could land after it. Left to
    // restore: the retry loop sends it if that call fails.
    if (this.#registering.has(held.key)) return;
    const { service, params, attrs, check } = held;
    await this.#connection.request("discover.register", {
      service,
      ...params,
      attrs,
      ...(check ? { check } : {}),
    });
    const report = held.report;
    if (report && this.#toRestore.has(held)) {
      await this.#connection.request("discover.setHealth", {
        service,
        ...params,
        ...report,
      });
    }
    if (this.#toRestore.delete(held)) {
      held.state = "registered";
      held.error = undefined;
    }
  }

  /** A restore attempt failed: retry, or give up when retrying cannot help. */
  #failed(item: Restorable, error: unknown) {
    const current = item.kind === "registration"
      ? this.#registered.get(item.key) === item
      : this.#sets.has(item.set);
    if (!current) return; // withdrawn meanwhile
    const permanent = isPermanent(error);
    const first = item.error === undefined;
    item.error = error;
    if (permanent) {
      this.#toRestore.delete(item);
      if (item.kind === "registration") {
        item.state = "failed";
      } else {
        this.#sets.delete(item.set);
        item.control.ended();
      }
    } else if (!first) {
      return; // told when it started failing
    }
    const event = new RestoreErrorEvent({
      error,
      permanent,
      ...(item.kind === "registration"
        ? { registration: describeHeld(item) }
        : { set: item.set }),
    });
    if (this.dispatchEvent(event)) console.error(restoreMessage(item, event));
  }

  /** Subscribes a set on the current connection, resuming from its revision. */
  async #subscribe(state: SetState) {
    const { set } = state;
    // Resume from the revision before the last one applied: the events of
    // one revision may have been cut off half-way, and the set ignores the
    // ones it already has.
    const resume = state.epoch !== undefined && set.revision > 0
      ? { since: set.revision - 1, epoch: state.epoch }
      : undefined;
    try {
      await this.#subscribeFrom(state, resume);
    } catch (error) {
      if (!resume || codeOf(error) !== ErrorCode.InvalidParams) throw error;
      // An agent that refuses the resume point (one of another version,
      // say) may still serve a snapshot, which the set diffs against what
      // it holds.
      state.epoch = undefined;
      await this.#subscribeFrom(state, undefined);
    }
  }

  async #subscribeFrom(
    state: SetState,
    resume: { since: number; epoch: string } | undefined,
  ): Promise<void> {
    // Each refusal turns one field off: at most three attempts.
    for (;;) {
      const wire = this.#wire;
      try {
        return await this.#subscribeOnce(state, resume, wire);
      } catch (error) {
        const field = error instanceof RpcError &&
          error.code === ErrorCode.InvalidParams &&
          (error.data as { field?: unknown } | undefined)?.field;
        // This attempt asked for it (others in flight may have too).
        if ((field !== "batch" && field !== "chunks") || !wire[field]) {
          throw error;
        }
        // An agent of an earlier version: the initial events as it sends them.
        this.#wire = { ...this.#wire, [field]: false };
      }
    }
  }

  async #subscribeOnce(
    state: SetState,
    resume: { since: number; epoch: string } | undefined,
    wire: SubscribeWire,
  ) {
    const { set, control } = state;
    await this.#connection.request("discover.subscribe", {
      service: set.service,
      ...(state.filter ? { filter: { attrs: state.filter } } : {}),
      ...(state.health ? { health: state.health } : {}),
      ...resume,
      // Initial events in batch frames, a snapshot in `snapshot` events:
      // far fewer frames and characters.
      ...(wire.batch ? { batch: true } : {}),
      ...(wire.chunks ? { chunks: true } : {}),
    }, {
      // Runs before the frames that follow the response: the set must be
      // findable by the time its first event arrives.
      onResult: (result) => {
        if (set.closed) {
          void this.#connection.requestNow("discover.unsubscribe", {
            subscription: result.subscription,
          })?.catch(() => {});
          return;
        }
        state.id = result.subscription;
        // An empty epoch (an agent that has not reached its backend yet)
        // names no sequence: nothing to resume from.
        const epoch = result.epoch === "" ? undefined : result.epoch;
        if (result.mode === "snapshot") {
          // The set's revision stays the old one until the snapshot's
          // `current`: so does the epoch it belongs to.
          state.snapshot = { epoch };
          control.beginSnapshot();
        } else {
          state.epoch = epoch;
          state.snapshot = undefined;
        }
        this.#bySubscription.set(result.subscription, state);
      },
    });
  }

  async #unsubscribe(set: ServiceSet) {
    const state = this.#sets.get(set);
    this.#sets.delete(set);
    if (state === undefined) return;
    this.#toRestore.delete(state);
    if (state.id === undefined) return;
    this.#bySubscription.delete(state.id);
    // Not connected: the subscription died with its connection.
    await this.#connection.requestNow("discover.unsubscribe", {
      subscription: state.id,
    })?.catch(() => {});
  }

  #notification(method: string, params: unknown): void {
    if (method !== EVENT_NOTIFICATION) return;
    const { subscription, result } = params as EventParams;
    const state = this.#bySubscription.get(subscription);
    if (!state) return;
    state.control.apply(result);
    if (result.kind === "current" && state.snapshot) {
      state.epoch = state.snapshot.epoch;
      state.snapshot = undefined;
    }
  }

  #ended() {
    for (const campaign of this.#campaigns.values()) campaign?.end("closed");
    this.#campaigns.clear();
    this.#toRestore.clear();
    this.#kick.abort();
    for (const state of this.#sets.values()) state.control.ended();
    this.#sets.clear();
    this.#bySubscription.clear();
    this.dispatchEvent(new Event("close"));
  }
}

function describeHeld(held: Held): Registration {
  const { service, at, attrs, state, error } = held;
  return {
    service,
    at,
    attrs: { ...attrs },
    state,
    ...(error === undefined ? {} : { error }),
  };
}

/** The line written for a restore error nobody handled. */
function restoreMessage(item: Restorable, event: RestoreErrorEvent): string {
  const what = item.kind === "registration"
    ? `registering ${item.service} at ${
      typeof item.at === "number" ? `port ${item.at}` : item.at
    } again`
    : `resuming the set of '${item.set.service}'`;
  const error = event.error;
  const why = error instanceof RpcError
    ? `${error.message} (${error.code})`
    : String(error);
  const outcome = event.permanent
    ? item.kind === "registration"
      ? "given up: register it again or unregister it"
      : "given up: the set is closed"
    : "retrying with backoff";
  return `discover: ${what} after a reconnection failed: ${why}; ${outcome} (handle the client's "error" event to replace this message)`;
}

/** Typed listener overloads for {@linkcode Client}. */
export interface Client {
  /**
   * Adds a typed listener.
   *
   * @param type `"disconnect"`, `"reconnect"`, `"error"` or `"close"`.
   * @param listener The listener.
   * @param options Listener options.
   */
  addEventListener<K extends keyof ClientEventMap>(
    type: K,
    listener: (this: Client, event: ClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /**
   * Adds a listener.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options Listener options.
   */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
