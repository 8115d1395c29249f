// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The discover client: a connection to an agent that registers instances,
 * keeps them alive, and opens live {@linkcode ServiceSet}s.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { JsonRpcPeer } from "../protocol/jsonrpc.ts";
import {
  type Attrs,
  type EventParams,
  type Instance,
  Methods,
  type ServicesResult,
  type StatusResult,
  type SubscribeResult,
} from "../protocol/types.ts";
import {
  validateAddr,
  validateAttrs,
  validatePort,
  validateServiceName,
} from "../protocol/validate.ts";
import { ServiceSet } from "./service_set.ts";

/** A WebSocket constructor: the global one, or one from a library such as npm `ws`. */
export type WebSocketConstructor = new (url: string) => WebSocket;

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /** Aborts connecting. */
  signal?: AbortSignal;
  /**
   * The WebSocket implementation, for runtimes without a global one.
   *
   * @default {globalThis.WebSocket}
   */
  WebSocket?: WebSocketConstructor;
  /**
   * Identity of this client's registrations across its connections: 1 to 64
   * characters of `A-Z a-z 0-9 _ -`.
   *
   * @default {a random id}
   */
  clientId?: string;
  /**
   * Milliseconds to wait for the connection to open.
   *
   * @default {10000}
   */
  connectTimeout?: number;
  /**
   * Milliseconds a request waits for its response.
   *
   * @default {5000}
   */
  requestTimeout?: number;
  /**
   * Milliseconds between `$/ping` requests that check the agent is alive.
   *
   * @default {2000}
   */
  pingInterval?: number;
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

/** Event map of {@linkcode Client}, for typed listeners. */
export interface ClientEventMap {
  /** The connection ended (closed by either side, or found dead by ping). */
  close: Event;
}

const DEFAULTS = {
  connectTimeout: 10_000,
  requestTimeout: 5_000,
  pingInterval: 2_000,
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
 * @param options Signal, WebSocket implementation, client id and timings.
 * @returns The connected client.
 */
export async function connect(
  url: string | URL,
  options: ConnectOptions = {},
): Promise<Client> {
  const Ctor = options.WebSocket ?? globalThis.WebSocket;
  if (typeof Ctor !== "function") {
    throw new TypeError(
      "no WebSocket implementation: pass options.WebSocket (for example the default export of npm 'ws'), or on Node.js 20 run with --experimental-websocket",
    );
  }
  const clientId = options.clientId ?? randomId();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(clientId)) {
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
  const socket = new Ctor(full.href);
  const timeout = options.connectTimeout ?? DEFAULTS.connectTimeout;
  await new Promise<void>((resolve, reject) => {
    const fail = (reason: unknown) => {
      cleanup();
      try {
        socket.close();
      } catch { /* not open */ }
      reject(reason);
    };
    const onOpen = () => (cleanup(), resolve());
    const onError = () =>
      fail(
        new RpcError(
          ErrorCode.ConnectionClosed,
          `could not connect to ${full.origin}: is the agent running there?`,
        ),
      );
    const onAbort = () => fail(options.signal!.reason);
    const timer = setTimeout(
      () =>
        fail(
          new RpcError(
            ErrorCode.Timeout,
            `connecting to ${full.origin} took more than ${timeout} ms`,
          ),
        ),
      timeout,
    );
    const cleanup = () => {
      clearTimeout(timer);
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("error", onError);
      socket.removeEventListener("close", onError);
      options.signal?.removeEventListener("abort", onAbort);
    };
    socket.addEventListener("open", onOpen);
    socket.addEventListener("error", onError);
    socket.addEventListener("close", onError);
    options.signal?.addEventListener("abort", onAbort);
    if (options.signal?.aborted) onAbort();
  });
  return new Client(socket, { ...options, clientId });
}

/**
 * A connection to an agent. Registrations live as long as the connection
 * (plus the agent's grace TTL when it is lost); the client pings the agent
 * in the background to detect a dead connection.
 */
export class Client extends EventTarget implements AsyncDisposable {
  /** The id that owns this client's registrations. */
  readonly clientId: string;
  #socket: WebSocket;
  #peer: JsonRpcPeer;
  #sets = new Map<string, ServiceSet>();
  #registered = new Map<string, { service: string; target: Target }>();
  #pinger: ReturnType<typeof setInterval>;
  #closed = false;
  #pingTimeout: number;

  /**
   * Wraps an open socket; use {@linkcode connect} instead.
   *
   * @param socket The open WebSocket.
   * @param options The options given to {@linkcode connect}, with the client id.
   */
  constructor(
    socket: WebSocket,
    options: ConnectOptions & { clientId: string },
  ) {
    super();
    this.clientId = options.clientId;
    this.#socket = socket;
    const requestTimeout = options.requestTimeout ?? DEFAULTS.requestTimeout;
    this.#pingTimeout = requestTimeout;
    this.#peer = new JsonRpcPeer({
      send: (text) => {
        if (socket.readyState === 1) socket.send(text);
      },
      onRequest: (method, params) => this.#notification(method, params),
      timeout: requestTimeout,
    });
    socket.addEventListener("message", (event: MessageEvent) => {
      if (typeof event.data === "string") void this.#peer.receive(event.data);
    });
    socket.addEventListener("close", () => this.#ended());
    this.#pinger = setInterval(
      () => void this.#ping(),
      options.pingInterval ?? DEFAULTS.pingInterval,
    );
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Registers an instance, or changes the attributes of one this client
   * registered. It stays discoverable until it is unregistered, the client
   * closes, or the connection is lost for longer than the agent's TTL.
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
    const params = {
      service,
      ...target(at),
      attrs: validateAttrs(options.attrs ?? {}),
    };
    const instance = await this.#request(
      Methods.register,
      params,
      options,
    ) as Instance;
    this.#registered.set(instance.id, { service, target: at });
    return instance;
  }

  /**
   * Removes an instance this client registered.
   *
   * @param service The service name.
   * @param at The port or `host:port` given to {@linkcode Client.register}.
   * @param options A signal.
   * @returns Whether an instance was removed.
   */
  async unregister(
    service: string,
    at: Target,
    options: CallOptions = {},
  ): Promise<boolean> {
    validateServiceName(service);
    const removed = await this.#request(
      Methods.unregister,
      { service, ...target(at) },
      options,
    ) as boolean;
    for (const [id, r] of this.#registered) {
      if (r.service === service && r.target === at) this.#registered.delete(id);
    }
    return removed;
  }

  /**
   * Opens a live set of the instances of `service` (matching `filter`,
   * applied by the agent). Resolves once the set holds the current state.
   *
   * @param service The service name.
   * @param options Filter and signal.
   * @returns The set; close it when done.
   */
  async services(
    service: string,
    options: ServicesOptions = {},
  ): Promise<ServiceSet> {
    validateServiceName(service);
    const filter = options.filter === undefined
      ? undefined
      : validateAttrs(options.filter, "filter");
    const result = await this.#request(Methods.subscribe, {
      service,
      ...(filter ? { filter: { attrs: filter } } : {}),
    }, options) as SubscribeResult;
    const id = result.subscription;
    const set = new ServiceSet(service, filter, async () => {
      this.#sets.delete(id);
      if (this.#closed) return;
      await this.#request(Methods.unsubscribe, { subscription: id }, {});
    });
    set.beginSnapshot();
    this.#sets.set(id, set);
    const { signal } = options;
    const onAbort = () => void set.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await set.initialized;
      signal?.throwIfAborted();
    } catch (error) {
      await set.close();
      throw signal?.aborted ? signal.reason : error;
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
    }, options) as ServicesResult;
    return result.instances;
  }

  /**
   * The agent's status: version, backend, connectivity, revision, limits.
   *
   * @param options A signal.
   * @returns The status.
   */
  status(options: CallOptions = {}): Promise<StatusResult> {
    return this.#request(Methods.status, undefined, options) as Promise<
      StatusResult
    >;
  }

  /**
   * Unregisters what this client registered, closes its sets and the
   * connection (a clean close: the agent removes anything left at once).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    await Promise.allSettled(
      [...this.#registered.values()].map(({ service, target: at }) =>
        this.#request(Methods.unregister, { service, ...target(at) }, {})
      ),
    );
    this.#registered.clear();
    this.#socket.close(1000, "client closed");
    this.#ended();
  }

  /** Same as {@linkcode Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #request(
    method: string,
    params: unknown,
    options: CallOptions,
  ): Promise<unknown> {
    if (this.#closed) {
      return Promise.reject(
        new RpcError(
          ErrorCode.ConnectionClosed,
          `'${method}' was not sent: the connection is closed; connect again`,
        ),
      );
    }
    return this.#peer.request(method, params, { signal: options.signal });
  }

  #notification(method: string, params: unknown): void {
    if (method !== Methods.event) return;
    const { subscription, result } = params as EventParams;
    this.#sets.get(subscription)?.apply(result);
  }

  async #ping() {
    try {
      await this.#peer.request(Methods.ping, undefined, {
        timeout: this.#pingTimeout,
      });
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof RpcError && error.code === ErrorCode.Timeout) {
        // The agent or the path to it is dead: give up on this connection.
        try {
          this.#socket.close(4000, "ping timeout");
        } catch { /* already closing */ }
        this.#ended();
      }
    }
  }

  #ended() {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#pinger);
    this.#peer.close(
      new RpcError(
        ErrorCode.ConnectionClosed,
        "the connection to the agent closed before the response arrived",
      ),
    );
    for (const set of this.#sets.values()) set.ended();
    this.#sets.clear();
    this.dispatchEvent(new Event("close"));
  }
}
