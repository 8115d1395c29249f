// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * A live set of the instances of one service (or of every service), kept
 * current by a subscription.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { sameState } from "../protocol/instance_equal.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { leaderOf, precedes } from "../protocol/leader.ts";
import { deferred } from "./_deferred.ts";
import { checkOptions } from "./_options.ts";
import {
  ALL_SERVICES,
  type Instance,
  type ServiceEvent,
} from "../protocol/types.ts";

/** A change of a {@linkcode ServiceSet}. */
export interface ServiceUpdate {
  /** `up`: joined the set; `update`: attributes changed; `down`: left the set. */
  kind: "up" | "update" | "down";
  /** The instance (for `down`, as it was last seen). */
  instance: Instance;
  /** Revision of the change. */
  revision: number;
}

/**
 * The DOM event a {@linkcode ServiceSet} dispatches for each update, with
 * type `"update"`.
 *
 * @example Usage
 * ```ts ignore
 * set.addEventListener("update", (e) => console.log(e.kind, e.instance.addr));
 * ```
 */
export class ServiceUpdateEvent extends Event implements ServiceUpdate {
  /** What happened. */
  readonly kind: ServiceUpdate["kind"];
  /** The instance. */
  readonly instance: Instance;
  /** Revision of the change. */
  readonly revision: number;

  /**
   * Creates the event.
   *
   * @param update The update it carries.
   */
  constructor(update: ServiceUpdate) {
    super("update");
    this.kind = update.kind;
    this.instance = update.instance;
    this.revision = update.revision;
  }
}

/**
 * The `"leader"` event of a {@linkcode ServiceSet}: the set's leader is
 * another instance now, or none.
 */
export class LeaderEvent extends Event {
  /** The new leader; `undefined` when the set is empty. */
  readonly instance: Instance | undefined;
  /** Revision of the change. */
  readonly revision: number;

  /**
   * Creates the event.
   *
   * @param instance The new leader, if any.
   * @param revision Revision of the change.
   */
  constructor(instance: Instance | undefined, revision: number) {
    super("leader");
    this.instance = instance;
    this.revision = revision;
  }
}

/** Options of {@linkcode ServiceSet.updates}. */
export interface UpdatesOptions {
  /** Ends the iteration when aborted. */
  signal?: AbortSignal;
}

/** Event map of {@linkcode ServiceSet}, for typed listeners. */
export interface ServiceSetEventMap {
  /** One update. */
  update: ServiceUpdateEvent;
  /**
   * The leader changed: another instance leads, or none (see
   * {@linkcode ServiceSet.leader}). Not fired for the initial state, nor
   * in a set of every service.
   */
  leader: LeaderEvent;
  /**
   * The set is out of sync: the connection to the agent was lost, or the
   * agent cannot reach its backend. The set keeps serving its last known
   * state, which may be out of date, until `sync`.
   */
  disconnect: Event;
  /** The set holds the agent's current state (initially, and after each resumption). */
  sync: Event;
  /** The set stopped receiving updates (closed, or its connection ended). */
  close: Event;
}

/** How a set unsubscribes; provided by the client. */
export type Unsubscribe = () => Promise<void>;

/**
 * How the client feeds a set: package-private (not exported by `mod.ts`),
 * so a program cannot apply events of its own or end a set behind the
 * client's back.
 */
export interface SetControl {
  /** Settles once the set holds its initial state; rejects if it ends before. */
  readonly initialized: Promise<void>;
  /**
   * A subscription starts in snapshot mode: the events up to `current` are
   * the complete state, compared with what the set holds.
   */
  beginSnapshot(): void;
  /** Applies one event of the subscription. */
  apply(event: ServiceEvent): void;
  /** The connection was lost; the client resumes the set after reconnecting. */
  disconnected(): void;
  /** The set ended without telling the agent (the client closed). */
  ended(): void;
}

let open: (
  service: string,
  filter: Record<string, string> | undefined,
  unsubscribe: Unsubscribe,
) => { set: ServiceSet; control: SetControl };

/**
 * Creates an empty set and the control the client feeds it through.
 *
 * @example Usage
 * ```ts
 * import { openSet } from "./service_set.ts";
 * const { set, control } = openSet("cache", undefined, () => Promise.resolve());
 * control.beginSnapshot();
 * control.apply({ kind: "current", revision: 1 });
 * await control.initialized;
 * console.log(set.connected); // true
 * ```
 *
 * @param service The service, or `"*"`.
 * @param filter The attribute filter.
 * @param unsubscribe Ends the subscription at the agent.
 * @returns The set and its control.
 */
export function openSet(
  service: string,
  filter: Record<string, string> | undefined,
  unsubscribe: Unsubscribe,
): { set: ServiceSet; control: SetControl } {
  return open(service, filter, unsubscribe);
}

const UPDATES_OPTIONS = {
  where: "updates()",
  known: ["signal"],
} as const;

/** Most instances remembered by {@linkcode ServiceSet.offline}. */
export const MAX_OFFLINE = 10_000;

interface Waiter {
  queue: ServiceUpdate[];
  /** Pending `next()` calls, oldest first. */
  readers: (() => void)[];
  done: boolean;
}

function wakeAll(waiter: Waiter) {
  for (const read of waiter.readers.splice(0)) read();
}

/**
 * A live set of the instances of one service that match a filter (the
 * agent applies the filter). Get one from `Client.services()`; it holds
 * the complete current state when that promise resolves.
 *
 * Updates are available three ways: {@linkcode ServiceSet.updates} (an
 * async iterator), `for await` over the set itself, and `"update"` events.
 *
 * @example Usage
 * ```ts ignore
 * const set = await client.services("cache");
 * for (const instance of set.online()) console.log(instance.addr);
 * for await (const update of set) console.log(update.kind, update.instance.addr);
 * ```
 */
export class ServiceSet extends EventTarget
  implements AsyncIterable<ServiceUpdate>, AsyncDisposable {
  /** The service. */
  readonly service: string;
  /** The attribute filter the agent applies. */
  readonly filter: Readonly<Record<string, string>> | undefined;
  /** The instances in the set, by id (see {@linkcode ServiceSet.#online}). */
  #members = new Map<string, Instance>();
  /**
   * The set's first state, as the agent sent it (a snapshot holds each
   * instance once), until something needs the instances by id:
   * {@linkcode ServiceSet.online} reads it as it is, so that the set is
   * ready without indexing first.
   */
  #first?: Instance[];
  /** The leader, kept up to date with every change (not in a `"*"` set). */
  #leader?: Instance;
  #offline = new Map<string, Instance>();
  /** The instances of a snapshot under way, in the order they came. */
  #staging?: Instance[];
  #revision = 0;
  #waiters = new Set<Waiter>();
  #unsubscribe: Unsubscribe;
  #closed = false;
  #ready = false;
  #connected = false;
  #lastSync?: Date;
  #initial = deferred<void>();

  /** Sets are opened by `Client.services()`. */
  private constructor(
    service: string,
    filter: Record<string, string> | undefined,
    unsubscribe: Unsubscribe,
  ) {
    super();
    this.service = service;
    this.filter = filter ? Object.freeze({ ...filter }) : undefined;
    this.#unsubscribe = unsubscribe;
  }

  static {
    open = (service, filter, unsubscribe) => {
      const set = new ServiceSet(service, filter, unsubscribe);
      const control: SetControl = {
        initialized: set.#initial.promise,
        beginSnapshot: () => {
          set.#staging = [];
        },
        apply: (event) => set.#apply(event),
        disconnected: () => {
          set.#staging = undefined;
          set.#unsynced();
        },
        ended: () => set.#end(),
      };
      return { set, control };
    };
  }

  /**
   * Whether the set is in sync: connected to an agent that reaches its
   * backend. While `false` (the connection is lost and the client is
   * reconnecting, or the agent said its backend is unreachable) the set
   * keeps serving its last known state; a `disconnect` event marks the
   * change, a `sync` event the way back.
   */
  get connected(): boolean {
    return this.#connected;
  }

  /** When the set last received the agent's complete current state. */
  get lastSync(): Date | undefined {
    return this.#lastSync;
  }

  /** Revision of the latest event applied. */
  get revision(): number {
    return this.#revision;
  }

  /** Whether the set has been closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The instances currently in the set.
   *
   * @returns A fresh array, in the order the instances joined.
   */
  online(): Instance[] {
    return this.#first ? [...this.#first] : [...this.#online.values()];
  }

  /**
   * The set's leader: its instance with the lowest `created` revision, ties
   * broken by the lower `addr`, which every client and agent derives alike
   * from the same instances. Its `created` is its fencing token: a later
   * leader of the same set always has a greater one. `undefined` when the
   * set is empty, and in a set of every service (`"*"`).
   *
   * @example Usage
   * ```ts ignore
   * const dbs = await client.services("db", { filter: { shard: "3" } });
   * const leader = dbs.leader();
   * dbs.addEventListener("leader", (e) => console.log("now", e.instance?.addr));
   * ```
   *
   * @returns The leader, if any.
   */
  leader(): Instance | undefined {
    return this.#leader;
  }

  /**
   * The instances seen leaving the set since it was opened and not back
   * since (the latest {@linkcode MAX_OFFLINE}).
   *
   * @returns A fresh array, oldest departure first.
   */
  offline(): Instance[] {
    return [...this.#offline.values()];
  }

  /**
   * The instance at `addr`, if it is in the set. In a set of every service
   * (`"*"`), give the instance's id, `<service>/<addr>`, instead.
   *
   * @param addr The `host:port` address (the instance id in a `"*"` set).
   * @returns The instance, if any.
   */
  get(addr: string): Instance | undefined {
    return this.#online.get(
      this.service === ALL_SERVICES ? addr : instanceKey(this.service, addr),
    );
  }

  /**
   * Iterates over the updates from now on, until the set closes or the
   * signal aborts. Each call gets its own iterator and its own queue.
   *
   * @param options A signal to stop iterating.
   * @returns The iterator.
   * @throws {TypeError} When `options` has a key other than `signal`.
   */
  updates(options?: UpdatesOptions): AsyncIterableIterator<ServiceUpdate> {
    const { signal } = checkOptions(options, UPDATES_OPTIONS);
    const waiter: Waiter = { queue: [], readers: [], done: this.#closed };
    this.#waiters.add(waiter);
    const finish = () => {
      waiter.done = true;
      this.#waiters.delete(waiter);
      wakeAll(waiter);
    };
    signal?.addEventListener("abort", finish, { once: true });
    if (signal?.aborted) finish();
    const iterator: AsyncIterableIterator<ServiceUpdate> = {
      next: async () => {
        while (waiter.queue.length === 0 && !waiter.done) {
          await new Promise<void>((resolve) => waiter.readers.push(resolve));
        }
        const value = waiter.queue.shift();
        if (value) return { value, done: false };
        signal?.removeEventListener("abort", finish);
        return { value: undefined, done: true };
      },
      return: () => {
        finish();
        signal?.removeEventListener("abort", finish);
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Same as {@linkcode ServiceSet.updates} without options.
   *
   * @returns The iterator.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<ServiceUpdate> {
    return this.updates();
  }

  /**
   * Stops the subscription; iterators end and a `"close"` event is dispatched.
   *
   * @returns A promise that settles once the agent has been told.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#end();
    await this.#unsubscribe().catch(() => {});
  }

  /** Same as {@linkcode ServiceSet.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #apply(event: ServiceEvent) {
    if (this.#closed) return;
    // A snapshot's revision counts only once it is complete (`current`):
    // a set cut off half-way through must not resume after it.
    if (!this.#staging && event.revision > this.#revision) {
      this.#revision = event.revision;
    }
    const instance = event.instance;
    if (event.kind === "current") {
      if (this.#staging) {
        // A complete snapshot is the whole state at its revision, which is
        // lower than the set's after a change of epoch (a restarted agent):
        // the set resumes from there, never from the old epoch's revision.
        this.#resync(this.#staging, event.revision);
        this.#revision = event.revision;
      } else {
        this.#revision = Math.max(this.#revision, event.revision);
      }
      this.#staging = undefined;
      this.#ready = true;
      this.#connected = true;
      this.#lastSync = new Date();
      this.#initial.resolve();
      this.dispatchEvent(new Event("sync"));
      return;
    }
    if (event.kind === "stale") {
      this.#unsynced();
      return;
    }
    if (event.kind === "snapshot") {
      // Instances of a snapshot, each as an `up` event.
      for (const instance of event.instances ?? []) {
        if (this.#staging) this.#staging.push(instance);
        else this.#add(instance, event.revision);
      }
      return;
    }
    // The set's own instances say who leads: the agent's `leader` events
    // are for clients that keep no set.
    if (!instance || event.kind === "leader") return;
    if (this.#staging) {
      this.#staging.push(instance);
      return;
    }
    if (event.kind === "down") {
      this.#remove(instance, event.revision);
    } else {
      this.#add(instance, event.revision);
    }
  }

  #unsynced() {
    if (this.#closed || !this.#connected) return;
    this.#connected = false;
    this.dispatchEvent(new Event("disconnect"));
  }

  #end() {
    if (this.#closed) return;
    this.#closed = true;
    this.#connected = false;
    this.#initial.promise.catch(() => {});
    this.#initial.reject(
      new RpcError(
        ErrorCode.ConnectionClosed,
        `the set of '${this.service}' ended before its initial state arrived`,
      ),
    );
    for (const waiter of this.#waiters) {
      waiter.done = true;
      wakeAll(waiter);
    }
    this.#waiters.clear();
    this.dispatchEvent(new Event("close"));
  }

  /** The instances in the set, by id, with the first state put in them if it is not yet. */
  get #online(): Map<string, Instance> {
    const first = this.#first;
    if (first !== undefined) {
      this.#first = undefined;
      for (const instance of first) this.#members.set(instance.id, instance);
    }
    return this.#members;
  }

  #resync(staged: Instance[], revision: number) {
    if (!this.#ready && this.#online.size === 0 && this.#offline.size === 0) {
      // The first state: nothing to compare it with, nobody to tell. It is
      // indexed by id once something needs that.
      if (staged.length > 0) this.#first = staged;
      this.#lead(leaderOf(staged), revision);
      return;
    }
    const state = new Map<string, Instance>();
    for (const instance of staged) state.set(instance.id, instance);
    for (const instance of [...this.#online.values()]) {
      if (!state.has(instance.id)) this.#remove(instance, revision);
    }
    for (const instance of state.values()) this.#add(instance, revision);
    this.#lead(leaderOf(this.#online.values()), revision);
  }

  /** Follows the leader after `instance` joined, changed or (`gone`) left. */
  #follow(instance: Instance, revision: number, gone: boolean) {
    if (this.service === ALL_SERVICES || this.#staging) return;
    const leader = this.#leader;
    if (leader !== undefined && leader.id === instance.id) {
      // The leader in the same life still leads; gone, or in a new life (a
      // replay after a reconnection folds its removal and return into one
      // update), it may not.
      this.#lead(
        gone || instance.created !== leader.created
          ? leaderOf(this.#online.values())
          : instance,
        revision,
      );
    } else if (!gone && (leader === undefined || precedes(instance, leader))) {
      this.#lead(instance, revision);
    }
  }

  /** Makes `next` the leader, telling listeners when it is another instance. */
  #lead(next: Instance | undefined, revision: number) {
    if (this.service === ALL_SERVICES) return;
    const before = this.#leader;
    this.#leader = next;
    const same = before === next ||
      (before !== undefined && next !== undefined && before.id === next.id &&
        before.created === next.created);
    if (!same && this.#ready) {
      this.dispatchEvent(new LeaderEvent(next, revision));
    }
  }

  #add(instance: Instance, revision: number) {
    const before = this.#online.get(instance.id);
    if (before && before.revision === instance.revision) return;
    this.#online.set(instance.id, instance);
    this.#offline.delete(instance.id);
    // Same attributes and health under a new revision (re-registered at a
    // restarted agent, say) is no change to report.
    if (!before || !sameState(before, instance)) {
      this.#emit({ kind: before ? "update" : "up", instance, revision });
    }
    this.#follow(instance, revision, false);
  }

  #remove(instance: Instance, revision: number) {
    const before = this.#online.get(instance.id);
    if (!before) return;
    this.#online.delete(instance.id);
    this.#offline.delete(instance.id);
    this.#offline.set(instance.id, instance);
    if (this.#offline.size > MAX_OFFLINE) {
      this.#offline.delete(this.#offline.keys().next().value!);
    }
    this.#emit({ kind: "down", instance, revision });
    this.#follow(before, revision, true);
  }

  #emit(update: ServiceUpdate) {
    if (!this.#ready) return; // the initial state is not an update
    for (const waiter of this.#waiters) {
      waiter.queue.push(update);
      // One update is for one reader: the others wait for the next.
      waiter.readers.shift()?.();
    }
    this.dispatchEvent(new ServiceUpdateEvent(update));
  }
}

/** Typed listener overloads for {@linkcode ServiceSet}. */
export interface ServiceSet {
  /**
   * Adds a typed listener.
   *
   * @param type `"update"`, `"disconnect"`, `"sync"` or `"close"`.
   * @param listener The listener.
   * @param options Listener options.
   */
  addEventListener<K extends keyof ServiceSetEventMap>(
    type: K,
    listener: (this: ServiceSet, event: ServiceSetEventMap[K]) => void,
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
