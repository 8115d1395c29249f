// Copyright the discover authors. BSD-3-Clause license.

/**
 * What `discover` prints: aligned tables with a header on a terminal,
 * lines of tab-separated fields without a header otherwise, and JSON with
 * `--json`. Every function returns lines, without their newlines.
 *
 * @module
 */

import type {
  Attrs,
  CatalogResult,
  Instance,
  InstanceOwner,
  ServiceUpdate,
  StatusResult,
} from "../mod.ts";

/** How to print. */
export interface FormatOptions {
  /** Aligned columns with a header (a terminal), or tab-separated fields. */
  tty: boolean;
  /** JSON instead of text. */
  json: boolean;
}

/** Attribute values printed bare; any other value is a JSON string. */
const BARE_VALUE = /^[A-Za-z0-9._:\/@%+,-]+$/;
/**
 * What JSON leaves as it is but a terminal may act on: DEL, the C1
 * controls, line and paragraph separators, and bidirectional overrides.
 */
const UNSAFE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** A JSON string with nothing a terminal may act on. */
function quote(value: string): string {
  return JSON.stringify(value).replace(
    UNSAFE,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * Attributes as `KEY=VALUE` separated by spaces, in their order; a value
 * with other characters than `A-Z a-z 0-9 . _ : / @ % + , -` (spaces,
 * tabs, quotes, control characters, the empty value) is written as a JSON
 * string, with the characters a terminal may act on escaped too, so that a
 * line stays one line and its fields stay apart.
 *
 * @example Usage
 * ```ts
 * import { formatAttrs } from "./_format.ts";
 * formatAttrs({ zone: "b", note: "two words" }); // 'zone=b note="two words"'
 * ```
 *
 * @param attrs The attributes.
 * @returns The text; empty without attributes.
 */
export function formatAttrs(attrs: Readonly<Attrs>): string {
  return Object.entries(attrs)
    .map(([key, value]) =>
      `${key}=${BARE_VALUE.test(value) ? value : quote(value)}`
    )
    .join(" ");
}

/** Characters besides the C0 controls that a note shows as a JSON string. */
const NOTE_QUOTED = /["\\\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/**
 * A note as it is, or as a JSON string when it holds a control character
 * (a tab, a newline...), a quote, a backslash, or anything a terminal may
 * act on.
 */
function safeNote(note: string): string {
  const control = [...note].some((c) => c < " ");
  return control || NOTE_QUOTED.test(note) ? quote(note) : note;
}

/**
 * The health of an instance as fields: `passing` or `critical`, and the
 * note that says why it is critical (empty when passing). A note with a
 * control character (a tab, a newline...), a quote or a backslash is
 * written as a JSON string, so that a line stays one line and its fields
 * stay apart.
 *
 * @example Usage
 * ```ts ignore
 * import { formatHealth } from "./_format.ts";
 * formatHealth({ ...instance, health: "critical", note: "HTTP 500" });
 * // ["critical", "HTTP 500"]
 * ```
 *
 * @param instance The instance.
 * @returns The health and the note.
 */
export function formatHealth(
  instance: Pick<Instance, "health" | "note">,
): [string, string] {
  const health = instance.health ?? "passing";
  return [
    health,
    health === "critical" && instance.note ? safeNote(instance.note) : "",
  ];
}

/** The health in one column of a terminal: `passing`, `critical (NOTE)`. */
function healthCell(instance: Pick<Instance, "health" | "note">): string {
  const [health, note] = formatHealth(instance);
  return note ? `${health} (${note})` : health;
}

/**
 * A duration as its largest whole unit: `42s`, `5m`, `3h`, `12d`.
 *
 * @example Usage
 * ```ts
 * import { formatAge } from "./_format.ts";
 * formatAge(90_000); // "1m"
 * ```
 *
 * @param ms Milliseconds; negative counts as 0.
 * @returns The text.
 */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/**
 * Rows as a table: on a terminal, the header then columns aligned two
 * spaces apart; otherwise the rows alone, fields separated by a tab.
 *
 * @example Usage
 * ```ts
 * import { formatTable } from "./_format.ts";
 * formatTable(["SERVICE", "INSTANCES"], [["cache", "2"]], { tty: true });
 * // ["SERVICE  INSTANCES", "cache    2"]
 * ```
 *
 * @param header The column names (terminal only).
 * @param rows The rows, as many fields as the header.
 * @param options Whether to align (a terminal).
 * @returns The lines.
 */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  options: { tty: boolean },
): string[] {
  if (!options.tty) return rows.map((row) => row.join("\t"));
  const all = [header, ...rows];
  const widths = header.map((_, i) =>
    Math.max(...all.map((row) => row[i].length))
  );
  return all.map((row) =>
    row.map((field, i) => field.padEnd(widths[i])).join("  ").trimEnd()
  );
}

/**
 * The output of `discover services`: each service and its number of
 * instances.
 *
 * @example Usage
 * ```ts
 * import { formatServices } from "./_format.ts";
 * const catalog = { revision: 3, services: [{ service: "cache", instances: 2 }] };
 * formatServices(catalog, { tty: false, json: false }); // ["cache\t2"]
 * ```
 *
 * @param catalog The agent's catalog.
 * @param options Terminal and JSON.
 * @returns The lines: one JSON array with `--json`.
 */
export function formatServices(
  catalog: CatalogResult,
  options: FormatOptions,
): string[] {
  if (options.json) return [JSON.stringify(catalog.services)];
  if (options.tty && catalog.services.length === 0) return ["(no services)"];
  return formatTable(
    ["SERVICE", "INSTANCES"],
    catalog.services.map((s) => [s.service, String(s.instances)]),
    options,
  );
}

/**
 * Instances in address order (ports compared as numbers).
 *
 * @example Usage
 * ```ts ignore
 * import { sortInstances } from "./_format.ts";
 * sortInstances(instances).map((i) => i.addr);
 * ```
 *
 * @param instances The instances.
 * @returns A sorted copy.
 */
export function sortInstances(instances: readonly Instance[]): Instance[] {
  return [...instances].sort((a, b) =>
    a.addr.localeCompare(b.addr, "en", { numeric: true })
  );
}

/** What `discover ls` knows of each instance's owner, by address. */
export type OwnersByAddr = ReadonlyMap<string, InstanceOwner>;

/**
 * The owner of an instance as `discover ls` prints it on a terminal: the
 * owner id, with the token name in brackets when the agent knows it; `-`
 * when unknown.
 */
function ownerCell(owner: InstanceOwner | undefined): string {
  if (owner === undefined) return "-";
  return owner.token === undefined
    ? owner.owner
    : `${owner.owner} (${safeNote(owner.token)})`;
}

/**
 * The owner's client as `discover ls` prints it on a terminal:
 * `connected`, `elsewhere`, or `lost (goes in 12s)`; `-` when unknown.
 */
function clientCell(owner: InstanceOwner | undefined, now: number): string {
  if (owner === undefined) return "-";
  if (owner.client !== "lost" || owner.expires === undefined) {
    return owner.client;
  }
  return `lost (goes in ${formatAge(owner.expires - now)})`;
}

/**
 * The output of `discover ls`: on a terminal, address, health (with the
 * note in brackets when critical), age, owner (with its token name in
 * brackets), the owner's client (`connected`, `lost (goes in 12s)` or
 * `elsewhere`) and attributes under a header; otherwise address,
 * attributes, health, note, owner and client, tab-separated (owner and
 * client empty when unknown); with `--json`, the instances as an array,
 * each with `owner`, `client`, and `expires` and `token` when known.
 *
 * @example Usage
 * ```ts
 * import { formatInstances } from "./_format.ts";
 * const web = {
 *   id: "web/127.0.0.1:80", service: "web", addr: "127.0.0.1:80",
 *   attrs: { zone: "b" }, revision: 1, registeredAt: 0, created: 1,
 *   health: "critical" as const, note: "HTTP 500",
 * };
 * const owners = new Map([["127.0.0.1:80", {
 *   addr: "127.0.0.1:80", owner: "c:Q2hhbmdl", client: "connected" as const,
 * }]]);
 * formatInstances([web], { tty: false, json: false, now: 0, owners });
 * // ["127.0.0.1:80\tzone=b\tcritical\tHTTP 500\tc:Q2hhbmdl\tconnected"]
 * ```
 *
 * @param instances The instances, printed in address order.
 * @param options Terminal, JSON, the time now (for ages), and the owners
 *   by address (none known without it).
 * @returns The lines: one JSON array with `--json`.
 */
export function formatInstances(
  instances: readonly Instance[],
  options: FormatOptions & { now: number; owners?: OwnersByAddr },
): string[] {
  const sorted = sortInstances(instances);
  const ownerOf = (i: Instance) => options.owners?.get(i.addr);
  if (options.json) {
    return [JSON.stringify(sorted.map((i) => {
      const owner = ownerOf(i);
      if (owner === undefined) return i;
      const { addr: _, ...rest } = owner;
      return { ...i, ...rest };
    }))];
  }
  if (!options.tty) {
    return formatTable(
      [],
      sorted.map((i) => [
        i.addr,
        formatAttrs(i.attrs),
        ...formatHealth(i),
        ownerOf(i)?.owner ?? "",
        ownerOf(i)?.client ?? "",
      ]),
      options,
    );
  }
  if (sorted.length === 0) return ["(no instances)"];
  return formatTable(
    ["ADDR", "HEALTH", "AGE", "OWNER", "CLIENT", "ATTRS"],
    sorted.map((i) => [
      i.addr,
      healthCell(i),
      formatAge(options.now - i.registeredAt),
      ownerCell(ownerOf(i)),
      clientCell(ownerOf(i), options.now),
      formatAttrs(i.attrs),
    ]),
    options,
  );
}

/**
 * A change of the leader of a set, as `discover watch` prints it: the new
 * leader, or none when the set is empty.
 */
export interface LeaderChange {
  /** Always `leader`. */
  kind: "leader";
  /** The new leader; `undefined` when the set is empty. */
  instance: Instance | undefined;
  /** Revision of the change. */
  revision: number;
}

/** What `discover watch` prints a line for. */
export type WatchEvent = ServiceUpdate | LeaderChange;

/** Longest kind, `update` and `leader`: kinds are padded to it on a terminal. */
const KIND_WIDTH = 6;

/**
 * One line of `discover watch`: on a terminal, the local time, the kind,
 * the address, the health (with the note in brackets when critical) and
 * the attributes; otherwise kind, address, attributes, health and note,
 * tab-separated; with `--json`, `{"kind", "revision", "instance"}`. A
 * `leader` line names the new leader the same way; when the set is empty
 * it has no leader: `(none)` on a terminal, empty fields otherwise, and
 * `"instance": null` in JSON.
 *
 * @example Usage
 * ```ts
 * import { formatUpdate } from "./_format.ts";
 * const instance = {
 *   id: "web/127.0.0.1:80", service: "web", addr: "127.0.0.1:80",
 *   attrs: {}, revision: 4, registeredAt: 0, created: 4,
 *   health: "passing" as const,
 * };
 * formatUpdate({ kind: "up", instance, revision: 4 }, {
 *   tty: false, json: false, now: new Date(),
 * }); // "up\t127.0.0.1:80\t\tpassing\t"
 * formatUpdate({ kind: "leader", instance, revision: 4 }, {
 *   tty: false, json: false, now: new Date(),
 * }); // "leader\t127.0.0.1:80\t\tpassing\t"
 * ```
 *
 * @param update The update, or the change of leader.
 * @param options Terminal, JSON, and the time to show.
 * @returns The line.
 */
export function formatUpdate(
  update: WatchEvent,
  options: FormatOptions & { now: Date },
): string {
  const { kind, instance, revision } = update;
  if (options.json) {
    return JSON.stringify({ kind, revision, instance: instance ?? null });
  }
  if (!options.tty) {
    return (instance === undefined ? [kind, "", "", "", ""] : [
      kind,
      instance.addr,
      formatAttrs(instance.attrs),
      ...formatHealth(instance),
    ]).join("\t");
  }
  const time = [
    options.now.getHours(),
    options.now.getMinutes(),
    options.now.getSeconds(),
  ].map((n) => String(n).padStart(2, "0")).join(":");
  const what = instance === undefined
    ? "(none)"
    : `${instance.addr}  ${healthCell(instance)}  ${
      formatAttrs(instance.attrs)
    }`;
  return `${time}  ${kind.padEnd(KIND_WIDTH)}  ${what}`.trimEnd();
}

/** Nested objects as `parent.child` keys, in their order. */
function flatten(
  value: Record<string, unknown>,
  prefix = "",
): [string, string][] {
  return Object.entries(value).flatMap(([key, item]) =>
    item !== null && typeof item === "object" && !Array.isArray(item)
      ? flatten(item as Record<string, unknown>, `${prefix}${key}.`)
      : [[`${prefix}${key}`, String(item)] as [string, string]]
  );
}

/**
 * The output of `discover status`: one field a line, named as in the
 * JSON (`limits.maxFrameBytes`), aligned on a terminal and tab-separated
 * otherwise; with `--json`, the status object.
 *
 * @example Usage
 * ```ts ignore
 * import { formatStatus } from "./_format.ts";
 * formatStatus(await client.status(), { tty: true, json: false });
 * ```
 *
 * @param status The agent's status.
 * @param options Terminal and JSON.
 * @returns The lines.
 */
export function formatStatus(
  status: StatusResult,
  options: FormatOptions,
): string[] {
  if (options.json) return [JSON.stringify(status)];
  const rows = flatten(status as unknown as Record<string, unknown>);
  if (!options.tty) return formatTable([], rows, options);
  const width = Math.max(...rows.map(([key]) => key.length));
  return rows.map(([key, value]) => `${key.padEnd(width)}  ${value}`);
}
