// Copyright the discover authors. BSD-3-Clause license.

/**
 * The in-memory backend: the embedded default for a single host. State
 * lives in the agent process. Without a data directory, an agent restart
 * starts from empty at revision 0 under a new epoch (clients re-register
 * when they reconnect, and their subscribers see them go and come back).
 *
 * With {@linkcode MemoryBackendOptions.dataDir} (`--data-dir DIR`), every
 * change is also appended to a log in that directory before it is applied
 * (see `_durable_log.ts` for the format and what it guarantees), and an
 * agent restarted on the same directory gets back its records, its
 * revisions, its epoch and its recent changes. The records it finds are
 * its predecessor's: like an etcd lease, they stay for
 * {@linkcode MemoryBackendOptions.restartGrace} (the agent's grace TTL)
 * and are removed then unless written again meanwhile. A client that
 * reconnects in time registers them again with the same state, which
 * subscribers do not see: a restart causes no `down` and no `up`.
 *
 * It keeps its latest changes (at most {@linkcode MemoryBackendOptions.historySize},
 * each referring to the record it replaced) so that it can say what a
 * service held at a recent revision ({@linkcode MemoryBackend.stateAt}),
 * and start a watch there: a client resuming at an agent that stopped
 * watching its service meanwhile gets a replay, not a snapshot.
 *
 * @module
 */

import {
  type Backend,
  type BackendCatalog,
  type BackendChange,
  type BackendState,
  type BackendStatus,
  type BackendWatch,
  type BackendWatcher,
  OwnerConflictError,
  type StoredRecord,
  type WatchOptions,
  type WriteOptions,
} from "./backend.ts";
import type { BackendDescriptor, BackendLogger } from "./descriptor.ts";
import { DurableLog, type LogSnapshot } from "./_durable_log.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { ALL_SERVICES, type Attrs } from "../protocol/types.ts";

/**
 * A {@linkcode Backend} that keeps records in a map. Changes reach the
 * watcher synchronously, before `put` and `delete` resolve.
 *
 * @example Usage
 * ```ts
 * import { MemoryBackend } from "./memory.ts";
 * const backend = new MemoryBackend();
 * await backend.open({ status() {} });
 * const revision = await backend.put({
 *   service: "cache",
 *   addr: "127.0.0.1:6379",
 *   attrs: {},
 *   owner: "me",
 *   registeredAt: Date.now(),
 * });
 * console.log(revision); // 1
 * await backend.close();
 * ```
 */
export class MemoryBackend implements Backend {
  /** Always `"memory"`. */
  readonly name = "memory";
  #records = new Map<string, StoredRecord>();
  /** Revision of `#records`. */
  #revision = 0;
  /**
   * The last revision on disk, which watchers and readers are at (with a
   * data directory, the changes after it are being written; without,
   * always `#revision`).
   */
  #durable = 0;
  /**
   * Changes applied but not written yet (added to the data file's next
   * flush), in order.
   */
  #queue: BackendChange[] = [];
  /** The calls that wait for the changes of `#queue`, in the same order. */
  #callers: PromiseWithResolvers<number>[] = [];
  /** Microtask hops the write of `#queue` has waited so far (-1: no write due). */
  #hops = -1;
  /** Length of `#queue` at the write's last hop. */
  #seen = 0;
  #epoch: string = crypto.randomUUID();
  /** Open watches, by scope. */
  #watchers = new Map<string, Set<BackendWatcher>>();
  #open = false;
  /**
   * The latest changes, oldest first, each with the record it replaced and
   * the marks it cleared (see {@linkcode MARK_INHERITED}): what undoes it.
   */
  #log: {
    change: BackendChange;
    before?: StoredRecord;
    marks: number;
    bytes: number;
  }[] = [];
  #logHead = 0;
  /** Estimated bytes of the changes kept. */
  #logBytes = 0;
  readonly #historySize: number;
  readonly #historyBytes: number;
  readonly #options: MemoryBackendOptions;
  /** The data file, while open (with a data directory). */
  #store?: DurableLog;
  /** Loading the data directory: until then, writes and reads wait. */
  #opening?: Promise<void>;
  /** Whether the state is known: always without a data directory; once loaded with one. */
  #loaded: boolean;
  /** Watches opened before the state was known: they start once it is. */
  #unstarted = new Set<MemoryWatch>();
  /** Records of the previous run not written again since (see `keeps`). */
  #inherited = new Set<string>();
  /** Records this agent stopped keeping alive (see `release`). */
  #released = new Set<string>();
  #graceTimer?: ReturnType<typeof setTimeout>;

  /**
   * Creates an empty backend; with a data directory, its state is read
   * from there on {@linkcode MemoryBackend.open}.
   *
   * @param options How many changes it keeps, and where it keeps them.
   */
  constructor(options: MemoryBackendOptions = {}) {
    this.#historySize = options.historySize ?? 10_000;
    this.#historyBytes = options.historyBytes ?? 16 * 1024 * 1024;
    this.#options = options;
    this.#loaded = options.dataDir === undefined;
  }

  /**
   * The records of a scope at a past revision, rebuilt from the changes
   * kept since.
   *
   * @param scope A service name, or `"*"`.
   * @param revision The past revision.
   * @returns The state then, or `undefined` when the changes kept do not
   *   reach back that far.
   */
  async stateAt(
    scope: string,
    revision: number,
  ): Promise<BackendState | undefined> {
    await this.#ready();
    return this.#stateAt(scope, revision);
  }

  #stateAt(scope: string, revision: number): BackendState | undefined {
    const oldest = this.#log[this.#logHead]?.change.revision ??
      this.#revision + 1;
    if (revision < 0 || revision > this.#durable || revision < oldest - 1) {
      return undefined;
    }
    const records = new Map<string, StoredRecord>();
    for (const [key, record] of this.#records) {
      if (inScope(scope, record.service)) records.set(key, record);
    }
    // Undo the changes after `revision`, newest first.
    for (let i = this.#log.length - 1; i >= this.#logHead; i--) {
      const { change, before } = this.#log[i];
      if (change.revision <= revision) break;
      const service = serviceOf(change);
      if (!inScope(scope, service)) continue;
      const key = instanceKey(service, addrOf(change));
      if (before) records.set(key, before);
      else records.delete(key);
    }
    return { revision, epoch: this.#epoch, records: [...records.values()] };
  }

  /**
   * Says the store is reachable (it always is). With a data directory, it
   * first reads the state kept there and starts writing there.
   *
   * @param events Where to say it.
   * @throws {Error} With a data directory that cannot be used (another
   *   agent holds it, it cannot be written, or its file is not a discover
   *   log): the message says what to do.
   */
  async open(events: BackendStatus): Promise<void> {
    if (!this.#loaded) await (this.#opening ??= this.#load());
    this.#open = true;
    events.epoch?.(this.#epoch, this.#durable);
    events.status(true);
    // Watches opened before: reachable now.
    for (const set of this.#watchers.values()) {
      for (const watcher of set) watcher.status(true);
    }
  }

  /**
   * Reads the data directory, then writes there from now on. When it
   * fails, the backend is as before: a later `open` tries again.
   */
  async #load(): Promise<void> {
    const options = this.#options;
    let store: DurableLog;
    try {
      store = await DurableLog.open(options.dataDir!, {
        log: options.log,
        compactBytes: options.compactBytes,
      });
    } catch (error) {
      this.#opening = undefined;
      throw error;
    }
    try {
      const loaded = store.loaded;
      this.#epoch = loaded.epoch;
      this.#records = new Map();
      this.#log = [];
      this.#logHead = 0;
      this.#logBytes = 0;
      for (const record of loaded.records) {
        this.#records.set(instanceKey(record.service, record.addr), record);
      }
      this.#revision = loaded.revision;
      for (const change of loaded.changes) {
        const key = instanceKey(serviceOf(change), addrOf(change));
        const before = this.#records.get(key);
        if (change.type === "put") this.#records.set(key, change.record);
        else this.#records.delete(key);
        this.#revision = change.revision;
        this.#remember(change, before, 0);
      }
      this.#durable = this.#revision;
      this.#inherited = new Set(this.#records.keys());
      this.#released.clear();
      await store.begin((upTo) => this.#snapshot(upTo), this.#revision);
    } catch (error) {
      await store.close(this.#revision).catch(() => {});
      throw error;
    } finally {
      this.#opening = undefined;
    }
    this.#store = store;
    this.#loaded = true;
    if (this.#inherited.size > 0) {
      this.#graceTimer = setTimeout(
        () => this.#expireInherited(),
        this.#options.restartGrace ?? 10_000,
      );
    }
    // Open from here on: a watch that waited for the state is told it is
    // connected with it, before anything awaiting that state runs (a
    // registration checks the store is reachable then).
    this.#open = true;
    const unstarted = [...this.#unstarted];
    this.#unstarted.clear();
    for (const { scope, watcher, options } of unstarted) {
      this.#start(scope, watcher, options);
    }
  }

  /** The base state and the changes kept up to `upTo` (written), for a fresh data file. */
  #snapshot(upTo: number): LogSnapshot {
    const kept = this.#log.slice(this.#logHead)
      .map(({ change }) => change)
      .filter((change) => change.revision <= upTo);
    const floor = (kept[0]?.revision ?? upTo + 1) - 1;
    const base = this.#stateAt(ALL_SERVICES, floor)!;
    return {
      epoch: this.#epoch,
      revision: floor,
      records: base.records,
      changes: kept,
    };
  }

  /**
   * Removes the records of the previous run that nobody wrote again
   * within the grace period: their owners did not come back.
   */
  #expireInherited(): void {
    this.#graceTimer = undefined;
    const removals: Promise<unknown>[] = [];
    for (const key of [...this.#inherited]) {
      const record = this.#records.get(key);
      this.#inherited.delete(key);
      if (!record) continue;
      removals.push(
        this.#remove(key, record.service, record.addr).catch((error) => {
          // The disk refused: every record of the failed write is tried
          // again later (one retry for them all).
          if (!this.#records.has(key) || !this.#store) return;
          this.#inherited.add(key);
          if (this.#graceTimer) return;
          this.#options.log?.warn(
            "could not remove an instance of the previous run; will retry",
            { key, error },
          );
          this.#graceTimer = setTimeout(() => this.#expireInherited(), 1000);
        }),
      );
    }
    if (removals.length > 0) {
      this.#options.log?.info(
        "instances of the previous run that were not registered again within the grace TTL are removed",
        { instances: removals.length },
      );
    }
  }

  /** Resolves once the state is known; rejects when it never will be (not open). */
  #ready(): Promise<void> {
    if (this.#loaded) return Promise.resolve();
    return this.#opening ?? Promise.reject(
      new Error(
        `the memory backend on --data-dir '${this.#options.dataDir}' is not open`,
      ),
    );
  }

  /**
   * Delivers the current state of `scope` to `watcher`, then its changes,
   * synchronously, until the watch is closed.
   *
   * With `options.since`, it starts from the scope's state at that
   * revision instead, when the changes kept reach back that far, and
   * delivers every change after it.
   *
   * @param scope A service name, or `"*"`.
   * @param watcher Where to deliver state and changes.
   * @param options Where to start from.
   * @returns The watch.
   */
  watch(
    scope: string,
    watcher: BackendWatcher,
    options: WatchOptions = {},
  ): BackendWatch {
    let set = this.#watchers.get(scope);
    if (!set) this.#watchers.set(scope, set = new Set());
    set.add(watcher);
    const watch = new MemoryWatch(this.#unwatch, set, {
      scope,
      watcher,
      options,
    });
    if (this.#loaded) this.#start(scope, watcher, options);
    else this.#unstarted.add(watch);
    return watch;
  }

  /** Ends a watch (its `close`): one function for all of them. */
  readonly #unwatch = (watch: MemoryWatch): void => {
    const { set, scope, watcher } = watch;
    set.delete(watcher);
    this.#unstarted.delete(watch);
    if (set.size === 0 && this.#watchers.get(scope) === set) {
      this.#watchers.delete(scope);
    }
  };

  /** Delivers a new watch's first state, and any changes since `options.since`. */
  #start(
    scope: string,
    watcher: BackendWatcher,
    options: WatchOptions,
  ): void {
    const { since, epoch } = options;
    const past = since !== undefined &&
        (epoch === undefined || epoch === this.#epoch)
      ? this.#stateAt(scope, since)
      : undefined;
    if (past) {
      watcher.reset(past);
      const after = this.#log.slice(this.#logHead)
        .filter(({ change }) =>
          change.revision > past.revision &&
          change.revision <= this.#durable &&
          inScope(scope, serviceOf(change))
        )
        .map(({ change }) => change);
      if (after.length > 0) watcher.changes(after);
    } else {
      // What is on disk: the changes being written follow once they are.
      watcher.reset(this.#current(scope));
    }
    if (this.#open) watcher.status(true);
  }

  /**
   * Counts the instances of every service.
   *
   * @returns The services with instances, sorted by name.
   */
  async catalog(): Promise<BackendCatalog> {
    await this.#ready();
    const counts = new Map<string, number>();
    for (const { service } of this.#current(ALL_SERVICES).records) {
      counts.set(service, (counts.get(service) ?? 0) + 1);
    }
    const services = [...counts]
      .map(([service, instances]) => ({ service, instances }))
      .sort((a, b) =>
        a.service < b.service ? -1 : a.service > b.service ? 1 : 0
      );
    return { revision: this.#durable, services };
  }

  /** The records of a scope at the last revision written. */
  #current(scope: string): BackendState {
    if (this.#durable < this.#revision) {
      return this.#stateAt(scope, this.#durable)!;
    }
    const records = [...this.#records.values()].filter((record) =>
      inScope(scope, record.service)
    );
    return { revision: this.#revision, epoch: this.#epoch, records };
  }

  /**
   * Creates or replaces a record.
   *
   * @param record The record.
   * @param options The owner condition.
   * @returns The revision of the write.
   */
  put(record: StoredRecord, options: WriteOptions = {}): Promise<number> {
    if (!this.#loaded) {
      return this.#ready().then(() => this.put(record, options));
    }
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    const key = instanceKey(record.service, record.addr);
    const conflict = this.#check(key, record.service, record.addr, options);
    if (conflict) {
      return this.#afterWrite(() => this.put(record, options)) ??
        Promise.reject(conflict);
    }
    const before = this.#records.get(key);
    const revision = this.#revision + 1;
    const stored = {
      ...record,
      attrs: exactCopy(record.attrs),
      // The key's life: a put keeps it, a delete and a put start another.
      created: before?.created ?? revision,
    };
    const change: BackendChange = { type: "put", revision, record: stored };
    try {
      this.#store?.add(change);
    } catch (error) {
      return Promise.reject(error);
    }
    this.#revision = revision;
    this.#records.set(key, stored);
    return this.#commit(change, before, this.#unmark(key));
  }

  /**
   * Removes a record.
   *
   * @param service The service.
   * @param addr The address.
   * @param options The owner condition.
   * @returns The revision of the removal, or `undefined` when there was no record.
   */
  delete(
    service: string,
    addr: string,
    options: WriteOptions = {},
  ): Promise<number | undefined> {
    if (!this.#loaded) {
      return this.#ready().then(() => this.delete(service, addr, options));
    }
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    const key = instanceKey(service, addr);
    this.#release(key, options.ifOwner);
    const again = () => this.delete(service, addr, options);
    if (!this.#records.has(key)) {
      return this.#afterWrite(again) ?? Promise.resolve(undefined);
    }
    const conflict = this.#check(key, service, addr, options);
    if (conflict) return this.#afterWrite(again) ?? Promise.reject(conflict);
    return this.#remove(key, service, addr);
  }

  /**
   * A call that changes nothing (no record to remove, an owner conflict)
   * while changes are being written may have answered from them, and a
   * failed write undoes them: it waits for their write and runs `again`.
   * `undefined` when nothing is being written: the answer stands.
   */
  #afterWrite<T>(again: () => Promise<T>): Promise<T> | undefined {
    if (this.#queue.length === 0) return undefined;
    return this.#callers[this.#callers.length - 1].promise.then(again, again);
  }

  /** Removes a record that is there. */
  #remove(key: string, service: string, addr: string): Promise<number> {
    const change: BackendChange = {
      type: "delete",
      revision: this.#revision + 1,
      service,
      addr,
    };
    try {
      this.#store?.add(change);
    } catch (error) {
      return Promise.reject(error);
    }
    const before = this.#records.get(key);
    this.#revision = change.revision;
    this.#records.delete(key);
    return this.#commit(change, before, this.#unmark(key));
  }

  /**
   * Clears the key's marks (a write of the key: this run keeps it), and
   * says which it had, for an undo.
   */
  #unmark(key: string): number {
    return (this.#inherited.delete(key) ? MARK_INHERITED : 0) |
      (this.#released.delete(key) ? MARK_RELEASED : 0);
  }

  /**
   * A change just applied in memory: kept in the history, and delivered
   * to the watchers at once, or once written with a data directory.
   * Resolves with its revision then.
   */
  #commit(
    change: BackendChange,
    before: StoredRecord | undefined,
    marks: number,
  ): Promise<number> {
    this.#remember(change, before, marks);
    if (!this.#store) {
      this.#durable = change.revision;
      this.#deliver(change);
      return Promise.resolve(change.revision);
    }
    this.#queue.push(change);
    const caller = Promise.withResolvers<number>();
    this.#callers.push(caller);
    if (this.#hops < 0) {
      this.#hops = 0;
      this.#seen = 0;
      queueMicrotask(this.#writeSoon);
    }
    return caller.promise;
  }

  /**
   * The write due: it waits a microtask hop while more changes join (the
   * calls of this turn reach the backend after a few `await`s each, and a
   * register takes more than an unregister), then writes them all at once.
   * No timer and no I/O in between: the write is still made in this turn.
   */
  readonly #writeSoon = (): void => {
    if (this.#hops < 0) return; // written meanwhile (close)
    const length = this.#queue.length;
    if (length !== this.#seen && this.#hops < MAX_WRITE_HOPS) {
      this.#seen = length;
      this.#hops++;
      queueMicrotask(this.#writeSoon);
      return;
    }
    this.#writeQueue();
  };

  /**
   * Writes the changes of this turn in one write, then delivers them and
   * resolves their calls. When the write fails, its changes are undone
   * and rejected: memory never runs ahead of the file.
   */
  #writeQueue(): void {
    if (this.#hops < 0) return;
    this.#hops = -1;
    const batch = this.#queue;
    const callers = this.#callers;
    this.#queue = [];
    this.#callers = [];
    try {
      this.#store!.flush();
    } catch (error) {
      this.#undo(batch.length);
      for (const caller of callers) caller.reject(error);
      return;
    }
    this.#durable = batch[batch.length - 1].revision;
    for (const change of batch) this.#deliver(change);
    for (let i = 0; i < batch.length; i++) {
      callers[i].resolve(batch[i].revision);
    }
  }

  /**
   * Undoes the last `count` changes, newest first (they were never
   * written): their records, the marks they cleared, the revision and the
   * history are as before them.
   */
  #undo(count: number): void {
    for (let i = 0; i < count; i++) {
      const entry = this.#log.pop()!;
      this.#logBytes -= entry.bytes;
      const { change, before, marks } = entry;
      const key = instanceKey(serviceOf(change), addrOf(change));
      if (before) this.#records.set(key, before);
      else this.#records.delete(key);
      if (marks & MARK_INHERITED) this.#inherited.add(key);
      if (marks & MARK_RELEASED) this.#released.add(key);
      this.#revision = change.revision - 1;
    }
  }

  /**
   * Whether this agent keeps the record alive: it is there, and this
   * process wrote it (a record of the previous run on the data directory
   * is not kept until written again) and has not released it since.
   *
   * @param service The service.
   * @param addr The address.
   * @returns Whether the record is kept alive by this agent.
   */
  keeps(service: string, addr: string): boolean {
    const key = instanceKey(service, addr);
    return this.#records.has(key) && !this.#inherited.has(key) &&
      !this.#released.has(key);
  }

  /**
   * Stops keeping the record alive (see {@linkcode MemoryBackend.keeps}).
   *
   * @param service The service.
   * @param addr The address.
   * @param options Only if the record's owner is `ifOwner`.
   */
  release(
    service: string,
    addr: string,
    options: { ifOwner?: string } = {},
  ): void {
    this.#release(instanceKey(service, addr), options.ifOwner);
  }

  #release(key: string, owner: string | null | undefined): void {
    const record = this.#records.get(key);
    if (record && (owner === undefined || record.owner === owner)) {
      this.#released.add(key);
    }
  }

  /**
   * Stops delivering changes. Without a data directory, the records stay
   * for a later `open`; with one, the writes so far are flushed to disk,
   * the file says the agent stopped cleanly, and a later `open` reads it
   * again. A close while the directory is being read waits for the read.
   */
  async close(): Promise<void> {
    // A read of the data directory under way ends first: it takes the
    // directory, which this close must then give back.
    await this.#opening?.catch(() => {});
    clearTimeout(this.#graceTimer);
    this.#graceTimer = undefined;
    // The changes of this turn are written first: their callers get answers.
    this.#writeQueue();
    this.#watchers.clear();
    this.#unstarted.clear();
    this.#open = false;
    const store = this.#store;
    if (!store) return;
    this.#store = undefined;
    this.#loaded = false;
    await store.close(this.#durable);
  }

  #check(
    key: string,
    service: string,
    addr: string,
    options: WriteOptions,
  ): OwnerConflictError | undefined {
    const owner = this.#records.get(key)?.owner ?? null;
    if (options.ifKept && this.#inherited.has(key)) {
      // Written by the previous run, not by this one.
      return new OwnerConflictError(service, addr, {
        owner,
        revision: this.#revision,
      });
    }
    if (options.ifOwner === undefined) return undefined;
    return owner === options.ifOwner
      ? undefined
      : new OwnerConflictError(service, addr, {
        owner,
        revision: this.#revision,
      });
  }

  /** Delivers a change to the watchers of its service and of `"*"`. */
  #deliver(change: BackendChange): void {
    const watchers = this.#watchers;
    if (watchers.size === 0) return;
    const service = watchers.get(serviceOf(change));
    if (service) { for (const watcher of service) watcher.changes([change]); }
    const all = watchers.get(ALL_SERVICES);
    if (all) { for (const watcher of all) watcher.changes([change]); }
  }

  /** Keeps a change for `stateAt` and resumes, within the bounds. */
  #remember(
    change: BackendChange,
    before: StoredRecord | undefined,
    marks: number,
  ): void {
    // Each record is counted once, with the put that made it (a later
    // change's `before` is the same object).
    const bytes = LOG_ENTRY_BYTES +
      (change.type === "put" ? recordBytes(change.record) : 0);
    this.#log.push({ change, before, marks, bytes });
    this.#logBytes += bytes;
    while (
      (this.#log.length - this.#logHead > this.#historySize ||
        this.#logBytes > this.#historyBytes) &&
      // Changes being written stay: a failed write undoes them.
      this.#log[this.#logHead].change.revision <= this.#durable
    ) {
      this.#logBytes -= this.#log[this.#logHead].bytes;
      this.#log[this.#logHead++] = undefined as never;
    }
    if (this.#logHead > 1024 && this.#logHead * 2 > this.#log.length) {
      this.#log = this.#log.slice(this.#logHead);
      this.#logHead = 0;
    }
  }
}

/** Options of {@linkcode MemoryBackend}. */
export interface MemoryBackendOptions {
  /**
   * Most changes kept for {@linkcode MemoryBackend.stateAt}.
   *
   * @default {10000}
   */
  historySize?: number;
  /**
   * Most bytes of changes kept, estimated: 64 bytes a change, plus the
   * lengths of the service, address and attributes of the record it
   * wrote (which the change keeps alive once replaced). 16 MiB.
   *
   * @default {16777216}
   */
  historyBytes?: number;
  /**
   * A directory where the records, their revisions and the epoch are kept
   * across restarts (`--data-dir`); created if needed, used by one agent at
   * a time. Without it, nothing is kept.
   */
  dataDir?: string;
  /**
   * With `dataDir`: milliseconds the records found there stay without
   * being written again (the agent's grace TTL), as if their owners'
   * connections had been lost when the agent stopped. 10 s.
   *
   * @default {10000}
   */
  restartGrace?: number;
  /**
   * With `dataDir`: rewrite the data file once it has grown by this many
   * bytes (and by twice its size after the last rewrite). 64 MiB. After a
   * rewrite that failed, the next is tried once the file has grown by
   * this many bytes again.
   *
   * @default {67108864}
   */
  compactBytes?: number;
  /** With `dataDir`: where to say what was found there, and what was dropped. */
  log?: BackendLogger;
}

/**
 * A watch of a {@linkcode MemoryBackend}: what its `close` needs, in one
 * object whose `close` all watches share (a closure per watch, with its
 * context and the object holding it, takes about 170 bytes more, for each
 * service an agent watches).
 */
class MemoryWatch implements BackendWatch {
  /** The scope watched. */
  readonly scope: string;
  /** Where its state and changes go. */
  readonly watcher: BackendWatcher;
  /** Where it started from. */
  readonly options: WatchOptions;

  constructor(
    readonly unwatch: (watch: MemoryWatch) => void,
    readonly set: Set<BackendWatcher>,
    what: { scope: string; watcher: BackendWatcher; options: WatchOptions },
  ) {
    this.scope = what.scope;
    this.watcher = what.watcher;
    this.options = what.options;
  }

  close(): Promise<void> {
    this.unwatch(this);
    return Promise.resolve();
  }
}

/**
 * A copy of `attrs` in an object of its exact size: what `JSON.parse`
 * makes holds its properties and no room for more (32 bytes for one
 * attribute), where a copy of an object that was built property by
 * property (as the agent checks attributes) keeps that object's room for
 * four (56 bytes), for every instance the backend holds. Attributes are
 * strings, which JSON keeps as they are.
 */
function exactCopy(attrs: Attrs): Attrs {
  return JSON.parse(JSON.stringify(attrs));
}

/**
 * Most microtask hops a write waits for more changes to join it: a bound
 * on how long changes that keep coming, hop after hop, from callers that
 * do not wait for one another can delay the answers to the first ones.
 */
const MAX_WRITE_HOPS = 16;

/** A kept change's key was a record of the previous run (`#inherited`) before it. */
const MARK_INHERITED = 1;
/** A kept change's key was released (`#released`) before it. */
const MARK_RELEASED = 2;

/** Fixed part of a kept change's estimate. */
const LOG_ENTRY_BYTES = 64;

function recordBytes(record: StoredRecord): number {
  let bytes = record.service.length + record.addr.length + record.owner.length +
    (record.note?.length ?? 0);
  for (const key in record.attrs) {
    bytes += key.length + record.attrs[key].length;
  }
  return bytes;
}

function inScope(scope: string, service: string): boolean {
  return scope === ALL_SERVICES || scope === service;
}

function serviceOf(change: BackendChange): string {
  return change.type === "put" ? change.record.service : change.service;
}

function addrOf(change: BackendChange): string {
  return change.type === "put" ? change.record.addr : change.addr;
}

/**
 * The data directory of the compiled agent (`deno task compile`, where
 * `Deno.build.standalone` is true) when `--data-dir` is not given: the
 * agent runs as a service there. Run from source (tests, `deno task
 * start`), there is none.
 *
 * @example Usage
 * ```ts
 * import { COMPILED_DATA_DIR } from "./memory.ts";
 * console.log(COMPILED_DATA_DIR); // "/var/lib/discoverd"
 * ```
 */
export const COMPILED_DATA_DIR = "/var/lib/discoverd";

/**
 * The memory backend as the agent's command line knows it
 * (`--backend memory`, the default): `--data-dir DIR` keeps its state
 * across restarts; an empty value keeps nothing. Without it, the compiled
 * agent uses {@linkcode COMPILED_DATA_DIR}, and the agent run from source
 * keeps nothing.
 *
 * @example Usage
 * ```ts
 * import { memoryDescriptor } from "./memory.ts";
 * console.log(memoryDescriptor.flags[0].name); // "data-dir"
 * ```
 */
export const memoryDescriptor: BackendDescriptor = {
  name: "memory",
  summary:
    "registrations kept in this agent's memory: one host; with --data-dir they survive a restart, else they are gone when the agent stops",
  flags: [{
    name: "data-dir",
    type: "string",
    value: "DIR",
    help:
      `keep the registrations, their revisions and the epoch in this directory (created if needed; one agent at a time), so that an agent restarted on it keeps them: its clients' instances stay for the grace TTL (--ttl) for them to reconnect, and subscribers see no down and no up; an empty value keeps nothing; needs --allow-write for it (default: ${COMPILED_DATA_DIR} for the compiled discoverd, none when run from source)`,
  }],
  notes: [
    "With --data-dir, every change is written to DIR/discover.log before it is acknowledged, so an agent killed at any moment restarts with every change it acknowledged; the file is flushed to disk at most 100 ms apart, and after a crash of the host the agent starts with what reached the disk, under a new epoch. A damaged file is detected by its checksums: the agent starts with the state before the damage, says what it dropped and keeps the damaged file aside.",
  ],
  create: (values, context) => {
    const given = values["data-dir"];
    const dataDir = typeof given === "string"
      ? given
      : Deno.build.standalone
      ? COMPILED_DATA_DIR
      : "";
    if (dataDir === "") return Promise.resolve(new MemoryBackend());
    return Promise.resolve(
      new MemoryBackend({
        dataDir,
        restartGrace: context.ttlMs,
        log: context.log,
      }),
    );
  },
};
