// Copyright the discover authors. BSD-3-Clause license.

/**
 * Health checks the agent runs for the instances registered through it
 * (HTTP and TCP checks, like Consul's), and the policy that says which hosts
 * a check may target.
 *
 * ## Schedule
 *
 * - The first run comes after a short random delay in
 *   `[0, min(100 ms, interval))`, so that a new instance becomes ready fast.
 * - The second run comes at a random point after the first one's deadline
 *   and within the interval: checks that started together (an agent restart
 *   resuming all its checks) spread over their interval instead of hitting
 *   their targets at once. Then a run every interval. No gap between two
 *   runs exceeds the interval, which is what the detection bound
 *   (interval × failuresBeforeCritical + timeout) rests on.
 * - A check whose previous run is still in flight (or still waiting for a
 *   slot) skips that tick: never two runs of one check at once.
 * - Timers are unref'd (`Deno.unrefTimer`): checks never keep a process
 *   alive.
 *
 * ## Runs
 *
 * - Each run has its own deadline, `timeoutMs`, from the moment it starts:
 *   a slow or hung target fails its own check ("timed out after 1000 ms")
 *   and delays no other.
 * - At most `maxConcurrent` runs (default 64) are in flight at once, and at
 *   most a quarter of them (16 of 64; at least 1) to one target (its
 *   `host:port`). Runs beyond either bound wait in a first-in first-out
 *   queue, and a run whose target has its share lets the runs behind it
 *   start: a hung target, however many checks point at it, cannot hold
 *   every slot. The time spent waiting does not count against a run's
 *   deadline.
 * - HTTP: a `GET` with `redirect: "manual"` and `user-agent: discover-check`;
 *   any 2xx status passes, anything else (a redirect included) fails with
 *   the note `HTTP <status>`. The body is cancelled, never read. Each run
 *   opens its own connection and closes it (no keep-alive, like Consul's):
 *   a target that no longer accepts connections fails even while an old
 *   connection would still answer, and no connection outlives its run.
 * - TCP: a connection opened within the deadline passes; it is closed at
 *   once. An attempt still under way at the deadline is cancelled, its
 *   socket released.
 * - A failure's note says why: `HTTP 500`, `connection refused`,
 *   `connection reset`, `DNS lookup failed`, `timed out after N ms` (N as
 *   given, without the rounding noise of `0.1048 * 1000`), or the error's
 *   short message; notes are at most 256 characters.
 *
 * ## Health
 *
 * A check starts from the health the instance has (`initial`): critical
 * with the note "no check result yet" for a new instance, the stored health
 * when a restarted agent resumes a check. `onChange` fires only when the
 * health changes:
 *
 * - critical -> passing after `successesBeforePassing` consecutive successes;
 * - passing -> critical after `failuresBeforeCritical` consecutive failures,
 *   with the note of the failure that tipped it;
 * - and once when the instance is critical and the first failing result
 *   replaces the initial note (so the note says why), unless the note is the
 *   same (a resumed check causes no flap).
 *
 * Never once per run otherwise: a critical instance keeps the note it got
 * when it turned critical. After `stop()` or `close()` no callback fires,
 * not even for a run in flight. Memory is bounded by the number of checks:
 * nothing grows per run.
 *
 * ## Policy
 *
 * {@linkcode CheckPolicy} keeps the agent from being used to probe other
 * hosts (server-side request forgery): a check may target only the
 * instance's own host, loopback when the instance is on the agent's host,
 * and the hosts allowed with the agent flag `--check-allow`.
 *
 * @module
 */

import type { Health } from "../protocol/types.ts";
import { invalidParams } from "../protocol/errors.ts";
import { MAX_NOTE_LENGTH } from "../protocol/validate.ts";
import type { Logger } from "./log.ts";

export type { Health } from "../protocol/types.ts";
export type { LogFields, Logger } from "./log.ts";

/** Upper bound of the first run's random delay, in milliseconds. */
const FIRST_RUN_MAX_DELAY_MS = 100;
const DEFAULT_MAX_CONCURRENT = 64;
/** The longest delay a timer takes; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The share of the slots that the runs to one target may hold. */
const TARGET_SHARE = 1 / 4;

/**
 * A check, validated, with times in milliseconds. Exactly one of `http` and
 * `tcp`.
 */
export interface CheckSpec {
  /** `http://` or `https://` URL; any 2xx status passes. */
  http?: string;
  /** `host:port` to connect to (IPv6 host bracketed: `[::1]:80`). */
  tcp?: string;
  /** Milliseconds between runs. */
  intervalMs: number;
  /** Milliseconds a run may take; less than `intervalMs`. */
  timeoutMs: number;
  /** Consecutive failures that turn a passing instance critical. */
  failuresBeforeCritical: number;
  /** Consecutive successes that turn a critical instance passing. */
  successesBeforePassing: number;
}

/** Health with its note (a note only when critical, at most 256 characters). */
export interface HealthState {
  /** The health. */
  health: Health;
  /** Why the instance is critical; only then. */
  note?: string;
}

/** Options of {@linkcode Checks}. */
export interface ChecksOptions {
  /**
   * Most check runs in flight at once, a quarter of them (at least 1) to one
   * target; further runs wait in a FIFO queue.
   *
   * @default {64}
   */
  maxConcurrent?: number;
  /**
   * Where health changes (debug) and failing callbacks (warn) are logged.
   *
   * @default {no logging}
   */
  log?: Logger;
  /** Called after every run (for metrics): whether it passed and how long it took. */
  onRun?: (run: { ok: boolean; ms: number }) => void;
}

/** Options of {@linkcode Checks.start}. */
export interface CheckStartOptions {
  /**
   * The health the instance has now: critical with the note "no check
   * result yet" for a new instance, the stored health when a restarted
   * agent resumes a check.
   */
  initial: HealthState;
  /** Called when the health changes (see the module documentation). */
  onChange: (state: HealthState) => void;
}

/**
 * Where a run goes: a URL, or a host and port; `authority` names the
 * target (`host:port`) for its share of the slots.
 */
type Target =
  & ({ url: string } | { hostname: string; port: number })
  & { authority: string };

/** One running check. */
interface Entry {
  readonly key: string;
  readonly spec: CheckSpec;
  readonly target: Target;
  readonly onChange: (state: HealthState) => void;
  state: HealthState;
  /** Whether the state is still the one given to start(). */
  initial: boolean;
  successes: number;
  failures: number;
  /** Runs so far that set the schedule (0, 1, then more). */
  ticks: number;
  timer?: ReturnType<typeof setTimeout>;
  /** Waiting in the queue or in flight. */
  busy: boolean;
  /** Aborts the run in flight. */
  controller?: AbortController;
  stopped: boolean;
}

/** The outcome of one run. */
type Outcome = { ok: true } | { ok: false; note: string };

/**
 * Runs health checks, each on its own schedule, with a bound on the runs in
 * flight. See the module documentation for the schedule and the rules.
 *
 * @example Usage
 * ```ts ignore
 * import { Checks } from "./checks.ts";
 * const checks = new Checks({ maxConcurrent: 64 });
 * checks.start("cache/127.0.0.1:8080", {
 *   http: "http://127.0.0.1:8080/health",
 *   intervalMs: 5000,
 *   timeoutMs: 2000,
 *   failuresBeforeCritical: 1,
 *   successesBeforePassing: 1,
 * }, {
 *   initial: { health: "critical", note: "no check result yet" },
 *   onChange: (state) => console.log(state.health, state.note ?? ""),
 * });
 * // ... later
 * checks.close();
 * ```
 */
export class Checks {
  readonly #entries = new Map<string, Entry>();
  /** Entries waiting for a slot, first in first out (a Set keeps insertion order). */
  readonly #queue = new Set<Entry>();
  readonly #maxConcurrent: number;
  /** Most runs in flight to one target. */
  readonly #targetMax: number;
  /** Runs in flight by target authority (absent: none). */
  readonly #inFlightTo = new Map<string, number>();
  readonly #log?: Logger;
  readonly #onRun?: (run: { ok: boolean; ms: number }) => void;
  /** The HTTP client of the runs, created at the first HTTP run. */
  #http?: Deno.HttpClient;
  #inFlight = 0;
  #closed = false;

  /**
   * Creates a runner with no checks.
   *
   * @param options Concurrency bound, logger and run callback.
   */
  constructor(options: ChecksOptions = {}) {
    const max = options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(
        `'maxConcurrent' must be a positive integer: current value is ${max}`,
      );
    }
    this.#maxConcurrent = max;
    this.#targetMax = Math.max(1, Math.floor(max * TARGET_SHARE));
    this.#log = options.log;
    this.#onRun = options.onRun;
  }

  /**
   * Starts the check of `key`, or replaces it (the replaced check stops
   * without another callback). `initial` is the health the instance has
   * now; `onChange` is called only when the health changes according to
   * the thresholds, and once when the instance is critical and the first
   * failing result replaces the initial note.
   *
   * @example Usage
   * ```ts ignore
   * import { Checks } from "./checks.ts";
   * const checks = new Checks();
   * checks.start("db/127.0.0.1:5432", {
   *   tcp: "127.0.0.1:5432",
   *   intervalMs: 1000,
   *   timeoutMs: 500,
   *   failuresBeforeCritical: 3,
   *   successesBeforePassing: 1,
   * }, {
   *   initial: { health: "passing" }, // resumed: no flap
   *   onChange: (state) => console.log(state),
   * });
   * checks.close();
   * ```
   *
   * @param key Identifies the check (the instance's key).
   * @param spec The check.
   * @param options The initial health and the change callback.
   */
  start(key: string, spec: CheckSpec, options: CheckStartOptions): void {
    if (this.#closed) {
      throw new Error(
        `cannot start the check of '${key}': the checks were closed`,
      );
    }
    const target = targetOf(spec);
    const initial = options.initial;
    if (initial.health !== "passing" && initial.health !== "critical") {
      throw new TypeError(
        `'initial.health' must be "passing" or "critical": current value is ${
          JSON.stringify(initial.health)
        }`,
      );
    }
    this.stop(key);
    const entry: Entry = {
      key,
      spec: { ...spec },
      target,
      onChange: options.onChange,
      state: initial.health === "critical"
        ? { health: "critical", note: truncate(initial.note ?? "") }
        : { health: "passing" },
      initial: true,
      successes: 0,
      failures: 0,
      ticks: 0,
      busy: false,
      stopped: false,
    };
    if (entry.state.note === "") delete entry.state.note;
    this.#entries.set(key, entry);
    this.#schedule(entry);
  }

  /**
   * Stops the check of `key` and forgets it; no callback fires afterwards,
   * not even for a run in flight (which is aborted). Does nothing when
   * there is no such check.
   *
   * @example Usage
   * ```ts
   * import { Checks } from "./checks.ts";
   * const checks = new Checks();
   * checks.stop("cache/127.0.0.1:8080"); // nothing to stop
   * console.log(checks.size); // 0
   * ```
   *
   * @param key Identifies the check.
   */
  stop(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    this.#halt(entry);
  }

  /**
   * The current health of the check of `key` (the last one reported to
   * `onChange`, or the initial one).
   *
   * @example Usage
   * ```ts
   * import { Checks } from "./checks.ts";
   * const checks = new Checks();
   * console.log(checks.state("cache/127.0.0.1:8080")); // undefined
   * ```
   *
   * @param key Identifies the check.
   * @returns The health and note, or `undefined` when there is no such check.
   */
  state(key: string): HealthState | undefined {
    const state = this.#entries.get(key)?.state;
    return state === undefined ? undefined : { ...state };
  }

  /**
   * Whether a check of `key` is running.
   *
   * @example Usage
   * ```ts
   * import { Checks } from "./checks.ts";
   * console.log(new Checks().has("cache/127.0.0.1:8080")); // false
   * ```
   *
   * @param key Identifies the check.
   * @returns Whether it runs.
   */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /**
   * The number of checks running.
   *
   * @example Usage
   * ```ts
   * import { Checks } from "./checks.ts";
   * console.log(new Checks().size); // 0
   * ```
   *
   * @returns The number of checks.
   */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Stops every check, aborts the runs in flight and closes their
   * connections; no callback fires afterwards. {@linkcode Checks.start}
   * throws from then on.
   *
   * @example Usage
   * ```ts
   * import { Checks } from "./checks.ts";
   * const checks = new Checks();
   * checks.close();
   * console.log(checks.size); // 0
   * ```
   */
  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) this.#halt(entry);
    this.#entries.clear();
    this.#http?.close();
    this.#http = undefined;
  }

  #halt(entry: Entry): void {
    entry.stopped = true;
    clearTimeout(entry.timer);
    entry.timer = undefined;
    this.#queue.delete(entry);
    entry.controller?.abort(new DOMException("check stopped", "AbortError"));
  }

  /** Sets the timer of the next tick: see the module documentation. */
  #schedule(entry: Entry): void {
    const interval = entry.spec.intervalMs;
    const delay = entry.ticks === 0
      ? Math.random() * Math.min(FIRST_RUN_MAX_DELAY_MS, interval)
      : entry.ticks === 1
      // After the first run's deadline, so that it is never skipped: no
      // gap between two runs exceeds the interval.
      ? entry.spec.timeoutMs + Math.random() * (interval - entry.spec.timeoutMs)
      : interval;
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      if (entry.stopped) return;
      entry.ticks = Math.min(entry.ticks + 1, 2);
      this.#schedule(entry);
      this.#tick(entry);
    }, delay);
    Deno.unrefTimer(entry.timer);
  }

  #tick(entry: Entry): void {
    if (entry.busy) return; // the previous run is still waiting or in flight
    entry.busy = true;
    this.#queue.add(entry);
    this.#pump();
  }

  /**
   * Starts queued runs in queue order while there are free slots, passing
   * over the runs whose target has its share of the slots in flight.
   */
  #pump(): void {
    for (const entry of this.#queue) {
      if (this.#inFlight >= this.#maxConcurrent) return;
      const { authority } = entry.target;
      const toTarget = this.#inFlightTo.get(authority) ?? 0;
      if (toTarget >= this.#targetMax) continue;
      this.#queue.delete(entry); // deleting the current item keeps iterating
      this.#inFlight++;
      this.#inFlightTo.set(authority, toTarget + 1);
      this.#run(entry).catch((error) => {
        this.#log?.error("check run failed", { key: entry.key, error });
      }).finally(() => {
        this.#inFlight--;
        const left = this.#inFlightTo.get(authority)! - 1;
        if (left === 0) this.#inFlightTo.delete(authority);
        else this.#inFlightTo.set(authority, left);
        entry.busy = false;
        entry.controller = undefined;
        this.#pump();
      });
    }
  }

  async #run(entry: Entry): Promise<void> {
    const controller = new AbortController();
    entry.controller = controller;
    const { timeoutMs } = entry.spec;
    // As given: 0.1048 s is 104.80000000000001 ms, written 104.8.
    const shown = Number(timeoutMs.toPrecision(12));
    const timer = setTimeout(
      () =>
        controller.abort(
          new DOMException(`timed out after ${shown} ms`, "TimeoutError"),
        ),
      timeoutMs,
    );
    Deno.unrefTimer(timer);
    const started = performance.now();
    let outcome: Outcome;
    try {
      const { signal } = controller;
      outcome = "url" in entry.target
        ? await probeHttp(entry.target.url, { signal, client: this.#client() })
        : await probeTcp(entry.target, signal);
    } catch (error) {
      outcome = { ok: false, note: noteOf(error, controller.signal) };
    } finally {
      clearTimeout(timer);
    }
    if (entry.stopped) return;
    const ms = performance.now() - started;
    try {
      this.#onRun?.({ ok: outcome.ok, ms });
    } catch (error) {
      this.#log?.warn("check run callback failed", { key: entry.key, error });
    }
    if (entry.stopped) return; // stopped by onRun
    this.#apply(entry, outcome);
  }

  /** The HTTP client of the runs: it keeps no idle connection. */
  #client(): Deno.HttpClient {
    return this.#http ??= Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  }

  /** Applies the thresholds to one outcome; calls onChange on a change. */
  #apply(entry: Entry, outcome: Outcome): void {
    const { spec, state } = entry;
    let next: HealthState | undefined;
    if (outcome.ok) {
      entry.failures = 0;
      entry.successes = Math.min(
        entry.successes + 1,
        spec.successesBeforePassing,
      );
      if (
        state.health === "critical" &&
        entry.successes >= spec.successesBeforePassing
      ) next = { health: "passing" };
    } else {
      entry.successes = 0;
      entry.failures = Math.min(
        entry.failures + 1,
        spec.failuresBeforeCritical,
      );
      if (state.health === "passing") {
        if (entry.failures >= spec.failuresBeforeCritical) {
          next = { health: "critical", note: outcome.note };
        }
      } else if (entry.initial) {
        entry.initial = false;
        if (state.note !== outcome.note) {
          next = { health: "critical", note: outcome.note };
        }
      }
    }
    if (next === undefined) return;
    entry.initial = false;
    entry.state = next;
    this.#log?.debug("check health changed", {
      key: entry.key,
      health: next.health,
      ...(next.note === undefined ? {} : { note: next.note }),
    });
    try {
      entry.onChange({ ...next });
    } catch (error) {
      this.#log?.warn("check change callback failed", {
        key: entry.key,
        error,
      });
    }
  }
}

/**
 * Whether two checks are the same (a re-registration that repeats its check
 * keeps the running one, with its health and counters).
 *
 * @example Usage
 * ```ts
 * import { sameCheck } from "./checks.ts";
 * const a = {
 *   tcp: "127.0.0.1:5432",
 *   intervalMs: 1000,
 *   timeoutMs: 500,
 *   failuresBeforeCritical: 1,
 *   successesBeforePassing: 1,
 * };
 * console.log(sameCheck(a, { ...a })); // true
 * console.log(sameCheck(a, { ...a, intervalMs: 2000 })); // false
 * ```
 *
 * @param a One check.
 * @param b The other.
 * @returns Whether every field is equal.
 */
export function sameCheck(a: CheckSpec, b: CheckSpec): boolean {
  return a.http === b.http && a.tcp === b.tcp &&
    a.intervalMs === b.intervalMs && a.timeoutMs === b.timeoutMs &&
    a.failuresBeforeCritical === b.failuresBeforeCritical &&
    a.successesBeforePassing === b.successesBeforePassing;
}

/** Options of {@linkcode CheckPolicy}. */
export interface CheckPolicyOptions {
  /** Hosts this agent is reachable as (its advertised host and its listen host). */
  localHosts: string[];
  /**
   * `--check-allow` values: extra hosts any check may target; `"*"` allows
   * every host.
   *
   * @default {[]}
   */
  allow?: string[];
}

/**
 * Which hosts a check may target, so that registering an instance cannot
 * make the agent probe other hosts (server-side request forgery). A check
 * may target:
 *
 * - the host of the instance's own address;
 * - a loopback host (`127.0.0.0/8`, `::1`, `localhost` and names under it)
 *   when the instance's host is one of the agent's own hosts or is itself
 *   loopback;
 * - a host allowed with `--check-allow` (`"*"`: any host).
 *
 * Hosts compare canonically: names case-insensitively with a trailing dot
 * ignored, IP addresses in the form the WHATWG URL parser gives them
 * (`0x7f.1` is `127.0.0.1`, `[0:0::1]` is `::1`), IPv6 without brackets.
 *
 * @example Usage
 * ```ts
 * import { CheckPolicy } from "./checks.ts";
 * const policy = new CheckPolicy({ localHosts: ["10.0.0.5"], allow: ["db.internal"] });
 * const spec = {
 *   http: "http://10.0.0.5:9000/health",
 *   intervalMs: 5000,
 *   timeoutMs: 2000,
 *   failuresBeforeCritical: 1,
 *   successesBeforePassing: 1,
 * };
 * policy.assertAllowed("10.0.0.5:8080", spec); // the instance's own host
 * try {
 *   policy.assertAllowed("10.0.0.5:8080", { ...spec, http: "http://10.0.0.9/" });
 * } catch (error) {
 *   console.log((error as Error).message); // ... --check-allow ...
 * }
 * ```
 */
export class CheckPolicy {
  readonly #localHosts: Set<string>;
  readonly #allow: Set<string>;
  readonly #allowAll: boolean;

  /**
   * Creates a policy.
   *
   * @param options The agent's own hosts and the `--check-allow` hosts.
   */
  constructor(options: CheckPolicyOptions) {
    this.#localHosts = new Set(options.localHosts.map(canonicalHost));
    const allow = options.allow ?? [];
    this.#allowAll = allow.some((host) => host.trim() === "*");
    this.#allow = new Set(
      allow.filter((host) => host.trim() !== "*").map((host) =>
        canonicalHost(host.trim())
      ),
    );
  }

  /**
   * Throws unless the check targets a host it may target (see
   * {@linkcode CheckPolicy}).
   *
   * @example Usage
   * ```ts
   * import { CheckPolicy } from "./checks.ts";
   * const policy = new CheckPolicy({ localHosts: ["192.0.2.1", "0.0.0.0"] });
   * // An instance on the agent's host may be checked through loopback.
   * policy.assertAllowed("192.0.2.1:8080", {
   *   tcp: "[::1]:8080",
   *   intervalMs: 5000,
   *   timeoutMs: 2000,
   *   failuresBeforeCritical: 1,
   *   successesBeforePassing: 1,
   * });
   * ```
   *
   * @param addr The instance's address, `host:port`.
   * @param spec The check.
   * @throws {RpcError} `InvalidParams` (field `check.http` or `check.tcp`)
   * naming the targeted host, what is allowed and the flag `--check-allow`.
   */
  assertAllowed(addr: string, spec: CheckSpec): void {
    const field = spec.http !== undefined ? "check.http" : "check.tcp";
    let target: string;
    try {
      target = spec.http !== undefined
        ? canonicalHost(new URL(spec.http).hostname)
        : canonicalHost(splitHostPort(spec.tcp ?? "").hostname);
    } catch {
      throw invalidParams(
        field,
        spec.http !== undefined
          ? "must be an http:// or https:// URL"
          : "must be host:port (an IPv6 host in brackets)",
        spec.http ?? spec.tcp,
      );
    }
    const own = canonicalHost(splitHostPort(addr, "addr").hostname);
    const local = this.#localHosts.has(own) || isLoopback(own);
    if (
      this.#allowAll || target === own ||
      (local && isLoopback(target)) || this.#allow.has(target)
    ) return;
    const allowed = [`the instance's own host (${own})`];
    if (local) allowed.push("a loopback host (127.0.0.0/8, ::1, localhost)");
    if (this.#allow.size > 0) {
      allowed.push(
        `a host allowed with --check-allow (${[...this.#allow].join(", ")})`,
      );
    }
    throw invalidParams(
      field,
      `targets host ${JSON.stringify(target)}, which this agent does not ` +
        `check for an instance at ${addr}; a check may target ${
          allowed.join(", or ")
        }. To allow it, start the agent with --check-allow ${
          target.includes(":") ? `'${target}'` : target
        } (or --check-allow '*' for any host)`,
    );
  }
}

/** Checks what `start()` relies on; the protocol validates the rest. */
function targetOf(spec: CheckSpec): Target {
  if ((spec.http === undefined) === (spec.tcp === undefined)) {
    throw new TypeError(
      "a check must have exactly one of 'http' and 'tcp': " +
        `current values are ${JSON.stringify(spec.http)} and ${
          JSON.stringify(spec.tcp)
        }`,
    );
  }
  for (
    const name of [
      "intervalMs",
      "timeoutMs",
      "failuresBeforeCritical",
      "successesBeforePassing",
    ] as const
  ) {
    const value = spec[name];
    if (!Number.isFinite(value) || value <= 0) {
      throw new RangeError(
        `'${name}' must be a positive number: current value is ${value}`,
      );
    }
  }
  if (spec.intervalMs > MAX_TIMER_MS) {
    throw new RangeError(
      `'intervalMs' must be at most ${MAX_TIMER_MS} (the longest a timer ` +
        `waits): current value is ${spec.intervalMs}`,
    );
  }
  if (spec.timeoutMs >= spec.intervalMs) {
    throw new RangeError(
      `'timeoutMs' must be less than 'intervalMs' (${spec.intervalMs}): ` +
        `current value is ${spec.timeoutMs}`,
    );
  }
  if (spec.http !== undefined) {
    let url: URL;
    try {
      url = new URL(spec.http);
    } catch {
      throw new TypeError(
        `'http' must be a URL: current value is ${JSON.stringify(spec.http)}`,
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(
        `'http' must be an http:// or https:// URL: current value is ${
          JSON.stringify(spec.http)
        }`,
      );
    }
    const port = url.port !== ""
      ? Number(url.port)
      : url.protocol === "https:"
      ? 443
      : 80;
    return { url: url.href, authority: authorityOf(url.hostname, port) };
  }
  const { hostname, port } = splitHostPort(spec.tcp!);
  return { hostname, port, authority: authorityOf(hostname, port) };
}

/** `host:port` in canonical form, an IPv6 host in brackets. */
function authorityOf(host: string, port: number): string {
  const canonical = canonicalHost(host);
  return `${canonical.includes(":") ? `[${canonical}]` : canonical}:${port}`;
}

/** Splits `host:port` (`[v6]:port`); the host comes without brackets. */
function splitHostPort(
  addr: string,
  field = "tcp",
): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(addr);
  const port = Number(match?.[3]);
  if (match === null || port < 1 || port > 65535) {
    throw new TypeError(
      `'${field}' must be host:port with a port from 1 to 65535 (an IPv6 host ` +
        `in brackets): current value is ${JSON.stringify(addr)}`,
    );
  }
  return { hostname: match[1] ?? match[2], port };
}

/**
 * A host in canonical form: lower case, no trailing dot, IPv6 without
 * brackets, IP addresses as the WHATWG URL parser writes them.
 */
function canonicalHost(host: string): string {
  let bare = host.toLowerCase();
  if (bare.startsWith("[") && bare.endsWith("]")) bare = bare.slice(1, -1);
  if (bare.endsWith(".") && !bare.includes(":")) bare = bare.slice(0, -1);
  try {
    const parsed = new URL(
      `http://${bare.includes(":") ? `[${bare}]` : bare}/`,
    ).hostname;
    const name = parsed.startsWith("[") ? parsed.slice(1, -1) : parsed;
    return name.endsWith(".") ? name.slice(0, -1) : name;
  } catch {
    return bare; // not a host URLs accept; compared as written
  }
}

/** Whether a canonical host is loopback. */
function isLoopback(host: string): boolean {
  if (host === "localhost" || host.endsWith(".localhost") || host === "::1") {
    return true;
  }
  if (/^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host)) return true;
  // IPv4-mapped 127.0.0.0/8, as the URL parser writes it: ::ffff:7fxx:xxxx.
  return /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(host);
}

async function probeHttp(
  url: string,
  options: { signal: AbortSignal; client: Deno.HttpClient },
): Promise<Outcome> {
  const response = await fetch(url, {
    signal: options.signal,
    client: options.client,
    redirect: "manual",
    headers: { "user-agent": "discover-check" },
  });
  await response.body?.cancel().catch(() => {});
  return response.status >= 200 && response.status < 300
    ? { ok: true }
    : { ok: false, note: `HTTP ${response.status}` };
}

async function probeTcp(
  target: { hostname: string; port: number },
  signal: AbortSignal,
): Promise<Outcome> {
  // The signal cancels an attempt still under way, releasing its socket.
  const conn = await Deno.connect({
    hostname: target.hostname,
    port: target.port,
    signal,
  });
  conn.close();
  return { ok: true };
}

/** Why a run failed, in a few words. */
function noteOf(error: unknown, signal: AbortSignal): string {
  if (signal.aborted && signal.reason instanceof DOMException) {
    return truncate(signal.reason.message);
  }
  const cause = error instanceof Error && error.cause instanceof Error
    ? error.cause
    : error;
  if (cause instanceof Deno.errors.ConnectionRefused) {
    return "connection refused";
  }
  if (cause instanceof Deno.errors.ConnectionReset) return "connection reset";
  const message = cause instanceof Error ? cause.message : String(cause);
  if (/connection refused/i.test(message)) return "connection refused";
  if (/connection reset/i.test(message)) return "connection reset";
  if (/dns error|failed to lookup address/i.test(message)) {
    return "DNS lookup failed";
  }
  // Without the addresses, which differ from run to run (the local port):
  // "error sending request for url (URL): " and, once connected,
  // "error sending request from LOCAL for URL (REMOTE): ".
  const short = message
    .replace(
      /^error sending request (?:from \S+ )?for (?:url )?\S*(?: \(\S*\))?: /,
      "",
    )
    .replace(/^client error \([^)]*\): /, "")
    .replace(/^tcp connect error: /, "")
    .replace(/ \(os error [0-9]+\)$/, "")
    .trim();
  return truncate(short === "" ? "check failed" : short);
}

function truncate(note: string): string {
  return note.length > MAX_NOTE_LENGTH
    ? note.slice(0, MAX_NOTE_LENGTH - 3) + "..."
    : note;
}
