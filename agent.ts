#!/usr/bin/env -S deno run --allow-net --allow-sys=networkInterfaces
// Copyright the discover authors. BSD-3-Clause license.

/**
 * discoverd, the discover agent: `deno run --allow-net
 * --allow-sys=networkInterfaces agent.ts --help`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startAgent } from "./agent/mod.ts";
import { isLogLevel, LOG_LEVELS } from "./agent/log.ts";
import { MemoryBackend } from "./backends/memory.ts";
import { VERSION } from "./agent/version.ts";

const HELP = `discoverd ${VERSION}: the discover agent

Usage: discoverd [options]

Options:
  --listen HOST:PORT        where to accept WebSocket connections
                            (default 127.0.0.1:1111; port 0 picks a free one)
  --advertise-host HOST     host used for registrations that give only a port
                            (default: this host's most public non-loopback
                            address, else 127.0.0.1)
  --backend NAME            where registrations are kept: memory (default)
  --ttl SECONDS             grace period before a lost session's instances go
                            down (default 10)
  --idle-timeout SECONDS    drop a peer that answers no ping for this long; a
                            silent peer is pinged after half of it (default 5)
  --history N               changes kept for resumes with 'since' (default 50000)
  --max-frame-bytes N       largest accepted frame (default 1048576)
  --max-sessions N          most sessions at once (default 50000)
  --max-registrations N     most instances per client (default 1000)
  --max-subscriptions N     most subscriptions per session (default 1000)
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
      "max-frame-bytes": { type: "string" },
      "max-sessions": { type: "string" },
      "max-registrations": { type: "string" },
      "max-subscriptions": { type: "string" },
      "log-level": { type: "string", default: "info" },
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
  if (values.backend !== "memory") {
    throw new UsageError(
      `--backend must be 'memory': got '${values.backend}'`,
    );
  }
  const controller = new AbortController();
  const agent = await startAgent({
    ...parseListen(values.listen),
    advertiseHost: values["advertise-host"],
    backend: new MemoryBackend(),
    ttl: number("ttl", values.ttl),
    idleTimeout: number("idle-timeout", values["idle-timeout"]),
    historySize: count("history", values.history),
    limits: {
      maxFrameBytes: count("max-frame-bytes", values["max-frame-bytes"]),
      maxSessions: count("max-sessions", values["max-sessions"]),
      maxRegistrations: count(
        "max-registrations",
        values["max-registrations"],
      ),
      maxSubscriptions: count(
        "max-subscriptions",
        values["max-subscriptions"],
      ),
    },
    logLevel: level,
    signal: controller.signal,
  });
  console.log(`discoverd listening on ${agent.url}`);
  const stop = () => controller.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await agent.finished;
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    const usage = error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    console.error(
      `discoverd: ${(error as Error).message}${
        usage ? "\nRun 'discoverd --help' for the options." : ""
      }`,
    );
    Deno.exit(usage ? 2 : 1);
  }
}
