// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's logs, on [LogTape](https://logtape.org/): every record is a
 * LogTape `LogRecord` with a category per layer (`discover.agent`,
 * `discover.session`, `discover.registry`, `discover.backend`,
 * `discover.dns`, `discover.checks`), one line each on standard error,
 * as text or JSON:
 *
 * ```text
 * 2025-01-01T00:00:00.000Z INFO discover.registry instance registered service=web addr=10.0.0.1:80 owner=c:api
 * {"time":"2025-01-01T00:00:00.000Z","level":"info","category":"discover.registry","message":"instance registered","service":"web","addr":"10.0.0.1:80","owner":"c:api"}
 * ```
 *
 * A program that embeds the agent and configures LogTape itself passes
 * {@linkcode logtapeLogger} instead: the records then go wherever its
 * configuration sends the `discover` category.
 *
 * @module
 */

import {
  compareLogLevel,
  getLogger,
  type LogLevel as LogtapeLevel,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";

/** Log levels, from the most verbose. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Formats of log lines: `text` for people, `json` (one object per line) for programs. */
export const LOG_FORMATS = ["text", "json"] as const;

/** A format of log lines. */
export type LogFormat = typeof LOG_FORMATS[number];

/** The category every agent record is under. */
export const LOG_CATEGORY: readonly string[] = ["discover"];

/** Structured fields of a log record. */
export type LogFields = Record<string, unknown>;

/** A levelled logger. */
export interface Logger {
  /** Details for debugging. */
  debug(message: string, fields?: LogFields): void;
  /** Normal operation. */
  info(message: string, fields?: LogFields): void;
  /** Something went wrong and was handled. */
  warn(message: string, fields?: LogFields): void;
  /** Something went wrong and was not handled. */
  error(message: string, fields?: LogFields): void;
  /**
   * A logger for a layer under this one's category, writing to the same
   * place (see {@linkcode childLogger}).
   */
  child?(category: string): Logger;
}

/** A logger with a category, as {@linkcode createLogger} makes them. */
export interface CategoryLogger extends Logger {
  /** Its category, e.g. `["discover", "registry"]`. */
  readonly category: readonly string[];
  /** A logger for `[...category, name]`, writing to the same place. */
  child(category: string): CategoryLogger;
}

/**
 * What a log line is made of: the parts of a LogTape `LogRecord` that
 * {@linkcode textFormatter} and {@linkcode jsonFormatter} read (any
 * `LogRecord` is one).
 */
export interface LineRecord {
  /** The category, e.g. `["discover", "registry"]`. */
  readonly category: readonly string[];
  /** The LogTape level: `debug`, `info`, `warning`, `error` (or `trace`, `fatal`). */
  readonly level: string;
  /** The message: text, and values between (a LogTape message template's). */
  readonly message: readonly unknown[];
  /** When, in milliseconds since the epoch. */
  readonly timestamp: number;
  /** The fields. */
  readonly properties: Record<string, unknown>;
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /**
   * The format of lines.
   *
   * @default {"text"}
   */
  format?: LogFormat;
  /**
   * Where lines go, each without its line feed.
   *
   * @default {writes to standard error}
   */
  write?: (line: string) => void;
  /**
   * The category of the logger returned.
   *
   * @default {LOG_CATEGORY}
   */
  category?: readonly string[];
}

/**
 * Whether a string names a log level.
 *
 * @example Usage
 * ```ts
 * import { isLogLevel } from "./log.ts";
 * console.log(isLogLevel("warn"), isLogLevel("warning")); // true false
 * ```
 *
 * @param value The string.
 * @returns Whether it is one of {@linkcode LOG_LEVELS}.
 */
export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/**
 * Whether a string names a log format.
 *
 * @example Usage
 * ```ts
 * import { isLogFormat } from "./log.ts";
 * console.log(isLogFormat("json"), isLogFormat("logfmt")); // true false
 * ```
 *
 * @param value The string.
 * @returns Whether it is one of {@linkcode LOG_FORMATS}.
 */
export function isLogFormat(value: string): value is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(value);
}

/**
 * The logger of a layer under `log`'s category: `log.child(category)`,
 * or `log` itself when it has no categories (a plain {@linkcode Logger}).
 *
 * @example Usage
 * ```ts
 * import { childLogger, createLogger } from "./log.ts";
 * const lines: string[] = [];
 * const log = createLogger("info", { write: (l) => lines.push(l) });
 * childLogger(log, "registry").info("instance registered", { service: "web" });
 * console.log(lines[0].split(" ")[2]); // discover.registry
 * ```
 *
 * @param log The logger.
 * @param category The layer, e.g. `registry`.
 * @returns The layer's logger.
 */
export function childLogger(log: Logger, category: string): Logger {
  return log.child?.(category) ?? log;
}

/** The LogTape level of each of ours. */
const TO_LOGTAPE: Record<LogLevel, LogtapeLevel> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};

/** Our name of a LogTape level (`trace` and `fatal` keep theirs). */
function levelName(level: string): string {
  return level === "warning" ? "warn" : level;
}

/** A field's value as JSON: errors by their message, never their stack. */
function jsonValue(value: unknown): unknown {
  if (value instanceof Error) return value.message;
  if (typeof value === "bigint") return String(value);
  if (value === undefined) return null;
  return value;
}

/** A field's value in a text line: bare when that is unambiguous. */
function textValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value !== "string") {
    try {
      return JSON.stringify(value, (_, v) => jsonValue(v)) ?? "undefined";
    } catch {
      return JSON.stringify(String(value));
    }
  }
  return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
}

/** The message of a record: its text, with any values in it rendered. */
function messageOf(record: LineRecord): string {
  return record.message.map((part, i) =>
    i % 2 === 0 ? String(part) : textValue(part)
  ).join("");
}

/**
 * Formats a record as `<ISO time> <LEVEL> <category> <message> key=value
 * ...`: a message with control characters and values that need it are
 * quoted as JSON strings, so a record is always one line; errors show
 * their message only.
 *
 * @example Usage
 * ```ts
 * import { textFormatter } from "./log.ts";
 * const line = textFormatter({
 *   category: ["discover", "agent"],
 *   level: "info",
 *   message: ["listening"],
 *   timestamp: 0,
 *   properties: { url: "ws://127.0.0.1:1111/" },
 * });
 * console.log(line);
 * // 1970-01-01T00:00:00.000Z INFO discover.agent listening url=ws://127.0.0.1:1111/
 * ```
 *
 * @param record The record.
 * @returns The line, without a line feed.
 */
export function textFormatter(record: LineRecord): string {
  const message = messageOf(record);
  // deno-lint-ignore no-control-regex
  const text = /[\x00-\x1f]/.test(message) ? JSON.stringify(message) : message;
  let line = `${new Date(record.timestamp).toISOString()} ${
    levelName(record.level).toUpperCase()
  } ${record.category.join(".")} ${text}`;
  for (const [key, value] of Object.entries(record.properties)) {
    line += ` ${key}=${textValue(value)}`;
  }
  return line;
}

/** Keys of a JSON line that fields do not overwrite. */
const JSON_KEYS = new Set(["time", "level", "category", "message"]);

/**
 * Formats a record as one JSON object: `time`, `level` (`debug`, `info`,
 * `warn`, `error`), `category` (dotted), `message`, then each field
 * (errors as their message; a field named like one of the first four
 * gets a leading `_`).
 *
 * @example Usage
 * ```ts
 * import { jsonFormatter } from "./log.ts";
 * const line = jsonFormatter({
 *   category: ["discover", "registry"],
 *   level: "warning",
 *   message: ["backend write failed"],
 *   timestamp: 0,
 *   properties: { key: "web/10.0.0.1:80", error: new Error("timed out") },
 * });
 * console.log(JSON.parse(line).error); // timed out
 * ```
 *
 * @param record The record.
 * @returns The line, without a line feed.
 */
export function jsonFormatter(record: LineRecord): string {
  const object: Record<string, unknown> = {
    time: new Date(record.timestamp).toISOString(),
    level: levelName(record.level),
    category: record.category.join("."),
    message: messageOf(record),
  };
  for (const [key, value] of Object.entries(record.properties)) {
    object[JSON_KEYS.has(key) ? `_${key}` : key] = value;
  }
  try {
    return JSON.stringify(object, (_, v) => jsonValue(v));
  } catch {
    // A field that JSON cannot hold (a cycle): its text instead.
    for (const [key, value] of Object.entries(object)) {
      if (typeof value === "object" && value !== null) {
        object[key] = String(value);
      }
    }
    return JSON.stringify(object, (_, v) => jsonValue(v));
  }
}

/** What a logger below its lowest level does with a record: nothing. */
const DROP = () => {};

/**
 * A logger of `category` that hands each record to `emit`; one of a level
 * that `wanted` refuses makes no record at all.
 */
function recordLogger(
  category: readonly string[],
  emit: (record: LogRecord) => void,
  wanted: (level: LogLevel) => boolean = () => true,
): CategoryLogger {
  const at = (level: LogLevel) =>
    !wanted(level) ? DROP : (message: string, fields?: LogFields) =>
      emit({
        category,
        level: TO_LOGTAPE[level],
        // The text as is: never read as a LogTape message template.
        message: [message],
        rawMessage: message,
        timestamp: Date.now(),
        properties: { ...fields },
      });
  return {
    category,
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (name) => recordLogger([...category, name], emit, wanted),
  };
}

/**
 * Creates a logger that drops records below `level` and writes the others
 * as lines (text or JSON), through a LogTape sink of its own: loggers made
 * here do not depend on, nor change, the process's LogTape configuration.
 * `child(name)` gives the logger of a layer, writing to the same place.
 *
 * @example Usage
 * ```ts
 * import { createLogger } from "./log.ts";
 * const lines: string[] = [];
 * const log = createLogger("info", { write: (l) => lines.push(l) });
 * log.debug("dropped");
 * log.child("agent").info("listening", { url: "ws://127.0.0.1:1111" });
 * console.log(lines.length); // 1
 * ```
 *
 * @param level The lowest level written.
 * @param options The format, where lines go, the category.
 * @returns The logger, of category {@linkcode LOG_CATEGORY} by default.
 * @throws {TypeError} When `level` or `options.format` is not one we know.
 */
export function createLogger(
  level: LogLevel,
  options: LoggerOptions = {},
): CategoryLogger {
  if (!isLogLevel(level)) {
    throw new TypeError(
      `'level' must be one of ${LOG_LEVELS.join(", ")}: current value is '${
        String(level)
      }'`,
    );
  }
  const format = options.format ?? "text";
  if (!isLogFormat(format)) {
    throw new TypeError(
      `'format' must be one of ${LOG_FORMATS.join(", ")}: current value is '${
        String(format)
      }'`,
    );
  }
  const encoder = new TextEncoder();
  const write = options.write ??
    ((line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n")));
  const formatter = format === "json" ? jsonFormatter : textFormatter;
  const sink: Sink = (record) => write(formatter(record));
  const lowest = TO_LOGTAPE[level];
  // Loggers below `lowest` make no record: every record made is written.
  return recordLogger(
    options.category ?? LOG_CATEGORY,
    sink,
    (level) => compareLogLevel(TO_LOGTAPE[level], lowest) >= 0,
  );
}

/**
 * A logger that hands its records to LogTape's configuration, for a
 * program that configures LogTape itself (`configure()` with sinks for
 * the `discover` category); without one, records go nowhere.
 *
 * @example Usage
 * ```ts ignore
 * import { configure, getConsoleSink } from "@logtape/logtape";
 * import { startAgent } from "./mod.ts";
 * import { logtapeLogger } from "./log.ts";
 * await configure({
 *   sinks: { console: getConsoleSink() },
 *   loggers: [
 *     { category: "discover", lowestLevel: "info", sinks: ["console"] },
 *   ],
 * });
 * await using _agent = await startAgent({ port: 0, logger: logtapeLogger() });
 * ```
 *
 * @param category The category.
 * @returns The logger.
 */
export function logtapeLogger(
  category: readonly string[] = LOG_CATEGORY,
): CategoryLogger {
  return recordLogger(
    category,
    ({ category, ...record }) => getLogger(category).emit(record),
  );
}
