// Copyright the discover authors. BSD-3-Clause license.

/**
 * Long etcd outages and large registries: what an agent must get right when
 * etcd is away for longer than its lease (killed, or the agent's path to it
 * blackholed), and when the registry is larger than one gRPC message.
 *
 * Timings: lease TTL 3 s and grace TTL 2 s, so that an outage of 9 s is
 * longer than twice the lease TTL (the point past which the agent's lease
 * is surely gone and its records are written back under a new one).
 * Detection of a blackholed path is bounded by the lease watchdog (a
 * renewal missing for half the TTL, then a 1 s deadline) and by gRPC
 * keep-alive (6 s + 2 s); the tests allow 20 s.
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import { connect, ErrorCode, RpcError, type ServiceSet } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { etcdAddrs } from "./_fault_etcd.ts";
import { tcpProxy } from "./_proxy.ts";
import { spawnRegistrant, until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const LEASE_TTL = 3;
/** Longer than twice the lease TTL. */
const LONG_OUTAGE_MS = 9000;
const fast = { reconnect: { maxDelay: 200 }, requestTimeout: 5000 };

const prefix = () => `/o-${crypto.randomUUID().slice(0, 8)}/`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function agentArgs(endpoint: string, keyPrefix: string): string[] {
  return [
    "--backend",
    "etcd",
    "--etcd-endpoints",
    endpoint,
    "--etcd-prefix",
    keyPrefix,
    "--etcd-lease-ttl",
    String(LEASE_TTL),
    "--ttl",
    "2",
    "--log-level",
    "error",
  ];
}

/** Polls an async condition until it holds. */
async function eventually(
  condition: () => Promise<boolean>,
  what: string,
  ms = 20_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(200);
  }
}

const addrs = (set: ServiceSet) => set.online().map((i) => i.addr).sort();

/**
 * etcd, agent A reaching it through a proxy (its path, to blackhole), and
 * agent B reaching it directly, on one prefix; all stopped when disposed.
 */
async function agentBehindPath() {
  const cluster = await startEtcd();
  const path = tcpProxy(Number(new URL(cluster.endpoints[0]).port));
  const p = prefix();
  const started: AsyncDisposable[] = [];
  const dispose = async () => {
    for (const item of started.reverse()) await item[Symbol.asyncDispose]();
    path.close();
    await cluster.stop();
  };
  try {
    const a = await spawnAgent(agentArgs(`http://127.0.0.1:${path.port}`, p));
    started.push(a);
    const b = await spawnAgent(agentArgs(cluster.endpoints[0], p));
    started.push(b);
    return { cluster, path, p, a, b, [Symbol.asyncDispose]: dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

Deno.test({
  ...etcdTest,
  name:
    "etcd: killed for longer than twice the lease TTL: instances whose clients closed or died meanwhile are gone for good, live ones stay",
  async fn() {
    await using cluster = await startEtcd();
    const p = prefix();
    await using agent = await spawnAgent(
      agentArgs(cluster.endpoints[0], p),
    );
    await using keeper = await connect(agent.url, fast);
    await keeper.register("web", "10.0.0.3:80");
    const leaver = await connect(agent.url, fast);
    await leaver.register("web", "10.0.0.1:80");
    const crasher = await spawnRegistrant(agent.url, "web", 81);
    await using reader = await connect(agent.url, fast);
    const set = await reader.services("web");
    await until(() => set.online().length === 3, "three instances up");

    await cluster.members[0].kill();
    await eventually(
      async () => !(await reader.status()).connected,
      "the agent notices etcd is gone",
    );
    await leaver.close(); // its unregisters fail: etcd is away
    await crasher.kill();
    await sleep(LONG_OUTAGE_MS);
    await cluster.members[0].restart();

    const truth = ["10.0.0.3:80"];
    await eventually(
      async () =>
        JSON.stringify(await etcdAddrs(cluster, p, "web")) ===
          JSON.stringify(truth) &&
        JSON.stringify(addrs(set)) === JSON.stringify(truth) && set.connected,
      "etcd and the agent hold exactly the live instance",
      30_000,
    );
    // And it stays so: nothing is written back later.
    await sleep((LEASE_TTL + 1) * 1000);
    assert.deepEqual(await etcdAddrs(cluster, p, "web"), truth);
    assert.deepEqual(
      (await reader.lookup("web")).map((i) => i.addr).sort(),
      truth,
    );
    // The instance is free again: another client may register it.
    await using other = await connect(agent.url, fast);
    await other.register("web", "10.0.0.1:80");
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an agent cut off for longer than twice the lease TTL tells its subscribers, fails writes fast, and does not undo an unregister",
  async fn() {
    await using cluster = await startEtcd();
    const etcdPort = Number(new URL(cluster.endpoints[0]).port);
    const path = tcpProxy(etcdPort);
    const p = prefix();
    try {
      await using agent = await spawnAgent([
        ...agentArgs(`http://127.0.0.1:${path.port}`, p),
        "--log-level",
        "warn", // the last one given counts: its warnings go in a failure's report
      ]);
      await using owner = await connect(agent.url, fast);
      await owner.register("web", "10.0.0.1:80");
      await owner.register("web", "10.0.0.2:80", { attrs: { v: "2" } });
      await using reader = await connect(agent.url, fast);
      const set = await reader.services("web");
      const signals: string[] = [];
      set.addEventListener("disconnect", () => signals.push("disconnect"));
      set.addEventListener("sync", () => signals.push("sync"));
      assert.ok(set.connected);

      path.freeze();
      const frozenAt = Date.now();
      await until(
        () => !set.connected,
        "the subscriber learns that the agent is cut off",
        20_000,
      );
      const detectedMs = Date.now() - frozenAt;
      assert.deepEqual(signals, ["disconnect"]);
      assert.deepEqual(
        addrs(set),
        ["10.0.0.1:80", "10.0.0.2:80"],
        "fail-static: the last known state is still served",
      );

      // Writes fail at once, well inside the client's 5 s request timeout
      // (the bound below is generous for a noisy machine).
      const failedWithin: number[] = [];
      for (
        const write of [
          () => owner.register("web", "10.0.0.9:80"),
          () => owner.unregister("web", "10.0.0.1:80"),
        ]
      ) {
        const started = Date.now();
        await assert.rejects(write(), (error: unknown) => {
          assert.ok(error instanceof RpcError);
          assert.equal(error.code, ErrorCode.BackendUnavailable);
          assert.match(error.message, /cannot reach its backend/);
          return true;
        });
        const took = Date.now() - started;
        assert.ok(took < 2500, `a write failed after ${took} ms`);
        failedWithin.push(took);
      }
      console.log(
        `cut off: subscribers told after ${detectedMs} ms; writes failed in ${
          failedWithin.join(" and ")
        } ms`,
      );

      await sleep(Math.max(0, LONG_OUTAGE_MS - (Date.now() - frozenAt)));
      path.thaw();

      const truth = ["10.0.0.2:80"];
      await eventually(
        async () =>
          set.connected &&
          JSON.stringify(addrs(set)) === JSON.stringify(truth) &&
          JSON.stringify(await etcdAddrs(cluster, p, "web")) ===
            JSON.stringify(truth),
        "the unregistered instance is gone and the live one is back",
        30_000,
      ).catch(async (error) => {
        // What each side holds, and what the agent said, for the report.
        throw new Error(
          `${error.message}; connected ${set.connected}, the set holds ${
            JSON.stringify(addrs(set))
          }, etcd ${
            JSON.stringify(await etcdAddrs(cluster, p, "web").catch(String))
          }; the agent logged:\n${agent.stderr().slice(-4000)}`,
        );
      });
      assert.equal(signals.at(-1), "sync");
      assert.equal(set.get("10.0.0.2:80")?.attrs.v, "2");
      // Retried after the outage, the unregister finds nothing to remove,
      // and nothing comes back later.
      assert.equal(await owner.unregister("web", "10.0.0.1:80"), false);
      await sleep((LEASE_TTL + 1) * 1000);
      assert.deepEqual(await etcdAddrs(cluster, p, "web"), truth);
      assert.deepEqual(addrs(set), truth);
    } finally {
      path.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an agent starts on a registry larger than one gRPC message and reads all of it",
  async fn() {
    await using cluster = await startEtcd();
    const p = prefix();
    const COUNT = 1200;
    const blob = "x".repeat(4000);
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    let bytes = 0;
    try {
      for (let i = 0; i < COUNT; i += 100) {
        await Promise.all(
          Array.from({ length: 100 }, (_, j) => {
            const n = i + j;
            const key = `${p}instances/big/10.1.${n >> 8}.${n & 255}:80`;
            const value = JSON.stringify({
              attrs: { blob, n: String(n) },
              owner: "c:seeded",
              registeredAt: Date.now(),
            });
            bytes += key.length + value.length;
            return etcd.put(key).value(value);
          }),
        );
      }
    } finally {
      etcd.close();
    }
    assert.ok(
      bytes > 4 * 1024 * 1024,
      `the registry (${bytes} bytes) exceeds gRPC's 4 MiB message limit`,
    );
    await using agent = await spawnAgent(agentArgs(cluster.endpoints[0], p));
    await using client = await connect(agent.url, fast);
    const instances = await client.lookup("big");
    assert.equal(instances.length, COUNT);
    assert.equal(
      new Set(instances.map((i) => i.attrs.n)).size,
      COUNT,
      "every record read once",
    );
    assert.ok((await client.status()).connected);
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an unregister refused during an outage at agent A does not undo the same client's registration through agent B",
  async fn() {
    await using env = await agentBehindPath();
    const { cluster, path, p, a, b } = env;
    const clientId = "moving-client-0123456789";
    const addr = "10.0.0.1:1000";
    const atA = await connect(a.url, { ...fast, clientId, reconnect: false });
    await atA.register("web", addr, { attrs: { v: "1" } });
    path.freeze();
    await eventually(
      async () => !(await atA.status()).connected,
      "agent A notices it is cut off",
    );
    await assert.rejects(
      atA.unregister("web", addr),
      (e: unknown) =>
        e instanceof RpcError && e.code === ErrorCode.BackendUnavailable,
    );
    await atA.close();
    // The same client, now through agent B, wants the instance after all.
    await using atB = await connect(b.url, { ...fast, clientId });
    await atB.register("web", addr, { attrs: { v: "2" } });
    path.thaw();
    await using readerA = await connect(a.url, fast);
    await eventually(
      async () => (await readerA.status()).connected,
      "agent A reaches etcd again",
    );
    // Long enough for A's pending removal to have been tried (its
    // backoff tops out at 5 s) and for A's lost lease to expire.
    await sleep(7000);
    assert.deepEqual(await etcdAddrs(cluster, p, "web"), [addr]);
    const [seen] = await atB.lookup("web");
    assert.equal(seen?.attrs.v, "2");
    assert.equal((await readerA.lookup("web"))[0]?.attrs.v, "2");
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: when an agent's path to etcd comes back, its subscribers are told they are in sync only once they hold what changed meanwhile",
  async fn() {
    await using env = await agentBehindPath();
    const { path, a, b } = env;
    await using reader = await connect(a.url, fast);
    const set = await reader.services("web");
    const atSync: string[][] = [];
    set.addEventListener("sync", () => atSync.push(addrs(set)));
    path.freeze();
    await until(() => !set.connected, "the reader is told", 20_000);
    await using writer = await connect(b.url, fast);
    await writer.register("web", "10.0.0.7:80");
    await writer.register("web", "10.0.0.8:80");
    // The path comes back without its connections (a restarted NAT, say).
    path.thaw("reset");
    await until(() => atSync.length > 0, "in sync again", 30_000);
    assert.deepEqual(atSync[0], ["10.0.0.7:80", "10.0.0.8:80"]);
  },
});
