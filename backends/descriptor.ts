// Copyright the discover authors. BSD-3-Clause license.

/**
 * How a backend describes itself to the agent's command line: its name,
 * a one-line summary, its flags (each with a type, help text and default),
 * notes for the help, and how to build it from the flag values. The agent
 * (`agent.ts`) composes the descriptors listed in `backends/mod.ts` into
 * its flag parser and its `--help`, so adding a backend means adding its
 * descriptor to that list, nothing else.
 *
 * A backend's flags start with its name (or its
 * {@linkcode BackendDescriptor.flagPrefix}) and a dash, so that a flag
 * says which backend it belongs to, except the few names in
 * {@linkcode SHARED_FLAG_NAMES} that mean the same whichever backend
 * declares them (`--data-dir`); {@linkcode checkFlagNames} is that rule.
 *
 * The rules every flag value follows live here too:
 * {@linkcode parseSeconds} for durations, {@linkcode parseCount} for
 * counts and sizes, and {@linkcode FlagError} for a value that breaks
 * them (the agent prints its message and exits 2).
 *
 * @module
 */

import type { Backend } from "./backend.ts";

/** One command-line flag: how the parser reads it and how the help shows it. */
export interface Flag {
  /**
   * Name without the leading `--`, e.g. `etcd-endpoints`. A backend's
   * flags start with the backend's name and a dash, or are one of
   * {@linkcode SHARED_FLAG_NAMES} (see {@linkcode checkFlagNames}).
   */
  name: string;
  /** `"string"` takes a value; `"boolean"` is a switch. */
  type: "string" | "boolean";
  /** What the value is, as the help shows it: `URLS`, `SECONDS`, `N`. */
  value?: string;
  /** What the flag does, for the help (wrapped to fit). */
  help: string;
  /**
   * The value used when the flag is not given, shown in the help as
   * `(default ...)`. Absent when there is none, or when it is not a fixed
   * value (the help text says what happens then).
   */
  default?: string;
  /** One-letter alias (`-h`). */
  short?: string;
  /** Whether the flag may be given more than once. */
  multiple?: boolean;
}

/** Flag values by flag name, defaults applied: a string, a switch, or a repeated flag's list. */
export type FlagValues = Readonly<
  Record<string, string | boolean | string[] | undefined>
>;

/** What a backend logs. */
export interface BackendLogger {
  /** Normal operation. */
  info(message: string, fields?: Record<string, unknown>): void;
  /** Something went wrong and was handled. */
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** What the agent hands a backend it creates from flags. */
export interface BackendContext {
  /** Where the backend logs. */
  log: BackendLogger;
  /**
   * Reads a file named by a flag (a certificate, say); rejects with a
   * {@linkcode FlagError} naming the flag when it cannot.
   */
  readFile(flag: string, path: string): Promise<Uint8Array>;
  /** Reads an environment variable (a password, say). */
  env(name: string): string | undefined;
  /**
   * The agent's grace TTL (`--ttl`), in milliseconds: how long a lost
   * client's instances stay. A backend that keeps records across agent
   * restarts keeps its predecessor's that long.
   */
  ttlMs?: number;
}

/**
 * A backend as the agent's command line knows it.
 *
 * @example Usage
 * ```ts
 * import type { BackendDescriptor } from "./descriptor.ts";
 * import { MemoryBackend } from "./memory.ts";
 * const memory: BackendDescriptor = {
 *   name: "memory",
 *   summary: "registrations kept in the agent's memory",
 *   flags: [],
 *   create: () => Promise.resolve(new MemoryBackend()),
 * };
 * ```
 */
export interface BackendDescriptor {
  /** The value of `--backend` that selects it, and the prefix of its flags. */
  readonly name: string;
  /**
   * The prefix of its flags, without the dash, when it is not `name`
   * (a short form such as `zk` for `zookeeper`).
   */
  readonly flagPrefix?: string;
  /** One line for the list of backends in the help. */
  readonly summary: string;
  /**
   * Its flags; each name starts with `flagPrefix` (else `name`) and a
   * dash, or is one of {@linkcode SHARED_FLAG_NAMES}.
   */
  readonly flags: readonly Flag[];
  /** Paragraphs printed under its flags in the help. */
  readonly notes?: readonly string[];
  /**
   * Builds the backend, not yet opened, from its flag values (defaults
   * applied). Rejects with a {@linkcode FlagError} on a bad value.
   *
   * @param values Its flags' values, by flag name.
   * @param context Logging, file and environment access.
   * @returns The backend.
   */
  create(values: FlagValues, context: BackendContext): Promise<Backend>;
}

/**
 * Flag names a backend may declare without its prefix: each means the
 * same whichever backend declares it, so it is named for what it does.
 * `data-dir`: the directory where a backend that keeps its state on this
 * host keeps it.
 *
 * @example Usage
 * ```ts
 * import { SHARED_FLAG_NAMES } from "./descriptor.ts";
 * console.log(SHARED_FLAG_NAMES.includes("data-dir")); // true
 * ```
 */
export const SHARED_FLAG_NAMES: readonly string[] = Object.freeze([
  "data-dir",
]);

/**
 * Checks the names of a backend's flags: each starts with the backend's
 * {@linkcode BackendDescriptor.flagPrefix} (its name by default) and a
 * dash, or is one of {@linkcode SHARED_FLAG_NAMES}; and no name comes
 * twice.
 *
 * @example Usage
 * ```ts
 * import { checkFlagNames } from "./descriptor.ts";
 * import { memoryDescriptor } from "./memory.ts";
 * checkFlagNames(memoryDescriptor); // --data-dir is shared: no error
 * ```
 *
 * @param backend The backend's descriptor.
 * @throws {Error} Naming the flag and the rule it breaks.
 */
export function checkFlagNames(backend: BackendDescriptor): void {
  const prefix = `${backend.flagPrefix ?? backend.name}-`;
  const seen = new Set<string>();
  for (const { name } of backend.flags) {
    if (!name.startsWith(prefix) && !SHARED_FLAG_NAMES.includes(name)) {
      throw new Error(
        `the ${backend.name} backend's flag --${name} must start with '${prefix}' or be one of ${
          SHARED_FLAG_NAMES.map((shared) => `--${shared}`).join(", ")
        }`,
      );
    }
    if (seen.has(name)) {
      throw new Error(`the ${backend.name} backend declares --${name} twice`);
    }
    seen.add(name);
  }
}

/**
 * A command-line value that breaks its rule; the message names the flag,
 * the value and the rule.
 *
 * @example Usage
 * ```ts
 * import { FlagError } from "./descriptor.ts";
 * const error = new FlagError("--ttl must be a number of seconds: got 'x'");
 * console.log(error.name); // "FlagError"
 * ```
 */
export class FlagError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong: the flag, the value and the rule.
   */
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/** Options of {@linkcode parseSeconds}. */
export interface ParseSecondsOptions {
  /**
   * Smallest value accepted; without it any value above 0 is.
   *
   * @default {undefined}
   */
  min?: number;
  /**
   * Whole seconds only.
   *
   * @default {false}
   */
  whole?: boolean;
}

const DECIMAL = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/;

/**
 * Reads a duration flag: a decimal number of seconds (`10`, `0.5`, `.5`),
 * above 0, or at least `min`.
 *
 * @example Usage
 * ```ts
 * import { parseSeconds } from "./descriptor.ts";
 * parseSeconds("ttl", "0.5"); // 0.5
 * parseSeconds("etcd-lease-ttl", "10", { min: 2, whole: true }); // 10
 * ```
 *
 * @param flag The flag's name, without `--`.
 * @param text The value given.
 * @param options The smallest value, and whether fractions are refused.
 * @returns The number of seconds.
 * @throws {FlagError} When the value is not such a number.
 */
export function parseSeconds(
  flag: string,
  text: string,
  options: ParseSecondsOptions = {},
): number {
  const value = Number(text);
  const { min, whole = false } = options;
  const ok = DECIMAL.test(text) && Number.isFinite(value) &&
    (min === undefined ? value > 0 : value >= min) &&
    (!whole || Number.isInteger(value));
  if (!ok) {
    const rule = whole
      ? `a whole number of seconds, at least ${min ?? 1}`
      : `a number of seconds ${
        min === undefined ? "above 0" : `of at least ${min}`
      } (fractions such as 0.5 are accepted)`;
    throw new FlagError(`--${flag} must be ${rule}: got '${text}'`);
  }
  return value;
}

/** Options of {@linkcode parseCount}. */
export interface ParseCountOptions {
  /**
   * Smallest value accepted.
   *
   * @default {1}
   */
  min?: number;
  /** Why `min` is the minimum, for the message ("the largest valid request"). */
  reason?: string;
}

/**
 * Reads a count or size flag: a whole number, at least `min`.
 *
 * @example Usage
 * ```ts
 * import { parseCount } from "./descriptor.ts";
 * parseCount("max-sessions", "100"); // 100
 * ```
 *
 * @param flag The flag's name, without `--`.
 * @param text The value given.
 * @param options The smallest value, and why.
 * @returns The number.
 * @throws {FlagError} When the value is not such a number.
 */
export function parseCount(
  flag: string,
  text: string,
  options: ParseCountOptions = {},
): number {
  const min = options.min ?? 1;
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new FlagError(
      `--${flag} must be a whole number, at least ${min}: got '${text}'`,
    );
  }
  if (value < min) {
    throw new FlagError(
      `--${flag} must be at least ${min}${
        options.reason ? ` (${options.reason})` : ""
      }: got ${value}`,
    );
  }
  return value;
}
