// Copyright the discover authors. BSD-3-Clause license.

/**
 * Many hosts: agents as separate processes sharing a real etcd cluster
 * (Debian's etcd-server, started on free loopback ports), under failures of
 * clients, agents and etcd members.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { type EtcdCluster, startEtcd } from "../tools/etcd.ts";
import { record } from "./_set_log.ts";
import { openRaw as openRawClient } from "./_raw_socket.ts";
import { spawnRegistrant, until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const LEASE_TTL = 3;
const TTL = 2;

function etcdAgent(
  cluster: EtcdCluster,
  prefix: string,
  extra: string[] = [],
  leaseTtl = LEASE_TTL,
) {
  return spawnAgent([
    "--backend",
    "etcd",
    "--etcd-endpoints",
    cluster.endpoints.join(","),
    "--etcd-prefix",
    prefix,
    "--etcd-lease-ttl",
    String(leaseTtl),
    "--ttl",
    String(TTL),
    "--log-level",
    "warn",
    ...extra,
  ]);
}

const fast = { reconnect: { maxDelay: 200 }, requestTimeout: 4000 };

/** Retries `fn` until it succeeds; returns how long that took. */
async function eventually(
  fn: () => Promise<unknown>,
  ms = 20_000,
): Promise<number> {
  const started = Date.now();
  for (;;) {
    try {
      await fn();
      return Date.now() - started;
    } catch (error) {
      if (Date.now() - started > ms) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

const prefix = () => `/t-${crypto.randomUUID().slice(0, 8)}/`;

/**
 * etcd, two agents A and B sharing it, and a reader at B watching
 * `service` (its updates recorded in `log`); all stopped when disposed.
 */
async function twoAgents(service: string, readerOptions = {}) {
  const cluster = await startEtcd();
  const p = prefix();
  const a = await etcdAgent(cluster, p);
  const b = await etcdAgent(cluster, p);
  const reader = await connect(b.url, readerOptions);
  const set = await reader.services(service);
  return {
    cluster,
    a,
    b,
    reader,
    set,
    log: record(set),
    async [Symbol.asyncDispose]() {
      await set.close();
      await reader.close();
      await Promise.all([a.stop(), b.stop()]);
      await cluster.stop();
    },
  };
}

Deno.test({
  ...etcdTest,
  name:
    "etcd: a registration through agent A is seen at agent B: up, update, down",
  async fn() {
    await using env = await twoAgents("cache");
    const { a, reader, log } = env;
    await using writer = await connect(a.url);
    await writer.register("cache", 9876, { attrs: { id: "cache1" } });
    await writer.register("cache", 9876, {
      attrs: { id: "cache1", zone: "b" },
    });
    await writer.unregister("cache", 9876);
    await until(() => log.length === 3, "three events at B");
    assert.deepEqual(log, [
      'up 127.0.0.1:9876 {"id":"cache1"}',
      'update 127.0.0.1:9876 {"id":"cache1","zone":"b"}',
      'down 127.0.0.1:9876 {"id":"cache1","zone":"b"}',
    ]);
    // Revisions are etcd's: a resume with since at A replays what B saw.
    const status = await writer.status();
    assert.equal(status.backend, "etcd");
    assert.equal(status.connected, true);
    assert.equal(status.epoch, (await reader.status()).epoch);
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: a SIGKILLed client of A goes down at B within the grace TTL plus a bound",
  async fn() {
    await using env = await twoAgents("victim");
    const { a, set } = env;
    const victim = await spawnRegistrant(a.url, "victim", 7001);
    await until(() => set.online().length === 1, "up at B");
    const killedAt = Date.now();
    await victim.kill();
    await until(() => set.online().length === 0, "down at B");
    const elapsed = (Date.now() - killedAt) / 1000;
    // Not before the grace TTL; within TTL + 2 s (etcd write and watch).
    assert.ok(elapsed >= TTL - 0.25, `down after ${elapsed} s, before the TTL`);
    assert.ok(
      elapsed <= TTL + 2,
      `down after ${elapsed} s; bound ${TTL + 2} s`,
    );
    console.log(
      `client SIGKILL -> down at the other agent: ${
        elapsed.toFixed(2)
      } s (TTL ${TTL} s)`,
    );
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: a SIGKILLed agent's instances go down within the lease TTL, and come back when it restarts",
  async fn() {
    await using cluster = await startEtcd();
    const p = prefix();
    let a: AgentProcess = await etcdAgent(cluster, p);
    const port = new URL(a.http).port;
    await using b = await etcdAgent(cluster, p);
    await using reader = await connect(b.url);
    await using set = await reader.services("api");
    const log = record(set);
    await using client = await connect(a.url, fast);
    await client.register("api", 8080, { attrs: { v: "1" } });
    await client.register("api", 8081);
    await until(() => set.online().length === 2, "both up at B");
    a.kill("SIGKILL");
    const killedAt = Date.now();
    await a.stop();
    await until(() => set.online().length === 0, "down at B", 20_000);
    const elapsed = (Date.now() - killedAt) / 1000;
    // etcd expires a lease between TTL and about TTL + 1 s; then the watch.
    assert.ok(
      elapsed <= LEASE_TTL + 3,
      `down after ${elapsed} s; bound ${LEASE_TTL + 3} s`,
    );
    console.log(
      `agent SIGKILL -> down at the other agent: ${
        elapsed.toFixed(2)
      } s (lease TTL ${LEASE_TTL} s)`,
    );

    a = await etcdAgent(cluster, p, ["--listen", `127.0.0.1:${port}`]);
    try {
      await until(
        () => set.online().length === 2,
        "back at B after the restart",
        20_000,
      );
      assert.deepEqual(set.online().map((i) => i.addr).sort(), [
        "127.0.0.1:8080",
        "127.0.0.1:8081",
      ]);
      assert.deepEqual(set.get("127.0.0.1:8080")?.attrs, { v: "1" });
      assert.deepEqual(log.slice(0, 2).map((l) => l.split(" ")[0]), [
        "up",
        "up",
      ]);
      assert.deepEqual(log.slice(2, 4).map((l) => l.split(" ")[0]), [
        "down",
        "down",
      ]);
      assert.deepEqual(log.slice(4).map((l) => l.split(" ")[0]), ["up", "up"]);
    } finally {
      await client.close();
      await a.stop();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: a 3-member cluster loses one member, then another hangs: nothing lost, missed or duplicated",
  async fn() {
    await using cluster = await startEtcd(3);
    const p = prefix();
    // The default lease TTL: this test is about members, not lease expiry.
    await using a = await etcdAgent(cluster, p, [], 10);
    await using b = await etcdAgent(cluster, p, [], 10);
    await using wa = await connect(a.url, fast);
    await using wb = await connect(b.url, fast);
    const readers: Client[] = [
      await connect(a.url, fast),
      await connect(b.url, fast),
    ];
    const sets = await Promise.all(readers.map((r) => r.services("db")));
    const logs = sets.map(record);
    try {
      await wa.register("db", 1, { attrs: { role: "primary" } });

      cluster.members[0].signal("SIGKILL");
      const afterKill = await eventually(() => wb.register("db", 2));
      await eventually(() =>
        wa.register("db", 1, { attrs: { role: "replica" } })
      );
      await cluster.members[0].restart();

      cluster.members[1].signal("SIGSTOP");
      const afterStop = await eventually(() => wa.register("db", 3));
      await eventually(() => wb.unregister("db", 2));
      cluster.members[1].signal("SIGCONT");

      // Per instance, in order. Across instances the order may differ: a
      // reader whose agent caught up after the member loss gets what
      // changed meanwhile at one revision, instance by instance.
      const expected = [
        'up 127.0.0.1:1 {"role":"primary"}',
        'update 127.0.0.1:1 {"role":"replica"}',
        "up 127.0.0.1:2 {}",
        "down 127.0.0.1:2 {}",
        "up 127.0.0.1:3 {}",
      ];
      const byInstance = (lines: string[]) =>
        lines.map((line, i) => ({ line, i, addr: line.split(" ")[1] }))
          .sort((x, y) => x.addr.localeCompare(y.addr) || x.i - y.i)
          .map((x) => x.line);
      for (const [i, log] of logs.entries()) {
        await until(
          () => log.length >= expected.length,
          `events at reader ${i}`,
          30_000,
        );
        await new Promise((resolve) => setTimeout(resolve, 500)); // anything extra?
        assert.deepEqual(byInstance(log), expected, `reader ${i}: ${log}`);
        assert.deepEqual(sets[i].online().map((x) => x.addr).sort(), [
          "127.0.0.1:1",
          "127.0.0.1:3",
        ]);
      }
      console.log(
        `calls recovered after a member kill in ${afterKill} ms, after a member hang in ${afterStop} ms`,
      );
      assert.ok(
        afterKill < 10_000,
        `recovery after the kill took ${afterKill} ms`,
      );
      assert.ok(
        afterStop < 15_000,
        `recovery after the hang took ${afterStop} ms`,
      );
    } finally {
      cluster.members[1].signal("SIGCONT");
      await Promise.all(readers.map((r) => r.close()));
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: etcd down for longer than the lease TTL, then back: every live registration returns",
  async fn() {
    await using env = await twoAgents("web", fast);
    const { cluster, a, b, reader, set, log } = env;
    await using wa = await connect(a.url, fast);
    await wa.register("web", 1, { attrs: { v: "1" } });
    await wa.register("web", 2);
    await until(() => set.online().length === 2, "both up");

    await cluster.members[0].kill();
    // While etcd is away the agents keep serving their last known state,
    // and say so.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const status = await reader.status();
    assert.equal(status.connected, false, "the agent reports etcd unreachable");
    assert.equal(
      (await reader.lookup("web")).length,
      2,
      "last known state served",
    );
    const health = await fetch(`${b.http}healthz`);
    assert.equal(health.status, 503);
    await health.body?.cancel();
    await new Promise((resolve) => setTimeout(resolve, (LEASE_TTL + 2) * 1000));

    await cluster.members[0].restart();
    await eventually(async () => assert.ok((await reader.status()).connected));
    // Let the old lease run out: whatever it takes with it is written back
    // under the new one. Then the state must be right, and stay right.
    await new Promise((resolve) =>
      setTimeout(resolve, (2 * LEASE_TTL + 1) * 1000)
    );
    const settled = () =>
      set.connected && set.online().length === 2 &&
      set.get("127.0.0.1:1")?.attrs.v === "1";
    await until(settled, "both registrations back at B", 30_000);
    await new Promise((resolve) => setTimeout(resolve, (LEASE_TTL + 1) * 1000));
    assert.ok(settled(), `still right later: ${JSON.stringify(set.online())}`);
    assert.equal((await reader.lookup("web")).length, 2);
    // Per instance, the events alternate up/down and never repeat.
    for (const addr of ["127.0.0.1:1", "127.0.0.1:2"]) {
      const kinds = log.filter((l) => l.split(" ")[1] === addr).map((l) =>
        l.split(" ")[0]
      );
      for (let i = 1; i < kinds.length; i++) {
        assert.ok(
          !(kinds[i] === "up" && kinds[i - 1] !== "down"),
          `${addr}: ${kinds.join(",")}`,
        );
      }
      assert.notEqual(kinds.at(-1), "down", `${addr} ends up`);
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an idle agent's etcd write rate is the same with 1 and 1,000 instances",
  async fn() {
    await using cluster = await startEtcd();
    const p = prefix();
    await using agent = await etcdAgent(cluster, p);
    await using client = await connect(agent.url);
    const window = 4000; // longer than a keep-alive period (TTL / 3)
    const idlePuts = async () => {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const before = await cluster.metric("etcd_debugging_mvcc_put_total");
      await new Promise((resolve) => setTimeout(resolve, window));
      return (await cluster.metric("etcd_debugging_mvcc_put_total")) - before;
    };
    await client.register("one", 1);
    const withOne = await idlePuts();
    const batch = [];
    for (let port = 1; port < 1000; port++) {
      batch.push(client.register("many", port));
      if (batch.length === 100) await Promise.all(batch.splice(0));
    }
    await Promise.all(batch);
    assert.equal((await client.lookup("many")).length, 999);
    const withThousand = await idlePuts();
    console.log(
      `etcd puts in ${window} ms of idleness: ${withOne} with 1 instance, ${withThousand} with 1,000`,
    );
    assert.equal(withOne, withThousand);
    assert.equal(withThousand, 0, "an idle agent only renews its lease");
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: a client that moves to another agent keeps its instance, without a flap",
  async fn() {
    await using env = await twoAgents("mover");
    const { a, b, set, log } = env;
    // Through agent A, then the connection is lost (close code 4000).
    const first = await openRawClient(`${a.url}?client=mover-1-0123456789`);
    await first.call("discover.register", {
      service: "mover",
      addr: "10.1.1.1:80",
      attrs: { v: "1" },
    });
    await until(() => set.online().length === 1, "up");
    await first.close(4000);
    // The same client id reconnects through agent B and registers again.
    await using moved = await connect(b.url, {
      clientId: "mover-1-0123456789",
    });
    await moved.register("mover", "10.1.1.1:80", { attrs: { v: "1" } });
    // A's grace TTL and lease pass: the instance stays, held by B now.
    await new Promise((resolve) =>
      setTimeout(resolve, (TTL + LEASE_TTL + 2) * 1000)
    );
    assert.equal(set.online().length, 1);
    assert.deepEqual(log, ['up 10.1.1.1:80 {"v":"1"}']);
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an agent restarted (SIGTERM) within the lease TTL causes no flap at other agents",
  async fn() {
    const lease = 5;
    await using cluster = await startEtcd();
    const p = prefix();
    let a = await etcdAgent(cluster, p, [], lease);
    const listen = `127.0.0.1:${new URL(a.http).port}`;
    await using b = await etcdAgent(cluster, p, [], lease);
    await using reader = await connect(b.url);
    await using set = await reader.services("steady");
    const log = record(set);
    await using client = await connect(a.url, fast);
    await client.register("steady", "10.2.2.2:80", { attrs: { v: "1" } });
    await until(() => log.length === 1, "up at B");
    const status = await a.stop(); // graceful: SIGTERM
    assert.equal(status.code, 0);
    a = await etcdAgent(cluster, p, ["--listen", listen], lease);
    try {
      await until(() => client.state === "connected", "the client is back");
      // Past the old agent's lease: the instance was taken over, not lost.
      await new Promise((resolve) => setTimeout(resolve, (lease + 2) * 1000));
      assert.deepEqual(log, ['up 10.2.2.2:80 {"v":"1"}']);
      assert.equal(set.online().length, 1);
    } finally {
      await client.close();
      await a.stop();
    }
  },
});
