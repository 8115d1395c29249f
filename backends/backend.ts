// Copyright the discover authors. BSD-3-Clause license.

/**
 * The backend interface: where an agent keeps registrations.
 *
 * A backend stores records keyed by (service, addr), gives every change a
 * revision from one counter that never decreases, and streams the changes
 * of a service to the agent that watches it. The agent watches a service
 * only while something on it needs it (a subscription, a registration, a
 * lookup), keeps its own view of each watched service, answers reads from
 * it, and fans changes out. `"*"` watches every service at once.
 *
 * ## What a backend must guarantee
 *
 * 1. **One order.** Every change has a revision; revisions increase
 *    across all services, except that changes made in one transaction
 *    share a revision, and then arrive together in one
 *    {@linkcode BackendWatcher.changes} call. A watch delivers the changes
 *    of its scope in revision order, each exactly once, and never with a
 *    revision below one already delivered (a
 *    {@linkcode BackendWatcher.reset} restarts the sequence at its
 *    revision).
 * 2. **Read your writes.** The revision that {@linkcode Backend.put} or
 *    {@linkcode Backend.delete} resolves with is eventually delivered to
 *    every watch of the record's service and of `"*"` (or covered by a
 *    reset at or above it); the agent waits for it before it answers the
 *    client, so a client that registered can read its own registration at
 *    once.
 * 3. **Conditional writes.** `ifOwner` is checked atomically with the
 *    write: when the stored owner differs, nothing is written and the call
 *    rejects with {@linkcode OwnerConflictError}. This is what stops two
 *    sessions (possibly on two agents) from clobbering each other.
 * 4. **Liveness of the agent itself.** Records written through a backend
 *    opened by an agent must disappear when that agent dies and does not
 *    come back within the backend's own lease (for a shared store such as
 *    etcd: one lease per agent, every record attached to it). Liveness of
 *    individual client sessions is the agent's job, not the backend's: the
 *    agent deletes a lost session's records after the grace TTL.
 * 5. **Cheap when idle.** Keeping an agent's records alive must cost the
 *    store the same whatever the number of records (one lease keep-alive,
 *    not one write per record), and a watch costs nothing while its
 *    service does not change.
 * 6. **Resync.** When the backend cannot deliver a gap-free change stream
 *    to a watch (a compacted revision, a lost watch), it calls
 *    {@linkcode BackendWatcher.reset} with the complete current state of
 *    the watch's scope; the agent diffs it against its view and emits only
 *    the real differences.
 * 7. **Status.** It reports whether the store is reachable, to the agent
 *    ({@linkcode BackendStatus.status}) and to each watch
 *    ({@linkcode BackendWatcher.status}); while it is not, the agent keeps
 *    serving its last known view and says so.
 *
 * The memory backend (`backends/memory.ts`) is the smallest complete
 * implementation; `backends/backend_suite.ts` is the shared test suite a
 * new backend must pass.
 *
 * @module
 */

import type { Attrs, Health } from "../protocol/types.ts";

/** A stored registration. */
export interface StoredRecord {
  /** Service name (validated: never contains `/`). */
  service: string;
  /** Canonical `host:port` address. */
  addr: string;
  /** Attributes. */
  attrs: Attrs;
  /** Owner of the record: an opaque string chosen by the agent. */
  owner: string;
  /** Time of first registration, in milliseconds since the epoch. */
  registeredAt: number;
  /** Health; absent means `passing`. */
  health?: Health;
  /** Why it is critical; only with `critical`. */
  note?: string;
  /**
   * Revision at which the record's key was created in its current life
   * (a put keeps it; a delete and a put start a new one). Set by the
   * backend on what it delivers; ignored in what is written.
   */
  created?: number;
}

/** One change delivered by a backend. */
export type BackendChange =
  | {
    /** A record was created or replaced. */
    type: "put";
    /** Revision of the change. */
    revision: number;
    /** The record as stored. */
    record: StoredRecord;
  }
  | {
    /** A record was removed. */
    type: "delete";
    /** Revision of the change. */
    revision: number;
    /** Service of the removed record. */
    service: string;
    /** Address of the removed record. */
    addr: string;
  };

/** A full copy of a backend's state at one revision. */
export interface BackendState {
  /** Revision of the state. */
  revision: number;
  /**
   * Names the sequence the revisions belong to. A backend whose revisions
   * start over (the memory backend, in a new process) uses a new epoch; a
   * shared store keeps one epoch for all agents (etcd: its cluster id), so
   * a revision from one agent means the same at another.
   */
  epoch: string;
  /** Every record. */
  records: StoredRecord[];
}

/** Receives what a backend has to tell a watch of one scope (a service, or `"*"`). */
export interface BackendWatcher {
  /** Changes of the scope, in revision order, each delivered once. */
  changes(changes: BackendChange[]): void;
  /** The complete state of the scope, replacing everything delivered before. */
  reset(state: BackendState): void;
  /**
   * Whether the store is reachable and the watch is live. A watch whose
   * first read fails says `false` (once), so that the agent serves what it
   * has, marked stale, while the backend keeps trying.
   */
  status(connected: boolean): void;
}

/** Receives whether the store is reachable, for the agent as a whole. */
export interface BackendStatus {
  /** Whether the store is reachable (writes can succeed). */
  status(connected: boolean): void;
  /**
   * The store's epoch (see {@linkcode BackendState.epoch}) and a revision
   * it has reached, as soon as the backend knows them (on connecting),
   * before any watch.
   */
  epoch?(epoch: string, revision: number): void;
}

/** An open watch of one scope; see {@linkcode Backend.watch}. */
export interface BackendWatch {
  /** Stops delivering to the watcher and releases what the watch holds. */
  close(): Promise<void>;
}

/** Options of {@linkcode Backend.watch}. */
export interface WatchOptions {
  /** Start from the scope's state at this past revision, if the store still has it. */
  since?: number;
  /** The epoch of `since`: another epoch than the store's means the current state. */
  epoch?: string;
}

/** The services of a store, as {@linkcode Backend.catalog} counts them. */
export interface BackendCatalog {
  /** Revision of the read. */
  revision: number;
  /** Every service with at least one instance, with their number, sorted by name. */
  services: { service: string; instances: number }[];
}

/** Options of {@linkcode Backend.put} and {@linkcode Backend.delete}. */
export interface WriteOptions {
  /**
   * Write only if the stored record's owner is this value; `null` means
   * "only if there is no record". Omit it for an unconditional write.
   */
  ifOwner?: string | null;
  /**
   * With {@linkcode Backend.delete}: remove the record only if this agent
   * keeps it alive (in a shared store: the stored record is attached to
   * one of this agent's leases, current or lost), checked atomically with
   * the delete. An agent removing the records of an owner that is gone
   * uses it, so that a record the same owner wrote again through another
   * agent meanwhile is left alone. A record not kept counts as an owner
   * conflict.
   *
   * @default {false}
   */
  ifKept?: boolean;
  /**
   * With {@linkcode Backend.delete}: remove the record only if it is still
   * the version {@linkcode Backend.version} returned, checked atomically
   * with the delete. A removal that waits for the store to come back
   * carries the version it was meant for, so that a later write of the
   * same record (through another agent, say) is never undone by it. Another
   * version counts as an owner conflict.
   */
  ifVersion?: string;
  /**
   * Abandons the write if this aborts before the write reaches the store
   * (a write that waits for the store, its lease or an earlier write of
   * the same record): it then rejects with the signal's reason, and
   * nothing is written. The agent aborts the writes of a session that
   * closed, so that a call its client gave up on cannot land after a
   * later one the client made elsewhere.
   */
  signal?: AbortSignal;
}

/** A store of registrations. See the module documentation for its contract. */
export interface Backend {
  /** Short name shown in status (`memory`, `etcd`, ...). */
  readonly name: string;
  /**
   * Connects and says whether the store is reachable through
   * `events.status`. A store that cannot be reached yet does not make it
   * reject or wait: it says `status(false)`, resolves, and keeps trying.
   *
   * @param events Where to say whether the store is reachable.
   */
  open(events: BackendStatus): Promise<void>;
  /**
   * Starts watching a scope: delivers its current state to
   * `watcher.reset`, then its changes to `watcher.changes`, until the
   * returned watch is closed. The scope is one service, or `"*"` for every
   * service (which costs what the whole store costs). Several watches of
   * the same scope may be open at once; each gets everything.
   *
   * With `options.since`, a backend that keeps history may instead start
   * from the scope's state at that past revision and deliver every change
   * after it (etcd: a read at `since`, then a watch from `since + 1`): a
   * client resuming from `since` at an agent that did not watch the scope
   * then gets exactly the changes it missed. A revision the store no
   * longer has, or of another epoch, starts from the current state.
   *
   * @param scope A service name, or `"*"`.
   * @param watcher Where to deliver state and changes.
   * @param options Where to start from.
   * @returns The watch.
   */
  watch(
    scope: string,
    watcher: BackendWatcher,
    options?: WatchOptions,
  ): BackendWatch;
  /**
   * Counts the instances of every service, without the agent holding any
   * of them.
   *
   * @returns The services with instances, sorted by name.
   */
  catalog(): Promise<BackendCatalog>;
  /**
   * The records of a scope as they were at a past revision, for a client
   * resuming from it at an agent whose own history of the scope does not
   * reach that far back. Without this method, or when the store no longer
   * has that revision (compacted), `undefined`: the client gets a
   * snapshot instead.
   *
   * @param scope A service name, or `"*"`.
   * @param revision The past revision.
   * @returns The state at `revision`, or `undefined`.
   */
  stateAt?(scope: string, revision: number): Promise<BackendState | undefined>;
  /**
   * Creates or replaces a record.
   *
   * @param record The record.
   * @param options The owner condition.
   * @returns The revision of the write.
   */
  put(record: StoredRecord, options?: WriteOptions): Promise<number>;
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
    options?: WriteOptions,
  ): Promise<number | undefined>;
  /**
   * Whether this agent keeps the record alive: it wrote the record, has
   * not deleted it since (a {@linkcode Backend.delete} call counts from
   * the moment it is made, whatever its outcome), and no other writer
   * replaced it since, as far as the change stream told. A kept record
   * that the store loses through a fault of this agent's liveness (a lost
   * lease) is written back once the store is reachable again; a record
   * that is not kept is never written back. When an owner re-registers an
   * instance with unchanged attributes, the agent writes it again only if
   * this is false, so an agent restarted within the lease TTL takes over
   * its predecessor's records. Without this method, every record counts
   * as kept.
   *
   * @param service The service.
   * @param addr The address.
   * @returns Whether the record is kept alive by this agent.
   */
  keeps?(service: string, addr: string): boolean;
  /**
   * Stops keeping the record alive from now on (see
   * {@linkcode Backend.keeps}), without touching the store: the agent
   * calls it the moment it decides to remove a record, which may be long
   * before the store can be reached, so that a lost lease never brings
   * the record back meanwhile. A {@linkcode Backend.delete} call does the
   * same at once (for the owner it names).
   *
   * @param service The service.
   * @param addr The address.
   * @param options Only if the kept record's owner is `ifOwner` (another
   *   owner may have written it since).
   */
  release?(
    service: string,
    addr: string,
    options?: { ifOwner?: string },
  ): void;
  /**
   * The version of the stored record as this agent last saw it (etcd: its
   * modification revision), for {@linkcode WriteOptions.ifVersion}.
   * Without this method, or for a record it has not seen, `undefined`: the
   * store has no writers but this agent, and the agent itself orders its
   * writes.
   *
   * @param service The service.
   * @param addr The address.
   * @returns The version, if known.
   */
  version?(service: string, addr: string): string | undefined;
  /**
   * The lease this agent's records are attached to: its `id` (it changes
   * when a lease is lost and replaced; records written under the lost one
   * may have expired) and the milliseconds from now during which no other
   * agent can see it expire (etcd: the lease was last renewed by a
   * keep-alive sent at T, so it cannot expire before T + its TTL), 0 when
   * it may have expired already. Without this method, records never
   * expire behind the agent's back (the memory backend). The agent vouches
   * for its clients' instances no longer than this (`discover.lease`).
   *
   * @returns The lease id (`""` when there is none yet) and the time left.
   */
  lease?(): { id: string; left: number };
  /** Stops every watch and releases the store (and with it this agent's records, where the store keeps them per agent). */
  close(): Promise<void>;
}

/**
 * A conditional write found another owner.
 *
 * @example Usage
 * ```ts
 * import { OwnerConflictError } from "./backend.ts";
 * const err = new OwnerConflictError("cache", "10.0.0.1:80", {
 *   owner: "agent-b/7",
 * });
 * console.log(err.owner); // "agent-b/7"
 * ```
 */
export class OwnerConflictError extends Error {
  /** The owner found, or `null` when there was no record. */
  readonly owner: string | null;
  /**
   * The store's revision when the conflict was seen, where the store said
   * it: an agent whose view is behind it waits for that revision before it
   * looks again.
   */
  readonly revision: number | undefined;

  /**
   * Creates the error.
   *
   * @param service The service.
   * @param addr The address.
   * @param found The owner found (`null` for none), and the store's revision.
   */
  constructor(
    service: string,
    addr: string,
    found: OwnerConflictOptions,
  ) {
    const owner = found.owner;
    super(
      owner === null
        ? `'${service}/${addr}' is not registered`
        : `'${service}/${addr}' is owned by '${owner}'`,
    );
    this.name = "OwnerConflictError";
    this.owner = owner;
    this.revision = found.revision;
  }
}

/** What an {@linkcode OwnerConflictError} found. */
export interface OwnerConflictOptions {
  /** The owner found, or `null` when there was no record. */
  owner: string | null;
  /** The store's revision when the conflict was seen, if the store said it. */
  revision?: number;
}
