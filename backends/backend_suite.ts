// Copyright the discover authors. BSD-3-Clause license.

/**
 * The shared test suite every backend must pass. A backend's own test
 * module calls {@linkcode testBackend} with a factory:
 *
 * ```ts ignore
 * import { testBackend } from "./backend_suite.ts";
 * testBackend("memory", () => new MemoryBackend());
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Backend,
  type BackendChange,
  type BackendState,
  type BackendWatch,
  type BackendWatcher,
  OwnerConflictError,
  type StoredRecord,
} from "./backend.ts";

/**
 * Opens a backend and watches one scope (every service by default) with
 * the same watcher, which then also hears the backend's own status.
 * Resolves once the watch delivered its first state, or said it cannot
 * (the store is unreachable).
 *
 * @example Usage
 * ```ts ignore
 * const watch = await openWatching(backend, recorder);
 * ```
 *
 * @param backend The backend.
 * @param watcher Where state, changes and status go.
 * @param scope A service name, or `"*"`.
 * @returns The watch.
 */
export async function openWatching(
  backend: Backend,
  watcher: BackendWatcher,
  scope = "*",
): Promise<BackendWatch> {
  await backend.open(watcher);
  const { promise: settled, resolve } = Promise.withResolvers<void>();
  const watch = backend.watch(scope, {
    changes: (changes) => watcher.changes(changes),
    reset: (state) => (watcher.reset(state), resolve()),
    status: (connected) => {
      watcher.status(connected);
      if (!connected) resolve();
    },
  });
  await settled;
  return watch;
}

/** A watcher that records everything a backend tells it. */
class Recorder {
  resets: BackendState[] = [];
  changeLog: BackendChange[] = [];
  connected?: boolean;
  #waiters: (() => void)[] = [];

  changes(changes: BackendChange[]) {
    this.changeLog.push(...changes);
    for (const wake of this.#waiters.splice(0)) wake();
  }
  reset(state: BackendState) {
    this.resets.push(state);
    for (const wake of this.#waiters.splice(0)) wake();
  }
  status(connected: boolean) {
    this.connected = connected;
  }

  /** Waits until a first state arrived. */
  async settled(ms = 10_000) {
    const deadline = Date.now() + ms;
    while (this.resets.length === 0) {
      const left = deadline - Date.now();
      assert.ok(left > 0, `no state was delivered in ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }

  /** Waits until a change at or above `revision` (or a reset covering it) arrived. */
  async until(revision: number, ms = 10_000) {
    const deadline = Date.now() + ms;
    const reached = () =>
      this.changeLog.some((c) => c.revision >= revision) ||
      this.resets.some((r) => r.revision >= revision);
    while (!reached()) {
      const left = deadline - Date.now();
      assert.ok(left > 0, `revision ${revision} was not delivered in ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
}

function record(
  service: string,
  addr: string,
  owner = "o1",
  attrs: Record<string, string> = {},
): StoredRecord {
  return { service, addr, attrs, owner, registeredAt: 1_700_000_000_000 };
}

/**
 * Registers the shared backend tests with `Deno.test`.
 *
 * @param name The backend's name, used in test names.
 * @param make Creates a fresh, empty backend for each test.
 * @param options Extra `Deno.test` options (sanitizers, ignore), and
 *   whether the backend keeps history (`history: true`: it implements
 *   `stateAt`, which is then tested).
 */
export function testBackend(
  name: string,
  make: () => Backend | Promise<Backend>,
  options: Omit<Deno.TestDefinition, "name" | "fn"> & { history?: boolean } =
    {},
) {
  const { history, ...testOptions } = options;
  const test = (
    title: string,
    fn: (b: Backend, w: Recorder) => Promise<void>,
  ) =>
    Deno.test(
      { ...testOptions, name: `${name} backend: ${title}` },
      async () => {
        const backend = await make();
        const watcher = new Recorder();
        await openWatching(backend, watcher);
        await watcher.settled();
        try {
          await fn(backend, watcher);
        } finally {
          await backend.close();
        }
      },
    );

  test(
    "open delivers the initial state and says it is connected",
    (b, w) => {
      assert.equal(w.resets.length, 1);
      assert.deepEqual(w.resets[0].records, []);
      assert.equal(w.connected, true);
      assert.equal(typeof b.name, "string");
      return Promise.resolve();
    },
  );

  test(
    "put and delete are delivered in order with increasing revisions",
    async (b, w) => {
      const r1 = await b.put(record("svc", "h:1", "o1", { a: "1" }));
      const r2 = await b.put(record("svc", "h:2"));
      const r3 = await b.put(record("svc", "h:1", "o1", { a: "2" }));
      const r4 = await b.delete("svc", "h:2");
      assert.ok(r1 < r2 && r2 < r3 && r3 < r4!, `${r1} ${r2} ${r3} ${r4}`);
      await w.until(r4!);
      assert.deepEqual(
        w.changeLog.map((c) => [c.type, c.revision]),
        [["put", r1], ["put", r2], ["put", r3], ["delete", r4]],
      );
      const third = w.changeLog[2];
      assert.equal(third.type, "put");
      if (third.type === "put") {
        assert.deepEqual(third.record.attrs, {
          a: "2",
        });
      }
      const fourth = w.changeLog[3];
      assert.equal(fourth.type, "delete");
      if (fourth.type === "delete") {
        assert.deepEqual([fourth.service, fourth.addr], ["svc", "h:2"]);
      }
    },
  );

  test(
    "delete of a missing record resolves undefined and changes nothing",
    async (b, w) => {
      assert.equal(await b.delete("svc", "h:404"), undefined);
      const r = await b.put(record("svc", "h:1"));
      await w.until(r);
      assert.equal(w.changeLog.length, 1);
    },
  );

  test("ifOwner guards writes atomically", async (b, w) => {
    const r1 = await b.put(record("svc", "h:1", "o1"), { ifOwner: null });
    await assert.rejects(
      b.put(record("svc", "h:1", "o2"), { ifOwner: null }),
      (e: unknown) => e instanceof OwnerConflictError && e.owner === "o1",
    );
    await assert.rejects(
      b.put(record("svc", "h:1", "o2", { x: "y" }), { ifOwner: "o2" }),
      OwnerConflictError,
    );
    await assert.rejects(
      b.delete("svc", "h:1", { ifOwner: "o2" }),
      OwnerConflictError,
    );
    const r2 = await b.put(record("svc", "h:1", "o2"), { ifOwner: "o1" });
    const r3 = await b.delete("svc", "h:1", { ifOwner: "o2" });
    await w.until(r3!);
    // Only the successful writes were delivered.
    assert.deepEqual(w.changeLog.map((c) => c.revision), [r1, r2, r3]);
    const last = w.changeLog[1];
    if (last.type === "put") assert.equal(last.record.owner, "o2");
  });

  test("a put is delivered with everything the agent stored", async (b, w) => {
    const stored = record("api", "[::1]:8080", "owner-x", {
      zone: "b",
      v: "1.2",
    });
    const r = await b.put(stored);
    await w.until(r);
    const change = w.changeLog.at(-1)!;
    assert.equal(change.type, "put");
    if (change.type === "put") {
      assert.deepEqual(change.record, { ...stored, created: r });
    }
  });

  test(
    "a record's created revision is its first put's, kept by later puts, new after a delete",
    async (b, w) => {
      const first = await b.put(record("svc", "h:1", "o", { v: "1" }));
      const second = await b.put(record("svc", "h:1", "o2", { v: "2" }));
      await w.until(second);
      const created = () => {
        const last = w.changeLog.at(-1)!;
        return last.type === "put" ? last.record.created : undefined;
      };
      assert.equal(created(), first);
      await b.delete("svc", "h:1");
      const again = await b.put(record("svc", "h:1"));
      await w.until(again);
      assert.equal(created(), again);
      assert.ok(again > first);
    },
  );

  test("a reopened watcher gets the current state as a reset", async (b) => {
    await b.put(record("svc", "h:1"));
    const last = await b.put(record("svc", "h:2", "o2", { k: "v" }));
    await b.close();
    const again = new Recorder();
    await openWatching(b, again);
    await again.until(last);
    const state = again.resets.at(-1)!;
    assert.ok(state.revision >= last);
    assert.deepEqual(
      state.records.map((r) => `${r.service}/${r.addr}/${r.owner}`).sort(),
      ["svc/h:1/o1", "svc/h:2/o2"],
    );
  });

  test(
    "a watch of one service gets that service only, from its state on",
    async (b) => {
      await b.put(record("web", "h:1"));
      await b.put(record("db", "h:1"));
      const web = new Recorder();
      const watch = b.watch("web", web);
      await web.settled();
      assert.deepEqual(
        web.resets[0].records.map((r) => `${r.service}/${r.addr}`),
        ["web/h:1"],
      );
      await b.put(record("db", "h:2"));
      const r = await b.put(record("web", "h:2"));
      await web.until(r);
      assert.deepEqual(
        web.changeLog.map((c) => c.type === "put" ? c.record.service : ""),
        ["web"],
      );
      await watch.close();
      const after = await b.put(record("web", "h:3"));
      const all = new Recorder();
      const everything = b.watch("*", all);
      await all.until(after);
      assert.equal(web.changeLog.length, 1, "a closed watch gets nothing");
      await everything.close();
    },
  );

  test("two watches of one service each get every change", async (b) => {
    const one = new Recorder(), two = new Recorder();
    const w1 = b.watch("web", one), w2 = b.watch("web", two);
    await one.settled();
    await two.settled();
    const r = await b.put(record("web", "h:1"));
    await one.until(r);
    await two.until(r);
    assert.equal(one.changeLog.length, 1);
    assert.equal(two.changeLog.length, 1);
    await w1.close();
    const r2 = await b.delete("web", "h:1");
    await two.until(r2!);
    assert.equal(one.changeLog.length, 1);
    await w2.close();
  });

  test("catalog counts the instances of every service", async (b) => {
    await b.put(record("web", "h:1"));
    await b.put(record("web", "h:2"));
    const last = await b.put(record("db", "h:1"));
    const catalog = await b.catalog();
    assert.ok(catalog.revision >= last);
    assert.deepEqual(catalog.services, [
      { service: "db", instances: 1 },
      { service: "web", instances: 2 },
    ]);
    await b.delete("db", "h:1");
    assert.deepEqual((await b.catalog()).services, [
      { service: "web", instances: 2 },
    ]);
  });

  if (!history) return;
  test("stateAt reads a scope as it was", async (b, w) => {
    assert.ok(b.stateAt, "a backend with history implements stateAt");
    const r1 = await b.put(record("web", "h:1", "o1", { v: "1" }));
    await b.put(record("db", "h:1"));
    await b.put(record("web", "h:1", "o1", { v: "2" }));
    const r4 = await b.put(record("web", "h:2"));
    await w.until(r4);
    const past = await b.stateAt!("web", r1);
    assert.ok(past);
    assert.equal(past.revision, r1);
    assert.equal(past.epoch, w.resets[0].epoch);
    assert.deepEqual(
      past.records.map((r) => [r.service, r.addr, r.attrs.v]),
      [["web", "h:1", "1"]],
    );
  });

  test(
    "a watch with since starts at that past state and delivers every change after it",
    async (b, w) => {
      const r1 = await b.put(record("web", "h:1", "o1", { v: "1" }));
      const r2 = await b.put(record("web", "h:1", "o1", { v: "2" }));
      await b.put(record("db", "h:1"));
      const r4 = await b.put(record("web", "h:2"));
      const r5 = await b.delete("web", "h:2");
      await w.until(r5!);
      const epoch = w.resets[0].epoch;
      const past = new Recorder();
      const watch = b.watch("web", past, { since: r1, epoch });
      await past.until(r5!);
      assert.equal(past.resets[0].revision, r1);
      assert.deepEqual(
        past.resets[0].records.map((r) => [r.addr, r.attrs.v]),
        [["h:1", "1"]],
      );
      assert.deepEqual(
        past.changeLog.map((c) => [c.type, c.revision]),
        [["put", r2], ["put", r4], ["delete", r5]],
      );
      await watch.close();
      // Another epoch: the current state instead.
      const other = new Recorder();
      const current = b.watch("web", other, { since: r1, epoch: "elsewhere" });
      await other.settled();
      assert.ok(other.resets[0].revision >= r5!);
      assert.deepEqual(
        other.resets[0].records.map((r) => [r.addr, r.attrs.v]),
        [["h:1", "2"]],
      );
      await current.close();
    },
  );
}
