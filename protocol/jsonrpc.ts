// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * A JSON-RPC 2.0 peer over any text transport: it sends requests and matches
 * their responses, and answers the requests it receives (single messages and
 * batches). The client and the agent both use it; it knows nothing of
 * WebSockets or of discover's methods.
 *
 * @module
 */

import { ErrorCode, type ErrorObject, RpcError } from "./errors.ts";
import { findDuplicateKey } from "./_json_keys.ts";

/** A request id. */
export type Id = string | number | null;

/** What a request handler is told besides the method and params. */
export interface CallContext {
  /** Whether the call is a notification (no response will be sent). */
  readonly notification: boolean;
  /**
   * Runs `fn` once the frame carrying this call's response has been sent
   * (for a notification: once the handler has finished). Use it for
   * messages that must follow the response, such as subscription events.
   */
  afterResponse(fn: () => void): void;
}

/**
 * Handles an incoming request or notification: returns the result (or a
 * promise of it) or throws an {@linkcode RpcError}.
 */
export type RequestHandler = (
  method: string,
  params: unknown,
  context: CallContext,
) => unknown;

/**
 * Options of {@linkcode JsonRpcPeer}. The peer keeps this object and calls
 * `send`, `onRequest`, `onInternalError` and `onSettled` as its methods, so
 * peers made by the thousand (one per session of an agent) can share them
 * through a prototype instead of holding closures each.
 */
export interface JsonRpcPeerOptions {
  /** Sends one text frame. Must not throw. */
  send: (text: string) => void;
  /** Answers incoming requests and notifications. Without it every request gets -32601. */
  onRequest?: RequestHandler;
  /**
   * Most messages accepted in one incoming batch.
   *
   * @default {1000}
   */
  maxBatch?: number;
  /**
   * Default time, in milliseconds, an outgoing request waits for its response.
   *
   * @default {5000}
   */
  timeout?: number;
  /** Called with errors thrown by a handler that are not {@linkcode RpcError}s. */
  onInternalError?: (error: unknown, method: string) => void;
  /**
   * Called once the handler of an incoming request or notification has
   * answered (its value, or the promise it returned, settled), before the
   * response is sent: what a server needs to count calls and time them,
   * without a promise of its own per call. Must not throw.
   *
   * @param method The method called.
   * @param started `performance.now()` when the handler was called.
   * @param error What the handler threw or rejected with; absent when it
   *   answered. (A method the peer has no handler for fails with an
   *   {@linkcode RpcError} of `-32601`.)
   */
  onSettled?: (method: string, started: number, error?: unknown) => void;
  /**
   * Refuse frames whose JSON repeats a key in an object (`-32600`, nothing
   * in the frame is carried out). A server facing untrusted peers keeps it
   * on; a client reading its own agent's event stream may turn it off to
   * save the scan (about as much again as `JSON.parse`).
   *
   * @default {true}
   */
  rejectDuplicateKeys?: boolean;
}

/** Options of {@linkcode JsonRpcPeer.request}. */
export interface RequestOptions {
  /** Aborts the wait for the response (the request may still take effect). */
  signal?: AbortSignal;
  /** Time, in milliseconds, to wait for the response; overrides the peer's default. */
  timeout?: number;
  /**
   * Called with the result while the response frame is being handled,
   * before any later frame: for state that must be in place before the
   * messages that follow the response (subscription events).
   */
  onResult?: (result: unknown) => void;
}

interface Pending {
  method: string;
  /** When the wait ends, in `Date.now()` ms. */
  deadline: number;
  /** The timeout it was given, for the error message. */
  timeout: number;
  onResult?: (result: unknown) => void;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
  cleanup: () => void;
}

type Json = Record<string, unknown>;

const noop = () => {};

/** What {@linkcode JsonRpcPeer.receive} returns when it is done at once. */
const DONE: Promise<void> = Promise.resolve();

/**
 * One side of a JSON-RPC 2.0 connection.
 *
 * @example Usage
 * ```ts
 * import { JsonRpcPeer } from "./jsonrpc.ts";
 * // Two peers wired back to back.
 * const a: JsonRpcPeer = new JsonRpcPeer({ send: (t) => void b.receive(t) });
 * const b: JsonRpcPeer = new JsonRpcPeer({
 *   send: (t) => void a.receive(t),
 *   onRequest: (method) => method === "hello" ? "world" : undefined,
 * });
 * console.log(await a.request("hello")); // "world"
 * ```
 */
export class JsonRpcPeer {
  /** Where `send`, `onRequest` and `onInternalError` are called. */
  readonly #calls: JsonRpcPeerOptions;
  #maxBatch: number;
  #timeout: number;
  readonly #rejectDuplicateKeys: boolean;
  #nextId = 1;
  /**
   * Requests waiting for their response, by id; made by the first request
   * (a peer that only answers, as the agent's side of each session does,
   * never needs one: an empty map takes about 180 bytes).
   */
  #pending?: Map<number, Pending>;
  #closed?: Error;
  /**
   * One timer for every pending request, armed for the earliest deadline
   * (a timer per request costs more than the request on a busy peer).
   */
  #timer?: ReturnType<typeof setTimeout>;
  #timerAt = Infinity;

  /**
   * Creates a peer.
   *
   * @param options How to send frames and answer requests.
   */
  constructor(options: JsonRpcPeerOptions) {
    this.#calls = options;
    this.#maxBatch = options.maxBatch ?? 1000;
    this.#timeout = options.timeout ?? 5000;
    this.#rejectDuplicateKeys = options.rejectDuplicateKeys ?? true;
  }

  /** How many requests are waiting for a response. */
  get pendingCount(): number {
    return this.#pending?.size ?? 0;
  }

  /**
   * Sends a request and waits for its response.
   *
   * @param method The method name.
   * @param params The params (by name).
   * @param options Signal and timeout.
   * @returns The result; rejects with an {@linkcode RpcError} on an error response.
   */
  request(
    method: string,
    params?: unknown,
    options: RequestOptions = {},
  ): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closed);
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#nextId++;
    const timeout = options.timeout ?? this.#timeout;
    const waiting = this.#pending ??= new Map();
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        waiting.delete(id);
        cleanup();
        reject(signal!.reason);
      };
      const cleanup = signal
        ? () => signal.removeEventListener("abort", onAbort)
        : noop;
      signal?.addEventListener("abort", onAbort, { once: true });
      const deadline = Date.now() + timeout;
      waiting.set(id, {
        method,
        deadline,
        timeout,
        resolve,
        reject,
        cleanup,
        onResult: options.onResult,
      });
      if (deadline < this.#timerAt) this.#arm(deadline);
      const message: Json = { jsonrpc: "2.0", id, method };
      if (params !== undefined) message.params = params;
      this.#calls.send(JSON.stringify(message));
    });
  }

  #arm(at: number) {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(
      () => this.#expire(),
      Math.max(0, at - Date.now()),
    );
  }

  /** Fails the requests whose deadline passed; re-arms for the next one. */
  #expire() {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    // The timer was armed by a request, which made the map.
    const waiting = this.#pending;
    if (waiting === undefined) return;
    for (const [id, pending] of waiting) {
      if (pending.deadline > now) {
        next = Math.min(next, pending.deadline);
        continue;
      }
      waiting.delete(id);
      pending.cleanup();
      pending.reject(
        new RpcError(
          ErrorCode.Timeout,
          `'${pending.method}' got no response within ${pending.timeout} ms; the agent may be overloaded or unreachable`,
        ),
      );
    }
    if (next !== Infinity) this.#arm(next);
  }

  /**
   * Sends a notification (a request without id, which gets no response).
   *
   * @param method The method name.
   * @param params The params.
   */
  notify(method: string, params?: unknown): void {
    if (this.#closed) return;
    const message: Json = { jsonrpc: "2.0", method };
    if (params !== undefined) message.params = params;
    this.#calls.send(JSON.stringify(message));
  }

  /**
   * Fails every pending request with `reason` and refuses new ones.
   *
   * @param reason The error the pending requests are rejected with.
   */
  close(reason: Error): void {
    if (this.#closed) return;
    this.#closed = reason;
    for (const pending of this.#pending?.values() ?? []) {
      pending.cleanup();
      pending.reject(reason);
    }
    this.#pending?.clear();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  /**
   * Handles one incoming text frame: a request, a notification, a response,
   * or a batch of them. Never throws; protocol errors are answered.
   *
   * @param text The frame's text.
   * @returns A promise that settles once every response has been sent.
   */
  receive(text: string): Promise<void> {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch (error) {
      this.#sendError(
        null,
        ErrorCode.ParseError,
        `parse error: the frame is not valid JSON (${
          (error as Error).message
        })`,
      );
      return DONE;
    }
    // JSON.parse keeps the last of two equal keys; a reader that keeps the
    // first would see another message. Such a frame is refused whole, with
    // id null: none of its values, its ids included, is trusted.
    const duplicate = this.#rejectDuplicateKeys
      ? findDuplicateKey(text)
      : undefined;
    if (duplicate !== undefined) {
      const where = duplicate.path === ""
        ? "at the top level"
        : `in ${duplicate.path}`;
      this.#sendError(
        null,
        ErrorCode.InvalidRequest,
        `invalid request: duplicate key '${
          truncate(duplicate.key, 64)
        }' ${where}; JSON objects must not repeat a key`,
      );
      return DONE;
    }
    if (Array.isArray(message)) return this.#receiveBatch(message);
    const hooks = new Hooks();
    try {
      const response = this.#receiveOne(message, hooks);
      // A handler that returned a value is answered at once; one that
      // returned a promise, once it settles.
      if (response instanceof Promise) {
        return response.then((r) => this.#respond(r, hooks));
      }
      this.#respond(response, hooks);
      return DONE;
    } catch (error) {
      // As from an async function: the caller's handlers see it.
      return Promise.reject(error);
    }
  }

  /** Sends the response to one message, if any, then runs the hooks. */
  #respond(response: Json | undefined, hooks: Hooks): void {
    if (response !== undefined) this.#calls.send(this.#serialize(response));
    this.#runHooks(hooks);
  }

  /** Serializes a response; a result that cannot be serialized becomes -32603. */
  #serialize(response: Json | Json[]): string {
    try {
      return JSON.stringify(response);
    } catch (error) {
      if (Array.isArray(response)) {
        return `[${response.map((r) => this.#serialize(r)).join(",")}]`;
      }
      this.#calls.onInternalError?.(error, "(serializing a response)");
      return JSON.stringify(
        errorResponse(
          response.id as Id,
          ErrorCode.InternalError,
          `internal error: the result could not be serialized (${
            (error as Error).message
          })`,
        ),
      );
    }
  }

  #runHooks(hooks: Hooks) {
    const list = hooks.list;
    if (list === undefined) return;
    for (const hook of list) {
      try {
        hook();
      } catch (error) {
        this.#calls.onInternalError?.(error, "(after a response)");
      }
    }
  }

  async #receiveBatch(batch: unknown[]): Promise<void> {
    if (batch.length === 0) {
      this.#sendError(
        null,
        ErrorCode.InvalidRequest,
        "invalid request: an empty batch; send at least one request",
      );
      return;
    }
    if (batch.length > this.#maxBatch) {
      this.#sendError(
        null,
        ErrorCode.InvalidRequest,
        `invalid request: a batch of ${batch.length} messages exceeds the limit of ${this.#maxBatch}; split it`,
      );
      return;
    }
    const hooks = new Hooks();
    // Every message is handled now, in order; only handlers that return a
    // promise are waited for (a batch of notifications waits for none).
    const responses: (Json | Promise<Json | undefined>)[] = [];
    let waits = false;
    for (const item of batch) {
      const response = this.#receiveOne(item, hooks);
      if (response === undefined) continue;
      responses.push(response);
      if (response instanceof Promise) waits = true;
    }
    const out = waits
      ? (await Promise.all(responses)).filter((r) => r !== undefined)
      : responses as Json[];
    if (out.length > 0) this.#calls.send(this.#serialize(out));
    this.#runHooks(hooks);
  }

  /** Returns the response to send, if any. */
  #receiveOne(
    message: unknown,
    hooks: Hooks,
  ): Json | undefined | Promise<Json | undefined> {
    if (
      message === null || typeof message !== "object" || Array.isArray(message)
    ) {
      return errorResponse(
        null,
        ErrorCode.InvalidRequest,
        "invalid request: each message must be a JSON object",
      );
    }
    const m = message as Json;
    const hasId = Object.hasOwn(m, "id");
    const id = m.id;
    const validId = id === null || typeof id === "string" ||
      (typeof id === "number" && Number.isFinite(id));
    if (
      !Object.hasOwn(m, "method") && (hasId && validId) &&
      (Object.hasOwn(m, "result") || Object.hasOwn(m, "error"))
    ) {
      this.#receiveResponse(m);
      return undefined;
    }
    const responseId = hasId && validId ? id as Id : null;
    if (m.jsonrpc !== "2.0") {
      return errorResponse(
        responseId,
        ErrorCode.InvalidRequest,
        `invalid request: 'jsonrpc' must be "2.0"`,
      );
    }
    if (hasId && !validId) {
      return errorResponse(
        null,
        ErrorCode.InvalidRequest,
        "invalid request: 'id' must be a string, a number or null",
      );
    }
    if (typeof m.method !== "string") {
      return errorResponse(
        responseId,
        ErrorCode.InvalidRequest,
        "invalid request: 'method' must be a string",
      );
    }
    const params = m.params;
    if (
      Object.hasOwn(m, "params") &&
      (params === null || typeof params !== "object")
    ) {
      return errorResponse(
        responseId,
        ErrorCode.InvalidRequest,
        "invalid request: 'params' must be an object or an array when present",
      );
    }
    return this.#call(m.method, params, hasId, id as Id, hooks);
  }

  /**
   * Runs the handler; the response (none for a notification) is returned
   * as it is when the handler returns a value, and as a promise when it
   * returns one.
   */
  #call(
    method: string,
    params: unknown,
    hasId: boolean,
    id: Id,
    hooks: Hooks,
  ): Json | undefined | Promise<Json | undefined> {
    const calls = this.#calls;
    const started = calls.onSettled === undefined ? 0 : performance.now();
    try {
      if (!calls.onRequest) {
        throw new RpcError(
          ErrorCode.MethodNotFound,
          `method not found: '${method}'`,
        );
      }
      const result = calls.onRequest(
        method,
        params,
        hasId ? hooks : hooks.notificationContext,
      );
      if (result instanceof Promise) {
        return result.then(
          (value) => {
            calls.onSettled?.(method, started);
            return hasId ? success(id, value) : undefined;
          },
          (error) => {
            calls.onSettled?.(method, started, error);
            return this.#failure(method, hasId, id, error);
          },
        );
      }
      calls.onSettled?.(method, started);
      return hasId ? success(id, result) : undefined;
    } catch (error) {
      calls.onSettled?.(method, started, error);
      return this.#failure(method, hasId, id, error);
    }
  }

  /** The response to a call whose handler threw `error`. */
  #failure(
    method: string,
    hasId: boolean,
    id: Id,
    error: unknown,
  ): Json | undefined {
    const internal = !(error instanceof RpcError);
    if (internal) this.#calls.onInternalError?.(error, method);
    if (!hasId) return undefined;
    if (!internal) return { jsonrpc: "2.0", id, error: error.toJSON() };
    return errorResponse(
      id,
      ErrorCode.InternalError,
      `internal error while handling '${method}': ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }

  #receiveResponse(m: Json): void {
    if (typeof m.id !== "number") return;
    const pending = this.#pending?.get(m.id);
    if (!pending) return;
    this.#pending!.delete(m.id);
    pending.cleanup();
    if (Object.hasOwn(m, "error")) {
      const e = m.error as Partial<ErrorObject> | null;
      pending.reject(
        new RpcError(
          typeof e?.code === "number" ? e.code : ErrorCode.InternalError,
          typeof e?.message === "string"
            ? e.message
            : `'${pending.method}' failed with a malformed error`,
          e?.data,
        ),
      );
    } else {
      try {
        pending.onResult?.(m.result);
      } catch (error) {
        pending.reject(error);
        return;
      }
      pending.resolve(m.result);
    }
  }

  #sendError(id: Id, code: number, message: string): void {
    this.#calls.send(JSON.stringify(errorResponse(id, code, message)));
  }
}

/**
 * What runs after the responses of one incoming frame are sent, and the
 * call contexts of its requests and notifications, which add to it.
 */
class Hooks implements CallContext {
  /** The hooks, in order; made by the first (most frames add none). */
  list: (() => void)[] | undefined;
  /** As the context of a request (one with an id). */
  readonly notification = false;
  #notification?: CallContext;
  /** The context of a notification of the same frame: made when first needed. */
  get notificationContext(): CallContext {
    return this.#notification ??= {
      notification: true,
      afterResponse: this.afterResponse,
    };
  }
  /** Adds a hook; `this` is bound, so the method may be passed on alone. */
  readonly afterResponse = (fn: () => void): void => {
    (this.list ??= []).push(fn);
  };
}

function success(id: Id, result: unknown): Json {
  return { jsonrpc: "2.0", id, result: result ?? null };
}

/** `text` cut to `max` characters, with "..." when it was longer. */
function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

function errorResponse(id: Id, code: number, message: string): Json {
  return { jsonrpc: "2.0", id, error: { code, message } };
}
