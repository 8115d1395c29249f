#!/usr/bin/env -S deno run --allow-net --allow-sys --allow-read --allow-env
// Copyright the discover authors. BSD-3-Clause license.

/**
 * discoverd, the discover agent: `deno task start --help`. The command
 * line is composed of the agent's own flags and those of every backend in
 * `backends/mod.ts` (see `BackendDescriptor`); a backend's flags are
 * accepted only with `--backend` set to it.
 *
 * Permissions: `--allow-net` and `--allow-sys=networkInterfaces` for the
 * memory backend, and with `--data-dir` `--allow-write` for its directory
 * and `--allow-sys=osUptime` (the host's boot time tells an agent restart
 * from a host restart); the etcd backend's gRPC client also reads a few
 * environment variables (`GRPC_*`, the proxy ones) and its code and
 * certificate files. `deno task start` grants exactly what they need.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import {
  type AgentOptions,
  DEFAULT_LIMITS,
  LIMIT_MINIMUMS,
  ListenError,
  startAgent,
} from "./agent/mod.ts";
import {
  createLogger,
  isLogFormat,
  isLogLevel,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
} from "./agent/log.ts";
import { checkTls, type TlsPem } from "./agent/server.ts";
import { VERSION } from "./agent/version.ts";
import { BACKENDS } from "./backends/mod.ts";
import {
  type BackendDescriptor,
  checkFlagNames,
  type Flag,
  FlagError,
  type FlagValues,
  parseCount,
  parseSeconds,
} from "./backends/descriptor.ts";
import { DEFAULT_HISTORY_BYTES } from "./agent/view.ts";
import { DEFAULT_IDLE_MS, DEFAULT_MAX_SCOPES } from "./agent/views.ts";
import type { Limits } from "./protocol/types.ts";
import { wrap } from "./_help_text.ts";

/** The limit flags, by the limit each sets. */
const LIMIT_FLAGS: [flag: string, limit: keyof Limits, help: string][] = [
  ["max-frame-bytes", "maxFrameBytes", "largest accepted frame, in bytes"],
  ["max-sessions", "maxSessions", "most sessions at once"],
  [
    "max-queue-bytes",
    "maxQueueBytes",
    "bytes queued for a session that does not read before it is dropped as a slow consumer; one subscription's snapshot at a time may go beyond",
  ],
  ["max-registrations", "maxRegistrations", "most instances per client"],
  ["max-subscriptions", "maxSubscriptions", "most subscriptions per session"],
];

/** The agent's own flags, in help order (the backend flags follow). */
const AGENT_FLAGS: readonly Flag[] = [
  {
    name: "listen",
    type: "string",
    value: "HOST:PORT",
    default: "127.0.0.1:1111",
    help:
      "where to accept WebSocket connections; port 0 picks a free one; [::1]:PORT for IPv6",
  },
  {
    name: "tls-cert",
    type: "string",
    value: "FILE",
    help:
      "certificate chain (PEM, the agent's certificate first) to serve https:// and wss:// only, with --tls-key; it must name the host clients use",
  },
  {
    name: "tls-key",
    type: "string",
    value: "FILE",
    help: "private key (PEM) of --tls-cert",
  },
  {
    name: "advertise-host",
    type: "string",
    value: "HOST",
    help:
      "host used for registrations that give only a port (default: this host's most public non-loopback address, else 127.0.0.1)",
  },
  {
    name: "backend",
    type: "string",
    value: "NAME",
    default: BACKENDS[0].name,
    help: `where registrations are kept: ${
      BACKENDS.map((b) => b.name).join(" or ")
    }, listed below`,
  },
  {
    name: "ttl",
    type: "string",
    value: "SECONDS",
    default: "10",
    help:
      "grace period before a lost session's instances go down; fractions accepted (e.g. 0.5)",
  },
  {
    name: "idle-timeout",
    type: "string",
    value: "SECONDS",
    default: "5",
    help:
      "drop a peer that answers no ping for this long; a silent peer is pinged after half of it; fractions accepted",
  },
  {
    name: "history",
    type: "string",
    value: "N",
    default: "50000",
    help: "changes kept for resumes with 'since'; at least 1",
  },
  {
    name: "history-bytes",
    type: "string",
    value: "N",
    default: String(DEFAULT_HISTORY_BYTES),
    help:
      "bytes of changes kept for resumes, estimated; the oldest go first beyond this or --history; at least 1",
  },
  {
    name: "watch-idle",
    type: "string",
    value: "SECONDS",
    default: String(DEFAULT_IDLE_MS / 1000),
    help:
      "keep watching a service this long after nothing on this agent uses it (a client that comes back finds it warm; one without instances: at most 5 s); fractions accepted",
  },
  {
    name: "max-watches",
    type: "string",
    value: "N",
    default: String(DEFAULT_MAX_SCOPES),
    help:
      "most services watched at once; the oldest idle ones make room, then subscribes and lookups of others fail (-32002); at least 1",
  },
  ...LIMIT_FLAGS.map(([name, limit, help]): Flag => ({
    name,
    type: "string",
    value: "N",
    default: String(DEFAULT_LIMITS[limit]),
    help: `${help}; at least ${LIMIT_MINIMUMS[limit].value}${
      LIMIT_MINIMUMS[limit].reason ? `, ${LIMIT_MINIMUMS[limit].reason}` : ""
    }`,
  })),
  {
    name: "allow-origin",
    type: "string",
    value: "URL",
    multiple: true,
    help:
      "let web pages from this origin (http(s)://host:port) connect, besides the agent's own dashboard at /; repeatable or comma-separated; * allows any page",
  },
  {
    name: "allow-host",
    type: "string",
    value: "NAME",
    multiple: true,
    help:
      "accept requests addressed to this host name (the Host header), besides IP addresses and localhost; others get 403, which stops DNS rebinding attacks; repeatable or comma-separated; * allows any name",
  },
  {
    name: "acl",
    type: "string",
    value: "FILE",
    help:
      "access rules (JSON): tokens, as SHA-256 hashes, and the services each may read, write or administer; read again on SIGHUP. Without it anyone who can reach the agent may do anything",
  },
  {
    name: "max-sessions-per-address",
    type: "string",
    value: "N",
    default: "1000",
    help: "most sessions from one remote address at once; at least 1",
  },
  {
    name: "check-allow",
    type: "string",
    value: "HOSTS",
    multiple: true,
    help:
      "let health checks target these hosts too, besides the instance's own host (and loopback for an instance on this agent's host); repeatable or comma-separated; * allows any host, which lets any client make the agent send requests anywhere it can reach",
  },
  {
    name: "log-level",
    type: "string",
    value: "LEVEL",
    default: "info",
    help: `lowest level logged: ${
      LOG_LEVELS.join(", ")
    }; info shows sessions opened and closed (remote address, client id), instances registered, unregistered, taken over and expired (service, addr, owner), the backend lost and back, refused requests and slow consumers dropped`,
  },
  {
    name: "log-format",
    type: "string",
    value: "text|json",
    default: "text",
    help:
      "how log records are written to standard error, one a line: text is 'TIME LEVEL CATEGORY MESSAGE key=value ...'; json is an object with time, level, category (discover.agent, .session, .registry, .backend, .dns or .checks), message and the fields",
  },
  {
    name: "metrics",
    type: "string",
    value: "on|off",
    default: "on",
    help:
      "count what the agent does and serve it at /metrics in the Prometheus text format; off: /metrics answers 404",
  },
  {
    name: "dns",
    type: "string",
    value: "HOST:PORT",
    help:
      "also answer DNS queries (UDP and TCP) on this address, e.g. 127.0.0.1:8600; off by default",
  },
  {
    name: "dns-domain",
    type: "string",
    value: "DOMAIN",
    default: "discover.",
    help: "the zone the DNS server answers for (SERVICE.service.DOMAIN)",
  },
  {
    name: "dns-ttl",
    type: "string",
    value: "SECONDS",
    default: "0",
    help: "TTL of DNS answers, a whole number of seconds",
  },
  { name: "help", short: "h", type: "boolean", help: "show this help" },
  { name: "version", short: "V", type: "boolean", help: "show the version" },
];

/** Column where the help text of a flag starts. */
const HELP_COLUMN = 28;

function formatFlag(flag: Flag): string {
  const label = `  ${flag.short ? `-${flag.short}, ` : ""}--${flag.name}${
    flag.value ? ` ${flag.value}` : ""
  }`;
  const text = flag.default === undefined
    ? flag.help
    : `${flag.help} (default ${flag.default})`;
  const lines = wrap(text, HELP_COLUMN);
  const pad = " ".repeat(HELP_COLUMN);
  const first = label.length + 2 <= HELP_COLUMN
    ? label.padEnd(HELP_COLUMN) + lines.shift()
    : label;
  return [first, ...lines.map((l) => pad + l)].join("\n");
}

/**
 * The `--help` text: the agent's flags, the backends, and each backend's
 * flags under its own heading, with their defaults.
 *
 * @param backends The backends offered.
 * @returns The help text.
 */
export function helpText(
  backends: readonly BackendDescriptor[] = BACKENDS,
): string {
  const column = Math.max(...backends.map((b) => b.name.length)) + 4;
  const sections = [
    `discoverd ${VERSION}: the discover agent`,
    "Usage: discoverd [options]",
    ["Options:", ...AGENT_FLAGS.map(formatFlag)].join("\n"),
    [
      "Backends (--backend NAME):",
      ...backends.map((b, i) =>
        [
          `  ${b.name.padEnd(column - 2)}`,
          wrap(`${b.summary}${i === 0 ? " (default)" : ""}`, column)
            .join(`\n${" ".repeat(column)}`),
        ].join("")
      ),
    ].join("\n"),
    ...backends.filter((b) => b.flags.length > 0 || b.notes?.length).map((
      b,
    ) =>
      [
        `${b.name} backend (with --backend ${b.name}):`,
        ...b.flags.map(formatFlag),
        ...(b.notes ?? []).map((note) =>
          wrap(note, 2).map((l) => `  ${l}`).join("\n")
        ),
      ].join("\n")
    ),
    "The protocol (JSON-RPC 2.0 over WebSocket) is described at /openrpc.json on\nthe listening port and in protocol/README.md.",
  ];
  return sections.join("\n\n") + "\n";
}

/**
 * The option table of the flag parser: the agent's flags and every
 * backend's. No defaults here, so that a flag given can be told from one
 * left out.
 *
 * @param backends The backends offered.
 * @returns The `parseArgs` options.
 * @throws {Error} When a backend's flag breaks the rule of
 *   `checkFlagNames`, or two flags share a name.
 */
export function optionTable(
  backends: readonly BackendDescriptor[] = BACKENDS,
): ParseArgsOptionsConfig {
  const options: ParseArgsOptionsConfig = {};
  const add = (flag: Flag, owner: string) => {
    if (Object.hasOwn(options, flag.name)) {
      throw new Error(`${owner} declares --${flag.name}, which is taken`);
    }
    options[flag.name] = {
      type: flag.type,
      ...(flag.short ? { short: flag.short } : {}),
      ...(flag.multiple ? { multiple: true } : {}),
    };
  };
  for (const flag of AGENT_FLAGS) add(flag, "the agent");
  for (const backend of backends) {
    checkFlagNames(backend);
    for (const flag of backend.flags) add(flag, `the ${backend.name} backend`);
  }
  return options;
}

/** What the command line asks for. */
export type Command =
  | { action: "help" }
  | { action: "version" }
  | {
    action: "run";
    /** Options of `startAgent`, but the backend, logger, signal and TLS. */
    options: Omit<AgentOptions, "backend" | "logger" | "signal" | "tls">;
    /** The certificate and key files, read when the agent starts. */
    tls?: { certFile: string; keyFile: string };
    /** The log level. */
    logLevel: LogLevel;
    /** The format of log lines. */
    logFormat: LogFormat;
    /** The backend selected. */
    backend: BackendDescriptor;
    /** Its flags' values, defaults applied. */
    backendValues: FlagValues;
  };

/** Parses `HOST:PORT` (`[v6]:PORT` for IPv6; an empty host is every interface). */
function parseListen(
  text: string,
  flag = "listen",
): { hostname: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):([0-9]{1,5})$/.exec(
    text,
  );
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new FlagError(
      `--${flag} must be HOST:PORT (e.g. 127.0.0.1:1111 or [::1]:1111): got '${text}'`,
    );
  }
  return { hostname: match[1] ?? (match[2] || "0.0.0.0"), port };
}

/** Each flag's value, or its default when it was not given. */
function withDefaults(
  flags: readonly Flag[],
  values: FlagValues,
): Record<string, string | boolean | string[] | undefined> {
  const out: Record<string, string | boolean | string[] | undefined> = {};
  for (const flag of flags) out[flag.name] = values[flag.name] ?? flag.default;
  return out;
}

/**
 * Reads the command line: every flag is checked here, so a mistake exits
 * before anything starts.
 *
 * @example Usage
 * ```ts ignore
 * import { parseCommandLine } from "./agent.ts";
 * const command = parseCommandLine(["--listen", "127.0.0.1:0"]);
 * console.log(command.action); // "run"
 * ```
 *
 * @param args The arguments, without the program.
 * @param backends The backends offered.
 * @returns What to do.
 * @throws {FlagError} On an unknown flag, a bad value, or a backend's flag
 *   without that backend.
 */
export function parseCommandLine(
  args: string[],
  backends: readonly BackendDescriptor[] = BACKENDS,
): Command {
  let values: FlagValues;
  try {
    // Only multiple string flags give lists.
    values = parseArgs({
      args,
      options: optionTable(backends),
      strict: true,
      allowPositionals: false,
    }).values as FlagValues;
  } catch (error) {
    if (!(error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      throw error;
    }
    throw new FlagError((error as Error).message);
  }
  if (values.help) return { action: "help" };
  if (values.version) return { action: "version" };
  const agent = withDefaults(AGENT_FLAGS, values);
  const name = agent.backend as string;
  const backend = backends.find((b) => b.name === name);
  if (!backend) {
    throw new FlagError(
      `--backend must be one of ${
        backends.map((b) => b.name).join(", ")
      }: got '${name}'`,
    );
  }
  for (const other of backends) {
    if (other === backend) continue;
    for (const flag of other.flags) {
      if (values[flag.name] !== undefined) {
        throw new FlagError(
          `--${flag.name} needs --backend ${other.name} (the backend is ${backend.name})`,
        );
      }
    }
  }
  const level = agent["log-level"] as string;
  if (!isLogLevel(level)) {
    throw new FlagError(
      `--log-level must be one of ${LOG_LEVELS.join(", ")}: got '${level}'`,
    );
  }
  const format = agent["log-format"] as string;
  if (!isLogFormat(format)) {
    throw new FlagError(
      `--log-format must be one of ${LOG_FORMATS.join(", ")}: got '${format}'`,
    );
  }
  const text = (flag: string) => agent[flag] as string;
  if (text("metrics") !== "on" && text("metrics") !== "off") {
    throw new FlagError(
      `--metrics must be on or off: got '${text("metrics")}'`,
    );
  }
  const certFile = agent["tls-cert"] as string | undefined;
  const keyFile = agent["tls-key"] as string | undefined;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new FlagError(
      `--tls-cert and --tls-key go together: give both to serve https:// and wss://, or neither (got only --${
        certFile === undefined ? "tls-key" : "tls-cert"
      })`,
    );
  }
  const dnsListen = agent.dns as string | undefined;
  if (
    dnsListen === undefined &&
    (values["dns-domain"] !== undefined || values["dns-ttl"] !== undefined)
  ) {
    throw new FlagError("--dns-domain and --dns-ttl need --dns HOST:PORT");
  }
  const dns = dnsListen === undefined ? undefined : {
    ...parseListen(dnsListen, "dns"),
    domain: text("dns-domain"),
    ttl: parseCount("dns-ttl", text("dns-ttl"), { min: 0 }),
  };
  const limits: Partial<Limits> = {};
  for (const [flag, limit] of LIMIT_FLAGS) {
    limits[limit] = parseCount(flag, text(flag), {
      min: LIMIT_MINIMUMS[limit].value,
      reason: LIMIT_MINIMUMS[limit].reason,
    });
  }
  return {
    action: "run",
    options: {
      ...parseListen(text("listen")),
      advertiseHost: agent["advertise-host"] as string | undefined,
      ttl: parseSeconds("ttl", text("ttl")),
      idleTimeout: parseSeconds("idle-timeout", text("idle-timeout")),
      historySize: parseCount("history", text("history")),
      historyBytes: parseCount("history-bytes", text("history-bytes")),
      watchIdle: parseSeconds("watch-idle", text("watch-idle")),
      maxWatches: parseCount("max-watches", text("max-watches")),
      limits,
      allowOrigins: agent["allow-origin"] as string[] | undefined,
      allowHosts: agent["allow-host"] as string[] | undefined,
      acl: agent.acl as string | undefined,
      maxSessionsPerAddress: parseCount(
        "max-sessions-per-address",
        text("max-sessions-per-address"),
        { min: 1 },
      ),
      checkAllow: (agent["check-allow"] as string[] | undefined)
        ?.flatMap((value) => value.split(","))
        .map((value) => value.trim())
        .filter((value) => value !== ""),
      metrics: text("metrics") === "on",
      ...(dns ? { dns } : {}),
    },
    ...(certFile !== undefined && keyFile !== undefined
      ? { tls: { certFile, keyFile } }
      : {}),
    logLevel: level,
    logFormat: format,
    backend,
    backendValues: withDefaults(backend.flags, values),
  };
}

/** Reads the file a flag names; the error names both when it cannot. */
async function readFlagFile(flag: string, path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new FlagError(
      `--${flag}: cannot read '${path}': ${(error as Error).message}`,
    );
  }
}

/** Reads and checks the certificate and key of `--tls-cert` and `--tls-key`. */
async function readTls(
  files: { certFile: string; keyFile: string },
): Promise<TlsPem> {
  const decoder = new TextDecoder();
  const cert = decoder.decode(await readFlagFile("tls-cert", files.certFile));
  const key = decoder.decode(await readFlagFile("tls-key", files.keyFile));
  try {
    return checkTls({ cert, key });
  } catch (error) {
    // The cause is the TLS library's reason.
    const reason = (error as Error).cause ?? error;
    throw new FlagError(
      `--tls-cert '${files.certFile}' and --tls-key '${files.keyFile}' must be a PEM certificate chain and the private key of its first certificate: ${
        (reason as Error).message
      }`,
    );
  }
}

async function main(args: string[]): Promise<number> {
  const command = parseCommandLine(args);
  if (command.action === "help") {
    console.log(helpText());
    return 0;
  }
  if (command.action === "version") {
    console.log(VERSION);
    return 0;
  }
  // Before the backend: a mistake exits before etcd is dialled.
  const tls = command.tls && await readTls(command.tls);
  const log = createLogger(command.logLevel, { format: command.logFormat });
  const backend = await command.backend.create(command.backendValues, {
    log: log.child("backend"),
    env: (name) => Deno.env.get(name),
    readFile: readFlagFile,
    ttlMs: command.options.ttl && command.options.ttl * 1000,
  });
  const controller = new AbortController();
  const agent = await startAgent({
    ...command.options,
    tls,
    backend,
    logger: log,
    signal: controller.signal,
  });
  // Handlers first: whoever reads the line below may signal at once.
  const stop = () => controller.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  if (command.options.acl !== undefined) {
    // The rules in force stay when the file does not load.
    Deno.addSignalListener("SIGHUP", () => {
      agent.reloadAcl().catch((error) =>
        log.child("agent").error(
          "the access rules could not be loaded again",
          { error },
        )
      );
    });
  }
  // One line says where the agent listens: the log's `listening` record
  // (standard error), or this one when the log level leaves it out.
  if (command.logLevel === "warn" || command.logLevel === "error") {
    console.log(`discoverd listening on ${agent.url}`);
  }
  await agent.finished;
  return 0;
}

/** What to print for an error that stops the agent at start, and the exit code. */
function failure(error: unknown): { message: string; code: number } {
  // Option checks of startAgent throw TypeError/RangeError: usage too.
  if (
    error instanceof FlagError || error instanceof TypeError ||
    error instanceof RangeError
  ) {
    return {
      message: `${error.message}\nRun 'discoverd --help' for the options.`,
      code: 2,
    };
  }
  if (error instanceof ListenError) {
    const hint = error.cause instanceof Deno.errors.AddrInUse
      ? "; is another agent running? choose another address with --listen HOST:PORT"
      : "; choose another address with --listen HOST:PORT";
    return { message: error.message + hint, code: 1 };
  }
  return { message: (error as Error)?.message ?? String(error), code: 1 };
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    const { message, code } = failure(error);
    console.error(`discoverd: ${message}`);
    Deno.exit(code);
  }
}
