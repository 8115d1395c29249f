// Copyright the discover authors. BSD-3-Clause license.

/**
 * The ZooKeeper backend as the agent's command line knows it
 * (`--backend zookeeper`): its flags, their checks, and the backend they
 * build. The backend itself (`zookeeper.ts`, with npm
 * `node-zookeeper-client`) is loaded only when it is selected.
 *
 * Its flags start with `zk-` (its {@linkcode BackendDescriptor.flagPrefix}),
 * the short name ZooKeeper users know.
 *
 * @module
 */

import type { Backend } from "./backend.ts";
import {
  type BackendDescriptor,
  FlagError,
  parseSeconds,
} from "./descriptor.ts";

const SERVER = /^[^\s,/]+:[0-9]{1,5}$/;
const PREFIX = /^(\/[A-Za-z0-9._-]+)+$/;

/**
 * The ZooKeeper backend's descriptor: flags `--zk-connect`, `--zk-prefix`
 * and `--zk-session-timeout`.
 *
 * @example Usage
 * ```ts
 * import { zookeeperDescriptor } from "./zookeeper_descriptor.ts";
 * console.log(zookeeperDescriptor.flags.map((flag) => flag.name)[0]);
 * // "zk-connect"
 * ```
 */
export const zookeeperDescriptor: BackendDescriptor = {
  name: "zookeeper",
  flagPrefix: "zk",
  summary:
    "registrations kept in a ZooKeeper ensemble that agents on many hosts share",
  flags: [
    {
      name: "zk-connect",
      type: "string",
      value: "HOST:PORT,...",
      default: "127.0.0.1:2181",
      help: "comma-separated client addresses of the ZooKeeper servers",
    },
    {
      name: "zk-prefix",
      type: "string",
      value: "PATH",
      default: "/discover",
      help:
        "znode under which everything is kept; starts with /, no trailing /",
    },
    {
      name: "zk-session-timeout",
      type: "string",
      value: "SECONDS",
      default: "10",
      help:
        "how long a dead agent's instances outlive it (the servers bound it to 2 to 20 ticks); at least 1, fractions accepted",
    },
  ],
  notes: [
    "When ZooKeeper cannot be reached, the agent starts anyway and keeps trying every server: meanwhile it is not connected (GET /healthz answers 503, discover.status says connected: false, registrations fail at once with -32000).",
  ],
  async create(values, context): Promise<Backend> {
    const text = (flag: string) =>
      (values[flag] as string | undefined) ??
        zookeeperDescriptor.flags.find((f) => f.name === flag)?.default;
    const servers = text("zk-connect")!.split(",").map((s) => s.trim());
    for (const server of servers) {
      if (!SERVER.test(server)) {
        throw new FlagError(
          `--zk-connect must be comma-separated HOST:PORT addresses: got '${server}' in '${
            text("zk-connect")
          }'`,
        );
      }
    }
    const prefix = text("zk-prefix")!;
    if (
      !PREFIX.test(prefix) ||
      prefix.split("/").some((part) => part === "." || part === "..")
    ) {
      throw new FlagError(
        `--zk-prefix must be a path such as /discover (letters, digits, '.', '_' and '-' between slashes, no trailing slash): got '${prefix}'`,
      );
    }
    const sessionTimeout = parseSeconds(
      "zk-session-timeout",
      text("zk-session-timeout")!,
      { min: 1 },
    );
    const { ZooKeeperBackend } = await import("./zookeeper.ts");
    return new ZooKeeperBackend({
      servers,
      prefix,
      sessionTimeout,
      log: context.log,
    });
  },
};
