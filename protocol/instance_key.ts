// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Identity of an instance: the key `service/addr` that names one instance
 * everywhere (the instance's `id` on the wire, the view, the registry, the
 * backends' stores, the client's sets). A service name never holds a `/`
 * (see `SERVICE_NAME_PATTERN`), so the first `/` splits the key.
 *
 * @module
 */

/**
 * The key of the instance of `service` at `addr`: `service/addr`.
 *
 * @example Usage
 * ```ts
 * import { instanceKey } from "./instance_key.ts";
 * instanceKey("cache", "10.0.0.1:6379"); // "cache/10.0.0.1:6379"
 * ```
 *
 * @param service The service name.
 * @param addr The canonical `host:port` address.
 * @returns The key.
 */
export function instanceKey(service: string, addr: string): string {
  return `${service}/${addr}`;
}

/**
 * Splits a key made by {@linkcode instanceKey} back into service and address.
 *
 * @example Usage
 * ```ts
 * import { splitInstanceKey } from "./instance_key.ts";
 * splitInstanceKey("cache/[::1]:6379"); // ["cache", "[::1]:6379"]
 * ```
 *
 * @param key The key.
 * @returns `[service, addr]`.
 * @throws {TypeError} When the key holds no `/`.
 */
export function splitInstanceKey(key: string): [string, string] {
  const slash = key.indexOf("/");
  if (slash < 0) {
    throw new TypeError(
      `'${key}' is not an instance key: expected 'service/addr'`,
    );
  }
  return [key.slice(0, slash), key.slice(slash + 1)];
}
