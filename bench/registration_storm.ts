// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 8, registration storm: 10,000 instances registered at once
 * through agent A (10 clients, each sending one JSON-RPC batch of 1,000
 * registrations), until a subscriber of agent B, on the same etcd, has
 * every one as `up`. Baseline: 10,000 raw `etcd3` puts of keys and values
 * of the same size, all at once from one client, until every put is
 * acknowledged. Rounds of both alternate, after one untimed round of each.
 * `--quick`: 1,000 instances (10 clients of 100), one round.
 *
 * So many puts at once may outrun etcd's apply loop, which then refuses
 * proposals ("too many requests"); the baseline's client tries such a put
 * again after 10 ms (the time counts), and has no circuit breaker or
 * retries of its own.
 *
 * @module
 */

import { Etcd3, type IOptions } from "etcd3";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import {
  addrOf,
  type Bench,
  figure,
  openRaw,
  percentile,
  type RawSocket,
  registerRange,
  within,
} from "./_harness.ts";

/** Clients registering at once, each with one JSON-RPC batch (of at most the agent's `maxBatch`, 1,000). */
const CLIENTS = 10;

/** A value of the size the agent stores for an instance without attributes. */
const VALUE = JSON.stringify({
  attrs: {},
  owner: "00000000-0000-4000-8000-000000000000",
  registeredAt: 1767225600000,
});

/** Runs every call as it is: no circuit breaker, no retries. */
const PASS_THROUGH = {
  execute: (fn: (context: { signal: AbortSignal }) => unknown) =>
    fn({ signal: new AbortController().signal }),
};

type FaultHandling = NonNullable<IOptions["faultHandling"]>;

/** A raw put, tried again while etcd says it has too many requests. */
async function rawPut(client: Etcd3, key: string, refused: { count: number }) {
  for (;;) {
    try {
      return await client.put(key).value(VALUE).exec();
    } catch (error) {
      if (!/too many requests/.test(String(error))) throw error;
      refused.count++;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

/** Subscribes to `service` at `url` and resolves once its `current` came. */
async function subscribe(url: string, service: string): Promise<RawSocket> {
  const socket = await openRaw(url);
  socket.send(JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "discover.subscribe",
    params: { service },
  }));
  while (!(await socket.next()).includes('"current"')) { /* initial events */ }
  return socket;
}

/** Resolves once `socket` received `count` events of `kind`. */
async function count(socket: RawSocket, kind: string, count: number) {
  const marker = `"kind":"${kind}"`;
  for (let seen = 0; seen < count;) {
    if ((await socket.next()).includes(marker)) seen++;
  }
}

/** The store's revision now. */
async function revisionOf(client: Etcd3): Promise<number> {
  return Number((await client.get("/").exec()).header.revision);
}

/** Runs benchmark 8. */
export const registrationStorm: Bench = async ({ quick, log }) => {
  const instances = quick ? 1_000 : 10_000;
  const rounds = quick ? 1 : 3;
  const perClient = instances / CLIENTS;
  await using cluster = await startEtcd();
  const endpoint = cluster.endpoints[0];
  const agentArgs = [
    "--backend",
    "etcd",
    "--etcd-endpoints",
    endpoint,
    "--log-level",
    "warn",
  ];
  await using a = await spawnAgent(agentArgs);
  await using b = await spawnAgent(agentArgs);
  const etcd = new Etcd3({
    hosts: [endpoint],
    faultHandling: {
      host: () =>
        PASS_THROUGH as ReturnType<NonNullable<FaultHandling["host"]>>,
      global: PASS_THROUGH as FaultHandling["global"],
    },
  });
  const ours: number[] = [], base: number[] = [], transactions: number[] = [];
  const refused = { count: 0 };
  const limit = 120_000;
  try {
    for (let round = 0; round < rounds + 1; round++) {
      // Ours: through agent A, until B's subscriber has every instance.
      const service = `storm-${round}`;
      const reader = await subscribe(b.url, service);
      const writers = await Promise.all(
        Array.from({ length: CLIENTS }, () => openRaw(a.url)),
      );
      const before = await revisionOf(etcd);
      let started = performance.now();
      const registered = Promise.all(writers.map((socket, k) =>
        registerRange(
          socket,
          [k * perClient, (k + 1) * perClient],
          (i) => ({ service, addr: addrOf(i) }),
        )
      ));
      await within(count(reader, "up", instances), limit, "every up at B");
      const took = performance.now() - started;
      await within(registered, limit, "every registration's response");
      const txns = await revisionOf(etcd) - before;
      // Clean close: A removes them all; B's subscriber sees them go.
      for (const socket of writers) socket.close();
      await within(count(reader, "down", instances), limit, "every down at B");
      reader.close();

      // Baseline: raw puts of keys of the same size, all at once, out of
      // the agents' sight (`/baseline/` is as long as `/discover/`).
      const prefix = `/baseline/instances/${service}/`;
      started = performance.now();
      await within(
        Promise.all(
          Array.from(
            { length: instances },
            (_, i) => rawPut(etcd, prefix + addrOf(i), refused),
          ),
        ),
        limit,
        "every raw put",
      );
      const baseTook = performance.now() - started;
      await etcd.delete().prefix(prefix).exec();
      if (round > 0) { // the first round warms up
        ours.push(took);
        base.push(baseTook);
        transactions.push(txns);
      }
      log(
        `8: round ${round}: ${took.toFixed(0)} ms through the agents, ${
          baseTook.toFixed(0)
        } ms raw puts, ${txns} etcd revisions, ${refused.count} raw puts refused so far`,
      );
    }
  } finally {
    etcd.close();
  }
  const label = instances.toLocaleString("en-US");
  const value = percentile(ours, 50);
  const baseline = percentile(base, 50);
  return [
    figure({
      figure: `8 ${label} registrations at once, until all are up at agent B`,
      unit: "ms",
      value,
      baseline,
      baselineLabel: `${label} raw etcd3 puts at once`,
      target: { ratioAtMost: 1.5 },
      note: `median of ${rounds}: ${
        ours.map((t) => t.toFixed(0)).join(", ")
      } ms (raw puts: ${base.map((t) => t.toFixed(0)).join(", ")} ms); ${
        Math.round(instances / value * 1000).toLocaleString("en-US")
      } registrations/s; etcd transactions per round: ${
        transactions.join(", ")
      }; raw puts etcd refused as too many and sent again: ${refused.count}`,
    }),
  ];
};
