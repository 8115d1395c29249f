// Copyright the discover authors. BSD-3-Clause license.

/**
 * Churn under faults: tens of clients register, re-register and unregister
 * at random through two agents sharing etcd, while their connections (and
 * the subscribers') are cut at random. At the end every subscriber's set
 * equals the truth, and every per-instance event sequence is consistent.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { until } from "./_wait.ts";
import { startEtcd } from "../tools/etcd.ts";
import { tcpProxy } from "./_proxy.ts";
import { churn, churned, truthLines, watchSequences } from "./_churn.ts";

Deno.test({
  name:
    "churn under faults: sets equal the truth and event sequences stay consistent",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const CLIENTS = 20, SUBSCRIBERS = 4, PORTS_PER_CLIENT = 3;
    const CHURN_MS = 8000, CUT_EVERY_MS = 700;
    await using cluster = await startEtcd();
    const args = [
      "--backend",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints.join(","),
      "--etcd-prefix",
      `/churn-${crypto.randomUUID().slice(0, 8)}/`,
      "--ttl",
      "30", // cut sessions keep their instances while their clients return
      "--log-level",
      "error",
    ];
    await using a = await spawnAgent(args);
    await using b = await spawnAgent(args);
    const proxies = [a, b].map((agent) =>
      tcpProxy(Number(new URL(agent.http).port))
    );
    const options = { reconnect: { maxDelay: 200 }, requestTimeout: 3000 };
    const clients: Client[] = [];
    const subscribers: Client[] = [];
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

      // The truth: what each client last successfully asked for.
      const truth = new Map<string, string>();
      let cuts = 0;
      const deadline = Date.now() + CHURN_MS;
      const cutter = setInterval(() => {
        const which = Math.random() < 0.5
          ? [0]
          : Math.random() < 0.5
          ? [1]
          : [0, 1];
        for (const i of which) cuts += proxies[i].cut();
      }, CUT_EVERY_MS);
      const ops = await churn(clients, {
        until: deadline,
        portsPerClient: PORTS_PER_CLIENT,
        pauseMs: 20,
        truth,
      });
      clearInterval(cutter);

      const expected = truthLines(truth);
      const actual = churned;
      await until(
        () =>
          sets.every((set) =>
            set.connected &&
            JSON.stringify(actual(set)) === JSON.stringify(expected)
          ),
        "every subscriber's set equals the truth",
        30_000,
      );
      const events = watchers.map((w) => w.events());
      console.log(
        `churn: ${CLIENTS} clients, ${ops} operations, ${cuts} connections cut, ` +
          `${expected.length} instances at the end, events per subscriber: ${
            events.join(", ")
          }`,
      );
      for (const [i, w] of watchers.entries()) {
        assert.deepEqual(w.problems, [], `subscriber ${i}`);
      }
      for (const set of sets) assert.deepEqual(actual(set), expected);
      assert.ok(
        cuts > 0 && ops > CLIENTS,
        "the test really churned under cuts",
      );
    } finally {
      await Promise.all([...clients, ...subscribers].map((c) => c.close()));
      for (const p of proxies) p.close();
    }
  },
});
