// Copyright the discover authors. BSD-3-Clause license.

/**
 * The ZooKeeper backend (npm `node-zookeeper-client`, the 3.4 protocol,
 * which every ZooKeeper from 3.4 on speaks): agents on many hosts share
 * one ensemble, and a service registered through any agent is seen by
 * subscribers on every agent.
 *
 * ## Layout
 *
 * - `<prefix>` (default `/discover`): persistent; its `czxid` and `ctime`
 *   name the **epoch**, `zk-<czxid in hex>-<ctime>`: the same for every
 *   agent of the ensemble, another one if the data is wiped and made
 *   again (or on another ensemble).
 * - `<prefix>/services/<service>`: persistent, one per service that ever
 *   had an instance (never removed, so that a removal cannot race a
 *   registration). Its data tells of the last creation of an instance,
 *   `{"addr":"...","session":"<16 hex digits>","data":"<the record's JSON>"}`,
 *   set in the multi that makes the znode (so the service node's `mzxid`
 *   is then its `pzxid`); a removal's multi empties it.
 * - `<prefix>/services/<service>/<addr>`: **ephemeral**, one per instance,
 *   holding the JSON object `{"attrs":{...},"owner":"...","registeredAt":<ms>}`
 *   (with `"health":"critical"` and `"note"` for a critical instance, and
 *   `"created"` once the record outlived the session that created it).
 *
 * ## Liveness: the session is the lease
 *
 * Every record is an ephemeral znode of the agent's session, so a dead
 * agent's instances vanish when the ensemble expires its session (the
 * session timeout), all in one transaction. Keeping them costs the
 * session's pings, whatever the number of instances: no write while
 * nothing changes. {@linkcode ZooKeeperBackend.close} leaves the session
 * to expire instead of closing it, so an agent restarted within the
 * session timeout takes its records over without a flap.
 * {@linkcode ZooKeeperBackend.lease} says how long the session certainly
 * lives (for `discover.lease`), as the etcd backend says of its lease.
 *
 * When the ensemble expires the session of a live agent (a pause longer
 * than the timeout, a partition), the backend opens a new session and
 * writes back every record it keeps (see {@linkcode ZooKeeperBackend.keeps}),
 * as the etcd backend does after a lost lease; then it reads every
 * watched service afresh and hands it to the agent as a reset, so the
 * agent's subscribers see only what really changed. A record that another
 * agent wrote meanwhile is no longer kept, and is left alone.
 *
 * The new session asks for a server that has applied the last zxid the
 * expired one saw (the connect request's `lastZxidSeen`, which ZooKeeper
 * servers behind it refuse), so its first reads never come from a
 * follower that lags behind what the agent already delivered. Should no
 * server accept it for twice the session timeout (the ensemble's data
 * restored from an older copy), a session without that guard takes over,
 * with a warning; the changed epoch then tells subscribers to start over.
 *
 * ## Revisions and epoch
 *
 * Revisions are zxids: one order across every service, the same at every
 * agent. A put's revision is the znode's `mzxid` (a creation's is its
 * `czxid`). A removal by the backend is a multi that also sets the
 * service node's data, whose new `mzxid` is the removal's exact zxid; a
 * watch delivers a removal at the service node's `pzxid` read with the
 * list that no longer holds it (exact when nothing else was created or
 * removed in that service before the read; see `_zk_mirror.ts`). A
 * record's `created` is the `czxid` of its znode, carried in its data
 * when the znode is made again under another session (a takeover, a
 * write-back), so it names the record's life, not the znode's.
 *
 * ## Watching
 *
 * One-shot watches, set again by the read that follows each firing; the
 * frontier of `_zk_mirror.ts` orders what they deliver and proves nothing
 * is lost between a firing and its read. A watcher lists a service and
 * reads its service node in one round trip: a new instance that the
 * service node tells of is delivered from there, without a read of its
 * znode first (the read that sets its watch follows). The agent that
 * makes a znode knows what it made, and reads only the list.
 *
 * A connection lost within the session fails the reads under way; once
 * connected again, the session's watch sends again every read that is
 * due, its first reads too (a blip while a new session's watch loads its
 * services), and the backend says it is connected once what changed
 * meanwhile is delivered.
 *
 * ## History
 *
 * ZooKeeper keeps no history. {@linkcode ZooKeeperBackend.stateAt} answers
 * only for a revision at or after the last change of the scope (the
 * state then is the current one), and a watch with `since` starts from
 * the current state: a client resuming from further back at an agent
 * whose own history does not reach gets a snapshot, as after an etcd
 * compaction.
 *
 * ## Conditional writes
 *
 * A conditional write reads the znode, checks the owner (and, for
 * `ifKept`, that the znode is one of this agent's sessions'; for
 * `ifVersion`, its `mzxid`), and writes in a multi guarded by the znode's
 * version; a version that moved means another write came first, and it
 * reads again. Records are written with a version of at least 1 (a create
 * and a set in one multi): the client library sends a version of 0 as
 * "any". A takeover (another agent's znode made again under this
 * session) restarts the version, so a write that read the record before
 * a takeover and lands after it within one round trip is not refused by
 * the version alone.
 *
 * @module
 */

import {
  type Backend,
  type BackendCatalog,
  type BackendState,
  type BackendStatus,
  type BackendWatch,
  type BackendWatcher,
  OwnerConflictError,
  type StoredRecord,
  type WatchOptions,
  type WriteOptions,
} from "./backend.ts";
import type { BackendLogger } from "./descriptor.ts";
import {
  codeOf,
  MODE,
  type NodeStat,
  ZK,
  type ZkOp,
  ZkSession,
} from "./_zk_client.ts";
import {
  type Creation,
  encodeCreation,
  Mirror,
  type MirrorSink,
} from "./_zk_mirror.ts";
import { RecordCodec } from "./_etcd_record.ts";
import { allows, isConditional } from "./_conditions.ts";
import { KeyedSerial } from "../protocol/keyed_serial.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { ALL_SERVICES } from "../protocol/types.ts";
import { Backoff } from "../protocol/backoff.ts";

/** Options of {@linkcode ZooKeeperBackend}. */
export interface ZooKeeperBackendOptions {
  /** The ensemble: `host:port` of each server. */
  servers: string[];
  /**
   * Path under which everything is kept; starts with `/`, does not end
   * with one.
   *
   * @default {"/discover"}
   */
  prefix?: string;
  /**
   * Session timeout asked for, in seconds: how long a dead agent's
   * instances outlive it (the servers bound it to 2 to 20 ticks).
   *
   * @default {10}
   */
  sessionTimeout?: number;
  /** Where to log; nothing is logged without it. */
  log?: BackendLogger;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();
/** Validates and encodes records (the etcd backend's value format). */
const CODEC = new RecordCodec("/");
const EMPTY = new Uint8Array();

/** One watch the agent opened (it outlives sessions). */
interface Scope {
  scope: string;
  watcher: BackendWatcher;
  options?: WatchOptions;
  detach?: () => void;
  said?: boolean;
  closed: boolean;
}

/** What a conditional write reads of a znode. */
interface Current {
  record?: StoredRecord;
  owner: string | null;
  stat: NodeStat;
  /** The record's life, to carry over when the znode is made again. */
  created: number;
}

/**
 * A {@linkcode Backend} on a ZooKeeper ensemble. See the module
 * documentation for the layout, liveness and revisions.
 *
 * @example Usage
 * ```ts ignore
 * import { ZooKeeperBackend } from "./zookeeper.ts";
 * const backend = new ZooKeeperBackend({ servers: ["127.0.0.1:2181"] });
 * ```
 */
export class ZooKeeperBackend implements Backend {
  /** Always `"zookeeper"`. */
  readonly name = "zookeeper";
  readonly #servers: string[];
  readonly #prefix: string;
  readonly #servicesPath: string;
  readonly #timeoutMs: number;
  readonly #log?: BackendLogger;
  #events?: BackendStatus;
  #session?: ZkSession;
  #mirror?: Mirror;
  #epoch = "";
  #scopes = new Set<Scope>();
  /** Records this agent keeps alive: written back after an expired session. */
  #mine = new Map<string, StoredRecord>();
  /** This backend's sessions, current and expired (16 hex digits each). */
  #sessions = new Set<string>();
  /** Service nodes known to exist. */
  #serviceNodes = new Set<string>();
  #serial = new KeyedSerial();
  #connected?: boolean;
  #closed = true;
  /** Bumped by every new session: work of an older one stops. */
  #generation = 0;
  /** Ends the wait of a guarded session for a server that accepts it. */
  #unguard?: ReturnType<typeof setTimeout>;

  /**
   * Creates the backend; nothing connects before {@linkcode ZooKeeperBackend.open}.
   *
   * @param options Servers, prefix, session timeout and logger.
   */
  constructor(options: ZooKeeperBackendOptions) {
    if (options.servers.length === 0) {
      throw new TypeError(
        "'servers' must list at least one ZooKeeper server, e.g. 127.0.0.1:2181",
      );
    }
    for (const server of options.servers) {
      if (!/^[^\s,/]+:[0-9]{1,5}$/.test(server)) {
        throw new TypeError(
          `'servers' must be HOST:PORT each: current value has '${server}'`,
        );
      }
    }
    const prefix = options.prefix ?? "/discover";
    if (
      !/^(\/[A-Za-z0-9._-]+)+$/.test(prefix) ||
      prefix.split("/").some((part) => part === "." || part === "..")
    ) {
      throw new TypeError(
        `'prefix' must be a ZooKeeper path such as /discover (letters, digits, '.', '_' and '-' between slashes, no trailing slash): current value is '${prefix}'`,
      );
    }
    const timeout = options.sessionTimeout ?? 10;
    if (!Number.isFinite(timeout) || timeout < 1) {
      throw new RangeError(
        `'sessionTimeout' must be a number of seconds, at least 1: current value is ${timeout}`,
      );
    }
    this.#servers = [...options.servers];
    this.#prefix = prefix;
    this.#servicesPath = `${prefix}/services`;
    this.#timeoutMs = Math.round(timeout * 1000);
    this.#log = options.log;
  }

  /**
   * Connects; the watches opened before or after start reading. Resolves
   * once connected and set up, or once the first attempt took the session
   * timeout: then the backend has said it is not connected, and the
   * client keeps trying every server until it connects or closes.
   *
   * @param events Where to say whether ZooKeeper is reachable.
   */
  async open(events: BackendStatus): Promise<void> {
    this.#events = events;
    this.#closed = false;
    this.#connected = undefined;
    const ready = this.#startSession();
    const timer = Promise.withResolvers<void>();
    const t = setTimeout(timer.resolve, this.#timeoutMs);
    await Promise.race([ready, timer.promise]);
    clearTimeout(t);
    if (this.#connected === undefined) this.#status(false);
  }

  /**
   * Watches a scope: delivers its state as a reset once read, then its
   * changes. `options.since` cannot start in the past (ZooKeeper keeps no
   * history): the current state is delivered.
   *
   * @param scope A service name, or `"*"` for every service.
   * @param watcher Where to deliver state and changes.
   * @param options Where to start from (see above).
   * @returns The watch.
   */
  watch(
    scope: string,
    watcher: BackendWatcher,
    options: WatchOptions = {},
  ): BackendWatch {
    const entry: Scope = { scope, watcher, options, closed: false };
    this.#scopes.add(entry);
    if (this.#mirror) this.#attach(entry, this.#mirror);
    if (this.#connected === false) this.#tellScope(entry, false);
    return {
      close: () => {
        entry.closed = true;
        this.#scopes.delete(entry);
        entry.detach?.();
        return Promise.resolve();
      },
    };
  }

  /**
   * Counts the instances of every service: one child listing per service.
   *
   * @returns The services with instances, sorted by name.
   */
  async catalog(): Promise<BackendCatalog> {
    const session = this.#open();
    const root = await session.getChildren(this.#servicesPath);
    let revision = root?.zxid ?? 0;
    const counts = await Promise.all(
      (root?.children ?? []).map(async (service) => {
        const list = await session.getChildren(
          `${this.#servicesPath}/${service}`,
        );
        revision = Math.max(revision, list?.zxid ?? 0);
        return { service, instances: list?.children.length ?? 0 };
      }),
    );
    const services = counts.filter((c) => c.instances > 0)
      .sort((a, b) =>
        a.service < b.service ? -1 : a.service > b.service ? 1 : 0
      );
    return { revision, services };
  }

  /**
   * The records of a scope at `revision`, when that is at or after the
   * scope's last change (the state then is the current one); `undefined`
   * otherwise (ZooKeeper keeps no history).
   *
   * @param scope A service name, or `"*"`.
   * @param revision The past revision.
   * @returns The state, or `undefined`.
   */
  async stateAt(
    scope: string,
    revision: number,
  ): Promise<BackendState | undefined> {
    const session = this.#open();
    const names = scope === ALL_SERVICES
      ? (await session.getChildren(this.#servicesPath))?.children ?? []
      : [scope];
    let last = 0, now = 0;
    const records: StoredRecord[] = [];
    for (const service of names) {
      const path = `${this.#servicesPath}/${service}`;
      const list = await session.getChildren(path);
      if (!list) continue;
      now = Math.max(now, list.zxid);
      last = Math.max(last, list.stat.pzxid);
      for (const addr of list.children) {
        const node = await session.getData(`${path}/${addr}`);
        if (!node) {
          last = Infinity; // removed while reading: changed since
          continue;
        }
        now = Math.max(now, node.zxid);
        last = Math.max(last, node.stat.mzxid);
        const record = this.#decode(service, addr, node.data, node.stat.czxid);
        if (record) records.push(record);
      }
    }
    // Read again: nothing of the scope may have changed during the reads.
    if (scope === ALL_SERVICES) {
      const again = await session.getChildren(this.#servicesPath);
      if ((again?.children.length ?? 0) !== names.length) return undefined;
    }
    for (const service of names) {
      const list = await session.getChildren(
        `${this.#servicesPath}/${service}`,
      );
      if (list && list.stat.pzxid > last) return undefined;
    }
    if (revision < last || revision > Math.max(now, last)) return undefined;
    return { revision, epoch: this.#epoch, records };
  }

  /**
   * Whether this agent keeps the record alive: written through this
   * backend, not deleted through it since, and not written by another
   * agent since (as far as the watch told). A kept record lost with an
   * expired session is written back under the next one.
   *
   * @param service The service.
   * @param addr The address.
   * @returns Whether the record is kept alive by this agent.
   */
  keeps(service: string, addr: string): boolean {
    return this.#mine.has(instanceKey(service, addr));
  }

  /**
   * Stops keeping the record alive: it is not written back after an
   * expired session.
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
    this.#release(instanceKey(service, addr), options.ifOwner);
  }

  /**
   * The record's `mzxid` as the watch last told.
   *
   * @param service The service.
   * @param addr The address.
   * @returns The zxid, as a string, if the record is known.
   */
  version(service: string, addr: string): string | undefined {
    const known = this.#mirror?.known(service, addr);
    return known ? String(known.mzxid) : undefined;
  }

  /**
   * Creates or replaces a record, as an ephemeral znode of this agent's
   * session.
   *
   * @param record The record.
   * @param options The owner condition.
   * @returns The revision of the write.
   */
  put(record: StoredRecord, options: WriteOptions = {}): Promise<number> {
    const key = instanceKey(record.service, record.addr);
    return this.#serial.run(key, async () => {
      options.signal?.throwIfAborted();
      const { revision, created } = await this.#put(record, options);
      this.#mine.set(key, { ...record, attrs: { ...record.attrs }, created });
      return revision;
    });
  }

  /**
   * Removes a record, in a multi that also sets its service node's data
   * (whose new `mzxid` is the removal's zxid).
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
    const key = instanceKey(service, addr);
    // Not ours to keep from the call on, whatever ZooKeeper answers.
    this.#release(key, options.ifOwner);
    return this.#serial.run(key, () => {
      this.#release(key, options.ifOwner);
      options.signal?.throwIfAborted();
      return this.#delete(service, addr, options);
    });
  }

  /**
   * The lease of this agent's records: its ZooKeeper session (the id of its
   * ephemeral znodes' owner; a new one after an expiry) and how long the
   * ensemble certainly keeps it: the send time of the latest request a
   * server answered, plus the granted session timeout, minus the time
   * since (a server that answered heard from the session after the send,
   * and the ensemble expires a session only after a whole timeout without
   * hearing from it).
   *
   * @example Usage
   * ```ts ignore
   * const { id, left } = backend.lease();
   * ```
   *
   * @returns The session id (`""` before the session is established) and
   *   the time left (0 when not open, or in doubt).
   */
  lease(): { id: string; left: number } {
    const session = this.#session;
    if (!session || this.#closed) return { id: "", left: 0 };
    const id = session.id;
    return /^0+$/.test(id) ? { id: "", left: 0 } : { id, left: session.left };
  }

  /**
   * Stops watching and leaves the session to expire without closing it:
   * the records outlive the agent by the session timeout, so an agent
   * restarted within it takes them over with no flap at subscribers.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#generation++;
    clearTimeout(this.#unguard);
    this.#events = undefined;
    for (const entry of this.#scopes) {
      entry.closed = true;
      entry.detach?.();
    }
    this.#scopes.clear();
    this.#mirror?.close();
    this.#mirror = undefined;
    this.#session?.abandon();
    this.#session = undefined;
    return Promise.resolve();
  }

  // ---- sessions ----

  /**
   * Opens a session, and sets everything up each time it connects.
   *
   * @param lastZxidSeen The last zxid of the session before, which
   *   expired: servers that have not applied it refuse this one. When none
   *   has accepted it for twice the session timeout, a session without
   *   that guard takes its place (see `ZkSessionOptions.lastZxidSeen`).
   */
  #startSession(lastZxidSeen = 0): Promise<void> {
    const generation = ++this.#generation;
    const { promise: ready, resolve } = Promise.withResolvers<void>();
    let everConnected = false;
    clearTimeout(this.#unguard);
    const session: ZkSession = new ZkSession(this.#servers.join(","), {
      sessionTimeout: this.#timeoutMs,
      lastZxidSeen,
      events: {
        connected: () => {
          if (generation !== this.#generation) return;
          if (!everConnected) {
            everConnected = true;
            clearTimeout(this.#unguard);
            void this.#setUp(session, generation).then(resolve);
            return;
          }
          this.#log?.info(`${this.#where()}: connected again`);
          // The mirror of this session, as soon as `#setUp` made it (an
          // expiry clears it, and every mirror after is of a newer
          // generation): its first reads too may have failed with the
          // connection, and are sent again.
          const mirror = this.#mirror;
          if (mirror) {
            void mirror.resume().then(() => {
              if (generation === this.#generation && this.#mirror === mirror) {
                this.#status(true);
              }
            });
          }
        },
        disconnected: () => {
          if (generation !== this.#generation) return;
          this.#log?.warn(
            `${this.#where()}: connection lost; trying every server`,
          );
          this.#status(false);
        },
        expired: () => {
          if (generation !== this.#generation) return;
          this.#log?.warn(
            `${this.#where()}: session expired; opening a new one and writing back ${this.#mine.size} records`,
          );
          this.#status(false);
          this.#mirror?.close();
          this.#mirror = undefined;
          for (const entry of this.#scopes) entry.detach?.();
          void this.#startSession(session.zxid);
        },
      },
    });
    this.#session = session;
    session.connect();
    if (lastZxidSeen > 0) {
      this.#unguard = setTimeout(() => {
        if (generation !== this.#generation || this.#closed) return;
        this.#log?.warn(
          `${this.#where()}: no server has applied zxid 0x${
            lastZxidSeen.toString(16)
          }, the last one this agent saw, after ${
            2 * this.#timeoutMs
          } ms; opening a session without that guard (was the ensemble's data restored from an older copy?)`,
        );
        session.abandon();
        void this.#startSession().then(resolve);
      }, 2 * this.#timeoutMs);
    }
    return ready;
  }

  /**
   * A session connected for the first time: the nodes of the layout, the
   * epoch, the records kept written back, then the watches.
   */
  async #setUp(session: ZkSession, generation: number): Promise<void> {
    const backoff = new Backoff({ initialDelay: 250, maxDelay: 4000 });
    for (;;) {
      if (generation !== this.#generation) return;
      try {
        this.#sessions.add(session.id);
        let path = "";
        for (const part of this.#prefix.slice(1).split("/")) {
          path += `/${part}`;
          await session.ensure(path);
        }
        await session.ensure(this.#servicesPath);
        const root = await session.getData(this.#prefix);
        if (!root) throw new Error(`${this.#prefix} vanished`);
        this.#epoch = `zk-${root.stat.czxid.toString(16)}-${root.stat.ctime}`;
        this.#events?.epoch?.(this.#epoch, root.zxid);
        await this.#writeBack(generation);
        if (generation !== this.#generation) return;
        // From here on, a reconnection resumes this mirror (see
        // `#startSession`), whether its first reads are done or not.
        const mirror = new Mirror({
          session,
          servicesPath: this.#servicesPath,
          decode: (service, addr, data, czxid) =>
            this.#decode(service, addr, data, czxid),
          onPut: (record, owner) => {
            // Written by another agent (or by hand): it keeps the record now.
            if (!this.#sessions.has(owner)) {
              this.#mine.delete(instanceKey(record.service, record.addr));
            }
          },
          onFailure: (error) => {
            this.#log?.warn(
              `${this.#where()}: a read failed (${describe(error)})`,
            );
          },
          log: this.#log,
        });
        this.#mirror = mirror;
        for (const entry of this.#scopes) this.#attach(entry, mirror);
        await mirror.ready();
        if (generation === this.#generation && session.connected) {
          this.#status(true);
        }
        return;
      } catch (error) {
        const ms = backoff.next();
        this.#log?.warn(
          `${this.#where()}: could not set up (${
            describe(error)
          }); retrying in ${Math.round(ms)} ms`,
        );
        await new Promise((r) => setTimeout(r, ms));
      }
    }
  }

  /** After a new session: every record kept, made again under it. */
  async #writeBack(generation: number) {
    if (this.#mine.size === 0) return;
    const results = await Promise.allSettled(
      [...this.#mine].map(([key, record]) =>
        this.#serial.run(key, async () => {
          if (generation !== this.#generation) return;
          if (this.#mine.get(key) !== record) return; // unregistered or rewritten
          for (let attempt = 0;; attempt++) {
            const current = await this.#read(record.service, record.addr);
            const owner = current?.stat.ephemeralOwner;
            if (owner === this.#open().id) return;
            if (
              current &&
              (!this.#sessions.has(owner!) || current.owner !== record.owner)
            ) {
              // Another agent wrote it meanwhile: no longer ours to keep.
              if (this.#mine.get(key) === record) this.#mine.delete(key);
              return;
            }
            // Gone, or still a znode of the expired session (the ensemble
            // removes it in a moment): made again under this one, with
            // the record's life (its first znode's czxid).
            try {
              await this.#write(record, current, {
                created: current?.created ?? record.created,
              });
              return;
            } catch (error) {
              const code = codeOf(error);
              const raced = code === ZK.NO_NODE || code === ZK.BAD_VERSION ||
                code === ZK.NODE_EXISTS;
              if (!raced || attempt >= 4) throw error;
            }
          }
        })
      ),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    this.#log?.info(`${this.#where()}: records written back`, {
      records: this.#mine.size,
    });
  }

  #attach(entry: Scope, mirror: Mirror) {
    entry.detach?.();
    const sink: MirrorSink = {
      scope: entry.scope,
      reset: (revision, records) => {
        if (entry.closed) return;
        entry.watcher.reset({ revision, epoch: this.#epoch, records });
        if (this.#connected) this.#tellScope(entry, true);
      },
      changes: (changes) => {
        if (!entry.closed) entry.watcher.changes(changes);
      },
    };
    entry.detach = mirror.attach(sink);
  }

  #status(connected: boolean) {
    if (this.#closed) return;
    for (const entry of this.#scopes) this.#tellScope(entry, connected);
    if (connected === this.#connected) return;
    const before = this.#connected;
    this.#connected = connected;
    if (connected && before === false) {
      this.#log?.info(`${this.#where()}: reachable again`);
    }
    this.#events?.status(connected);
  }

  #tellScope(entry: Scope, connected: boolean) {
    if (entry.closed || entry.said === connected) return;
    entry.said = connected;
    entry.watcher.status(connected);
  }

  #where(): string {
    return `zookeeper at ${this.#servers.join(", ")}`;
  }

  /** The session, or an error saying the backend is not connected. */
  #open(): ZkSession {
    if (!this.#session || this.#closed) {
      throw new Error("the zookeeper backend is not open: call open() first");
    }
    return this.#session;
  }

  // ---- records ----

  #path(service: string, addr: string): string {
    return `${this.#servicesPath}/${service}/${addr}`;
  }

  #decode(
    service: string,
    addr: string,
    data: Uint8Array,
    czxid: number,
  ): StoredRecord | undefined {
    try {
      const text = DECODER.decode(data);
      const record = CODEC.decode(CODEC.key(service, addr), text);
      const { created } = JSON.parse(text);
      record.created = typeof created === "number" ? created : czxid;
      return record;
    } catch (error) {
      this.#log?.warn("ignoring a znode that is not a discover record", {
        path: this.#path(service, addr),
        error: (error as Error).message,
      });
      return undefined;
    }
  }

  #encode(record: StoredRecord, created?: number): Uint8Array {
    const value = JSON.parse(CODEC.encode(record));
    if (created !== undefined) value.created = created;
    return ENCODER.encode(JSON.stringify(value));
  }

  /** The znode of a record as it is now, or `undefined`. */
  async #read(service: string, addr: string): Promise<Current | undefined> {
    const node = await this.#open().getData(this.#path(service, addr));
    if (!node) return undefined;
    let owner: string | null = null;
    let created = node.stat.czxid;
    try {
      const parsed = JSON.parse(DECODER.decode(node.data));
      if (typeof parsed?.owner === "string") owner = parsed.owner;
      if (typeof parsed?.created === "number") created = parsed.created;
    } catch { /* not a record: no owner */ }
    return {
      record: this.#decode(service, addr, node.data, node.stat.czxid),
      owner,
      stat: node.stat,
      created,
    };
  }

  /** Whether a write's conditions hold for the znode as `current` says it is. */
  #allows(current: Current | undefined, options: WriteOptions): boolean {
    return allows(
      current && {
        owner: current.owner,
        version: String(current.stat.mzxid),
        ours: this.#sessions.has(current.stat.ephemeralOwner),
      },
      options,
    );
  }

  async #put(
    record: StoredRecord,
    options: WriteOptions,
  ): Promise<{ revision: number; created: number }> {
    const conditional = isConditional(options);
    // A registration of what should not exist yet goes without a read
    // first: the creation fails if it does, and then it reads.
    const create = options.ifOwner === null && !options.ifKept &&
      options.ifVersion === undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = create && attempt === 0
        ? undefined
        : await this.#read(record.service, record.addr);
      if (conditional && !this.#allows(current, options)) {
        throw new OwnerConflictError(record.service, record.addr, {
          owner: current?.owner ?? null,
          revision: this.#session?.zxid,
        });
      }
      options.signal?.throwIfAborted();
      try {
        return await this.#write(record, current, options);
      } catch (error) {
        const code = codeOf(error);
        // Another write came first: look again.
        if (
          code !== ZK.BAD_VERSION && code !== ZK.NODE_EXISTS &&
          code !== ZK.NO_NODE
        ) throw error;
      }
    }
    throw new Error(
      `'${instanceKey(record.service, record.addr)}' kept changing: try again`,
    );
  }

  /**
   * Writes a record as an ephemeral znode of this session: a set of the
   * znode when it is already this session's, else a creation (after the
   * removal of another session's znode), each in one multi.
   *
   * @returns The zxid of the write, and the record's life (`created`).
   */
  async #write(
    record: StoredRecord,
    current: Current | undefined,
    options: { signal?: AbortSignal; created?: number },
  ): Promise<{ revision: number; created: number }> {
    const session = this.#open();
    const path = this.#path(record.service, record.addr);
    await this.#ensureService(record.service);
    let ops: ZkOp[];
    let created: number | undefined;
    let creation: Creation | undefined;
    if (current && current.stat.ephemeralOwner === session.id) {
      created = current.created;
      const data = this.#encode(
        record,
        current.created === current.stat.czxid ? undefined : current.created,
      );
      ops = [{
        setData: path,
        data,
        version: current.stat.version >= 1 ? current.stat.version : undefined,
      }];
    } else {
      created = current?.created ?? options.created;
      const data = this.#encode(record, created);
      creation = { addr: record.addr, session: session.id, data };
      ops = [
        ...(current
          ? [{
            remove: path,
            version: current.stat.version >= 1
              ? current.stat.version
              : undefined,
          }]
          : []),
        { create: path, data, mode: MODE.EPHEMERAL },
        // Version 1 from the start: a version of 0 cannot guard a multi.
        { setData: path, data },
        // The service node tells watchers what this creation holds, so
        // that they need not read the new znode before delivering it.
        {
          setData: `${this.#servicesPath}/${record.service}`,
          data: encodeCreation(creation),
        },
      ];
    }
    options.signal?.throwIfAborted();
    // This agent's own watch need not read what it makes.
    const made = creation && this.#mirror?.creating(record.service, creation);
    let stats;
    try {
      stats = await session.multi(ops);
    } catch (error) {
      made?.(undefined);
      // The service node went (removed by hand, or the ensemble's data
      // is another copy): made again by the next write.
      if (codeOf(error) === ZK.NO_NODE) {
        this.#serviceNodes.delete(record.service);
      }
      throw error;
    }
    // Every operation of a multi has its zxid.
    const revision = stats.at(-1)!.mzxid;
    made?.(revision);
    return { revision, created: created ?? revision };
  }

  async #delete(
    service: string,
    addr: string,
    options: WriteOptions,
  ): Promise<number | undefined> {
    const path = this.#path(service, addr);
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.#read(service, addr);
      if (!current) return undefined;
      if (!this.#allows(current, options)) {
        throw new OwnerConflictError(service, addr, {
          owner: current.owner,
          revision: this.#session?.zxid,
        });
      }
      options.signal?.throwIfAborted();
      try {
        const stats = await this.#open().multi([
          {
            remove: path,
            version: current.stat.version >= 1
              ? current.stat.version
              : undefined,
          },
          // The service node's new mzxid is the removal's zxid.
          { setData: `${this.#servicesPath}/${service}`, data: EMPTY },
        ]);
        return stats.at(-1)!.mzxid;
      } catch (error) {
        const code = codeOf(error);
        if (code !== ZK.BAD_VERSION && code !== ZK.NO_NODE) throw error;
      }
    }
    throw new Error(`'${instanceKey(service, addr)}' kept changing: try again`);
  }

  async #ensureService(service: string) {
    if (this.#serviceNodes.has(service)) return;
    await this.#open().ensure(`${this.#servicesPath}/${service}`);
    this.#serviceNodes.add(service);
  }

  #release(key: string, owner: string | null | undefined): void {
    if (owner === undefined || this.#mine.get(key)?.owner === owner) {
      this.#mine.delete(key);
    }
  }
}

/** What went wrong with a ZooKeeper call, in a few words. */
function describe(error: unknown): string {
  const code = codeOf(error);
  const names: Record<number, string> = {
    [ZK.CONNECTION_LOSS]: "connection lost",
    [ZK.SESSION_EXPIRED]: "session expired",
    [ZK.NO_NODE]: "no such node",
  };
  if (code !== undefined) return names[code] ?? `ZooKeeper error ${code}`;
  return error instanceof Error ? error.message : String(error);
}
