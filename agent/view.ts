// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's view of every service: the current instances, a bounded
 * history of changes for `since` replays, and the fan-out of each change
 * to the subscribers of its service. It is fed by one backend stream.
 *
 * The history is bounded twice: by a number of changes, and by their
 * estimated size ({@linkcode changeBytes}), so that large attributes
 * changed often cannot grow the agent without bound. The oldest changes go
 * first; a resume from before the oldest one kept gets a snapshot.
 *
 * An agent may hold hundreds of thousands of instances, so the view keeps
 * little of each: the record its backend delivered, shared with the
 * backend and never changed, and the revision of the instance's last
 * visible change. The wire {@linkcode Instance} (with its `id`) is built
 * when it is asked for, and a change in the history refers to what the
 * view holds instead of copying it.
 *
 * @module
 */

import type {
  BackendChange,
  BackendState,
  BackendWatcher,
  StoredRecord,
} from "../backends/backend.ts";
import {
  ALL_SERVICES,
  type Attrs,
  type CatalogEntry,
  type EventKind,
  type Filter,
  type HealthFilter,
  type Instance,
  type ServiceEvent,
} from "../protocol/types.ts";
import {
  type InstanceState,
  sameState,
  selects,
} from "../protocol/instance_equal.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { precedes, type Ranked } from "../protocol/leader.ts";

/** A current instance and the owner that registered it (made on each {@linkcode View.get}). */
export interface Entry {
  /** The instance as sent on the wire. */
  instance: Instance;
  /** The owner (agent-internal, never sent). */
  owner: string;
}

/** One change of the view. */
export interface Change {
  /** Revision of the change. */
  revision: number;
  /** The instance before the change (absent when it was created). */
  before?: Instance;
  /** The instance after the change (absent when it was removed). */
  after?: Instance;
}

/**
 * Which instances of a service a set holds: the attributes filter of the
 * wire, and the set's health filter (`passing` when absent).
 */
export interface SetFilter extends Filter {
  /** Which instances by health. @default {"passing"} */
  health?: HealthFilter;
}

/** Receives the changes of one service (or of all), already filtered and serialized. */
export interface Subscriber {
  /** The service, or `"*"` for every service. */
  readonly service: string;
  /** The filter. */
  readonly filter?: SetFilter;
  /**
   * Whether the subscriber may see the instances of `service` now (the
   * agent's access rules); absent: every service.
   */
  admits?(service: string): boolean;
  /**
   * Called for every change that concerns this subscriber.
   *
   * @param resultJson The serialized `ServiceEvent`.
   */
  deliver(resultJson: string): void;
}

/** Options of {@linkcode View}. */
export interface ViewOptions {
  /**
   * Most changes kept for `since` replays (by this view, or by every view
   * sharing {@linkcode ViewOptions.budget}).
   *
   * @default {50000}
   */
  historySize?: number;
  /**
   * Most bytes of changes kept for `since` replays, as
   * {@linkcode changeBytes} estimates them ({@linkcode DEFAULT_HISTORY_BYTES}:
   * 16 MiB).
   *
   * @default {16777216}
   */
  historyBytes?: number;
  /**
   * A history budget shared with other views (the agent's views of each
   * service share one); its bounds replace `historySize` and
   * `historyBytes`.
   */
  budget?: HistoryBudget;
}

/**
 * What the views of one agent may keep for `since` replays, together: a
 * number of changes and their estimated bytes. Beyond either bound, the
 * oldest changes of all the views go first (a quiet service keeps its
 * recent history while a busy one churns), so no service, however busy,
 * can grow the agent.
 *
 * @example Usage
 * ```ts
 * import { HistoryBudget, View } from "./view.ts";
 * const budget = new HistoryBudget({ historySize: 1000 });
 * const a = new View({ budget });
 * const b = new View({ budget });
 * console.log(budget.changes, a.revision, b.revision); // 0 0 0
 * ```
 */
export class HistoryBudget {
  /** Most changes kept. */
  readonly maxChanges: number;
  /** Most bytes kept. */
  readonly maxBytes: number;
  /** Changes kept now. */
  changes = 0;
  /** Bytes kept now. */
  bytes = 0;
  /**
   * Who added each change, oldest first, with the generation of its
   * history then (a history cleared since makes its entries stale).
   */
  #owners: Trimmable[] = [];
  #generations: number[] = [];
  #head = 0;

  /**
   * Creates a budget.
   *
   * @param options The bounds.
   */
  constructor(options: Pick<ViewOptions, "historySize" | "historyBytes"> = {}) {
    this.maxChanges = Math.floor(Math.max(0, options.historySize ?? 50_000));
    this.maxBytes = options.historyBytes ?? DEFAULT_HISTORY_BYTES;
  }

  /** Counts a change `owner` added, then drops the oldest changes while over a bound. */
  add(owner: Trimmable, bytes: number): void {
    this.changes++;
    this.bytes += bytes;
    this.#owners.push(owner);
    this.#generations.push(owner.generation);
    while (
      (this.changes > this.maxChanges || this.bytes > this.maxBytes) &&
      this.#head < this.#owners.length
    ) {
      const oldest = this.#owners[this.#head];
      const generation = this.#generations[this.#head];
      this.#owners[this.#head++] = undefined as unknown as Trimmable;
      if (oldest.generation === generation) oldest.dropOldest();
    }
    // Entries of cleared histories pile up only so far.
    const live = this.#owners.length - this.#head;
    if (this.#head > 1024 && this.#head > live) this.#compact();
    else if (live > 2 * this.changes + 1024) this.#compact();
  }

  /** Forgets entries already dropped or made stale. */
  #compact() {
    const owners: Trimmable[] = [];
    const generations: number[] = [];
    for (let i = this.#head; i < this.#owners.length; i++) {
      const owner = this.#owners[i];
      if (owner.generation !== this.#generations[i]) continue;
      owners.push(owner);
      generations.push(this.#generations[i]);
    }
    this.#owners = owners;
    this.#generations = generations;
    this.#head = 0;
  }
}

/** A history the budget can trim (a {@linkcode View}'s). */
interface Trimmable {
  /** Changes when the history is cleared: older budget entries are stale. */
  readonly generation: number;
  /** Drops the history's oldest change, giving its share back. */
  dropOldest(): void;
}

/**
 * Default of {@linkcode ViewOptions.historyBytes}: 16 MiB. A typical change
 * (a few short attributes) counts about 300 bytes, so the 50,000 changes of
 * the default `historySize` still fit; changes with large attributes are
 * kept for less long. Under a steady stream of large changes the garbage
 * collector lets several times this much pile up before it runs (measured:
 * the agent's resident set grew by about 160 MiB at 16 MiB, 260 MiB at
 * 64 MiB), hence a bound well below the count's 50,000 changes of up to
 * 8 KiB.
 */
export const DEFAULT_HISTORY_BYTES = 16 * 1024 * 1024;

/** Fixed part of {@linkcode changeBytes}: the change, its instance, the id. */
const CHANGE_OVERHEAD_BYTES = 256;

/**
 * Estimated memory a change takes in the history: 256 bytes for the change
 * and instance objects, plus the lengths of the service, the address and
 * every attribute key and value of the instance it introduces (the one
 * before it for a removal). It is close for Latin-1 text (measured: 264
 * bytes for three short attributes, 8,470 bytes for one of 8 KiB) and up
 * to twice as low for other text, which JavaScript strings store in two
 * bytes a character.
 *
 * @example Usage
 * ```ts
 * import { changeBytes } from "./view.ts";
 * changeBytes({
 *   revision: 1,
 *   after: {
 *     id: "db/h:1",
 *     service: "db",
 *     addr: "h:1",
 *     attrs: { zone: "a" },
 *     revision: 1,
 *     registeredAt: 0,
 *     created: 1,
 *     health: "passing",
 *   },
 * }); // 256 + 2 + 3 + 5 = 266
 * ```
 *
 * @param change The change.
 * @returns The estimate in bytes.
 */
export function changeBytes(change: Change): number {
  return bytesOf(change.after ?? change.before!);
}

/** {@linkcode changeBytes} of a change that introduces (or removes) `subject`. */
function bytesOf(
  subject: { service: string; addr: string; attrs: Attrs; note?: string },
) {
  let bytes = CHANGE_OVERHEAD_BYTES + subject.service.length +
    subject.addr.length + (subject.note?.length ?? 0);
  for (const key in subject.attrs) {
    bytes += key.length + subject.attrs[key].length;
  }
  return bytes;
}

/**
 * Which event, if any, a change means to a subscriber with `filter`.
 *
 * @param change The change.
 * @param filter The subscriber's filter.
 * @returns The event kind and instance, or `undefined` for none.
 */
export function eventFor(
  change: Change,
  filter: SetFilter | undefined,
): { kind: EventKind; instance: Instance } | undefined {
  const { before, after } = change;
  const kind = kindOf(before, after, filter);
  return kind && { kind, instance: subjectOf(kind, before, after) };
}

/**
 * The event kind of a change from `before` to `after` (absent: no
 * instance) for a subscriber with `filter`: see {@linkcode eventFor}.
 */
function kindOf(
  before: InstanceState | undefined,
  after: InstanceState | undefined,
  filter: SetFilter | undefined,
): EventKind | undefined {
  const was = before !== undefined &&
    selects(before, filter, filter?.health);
  const is = after !== undefined && selects(after, filter, filter?.health);
  if (is) return was ? "update" : "up";
  return was ? "down" : undefined;
}

/**
 * Whether two records of one key show subscribers the same thing: the
 * same state in the same life. A new `created` (the key was deleted and
 * written again, as a lost lease's records are written back) is a change:
 * its leadership and fencing token are not the old life's.
 */
function sameLife(a: StoredRecord, b: StoredRecord): boolean {
  return sameState(a, b) && (a.created ?? 0) === (b.created ?? 0);
}

/** Which of `before` and `after` an event of `kind` carries. */
function subjectOf<T>(kind: EventKind, before?: T, after?: T): T {
  return kind === "down" ? after ?? before! : after!;
}

/**
 * What the view holds of a current instance (and what its history refers
 * to): the record as the backend delivered it, which nobody changes, and
 * the revision of the instance's last visible change (an owner change
 * alone keeps it).
 */
interface Held {
  readonly record: StoredRecord;
  readonly revision: number;
}

/** The wire instance of what the view holds. */
function instanceOf(held: Held): Instance {
  const { service, addr, attrs, registeredAt, health, note } = held.record;
  const instance: Instance = {
    // One flat string: `JSON.stringify` writes the concatenation that
    // `instanceKey` returns about half as fast, and a snapshot of 100,000
    // instances writes 100,000 ids. `normalize` flattens it and keeps its
    // text (service names and addresses are ASCII).
    id: instanceKey(service, addr).normalize(),
    service,
    addr,
    attrs,
    revision: held.revision,
    registeredAt,
    created: held.record.created ?? 0,
    health: health ?? "passing",
  };
  if (note !== undefined && health === "critical") instance.note = note;
  return instance;
}

/**
 * Receives events as pieces of text: {@linkcode SnapshotWriter.begin}
 * gives the array an event's pieces are pushed to (joined, they are the
 * event's JSON, as `JSON.stringify` writes it), and
 * {@linkcode SnapshotWriter.end} says the event is complete. A writer that
 * joins many events into one text (a batch frame) copies each piece once,
 * where a text per event would be made and copied again.
 */
export interface SnapshotWriter {
  /**
   * Starts the next event.
   *
   * @returns Where its pieces go, after whatever the array holds.
   */
  begin(): (string | number)[];
  /** Ends the event started last. */
  end(): void;
}

/**
 * The text of events that only their kind, revision and service decide:
 * from the start of the event to the instance id's address, and between
 * the id and the address.
 */
interface EventHead {
  kind: EventKind;
  revision: number;
  service: string;
  /** `{"kind":...,"revision":...,"instance":{"id":"<service>/` */
  open: string;
  /** `","service":"<service>","addr":"` */
  middle: string;
}

/** The head last made by {@linkcode headOf}: a snapshot's events share one. */
let lastHead: EventHead = {
  kind: "up",
  revision: -1,
  service: "",
  open: "",
  middle: "",
};

/** The {@linkcode EventHead} of an event. */
function headOf(kind: EventKind, revision: number, service: string): EventHead {
  const last = lastHead;
  if (
    last.kind === kind && last.revision === revision && last.service === service
  ) return last;
  const head = instanceHeadOf(service);
  return lastHead = {
    kind,
    revision,
    service,
    open: `{"kind":"${kind}","revision":${revision},"instance":${head.open}`,
    middle: head.middle,
  };
}

/** The text of instances that only their service decides, as in {@linkcode EventHead}. */
interface InstanceHead {
  service: string;
  /** `{"id":"<service>/` */
  open: string;
  /** `","service":"<service>","addr":"` */
  middle: string;
}

/** The head last made by {@linkcode instanceHeadOf}. */
let lastInstanceHead: InstanceHead = { service: "", open: "", middle: "" };

/** The {@linkcode InstanceHead} of the instances of `service`. */
function instanceHeadOf(service: string): InstanceHead {
  if (lastInstanceHead.service === service) return lastInstanceHead;
  const serviceJson = JSON.stringify(service);
  // The id's text: the service's without its closing quote, a slash, then
  // the address's without its quotes and its closing quote.
  return lastInstanceHead = {
    service,
    open: `{"id":${serviceJson.slice(0, -1)}/`,
    middle: `","service":${serviceJson},"addr":"`,
  };
}

/** Text that `JSON.stringify` writes as it is, between quotes (printable ASCII but `"` and `\`). */
const PLAIN_TEXT = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** `JSON.stringify(text)` without its quotes. */
function quotedText(text: string): string {
  return PLAIN_TEXT.test(text) ? text : JSON.stringify(text).slice(1, -1);
}

/** `JSON.stringify(value)` of a number, as a piece: the number itself when its text is the same. */
function numberPiece(value: number): string | number {
  return Number.isFinite(value) ? value : JSON.stringify(value);
}

/**
 * Pushes to `out` the pieces of the serialized event of `kind` about
 * `subject` (`ServiceEvent`, as `JSON.stringify` writes it), written
 * without building the instance: a snapshot of 100,000 instances writes
 * 100,000.
 */
function writeEvent(
  out: (string | number)[],
  kind: EventKind,
  revision: number,
  subject: Held,
): void {
  const head = headOf(kind, revision, subject.record.service);
  writeInstance(out, head, subject, "}");
}

/** The last pieces of an instance, by its health, alone and in an event. */
const PASSING_END = [',"health":"passing"}', ',"health":"passing"}}'];
const CRITICAL_END = [',"health":"critical"}', ',"health":"critical"}}'];

/**
 * Pushes to `out` the pieces of `subject`'s instance (`Instance`, as
 * `JSON.stringify` writes it), after `head.open` (up to the address in its
 * id) and with `head.middle` between the id and the address, then `close`
 * (`""` or the `"}"` of an event).
 */
function writeInstance(
  out: (string | number)[],
  head: { open: string; middle: string },
  subject: Held,
  close: "" | "}",
): void {
  const { addr, attrs, registeredAt, health, note } = subject.record;
  const addrText = quotedText(addr);
  const end = close === "" ? 0 : 1;
  out.push(
    head.open,
    addrText,
    head.middle,
    addrText,
    '","attrs":',
    JSON.stringify(attrs),
    ',"revision":',
    numberPiece(subject.revision),
    ',"registeredAt":',
    numberPiece(registeredAt),
    ',"created":',
    numberPiece(subject.record.created ?? 0),
    health === "critical"
      ? note === undefined
        ? CRITICAL_END[end]
        : `,"health":"critical","note":${JSON.stringify(note)}}${close}`
      : PASSING_END[end],
  );
}

/** Pushes to `out` the pieces of `subject`'s instance alone (see {@linkcode writeInstance}). */
function writeBareInstance(out: (string | number)[], subject: Held): void {
  writeInstance(out, instanceHeadOf(subject.record.service), subject, "");
}

/** The serialized event of `kind` about `subject` (`ServiceEvent`, as `JSON.stringify` writes it). */
function eventJson(kind: EventKind, revision: number, subject: Held): string {
  const out: (string | number)[] = [];
  writeEvent(out, kind, revision, subject);
  return out.join("");
}

/**
 * The `up` events of a set as the view held it when it was taken (see
 * {@linkcode View.capture}), to be written later, any number of times,
 * always the same: what the view holds of an instance never changes (a
 * change replaces it), so a snapshot keeps only a reference to each.
 */
export interface Snapshot {
  /** The view's revision when it was taken: every event's. */
  readonly revision: number;
  /** How many events it writes. */
  readonly size: number;
  /**
   * Writes its events, in the order of {@linkcode View.list}.
   *
   * @param writer Where the events' pieces go.
   */
  write(writer: SnapshotWriter): void;
  /**
   * Writes its instances alone (each `Instance` as an event of it would
   * carry it), in the same order: the pieces of a `snapshot` event.
   *
   * @param writer Where the instances' pieces go, one per `begin`.
   */
  writeInstances(writer: SnapshotWriter): void;
}

/** A {@linkcode Snapshot} of what the view holds. */
class HeldSnapshot implements Snapshot {
  constructor(readonly revision: number, readonly held: readonly Held[]) {}

  get size(): number {
    return this.held.length;
  }

  write(writer: SnapshotWriter): void {
    const revision = this.revision;
    for (const held of this.held) {
      writeEvent(writer.begin(), "up", revision, held);
      writer.end();
    }
  }

  writeInstances(writer: SnapshotWriter): void {
    for (const held of this.held) {
      writeBareInstance(writer.begin(), held);
      writer.end();
    }
  }
}

/** What deciding the leader needs of what the view holds. */
function rankOf(held: Held): Ranked {
  return { created: held.record.created ?? 0, addr: held.record.addr };
}

/** Whether two leaders are the same instance in the same life. */
function sameLeader(a: Held | undefined, b: Held | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined) return false;
  return a.record.service === b.record.service &&
    a.record.addr === b.record.addr && a.record.created === b.record.created;
}

/** The serialized `leader` event of a set whose leader is now `leader`. */
function leaderJson(revision: number, leader: Held | undefined): string {
  return leader
    ? eventJson("leader", revision, leader)
    : `{"kind":"leader","revision":${revision},"instance":null}`;
}

/** A change with its serialized events, made once and shared by every subscriber. */
class Fanned {
  #json: Partial<Record<EventKind, string>> = {};
  constructor(readonly revision: number) {}
  json(kind: EventKind, subject: Held): string {
    return this.#json[kind] ??= eventJson(kind, this.revision, subject);
  }
}

/**
 * The revisions of an empty history: one array for all, never written (the
 * first change grows the columns). The columns are plain arrays: a typed
 * array costs about 200 bytes more, and an agent holds one history per
 * service it watches.
 */
const NO_REVISIONS: number[] = [];

/**
 * The changes kept for `since` replays, oldest first: a ring of three
 * columns (the revision, what was held before the change, after it) that
 * grows up to the most changes it may hold, and no further.
 */
class History {
  #revisions = NO_REVISIONS;
  #before: (Held | undefined)[] = [];
  #after: (Held | undefined)[] = [];
  /** Index of the oldest change. */
  #head = 0;
  #length = 0;

  /** @param max Most changes held at once. */
  constructor(readonly max: number) {}

  /** Number of changes held. */
  get length(): number {
    return this.#length;
  }

  /** Revision of the `i`-th oldest change. */
  revision(i: number): number {
    return this.#revisions[this.#slot(i)];
  }

  /** What was held before the `i`-th oldest change (absent when it created the instance). */
  before(i: number): Held | undefined {
    return this.#before[this.#slot(i)];
  }

  /** What was held after the `i`-th oldest change (absent when it removed the instance). */
  after(i: number): Held | undefined {
    return this.#after[this.#slot(i)];
  }

  /** Adds the newest change; there must be room (`length < max`). */
  push(revision: number, before?: Held, after?: Held): void {
    if (this.#length === this.#revisions.length) this.#grow();
    const slot = this.#slot(this.#length++);
    this.#revisions[slot] = revision;
    this.#before[slot] = before;
    this.#after[slot] = after;
  }

  /** Forgets the oldest change. */
  shift(): void {
    this.#before[this.#head] = this.#after[this.#head] = undefined;
    this.#head = this.#slot(1);
    this.#length--;
  }

  /** Forgets every change. */
  clear(): void {
    this.#revisions = NO_REVISIONS;
    this.#before = [];
    this.#after = [];
    this.#head = this.#length = 0;
  }

  #slot(i: number): number {
    const slot = this.#head + i;
    return slot < this.#revisions.length ? slot : slot - this.#revisions.length;
  }

  /** Doubles the columns (up to `max`), the oldest change first. */
  #grow() {
    const capacity = Math.min(Math.max(1, this.#length * 2), this.max);
    const revisions = new Array<number>(capacity).fill(0);
    const before = new Array<Held | undefined>(capacity);
    const after = new Array<Held | undefined>(capacity);
    for (let i = 0; i < this.#length; i++) {
      const slot = this.#slot(i);
      revisions[i] = this.#revisions[slot];
      before[i] = this.#before[slot];
      after[i] = this.#after[slot];
    }
    this.#revisions = revisions;
    this.#before = before;
    this.#after = after;
    this.#head = 0;
  }
}

/** {@linkcode View.settled} of every view that has settled. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * The view. It is the {@linkcode BackendWatcher} of the agent's backend.
 *
 * @example Usage
 * ```ts
 * import { View } from "./view.ts";
 * const view = new View();
 * view.reset({ revision: 0, epoch: "e1", records: [] });
 * view.changes([{
 *   type: "put",
 *   revision: 1,
 *   record: { service: "db", addr: "h:1", attrs: {}, owner: "o", registeredAt: 0 },
 * }]);
 * console.log(view.list("db").length); // 1
 * ```
 */
export class View implements BackendWatcher, Trimmable {
  /** What the view holds, by service and address (see {@linkcode View.#services}). */
  #held = new Map<string, Map<string, Held>>();
  /**
   * A first state of one service not yet in {@linkcode View.#held}: its
   * entries, each address once, in the backend's order (the order the map
   * keeps). The snapshots and leaders of the subscribers that waited for it
   * are taken from it as it is; anything else fills the maps first, and so
   * does a timer, once those subscribers' frames are on their way.
   */
  #unfilled: { service: string; entries: Held[] } | undefined;
  #subscribers = new Map<string, Set<Subscriber>>();
  /** The leader each subscriber of one service was last told of. */
  #leaders = new Map<Subscriber, Held | undefined>();
  #history: History;
  #budget: HistoryBudget;
  /** Sum of the {@linkcode changeBytes} of the changes this view keeps. */
  #historyUsed = 0;
  #floor = 0;
  #revision = 0;
  /**
   * Until the backend's first state arrives, an epoch of its own: what the
   * view holds then (nothing, at revision 0) belongs to no backend sequence,
   * and a `since` paired with it always gets a snapshot later. Made when
   * first asked for (most views get their state before anyone asks).
   */
  #epoch?: string;
  #connected = false;
  #waiters: { ready: () => boolean; resolve: () => void }[] = [];
  /**
   * Until the view settles (see {@linkcode View.settled}); then dropped,
   * for {@linkcode SETTLED}: a pending promise and its resolvers take
   * about 200 bytes, for as long as the view lives.
   */
  #settling: PromiseWithResolvers<void> | undefined = Promise
    .withResolvers<void>();
  #generation = 0;
  /** Set while a reset starts a new sequence: its changes are not kept. */
  #quiet = false;

  /**
   * Creates an empty view.
   *
   * @param options History bounds.
   */
  constructor(options: ViewOptions = {}) {
    this.#budget = options.budget ?? new HistoryBudget(options);
    // One more than the bound: a change is added before the oldest go.
    this.#history = new History(this.#budget.maxChanges + 1);
  }

  /**
   * Resolves once the backend delivered the view's first state, or said
   * that it cannot (the store is unreachable: the view serves what it has,
   * nothing yet, as not connected).
   */
  get settled(): Promise<void> {
    return this.#settling?.promise ?? SETTLED;
  }

  /** The maps of what the view holds, with a first state put in them if it is not yet. */
  get #services(): Map<string, Map<string, Held>> {
    const unfilled = this.#unfilled;
    if (unfilled !== undefined) {
      this.#unfilled = undefined;
      this.#file(unfilled.entries);
    }
    return this.#held;
  }

  /** Puts entries of a first state in the maps, by service and address. */
  #file(entries: Held[]): void {
    let service: string | undefined;
    let map: Map<string, Held> | undefined;
    for (const held of entries) {
      const record = held.record;
      if (map === undefined || record.service !== service) {
        service = record.service;
        map = this.#held.get(service);
        if (!map) this.#held.set(service, map = new Map());
      }
      map.set(record.addr, held);
    }
  }

  /**
   * The entries of a service (of every service for `"*"`), in groups,
   * without filling the maps: the read-only walks of snapshots, lists and
   * leaders.
   */
  #groups(service: string): Iterable<Held>[] {
    const unfilled = this.#unfilled;
    if (unfilled !== undefined) {
      return service === ALL_SERVICES || service === unfilled.service
        ? [unfilled.entries]
        : [];
    }
    if (service === ALL_SERVICES) {
      return [...this.#held.values()].map((entries) => entries.values());
    }
    const entries = this.#held.get(service);
    return entries ? [entries.values()] : [];
  }

  /** The view has its first state, or knows that it cannot have it now. */
  #settle(): void {
    this.#settling?.resolve();
    this.#settling = undefined;
  }

  /** Whether the view holds no instance. */
  get empty(): boolean {
    return this.#services.size === 0;
  }

  /** Revision of the latest change applied. */
  get revision(): number {
    return this.#revision;
  }

  /** Epoch of the revisions (see `BackendState.epoch`). */
  get epoch(): string {
    return this.#epoch ??= `unset-${crypto.randomUUID()}`;
  }

  /** Whether the backend is reachable, as it last said. */
  get connected(): boolean {
    return this.#connected;
  }

  /**
   * The current entry of (service, addr).
   *
   * @param service The service.
   * @param addr The address.
   * @returns The entry, if any.
   */
  get(service: string, addr: string): Entry | undefined {
    const held = this.#services.get(service)?.get(addr);
    return held && { instance: instanceOf(held), owner: held.record.owner };
  }

  /**
   * The current instances of a service that match a filter.
   *
   * @param service The service, or `"*"` for every service.
   * @param filter The filter.
   * @returns The instances.
   */
  list(service: string, filter?: SetFilter): Instance[] {
    const out: Instance[] = [];
    for (const entries of this.#groups(service)) {
      for (const held of entries) {
        if (selects(held.record, filter, filter?.health)) {
          out.push(instanceOf(held));
        }
      }
    }
    return out;
  }

  /**
   * Takes a snapshot of a set now, to write later: the `up` events of
   * each instance {@linkcode View.list} returns, at the view's revision, as
   * `JSON.stringify({ kind: "up", revision, instance })` writes them
   * (without building the instance), whatever the view applies meanwhile. It holds a reference to each instance of the set (8 bytes
   * each), not their text.
   *
   * @param service The service, or `"*"` for every service.
   * @param filter The filter.
   * @param admits Which services to include (all when absent).
   * @returns The snapshot.
   */
  capture(
    service: string,
    filter: SetFilter | undefined,
    admits?: (service: string) => boolean,
  ): Snapshot {
    const held: Held[] = [];
    for (const entries of this.#groups(service)) {
      for (const entry of entries) {
        if (admits && !admits(entry.record.service)) continue;
        if (selects(entry.record, filter, filter?.health)) held.push(entry);
      }
    }
    return new HeldSnapshot(this.#revision, held);
  }

  /**
   * The leader of a set: its instance with the lowest `created`, ties
   * broken by `addr` (`protocol/leader.ts`).
   *
   * @param service The service.
   * @param filter The set's filter (and health).
   * @returns The leader, or `undefined` when the set is empty.
   */
  leader(service: string, filter?: SetFilter): Instance | undefined {
    const held = this.#leaderOf(service, filter);
    return held && instanceOf(held);
  }

  /**
   * The serialized `leader` event of a subscriber's set as it is now: the
   * one a snapshot or replay ends with, before `current`.
   *
   * @param service The service (not `"*"`: a set of every service has no leader).
   * @param filter The set's filter.
   * @returns The event's JSON.
   */
  leaderEvent(service: string, filter?: SetFilter): string {
    return leaderJson(this.#revision, this.#leaderOf(service, filter));
  }

  /**
   * Takes a subscriber's leader from the view again (its changes were not
   * delivered while {@linkcode Subscriber.admits} refused its service) and
   * returns the `leader` event that says who it is.
   *
   * @param subscriber A subscriber of one service.
   * @returns The event's JSON.
   */
  refollow(subscriber: Subscriber): string {
    const leader = this.#leaderOf(subscriber.service, subscriber.filter);
    if (this.#leaders.has(subscriber)) this.#leaders.set(subscriber, leader);
    return leaderJson(this.#revision, leader);
  }

  #leaderOf(service: string, filter?: SetFilter): Held | undefined {
    if (service === ALL_SERVICES) return undefined; // a set of every service has none
    let leader: Held | undefined;
    for (const held of this.#groups(service)[0] ?? []) {
      if (!selects(held.record, filter, filter?.health)) continue;
      if (leader === undefined || precedes(rankOf(held), rankOf(leader))) {
        leader = held;
      }
    }
    return leader;
  }

  /**
   * Every service that has instances, with their number, sorted by name.
   *
   * @returns The catalog.
   */
  catalog(): CatalogEntry[] {
    return [...this.#services]
      .map(([service, entries]) => ({ service, instances: entries.size }))
      .sort((a, b) =>
        a.service < b.service ? -1 : a.service > b.service ? 1 : 0
      );
  }

  /**
   * Adds a subscriber: it gets every later change of its service (of every
   * service for `"*"`).
   *
   * @param subscriber The subscriber.
   */
  subscribe(subscriber: Subscriber): void {
    let set = this.#subscribers.get(subscriber.service);
    if (!set) this.#subscribers.set(subscriber.service, set = new Set());
    set.add(subscriber);
    if (subscriber.service !== ALL_SERVICES) {
      this.#leaders.set(
        subscriber,
        this.#leaderOf(subscriber.service, subscriber.filter),
      );
    }
  }

  /**
   * Removes a subscriber.
   *
   * @param subscriber The subscriber.
   */
  unsubscribe(subscriber: Subscriber): void {
    this.#leaders.delete(subscriber);
    const set = this.#subscribers.get(subscriber.service);
    if (!set) return;
    set.delete(subscriber);
    if (set.size === 0) this.#subscribers.delete(subscriber.service);
  }

  /**
   * The events a subscriber missed after `since`, when the history still
   * holds all of them.
   *
   * @param service The service, or `"*"` for every service.
   * @param filter The filter.
   * @param since The last revision the subscriber saw.
   * @param epoch The epoch of `since`; another epoch than the view's needs a snapshot.
   * @returns The events in order, or `undefined` when a snapshot is needed.
   */
  replay(
    service: string,
    filter: SetFilter | undefined,
    since: number,
    epoch: string = this.epoch,
  ): ServiceEvent[] | undefined {
    if (epoch !== this.epoch) return undefined;
    if (since < this.#floor || since > this.#revision) return undefined;
    const history = this.#history;
    let lo = 0, hi = history.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (history.revision(mid) <= since) lo = mid + 1;
      else hi = mid;
    }
    const out: ServiceEvent[] = [];
    for (let i = lo; i < history.length; i++) {
      const before = history.before(i), after = history.after(i);
      if (
        service !== ALL_SERVICES &&
        (after ?? before!).record.service !== service
      ) continue;
      const kind = kindOf(before?.record, after?.record, filter);
      if (kind) {
        out.push({
          kind,
          revision: history.revision(i),
          instance: instanceOf(subjectOf(kind, before, after)),
        });
      }
    }
    return out;
  }

  /**
   * The events that take a subscriber from a past state of the store (as
   * `Backend.stateAt` read it) to the view's current state: a
   * replay built from the store's own history, for a `since` older than
   * the view's. Only real differences count; every event carries the
   * view's revision, and a `down` carries the instance as it was then
   * (with the past revision as its `revision`).
   *
   * @param past The state at the past revision.
   * @param service The service, or `"*"` for every service.
   * @param filter The filter.
   * @returns The events, or `undefined` when `past` is of another epoch.
   */
  replayFrom(
    past: BackendState,
    service: string,
    filter: SetFilter | undefined,
  ): ServiceEvent[] | undefined {
    if (past.epoch !== this.#epoch || past.revision > this.#revision) {
      return undefined;
    }
    const out: ServiceEvent[] = [];
    const push = (before?: Held, after?: Held) => {
      const kind = kindOf(before?.record, after?.record, filter);
      if (kind) {
        out.push({
          kind,
          revision: this.#revision,
          instance: instanceOf(subjectOf(kind, before, after)),
        });
      }
    };
    const seen = new Set<string>();
    for (const record of past.records) {
      if (service !== ALL_SERVICES && record.service !== service) continue;
      seen.add(instanceKey(record.service, record.addr));
      const now = this.#services.get(record.service)?.get(record.addr);
      if (now && sameLife(now.record, record)) continue;
      push({ record, revision: past.revision }, now);
    }
    for (const entries of this.#groups(service)) {
      for (const held of entries) {
        const { service, addr } = held.record;
        if (!seen.has(instanceKey(service, addr))) push(undefined, held);
      }
    }
    return out;
  }

  /**
   * Resolves once the view has applied `revision`.
   *
   * @param revision The revision to wait for.
   * @param timeoutMs Rejects after this many milliseconds.
   * @returns A promise that resolves then.
   */
  waitFor(revision: number, timeoutMs = 10_000): Promise<void> {
    return this.waitUntil(
      () => this.#revision >= revision,
      timeoutMs,
    ).catch(() => {
      throw new Error(
        `revision ${revision} was not applied in ${timeoutMs} ms`,
      );
    });
  }

  /**
   * Resolves once `ready` returns true, checked now and after every state
   * or change the view applies.
   *
   * @param ready The condition.
   * @param timeoutMs Rejects after this many milliseconds.
   * @returns A promise that resolves then.
   */
  waitUntil(ready: () => boolean, timeoutMs = 10_000): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        ready,
        resolve: () => (clearTimeout(timer), resolve()),
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`the view did not get there in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /**
   * Forgets the history, giving its share of the budget back (the view
   * is no longer used).
   */
  close(): void {
    this.#budget.changes -= this.#history.length;
    this.#budget.bytes -= this.#historyUsed;
    this.#history.clear();
    this.#historyUsed = 0;
    this.#floor = this.#revision;
    this.#generation++;
  }

  /** Changes each time the history is cleared (see {@linkcode HistoryBudget}). */
  get generation(): number {
    return this.#generation;
  }

  /** Drops the oldest change of the history (the budget's call). */
  dropOldest(): void {
    const history = this.#history;
    if (history.length === 0) return;
    this.#floor = history.revision(0);
    const dropped = bytesOf((history.after(0) ?? history.before(0)!).record);
    this.#historyUsed -= dropped;
    this.#budget.changes--;
    this.#budget.bytes -= dropped;
    history.shift();
  }

  /**
   * Applies backend changes (part of {@linkcode BackendWatcher}). The view
   * keeps the records it is given: they must not change afterwards.
   *
   * @param changes The changes in revision order.
   */
  changes(changes: BackendChange[]): void {
    for (const change of changes) {
      // Changes of one transaction share a revision (etcd deletes every key
      // of an expired lease at once), so only older revisions are skipped.
      if (change.revision < this.#revision) continue;
      if (change.type === "put") {
        this.#put(change.record, change.revision);
      } else {
        this.#delete(change.service, change.addr, change.revision);
      }
      this.#revision = change.revision;
    }
    this.#wake();
  }

  /**
   * Replaces the view with a complete state, emitting only the real
   * differences (part of {@linkcode BackendWatcher}). The view keeps the
   * records it is given: they must not change afterwards.
   *
   * @param state The complete state.
   */
  reset(state: BackendState): void {
    const empty = this.#services.size === 0;
    const seen = new Set<string>();
    const revision = state.revision;
    // (No epoch yet: the first state starts a new sequence.)
    if (revision < this.#revision || state.epoch !== this.#epoch) {
      // A new sequence, or a store that went back in time (restored from a
      // backup, say): the history no longer leads to the new state, so
      // resumes get snapshots. What this reset changes happens at the
      // floor, where no replay ever starts: it is not kept.
      this.close();
      this.#floor = revision;
      this.#epoch = state.epoch;
      this.#quiet = true;
    }
    try {
      this.#apply(state.records, revision, empty ? undefined : seen);
    } finally {
      this.#quiet = false;
    }
    // The differences just recorded at `revision` stand for whatever the
    // stream skipped, so the history still replays correctly across it.
    this.#revision = revision;
    this.#settle();
    this.#wake();
  }

  /** The records of a reset, then the removal of what is not in them (`seen` collects their keys; without it, the view was empty). */
  #apply(records: StoredRecord[], revision: number, seen?: Set<string>) {
    if (!seen) {
      if (this.#quiet && this.#subscribers.size === 0) {
        // Nothing to keep in the history and nobody to tell: the records
        // only fill the view (a backend's state holds each key once). Those
        // of one service go in its map after the snapshots of those who
        // waited for them are taken.
        if (records.length === 0) return;
        const service = records[0].service;
        let one = true;
        const entries: Held[] = [];
        for (const record of records) {
          if (record.service !== service) one = false;
          entries.push({ record, revision });
        }
        if (one) {
          this.#unfilled = { service, entries };
          setTimeout(() => void this.#services, 0);
        } else {
          this.#file(entries);
        }
        return;
      }
      for (const record of records) this.#put(record, revision);
      return;
    }
    for (const record of records) {
      seen.add(instanceKey(record.service, record.addr));
      const current = this.#services.get(record.service)?.get(record.addr)
        ?.record;
      if (
        current && current.owner === record.owner &&
        current.registeredAt === record.registeredAt &&
        sameLife(current, record)
      ) continue;
      this.#put(record, revision);
    }
    for (const [service, entries] of [...this.#services]) {
      for (const addr of [...entries.keys()]) {
        if (!seen.has(instanceKey(service, addr))) {
          this.#delete(service, addr, revision);
        }
      }
    }
  }

  /**
   * Records whether the backend is reachable (part of {@linkcode BackendWatcher}),
   * and tells every subscriber when that changes: `stale` when it is not
   * (the view keeps serving its last known state), `current` when it is
   * again (everything the backend delivered on its way back is applied by
   * then, so the subscriber holds the state at that revision).
   *
   * @param connected Whether it is.
   */
  status(connected: boolean): void {
    if (!connected) this.#settle();
    if (connected === this.#connected) return;
    this.#connected = connected;
    const json = JSON.stringify(
      {
        kind: connected ? "current" : "stale",
        revision: this.#revision,
      } satisfies ServiceEvent,
    );
    for (const set of this.#subscribers.values()) {
      for (const subscriber of set) subscriber.deliver(json);
    }
  }

  #put(record: StoredRecord, revision: number) {
    let entries = this.#services.get(record.service);
    if (!entries) this.#services.set(record.service, entries = new Map());
    const before = entries.get(record.addr);
    if (before && sameLife(before.record, record)) {
      // An owner change alone (a takeover) is invisible to subscribers:
      // the instance keeps its revision and its time of registration.
      const { registeredAt } = before.record;
      entries.set(record.addr, {
        record: record.registeredAt === registeredAt
          ? record
          : { ...record, registeredAt },
        revision: before.revision,
      });
      return;
    }
    const after: Held = { record, revision };
    entries.set(record.addr, after);
    this.#record(revision, before, after);
  }

  #delete(service: string, addr: string, revision: number) {
    const entries = this.#services.get(service);
    const before = entries?.get(addr);
    if (!entries || !before) return;
    entries.delete(addr);
    if (entries.size === 0) this.#services.delete(service);
    this.#record(revision, before, undefined);
  }

  #record(revision: number, before?: Held, after?: Held) {
    const subject = (after ?? before!).record;
    if (!this.#quiet) {
      const bytes = bytesOf(subject);
      this.#history.push(revision, before, after);
      this.#historyUsed += bytes;
      // The budget drops the oldest changes (of any view) while over either
      // bound; a resume from before a view's floor gets a snapshot (or a
      // replay from the store's own history).
      this.#budget.add(this, bytes);
    }
    const subscribers = this.#subscribers.get(subject.service);
    const everything = this.#subscribers.get(ALL_SERVICES);
    if (!subscribers && !everything) return;
    const fanned = new Fanned(revision);
    for (const set of [subscribers, everything]) {
      for (const subscriber of set ?? []) {
        if (subscriber.admits && !subscriber.admits(subject.service)) continue;
        const kind = kindOf(before?.record, after?.record, subscriber.filter);
        if (kind) {
          subscriber.deliver(fanned.json(kind, subjectOf(kind, before, after)));
        }
        if (set === subscribers) {
          this.#follow(subscriber, revision, before ?? after!, after);
        }
      }
    }
  }

  /**
   * Keeps a subscriber's leader up to date after a change of the instance
   * `changed` (now `after`, or removed), and tells it when the leader is
   * another instance: the new leader wins at once; when the leader leaves,
   * the set is looked through for the next one.
   */
  #follow(
    subscriber: Subscriber,
    revision: number,
    changed: Held,
    after: Held | undefined,
  ): void {
    const leader = this.#leaders.get(subscriber);
    const filter = subscriber.filter;
    const inSet = after !== undefined &&
      selects(after.record, filter, filter?.health);
    let next = leader;
    if (leader !== undefined && leader.record.addr === changed.record.addr) {
      // In the same life it still leads; gone, or in a new life (written
      // back after a lost lease), another instance may.
      next = inSet && after.record.created === leader.record.created
        ? after
        : this.#leaderOf(subscriber.service, subscriber.filter);
    } else if (
      inSet && (leader === undefined || precedes(rankOf(after), rankOf(leader)))
    ) {
      next = after;
    }
    if (next === leader) return;
    this.#leaders.set(subscriber, next);
    if (!sameLeader(leader, next)) {
      subscriber.deliver(leaderJson(revision, next));
    }
  }

  #wake() {
    if (this.#waiters.length === 0) return;
    const ready = this.#waiters.filter((w) => w.ready());
    this.#waiters = this.#waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }
}
