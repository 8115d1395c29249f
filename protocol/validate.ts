// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Validation of method params: every rule on names, addresses and
 * attributes lives here, and both the agent and the client use it.
 *
 * @module
 */

import { invalidParams } from "./errors.ts";
import {
  ALL_SERVICES,
  type Attrs,
  type AuthenticateParams,
  type Check,
  type Filter,
  type HealthFilter,
  type LeaderParams,
  type RegisterParams,
  type ServicesParams,
  type SetHealthParams,
  type SubscribeParams,
  type UnregisterParams,
  type UnsubscribeParams,
} from "./types.ts";

/** Service names: 1 to 63 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit. */
export const SERVICE_NAME_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Attribute keys: 1 to 64 characters of `A-Z a-z 0-9 . _ - :`, starting with a letter or digit. */
export const ATTR_KEY_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
/**
 * The rule of client ids (the `client` query parameter), as error messages
 * state it. At least 16 characters, so that an id cannot be guessed.
 */
export const CLIENT_ID_RULE = "16 to 64 characters of A-Z a-z 0-9 _ -";
/** Client ids (the `client` query parameter): {@linkcode CLIENT_ID_RULE}. */
export const CLIENT_ID_PATTERN: RegExp = /^[A-Za-z0-9_-]{16,64}$/;
/** Most attributes on one instance (and in one filter). */
export const MAX_ATTRS = 64;
/** Longest attribute value, in UTF-16 code units. */
export const MAX_ATTR_VALUE_LENGTH = 1024;
/** Largest attribute map, measured as its JSON text length. */
export const MAX_ATTRS_JSON_LENGTH = 8192;
/** Longest address (`host:port`). */
export const MAX_ADDR_LENGTH = 261;

// One number of a dotted-quad IPv4 address: 0 to 255, leading zeros allowed
// (validateAddr drops them).
const IPV4_NUMBER = "0*(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";

/**
 * Addresses, `host:port`: the one rule, used by {@linkcode validateAddr} and
 * by the `Addr` schema of the OpenRPC document. The host is a bracketed
 * IPv6 address (2 to 45 characters of `0-9 A-F a-f : .` holding a `:`), or
 * a hostname of at most 253 characters (dot-separated labels of 1 to 63
 * characters of `A-Z a-z 0-9 -`, not starting or ending with `-`, an
 * optional trailing dot) that, when made only of digits and dots, must be a
 * dotted-quad IPv4 address with every number from 0 to 255. The port is 1
 * to 5 digits worth 1 to 65535. Besides it, an address is at most
 * {@linkcode MAX_ADDR_LENGTH} characters, and an IPv6 address must be one
 * the WHATWG URL standard parses.
 */
export const ADDR_PATTERN: RegExp = new RegExp(
  "^(?:\\[(?=[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45}\\]" +
    `|(?:(?=(?:${IPV4_NUMBER}\\.){3}${IPV4_NUMBER}:)|(?![0-9.]+:))` +
    `(?=[^:]{1,253}:)${LABEL}(?:\\.${LABEL})*\\.?)` +
    ":(?=[0-9]{1,5}$)0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}" +
    "|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$",
);

type Params = Record<string, unknown>;

/** Where a register or unregister points: exactly one of `port` and `addr`. */
export type AddressParams = { port: number; addr?: undefined } | {
  addr: string;
  port?: undefined;
};

function asObject(params: unknown): Params {
  if (params === undefined) {
    throw invalidParams("params", "is required: send an object");
  }
  if (params === null || typeof params !== "object" || Array.isArray(params)) {
    throw invalidParams("params", "must be an object (by-name params)", params);
  }
  return params as Params;
}

function onlyKeys(params: Params, allowed: readonly string[], where = "") {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key)) {
      throw invalidParams(
        where + key,
        `is not a known field; allowed: ${allowed.join(", ")}`,
      );
    }
  }
}

/**
 * Checks a service name.
 *
 * @example Usage
 * ```ts
 * import { validateServiceName } from "./validate.ts";
 * validateServiceName("cache"); // returns "cache"
 * ```
 *
 * @param value The value to check.
 * @param field The field name used in the error message.
 * @returns The name.
 */
export function validateServiceName(value: unknown, field = "service"): string {
  if (typeof value !== "string") {
    throw invalidParams(field, "must be a string", value);
  }
  if (!SERVICE_NAME_PATTERN.test(value)) {
    throw invalidParams(
      field,
      "must be 1 to 63 characters of A-Z a-z 0-9 . _ - starting with a letter or digit",
      value,
    );
  }
  return value;
}

/**
 * Checks a port number.
 *
 * @example Usage
 * ```ts
 * import { validatePort } from "./validate.ts";
 * validatePort(8080); // returns 8080
 * ```
 *
 * @param value The value to check.
 * @param field The field name used in the error message.
 * @returns The port.
 */
export function validatePort(value: unknown, field = "port"): number {
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
    value > 65535
  ) {
    throw invalidParams(field, "must be an integer from 1 to 65535", value);
  }
  return value;
}

/**
 * An IPv4 `host:port` already in canonical form (no leading zeros, octets
 * up to 255, port 1 to 65535): accepted as it is, without the full rule.
 */
const CANONICAL_IPV4_ADDR =
  /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]):(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$/;

/**
 * Checks a `host:port` address and returns it in canonical form (IPv6 hosts
 * in brackets, hostnames in lower case).
 *
 * @example Usage
 * ```ts
 * import { validateAddr } from "./validate.ts";
 * validateAddr("Cache-1.example:6379"); // returns "cache-1.example:6379"
 * ```
 *
 * @param value The value to check.
 * @param field The field name used in the error message.
 * @returns The canonical address.
 */
export function validateAddr(value: unknown, field = "addr"): string {
  if (typeof value !== "string") {
    throw invalidParams(field, "must be a string", value);
  }
  if (CANONICAL_IPV4_ADDR.test(value)) return value; // the common case, already canonical
  if (value.length > MAX_ADDR_LENGTH || !ADDR_PATTERN.test(value)) {
    throw invalidParams(
      field,
      "must be host:port with a hostname, an IPv4 address or a bracketed IPv6 address, and a port from 1 to 65535",
      value,
    );
  }
  // Canonical form, so that one endpoint is one instance.
  const colon = value.lastIndexOf(":");
  const host = value.slice(0, colon);
  const port = Number(value.slice(colon + 1));
  if (host.startsWith("[")) {
    // The WHATWG URL parser writes IPv6 in its RFC 5952 form.
    try {
      return `${new URL(`http://${host}/`).hostname}:${port}`;
    } catch {
      throw invalidParams(
        field,
        "must hold an IPv6 address the WHATWG URL standard parses",
        value,
      );
    }
  }
  if (/^[0-9.]+$/.test(host)) {
    // A dotted quad (the pattern says so): its numbers without leading zeros.
    return `${host.split(".").map(Number).join(".")}:${port}`;
  }
  const bare = host.endsWith(".") ? host.slice(0, -1) : host;
  return `${bare.toLowerCase()}:${port}`;
}

/**
 * Checks an attribute map.
 *
 * @example Usage
 * ```ts
 * import { validateAttrs } from "./validate.ts";
 * validateAttrs({ zone: "b" }); // returns { zone: "b" }
 * ```
 *
 * @param value The value to check.
 * @param field The field name used in the error message.
 * @returns A fresh copy of the attributes.
 */
export function validateAttrs(value: unknown, field = "attrs"): Attrs {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalidParams(
      field,
      "must be an object of string keys to string values",
      value,
    );
  }
  const entries = Object.entries(value);
  if (entries.length > MAX_ATTRS) {
    throw invalidParams(
      field,
      `must have at most ${MAX_ATTRS} keys: got ${entries.length}`,
    );
  }
  const attrs: Attrs = {};
  for (const [key, item] of entries) {
    if (!ATTR_KEY_PATTERN.test(key)) {
      throw invalidParams(
        `${field}.${key.length > 40 ? key.slice(0, 40) + "..." : key}`,
        "is not a valid key: keys are 1 to 64 characters of A-Z a-z 0-9 . _ - : starting with a letter or digit",
      );
    }
    if (typeof item !== "string") {
      throw invalidParams(`${field}.${key}`, "must be a string", item);
    }
    if (item.length > MAX_ATTR_VALUE_LENGTH) {
      throw invalidParams(
        `${field}.${key}`,
        `must be at most ${MAX_ATTR_VALUE_LENGTH} characters`,
        item,
      );
    }
    attrs[key] = item;
  }
  const size = JSON.stringify(attrs).length;
  if (size > MAX_ATTRS_JSON_LENGTH) {
    throw invalidParams(
      field,
      `must be at most ${MAX_ATTRS_JSON_LENGTH} characters as JSON: got ${size}`,
    );
  }
  return attrs;
}

function validateFilter(value: unknown): Filter | undefined {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalidParams(
      "filter",
      "must be an object like {attrs: {...}}",
      value,
    );
  }
  onlyKeys(value as Params, ["attrs"], "filter.");
  const { attrs } = value as Params;
  if (attrs === undefined) return {};
  return { attrs: validateAttrs(attrs, "filter.attrs") };
}

/** Longest accepted `note` of `discover.setHealth`, in characters. */
export const MAX_NOTE_LENGTH = 256;
/** Longest accepted check URL or TCP target, in characters. */
export const MAX_CHECK_TARGET_LENGTH = 2048;

/**
 * Ports that `fetch` refuses to reach (the Fetch standard's "bad ports",
 * mostly other protocols' well-known ports): an HTTP check on one would
 * fail at every run.
 */
const FETCH_BLOCKED_PORTS: ReadonlySet<number> = new Set(
  (
    "1 7 9 11 13 15 17 19 20 21 22 23 25 37 42 43 53 69 77 79 87 95 101 102 " +
    "103 104 109 110 111 113 115 117 119 123 135 137 139 143 161 179 389 427 " +
    "465 512 513 514 515 526 530 531 532 540 548 554 556 563 587 601 636 989 " +
    "990 993 995 1719 1720 1723 2049 3659 4045 4190 5060 5061 6000 6566 6665 " +
    "6666 6667 6668 6669 6679 6697 10080"
  ).split(" ").map(Number),
);

/** Shortest accepted check `interval`, in seconds. */
export const MIN_CHECK_INTERVAL = 0.1;
/** Longest accepted check `interval`, in seconds (one day). */
export const MAX_CHECK_INTERVAL = 86_400;
/** Most consecutive results a check threshold may ask for. */
export const MAX_CHECK_THRESHOLD = 100;

/** A {@linkcode Check} with every default applied. */
export type CheckParams = Check & Required<Omit<Check, "http" | "tcp">>;

function seconds(
  value: unknown,
  field: string,
  bounds: { min: number; max: number; fallback: number },
): number {
  if (value === undefined) return bounds.fallback;
  if (
    typeof value !== "number" || !Number.isFinite(value) ||
    value < bounds.min || value > bounds.max
  ) {
    throw invalidParams(
      field,
      `must be a number of seconds from ${bounds.min} to ${bounds.max}`,
      value,
    );
  }
  return value;
}

function threshold(value: unknown, field: string): number {
  if (value === undefined) return 1;
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
    value > MAX_CHECK_THRESHOLD
  ) {
    throw invalidParams(
      field,
      `must be an integer from 1 to ${MAX_CHECK_THRESHOLD}`,
      value,
    );
  }
  return value;
}

/**
 * Checks the `check` of `discover.register`: exactly one of `http` (an
 * `http:` or `https:` URL) and `tcp` (`host:port`), `interval` from 0.1 to
 * 86,400 seconds (default 5), `timeout` above 0 and below `interval`
 * (default 2, or half the interval when that is shorter), thresholds from 1
 * to 100 (default 1).
 *
 * @example Usage
 * ```ts
 * import { validateCheck } from "./validate.ts";
 * validateCheck({ http: "http://127.0.0.1:8080/healthz", interval: 2 });
 * // { http: "http://127.0.0.1:8080/healthz", interval: 2, timeout: 1, ... }
 * ```
 *
 * @param value The raw check.
 * @param field The field name used in error messages.
 * @returns The check with its defaults.
 */
export function validateCheck(value: unknown, field = "check"): CheckParams {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalidParams(
      field,
      'must be an object like {"http": URL} or {"tcp": "host:port"}',
      value,
    );
  }
  const c = value as Params;
  onlyKeys(c, [
    "http",
    "tcp",
    "interval",
    "timeout",
    "failuresBeforeCritical",
    "successesBeforePassing",
  ], `${field}.`);
  if ((c.http === undefined) === (c.tcp === undefined)) {
    throw invalidParams(field, "must have exactly one of 'http' and 'tcp'");
  }
  const target: Pick<Check, "http" | "tcp"> = {};
  if (c.http !== undefined) {
    let url: URL | undefined;
    if (
      typeof c.http === "string" && c.http.length <= MAX_CHECK_TARGET_LENGTH
    ) {
      try {
        url = new URL(c.http);
      } catch { /* reported below */ }
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      throw invalidParams(
        `${field}.http`,
        `must be an http:// or https:// URL of at most ${MAX_CHECK_TARGET_LENGTH} characters`,
        c.http,
      );
    }
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    if (FETCH_BLOCKED_PORTS.has(port)) {
      throw invalidParams(
        `${field}.http`,
        `port ${port} is one that HTTP clients refuse to reach (a "bad port" of the Fetch standard), so this check could never pass; check it with {"tcp": "${url.hostname}:${port}"} instead`,
        c.http,
      );
    }
    target.http = url.href;
  } else {
    target.tcp = validateAddr(c.tcp, `${field}.tcp`);
  }
  const interval = seconds(c.interval, `${field}.interval`, {
    min: MIN_CHECK_INTERVAL,
    max: MAX_CHECK_INTERVAL,
    fallback: 5,
  });
  const timeout = seconds(c.timeout, `${field}.timeout`, {
    min: 0,
    max: MAX_CHECK_INTERVAL,
    fallback: Math.min(2, interval / 2),
  });
  if (timeout <= 0 || timeout >= interval) {
    throw invalidParams(
      `${field}.timeout`,
      `must be above 0 and below 'interval' (${interval} s)`,
      timeout,
    );
  }
  return {
    ...target,
    interval,
    timeout,
    failuresBeforeCritical: threshold(
      c.failuresBeforeCritical,
      `${field}.failuresBeforeCritical`,
    ),
    successesBeforePassing: threshold(
      c.successesBeforePassing,
      `${field}.successesBeforePassing`,
    ),
  };
}

/**
 * Checks the `health` of `discover.services` and `discover.subscribe`.
 *
 * @example Usage
 * ```ts
 * import { validateHealthFilter } from "./validate.ts";
 * validateHealthFilter("any"); // "any"
 * validateHealthFilter(undefined); // undefined: passing
 * ```
 *
 * @param value The raw value.
 * @returns `"passing"`, `"any"`, or `undefined` when absent.
 */
export function validateHealthFilter(
  value: unknown,
): HealthFilter | undefined {
  if (value === undefined || value === "passing" || value === "any") {
    return value;
  }
  throw invalidParams("health", 'must be "passing" or "any"', value);
}

function healthOf(params: Params): { health?: HealthFilter } {
  const health = validateHealthFilter(params.health);
  return health === undefined ? {} : { health };
}

function validateAddress(params: Params): AddressParams {
  const { port, addr } = params;
  if (port !== undefined && addr !== undefined) {
    throw invalidParams("addr", "cannot be given together with 'port'");
  }
  if (port !== undefined) return { port: validatePort(port) };
  if (addr !== undefined) return { addr: validateAddr(addr) };
  throw invalidParams("port", "or 'addr' is required");
}

/**
 * Checks `discover.register` params.
 *
 * @example Usage
 * ```ts
 * import { validateRegister } from "./validate.ts";
 * validateRegister({ service: "cache", port: 6379, attrs: { zone: "b" } });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateRegister(
  params: unknown,
): RegisterParams & AddressParams & { attrs: Attrs } {
  const p = asObject(params);
  onlyKeys(p, ["service", "port", "addr", "attrs", "check"]);
  const service = validateServiceName(p.service);
  const target = validateAddress(p);
  const attrs = p.attrs === undefined ? {} : validateAttrs(p.attrs);
  const check = p.check === undefined ? undefined : validateCheck(p.check);
  return { service, ...target, attrs, ...(check ? { check } : {}) };
}

/**
 * Checks `discover.setHealth` params.
 *
 * @example Usage
 * ```ts
 * import { validateSetHealth } from "./validate.ts";
 * validateSetHealth({ service: "worker", port: 9000, health: "critical", note: "db down" });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params (`note` only with `critical`).
 */
export function validateSetHealth(
  params: unknown,
): SetHealthParams & AddressParams {
  const p = asObject(params);
  onlyKeys(p, ["service", "port", "addr", "health", "note"]);
  const service = validateServiceName(p.service);
  const target = validateAddress(p);
  const { health, note } = p;
  if (health !== "passing" && health !== "critical") {
    throw invalidParams("health", 'must be "passing" or "critical"', health);
  }
  if (
    note !== undefined &&
    (typeof note !== "string" || note.length > MAX_NOTE_LENGTH)
  ) {
    throw invalidParams(
      "note",
      `must be a string of at most ${MAX_NOTE_LENGTH} characters`,
      note,
    );
  }
  if (note !== undefined && health === "passing") {
    throw invalidParams("note", 'is only for health "critical"');
  }
  return {
    service,
    ...target,
    health,
    ...(note === undefined ? {} : { note }),
  };
}

/**
 * Checks `discover.unregister` params.
 *
 * @example Usage
 * ```ts
 * import { validateUnregister } from "./validate.ts";
 * validateUnregister({ service: "cache", addr: "10.0.0.1:6379" });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateUnregister(
  params: unknown,
): UnregisterParams & AddressParams {
  const p = asObject(params);
  onlyKeys(p, ["service", "port", "addr", "force"]);
  const { force } = p;
  if (force !== undefined && typeof force !== "boolean") {
    throw invalidParams("force", "must be a boolean", force);
  }
  return {
    service: validateServiceName(p.service),
    ...validateAddress(p),
    ...(force === true ? { force } : {}),
  };
}

/** Longest accepted token of `discover.authenticate`, in characters. */
export const MAX_TOKEN_LENGTH = 4096;

/**
 * Checks `discover.authenticate` params. The message never shows the token.
 *
 * @example Usage
 * ```ts
 * import { validateAuthenticate } from "./validate.ts";
 * validateAuthenticate({ token: "s3cret-token" });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateAuthenticate(params: unknown): AuthenticateParams {
  const p = asObject(params);
  onlyKeys(p, ["token"]);
  const { token } = p;
  if (
    typeof token !== "string" || token.length === 0 ||
    token.length > MAX_TOKEN_LENGTH
  ) {
    throw invalidParams(
      "token",
      `must be a string of 1 to ${MAX_TOKEN_LENGTH} characters`,
    );
  }
  return { token };
}

/**
 * Checks `discover.leader` params: the same as `discover.services`.
 *
 * @example Usage
 * ```ts
 * import { validateLeader } from "./validate.ts";
 * validateLeader({ service: "db", filter: { attrs: { shard: "3" } } });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateLeader(params: unknown): LeaderParams {
  return validateServices(params);
}

/**
 * Checks `discover.services` params.
 *
 * @example Usage
 * ```ts
 * import { validateServices } from "./validate.ts";
 * validateServices({ service: "cache", filter: { attrs: { zone: "b" } } });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateServices(params: unknown): ServicesParams {
  const p = asObject(params);
  onlyKeys(p, ["service", "filter", "health"]);
  return {
    service: validateServiceName(p.service),
    filter: validateFilter(p.filter),
    ...healthOf(p),
  };
}

/**
 * Checks `discover.subscribe` params.
 *
 * @example Usage
 * ```ts
 * import { validateSubscribe } from "./validate.ts";
 * validateSubscribe({ service: "cache", since: 42 });
 * validateSubscribe({ service: "*" }); // every service
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateSubscribe(params: unknown): SubscribeParams {
  const p = asObject(params);
  onlyKeys(p, [
    "service",
    "filter",
    "health",
    "since",
    "epoch",
    "batch",
    "chunks",
  ]);
  const { since, epoch, batch, chunks } = p;
  if (batch !== undefined && typeof batch !== "boolean") {
    throw invalidParams("batch", "must be true or false", batch);
  }
  if (chunks !== undefined && typeof chunks !== "boolean") {
    throw invalidParams("chunks", "must be true or false", chunks);
  }
  if (
    epoch !== undefined &&
    (typeof epoch !== "string" || epoch.length === 0 || epoch.length > 64)
  ) {
    throw invalidParams(
      "epoch",
      "must be the epoch string from a subscribe result or discover.status",
      epoch,
    );
  }
  if (
    since !== undefined &&
    (typeof since !== "number" || !Number.isSafeInteger(since) || since < 0)
  ) {
    throw invalidParams("since", "must be a non-negative integer", since);
  }
  return {
    service: p.service === ALL_SERVICES
      ? ALL_SERVICES
      : validateServiceName(p.service),
    filter: validateFilter(p.filter),
    ...healthOf(p),
    since: since as number | undefined,
    epoch: epoch as string | undefined,
    ...(batch ? { batch: true } : {}),
    ...(chunks ? { chunks: true } : {}),
  };
}

/**
 * Checks the params of a method that takes none: absent, `{}` or `[]`.
 *
 * @example Usage
 * ```ts
 * import { validateNoParams } from "./validate.ts";
 * validateNoParams(undefined);
 * validateNoParams({});
 * ```
 *
 * @param params The raw params.
 * @returns `undefined`: the method's params, checked.
 */
export function validateNoParams(params: unknown): undefined {
  if (params === undefined) return undefined;
  if (
    Array.isArray(params)
      ? params.length > 0
      : Object.keys(asObject(params)).length > 0
  ) {
    throw invalidParams(
      "params",
      "must be omitted or empty: this method takes none",
    );
  }
  return undefined;
}

/**
 * Checks `discover.unsubscribe` params.
 *
 * @example Usage
 * ```ts
 * import { validateUnsubscribe } from "./validate.ts";
 * validateUnsubscribe({ subscription: "1" });
 * ```
 *
 * @param params The raw params.
 * @returns The checked params.
 */
export function validateUnsubscribe(params: unknown): UnsubscribeParams {
  const p = asObject(params);
  onlyKeys(p, ["subscription"]);
  const { subscription } = p;
  if (
    typeof subscription !== "string" || subscription.length === 0 ||
    subscription.length > 64
  ) {
    throw invalidParams(
      "subscription",
      "must be a subscription id string returned by discover.subscribe",
      subscription,
    );
  }
  return { subscription };
}
