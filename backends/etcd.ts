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
 * One prefix watch per agent, however many subscribers it has
 * (`_etcd_watch.ts`). A broken stream resumes from the last revision seen;
 * a compacted revision (or any other watch failure) triggers a full
 * resync: the current state is read and handed to the agent, which emits
 * only the real differences.
 *
 * The full read is paginated (`_etcd_read.ts`): pages of at most
 * {@linkcode READ_PAGE_KEYS} keys, all read at the revision of the first
 * page (one consistent snapshot, however large the registry), and a page
 * that exceeds gRPC's message limit (4 MiB by default) is read again at
 * half the size, down to one key.
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
 * When etcd cannot be reached at {@linkcode EtcdBackend.open}, the backend
 * says so (`status(false)`), resolves, and keeps trying on the shared
 * backoff schedule, logging one line per failed attempt
 * (`_etcd_retry.ts`); the state is delivered once it connects.
 *
 * @module
 */

import { Etcd3, EtcdLeaseInvalidError, type IWatchResponse } from "etcd3";
import {
  type Backend,
  type BackendChange,
  type BackendWatcher,
  OwnerConflictError,
  type StoredRecord,
  type WriteOptions,
} from "./backend.ts";
import { EndpointHealth } from "./_etcd_health.ts";
import {
  clientOptions,
  type ClientSettings,
  PROBE_TIMEOUT_MS,
  probeOptions,
  withHealth,
} from "./_etcd_client.ts";
import { AgentLease } from "./_etcd_lease.ts";
import { readAll } from "./_etcd_read.ts";
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
import {
  allows,
  isConditional,
  type KeyChange,
  keyWrite,
  type KeyWriteOptions,
  TxnBatcher,
  type TxnOutcome,
} from "./_etcd_write.ts";

export { READ_PAGE_KEYS } from "./_etcd_read.ts";
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

/** What the backend runs on while open. */
interface Connection {
  client: Etcd3;
  lease: AgentLease;
  watch: StateWatch;
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
  readonly #log?: EtcdLogger;
  #sink?: BackendWatcher;
  #on?: Connection;
  #epoch = "";
  /** What the watch told us about each key: for conditional writes and `keeps`. */
  #known = new Map<string, Known>();
  /** Records this agent keeps alive (see `keeps`): written back after a lost lease. */
  #mine = new Map<string, StoredRecord>();
  #closed = false;
  /** What `status` last said: the watch is live and the lease is renewed. */
  #connected = false;
  #watchUp = false;
  #leaseUp = false;
  /** A lost lease is being replaced and its records written back. */
  #restoring = false;
  /** Revision of the last full read: watch events up to it are in it. */
  #readRevision = 0;
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
    this.#log = options.log;
    this.#batcher = new TxnBatcher(
      (txn) => this.#open().client.kv.txn(txn),
      { timeout: callTimeout, log: options.log },
    );
    this.#settings = {
      endpoints: [...options.endpoints],
      callTimeout,
      tls: options.tls,
      auth: options.auth,
    };
  }

  /**
   * Connects: grants the lease, reads the current state, delivers it, and
   * starts the watch. Resolves once that is done, or once the first
   * attempt failed: then the backend has said it is not connected, and it
   * keeps trying (logging each failure) until it connects or closes.
   *
   * @param watcher Where to deliver state and changes.
   */
  async open(watcher: BackendWatcher): Promise<void> {
    this.#sink = watcher;
    this.#closed = false;
    const { endpoints } = this.#settings;
    let options = clientOptions(this.#settings);
    let health: EndpointHealth | undefined;
    if (endpoints.length > 1) {
      // A member that fails a call is left out until it answers a probe,
      // instead of being picked at random again (see _etcd_health.ts).
      health = new EndpointHealth(
        endpoints,
        (endpoint) => this.#probe(endpoint),
        { log: this.#log, onDown: () => this.#on?.watch.move() },
      );
      options = withHealth(options, health);
    }
    const client = new Etcd3(options);
    const closing = new AbortController();
    const retry = (what: string, attempt: () => Promise<boolean>) =>
      retrying(what, attempt, {
        signal: closing.signal,
        endpoints,
        log: this.#log,
      });
    const lease = new AgentLease(client, {
      ttl: this.#leaseTtl,
      callTimeout: this.#settings.callTimeout,
      events: {
        renewed: () => {
          if (!this.#restoring) this.#status({ lease: true });
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
    const watch = new StateWatch(client, this.#codec.range, {
      readState: () => this.#readState(),
      apply: (response) => this.#apply(response),
      status: (up) => this.#status({ watch: up }),
      retrying: retry,
      log: this.#log,
    });
    this.#on = {
      client,
      lease,
      watch,
      health,
      probes: new Map(),
      closing,
      watchdog: setInterval(() => void lease.check(), 500),
    };
    const { promise: tried, resolve } = Promise.withResolvers<void>();
    let first = true;
    void retry("connect", async () => {
      try {
        await lease.current();
        await watch.start();
        return true;
      } catch (error) {
        this.#status({ watch: false });
        if (first) this.#sink?.status(false);
        throw error;
      } finally {
        first = false;
        resolve();
      }
    }).finally(resolve);
    await tried;
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
    return this.#mine.has(this.#codec.key(service, addr));
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
    return this.#known.get(this.#codec.key(service, addr))?.modRevision;
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
      return this.#deleteNow(key, options);
    });
  }

  async #deleteNow(
    key: string,
    options: WriteOptions,
  ): Promise<number | undefined> {
    if (!isConditional(options)) {
      const res = await this.#write(key, { delete: true });
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
    this.#sink = undefined;
    const on = this.#on;
    this.#on = undefined;
    if (!on) return;
    on.closing.abort();
    clearInterval(on.watchdog);
    await on.watch.close();
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
      client = new Etcd3(probeOptions(clientOptions(this.#settings), endpoint));
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
    if (!isConditional(options)) {
      return (await this.#write(key, change)).revision;
    }
    const ours = (id: string) => lease.ours(id);
    let known = this.#known.get(key);
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
      if (!allows(known, options, ours)) {
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
  #decode(kv: StoredKeyValue): StoredRecord | undefined {
    const key = kv.key.toString();
    try {
      return this.#codec.decode(key, kv.value.toString());
    } catch (error) {
      this.#log?.warn("ignoring a key that is not a discover record", {
        key,
        error: (error as Error).message,
      });
      return undefined;
    }
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
   * Tells the agent whether the store is reachable: the watch is live and
   * the lease is renewed (a lost lease counts as unreachable until its
   * records are written back).
   */
  #status(parts: { watch?: boolean; lease?: boolean }) {
    if (parts.watch !== undefined) this.#watchUp = parts.watch;
    if (parts.lease === true && !this.#leaseUp && this.#on?.watch.active) {
      // Back after the lease was in doubt: the watch may lag as well.
      this.#leaseUp = true;
      void this.#on.watch.catchUp();
      return;
    }
    if (parts.lease !== undefined) this.#leaseUp = parts.lease;
    const connected = this.#watchUp && this.#leaseUp;
    if (connected === this.#connected) return;
    this.#connected = connected;
    this.#sink?.status(connected);
  }

  /**
   * Reads everything and hands it to the agent as a reset; the watch
   * events at or below its revision are already in it.
   *
   * @returns The revision read, or `undefined` once closed.
   */
  async #readState(): Promise<number | undefined> {
    const { client, lease } = this.#open();
    const { revision, clusterId, kvs } = await readAll(
      this.#codec.range,
      (start, end, limit, at) => {
        const query = client.getAll().inRange({ start, end }).limit(limit);
        if (at !== undefined) query.revision(at);
        return query.exec();
      },
    );
    if (this.#closed) return undefined;
    this.#epoch = `etcd-${clusterId}`;
    const records: StoredRecord[] = [];
    this.#known.clear();
    for (const kv of kvs) {
      const record = this.#decode(kv);
      if (!record) continue;
      const key = kv.key.toString();
      const known = knownOf(record, kv);
      records.push(record);
      this.#known.set(key, known);
      if (!lease.ours(known.lease)) this.#mine.delete(key);
    }
    this.#readRevision = revision;
    this.#sink?.reset({ revision, epoch: this.#epoch, records });
    return revision;
  }

  /** Applies one watch response: the changes above the last full read. */
  #apply(response: IWatchResponse) {
    const lease = this.#on?.lease;
    if (!lease) return;
    const changes: BackendChange[] = [];
    for (const event of response.events) {
      const kv = event.kv;
      const key = kv.key.toString();
      if (!key.startsWith(this.#codec.range)) continue;
      const revision = Number(kv.mod_revision);
      if (revision <= this.#readRevision) continue; // in the last full read
      if (event.type === "Put") {
        const record = this.#decode(kv);
        if (!record) continue;
        const known = knownOf(record, kv);
        this.#known.set(key, known);
        // Written by another agent (or by hand): it keeps the record now.
        if (!lease.ours(known.lease)) this.#mine.delete(key);
        changes.push({ type: "put", revision, record });
      } else {
        this.#known.delete(key);
        let service: string, addr: string;
        try {
          [service, addr] = this.#codec.split(key);
        } catch {
          continue; // not an instance key: it was never delivered
        }
        changes.push({ type: "delete", revision, service, addr });
      }
    }
    if (changes.length > 0) this.#sink?.changes(changes);
  }
}
