// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type { StoredRecord } from "../backends/backend.ts";
import type { Filter } from "../protocol/types.ts";
import { eventFor, type Subscriber, View } from "./view.ts";

function rec(
  addr: string,
  attrs: Record<string, string> = {},
  owner = "o",
  service = "svc",
): StoredRecord {
  return { service, addr, attrs, owner, registeredAt: 5 };
}

function listener(service: string, filter?: Filter) {
  const got: string[] = [];
  const raw: string[] = [];
  const sub: Subscriber = {
    service,
    filter,
    deliver(json) {
      raw.push(json);
      const e = JSON.parse(json);
      got.push(`${e.kind} ${e.instance.addr} ${e.revision}`);
    },
  };
  return { sub, got, raw };
}

Deno.test("eventFor maps filter transitions to up, update and down", () => {
  const i = (attrs: Record<string, string>) => ({
    id: "s/h:1",
    service: "s",
    addr: "h:1",
    attrs,
    revision: 1,
    registeredAt: 0,
  });
  const f = { attrs: { zone: "b" } };
  const b = i({ zone: "b" }), a = i({ zone: "a" });
  assert.equal(eventFor({ revision: 1, after: b }, f)?.kind, "up");
  assert.equal(eventFor({ revision: 1, after: a }, f), undefined);
  assert.equal(eventFor({ revision: 1, before: a, after: b }, f)?.kind, "up");
  assert.equal(
    eventFor({ revision: 1, before: b, after: b }, f)?.kind,
    "update",
  );
  const leaving = eventFor({ revision: 1, before: b, after: a }, f);
  assert.equal(leaving?.kind, "down");
  assert.deepEqual(leaving?.instance.attrs, { zone: "a" });
  assert.equal(eventFor({ revision: 1, before: b }, f)?.kind, "down");
  assert.equal(eventFor({ revision: 1, before: a }, f), undefined);
  assert.equal(eventFor({ revision: 1, before: a }, undefined)?.kind, "down");
});

Deno.test("changes update the view and reach only the subscribers of their service", () => {
  const view = new View();
  view.reset({ revision: 0, epoch: "e", records: [] });
  const all = listener("svc");
  const zoneB = listener("svc", { attrs: { zone: "b" } });
  const other = listener("other");
  for (const l of [all, zoneB, other]) view.subscribe(l.sub);
  view.changes([
    { type: "put", revision: 1, record: rec("h:1", { zone: "a" }) },
    { type: "put", revision: 2, record: rec("h:2", { zone: "b" }) },
    { type: "put", revision: 3, record: rec("h:1", { zone: "b" }) },
    { type: "delete", revision: 4, service: "svc", addr: "h:2" },
  ]);
  assert.deepEqual(all.got, [
    "up h:1 1",
    "up h:2 2",
    "update h:1 3",
    "down h:2 4",
  ]);
  assert.deepEqual(zoneB.got, ["up h:2 2", "up h:1 3", "down h:2 4"]);
  assert.deepEqual(other.got, []);
  assert.equal(view.revision, 4);
  assert.equal(view.size, 1);
  assert.deepEqual(view.list("svc").map((i) => [i.addr, i.revision]), [[
    "h:1",
    3,
  ]]);
  assert.deepEqual(view.services(), ["svc"]);
  // Already-applied revisions are ignored.
  view.changes([{ type: "delete", revision: 3, service: "svc", addr: "h:1" }]);
  assert.equal(view.size, 1);
  view.unsubscribe(all.sub);
  view.changes([{ type: "put", revision: 5, record: rec("h:3") }]);
  assert.equal(all.got.length, 4);
});

Deno.test("subscribers with the same view of a change share one serialized event", () => {
  const view = new View();
  const a = listener("svc"), b = listener("svc");
  view.subscribe(a.sub);
  view.subscribe(b.sub);
  view.changes([{ type: "put", revision: 1, record: rec("h:1") }]);
  assert.equal(a.raw.length, 1);
  assert.equal(a.raw[0], b.raw[0]);
  assert.deepEqual(JSON.parse(a.raw[0]), {
    kind: "up",
    revision: 1,
    instance: {
      id: "svc/h:1",
      service: "svc",
      addr: "h:1",
      attrs: {},
      revision: 1,
      registeredAt: 5,
    },
  });
});

Deno.test("an owner change alone (takeover) emits nothing and keeps the revision", () => {
  const view = new View();
  const l = listener("svc");
  view.subscribe(l.sub);
  view.changes([{
    type: "put",
    revision: 1,
    record: rec("h:1", { v: "1" }, "a"),
  }]);
  view.changes([{
    type: "put",
    revision: 2,
    record: rec("h:1", { v: "1" }, "b"),
  }]);
  assert.deepEqual(l.got, ["up h:1 1"]);
  assert.equal(view.get("svc", "h:1")?.owner, "b");
  assert.equal(view.get("svc", "h:1")?.instance.revision, 1);
  assert.equal(view.revision, 2);
});

Deno.test("replay returns the missed events of one service, filtered, within the history", () => {
  const view = new View({ historySize: 3 });
  view.changes([
    { type: "put", revision: 1, record: rec("h:1", { zone: "a" }) },
    { type: "put", revision: 2, record: rec("h:2", { zone: "b" }) },
    { type: "put", revision: 3, record: rec("x:1", {}, "o", "other") },
    { type: "put", revision: 4, record: rec("h:1", { zone: "b" }) },
  ]);
  // History holds revisions 2..4: since=1 (saw 1) is complete, since=0 is not.
  assert.equal(view.replay("svc", undefined, 0), undefined);
  assert.deepEqual(
    view.replay("svc", undefined, 1)?.map((
      e,
    ) => [e.kind, e.instance?.addr, e.revision]),
    [["up", "h:2", 2], ["update", "h:1", 4]],
  );
  assert.deepEqual(
    view.replay("svc", { attrs: { zone: "b" } }, 2)?.map((
      e,
    ) => [e.kind, e.revision]),
    [["up", 4]],
  );
  assert.deepEqual(view.replay("svc", undefined, 4), []);
  assert.equal(
    view.replay("svc", undefined, 5),
    undefined,
    "ahead of the view",
  );
});

Deno.test("reset emits only the real differences and keeps replay working", () => {
  const view = new View();
  view.changes([
    { type: "put", revision: 1, record: rec("h:1", { v: "1" }) },
    { type: "put", revision: 2, record: rec("h:2", { v: "1" }) },
    { type: "put", revision: 3, record: rec("h:3", { v: "1" }) },
  ]);
  const l = listener("svc");
  view.subscribe(l.sub);
  view.reset({
    revision: 9,
    epoch: "",
    records: [
      rec("h:1", { v: "1" }), // unchanged: no event
      rec("h:2", { v: "2" }), // changed: update
      rec("h:4", { v: "1" }), // new: up
    ], // h:3 gone: down
  });
  assert.deepEqual(l.got.sort(), ["down h:3 9", "up h:4 9", "update h:2 9"]);
  assert.equal(view.revision, 9);
  assert.deepEqual(
    view.replay("svc", undefined, 3)?.map((e) =>
      `${e.kind} ${e.instance?.addr}`
    ).sort(),
    ["down h:3", "up h:4", "update h:2"],
  );
  // A store that went back in time: the history is dropped.
  view.reset({ revision: 2, epoch: "", records: [rec("h:1", { v: "1" })] });
  assert.equal(view.replay("svc", undefined, 1), undefined);
  assert.equal(view.size, 1);
});

Deno.test("revisions of another epoch are never replayed", () => {
  const view = new View();
  view.reset({ revision: 0, epoch: "first", records: [] });
  view.changes([{ type: "put", revision: 1, record: rec("h:1") }]);
  assert.equal(view.epoch, "first");
  assert.deepEqual(view.replay("svc", undefined, 0, "first")?.length, 1);
  assert.equal(view.replay("svc", undefined, 0, "second"), undefined);
  // The backend starts a new sequence: the old history is dropped.
  view.reset({ revision: 5, epoch: "second", records: [rec("h:1")] });
  assert.equal(view.epoch, "second");
  assert.equal(view.replay("svc", undefined, 0, "second"), undefined);
  assert.deepEqual(view.replay("svc", undefined, 5, "second"), []);
});

Deno.test("waitFor resolves once the revision is applied", async () => {
  const view = new View();
  let done = false;
  const waiting = view.waitFor(2).then(() => done = true);
  view.changes([{ type: "put", revision: 1, record: rec("h:1") }]);
  await Promise.resolve();
  assert.equal(done, false);
  view.changes([{ type: "put", revision: 2, record: rec("h:2") }]);
  await waiting;
  assert.equal(done, true);
  await view.waitFor(1); // already applied: resolves at once
});

Deno.test("status is remembered", () => {
  const view = new View();
  assert.equal(view.connected, false);
  view.status(true);
  assert.equal(view.connected, true);
});

Deno.test("a '*' subscriber gets the changes of every service, filtered; replay and list too", () => {
  const view = new View();
  view.reset({ revision: 0, epoch: "e", records: [] });
  const all = listener("*");
  const zoned = listener("*", { attrs: { zone: "b" } });
  view.subscribe(all.sub);
  view.subscribe(zoned.sub);
  view.changes([
    { type: "put", revision: 1, record: rec("h:1", {}, "o", "a") },
    { type: "put", revision: 2, record: rec("h:1", { zone: "b" }, "o", "b") },
    { type: "delete", revision: 3, service: "a", addr: "h:1" },
  ]);
  assert.deepEqual(all.got, ["up h:1 1", "up h:1 2", "down h:1 3"]);
  assert.deepEqual(zoned.got, ["up h:1 2"]);
  assert.deepEqual(view.list("*").map((i) => i.id), ["b/h:1"]);
  assert.deepEqual(
    view.replay("*", undefined, 0)?.map((e) => `${e.kind} ${e.instance?.id}`),
    ["up a/h:1", "up b/h:1", "down a/h:1"],
  );
  view.unsubscribe(all.sub);
  view.changes([
    { type: "put", revision: 4, record: rec("h:2", {}, "o", "c") },
  ]);
  assert.equal(all.got.length, 3);
});

Deno.test("catalog lists the services that have instances, by name, with counts", () => {
  const view = new View();
  view.reset({ revision: 0, epoch: "e", records: [] });
  view.changes([
    { type: "put", revision: 1, record: rec("h:1", {}, "o", "web") },
    { type: "put", revision: 2, record: rec("h:2", {}, "o", "web") },
    { type: "put", revision: 3, record: rec("h:1", {}, "o", "api") },
  ]);
  assert.deepEqual(view.catalog(), [
    { service: "api", instances: 1 },
    { service: "web", instances: 2 },
  ]);
  view.changes([{ type: "delete", revision: 4, service: "api", addr: "h:1" }]);
  assert.deepEqual(view.catalog(), [{ service: "web", instances: 2 }]);
});
