// Copyright the discover authors. BSD-3-Clause license.

/**
 * The backend interface: where an agent keeps registrations.
 *
 * A backend stores records keyed by (service, addr), gives every change a
 * revision from one counter that never decreases, and streams the changes
 * to the agent that opened it. The agent keeps its own view of every
 * service from that stream (one stream per agent, however many
 * subscribers it has), answers reads from the view, and fans changes out.
 *
 * ## What a backend must guarantee
 *
 * 1. **One order.** Every change has a revision; revisions increase
 *    across all services, except that changes made in one transaction
 *    share a revision, and then arrive together in one
 *    {@linkcode BackendWatcher.changes} call. Changes arrive in revision
 *    order, each exactly once, and never with a revision below one already
 *    delivered (a {@linkcode BackendWatcher.reset} restarts the sequence at
 *    its revision).
 * 2. **Read your writes.** The revision that {@linkcode Backend.put} or
 *    {@linkcode Backend.delete} resolves with is eventually delivered to
 *    the watcher (or covered by a reset at or above it); the agent waits
 *    for it before it answers the client, so a client that registered can
 *    read its own registration at once.
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
 *    not one write per record).
 * 6. **Resync.** When the backend cannot deliver a gap-free change stream
 *    (a compacted revision, a lost watch), it calls
 *    {@linkcode BackendWatcher.reset} with the complete current state; the
 *    agent diffs it against its view and emits only the real differences.
 * 7. **Status.** It reports whether the store is reachable through
 *    {@linkcode BackendWatcher.status}; while it is not, the agent keeps
 *    serving its last known view and says so.
 *
 * The memory backend (`backends/memory.ts`) is the smallest complete
 * implementation; `backends/backend_suite.ts` is the shared test suite a
 * new backend must pass.
 *
 * @module
 */

import type { Attrs } from "../protocol/types.ts";

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

/** Receives what a backend has to tell its agent. */
export interface BackendWatcher {
  /** Changes, in revision order, each delivered once. */
  changes(changes: BackendChange[]): void;
  /** The complete state, replacing everything delivered before. */
  reset(state: BackendState): void;
  /** Whether the store is reachable. */
  status(connected: boolean): void;
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
}

/** A store of registrations. See the module documentation for its contract. */
export interface Backend {
  /** Short name shown in status (`memory`, `etcd`, ...). */
  readonly name: string;
  /**
   * Connects, delivers the current state to `watcher.reset`, then streams
   * changes to `watcher.changes` until {@linkcode Backend.close}. A store
   * that cannot be reached yet does not make it reject or wait: it says
   * `watcher.status(false)`, resolves, and keeps trying; the state follows
   * once it connects. (A watcher starts out not connected.)
   *
   * @param watcher Where to deliver state and changes.
   */
  open(watcher: BackendWatcher): Promise<void>;
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
  /** Stops the stream and releases the store (and with it this agent's records, where the store keeps them per agent). */
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
