#!/usr/bin/env -S deno run --allow-net --allow-sys --allow-read --allow-env
// Copyright the discover authors. BSD-3-Clause license.

/**
 * discoverd, the discover agent: `deno run --allow-net
 * --allow-sys=networkInterfaces agent.ts --help`. The etcd backend also
 * needs `--allow-read --allow-env --allow-sys` (its gRPC client reads its
 * protocol files and environment).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startAgent } from "./agent/mod.ts";
import { createLogger, isLogLevel, LOG_LEVELS } from "./agent/log.ts";
import type { Backend } from "./backends/backend.ts";
import { MemoryBackend } from "./backends/memory.ts";
import type { Logger } from "./agent/log.ts";
import { VERSION } from "./agent/version.ts";

const HELP = `discoverd ${VERSION}: the discover agent

Usage: discoverd [options]

Options:
  --listen HOST:PORT        where to accept WebSocket connections
                            (default 127.0.0.1:1111; port 0 picks a free one)
  --advertise-host HOST     host used for registrations that give only a port
                            (default: this host's most public non-loopback
                            address, else 127.0.0.1)
  --backend NAME            where registrations are kept: memory (default, one
                            host) or etcd (many hosts sharing an etcd cluster)
  --ttl SECONDS             grace period before a lost session's instances go
                            down (default 10)
  --idle-timeout SECONDS    drop a peer that answers no ping for this long; a
                            silent peer is pinged after half of it (default 5)
  --history N               changes kept for resumes with 'since' (default 50000)
  --history-bytes N         bytes of changes kept for resumes, estimated; the
                            oldest go first beyond this or --history
                            (default 16777216, 16 MiB)
  --max-frame-bytes N       largest accepted frame (default 1048576)
  --max-sessions N          most sessions at once (default 50000)
  --max-queue-bytes N       bytes queued for a session that does not read before
                            it is dropped as a slow consumer (default 16777216);
                            one subscription's snapshot at a time may go beyond
  --max-registrations N     most instances per client (default 1000)
  --max-subscriptions N     most subscriptions per session (default 1000)
  --allow-origin URL        let web pages from this origin (http(s)://host:port)
                            connect, besides the agent's own dashboard at /;
                            repeatable or comma-separated; * allows any page
  --allow-host NAME         accept requests addressed to this host name (the
                            Host header), besides IP addresses and localhost;
                            others get 403, which stops DNS rebinding attacks;
                            repeatable or comma-separated; * allows any name

etcd backend (--backend etcd):
  --etcd-endpoints URLS     comma-separated client URLs
                            (default http://127.0.0.1:2379)
  --etcd-prefix PREFIX      key prefix (default /discover/)
  --etcd-lease-ttl SECONDS  how long a dead agent's instances outlive it
                            (default 10)
  --etcd-timeout MS         deadline of each etcd call (default 3000)
  --etcd-ca FILE            CA certificate for https endpoints
  --etcd-cert FILE          client certificate (mutual TLS)
  --etcd-key FILE           client key (mutual TLS)
  --etcd-username NAME      etcd user; the password is read from the
                            environment variable DISCOVER_ETCD_PASSWORD

  --log-level LEVEL         ${LOG_LEVELS.join(", ")} (default info)
  -h, --help                show this help
  -V, --version             show the version

The protocol (JSON-RPC 2.0 over WebSocket) is described at /openrpc.json on
the listening port and in protocol/README.md.
`;

/** A command-line mistake: printed with a hint, exit code 2. */
class UsageError extends Error {}

function number(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || !(value > 0)) {
    throw new UsageError(
      `--${name} must be a positive number: got '${text}'`,
    );
  }
  return value;
}

function count(name: string, text: string | undefined): number | undefined {
  const value = number(name, text);
  if (value !== undefined && !Number.isSafeInteger(value)) {
    throw new UsageError(
      `--${name} must be a positive whole number: got '${text}'`,
    );
  }
  return value;
}

function parseListen(text: string): { hostname: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):([0-9]{1,5})$/.exec(
    text,
  );
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new UsageError(
      `--listen must be HOST:PORT (e.g. 127.0.0.1:1111 or [::1]:1111): got '${text}'`,
    );
  }
  return { hostname: match[1] ?? (match[2] || "0.0.0.0"), port };
}

type Values = Record<string, string | string[] | boolean | undefined>;

async function openBackend(values: Values, log: Logger): Promise<Backend> {
  const name = values.backend;
  if (name === "memory") return new MemoryBackend();
  if (name !== "etcd") {
    throw new UsageError(
      `--backend must be 'memory' or 'etcd': got '${name}'`,
    );
  }
  const text = (flag: string) => values[flag] as string | undefined;
  const endpoints = text("etcd-endpoints")!.split(",").map((e) => e.trim())
    .filter((e) => e !== "");
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/]+\/?$/.test(endpoint)) {
      throw new UsageError(
        `--etcd-endpoints must be comma-separated http(s)://host:port URLs: got '${endpoint}'`,
      );
    }
  }
  const read = async (flag: string) => {
    const path = text(flag);
    if (path === undefined) return undefined;
    try {
      return await Deno.readFile(path);
    } catch (error) {
      throw new UsageError(
        `--${flag}: cannot read '${path}': ${(error as Error).message}`,
      );
    }
  };
  const ca = await read("etcd-ca");
  const cert = await read("etcd-cert");
  const key = await read("etcd-key");
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError("--etcd-cert and --etcd-key go together");
  }
  if (cert && !ca) {
    throw new UsageError("--etcd-cert needs --etcd-ca too");
  }
  const username = text("etcd-username");
  const password = username === undefined
    ? undefined
    : Deno.env.get("DISCOVER_ETCD_PASSWORD");
  if (username !== undefined && password === undefined) {
    throw new UsageError(
      "--etcd-username needs the password in the environment variable DISCOVER_ETCD_PASSWORD",
    );
  }
  const leaseTtl = count("etcd-lease-ttl", text("etcd-lease-ttl"));
  if (leaseTtl !== undefined && leaseTtl < 2) {
    throw new UsageError(
      `--etcd-lease-ttl must be at least 2: got ${leaseTtl}`,
    );
  }
  const { EtcdBackend } = await import("./backends/etcd.ts");
  try {
    return new EtcdBackend({
      endpoints,
      prefix: text("etcd-prefix"),
      leaseTtl,
      callTimeout: number("etcd-timeout", text("etcd-timeout")),
      tls: ca ? { ca, cert, key } : undefined,
      auth: username !== undefined
        ? { username, password: password! }
        : undefined,
      log,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: "string", default: "127.0.0.1:1111" },
      "advertise-host": { type: "string" },
      backend: { type: "string", default: "memory" },
      ttl: { type: "string" },
      "idle-timeout": { type: "string" },
      history: { type: "string" },
      "history-bytes": { type: "string" },
      "max-frame-bytes": { type: "string" },
      "max-sessions": { type: "string" },
      "max-queue-bytes": { type: "string" },
      "max-registrations": { type: "string" },
      "max-subscriptions": { type: "string" },
      "allow-origin": { type: "string", multiple: true },
      "allow-host": { type: "string", multiple: true },
      "log-level": { type: "string", default: "info" },
      "etcd-endpoints": { type: "string", default: "http://127.0.0.1:2379" },
      "etcd-prefix": { type: "string" },
      "etcd-lease-ttl": { type: "string" },
      "etcd-timeout": { type: "string" },
      "etcd-ca": { type: "string" },
      "etcd-cert": { type: "string" },
      "etcd-key": { type: "string" },
      "etcd-username": { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "V" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.version) {
    console.log(VERSION);
    return 0;
  }
  const level = values["log-level"];
  if (!isLogLevel(level)) {
    throw new UsageError(
      `--log-level must be one of ${LOG_LEVELS.join(", ")}: got '${level}'`,
    );
  }
  const log = createLogger(level);
  const backend = await openBackend(values, log);
  const controller = new AbortController();
  const agent = await startAgent({
    ...parseListen(values.listen),
    advertiseHost: values["advertise-host"],
    backend,
    ttl: number("ttl", values.ttl),
    idleTimeout: number("idle-timeout", values["idle-timeout"]),
    historySize: count("history", values.history),
    historyBytes: count("history-bytes", values["history-bytes"]),
    limits: {
      maxFrameBytes: count("max-frame-bytes", values["max-frame-bytes"]),
      maxSessions: count("max-sessions", values["max-sessions"]),
      maxQueueBytes: count("max-queue-bytes", values["max-queue-bytes"]),
      maxRegistrations: count(
        "max-registrations",
        values["max-registrations"],
      ),
      maxSubscriptions: count(
        "max-subscriptions",
        values["max-subscriptions"],
      ),
    },
    allowOrigins: values["allow-origin"],
    allowHosts: values["allow-host"],
    logger: log,
    signal: controller.signal,
  });
  // Handlers first: whoever reads the line below may signal at once.
  const stop = () => controller.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  console.log(`discoverd listening on ${agent.url}`);
  await agent.finished;
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    // Option checks of startAgent throw TypeError/RangeError: a usage error too.
    const usage = error instanceof UsageError ||
      error instanceof TypeError || error instanceof RangeError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    console.error(
      `discoverd: ${(error as Error).message}${
        usage ? "\nRun 'discoverd --help' for the options." : ""
      }`,
    );
    Deno.exit(usage ? 2 : 1);
  }
}
