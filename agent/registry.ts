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
 * A removal the backend cannot make yet (it is unreachable) is never
 * dropped: the agent retries it with backoff until the backend confirms
 * it, or finds the record gone or written by someone else, and the
 * backend stops keeping the record alive from the first attempt, so an
 * instance whose owner left during an outage never comes back when the
 * store does. A new registration of the same instance cancels the pending
 * removal.
 *
 * @module
 */

import {
  type Backend,
  OwnerConflictError,
  type StoredRecord,
} from "../backends/backend.ts";
import { Backoff } from "../protocol/backoff.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { sameState } from "../protocol/instance_equal.ts";
import { instanceKey, splitInstanceKey } from "../protocol/instance_key.ts";
import { KeyedSerial } from "../protocol/keyed_serial.ts";
import {
  ALL_SERVICES,
  type Attrs,
  type Health,
  type Instance,
  type InstanceCounts,
  type InstanceOwner,
} from "../protocol/types.ts";
import {
  Checks,
  type CheckSpec,
  type HealthState,
  sameCheck,
} from "./checks.ts";
import type { Logger } from "./log.ts";
import type { SetFilter, View } from "./view.ts";
import type { Hold, Views } from "./views.ts";

/**
 * Holds the view of every service that has a key in a {@linkcode PinnedKeys}
 * or {@linkcode PinnedMap}, for as long as it has one: the agent watches
 * the services it keeps registrations (or removals) in.
 */
class ServicePins {
  #pins = new Map<string, { count: number; hold?: Hold }>();
  constructor(readonly views: Views) {}

  pin(key: string) {
    const [service] = splitInstanceKey(key);
    let pin = this.#pins.get(service);
    if (!pin) {
      let hold: Hold | undefined;
      try {
        hold = this.views.hold(service);
      } catch { /* no room: the next register or unregister holds it */ }
      this.#pins.set(service, pin = { count: 0, hold });
    }
    pin.count++;
  }

  unpin(key: string) {
    const [service] = splitInstanceKey(key);
    const pin = this.#pins.get(service);
    if (!pin || --pin.count > 0) return;
    this.#pins.delete(service);
    pin.hold?.release();
  }
}

/**
 * A set of instance keys that pins their services' views, and says when a
 * key leaves it (the owner no longer holds the instance).
 */
class PinnedKeys extends Set<string> {
  readonly #pins?: ServicePins;
  readonly #onDelete?: (key: string, owner: Owner) => void;
  readonly #owner: Owner;
  constructor(
    owner: Owner,
    pins?: ServicePins,
    onDelete?: (key: string, owner: Owner) => void,
  ) {
    super();
    this.#owner = owner;
    this.#pins = pins;
    this.#onDelete = onDelete;
  }
  override add(key: string): this {
    if (!this.has(key)) {
      super.add(key);
      this.#pins?.pin(key);
    }
    return this;
  }
  override delete(key: string): boolean {
    if (!super.delete(key)) return false;
    this.#pins?.unpin(key);
    this.#onDelete?.(key, this.#owner);
    return true;
  }
  override clear(): void {
    for (const key of [...this]) this.delete(key);
  }
}

/** A map by instance key that pins the keys' services' views. */
class PinnedMap<V> extends Map<string, V> {
  readonly #pins: ServicePins;
  constructor(pins: ServicePins) {
    super();
    this.#pins = pins;
  }
  override set(key: string, value: V): this {
    if (!this.has(key)) this.#pins.pin(key);
    return super.set(key, value);
  }
  override delete(key: string): boolean {
    if (!super.delete(key)) return false;
    this.#pins.unpin(key);
    return true;
  }
}

/** The registrations of one owner. */
export class Owner {
  /** Open sessions of this owner. */
  sessions = 0;
  /** Instance keys ({@linkcode instanceKey}) this owner registered and may still own. */
  readonly keys: Set<string>;
  /** Timer that removes the instances of a lost owner. */
  expiry?: ReturnType<typeof setTimeout>;
  /** When {@linkcode Owner.expiry} fires, in milliseconds since the epoch. */
  expiresAt?: number;
  /** Register/unregister calls of this owner still waiting for the backend. */
  pending = 0;
  /** How the owner's last session ended: decides what happens once idle. */
  lastClose?: "clean" | "lost";
  /**
   * The token name its sessions authenticated with (on an agent with
   * access rules): only an owner of the same token may take its instances
   * over.
   */
  name?: string;

  /**
   * Creates an owner.
   *
   * @param id The owner id stored with its records.
   * @param pins Holds the views of the services the owner has keys in.
   * @param onDelete Called when a key leaves {@linkcode Owner.keys}, with
   *   the owner (one function for every owner: an agent holds one owner
   *   per session).
   */
  constructor(
    readonly id: string,
    pins?: ServicePins,
    onDelete?: (key: string, owner: Owner) => void,
  ) {
    this.keys = new PinnedKeys(this, pins, onDelete);
  }

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
  /** Runs the health checks of the instances registered here. */
  checks?: Checks;
  /**
   * Most check runs a second one owner's checks may ask for, in all (the
   * sum of 1/interval over its checks): a registration whose check would
   * go beyond is refused with `LimitExceeded`, so that no client can make
   * the agent spend its CPU on checks without bound.
   *
   * @default {MAX_CHECK_RUNS_PER_SECOND}
   */
  maxCheckRunsPerSecond?: number;
}

/**
 * The default of {@linkcode RegistryOptions.maxCheckRunsPerSecond}: 1,000
 * checks every second, or 100 every 0.1 s, per client.
 */
export const MAX_CHECK_RUNS_PER_SECOND = 1000;

/** What to register. */
export interface Registration {
  /** Service name. */
  service: string;
  /** Canonical address. */
  addr: string;
  /** Attributes. */
  attrs: Attrs;
  /** A health check to run while the owner holds the instance (validated and allowed). */
  check?: CheckSpec;
}

/** The note of an instance whose check has not run yet. */
export const NO_RESULT_YET = "no check result yet";

const PASSING: HealthState = { health: "passing" };

/**
 * The health of an instance from its check and its owner's report: critical
 * when either is, with the check's note first.
 */
function combined(check: HealthState, self: HealthState): HealthState {
  if (check.health === "critical") return check;
  return self.health === "critical" ? self : PASSING;
}

/**
 * The record to write for an instance in `state`. It has `created`,
 * unset, for the backend to set on what it stores: a backend's copy of it
 * with that one more field (`{ ...record, created }`) then keeps every
 * field in the object itself, where a field added to a copy takes a
 * property store of its own, 32 bytes more for every instance an agent
 * holds.
 */
function recordOf(
  fields: Omit<StoredRecord, "health" | "note" | "created">,
  state: HealthState,
): StoredRecord {
  const { service, addr, attrs, owner, registeredAt } = fields;
  return state.note === undefined
    ? {
      service,
      addr,
      attrs,
      owner,
      registeredAt,
      health: state.health,
      created: undefined,
    }
    : {
      service,
      addr,
      attrs,
      owner,
      registeredAt,
      health: state.health,
      note: state.note,
      created: undefined,
    };
}

/** The health a record holds. */
function stateOf(record: { health?: Health; note?: string }): HealthState {
  return record.health === "critical"
    ? { health: "critical", ...(record.note ? { note: record.note } : {}) }
    : PASSING;
}

/** Options of {@linkcode Registry.register} and {@linkcode Registry.unregister}. */
export interface CallOptions {
  /**
   * With {@linkcode Registry.unregister}: removes the instance whoever
   * holds it (an admin's force-deregister); the value names who did, for
   * the log.
   */
  force?: string;
  /**
   * Abandons the call, before its write reaches the backend, when it
   * aborts: the agent aborts the calls of a session that closed, so that
   * a call its client gave up on cannot land after a later one the client
   * made elsewhere.
   */
  signal?: AbortSignal;
}

/**
 * Whether `view` shows the write of `revision`, or there is no view (what
 * `Views.waitFor` waits for, per view).
 */
function applied(view: View | undefined, revision: number): boolean {
  return view === undefined || view.revision >= revision;
}

/** Throws -32006 once `signal` has aborted. */
function abandoned(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new RpcError(
      ErrorCode.ConnectionClosed,
      "the session closed before the change was made; nothing was changed",
    );
  }
}

const ATTEMPTS = 3;
/** How long a write may take to come back through the backend's change stream. */
const WRITE_VISIBLE_MS = 10_000;
/** Retries of removals the backend could not make yet. */
const REMOVAL_RETRY = { initialDelay: 250, maxDelay: 5000 };

/** A removal to retry until the backend confirms it. */
interface PendingRemoval {
  /** The owner whose record it is (the delete's owner condition). */
  owner: string;
  /** Only if this agent keeps the record alive (a lost owner's cleanup). */
  ifKept: boolean;
  /**
   * The version of the record when the removal was decided: a record
   * written again since (through another agent, say) is not removed.
   */
  ifVersion?: string;
}

/**
 * Applies register and unregister requests to the backend on behalf of
 * owners, and removes the instances of owners that are gone.
 *
 * @example Usage
 * ```ts
 * import { MemoryBackend } from "../backends/memory.ts";
 * import { createLogger } from "./log.ts";
 * import { Registry } from "./registry.ts";
 * import { Views } from "./views.ts";
 * const backend = new MemoryBackend();
 * const views = new Views(backend);
 * await views.open();
 * const registry = new Registry(backend, views, {
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
  #views: Views;
  #pins: ServicePins;
  #options: RegistryOptions;
  #owners = new Map<string, Owner>();
  #closed = false;
  /** Removals the backend could not make yet, by key. */
  #removals: Map<string, PendingRemoval>;
  #removalTimer?: ReturnType<typeof setTimeout>;
  #removalBackoff = new Backoff(REMOVAL_RETRY);
  /** A pass over the removals is under way. */
  #removing = false;
  /** One change of an instance at a time: registrations and health writes. */
  #serial = new KeyedSerial();
  #checks: Checks;
  /** The owner and spec of every running check, by key. */
  #checkOf = new Map<string, { owner: string; spec: CheckSpec }>();
  /** Owners' own reports of critical health (`setHealth`), by key. */
  #reports = new Map<string, { owner: string; state: HealthState }>();
  /** Keys whose health the backend has not taken yet: retried with backoff. */
  #healthRetry = new Set<string>();
  #healthTimer?: ReturnType<typeof setTimeout>;
  #healthBackoff = new Backoff(REMOVAL_RETRY);
  /** A key left its owner's keys: its check and report go with it. */
  readonly #keyLeft = (key: string, owner: Owner): void =>
    this.#forgetHealth(key, owner.id);

  /**
   * Creates a registry.
   *
   * @param backend Where records are written.
   * @param views The views the backend feeds.
   * @param options TTL, limits and logger.
   */
  constructor(backend: Backend, views: Views, options: RegistryOptions) {
    this.#backend = backend;
    this.#views = views;
    this.#pins = new ServicePins(views);
    this.#removals = new PinnedMap(this.#pins);
    this.#options = options;
    this.#checks = options.checks ?? new Checks({ log: options.log });
  }

  /**
   * The instances this agent's owners hold, by health, and the checks it
   * runs.
   *
   * @returns The counts.
   */
  counts(): InstanceCounts {
    const counts = { registered: 0, passing: 0, critical: 0, checks: 0 };
    for (const owner of this.#owners.values()) {
      for (const key of owner.keys) {
        counts.registered++;
        const [service, addr] = splitInstanceKey(key);
        const entry = this.#views.peek(service)?.get(service, addr);
        if (entry?.owner !== owner.id) continue;
        if (entry.instance.health === "critical") counts.critical++;
        else counts.passing++;
      }
    }
    counts.checks = this.#checks.size;
    return counts;
  }

  /** Number of owners known (live or within their grace period). */
  get owners(): number {
    return this.#owners.size;
  }

  /**
   * Milliseconds, from now, during which no agent can see an owner's
   * instances leave but through the owner's own calls (or a forced
   * unregister): an owner lost after now keeps them for the grace TTL,
   * and the backend's lease cannot expire before what is left of it
   * (`discover.lease`); and the id of that lease.
   *
   * @example Usage
   * ```ts ignore
   * const { ms, lease } = registry.vouch();
   * ```
   *
   * @returns The milliseconds (at least 0) and the backend's lease id
   *   (`""` without one).
   */
  vouch(): { ms: number; lease: string } {
    const lease = this.#backend.lease?.() ?? { id: "", left: Infinity };
    return {
      ms: Math.max(0, Math.floor(Math.min(this.#options.ttlMs, lease.left))),
      lease: lease.id,
    };
  }

  /** Number of removals waiting for the backend to be reachable. */
  get pendingRemovals(): number {
    return this.#removals.size;
  }

  /**
   * A session of `id` opened: returns its owner and cancels a pending expiry.
   *
   * @param id The owner id.
   * @param options The token name of the session, on an agent with access
   *   rules.
   * @returns The owner.
   */
  attach(id: string, options: { name?: string } = {}): Owner {
    let owner = this.#owners.get(id);
    if (!owner) {
      owner = new Owner(id, this.#pins, this.#keyLeft);
      owner.name = options.name;
      this.#owners.set(id, owner);
    }
    owner.sessions++;
    owner.lastClose = undefined;
    if (owner.expiry !== undefined) {
      clearTimeout(owner.expiry);
      owner.expiry = undefined;
      owner.expiresAt = undefined;
      this.#options.log.info("owner is back within its grace period", { id });
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
    if (owner.live || this.#closed || owner.pending > 0) {
      return;
    }
    if (owner.lastClose === "clean") {
      this.#removeAll(
        owner,
        "instance unregistered: its client closed (removed unless another agent holds it now)",
      );
    } else if (owner.keys.size === 0) {
      this.#forgetIfEmpty(owner);
    } else if (owner.expiry === undefined) {
      this.#options.log.info("owner lost; instances kept for the grace TTL", {
        id: owner.id,
        instances: owner.keys.size,
        ttlMs: this.#options.ttlMs,
      });
      owner.expiresAt = Date.now() + this.#options.ttlMs;
      owner.expiry = setTimeout(() => {
        owner.expiry = undefined;
        owner.expiresAt = undefined;
        this.#removeAll(
          owner,
          "instance expired: its client did not come back within the grace TTL (removed unless another agent holds it now)",
        );
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
   * The instances of the view that `owner` holds, sorted by id.
   *
   * @param owner The owner.
   * @returns Its instances.
   */
  owned(owner: Owner): Instance[] {
    const instances: Instance[] = [];
    for (const key of owner.keys) {
      const [service, addr] = splitInstanceKey(key);
      const entry = this.#views.peek(service)?.get(service, addr);
      if (entry?.owner === owner.id) instances.push(entry.instance);
    }
    return instances.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  /**
   * Whose the instances of a set are, and what this agent knows of their
   * owners' connections (`discover.owners`).
   *
   * @param view A view of the set's service, held by the caller.
   * @param service The service.
   * @param filter Which instances, as for `discover.services`.
   * @returns One entry per instance, sorted by address.
   */
  ownersOf(view: View, service: string, filter?: SetFilter): InstanceOwner[] {
    const out: InstanceOwner[] = [];
    for (const instance of view.list(service, filter)) {
      const id = view.get(service, instance.addr)?.owner;
      if (id === undefined) continue;
      const known = this.#owners.get(id);
      const key = instanceKey(service, instance.addr);
      const here = known !== undefined && known.keys.has(key);
      const entry: InstanceOwner = {
        addr: instance.addr,
        owner: id.startsWith("c:") ? id.slice(0, 10) : id,
        client: !here ? "elsewhere" : known.live ? "connected" : "lost",
      };
      if (here && !known.live && known.expiresAt !== undefined) {
        entry.expires = known.expiresAt;
      }
      if (here && known.name !== undefined) entry.token = known.name;
      out.push(entry);
    }
    return out.sort((a, b) => a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0);
  }

  /**
   * Registers or re-registers an instance for `owner`.
   *
   * @param owner The owner.
   * @param registration What to register.
   * @param options A signal that abandons the call (its session closed).
   * @returns The instance as the view holds it afterwards.
   */
  register(
    owner: Owner,
    registration: Registration,
    options: CallOptions = {},
  ): Promise<Instance> {
    const key = instanceKey(registration.service, registration.addr);
    return this.#write(
      owner,
      () =>
        this.#serial.run(key, () =>
          this.#holding(
            registration.service,
            (view) =>
              this.#register(owner, registration, view, {
                key,
                signal: options.signal,
              }),
          )),
    );
  }

  /** Runs `fn` with the view of `service`, held (and its state loaded) meanwhile. */
  async #holding<T>(
    service: string,
    fn: (view: View) => Promise<T>,
  ): Promise<T> {
    // What Views.acquire does, without an async function of its own.
    const hold = this.#views.hold(service);
    try {
      await hold.view.settled;
      return await fn(hold.view);
    } finally {
      hold.release();
    }
  }

  /** `key`: the registration's {@linkcode instanceKey}, made once per call. */
  async #register(
    owner: Owner,
    registration: Registration,
    view: View,
    { key, signal }: { key: string; signal?: AbortSignal },
  ): Promise<Instance> {
    const { service, addr, attrs } = registration;
    if (registration.check) {
      this.#requireCheckRate(owner, key, registration.check);
    }
    for (let attempt = 1;; attempt++) {
      abandoned(signal);
      const entry = view.get(service, addr);
      let previous: Owner | undefined;
      if (entry && entry.owner !== owner.id) {
        previous = this.#takeoverFrom(entry.owner, key, owner);
      }
      const health = this.#healthAt(owner, registration, { key, entry });
      const state = combined(health.check, health.self);
      if (
        entry?.owner === owner.id &&
        sameState(entry.instance, { attrs, ...state }) &&
        (this.#backend.keeps?.(service, addr) ?? true) &&
        !this.#removals.has(key)
      ) {
        owner.keys.add(key);
        this.#arm(owner, registration, { key, health });
        return entry.instance;
      }
      this.#requireBackend(view, key);
      if (
        !owner.keys.has(key) &&
        owner.keys.size >= this.#options.maxRegistrations
      ) {
        throw new RpcError(
          ErrorCode.LimitExceeded,
          `limit reached: this client already holds ${owner.keys.size} registrations (maxRegistrations); unregister some first`,
        );
      }
      // The newest intent wins: a removal still waiting for the backend
      // must not delete what is registered now.
      const withdrawn = this.#removals.get(key);
      this.#removals.delete(key);
      // Held before the write: should the owner leave while the outcome is
      // unknown, its removal covers a write that landed.
      const added = !owner.keys.has(key);
      owner.keys.add(key);
      let revision: number;
      try {
        revision = await this.#backend.put(
          recordOf({
            service,
            addr,
            attrs,
            owner: owner.id,
            registeredAt: entry?.instance.registeredAt ?? Date.now(),
          }, state),
          { ifOwner: entry?.owner ?? null, signal },
        );
      } catch (error) {
        // Abandoned before the write reached the store: the backend then
        // rejects with the signal's reason, and nothing was written. A
        // write that failed otherwise may have landed, session closed or
        // not: the owner keeps the key (below), so that its removal covers
        // the record, which would else stay as long as the agent's lease.
        if (signal?.aborted && error === signal.reason) {
          if (added) owner.keys.delete(key);
          if (withdrawn && !this.#removals.has(key)) {
            this.#removals.set(key, withdrawn);
            this.#scheduleRemovals();
          }
          abandoned(signal);
        }
        const conflict = error instanceof OwnerConflictError;
        if (conflict && added) owner.keys.delete(key);
        // Another owner's removal stands: its owner condition spares this
        // write if it landed after all.
        if (
          withdrawn && (conflict || withdrawn.owner !== owner.id) &&
          !this.#removals.has(key)
        ) {
          this.#removals.set(key, withdrawn);
          this.#scheduleRemovals();
        }
        abandoned(signal); // its session closed: no retry, no answer
        if (conflict && attempt < ATTEMPTS) {
          await this.#caughtUp(view, error, key);
          continue; // the view was behind the store: look again
        }
        throw this.#backendError(error, key);
      }
      await this.#applied(service, revision, key);
      if (previous) {
        this.#options.log.info("instance taken over", {
          service,
          addr,
          owner: owner.id,
          from: previous.id,
        });
      } else if (!entry) {
        this.#options.log.info("instance registered", {
          service,
          addr,
          owner: owner.id,
        });
      }
      previous?.keys.delete(key);
      if (previous) this.#forgetIfEmpty(previous);
      const now = view.get(service, addr);
      if (now?.owner === owner.id) {
        this.#arm(owner, registration, { key, health });
      }
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
   * @param target The service and the address.
   * @param options A signal that abandons the call (its session closed).
   * @returns Whether an instance was removed.
   */
  unregister(
    owner: Owner,
    target: { service: string; addr: string },
    options: CallOptions = {},
  ): Promise<boolean> {
    const { service, addr } = target;
    const key = instanceKey(service, addr);
    return this.#write(
      owner,
      () =>
        this.#serial.run(key, () =>
          this.#holding(
            service,
            (view) =>
              this.#unregister(
                owner,
                { service, addr, key, view, force: options.force },
                options.signal,
              ),
          )),
    );
  }

  /**
   * Sets the owner's own report of an instance's health
   * (`discover.setHealth`). The instance is critical while its report or
   * its check says so; the backend is written only when that changes.
   *
   * @param owner The owner.
   * @param target The service, the address, the health and its note.
   * @param options A signal that abandons the call (its session closed).
   * @returns The instance as the view holds it afterwards.
   */
  setHealth(
    owner: Owner,
    target: { service: string; addr: string } & HealthState,
    options: CallOptions = {},
  ): Promise<Instance> {
    const { service, addr } = target;
    const key = instanceKey(service, addr);
    const report: HealthState = target.health === "critical"
      ? { health: "critical", ...(target.note ? { note: target.note } : {}) }
      : PASSING;
    return this.#write(
      owner,
      () =>
        this.#serial.run(key, () =>
          this.#holding(service, async (view) => {
            abandoned(options.signal);
            const entry = view.get(service, addr);
            if (!entry) {
              throw new RpcError(
                ErrorCode.InvalidParams,
                `'${key}' is not registered; register it before setting its health`,
                { field: "service" },
              );
            }
            if (entry.owner !== owner.id) {
              throw new RpcError(
                ErrorCode.NotOwner,
                `'${key}' is registered by another client; only its owner sets its health`,
              );
            }
            owner.keys.add(key);
            const before = this.#reports.get(key);
            this.#report(key, owner.id, report);
            try {
              return await this.#writeHealth(owner, view, key, options.signal);
            } catch (error) {
              // Nothing changed: the report stands as it was.
              if (before) this.#reports.set(key, before);
              else this.#reports.delete(key);
              throw error;
            }
          })),
    );
  }

  /**
   * The health a registration starts from: the running check's; the stored
   * record's for an instance this owner already holds (an agent restarted
   * within the grace TTL resumes without a flap); critical until the first
   * result for a new instance with a check. The owner's report likewise.
   * `keep`: the same check already runs for this owner.
   */
  #healthAt(
    owner: Owner,
    registration: Registration,
    { key, entry }: {
      key: string;
      entry: { instance: Instance; owner: string } | undefined;
    },
  ): { check: HealthState; self: HealthState; keep: boolean } {
    const mine = entry !== undefined && entry.owner === owner.id;
    const running = this.#checkOf.get(key);
    const ours = running !== undefined && running.owner === owner.id;
    const keep = registration.check !== undefined && ours &&
      sameCheck(running.spec, registration.check);
    let check: HealthState = PASSING;
    if (registration.check !== undefined) {
      check = keep
        ? this.#checks.state(key) ?? PASSING
        : mine
        ? stateOf(entry.instance)
        : { health: "critical", note: NO_RESULT_YET };
    }
    const report = this.#reports.get(key);
    let self: HealthState = PASSING;
    if (report?.owner === owner.id) self = report.state;
    else if (mine && !ours && registration.check === undefined) {
      self = stateOf(entry.instance);
    }
    return { check, self, keep };
  }

  /** Starts, keeps or stops the check of a registration the owner now holds, and keeps its report. */
  #arm(
    owner: Owner,
    registration: Registration,
    { key, health }: {
      key: string;
      health: { check: HealthState; self: HealthState; keep: boolean };
    },
  ): void {
    if (this.#closed) return;
    this.#report(key, owner.id, health.self);
    const spec = registration.check;
    if (spec === undefined) {
      this.#forgetCheck(key, owner.id);
      return;
    }
    if (health.keep && this.#checks.has(key)) return;
    this.#checkOf.set(key, { owner: owner.id, spec });
    this.#checks.start(key, spec, {
      initial: health.check,
      onChange: () => this.#healthChanged(key),
    });
  }

  /**
   * Refuses a check that would take the runs a second of `owner`'s checks
   * (other than the one of `key`, which it replaces) past the limit.
   */
  #requireCheckRate(owner: Owner, key: string, spec: CheckSpec): void {
    const max = this.#options.maxCheckRunsPerSecond ??
      MAX_CHECK_RUNS_PER_SECOND;
    let rate = 1000 / spec.intervalMs;
    for (const held of owner.keys) {
      const running = this.#checkOf.get(held);
      if (held !== key && running?.owner === owner.id) {
        rate += 1000 / running.spec.intervalMs;
      }
    }
    // A thousandth of a run a second for the rounding of the sum.
    if (rate <= max + 1e-3) return;
    throw new RpcError(
      ErrorCode.LimitExceeded,
      `limit reached: this client's checks would run ${
        Number(rate.toPrecision(6))
      } times a second in all (the sum of 1/interval over its checks), more than ${max}; use longer intervals or fewer checks`,
    );
  }

  #report(key: string, owner: string, state: HealthState): void {
    if (state.health === "critical") this.#reports.set(key, { owner, state });
    else if (this.#reports.get(key)?.owner === owner) this.#reports.delete(key);
  }

  #forgetCheck(key: string, owner: string): void {
    if (this.#checkOf.get(key)?.owner !== owner) return;
    this.#checkOf.delete(key);
    this.#checks.stop(key);
  }

  /** A key left its owner: its check and report go with it. */
  #forgetHealth(key: string, owner: string): void {
    this.#forgetCheck(key, owner);
    if (this.#reports.get(key)?.owner === owner) this.#reports.delete(key);
  }

  /** The health of an instance of `owner`: from its check and its report. */
  #healthOf(key: string, owner: string): HealthState {
    const check = this.#checkOf.get(key)?.owner === owner
      ? this.#checks.state(key) ?? PASSING
      : PASSING;
    const report = this.#reports.get(key);
    return combined(check, report?.owner === owner ? report.state : PASSING);
  }

  /** A check changed its result: write the instance's health, one change of the key at a time. */
  #healthChanged(key: string): void {
    const owner = this.#owners.get(
      this.#checkOf.get(key)?.owner ?? this.#reports.get(key)?.owner ?? "",
    );
    if (!owner?.keys.has(key) || this.#closed) {
      this.#healthRetry.delete(key);
      return;
    }
    const [service] = splitInstanceKey(key);
    this.#write(
      owner,
      () =>
        this.#serial.run(
          key,
          () =>
            this.#holding(
              service,
              (view) => this.#writeHealth(owner, view, key),
            ),
        ),
    ).then(() => {
      if (this.#healthRetry.delete(key) && this.#healthRetry.size === 0) {
        this.#healthBackoff.reset();
      }
    }, (error) => {
      if (error instanceof RpcError && error.code === ErrorCode.NotOwner) {
        this.#healthRetry.delete(key);
        return;
      }
      this.#healthRetry.add(key);
      this.#options.log.debug(
        "could not write a health change; will retry",
        { key, error },
      );
      if (this.#healthTimer !== undefined || this.#closed) return;
      this.#healthTimer = setTimeout(() => {
        this.#healthTimer = undefined;
        for (const retry of [...this.#healthRetry]) {
          this.#healthChanged(retry);
        }
      }, this.#healthBackoff.next());
    });
  }

  /** Writes the health of an instance `owner` holds when the view shows another. */
  async #writeHealth(
    owner: Owner,
    view: View,
    key: string,
    signal?: AbortSignal,
  ): Promise<Instance> {
    const [service, addr] = splitInstanceKey(key);
    const entry = view.get(service, addr);
    if (!entry || entry.owner !== owner.id) {
      throw new RpcError(
        ErrorCode.NotOwner,
        `'${key}' is no longer registered by this client`,
      );
    }
    const state = this.#healthOf(key, owner.id);
    const { instance } = entry;
    if (sameState(instance, { attrs: instance.attrs, ...state })) {
      return instance;
    }
    this.#requireBackend(view, key);
    let revision: number;
    try {
      revision = await this.#backend.put(
        recordOf({
          service,
          addr,
          attrs: instance.attrs,
          owner: owner.id,
          registeredAt: instance.registeredAt,
        }, state),
        { ifOwner: owner.id, signal },
      );
    } catch (error) {
      abandoned(signal);
      throw this.#backendError(error, key);
    }
    this.#options.log.info("instance health changed", {
      key,
      health: state.health,
      note: state.note,
    });
    await this.#applied(service, revision, key);
    const now = view.get(service, addr);
    if (now) return now.instance;
    throw new RpcError(
      ErrorCode.BackendUnavailable,
      `'${key}' was removed while its health was being set`,
    );
  }

  async #unregister(
    owner: Owner,
    { service, addr, key, view, force }: {
      service: string;
      addr: string;
      /** {@linkcode instanceKey} of `service` and `addr`, made once per call. */
      key: string;
      view: View;
      force?: string;
    },
    signal?: AbortSignal,
  ): Promise<boolean> {
    for (let attempt = 1;; attempt++) {
      abandoned(signal);
      const entry = view.get(service, addr);
      if (!entry) {
        owner.keys.delete(key);
        // The view may have lost the record with a lease that the backend
        // would write back, or lag the store: remove whatever this agent
        // keeps of it, through the queue (retried until the store says).
        this.#queueRemoval(key, { owner: owner.id, ifKept: true });
        // A view cut off from the store cannot say there is nothing.
        this.#requireBackend(view, key);
        return false;
      }
      let previous: Owner | undefined;
      if (entry.owner !== owner.id && force === undefined) {
        previous = this.#takeoverFrom(entry.owner, key, owner);
      } else if (entry.owner !== owner.id) {
        previous = this.#owners.get(entry.owner);
        this.#options.log.warn("instance force-deregistered", {
          key,
          by: force || owner.id,
        });
      }
      if (!view.connected) {
        // Not lost: removed as soon as the backend is back.
        owner.keys.delete(key);
        this.#queueRemoval(key, { owner: entry.owner, ifKept: false });
        this.#requireBackend(view, key);
      }
      let revision: number | undefined;
      try {
        revision = await this.#backend.delete(service, addr, {
          ifOwner: entry.owner,
          signal,
        });
      } catch (error) {
        abandoned(signal);
        if (error instanceof OwnerConflictError && attempt < ATTEMPTS) {
          await this.#caughtUp(view, error, key);
          continue;
        }
        if (!(error instanceof OwnerConflictError)) {
          owner.keys.delete(key);
          this.#queueRemoval(key, { owner: entry.owner, ifKept: false });
        }
        throw this.#backendError(error, key);
      }
      owner.keys.delete(key);
      previous?.keys.delete(key);
      if (previous) this.#forgetIfEmpty(previous);
      if (revision === undefined) return false;
      this.#options.log.info("instance unregistered", {
        service,
        addr,
        owner: entry.owner,
      });
      await this.#applied(service, revision, key);
      return true;
    }
  }

  /** Stops the expiry timers and removal retries; records stay in the backend. */
  close(): void {
    this.#closed = true;
    this.#checks.close();
    clearTimeout(this.#healthTimer);
    clearTimeout(this.#removalTimer);
    for (const owner of this.#owners.values()) clearTimeout(owner.expiry);
  }

  /** Fails fast while the backend is unreachable, well within a client's request timeout. */
  #requireBackend(view: View, key: string): void {
    if (view.connected) return;
    throw new RpcError(
      ErrorCode.BackendUnavailable,
      `the agent cannot reach its backend, so '${key}' cannot be changed now; the instances it knows stay as they were until the backend is back (an unregistered instance is removed then); retry later`,
    );
  }

  /** Checks that an instance of `ownerId` may be taken over, and returns that owner. */
  #takeoverFrom(
    ownerId: string,
    key: string,
    taker: Owner,
  ): Owner | undefined {
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
    if (other.name !== taker.name) {
      throw new RpcError(
        ErrorCode.NotOwner,
        `'${key}' is registered under another token; only a client of that token, or one with admin access (unregister with force), may take it over`,
      );
    }
    return other;
  }

  /**
   * After a conflict: waits until the view shows what the store had then
   * (the owner it found, or no record), or has reached the store's
   * revision, within a deadline (a write of its own agent that the change
   * stream has not delivered yet, say); a timeout just ends the wait. (A
   * view of one service may never reach the store's revision: it moves
   * only when its service changes.)
   */
  async #caughtUp(
    view: View,
    conflict: OwnerConflictError,
    key: string,
  ): Promise<void> {
    const { revision, owner } = conflict;
    if (revision === undefined) return;
    const [service, addr] = splitInstanceKey(key);
    await view.waitUntil(
      () =>
        view.revision >= revision ||
        (view.get(service, addr)?.owner ?? null) === owner,
      WRITE_VISIBLE_MS,
    ).catch(() => {});
  }

  /** Waits until the views of `service` have applied a write, within a deadline. */
  async #applied(
    service: string,
    revision: number,
    key: string,
  ): Promise<void> {
    if (
      applied(this.#views.peek(service), revision) &&
      applied(this.#views.peek(ALL_SERVICES), revision)
    ) return;
    try {
      await this.#views.waitFor(service, revision, WRITE_VISIBLE_MS);
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

  /** Removes every instance of an owner that is gone (closed, or lost past its TTL). */
  #removeAll(owner: Owner, why: string): void {
    for (const key of owner.keys) {
      const [service, addr] = splitInstanceKey(key);
      this.#options.log.info(why, { service, addr, owner: owner.id });
      // Only records this agent keeps alive: a client that moved to another
      // agent (same owner id) has its records held there now.
      this.#queueRemoval(key, { owner: owner.id, ifKept: true });
    }
    owner.keys.clear();
    this.#forgetIfEmpty(owner);
  }

  /** Adds a removal to the queue, which runs at once unless it is waiting out a backoff. */
  #queueRemoval(
    key: string,
    removal: Omit<PendingRemoval, "ifVersion">,
  ): void {
    const [service, addr] = splitInstanceKey(key);
    const ifVersion = this.#backend.version?.(service, addr);
    // Decided now, whenever the store can be told: nothing brings it back.
    this.#backend.release?.(service, addr, { ifOwner: removal.owner });
    this.#removals.set(key, { ...removal, ifVersion });
    this.#scheduleRemovals();
  }

  /** Runs the queue at once unless it is waiting out a backoff. */
  #scheduleRemovals(): void {
    if (this.#removalTimer === undefined && !this.#removing) {
      void this.#runRemovals();
    }
  }

  /**
   * Tries every queued removal once; what the backend could not do is
   * tried again after a backoff, for as long as it takes.
   */
  async #runRemovals(): Promise<void> {
    this.#removalTimer = undefined;
    if (this.#removing || this.#closed) return;
    this.#removing = true;
    let failed = 0;
    try {
      for (const [key, removal] of [...this.#removals]) {
        if (this.#closed) return;
        if (this.#removals.get(key) !== removal) continue; // re-registered
        const [service, addr] = splitInstanceKey(key);
        try {
          const revision = await this.#backend.delete(service, addr, {
            ifOwner: removal.owner,
            ifKept: removal.ifKept,
            ifVersion: removal.ifVersion,
          });
          if (revision !== undefined) {
            await this.#views.waitFor(service, revision, WRITE_VISIBLE_MS)
              .catch(() => {});
          }
        } catch (error) {
          if (!(error instanceof OwnerConflictError)) {
            failed++;
            if (failed === 1) {
              this.#options.log.warn(
                "could not remove an instance; will retry",
                { key, pending: this.#removals.size, error },
              );
            }
            continue;
          }
        }
        if (this.#removals.get(key) === removal) this.#removals.delete(key);
      }
    } finally {
      this.#removing = false;
    }
    if (this.#closed || this.#removals.size === 0) {
      this.#removalBackoff.reset();
      return;
    }
    // Failures wait out the backoff; removals queued meanwhile run at once.
    const delay = failed > 0 ? this.#removalBackoff.next() : 0;
    if (failed === 0) this.#removalBackoff.reset();
    this.#removalTimer = setTimeout(() => void this.#runRemovals(), delay);
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
