// Copyright the discover authors. BSD-3-Clause license.

/**
 * A logger that keeps repeated warnings short: the first few lines of each
 * kind, then a count. The etcd backend's warnings while etcd is away and
 * the DNS server's while it cannot answer go through it.
 *
 * @module
 */

import type { BackendLogger } from "./descriptor.ts";

/** Lines of one kind that {@linkcode QuietLog} writes before it counts them. */
export const QUIET_LINES = 3;

/** How often {@linkcode QuietLog} writes a count of what it did not, in ms. */
export const QUIET_SUMMARY_MS = 30_000;

/** Options of {@linkcode QuietLog}. */
export interface QuietLogOptions {
  /**
   * Lines of one kind written before the rest are counted.
   *
   * @default {QUIET_LINES}
   */
  lines?: number;
  /**
   * Least time between two counts of one kind, in ms.
   *
   * @default {QUIET_SUMMARY_MS}
   */
  summaryMs?: number;
  /**
   * The clock, in ms.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/** What {@linkcode QuietLog} knows of one kind of warning. */
interface Kind {
  /** Lines written since the last settle. */
  written: number;
  /** Lines not written since the last count. */
  counted: number;
  /** The last line not written. */
  last: string;
  /** When counting started, or the last count was written. */
  since: number;
}

/** A warning's kind: its text without the wait, numbers and quoted names. */
function kindOf(message: string): string {
  return message.replace(/; retrying in .*$/, "; retrying")
    .replace(/'[^']*'/g, "''").replace(/\d+/g, "#");
}

/**
 * A logger that keeps repeated warnings short: of each kind (the message
 * without its wait, numbers and quoted names, so `could not resync 'web'
 * (...); retrying in 1.6 s` and `... 'db' (...); retrying in 250 ms` are
 * one kind) the
 * first {@linkcode QUIET_LINES} are written, then the rest are counted, and
 * the count is written as `repeated warnings not logged count=N
 * seconds=S like="..."` at most every {@linkcode QUIET_SUMMARY_MS}, and when
 * {@linkcode QuietLog.settle} says the trouble is over. A warning whose
 * reason changes (`connection refused`, then `authentication failed`) is
 * another kind, written at once. Information passes as it is.
 *
 * @example Usage
 * ```ts
 * import { QuietLog } from "./quiet_log.ts";
 * const lines: string[] = [];
 * const log = new QuietLog({
 *   info: (m) => void lines.push(m),
 *   warn: (m) => void lines.push(m),
 * });
 * for (let i = 0; i < 10; i++) log.warn(`could not connect; retrying in ${i} s`);
 * log.settle();
 * console.log(lines.length); // 4: three lines, then one count of seven
 * ```
 */
export class QuietLog implements BackendLogger {
  readonly #log: BackendLogger;
  readonly #lines: number;
  readonly #summaryMs: number;
  readonly #now: () => number;
  readonly #kinds = new Map<string, Kind>();

  /**
   * Wraps `log`.
   *
   * @param log Where lines go.
   * @param options How many lines of a kind, how often a count, the clock.
   * @throws {RangeError} When `lines` is not a whole number of at least 1
   *   or `summaryMs` is not above 0.
   */
  constructor(log: BackendLogger, options: QuietLogOptions = {}) {
    this.#log = log;
    this.#lines = options.lines ?? QUIET_LINES;
    this.#summaryMs = options.summaryMs ?? QUIET_SUMMARY_MS;
    this.#now = options.now ?? Date.now;
    if (!Number.isInteger(this.#lines) || this.#lines < 1) {
      throw new RangeError(
        `'lines' must be a whole number of at least 1: current value is ${this.#lines}`,
      );
    }
    if (!(this.#summaryMs > 0)) {
      throw new RangeError(
        `'summaryMs' must be a number of milliseconds above 0: current value is ${this.#summaryMs}`,
      );
    }
  }

  /**
   * Writes `message` as it is.
   *
   * @param message The message.
   * @param fields Its fields.
   */
  info(message: string, fields?: Record<string, unknown>): void {
    this.#log.info(message, fields);
  }

  /**
   * Writes `message`, or counts it when enough of its kind were written.
   *
   * @param message The message.
   * @param fields Its fields.
   */
  warn(message: string, fields?: Record<string, unknown>): void {
    const key = kindOf(message);
    let kind = this.#kinds.get(key);
    if (!kind) {
      kind = { written: 0, counted: 0, last: "", since: 0 };
      this.#kinds.set(key, kind);
    }
    if (kind.written < this.#lines) {
      kind.written++;
      kind.since = this.#now();
      this.#log.warn(
        message,
        kind.written === this.#lines
          ? {
            ...fields,
            repeats: `counted, not logged; a count every ${
              this.#summaryMs / 1000
            } s`,
          }
          : fields,
      );
      return;
    }
    kind.counted++;
    kind.last = message;
    if (this.#now() - kind.since >= this.#summaryMs) this.#count(kind);
  }

  /**
   * The trouble is over (etcd answers again, the backend closes, the DNS
   * server reads again what it could not): writes the count of each kind with lines
   * not written, and lets each kind start over.
   */
  settle(): void {
    for (const kind of this.#kinds.values()) {
      if (kind.counted > 0) this.#count(kind);
    }
    this.#kinds.clear();
  }

  #count(kind: Kind): void {
    const now = this.#now();
    this.#log.warn("repeated warnings not logged", {
      count: kind.counted,
      seconds: Math.round((now - kind.since) / 1000),
      like: kind.last,
    });
    kind.counted = 0;
    kind.since = now;
  }
}
