// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent as a separate process, driven over real WebSockets: the
 * lifecycle of registrations, subscriptions, resumes and liveness.
 */

import assert from "node:assert/strict";
import { connect, ErrorCode, RpcError } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { openRaw } from "./_raw_socket.ts";
import { collect, nextWithin, spawnRegistrant } from "./_wait.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

Deno.test("register, re-register with new attrs, unregister", async () => {
  await using agent = await spawnAgent();
  await using a = await connect(agent.url);
  await using b = await connect(agent.url);
  await using set = await b.services("cache");
  const updates = set.updates();

  const first = await a.register("cache", 9876, { attrs: { id: "cache1" } });
  assert.equal(first.addr, "127.0.0.1:9876");
  assert.equal(first.id, "cache/127.0.0.1:9876");
  assert.deepEqual(first.attrs, { id: "cache1" });
  const up = await nextWithin(updates);
  assert.equal(up.kind, "up");
  assert.deepEqual(up.instance.attrs, { id: "cache1" });

  const second = await a.register("cache", 9876, {
    attrs: { id: "cache1", zone: "b" },
  });
  assert.equal(second.registeredAt, first.registeredAt);
  assert.ok(second.revision > first.revision);
  const update = await nextWithin(updates);
  assert.equal(update.kind, "update");
  assert.deepEqual(update.instance.attrs, { id: "cache1", zone: "b" });
  assert.deepEqual(set.get("127.0.0.1:9876")?.attrs, {
    id: "cache1",
    zone: "b",
  });

  // The same attrs again: no event, same revision.
  const same = await a.register("cache", 9876, {
    attrs: { zone: "b", id: "cache1" },
  });
  assert.equal(same.revision, second.revision);

  // A full host:port address is accepted too.
  const other = await a.register("cache", "Cache-2.example:6379");
  assert.equal(other.addr, "cache-2.example:6379");
  assert.equal((await nextWithin(updates)).kind, "up");

  assert.equal(await a.unregister("cache", 9876), true);
  const down = await nextWithin(updates);
  assert.equal(down.kind, "down");
  assert.equal(down.instance.addr, "127.0.0.1:9876");
  assert.deepEqual(set.online().map((i) => i.addr), ["cache-2.example:6379"]);
  assert.deepEqual(set.offline().map((i) => i.addr), ["127.0.0.1:9876"]);
  assert.equal(await a.unregister("cache", 9876), false);
});

Deno.test("services and subscriptions filter by attributes at the agent", async () => {
  await using agent = await spawnAgent();
  await using a = await connect(agent.url);
  await using b = await connect(agent.url);
  await a.register("queue", 1001, { attrs: { zone: "a" } });
  await a.register("queue", 1002, { attrs: { zone: "b", tier: "gold" } });
  await a.register("queue", 1003, { attrs: { zone: "b" } });
  await a.register("other", 1004, { attrs: { zone: "b" } });

  const inB = await b.lookup("queue", { filter: { zone: "b" } });
  assert.deepEqual(inB.map((i) => i.addr).sort(), [
    "127.0.0.1:1002",
    "127.0.0.1:1003",
  ]);
  assert.deepEqual(
    (await b.lookup("queue", { filter: { zone: "b", tier: "gold" } })).map((
      i,
    ) => i.addr),
    ["127.0.0.1:1002"],
  );
  assert.deepEqual(await b.lookup("queue", { filter: { zone: "c" } }), []);
  assert.equal((await b.lookup("queue")).length, 3);

  await using set = await b.services("queue", { filter: { zone: "b" } });
  assert.deepEqual(set.online().map((i) => i.addr).sort(), [
    "127.0.0.1:1002",
    "127.0.0.1:1003",
  ]);
  const updates = set.updates();
  // Moving into the filter is an `up`, out of it a `down`, within it an `update`.
  await a.register("queue", 1001, { attrs: { zone: "b" } });
  await a.register("queue", 1003, { attrs: { zone: "a" } });
  await a.register("queue", 1002, { attrs: { zone: "b", tier: "silver" } });
  await a.register("queue", 1003, { attrs: { zone: "c" } }); // outside to outside
  await a.register("other", 1004, { attrs: { zone: "b", x: "1" } }); // another service
  await a.register("queue", 1003, { attrs: { zone: "b" } });
  assert.deepEqual(await collect(updates, 4), [
    "up 127.0.0.1:1001",
    "down 127.0.0.1:1003",
    "update 127.0.0.1:1002",
    "up 127.0.0.1:1003",
  ]);
  assert.deepEqual(set.online().map((i) => i.addr).sort(), [
    "127.0.0.1:1001",
    "127.0.0.1:1002",
    "127.0.0.1:1003",
  ]);
});

Deno.test("subscribe sends the response, the snapshot, current, then live events in order", async () => {
  await using agent = await spawnAgent();
  await using writer = await openRaw(agent.url);
  await using reader = await openRaw(agent.url);
  for (const port of [2001, 2002, 2003]) {
    const r = await writer.call("discover.register", { service: "db", port });
    assert.ok(r.result, JSON.stringify(r));
  }
  reader.sendJson({
    jsonrpc: "2.0",
    id: 1,
    method: "discover.subscribe",
    params: { service: "db" },
  });
  const response = await reader.next() as Json;
  assert.equal(response.id, 1);
  assert.equal(response.result.mode, "snapshot");
  const { subscription, revision } = response.result;
  assert.equal(revision, 3);
  const snapshot: Json[] = [];
  for (let i = 0; i < 5; i++) snapshot.push(await reader.next() as Json);
  for (const frame of snapshot) {
    assert.equal(frame.method, "discover.event");
    assert.equal(frame.id, undefined);
    assert.equal(frame.params.subscription, subscription);
  }
  assert.deepEqual(
    snapshot.map((f) => [f.params.result.kind, f.params.result.revision]),
    [["up", 3], ["up", 3], ["up", 3], ["leader", 3], ["current", 3]],
  );
  assert.deepEqual(
    snapshot.slice(0, 3).map((f) => f.params.result.instance.addr).sort(),
    ["127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1:2003"],
  );
  // The leader: the oldest instance.
  assert.equal(snapshot[3].params.result.instance.addr, "127.0.0.1:2001");
  assert.equal(snapshot[4].params.result.instance, undefined);

  await writer.call("discover.register", {
    service: "db",
    port: 2001,
    attrs: { role: "primary" },
  });
  await writer.call("discover.unregister", { service: "db", port: 2002 });
  await writer.call("discover.register", { service: "db", port: 2004 });
  const live: Json[] = [];
  for (let i = 0; i < 3; i++) {
    live.push((await reader.next() as Json).params.result);
  }
  assert.deepEqual(live.map((e) => [e.kind, e.instance.addr, e.revision]), [
    ["update", "127.0.0.1:2001", 4],
    ["down", "127.0.0.1:2002", 5],
    ["up", "127.0.0.1:2004", 6],
  ]);
  assert.deepEqual(live[0].instance.attrs, { role: "primary" });
  assert.deepEqual(await reader.drain(200), []);

  // After unsubscribe, nothing more arrives.
  const un = await reader.call("discover.unsubscribe", { subscription });
  assert.equal(un.result, true);
  await writer.call("discover.register", { service: "db", port: 2005 });
  assert.deepEqual(await reader.drain(300), []);
});

Deno.test("a subscription resumes with since: replay when history has it, snapshot otherwise", async () => {
  await using agent = await spawnAgent(["--history", "4"]);
  await using writer = await openRaw(agent.url);
  await using reader = await openRaw(agent.url);
  await writer.call("discover.register", { service: "web", port: 80 });
  await writer.call("discover.register", { service: "web", port: 81 });
  const first = await reader.call("discover.subscribe", { service: "web" });
  const seen = (first.result as Json).revision; // 2
  await reader.drain(200);
  await reader.call("discover.unsubscribe", {
    subscription: (first.result as Json).subscription,
  });
  // Missed while away: an attrs change, a removal, a new instance, and a
  // change to another service that must not be replayed.
  await writer.call("discover.register", {
    service: "web",
    port: 80,
    attrs: { v: "2" },
  });
  await writer.call("discover.unregister", { service: "web", port: 81 });
  await writer.call("discover.register", { service: "api", port: 90 });
  await writer.call("discover.register", { service: "web", port: 82 });

  const resumed = await reader.call("discover.subscribe", {
    service: "web",
    since: seen,
  });
  assert.equal((resumed.result as Json).mode, "replay");
  assert.equal((resumed.result as Json).revision, 6);
  const events: Json[] = [];
  for (let i = 0; i < 5; i++) {
    events.push((await reader.next() as Json).params.result);
  }
  assert.deepEqual(events.map((e) => [e.kind, e.instance?.addr, e.revision]), [
    ["update", "127.0.0.1:80", 3],
    ["down", "127.0.0.1:81", 4],
    ["up", "127.0.0.1:82", 6],
    ["leader", "127.0.0.1:80", 6],
    ["current", undefined, 6],
  ]);

  // The view's history holds 4 changes (3..6): since=1 is older, so the
  // replay comes from the backend's own history (the memory backend keeps
  // its last 10,000 changes): the differences between then and now, at 6.
  const epoch = (resumed.result as Json).epoch;
  assert.equal(typeof epoch, "string");
  assert.equal((first.result as Json).epoch, epoch);
  const old = await reader.call("discover.subscribe", {
    service: "web",
    since: 1,
    epoch,
  });
  assert.equal((old.result as Json).mode, "replay");
  const diff: Json[] = [];
  for (let i = 0; i < 4; i++) {
    diff.push((await reader.next() as Json).params.result);
  }
  assert.deepEqual(
    diff.map((e) => [e.kind, e.instance?.addr, e.revision]).sort(),
    [
      ["current", undefined, 6],
      ["leader", "127.0.0.1:80", 6],
      ["up", "127.0.0.1:82", 6],
      ["update", "127.0.0.1:80", 6],
    ],
  );
  // since=99 is ahead, and since=2 of another epoch (another agent
  // process) means nothing here: snapshots.
  for (
    const params of [
      { since: 99 },
      { since: seen, epoch: "another-agent-process" },
    ]
  ) {
    const r = await reader.call("discover.subscribe", {
      service: "web",
      ...params,
    });
    assert.equal((r.result as Json).mode, "snapshot", JSON.stringify(params));
    const snap: Json[] = [];
    for (let i = 0; i < 4; i++) {
      snap.push((await reader.next() as Json).params.result);
    }
    assert.deepEqual(
      snap.map((e) => [e.kind, e.instance?.addr, e.revision]),
      [
        ["up", "127.0.0.1:80", 6],
        ["up", "127.0.0.1:82", 6],
        ["leader", "127.0.0.1:80", 6],
        ["current", undefined, 6],
      ],
    );
  }
});

Deno.test("a killed client's instances go down after the grace TTL, not before", async () => {
  const ttl = 2;
  await using agent = await spawnAgent(["--ttl", String(ttl)]);
  await using watcher = await connect(agent.url);
  await using set = await watcher.services("victim");
  const updates = set.updates();
  const victim = await spawnRegistrant(agent.url, "victim", 7000);
  assert.equal((await nextWithin(updates)).kind, "up");
  const killedAt = performance.now();
  await victim.kill();
  const down = await nextWithin(updates, (ttl + 5) * 1000);
  const elapsed = (performance.now() - killedAt) / 1000;
  assert.equal(down.kind, "down");
  assert.equal(down.instance.addr, "127.0.0.1:7000");
  // The instance outlived its session by the grace TTL (less timer slack),
  // and went down within TTL + 1 s, the documented worst case.
  assert.ok(elapsed >= ttl - 0.25, `down after ${elapsed} s, before the TTL`);
  assert.ok(elapsed <= ttl + 1, `down after ${elapsed} s, TTL is ${ttl} s`);
});

Deno.test("a clean close takes the client's instances down at once", async () => {
  await using agent = await spawnAgent(["--ttl", "60"]);
  await using watcher = await connect(agent.url);
  await using set = await watcher.services("leaving");
  const updates = set.updates();
  const client = await connect(agent.url);
  await client.register("leaving", 1);
  await client.register("leaving", 2);
  await collect(updates, 2);
  const closedAt = performance.now();
  await client.close();
  assert.deepEqual((await collect(updates, 2, 3000)).sort(), [
    "down 127.0.0.1:1",
    "down 127.0.0.1:2",
  ]);
  assert.ok(performance.now() - closedAt < 3000);
  assert.deepEqual(set.online(), []);

  // A raw session that closes with 1000 without unregistering: same.
  await using raw = await openRaw(agent.url);
  await raw.call("discover.register", { service: "leaving", port: 3 });
  assert.equal((await nextWithin(updates)).kind, "up");
  await raw.close(1000);
  const down = await nextWithin(updates, 3000);
  assert.deepEqual([down.kind, down.instance.addr], ["down", "127.0.0.1:3"]);
});

Deno.test("two sessions cannot clobber each other's instances", async () => {
  await using agent = await spawnAgent();
  await using a = await connect(agent.url);
  await using b = await connect(agent.url);
  await a.register("shared", 5000, { attrs: { owner: "a" } });
  await assert.rejects(
    b.register("shared", 5000, { attrs: { owner: "b" } }),
    (e: unknown) => e instanceof RpcError && e.code === ErrorCode.NotOwner,
  );
  await assert.rejects(
    b.unregister("shared", 5000),
    (e: unknown) => e instanceof RpcError && e.code === ErrorCode.NotOwner,
  );
  const [instance] = await b.lookup("shared");
  assert.deepEqual(instance.attrs, { owner: "a" });
  // b closing does not touch a's instance either.
  await b.close();
  assert.equal((await a.lookup("shared")).length, 1);
});

Deno.test("a lost session's instances are kept for the TTL and can be taken over or resumed", async () => {
  await using agent = await spawnAgent(["--ttl", "2"]);
  await using watcher = await connect(agent.url);
  await using set = await watcher.services("svc");
  const updates = set.updates();

  // An anonymous session lost (close code other than 1000/1001).
  const lost = await openRaw(agent.url);
  await lost.call("discover.register", {
    service: "svc",
    port: 1,
    attrs: { v: "1" },
  });
  assert.equal((await nextWithin(updates)).kind, "up");
  await lost.close(4000);

  // Another session takes it over within the TTL: no down/up flap, and the
  // new owner's attrs show as an update.
  await using heir = await connect(agent.url);
  await heir.register("svc", 1, { attrs: { v: "2" } });
  const update = await nextWithin(updates);
  assert.deepEqual([update.kind, update.instance.attrs], ["update", {
    v: "2",
  }]);

  // A client that reconnects with its client id within the TTL keeps its
  // instances without a flap.
  const first = await openRaw(`${agent.url}?client=resumer-0123456789`);
  await first.call("discover.register", { service: "svc", port: 2 });
  assert.equal((await nextWithin(updates)).kind, "up");
  await first.close(4000);
  await using second = await connect(agent.url, {
    clientId: "resumer-0123456789",
  });
  assert.equal((await second.lookup("svc")).length, 2);

  // Past the TTL, both instances are still there: nothing flapped.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.deepEqual(set.online().map((i) => i.addr).sort(), [
    "127.0.0.1:1",
    "127.0.0.1:2",
  ]);
  assert.deepEqual(
    await Promise.race([
      updates.next().then(() => "event"),
      new Promise((resolve) => setTimeout(() => resolve("none"), 200)),
    ]),
    "none",
  );
});
