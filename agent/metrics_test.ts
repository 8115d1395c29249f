// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  type Backend,
  OwnerConflictError,
  type StoredRecord,
} from "../backends/backend.ts";
import { MemoryBackend } from "../backends/memory.ts";
import { RpcError } from "../protocol/errors.ts";
import {
  codeOf,
  MAX_SERVICE_SERIES,
  Metrics,
  type MetricsSources,
  OTHER_SERVICES,
  serviceSeries,
  UNKNOWN_METHOD,
} from "./metrics.ts";
import { View } from "./view.ts";

/** The value of one sample line of `text`, or `undefined`. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    if (line.slice(0, at) === series) return Number(line.slice(at + 1));
  }
  return undefined;
}

function record(service: string, addr: string, owner = "o"): StoredRecord {
  return { service, addr, attrs: {}, owner, registeredAt: 0 };
}

function sources(overrides: Partial<MetricsSources> = {}): MetricsSources {
  return {
    sessions: () => 0,
    queuedBytes: () => 0,
    connected: () => true,
    view: () => undefined,
    ...overrides,
  };
}

Deno.test("codeOf names success ok, an RpcError by its code, anything else -32603", () => {
  assert.equal(codeOf(), "ok");
  assert.equal(codeOf(new RpcError(-32602, "bad params")), "-32602");
  assert.equal(codeOf(new Error("boom")), "-32603");
});

Deno.test("serviceSeries keeps the largest services and sums the rest under _other", () => {
  const services = Array.from({ length: 150 }, (_, i) => ({
    service: `s${i}`,
    instances: i + 1,
  }));
  const series = serviceSeries([{ catalog: () => services }]);
  assert.equal(series.length, MAX_SERVICE_SERIES);
  assert.deepEqual(series[0], ["s149", 150]);
  assert.deepEqual(series[MAX_SERVICE_SERIES - 2], ["s51", 52]);
  // s0..s50: 1 + 2 + ... + 51.
  assert.deepEqual(series.at(-1), [OTHER_SERVICES, (51 * 52) / 2]);
  const total = series.reduce((sum, [, n]) => sum + n, 0);
  assert.equal(total, (150 * 151) / 2, "no instance is lost by the cap");
});

Deno.test("serviceSeries counts a service shown by its own scope and by * once", () => {
  const own = { catalog: () => [{ service: "api", instances: 2 }] };
  const all = {
    catalog: () => [
      { service: "api", instances: 2 },
      { service: "db", instances: 1 },
    ],
  };
  assert.deepEqual(serviceSeries([own, all]), [["api", 2], ["db", 1]]);
  assert.deepEqual(serviceSeries([]), []);
});

Deno.test("Metrics reads its gauges at each scrape", async () => {
  let sessions = 3, queued = 512, connected = true;
  const metrics = new Metrics(sources({
    sessions: () => sessions,
    queuedBytes: () => queued,
    connected: () => connected,
  }));
  assert.equal(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8");
  let text = await metrics.text();
  assert.equal(sample(text, "discover_sessions"), 3);
  assert.equal(sample(text, "discover_queue_bytes"), 512);
  assert.equal(sample(text, "discover_backend_connected"), 1);
  sessions = 0, queued = 0, connected = false;
  text = await metrics.text();
  assert.equal(sample(text, "discover_sessions"), 0);
  assert.equal(sample(text, "discover_queue_bytes"), 0);
  assert.equal(sample(text, "discover_backend_connected"), 0);
});

Deno.test("Metrics counts calls by method and code, unknown methods under one label", async () => {
  const metrics = new Metrics(sources());
  metrics.request("discover.register", "ok", 0.002);
  metrics.request("discover.register", "ok", 0.004);
  metrics.request("discover.register", "-32602", 0.0001);
  metrics.request("no.such.method", "-32601", 0.0001);
  metrics.request("another.unknown", "-32601", 0.0001);
  metrics.eventsSent(3);
  metrics.eventsSent(0);
  metrics.drop();
  const text = await metrics.text();
  const requests = (method: string, code: string) =>
    sample(
      text,
      `discover_requests_total{method="${method}",code="${code}"}`,
    );
  assert.equal(requests("discover.register", "ok"), 2);
  assert.equal(requests("discover.register", "-32602"), 1);
  assert.equal(requests(UNKNOWN_METHOD, "-32601"), 2);
  assert.ok(!text.includes("no.such.method"), "a caller picks no label");
  assert.equal(
    sample(
      text,
      'discover_request_duration_seconds_count{method="discover.register"}',
    ),
    3,
  );
  assert.ok(
    Math.abs(
      sample(
        text,
        'discover_request_duration_seconds_sum{method="discover.register"}',
      )! - 0.0061,
    ) < 1e-9,
  );
  assert.equal(sample(text, "discover_events_sent_total"), 3);
  assert.equal(sample(text, "discover_slow_consumer_drops_total"), 1);
});

/** A memory backend whose next write fails as an unreachable store would. */
class FailingBackend extends MemoryBackend {
  fail = false;
  override put(
    ...args: Parameters<MemoryBackend["put"]>
  ): Promise<number> {
    if (this.fail) return Promise.reject(new Error("store unreachable"));
    return super.put(...args);
  }
}

Deno.test("a metered backend times its calls and counts failures of the store only", async () => {
  const metrics = new Metrics(sources());
  const store = new FailingBackend();
  const backend = metrics.meter(store);
  assert.equal(backend.name, "memory");
  // Optional methods are there exactly when the store has them: their
  // absence means something to the agent.
  const inner: Backend = store;
  for (const method of ["stateAt", "keeps", "release", "version"] as const) {
    assert.equal(typeof backend[method], typeof inner[method], method);
  }
  const bare: Backend = {
    name: "bare",
    open: (events) => store.open(events),
    watch: (scope, watcher) => store.watch(scope, watcher),
    catalog: () => store.catalog(),
    put: (record, options) => store.put(record, options),
    delete: (service, addr, options) => store.delete(service, addr, options),
    close: () => store.close(),
  };
  assert.equal(metrics.meter(bare).stateAt, undefined);
  assert.equal(metrics.meter(bare).keeps, undefined);
  // The lease bounds how long a campaign may believe it leads: a metered
  // backend that dropped it would let campaigns outlive the etcd lease.
  assert.equal(metrics.meter(bare).lease, undefined);
  const leased: Backend = { ...bare, lease: () => ({ id: "7", left: 1234 }) };
  assert.deepEqual(metrics.meter(leased).lease?.(), { id: "7", left: 1234 });
  await backend.open({ status: () => {} });
  await backend.put(record("api", "10.0.0.1:80"));
  await backend.catalog();
  // Another owner's record: a conflict is the store's answer, not a failure.
  await assert.rejects(
    backend.delete("api", "10.0.0.1:80", { ifOwner: "other" }),
    OwnerConflictError,
  );
  // A write abandoned by its closed session is not a failure either.
  const aborted = new AbortController();
  aborted.abort(new Error("the session closed"));
  await assert.rejects(
    backend.put(record("api", "10.0.0.2:80"), { signal: aborted.signal }),
  );
  store.fail = true;
  await assert.rejects(
    backend.put(record("api", "10.0.0.3:80")),
    /unreachable/,
  );
  await backend.close();
  const text = await metrics.text();
  const seconds = (op: string) =>
    sample(
      text,
      `discover_backend_request_duration_seconds_count{op="${op}"}`,
    );
  assert.equal(seconds("put"), 3);
  assert.equal(seconds("delete"), 1);
  assert.equal(seconds("catalog"), 1);
  assert.equal(sample(text, 'discover_backend_errors_total{op="put"}'), 1);
  assert.equal(sample(text, 'discover_backend_errors_total{op="delete"}'), 0);
  assert.equal(sample(text, 'discover_backend_errors_total{op="catalog"}'), 0);
});

Deno.test("discover_instances reports the services the backend watches, as they change", async () => {
  const views = new Map<string, View>();
  const metrics = new Metrics(sources({ view: (scope) => views.get(scope) }));
  const backend = metrics.meter(new MemoryBackend());
  await backend.open({ status: () => {} });
  await backend.put(record("api", "10.0.0.1:80"));
  await backend.put(record("api", "10.0.0.2:80"));
  await backend.put(record("db", "10.0.0.3:80"));
  const instances = async (service: string) =>
    sample(await metrics.text(), `discover_instances{service="${service}"}`);
  // Nothing watched: no series, though the store holds records.
  assert.equal(await instances("api"), undefined);
  const view = new View();
  views.set("api", view);
  const watch = backend.watch("api", view);
  assert.equal(await instances("api"), 2);
  assert.equal(await instances("db"), undefined, "db is not watched");
  await backend.delete("api", "10.0.0.1:80");
  assert.equal(await instances("api"), 1);
  await watch.close();
  assert.equal(await instances("api"), undefined, "no longer watched");
  await backend.close();
});

Deno.test("Metrics counts check runs by result and reads registered instances by health", async () => {
  let counts = { registered: 3, passing: 2, critical: 1, checks: 2 };
  const metrics = new Metrics(sources({ checks: () => counts }));
  metrics.checkRun(true);
  metrics.checkRun(true);
  metrics.checkRun(false);
  let text = await metrics.text();
  assert.equal(sample(text, 'discover_check_runs_total{result="passed"}'), 2);
  assert.equal(sample(text, 'discover_check_runs_total{result="failed"}'), 1);
  assert.equal(
    sample(text, 'discover_registered_instances{health="critical"}'),
    1,
  );
  assert.equal(sample(text, "discover_checks"), 2);
  counts = { registered: 3, passing: 3, critical: 0, checks: 2 };
  text = await metrics.text();
  assert.equal(
    sample(text, 'discover_registered_instances{health="passing"}'),
    3,
  );
  assert.equal(
    sample(text, 'discover_registered_instances{health="critical"}'),
    0,
  );
});
