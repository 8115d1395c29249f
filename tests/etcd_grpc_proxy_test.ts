// Copyright the discover authors. BSD-3-Clause license.

/**
 * Agents behind etcd's gRPC proxy (`etcd grpc-proxy start`): a real etcd,
 * the proxy in front of it, and agents as separate processes that use the
 * proxy as their only etcd endpoint (one more agent talks to etcd
 * directly where the comparison matters).
 *
 * What the proxy changes, and what it must not: it coalesces the agents'
 * identical prefix watches into one watcher at etcd, and passes
 * everything else through (reads with etcd's headers, so the epoch, the
 * cluster id, is the same as without it; writes; each agent's own lease
 * and its keep-alives).
 *
 * Timings: lease TTL 3 s and grace TTL 2 s, as in the other etcd tests,
 * except where the proxy is restarted: there the agents keep the default
 * lease TTL (10 s), longer than a restart takes, as in production.
 * Bounds: a killed agent's instances go within the lease TTL + 3 s (etcd
 * expires a lease between TTL and about TTL + 1 s after the last renewal,
 * then the watch event through the proxy); a killed proxy is noticed
 * within 10 s (the agents' streams end at once; the lease watchdog alone
 * would need half the lease TTL + 1 s); after the proxy restarts, agents
 * are connected again within 20 s (gRPC dials again at most 4 s apart,
 * and etcd3's circuit breaker may refuse calls for 5 s after three
 * failures).
 */

import assert from "node:assert/strict";
import { connect, ErrorCode, RpcError, type StatusResult } from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import {
  type EtcdCluster,
  type EtcdGrpcProxy,
  startEtcd,
  startGrpcProxy,
} from "../tools/etcd.ts";
import { etcdAddrs } from "./_fault_etcd.ts";
import { record } from "./_set_log.ts";
import { openRaw } from "./_raw_socket.ts";
import { until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const LEASE_TTL = 3;
/** The agent's default lease TTL, for the tests that restart the proxy. */
const DEFAULT_LEASE_TTL = 10;
/** How long the proxy stays away when it is restarted. */
const PROXY_DOWN_MS = 3000;
const TTL = 2;
const fast = { reconnect: { maxDelay: 200 }, requestTimeout: 4000 };

/** etcd's gauges of watch streams and watchers (`/metrics`, etcd 3.4). */
const STREAMS = "etcd_debugging_mvcc_watch_stream_total";
const WATCHERS = "etcd_debugging_mvcc_watcher_total";

const prefix = () => `/p-${crypto.randomUUID().slice(0, 8)}/`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An agent on the etcd backend whose only etcd endpoint is `endpoint`. */
function etcdAgent(
  endpoint: string,
  keyPrefix: string,
  leaseTtl = LEASE_TTL,
): Promise<AgentProcess> {
  return spawnAgent([
    "--backend",
    "etcd",
    "--etcd-endpoints",
    endpoint,
    "--etcd-prefix",
    keyPrefix,
    "--etcd-lease-ttl",
    String(leaseTtl),
    "--ttl",
    String(TTL),
    "--log-level",
    "error",
  ]);
}

/** Polls an async condition until it holds (a rejection counts as not yet). */
async function eventually(
  condition: () => Promise<boolean>,
  what: string,
  ms = 20_000,
): Promise<number> {
  const started = Date.now();
  while (!(await condition().catch(() => false))) {
    if (Date.now() - started > ms) {
      throw new Error(`${what}: not within ${ms} ms`);
    }
    await sleep(100);
  }
  return Date.now() - started;
}

/** The agent's `GET /healthz` status code. */
async function healthz(agent: AgentProcess): Promise<number> {
  const res = await fetch(`${agent.http}healthz`);
  await res.body?.cancel();
  return res.status;
}

/** The agent's `discover.status`, on a connection of its own. */
async function status(agent: AgentProcess): Promise<StatusResult> {
  await using client = await connect(agent.url, { reconnect: false });
  return await client.status();
}

/** Both gauges of etcd's watch load. */
async function watchLoad(cluster: EtcdCluster) {
  return {
    streams: await cluster.metric(STREAMS),
    watchers: await cluster.metric(WATCHERS),
  };
}

/**
 * etcd, a gRPC proxy in front of it, and `behindProxy` agents using the
 * proxy (plus `direct` agents using etcd itself), all on one key prefix
 * and with lease TTL `leaseTtl`; all stopped and removed when disposed.
 */
async function proxied(behindProxy: number, direct = 0, leaseTtl = LEASE_TTL) {
  const cluster = await startEtcd();
  let proxy: EtcdGrpcProxy | undefined;
  const agents: AgentProcess[] = [];
  const p = prefix();
  const stop = async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await proxy?.stop();
    await cluster.stop();
  };
  try {
    proxy = await startGrpcProxy(cluster.endpoints);
    const endpoints = [
      ...Array(behindProxy).fill(proxy.url),
      ...Array(direct).fill(cluster.endpoints[0]),
    ];
    const started = await Promise.allSettled(
      endpoints.map((endpoint) => etcdAgent(endpoint, p, leaseTtl)),
    );
    for (const result of started) {
      if (result.status === "fulfilled") agents.push(result.value);
    }
    const failed = started.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    cluster,
    proxy,
    agents,
    prefix: p,
    [Symbol.asyncDispose]: stop,
  };
}

Deno.test({
  ...etcdTest,
  name:
    "etcd gRPC proxy: a registration through agent A is seen at agent B: up, update, down; the epoch is etcd's and a since resumes at any agent",
  async fn() {
    // A and B behind the proxy, C on etcd directly.
    await using env = await proxied(2, 1);
    const [a, b, c] = env.agents;
    const statuses = await Promise.all(env.agents.map(status));
    // The proxy passes etcd's response headers through: the epoch (the
    // cluster id) is the same behind it as without it.
    assert.match(statuses[0].epoch, /^etcd-\d+$/);
    assert.deepEqual(
      statuses.map((s) => [s.backend, s.connected, s.epoch]),
      Array(3).fill(["etcd", true, statuses[0].epoch]),
    );
    const { epoch, revision: since } = statuses[0];

    await using reader = await connect(b.url);
    await using set = await reader.services("cache");
    const log = record(set);
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

    // A subscriber that last saw `since` at A resumes at B (behind the
    // proxy, which watches "cache" already: its own history) and at C
    // (direct, which does not: etcd's history, read at `since` and
    // watched from `since + 1`, the changes following `current` there):
    // both replay the same changes.
    for (const agent of [b, c]) {
      await using raw = await openRaw(agent.url);
      const response = await raw.call("discover.subscribe", {
        service: "cache",
        since,
        epoch,
      });
      const result = response.result as { mode: string; epoch: string };
      assert.equal(result.mode, "replay", agent.url);
      assert.equal(result.epoch, epoch);
      const kinds: string[] = [];
      // The changes themselves; `current`, and `leader` (which follows
      // them), aside.
      const changes = () =>
        kinds.filter((kind) => kind !== "current" && kind !== "leader");
      while (changes().length < 3 || !kinds.includes("current")) {
        const frame = await raw.next() as {
          params: { result: { kind: string } };
        };
        kinds.push(frame.params.result.kind);
      }
      assert.deepEqual(changes(), ["up", "update", "down"], agent.url);
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd gRPC proxy: a SIGKILLed agent's instances go down at the other agent within the lease TTL; the other's stay",
  async fn() {
    await using env = await proxied(2);
    const [a, b] = env.agents;
    await using reader = await connect(b.url);
    await using set = await reader.services("api");
    const log = record(set);
    await using client = await connect(a.url, fast);
    await using other = await connect(b.url);
    await client.register("api", 8080, { attrs: { v: "1" } });
    await client.register("api", 8081);
    await other.register("api", 8082);
    await until(() => set.online().length === 3, "three up at B");

    a.kill("SIGKILL");
    const killedAt = Date.now();
    await a.stop();
    // Each agent keeps its own lease through the proxy: A's expires once
    // A stops renewing it, B's does not.
    await until(() => set.online().length === 1, "A's two down at B", 20_000);
    const elapsed = (Date.now() - killedAt) / 1000;
    assert.ok(
      elapsed <= LEASE_TTL + 3,
      `down after ${elapsed} s; bound ${LEASE_TTL + 3} s`,
    );
    assert.deepEqual(set.online().map((i) => i.addr), ["127.0.0.1:8082"]);
    assert.deepEqual(log.slice(3).map((l) => l.split(" ").slice(0, 2)).sort(), [
      ["down", "127.0.0.1:8080"],
      ["down", "127.0.0.1:8081"],
    ]);
    console.log(
      `agent SIGKILL behind the proxy -> down at the other agent: ${
        elapsed.toFixed(2)
      } s (lease TTL ${LEASE_TTL} s)`,
    );
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd gRPC proxy: three agents behind it cost etcd one watch stream and one watcher, three direct agents three",
  async fn() {
    await using env = await proxied(0);
    const { cluster, proxy, prefix: p } = env;
    // The proxy holds streams and watchers of its own; count from here.
    const base = await watchLoad(cluster);
    const agents = env.agents;
    /** Registers through the first of `group`; resolves once every agent of it has the event. */
    const barrier = async (group: AgentProcess[], port: number) => {
      await using writer = await connect(group[0].url);
      await writer.register("mark", port);
      for (const agent of group) {
        await using client = await connect(agent.url);
        await eventually(
          async () =>
            (await client.lookup("mark")).some((i) =>
              i.addr === `127.0.0.1:${port}`
            ),
          `the mark at ${agent.url}`,
          10_000,
        );
      }
      await writer.unregister("mark", port);
    };

    const viaProxy = await Promise.all(
      [1, 2, 3].map(() => etcdAgent(proxy.url, p)),
    );
    agents.push(...viaProxy);
    // Every agent's watch is live once a change reached all of them.
    await barrier(viaProxy, 1);
    const proxied3 = await watchLoad(cluster);

    const direct = await Promise.all(
      [1, 2, 3].map(() => etcdAgent(cluster.endpoints[0], p)),
    );
    agents.push(...direct);
    await barrier(direct, 2);
    const both = await watchLoad(cluster);

    const delta = (x: typeof base, y: typeof base) =>
      `${x.streams - y.streams} streams, ${x.watchers - y.watchers} watchers`;
    console.log(
      `etcd watch load: proxy alone ${base.streams} streams, ${base.watchers} watchers; ` +
        `3 agents behind the proxy +${delta(proxied3, base)}; ` +
        `3 direct agents +${delta(both, proxied3)}`,
    );
    // The three identical prefix watches share one watcher at etcd,
    // opened by the proxy on one stream of its own.
    assert.deepEqual(proxied3, {
      streams: base.streams + 1,
      watchers: base.watchers + 1,
    });
    // Without the proxy, each agent has its own stream and watcher.
    assert.deepEqual(both, {
      streams: proxied3.streams + 3,
      watchers: proxied3.watchers + 3,
    });
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd gRPC proxy: killing it makes the agents report not connected; restarting it restores them without a flap",
  async fn() {
    await using env = await proxied(2, 0, DEFAULT_LEASE_TTL);
    const { cluster, proxy, prefix: p } = env;
    const [a, b] = env.agents;
    await using reader = await connect(b.url, fast);
    await using set = await reader.services("web");
    const log = record(set);
    await using writer = await connect(a.url, fast);
    await writer.register("web", 1, { attrs: { v: "1" } });
    await until(() => set.online().length === 1, "up at B");

    await proxy.kill();
    const killedAt = Date.now();
    // Both agents lose their streams at once and say so: /healthz 503,
    // status not connected, subscribers told their state may be stale;
    // the last known state is still served, and writes fail at once.
    const detected = await eventually(
      async () =>
        (await healthz(a)) === 503 && (await healthz(b)) === 503 &&
        !set.connected,
      "both agents not connected",
      10_000,
    );
    assert.equal((await status(a)).connected, false);
    assert.equal((await status(b)).connected, false);
    assert.deepEqual(set.online().map((i) => i.addr), ["127.0.0.1:1"]);
    await assert.rejects(
      writer.register("web", 2),
      (error: unknown) =>
        error instanceof RpcError &&
        error.code === ErrorCode.BackendUnavailable,
    );

    // Down for as long as a restart of the proxy may take (shorter than
    // half the lease TTL, after which the agents' lease is in doubt).
    await sleep(PROXY_DOWN_MS);
    await proxy.restart();
    const restartedAt = Date.now();
    const reconnected = await eventually(
      async () =>
        (await healthz(a)) === 200 && (await healthz(b)) === 200 &&
        (await status(a)).connected && (await status(b)).connected &&
        set.connected,
      "both agents connected again",
      20_000,
    );
    console.log(
      `proxy killed -> agents not connected after ${detected} ms; ` +
        `restarted ${restartedAt - killedAt} ms after the kill -> ` +
        `agents connected after ${reconnected} ms`,
    );
    // Back within the lease TTL: nothing expired, nothing flapped.
    assert.deepEqual(await etcdAddrs(cluster, p, "web"), ["127.0.0.1:1"]);
    assert.deepEqual(log, ['up 127.0.0.1:1 {"v":"1"}']);
    // Writes and the watch work through the new proxy process.
    await writer.register("web", 2);
    await until(() => set.online().length === 2, "a new instance up at B");
    await writer.unregister("web", 1);
    await until(() => set.online().length === 1, "an instance down at B");
    assert.deepEqual(log.slice(1), [
      "up 127.0.0.1:2 {}",
      'down 127.0.0.1:1 {"v":"1"}',
    ]);
  },
});

Deno.test({
  ...etcdTest,
  // etcd 3.4's gRPC proxy answers the keep-alive of an expired lease with
  // TTL -1 where etcd answers 0, and the etcd3 client counts only 0 as
  // expired: the backend counts any TTL <= 0 as a lost lease, or an agent
  // behind the proxy would take its lost lease for renewed and never write
  // its records back.
  name:
    "etcd gRPC proxy: away for longer than the lease TTL, then back: every live registration returns",
  async fn() {
    await using env = await proxied(2);
    const { cluster, proxy, prefix: p } = env;
    const [a, b] = env.agents;
    await using reader = await connect(b.url, fast);
    await using set = await reader.services("web");
    await using writer = await connect(a.url, fast);
    await writer.register("web", 1, { attrs: { v: "1" } });
    await until(() => set.online().length === 1, "up at B");

    await proxy.kill();
    // A's lease is renewed only through the proxy: without it, etcd
    // expires the lease and its record.
    await eventually(
      async () => (await etcdAddrs(cluster, p, "web")).length === 0,
      "A's record expired at etcd",
      (LEASE_TTL + 3) * 1000,
    );
    await proxy.restart();
    await eventually(
      async () =>
        (await status(a)).connected && (await status(b)).connected &&
        set.connected && set.get("127.0.0.1:1")?.attrs.v === "1" &&
        (await etcdAddrs(cluster, p, "web")).join() === "127.0.0.1:1",
      "the record written back and seen at B",
      20_000,
    );
  },
});
