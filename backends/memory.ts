// Copyright the discover authors. BSD-3-Clause license.

/**
 * The in-memory backend: the embedded default for a single host. State
 * lives in the agent process; an agent restart starts from empty at
 * revision 0 (clients re-register when they reconnect).
 *
 * @module
 */

import {
  type Backend,
  type BackendCatalog,
  type BackendChange,
  type BackendStatus,
  type BackendWatch,
  type BackendWatcher,
  OwnerConflictError,
  type StoredRecord,
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
   * @param scope A service name, or `"*"`.
   * @param watcher Where to deliver state and changes.
   * @returns The watch.
   */
  watch(scope: string, watcher: BackendWatcher): BackendWatch {
    let set = this.#watchers.get(scope);
    if (!set) this.#watchers.set(scope, set = new Set());
    set.add(watcher);
    const records = [...this.#records.values()].filter((record) =>
      scope === ALL_SERVICES || record.service === scope
    );
    watcher.reset({ revision: this.#revision, epoch: this.#epoch, records });
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
    const stored = { ...record, attrs: { ...record.attrs } };
    this.#records.set(key, stored);
    return Promise.resolve(
      this.#emit({ type: "put", revision: ++this.#revision, record: stored }),
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
    this.#records.delete(key);
    return Promise.resolve(
      this.#emit({ type: "delete", revision: ++this.#revision, service, addr }),
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

  #emit(change: BackendChange): number {
    const service = change.type === "put"
      ? change.record.service
      : change.service;
    for (const scope of [service, ALL_SERVICES]) {
      for (const watcher of this.#watchers.get(scope) ?? []) {
        watcher.changes([change]);
      }
    }
    return change.revision;
  }
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
