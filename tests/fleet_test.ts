// Copyright the discover authors. BSD-3-Clause license.

/**
 * An agent on etcd holds what its host uses, not the whole registry: it
 * watches a service while a subscription, a registration or a lookup
 * needs it, lets it go after the idle time, counts services without
 * holding their instances, and resumes a client from etcd's own history
 * when it has none of its own.
 *
 * Timings: `watchIdle` 0.3 s; a released watch is looked for within 5 s
 * (generous for a busy machine).
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import { type Client, connect } from "../mod.ts";
import { startAgent } from "../agent/mod.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { startEtcd } from "../tools/etcd.ts";
import { openRaw, type RawSocket } from "./_raw_socket.ts";
import { until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const cluster = await startEtcd();
/** etcd's gauge of watchers (`/metrics`, etcd 3.4). */
const WATCHERS = "etcd_debugging_mvcc_watcher_total";

const prefix = () => `/fleet-${crypto.randomUUID().slice(0, 8)}/`;

/** An in-process agent on the module's etcd, under `keyPrefix`. */
function agentOn(keyPrefix: string, watchIdle = 0.3) {
  return startAgent({
    port: 0,
    logLevel: "error",
    advertiseHost: "127.0.0.1",
    watchIdle,
    backend: new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: keyPrefix,
      leaseTtl: 3,
    }),
  });
}

/** Writes `count` instances of each service straight into etcd, as other agents would. */
async function seed(keyPrefix: string, services: string[], count: number) {
  const etcd = new Etcd3({ hosts: cluster.endpoints });
  try {
    for (const service of services) {
      await Promise.all(
        Array.from(
          { length: count },
          (_, i) =>
            etcd.put(`${keyPrefix}instances/${service}/10.0.0.${i + 1}:80`)
              .value(JSON.stringify({
                attrs: { i: String(i) },
                owner: "elsewhere",
                registeredAt: 1,
              })),
        ),
      );
    }
  } finally {
    etcd.close();
  }
}

/** The agent's `/healthz` body. */
async function health(url: string) {
  const res = await fetch(url.replace(/^ws/, "http") + "healthz");
  return await res.json() as { watches: number; revision: number };
}

/**
 * What a subscriber of "api" at `url` last saw (its revision and epoch),
 * then the changes it misses: 8001 updated, 8002 up and down.
 */
async function missChanges(url: string, writer: Client) {
  await using raw = await openRaw(url);
  const response = await raw.call("discover.subscribe", { service: "api" });
  const seen = response.result as { revision: number; epoch: string };
  await writer.register("api", 8001, { attrs: { v: "2" } });
  await writer.register("api", 8002);
  await writer.unregister("api", 8002);
  return { since: seen.revision, epoch: seen.epoch };
}

/** The next `count` events of `raw` other than `current` and `leader`, as "kind addr attrs". */
async function events(raw: RawSocket, count: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < count) {
    const frame = await raw.next() as {
      params: {
        result: {
          kind: string;
          instance?: { addr: string; attrs: Record<string, string> };
        };
      };
    };
    const { kind, instance } = frame.params.result;
    if (instance && kind !== "leader") {
      out.push(`${kind} ${instance.addr} ${JSON.stringify(instance.attrs)}`);
    }
  }
  return out;
}

Deno.test({
  ...etcdTest,
  name:
    "fleet: an agent watches only the services in use, shares one watch per service, and lets it go after the idle time",
  async fn() {
    const p = prefix();
    await seed(p, ["a", "b", "c", "d"], 5);
    await using agent = await agentOn(p);
    assert.equal((await health(agent.url)).watches, 0, "nothing in use");
    const before = await cluster.metric(WATCHERS);
    await using client = await connect(agent.url);
    await using one = await client.services("a");
    await using two = await client.services("a", { filter: { i: "1" } });
    assert.equal(one.online().length, 5);
    assert.equal(two.online().length, 1);
    assert.equal((await health(agent.url)).watches, 1, "one watch for both");
    assert.equal(await cluster.metric(WATCHERS), before + 1);
    // A lookup holds its service for the call, then for the idle time.
    assert.equal((await client.lookup("b")).length, 5);
    assert.equal((await health(agent.url)).watches, 2);
    await until(
      async () => (await health(agent.url)).watches === 1,
      "the looked-up service let go",
      5000,
    );
    // A registration keeps its service watched past the idle time.
    await client.register("c", 9000);
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal((await health(agent.url)).watches, 2, "a and c");
    await one.close();
    await two.close();
    await client.unregister("c", 9000);
    await until(
      async () => (await health(agent.url)).watches === 0,
      "every service let go",
      5000,
    );
    await until(
      async () => await cluster.metric(WATCHERS) === before,
      "etcd's watchers back to where they were",
      5000,
    );
  },
});

Deno.test({
  ...etcdTest,
  name:
    "fleet: the catalog counts every service at an agent that holds none of their instances",
  async fn() {
    const p = prefix();
    await seed(p, ["x", "y"], 3);
    await using agent = await agentOn(p);
    await using client = await connect(agent.url);
    await client.register("z", 7000);
    const { services } = await client.catalog();
    assert.deepEqual(services, [
      { service: "x", instances: 3 },
      { service: "y", instances: 3 },
      { service: "z", instances: 1 },
    ]);
    assert.equal((await health(agent.url)).watches, 1, "only z, registered");
  },
});

Deno.test({
  ...etcdTest,
  name:
    "fleet: a client resumes at an agent that never watched its service with exactly the changes it missed, from etcd's history; compacted, a snapshot",
  async fn() {
    const p = prefix();
    await using first = await agentOn(p);
    await using second = await agentOn(p);
    await using writer = await connect(first.url);
    await writer.register("api", 8001, { attrs: { v: "1" } });
    // What a subscriber at the first agent last saw, then missed.
    const { since, epoch } = await missChanges(first.url, writer);
    assert.equal((await health(second.url)).watches, 0);

    await using raw = await openRaw(second.url);
    const response = await raw.call("discover.subscribe", {
      service: "api",
      since,
      epoch,
    });
    const result = response.result as { mode: string; epoch: string };
    assert.equal(result.mode, "replay");
    assert.equal(result.epoch, epoch);
    assert.deepEqual(await events(raw, 3), [
      'update 127.0.0.1:8001 {"v":"2"}',
      "up 127.0.0.1:8002 {}",
      "down 127.0.0.1:8002 {}",
    ]);

    // Once etcd has compacted past `since`, a third agent cannot replay.
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    try {
      const { header } = await etcd.get("any").exec();
      await etcd.kv.compact({ revision: header.revision, physical: true });
    } finally {
      etcd.close();
    }
    await using third = await agentOn(p);
    await using late = await openRaw(third.url);
    const snapshot = await late.call("discover.subscribe", {
      service: "api",
      since,
      epoch,
    });
    assert.equal((snapshot.result as { mode: string }).mode, "snapshot");
  },
});

Deno.test("fleet: on the memory backend, a client resumes with a replay after the agent let its service go", async () => {
  await using agent = await startAgent({
    port: 0,
    logLevel: "error",
    advertiseHost: "127.0.0.1",
    watchIdle: 0.2,
  });
  await using writer = await connect(agent.url);
  await writer.register("api", 8001, { attrs: { v: "1" } });
  const { since, epoch } = await missChanges(agent.url, writer);
  // The writer's registration holds "api": let it go, then wait it out.
  await writer.close();
  await until(
    async () => (await health(agent.url)).watches === 0,
    "the service let go",
    5000,
  );
  await using raw = await openRaw(agent.url);
  const response = await raw.call("discover.subscribe", {
    service: "api",
    since,
    epoch,
  });
  assert.equal((response.result as { mode: string }).mode, "replay");
  // The writer's clean close removed 8001 too.
  assert.deepEqual(await events(raw, 4), [
    'update 127.0.0.1:8001 {"v":"2"}',
    "up 127.0.0.1:8002 {}",
    "down 127.0.0.1:8002 {}",
    'down 127.0.0.1:8001 {"v":"2"}',
  ]);
});

Deno.test({
  ...etcdTest,
  name: "fleet: stop the module's etcd",
  async fn() {
    await cluster.stop();
  },
});
