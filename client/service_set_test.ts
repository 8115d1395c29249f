// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type { Instance, ServiceEvent } from "../protocol/types.ts";
import {
  openSet,
  ServiceSet,
  type ServiceUpdate,
  ServiceUpdateEvent,
} from "./service_set.ts";

function inst(
  addr: string,
  revision: number,
  attrs: Record<string, string> = {},
): Instance {
  return {
    id: `svc/${addr}`,
    service: "svc",
    addr,
    attrs,
    revision,
    registeredAt: 0,
    created: revision,
    health: "passing",
  };
}
const ev = (
  kind: ServiceEvent["kind"],
  revision: number,
  instance?: Instance,
) => ({
  kind,
  revision,
  instance,
});
const show = (u: ServiceUpdate) => `${u.kind} ${u.instance.addr} ${u.revision}`;

function opened() {
  let unsubscribed = 0;
  const { set, control } = openSet("svc", { zone: "b" }, () => {
    unsubscribed++;
    return Promise.resolve();
  });
  return { set, control, unsubscribed: () => unsubscribed };
}

Deno.test("the initial snapshot fills the set silently and resolves initialized", async () => {
  const { set, control } = opened();
  const seen: string[] = [];
  set.addEventListener("update", (e) => seen.push(e.kind));
  control.beginSnapshot();
  control.apply(ev("up", 3, inst("h:1", 1)));
  control.apply(ev("up", 3, inst("h:2", 2)));
  assert.equal(set.connected, false);
  assert.deepEqual(set.online(), [], "a snapshot counts once complete");
  control.apply(ev("current", 3));
  await control.initialized;
  assert.equal(set.connected, true);
  assert.deepEqual(set.online().map((i) => i.addr), ["h:1", "h:2"]);
  assert.equal(set.revision, 3);
  assert.deepEqual(seen, []);
  assert.deepEqual(set.filter, { zone: "b" });
});

Deno.test("live events update online and offline, as iterator values and DOM events", async () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("up", 1, inst("h:1", 1)));
  control.apply(ev("current", 1));
  const events: ServiceUpdateEvent[] = [];
  set.addEventListener("update", (e) => events.push(e));
  const it = set.updates();
  control.apply(ev("up", 2, inst("h:2", 2)));
  control.apply(ev("update", 3, inst("h:1", 3, { v: "2" })));
  control.apply(ev("down", 4, inst("h:2", 2)));
  assert.deepEqual(
    [await it.next(), await it.next(), await it.next()].map((r) =>
      show(r.value!)
    ),
    ["up h:2 2", "update h:1 3", "down h:2 4"],
  );
  assert.deepEqual(events.map(show), [
    "up h:2 2",
    "update h:1 3",
    "down h:2 4",
  ]);
  assert.ok(events[0] instanceof ServiceUpdateEvent);
  assert.equal(events[0].type, "update");
  assert.deepEqual(set.online().map((i) => i.addr), ["h:1"]);
  assert.deepEqual(set.get("h:1")?.attrs, { v: "2" });
  assert.deepEqual(set.offline().map((i) => i.addr), ["h:2"]);
  // Back up: no longer offline.
  control.apply(ev("up", 5, inst("h:2", 5)));
  assert.deepEqual(set.offline(), []);
});

Deno.test("a resync snapshot emits only the real differences", async () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("up", 3, inst("h:1", 1)));
  control.apply(ev("up", 3, inst("h:2", 2)));
  control.apply(ev("up", 3, inst("h:3", 3)));
  control.apply(ev("current", 3));
  const it = set.updates();
  control.beginSnapshot();
  control.apply(ev("up", 9, inst("h:1", 1))); // same: nothing
  control.apply(ev("up", 9, inst("h:2", 7, { v: "2" }))); // changed: update
  control.apply(ev("up", 9, inst("h:4", 8))); // new: up
  control.apply(ev("current", 9)); // h:3 missing: down
  const got: string[] = [];
  for (let i = 0; i < 3; i++) got.push(show((await it.next()).value!));
  assert.deepEqual(got.sort(), ["down h:3 9", "up h:4 9", "update h:2 9"]);
  assert.deepEqual(set.online().map((i) => i.addr).sort(), [
    "h:1",
    "h:2",
    "h:4",
  ]);
});

Deno.test("duplicate events are ignored", async () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("current", 1));
  const seen: string[] = [];
  set.addEventListener("update", (e) => seen.push(show(e)));
  control.apply(ev("up", 2, inst("h:1", 2)));
  control.apply(ev("up", 2, inst("h:1", 2)));
  control.apply(ev("down", 3, inst("h:9", 1))); // never seen up
  control.apply(ev("down", 4, inst("h:1", 2)));
  control.apply(ev("down", 4, inst("h:1", 2)));
  assert.deepEqual(seen, ["up h:1 2", "down h:1 4"]);
  await set.close();
});

Deno.test("close ends iterators, dispatches close, unsubscribes once", async () => {
  const { set, control, unsubscribed } = opened();
  control.beginSnapshot();
  control.apply(ev("current", 1));
  let closes = 0;
  set.addEventListener("close", () => closes++);
  const it = set.updates();
  const pending = it.next();
  await set.close();
  await set.close();
  assert.deepEqual(await pending, { value: undefined, done: true });
  assert.equal(closes, 1);
  assert.equal(unsubscribed(), 1);
  assert.equal(set.closed, true);
  // Events after close change nothing.
  control.apply(ev("up", 2, inst("h:1", 2)));
  assert.deepEqual(set.online(), []);
  const late = set.updates();
  assert.equal((await late.next()).done, true);
});

Deno.test("an iterator stops on abort and on return; for await works on the set", async () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("current", 1));
  const controller = new AbortController();
  const it = set.updates({ signal: controller.signal });
  const pending = it.next();
  controller.abort();
  assert.equal((await pending).done, true);

  const seen: string[] = [];
  const loop = (async () => {
    for await (const u of set) {
      seen.push(show(u));
      if (seen.length === 2) break;
    }
  })();
  control.apply(ev("up", 2, inst("h:1", 2)));
  control.apply(ev("up", 3, inst("h:2", 3)));
  await loop;
  assert.deepEqual(seen, ["up h:1 2", "up h:2 3"]);
});

Deno.test("a set that ends before its snapshot rejects initialized", async () => {
  const { control } = opened();
  control.beginSnapshot();
  control.ended();
  await assert.rejects(control.initialized, /ended before its initial state/);
});

Deno.test("concurrent next() calls each get their own update", async () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("current", 1));
  const it = set.updates();
  const first = it.next(), second = it.next();
  control.apply(ev("up", 2, inst("h:1", 2)));
  control.apply(ev("up", 3, inst("h:2", 3)));
  assert.deepEqual(
    [(await first).value!, (await second).value!].map(show),
    ["up h:1 2", "up h:2 3"],
  );
});

Deno.test("a complete snapshot sets the revision, also when it is lower (a new epoch)", () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("up", 500, inst("h:1", 480)));
  control.apply(ev("current", 500));
  assert.equal(set.revision, 500);
  // The agent restarted on a memory backend: a snapshot of its new epoch.
  control.beginSnapshot();
  control.apply(ev("up", 3, inst("h:2", 2)));
  control.apply(ev("current", 3));
  assert.equal(set.revision, 3, "resume from the new epoch's revision");
  assert.deepEqual(set.online().map((i) => i.addr), ["h:2"]);
  // Live events of the new epoch still advance it.
  control.apply(ev("up", 4, inst("h:3", 4)));
  assert.equal(set.revision, 4);
});

Deno.test("a snapshot cut off half-way does not advance the revision", () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("up", 5, inst("h:1", 1)));
  control.apply(ev("current", 5));
  assert.equal(set.revision, 5);
  control.disconnected();
  assert.equal(set.connected, false);
  control.beginSnapshot(); // a resync snapshot at revision 9, cut off
  control.apply(ev("up", 9, inst("h:2", 8)));
  assert.equal(set.revision, 5, "resume from before the snapshot");
  assert.deepEqual(set.online().map((i) => i.addr), ["h:1"]);
});

Deno.test("a new revision with the same attributes is not reported as an update", () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("up", 1, inst("h:1", 1, { v: "1" })));
  control.apply(ev("current", 1));
  const seen: string[] = [];
  set.addEventListener("update", (e) => seen.push(show(e)));
  control.apply(ev("update", 7, inst("h:1", 7, { v: "1" })));
  assert.deepEqual(seen, []);
  assert.equal(set.get("h:1")?.revision, 7, "the set keeps the newest copy");
  control.apply(ev("update", 8, inst("h:1", 8, { v: "2" })));
  assert.deepEqual(seen, ["update h:1 8"]);
});

Deno.test("a stale event marks the set out of sync, fail-static, until current", () => {
  const { set, control } = opened();
  const signals: string[] = [];
  set.addEventListener("disconnect", () => signals.push("disconnect"));
  set.addEventListener("sync", () => signals.push("sync"));
  control.beginSnapshot();
  control.apply(ev("up", 5, inst("h:1", 3)));
  control.apply(ev("current", 5));
  assert.ok(set.connected);
  const syncedAt = set.lastSync;
  control.apply(ev("stale", 5));
  assert.equal(set.connected, false);
  assert.equal(set.lastSync, syncedAt, "lastSync: when it was last in sync");
  assert.deepEqual(set.online().map((i) => i.addr), ["h:1"], "state kept");
  control.apply(ev("stale", 5)); // said once
  control.apply(ev("up", 6, inst("h:2", 6))); // changes still apply
  control.apply(ev("current", 6));
  assert.ok(set.connected);
  assert.equal(set.revision, 6);
  assert.deepEqual(signals, ["sync", "disconnect", "sync"]);
  assert.deepEqual(set.online().map((i) => i.addr), ["h:1", "h:2"]);
});

Deno.test("the client's controls are not on the set, and updates() checks its options", () => {
  const { set } = opened();
  for (const name of ["apply", "beginSnapshot", "disconnected", "ended"]) {
    assert.equal(name in set, false, `set.${name} is not public`);
  }
  assert.equal("initialized" in set, false);
  assert.ok(set instanceof ServiceSet);
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => set.updates({ sigal: AbortSignal.abort() } as any),
    (e: unknown) =>
      e instanceof TypeError &&
      e.message ===
        "'sigal' is not an option of updates(): its options are signal",
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => set.updates("now" as any),
    /the options of updates\(\) must be an object/,
  );
});

Deno.test("get() finds an instance by address, or by id in a set of every service", () => {
  const { set, control } = opened();
  control.beginSnapshot();
  control.apply(ev("up", 1, inst("h:1", 1)));
  control.apply(ev("current", 1));
  assert.equal(set.get("h:1")?.id, "svc/h:1");
  const all = openSet("*", undefined, () => Promise.resolve());
  all.control.beginSnapshot();
  all.control.apply(ev("up", 1, inst("h:1", 1)));
  all.control.apply(ev("current", 1));
  assert.equal(all.set.get("svc/h:1")?.addr, "h:1");
  assert.equal(all.set.get("h:1"), undefined);
});

Deno.test("leader() is the lowest created, ties by address; 'leader' fires when another instance leads", async () => {
  const { set, control } = opened();
  const told: string[] = [];
  set.addEventListener("leader", (e) => {
    told.push(`${e.instance?.addr ?? "none"} ${e.revision}`);
  });
  control.beginSnapshot();
  control.apply(ev("up", 5, { ...inst("h:2", 4), created: 3 }));
  control.apply(ev("up", 5, { ...inst("h:1", 5), created: 3 }));
  control.apply(ev("up", 5, inst("h:9", 2)));
  // The agent's own leader events change nothing a set derives itself.
  control.apply(ev("leader", 5, inst("h:9", 2)));
  control.apply(ev("current", 5));
  await control.initialized;
  assert.equal(set.leader()?.addr, "h:9");
  assert.deepEqual(told, [], "the initial state is no change");
  control.apply(ev("update", 6, { ...inst("h:9", 6), created: 2 }));
  control.apply(ev("down", 7, inst("h:9", 6)));
  control.apply(ev("up", 8, inst("h:0", 8)));
  control.apply(ev("down", 9, { ...inst("h:1", 5), created: 3 }));
  control.apply(ev("down", 10, { ...inst("h:2", 4), created: 3 }));
  control.apply(ev("down", 11, inst("h:0", 8)));
  assert.deepEqual(told, ["h:1 7", "h:2 9", "h:0 10", "none 11"]);
  assert.equal(set.leader(), undefined);
  // A resumed snapshot that changes the leader says so once.
  control.beginSnapshot();
  control.apply(ev("up", 12, inst("h:4", 12)));
  control.apply(ev("current", 12));
  assert.deepEqual(told.at(-1), "h:4 12");
  assert.equal(set.leader()?.addr, "h:4");
});

Deno.test("a leader that comes back in a new life (one update with a greater created) is looked at again", async () => {
  const { set, control } = opened();
  const leaders: string[] = [];
  set.addEventListener("leader", (e) => {
    leaders.push(`${e.instance?.addr} ${e.instance?.created}`);
  });
  control.beginSnapshot();
  control.apply(ev("up", 3, inst("h:1", 1)));
  control.apply(ev("up", 3, inst("h:2", 2)));
  control.apply(ev("current", 3));
  await control.initialized;
  assert.equal(set.leader()?.addr, "h:1");
  // A replay folds h:1's removal and return into one update.
  control.apply(ev("update", 7, inst("h:1", 7)));
  assert.equal(set.leader()?.addr, "h:2");
  assert.deepEqual(leaders, ["h:2 2"]);
});

Deno.test("a first state gives the same instances, leader and updates whether something needs it by address first or not", async () => {
  const first = [inst("h:3", 7), inst("h:1", 5), inst("h:2", 6)];
  const start = async (index: boolean) => {
    const { set, control } = opened();
    control.beginSnapshot();
    control.apply({ kind: "snapshot", revision: 8, instances: first });
    control.apply(ev("current", 8));
    await control.initialized;
    if (index) assert.equal(set.get("h:2")?.revision, 6);
    const updates: string[] = [];
    const leaders: string[] = [];
    set.addEventListener("update", (e) => updates.push(show(e)));
    set.addEventListener("leader", (e) => leaders.push(`${e.instance?.addr}`));
    return { set, control, updates, leaders };
  };
  const asItCame = await start(false);
  const indexed = await start(true);
  for (const { set } of [asItCame, indexed]) {
    assert.deepEqual(set.online().map((i) => i.addr), ["h:3", "h:1", "h:2"]);
    assert.equal(set.leader()?.addr, "h:1");
    // online() is a copy: changing it changes nothing in the set.
    set.online().length = 0;
    assert.equal(set.online().length, 3);
  }
  for (const { control } of [asItCame, indexed]) {
    control.apply(ev("update", 9, inst("h:3", 9, { v: "2" })));
    control.apply(ev("down", 10, inst("h:1", 5)));
    control.apply(ev("up", 11, inst("h:4", 11)));
  }
  for (const { set, updates, leaders } of [asItCame, indexed]) {
    assert.deepEqual(updates, ["update h:3 9", "down h:1 10", "up h:4 11"]);
    assert.deepEqual(leaders, ["h:2"]);
    assert.deepEqual(set.online().map((i) => i.addr), ["h:3", "h:2", "h:4"]);
    assert.equal(set.get("h:1"), undefined);
    assert.deepEqual(set.offline().map((i) => i.addr), ["h:1"]);
  }
  // A set of every service keeps the agent's order and has no leader.
  const all = openSet("*", undefined, () => Promise.resolve());
  all.control.beginSnapshot();
  all.control.apply({
    kind: "snapshot",
    revision: 8,
    instances: [
      { ...inst("h:1", 5), id: "db/h:1", service: "db" },
      ...first,
    ],
  });
  all.control.apply(ev("current", 8));
  assert.deepEqual(all.set.online().map((i) => i.id), [
    "db/h:1",
    "svc/h:3",
    "svc/h:1",
    "svc/h:2",
  ]);
  assert.equal(all.set.leader(), undefined);
  assert.equal(all.set.get("db/h:1")?.service, "db");
  // An empty first state, then an instance.
  const { set: empty, control } = opened();
  control.beginSnapshot();
  control.apply(ev("current", 8));
  assert.deepEqual(empty.online(), []);
  control.apply(ev("up", 9, inst("h:5", 9)));
  assert.deepEqual(empty.online().map((i) => i.addr), ["h:5"]);
  assert.equal(empty.leader()?.addr, "h:5");
});
