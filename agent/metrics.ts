// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's metrics, served at `GET /metrics` in the Prometheus text
 * format (`prom-client`, with a registry of its own). Only what the agent
 * measures itself is exported: `prom-client`'s default process metrics read
 * `/proc`, which Deno grants only with `--allow-all`, and would report 0.
 *
 * The layers report through a small API: sessions call
 * {@linkcode Metrics.request}, {@linkcode Metrics.eventsSent} and
 * {@linkcode Metrics.drop}; the backend is wrapped by
 * {@linkcode Metrics.meter}, which times its reads and writes and knows
 * which services are watched. Gauges (sessions, queued bytes, backend
 * connected, instances per service) are read when scraped.
 *
 * Counting costs plain additions on the paths it sits on: counters and
 * histograms are kept in numbers of their own, and handed to `prom-client`
 * (which formats them) when scraped.
 *
 * `discover_instances{service}` has one series per service the agent
 * watches, at most {@linkcode MAX_SERVICE_SERIES}: the largest services get
 * their own series, the rest are summed under `service="_other"` (not a
 * valid service name, so it never collides with one).
 *
 * @module
 */

import { Counter, Gauge, type Metric, Registry } from "prom-client";
import type {
  Backend,
  BackendCatalog,
  BackendState,
  BackendStatus,
  BackendWatch,
  BackendWatcher,
  StoredRecord,
  WatchOptions,
  WriteOptions,
} from "../backends/backend.ts";
import { OwnerConflictError } from "../backends/backend.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { methodTable } from "../protocol/methods.ts";
import type { InstanceCounts } from "../protocol/types.ts";

/** Most `discover_instances` series: the largest services, then `_other`. */
export const MAX_SERVICE_SERIES = 100;

/** The `service` label of the services beyond {@linkcode MAX_SERVICE_SERIES}. */
export const OTHER_SERVICES = "_other";

/** The `method` label of calls of a method the agent does not have. */
export const UNKNOWN_METHOD = "_unknown";

/** Bucket bounds 1, 2.5 and 5 times each power of ten from `from` to `to`, in seconds. */
function buckets(from: number, to: number): number[] {
  const out: number[] = [];
  for (let decade = 1e-5; decade <= to; decade *= 10) {
    for (const step of [1, 2.5, 5]) {
      const bound = Number((decade * step).toPrecision(3));
      if (bound >= from && bound <= to) out.push(bound);
    }
  }
  return out;
}

/** Buckets of `discover_request_duration_seconds`: 0.1 ms to 10 s. */
const REQUEST_BUCKETS = buckets(0.0001, 10);

/** Buckets of `discover_backend_request_duration_seconds`: 50 µs to 25 s. */
const BACKEND_BUCKETS = buckets(0.00005, 25);

/** The backend calls timed by `discover_backend_request_duration_seconds`. */
export type BackendOp = "put" | "delete" | "catalog" | "stateAt";

/** The instances of the services one watched scope shows. */
export interface ScopeCounts {
  /**
   * Every service of the scope that has instances, with their number.
   *
   * @returns The services and their instance counts.
   */
  catalog(): readonly { service: string; instances: number }[];
}

/** Where the gauges of {@linkcode Metrics} are read, at each scrape. */
export interface MetricsSources {
  /**
   * Open sessions.
   *
   * @returns Their number.
   */
  sessions(): number;
  /**
   * Bytes waiting in the send queues of every session.
   *
   * @returns Their sum.
   */
  queuedBytes(): number;
  /**
   * Whether the backend says its store is reachable.
   *
   * @returns `true` when it is.
   */
  connected(): boolean;
  /**
   * The instances registered through the agent by health, and its checks.
   *
   * @returns The counts.
   */
  checks?(): InstanceCounts;
  /**
   * The view of a watched scope, if it is open.
   *
   * @param scope A service name, or `"*"`.
   * @returns The view, if any.
   */
  view(scope: string): ScopeCounts | undefined;
}

/**
 * The `code` label of a method call's outcome: `ok`, or the JSON-RPC error
 * code of its error response (`-32603` for an error that is not an
 * {@linkcode RpcError}).
 *
 * @example Usage
 * ```ts
 * import { codeOf } from "./metrics.ts";
 * import { RpcError } from "../protocol/errors.ts";
 * console.log(codeOf(new RpcError(-32602, "bad params"))); // "-32602"
 * ```
 *
 * @param error What the call threw, or `undefined` when it succeeded.
 * @returns The label.
 */
export function codeOf(error?: unknown): string {
  if (error === undefined) return "ok";
  return String(
    error instanceof RpcError ? error.code : ErrorCode.InternalError,
  );
}

/**
 * The instance counts of the services watched, merged (a service shown by
 * its own scope and by `"*"` counts once), the largest
 * {@linkcode MAX_SERVICE_SERIES} kept and the rest summed under
 * {@linkcode OTHER_SERVICES}.
 *
 * @example Usage
 * ```ts
 * import { serviceSeries } from "./metrics.ts";
 * const view = { catalog: () => [{ service: "api", instances: 2 }] };
 * console.log(serviceSeries([view], 10)); // [["api", 2]]
 * ```
 *
 * @param views The views of the watched scopes.
 * @param max Most series.
 * @returns `[service, instances]` pairs, largest first.
 */
export function serviceSeries(
  views: Iterable<ScopeCounts>,
  max: number = MAX_SERVICE_SERIES,
): [string, number][] {
  const counts = new Map<string, number>();
  for (const view of views) {
    for (const { service, instances } of view.catalog()) {
      counts.set(service, Math.max(counts.get(service) ?? 0, instances));
    }
  }
  const sorted = [...counts].sort((a, b) =>
    b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
  );
  if (sorted.length <= max) return sorted;
  const kept = sorted.slice(0, max - 1);
  let rest = 0;
  for (let i = max - 1; i < sorted.length; i++) rest += sorted[i][1];
  kept.push([OTHER_SERVICES, rest]);
  return kept;
}

/** The calls of one method: by outcome, and their durations. */
interface MethodCounts {
  /** The `method` label. */
  readonly method: string;
  /** Calls answered `ok`. */
  ok: number;
  /** Calls answered with an error, by JSON-RPC error code. */
  readonly errors: Map<string, number>;
  /** Their durations. */
  readonly seconds: TallySeries;
}

/** One series of a {@linkcode Tally}: per-bucket counts, sum and count. */
interface TallySeries {
  /** Observations per bucket (not cumulative); the last is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A histogram with one label, kept in plain numbers and registered as a
 * `prom-client` metric: the registry formats what {@linkcode Tally.get}
 * returns, as it does for its own histograms.
 */
class Tally {
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #series = new Map<string, TallySeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelName: string,
    readonly buckets: readonly number[],
  ) {}

  /** The series of a label value, created on first use. */
  series(label: string): TallySeries {
    let series = this.#series.get(label);
    if (series === undefined) {
      series = {
        counts: new Float64Array(this.buckets.length + 1),
        sum: 0,
        count: 0,
      };
      this.#series.set(label, series);
    }
    return series;
  }

  observe(series: TallySeries, value: number): void {
    const buckets = this.buckets;
    let i = 0;
    while (i < buckets.length && value > buckets[i]) i++;
    series.counts[i]++;
    series.sum += value;
    series.count++;
  }

  /** The samples, as `prom-client`'s histograms give them. */
  get() {
    const values: {
      metricName: string;
      labels: Record<string, string | number>;
      value: number;
    }[] = [];
    for (const [label, series] of this.#series) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += series.counts[i];
        values.push({
          metricName: `${this.name}_bucket`,
          labels: {
            [this.labelName]: label,
            le: i < this.buckets.length ? this.buckets[i] : "+Inf",
          },
          value: cumulative,
        });
      }
      const labels = { [this.labelName]: label };
      values.push({
        metricName: `${this.name}_sum`,
        labels,
        value: series.sum,
      });
      values.push({
        metricName: `${this.name}_count`,
        labels,
        value: series.count,
      });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }
}

/**
 * The metrics of one agent: a `prom-client` registry of its own, and what
 * the agent's layers call to count.
 *
 * @example Usage
 * ```ts
 * import { Metrics } from "./metrics.ts";
 * const metrics = new Metrics({
 *   sessions: () => 1,
 *   queuedBytes: () => 0,
 *   connected: () => true,
 *   view: () => undefined,
 * });
 * metrics.request("discover.register", "ok", 0.001);
 * const text = await metrics.text();
 * console.log(text.includes("discover_sessions 1")); // true
 * ```
 */
export class Metrics {
  /** The content type of {@linkcode Metrics.text}. */
  readonly contentType: string;
  readonly #registry = new Registry();
  /**
   * Calls and their durations, by the method called: the agent's methods,
   * and {@linkcode UNKNOWN_METHOD} for every other name.
   */
  readonly #requests = new Map<string, MethodCounts>();
  readonly #requestSeconds: Tally;
  #events = 0;
  #drops = 0;
  readonly #backendSeconds: Tally;
  /** Duration series, by operation. */
  readonly #backendSeries: Partial<Record<BackendOp, TallySeries>> = {};
  readonly #backendErrors = new Map<string, number>();
  /** Watches open, by scope. */
  readonly #watched = new Map<string, number>();
  /** Check runs, by result. */
  readonly #checkRuns = { passed: 0, failed: 0 };

  /**
   * Creates the registry and the metrics.
   *
   * @param sources Where the gauges are read at each scrape.
   */
  constructor(sources: MetricsSources) {
    const registers = [this.#registry];
    this.contentType = this.#registry.contentType;
    new Gauge({
      name: "discover_sessions",
      help: "Open client sessions (WebSocket connections).",
      registers,
      collect() {
        this.set(sources.sessions());
      },
    });
    const watched = this.#watched;
    new Gauge({
      name: "discover_instances",
      help:
        `Instances of each service the agent watches, in ${MAX_SERVICE_SERIES} series at most: beyond that many services, the ${
          MAX_SERVICE_SERIES - 1
        } largest get a series of their own and the rest are summed under service="${OTHER_SERVICES}".`,
      labelNames: ["service"],
      registers,
      collect() {
        this.reset();
        const views = [...watched.keys()]
          .map((scope) => sources.view(scope))
          .filter((view) => view !== undefined);
        for (const [service, n] of serviceSeries(views)) {
          this.set({ service }, n);
        }
      },
    });
    const requests = this.#requests;
    new Counter({
      name: "discover_requests_total",
      help:
        `JSON-RPC method calls answered, by method (${UNKNOWN_METHOD} for names the agent does not have) and outcome (ok, or the JSON-RPC error code).`,
      labelNames: ["method", "code"],
      registers,
      collect() {
        this.reset();
        for (const { method, ok, errors } of requests.values()) {
          if (ok > 0) this.inc({ method, code: "ok" }, ok);
          for (const [code, n] of errors) this.inc({ method, code }, n);
        }
      },
    });
    this.#requestSeconds = new Tally(
      "discover_request_duration_seconds",
      "Time from a method call's arrival to its result, by method; a subscribe includes waiting for its view and for the send queue to drain.",
      "method",
      REQUEST_BUCKETS,
    );
    this.#registry.registerMetric(this.#requestSeconds as unknown as Metric);
    const totals = () => ({ events: this.#events, drops: this.#drops });
    new Counter({
      name: "discover_events_sent_total",
      help:
        "discover.event notifications sent to subscribers (snapshots, replays and live changes, current and stale markers included).",
      registers,
      collect() {
        this.reset();
        this.inc(totals().events);
      },
    });
    new Counter({
      name: "discover_slow_consumer_drops_total",
      help:
        "Sessions dropped as slow consumers (close code 4008): their send queue went beyond maxQueueBytes.",
      registers,
      collect() {
        this.reset();
        this.inc(totals().drops);
      },
    });
    new Gauge({
      name: "discover_queue_bytes",
      help:
        "Bytes waiting in the send queues of every session (WebSocket bufferedAmount).",
      registers,
      collect() {
        this.set(sources.queuedBytes());
      },
    });
    const counts = sources.checks;
    if (counts) {
      new Gauge({
        name: "discover_registered_instances",
        help:
          "Instances registered through this agent (held by its clients, or kept for their grace period), by health.",
        labelNames: ["health"],
        registers,
        collect() {
          const { passing, critical } = counts();
          this.set({ health: "passing" }, passing);
          this.set({ health: "critical" }, critical);
        },
      });
      new Gauge({
        name: "discover_checks",
        help: "Health checks the agent runs.",
        registers,
        collect() {
          this.set(counts().checks);
        },
      });
    }
    const runs = this.#checkRuns;
    new Counter({
      name: "discover_check_runs_total",
      help:
        "Health check runs, by result (passed, failed); only a change of health writes to the backend.",
      labelNames: ["result"],
      registers,
      collect() {
        this.reset();
        this.inc({ result: "passed" }, runs.passed);
        this.inc({ result: "failed" }, runs.failed);
      },
    });
    new Gauge({
      name: "discover_backend_connected",
      help: "1 when the backend says its store is reachable, else 0.",
      registers,
      collect() {
        this.set(sources.connected() ? 1 : 0);
      },
    });
    this.#backendSeconds = new Tally(
      "discover_backend_request_duration_seconds",
      "Time the backend took for a read or write, by operation (put, delete, catalog, stateAt), failures included.",
      "op",
      BACKEND_BUCKETS,
    );
    this.#registry.registerMetric(this.#backendSeconds as unknown as Metric);
    const errors = this.#backendErrors;
    for (const op of ["put", "delete", "catalog", "stateAt"]) errors.set(op, 0);
    new Counter({
      name: "discover_backend_errors_total",
      help:
        "Backend reads and writes that failed, by operation; neither a conditional write that found another owner nor a write abandoned because its session closed counts.",
      labelNames: ["op"],
      registers,
      collect() {
        this.reset();
        for (const [op, n] of errors) this.inc({ op }, n);
      },
    });
  }

  /**
   * Counts one method call and its duration.
   *
   * @param method The method called; names the agent does not have count
   *   as {@linkcode UNKNOWN_METHOD}.
   * @param code `ok`, or the JSON-RPC error code (see {@linkcode codeOf}).
   * @param seconds How long it took.
   */
  request(method: string, code: string, seconds: number): void {
    const counts = this.#requests.get(method) ?? this.#method(method);
    if (code === "ok") counts.ok++;
    else counts.errors.set(code, (counts.errors.get(code) ?? 0) + 1);
    this.#requestSeconds.observe(counts.seconds, seconds);
  }

  /** The counts of a method seen for the first time (of every unknown name). */
  #method(method: string): MethodCounts {
    const name = Object.hasOwn(methodTable, method) ? method : UNKNOWN_METHOD;
    let counts = this.#requests.get(name);
    if (counts === undefined) {
      counts = {
        method: name,
        ok: 0,
        errors: new Map(),
        seconds: this.#requestSeconds.series(name),
      };
      // Keyed by the label: a caller's unknown names take no room.
      this.#requests.set(name, counts);
    }
    return counts;
  }

  /**
   * Counts event notifications sent.
   *
   * @param n How many.
   */
  eventsSent(n = 1): void {
    this.#events += n;
  }

  /**
   * Counts one health check run.
   *
   * @param ok Whether it passed.
   */
  checkRun(ok: boolean): void {
    if (ok) this.#checkRuns.passed++;
    else this.#checkRuns.failed++;
  }

  /** Counts a session dropped as a slow consumer. */
  drop(): void {
    this.#drops++;
  }

  /**
   * Counts one backend call.
   *
   * @param op The operation.
   * @param seconds How long it took.
   * @param failed Whether it failed.
   */
  backendCall(op: BackendOp, seconds: number, failed: boolean): void {
    const tally = this.#backendSeconds;
    tally.observe(this.#backendSeries[op] ??= tally.series(op), seconds);
    if (failed) {
      this.#backendErrors.set(op, (this.#backendErrors.get(op) ?? 0) + 1);
    }
  }

  /**
   * Wraps a backend: its reads and writes are timed and their failures
   * counted, and the scopes it watches are the services
   * `discover_instances` reports.
   *
   * @param backend The backend.
   * @returns A backend that does what `backend` does.
   */
  meter(backend: Backend): Backend {
    return new MeteredBackend(backend, this, this.#watched);
  }

  /**
   * The metrics in the Prometheus text format.
   *
   * @returns The text, of type {@linkcode Metrics.contentType}.
   */
  text(): Promise<string> {
    return this.#registry.metrics();
  }
}

/**
 * A watch of a {@linkcode MeteredBackend}: counted in `watched` until it
 * closes. (A class: an agent may watch thousands of scopes, and a closure
 * each costs more than this.)
 */
class MeteredWatch implements BackendWatch {
  readonly #inner: BackendWatch;
  readonly #scope: string;
  /** Counts of open watches by scope, until this one closes. */
  #watched: Map<string, number> | undefined;

  constructor(
    inner: BackendWatch,
    scope: string,
    watched: Map<string, number>,
  ) {
    this.#inner = inner;
    this.#scope = scope;
    this.#watched = watched;
  }

  close(): Promise<void> {
    const watched = this.#watched;
    if (watched !== undefined) {
      this.#watched = undefined;
      const n = watched.get(this.#scope)! - 1;
      if (n > 0) watched.set(this.#scope, n);
      else watched.delete(this.#scope);
    }
    return this.#inner.close();
  }
}

/** A backend whose calls are counted by a {@linkcode Metrics}. */
class MeteredBackend implements Backend {
  readonly name: string;
  readonly stateAt?: (
    scope: string,
    revision: number,
  ) => Promise<BackendState | undefined>;
  readonly keeps?: (service: string, addr: string) => boolean;
  readonly release?: (
    service: string,
    addr: string,
    options?: { ifOwner?: string },
  ) => void;
  readonly version?: (service: string, addr: string) => string | undefined;
  readonly lease?: () => { id: string; left: number };
  readonly #inner: Backend;
  readonly #metrics: Metrics;
  readonly #watched: Map<string, number>;

  constructor(inner: Backend, metrics: Metrics, watched: Map<string, number>) {
    this.#inner = inner;
    this.#metrics = metrics;
    this.#watched = watched;
    this.name = inner.name;
    // Optional methods stay absent when the backend lacks them: their
    // absence means something (see Backend).
    if (inner.stateAt) {
      const stateAt = inner.stateAt.bind(inner);
      this.stateAt = (scope, revision) =>
        this.#timed("stateAt", () => stateAt(scope, revision));
    }
    if (inner.keeps) this.keeps = inner.keeps.bind(inner);
    if (inner.release) this.release = inner.release.bind(inner);
    if (inner.version) this.version = inner.version.bind(inner);
    if (inner.lease) this.lease = inner.lease.bind(inner);
  }

  open(events: BackendStatus): Promise<void> {
    return this.#inner.open(events);
  }

  watch(
    scope: string,
    watcher: BackendWatcher,
    options?: WatchOptions,
  ): BackendWatch {
    const watch = this.#inner.watch(scope, watcher, options);
    const watched = this.#watched;
    watched.set(scope, (watched.get(scope) ?? 0) + 1);
    return new MeteredWatch(watch, scope, watched);
  }

  catalog(): Promise<BackendCatalog> {
    return this.#timed("catalog", () => this.#inner.catalog());
  }

  put(record: StoredRecord, options?: WriteOptions): Promise<number> {
    const started = performance.now();
    let promise: Promise<number>;
    try {
      promise = this.#inner.put(record, options);
    } catch (error) {
      promise = Promise.reject(error);
    }
    return this.#settled("put", started, promise, options?.signal);
  }

  delete(
    service: string,
    addr: string,
    options?: WriteOptions,
  ): Promise<number | undefined> {
    const started = performance.now();
    let promise: Promise<number | undefined>;
    try {
      promise = this.#inner.delete(service, addr, options);
    } catch (error) {
      promise = Promise.reject(error);
    }
    return this.#settled("delete", started, promise, options?.signal);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #timed<T>(op: BackendOp, call: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let promise: Promise<T>;
    try {
      promise = call();
    } catch (error) {
      promise = Promise.reject(error);
    }
    return this.#settled(op, started, promise);
  }

  /** Counts a call once `promise`, started at `started`, settles. */
  #settled<T>(
    op: BackendOp,
    started: number,
    promise: Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const metrics = this.#metrics;
    return promise.then((result) => {
      metrics.backendCall(op, (performance.now() - started) / 1000, false);
      return result;
    }, (error) => {
      // A conflict is an answer of the store, and an abandoned write was
      // given up by the agent: neither is the store failing.
      const failed = !(error instanceof OwnerConflictError) &&
        !(signal?.aborted ?? false);
      metrics.backendCall(op, (performance.now() - started) / 1000, failed);
      throw error;
    });
  }
}
