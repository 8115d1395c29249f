// Copyright the discover authors. BSD-3-Clause license.

/**
 * The ZooKeeper backend's session: npm `node-zookeeper-client` (the 3.4
 * protocol) behind promises, with the few things the library does not
 * offer itself.
 *
 * - **The server's zxid of every answer.** Each reply header carries the
 *   zxid the server had applied when it answered; the library keeps the
 *   last one (to resume a session) but does not hand it to callbacks. It
 *   is read right when the callback runs, before anything else can arrive
 *   ({@linkcode ZkSession.zxid}): the backend's watch orders its changes by
 *   it (see `_zk_mirror.ts`).
 * - **A hung server.** The library sends pings but never notices that none
 *   is answered (a stopped server still accepts bytes). A watchdog drops
 *   the connection after two thirds of the session timeout without a byte
 *   from the server, so the library moves to the next server of the
 *   ensemble while the session is still alive.
 * - **How long the session certainly lives.** A server that answers a
 *   request has heard from the session after the request was sent, and
 *   the ensemble expires a session only once a whole session timeout has
 *   passed without hearing from it: so the session cannot expire before
 *   the send time of the latest answered request plus the timeout
 *   ({@linkcode ZkSession.left}). A read of `/` goes out whenever a third
 *   of the timeout passed without an answer, so an idle session stays
 *   vouched for (reads only: no write).
 * - **Leaving without closing the session.** {@linkcode ZkSession.abandon}
 *   drops the connection without the close-session request, so the
 *   session's ephemeral nodes outlive the agent until the ensemble expires
 *   the session, as an etcd lease outlives an etcd agent.
 *
 * @module
 */

import { Buffer } from "node:buffer";
// @ts-types="@types/node-zookeeper-client"
import zookeeper from "node-zookeeper-client";

/**
 * A call that could not reach ZooKeeper: not connected, or no answer in
 * time.
 *
 * @example Usage
 * ```ts
 * import { ZkUnavailableError } from "./_zk_client.ts";
 * console.log(new ZkUnavailableError("not connected").message);
 * // "ZooKeeper unavailable: not connected"
 * ```
 */
export class ZkUnavailableError extends Error {
  /**
   * Creates the error.
   *
   * @param reason Why.
   */
  constructor(reason: string) {
    super(`ZooKeeper unavailable: ${reason}`);
    this.name = "ZkUnavailableError";
  }
}

/** ZooKeeper error codes the backend tells apart. */
export const ZK = {
  CONNECTION_LOSS: -4,
  NO_NODE: -101,
  BAD_VERSION: -103,
  NODE_EXISTS: -110,
  NOT_EMPTY: -111,
  SESSION_EXPIRED: -112,
} as const;

/** Creation modes of the 3.4 protocol. */
export const MODE = {
  PERSISTENT: 0,
  EPHEMERAL: 1,
} as const;

/** What the backend reads of a znode's stat, zxids as numbers. */
export interface NodeStat {
  /** Zxid of the node's creation. */
  czxid: number;
  /** Zxid of the node's last data change (or creation). */
  mzxid: number;
  /** Zxid of the last creation or removal of a child. */
  pzxid: number;
  /** Creation time, ms since the epoch. */
  ctime: number;
  /** Number of data changes. */
  version: number;
  /** Session id of an ephemeral node's owner as 16 hex digits; `"0000000000000000"` for others. */
  ephemeralOwner: string;
}

/** One operation of {@linkcode ZkSession.multi}. */
export type ZkOp =
  | { create: string; data: Uint8Array; mode: number }
  | { setData: string; data: Uint8Array; version?: number }
  | { remove: string; version?: number };

/** An error of the ZooKeeper client, with its code when it has one. */
export function codeOf(error: unknown): number | undefined {
  const code = (error as { getCode?: () => number })?.getCode?.();
  return typeof code === "number" ? code : undefined;
}

/**
 * A zxid (8 bytes, big-endian) as a number. Zxids are the epoch in the
 * high 32 bits and a counter in the low 32: exact as a number while the
 * ensemble's epoch stays below 2^21 leader elections.
 *
 * @example Usage
 * ```ts
 * import { Buffer } from "node:buffer";
 * import { zxidOf } from "./_zk_client.ts";
 * zxidOf(Buffer.from([0, 0, 0, 1, 0, 0, 0, 5])); // 4294967301
 * ```
 *
 * @param bytes The zxid as the client library gives it.
 * @returns The number.
 */
export function zxidOf(bytes: Uint8Array): number {
  return Number(Buffer.from(bytes).readBigUInt64BE(0));
}

/** A zxid as the 8 bytes the client library keeps (the inverse of {@linkcode zxidOf}). */
function zxidBytes(zxid: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(zxid), 0);
  return bytes;
}

function statOf(stat: zookeeper.Stat): NodeStat {
  return {
    czxid: zxidOf(stat.czxid),
    mzxid: zxidOf(stat.mzxid),
    pzxid: zxidOf(stat.pzxid),
    ctime: zxidOf(stat.ctime),
    version: stat.version,
    ephemeralOwner: Buffer.from(stat.ephemeralOwner).toString("hex"),
  };
}

/** What {@linkcode ZkSession} says about its connection. */
export interface ZkSessionEvents {
  /** Connected to a server (first time, or again within the session). */
  connected(): void;
  /** The connection is lost; the library is trying the servers. */
  disconnected(): void;
  /** The ensemble expired the session: its ephemeral nodes are gone, and this session is over. */
  expired(): void;
}

/** Options of {@linkcode ZkSession}. */
export interface ZkSessionOptions {
  /** Session timeout asked for, in ms (the server may bound it). */
  sessionTimeout: number;
  /** What happens to the connection. */
  events: ZkSessionEvents;
  /**
   * The last zxid an earlier session of the same client saw. A server
   * that has not applied it yet (a follower that lags) refuses the new
   * session, as it refuses a reconnecting one (the connect request's
   * `lastZxidSeen`), and the library tries the next server: the first
   * reads of the new session are never older than what the earlier one
   * read. A server that never reaches it (an ensemble whose data was
   * restored from an older copy) refuses it for good.
   *
   * @default {0}
   */
  lastZxidSeen?: number;
}

/** The library's connection manager: the fields and methods used here. */
interface Manager {
  zxid: Buffer;
  state: number;
  socket?: { destroy(): void };
  connectTimeoutHandler?: ReturnType<typeof setTimeout> | null;
  sessionTimeout: number;
  onSocketData(buffer: Buffer): void;
  connect(): void;
  setState(state: number): void;
}

/** Errors a server answers about a node: it heard from the session. */
const NODE_ERRORS: ReadonlySet<number> = new Set([
  ZK.NO_NODE,
  ZK.BAD_VERSION,
  ZK.NODE_EXISTS,
  ZK.NOT_EMPTY,
]);

/** `STATES.CONNECTED` and `STATES.CLOSING` of the library's connection manager. */
const CONNECTED = 2;
const CLOSING = -1;

/**
 * One ZooKeeper session: promises over the client library, the server's
 * zxid of each answer, a watchdog for hung servers.
 *
 * @example Usage
 * ```ts ignore
 * import { ZkSession } from "./_zk_client.ts";
 * const session = new ZkSession("127.0.0.1:2181", {
 *   sessionTimeout: 10_000,
 *   events: { connected() {}, disconnected() {}, expired() {} },
 * });
 * session.connect();
 * ```
 */
export class ZkSession {
  readonly #client: zookeeper.Client;
  readonly #manager: Manager;
  #lastData = Date.now();
  #watchdog?: ReturnType<typeof setInterval>;
  #over = false;
  /** `performance.now()` when the latest answered request was sent. */
  #answered = -Infinity;
  #probing = false;

  /**
   * Creates the session; nothing connects before {@linkcode ZkSession.connect}.
   *
   * @param connect `host:port,host:port,...`, as the library takes it.
   * @param options The session timeout and where to say what happens.
   */
  constructor(connect: string, options: ZkSessionOptions) {
    this.#client = zookeeper.createClient(connect, {
      sessionTimeout: options.sessionTimeout,
      spinDelay: 200,
      retries: 0,
    });
    // deno-lint-ignore no-explicit-any
    this.#manager = (this.#client as any).connectionManager as Manager;
    const manager = this.#manager;
    if (options.lastZxidSeen) manager.zxid = zxidBytes(options.lastZxidSeen);
    const onSocketData = manager.onSocketData;
    // Every byte from the server feeds the watchdog (bound at connect).
    manager.onSocketData = (buffer: Buffer) => {
      this.#lastData = Date.now();
      onSocketData.call(manager, buffer);
    };
    const { events } = options;
    this.#client.on("state", (state) => {
      if (this.#over) return;
      if (state === zookeeper.State.SYNC_CONNECTED) {
        this.#lastData = Date.now();
        events.connected();
      } else if (state === zookeeper.State.DISCONNECTED) {
        events.disconnected();
      } else if (state === zookeeper.State.EXPIRED) {
        this.#stop();
        events.expired();
      }
    });
  }

  /** Starts connecting (the library tries the servers in turn, for ever). */
  connect(): void {
    this.#client.connect();
    this.#watchdog = setInterval(() => {
      const m = this.#manager;
      const silence = Date.now() - this.#lastData;
      if (m.state === CONNECTED && silence > (m.sessionTimeout * 2) / 3) {
        // Pings unanswered: the server hangs. Another one, same session.
        this.#lastData = Date.now();
        m.socket?.destroy();
      }
      this.#probe();
    }, 250);
  }

  /**
   * Milliseconds the ensemble certainly keeps this session alive from now
   * on: the send time of the latest request it answered, plus the session
   * timeout it granted, minus the time since; 0 before any answer, and
   * once the session is over (expired, closed or abandoned).
   */
  get left(): number {
    if (this.#over) return 0;
    const left = this.#answered + this.timeout - performance.now();
    return Number.isFinite(left) ? Math.max(0, left) : 0;
  }

  /** Reads `/` when a third of the timeout passed without an answer. */
  #probe() {
    if (this.#probing || !this.connected) return;
    if (performance.now() - this.#answered < this.timeout / 3) return;
    this.#probing = true;
    this.#call<void>((resolve, reject) => {
      this.#client.exists("/", (error: unknown) => {
        if (error) reject(error);
        else resolve();
      });
    }).catch(() => {/* the next tick tries again */}).finally(() => {
      this.#probing = false;
    });
  }

  /** The session id, 16 hex digits (as in an ephemeral node's owner). */
  get id(): string {
    return Buffer.from(this.#client.getSessionId()).toString("hex");
  }

  /** The session timeout the server granted, in ms. */
  get timeout(): number {
    return this.#client.getSessionTimeout();
  }

  /**
   * The zxid of the server's last answer: read inside a callback, that
   * answer's (the server had applied every transaction up to it).
   */
  get zxid(): number {
    return zxidOf(this.#manager.zxid);
  }

  /**
   * Reads a node's data and stat, setting a data watch with `watcher`.
   *
   * @param path The node.
   * @param watcher Called once when the node changes or goes.
   * @returns The data, the stat and the server's zxid then; `undefined` when absent.
   */
  getData(
    path: string,
    watcher?: (event: zookeeper.Event) => void,
  ): Promise<{ data: Uint8Array; stat: NodeStat; zxid: number } | undefined> {
    return this.#call((resolve, reject) => {
      const done = (error: unknown, data: Buffer, stat: zookeeper.Stat) => {
        const zxid = this.zxid;
        if (codeOf(error) === ZK.NO_NODE) return resolve(undefined);
        if (error) return reject(error);
        resolve({ data: data ?? new Uint8Array(), stat: statOf(stat), zxid });
      };
      if (watcher) this.#client.getData(path, watcher, done);
      else this.#client.getData(path, done);
    });
  }

  /**
   * Lists a node's children with its stat, setting a child watch with `watcher`.
   *
   * @param path The node.
   * @param watcher Called once when a child is created or removed.
   * @returns The names, the stat and the server's zxid then; `undefined` when absent.
   */
  getChildren(
    path: string,
    watcher?: (event: zookeeper.Event) => void,
  ): Promise<{ children: string[]; stat: NodeStat; zxid: number } | undefined> {
    return this.#call((resolve, reject) => {
      const done = (
        error: unknown,
        children: string[],
        stat: zookeeper.Stat,
      ) => {
        const zxid = this.zxid;
        if (codeOf(error) === ZK.NO_NODE) return resolve(undefined);
        if (error) return reject(error);
        resolve({ children, stat: statOf(stat), zxid });
      };
      if (watcher) this.#client.getChildren(path, watcher, done);
      else this.#client.getChildren(path, done);
    });
  }

  /**
   * Creates a node; an existing one is left as it is.
   *
   * @param path The node.
   * @param data Its data.
   * @returns Whether it was created.
   */
  ensure(path: string, data: Uint8Array = new Uint8Array()): Promise<boolean> {
    return this.#call((resolve, reject) => {
      this.#client.create(
        path,
        Buffer.from(data),
        MODE.PERSISTENT,
        (error: unknown) => {
          if (codeOf(error) === ZK.NODE_EXISTS) return resolve(false);
          if (error) return reject(error);
          resolve(true);
        },
      );
    });
  }

  /**
   * Runs operations in one transaction (a multi): all or none.
   *
   * A version of 0 in a multi is sent as "any version" by the client
   * library (`version || -1`), so a versioned operation here must name a
   * version of at least 1.
   *
   * @param ops The operations.
   * @returns The stat of each `setData`, by index (other operations have none).
   */
  multi(ops: ZkOp[]): Promise<(NodeStat | undefined)[]> {
    const txn = this.#client.transaction();
    for (const op of ops) {
      if ("create" in op) {
        txn.create(op.create, Buffer.from(op.data), op.mode);
      } else if ("setData" in op) {
        if (op.version === 0) throw new RangeError("version 0 means any");
        txn.setData(op.setData, Buffer.from(op.data), op.version ?? -1);
      } else {
        if (op.version === 0) throw new RangeError("version 0 means any");
        txn.remove(op.remove, op.version ?? -1);
      }
    }
    return this.#call((resolve, reject) => {
      txn.commit((error, results) => {
        if (error) return reject(error);
        resolve(
          (results as { stat?: zookeeper.Stat }[]).map((r) =>
            r.stat ? statOf(r.stat) : undefined
          ),
        );
      });
    });
  }

  /** Whether the session is connected to a server now. */
  get connected(): boolean {
    return !this.#over && this.#manager.state === CONNECTED;
  }

  /**
   * Sends a request now, or fails at once when not connected (the library
   * would hold it until it reconnects); an answer that takes longer than
   * the session timeout fails too (the request may still be applied).
   */
  #call<T>(
    send: (
      resolve: (value: T) => void,
      reject: (error: unknown) => void,
    ) => void,
  ): Promise<T> {
    if (!this.connected) {
      return Promise.reject(new ZkUnavailableError("not connected"));
    }
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const timer = setTimeout(
      () => reject(new ZkUnavailableError("no answer in time")),
      this.#manager.sessionTimeout,
    );
    const sent = performance.now();
    send((value) => {
      clearTimeout(timer);
      if (sent > this.#answered) this.#answered = sent;
      resolve(value);
    }, (error) => {
      clearTimeout(timer);
      // A refusal about a node is an answer too; a lost connection is not.
      if (NODE_ERRORS.has(codeOf(error) ?? 0) && sent > this.#answered) {
        this.#answered = sent;
      }
      reject(error);
    });
    return promise;
  }

  /** Closes the session: its ephemeral nodes go at once. */
  close(): void {
    if (this.#over) return;
    this.#stop();
    this.#client.close();
  }

  /**
   * Drops the connection without closing the session: its ephemeral nodes
   * stay until the ensemble expires it (the session timeout).
   */
  abandon(): void {
    if (this.#over) return;
    this.#stop();
    const m = this.#manager;
    m.connect = () => {}; // no reconnection from the library's own timers
    m.setState(CLOSING);
    if (m.connectTimeoutHandler) clearTimeout(m.connectTimeoutHandler);
    m.socket?.destroy();
  }

  #stop() {
    this.#over = true;
    clearInterval(this.#watchdog);
  }
}
