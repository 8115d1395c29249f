// Copyright the discover authors. BSD-3-Clause license.

/**
 * A small levelled logger: one line per record on standard error,
 * `<ISO time> <LEVEL> <message> key=value ...`.
 *
 * @module
 */

/** Log levels, from the most verbose. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];

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
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /**
   * Where lines go.
   *
   * @default {writes to standard error}
   */
  write?: (line: string) => void;
}

/**
 * Whether a string names a log level.
 *
 * @param value The string.
 * @returns Whether it is one of {@linkcode LOG_LEVELS}.
 */
export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

function format(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value !== "string") return JSON.stringify(value) ?? "undefined";
  return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
}

/**
 * Creates a logger that drops records below `level`.
 *
 * @example Usage
 * ```ts
 * import { createLogger } from "./log.ts";
 * const lines: string[] = [];
 * const log = createLogger("info", { write: (l) => lines.push(l) });
 * log.debug("dropped");
 * log.info("listening", { url: "ws://127.0.0.1:1111" });
 * console.log(lines.length); // 1
 * ```
 *
 * @param level The lowest level written.
 * @param options Where lines go.
 * @returns The logger.
 */
export function createLogger(
  level: LogLevel,
  options: LoggerOptions = {},
): Logger {
  const encoder = new TextEncoder();
  const write = options.write ??
    ((line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n")));
  const min = LOG_LEVELS.indexOf(level);
  const at = (lvl: LogLevel) => (message: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(lvl) < min) return;
    // deno-lint-ignore no-control-regex
    const text = /[\x00-\x1f]/.test(message)
      ? JSON.stringify(message)
      : message;
    let line = `${new Date().toISOString()} ${lvl.toUpperCase()} ${text}`;
    for (const [key, value] of Object.entries(fields ?? {})) {
      line += ` ${key}=${format(value)}`;
    }
    write(line);
  };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  };
}
