// Copyright the discover authors. BSD-3-Clause license.

/**
 * Backends: where an agent keeps registrations. See
 * {@linkcode Backend} for the interface a new store implements, and
 * {@linkcode BackendDescriptor} for how it shows up on the agent's command
 * line: a new backend adds its descriptor to {@linkcode BACKENDS}.
 *
 * @module
 */

import type { BackendDescriptor } from "./descriptor.ts";
import { etcdDescriptor } from "./etcd_descriptor.ts";
import { memoryDescriptor } from "./memory.ts";
import { zookeeperDescriptor } from "./zookeeper_descriptor.ts";

export * from "./backend.ts";
export * from "./descriptor.ts";
export { MemoryBackend, memoryDescriptor } from "./memory.ts";
export { ETCD_PASSWORD_ENV, etcdDescriptor } from "./etcd_descriptor.ts";
export { zookeeperDescriptor } from "./zookeeper_descriptor.ts";

/**
 * The backends the agent's command line offers, the default (`memory`)
 * first. The etcd and ZooKeeper backends' code and npm clients are loaded
 * only when selected.
 *
 * @example Usage
 * ```ts
 * import { BACKENDS } from "./mod.ts";
 * console.log(BACKENDS.map((backend) => backend.name));
 * // ["memory", "etcd", "zookeeper"]
 * ```
 */
export const BACKENDS: readonly BackendDescriptor[] = Object.freeze([
  memoryDescriptor,
  etcdDescriptor,
  zookeeperDescriptor,
]);
