// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The client's connection to an agent: opening a WebSocket (trying each of
 * the agent URLs it was given, and waiting for an agent when asked to),
 * pinging it, reconnecting with backoff when it is lost, and sending
 * requests typed by the method table, each within its deadline and retried
 * on the next connection when one is lost under it. It knows nothing of
 * registrations or sets: the client above it does.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { JsonRpcPeer } from "../protocol/jsonrpc.ts";
import type { MethodName, ParamsOf, ResultOf } from "../protocol/types.ts";
import { Backoff, type BackoffOptions } from "../protocol/backoff.ts";
import { deferred } from "./_deferred.ts";

/**
 * A WebSocket constructor (the client's public `WebSocketConstructor`;
 * the compiler holds the two to the same shape).
 */
export type SocketConstructor = new (url: string) => WebSocket;

/** States of a connection (the client's public `ConnectionState`). */
export type State = "connected" | "disconnected" | "closed";

/** One agent URL: as the caller gave it, and as it is dialled. */
export interface AgentUrl {
  /** The URL as given (normalized by `URL`), for messages. */
  readonly shown: string;
  /** The URL dialled: `shown` with the `client` query parameter. */
  readonly dialled: string;
}

/**
 * Checks the agent URLs given to `connect()` and adds the client id to each.
 *
 * @param urls One URL or a non-empty list of them.
 * @param clientId The client id, sent as the `client` query parameter.
 * @returns The URLs, in the order given.
 * @throws {TypeError} When the list is empty, or a URL is not a valid `ws:`
 *   or `wss:` URL without a fragment.
 */
export function agentUrls(
  urls: string | URL | readonly (string | URL)[],
  clientId: string,
): AgentUrl[] {
  const list = typeof urls === "string" || urls instanceof URL ? [urls] : urls;
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(
      `'url' must be an agent's ws: or wss: URL, or a non-empty array of them: current value is ${
        Array.isArray(list) ? "an empty array" : String(list)
      }`,
    );
  }
  return list.map((url) => {
    if (typeof url !== "string" && !(url instanceof URL)) {
      throw new TypeError(
        `'url' must be a string or a URL: current value is ${String(url)}`,
      );
    }
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(
        `'url' must be a ws: or wss: URL such as ws://127.0.0.1:1111: current value is '${url}'`,
      );
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(
        `'url' must be a ws: or wss: URL: current value is '${parsed.href}'`,
      );
    }
    if (parsed.hash !== "") {
      throw new TypeError(
        `'url' must not have a fragment (#...), which WebSocket refuses: current value is '${parsed.href}'`,
      );
    }
    const shown = parsed.href;
    parsed.searchParams.set("client", clientId);
    return { shown, dialled: parsed.href };
  });
}

/** How a {@linkcode Connection} connects, pings and reconnects. */
export interface ConnectionSettings {
  /** The agents to try, in order (at least one). */
  urls: readonly AgentUrl[];
  /** The WebSocket implementation. */
  WebSocket: SocketConstructor;
  /** Milliseconds to wait for one connection to open. */
  connectTimeout: number;
  /** Milliseconds a request may take, waiting for a reconnection included. */
  requestTimeout: number;
  /** Milliseconds between pings. */
  pingInterval: number;
  /** Reconnection backoff, or `false` to end when the connection is lost. */
  reconnect: BackoffOptions | false;
  /**
   * Milliseconds the first connection keeps trying while no agent answers
   * (0: one attempt at each URL).
   */
  waitForAgent: number;
  /**
   * Runs on every new connection before any other request is sent on it
   * (the client's token is presented this way). When it rejects, the
   * connection is dropped as if the agent could not be reached, with its
   * error.
   */
  hello?: (request: HelloRequest) => Promise<void>;
}

/** Sends one request on a connection that is not in use yet; see {@linkcode ConnectionSettings.hello}. */
export type HelloRequest = <M extends MethodName>(
  method: M,
  params: ParamsOf<M>,
) => Promise<ResultOf<M>>;

/** What a {@linkcode Connection} tells its owner. */
export interface ConnectionEvents {
  /** A request or notification from the agent. */
  notification(method: string, params: unknown): void;
  /** The connection was lost; reconnection starts. */
  lost(): void;
  /** A new connection is up after a loss; resolves once it is in use again. */
  reconnected(): Promise<void>;
  /** The connection ended for good (closed, or lost without reconnection). */
  ended(): void;
}

/** Options of {@linkcode Connection.request}. */
export interface ConnectionRequestOptions<M extends MethodName> {
  /** Stops waiting for the response. */
  signal?: AbortSignal;
  /**
   * Called with the result before any later frame is handled (state that
   * must be in place before the frames that follow the response).
   */
  onResult?: (result: ResultOf<M>) => void;
}

/** The retry schedule of the first connection while it waits for an agent. */
const WAIT_BACKOFF: BackoffOptions = { initialDelay: 100, maxDelay: 1000 };

/** Longest wait for the HTTP probe that explains a failed connection. */
const PROBE_TIMEOUT = 2000;
/**
 * Longest wait, in milliseconds, for the agent to answer a close frame:
 * an agent that does not answer delays {@linkcode Connection.close} by
 * this much.
 */
export const CLOSE_WAIT_MS = 1000;

/** The one cast of a result: the method table says what `M` returns. */
function resultOf<M extends MethodName>(value: unknown): ResultOf<M> {
  return value as ResultOf<M>;
}

/**
 * The error of a call made on a closed client, or (`closing`) on one
 * whose `close()` has begun.
 *
 * @param method The method (or `connect`).
 * @param options Whether the client is still closing.
 * @returns The error.
 */
export function closedError(
  method: string,
  options: { closing?: boolean } = {},
): RpcError {
  return new RpcError(
    ErrorCode.ConnectionClosed,
    `'${method}' was not sent: the client is ${
      options.closing ? "closing" : "closed"
    }; connect again`,
  );
}

/** Why one URL could not be connected to. */
interface Failure {
  url: AgentUrl;
  error: unknown;
}

/** The error events of a WebSocket that never opened. */
class NotOpened extends Error {}

/** Opens one WebSocket and resolves once it is open. */
function openSocket(
  url: AgentUrl,
  Ctor: SocketConstructor,
  timeout: number,
  signal?: AbortSignal,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    let socket: WebSocket;
    try {
      socket = new Ctor(url.dialled);
    } catch (error) {
      reject(error);
      return;
    }
    const fail = (reason: unknown) => {
      cleanup();
      try {
        socket.close();
      } catch { /* not open */ }
      reject(reason);
    };
    const onOpen = () => (cleanup(), resolve(socket));
    const onError = () => fail(new NotOpened(url.shown));
    const onAbort = () => fail(signal!.reason);
    const timer = setTimeout(
      () =>
        fail(
          new RpcError(
            ErrorCode.Timeout,
            `connecting to ${url.shown} took more than ${timeout} ms`,
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
 * Says why a WebSocket to `url` did not open. A WebSocket hides the HTTP
 * answer to its upgrade, so a plain `GET` of the same URL (a Web-standard
 * `fetch`) finds out whether anything answers there, and what.
 */
async function explain(url: AgentUrl, timeout: number): Promise<string> {
  const http = new URL(url.shown);
  http.protocol = http.protocol === "wss:" ? "https:" : "http:";
  let response: Response;
  try {
    response = await fetch(http, {
      signal: AbortSignal.timeout(Math.min(timeout, PROBE_TIMEOUT)),
      redirect: "manual",
    });
  } catch {
    return `could not connect to ${url.shown}: nothing answered there; is the agent running, and is this its address?`;
  }
  let text = "";
  try {
    text = (await response.text()).trim().split("\n")[0].slice(0, 200);
  } catch { /* no body */ }
  if (response.ok || response.status === 0) {
    return `could not connect to ${url.shown}: the server there answers HTTP but refused the WebSocket upgrade (is it a discover agent? an agent refuses web pages of origins it does not allow, and sessions beyond its limit)`;
  }
  return `could not connect to ${url.shown}: the server there answered HTTP ${response.status}${
    text ? ` (${text})` : ""
  } instead of a WebSocket upgrade; a discover agent listens at the root path, e.g. ws://host:1111/`;
}

/** The error of a first connection that failed at every URL. */
async function connectError(
  failures: Failure[],
  timeout: number,
  waited: number,
): Promise<RpcError> {
  const reasons = await Promise.all(failures.map(async ({ url, error }) => {
    if (error instanceof NotOpened) return await explain(url, timeout);
    return error instanceof Error ? error.message : String(error);
  }));
  // An agent that refused the client's hello (a wrong token) said why.
  const refusal = failures.find(({ error }) =>
    error instanceof RpcError && error.code === ErrorCode.Forbidden
  );
  if (refusal) return refusal.error as RpcError;
  const timedOut = failures.every(({ error }) =>
    error instanceof RpcError && error.code === ErrorCode.Timeout
  );
  const reason = reasons.join("; ");
  if (waited > 0) {
    return new RpcError(
      ErrorCode.Timeout,
      `no agent answered within ${waited} ms (waitForAgent): ${reason}`,
    );
  }
  return new RpcError(
    timedOut ? ErrorCode.Timeout : ErrorCode.ConnectionClosed,
    reason,
  );
}

/** Sleeps `ms`, or less when `signal` aborts (then it rejects). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A connection to one of a list of agents that reconnects by itself.
 * Package-private: the client is its only user.
 */
export class Connection {
  readonly #settings: ConnectionSettings;
  readonly #events: ConnectionEvents;
  readonly #backoff?: Backoff;
  #state: State = "disconnected";
  #socket?: WebSocket;
  #peer?: JsonRpcPeer;
  #pinger?: ReturnType<typeof setInterval>;
  /** Resolves when a connection is up (or the client closed). */
  #up = deferred<void>();
  #first?: Promise<void>;
  /** Index in the URL list of the agent in use (or tried first next time). */
  #index = 0;
  /** Aborted when the connection ends for good: a reconnection stops waiting. */
  readonly #ending = new AbortController();

  /**
   * Creates a connection; {@linkcode Connection.open} makes the first one.
   *
   * @param settings URLs, WebSocket implementation and timings.
   * @param events What to tell the owner.
   */
  constructor(settings: ConnectionSettings, events: ConnectionEvents) {
    this.#settings = settings;
    this.#events = events;
    if (settings.reconnect) this.#backoff = new Backoff(settings.reconnect);
  }

  /** `connected`, `disconnected` (reconnecting, or not yet connected) or `closed`. */
  get state(): State {
    return this.#state;
  }

  /** The agent URL in use, or tried first at the next attempt. */
  get url(): string {
    return this.#settings.urls[this.#index].shown;
  }

  /**
   * Makes the first connection (once; later calls return the same promise).
   *
   * @param signal Aborts the attempt.
   * @returns A promise that resolves once connected.
   */
  open(signal?: AbortSignal): Promise<void> {
    return this.#first ??= this.#openFirst(signal);
  }

  /**
   * Sends a request on the current connection, waiting for one while the
   * client reconnects and retrying on the next connection when the current
   * one is lost (every method is idempotent), all within the request
   * timeout.
   *
   * @param method The method.
   * @param params Its params.
   * @param options A signal, and a hook for the result.
   * @returns The result.
   */
  async request<M extends MethodName>(
    method: M,
    params: ParamsOf<M>,
    options: ConnectionRequestOptions<M> = {},
  ): Promise<ResultOf<M>> {
    const { signal, onResult } = options;
    const timeout = this.#settings.requestTimeout;
    const deadline = Date.now() + timeout;
    for (;;) {
      if (this.#state === "closed") throw closedError(method);
      signal?.throwIfAborted();
      const left = deadline - Date.now();
      if (this.#state !== "connected") {
        if (left <= 0) {
          throw new RpcError(
            ErrorCode.Timeout,
            `'${method}' could not be sent within ${timeout} ms: the client is reconnecting to the agent`,
          );
        }
        await Promise.race([
          this.#up.promise,
          sleep(Math.min(left, 250)),
        ]);
        continue;
      }
      try {
        return resultOf<M>(
          await this.#peer!.request(method, params, {
            signal,
            timeout: Math.max(left, 1),
            onResult: onResult && ((result) => onResult(resultOf<M>(result))),
          }),
        );
      } catch (error) {
        const cut = error instanceof RpcError &&
          error.code === ErrorCode.ConnectionClosed &&
          (this.#state as State) !== "closed" &&
          Date.now() < deadline;
        if (!cut) throw error;
      }
    }
  }

  /**
   * Sends a request on the current connection only, if there is one: for
   * what matters only to this connection (closing a subscription, the
   * unregisters of a clean close).
   *
   * @param method The method.
   * @param params Its params.
   * @returns The result, or `undefined` when not connected.
   */
  requestNow<M extends MethodName>(
    method: M,
    params: ParamsOf<M>,
  ): Promise<ResultOf<M>> | undefined {
    if (this.#state !== "connected") return undefined;
    return this.#peer!.request(method, params).then(resultOf<M>);
  }

  /**
   * Ends the connection cleanly; no reconnection follows. Resolves once
   * the agent has answered the close frame, so that a process exiting
   * right after has told the agent it is done (a clean close, not a lost
   * client), or after {@linkcode CLOSE_WAIT_MS} when the agent does not
   * answer.
   */
  close(): Promise<void> {
    const socket = this.#socket;
    this.#end("the client closed before the response arrived");
    if (!socket || socket.readyState === 3 /* CLOSED */) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        socket.removeEventListener("close", done);
        resolve();
      };
      const timer = setTimeout(done, CLOSE_WAIT_MS);
      socket.addEventListener("close", done);
      try {
        socket.close(1000, "client closed");
      } catch {
        done(); // already closing
      }
    });
  }

  async #openFirst(signal?: AbortSignal): Promise<void> {
    const { waitForAgent, connectTimeout } = this.#settings;
    const deadline = waitForAgent > 0 ? Date.now() + waitForAgent : undefined;
    const backoff = new Backoff(WAIT_BACKOFF);
    for (;;) {
      const failures = await this.#dialAny(signal, deadline);
      if (this.#state === "closed") throw closedError("connect");
      if (failures.length === 0) return;
      const left = deadline === undefined ? 0 : deadline - Date.now();
      if (left <= 0) {
        throw await connectError(failures, connectTimeout, waitForAgent);
      }
      await sleep(Math.min(backoff.next(), left), signal);
    }
  }

  /**
   * One attempt at each URL, from the one in use; connects to the first
   * that opens. Returns why each failed (nothing when one opened).
   */
  async #dialAny(
    signal?: AbortSignal,
    deadline = Infinity,
  ): Promise<Failure[]> {
    const { urls, connectTimeout } = this.#settings;
    const failures: Failure[] = [];
    for (let i = 0; i < urls.length; i++) {
      if (this.#state === "closed") break;
      const index = (this.#index + i) % urls.length;
      const left = Math.max(1, Math.min(connectTimeout, deadline - Date.now()));
      let socket: WebSocket;
      try {
        socket = await openSocket(
          urls[index],
          this.#settings.WebSocket,
          left,
          signal,
        );
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        failures.push({ url: urls[index], error });
        continue;
      }
      if ((this.#state as State) === "closed") {
        socket.close(1000);
        throw closedError("connect");
      }
      this.#index = index;
      const refused = await this.#attach(socket);
      if (refused === undefined) return [];
      failures.push({ url: urls[index], error: refused });
    }
    return failures;
  }

  /**
   * Makes an open socket the current connection, once its hello (if any)
   * succeeded; returns why it did not.
   */
  async #attach(socket: WebSocket): Promise<unknown> {
    const peer = new JsonRpcPeer({
      send: (text) => {
        if (socket.readyState === 1) socket.send(text);
      },
      onRequest: (method, params) => this.#events.notification(method, params),
      timeout: this.#settings.requestTimeout,
      // The agent's own frames: the check guards the agent from its peers.
      rejectDuplicateKeys: false,
    });
    socket.addEventListener("message", (event: MessageEvent) => {
      if (typeof event.data === "string") void peer.receive(event.data);
    });
    socket.addEventListener("close", () => this.#lost(socket));
    const hello = this.#settings.hello;
    if (hello) {
      try {
        await hello((method, params) =>
          peer.request(method, params).then(resultOf)
        );
      } catch (error) {
        peer.close(new RpcError(ErrorCode.ConnectionClosed, "refused"));
        try {
          socket.close(1000);
        } catch { /* already closing */ }
        return error;
      }
      if ((this.#state as State) === "closed") {
        socket.close(1000);
        return closedError("connect");
      }
    }
    this.#socket = socket;
    this.#peer = peer;
    this.#state = "connected";
    this.#pinger = setInterval(
      () => void this.#ping(socket),
      this.#settings.pingInterval,
    );
    this.#up.resolve();
    return undefined;
  }

  /** The current connection ended without close(): reconnect, or end. */
  #lost(socket: WebSocket) {
    if (socket !== this.#socket || this.#state !== "connected") return;
    if (!this.#backoff) {
      this.#end(
        "the connection to the agent was lost before the response arrived",
      );
      return;
    }
    clearInterval(this.#pinger);
    this.#peer?.close(
      new RpcError(
        ErrorCode.ConnectionClosed,
        "the connection to the agent was lost before the response arrived",
      ),
    );
    this.#socket = undefined;
    this.#peer = undefined;
    this.#state = "disconnected";
    this.#up = deferred<void>();
    this.#events.lost();
    void this.#reconnectLoop(this.#backoff);
  }

  async #reconnectLoop(backoff: Backoff) {
    while (this.#state === "disconnected") {
      await backoff.wait(this.#ending.signal);
      if (this.#state !== "disconnected") return;
      let failures;
      try {
        failures = await this.#dialAny();
      } catch {
        return; // closed meanwhile
      }
      if (failures.length > 0) continue;
      backoff.reset();
      await this.#events.reconnected();
      return;
    }
  }

  async #ping(socket: WebSocket) {
    const peer = this.#peer;
    if (socket !== this.#socket || !peer) return;
    try {
      await peer.request("$/ping", undefined, {
        timeout: this.#settings.requestTimeout,
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

  #end(reason: string) {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#ending.abort();
    clearInterval(this.#pinger);
    this.#peer?.close(new RpcError(ErrorCode.ConnectionClosed, reason));
    this.#socket = undefined;
    this.#peer = undefined;
    this.#up.resolve();
    this.#events.ended();
  }
}
