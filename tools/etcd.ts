// Copyright the discover authors. BSD-3-Clause license.

/**
 * Runs real etcd members (the `etcd` binary from PATH, e.g.
 * Debian's `etcd-server`) on free loopback ports, each with a throwaway
 * data directory, and removes everything when stopped; and etcd's gRPC
 * proxy (`etcd grpc-proxy start`) in front of them. Members serve their
 * clients over plain HTTP, or over TLS with client certificates required
 * ({@linkcode StartEtcdOptions.tls}).
 *
 * @module
 */

import { freePort, restartableProcess } from "./_process.ts";

export { freePort };

/**
 * The command-line arguments of an agent on etcd (for `spawnAgent`): the
 * etcd backend at `endpoints`, under `prefix` (a new one by default, so
 * that agents of different tests or benchmarks never share records),
 * logging warnings only.
 *
 * @example Usage
 * ```ts ignore
 * import { etcdAgentArgs, startEtcd } from "./etcd.ts";
 * import { spawnAgent } from "./agent_process.ts";
 * await using cluster = await startEtcd();
 * await using agent = await spawnAgent(etcdAgentArgs(cluster.endpoints));
 * ```
 *
 * @param endpoints The etcd endpoints.
 * @param prefix The key prefix.
 * @returns The arguments.
 */
export function etcdAgentArgs(
  endpoints: readonly string[],
  prefix = `/agent-${crypto.randomUUID().slice(0, 8)}/`,
): string[] {
  return [
    "--backend",
    "etcd",
    "--etcd-endpoints",
    endpoints.join(","),
    "--etcd-prefix",
    prefix,
    "--log-level",
    "warn",
  ];
}

/** One etcd member. */
export interface EtcdMember {
  /** Member name. */
  readonly name: string;
  /**
   * Client URL, e.g. `http://127.0.0.1:24123`, or `https://localhost:24123`
   * over TLS.
   */
  readonly clientUrl: string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Sends a signal to the process. */
  signal(signal: Deno.Signal): void;
  /** Kills the process (SIGKILL) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts the process again with the same data directory. */
  restart(): Promise<void>;
}

/** A running etcd cluster. */
export interface EtcdCluster extends AsyncDisposable {
  /** The members. */
  readonly members: EtcdMember[];
  /** Every member's client URL. */
  readonly endpoints: string[];
  /** Reads a counter from a member's `/metrics` (0 when absent). */
  metric(name: string, member?: number): Promise<number>;
  /** Stops every member and removes the data directories. */
  stop(): Promise<void>;
}

/** Fails with an install hint when `etcd` is not on PATH. */
export async function requireEtcd(): Promise<void> {
  try {
    const out = await new Deno.Command("etcd", { args: ["--version"] })
      .output();
    if (!out.success) throw new Error("etcd --version failed");
  } catch {
    throw new Error(
      "etcd is not on PATH: install it (Debian/Ubuntu: apt-get install -y etcd-server; macOS: brew install etcd) and try again",
    );
  }
}

async function waitHealthy(
  url: string,
  client?: Deno.HttpClient,
  ms = 60_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const res = await fetch(`${url}/health`, {
        signal: AbortSignal.timeout(1000),
        client,
      });
      const body = await res.json();
      if (body.health === "true") return;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      throw new Error(`etcd at ${url} did not become healthy in ${ms} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Certificates (PEM files) with which members serve their clients over
 * TLS and require a client certificate signed by the CA from each
 * (`--client-cert-auth`). Their client URLs are then
 * `https://localhost:PORT` (they listen on 127.0.0.1). Members talk to
 * each other over plain HTTP on loopback.
 */
export interface EtcdTlsOptions {
  /** The CA that signed the members' and the clients' certificates. */
  caFile: string;
  /** The members' certificate; it must name `localhost`. */
  certFile: string;
  /** Its private key. */
  keyFile: string;
  /** A client certificate the CA signed, which the health checks present. */
  clientCertFile: string;
  /** Its private key. */
  clientKeyFile: string;
}

/** Options of {@linkcode startEtcd}. */
export interface StartEtcdOptions {
  /**
   * Client ports of the members, in order (a member without one gets a
   * free port): to start etcd where an agent already looks for it.
   */
  clientPorts?: number[];
  /**
   * Serve clients over TLS with client certificates required.
   *
   * @default {plain HTTP}
   */
  tls?: EtcdTlsOptions;
}

/**
 * Starts an etcd cluster of `size` members and waits until every member is
 * healthy.
 *
 * @param size Number of members.
 * @param options Client ports.
 * @returns The cluster.
 */
export async function startEtcd(
  size = 1,
  options: StartEtcdOptions = {},
): Promise<EtcdCluster> {
  await requireEtcd();
  const { tls } = options;
  // What the health checks and metric reads present to TLS members.
  const client = tls && Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(tls.caFile)],
    cert: await Deno.readTextFile(tls.clientCertFile),
    key: await Deno.readTextFile(tls.clientKeyFile),
  });
  const scheme = tls ? "https" : "http";
  const tlsArgs = tls
    ? [
      "--cert-file",
      tls.certFile,
      "--key-file",
      tls.keyFile,
      "--trusted-ca-file",
      tls.caFile,
      "--client-cert-auth",
    ]
    : [];
  const root = await Deno.makeTempDir({ prefix: "discover-etcd-" });
  const ports = [];
  for (let i = 0; i < size; i++) {
    ports.push({
      client: options.clientPorts?.[i] ?? freePort(),
      peer: freePort(),
    });
  }
  const token = `discover-test-${crypto.randomUUID()}`;
  const initialCluster = ports.map((p, i) => `m${i}=http://127.0.0.1:${p.peer}`)
    .join(",");
  const members = ports.map((p, i) => {
    const name = `m${i}`;
    // Over TLS, clients name the member: Deno's TLS refuses an IP address
    // as the server name that gRPC sends for an IP endpoint.
    const listenUrl = `${scheme}://127.0.0.1:${p.client}`;
    const clientUrl = tls ? `https://localhost:${p.client}` : listenUrl;
    const args = [
      "--name",
      name,
      "--data-dir",
      `${root}/${name}`,
      "--listen-client-urls",
      listenUrl,
      "--advertise-client-urls",
      clientUrl,
      "--listen-peer-urls",
      `http://127.0.0.1:${p.peer}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${p.peer}`,
      "--initial-cluster",
      initialCluster,
      "--initial-cluster-token",
      token,
      "--initial-cluster-state",
      "new",
      "--log-level",
      "error",
      ...tlsArgs,
    ];
    const proc = restartableProcess("etcd", args);
    const spawn = () => proc.spawn();
    const member: EtcdMember & { spawn(): void; stopped(): Promise<unknown> } =
      {
        name,
        clientUrl,
        get running() {
          return proc.running;
        },
        signal(signal) {
          proc.signal(signal);
        },
        kill: () => proc.kill(),
        async restart() {
          await member.kill();
          spawn();
          await waitHealthy(clientUrl, client);
        },
        spawn,
        stopped: () => proc.exited,
      };
    return member;
  });
  for (const member of members) member.spawn();
  const stop = async () => {
    await Promise.all(members.map((m) => m.kill()));
    client?.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  };
  try {
    await Promise.all(members.map((m) => waitHealthy(m.clientUrl, client)));
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    members,
    endpoints: members.map((m) => m.clientUrl),
    async metric(name, member = 0) {
      const text = await (await fetch(`${members[member].clientUrl}/metrics`, {
        client,
      })).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name} `));
      return line ? Number(line.split(" ")[1]) : 0;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** A running etcd gRPC proxy (`etcd grpc-proxy start`). */
export interface EtcdGrpcProxy extends AsyncDisposable {
  /** URL agents use as their etcd endpoint, e.g. `http://127.0.0.1:27311`. */
  readonly url: string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Kills the process (SIGKILL) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts the process again on the same address, and waits until it reaches etcd. */
  restart(): Promise<void>;
  /** Stops the process and removes its data directory. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startGrpcProxy}. */
export interface StartGrpcProxyOptions {
  /** Port the proxy listens on (default: a free port). */
  port?: number;
}

/**
 * Starts etcd's gRPC proxy in front of `endpoints` on a loopback port
 * and waits until it answers `/health` (which it does once it reaches
 * etcd). The proxy serves the etcd v3 gRPC API, so an agent uses its URL
 * as its only etcd endpoint.
 *
 * @example Usage
 * ```ts ignore
 * import { startEtcd, startGrpcProxy } from "./etcd.ts";
 * await using cluster = await startEtcd();
 * await using proxy = await startGrpcProxy(cluster.endpoints);
 * console.log(proxy.url); // e.g. "http://127.0.0.1:27311"
 * ```
 *
 * @param endpoints Client URLs of the etcd members.
 * @param options The listening port.
 * @returns The running proxy.
 */
export async function startGrpcProxy(
  endpoints: string[],
  options: StartGrpcProxyOptions = {},
): Promise<EtcdGrpcProxy> {
  await requireEtcd();
  const dataDir = await Deno.makeTempDir({ prefix: "discover-grpc-proxy-" });
  const listen = `127.0.0.1:${options.port ?? freePort()}`;
  const url = `http://${listen}`;
  const args = [
    "grpc-proxy",
    "start",
    "--endpoints",
    endpoints.join(","),
    "--listen-addr",
    listen,
    "--advertise-client-url",
    listen,
    "--data-dir",
    dataDir,
  ];
  const proc = restartableProcess("etcd", args);
  const spawn = () => proc.spawn();
  const kill = () => proc.kill();
  const stop = async () => {
    await kill();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };
  spawn();
  try {
    await waitHealthy(url);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url,
    get running() {
      return proc.running;
    },
    kill,
    async restart() {
      await kill();
      spawn();
      await waitHealthy(url);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
