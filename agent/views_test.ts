// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type {
  BackendState,
  BackendWatch,
  BackendWatcher,
} from "../backends/backend.ts";
import { MemoryBackend } from "../backends/memory.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { Views, type ViewsOptions } from "./views.ts";

/** A memory backend that counts the watches open per scope. */
class Counting extends MemoryBackend {
  open_ = new Map<string, number>();
  override watch(scope: string, watcher: BackendWatcher): BackendWatch {
    this.open_.set(scope, (this.open_.get(scope) ?? 0) + 1);
    const watch = super.watch(scope, watcher);
    return {
      close: () => {
        this.open_.set(scope, this.open_.get(scope)! - 1);
        return watch.close();
      },
    };
  }
  watching(scope: string): number {
    return this.open_.get(scope) ?? 0;
  }
}

const record = (service: string, addr: string) => ({
  service,
  addr,
  attrs: {},
  owner: "o",
  registeredAt: 1,
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(options: ViewsOptions = {}) {
  const backend = new Counting();
  const views = new Views(backend, options);
  await views.open();
  return { backend, views };
}

Deno.test("Views: holders of one service share one view and one watch", async () => {
  const { backend, views } = await setup();
  await backend.put(record("db", "h:1"));
  await backend.put(record("web", "h:1"));
  const a = await views.acquire("db");
  const b = await views.acquire("db");
  assert.equal(a.view, b.view);
  assert.equal(backend.watching("db"), 1);
  assert.equal(backend.watching("web"), 0, "an unused service is not watched");
  assert.deepEqual(a.view.list("db").map((i) => i.addr), ["h:1"]);
  assert.equal(views.size, 1);
  a.release();
  b.release();
  await views.close();
  assert.equal(backend.watching("db"), 0);
});

Deno.test("Views: a service nobody holds is released after the idle time, not before", async () => {
  const { backend, views } = await setup({ idleMs: 100 });
  const first = await views.acquire("db");
  first.release();
  first.release(); // a second release does nothing
  // Held again within the idle time: the same view, still watched.
  const again = views.hold("db");
  assert.equal(again.view, first.view);
  await sleep(200);
  assert.equal(backend.watching("db"), 1, "held: never released");
  again.release();
  await sleep(300);
  assert.equal(backend.watching("db"), 0, "idle: released");
  assert.equal(views.size, 0);
  assert.equal(views.peek("db"), undefined);
  const later = await views.acquire("db");
  assert.notEqual(later.view, first.view, "a new view once released");
  later.release();
  await views.close();
});

Deno.test("Views: beyond maxScopes the oldest idle scope makes room; when all are held, -32002", async () => {
  const { backend, views } = await setup({ maxScopes: 2 });
  const a = views.hold("a");
  const b = views.hold("b");
  assert.throws(
    () => views.hold("c"),
    (e: unknown) =>
      e instanceof RpcError && e.code === ErrorCode.LimitExceeded &&
      /maxScopes/.test(e.message),
  );
  a.release();
  const c = views.hold("c");
  assert.equal(backend.watching("a"), 0, "the idle scope was closed");
  assert.equal(backend.watching("c"), 1);
  assert.equal(views.size, 2);
  b.release();
  c.release();
  await views.close();
});

Deno.test("Views: an empty idle scope makes room first and goes after emptyIdleMs: lookups of names nobody registered never push out a warm service", async () => {
  const { backend, views } = await setup({
    maxScopes: 3,
    idleMs: 60_000,
    emptyIdleMs: 100,
  });
  await backend.put(record("db", "h:1"));
  (await views.acquire("db")).release();
  for (const name of ["x1", "x2"]) (await views.acquire(name)).release();
  // The table is full: the oldest empty scope makes room, not the older db.
  const x3 = await views.acquire("x3");
  assert.equal(backend.watching("db"), 1, "the warm service stays watched");
  assert.equal(backend.watching("x1"), 0, "the oldest empty scope made room");
  assert.equal(backend.watching("x2"), 1);
  x3.release();
  await sleep(400);
  assert.equal(backend.watching("x2"), 0, "empty and idle: gone");
  assert.equal(backend.watching("x3"), 0, "empty and idle: gone");
  assert.equal(backend.watching("db"), 1, "with instances: kept for idleMs");
  assert.equal(views.size, 1);
  // A scope emptied while held goes idle as an empty one.
  const db = await views.acquire("db");
  await backend.delete("db", "h:1");
  await db.view.settled;
  db.release();
  await sleep(400);
  assert.equal(backend.watching("db"), 0, "emptied, then idle: gone");
  await views.close();
});

Deno.test("Views: waitFor waits for the service's view and the view of every service", async () => {
  /** Delivers changes late to the "*" watch only. */
  class LateAll extends MemoryBackend {
    override watch(scope: string, watcher: BackendWatcher) {
      if (scope !== "*") return super.watch(scope, watcher);
      return super.watch(scope, {
        ...watcher,
        reset: (s) => watcher.reset(s),
        status: (c) => watcher.status(c),
        changes: (c) => void setTimeout(() => watcher.changes(c), 100),
      });
    }
  }
  const backend = new LateAll();
  const views = new Views(backend);
  await views.open();
  const db = await views.acquire("db");
  const all = await views.acquire("*");
  const revision = await backend.put(record("db", "h:1"));
  assert.equal(db.view.revision, revision, "the service's view has it");
  assert.equal(all.view.revision, 0, "the view of every service lags");
  await views.waitFor("db", revision, 5000);
  assert.equal(all.view.revision, revision);
  db.release();
  all.release();
  await views.close();
});

Deno.test("Views: one history budget for every view", async () => {
  const backend = new MemoryBackend();
  const views = new Views(backend, { historySize: 3 });
  await views.open();
  const a = await views.acquire("a");
  const b = await views.acquire("b");
  for (let i = 1; i <= 3; i++) await backend.put(record("a", `h:${i}`));
  assert.equal(views.budget.changes, 3);
  await backend.put(record("b", "h:1"));
  assert.equal(views.budget.changes, 3, "the bound holds across views");
  // The oldest change of all (one of a's) went; b kept its own.
  assert.equal(b.view.replay("b", undefined, 3)?.length, 1);
  b.release();
  a.release();
  await views.close();
  assert.equal(views.budget.changes, 0, "closed views give their share back");
});

Deno.test("Views: stateAt says undefined when the store cannot say", async () => {
  class Failing extends MemoryBackend {
    override stateAt(): Promise<BackendState> {
      return Promise.reject(
        new Error("mvcc: required revision has been compacted"),
      );
    }
  }
  const views = new Views(new Failing());
  await views.open();
  assert.equal(await views.stateAt("db", 1), undefined);
  const plain = new Views(new MemoryBackend());
  assert.equal(
    await plain.stateAt("db", 1),
    undefined,
    "a revision the store has not reached",
  );
});

Deno.test("Views: a new scope of a shut agent is refused with -32004", async () => {
  const { views } = await setup();
  await views.close();
  assert.throws(
    () => views.hold("db"),
    (e: unknown) => e instanceof RpcError && e.code === ErrorCode.ShuttingDown,
  );
});
