// Copyright the discover authors. BSD-3-Clause license.

/**
 * The in-memory backend: the embedded default for a single host. State
 * lives in the agent process; an agent restart starts from empty at
 * revision 0 (clients re-register when they reconnect).
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
import type { BackendDescriptor } from "./descriptor.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { ALL_SERVICES } from "../protocol/types.ts";

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
  #revision = 0;
  #epoch = crypto.randomUUID();
  /** Open watches, by scope. */
  #watchers = new Map<string, Set<BackendWatcher>>();
  #open = false;
  /** The latest changes, oldest first, each with the record it replaced. */
  #log: { change: BackendChange; before?: StoredRecord; bytes: number }[] = [];
  #logHead = 0;
  /** Estimated bytes of the changes kept. */
  #logBytes = 0;
  readonly #historySize: number;
  readonly #historyBytes: number;

  /**
   * Creates an empty backend.
   *
   * @param options How many changes it keeps.
   */
  constructor(options: MemoryBackendOptions = {}) {
    this.#historySize = options.historySize ?? 10_000;
    this.#historyBytes = options.historyBytes ?? 16 * 1024 * 1024;
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
  stateAt(scope: string, revision: number): Promise<BackendState | undefined> {
    return Promise.resolve(this.#stateAt(scope, revision));
  }

  #stateAt(scope: string, revision: number): BackendState | undefined {
    const oldest = this.#log[this.#logHead]?.change.revision ??
      this.#revision + 1;
    if (revision < 0 || revision > this.#revision || revision < oldest - 1) {
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
   * Says the store is reachable (it always is).
   *
   * @param events Where to say it.
   */
  open(events: BackendStatus): Promise<void> {
    this.#open = true;
    events.epoch?.(this.#epoch, this.#revision);
    events.status(true);
    // Watches opened before: reachable now.
    for (const set of this.#watchers.values()) {
      for (const watcher of set) watcher.status(true);
    }
    return Promise.resolve();
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
    const { since, epoch } = options;
    const past = since !== undefined &&
        (epoch === undefined || epoch === this.#epoch)
      ? this.#stateAt(scope, since)
      : undefined;
    if (past) {
      watcher.reset(past);
      const after = this.#log.slice(this.#logHead)
        .filter(({ change }) =>
          change.revision > past.revision && inScope(scope, serviceOf(change))
        )
        .map(({ change }) => change);
      if (after.length > 0) watcher.changes(after);
    } else {
      const records = [...this.#records.values()].filter((record) =>
        inScope(scope, record.service)
      );
      watcher.reset({ revision: this.#revision, epoch: this.#epoch, records });
    }
    if (this.#open) watcher.status(true);
    return {
      close: () => {
        set.delete(watcher);
        if (set.size === 0 && this.#watchers.get(scope) === set) {
          this.#watchers.delete(scope);
        }
        return Promise.resolve();
      },
    };
  }

  /**
   * Counts the instances of every service.
   *
   * @returns The services with instances, sorted by name.
   */
  catalog(): Promise<BackendCatalog> {
    const counts = new Map<string, number>();
    for (const { service } of this.#records.values()) {
      counts.set(service, (counts.get(service) ?? 0) + 1);
    }
    const services = [...counts]
      .map(([service, instances]) => ({ service, instances }))
      .sort((a, b) =>
        a.service < b.service ? -1 : a.service > b.service ? 1 : 0
      );
    return Promise.resolve({ revision: this.#revision, services });
  }

  /**
   * Creates or replaces a record.
   *
   * @param record The record.
   * @param options The owner condition.
   * @returns The revision of the write.
   */
  put(record: StoredRecord, options: WriteOptions = {}): Promise<number> {
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    const key = instanceKey(record.service, record.addr);
    const conflict = this.#check(key, record.service, record.addr, options);
    if (conflict) return Promise.reject(conflict);
    const before = this.#records.get(key);
    const revision = ++this.#revision;
    const stored = {
      ...record,
      attrs: { ...record.attrs },
      // The key's life: a put keeps it, a delete and a put start another.
      created: before?.created ?? revision,
    };
    this.#records.set(key, stored);
    return Promise.resolve(
      this.#emit({ type: "put", revision, record: stored }, before),
    );
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
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    const key = instanceKey(service, addr);
    if (!this.#records.has(key)) return Promise.resolve(undefined);
    const conflict = this.#check(key, service, addr, options);
    if (conflict) return Promise.reject(conflict);
    const before = this.#records.get(key);
    this.#records.delete(key);
    return Promise.resolve(
      this.#emit(
        { type: "delete", revision: ++this.#revision, service, addr },
        before,
      ),
    );
  }

  /** Stops delivering changes; the records stay for a later `open`. */
  close(): Promise<void> {
    this.#watchers.clear();
    this.#open = false;
    return Promise.resolve();
  }

  #check(
    key: string,
    service: string,
    addr: string,
    options: WriteOptions,
  ): OwnerConflictError | undefined {
    if (options.ifOwner === undefined) return undefined;
    const owner = this.#records.get(key)?.owner ?? null;
    return owner === options.ifOwner
      ? undefined
      : new OwnerConflictError(service, addr, {
        owner,
        revision: this.#revision,
      });
  }

  #emit(change: BackendChange, before?: StoredRecord): number {
    // Each record is counted once, with the put that made it (a later
    // change's `before` is the same object).
    const bytes = LOG_ENTRY_BYTES +
      (change.type === "put" ? recordBytes(change.record) : 0);
    this.#log.push({ change, before, bytes });
    this.#logBytes += bytes;
    while (
      this.#log.length - this.#logHead > this.#historySize ||
      this.#logBytes > this.#historyBytes
    ) {
      this.#logBytes -= this.#log[this.#logHead].bytes;
      this.#log[this.#logHead++] = undefined as never;
    }
    if (this.#logHead > 1024 && this.#logHead * 2 > this.#log.length) {
      this.#log = this.#log.slice(this.#logHead);
      this.#logHead = 0;
    }
    const service = serviceOf(change);
    for (const scope of [service, ALL_SERVICES]) {
      for (const watcher of this.#watchers.get(scope) ?? []) {
        watcher.changes([change]);
      }
    }
    return change.revision;
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
}

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
 * The memory backend as the agent's command line knows it
 * (`--backend memory`, the default): no flags.
 *
 * @example Usage
 * ```ts
 * import { memoryDescriptor } from "./memory.ts";
 * console.log(memoryDescriptor.name); // "memory"
 * ```
 */
export const memoryDescriptor: BackendDescriptor = {
  name: "memory",
  summary:
    "registrations kept in this agent's memory: one host; they are gone when the agent stops",
  flags: [],
  create: () => Promise.resolve(new MemoryBackend()),
};
