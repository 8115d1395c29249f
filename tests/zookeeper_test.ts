// Copyright the discover authors. BSD-3-Clause license.

/**
 * Many hosts on ZooKeeper: agents as separate processes sharing a real
 * 3-server ensemble (Debian's `zookeeper`, started on free loopback
 * ports), under failures of clients, agents and ZooKeeper servers: a
 * server SIGKILLed, one SIGSTOPped, and churn while both happen.
 *
 * Time bounds are generous (the ensemble's tick is 200 ms, the agents'
 * session timeout 3 s): they bound a hang, they do not measure.
 */

import assert from "node:assert/strict";
import { type Client, connect, type ServiceSet } from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { fourLetters, startZooKeeper } from "../tools/zookeeper.ts";
import { tcpProxy } from "./_proxy.ts";
import { openRaw } from "./_raw_socket.ts";
import { until } from "./_wait.ts";
import {
  churn,
  churned,
  persist,
  truthLines,
  watchSequences,
} from "./_churn.ts";

const zkTest = { sanitizeOps: false, sanitizeResources: false };
const SESSION_TIMEOUT = 3;

// One ensemble for the module; every test has its own prefix, and puts
// back every server it stops or kills.
const zk = await startZooKeeper(3);

function zkAgent(prefix: string, extra: string[] = []): Promise<AgentProcess> {
  return spawnAgent([
    "--backend",
    "zookeeper",
    "--zk-connect",
    zk.connect,
    "--zk-prefix",
    prefix,
    "--zk-session-timeout",
    String(SESSION_TIMEOUT),
    "--ttl",
    "2",
    "--log-level",
    "error",
    ...extra,
  ]);
}

const prefix = () => `/t-${crypto.randomUUID().slice(0, 8)}`;
const fast = { reconnect: { maxDelay: 200 }, requestTimeout: 4000 };

const addrs = (set: ServiceSet) =>
  set.online().map((i) => `${i.addr} ${i.attrs.v ?? ""}`).sort();

/** The ensemble's last zxid: it moves with every write, and only then. */
async function lastZxid(): Promise<number> {
  let zxid = 0;
  for (const member of zk.members) {
    const text = await fourLetters(member.address, "srvr");
    const hex = text && /^Zxid: (0x[0-9a-f]+)/m.exec(text)?.[1];
    if (hex) zxid = Math.max(zxid, Number(hex));
  }
  return zxid;
}

Deno.test({
  ...zkTest,
  name:
    "zookeeper: an idle agent writes nothing, with 500 instances (session pings only)",
  async fn() {
    const p = prefix();
    await using a = await zkAgent(p);
    await using b = await zkAgent(p);
    const writer = await connect(a.url, fast);
    const reader = await connect(b.url, fast);
    try {
      const set = await reader.services("idle");
      await Promise.all(
        Array.from(
          { length: 500 },
          (_, i) => writer.register("idle", `10.3.${i >> 8}.${i & 255}:80`),
        ),
      );
      await until(() => set.online().length === 500, "B sees all 500");
      // (First in the module: no session of another test expires meanwhile.)
      // Longer than the session timeout: pings go several times.
      const before = await lastZxid();
      await new Promise((resolve) =>
        setTimeout(resolve, SESSION_TIMEOUT * 1000 + 1000)
      );
      const after = await lastZxid();
      assert.equal(
        after.toString(16),
        before.toString(16),
        "a write happened while idle",
      );
      assert.equal(set.online().length, 500);
    } finally {
      await writer.close();
      await reader.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper: two agents agree (instances, revisions, epoch); a SIGKILLed agent's instances go at its session's expiry",
  async fn() {
    const p = prefix();
    await using a = await zkAgent(p);
    await using b = await zkAgent(p);
    const writer = await connect(a.url, fast);
    const reader = await connect(b.url, fast);
    try {
      const set = await reader.services("web");
      await writer.register("web", "10.1.0.1:80", { attrs: { v: "1" } });
      await writer.register("web", "10.1.0.2:80", { attrs: { v: "1" } });
      await until(() => set.online().length === 2, "B sees A's instances");
      const [sa, sb] = [await writer.status(), await reader.status()];
      assert.equal(sa.backend, "zookeeper");
      assert.equal(sa.epoch, sb.epoch);
      const atA = await writer.lookup("web");
      const atB = await reader.lookup("web");
      assert.deepEqual(
        atA.map((i) => [i.addr, i.revision]),
        atB.map((i) => [i.addr, i.revision]),
      );
      // A dies without a word: its session expires, its instances go.
      const other = await zkAgent(p);
      const doomed = await connect(other.url, fast);
      await doomed.register("web", "10.1.0.9:80", { attrs: { v: "x" } });
      await until(() => set.online().length === 3, "the doomed instance");
      const killed = Date.now();
      other.kill("SIGKILL");
      await until(
        () => set.online().length === 2,
        "the dead agent's instance goes",
        SESSION_TIMEOUT * 1000 + 10_000,
      );
      const seconds = (Date.now() - killed) / 1000;
      assert.ok(
        seconds >= SESSION_TIMEOUT * 0.5,
        `gone after ${seconds} s: before the session could expire`,
      );
      doomed.close().catch(() => {});
      await other.stop();
    } finally {
      await writer.close();
      await reader.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper: a server SIGKILLed, then one SIGSTOPped: both agents keep answering correctly",
  async fn() {
    const p = prefix();
    await using a = await zkAgent(p);
    await using b = await zkAgent(p);
    const writer = await connect(a.url, fast);
    const reader = await connect(b.url, fast);
    const [killed, stopped] = [zk.members[0], zk.members[1]];
    try {
      const setB = await reader.services("api");
      const setA = await writer.services("api");
      await writer.register("api", "10.2.0.1:80", { attrs: { v: "1" } });
      await until(() => setB.online().length === 1, "B sees it");

      await killed.kill();
      await persist(() =>
        writer.register("api", "10.2.0.2:80", { attrs: { v: "1" } })
      );
      await persist(() =>
        writer.register("api", "10.2.0.1:80", { attrs: { v: "2" } })
      );
      const expected = ["10.2.0.1:80 2", "10.2.0.2:80 1"];
      await until(
        () =>
          JSON.stringify(addrs(setB)) === JSON.stringify(expected) &&
          JSON.stringify(addrs(setA)) === JSON.stringify(expected),
        "both agree with a server dead",
        20_000,
      );
      await killed.restart();

      stopped.signal("SIGSTOP");
      try {
        await persist(() => writer.unregister("api", "10.2.0.2:80"));
        await persist(() =>
          reader.register("api", "10.2.0.3:80", { attrs: { v: "1" } })
        );
        const after = ["10.2.0.1:80 2", "10.2.0.3:80 1"];
        await until(
          () =>
            JSON.stringify(addrs(setB)) === JSON.stringify(after) &&
            JSON.stringify(addrs(setA)) === JSON.stringify(after),
          "both agree with a server stopped",
          30_000,
        );
        const [la, lb] = [
          await persist(() => writer.lookup("api")),
          await persist(() => reader.lookup("api")),
        ];
        assert.deepEqual(
          la.map((i) => `${i.addr} ${i.attrs.v}`).sort(),
          after,
        );
        assert.deepEqual(la.map((i) => i.revision), lb.map((i) => i.revision));
      } finally {
        stopped.signal("SIGCONT");
      }
    } finally {
      await writer.close();
      await reader.close();
      if (!killed.running) await killed.restart();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper: churn through two agents while connections are cut, a server is SIGSTOPped and one SIGKILLed: every set converges to the truth",
  async fn() {
    const CLIENTS = 12, SUBSCRIBERS = 4, PORTS_PER_CLIENT = 3;
    const CHURN_MS = 6000;
    const p = prefix();
    await using a = await zkAgent(p, ["--ttl", "30"]);
    await using b = await zkAgent(p, ["--ttl", "30"]);
    const proxies = [a, b].map((agent) =>
      tcpProxy(Number(new URL(agent.http).port))
    );
    const options = { reconnect: { maxDelay: 200 }, requestTimeout: 3000 };
    const clients: Client[] = [];
    const subscribers: Client[] = [];
    const [stopped, killed] = [zk.members[2], zk.members[0]];
    try {
      for (let i = 0; i < CLIENTS; i++) {
        clients.push(await connect(proxies[i % 2].url, options));
      }
      for (let i = 0; i < SUBSCRIBERS; i++) {
        subscribers.push(await connect(proxies[i % 2].url, options));
      }
      const sets = await Promise.all(
        subscribers.map((s) => s.services("churn")),
      );
      const watchers = sets.map(watchSequences);
      const truth = new Map<string, string>();
      let cuts = 0;
      const deadline = Date.now() + CHURN_MS;
      const cutter = setInterval(() => {
        cuts += proxies[Math.random() < 0.5 ? 0 : 1].cut();
      }, 700);
      // The servers' faults, during the churn.
      const faults = (async () => {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        stopped.signal("SIGSTOP");
        await new Promise((resolve) => setTimeout(resolve, 2000));
        stopped.signal("SIGCONT");
        await killed.kill();
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await killed.restart();
      })();
      const ops = await churn(clients, {
        until: deadline,
        portsPerClient: PORTS_PER_CLIENT,
        pauseMs: 30,
        truth,
      });
      clearInterval(cutter);
      await faults;
      const expected = truthLines(truth);
      await until(
        () =>
          sets.every((set) =>
            set.connected &&
            JSON.stringify(churned(set)) === JSON.stringify(expected)
          ),
        "every subscriber's set equals the truth",
        30_000,
      );
      console.log(
        `zookeeper churn: ${CLIENTS} clients, ${ops} operations, ${cuts} connections cut, ${expected.length} instances at the end`,
      );
      for (const [i, w] of watchers.entries()) {
        assert.deepEqual(w.problems, [], `subscriber ${i}`);
      }
      assert.ok(cuts > 0 && ops > CLIENTS, "the test really churned");
    } finally {
      stopped.signal("SIGCONT");
      if (!killed.running) await killed.restart();
      await Promise.all([...clients, ...subscribers].map((c) => c.close()));
      for (const proxy of proxies) proxy.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper: discover.lease names the agent's session and is bounded by it; a campaigner whose agent is cut off from the ensemble is deposed before its instance goes at another agent",
  async fn() {
    const p = prefix();
    // A's path to the ensemble: one member, through a proxy to freeze.
    const proxy = tcpProxy(Number(zk.members[0].address.split(":")[1]));
    // A grace TTL well above the session timeout: the session bounds it.
    await using a = await zkAgent(p, [
      "--zk-connect",
      `127.0.0.1:${proxy.port}`,
      "--ttl",
      "10",
    ]);
    await using b = await zkAgent(p);
    await using raw = await openRaw(a.url);
    const client = await connect(a.url, {
      pingInterval: 300,
      requestTimeout: 1000,
      reconnect: { maxDelay: 200 },
    });
    const watcher = await connect(b.url, fast);
    try {
      const answer = await raw.call("discover.lease");
      const { ms, lease } = answer.result as { ms: number; lease: string };
      assert.match(lease, /^[0-9a-f]{16}$/, "the session is the lease");
      assert.ok(
        ms > 0 && ms <= SESSION_TIMEOUT * 1000,
        `vouched ${ms} ms: within the session timeout, not the grace TTL`,
      );
      const me = await client.campaign("zk-lock", 7000);
      await me.elected;
      const set = await watcher.services("zk-lock");
      await until(() => set.online().length === 1, "B sees the campaigner");
      let deposedAt: number | undefined;
      me.addEventListener("deposed", () => deposedAt ??= performance.now());
      proxy.freeze();
      await until(
        () => set.online().length === 0,
        "the instance goes at B once A's session expires",
        SESSION_TIMEOUT * 1000 + 15_000,
      );
      const goneAt = performance.now();
      assert.ok(
        deposedAt !== undefined && deposedAt < goneAt,
        "deposed before the instance could go elsewhere",
      );
      assert.equal(me.leading, false);
    } finally {
      proxy.thaw("reset");
      proxy.close();
      await client.close();
      await watcher.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name: "zookeeper: stop the module's ensemble",
  async fn() {
    await zk.stop();
  },
});
