// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend as the agent's command line knows it
 * (`--backend etcd`): its flags, their checks, and the backend they
 * build. The backend itself (`etcd.ts`, with the npm `etcd3` client and
 * gRPC) is loaded only when it is selected, so an agent on another backend
 * neither loads nor installs it.
 *
 * @module
 */

import type { Backend } from "./backend.ts";
import {
  type BackendDescriptor,
  FlagError,
  parseSeconds,
} from "./descriptor.ts";

/** The environment variable that holds the password of `--etcd-username`. */
export const ETCD_PASSWORD_ENV = "DISCOVER_ETCD_PASSWORD";

const ENDPOINT = /^https?:\/\/[^/]+\/?$/;

/**
 * The etcd backend's descriptor: flags `--etcd-endpoints`,
 * `--etcd-prefix`, `--etcd-lease-ttl`, `--etcd-timeout`, `--etcd-ca`,
 * `--etcd-cert`, `--etcd-key` and `--etcd-username`.
 *
 * @example Usage
 * ```ts
 * import { etcdDescriptor } from "./etcd_descriptor.ts";
 * console.log(etcdDescriptor.flags.map((flag) => flag.name)[0]);
 * // "etcd-endpoints"
 * ```
 */
export const etcdDescriptor: BackendDescriptor = {
  name: "etcd",
  summary:
    "registrations kept in an etcd cluster that agents on many hosts share",
  flags: [
    {
      name: "etcd-endpoints",
      type: "string",
      value: "URLS",
      default: "http://127.0.0.1:2379",
      help: "comma-separated client URLs of the etcd members",
    },
    {
      name: "etcd-prefix",
      type: "string",
      value: "PREFIX",
      default: "/discover/",
      help: "key prefix; starts and ends with /",
    },
    {
      name: "etcd-lease-ttl",
      type: "string",
      value: "SECONDS",
      default: "10",
      help:
        "how long a dead agent's instances outlive it; whole seconds, at least 2",
    },
    {
      name: "etcd-timeout",
      type: "string",
      value: "SECONDS",
      default: "3",
      help: "deadline of each etcd call; fractions accepted (e.g. 0.5)",
    },
    {
      name: "etcd-ca",
      type: "string",
      value: "FILE",
      help: "CA certificate (PEM) for https endpoints",
    },
    {
      name: "etcd-cert",
      type: "string",
      value: "FILE",
      help:
        "client certificate (PEM) for mutual TLS; needs --etcd-key and --etcd-ca",
    },
    {
      name: "etcd-key",
      type: "string",
      value: "FILE",
      help: "client key (PEM) for mutual TLS",
    },
    {
      name: "etcd-username",
      type: "string",
      value: "NAME",
      help:
        `etcd user; the password is read from the environment variable ${ETCD_PASSWORD_ENV}`,
    },
  ],
  notes: [
    "When etcd cannot be reached, the agent starts anyway and keeps trying: meanwhile it is not connected (GET /healthz answers 503, discover.status says connected: false, registrations fail at once with -32000) and it logs one line per attempt.",
  ],
  async create(values, context): Promise<Backend> {
    // Each value, or its flag's default when the caller left it out.
    const text = (flag: string) =>
      (values[flag] as string | undefined) ??
        etcdDescriptor.flags.find((f) => f.name === flag)?.default;
    const endpoints = parseEndpoints(text("etcd-endpoints")!);
    const prefix = text("etcd-prefix")!;
    if (!prefix.startsWith("/") || !prefix.endsWith("/")) {
      throw new FlagError(
        `--etcd-prefix must start and end with '/': got '${prefix}'`,
      );
    }
    const leaseTtl = parseSeconds(
      "etcd-lease-ttl",
      text("etcd-lease-ttl")!,
      { min: 2, whole: true },
    );
    const callTimeout = parseSeconds(
      "etcd-timeout",
      text("etcd-timeout")!,
    ) * 1000;
    const read = (flag: string) => {
      const path = text(flag);
      return path === undefined ? undefined : context.readFile(flag, path);
    };
    const ca = await read("etcd-ca");
    const cert = await read("etcd-cert");
    const key = await read("etcd-key");
    if ((cert === undefined) !== (key === undefined)) {
      throw new FlagError("--etcd-cert and --etcd-key go together");
    }
    if (cert && !ca) throw new FlagError("--etcd-cert needs --etcd-ca too");
    const username = text("etcd-username");
    const password = username === undefined
      ? undefined
      : context.env(ETCD_PASSWORD_ENV);
    if (username !== undefined && password === undefined) {
      throw new FlagError(
        `--etcd-username needs the password in the environment variable ${ETCD_PASSWORD_ENV}`,
      );
    }
    const { EtcdBackend } = await import("./etcd.ts");
    return new EtcdBackend({
      endpoints,
      prefix,
      leaseTtl,
      callTimeout,
      tls: ca ? { ca, cert, key } : undefined,
      auth: username !== undefined
        ? { username, password: password! }
        : undefined,
      log: context.log,
    });
  },
};

/** The endpoints of a comma-separated list, each checked. */
function parseEndpoints(list: string): string[] {
  const endpoints = list.split(",").map((e) => e.trim()).filter((e) =>
    e !== ""
  );
  if (endpoints.length === 0) {
    throw new FlagError(
      `--etcd-endpoints must list at least one http(s)://host:port URL: got '${list}'`,
    );
  }
  for (const endpoint of endpoints) {
    if (!ENDPOINT.test(endpoint)) {
      throw new FlagError(
        `--etcd-endpoints must be comma-separated http(s)://host:port URLs: got '${endpoint}'`,
      );
    }
    const host = new URL(endpoint).hostname;
    if (
      endpoint.startsWith("https:") &&
      (/^[0-9.]+$/.test(host) || host.startsWith("["))
    ) {
      // Deno's TLS refuses an IP address as the server name gRPC sends:
      // the agent would retry forever.
      throw new FlagError(
        `--etcd-endpoints: an https endpoint must name its host by DNS name, as its certificate does (e.g. https://localhost:2379), not by IP address: got '${endpoint}'`,
      );
    }
  }
  return endpoints;
}
