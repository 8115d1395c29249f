// Copyright the discover authors. BSD-3-Clause license.

/**
 * Ownership and liveness of registrations: who registered what, what
 * happens when a session ends cleanly or is lost, and the grace TTL.
 *
 * An *owner* is the identity that registrations belong to: the client id a
 * connection names (`?client=`), or the connection itself when it names
 * none. An owner is live while it has at least one open session. When its
 * last session closes cleanly its instances are removed at once; when the
 * last session is lost they stay for the grace TTL and are removed then,
 * unless a session of the same owner comes back first, or another owner
 * takes an instance over by registering it.
 *
 * @module
 */

import { type Backend, OwnerConflictError } from "../backends/backend.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { sameAttrs } from "../protocol/validate.ts";
import type { Attrs, Instance } from "../protocol/types.ts";
import type { Logger } from "./log.ts";
import type { View } from "./view.ts";

/** The registrations of one owner. */
export class Owner {
  /** Open sessions of this owner. */
  sessions = 0;
  /** Keys (`service/addr`) this owner registered and may still own. */
  readonly keys = new Set<string>();
  /** Timer that removes the instances of a lost owner. */
  expiry?: ReturnType<typeof setTimeout>;
  /** Register/unregister calls of this owner still waiting for the backend. */
  pending = 0;
  /** How the owner's last session ended: decides what happens once idle. */
  lastClose?: "clean" | "lost";
  /** Whether its instances are being removed. */
  removing = false;

  /**
   * Creates an owner.
   *
   * @param id The owner id stored with its records.
   */
  constructor(readonly id: string) {}

  /** Whether the owner has an open session. */
  get live(): boolean {
    return this.sessions > 0;
  }
}

/** Options of {@linkcode Registry}. */
export interface RegistryOptions {
  /** Grace period, in milliseconds, before a lost owner's instances are removed. */
  ttlMs: number;
  /** Most instances one owner may hold. */
  maxRegistrations: number;
  /** Logger. */
  log: Logger;
}

/** What to register. */
export interface Registration {
  /** Service name. */
  service: string;
  /** Canonical address. */
  addr: string;
  /** Attributes. */
  attrs: Attrs;
}

const ATTEMPTS = 3;
/** How long a write may take to come back through the backend's change stream. */
const WRITE_VISIBLE_MS = 10_000;

/**
 * Applies register and unregister requests to the backend on behalf of
 * owners, and removes the instances of owners that are gone.
 *
 * @example Usage
 * ```ts
 * import { MemoryBackend } from "../backends/memory.ts";
 * import { createLogger } from "./log.ts";
 * import { Registry } from "./registry.ts";
 * import { View } from "./view.ts";
 * const view = new View();
 * const backend = new MemoryBackend();
 * await backend.open(view);
 * const registry = new Registry(backend, view, {
 *   ttlMs: 10_000,
 *   maxRegistrations: 1000,
 *   log: createLogger("error"),
 * });
 * const owner = registry.attach("c:example");
 * await registry.register(owner, { service: "db", addr: "h:1", attrs: {} });
 * registry.detach(owner, true); // clean close: removed at once
 * ```
 */
export class Registry {
  #backend: Backend;
  #view: View;
  #options: RegistryOptions;
  #owners = new Map<string, Owner>();
  #closed = false;

  /**
   * Creates a registry.
   *
   * @param backend Where records are written.
   * @param view The view the backend feeds.
   * @param options TTL, limits and logger.
   */
  constructor(backend: Backend, view: View, options: RegistryOptions) {
    this.#backend = backend;
    this.#view = view;
    this.#options = options;
  }

  /** Number of owners known (live or within their grace period). */
  get owners(): number {
    return this.#owners.size;
  }

  /**
   * A session of `id` opened: returns its owner and cancels a pending expiry.
   *
   * @param id The owner id.
   * @returns The owner.
   */
  attach(id: string): Owner {
    let owner = this.#owners.get(id);
    if (!owner) this.#owners.set(id, owner = new Owner(id));
    owner.sessions++;
    owner.lastClose = undefined;
    if (owner.expiry !== undefined) {
      clearTimeout(owner.expiry);
      owner.expiry = undefined;
      this.#options.log.debug("owner is back within its grace period", { id });
    }
    return owner;
  }

  /**
   * A session of `owner` ended. When it was the last one, the owner's
   * instances are removed now (`clean`) or after the grace TTL (lost).
   *
   * @param owner The owner.
   * @param clean Whether the session closed cleanly.
   */
  detach(owner: Owner, clean: boolean): void {
    owner.sessions--;
    if (owner.live) return;
    owner.lastClose = clean ? "clean" : "lost";
    this.#settle(owner);
  }

  /**
   * Acts on an owner without sessions once none of its writes is in
   * flight (a write that lands after the last session ended must not leave
   * an orphan behind): remove now after a clean close, start the grace
   * timer after a loss.
   */
  #settle(owner: Owner) {
    if (owner.live || this.#closed || owner.pending > 0 || owner.removing) {
      return;
    }
    if (owner.lastClose === "clean") {
      void this.#removeAll(owner);
    } else if (owner.keys.size === 0) {
      this.#forgetIfEmpty(owner);
    } else if (owner.expiry === undefined) {
      this.#options.log.debug("owner lost; instances kept for the grace TTL", {
        id: owner.id,
        instances: owner.keys.size,
        ttlMs: this.#options.ttlMs,
      });
      owner.expiry = setTimeout(() => {
        owner.expiry = undefined;
        void this.#removeAll(owner);
      }, this.#options.ttlMs);
    }
  }

  /** Runs one write of `owner`, counted as in flight. */
  async #write<T>(owner: Owner, fn: () => Promise<T>): Promise<T> {
    owner.pending++;
    try {
      return await fn();
    } finally {
      owner.pending--;
      this.#settle(owner);
    }
  }

  /**
   * Registers or re-registers an instance for `owner`.
   *
   * @param owner The owner.
   * @param registration What to register.
   * @returns The instance as the view holds it afterwards.
   */
  register(owner: Owner, registration: Registration): Promise<Instance> {
    return this.#write(owner, () => this.#register(owner, registration));
  }

  async #register(
    owner: Owner,
    registration: Registration,
  ): Promise<Instance> {
    const { service, addr, attrs } = registration;
    const key = `${service}/${addr}`;
    for (let attempt = 1;; attempt++) {
      const entry = this.#view.get(service, addr);
      let previous: Owner | undefined;
      if (entry && entry.owner !== owner.id) {
        previous = this.#takeoverFrom(entry.owner, key);
      }
      if (
        entry?.owner === owner.id && sameAttrs(entry.instance.attrs, attrs) &&
        (this.#backend.keeps?.(service, addr) ?? true)
      ) {
        owner.keys.add(key);
        return entry.instance;
      }
      if (
        !owner.keys.has(key) &&
        owner.keys.size >= this.#options.maxRegistrations
      ) {
        throw new RpcError(
          ErrorCode.LimitExceeded,
          `limit reached: this client already holds ${owner.keys.size} registrations (maxRegistrations); unregister some first`,
        );
      }
      let revision: number;
      try {
        revision = await this.#backend.put({
          service,
          addr,
          attrs,
          owner: owner.id,
          registeredAt: entry?.instance.registeredAt ?? Date.now(),
        }, { ifOwner: entry?.owner ?? null });
      } catch (error) {
        if (error instanceof OwnerConflictError && attempt < ATTEMPTS) {
          await this.#view.waitFor(this.#view.revision);
          continue; // the view was behind the store: look again
        }
        throw this.#backendError(error, key);
      }
      await this.#applied(revision, key);
      owner.keys.add(key);
      previous?.keys.delete(key);
      if (previous) this.#forgetIfEmpty(previous);
      const now = this.#view.get(service, addr);
      if (now) return now.instance;
      throw new RpcError(
        ErrorCode.BackendUnavailable,
        `'${key}' was removed while it was being registered; register it again`,
      );
    }
  }

  /**
   * Removes an instance of `owner`.
   *
   * @param owner The owner.
   * @param service The service.
   * @param addr The address.
   * @returns Whether an instance was removed.
   */
  unregister(owner: Owner, service: string, addr: string): Promise<boolean> {
    return this.#write(owner, () => this.#unregister(owner, service, addr));
  }

  async #unregister(
    owner: Owner,
    service: string,
    addr: string,
  ): Promise<boolean> {
    const key = `${service}/${addr}`;
    for (let attempt = 1;; attempt++) {
      const entry = this.#view.get(service, addr);
      if (!entry) {
        owner.keys.delete(key);
        return false;
      }
      let previous: Owner | undefined;
      if (entry.owner !== owner.id) {
        previous = this.#takeoverFrom(entry.owner, key);
      }
      let revision: number | undefined;
      try {
        revision = await this.#backend.delete(service, addr, {
          ifOwner: entry.owner,
        });
      } catch (error) {
        if (error instanceof OwnerConflictError && attempt < ATTEMPTS) {
          await this.#view.waitFor(this.#view.revision);
          continue;
        }
        throw this.#backendError(error, key);
      }
      owner.keys.delete(key);
      previous?.keys.delete(key);
      if (previous) this.#forgetIfEmpty(previous);
      if (revision === undefined) return false;
      await this.#applied(revision, key);
      return true;
    }
  }

  /** Stops the expiry timers; records stay in the backend. */
  close(): void {
    this.#closed = true;
    for (const owner of this.#owners.values()) clearTimeout(owner.expiry);
  }

  /** Checks that an instance of `ownerId` may be taken over, and returns that owner. */
  #takeoverFrom(ownerId: string, key: string): Owner | undefined {
    const other = this.#owners.get(ownerId);
    if (other === undefined) {
      throw new RpcError(
        ErrorCode.NotOwner,
        `'${key}' is registered by another client (through this or another agent); choose another address, or wait until that client unregisters it or its registration expires`,
      );
    }
    if (other.live) {
      throw new RpcError(
        ErrorCode.NotOwner,
        `'${key}' is registered by another client that is still connected; choose another address or unregister it from that client`,
      );
    }
    return other;
  }

  /** Waits until the view has applied a write, within a deadline. */
  async #applied(revision: number, key: string): Promise<void> {
    try {
      await this.#view.waitFor(revision, WRITE_VISIBLE_MS);
    } catch {
      throw new RpcError(
        ErrorCode.BackendUnavailable,
        `the backend stored '${key}' at revision ${revision} but its change stream did not deliver it within ${WRITE_VISIBLE_MS} ms; retry`,
      );
    }
  }

  #forgetIfEmpty(owner: Owner) {
    if (owner.live || owner.keys.size > 0 || owner.pending > 0) return;
    clearTimeout(owner.expiry);
    this.#owners.delete(owner.id);
  }

  async #removeAll(owner: Owner): Promise<void> {
    owner.removing = true;
    try {
      await this.#removeAllOnce(owner);
    } finally {
      owner.removing = false;
    }
  }

  async #removeAllOnce(owner: Owner): Promise<void> {
    const failed: string[] = [];
    for (const key of [...owner.keys]) {
      if (owner.live || this.#closed) return;
      const slash = key.indexOf("/");
      const service = key.slice(0, slash), addr = key.slice(slash + 1);
      const entry = this.#view.get(service, addr);
      // Only records this agent keeps alive: a client that moved to another
      // agent (same owner id) has its records held there now.
      if (
        entry?.owner === owner.id &&
        (this.#backend.keeps?.(service, addr) ?? true)
      ) {
        try {
          const revision = await this.#backend.delete(service, addr, {
            ifOwner: owner.id,
          });
          if (revision !== undefined) {
            await this.#view.waitFor(revision, WRITE_VISIBLE_MS);
          }
        } catch (error) {
          if (!(error instanceof OwnerConflictError)) {
            failed.push(key);
            this.#options.log.warn("could not remove an instance; will retry", {
              key,
              error,
            });
            continue;
          }
        }
      }
      owner.keys.delete(key);
    }
    if (owner.live || this.#closed) return;
    if (failed.length > 0) {
      owner.expiry = setTimeout(() => {
        owner.expiry = undefined;
        void this.#removeAll(owner);
      }, 1000);
      return;
    }
    this.#forgetIfEmpty(owner);
  }

  #backendError(error: unknown, key: string): RpcError {
    if (error instanceof RpcError) return error;
    if (error instanceof OwnerConflictError) {
      return new RpcError(
        ErrorCode.NotOwner,
        `'${key}' is registered by another client; choose another address or unregister it from that client`,
      );
    }
    this.#options.log.warn("backend write failed", { key, error });
    return new RpcError(
      ErrorCode.BackendUnavailable,
      `the backend could not store '${key}': ${
        error instanceof Error ? error.message : String(error)
      }; retry later`,
    );
  }
}
