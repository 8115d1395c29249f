// Copyright the discover authors. BSD-3-Clause license.

/**
 * One client connection: its JSON-RPC peer, its subscriptions, and the
 * methods it may call.
 *
 * What a session may hold queued for a client that reads slowly, or not at
 * all, is bounded. Live events and responses may take the send queue up to
 * `maxQueueBytes`; beyond it the client is a slow consumer and is dropped
 * (close code 4008). A subscription's initial events (its snapshot or
 * replay) do not count, so that a service of any size can be subscribed to,
 * but only one of them at a time may take the queue beyond the limit: a
 * subscribe that finds the queue over the limit waits (its response too)
 * until the client has read it down below the limit, and a client that
 * reads nothing for the idle timeout meanwhile is dropped as a slow
 * consumer. So a session holds at most about twice `maxQueueBytes` plus its
 * largest snapshot, however many subscriptions it opens.
 *
 * @module
 */

import type { BackendState } from "../backends/backend.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import {
  type CallContext,
  JsonRpcPeer,
  type JsonRpcPeerOptions,
  type RequestHandler,
} from "../protocol/jsonrpc.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { KeyedSerial } from "../protocol/keyed_serial.ts";
import { dispatcher, type MethodHandlers } from "../protocol/methods.ts";
import {
  ALL_SERVICES,
  type Check,
  type Filter,
  type HealthFilter,
  type Limits,
  MAX_INITIAL_BATCH,
  type ServiceEvent,
  type SubscribeParams,
  type SubscribeResult,
} from "../protocol/types.ts";
import { openrpcDocument } from "../protocol/openrpc.ts";
import { joinHostPort } from "./advertise.ts";
import type { Logger } from "./log.ts";
import { codeOf, type Metrics } from "./metrics.ts";
import { type Access, type Acl, allows, type AuthLimiter } from "./acl.ts";
import type { CheckPolicy, CheckSpec } from "./checks.ts";
import type { Owner, Registry } from "./registry.ts";
import type {
  SetFilter,
  Snapshot,
  SnapshotWriter,
  Subscriber,
  View,
} from "./view.ts";
import type { Hold, Views } from "./views.ts";
import { VERSION } from "./version.ts";

/** The set a read or subscription asks for: its attributes filter and its health filter. */
function setFilter(
  params: { filter?: Filter; health?: HealthFilter },
): SetFilter | undefined {
  if (params.health === undefined) return params.filter;
  return { ...params.filter, health: params.health };
}

/** A checked `check` of `discover.register`, in milliseconds. */
function specOf(check: Check): CheckSpec {
  return {
    ...(check.http === undefined ? { tcp: check.tcp } : { http: check.http }),
    intervalMs: (check.interval ?? 5) * 1000,
    timeoutMs: (check.timeout ?? 2) * 1000,
    failuresBeforeCritical: check.failuresBeforeCritical ?? 1,
    successesBeforePassing: check.successesBeforePassing ?? 1,
  };
}

/** The agent's access rules (replaced on reload) and the pace of wrong tokens. */
export interface AccessRules {
  /** The rules in force. */
  acl: Acl;
  /** Slows down wrong tokens, per remote address. */
  readonly limiter: AuthLimiter;
}

/** What a session knows of its connection besides its socket. */
export interface SessionOptions {
  /** The remote address (for the pace of wrong tokens, and logs). */
  remote?: string;
  /**
   * The owner id of this connection's registrations once it authenticated
   * as `name`; absent when its owner is the session itself.
   */
  ownerFor?: (name: string) => string;
}

/** What every session of an agent shares. */
export interface SessionContext {
  /** The agent's views of the services it uses. */
  views: Views;
  /** Ownership and liveness of registrations. */
  registry: Registry;
  /** Name of the backend. */
  backendName: string;
  /** Host for registrations that give only a port. */
  advertiseHost: string;
  /** Which hosts health checks may target. */
  checkPolicy: CheckPolicy;
  /** Grace TTL in seconds. */
  ttl: number;
  /** Limits. */
  limits: Limits;
  /**
   * Seconds a client may go without reading while a subscribe waits for
   * its send queue to drain below `maxQueueBytes` (the agent's idle
   * timeout); then it is dropped as a slow consumer.
   */
  idleTimeout: number;
  /** Logger. */
  log: Logger;
  /** Whether the agent is shutting down. */
  shuttingDown(): boolean;
  /** Where calls, events and drops are counted; none when metrics are off. */
  metrics?: Metrics;
  /** Access rules; absent: every session may do everything. */
  access?: AccessRules;
}

const encoder = new TextEncoder();

/** How often a subscribe that waits for the send queue to drain looks at it. */
const DRAIN_POLL_MS = 20;

/**
 * Most calls of one session under way at once (dispatched, not answered
 * yet): the calls beyond are refused with -32002 (a notification beyond
 * is dropped). Calls queue behind one another (those about one instance
 * run in arrival order, and all wait for a store that is slow or away),
 * so without a bound one client could make the agent hold any number.
 */
export const MAX_PENDING_CALLS = 10_000;

/**
 * One incoming frame (a request or a batch): the bytes of initial events
 * reserved by its subscribes, sent once its response is.
 */
interface Frame {
  reserved: number;
}

/** A subscribe waiting for the send queue to drain. */
interface DrainWaiter extends PromiseWithResolvers<void> {
  frame: Frame;
}

/** A subscribe on its way: its view, the store's history it may need, and its count. */
interface Opening {
  hold: Hold;
  past: BackendState | undefined;
  /** Stops counting it as opening (it is about to be counted as open). */
  opened(): void;
}

/** A session's handlers object: the shared table, and the session (see `Session.#methods`). */
interface Bound {
  session: Session;
}

/** A subscription of a session: buffers events until its response is sent. */
class Subscription implements Subscriber {
  #pending: string[] | undefined = [];
  #prefix: string;
  /** Set once unsubscribed: nothing more is sent. */
  stopped = false;
  /** See {@linkcode Subscriber.admits}: set on an agent with access rules. */
  admits?: (service: string) => boolean;

  constructor(
    id: string,
    readonly service: string,
    readonly filter: SetFilter | undefined,
    readonly session: Session,
    readonly hold: Hold,
  ) {
    this.#prefix =
      `{"jsonrpc":"2.0","method":"discover.event","params":{"subscription":${
        JSON.stringify(id)
      },"result":`;
  }

  /** Stops the subscription and lets its service's view go. */
  end(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.hold.view.unsubscribe(this);
    this.hold.release();
  }

  /**
   * The access rules changed: the services that became readable (by
   * `before`'s rules they were not) come up, those that stopped being
   * readable go down, instance by instance, with the view's revision.
   */
  reauthorized(before: (service: string) => boolean): void {
    const view = this.hold.view;
    const services = this.service === ALL_SERVICES
      ? view.catalog().map((entry) => entry.service)
      : [this.service];
    const revision = view.revision;
    for (const service of services) {
      const now = this.session.readable(service);
      if (now === before(service)) continue;
      for (const instance of view.list(service, this.filter)) {
        if (this.service === ALL_SERVICES && instance.service !== service) {
          continue;
        }
        this.deliver(JSON.stringify(
          {
            kind: now ? "up" : "down",
            revision,
            instance,
          } satisfies ServiceEvent,
        ));
      }
      if (this.service === ALL_SERVICES) continue;
      this.deliver(
        now ? view.refollow(this) : JSON.stringify(
          { kind: "leader", revision, instance: null } satisfies ServiceEvent,
        ),
      );
    }
  }

  deliver(resultJson: string): void {
    if (this.stopped) return;
    if (this.#pending) this.#pending.push(resultJson);
    else {
      this.session.send(this.frame(resultJson));
      this.session.eventsSent(1);
    }
  }

  /**
   * The `discover.event` notification of one event.
   *
   * @param resultJson The serialized `ServiceEvent`.
   * @returns The frame.
   */
  frame(resultJson: string): string {
    return this.#prefix + resultJson + "}}";
  }

  /**
   * Collects the frames of the initial events (see
   * {@linkcode InitialFrames}).
   *
   * @param batch The client takes them in batch frames (`SubscribeParams.batch`).
   * @param chunks The client takes a snapshot as `snapshot` events
   *   (`SubscribeParams.chunks`).
   * @returns An empty collection.
   */
  initialFrames(
    batch: boolean | undefined,
    chunks?: boolean,
  ): InitialFrames {
    return new InitialFrames(this.#prefix, batch === true, {
      chunks: chunks === true,
    });
  }

  /**
   * Sends the initial frames (see {@linkcode Session.sendInitial}), then
   * whatever arrived meanwhile, then goes live.
   *
   * @param initial The initial frames, counted.
   */
  start(initial: InitialFrames): void {
    if (this.stopped) {
      this.session.sendInitial(undefined, initial.bytes);
      return;
    }
    const pending = this.#pending ?? [];
    this.#pending = undefined;
    this.session.sendInitial(initial, initial.bytes);
    for (const json of pending) this.session.send(this.frame(json));
    this.session.eventsSent(initial.events + pending.length);
  }
}

/**
 * Length, in UTF-16 code units, beyond which a batch frame of initial
 * events is closed (the notification that crosses it is its last). Text
 * this short is a regular object of V8's heap, where longer text is a large
 * object of its own, mapped afresh each time and copied once more on its
 * way to the socket: a snapshot of 1,000 instances (about 280,000
 * characters) costs less to make and to send as five frames than as one,
 * and a client reads five smaller frames faster too.
 */
export const INITIAL_FRAME_CHARS = 64 * 1024;

/**
 * Most characters of initial frames made once, while counting, and kept
 * until the subscribe's response is sent (see {@linkcode InitialFrames}):
 * a snapshot of about 1,800 instances. Larger ones are made a second time
 * then, so that their text never outlives a collection of the young
 * generation. A subscribe whose response waits (for the rest of its batch)
 * keeps its frames meanwhile; their length is reserved against
 * `maxQueueBytes`, so a session keeps at most that much, plus one
 * subscription's.
 */
export const KEPT_INITIAL_CHARS = 512 * 1024;

/**
 * The length of the text of a finite number, as `Array.prototype.join`
 * writes it (`String(n)`), for integers without making the text.
 */
function numberLength(n: number): number {
  if (!Number.isInteger(n) || n <= -1e21 || n >= 1e21) {
    return String(n).length;
  }
  let length = n < 0 ? 2 : 1;
  const magnitude = Math.abs(n);
  // Powers of ten up to 10^22 are exact.
  for (let power = 10; power <= magnitude; power *= 10) length++;
  return length;
}

/**
 * The frames of a subscription's initial events: one `discover.event`
 * notification per frame, or (`batch`) JSON-RPC batch frames (JSON arrays)
 * of at most {@linkcode MAX_INITIAL_BATCH} notifications and about
 * {@linkcode INITIAL_FRAME_CHARS} each. With `chunks`, a snapshot goes as
 * `snapshot` events instead, each in a frame of its own and of the same
 * bounds in instances and characters.
 *
 * They are made twice, the same both times: counted once all their events
 * are added ({@linkcode InitialFrames.count}: their length, which the
 * session reserves before the subscribe's response, without keeping any
 * text), then made and handed to the socket one by one, each as soon as it
 * is complete, right after the response ({@linkcode InitialFrames.write}).
 * Until then a snapshot's events are a {@linkcode Snapshot}, a reference
 * to each instance: their text (30 million characters for 100,000
 * instances), kept from the subscribe to its response, would outlive
 * collections of V8's young generation, which copy it to memory taken
 * afresh, at several times the cost of writing it. A snapshot's events
 * come in pieces (a {@linkcode SnapshotWriter}), copied once, into their
 * frame, and never more than one frame of loose pieces is held. Frames
 * of at most {@linkcode KEPT_INITIAL_CHARS} in all are made once: counting
 * keeps them, and writing sends them.
 *
 * @example Usage
 * ```ts
 * import { InitialFrames } from "./session.ts";
 * const initial = new InitialFrames('{"params":{"result":', true);
 * initial.add('{"kind":"current","revision":1}');
 * initial.count();
 * const frames: string[] = [];
 * initial.write((frame) => frames.push(frame));
 * console.log(frames, initial.bytes); // ['[{"params":{"result":{"kind":"current","revision":1}}}]'] 55
 * ```
 */
export class InitialFrames implements SnapshotWriter {
  /** Notifications, as {@linkcode InitialFrames.count} counted them (a `snapshot` event is one). */
  events = 0;
  /** Length of the frames, as {@linkcode InitialFrames.count} counted it. */
  bytes = 0;
  /** What the frames carry, in order: events' JSON, and snapshots. */
  readonly #items: (string | Snapshot)[] = [];
  /** Where complete frames go; absent while counting. */
  #send: ((frame: string) => void) | undefined;
  /** The pieces of the frame being made (of the event, while counting). */
  #parts: (string | number)[] = [];
  /** Where the pieces of the event being written start in `#parts`. */
  #from = 0;
  /** Notifications in the frame being made. */
  #count = 0;
  /** About the length of the frame being made (a number counts 24). */
  #length = 0;
  /** The exact length of the frame being made (while counting). */
  #exact = 0;
  /** Events and length of the frames made so far. */
  #events = 0;
  #bytes = 0;
  /**
   * The frames made while counting, kept for {@linkcode InitialFrames.write}
   * while they stay within {@linkcode KEPT_INITIAL_CHARS} in all.
   */
  #kept: string[] | undefined;
  /** What starts a batch frame's first notification, and each later one. */
  readonly #first: string;
  readonly #next: string;

  /** Whether a snapshot goes as `snapshot` events (`SubscribeParams.chunks`). */
  readonly chunks: boolean;

  /**
   * Creates an empty collection.
   *
   * @param prefix The text of a notification before its event.
   * @param batch Whether the frames are batch frames.
   * @param options `chunks`: a snapshot's instances go as `snapshot`
   *   events of up to {@linkcode MAX_INITIAL_BATCH} instances and about
   *   {@linkcode INITIAL_FRAME_CHARS} each, one notification per frame.
   */
  constructor(
    readonly prefix: string,
    readonly batch: boolean,
    options: { chunks?: boolean } = {},
  ) {
    this.#first = batch ? "[" + prefix : prefix;
    this.#next = "," + prefix;
    this.chunks = options.chunks === true;
  }

  /**
   * Adds the next event.
   *
   * @param resultJson The event, serialized.
   */
  add(resultJson: string): void {
    this.#items.push(resultJson);
  }

  /**
   * Adds the events of a snapshot.
   *
   * @param snapshot The snapshot.
   */
  addSnapshot(snapshot: Snapshot): void {
    this.#items.push(snapshot);
  }

  /** Counts the events and the length of the frames, once every event is added. */
  count(): void {
    this.#kept = [];
    this.#run(undefined);
    this.events = this.#events;
    this.bytes = this.#bytes;
  }

  /**
   * Makes the frames, and hands each to `send` as soon as it is complete.
   *
   * @param send Receives the frames, in order.
   * @returns Their length (what {@linkcode InitialFrames.count} counted).
   */
  write(send: (frame: string) => void): number {
    const kept = this.#kept;
    this.#kept = undefined;
    if (kept === undefined) {
      this.#run(send);
    } else {
      for (const frame of kept) send(frame);
    }
    return this.#bytes;
  }

  #run(send: ((frame: string) => void) | undefined) {
    this.#send = send;
    this.#events = this.#bytes = 0;
    try {
      for (const item of this.#items) {
        if (typeof item === "string") {
          this.begin().push(item);
          this.end();
        } else if (this.chunks) {
          this.#writeChunks(item);
        } else {
          item.write(this);
        }
      }
      this.#flush(this.batch);
    } finally {
      this.#send = undefined;
      this.#parts.length = 0;
      this.#count = this.#length = this.#exact = 0;
    }
  }

  /**
   * Starts the next event (see {@linkcode SnapshotWriter}).
   *
   * @returns Where its pieces go.
   */
  begin(): (string | number)[] {
    const parts = this.#parts;
    this.#from = parts.length;
    parts.push(this.#count === 0 ? this.#first : this.#next);
    return parts;
  }

  /** Ends the event started last. */
  end(): void {
    this.#parts.push("}}");
    this.#events++;
    this.#count++;
    this.#measure();
    if (
      !this.batch || this.#count === MAX_INITIAL_BATCH ||
      this.#length >= INITIAL_FRAME_CHARS
    ) this.#flush(this.batch);
  }

  /** Counts the pieces pushed since `#from`. */
  #measure() {
    const parts = this.#parts;
    // Counting without keeping the text: a kept frame is counted whole.
    const exact = this.#send === undefined && this.#kept === undefined;
    for (let i = this.#from; i < parts.length; i++) {
      const part = parts[i];
      if (typeof part === "string") {
        this.#length += part.length;
        if (exact) this.#exact += part.length;
      } else {
        // A number's text is at most 24 characters.
        this.#length += 24;
        if (exact) this.#exact += numberLength(part);
      }
    }
    // Counting keeps no text, beyond the frames it may keep whole.
    if (exact) parts.length = this.#from;
  }

  /**
   * Writes a snapshot as `snapshot` events, each in a frame of its own:
   * the pieces of each instance go straight into the event's text.
   */
  #writeChunks(snapshot: Snapshot) {
    // A batch frame under way ends first.
    this.#flush(this.batch);
    const open =
      `${this.prefix}{"kind":"snapshot","revision":${snapshot.revision},"instances":[`;
    const parts = this.#parts;
    let instances = 0;
    const close = () => {
      this.#from = parts.length;
      // The array, the event, the params and the notification.
      parts.push("]}}}");
      this.#measure();
      this.#events++;
      this.#count = 1;
      instances = 0;
      this.#flush(false);
    };
    snapshot.writeInstances({
      begin: () => {
        this.#from = parts.length;
        parts.push(instances === 0 ? open : ",");
        return parts;
      },
      end: () => {
        instances++;
        this.#measure();
        if (
          instances === MAX_INITIAL_BATCH || this.#length >= INITIAL_FRAME_CHARS
        ) close();
      },
    });
    if (instances > 0) close();
  }

  /** Completes the frame under way: a JSON array when `array`. */
  #flush(array: boolean) {
    if (this.#count === 0) return;
    const send = this.#send;
    const kept = this.#kept;
    if (send === undefined && kept !== undefined) {
      const parts = this.#parts;
      if (array) parts.push("]");
      const frame = parts.join("");
      parts.length = 0;
      this.#bytes += frame.length;
      kept.push(frame);
      if (this.#bytes > KEPT_INITIAL_CHARS) this.#kept = undefined;
    } else if (send === undefined) {
      this.#bytes += this.#exact + (array ? 1 : 0);
    } else {
      const parts = this.#parts;
      if (array) parts.push("]");
      const frame = parts.join("");
      parts.length = 0;
      this.#bytes += frame.length;
      send(frame);
    }
    this.#count = 0;
    this.#length = 0;
    this.#exact = 0;
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
  readonly #dispatch: RequestHandler;
  readonly #subscriptions = new Map<string, Subscription>();
  #nextSubscription = 1;
  /** Subscribes waiting for their service's view. */
  #opening = 0;
  /** Aborted when the session ends: its writes not sent yet are abandoned. */
  #closing = new AbortController();
  #inflight = 0;
  /** Calls dispatched and not answered yet (see {@linkcode MAX_PENDING_CALLS}). */
  #pending = 0;
  /** Bytes of snapshots allowed above the queue limit. */
  #allowance = 0;
  /**
   * Bytes of initial events whose subscribe is decided but not yet
   * answered and sent (every frame's, see {@linkcode Frame}).
   */
  #reserved = 0;
  /** The frame being received, while its requests are dispatched. */
  #frame: Frame | undefined;
  /** Subscribes waiting for the send queue to drain, oldest first. */
  #drainWaiters: DrainWaiter[] = [];
  #drainTimer: ReturnType<typeof setTimeout> | undefined;
  /** Register/unregister calls in flight, one queue per instance. */
  readonly #mutations = new KeyedSerial();
  #ended = false;
  #owner: Owner;
  readonly #options: SessionOptions;
  /** The token this session presented, and the rules it was checked against. */
  #token?: { name: string; acl: Acl };

  /** The owner of this session's registrations. */
  get owner(): Owner {
    return this.#owner;
  }

  /**
   * The name of the session's token while the rules in force still hold
   * it, with the same hash (a token removed or replaced on reload takes its
   * rights with it at once).
   */
  #name(): string | undefined {
    const token = this.#token;
    const acl = this.#context.access?.acl;
    if (!token || !acl) return undefined;
    if (token.acl !== acl) {
      if (!acl.has(token.name, { since: token.acl })) {
        // Gone for good: the session presents a token again to get rights.
        this.#token = undefined;
        return undefined;
      }
      token.acl = acl;
    }
    return token.name;
  }

  /** The access the session has to `service` (everything without rules). */
  access(service: string): Access {
    const acl = this.#context.access?.acl;
    return acl ? acl.access(this.#name(), service) : "admin";
  }

  /** Whether the session may read `service`. */
  readable(service: string): boolean {
    return allows(this.access(service), "read");
  }

  /** Throws -32007 unless the session has `needed` access to `service`. */
  #require(service: string, needed: "read" | "write" | "admin"): void {
    if (!this.#context.access) {
      if (needed !== "admin") return;
      throw new RpcError(
        ErrorCode.Forbidden,
        "'force' needs an agent with access rules (--acl) and a token with admin access to the service",
      );
    }
    const access = this.access(service);
    if (allows(access, needed)) return;
    throw new RpcError(
      ErrorCode.Forbidden,
      `this call needs ${needed} access to '${service}'; this session has ${access} (${
        this.#name() === undefined
          ? "no token: present one with discover.authenticate"
          : `token '${this.#name()}'`
      })`,
    );
  }

  /**
   * The agent's rules were loaded again: subscriptions see the services
   * that became readable come up, and those that stopped being readable go
   * down, as if their instances had.
   *
   * @param previous The rules before.
   */
  reauthorized(previous: Acl): void {
    const token = this.#token;
    const before = (service: string) =>
      allows(
        previous.access(
          token && token.acl === previous ? token.name : undefined,
          service,
        ),
        "read",
      );
    for (const subscription of this.#subscriptions.values()) {
      subscription.reauthorized(before);
    }
  }

  /**
   * Creates a session on an open socket.
   *
   * @param context What the agent's sessions share.
   * @param socket The WebSocket.
   * @param owner The owner of this session's registrations.
   * @param id The session id, for logs.
   * @param options The remote address, and the owner of an authenticated session.
   */
  constructor(
    context: SessionContext,
    socket: WebSocket,
    owner: Owner,
    readonly id: string,
    options: SessionOptions = {},
  ) {
    this.#owner = owner;
    this.#options = options;
    this.#context = context;
    this.#socket = socket;
    const handlers: Bound = Object.create(Session.#methods);
    handlers.session = this;
    this.#dispatch = dispatcher(handlers as Bound & MethodHandlers);
    const calls: Bound & Pick<JsonRpcPeerOptions, "maxBatch" | "onSettled"> =
      Object.create(Session.#peerCalls);
    calls.session = this;
    calls.maxBatch = context.limits.maxBatch;
    // Calls are timed only when metrics are on.
    calls.onSettled = context.metrics ? Session.#counted : Session.#settled;
    this.#peer = new JsonRpcPeer(calls as Bound & JsonRpcPeerOptions);
  }

  /** Frames received whose responses have not all been sent yet. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Bytes waiting in the socket's send queue. */
  get queued(): number {
    return this.#socket.bufferedAmount;
  }

  /**
   * Counts event notifications sent to the client (see `metrics.ts`).
   *
   * @param n How many.
   */
  eventsSent(n: number): void {
    this.#context.metrics?.eventsSent(n);
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
    if (queued > limit + this.#allowance) this.#dropSlow(queued);
  }

  /**
   * Sends a subscription's initial events, which the queue limit does not
   * apply to: `bytes` more than `maxQueueBytes` may wait in the send queue
   * until it next drains below the limit. Releases their reservation.
   *
   * @param frames The frames, made as they are sent (none when the
   *   subscription ended before).
   * @param bytes Their size, as reserved when the subscribe was answered.
   */
  sendInitial(frames: InitialFrames | undefined, bytes: number): void {
    this.#reserved = Math.max(0, this.#reserved - bytes);
    if (frames === undefined) return;
    frames.write((frame) => this.send(frame, { unchecked: true }));
    this.#allowance += bytes;
  }

  /**
   * A consumer that does not keep up must not grow the agent without
   * bound: drop it. The session counts as lost (its instances stay for the
   * grace TTL); the client reconnects and resumes with `since`.
   */
  #dropSlow(queued: number) {
    this.#context.metrics?.drop();
    this.#context.log.warn("slow consumer dropped", {
      session: this.id,
      queued,
      maxQueueBytes: this.#context.limits.maxQueueBytes,
    });
    try {
      this.#socket.close(
        4008,
        "slow consumer: too many bytes queued; reconnect and resume",
      );
    } catch { /* already closing */ }
    this.closed(false);
  }

  /**
   * Resolves once the send queue is within `maxQueueBytes`, counting what
   * other frames reserved, one waiter at a time (the next one looks again
   * once the previous one's initial events are queued). Drops the session
   * when the client reads nothing for the idle timeout meanwhile; rejects
   * when the session ends.
   */
  #drained(frame: Frame): Promise<void> {
    const waiter = { ...Promise.withResolvers<void>(), frame };
    this.#drainWaiters.push(waiter);
    if (this.#drainTimer === undefined) {
      let last = this.#socket.bufferedAmount;
      let progressAt = Date.now();
      const look = () => {
        this.#drainTimer = undefined;
        if (this.#ended) return;
        const queued = this.#socket.bufferedAmount;
        const head = this.#drainWaiters[0];
        const others = this.#reserved - head.frame.reserved;
        if (queued + others <= this.#context.limits.maxQueueBytes) {
          this.#drainWaiters.shift()!.resolve();
          progressAt = Date.now();
        } else if (queued < last) {
          progressAt = Date.now();
        } else if (
          Date.now() - progressAt > this.#context.idleTimeout * 1000
        ) {
          this.#dropSlow(queued); // rejects the waiters
          return;
        }
        last = queued;
        if (this.#drainWaiters.length > 0) {
          this.#drainTimer = setTimeout(look, DRAIN_POLL_MS);
        }
      };
      this.#drainTimer = setTimeout(look, DRAIN_POLL_MS);
    }
    return waiter.promise;
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
    // The peer dispatches every request of the frame before it returns.
    const frame: Frame = { reserved: 0 };
    this.#frame = frame;
    try {
      void this.#peer.receive(data).then(this.#received, this.#receiveFailed);
    } finally {
      this.#frame = undefined;
    }
  }

  /** A frame's responses are all sent (one function for every frame). */
  readonly #received = (): void => void this.#inflight--;
  /** The same, should the peer fail (it never does): the error stands. */
  readonly #receiveFailed = (error: unknown): never => {
    this.#inflight--;
    throw error;
  };

  /**
   * The connection ended: subscriptions stop and the owner is told.
   *
   * @param clean Whether the client closed it cleanly.
   */
  closed(clean: boolean): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#closing.abort(new Error("the session closed"));
    clearTimeout(this.#drainTimer);
    this.#drainTimer = undefined;
    for (const waiter of this.#drainWaiters.splice(0)) {
      waiter.reject(
        new RpcError(ErrorCode.ConnectionClosed, "the session closed"),
      );
    }
    for (const subscription of this.#subscriptions.values()) {
      subscription.end();
    }
    this.#subscriptions.clear();
    this.#peer.close(new Error("session closed"));
    this.#context.registry.detach(this.#owner, clean);
  }

  #sendError(message: string) {
    this.send(JSON.stringify({
      jsonrpc: "2.0",
      id: null,
      error: { code: ErrorCode.InvalidRequest, message },
    }));
  }

  /**
   * Runs the register/unregister calls of this session about one instance
   * strictly in arrival order; calls about other instances run meanwhile,
   * so a batch of registrations reaches the backend together.
   */
  #serial<T>(service: string, addr: string, fn: () => Promise<T>): Promise<T> {
    return this.#mutations.run(instanceKey(service, addr), fn);
  }

  #addr(target: { port?: number; addr?: string }): string {
    return target.addr ??
      joinHostPort(this.#context.advertiseHost, target.port!);
  }

  #answer(method: string, params: unknown, call: CallContext): unknown {
    // Every call that gets here is settled once (`#settled`).
    if (++this.#pending > MAX_PENDING_CALLS) {
      throw new RpcError(
        ErrorCode.LimitExceeded,
        `limit reached: this session has ${MAX_PENDING_CALLS} calls under way; wait for their answers before sending more`,
      );
    }
    if (this.#context.shuttingDown() && method !== "$/ping") {
      throw new RpcError(
        ErrorCode.ShuttingDown,
        "the agent is shutting down; reconnect and retry",
      );
    }
    return this.#dispatch(method, params, call);
  }

  /** A call is answered (`JsonRpcPeerOptions.onSettled`). */
  static readonly #settled:
    & NonNullable<JsonRpcPeerOptions["onSettled"]>
    & ThisType<Bound> = function (this: Bound) {
      this.session.#pending--;
    };

  /** The same, and counts the call and its duration (metrics on). */
  static readonly #counted:
    & NonNullable<JsonRpcPeerOptions["onSettled"]>
    & ThisType<Bound> = function (this: Bound, method, started, error) {
      this.session.#pending--;
      this.session.#context.metrics?.request(
        method,
        codeOf(error),
        (performance.now() - started) / 1000,
      );
    };

  /**
   * What every session's peer calls (see {@linkcode JsonRpcPeerOptions}):
   * one table for all sessions, found through the object each session
   * gives its peer, as for {@linkcode Session.#methods}.
   */
  static readonly #peerCalls:
    & Pick<JsonRpcPeerOptions, "send" | "onRequest" | "onInternalError">
    & ThisType<Bound> = {
      send(text) {
        this.session.send(text);
      },
      onRequest(method, params, call) {
        return this.session.#answer(method, params, call);
      },
      onInternalError(error, method) {
        const s = this.session;
        s.#context.log.error("method failed", { session: s.id, method, error });
      },
    };

  /**
   * Every session's answer to every method, given checked params: one
   * table for all sessions. A session's handlers object only points at it
   * and at the session, which its handlers find as `this.session`: a
   * session costs no closure per method.
   */
  static readonly #methods: MethodHandlers & ThisType<Bound> = {
    "discover.authenticate"(p) {
      const s = this.session;
      return s.#authenticate(p.token);
    },
    "discover.register"(p) {
      const s = this.session;
      s.#require(p.service, "write");
      const addr = s.#addr(p);
      const check = p.check && specOf(p.check);
      if (check) s.#context.checkPolicy.assertAllowed(addr, check);
      return s.#serial(
        p.service,
        addr,
        () =>
          s.#context.registry.register(s.#owner, {
            service: p.service,
            addr,
            attrs: p.attrs ?? {},
            ...(check ? { check } : {}),
          }, { signal: s.#closing.signal }),
      );
    },
    "discover.setHealth"(p) {
      const s = this.session;
      s.#require(p.service, "write");
      const addr = s.#addr(p);
      return s.#serial(
        p.service,
        addr,
        () =>
          s.#context.registry.setHealth(s.#owner, {
            service: p.service,
            addr,
            health: p.health,
            ...(p.note === undefined ? {} : { note: p.note }),
          }, { signal: s.#closing.signal }),
      );
    },
    "discover.unregister"(p) {
      const s = this.session;
      s.#require(p.service, p.force ? "admin" : "write");
      const addr = s.#addr(p);
      return s.#serial(
        p.service,
        addr,
        () =>
          s.#context.registry.unregister(s.#owner, {
            service: p.service,
            addr,
          }, {
            signal: s.#closing.signal,
            ...(p.force ? { force: s.#name() ?? "" } : {}),
          }),
      );
    },
    async "discover.services"(p) {
      const s = this.session;
      s.#require(p.service, "read");
      const hold = await s.#context.views.acquire(p.service);
      try {
        return {
          revision: hold.view.revision,
          instances: hold.view.list(p.service, setFilter(p)),
        };
      } finally {
        hold.release();
      }
    },
    async "discover.leader"(p) {
      const s = this.session;
      s.#require(p.service, "read");
      const hold = await s.#context.views.acquire(p.service);
      try {
        return hold.view.leader(p.service, setFilter(p)) ?? null;
      } finally {
        hold.release();
      }
    },
    async "discover.owners"(p) {
      const s = this.session;
      s.#require(p.service, "read");
      const hold = await s.#context.views.acquire(p.service);
      try {
        return {
          revision: hold.view.revision,
          owners: s.#context.registry.ownersOf(
            hold.view,
            p.service,
            setFilter(p),
          ),
        };
      } finally {
        hold.release();
      }
    },
    "discover.owned"() {
      const s = this.session;
      return {
        revision: s.#context.views.revision,
        instances: s.#context.registry.owned(s.#owner),
      };
    },
    async "discover.catalog"() {
      const s = this.session;
      if (!s.#context.views.connected) {
        throw new RpcError(
          ErrorCode.BackendUnavailable,
          "the agent cannot reach its backend, so it cannot count the services now; retry later",
        );
      }
      try {
        const catalog = await s.#context.views.catalog();
        if (!s.#context.access) return catalog;
        return {
          ...catalog,
          services: catalog.services.filter((entry) =>
            s.readable(entry.service)
          ),
        };
      } catch (error) {
        throw new RpcError(
          ErrorCode.BackendUnavailable,
          `the backend could not list the services: ${
            error instanceof Error ? error.message : String(error)
          }; retry later`,
        );
      }
    },
    "discover.subscribe"(p, call) {
      const s = this.session;
      // Every service: filtered service by service (Subscriber.admits).
      if (p.service !== ALL_SERVICES) s.#require(p.service, "read");
      return s.#subscribe(p, call);
    },
    "discover.unsubscribe"({ subscription }) {
      const s = this.session;
      const sub = s.#subscriptions.get(subscription);
      if (!sub) {
        throw new RpcError(
          ErrorCode.UnknownSubscription,
          `no subscription '${subscription}' is open on this session`,
        );
      }
      s.#subscriptions.delete(subscription);
      sub.end();
      return true;
    },
    "discover.status"() {
      const s = this.session;
      return {
        version: VERSION,
        backend: s.#context.backendName,
        connected: s.#context.views.connected,
        revision: s.#context.views.revision,
        epoch: s.#context.views.epoch,
        advertiseHost: s.#context.advertiseHost,
        ttl: s.#context.ttl,
        limits: s.#context.limits,
        instances: s.#context.registry.counts(),
      };
    },
    "discover.lease"() {
      const s = this.session;
      return s.#context.registry.vouch();
    },
    "rpc.discover": () => openrpcDocument,
    "$/ping": () => "pong",
  };

  /** `discover.authenticate`: the token's name, or -32007 (slowed per address). */
  async #authenticate(token: string): Promise<{ name: string }> {
    const rules = this.#context.access;
    const remote = this.#options.remote ?? "";
    if (!rules) {
      throw new RpcError(
        ErrorCode.Forbidden,
        "this agent has no access rules (--acl): there is nothing to authenticate to",
      );
    }
    const acl = rules.acl;
    // One attempt of an address at a time: a batch of guesses is slowed
    // like guesses sent one by one.
    const name = await rules.limiter.serially(remote, async () => {
      const wait = rules.limiter.delay(remote);
      if (wait > 0) {
        throw new RpcError(
          ErrorCode.LimitExceeded,
          `too many wrong tokens from this address; retry in ${
            Math.ceil(wait)
          } ms`,
        );
      }
      const name = await acl.authenticate(token);
      if (name === undefined) rules.limiter.failed(remote);
      return name;
    });
    if (name === undefined) {
      this.#context.log.warn("authentication refused: unknown token", {
        session: this.id,
        remote,
      });
      throw new RpcError(
        ErrorCode.Forbidden,
        "unknown token: the agent's access rules have no token with this hash",
      );
    }
    this.#token = { name, acl };
    const ownerId = this.#options.ownerFor?.(name);
    if (ownerId !== undefined && ownerId !== this.#owner.id) {
      // The client id's registrations belong to the token that made them.
      const previous = this.#owner;
      this.#owner = this.#context.registry.attach(ownerId, { name });
      this.#context.registry.detach(previous, true);
    }
    this.#context.log.info("session authenticated", {
      session: this.id,
      remote,
      name,
    });
    return { name };
  }

  #subscribe(
    params: SubscribeParams,
    call: CallContext,
  ): Promise<SubscribeResult> {
    const ctx = this.#context;
    const frame = this.#frame ?? { reserved: 0 };
    // In flight: waiting for their view, the store's history, or the
    // send queue to drain.
    const open = this.#subscriptions.size + this.#opening;
    if (open >= ctx.limits.maxSubscriptions) {
      throw new RpcError(
        ErrorCode.LimitExceeded,
        `limit reached: this session already has ${open} subscriptions (maxSubscriptions); unsubscribe some first`,
      );
    }
    this.#opening++;
    // Counted as opening until it is in `#subscriptions` (or failed).
    let opening = true;
    const opened = () => {
      if (opening) this.#opening--;
      opening = false;
    };
    return (async () => {
      let hold: Hold | undefined;
      try {
        // A service this agent does not watch yet starts at `since`, when
        // the store still has it: the client gets every change it missed.
        hold = await ctx.views.acquire(params.service, {
          since: params.since,
          epoch: params.epoch,
        });
        const past = await this.#past(hold.view, params);
        if (this.#ended) {
          throw new RpcError(ErrorCode.ConnectionClosed, "the session closed");
        }
        return await this.#start(params, call, frame, { hold, past, opened });
      } catch (error) {
        hold?.release();
        throw error;
      } finally {
        opened();
      }
    })();
  }

  /**
   * For a resume from before what the view's history holds: the scope's
   * state at `since`, from the store's own history, if it has it.
   */
  async #past(
    view: View,
    params: SubscribeParams,
  ): Promise<BackendState | undefined> {
    const { service, since, epoch } = params;
    const filter = setFilter(params);
    if (since === undefined || (epoch ?? view.epoch) !== view.epoch) {
      return undefined;
    }
    if (view.replay(service, filter, since, epoch) !== undefined) {
      return undefined;
    }
    return await this.#context.views.stateAt(service, since);
  }

  #start(
    params: SubscribeParams,
    call: CallContext,
    frame: Frame,
    opening: Opening,
  ): SubscribeResult | Promise<SubscribeResult> {
    const { hold, past } = opening;
    const ctx = this.#context;
    const { service, since, epoch } = params;
    const filter = setFilter(params);
    const limit = ctx.limits.maxQueueBytes;
    if (this.#socket.bufferedAmount + this.#reserved > limit) {
      // Initial events beyond the limit are allowed for one subscription
      // at a time: the client must read them first.
      if (frame.reserved > 0) {
        // Reserved by another subscribe of the same batch, whose response
        // waits for this one: waiting here would never end.
        throw new RpcError(
          ErrorCode.LimitExceeded,
          `limit reached: the initial events of other subscriptions in this batch already exceed maxQueueBytes (${limit}) of this session; subscribe in a separate message, after them`,
        );
      }
      return this.#drained(frame).then(() =>
        this.#start(params, call, frame, opening)
      );
    }
    const view = hold.view;
    const revision = view.revision;
    const replay = since === undefined
      ? undefined
      : view.replay(service, filter, since, epoch) ??
        (past && view.replayFrom(past, service, filter));
    const admits = ctx.access
      ? (service: string) => this.readable(service)
      : undefined;
    const id = String(this.#nextSubscription++);
    const subscription = new Subscription(id, service, filter, this, hold);
    if (admits) subscription.admits = admits;
    const initial = subscription.initialFrames(params.batch, params.chunks);
    if (replay) {
      for (const event of replay) {
        if (!event.instance || !admits || admits(event.instance.service)) {
          initial.add(JSON.stringify(event));
        }
      }
    } else {
      initial.addSnapshot(view.capture(service, filter, admits));
    }
    if (service !== ALL_SERVICES) {
      initial.add(view.leaderEvent(service, filter));
    }
    initial.add(`{"kind":"current","revision":${revision}}`);
    if (!view.connected) {
      // Fail-static: the last known state, marked as possibly out of date.
      initial.add(`{"kind":"stale","revision":${revision}}`);
    }
    view.subscribe(subscription);
    if (call.notification) {
      // Nobody learns the id: the subscription would leak.
      subscription.end();
    } else {
      initial.count();
      opening.opened();
      this.#subscriptions.set(id, subscription);
      const bytes = initial.bytes;
      this.#reserved += bytes;
      frame.reserved += bytes;
      call.afterResponse(() => {
        frame.reserved -= bytes;
        subscription.start(initial);
      });
    }
    return {
      subscription: id,
      revision,
      epoch: view.epoch,
      mode: replay ? "replay" : "snapshot",
    };
  }
}
