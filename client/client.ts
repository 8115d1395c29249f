// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The discover client: a connection to an agent that registers instances,
 * keeps them alive, opens live {@linkcode ServiceSet}s, and reconnects by
 * itself when the connection is lost.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { JsonRpcPeer } from "../protocol/jsonrpc.ts";
import {
  ALL_SERVICES,
  type Attrs,
  type CatalogResult,
  type EventParams,
  type Instance,
  Methods,
  type ServicesResult,
  type StatusResult,
  type SubscribeResult,
} from "../protocol/types.ts";
import {
  CLIENT_ID_PATTERN,
  validateAddr,
  validateAttrs,
  validatePort,
  validateServiceName,
} from "../protocol/validate.ts";
import { Backoff } from "../protocol/backoff.ts";
import { deferred } from "./_deferred.ts";
import { ServiceSet } from "./service_set.ts";

/** A WebSocket constructor: the global one, or one from a library such as npm `ws`. */
export type WebSocketConstructor = new (url: string) => WebSocket;

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
  /** Aborts the first connection attempt. */
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
   * Milliseconds to wait for a connection to open.
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
   * is lost.
   *
   * @default {{ initialDelay: 100, maxDelay: 5000 }}
   */
  reconnect?: ReconnectOptions | false;
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
}

/** Options of {@linkcode Client.services} and {@linkcode Client.lookup}. */
export interface ServicesOptions extends CallOptions {
  /** Only instances with every one of these attributes, with these values. */
  filter?: Attrs;
}

/** Connection states of a {@linkcode Client}. */
export type ConnectionState = "connected" | "disconnected" | "closed";

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
   * A registration or a set could not be restored after a reconnection
   * (`detail`: the error, whose message names the instance or service).
   * The client keeps retrying it with backoff until it succeeds, or until
   * the program unregisters it (closes the set) or closes the client; the
   * event is dispatched when an item starts failing, not on every retry.
   */
  error: CustomEvent<unknown>;
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

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A register/unregister target: a port on the agent's advertised host, or `host:port`. */
export type Target = number | string;

function target(value: Target): { port: number } | { addr: string } {
  return typeof value === "number"
    ? { port: validatePort(value) }
    : { addr: validateAddr(value) };
}

/** One key per endpoint, whatever form the address was given in. */
function registrationKey(service: string, at: Target): string {
  const t = target(at);
  return "port" in t ? `${service}/:${t.port}` : `${service}/${t.addr}`;
}

function closedError(method: string): RpcError {
  return new RpcError(
    ErrorCode.ConnectionClosed,
    `'${method}' was not sent: the client is closed; connect again`,
  );
}

/** Opens one WebSocket and resolves once it is open. */
function openSocket(
  url: string,
  Ctor: WebSocketConstructor,
  timeout: number,
  signal?: AbortSignal,
): Promise<WebSocket> {
  const origin = new URL(url).origin;
  return new Promise((resolve, reject) => {
    const socket = new Ctor(url);
    const fail = (reason: unknown) => {
      cleanup();
      try {
        socket.close();
      } catch { /* not open */ }
      reject(reason);
    };
    const onOpen = () => (cleanup(), resolve(socket));
    const onError = () =>
      fail(
        new RpcError(
          ErrorCode.ConnectionClosed,
          `could not connect to ${origin}: is the agent running there?`,
        ),
      );
    const onAbort = () => fail(signal!.reason);
    const timer = setTimeout(
      () =>
        fail(
          new RpcError(
            ErrorCode.Timeout,
            `connecting to ${origin} took more than ${timeout} ms`,
          ),
        ),
      timeout,
    );
    const cleanup = () => {
      clearTimeout(timer);
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("error", onError);
      socket.removeEventListener("close", onError);
      signal?.removeEventListener("abort", onAbort);
    };
    socket.addEventListener("open", onOpen);
    socket.addEventListener("error", onError);
    socket.addEventListener("close", onError);
    signal?.addEventListener("abort", onAbort);
    if (signal?.aborted) onAbort();
  });
}

/**
 * Connects to an agent.
 *
 * @example Usage
 * ```ts ignore
 * import { connect } from "@discover/discover";
 * await using client = await connect("ws://127.0.0.1:1111");
 * await client.register("cache", 6379, { attrs: { zone: "b" } });
 * ```
 *
 * @param url The agent's WebSocket URL, e.g. `ws://127.0.0.1:1111`.
 * @param options Signal, WebSocket implementation, client id, timings and reconnection.
 * @returns The connected client.
 */
export async function connect(
  url: string | URL,
  options: ConnectOptions = {},
): Promise<Client> {
  const client = new Client(url, options);
  await client.opened(options.signal);
  return client;
}

/** What the client knows of one open set. */
interface SetState {
  id?: string;
  epoch?: string;
  filter?: Attrs;
}

/**
 * A connection to an agent. Registrations live as long as the client (plus
 * the agent's grace TTL when the connection is lost). The client pings the
 * agent in the background; when the connection is lost it reconnects with
 * backoff, registers everything again and resumes every open set from its
 * last revision, while the sets keep serving their last known state.
 *
 * Every call is idempotent and is retried on the next connection while its
 * `requestTimeout` lasts; a call that runs out of time fails with an
 * {@linkcode RpcError} (`Timeout` or `ConnectionClosed`).
 */
export class Client extends EventTarget implements AsyncDisposable {
  /** The id that owns this client's registrations. */
  readonly clientId: string;
  readonly #url: string;
  readonly #Ctor: WebSocketConstructor;
  readonly #connectTimeout: number;
  readonly #requestTimeout: number;
  readonly #pingInterval: number;
  readonly #reconnect: Required<ReconnectOptions> | false;
  #socket?: WebSocket;
  #peer?: JsonRpcPeer;
  #state: ConnectionState = "disconnected";
  #first?: Promise<void>;
  #pinger?: ReturnType<typeof setInterval>;
  #up = deferred<void>();
  #registered = new Map<
    string,
    { service: string; at: Target; attrs: Attrs }
  >();
  #sets = new Map<ServiceSet, SetState>();
  #bySubscription = new Map<string, ServiceSet>();
  #reconnectBackoff?: Backoff;
  /** Registrations (by key) and sets still to restore after a reconnection. */
  #toRestore = new Set<string | ServiceSet>();
  /** Items of `#toRestore` whose last attempt failed (told once per run of failures). */
  #failing = new Set<string | ServiceSet>();
  /** Items of `#toRestore` with an attempt under way. */
  #inFlight = new Set<string | ServiceSet>();
  #restoreLoop?: Promise<void>;
  /** Aborted on every new connection: a restore waiting out its backoff tries at once. */
  #kick = new AbortController();

  /**
   * Creates a client; use {@linkcode connect}, which also waits for the
   * first connection.
   *
   * @param url The agent's WebSocket URL.
   * @param options The options of {@linkcode connect}.
   */
  constructor(url: string | URL, options: ConnectOptions = {}) {
    super();
    const Ctor = options.WebSocket ?? globalThis.WebSocket;
    if (typeof Ctor !== "function") {
      throw new TypeError(
        "no WebSocket implementation: pass options.WebSocket (for example the default export of npm 'ws'), or on Node.js 20 run with --experimental-websocket",
      );
    }
    const clientId = options.clientId ?? randomId();
    if (!CLIENT_ID_PATTERN.test(clientId)) {
      throw new TypeError(
        `'clientId' must be 1 to 64 characters of A-Z a-z 0-9 _ -: current value is ${
          JSON.stringify(clientId)
        }`,
      );
    }
    const full = new URL(url);
    if (full.protocol !== "ws:" && full.protocol !== "wss:") {
      throw new TypeError(
        `'url' must be a ws: or wss: URL: current value is '${full.href}'`,
      );
    }
    full.searchParams.set("client", clientId);
    this.clientId = clientId;
    this.#url = full.href;
    this.#Ctor = Ctor;
    this.#connectTimeout = options.connectTimeout ?? DEFAULTS.connectTimeout;
    this.#requestTimeout = options.requestTimeout ?? DEFAULTS.requestTimeout;
    this.#pingInterval = options.pingInterval ?? DEFAULTS.pingInterval;
    this.#reconnect = options.reconnect === false ? false : {
      initialDelay: options.reconnect?.initialDelay ?? DEFAULTS.initialDelay,
      maxDelay: options.reconnect?.maxDelay ?? DEFAULTS.maxDelay,
    };
    if (this.#reconnect) this.#reconnectBackoff = new Backoff(this.#reconnect);
  }

  /** `connected`, `disconnected` (reconnecting, or not yet connected) or `closed`. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** Whether the client has ended. */
  get closed(): boolean {
    return this.#state === "closed";
  }

  /**
   * Makes the first connection (once; later calls return the same promise).
   * {@linkcode connect} calls it.
   *
   * @param signal Aborts the attempt.
   * @returns A promise that resolves once connected.
   */
  opened(signal?: AbortSignal): Promise<void> {
    return this.#first ??= this.#dial(signal);
  }

  /**
   * Registers an instance, or changes the attributes of one this client
   * registered. It stays discoverable until it is unregistered, the client
   * closes, or the client is gone for longer than the agent's TTL. After a
   * reconnection the client registers it again by itself.
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
   */
  async register(
    service: string,
    at: Target,
    options: RegisterOptions = {},
  ): Promise<Instance> {
    validateServiceName(service);
    const attrs = validateAttrs(options.attrs ?? {});
    const key = registrationKey(service, at);
    // This call is the newest intent: a restore must not send an older one.
    const restoring = this.#toRestore.delete(key);
    this.#failing.delete(key);
    let instance: Instance;
    try {
      instance = await this.#request(
        Methods.register,
        { service, ...target(at), attrs },
        options.signal,
      ) as Instance;
    } catch (error) {
      // The registration held before this call is still to be restored.
      if (restoring && this.#registered.has(key)) {
        this.#toRestore.add(key);
        this.#keepRestoring();
      }
      throw error;
    }
    this.#registered.set(key, { service, at, attrs });
    return instance;
  }

  /**
   * Removes an instance this client registered.
   *
   * @param service The service name.
   * @param at The port or `host:port` given to {@linkcode Client.register}.
   * @param options A signal.
   * @returns Whether an instance was removed (`false` also when a retry
   *   after a reconnection found it already removed).
   */
  async unregister(
    service: string,
    at: Target,
    options: CallOptions = {},
  ): Promise<boolean> {
    validateServiceName(service);
    const params = { service, ...target(at) };
    const key = registrationKey(service, at);
    this.#registered.delete(key);
    this.#toRestore.delete(key);
    this.#failing.delete(key);
    return await this.#request(
      Methods.unregister,
      params,
      options.signal,
    ) as boolean;
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
   */
  async services(
    service: string,
    options: ServicesOptions = {},
  ): Promise<ServiceSet> {
    if (service !== ALL_SERVICES) validateServiceName(service);
    const filter = options.filter === undefined
      ? undefined
      : validateAttrs(options.filter, "filter");
    const set: ServiceSet = new ServiceSet(
      service,
      filter,
      (): Promise<void> => this.#unsubscribe(set),
    );
    const state: SetState = { filter };
    this.#sets.set(set, state);
    const { signal } = options;
    // The caller's signal ends the wait, never the subscribe request itself:
    // the set is closed instead, which unsubscribes once the id is known.
    const aborted = deferred<never>();
    const onAbort = () => aborted.reject(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    aborted.promise.catch(() => {});
    try {
      signal?.throwIfAborted();
      await Promise.race([this.#subscribe(set, state), aborted.promise]);
      await Promise.race([set.initialized, aborted.promise]);
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
   */
  async lookup(
    service: string,
    options: ServicesOptions = {},
  ): Promise<Instance[]> {
    validateServiceName(service);
    const filter = options.filter === undefined
      ? undefined
      : validateAttrs(options.filter, "filter");
    const result = await this.#request(Methods.services, {
      service,
      ...(filter ? { filter: { attrs: filter } } : {}),
    }, options.signal) as ServicesResult;
    return result.instances;
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
   */
  catalog(options: CallOptions = {}): Promise<CatalogResult> {
    return this.#request(Methods.catalog, undefined, options.signal) as Promise<
      CatalogResult
    >;
  }

  /**
   * The agent's status: version, backend, connectivity, revision, limits.
   *
   * @param options A signal.
   * @returns The status.
   */
  status(options: CallOptions = {}): Promise<StatusResult> {
    return this.#request(Methods.status, undefined, options.signal) as Promise<
      StatusResult
    >;
  }

  /**
   * Unregisters what this client registered, closes its sets and the
   * connection (a clean close: the agent removes anything left at once).
   */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    if (this.#state === "connected") {
      await Promise.allSettled(
        [...this.#registered.values()].map(({ service, at }) =>
          this.#peer!.request(Methods.unregister, { service, ...target(at) })
        ),
      );
    }
    this.#registered.clear();
    const socket = this.#socket;
    this.#ended();
    try {
      socket?.close(1000, "client closed");
    } catch { /* already closing */ }
  }

  /** Same as {@linkcode Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Opens a connection and makes it current. */
  async #dial(signal?: AbortSignal): Promise<void> {
    const socket = await openSocket(
      this.#url,
      this.#Ctor,
      this.#connectTimeout,
      signal,
    );
    if (this.#state === "closed") {
      socket.close(1000);
      throw closedError("connect");
    }
    const peer = new JsonRpcPeer({
      send: (text) => {
        if (socket.readyState === 1) socket.send(text);
      },
      onRequest: (method, params) => this.#notification(method, params),
      timeout: this.#requestTimeout,
      // The agent's own frames: the check guards the agent from its peers.
      rejectDuplicateKeys: false,
    });
    socket.addEventListener("message", (event: MessageEvent) => {
      if (typeof event.data === "string") void peer.receive(event.data);
    });
    socket.addEventListener("close", () => this.#lost(socket));
    this.#socket = socket;
    this.#peer = peer;
    this.#state = "connected";
    this.#pinger = setInterval(
      () => void this.#ping(socket),
      this.#pingInterval,
    );
    this.#up.resolve();
  }

  /** The current connection ended without close(): reconnect, or end. */
  #lost(socket: WebSocket) {
    if (socket !== this.#socket || this.#state !== "connected") return;
    clearInterval(this.#pinger);
    this.#peer?.close(
      new RpcError(
        ErrorCode.ConnectionClosed,
        "the connection to the agent was lost before the response arrived",
      ),
    );
    this.#socket = undefined;
    this.#peer = undefined;
    this.#bySubscription.clear();
    if (this.#reconnect === false) {
      this.#ended();
      return;
    }
    this.#state = "disconnected";
    this.#up = deferred<void>();
    for (const set of this.#sets.keys()) set.disconnected();
    this.dispatchEvent(new Event("disconnect"));
    void this.#reconnectLoop(this.#reconnectBackoff!);
  }

  async #reconnectLoop(backoff: Backoff) {
    while (this.#state === "disconnected") {
      await backoff.wait();
      if (this.#state !== "disconnected") return;
      try {
        await this.#dial();
      } catch {
        continue;
      }
      backoff.reset();
      await this.#restore();
      // The connection may have been lost again while restoring.
      if ((this.#state as ConnectionState) === "connected") {
        this.dispatchEvent(new Event("reconnect"));
      }
      return;
    }
  }

  /**
   * After a reconnection: every registration again, every set resumed.
   * Resolves after one attempt at each; what failed is retried with
   * backoff (and at once on the next connection) until it succeeds or is
   * withdrawn: an instance taken by another client during a blip comes
   * back to this one as soon as that client lets it go.
   */
  async #restore() {
    for (const key of this.#registered.keys()) this.#toRestore.add(key);
    for (const set of this.#sets.keys()) this.#toRestore.add(set);
    this.#kick.abort();
    this.#kick = new AbortController();
    await this.#restoreOnce();
    this.#keepRestoring();
  }

  /** Retries what is still to restore, unless a loop already does. */
  #keepRestoring() {
    if (this.#toRestore.size === 0 || this.#state === "closed") return;
    this.#restoreLoop ??= this.#retryRestore().finally(() =>
      this.#restoreLoop = undefined
    );
  }

  async #retryRestore() {
    const backoff = new Backoff({ initialDelay: 250, maxDelay: 5000 });
    while (this.#toRestore.size > 0 && this.#state !== "closed") {
      await backoff.wait(this.#kick.signal);
      if (this.#state === "connected") await this.#restoreOnce();
    }
  }

  /** One attempt at every item still to restore and not being restored. */
  async #restoreOnce() {
    const items = [...this.#toRestore].filter((i) => !this.#inFlight.has(i));
    await Promise.all(items.map(async (item) => {
      this.#inFlight.add(item);
      try {
        if (typeof item === "string") {
          const registration = this.#registered.get(item);
          // Withdrawn, or superseded by a newer register() call.
          if (!registration || !this.#toRestore.has(item)) return;
          const { service, at, attrs } = registration;
          await this.#request(
            Methods.register,
            { service, ...target(at), attrs },
          );
          if (this.#registered.get(item) === registration) {
            this.#toRestore.delete(item);
          }
        } else {
          const state = this.#sets.get(item);
          if (state === undefined || item.closed) {
            this.#toRestore.delete(item);
            return;
          }
          await this.#subscribe(item, state);
          this.#toRestore.delete(item);
        }
        this.#failing.delete(item);
      } catch (error) {
        if (this.#state === "closed" || this.#failing.has(item)) return;
        this.#failing.add(item);
        this.dispatchEvent(new CustomEvent("error", { detail: error }));
      } finally {
        this.#inFlight.delete(item);
      }
    }));
  }

  /** Subscribes a set on the current connection, resuming from its revision. */
  async #subscribe(set: ServiceSet, state: SetState) {
    // Resume from the revision before the last one applied: the events of
    // one revision may have been cut off half-way, and the set ignores the
    // ones it already has.
    const resume = state.epoch !== undefined && set.revision > 0
      ? { since: set.revision - 1, epoch: state.epoch }
      : {};
    await this.#request(
      Methods.subscribe,
      {
        service: set.service,
        ...(state.filter ? { filter: { attrs: state.filter } } : {}),
        ...resume,
      },
      undefined,
      (value) => {
        // Runs before the frames that follow the response: the set must be
        // findable by the time its first event arrives.
        const result = value as SubscribeResult;
        if (set.closed) {
          void this.#peer?.request(Methods.unsubscribe, {
            subscription: result.subscription,
          }).catch(() => {});
          return;
        }
        state.id = result.subscription;
        state.epoch = result.epoch;
        if (result.mode === "snapshot") set.beginSnapshot();
        this.#bySubscription.set(result.subscription, set);
      },
    );
  }

  async #unsubscribe(set: ServiceSet) {
    const state = this.#sets.get(set);
    this.#sets.delete(set);
    if (state?.id === undefined) return;
    this.#bySubscription.delete(state.id);
    if (this.#state !== "connected") return; // the subscription died with its connection
    await this.#peer!.request(Methods.unsubscribe, { subscription: state.id })
      .catch(() => {});
  }

  /**
   * Sends a request on the current connection, waiting for one while the
   * client reconnects, and retrying on the next connection when the current
   * one is lost, all within the request timeout.
   */
  async #request(
    method: string,
    params?: unknown,
    signal?: AbortSignal,
    onResult?: (result: unknown) => void,
  ): Promise<unknown> {
    const deadline = Date.now() + this.#requestTimeout;
    for (;;) {
      if (this.#state === "closed") throw closedError(method);
      signal?.throwIfAborted();
      const left = deadline - Date.now();
      if (this.#state !== "connected") {
        if (left <= 0) {
          throw new RpcError(
            ErrorCode.Timeout,
            `'${method}' could not be sent within ${this.#requestTimeout} ms: the client is reconnecting to the agent`,
          );
        }
        await Promise.race([
          this.#up.promise,
          new Promise((resolve) => setTimeout(resolve, Math.min(left, 250))),
        ]);
        continue;
      }
      try {
        return await this.#peer!.request(method, params, {
          signal,
          timeout: Math.max(left, 1),
          onResult,
        });
      } catch (error) {
        const cut = error instanceof RpcError &&
          error.code === ErrorCode.ConnectionClosed &&
          (this.#state as ConnectionState) !== "closed" &&
          Date.now() < deadline;
        if (!cut) throw error;
        // Every method is idempotent: try again on the next connection.
      }
    }
  }

  #notification(method: string, params: unknown): void {
    if (method !== Methods.event) return;
    const { subscription, result } = params as EventParams;
    this.#bySubscription.get(subscription)?.apply(result);
  }

  async #ping(socket: WebSocket) {
    const peer = this.#peer;
    if (socket !== this.#socket || !peer) return;
    try {
      await peer.request(Methods.ping, undefined, {
        timeout: this.#requestTimeout,
      });
    } catch (error) {
      if (error instanceof RpcError && error.code === ErrorCode.Timeout) {
        // The agent or the path to it is dead: give up on this connection.
        try {
          socket.close(4000, "ping timeout");
        } catch { /* already closing */ }
        this.#lost(socket);
      }
    }
  }

  #ended() {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearInterval(this.#pinger);
    this.#peer?.close(
      new RpcError(
        ErrorCode.ConnectionClosed,
        "the client closed before the response arrived",
      ),
    );
    this.#up.resolve();
    this.#toRestore.clear();
    this.#failing.clear();
    this.#kick.abort();
    for (const set of this.#sets.keys()) set.ended();
    this.#sets.clear();
    this.#bySubscription.clear();
    this.dispatchEvent(new Event("close"));
  }
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
