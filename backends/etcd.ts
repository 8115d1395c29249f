// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend (etcd v3 API, npm `etcd3`): agents on many hosts share
 * one etcd cluster, and a service registered through any agent is seen by
 * subscribers on every agent.
 *
 * ## Key layout
 *
 * Every instance is one key, `<prefix>instances/<service>/<addr>` (the
 * prefix defaults to `/discover/`), whose value is the JSON object
 * `{"attrs":{...},"owner":"...","registeredAt":<ms>}`. Service names never
 * contain `/` and addresses never contain `/`, so a key can never leave its
 * service's range. Keys under the prefix that do not parse are ignored and
 * logged.
 *
 * ## Liveness without write storms
 *
 * Each agent holds one etcd lease (TTL `leaseTtl`, kept alive by the client
 * library) and attaches every key it writes to it. An idle agent costs etcd
 * one lease keep-alive per third of the TTL, whatever the number of
 * instances; only real changes write. When the agent dies, etcd deletes its
 * keys when the lease expires. When the lease is lost (etcd unreachable for
 * longer than the TTL), the backend grants a new one and writes back every
 * record it keeps (see {@linkcode EtcdBackend.keeps}): written through it,
 * not deleted through it since (a delete counts from the call, even one
 * that failed because etcd was away), and not written by anyone else
 * meanwhile (a key attached to a lease that is not one of this agent's).
 * Subscribers see only what really changed.
 *
 * ## Watching
 *
 * One prefix watch per agent, however many subscribers it has. A broken
 * stream resumes from the last revision seen; a compacted revision (or any
 * other watch failure) triggers a full resync: the current state is read
 * and handed to the agent, which emits only the real differences.
 *
 * The full read is paginated: pages of at most {@linkcode READ_PAGE_KEYS}
 * keys, all read at the revision of the first page (one consistent
 * snapshot, however large the registry), and a page that exceeds gRPC's
 * message limit (4 MiB by default) is read again at half the size, down
 * to one key. A registry of any size can be read; a single record larger
 * than the gRPC limit cannot (the agent's frame limit keeps records far
 * smaller).
 *
 * ## Failures
 *
 * Every unary call has a deadline (`callTimeout`). With several endpoints,
 * a member whose call fails in a way that points at the member (deadline,
 * unavailable) is left out until it answers a probe, so one hung member
 * costs one deadline, not one per call. gRPC keep-alive pings detect a hung
 * member under the watch and lease streams within seconds.
 * Revisions are etcd's, and the epoch is the etcd cluster id, so a `since`
 * from one agent means the same at every other.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  Etcd3,
  EtcdLeaseInvalidError,
  GRPCResourceExhastedError,
  type IOptions,
  type Lease,
  Range,
  type Watcher,
} from "etcd3";
import {
  type Backend,
  type BackendChange,
  type BackendWatcher,
  OwnerConflictError,
  type StoredRecord,
  type WriteOptions,
} from "./backend.ts";
import { SERVICE_NAME_PATTERN, validateAddr } from "../protocol/validate.ts";
import { EndpointHealth, type HostPolicy } from "./_etcd_health.ts";
import { Backoff } from "../protocol/backoff.ts";

type FaultHandling = NonNullable<IOptions["faultHandling"]>;
type PoolHostPolicy = ReturnType<NonNullable<FaultHandling["host"]>>;
type PoolGlobalPolicy = NonNullable<FaultHandling["global"]>;

/** A policy that runs every call as it is. */
const PASS_THROUGH: HostPolicy = {
  execute: async (fn) => await fn({ signal: new AbortController().signal }),
};

/** Deadline of a health probe of one member, in ms. */
const PROBE_TIMEOUT_MS = 1000;

/** What the etcd backend logs. */
export interface EtcdLogger {
  /** Normal operation. */
  info(message: string, fields?: Record<string, unknown>): void;
  /** Something went wrong and was handled. */
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** Options of {@linkcode EtcdBackend}. */
export interface EtcdBackendOptions {
  /** etcd client URLs, e.g. `["http://127.0.0.1:2379"]`. */
  endpoints: string[];
  /**
   * Key prefix; must start and end with `/`.
   *
   * @default {"/discover/"}
   */
  prefix?: string;
  /**
   * TTL of the agent's lease, in seconds: how long the instances of a dead
   * agent outlive it.
   *
   * @default {10}
   */
  leaseTtl?: number;
  /**
   * Deadline of every unary etcd call, in milliseconds.
   *
   * @default {3000}
   */
  callTimeout?: number;
  /** TLS: the CA certificate, and a client certificate and key for mutual TLS. */
  tls?: { ca: Uint8Array; cert?: Uint8Array; key?: Uint8Array };
  /** User name and password, for etcd's authentication. */
  auth?: { username: string; password: string };
  /** Where to log; nothing is logged without it. */
  log?: EtcdLogger;
}

interface Known {
  owner: string;
  modRevision: string;
  lease: string;
}

const RESYNC_DELAY_MS = 500;

/** Retries of the resync and of the lease restore. */
const RETRY = { initialDelay: 250, maxDelay: 4000 };

/** Most keys one page of the full read asks for. */
export const READ_PAGE_KEYS = 1000;

/** Lease ids remembered as this agent's (one is added per lost lease). */
const MAX_OWN_LEASES = 64;

/**
 * A {@linkcode Backend} on etcd v3. See the module documentation for the
 * key layout and failure behaviour.
 *
 * @example Usage
 * ```ts ignore
 * import { EtcdBackend } from "./etcd.ts";
 * const backend = new EtcdBackend({ endpoints: ["http://127.0.0.1:2379"] });
 * ```
 */
export class EtcdBackend implements Backend {
  /** Always `"etcd"`. */
  readonly name = "etcd";
  readonly #etcdOptions: IOptions;
  #client!: Etcd3;
  readonly #prefix: string;
  readonly #instances: string;
  readonly #leaseTtl: number;
  readonly #log?: EtcdLogger;
  #sink?: BackendWatcher;
  #lease?: Lease;
  #leaseId?: string;
  /** The lease being granted or granted: every write and the restore share it. */
  #leaseReady?: Promise<string>;
  #watcher?: Watcher;
  #epoch = "";
  /** What the watch told us about each key: for conditional writes and `keeps`. */
  #known = new Map<string, Known>();
  /** Records this agent keeps alive (see `keeps`): written back after a lost lease. */
  #mine = new Map<string, StoredRecord>();
  /** Every lease this backend was granted, lost ones included (the newest last). */
  #ours = new Set<string>();
  #closed = false;
  #resyncing?: Promise<void>;
  /** What `status` last said: the watch is live and the lease is renewed. */
  #connected = false;
  #watchUp = false;
  #leaseUp = false;
  /** A lost lease is being replaced and its records written back. */
  #restoring = false;
  /** Revision of the last full read: watch events up to it are in it. */
  #readRevision = 0;
  /** Watch responses held while a catch-up read is under way. */
  // deno-lint-ignore no-explicit-any
  #held?: any[];
  readonly #callTimeout: number;
  /** Writes per key, one at a time (a lease restore must not race an unregister). */
  #locks = new Map<string, Promise<unknown>>();
  #lastRenewal = 0;
  #watchdog?: ReturnType<typeof setInterval>;
  #renewing = false;
  #health?: EndpointHealth;
  #probes = new Map<string, Etcd3>();

  /**
   * Creates the backend; nothing connects before {@linkcode EtcdBackend.open}.
   *
   * @param options Endpoints, prefix, lease TTL, deadlines, TLS and auth.
   */
  constructor(options: EtcdBackendOptions) {
    if (options.endpoints.length === 0) {
      throw new TypeError(
        "'endpoints' must list at least one etcd URL, e.g. http://127.0.0.1:2379",
      );
    }
    const prefix = options.prefix ?? "/discover/";
    if (!prefix.startsWith("/") || !prefix.endsWith("/")) {
      throw new TypeError(
        `'prefix' must start and end with '/': current value is '${prefix}'`,
      );
    }
    this.#prefix = prefix;
    this.#instances = `${prefix}instances/`;
    this.#leaseTtl = options.leaseTtl ?? 10;
    if (!Number.isInteger(this.#leaseTtl) || this.#leaseTtl < 2) {
      throw new RangeError(
        `'leaseTtl' must be a whole number of seconds, at least 2: current value is ${this.#leaseTtl}`,
      );
    }
    this.#log = options.log;
    const callTimeout = options.callTimeout ?? 3000;
    this.#callTimeout = callTimeout;
    const etcdOptions: IOptions = {
      hosts: options.endpoints,
      dialTimeout: callTimeout,
      // Unary calls get a deadline; streams (watch, keep-alive) rely on
      // gRPC keep-alive pings to notice a hung member. etcd refuses pings
      // more often than every 5 s by default.
      defaultCallOptions: (context) =>
        context.isStream ? {} : { deadline: Date.now() + callTimeout },
      grpcOptions: {
        "grpc.keepalive_time_ms": 6000,
        "grpc.keepalive_timeout_ms": 2000,
        "grpc.keepalive_permit_without_calls": 1,
      },
    };
    if (options.tls) {
      etcdOptions.credentials = {
        rootCertificate: toBuffer(options.tls.ca),
        certChain: options.tls.cert && toBuffer(options.tls.cert),
        privateKey: options.tls.key && toBuffer(options.tls.key),
      };
    }
    if (options.auth) etcdOptions.auth = options.auth;
    this.#etcdOptions = etcdOptions;
  }

  /** The key prefix. */
  get prefix(): string {
    return this.#prefix;
  }

  /**
   * Grants the lease, reads the current state, delivers it, and starts the
   * watch.
   *
   * @param watcher Where to deliver state and changes.
   */
  async open(watcher: BackendWatcher): Promise<void> {
    this.#sink = watcher;
    this.#closed = false;
    let clientOptions = this.#etcdOptions;
    const endpoints = clientOptions.hosts as string[];
    if (endpoints.length > 1) {
      // A member that fails a call is left out until it answers a probe,
      // instead of being picked at random again (see _etcd_health.ts).
      const health = this.#health = new EndpointHealth(
        endpoints,
        (endpoint) => this.#probe(endpoint),
        { log: this.#log, onDown: () => this.#moveWatch() },
      );
      clientOptions = {
        ...clientOptions,
        faultHandling: {
          host: (endpoint) => health.policy(endpoint) as PoolHostPolicy,
        },
      };
    }
    this.#client = new Etcd3(clientOptions);
    await this.#currentLease();
    await this.#resync();
    this.#watchdog = setInterval(() => void this.#checkLease(), 500);
  }

  /**
   * Whether this agent keeps the record alive: written through this
   * backend, not deleted through it since, and not written by another
   * agent since (as far as the watch told). A kept record lost with a
   * lease is written back under the next one.
   *
   * @param service The service.
   * @param addr The address.
   * @returns Whether the record is kept alive by this agent.
   */
  keeps(service: string, addr: string): boolean {
    return this.#mine.has(this.#key(service, addr));
  }

  /**
   * Stops keeping the record alive: it is not written back after a lost
   * lease.
   *
   * @param service The service.
   * @param addr The address.
   * @param options Only if the kept record's owner is `ifOwner`.
   */
  release(
    service: string,
    addr: string,
    options: { ifOwner?: string } = {},
  ): void {
    this.#release(this.#key(service, addr), options.ifOwner);
  }

  #release(key: string, owner: string | null | undefined): void {
    if (owner === undefined || this.#mine.get(key)?.owner === owner) {
      this.#mine.delete(key);
    }
  }

  /**
   * The modification revision of the record, as the watch last told.
   *
   * @param service The service.
   * @param addr The address.
   * @returns The revision, as a string, if the record is known.
   */
  version(service: string, addr: string): string | undefined {
    return this.#known.get(this.#key(service, addr))?.modRevision;
  }

  /**
   * Creates or replaces a record, attached to this agent's lease.
   *
   * @param record The record.
   * @param options The owner condition.
   * @returns The revision of the write.
   */
  async put(record: StoredRecord, options: WriteOptions = {}): Promise<number> {
    const key = this.#key(record.service, record.addr);
    const value = JSON.stringify({
      attrs: record.attrs,
      owner: record.owner,
      registeredAt: record.registeredAt,
    });
    for (let attempt = 1;; attempt++) {
      const leaseId = await this.#currentLease();
      try {
        return await this.#serial(key, async () => {
          const revision = await this.#conditional(
            key,
            options,
            (client) => client.put(key).value(value).lease(leaseId),
          );
          this.#mine.set(key, { ...record, attrs: { ...record.attrs } });
          return revision;
        });
      } catch (error) {
        if (!(error instanceof EtcdLeaseInvalidError) || attempt > 1) {
          throw error;
        }
        // etcd expired our lease before the keep-alive loop noticed.
        this.#leaseLost(leaseId, error);
      }
    }
  }

  /**
   * Removes a record.
   *
   * @param service The service.
   * @param addr The address.
   * @param options The owner condition.
   * @returns The revision of the removal, or `undefined` when there was no record.
   */
  async delete(
    service: string,
    addr: string,
    options: WriteOptions = {},
  ): Promise<number | undefined> {
    const key = this.#key(service, addr);
    // From now on the record is not ours to keep, whatever etcd answers:
    // a lease restore must never write back what an owner let go (again
    // once the writes of this key queued before it have settled).
    this.#release(key, options.ifOwner);
    return await this.#serial(key, () => {
      this.#release(key, options.ifOwner);
      return this.#deleteNow(key, options);
    });
  }

  async #deleteNow(
    key: string,
    options: WriteOptions,
  ): Promise<number | undefined> {
    if (!conditional(options)) {
      const res = await this.#client.delete().key(key).exec();
      return Number(res.deleted) > 0 ? Number(res.header.revision) : undefined;
    }
    try {
      return await this.#conditional(
        key,
        options,
        (client) => client.delete().key(key),
        true,
      );
    } catch (error) {
      if (error instanceof OwnerConflictError && error.owner === null) {
        return undefined;
      }
      throw error;
    }
  }

  /**
   * Stops watching and stops keeping the lease alive, without revoking it:
   * the records outlive the agent by the lease TTL, so an agent restarted
   * within it takes them over with no flap at subscribers.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#sink = undefined;
    clearInterval(this.#watchdog);
    const watcher = this.#watcher;
    this.#watcher = undefined;
    await watcher?.cancel().catch(() => {});
    this.#lease?.removeAllListeners();
    this.#lease?.release();
    this.#leaseReady = undefined;
    this.#health?.close();
    for (const probe of this.#probes.values()) probe.close();
    this.#probes.clear();
    this.#client.close();
  }

  /**
   * A member was left out: the watch stream may be on it, and would wait
   * for gRPC keep-alive (up to 8 s) to notice. Restart the stream now; the
   * connection pool opens it on a member that is not left out, and every
   * watcher resumes from the last revision it saw, so nothing is missed.
   * `etcd3` has no public call for this: its watch manager's error path
   * is that call.
   */
  #moveWatch() {
    // deno-lint-ignore no-explicit-any
    const manager = (this.#client as any)?.watchManager;
    if (this.#closed || !this.#watcher) return;
    if (typeof manager?.handleError !== "function") return;
    manager.handleError(
      new Error("an etcd member was left out; moving the watch stream"),
    );
  }

  /**
   * Resolves when `endpoint` answers a status call. A member without a
   * leader (an election under way) answers too: calls sent to it wait for
   * the election, as they would anywhere; only a member that cannot answer
   * at all stays left out.
   */
  async #probe(endpoint: string): Promise<void> {
    let client = this.#probes.get(endpoint);
    if (!client) {
      client = new Etcd3({
        ...this.#etcdOptions,
        hosts: [endpoint],
        dialTimeout: PROBE_TIMEOUT_MS,
        faultHandling: {
          host: () => PASS_THROUGH as PoolHostPolicy,
          global: PASS_THROUGH as PoolGlobalPolicy,
        },
      });
      this.#probes.set(endpoint, client);
    }
    await client.maintenance.status({
      deadline: Date.now() + PROBE_TIMEOUT_MS,
    });
  }

  /** Runs `fn` after every earlier write of `key` has settled. */
  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(key) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const settled = run.catch(() => {});
    this.#locks.set(key, settled);
    settled.then(() => {
      if (this.#locks.get(key) === settled) this.#locks.delete(key);
    });
    return run;
  }

  /**
   * The client library renews the lease on one long-lived stream; when the
   * member behind it hangs, renewals stop although other members are fine.
   * When no renewal has succeeded for half the TTL, renew once more on a
   * fresh call with a deadline, which the connection pool may send to
   * another member.
   */
  async #checkLease() {
    const lease = this.#lease;
    if (!lease || this.#renewing || this.#closed) return;
    const quiet = Date.now() - this.#lastRenewal;
    if (quiet < (this.#leaseTtl * 1000) / 2) return;
    this.#renewing = true;
    try {
      await lease.keepaliveOnce({
        deadline: Date.now() + Math.min(this.#callTimeout, 1000),
      });
      this.#lastRenewal = Date.now();
      if (this.#lease === lease && !this.#restoring) {
        this.#status({ lease: true });
      }
    } catch (error) {
      // Half the TTL without a renewal: the agent may be cut off, and its
      // records may expire. Say so (subscribers are told their state may
      // be stale, writes fail fast) until a renewal succeeds.
      this.#status({ lease: false });
      this.#log?.warn("etcd lease renewal failed; retrying", { error });
    } finally {
      this.#renewing = false;
    }
  }

  #key(service: string, addr: string): string {
    return `${this.#instances}${service}/${addr}`;
  }

  /** Runs `op` in a transaction guarded by the owner condition. */
  async #conditional(
    key: string,
    options: WriteOptions,
    // deno-lint-ignore no-explicit-any
    op: (client: Etcd3) => any,
    removal = false,
  ): Promise<number> {
    if (!conditional(options)) {
      const res = await op(this.#client).exec();
      return Number(res.header.revision);
    }
    let known = this.#known.get(key);
    /** The store's revision at the last transaction, once there was one. */
    let revision: number | undefined;
    /** Whether `known` comes from the store itself rather than the watch. */
    let fresh = false;
    const conflict = () =>
      new OwnerConflictError(...this.#split(key), {
        owner: known?.owner ?? null,
        revision,
      });
    for (let attempt = 0; attempt < 3; attempt++) {
      if (!this.#allows(known, options)) {
        // A removal is never given up on what the watch says alone: it may
        // lag (a record just written back under a new lease, say).
        if (!removal || fresh) throw conflict();
        const res = await this.#client.get(key).exec();
        revision = Number(res.header.revision);
        const kv = res.kvs[0];
        known = kv ? this.#parseKnown(kv) : undefined;
        fresh = true;
        attempt--;
        continue;
      }
      const txn = known === undefined
        ? this.#client.if(key, "Create", "==", 0)
        : this.#client.if(key, "Mod", "==", known.modRevision);
      const res = await txn.then(op(this.#client)).else(this.#client.get(key))
        .commit();
      if (res.succeeded) return Number(res.header.revision);
      // The key changed since the watch told us about it: look again.
      revision = Number(res.header.revision);
      const kv = res.responses[0]?.response_range?.kvs?.[0];
      known = kv ? this.#parseKnown(kv) : undefined;
      fresh = true;
    }
    throw conflict();
  }

  /** Whether a write's conditions hold for the record as `known` says it is. */
  #allows(known: Known | undefined, options: WriteOptions): boolean {
    const owner = known?.owner ?? null;
    if (options.ifOwner !== undefined && owner !== options.ifOwner) {
      return false;
    }
    // Absent, or attached to another agent's lease: not ours to remove.
    if (options.ifKept && (!known || !this.#ours.has(known.lease))) {
      return false;
    }
    // Written again since: not the record the write was meant for, unless
    // only this agent moved it to a new lease (a restore; any other write
    // through this agent withdraws a pending removal first).
    if (
      options.ifVersion !== undefined &&
      known?.modRevision !== options.ifVersion &&
      !(known && this.#ours.has(known.lease) && owner === options.ifOwner)
    ) {
      return false;
    }
    return true;
  }

  #split(key: string): [string, string] {
    const rest = key.slice(this.#instances.length);
    const slash = rest.indexOf("/");
    return [rest.slice(0, slash), rest.slice(slash + 1)];
  }

  // deno-lint-ignore no-explicit-any
  #parseKnown(kv: any): Known | undefined {
    try {
      const { owner } = JSON.parse(kv.value.toString());
      return { owner, modRevision: kv.mod_revision, lease: String(kv.lease) };
    } catch {
      return undefined;
    }
  }

  /** Parses a key and value into a record, or `undefined` (logged) when they are not ours. */
  // deno-lint-ignore no-explicit-any
  #parse(kv: any): StoredRecord | undefined {
    const key = kv.key.toString();
    const [service, addr] = this.#split(key);
    try {
      if (!SERVICE_NAME_PATTERN.test(service) || validateAddr(addr) !== addr) {
        throw new Error("not a valid service/addr key");
      }
      const value = JSON.parse(kv.value.toString());
      if (
        typeof value.owner !== "string" ||
        typeof value.registeredAt !== "number" ||
        typeof value.attrs !== "object" || value.attrs === null ||
        Object.values(value.attrs).some((v) => typeof v !== "string")
      ) throw new Error("the value is not a discover record");
      return {
        service,
        addr,
        attrs: value.attrs,
        owner: value.owner,
        registeredAt: value.registeredAt,
      };
    } catch (error) {
      this.#log?.warn("ignoring a key that is not a discover record", {
        key,
        error,
      });
      return undefined;
    }
  }

  #currentLease(): Promise<string> {
    return this.#leaseReady ??= this.#grantLease().catch((error) => {
      this.#leaseReady = undefined;
      throw error;
    });
  }

  async #grantLease(): Promise<string> {
    const lease = this.#client.lease(this.#leaseTtl);
    lease.on("lost", (error) => {
      if (this.#lease === lease) this.#leaseLost(this.#leaseId!, error);
    });
    lease.on("keepaliveSucceeded", () => {
      this.#lastRenewal = Date.now();
      if (this.#lease === lease && !this.#restoring) {
        this.#status({ lease: true });
      }
    });
    const id = await lease.grant();
    this.#lastRenewal = Date.now();
    this.#lease = lease;
    this.#leaseId = id;
    this.#ours.add(id);
    if (this.#ours.size > MAX_OWN_LEASES) {
      this.#ours.delete(this.#ours.values().next().value!);
    }
    if (!this.#restoring) this.#status({ lease: true });
    return id;
  }

  #leaseLost(leaseId: string, error: unknown) {
    if (this.#closed || this.#leaseId !== leaseId) return;
    this.#log?.warn("etcd lease lost; granting a new one", { error });
    this.#lease?.removeAllListeners();
    this.#lease?.release();
    this.#lease = undefined;
    this.#leaseId = undefined;
    this.#leaseReady = undefined;
    this.#status({ lease: false });
    void this.#restoreLease();
  }

  /** After a lost lease: a new lease, and every record we hold written back. */
  async #restoreLease(): Promise<void> {
    if (this.#restoring) return; // the running restore picks the new lease up
    this.#restoring = true;
    try {
      await this.#retrying("restore the etcd lease", async () => {
        const leaseId = await this.#currentLease();
        for (const [key, record] of [...this.#mine]) {
          await this.#serial(
            key,
            () => this.#restoreKey(key, record, leaseId),
          );
        }
        if (this.#leaseId !== leaseId) return false; // lost again meanwhile
        this.#log?.info("etcd lease restored", { records: this.#mine.size });
        this.#restoring = false;
        this.#status({ lease: true });
        return true;
      });
    } finally {
      this.#restoring = false;
    }
  }

  /**
   * Writes one record back under the new lease, where the key is gone or
   * still attached to one of this agent's leases with the same owner;
   * anything else means another agent wrote it meanwhile, and the record
   * is no longer ours to keep.
   */
  async #restoreKey(key: string, record: StoredRecord, leaseId: string) {
    if (this.#mine.get(key) !== record) return; // unregistered or rewritten
    const value = JSON.stringify({
      attrs: record.attrs,
      owner: record.owner,
      registeredAt: record.registeredAt,
    });
    const res = await this.#client.if(key, "Create", "==", 0)
      .then(this.#client.put(key).value(value).lease(leaseId))
      .else(this.#client.get(key)).commit();
    if (res.succeeded) return;
    const kv = res.responses[0]?.response_range?.kvs?.[0];
    const current = kv ? this.#parseKnown(kv) : undefined;
    if (
      current === undefined || current.owner !== record.owner ||
      !this.#ours.has(current.lease)
    ) {
      if (this.#mine.get(key) === record) this.#mine.delete(key);
      return;
    }
    if (current.lease === leaseId) return; // already written back
    const moved = await this.#client.if(key, "Mod", "==", current.modRevision)
      .then(this.#client.put(key).value(value).lease(leaseId))
      .commit();
    if (!moved.succeeded) throw new Error(`'${key}' changed while restoring`);
  }

  /**
   * Tells the agent whether the store is reachable: the watch is live and
   * the lease is renewed (a lost lease counts as unreachable until its
   * records are written back).
   */
  #status(parts: { watch?: boolean; lease?: boolean }) {
    if (parts.watch !== undefined) this.#watchUp = parts.watch;
    if (parts.lease === true && !this.#leaseUp && this.#watcher) {
      // Back after the lease was in doubt: the watch may lag as well.
      this.#leaseUp = true;
      void this.#catchUp();
      return;
    }
    if (parts.lease !== undefined) this.#leaseUp = parts.lease;
    const connected = this.#watchUp && this.#leaseUp;
    if (connected === this.#connected) return;
    this.#connected = connected;
    this.#sink?.status(connected);
  }

  /** Reads everything, delivers it as a reset, and watches from there. */
  #resync(): Promise<void> {
    return this.#resyncing ??= (async () => {
      try {
        await this.#retrying("resync with etcd", async () => {
          try {
            await this.#resyncOnce();
            return true;
          } catch (error) {
            this.#status({ watch: false });
            throw error;
          }
        });
      } finally {
        this.#resyncing = undefined;
      }
    })();
  }

  /**
   * Runs `attempt` until it says it is done (`true`) or the backend
   * closes; a failure is logged and waits out the backoff, a `false`
   * tries again at once.
   */
  async #retrying(
    what: string,
    attempt: () => Promise<boolean>,
  ): Promise<void> {
    const backoff = new Backoff(RETRY);
    while (!this.#closed) {
      try {
        if (await attempt()) return;
      } catch (error) {
        this.#log?.warn(`could not ${what} yet; retrying`, { error });
        await backoff.wait();
      }
    }
  }

  async #resyncOnce(): Promise<void> {
    const old = this.#watcher;
    this.#watcher = undefined;
    await old?.cancel().catch(() => {});
    const revision = await this.#readState();
    if (revision === undefined) return;
    this.#status({ watch: true });
    const watcher = await this.#client.watch().prefix(this.#instances)
      .startRevision(String(revision + 1)).create();
    if (this.#closed) {
      await watcher.cancel().catch(() => {});
      return;
    }
    this.#watcher = watcher;
    watcher.on("data", (response) => this.#onData(response));
    let lost = false;
    watcher.on("disconnected", () => {
      lost = true;
      this.#status({ watch: false });
    });
    watcher.on("connected", () => {
      if (!lost || this.#closed || this.#watcher !== watcher) return;
      lost = false;
      void this.#catchUp();
    });
    watcher.on("error", (error) => {
      if (this.#closed || this.#watcher !== watcher) return;
      this.#status({ watch: false });
      this.#log?.warn("etcd watch failed (compacted?); resyncing", { error });
      setTimeout(() => void this.#resync(), RESYNC_DELAY_MS);
    });
  }

  /**
   * Reads everything and hands it to the agent as a reset; the watch
   * events at or below its revision are already in it.
   *
   * @returns The revision read, or `undefined` once closed.
   */
  async #readState(): Promise<number | undefined> {
    const { revision, clusterId, kvs } = await this.#readAll();
    if (this.#closed) return undefined;
    this.#epoch = `etcd-${clusterId}`;
    const records: StoredRecord[] = [];
    this.#known.clear();
    for (const kv of kvs) {
      const record = this.#parse(kv);
      if (!record) continue;
      const key = kv.key.toString();
      const known = knownOf(record, kv);
      records.push(record);
      this.#known.set(key, known);
      if (!this.#ours.has(known.lease)) this.#mine.delete(key);
    }
    this.#readRevision = revision;
    this.#sink?.reset({ revision, epoch: this.#epoch, records });
    return revision;
  }

  /**
   * After the watch stream or the lease came back: the stream resumes where
   * it left off, but nothing says when it has caught up (it may lag for
   * seconds). Read everything afresh, holding the stream's events
   * meanwhile, and say "connected" only then: so `current` means the
   * subscriber holds what changed meanwhile. The watch itself is left as
   * it is (recreating it makes the client library end its stream).
   */
  async #catchUp(): Promise<void> {
    if (this.#held || this.#closed) return;
    this.#held = [];
    this.#status({ watch: false });
    try {
      await this.#retrying("catch up with etcd", async () => {
        if (await this.#readState() === undefined) return true;
        const held = this.#held!;
        this.#held = undefined;
        for (const response of held) this.#onData(response);
        this.#status({ watch: true });
        return true;
      });
    } finally {
      this.#held = undefined;
    }
  }

  /**
   * Reads every key under the prefix in pages, all at the revision of the
   * first page, halving a page that exceeds the gRPC message limit.
   */
  async #readAll(): Promise<{
    revision: number;
    clusterId: string;
    // deno-lint-ignore no-explicit-any
    kvs: any[];
  }> {
    const end = Range.prefix(this.#instances).end;
    let start: Buffer = Buffer.from(this.#instances);
    let limit = READ_PAGE_KEYS;
    let revision: string | undefined;
    let clusterId = "";
    // deno-lint-ignore no-explicit-any
    const kvs: any[] = [];
    for (;;) {
      const query = this.#client.getAll().inRange({ start, end }).limit(limit);
      if (revision !== undefined) query.revision(revision);
      let res;
      try {
        res = await query.exec();
      } catch (error) {
        if (tooLarge(error) && limit > 1) {
          limit = Math.max(1, limit >> 1);
          continue;
        }
        throw error;
      }
      if (revision === undefined) {
        revision = String(res.header.revision);
        clusterId = String(res.header.cluster_id);
      }
      kvs.push(...res.kvs);
      if (!res.more || res.kvs.length === 0) {
        return { revision: Number(revision), clusterId, kvs };
      }
      // The next page starts right after the last key read.
      start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.of(0)]);
      limit = Math.min(READ_PAGE_KEYS, limit * 2);
    }
  }

  // deno-lint-ignore no-explicit-any
  #onData(response: any) {
    if (this.#held) {
      this.#held.push(response); // applied after the catch-up read
      return;
    }
    const changes: BackendChange[] = [];
    for (const event of response.events) {
      const kv = event.kv;
      const key = kv.key.toString();
      if (!key.startsWith(this.#instances)) continue;
      const revision = Number(kv.mod_revision);
      if (revision <= this.#readRevision) continue; // in the last full read
      if (event.type === "Put") {
        const record = this.#parse(kv);
        if (!record) continue;
        const known = knownOf(record, kv);
        this.#known.set(key, known);
        // Written by another agent (or by hand): it keeps the record now.
        if (!this.#ours.has(known.lease)) this.#mine.delete(key);
        changes.push({ type: "put", revision, record });
      } else {
        this.#known.delete(key);
        const [service, addr] = this.#split(key);
        changes.push({ type: "delete", revision, service, addr });
      }
    }
    if (changes.length > 0) this.#sink?.changes(changes);
  }
}

/** What a conditional write needs to know of a key the watch delivered. */
// deno-lint-ignore no-explicit-any
function knownOf(record: StoredRecord, kv: any): Known {
  return {
    owner: record.owner,
    modRevision: kv.mod_revision,
    lease: String(kv.lease),
  };
}

/** Whether a write has a condition to check against the stored record. */
function conditional(options: WriteOptions): boolean {
  return options.ifOwner !== undefined || options.ifKept === true ||
    options.ifVersion !== undefined;
}

/** Whether an etcd call failed because its response exceeded gRPC's message limit. */
function tooLarge(error: unknown): boolean {
  return error instanceof GRPCResourceExhastedError ||
    /RESOURCE_EXHAUSTED|larger than max/.test(String(error));
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes);
}
