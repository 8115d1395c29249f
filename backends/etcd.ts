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
 * logged. (`_etcd_record.ts`)
 *
 * ## Liveness without write storms
 *
 * Each agent holds one etcd lease (TTL `leaseTtl`, kept alive by the client
 * library) and attaches every key it writes to it (`_etcd_lease.ts`). An
 * idle agent costs etcd one lease keep-alive per third of the TTL,
 * whatever the number of instances; only real changes write. When the
 * agent dies, etcd deletes its keys when the lease expires. When the lease
 * is lost (etcd unreachable for longer than the TTL), the backend grants a
 * new one and writes back every record it keeps (see
 * {@linkcode EtcdBackend.keeps}): written through it, not deleted through
 * it since (a delete counts from the call, even one that failed because
 * etcd was away), and not written by anyone else meanwhile (a key attached
 * to a lease that is not one of this agent's). Subscribers see only what
 * really changed.
 *
 * ## Watching
 *
 * One watch per scope the agent uses: a service's range
 * (`<prefix>instances/<service>/`), or the whole prefix for `"*"`
 * (`_etcd_watch.ts`). Each starts with a range read at a revision and
 * watches from the revision after it; every watch of the agent shares the
 * client's one gRPC watch stream, and an etcd gRPC proxy in front of the
 * cluster coalesces identical watches of many agents. A broken stream
 * resumes from the last revision seen; a compacted revision (or any other
 * watch failure) triggers a resync of that scope: its current state is
 * read and handed to the agent, which emits only the real differences.
 *
 * A read is paginated (`_etcd_read.ts`): pages of at most
 * {@linkcode READ_PAGE_KEYS} keys, all read at the revision of the first
 * page (one consistent snapshot, however large the scope), and a page
 * that exceeds gRPC's message limit (4 MiB by default) is read again at
 * half the size, down to one key. Its pages are decoded straight from
 * etcd's protobuf, not by the client's generic decoder.
 *
 * ## History and the catalog
 *
 * {@linkcode EtcdBackend.stateAt} reads a scope at a past revision from
 * etcd's own history (until etcd compacts it), so a client can resume at
 * any agent. {@linkcode EtcdBackend.catalog} counts instances per service
 * with a keys-only read of the whole prefix, {@linkcode CATALOG_PAGE_KEYS}
 * keys a page: it sends every key once per call (about 60 bytes each), and
 * the agent holds one page. etcd 3.4 looks at every key left in the range
 * for each page, so its cost there grows with the square of the registry
 * (see the README's "Capacity").
 *
 * ## Registration storms
 *
 * Writes go to etcd in batches (`_etcd_write.ts`): a write goes at once
 * unless 4 transactions are in flight; writes that arrive meanwhile wait
 * for one to return and go together, at most
 * {@linkcode BATCH_MAX_WRITES} writes and about 1 MiB per transaction, each a nested transaction with its own
 * condition and outcome. The writes of one batch share a revision. When
 * an agent restarts or a rollout registers thousands of instances at
 * once, etcd sees a few dozen transactions instead of thousands of calls.
 *
 * ## Failures
 *
 * Every unary call has a deadline (`callTimeout`; `_etcd_client.ts`). With
 * several endpoints, a member whose call fails in a way that points at the
 * member (deadline, unavailable) is left out until it answers a probe, so
 * one hung member costs one deadline, not one per call
 * (`_etcd_health.ts`). gRPC keep-alive pings detect a hung member under
 * the watch and lease streams within seconds. Revisions are etcd's, and
 * the epoch is the etcd cluster id, so a `since` from one agent means the
 * same at every other.
 *
 * A write is sent to etcd once. The client library sends a call again
 * when it missed its deadline or lost its connection, even though etcd
 * may have applied it; a write sent again would then fail its own
 * condition (another owner, no record, another version) or remove
 * nothing. It fails instead, as a write whose outcome is unknown
 * (`_etcd_client.ts`). Reads may be sent again.
 *
 * When etcd cannot be reached at {@linkcode EtcdBackend.open}, the backend
 * says so (`status(false)`), resolves, and keeps trying on the shared
 * backoff schedule, logging one line per failed attempt
 * (`_etcd_retry.ts`); the state is delivered once it connects.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  type Etcd3,
  EtcdLeaseInvalidError,
  type IWatchResponse,
  KVClient,
} from "etcd3";
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
import { EndpointHealth } from "./_etcd_health.ts";
import {
  clientOptions,
  clientPool,
  type ClientSettings,
  createClient,
  PROBE_TIMEOUT_MS,
  probeOptions,
  withHealth,
} from "./_etcd_client.ts";
import { QuietLog } from "./quiet_log.ts";
import { AgentLease } from "./_etcd_lease.ts";
import { type PageQuery, rangeCall, readAll, readPages } from "./_etcd_read.ts";
import {
  type Known,
  knownOf,
  parseKnown,
  RecordCodec,
  type StoredKeyValue,
} from "./_etcd_record.ts";
import { describeEtcdError, retrying } from "./_etcd_retry.ts";
import { StateWatch } from "./_etcd_watch.ts";
import { KeyedSerial } from "../protocol/keyed_serial.ts";
import { ALL_SERVICES } from "../protocol/types.ts";
import {
  type KeyChange,
  keyWrite,
  type KeyWriteOptions,
  TxnBatcher,
  type TxnOutcome,
} from "./_etcd_write.ts";
import { allows, isConditional } from "./_conditions.ts";

export { READ_PAGE_KEYS } from "./_etcd_read.ts";

/**
 * Keys per page of the catalog's keys-only read (about 60 bytes each on
 * the wire, so a page stays far below gRPC's 4 MiB).
 */
export const CATALOG_PAGE_KEYS = 10_000;
export { BATCH_MAX_WRITES } from "./_etcd_write.ts";

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

/** One open watch of a scope (see {@linkcode EtcdBackend.watch}). */
interface ScopeWatch {
  readonly scope: string;
  /** The key prefix watched. */
  readonly range: string;
  readonly sink: BackendWatcher;
  /**
   * What this scope's reads and events told about each key: for
   * conditional writes. Read it through `EtcdBackend.#index`.
   */
  readonly known: Map<string, Known>;
  /** The last full read, while `known` does not hold it yet (see `EtcdBackend.#index`). */
  unindexed?: UnindexedRead;
  /** Revision of the scope's last full read: events up to it are in it. */
  readRevision: number;
  /** Where the first read starts, when it is in the past (see `watch`). */
  from?: WatchOptions;
  stream?: StateWatch;
  /** The watch is live and caught up. */
  up: boolean;
  /** What the sink was last told; nothing before the first read was tried. */
  said?: boolean;
  tried: boolean;
  closed: boolean;
}

/**
 * A full read of a scope, delivered and not yet in the scope's `known`:
 * its keys, records and key-values, at the same index.
 */
interface UnindexedRead {
  keys: string[];
  records: StoredRecord[];
  kvs: StoredKeyValue[];
  /** Read at a past revision: it says nothing of who keeps a record now. */
  past: boolean;
}

/** What the backend runs on while open. */
interface Connection {
  client: Etcd3;
  /** The client's KV calls, each sent once: for writes (see `clientPool`). */
  writes: KVClient;
  lease: AgentLease;
  health?: EndpointHealth;
  probes: Map<string, Etcd3>;
  watchdog: ReturnType<typeof setInterval>;
  /** Aborted by `close`: ends every retry loop. */
  closing: AbortController;
}

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
  readonly #settings: ClientSettings;
  readonly #codec: RecordCodec;
  readonly #leaseTtl: number;
  /** Where to log: repeated warnings of an outage are counted (see `QuietLog`). */
  readonly #log?: QuietLog;
  #events?: BackendStatus;
  #on?: Connection;
  #epoch = "";
  /** Open watches, by scope. */
  #scopes = new Map<string, Set<ScopeWatch>>();
  /** Records this agent keeps alive (see `keeps`): written back after a lost lease. */
  #mine = new Map<string, StoredRecord>();
  #closed = false;
  /** What `status` last said: the lease is renewed and every watch is live. */
  #connected?: boolean;
  #leaseUp = false;
  /** A lost lease is being replaced and its records written back. */
  #restoring = false;
  /**
   * The connect attempt of this `open` succeeded: the lease and a read of
   * the prefix worked. Until then a lease renewal proves nothing (an agent
   * may keep a lease on a prefix it cannot read).
   */
  #reached = false;
  /** Writes per key, one at a time (a lease restore must not race an unregister). */
  #serial = new KeyedSerial();
  /** Every write goes through it: concurrent writes share transactions. */
  readonly #batcher: TxnBatcher;

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
    this.#codec = new RecordCodec(options.prefix ?? "/discover/");
    this.#leaseTtl = options.leaseTtl ?? 10;
    if (!Number.isInteger(this.#leaseTtl) || this.#leaseTtl < 2) {
      throw new RangeError(
        `'leaseTtl' must be a whole number of seconds, at least 2: current value is ${this.#leaseTtl}`,
      );
    }
    const callTimeout = options.callTimeout ?? 3000;
    if (!Number.isFinite(callTimeout) || callTimeout <= 0) {
      throw new RangeError(
        `'callTimeout' must be a number of milliseconds above 0: current value is ${callTimeout}`,
      );
    }
    this.#log = options.log && new QuietLog(options.log);
    this.#batcher = new TxnBatcher(
      (txn) => this.#open().writes.txn(txn),
      { timeout: callTimeout, log: this.#log },
    );
    this.#settings = {
      endpoints: [...options.endpoints],
      callTimeout,
      tls: options.tls,
      auth: options.auth,
    };
  }

  /**
   * Connects and grants the lease; the watches opened before or after
   * start reading. Resolves once that is done, or once the first attempt
   * failed: then the backend has said it is not connected, and it keeps
   * trying (logging each failure) until it connects or closes.
   *
   * @param events Where to say whether etcd is reachable.
   */
  async open(events: BackendStatus): Promise<void> {
    this.#events = events;
    this.#closed = false;
    this.#reached = false;
    const { endpoints } = this.#settings;
    let options = clientOptions(this.#settings);
    let health: EndpointHealth | undefined;
    if (endpoints.length > 1) {
      // A member that fails a call is left out until it answers a probe,
      // instead of being picked at random again (see _etcd_health.ts).
      health = new EndpointHealth(
        endpoints,
        (endpoint) => this.#probe(endpoint),
        { log: this.#log, onDown: () => this.#moveStream() },
      );
      options = withHealth(options, health);
    }
    const client = createClient(options);
    const closing = new AbortController();
    const lease = new AgentLease(client, {
      ttl: this.#leaseTtl,
      callTimeout: this.#settings.callTimeout,
      events: {
        renewed: () => {
          if (!this.#restoring && this.#reached) {
            this.#status({ lease: true });
          }
        },
        lost: (id, error) => this.#leaseLost(id, error),
        failed: (error) => {
          // Half the TTL without a renewal: the agent may be cut off, and
          // its records may expire. Say so (subscribers are told their
          // state may be stale, writes fail fast) until a renewal succeeds.
          this.#status({ lease: false });
          this.#log?.warn(
            `etcd lease renewal failed (${describeEtcdError(error)}); retrying`,
          );
        },
      },
    });
    this.#on = {
      client,
      // createClient made sure that the client has this pool.
      writes: new KVClient(clientPool(client, { resend: false })!),
      lease,
      health,
      probes: new Map(),
      closing,
      watchdog: setInterval(() => {
        void lease.check();
        this.#checkLeaseDeadline(lease);
      }, 500),
    };
    for (const set of this.#scopes.values()) {
      for (const entry of set) this.#startScope(entry);
    }
    const { promise: tried, resolve } = Promise.withResolvers<void>();
    void this.#retry("connect", async () => {
      try {
        await lease.current();
        // The cluster id (the epoch) and the revision, before any watch.
        const { header } = await client.kv.range({
          key: Buffer.from(this.#codec.range),
          count_only: true,
        }, { deadline: Date.now() + this.#settings.callTimeout });
        this.#epoch = `etcd-${header.cluster_id}`;
        events.epoch?.(this.#epoch, Number(header.revision));
        this.#reached = true;
        if (!this.#restoring) this.#status({ lease: true });
        return true;
      } catch (error) {
        this.#status({ lease: false });
        throw error;
      } finally {
        resolve();
      }
    }).finally(resolve);
    await tried;
  }

  /**
   * Watches a scope: reads its range, delivers it as a reset, and watches
   * from the revision after it, on the client's shared watch stream.
   *
   * With `options.since`, the first read is at that past revision (etcd
   * keeps it until it compacts) and the watch starts right after it, so
   * every change since is delivered; a compacted revision, or another
   * epoch, reads the current state instead.
   *
   * @param scope A service name, or `"*"` for every service.
   * @param watcher Where to deliver state and changes.
   * @param options Where to start from.
   * @returns The watch.
   */
  watch(
    scope: string,
    watcher: BackendWatcher,
    options: WatchOptions = {},
  ): BackendWatch {
    const { since } = options;
    const entry: ScopeWatch = {
      scope,
      range: this.#codec.scope(scope),
      sink: watcher,
      known: new Map(),
      readRevision: 0,
      // Revision 0 is etcd's "now", and a fresh etcd starts at 1.
      from: since !== undefined && since >= 1 ? options : undefined,
      up: false,
      tried: false,
      closed: false,
    };
    let set = this.#scopes.get(scope);
    if (!set) this.#scopes.set(scope, set = new Set());
    set.add(entry);
    if (this.#on) this.#startScope(entry);
    return { close: () => this.#closeScope(entry) };
  }

  /**
   * Counts the instances of every service with a keys-only read of the
   * whole prefix, one page at a time.
   *
   * @returns The services with instances, sorted by name.
   */
  async catalog(): Promise<BackendCatalog> {
    const { client } = this.#open();
    const counts = new Map<string, number>();
    const range = this.#codec.range;
    const { revision } = await readPages(
      range,
      this.#query(client, { keysOnly: true }),
      {
        pageKeys: CATALOG_PAGE_KEYS,
        onPage: (kvs) => {
          for (const kv of kvs) {
            const key = kv.key.toString();
            const slash = key.indexOf("/", range.length);
            if (slash < 0) continue;
            const service = key.slice(range.length, slash);
            counts.set(service, (counts.get(service) ?? 0) + 1);
          }
        },
      },
    );
    const services = [...counts]
      .map(([service, instances]) => ({ service, instances }))
      .sort((a, b) =>
        a.service < b.service ? -1 : a.service > b.service ? 1 : 0
      );
    return { revision, services };
  }

  /**
   * Reads a scope at a past revision from etcd's history.
   *
   * @param scope A service name, or `"*"`.
   * @param revision The past revision.
   * @returns The state then; rejects once etcd has compacted it.
   */
  async stateAt(scope: string, revision: number): Promise<BackendState> {
    const { client } = this.#open();
    if (revision < 1) {
      // Before etcd's first revision (0 would mean "now" to etcd).
      if (!this.#epoch) throw new Error("the etcd cluster id is not known yet");
      return { revision, epoch: this.#epoch, records: [] };
    }
    const read = await readAll(this.#codec.scope(scope), this.#query(client), {
      revision,
    });
    const records: StoredRecord[] = [];
    for (const kv of read.kvs) {
      const record = this.#decode(kv);
      if (record) records.push(record);
    }
    return { revision, epoch: `etcd-${read.clusterId}`, records };
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
    const key = this.#codec.key(service, addr);
    for (const entry of this.#watchesOf(key)) this.#index(entry);
    return this.#mine.has(key);
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
    this.#release(this.#codec.key(service, addr), options.ifOwner);
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
    return this.#knownOf(this.#codec.key(service, addr))?.modRevision;
  }

  /**
   * The agent's lease: its id, and the milliseconds from now during which
   * no other agent can see it expire (what is certainly left of it).
   *
   * @example Usage
   * ```ts ignore
   * const { id, left } = backend.lease();
   * ```
   *
   * @returns The lease id (`""` before one is granted) and the time left
   *   (0 when not open, or in doubt).
   */
  lease(): { id: string; left: number } {
    const on = this.#on;
    if (!on || this.#closed) return { id: "", left: 0 };
    return { id: on.lease.id ?? "", left: on.lease.left() };
  }

  /**
   * Creates or replaces a record, attached to this agent's lease.
   *
   * @param record The record.
   * @param options The owner condition.
   * @returns The revision of the write.
   */
  async put(record: StoredRecord, options: WriteOptions = {}): Promise<number> {
    const { lease } = this.#open();
    const key = this.#codec.key(record.service, record.addr);
    const value = this.#codec.encode(record);
    // In the serial from the call on: writes of one key go in call order.
    return await this.#serial.run(key, async () => {
      for (let attempt = 1;; attempt++) {
        const leaseId = await lease.current();
        // Abandoned while it waited for the lease or an earlier write.
        options.signal?.throwIfAborted();
        try {
          const revision = await this.#conditional(
            key,
            options,
            { put: value, lease: leaseId },
          );
          this.#mine.set(key, { ...record, attrs: { ...record.attrs } });
          return revision;
        } catch (error) {
          if (!(error instanceof EtcdLeaseInvalidError) || attempt > 1) {
            throw error;
          }
          // etcd expired our lease before the keep-alive loop noticed.
          this.#leaseLost(leaseId, error);
        }
      }
    });
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
    const key = this.#codec.key(service, addr);
    // From now on the record is not ours to keep, whatever etcd answers:
    // a lease restore must never write back what an owner let go (again
    // once the writes of this key queued before it have settled).
    this.#release(key, options.ifOwner);
    return await this.#serial.run(key, () => {
      this.#release(key, options.ifOwner);
      options.signal?.throwIfAborted();
      return this.#deleteNow(key, options);
    });
  }

  async #deleteNow(
    key: string,
    options: WriteOptions,
  ): Promise<number | undefined> {
    if (!isConditional(options)) {
      const res = await this.#write(key, { delete: true }, {
        signal: options.signal,
      });
      const deleted = res.responses[0]?.response_delete_range?.deleted;
      return Number(deleted ?? 0) > 0 ? res.revision : undefined;
    }
    try {
      return await this.#conditional(key, options, { delete: true }, true);
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
    this.#events = undefined;
    const on = this.#on;
    this.#on = undefined;
    const entries = [...this.#scopes.values()].flatMap((set) => [...set]);
    this.#scopes.clear();
    await Promise.all(entries.map((entry) => this.#closeScope(entry)));
    if (!on) return;
    this.#log?.settle();
    this.#log?.info("etcd connection closed", {
      endpoints: this.#settings.endpoints.join(","),
    });
    this.#connected = undefined;
    on.closing.abort();
    clearInterval(on.watchdog);
    on.lease.close();
    on.health?.close();
    for (const probe of on.probes.values()) probe.close();
    on.client.close();
  }

  /** The connection, or an error saying the backend is not open. */
  #open(): Connection {
    if (!this.#on) {
      throw new Error("the etcd backend is not open: call open() first");
    }
    return this.#on;
  }

  /**
   * Resolves when `endpoint` answers a status call. A member without a
   * leader (an election under way) answers too: calls sent to it wait for
   * the election, as they would anywhere; only a member that cannot answer
   * at all stays left out.
   */
  async #probe(endpoint: string): Promise<void> {
    const on = this.#open();
    let client = on.probes.get(endpoint);
    if (!client) {
      client = createClient(
        probeOptions(clientOptions(this.#settings), endpoint),
      );
      on.probes.set(endpoint, client);
    }
    await client.maintenance.status({
      deadline: Date.now() + PROBE_TIMEOUT_MS,
    });
  }

  /** Makes `change` to `key`, in a transaction shared with other writes. */
  #write(
    key: string,
    change: KeyChange,
    options?: KeyWriteOptions,
  ): Promise<TxnOutcome> {
    this.#open();
    return this.#batcher.run(keyWrite(key, change, options));
  }

  /** Makes `change` to `key` in a transaction guarded by the owner condition. */
  async #conditional(
    key: string,
    options: WriteOptions,
    change: KeyChange,
    removal = false,
  ): Promise<number> {
    const { client, lease } = this.#open();
    const { signal } = options;
    if (!isConditional(options)) {
      return (await this.#write(key, change, { signal })).revision;
    }
    const ours = (id: string) => lease.ours(id);
    let known = this.#knownOf(key);
    /** The store's revision at the last transaction, once there was one. */
    let revision: number | undefined;
    /** Whether `known` comes from the store itself rather than the watch. */
    let fresh = false;
    const conflict = () =>
      new OwnerConflictError(...this.#codec.split(key), {
        owner: known?.owner ?? null,
        revision,
      });
    for (let attempt = 0; attempt < 3; attempt++) {
      const held = known && {
        owner: known.owner,
        version: known.modRevision,
        ours: ours(known.lease),
      };
      if (!allows(held, options)) {
        // A removal is never given up on what the watch says alone: it may
        // lag (a record just written back under a new lease, say).
        if (!removal || fresh) throw conflict();
        const res = await client.get(key).exec();
        revision = Number(res.header.revision);
        const kv = res.kvs[0];
        known = kv ? parseKnown(kv) : undefined;
        fresh = true;
        attempt--;
        continue;
      }
      const res = await this.#write(key, change, {
        guard: known === undefined
          ? { absent: true }
          : { modRevision: known.modRevision },
        signal,
      });
      if (res.succeeded) return res.revision;
      // The key changed since the watch told us about it: look again.
      revision = res.revision;
      const kv = res.responses[0]?.response_range?.kvs?.[0];
      known = kv ? parseKnown(kv) : undefined;
      fresh = true;
    }
    throw conflict();
  }

  /** Decodes a key-value into a record, or `undefined` (logged) when it is not one. */
  #decode(
    kv: StoredKeyValue,
    key: string = kv.key.toString(),
  ): StoredRecord | undefined {
    try {
      // The key's life: a put keeps it, a delete and a put start another.
      return this.#codec.decode(
        key,
        kv.value.toString(),
        kv.create_revision === undefined
          ? undefined
          : Number(kv.create_revision),
      );
    } catch (error) {
      this.#log?.warn("ignoring a key that is not a discover record", {
        key,
        error: (error as Error).message,
      });
      return undefined;
    }
  }

  /**
   * Says the state may be stale once less than a third of the lease TTL
   * is certainly left (see `AgentLease.left`; two keep-alives in a row
   * unanswered, and the fresh renewal of `AgentLease.check` too): other
   * agents may see this agent's records expire soon after, and
   * subscribers (campaigners among them) should hear of it first. A
   * renewal says it is back. (A campaigner does not depend on hearing it
   * in time: the agent vouches for its instances no longer than the lease
   * is certain to live, `discover.lease`.)
   */
  #checkLeaseDeadline(lease: AgentLease) {
    if (!this.#leaseUp || lease.id === undefined || this.#closed) return;
    if (lease.left() > (this.#leaseTtl * 1000) / 3) return;
    this.#status({ lease: false });
    this.#log?.warn(
      `no etcd lease renewal confirmed for two thirds of the lease TTL (${this.#leaseTtl} s); the state may be stale until one is`,
    );
  }

  #leaseLost(leaseId: string, error: unknown) {
    const on = this.#on;
    if (this.#closed || !on || on.lease.id !== leaseId) return;
    this.#log?.warn(
      `etcd lease lost (${describeEtcdError(error)}); granting a new one`,
    );
    on.lease.drop();
    this.#status({ lease: false });
    void this.#restoreLease();
  }

  /** After a lost lease: a new lease, and every record we hold written back. */
  async #restoreLease(): Promise<void> {
    if (this.#restoring) return; // the running restore picks the new lease up
    const on = this.#open();
    this.#restoring = true;
    try {
      await retrying("restore the lease", async () => {
        const leaseId = await on.lease.current();
        // Whatever the last reads said of who keeps a record counts.
        for (const entry of this.#entries()) this.#index(entry);
        // All at once: they go to etcd in shared transactions.
        const restored = await Promise.allSettled(
          [...this.#mine].map(([key, record]) =>
            this.#serial.run(key, () => this.#restoreKey(key, record, leaseId))
          ),
        );
        const failed = restored.find((r) => r.status === "rejected");
        if (failed) throw failed.reason;
        if (on.lease.id !== leaseId) return false; // lost again meanwhile
        this.#log?.info("etcd lease restored", { records: this.#mine.size });
        this.#restoring = false;
        this.#status({ lease: true });
        return true;
      }, {
        signal: on.closing.signal,
        endpoints: this.#settings.endpoints,
        log: this.#log,
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
    const { lease } = this.#open();
    const change = { put: this.#codec.encode(record), lease: leaseId };
    const res = await this.#write(key, change, { guard: { absent: true } });
    if (res.succeeded) return;
    const kv = res.responses[0]?.response_range?.kvs?.[0];
    const current = kv ? parseKnown(kv) : undefined;
    if (
      current === undefined || current.owner !== record.owner ||
      !lease.ours(current.lease)
    ) {
      if (this.#mine.get(key) === record) this.#mine.delete(key);
      return;
    }
    if (current.lease === leaseId) return; // already written back
    const moved = await this.#write(key, change, {
      guard: { modRevision: current.modRevision },
    });
    if (!moved.succeeded) throw new Error(`'${key}' changed while restoring`);
  }

  /**
   * Records whether the lease is renewed, and tells the agent and every
   * watch whether the store is reachable: for a watch, it is live and the
   * lease is renewed (a lost lease counts as unreachable until its
   * records are written back); for the agent, the lease is renewed and
   * every watch is live.
   */
  #status(parts: { lease?: boolean }) {
    if (parts.lease === true && !this.#leaseUp) {
      this.#leaseUp = true;
      // Back after the lease was in doubt: the watches may lag as well
      // (including one whose start was under way meanwhile).
      for (const entry of this.#entries()) void entry.stream?.catchUp();
    } else if (parts.lease !== undefined) {
      this.#leaseUp = parts.lease;
    }
    this.#tell();
  }

  /** Says what changed of {@linkcode EtcdBackend.#status} to the agent and the watches. */
  #tell() {
    let all = this.#leaseUp;
    for (const entry of this.#entries()) {
      const up = entry.up && this.#leaseUp;
      all &&= entry.up || !entry.tried;
      if (up !== entry.said && entry.tried && !entry.closed) {
        entry.said = up;
        entry.sink.status(up);
      }
    }
    if (all !== this.#connected) {
      const before = this.#connected;
      this.#connected = all;
      const endpoints = this.#settings.endpoints.join(",");
      if (this.#closed) {
        // Watches closing: nothing to say.
      } else if (all) {
        // What was counted while it was away, before saying it is back.
        this.#log?.settle();
        this.#log?.info(
          before === false ? "etcd is reachable again" : "etcd connected",
          { endpoints },
        );
      } else {
        const down = [...this.#entries()].filter((e) => e.tried && !e.up);
        this.#log?.warn(
          before === undefined
            ? "etcd is unreachable: writes fail until it answers"
            : "etcd is unreachable: serving the last known state, writes fail",
          {
            endpoints,
            lease: this.#leaseUp ? "renewed" : "in doubt",
            ...(down.length > 0
              ? { watches: `${down.length} not live, e.g. '${down[0].scope}'` }
              : {}),
          },
        );
      }
      this.#events?.status(all);
    }
  }

  /** Every open watch. */
  *#entries(): Iterable<ScopeWatch> {
    for (const set of this.#scopes.values()) yield* set;
  }

  /** What the watches of the key's service (or of `"*"`) know of a key. */
  #knownOf(key: string): Known | undefined {
    for (const entry of this.#watchesOf(key)) {
      const known = this.#index(entry).get(key);
      if (known) return known;
    }
    return undefined;
  }

  /** The watches whose scope holds a key: its service's, and `"*"`. */
  *#watchesOf(key: string): Iterable<ScopeWatch> {
    let service: string;
    try {
      [service] = this.#codec.split(key);
    } catch {
      return;
    }
    for (const scope of [service, ALL_SERVICES]) {
      yield* this.#scopes.get(scope) ?? [];
    }
  }

  /** Runs `attempt` until it says it is done, retrying failures until close. */
  #retry(what: string, attempt: () => Promise<boolean>): Promise<void> {
    const on = this.#on;
    if (!on) return Promise.resolve();
    return retrying(what, attempt, {
      signal: on.closing.signal,
      endpoints: this.#settings.endpoints,
      log: this.#log,
    });
  }

  /**
   * A range query on `client` (keys only for a count). Reads of records
   * decode etcd's answer themselves (see `rangeCall`): several times
   * faster than the client's generic decoder.
   */
  #query(client: Etcd3, options: { keysOnly?: boolean } = {}): PageQuery {
    const range = options.keysOnly ? undefined : rangeCall(client);
    return (start, end, limit, at) => {
      const request = {
        key: start,
        range_end: end,
        limit: String(limit),
        ...(at === undefined ? {} : { revision: at }),
        ...(options.keysOnly ? { keys_only: true } : {}),
      };
      const deadline = Date.now() + this.#settings.callTimeout;
      return range
        ? range(request, deadline)
        : client.kv.range(request, { deadline }) as Promise<
          Awaited<ReturnType<PageQuery>>
        >;
    };
  }

  /** Starts reading and watching a scope, retrying until it is done or closed. */
  #startScope(entry: ScopeWatch) {
    const on = this.#open();
    entry.stream = new StateWatch(on.client, entry.range, {
      readState: (delivered) => this.#readState(entry, delivered),
      apply: (response) => this.#apply(entry, response),
      status: (up) => {
        entry.up = up;
        entry.tried = true;
        this.#tell();
      },
      retrying: (what, attempt) =>
        this.#retry(`${what} '${entry.scope}'`, attempt),
      log: this.#log,
    });
    if (this.#connected === false) {
      // Known unreachable: the agent serves what it has until the read works.
      entry.up = false;
      entry.tried = true;
      entry.said = false;
      entry.sink.status(false);
    }
    void entry.stream.resync();
  }

  async #closeScope(entry: ScopeWatch) {
    if (entry.closed) return;
    entry.closed = true;
    const set = this.#scopes.get(entry.scope);
    set?.delete(entry);
    if (set?.size === 0) this.#scopes.delete(entry.scope);
    await entry.stream?.close();
    this.#tell();
  }

  /** A member was left out: moves the shared watch stream (see `StateWatch.move`). */
  #moveStream() {
    for (const entry of this.#entries()) {
      if (entry.stream?.active) return entry.stream.move();
    }
  }

  /**
   * Reads a scope and hands it to its watcher as a reset; the watch
   * events at or below its revision are already in it.
   *
   * @param delivered Called right after the reset, in the same turn.
   * @returns The revision read, or `undefined` once closed.
   */
  async #readState(
    entry: ScopeWatch,
    delivered?: () => void,
  ): Promise<number | undefined> {
    const { client } = this.#open();
    const past = await this.#readPast(entry);
    const { revision, clusterId, kvs } = past ??
      await readAll(entry.range, this.#query(client));
    if (this.#closed || entry.closed) return undefined;
    this.#epoch = `etcd-${clusterId}`;
    const read: UnindexedRead = {
      keys: [],
      records: [],
      kvs: [],
      past: past !== undefined,
    };
    for (const kv of kvs) {
      const key = kv.key.toString();
      const record = this.#decode(kv, key);
      if (!record) continue;
      read.keys.push(key);
      read.records.push(record);
      read.kvs.push(kv);
    }
    entry.readRevision = revision;
    // What the read says of each key waits until the reset is delivered
    // and the subscribers waiting for it have their snapshots (they are
    // sent before timers run): anything that needs it sooner indexes it.
    entry.unindexed = read;
    setTimeout(() => this.#index(entry), 0);
    entry.sink.reset({ revision, epoch: this.#epoch, records: read.records });
    delivered?.();
    return revision;
  }

  /**
   * A scope's `known`, with its last full read in it: the read replaces
   * what was there. Keys another agent's lease holds now are no longer
   * this agent's to keep.
   */
  #index(entry: ScopeWatch): Map<string, Known> {
    const read = entry.unindexed;
    if (read === undefined) return entry.known;
    entry.unindexed = undefined;
    const lease = this.#on?.lease;
    const known = entry.known;
    known.clear();
    const { keys, records, kvs } = read;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      const held = knownOf(records[i], kvs[i]);
      known.set(key, held);
      if (
        !read.past && lease && this.#mine.size > 0 && !lease.ours(held.lease)
      ) {
        this.#mine.delete(key);
      }
    }
    return known;
  }

  /**
   * The first read of a watch that starts in the past: the scope at that
   * revision, or `undefined` (then the current state is read) when etcd
   * compacted it or it belongs to another cluster.
   */
  async #readPast(entry: ScopeWatch) {
    const from = entry.from;
    entry.from = undefined;
    if (from?.since === undefined) return undefined;
    try {
      const read = await readAll(
        entry.range,
        this.#query(this.#open().client),
        {
          revision: from.since,
        },
      );
      if (from.epoch !== undefined && from.epoch !== `etcd-${read.clusterId}`) {
        return undefined;
      }
      return read;
    } catch (error) {
      this.#log?.info("reading the current state instead of a past one", {
        scope: entry.scope,
        since: from.since,
        error: describeEtcdError(error),
      });
      return undefined;
    }
  }

  /** Applies one watch response of a scope: the changes above its last full read. */
  #apply(entry: ScopeWatch, response: IWatchResponse) {
    const lease = this.#on?.lease;
    if (!lease || entry.closed) return;
    const known = this.#index(entry);
    const changes: BackendChange[] = [];
    for (const event of response.events) {
      const kv = event.kv;
      const key = kv.key.toString();
      if (!key.startsWith(entry.range)) continue;
      const revision = Number(kv.mod_revision);
      if (revision <= entry.readRevision) continue; // in the last full read
      if (event.type === "Put") {
        const record = this.#decode(kv, key);
        if (!record) continue;
        const held = knownOf(record, kv);
        known.set(key, held);
        // Written by another agent (or by hand): it keeps the record now.
        if (!lease.ours(held.lease)) this.#mine.delete(key);
        changes.push({ type: "put", revision, record });
      } else {
        known.delete(key);
        let service: string, addr: string;
        try {
          [service, addr] = this.#codec.split(key);
        } catch {
          continue; // not an instance key: it was never delivered
        }
        changes.push({ type: "delete", revision, service, addr });
      }
    }
    if (changes.length > 0) entry.sink.changes(changes);
  }
}
