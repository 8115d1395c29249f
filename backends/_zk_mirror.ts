// Copyright the discover authors. BSD-3-Clause license.

/**
 * The ZooKeeper backend's watch: a mirror of the services the agent
 * watches, kept by one-shot watches (the 3.4 protocol has no persistent
 * ones), whose changes reach the agent in zxid order, none lost.
 *
 * ## What is watched
 *
 * The services node (`<prefix>/services`, a child watch: services that
 * appear), each watched service's node (a child watch: instances that
 * appear or go) and each of its instances (a data watch: a changed
 * record). A watch fires once; the read that follows sets it again and
 * returns the node as it is then, so whatever changed between the firing
 * and the read is in what the read returns. Nothing is lost there; several
 * changes of one node may arrive as one (the last).
 *
 * ## Round trips
 *
 * A new instance costs a watcher one round trip before it is delivered:
 * the listing of its service goes out with a read of the service node's
 * data, in which the backend's creations tell what they made
 * ({@linkcode encodeCreation}). When the service node's last change is
 * its last child change (`mzxid` equal to `pzxid`: one multi), the new
 * znode named there is known as it was made, at that zxid; its own read,
 * which sets its data watch, follows the delivery. Any other new znode
 * (made by hand, by an older agent, or not the last one) is read before
 * it is delivered. The session that makes a znode tells the mirror
 * ({@linkcode Mirror.creating}) and reads only the list. A removal needs no
 * read of the znode: its data watch says it went, and the listing that
 * follows (its service's child watch fired in the same transaction)
 * delivers it.
 *
 * ## One order, none lost (the frontier)
 *
 * ZooKeeper sends a session's notifications and answers in the order it
 * applied the transactions behind them, and each answer carries the zxid
 * the server had reached (`ZkSession.zxid`). So when an answer at zxid
 * `T` arrives, every watched node that changed at or before `T` has
 * already said so. A node that said so and has not been read again yet is
 * *dirty*, and its *floor* is the zxid of the read that set its watch: its
 * change is above the floor. The mirror therefore holds back the changes
 * it read until they are at or below the **frontier**: the lowest floor of
 * the dirty nodes, or the zxid of the last answer when none is dirty.
 * Below the frontier, everything is known; the changes there are delivered
 * in zxid order, each once.
 *
 * ## Revisions
 *
 * A put is delivered at the record's `mzxid` (a creation's is its
 * `czxid`), the same zxid at every agent. A removal is delivered at the
 * service node's `pzxid` read with the list that no longer holds it: the
 * zxid of the removal when it was the last creation or removal in that
 * service before the read, else of a later one in the same service (then
 * the removals and creations in between arrive together). The backend's
 * own removals are multis that also set the service node's data, so the
 * writer gets the removal's exact zxid back.
 *
 * @module
 */

import type zookeeper from "node-zookeeper-client";
import type { BackendChange, StoredRecord } from "./backend.ts";
import type { BackendLogger } from "./descriptor.ts";
import { codeOf, ZK, type ZkSession } from "./_zk_client.ts";
import { ALL_SERVICES } from "../protocol/types.ts";

/** Where the mirror delivers a scope's state and changes. */
export interface MirrorSink {
  /** The scope: a service, or `"*"`. */
  readonly scope: string;
  /** The complete state of the scope at `revision`. */
  reset(revision: number, records: StoredRecord[]): void;
  /** Changes of the scope, in zxid order. */
  changes(changes: BackendChange[]): void;
}

/** What the mirror knows of an instance's znode. */
export interface KnownNode {
  /** The record it holds. */
  record: StoredRecord;
  /** Its `mzxid`. */
  mzxid: number;
  /** Session of its owner (16 hex digits). */
  session: string;
}

/** What {@linkcode Mirror} needs from the backend. */
export interface MirrorOptions {
  /** The session everything is read through. */
  session: ZkSession;
  /** `<prefix>/services`. */
  servicesPath: string;
  /**
   * Decodes an instance's data, of the znode made at `czxid`; `undefined`
   * (logged) when it is not a record.
   */
  decode(
    service: string,
    addr: string,
    data: Uint8Array,
    czxid: number,
  ): StoredRecord | undefined;
  /** A put was read (before it is delivered): who holds the record now. */
  onPut?(record: StoredRecord, session: string): void;
  /** A read failed (the connection, most often): retried on {@linkcode Mirror.resume}. */
  onFailure?(error: unknown): void;
  /** Where to log. */
  log?: BackendLogger;
}

/** What a creation through the backend writes to its service node. */
export interface Creation {
  /** The address: the name of the znode made. */
  addr: string;
  /** The session that made it (16 hex digits): its ephemeral owner. */
  session: string;
  /** The data it was made with. */
  data: Uint8Array;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/**
 * Encodes what a creation writes to its service node, in the multi that
 * makes the znode: the service node's `mzxid` is then the znode's
 * `czxid` and `mzxid`, and a watcher that lists the service can read the
 * new instance along with the list instead of after it.
 *
 * @example Usage
 * ```ts
 * import { decodeCreation, encodeCreation } from "./_zk_mirror.ts";
 * const bytes = encodeCreation({
 *   addr: "10.0.0.1:80",
 *   session: "0100000000000001",
 *   data: new TextEncoder().encode("{}"),
 * });
 * decodeCreation(bytes)?.addr; // "10.0.0.1:80"
 * ```
 *
 * @param creation The znode made, its owner and its data.
 * @returns The service node's data.
 */
export function encodeCreation(creation: Creation): Uint8Array {
  return ENCODER.encode(JSON.stringify({
    addr: creation.addr,
    session: creation.session,
    data: DECODER.decode(creation.data),
  }));
}

/**
 * Decodes a service node's data written by {@linkcode encodeCreation}.
 *
 * @example Usage
 * ```ts
 * import { decodeCreation } from "./_zk_mirror.ts";
 * decodeCreation(new Uint8Array()); // undefined: a removal's (or none)
 * ```
 *
 * @param bytes The service node's data.
 * @returns The creation, or `undefined` when the data is not one.
 */
export function decodeCreation(bytes: Uint8Array): Creation | undefined {
  if (bytes.length === 0) return undefined;
  try {
    const { addr, session, data } = JSON.parse(DECODER.decode(bytes));
    if (
      typeof addr !== "string" || typeof session !== "string" ||
      typeof data !== "string"
    ) return undefined;
    return { addr, session, data: ENCODER.encode(data) };
  } catch {
    return undefined;
  }
}

/** A creation of this session: its zxid once made. */
interface Made extends Creation {
  at: number | undefined;
}

/** A watched node: whether it must be read again, and since when. */
interface Track {
  /** Its watch fired (or it was never read): a read is due. */
  dirty: boolean;
  /** Zxid of the read that set its watch. */
  floor: number;
  /** A read is under way. */
  inflight: boolean;
}

interface Child {
  track: Track;
  czxid: number;
  mzxid: number;
  session: string;
  /** The record as last read (`undefined` before the first read, or not a record). */
  record?: StoredRecord;
  /** Its last read found no znode (its service's list has not said so yet). */
  gone?: boolean;
}

interface Service {
  name: string;
  path: string;
  list: Track;
  /** Instances by address, as last read. */
  children: Map<string, Child>;
  /** Not read yet for a sink that waits: its reads deliver no changes. */
  loading: boolean;
  /** Its node did not exist at the last read (the services node's watch tells when it does). */
  absent: boolean;
  /** The records as delivered (below the frontier). */
  released: Map<string, StoredRecord>;
  /** The zxid at which loading ended. */
  loadedAt: number;
  /** An instance went since the last listing was sent. */
  removed: boolean;
}

interface Attached {
  sink: MirrorSink;
  ready: boolean;
  /** The session's zxid when it attached: its first state is at least that recent. */
  after: number;
}

/** `Event.NODE_DELETED` of the client library. */
const NODE_DELETED = 2;

const newTrack = (floor = 0): Track => ({
  dirty: true,
  floor,
  inflight: false,
});

/**
 * A mirror of the watched services of one session.
 *
 * @example Usage
 * ```ts ignore
 * import { Mirror } from "./_zk_mirror.ts";
 * const mirror = new Mirror({ session, servicesPath: "/discover/services", decode });
 * const detach = mirror.attach({ scope: "web", reset() {}, changes() {} });
 * ```
 */
export class Mirror {
  readonly #o: MirrorOptions;
  readonly #root: Track = newTrack();
  #rootRead = false;
  #rootList = new Set<string>();
  readonly #services = new Map<string, Service>();
  #pending: BackendChange[] = [];
  readonly #sinks = new Set<Attached>();
  /** Zxid of the last answer. */
  #latest = 0;
  /** The frontier at the last release. */
  #released = 0;
  #closed = false;
  #currentWaiters: { at: number; resolve: () => void }[] = [];
  /** Creations this session has under way or just made, by service. */
  readonly #creating = new Map<string, Set<Made>>();
  /** One watcher for every node (the library keeps one per path and function). */
  readonly #watcher = (event: zookeeper.Event) => this.#notified(event);

  /**
   * Creates the mirror; it reads the services node at once.
   *
   * @param options The session, the layout, the decoder and the hooks.
   */
  constructor(options: MirrorOptions) {
    this.#o = options;
    this.#readRoot();
  }

  /**
   * Starts delivering a scope to `sink`: its state as a reset once it is
   * read, then its changes.
   *
   * @param sink Where to deliver.
   * @returns Stops delivering.
   */
  attach(sink: MirrorSink): () => void {
    // Everything this session wrote before is in the first state: it
    // waits until the frontier passes the session's last answer, which a
    // read of the services node makes sure of.
    const after = this.#o.session.zxid;
    const entry: Attached = { sink, ready: false, after };
    this.#sinks.add(entry);
    if (after > this.#latest) this.#dirty(this.#root, () => this.#readRoot());
    if (sink.scope === ALL_SERVICES) {
      for (const name of this.#rootList) this.#track(name);
    } else {
      this.#track(sink.scope);
    }
    this.#step();
    return () => {
      this.#sinks.delete(entry);
      this.#untrackUnwanted();
    };
  }

  /**
   * Tells of a creation this session is about to make (see
   * {@linkcode encodeCreation}): until it is answered, a listing of its
   * service does not read the service node, and the listing that holds
   * it takes the znode from here instead.
   *
   * @param service The service.
   * @param creation The znode, this session's id and the data.
   * @returns Call with the creation's zxid once it is made, or with
   * `undefined` when it failed.
   */
  creating(service: string, creation: Creation): (at?: number) => void {
    const made: Made = { ...creation, at: undefined };
    let set = this.#creating.get(service);
    if (!set) this.#creating.set(service, set = new Set());
    set.add(made);
    return (at) => {
      // Kept for the listing that follows, if the service is watched.
      if (at === undefined || !this.#services.has(service)) {
        this.#forget(service, made);
      } else made.at = at;
    };
  }

  #forget(service: string, made: Made) {
    const set = this.#creating.get(service);
    set?.delete(made);
    if (set?.size === 0) this.#creating.delete(service);
  }

  /**
   * What the mirror read of an instance's znode, if it watches it.
   *
   * @param service The service.
   * @param addr The address.
   * @returns The node, or `undefined`.
   */
  known(service: string, addr: string): KnownNode | undefined {
    const child = this.#services.get(service)?.children.get(addr);
    return child?.record
      ? { record: child.record, mzxid: child.mzxid, session: child.session }
      : undefined;
  }

  /**
   * After a reconnection within the session: reads again what was due
   * (reads under way were lost with the connection), and resolves once
   * everything up to then is delivered. Also before the first state is
   * complete: a service still loading is read again the same way, and its
   * state is delivered once read.
   *
   * @returns Resolves when the mirror is current.
   */
  async resume(): Promise<void> {
    for (const track of this.#tracks()) {
      if (track.dirty) track.inflight = false;
    }
    this.#root.dirty = true;
    this.#root.inflight = false;
    for (const [track, read] of this.#due()) if (!track.inflight) read();
    // The services node is read again first: its answer says how far the
    // server is.
    const at = await new Promise<number>((resolve) => {
      const check = () => {
        if (this.#closed || (!this.#root.dirty && !this.#root.inflight)) {
          resolve(this.#latest);
        } else setTimeout(check, 10);
      };
      check();
    });
    await this.#current(at);
  }

  /** Resolves once every change up to the first complete read of the watched scopes is delivered. */
  ready(): Promise<void> {
    return this.#current(0);
  }

  /** Stops reading; watches that fire later are ignored. */
  close(): void {
    this.#closed = true;
    this.#sinks.clear();
    for (const waiter of this.#currentWaiters.splice(0)) waiter.resolve();
  }

  #current(at: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#currentWaiters.push({ at, resolve });
    this.#step();
    return promise;
  }

  // ---- what is watched ----

  /** Whether some sink wants `service`, and whether one of them is delivering already. */
  #wanted(service: string): { wanted: boolean; live: boolean } {
    let wanted = false, live = false;
    for (const { sink, ready } of this.#sinks) {
      if (sink.scope === ALL_SERVICES || sink.scope === service) {
        wanted = true;
        live ||= ready;
      }
    }
    return { wanted, live };
  }

  /**
   * Watches a service: `loading` when no sink delivers it yet (its state
   * becomes the first reset of the sinks that wait for it), else its
   * records arrive as changes.
   */
  #track(name: string, floor = this.#latest) {
    if (this.#services.has(name) || this.#closed) return;
    const loading = !this.#wanted(name).live;
    const service: Service = {
      name,
      path: `${this.#o.servicesPath}/${name}`,
      list: newTrack(floor),
      children: new Map(),
      loading,
      absent: false,
      released: new Map(),
      loadedAt: 0,
      removed: false,
    };
    this.#services.set(name, service);
    this.#readList(service);
  }

  #untrackUnwanted() {
    for (const name of [...this.#services.keys()]) {
      if (!this.#wanted(name).wanted) this.#services.delete(name);
    }
    this.#step();
  }

  *#tracks(): Iterable<Track> {
    yield this.#root;
    for (const service of this.#services.values()) {
      yield service.list;
      for (const child of service.children.values()) yield child.track;
    }
  }

  /** Every dirty node, with the read it needs. */
  *#due(): Iterable<[Track, () => void]> {
    if (this.#root.dirty) yield [this.#root, () => this.#readRoot()];
    for (const service of this.#services.values()) {
      if (service.list.dirty) {
        yield [service.list, () => this.#readList(service)];
      }
      for (const [addr, child] of service.children) {
        if (child.track.dirty) {
          yield [child.track, () => this.#readChild(service, addr, child)];
        }
      }
    }
  }

  // ---- notifications and reads ----

  #notified(event: zookeeper.Event) {
    if (this.#closed) return;
    const path = event.getPath();
    const root = this.#o.servicesPath;
    if (path === root) return this.#dirty(this.#root, () => this.#readRoot());
    if (!path.startsWith(`${root}/`)) return;
    const rest = path.slice(root.length + 1);
    const slash = rest.indexOf("/");
    const service = this.#services.get(slash < 0 ? rest : rest.slice(0, slash));
    if (!service) return; // no longer watched
    if (slash < 0) {
      return this.#dirty(service.list, () => this.#readList(service));
    }
    const addr = rest.slice(slash + 1);
    const child = service.children.get(addr);
    if (!child) return;
    if (event.getType() === NODE_DELETED) {
      // The listing that follows (its service's child watch fired too, in
      // the same transaction) delivers the removal, so it reads no
      // creation from the service node.
      service.removed = true;
      if (!child.track.inflight) {
        // Gone, as a read would say: no read (the listing reads it
        // again, should it be back).
        child.track.dirty = false;
        child.track.floor = this.#latest;
        child.gone = true;
        return;
      }
    }
    this.#dirty(child.track, () => this.#readChild(service, addr, child));
  }

  #dirty(track: Track, read: () => void) {
    track.dirty = true;
    if (!track.inflight) read();
  }

  /** Runs one read of a node; a failure leaves it dirty for {@linkcode Mirror.resume}. */
  #read<T>(
    track: Track,
    read: () => Promise<T>,
    apply: (result: T) => void,
    again: () => void,
  ) {
    if (this.#closed) return;
    track.inflight = true;
    track.dirty = false;
    read().then((result) => {
      track.inflight = false;
      if (this.#closed) return;
      apply(result);
      // Its watch fired while the read was under way (a watch the read
      // before set): read once more.
      if (track.dirty) again();
      this.#step();
    }, (error) => {
      track.inflight = false;
      track.dirty = true;
      if (this.#closed || codeOf(error) === ZK.SESSION_EXPIRED) return;
      this.#o.onFailure?.(error);
    });
  }

  #readRoot() {
    const root = this.#root;
    const floor = root.floor;
    this.#read(
      root,
      () => this.#o.session.getChildren(this.#o.servicesPath, this.#watcher),
      (result) => {
        this.#latest = Math.max(this.#latest, result?.zxid ?? 0);
        root.floor = result?.zxid ?? this.#latest;
        this.#rootRead = true;
        const names = new Set(result?.children ?? []);
        const appeared = [...names].filter((n) => !this.#rootList.has(n));
        this.#rootList = names;
        for (const name of appeared) {
          const service = this.#services.get(name);
          if (service) {
            // Watched while it did not exist: read it now (created after `floor`).
            if (service.absent && !service.list.inflight) {
              service.list.floor = floor;
              this.#readList(service);
            }
          } else if (this.#wanted(name).wanted) {
            // A new service under "*": its records are changes once "*" delivers.
            this.#track(name, floor);
          }
        }
      },
      () => this.#readRoot(),
    );
  }

  #readList(service: Service) {
    const floor = service.list.floor;
    const session = this.#o.session;
    // A listing after a removal reads the list only: the service node
    // tells of a creation. So does one while this session creates in the
    // service: it knows what it makes.
    const withCreation = !service.removed &&
      !this.#creating.has(service.name);
    service.removed = false;
    this.#read(
      service.list,
      // Both requests go at once: the service node's data (what its last
      // creation made) is read along with the list, in one round trip.
      () =>
        Promise.all([
          session.getChildren(service.path, this.#watcher),
          withCreation
            ? session.getData(service.path).catch(() => undefined)
            : undefined,
        ]),
      ([result, node]) => {
        if (this.#services.get(service.name) !== service) return;
        const zxid = result?.zxid ?? this.#latest;
        this.#latest = Math.max(this.#latest, zxid);
        service.list.floor = zxid;
        service.absent = result === undefined;
        const names = new Set(result?.children ?? []);
        // A removal is at the service's pzxid (or, for a service node that
        // is gone, at the answer's zxid).
        const removedAt = result?.stat.pzxid ?? zxid;
        for (const [addr, child] of [...service.children]) {
          if (names.has(addr)) continue;
          service.children.delete(addr);
          if (child.record && !service.loading) {
            this.#pending.push({
              type: "delete",
              revision: removedAt,
              service: service.name,
              addr,
            });
          }
        }
        // The last creation or removal in the service, when it is the
        // creation the service node's data tells of: that znode as it was
        // made, at its zxid.
        let last = result && node?.stat.mzxid === result.stat.pzxid
          ? decodeCreation(node.data)
          : undefined;
        // This session's creations are answered before a listing sent
        // after them.
        for (const made of this.#creating.get(service.name) ?? []) {
          if (made.at === undefined || !result) continue;
          if (made.at === result.stat.pzxid) last = made;
          if (made.at <= result.stat.pzxid) this.#forget(service.name, made);
        }
        const told: [string, Child][] = [];
        for (const addr of names) {
          const known = service.children.get(addr);
          // A znode that went after its last listing and is back (made
          // again): read anew, its record replaces the old one.
          if (known && !known.gone) continue;
          if (addr === last?.addr) {
            told.push([addr, this.#told(service, last, result!.stat.pzxid)]);
            continue;
          }
          // Created after `floor`: held below it until read.
          const child: Child = {
            track: newTrack(floor),
            czxid: known?.czxid ?? 0,
            mzxid: known?.mzxid ?? 0,
            session: known?.session ?? "",
            record: known?.record,
          };
          service.children.set(addr, child);
          this.#readChild(service, addr, child);
        }
        // After this answer's changes are delivered: a microtask runs
        // once `#read` has stepped.
        if (told.length > 0) queueMicrotask(() => this.#arm(service, told));
      },
      () => this.#readList(service),
    );
  }

  /**
   * A znode known from what its creation told, at its creation's zxid `at`
   * (a create and a set of version 1, at one zxid): held below that until
   * read again, which also sets its watch.
   */
  #told(service: Service, creation: Creation, at: number): Child {
    const child: Child = {
      track: newTrack(at),
      czxid: 0,
      mzxid: 0,
      session: "",
      record: service.children.get(creation.addr)?.record,
    };
    service.children.set(creation.addr, child);
    this.#made(service, child, {
      addr: creation.addr,
      data: creation.data,
      czxid: at,
      mzxid: at,
      session: creation.session,
    });
    return child;
  }

  /** Reads the znodes known from their creation, setting their watches. */
  #arm(service: Service, told: [string, Child][]) {
    for (const [addr, child] of told) {
      if (this.#services.get(service.name) !== service) return;
      if (service.children.get(addr) !== child) continue;
      if (child.track.dirty && !child.track.inflight) {
        this.#readChild(service, addr, child);
      }
    }
  }

  /**
   * An instance is read (by its own read, or from what its creation told):
   * its record, and the change to deliver at its `mzxid`.
   */
  #made(
    service: Service,
    child: Child,
    node: {
      addr: string;
      data: Uint8Array;
      czxid: number;
      mzxid: number;
      session: string;
    },
  ) {
    const { addr, data } = node;
    child.czxid = node.czxid;
    child.mzxid = node.mzxid;
    child.session = node.session;
    const had = child.record;
    child.record = this.#o.decode(service.name, addr, data, node.czxid);
    if (child.record) this.#o.onPut?.(child.record, child.session);
    if (service.loading) return;
    if (child.record) {
      this.#pending.push({
        type: "put",
        revision: node.mzxid,
        record: child.record,
      });
    } else if (had) {
      this.#pending.push({
        type: "delete",
        revision: node.mzxid,
        service: service.name,
        addr,
      });
    }
  }

  #readChild(service: Service, addr: string, child: Child) {
    this.#read(
      child.track,
      () => this.#o.session.getData(`${service.path}/${addr}`, this.#watcher),
      (result) => {
        if (this.#services.get(service.name) !== service) return;
        if (service.children.get(addr) !== child) return;
        if (!result) {
          // Gone: its service's child watch has fired, and the list read
          // that follows delivers the removal (or reads it again, should
          // it be back).
          child.track.floor = this.#latest;
          child.gone = true;
          return;
        }
        child.gone = false;
        this.#latest = Math.max(this.#latest, result.zxid);
        child.track.floor = result.zxid;
        const { stat } = result;
        if (stat.mzxid === child.mzxid && stat.czxid === child.czxid) return;
        this.#made(service, child, {
          addr,
          data: result.data,
          czxid: stat.czxid,
          mzxid: stat.mzxid,
          session: stat.ephemeralOwner,
        });
      },
      () => this.#readChild(service, addr, child),
    );
  }

  // ---- delivery ----

  /** The zxid up to which every change of the watched nodes is known. */
  #frontier(): number {
    let frontier = this.#latest;
    for (const track of this.#liveTracks()) {
      if (track.dirty || track.inflight) {
        frontier = Math.min(frontier, track.floor);
      }
    }
    return frontier;
  }

  /** The nodes whose changes are delivered (a loading service's are not). */
  *#liveTracks(): Iterable<Track> {
    yield this.#root;
    for (const service of this.#services.values()) {
      if (service.loading) continue;
      yield service.list;
      for (const child of service.children.values()) yield child.track;
    }
  }

  /** Delivers what is below the frontier, the states that are complete, and wakes who waits. */
  #step() {
    if (this.#closed) return;
    // Loading services whose every node is read: their state is complete now.
    for (const service of this.#services.values()) {
      if (!service.loading || service.list.dirty || service.list.inflight) {
        continue;
      }
      let done = true;
      for (const child of service.children.values()) {
        if (child.track.dirty || child.track.inflight) done = false;
      }
      if (!done) continue;
      service.loading = false;
      service.loadedAt = this.#latest;
      service.released = new Map();
      for (const [addr, child] of service.children) {
        if (child.record) service.released.set(addr, child.record);
      }
    }
    const frontier = this.#frontier();
    const now = this.#pending.filter((c) => c.revision <= frontier);
    if (now.length > 0) {
      this.#pending = this.#pending.filter((c) => c.revision > frontier);
      now.sort((a, b) => a.revision - b.revision);
      for (const change of now) {
        const service = this.#services.get(serviceOf(change));
        if (!service) continue;
        if (change.type === "put") {
          service.released.set(change.record.addr, change.record);
        } else service.released.delete(change.addr);
      }
      for (const { sink, ready } of this.#sinks) {
        if (!ready) continue;
        const mine = sink.scope === ALL_SERVICES
          ? now
          : now.filter((c) => serviceOf(c) === sink.scope);
        if (mine.length > 0) sink.changes(mine);
      }
    }
    this.#released = Math.max(this.#released, frontier);
    // Sinks whose scope is complete below the frontier: their first state.
    for (const entry of this.#sinks) {
      if (entry.ready || !this.#rootRead || this.#released < entry.after) {
        continue;
      }
      const scope = entry.sink.scope;
      const services = scope === ALL_SERVICES
        ? [...this.#rootList].map((n) => this.#services.get(n))
        : [this.#services.get(scope)];
      const complete = services.every((s) =>
        s !== undefined && !s.loading && s.loadedAt <= this.#released
      );
      if (!complete) continue;
      entry.ready = true;
      const records = services.flatMap((s) => [...s!.released.values()]);
      entry.sink.reset(this.#released, records);
    }
    for (const waiter of [...this.#currentWaiters]) {
      const settled = [...this.#sinks].every((e) => e.ready) &&
        this.#rootRead && this.#released >= waiter.at;
      if (!settled) continue;
      this.#currentWaiters.splice(this.#currentWaiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  }
}

function serviceOf(change: BackendChange): string {
  return change.type === "put" ? change.record.service : change.service;
}
