// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend's record codec: the key layout and the value format.
 *
 * Every instance is one key, `<prefix>instances/<instanceKey>` (see
 * `protocol/instance_key.ts`: `service/addr`), whose value is the JSON
 * object `{"attrs":{...},"owner":"...","registeredAt":<ms>}`, with
 * `"health":"critical"` and `"note":"..."` for a critical instance (an
 * absent health is passing, so records stay as small as before). A service
 * name never holds a `/` and an address never does, so a key can never
 * leave its service's range.
 *
 * @module
 */

import type { StoredRecord } from "./backend.ts";
import { ALL_SERVICES } from "../protocol/types.ts";
import { instanceKey, splitInstanceKey } from "../protocol/instance_key.ts";
import { SERVICE_NAME_PATTERN, validateAddr } from "../protocol/validate.ts";

/** What a conditional write needs to know of a key: who owns it, its version and lease. */
export interface Known {
  /** The record's owner. */
  owner: string;
  /** The key's modification revision, as etcd gives it (a decimal string). */
  modRevision: string;
  /** The lease the key is attached to, as a decimal string (`"0"`: none). */
  lease: string;
}

/** The parts of an etcd key-value this module reads (etcd3's `IKeyValue`). */
export interface StoredKeyValue {
  /** The key. */
  key: { toString(): string };
  /** The value. */
  value: { toString(): string };
  /** The key's modification revision. */
  mod_revision: string;
  /** The revision that created the key (in its current life). */
  create_revision?: string;
  /** The key's lease id. */
  lease: string | number;
}

/**
 * Maps records to etcd keys and values under one prefix, and back.
 *
 * @example Usage
 * ```ts
 * import { RecordCodec } from "./_etcd_record.ts";
 * const codec = new RecordCodec("/discover/");
 * codec.key("cache", "10.0.0.1:6379"); // "/discover/instances/cache/10.0.0.1:6379"
 * ```
 */
export class RecordCodec {
  /** Start of every instance key: `<prefix>instances/`. */
  readonly range: string;
  /** The service of the last key decoded, and the key prefix of its range. */
  #last = { prefix: "", service: "" };
  /** The owner of the last record decoded. */
  #owner = "";

  /**
   * Creates the codec.
   *
   * @param prefix The key prefix; starts and ends with `/`.
   */
  constructor(prefix: string) {
    if (!prefix.startsWith("/") || !prefix.endsWith("/")) {
      throw new TypeError(
        `'prefix' must start and end with '/': current value is '${prefix}'`,
      );
    }
    this.range = `${prefix}instances/`;
  }

  /**
   * The key prefix of a scope: one service's range, or every instance for
   * `"*"`.
   *
   * @param scope A service name, or `"*"`.
   * @returns The prefix, e.g. `/discover/instances/cache/`.
   */
  scope(scope: string): string {
    return scope === ALL_SERVICES ? this.range : this.key(scope, "");
  }

  /**
   * The key of an instance.
   *
   * @param service The service.
   * @param addr The address.
   * @returns The etcd key.
   */
  key(service: string, addr: string): string {
    return this.range + instanceKey(service, addr);
  }

  /**
   * Service and address of a key of {@linkcode RecordCodec.range}.
   *
   * @param key The etcd key.
   * @returns `[service, addr]`.
   */
  split(key: string): [string, string] {
    return splitInstanceKey(key.slice(this.range.length));
  }

  /**
   * The value stored for a record.
   *
   * @param record The record.
   * @returns Its JSON value.
   */
  encode(record: StoredRecord): string {
    return JSON.stringify(
      record.health === "critical"
        ? {
          attrs: record.attrs,
          owner: record.owner,
          registeredAt: record.registeredAt,
          health: "critical",
          ...(record.note === undefined ? {} : { note: record.note }),
        }
        : {
          attrs: record.attrs,
          owner: record.owner,
          registeredAt: record.registeredAt,
        },
    );
  }

  /**
   * The record a key and value hold.
   *
   * Records read one after another mostly share their service and their
   * owner: a key of the same service as the one before is not checked
   * again for it, and equal service names and owners are one string,
   * kept once however many records hold it.
   *
   * @param key The etcd key.
   * @param value Its value.
   * @param created The revision that created the key, when known.
   * @returns The record.
   * @throws {Error} When they are not a discover record; the message says why.
   */
  decode(key: string, value: string, created?: number): StoredRecord {
    let service: string, addr: string;
    const last = this.#last;
    if (last.prefix !== "" && key.startsWith(last.prefix)) {
      service = last.service;
      addr = key.slice(last.prefix.length);
    } else {
      if (!key.startsWith(this.range)) {
        throw new Error(`the key is not under '${this.range}'`);
      }
      [service, addr] = this.split(key);
      if (!SERVICE_NAME_PATTERN.test(service)) {
        throw new Error("not a valid service/addr key");
      }
      this.#last = { prefix: `${this.range}${service}/`, service };
    }
    if (validateAddr(addr) !== addr) {
      throw new Error("not a valid service/addr key");
    }
    const parsed = JSON.parse(value);
    if (
      typeof parsed?.owner !== "string" ||
      typeof parsed.registeredAt !== "number" ||
      !isAttrs(parsed.attrs) ||
      (parsed.health !== undefined && parsed.health !== "passing" &&
        parsed.health !== "critical") ||
      (parsed.note !== undefined && typeof parsed.note !== "string")
    ) throw new Error("the value is not a discover record");
    let owner: string = parsed.owner;
    if (owner === this.#owner) owner = this.#owner;
    else this.#owner = owner;
    const record: StoredRecord = created === undefined
      ? {
        service,
        addr,
        attrs: parsed.attrs,
        owner,
        registeredAt: parsed.registeredAt,
      }
      : {
        service,
        addr,
        attrs: parsed.attrs,
        owner,
        registeredAt: parsed.registeredAt,
        created,
      };
    if (parsed.health === "critical") {
      record.health = "critical";
      if (parsed.note !== undefined) record.note = parsed.note;
    }
    return record;
  }
}

/** Whether `value` is an object of strings (a record's attributes). */
function isAttrs(value: unknown): value is Record<string, string> {
  if (typeof value !== "object" || value === null) return false;
  const attrs = value as Record<string, unknown>;
  for (const key in attrs) {
    if (typeof attrs[key] !== "string") return false;
  }
  return true;
}

/**
 * What a conditional write needs to know of a key-value the store gave:
 * its owner, version and lease; `undefined` when the value is not JSON
 * with an owner.
 *
 * @example Usage
 * ```ts
 * import { parseKnown } from "./_etcd_record.ts";
 * parseKnown({ key: "k", value: '{"owner":"o"}', mod_revision: "7", lease: "9" });
 * // { owner: "o", modRevision: "7", lease: "9" }
 * ```
 *
 * @param kv The key-value.
 * @returns Owner, modification revision and lease.
 */
export function parseKnown(kv: StoredKeyValue): Known | undefined {
  try {
    const { owner } = JSON.parse(kv.value.toString());
    return { owner, modRevision: kv.mod_revision, lease: String(kv.lease) };
  } catch {
    return undefined;
  }
}

/**
 * What a conditional write needs to know of a decoded record.
 *
 * @example Usage
 * ```ts ignore
 * import { knownOf } from "./_etcd_record.ts";
 * const known = knownOf(record, kv);
 * ```
 *
 * @param record The record decoded from `kv`.
 * @param kv The key-value.
 * @returns Owner, modification revision and lease.
 */
export function knownOf(record: StoredRecord, kv: StoredKeyValue): Known {
  return {
    owner: record.owner,
    modRevision: kv.mod_revision,
    lease: String(kv.lease),
  };
}
