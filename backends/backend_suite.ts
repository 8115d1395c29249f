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
  OwnerConflictError,
  type StoredRecord,
} from "./backend.ts";

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
 * @param options Extra `Deno.test` options (sanitizers, ignore).
 */
export function testBackend(
  name: string,
  make: () => Backend | Promise<Backend>,
  options: Omit<Deno.TestDefinition, "name" | "fn"> = {},
) {
  const test = (
    title: string,
    fn: (b: Backend, w: Recorder) => Promise<void>,
  ) =>
    Deno.test({ ...options, name: `${name} backend: ${title}` }, async () => {
      const backend = await make();
      const watcher = new Recorder();
      await backend.open(watcher);
      try {
        await fn(backend, watcher);
      } finally {
        await backend.close();
      }
    });

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
    if (change.type === "put") assert.deepEqual(change.record, stored);
  });

  test("a reopened watcher gets the current state as a reset", async (b) => {
    await b.put(record("svc", "h:1"));
    const last = await b.put(record("svc", "h:2", "o2", { k: "v" }));
    await b.close();
    const again = new Recorder();
    await b.open(again);
    await again.until(last);
    const state = again.resets.at(-1)!;
    assert.ok(state.revision >= last);
    assert.deepEqual(
      state.records.map((r) => `${r.service}/${r.addr}/${r.owner}`).sort(),
      ["svc/h:1/o1", "svc/h:2/o2"],
    );
  });
}
