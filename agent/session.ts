// Copyright the discover authors. BSD-3-Clause license.

/**
 * One client connection: its JSON-RPC peer, its subscriptions, and the
 * methods it may call.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { type CallContext, JsonRpcPeer } from "../protocol/jsonrpc.ts";
import {
  type CatalogResult,
  type Filter,
  type Limits,
  Methods,
  type ServicesResult,
  type StatusResult,
  type SubscribeResult,
} from "../protocol/types.ts";
import {
  validateNoParams,
  validateRegister,
  validateServices,
  validateSubscribe,
  validateUnregister,
  validateUnsubscribe,
} from "../protocol/validate.ts";
import { openrpcDocument } from "../protocol/openrpc.ts";
import { joinHostPort } from "./advertise.ts";
import type { Logger } from "./log.ts";
import type { Owner, Registry } from "./registry.ts";
import type { Subscriber, View } from "./view.ts";
import { VERSION } from "./version.ts";

/** What every session of an agent shares. */
export interface SessionContext {
  /** The agent's view. */
  view: View;
  /** Ownership and liveness of registrations. */
  registry: Registry;
  /** Name of the backend. */
  backendName: string;
  /** Host for registrations that give only a port. */
  advertiseHost: string;
  /** Grace TTL in seconds. */
  ttl: number;
  /** Limits. */
  limits: Limits;
  /** Logger. */
  log: Logger;
  /** Whether the agent is shutting down. */
  shuttingDown(): boolean;
}

const encoder = new TextEncoder();

/** A subscription of a session: buffers events until its response is sent. */
class Subscription implements Subscriber {
  #pending: string[] | undefined = [];
  #prefix: string;
  /** Set once unsubscribed: nothing more is sent. */
  stopped = false;

  constructor(
    readonly id: string,
    readonly service: string,
    readonly filter: Filter | undefined,
    readonly session: Session,
  ) {
    this.#prefix =
      `{"jsonrpc":"2.0","method":"discover.event","params":{"subscription":${
        JSON.stringify(id)
      },"result":`;
  }

  deliver(resultJson: string): void {
    if (this.stopped) return;
    if (this.#pending) this.#pending.push(resultJson);
    else this.session.send(this.#prefix + resultJson + "}}");
  }

  /**
   * Sends the initial events, then whatever arrived meanwhile, then goes
   * live. The initial events do not count against the session's queue
   * limit: a snapshot is as large as the service, and a subscriber must be
   * able to receive it whatever its size.
   */
  start(initial: string[]): void {
    if (this.stopped) return;
    const pending = this.#pending ?? [];
    this.#pending = undefined;
    let bytes = 0;
    for (const json of initial) {
      const frame = this.#prefix + json + "}}";
      bytes += frame.length;
      this.session.send(frame, { unchecked: true });
    }
    this.session.allowQueued(bytes);
    for (const json of pending) this.session.send(this.#prefix + json + "}}");
  }
}

/**
 * A session: one WebSocket connection of a client.
 *
 * @example Usage
 * ```ts ignore
 * const session = new Session(context, socket, owner, "7");
 * socket.onmessage = (e) => session.receive(e.data);
 * socket.onclose = (e) => session.closed(e.code === 1000);
 * ```
 */
export class Session {
  readonly #context: SessionContext;
  readonly #socket: WebSocket;
  readonly #peer: JsonRpcPeer;
  readonly #subscriptions = new Map<string, Subscription>();
  #nextSubscription = 1;
  #inflight = 0;
  /** Bytes of snapshots allowed above the queue limit. */
  #allowance = 0;
  #mutations: Promise<unknown> = Promise.resolve();
  #ended = false;

  /**
   * Creates a session on an open socket.
   *
   * @param context What the agent's sessions share.
   * @param socket The WebSocket.
   * @param owner The owner of this session's registrations.
   * @param id The session id, for logs.
   */
  constructor(
    context: SessionContext,
    socket: WebSocket,
    readonly owner: Owner,
    readonly id: string,
  ) {
    this.#context = context;
    this.#socket = socket;
    this.#peer = new JsonRpcPeer({
      send: (text) => this.send(text),
      onRequest: (method, params, call) => this.#handle(method, params, call),
      maxBatch: context.limits.maxBatch,
      onInternalError: (error, method) =>
        context.log.error("method failed", { session: id, method, error }),
    });
  }

  /** Frames received whose responses have not all been sent yet. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Number of open subscriptions. */
  get subscriptions(): number {
    return this.#subscriptions.size;
  }

  /**
   * Sends one text frame if the socket is open.
   *
   * @param text The frame.
   * @param options `unchecked`: the frame is part of a snapshot, which the
   *   queue limit does not apply to (see {@linkcode Session.allowQueued}).
   */
  send(text: string, options: { unchecked?: boolean } = {}): void {
    const socket = this.#socket;
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(text);
    if (options.unchecked) return;
    const queued = socket.bufferedAmount;
    const limit = this.#context.limits.maxQueueBytes;
    if (queued <= limit) {
      this.#allowance = 0; // every snapshot sent has drained below the limit
      return;
    }
    if (queued > limit + this.#allowance) {
      // A consumer that does not keep up must not grow the agent without
      // bound: drop it. The session counts as lost (its instances stay for
      // the grace TTL); the client reconnects and resumes with `since`.
      this.#context.log.warn("slow consumer dropped", {
        session: this.id,
        queued,
        maxQueueBytes: this.#context.limits.maxQueueBytes,
      });
      try {
        socket.close(
          4008,
          "slow consumer: too many bytes queued; reconnect and resume",
        );
      } catch { /* already closing */ }
      this.closed(false);
    }
  }

  /**
   * Lets `bytes` more than `maxQueueBytes` wait in the send queue, until
   * the queue next drains below the limit: what a snapshot just queued.
   *
   * @param bytes The snapshot's size.
   */
  allowQueued(bytes: number): void {
    this.#allowance += bytes;
  }

  /**
   * Handles one incoming frame.
   *
   * @param data The frame's data (a string for text frames).
   */
  receive(data: unknown): void {
    if (typeof data !== "string") {
      this.#sendError(
        "invalid request: binary frames are not accepted; send JSON-RPC messages as UTF-8 text frames",
      );
      return;
    }
    const max = this.#context.limits.maxFrameBytes;
    if (
      data.length > max ||
      (data.length * 3 > max && encoder.encode(data).length > max)
    ) {
      this.#sendError(
        `invalid request: a frame of more than ${max} bytes was discarded; send smaller frames (split batches)`,
      );
      return;
    }
    this.#inflight++;
    void this.#peer.receive(data).finally(() => this.#inflight--);
  }

  /**
   * The connection ended: subscriptions stop and the owner is told.
   *
   * @param clean Whether the client closed it cleanly.
   */
  closed(clean: boolean): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const subscription of this.#subscriptions.values()) {
      subscription.stopped = true;
      this.#context.view.unsubscribe(subscription);
    }
    this.#subscriptions.clear();
    this.#peer.close(new Error("session closed"));
    this.#context.registry.detach(this.owner, clean);
  }

  #sendError(message: string) {
    this.send(JSON.stringify({
      jsonrpc: "2.0",
      id: null,
      error: { code: ErrorCode.InvalidRequest, message },
    }));
  }

  /** Runs register/unregister of this session strictly in arrival order. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#mutations.then(fn, fn);
    this.#mutations = run.catch(() => {});
    return run;
  }

  #addr(target: { port?: number; addr?: string }): string {
    return target.addr ??
      joinHostPort(this.#context.advertiseHost, target.port!);
  }

  #handle(method: string, params: unknown, call: CallContext): unknown {
    const ctx = this.#context;
    if (ctx.shuttingDown() && method !== Methods.ping) {
      throw new RpcError(
        ErrorCode.ShuttingDown,
        "the agent is shutting down; reconnect and retry",
      );
    }
    switch (method) {
      case Methods.register: {
        const p = validateRegister(params);
        const addr = this.#addr(p);
        return this.#serial(() =>
          ctx.registry.register(this.owner, {
            service: p.service,
            addr,
            attrs: p.attrs,
          })
        );
      }
      case Methods.unregister: {
        const p = validateUnregister(params);
        const addr = this.#addr(p);
        return this.#serial(() =>
          ctx.registry.unregister(this.owner, p.service, addr)
        );
      }
      case Methods.services: {
        const p = validateServices(params);
        return {
          revision: ctx.view.revision,
          instances: ctx.view.list(p.service, p.filter),
        } satisfies ServicesResult;
      }
      case Methods.catalog:
        validateNoParams(params);
        return {
          revision: ctx.view.revision,
          services: ctx.view.catalog(),
        } satisfies CatalogResult;
      case Methods.subscribe:
        return this.#subscribe(params, call);
      case Methods.unsubscribe: {
        const { subscription } = validateUnsubscribe(params);
        const sub = this.#subscriptions.get(subscription);
        if (!sub) {
          throw new RpcError(
            ErrorCode.UnknownSubscription,
            `no subscription '${subscription}' is open on this session`,
          );
        }
        this.#subscriptions.delete(subscription);
        sub.stopped = true;
        ctx.view.unsubscribe(sub);
        return true;
      }
      case Methods.status:
        validateNoParams(params);
        return {
          version: VERSION,
          backend: ctx.backendName,
          connected: ctx.view.connected,
          revision: ctx.view.revision,
          epoch: ctx.view.epoch,
          advertiseHost: ctx.advertiseHost,
          ttl: ctx.ttl,
          limits: ctx.limits,
        } satisfies StatusResult;
      case Methods.discover:
        validateNoParams(params);
        return openrpcDocument;
      case Methods.ping:
        validateNoParams(params);
        return "pong";
      default:
        throw new RpcError(
          ErrorCode.MethodNotFound,
          `method not found: '${
            method.slice(0, 100)
          }'; see rpc.discover for the methods`,
        );
    }
  }

  #subscribe(params: unknown, call: CallContext): SubscribeResult {
    const ctx = this.#context;
    const { service, filter, since, epoch } = validateSubscribe(params);
    if (this.#subscriptions.size >= ctx.limits.maxSubscriptions) {
      throw new RpcError(
        ErrorCode.LimitExceeded,
        `limit reached: this session already has ${this.#subscriptions.size} subscriptions (maxSubscriptions); unsubscribe some first`,
      );
    }
    const revision = ctx.view.revision;
    const replay = since === undefined
      ? undefined
      : ctx.view.replay(service, filter, since, epoch);
    const initial = replay
      ? replay.map((event) => JSON.stringify(event))
      : ctx.view.list(service, filter).map((instance) =>
        JSON.stringify({ kind: "up", revision, instance })
      );
    initial.push(JSON.stringify({ kind: "current", revision }));
    const id = String(this.#nextSubscription++);
    const subscription = new Subscription(id, service, filter, this);
    ctx.view.subscribe(subscription);
    if (call.notification) {
      // Nobody learns the id: the subscription would leak.
      ctx.view.unsubscribe(subscription);
    } else {
      this.#subscriptions.set(id, subscription);
      call.afterResponse(() => subscription.start(initial));
    }
    return {
      subscription: id,
      revision,
      epoch: ctx.view.epoch,
      mode: replay ? "replay" : "snapshot",
    };
  }
}
