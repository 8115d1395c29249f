// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type {
  BackendWatcher,
  StoredRecord,
  WriteOptions,
} from "../backends/backend.ts";
import { MemoryBackend } from "../backends/memory.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import {
  Checks,
  type CheckSpec,
  type CheckStartOptions,
  type HealthState,
} from "./checks.ts";
import { createLogger } from "./log.ts";
import { NO_RESULT_YET, Registry } from "./registry.ts";
import { Views } from "./views.ts";
import { until } from "../tests/_wait.ts";

async function setup(ttlMs = 10_000, backend = new MemoryBackend()) {
  const views = new Views(backend);
  await views.open();
  // The view of "svc", held for the whole test.
  const { view } = await views.acquire("svc");
  const registry = new Registry(backend, views, {
    ttlMs,
    maxRegistrations: 3,
    log: createLogger("error", { write: () => {} }),
  });
  return { view, registry, backend };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const reg = (addr: string, attrs: Record<string, string> = {}) => ({
  service: "svc",
  addr,
  attrs,
});
const isCode = (code: number) => (e: unknown) =>
  e instanceof RpcError && e.code === code;

Deno.test("an owner registers, re-registers and unregisters its own instances", async () => {
  const { view, registry } = await setup();
  const owner = registry.attach("a");
  const first = await registry.register(owner, reg("h:1", { v: "1" }));
  assert.equal(view.get("svc", "h:1")?.owner, "a");
  const same = await registry.register(owner, reg("h:1", { v: "1" }));
  assert.equal(same.revision, first.revision, "identical attrs write nothing");
  const changed = await registry.register(owner, reg("h:1", { v: "2" }));
  assert.ok(changed.revision > first.revision);
  assert.equal(
    await registry.unregister(owner, { service: "svc", addr: "h:1" }),
    true,
  );
  assert.equal(
    await registry.unregister(owner, { service: "svc", addr: "h:1" }),
    false,
  );
  assert.equal(view.list("*").length, 0);
});

Deno.test("a live owner's instance cannot be changed or removed by another owner", async () => {
  const { view, registry } = await setup();
  const a = registry.attach("a"), b = registry.attach("b");
  await registry.register(a, reg("h:1", { v: "a" }));
  await assert.rejects(
    registry.register(b, reg("h:1")),
    isCode(ErrorCode.NotOwner),
  );
  await assert.rejects(
    registry.unregister(b, { service: "svc", addr: "h:1" }),
    isCode(ErrorCode.NotOwner),
  );
  assert.deepEqual(view.get("svc", "h:1")?.instance.attrs, { v: "a" });
});

Deno.test("the registration limit counts an owner's instances", async () => {
  const { registry } = await setup();
  const a = registry.attach("a");
  for (const port of [1, 2, 3]) await registry.register(a, reg(`h:${port}`));
  await assert.rejects(
    registry.register(a, reg("h:4")),
    isCode(ErrorCode.LimitExceeded),
  );
  await registry.register(a, reg("h:3", { changed: "yes" })); // re-registering is fine
  await registry.unregister(a, { service: "svc", addr: "h:1" });
  await registry.register(a, reg("h:4"));
});

Deno.test("a clean detach removes the owner's instances at once", async () => {
  const { view, registry } = await setup();
  const a = registry.attach("a");
  await registry.register(a, reg("h:1"));
  await registry.register(a, reg("h:2"));
  registry.detach(a, true);
  await sleep(10);
  assert.equal(view.list("*").length, 0);
  assert.equal(registry.owners, 0);
});

Deno.test("a lost owner's instances stay for the TTL, then go", async () => {
  const { view, registry } = await setup(1000);
  const a = registry.attach("a");
  await registry.register(a, reg("h:1"));
  const lostAt = Date.now();
  registry.detach(a, false);
  await sleep(50);
  assert.equal(view.list("*").length, 1, "still there within the TTL");
  await until(() => view.list("*").length === 0, "gone after the TTL");
  assert.ok(Date.now() - lostAt >= 990, "not before the TTL");
  assert.equal(registry.owners, 0);
});

Deno.test("an owner that comes back within the TTL keeps its instances", async () => {
  const { view, registry } = await setup(100);
  const a = registry.attach("a");
  await registry.register(a, reg("h:1"));
  registry.detach(a, false);
  const again = registry.attach("a");
  assert.equal(again, a);
  await sleep(250);
  assert.equal(view.list("*").length, 1);
  // With two sessions open, one clean close leaves the instances alone.
  registry.attach("a");
  registry.detach(a, true);
  await sleep(10);
  assert.equal(view.list("*").length, 1);
  registry.close();
});

Deno.test("another owner takes over a lost owner's instance; the expiry spares it", async () => {
  const { view, registry } = await setup(100);
  const a = registry.attach("a"), b = registry.attach("b");
  await registry.register(a, reg("h:1", { v: "1" }));
  await registry.register(a, reg("h:2"));
  registry.detach(a, false);
  await registry.register(b, reg("h:1", { v: "1" }));
  assert.equal(view.get("svc", "h:1")?.owner, "b");
  await until(() => view.get("svc", "h:2") === undefined, "expiry of h:2");
  assert.equal(view.get("svc", "h:1")?.owner, "b", "taken over: kept");
});

Deno.test("a failing backend gives BackendUnavailable; a stale view is retried", async () => {
  class Flaky extends MemoryBackend {
    fail = false;
    conflicts = 0;
    override put(record: StoredRecord, options?: WriteOptions) {
      if (this.fail) return Promise.reject(new Error("connection refused"));
      if (this.conflicts > 0) {
        this.conflicts--;
        return super.put(record, { ifOwner: "someone-else" });
      }
      return super.put(record, options);
    }
  }
  const backend = new Flaky();
  const { view, registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  backend.fail = true;
  await assert.rejects(
    registry.register(a, reg("h:1")),
    (e: unknown) =>
      e instanceof RpcError && e.code === ErrorCode.BackendUnavailable &&
      e.message.includes("connection refused"),
  );
  backend.fail = false;
  backend.conflicts = 1; // one conflict, then it succeeds on the next attempt
  await registry.register(a, reg("h:1"));
  assert.equal(view.get("svc", "h:1")?.owner, "a");
  backend.conflicts = 5; // more conflicts than attempts
  await assert.rejects(
    registry.register(a, reg("h:1", { v: "2" })),
    isCode(ErrorCode.NotOwner),
  );
});

Deno.test("a write that lands after the owner left is not orphaned", async () => {
  class Slow extends MemoryBackend {
    override async put(record: StoredRecord, options?: WriteOptions) {
      await sleep(200);
      return super.put(record, options);
    }
  }
  const { view, registry } = await setup(300, new Slow());
  const lost = registry.attach("lost");
  const inFlight = registry.register(lost, reg("h:1"));
  registry.detach(lost, false); // lost while its write is in flight
  const clean = registry.attach("clean");
  const inFlight2 = registry.register(clean, reg("h:2"));
  registry.detach(clean, true); // closed while its write is in flight
  await Promise.all([inFlight, inFlight2]);
  await until(() => view.get("svc", "h:2") === undefined, "clean: removed");
  assert.ok(view.get("svc", "h:1"), "lost: kept for the TTL");
  await until(() => view.get("svc", "h:1") === undefined, "lost: expired");
  assert.equal(registry.owners, 0);
});

/** A memory backend whose deletes fail while `down`, and that counts them. */
class Unreachable extends MemoryBackend {
  down = false;
  deletes: WriteOptions[] = [];
  released: string[] = [];
  override release(
    service: string,
    addr: string,
    options?: { ifOwner?: string },
  ) {
    this.released.push(`${service}/${addr}`);
    super.release(service, addr, options);
  }
  override delete(service: string, addr: string, options?: WriteOptions) {
    this.deletes.push(options ?? {});
    if (this.down) return Promise.reject(new Error("connection refused"));
    return super.delete(service, addr, options);
  }
}

Deno.test("a removal the backend cannot make is retried until it can, only for records this agent keeps", async () => {
  const backend = new Unreachable();
  const { view, registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  await registry.register(a, reg("h:1"));
  backend.down = true;
  registry.detach(a, true); // clean close while the backend refuses deletes
  assert.deepEqual(backend.released, ["svc/h:1"], "released at once");
  await until(() => backend.deletes.length >= 2, "retried");
  assert.ok(view.get("svc", "h:1"), "still there while the backend is away");
  assert.equal(registry.pendingRemovals, 1);
  assert.ok(backend.deletes.every((o) => o.ifOwner === "a" && o.ifKept));
  backend.down = false;
  await until(() => view.get("svc", "h:1") === undefined, "removed", 15_000);
  assert.equal(registry.pendingRemovals, 0);
  assert.equal(registry.owners, 0);
});

Deno.test("a registration cancels a removal still waiting for the backend", async () => {
  const backend = new Unreachable();
  const { view, registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  await registry.register(a, reg("h:1", { v: "1" }));
  backend.down = true;
  registry.detach(a, true);
  await until(() => registry.pendingRemovals === 1, "queued");
  const again = registry.attach("a");
  // Same attributes: the pending removal means it must be written again.
  await registry.register(again, reg("h:1", { v: "1" }));
  assert.equal(registry.pendingRemovals, 0);
  backend.down = false;
  await sleep(600); // longer than the first retry delays
  assert.equal(view.get("svc", "h:1")?.owner, "a", "not removed after all");
});

Deno.test("while the backend is unreachable writes fail at once, and an unregister is carried out once it is back", async () => {
  const backend = new Unreachable();
  const { view, registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  await registry.register(a, reg("h:1"));
  await registry.register(a, reg("h:2", { v: "1" }));
  view.status(false);
  backend.down = true;
  const unavailable = (e: unknown) =>
    isCode(ErrorCode.BackendUnavailable)(e) &&
    (e as Error).message.includes("cannot reach its backend");
  await assert.rejects(registry.register(a, reg("h:3")), unavailable);
  await assert.rejects(
    registry.unregister(a, { service: "svc", addr: "h:1" }),
    unavailable,
  );
  // A view cut off from the store cannot say that there is nothing; what
  // this agent keeps of it is removed once the store is back.
  await assert.rejects(
    registry.unregister(a, { service: "svc", addr: "h:9" }),
    unavailable,
  );
  assert.deepEqual(backend.released, ["svc/h:1", "svc/h:9"]);
  // An unchanged re-registration (a client restoring after a reconnection)
  // is answered from what the agent keeps.
  const same = await registry.register(a, reg("h:2", { v: "1" }));
  assert.equal(same.addr, "h:2");
  assert.ok(view.get("svc", "h:1"), "fail-static until the backend is back");
  backend.down = false;
  view.status(true);
  await until(() => view.get("svc", "h:1") === undefined, "removed", 15_000);
  assert.ok(view.get("svc", "h:2"));
  assert.equal(view.get("svc", "h:3"), undefined);
});

Deno.test("an unregister the view no longer knows still tells the backend", async () => {
  const backend = new Unreachable();
  const { registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  assert.equal(
    await registry.unregister(a, { service: "svc", addr: "h:9" }),
    false,
  );
  await until(() => backend.deletes.length === 1, "told");
  assert.deepEqual(backend.deletes, [{
    ifOwner: "a",
    ifKept: true,
    ifVersion: undefined,
  }]);
  assert.deepEqual(backend.released, ["svc/h:9"]);
});

Deno.test("a conflict seen while the view lags the store is looked at again once the view has caught up", async () => {
  /** Delivers changes to the view 50 ms late, as a remote store's stream may. */
  class Lagging extends MemoryBackend {
    override watch(scope: string, watcher: BackendWatcher) {
      return super.watch(scope, {
        changes: (c) => void setTimeout(() => watcher.changes(c), 50),
        reset: (s) => watcher.reset(s),
        status: (c) => watcher.status(c),
      });
    }
  }
  const backend = new Lagging();
  const { view, registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  // The store gets a's record before the view does (a lease restore, say).
  await backend.put({
    service: "svc",
    addr: "h:1",
    attrs: {},
    owner: "a",
    registeredAt: 1,
  });
  assert.equal(view.get("svc", "h:1"), undefined, "the view lags");
  const instance = await registry.register(a, reg("h:1", { v: "2" }));
  assert.deepEqual(instance.attrs, { v: "2" });
  assert.equal(view.get("svc", "h:1")?.owner, "a");
});

Deno.test("a call whose session closed before its write reached the backend writes nothing", async () => {
  /** Holds every put until `open()`: the store is slow (a lease being granted, say). */
  class Gated extends MemoryBackend {
    #gate = Promise.withResolvers<void>();
    puts = 0;
    open_() {
      this.#gate.resolve();
    }
    override async put(record: StoredRecord, options: WriteOptions = {}) {
      this.puts++;
      await this.#gate.promise;
      return await super.put(record, options);
    }
  }
  const backend = new Gated();
  const { view, registry } = await setup(10_000, backend);
  const a = registry.attach("a");
  const session = new AbortController();
  const call = registry.register(a, reg("h:1", { v: "old" }), {
    signal: session.signal,
  });
  await until(() => backend.puts === 1, "the put waits for the store");
  // The client gave up on this call (its connection was cut) and went on.
  session.abort(new Error("the session closed"));
  backend.open_();
  await assert.rejects(call, isCode(ErrorCode.ConnectionClosed));
  assert.equal(view.get("svc", "h:1"), undefined, "nothing was written");
  assert.deepEqual(registry.owned(a), []);
  // An unregister abandoned the same way removes nothing.
  await registry.register(a, reg("h:2"));
  const gone = new AbortController();
  gone.abort(new Error("the session closed"));
  await assert.rejects(
    registry.unregister(a, { service: "svc", addr: "h:2" }, {
      signal: gone.signal,
    }),
    isCode(ErrorCode.ConnectionClosed),
  );
  assert.equal(view.get("svc", "h:2")?.owner, "a");
});

Deno.test("a write whose outcome is unknown when its session closed is still covered by the owner's removal", async () => {
  /** Writes the record, then fails as if the answer was lost (a reset path). */
  class LostAnswer extends MemoryBackend {
    session?: AbortController;
    override async put(
      record: StoredRecord,
      options: WriteOptions = {},
    ): Promise<number> {
      const revision = await super.put(record, options);
      // The session closed meanwhile (its client was killed).
      this.session?.abort(new Error("the session closed"));
      await sleep(0);
      throw new Error(`connection reset after revision ${revision}`);
    }
  }
  const backend = new LostAnswer();
  const { view, registry } = await setup(300, backend);
  const a = registry.attach("a");
  backend.session = new AbortController();
  const call = registry.register(a, reg("h:1"), {
    signal: backend.session.signal,
  });
  registry.detach(a, false); // lost: its instances go after the TTL
  await assert.rejects(call, isCode(ErrorCode.ConnectionClosed));
  assert.equal(view.get("svc", "h:1")?.owner, "a", "the write landed");
  // Nobody calls for it again: the lost owner's expiry removes it.
  await until(() => view.get("svc", "h:1") === undefined, "expired");
  assert.equal(registry.owners, 0);
});

/**
 * Checks that run nothing: a test sets a check's result and tells the
 * registry, as a real check does when its health changes.
 */
class ScriptedChecks extends Checks {
  started: { key: string; initial: HealthState }[] = [];
  readonly #running = new Map<
    string,
    { state: HealthState; onChange: (state: HealthState) => void }
  >();
  override start(
    key: string,
    _spec: CheckSpec,
    options: CheckStartOptions,
  ): void {
    this.started.push({ key, initial: options.initial });
    this.#running.set(key, {
      state: options.initial,
      onChange: options.onChange,
    });
  }
  override stop(key: string): void {
    this.#running.delete(key);
  }
  override state(key: string): HealthState | undefined {
    return this.#running.get(key)?.state;
  }
  override has(key: string): boolean {
    return this.#running.has(key);
  }
  override get size(): number {
    return this.#running.size;
  }
  override close(): void {
    this.#running.clear();
  }
  /** The check of `key` now says `state`. */
  result(key: string, state: HealthState): void {
    const running = this.#running.get(key);
    assert.ok(running, `no check runs for ${key}`);
    running.state = state;
    running.onChange(state);
  }
}

const CHECK: CheckSpec = {
  http: "http://h/healthz",
  intervalMs: 1000,
  timeoutMs: 500,
  failuresBeforeCritical: 1,
  successesBeforePassing: 1,
};

async function withChecks(
  backend = new MemoryBackend(),
  limits: { maxRegistrations?: number; maxCheckRunsPerSecond?: number } = {},
) {
  const views = new Views(backend);
  await views.open();
  const { view } = await views.acquire("svc");
  const checks = new ScriptedChecks();
  const registry = new Registry(backend, views, {
    ttlMs: 10_000,
    maxRegistrations: limits.maxRegistrations ?? 3,
    maxCheckRunsPerSecond: limits.maxCheckRunsPerSecond,
    log: createLogger("error", { write: () => {} }),
    checks,
  });
  return { view, registry, backend, checks, views };
}

Deno.test("an owner's checks run at most maxCheckRunsPerSecond times a second in all: beyond, a registration is refused and changes nothing", async () => {
  const { view, registry, checks } = await withChecks(undefined, {
    maxRegistrations: 10,
    maxCheckRunsPerSecond: 3,
  });
  const a = registry.attach("a"), b = registry.attach("b");
  const every = (seconds: number) => ({
    ...CHECK,
    intervalMs: seconds * 1000,
    timeoutMs: 100,
  });
  await registry.register(a, { ...reg("h:1"), check: every(1) });
  await registry.register(a, { ...reg("h:2"), check: every(0.5) }); // 3 a second
  await assert.rejects(
    registry.register(a, { ...reg("h:3"), check: every(10) }),
    (e: unknown) =>
      isCode(ErrorCode.LimitExceeded)(e) &&
      /checks would run 3\.1 times a second in all .* more than 3;/.test(
        (e as Error).message,
      ),
  );
  assert.equal(view.get("svc", "h:3"), undefined, "nothing written");
  // A faster check of a held instance, same attributes: it replaces the
  // instance's own check in the sum (2 + 2), and is refused too.
  await assert.rejects(
    registry.register(a, { ...reg("h:1"), check: every(0.5) }),
    isCode(ErrorCode.LimitExceeded),
  );
  assert.equal(checks.started.length, 2, "no check started");
  await registry.register(a, { ...reg("h:1"), check: every(1) }); // the same
  await registry.register(a, reg("h:5")); // no check: no runs
  // Each client has its own runs a second.
  await registry.register(b, { ...reg("h:4"), check: every(0.5) });
  // A check that goes makes room.
  await registry.unregister(a, { service: "svc", addr: "h:2" });
  await registry.register(a, { ...reg("h:3"), check: every(0.5) });
  assert.equal(checks.size, 3);
});

Deno.test("an instance with a check starts critical and is written only when its health changes", async () => {
  const { view, registry, checks } = await withChecks();
  const owner = registry.attach("a");
  const first = await registry.register(owner, {
    ...reg("h:1"),
    check: CHECK,
  });
  assert.equal(first.health, "critical");
  assert.equal(first.note, NO_RESULT_YET);
  assert.deepEqual(checks.started.map((s) => s.initial.health), ["critical"]);
  checks.result("svc/h:1", { health: "passing" });
  await until(
    () => view.get("svc", "h:1")?.instance.health === "passing",
    "health or note passing in the view",
  );
  const passing = view.get("svc", "h:1")!.instance;
  assert.ok(passing.revision > first.revision);
  assert.equal(passing.note, undefined);
  // The same result again is no change: nothing is written.
  checks.result("svc/h:1", { health: "passing" });
  await sleep(50);
  assert.equal(view.revision, passing.revision);
  checks.result("svc/h:1", { health: "critical", note: "HTTP 500" });
  await until(
    () => view.get("svc", "h:1")?.instance.note === "HTTP 500",
    "health or note HTTP 500 in the view",
  );
  // Re-registering with the same check keeps it and its health.
  const again = await registry.register(owner, {
    ...reg("h:1"),
    check: CHECK,
  });
  assert.equal(again.health, "critical");
  assert.equal(checks.started.length, 1, "the running check is kept");
  assert.deepEqual(registry.counts(), {
    registered: 1,
    passing: 0,
    critical: 1,
    checks: 1,
  });
  // Without a check, a re-registration stops it and the instance passes.
  const plain = await registry.register(owner, reg("h:1"));
  assert.equal(plain.health, "passing");
  assert.equal(checks.size, 0);
});

Deno.test("unregistering, a takeover and a lost owner's expiry stop the instance's check", async () => {
  const { registry, checks } = await withChecks();
  const a = registry.attach("a");
  await registry.register(a, { ...reg("h:1"), check: CHECK });
  await registry.unregister(a, { service: "svc", addr: "h:1" });
  assert.equal(checks.size, 0);
  await registry.register(a, { ...reg("h:2"), check: CHECK });
  checks.result("svc/h:2", { health: "passing" });
  registry.detach(a, false); // lost: kept for the TTL, its check too
  assert.equal(checks.size, 1);
  const b = registry.attach("b");
  const taken = await registry.register(b, { ...reg("h:2"), check: CHECK });
  // Another owner's check starts over: not ready until it passes.
  assert.equal(taken.health, "critical");
  assert.deepEqual(
    checks.started.map((s) => s.initial.health),
    ["critical", "critical", "critical"],
  );
  assert.equal(checks.size, 1);
  registry.close();
});

Deno.test("an owner coming back to a restarted agent resumes its check without a write", async () => {
  const backend = new MemoryBackend();
  const before = await withChecks(backend);
  const owner = before.registry.attach("a");
  await before.registry.register(owner, { ...reg("h:1"), check: CHECK });
  before.checks.result("svc/h:1", { health: "passing" });
  await until(
    () => before.view.get("svc", "h:1")?.instance.health === "passing",
    "health or note passing in the view",
  );
  before.registry.close();
  const revision = before.view.revision;
  // The next agent process, same store: the record is there, passing.
  const after = await withChecks(backend);
  const again = after.registry.attach("a");
  const resumed = await after.registry.register(again, {
    ...reg("h:1"),
    check: CHECK,
  });
  assert.equal(resumed.health, "passing");
  assert.equal(after.view.revision, revision, "nothing was written");
  assert.deepEqual(after.checks.started[0].initial, { health: "passing" });
  after.registry.close();
});

Deno.test("setHealth: the owner's report, combined with its check", async () => {
  const { view, registry, checks } = await withChecks();
  const a = registry.attach("a"), b = registry.attach("b");
  await registry.register(a, { ...reg("h:1"), check: CHECK });
  await registry.register(a, reg("h:2"));
  checks.result("svc/h:1", { health: "passing" });
  await until(
    () => view.get("svc", "h:1")?.instance.health === "passing",
    "health or note passing in the view",
  );
  const down = await registry.setHealth(a, {
    service: "svc",
    addr: "h:1",
    health: "critical",
    note: "database unreachable",
  });
  assert.equal(down.health, "critical");
  assert.equal(down.note, "database unreachable");
  // A passing check does not override the owner's report.
  checks.result("svc/h:1", { health: "passing" });
  await sleep(50);
  assert.equal(view.get("svc", "h:1")?.instance.health, "critical");
  const up = await registry.setHealth(a, {
    service: "svc",
    addr: "h:1",
    health: "passing",
  });
  assert.equal(up.health, "passing");
  // Saying what is already so writes nothing.
  const same = await registry.setHealth(a, {
    service: "svc",
    addr: "h:1",
    health: "passing",
  });
  assert.equal(same.revision, up.revision);
  // A report survives a re-registration of the same owner.
  await registry.setHealth(a, {
    service: "svc",
    addr: "h:2",
    health: "critical",
  });
  const kept = await registry.register(a, reg("h:2", { v: "2" }));
  assert.equal(kept.health, "critical");
  await assert.rejects(
    registry.setHealth(b, { service: "svc", addr: "h:1", health: "critical" }),
    isCode(ErrorCode.NotOwner),
  );
  await assert.rejects(
    registry.setHealth(a, { service: "svc", addr: "h:9", health: "critical" }),
    isCode(ErrorCode.InvalidParams),
  );
  registry.close();
});

Deno.test("a health change the backend refuses is retried until it lands", async () => {
  const backend = new MemoryBackend();
  const { view, registry, checks } = await withChecks(backend);
  const owner = registry.attach("a");
  await registry.register(owner, { ...reg("h:1"), check: CHECK });
  const put = backend.put.bind(backend);
  let refusals = 2;
  backend.put = (record: StoredRecord, options?: WriteOptions) =>
    refusals-- > 0
      ? Promise.reject(new Error("store unreachable"))
      : put(record, options);
  checks.result("svc/h:1", { health: "passing" });
  await until(
    () => view.get("svc", "h:1")?.instance.health === "passing",
    "health or note passing in the view",
  );
  assert.ok(refusals < 0, "the write was refused twice, then made");
  registry.close();
});
