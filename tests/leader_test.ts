// Copyright the discover authors. BSD-3-Clause license.

/**
 * Leaders of sets, end to end: every agent derives the same leader from the
 * same instances (the lowest `created`, ties by address), with filter and
 * health applied; `created` survives a re-registration and grows after an
 * unregister, so a later leader always has a greater fencing token; and a
 * subscription is told of every change of its leader, once more before
 * `current`.
 *
 * On the memory backend with one agent, and on etcd with two agents sharing
 * a prefix. Waits are 10 s at most, generous for a busy 2-core machine.
 */

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { type Client, connect, type ServiceSet } from "../mod.ts";
import { startEtcd } from "../tools/etcd.ts";
import { openRaw } from "./_raw_socket.ts";
import { until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };

/** The leaders a set has been told of, as `addr created`, "none" for none. */
function follow(set: ServiceSet): string[] {
  const seen: string[] = [];
  set.addEventListener("leader", (e) => {
    seen.push(e.instance ? `${e.instance.addr} ${e.instance.created}` : "none");
  });
  return seen;
}

const leaderText = (set: ServiceSet) => {
  const leader = set.leader();
  return leader ? `${leader.addr} ${leader.created}` : "none";
};

/**
 * The story both backends run: three instances of "db" through `writer`,
 * watched by `readers` (clients of every agent), leadership passing as
 * instances leave, turn critical and come back.
 */
async function story(writer: Client, readers: Client[]) {
  const sets = await Promise.all(readers.map((c) => c.services("db")));
  const shard3 = await Promise.all(
    readers.map((c) => c.services("db", { filter: { shard: "3" } })),
  );
  const told = sets.map(follow);
  const agree = async (what: string) => {
    const want = leaderText(sets[0]);
    await until(
      () => sets.every((s) => leaderText(s) === want),
      `every agent has the same leader: ${what}`,
    );
    const oneShot = await Promise.all(readers.map((c) => c.leader("db")));
    for (const leader of oneShot) {
      assert.equal(leader ? `${leader.addr} ${leader.created}` : "none", want);
    }
    return want;
  };
  const a = await writer.register("db", "10.0.0.2:5432", {
    attrs: { shard: "1" },
  });
  const b = await writer.register("db", "10.0.0.1:5432", {
    attrs: { shard: "3" },
  });
  const c = await writer.register("db", "10.0.0.3:5432", {
    attrs: { shard: "3" },
  });
  assert.ok(a.created < b.created && b.created < c.created);
  assert.equal(await agree("three instances"), `10.0.0.2:5432 ${a.created}`);
  for (const set of shard3) {
    await until(
      () => set.leader()?.addr === "10.0.0.1:5432",
      "the leader of shard 3 is the oldest of shard 3",
    );
  }
  // New attributes keep the instance's life, and its leadership.
  const a2 = await writer.register("db", "10.0.0.2:5432", {
    attrs: { shard: "1", v: "2" },
  });
  assert.equal(a2.created, a.created);
  assert.equal(await agree("re-registered"), `10.0.0.2:5432 ${a.created}`);
  // A critical leader leads no passing set: the next oldest does.
  await writer.setHealth("db", "10.0.0.2:5432", "critical", { note: "busy" });
  assert.equal(await agree("critical"), `10.0.0.1:5432 ${b.created}`);
  await writer.setHealth("db", "10.0.0.2:5432", "passing");
  assert.equal(await agree("passing again"), `10.0.0.2:5432 ${a.created}`);
  // Gone and back: a new life, a greater token, last in line.
  await writer.unregister("db", "10.0.0.2:5432");
  assert.equal(await agree("unregistered"), `10.0.0.1:5432 ${b.created}`);
  const a3 = await writer.register("db", "10.0.0.2:5432");
  assert.ok(a3.created > c.created, "a new life gets a greater created");
  assert.equal(await agree("back"), `10.0.0.1:5432 ${b.created}`);
  await writer.unregister("db", "10.0.0.1:5432");
  assert.equal(await agree("oldest left"), `10.0.0.3:5432 ${c.created}`);
  for (const seen of told) {
    await until(() => seen.length === 5, "five leader changes at every agent");
    assert.deepEqual(seen, [
      `10.0.0.2:5432 ${a.created}`,
      `10.0.0.1:5432 ${b.created}`,
      `10.0.0.2:5432 ${a.created}`,
      `10.0.0.1:5432 ${b.created}`,
      `10.0.0.3:5432 ${c.created}`,
    ]);
  }
  await Promise.all([...sets, ...shard3].map((s) => s.close()));
}

Deno.test("memory backend: the leader of a set follows its instances", async () => {
  await using agent = await startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
  });
  await using writer = await connect(agent.url);
  await using reader = await connect(agent.url);
  await story(writer, [reader]);
});

Deno.test(
  "etcd, two agents: both derive the same leader at every change",
  etcdTest,
  async () => {
    await using cluster = await startEtcd();
    const prefix = `/leader-${crypto.randomUUID().slice(0, 8)}/`;
    const agentOn = () =>
      startAgent({
        port: 0,
        advertiseHost: "127.0.0.1",
        logLevel: "error",
        backend: new EtcdBackend({
          endpoints: cluster.endpoints,
          prefix,
          leaseTtl: 3,
        }),
      });
    await using a = await agentOn();
    await using b = await agentOn();
    await using writer = await connect(a.url);
    await using atA = await connect(a.url);
    await using atB = await connect(b.url);
    await story(writer, [atA, atB]);
  },
);

Deno.test("a subscription gets its leader before current, then each change; '*' gets none", async () => {
  await using agent = await startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
  });
  await using writer = await connect(agent.url);
  const first = await writer.register("api", 8001);
  await using raw = await openRaw(agent.url);
  await raw.call("discover.subscribe", { service: "api" });
  await raw.call("discover.subscribe", { service: "*" });
  const events = async (count: number) => {
    const out: { subscription: string; kind: string; addr?: string }[] = [];
    while (out.length < count) {
      const frame = await raw.next() as {
        method?: string;
        params: {
          subscription: string;
          result: { kind: string; instance?: { addr: string } | null };
        };
      };
      if (frame.method !== "discover.event") continue;
      const { subscription, result } = frame.params;
      out.push({
        subscription,
        kind: result.kind,
        addr: result.instance?.addr,
      });
    }
    return out;
  };
  assert.deepEqual(await events(5), [
    { subscription: "1", kind: "up", addr: first.addr },
    { subscription: "1", kind: "leader", addr: first.addr },
    { subscription: "1", kind: "current", addr: undefined },
    { subscription: "2", kind: "up", addr: first.addr },
    { subscription: "2", kind: "current", addr: undefined },
  ]);
  await writer.unregister("api", 8001);
  assert.deepEqual(await events(3), [
    { subscription: "1", kind: "down", addr: first.addr },
    { subscription: "1", kind: "leader", addr: undefined },
    { subscription: "2", kind: "down", addr: first.addr },
  ]);
  assert.equal(await writer.leader("api"), undefined);
});
