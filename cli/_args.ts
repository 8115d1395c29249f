// Copyright the discover authors. BSD-3-Clause license.

/**
 * The command line of `discover`: the commands, their flags and arguments,
 * all checked here before anything connects (a mistake is a
 * {@linkcode UsageError}, exit code 2), and the help texts.
 *
 * Global flags (`--agent`, `--json`, `--help`) go before or after the
 * command; `register` takes the command to run after `--`.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { type Attrs, RpcError, type Target } from "../mod.ts";
import type { Check, HealthFilter } from "../protocol/types.ts";
import {
  ATTR_KEY_PATTERN,
  validateAddr,
  validateAttrs,
  validateCheck,
  validateHealthFilter,
  validateServiceName,
} from "../protocol/validate.ts";
import { wrap } from "../_help_text.ts";

/** The environment variable that names the agent when `--agent` is not given. */
export const AGENT_ENV = "DISCOVER_AGENT";

/**
 * The environment variable that holds the token to present to an agent
 * with access rules (an environment variable, not a flag: command lines
 * are visible to every user of the host).
 */
export const TOKEN_ENV = "DISCOVER_TOKEN";

/** The agent used without `--agent` and {@linkcode AGENT_ENV}. */
export const DEFAULT_AGENT = "ws://127.0.0.1:1111";

/**
 * Milliseconds to open the connection to the agent, and milliseconds each
 * request may take: past either, the command fails with exit code 1.
 */
export const TIMEOUT_MS = 5000;

/** Exit codes of `discover`. */
export const ExitCode = {
  /** The command did what it was asked. */
  Ok: 0,
  /** The agent could not be reached, or refused the request. */
  Failure: 1,
  /** The command line is wrong: unknown command or flag, bad value. */
  Usage: 2,
} as const;

/**
 * A mistake on the command line: the message names the bad value and the
 * rule it broke; `help` is the command whose help to point to.
 *
 * @example Usage
 * ```ts
 * import { UsageError } from "./_args.ts";
 * const error = new UsageError("unknown command 'lst'", "discover");
 * console.log(error.message, error.help);
 * ```
 */
export class UsageError extends Error {
  /** The command line that shows the relevant help, e.g. `discover ls --help`. */
  readonly help: string;

  /**
   * Creates the error.
   *
   * @param message What is wrong.
   * @param help The command whose help to point to (`discover`, `discover ls`).
   */
  constructor(message: string, help = "discover") {
    super(message);
    this.name = "UsageError";
    this.help = `${help} --help`;
  }
}

/** One flag. */
interface FlagSpec {
  readonly name: string;
  readonly short?: string;
  readonly type: "string" | "boolean";
  readonly multiple?: boolean;
  /** The placeholder of its value, in help. */
  readonly value?: string;
  readonly help: string;
}

/** The names of the commands. */
export type CommandName =
  | "services"
  | "ls"
  | "watch"
  | "status"
  | "register"
  | "unregister";

/** One command. */
interface CommandSpec {
  readonly name: CommandName;
  /** Its arguments, in the usage line. */
  readonly usage: string;
  /** One line, for the command list. */
  readonly summary: string;
  /** Paragraphs of its help. */
  readonly details: readonly string[];
  /** Names of its positional arguments, all required. */
  readonly positionals: readonly string[];
  /** Its own flags (the global ones come on top). */
  readonly flags: readonly FlagSpec[];
  /** Whether it takes `-- COMMAND [ARGS...]`. */
  readonly runs?: boolean;
  readonly examples: readonly string[];
}

const GLOBAL_FLAGS: readonly FlagSpec[] = [
  {
    name: "agent",
    type: "string",
    value: "URL",
    help:
      `the agent's WebSocket URL (default: $${AGENT_ENV}, else ${DEFAULT_AGENT})`,
  },
  {
    name: "json",
    type: "boolean",
    help:
      "print JSON: one object per line for watch, one array or object otherwise",
  },
  { name: "help", short: "h", type: "boolean", help: "show help" },
];

const FILTER_FLAG: FlagSpec = {
  name: "filter",
  type: "string",
  multiple: true,
  value: "KEY=VALUE",
  help:
    "only instances whose attribute KEY is VALUE; repeatable, every one must match",
};

const HEALTH_FLAG: FlagSpec = {
  name: "health",
  type: "string",
  value: "passing|any",
  help:
    "passing (the default): only the instances able to serve; any: critical ones too",
};

/** The flags of `register` that give the instance a health check. */
const CHECK_FLAGS: readonly FlagSpec[] = [
  {
    name: "check-http",
    type: "string",
    value: "URL",
    help:
      "the agent checks the instance with a GET of URL (http:// or https://): a 2xx status passes, anything else fails",
  },
  {
    name: "check-tcp",
    type: "string",
    value: "HOST:PORT",
    help:
      "the agent checks the instance by opening a TCP connection to HOST:PORT: a connection passes",
  },
  {
    name: "check-interval",
    type: "string",
    value: "SECONDS",
    help: "seconds between checks (fractions allowed; default 5)",
  },
  {
    name: "check-timeout",
    type: "string",
    value: "SECONDS",
    help:
      "seconds a check may take, less than the interval (default 2, or half the interval when that is shorter)",
  },
];

const COMMANDS: readonly CommandSpec[] = [
  {
    name: "services",
    usage: "services",
    summary: "every service that has instances, with their number",
    details: [
      "Lists every service that has at least one instance, sorted by name, with its number of instances.",
    ],
    positionals: [],
    flags: [],
    examples: ["discover services", "discover services --json"],
  },
  {
    name: "ls",
    usage: "ls SERVICE [--filter KEY=VALUE ...] [--health passing|any]",
    summary: "the instances of SERVICE",
    details: [
      "Lists the instances of SERVICE, sorted by address: the passing ones, or with --health any the critical ones too (an instance whose health check fails).",
      "On a terminal: address, health ('passing', or 'critical' and why in brackets), age, owner, client and attributes under a header. OWNER is who holds the instance: 'c:' and 8 characters standing for a client (never its id), or 's:AGENT:SESSION' for a session without a client id, with the name of its token in brackets when the agent knows it. CLIENT is what the agent knows of that owner's connection: 'connected', 'lost (goes in 12s)' (its connection ended without closing: the instance stays for the agent's TTL unless the client comes back; 'discover unregister' removes it at once), or 'elsewhere' (held through another agent).",
      "Otherwise one line per instance, without a header: ADDR<TAB>ATTRS<TAB>HEALTH<TAB>NOTE<TAB>OWNER<TAB>CLIENT, where HEALTH is passing or critical, NOTE says why it is critical (empty when passing), and CLIENT is connected, lost or elsewhere. With --json, an array of the instances as the agent reports them (id, service, addr, attrs, revision, registeredAt, created, health, and note when critical), each with owner and client, expires (with lost: when it goes, in milliseconds since the epoch) and token when known.",
    ],
    positionals: ["SERVICE"],
    flags: [FILTER_FLAG, HEALTH_FLAG],
    examples: [
      "discover ls cache",
      "discover ls cache --filter zone=b --json",
      "discover ls web --health any",
    ],
  },
  {
    name: "watch",
    usage: "watch SERVICE [--filter KEY=VALUE ...] [--health passing|any]",
    summary: "print the changes of SERVICE as they happen, until Ctrl-C",
    details: [
      "Prints one line per instance of SERVICE (as 'up') and a 'leader' line naming its leader, then one line per change: 'up' (an instance joined), 'update' (its attributes changed), 'down' (it left) or 'leader' (another instance leads), until Ctrl-C or SIGTERM (exit code 0). By default only passing instances count: one whose health check fails leaves ('down', with the reason) and joins again ('up') when it passes. With --health any every instance counts, and a change of health is an 'update'.",
      "The leader is the instance of the set registered first (the lowest created revision, ties broken by address), as every client and agent derives it: when it leaves, the next oldest leads, after its 'down' line. When the last instance leaves there is no leader: a 'leader' line without an instance.",
      'On a terminal a line is the time, the kind, the address, the health (\'passing\', or \'critical\' and why in brackets) and the attributes (\'(none)\' for no leader). Otherwise it is KIND<TAB>ADDR<TAB>ATTRS<TAB>HEALTH<TAB>NOTE (NOTE empty when passing; every field but KIND empty for no leader). With --json, one object a line: {"kind", "revision", "instance"} ("instance": null for no leader).',
      "When the connection to the agent is lost, discover says so on standard error and reconnects by itself; it then prints what changed meanwhile, also across a restart of the agent.",
    ],
    positionals: ["SERVICE"],
    flags: [FILTER_FLAG, HEALTH_FLAG],
    examples: [
      "discover watch cache",
      "discover watch cache --filter zone=b --json",
      "discover watch web --health any",
    ],
  },
  {
    name: "status",
    usage: "status",
    summary: "the agent's version, backend, revision, TTL and limits",
    details: [
      "Prints the agent's status, one field a line (nested fields as limits.maxFrameBytes): version, backend and whether the agent reaches it (connected), revision and epoch, advertised host, TTL (seconds) and limits. With --json, the status as one object.",
    ],
    positionals: [],
    flags: [],
    examples: ["discover status", "discover status --json"],
  },
  {
    name: "register",
    usage:
      "register SERVICE PORT|HOST:PORT [--attr KEY=VALUE ...] [--check-http URL | --check-tcp HOST:PORT] [-- COMMAND [ARGS...]]",
    summary:
      "register an instance until Ctrl-C, or while COMMAND runs; HOST defaults to the agent's advertised host",
    details: [
      "Registers an instance of SERVICE at PORT on the agent's advertised host, or at HOST:PORT, prints it ('registered SERVICE ADDR ATTRS', or the instance as a JSON object with --json), and keeps it registered until Ctrl-C or SIGTERM, which unregister it (exit code 0). After a lost connection discover reconnects and registers it again by itself.",
      "With -- COMMAND, discover registers the instance, then runs COMMAND (standard input and output are COMMAND's; discover's own notices go to standard error), passes SIGINT and SIGTERM on to it, unregisters the instance as soon as it exits, and exits with its exit code: 128 plus the signal number when a signal killed it (137 for SIGKILL), 127 when COMMAND is not found, 126 when it cannot be run. A registration the agent refuses exits 1 without running COMMAND.",
      "With --check-http URL or --check-tcp HOST:PORT (one of them), the agent checks the instance every --check-interval seconds (default 5), each check given --check-timeout seconds (default 2). The agent runs the check, not discover: from the agent's host, for as long as the instance is registered. The instance starts critical, left out of what others list and watch by default, until its first check passes; a failed check makes it critical again, with the reason (HTTP 500, connection refused, timeout...). The agent checks only the instance's own host, or loopback for an instance on the agent's host, unless it was started with --check-allow: a check it refuses exits 1 with its reason.",
      "Together with -- COMMAND this is the sidecar that makes a program in any language a health-checked instance: discover registers it with its check, runs it, and unregisters it when it exits.",
    ],
    positionals: ["SERVICE", "PORT|HOST:PORT"],
    flags: [{
      name: "attr",
      type: "string",
      multiple: true,
      value: "KEY=VALUE",
      help: "an attribute of the instance; repeatable",
    }, ...CHECK_FLAGS],
    runs: true,
    examples: [
      "discover register cache 6379 --attr zone=b",
      "discover register web 10.0.0.7:8080 -- ./server --port 8080",
      "discover register web 8080 --check-http http://127.0.0.1:8080/healthz -- ./server --port 8080",
      "discover register db 5432 --check-tcp 127.0.0.1:5432 --check-interval 10",
    ],
  },
  {
    name: "unregister",
    usage: "unregister SERVICE PORT|HOST:PORT",
    summary: "remove an instance that no connected client holds",
    details: [
      'Removes the instance of SERVICE at PORT on the agent\'s advertised host, or at HOST:PORT, and prints \'unregistered SERVICE\' and the PORT or HOST:PORT given (with --json, {"service", "addr" or "port", "removed": true}). The agent removes only an instance no connected client holds: one whose client was lost and that waits out the agent\'s TTL (a crashed process, say). An instance of a connected client is refused (exit code 1): stop that client instead. No such instance: exit code 1.',
    ],
    positionals: ["SERVICE", "PORT|HOST:PORT"],
    flags: [],
    examples: ["discover unregister cache 10.0.0.7:6379"],
  },
];

const NAMES = COMMANDS.map((c) => c.name);

function specOf(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** What every command but `help` gets. */
export interface Globals {
  /** The agent's URL. */
  readonly agent: string;
  /** Whether to print JSON. */
  readonly json: boolean;
  /** The token to present ({@linkcode TOKEN_ENV}), if any. */
  readonly token?: string;
}

/** What the command line asks for. */
export type Command =
  | { readonly name: "help"; readonly text: string }
  | (Globals & { readonly name: "services" | "status" })
  | (Globals & {
    readonly name: "ls" | "watch";
    readonly service: string;
    /** The attribute filter; empty: every instance. */
    readonly filter: Attrs;
    /** Which instances by health: the passing ones, or any. */
    readonly health: HealthFilter;
  })
  | (Globals & {
    readonly name: "register";
    readonly service: string;
    readonly target: Target;
    readonly attrs: Attrs;
    /** The health check the agent runs for the instance. */
    readonly check?: Check;
    /** The command to run while registered, program first. */
    readonly run?: readonly string[];
  })
  | (Globals & {
    readonly name: "unregister";
    readonly service: string;
    readonly target: Target;
  });

/** Options of {@linkcode parseCommandLine}. */
export interface ParseOptions {
  /**
   * Reads an environment variable ({@linkcode AGENT_ENV}).
   *
   * @default {() => undefined}
   */
  env?: (name: string) => string | undefined;
}

/** Where the command word is in `args`, or -1. */
function commandIndex(args: readonly string[]): number {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return -1;
    if (arg === "--agent") {
      i++; // its value
      continue;
    }
    if (!arg.startsWith("-") || arg === "-") return i;
  }
  return -1;
}

function optionTable(flags: readonly FlagSpec[]): ParseArgsOptionsConfig {
  const table: ParseArgsOptionsConfig = {};
  for (const flag of flags) {
    table[flag.name] = {
      type: flag.type,
      ...(flag.short ? { short: flag.short } : {}),
      ...(flag.multiple ? { multiple: true } : {}),
    };
  }
  return table;
}

function flagList(flags: readonly FlagSpec[]): string {
  return flags.map((f) => `--${f.name}`).join(", ");
}

/** A `parseArgs` error as a {@linkcode UsageError} that names the flag and the rule. */
function usageFromParseArgs(
  error: unknown,
  spec: CommandSpec | undefined,
  flags: readonly FlagSpec[],
): UsageError {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message;
  const where = spec ? `discover ${spec.name}` : "discover";
  const raw = /'(-[^' ]*)/.exec(message)?.[1] ?? "";
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const name = raw.replace(/^-+/, "").replace(/=.*$/, "");
    const owner = COMMANDS.find((c) => c.flags.some((f) => f.name === name));
    const rule = owner && owner !== spec
      ? `it is a flag of 'discover ${owner.name}'`
      : `the flags of '${where}' are ${flagList(flags)}`;
    const hint = spec?.runs
      ? `; a flag of the command to run goes after '--': discover ${spec.name} SERVICE PORT -- COMMAND ${raw}`
      : "";
    return new UsageError(`unknown flag '${raw}': ${rule}${hint}`, where);
  }
  const flag = flags.find((f) =>
    raw === `--${f.name}` || raw === `-${f.short}`
  );
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" && flag) {
    if (flag.type === "boolean") {
      return new UsageError(`--${flag.name} takes no value`, where);
    }
    if (/argument missing/.test(message)) {
      return new UsageError(
        `--${flag.name} needs a value: --${flag.name} ${flag.value}`,
        where,
      );
    }
    return new UsageError(
      `the value of --${flag.name} starts with '-': write it as --${flag.name}=VALUE`,
      where,
    );
  }
  if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
    return new UsageError(message, where);
  }
  throw error;
}

/** The agent's URL from `--agent`, the environment, or the default. */
function agentUrl(
  given: string | undefined,
  env: (name: string) => string | undefined,
  where: string,
): string {
  let source = "--agent";
  let text = given;
  if (text === undefined) {
    source = `$${AGENT_ENV}`;
    text = env(AGENT_ENV) || undefined;
  }
  if (text === undefined) return DEFAULT_AGENT;
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch { /* reported below */ }
  if (!url || (url.protocol !== "ws:" && url.protocol !== "wss:")) {
    throw new UsageError(
      `${source} must be a ws:// or wss:// URL such as ${DEFAULT_AGENT}: got '${text}'`,
      where,
    );
  }
  if (url.hash !== "") {
    throw new UsageError(
      `${source} must not have a fragment (#...): got '${text}'`,
      where,
    );
  }
  return text;
}

/** Options of {@linkcode parsePairs} and {@linkcode parseTarget}. */
export interface WhereOptions {
  /**
   * The command, for the help pointer of an error (`discover ls`).
   *
   * @default {"discover"}
   */
  where?: string;
}

/**
 * Reads `KEY=VALUE` pairs of a repeatable flag into attributes, checked
 * against the protocol's rules (keys, value lengths, total size).
 *
 * @example Usage
 * ```ts
 * import { parsePairs } from "./_args.ts";
 * parsePairs("attr", ["zone=b", "role=primary"], { where: "discover register" });
 * // { zone: "b", role: "primary" }
 * ```
 *
 * @param flag The flag's name, for messages (`attr`, `filter`).
 * @param pairs The values given.
 * @param options The command, for the help pointer.
 * @returns The attributes.
 * @throws {UsageError} When a pair is not `KEY=VALUE`, a key breaks the
 *   key rule or is given twice, or the attributes break a limit.
 */
export function parsePairs(
  flag: string,
  pairs: readonly string[],
  options: WhereOptions = {},
): Attrs {
  const where = options.where ?? "discover";
  const attrs: Attrs = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      throw new UsageError(
        `--${flag} must be KEY=VALUE (e.g. --${flag} zone=b): got '${pair}'`,
        where,
      );
    }
    const key = pair.slice(0, eq);
    if (!ATTR_KEY_PATTERN.test(key)) {
      throw new UsageError(
        `--${flag} key '${key}' must be 1 to 64 characters of A-Z a-z 0-9 . _ - : starting with a letter or digit (in '${pair}')`,
        where,
      );
    }
    if (Object.hasOwn(attrs, key)) {
      throw new UsageError(
        `--${flag} gives key '${key}' twice ('${key}=${
          attrs[key]
        }' and '${pair}'): give each key once`,
        where,
      );
    }
    attrs[key] = pair.slice(eq + 1);
  }
  try {
    return validateAttrs(attrs, `--${flag}`);
  } catch (error) {
    throw new UsageError((error as Error).message, where);
  }
}

/**
 * Reads `PORT` (a port on the agent's advertised host) or `HOST:PORT`.
 *
 * @example Usage
 * ```ts
 * import { parseTarget } from "./_args.ts";
 * parseTarget("8080"); // 8080
 * parseTarget("Cache-1.example:6379"); // "cache-1.example:6379"
 * ```
 *
 * @param text The argument.
 * @param options The command, for the help pointer.
 * @returns The port, or the canonical address.
 * @throws {UsageError} When it is neither.
 */
export function parseTarget(
  text: string,
  options: WhereOptions = {},
): Target {
  const where = options.where ?? "discover";
  if (/^[0-9]+$/.test(text)) {
    const port = Number(text);
    if (port >= 1 && port <= 65535) return port;
    throw new UsageError(
      `PORT must be from 1 to 65535: got '${text}'`,
      where,
    );
  }
  try {
    return validateAddr(text, "HOST:PORT");
  } catch {
    throw new UsageError(
      `PORT|HOST:PORT must be a port from 1 to 65535, or HOST:PORT with a hostname, an IPv4 address or a bracketed IPv6 address as HOST: got '${text}'`,
      where,
    );
  }
}

/** The flags that set each field of a check, for messages. */
const CHECK_FIELD_FLAGS: Readonly<Record<string, string>> = {
  http: "--check-http",
  tcp: "--check-tcp",
  interval: "--check-interval",
  timeout: "--check-timeout",
};

/**
 * The protocol's refusal of a check or a health filter as a
 * {@linkcode UsageError}: the same rule, with the flags' names for the
 * fields (`'check.interval'` reads `--check-interval`).
 */
function usageFromRpc(error: unknown, where: string): UsageError {
  if (!(error instanceof RpcError)) throw error;
  const message = error.message
    .replace(
      /'check\.([a-z]+)'/g,
      (all, field: string) => CHECK_FIELD_FLAGS[field] ?? all,
    )
    .replace(
      /'(interval|timeout)'/g,
      (_, field: string) => CHECK_FIELD_FLAGS[field],
    )
    .replace(/^'health'/, "--health")
    .replace(/: got number (\S+)$/, ": got '$1'");
  return new UsageError(message, where);
}

/**
 * Reads `--health`: `passing` (the default) or `any`.
 *
 * @example Usage
 * ```ts
 * import { parseHealth } from "./_args.ts";
 * parseHealth(undefined); // "passing"
 * parseHealth("any"); // "any"
 * ```
 *
 * @param text The value given, if any.
 * @param options The command, for the help pointer.
 * @returns The health filter.
 * @throws {UsageError} When it is neither `passing` nor `any`.
 */
export function parseHealth(
  text: string | undefined,
  options: WhereOptions = {},
): HealthFilter {
  try {
    return validateHealthFilter(text) ?? "passing";
  } catch (error) {
    throw usageFromRpc(error, options.where ?? "discover");
  }
}

/** The check flags of `register`, as given (each may be absent). */
export interface CheckFlags {
  /** `--check-http URL`. */
  http?: string;
  /** `--check-tcp HOST:PORT`. */
  tcp?: string;
  /** `--check-interval SECONDS`. */
  interval?: string;
  /** `--check-timeout SECONDS`. */
  timeout?: string;
}

/** A decimal number of seconds, as a number; any other text stays text. */
function secondsOf(text: string | undefined): number | string | undefined {
  return text !== undefined && /^-?([0-9]+\.?[0-9]*|\.[0-9]+)$/.test(text)
    ? Number(text)
    : text;
}

/**
 * Reads the check flags of `register` into the check the agent runs,
 * checked against the protocol's rules (the ones `register` applies).
 *
 * @example Usage
 * ```ts
 * import { parseCheck } from "./_args.ts";
 * parseCheck({ http: "http://127.0.0.1:8080/healthz", interval: "2" });
 * // { http: "http://127.0.0.1:8080/healthz", interval: 2 }
 * parseCheck({}); // undefined: no check
 * ```
 *
 * @param flags The values of the flags given.
 * @param options The command, for the help pointer.
 * @returns The check (its target canonical, the times given), or
 *   `undefined` without `--check-http` and `--check-tcp`.
 * @throws {UsageError} When both targets are given, a time is given
 *   without a target, or a value breaks the protocol's rule.
 */
export function parseCheck(
  flags: CheckFlags,
  options: WhereOptions = {},
): Check | undefined {
  const where = options.where ?? "discover";
  const { http, tcp } = flags;
  if (http !== undefined && tcp !== undefined) {
    throw new UsageError(
      `give one check, --check-http URL or --check-tcp HOST:PORT: got both (--check-http '${http}' and --check-tcp '${tcp}')`,
      where,
    );
  }
  if (http === undefined && tcp === undefined) {
    const orphan = (["interval", "timeout"] as const).find((name) =>
      flags[name] !== undefined
    );
    if (orphan === undefined) return undefined;
    throw new UsageError(
      `${
        CHECK_FIELD_FLAGS[orphan]
      } is only for a health check: give --check-http URL or --check-tcp HOST:PORT too`,
      where,
    );
  }
  const interval = secondsOf(flags.interval);
  const timeout = secondsOf(flags.timeout);
  let checked;
  try {
    checked = validateCheck({
      ...(http !== undefined ? { http } : { tcp }),
      ...(interval !== undefined ? { interval } : {}),
      ...(timeout !== undefined ? { timeout } : {}),
    });
  } catch (error) {
    throw usageFromRpc(error, where);
  }
  return {
    ...(checked.http !== undefined
      ? { http: checked.http }
      : { tcp: checked.tcp }),
    ...(interval !== undefined ? { interval: checked.interval } : {}),
    ...(timeout !== undefined ? { timeout: checked.timeout } : {}),
  };
}

function parseService(text: string, where: string): string {
  try {
    return validateServiceName(text, "SERVICE");
  } catch (error) {
    throw new UsageError((error as Error).message, where);
  }
}

/**
 * Reads the command line. Every argument is checked here, so that a
 * mistake exits 2 before anything connects. A leading `--` is skipped:
 * `deno task cli -- ARGS` passes it on.
 *
 * @example Usage
 * ```ts
 * import { parseCommandLine } from "./_args.ts";
 * const command = parseCommandLine(["ls", "cache", "--filter", "zone=b"]);
 * console.log(command.name); // "ls"
 * ```
 *
 * @param args The arguments, without the program.
 * @param options Where environment variables come from.
 * @returns What to do.
 * @throws {UsageError} On an unknown command or flag, a missing or extra
 *   argument, or a bad value.
 */
export function parseCommandLine(
  args: readonly string[],
  options: ParseOptions = {},
): Command {
  const env = options.env ?? (() => undefined);
  // `deno task cli -- ARGS` passes the `--` on.
  if (args[0] === "--") args = args.slice(1);
  const at = commandIndex(args);
  const word = at === -1 ? undefined : args[at];
  const rest = at === -1 ? [...args] : [
    ...args.slice(0, at),
    ...args.slice(at + 1),
  ];
  if (word === "help") return helpCommand(rest);
  const spec = word === undefined ? undefined : specOf(word);
  if (word !== undefined && spec === undefined) {
    throw new UsageError(
      `unknown command '${word}': the commands are ${NAMES.join(", ")}`,
    );
  }
  const where = spec ? `discover ${spec.name}` : "discover";
  const flags = [...(spec?.flags ?? []), ...GLOBAL_FLAGS];
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: optionTable(flags),
      strict: true,
      allowPositionals: true,
      tokens: true,
    });
  } catch (error) {
    throw usageFromParseArgs(error, spec, flags);
  }
  const { values, tokens } = parsed;
  if (values.help) return { name: "help", text: helpText(spec?.name) };
  if (spec === undefined) {
    throw new UsageError(
      `a command is needed: one of ${NAMES.join(", ")}`,
    );
  }
  // Positionals before `--` are the command's; after it, what to run.
  const terminator = tokens.find((t) => t.kind === "option-terminator");
  const positionals = tokens
    .filter((t) =>
      t.kind === "positional" &&
      (terminator === undefined || t.index < terminator.index)
    )
    .map((t) => (t as { value: string }).value);
  const run = tokens
    .filter((t) => terminator !== undefined && t.index > terminator.index)
    .map((t) => (t as { value: string }).value);
  const usage = `usage: discover ${spec.usage}`;
  if (positionals.length < spec.positionals.length) {
    const missing = spec.positionals.slice(positionals.length).join(" ");
    throw new UsageError(`${spec.name} needs ${missing}; ${usage}`, where);
  }
  if (positionals.length > spec.positionals.length) {
    const extra = positionals[spec.positionals.length];
    const hint = spec.runs
      ? `; to run a command, put it after '--': discover ${spec.name} ${
        positionals.slice(0, spec.positionals.length).join(" ")
      } -- ${positionals.slice(spec.positionals.length).join(" ")}`
      : `; ${usage}`;
    throw new UsageError(
      `unexpected argument '${extra}' for ${spec.name}${hint}`,
      where,
    );
  }
  if (terminator !== undefined && spec.runs && run.length === 0) {
    throw new UsageError(
      `'--' must be followed by the command to run; ${usage}`,
      where,
    );
  }
  if (terminator !== undefined && !spec.runs && run.length > 0) {
    throw new UsageError(
      `unexpected argument '${run[0]}' for ${spec.name}; ${usage}`,
      where,
    );
  }
  const token = env(TOKEN_ENV) || undefined;
  const globals: Globals = {
    agent: agentUrl(values.agent as string | undefined, env, where),
    json: values.json === true,
    ...(token === undefined ? {} : { token }),
  };
  const list = (name: string) => (values[name] as string[] | undefined) ?? [];
  switch (spec.name) {
    case "services":
    case "status":
      return { ...globals, name: spec.name };
    case "ls":
    case "watch":
      return {
        ...globals,
        name: spec.name,
        service: parseService(positionals[0], where),
        filter: parsePairs("filter", list("filter"), { where }),
        health: parseHealth(values.health as string | undefined, { where }),
      };
    case "register": {
      const check = parseCheck({
        http: values["check-http"] as string | undefined,
        tcp: values["check-tcp"] as string | undefined,
        interval: values["check-interval"] as string | undefined,
        timeout: values["check-timeout"] as string | undefined,
      }, { where });
      return {
        ...globals,
        name: "register",
        service: parseService(positionals[0], where),
        target: parseTarget(positionals[1], { where }),
        attrs: parsePairs("attr", list("attr"), { where }),
        ...(check ? { check } : {}),
        ...(run.length > 0 ? { run } : {}),
      };
    }
    case "unregister":
      return {
        ...globals,
        name: "unregister",
        service: parseService(positionals[0], where),
        target: parseTarget(positionals[1], { where }),
      };
  }
}

/** `discover help [COMMAND]`. */
function helpCommand(rest: readonly string[]): Command {
  const topic = rest.filter((arg, i) =>
    !arg.startsWith("-") && rest[i - 1] !== "--agent"
  );
  if (topic.length > 1) {
    throw new UsageError(
      `help takes at most one command: got '${topic.join(" ")}'`,
    );
  }
  if (topic.length === 1 && specOf(topic[0]) === undefined) {
    throw new UsageError(
      `unknown command '${topic[0]}': the commands are ${NAMES.join(", ")}`,
    );
  }
  return { name: "help", text: helpText(topic[0] as CommandName | undefined) };
}

/** Column where the help text of a flag or command starts. */
const HELP_COLUMN = 24;

/** A label and its text, the text in a column (below the label when it is long). */
function entry(label: string, text: string): string {
  const pad = " ".repeat(HELP_COLUMN);
  const lines = wrap(text, HELP_COLUMN);
  if (label.length + 2 <= HELP_COLUMN) {
    return [label.padEnd(HELP_COLUMN) + lines[0], ...lines.slice(1)]
      .join(`\n${pad}`);
  }
  return [label, ...lines.map((l) => pad + l)].join("\n");
}

function flagEntry(flag: FlagSpec): string {
  const names = `${flag.short ? `-${flag.short}, ` : ""}--${flag.name}`;
  return entry(
    `  ${names}${flag.value ? ` ${flag.value}` : ""}`,
    flag.help,
  );
}

const EXIT_CODES = [
  "Exit codes: 0 done; 1 failure (the agent cannot be reached, or refused the request); 2 usage error (unknown command or flag, bad KEY=VALUE, bad port, bad check).",
  `Connecting to the agent gives up after ${
    TIMEOUT_MS / 1000
  } s, and so does each request.`,
  `An agent with access rules (--acl) wants a token: set $${TOKEN_ENV} (an environment variable, not a flag, so that other users of the host cannot read it in the process list).`,
];

/**
 * The help of one command, or the overview without one.
 *
 * @example Usage
 * ```ts
 * import { helpText } from "./_args.ts";
 * console.log(helpText("ls"));
 * ```
 *
 * @param name The command, or `undefined` for the overview.
 * @returns The text, ending with a newline.
 */
export function helpText(name?: CommandName): string {
  const spec = name === undefined ? undefined : specOf(name);
  const paragraphs = (texts: readonly string[]) =>
    texts.map((t) => wrap(t, 0).join("\n"));
  if (spec === undefined) {
    return [
      "discover: find and register services through a discover agent",
      "Usage: discover [--agent URL] [--json] COMMAND [ARGS...]",
      [
        "Commands:",
        ...COMMANDS.map((c) => entry(`  ${c.usage}`, c.summary)),
      ].join("\n"),
      [
        "Flags of every command (before or after it):",
        ...GLOBAL_FLAGS.map(flagEntry),
      ].join("\n"),
      ...paragraphs([
        "On a terminal, lists are aligned tables; otherwise they are lines of tab-separated fields without a header, and attributes are KEY=VALUE separated by spaces, a VALUE quoted as a JSON string when it holds other characters than A-Z a-z 0-9 . _ : / @ % + , -.",
        ...EXIT_CODES,
        "Run 'discover COMMAND --help' for the arguments of a command.",
      ]),
    ].join("\n\n") + "\n";
  }
  return [
    `Usage: discover ${spec.usage}`,
    ...paragraphs(spec.details),
    [
      "Flags:",
      ...[...spec.flags, ...GLOBAL_FLAGS].map(flagEntry),
    ].join("\n"),
    ["Examples:", ...spec.examples.map((e) => `  ${e}`)].join("\n"),
    ...paragraphs(EXIT_CODES),
  ].join("\n\n") + "\n";
}
