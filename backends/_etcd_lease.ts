// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's etcd lease: one lease per agent (TTL `ttl`, kept alive by
 * the client library on one stream), to which every key it writes is
 * attached. An idle agent costs etcd one keep-alive per third of the TTL,
 * whatever the number of instances. When the agent dies, etcd deletes its
 * keys when the lease expires.
 *
 * The library renews on one long-lived stream; when the member behind it
 * hangs, renewals stop although other members are fine. So
 * {@linkcode AgentLease.check}, called every half second, renews once more
 * on a fresh call with a deadline (which the connection pool may send to
 * another member) when no renewal has succeeded for half the TTL.
 *
 * It also knows how long the lease is certain to live: etcd starts a
 * lease's TTL over when it handles a keep-alive, which is after the agent
 * sent it, so a lease renewed by a keep-alive sent at T cannot expire
 * before T + TTL ({@linkcode AgentLease.left}). The library's stream does
 * not say which keep-alive a response answers: the send times of the
 * keep-alives fired on the current stream are queued, each response takes
 * the oldest, and a new stream starts the queue over, so a renewal is
 * never credited with a later send time than its own.
 *
 * Every lease granted is remembered (the last {@linkcode MAX_OWN_LEASES}):
 * a key attached to one of them, lost ones included, was written by this
 * agent.
 *
 * @module
 */

import type { Etcd3, Lease } from "etcd3";

/** Lease ids remembered as this agent's (one is added per lost lease). */
export const MAX_OWN_LEASES = 64;

/** What {@linkcode AgentLease} tells its owner. */
export interface AgentLeaseEvents {
  /** A grant or a renewal of the current lease succeeded. */
  renewed(): void;
  /** The current lease `id` is lost (expired, or revoked by etcd). */
  lost(id: string, error: unknown): void;
  /** Half the TTL without a renewal, and a renewal on a fresh call failed. */
  failed(error: unknown): void;
}

/** Options of {@linkcode AgentLease}. */
export interface AgentLeaseOptions {
  /** TTL of the lease, in whole seconds. */
  ttl: number;
  /** Deadline of unary calls, in milliseconds (a renewal waits at most 1 s). */
  callTimeout: number;
  /** What to tell. */
  events: AgentLeaseEvents;
}

/**
 * Grants, renews and remembers the agent's lease.
 *
 * @example Usage
 * ```ts ignore
 * import { AgentLease } from "./_etcd_lease.ts";
 * const lease = new AgentLease(client, { ttl: 10, callTimeout: 3000, events });
 * const id = await lease.current();
 * ```
 */
export class AgentLease {
  readonly #client: Etcd3;
  readonly #ttl: number;
  readonly #callTimeout: number;
  readonly #events: AgentLeaseEvents;
  #lease?: Lease;
  #id?: string;
  /** The lease being granted or granted: every write and the restore share it. */
  #ready?: Promise<string>;
  /** Every lease granted, lost ones included (the newest last). */
  #ours = new Set<string>();
  #lastRenewal = 0;
  /** `performance.now()` at the send of the latest keep-alive known to have renewed the lease. */
  #renewedSent = -Infinity;
  /** Send times of the keep-alives fired on the current stream and not answered yet. */
  #fired: number[] = [];
  #renewing = false;
  #closed = false;

  /**
   * Creates the keeper; nothing is granted before {@linkcode AgentLease.current}.
   *
   * @param client The etcd client.
   * @param options TTL, deadline and events.
   */
  constructor(client: Etcd3, options: AgentLeaseOptions) {
    this.#client = client;
    this.#ttl = options.ttl;
    this.#callTimeout = options.callTimeout;
    this.#events = options.events;
  }

  /** The id of the current lease, once granted. */
  get id(): string | undefined {
    return this.#id;
  }

  /**
   * Milliseconds from now before which the current lease cannot expire at
   * etcd (see the module documentation); 0 without a lease, or once it may
   * have expired.
   *
   * @returns The milliseconds left, at least 0.
   */
  left(): number {
    if (!this.#lease) return 0;
    const left = this.#renewedSent + this.#ttl * 1000 - performance.now();
    return Math.max(0, left);
  }

  /**
   * Whether `id` is one of this agent's leases, current or lost.
   *
   * @param id A lease id, as a decimal string.
   * @returns Whether it is ours.
   */
  ours(id: string): boolean {
    return this.#ours.has(id);
  }

  /**
   * The current lease, granted first if there is none; a failed grant
   * rejects, and the next call tries again.
   *
   * @returns The lease id.
   */
  current(): Promise<string> {
    return this.#ready ??= this.#grant().catch((error) => {
      this.#ready = undefined;
      throw error;
    });
  }

  /** Forgets the current lease (it was lost): the next {@linkcode AgentLease.current} grants a new one. */
  drop(): void {
    this.#lease?.removeAllListeners();
    this.#lease?.release();
    this.#lease = undefined;
    this.#id = undefined;
    this.#ready = undefined;
    this.#renewedSent = -Infinity;
    this.#fired = [];
  }

  /**
   * Renews once on a fresh call when no renewal has succeeded for half the
   * TTL (see the module documentation).
   */
  async check(): Promise<void> {
    const lease = this.#lease;
    if (!lease || this.#renewing || this.#closed) return;
    const quiet = Date.now() - this.#lastRenewal;
    if (quiet < (this.#ttl * 1000) / 2) return;
    this.#renewing = true;
    const sent = performance.now();
    try {
      const response = await lease.keepaliveOnce({
        deadline: Date.now() + Math.min(this.#callTimeout, 1000),
      });
      if (this.#lease !== lease) return;
      if (expired(response)) {
        this.#events.lost(this.#id!, expiredError(response));
        return;
      }
      this.#lastRenewal = Date.now();
      this.#credit(sent);
      this.#events.renewed();
    } catch (error) {
      this.#events.failed(error);
    } finally {
      this.#renewing = false;
    }
  }

  /** A keep-alive sent at `sent` renewed the lease. */
  #credit(sent: number) {
    if (sent > this.#renewedSent) this.#renewedSent = sent;
  }

  /** Stops keeping the lease alive, without revoking it. */
  close(): void {
    this.#closed = true;
    this.drop();
  }

  async #grant(): Promise<string> {
    // The grant request is sent by the constructor: its TTL runs from
    // when etcd handles it, after this.
    const sent = performance.now();
    const lease = this.#client.lease(this.#ttl);
    // Fired just before each keep-alive is written; a new stream's first
    // comes right after `keepaliveEstablished`.
    lease.on("keepaliveEstablished", () => {
      if (this.#lease === lease || this.#lease === undefined) this.#fired = [];
    });
    lease.on("keepaliveFired", () => {
      if (this.#lease === lease || this.#lease === undefined) {
        this.#fired.push(performance.now());
      }
    });
    lease.on("keepaliveFailed", () => {
      if (this.#lease === lease) this.#fired = [];
    });
    lease.on("lost", (error) => {
      if (this.#lease === lease) this.#events.lost(this.#id!, error);
    });
    lease.on("keepaliveSucceeded", (response) => {
      if (this.#lease !== lease) return;
      if (expired(response)) {
        this.#events.lost(this.#id!, expiredError(response));
        return;
      }
      this.#lastRenewal = Date.now();
      const sent = this.#fired.shift();
      if (sent !== undefined) this.#credit(sent);
      this.#events.renewed();
    });
    let id: string;
    try {
      id = await lease.grant();
    } catch (error) {
      lease.removeAllListeners();
      lease.release();
      throw error;
    }
    if (this.#closed) {
      lease.removeAllListeners();
      lease.release();
      throw new Error("the etcd backend closed while its lease was granted");
    }
    this.#lastRenewal = Date.now();
    this.#lease = lease;
    this.#id = id;
    this.#renewedSent = sent;
    this.#ours.add(id);
    if (this.#ours.size > MAX_OWN_LEASES) {
      this.#ours.delete(this.#ours.values().next().value!);
    }
    this.#events.renewed();
    return id;
  }
}

/**
 * Whether a keep-alive response says the lease is gone. etcd answers TTL 0
 * for an expired lease, which the client library reports as lost; the gRPC
 * proxy of etcd 3.4 answers -1, which the library takes for a renewal.
 *
 * @param response A keep-alive response.
 * @returns Whether the lease no longer exists.
 */
export function expired(response: { TTL: string | number }): boolean {
  return Number(response.TTL) <= 0;
}

function expiredError(response: { TTL: string | number }): Error {
  return new Error(
    `the etcd lease expired (a keep-alive answered TTL ${response.TTL})`,
  );
}
