// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 6, backend cost: what an idle agent on etcd writes per second
 * while it holds 1, 1,000 and 10,000 instances, read from etcd's own
 * metrics (`etcd_mvcc_put_total`, `etcd_mvcc_delete_total`,
 * `etcd_debugging_lease_renewed_total`). Baseline: the same agent holding
 * one instance. For reference, what the original go-discover would write:
 * every instance every 5 s.
 *
 * @module
 */

import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import {
  addrOf,
  type Bench,
  type Figure,
  figure,
  openRaw,
  registerRange,
} from "./_harness.ts";

const GO_DISCOVER_INTERVAL_S = 5;

function instancesText(n: number): string {
  return `${n.toLocaleString("en-US")} instance${n === 1 ? "" : "s"}`;
}

/** Reads counters from etcd's `/metrics`. */
async function counters(endpoint: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+) ([0-9.e+]+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** Runs benchmark 6. */
export const backendCost: Bench = async ({ quick, log }) => {
  const sizes = quick ? [1, 10, 100] : [1, 1_000, 10_000];
  const windowMs = quick ? 3_000 : 20_000;
  await using cluster = await startEtcd();
  const endpoint = cluster.endpoints[0];
  await using agent = await spawnAgent([
    "--backend",
    "etcd",
    "--etcd-endpoints",
    endpoint,
    "--log-level",
    "warn",
    "--max-registrations",
    String(sizes.at(-1)),
  ]);
  const holder = await openRaw(agent.url);
  const rows: { n: number; writes: number; renewals: number }[] = [];
  try {
    let registered = 0;
    for (const n of sizes) {
      await registerRange(holder, [registered, n], (i) => ({
        service: "bench-cost",
        addr: addrOf(i),
      }));
      registered = n;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const before = await counters(endpoint);
      await new Promise((resolve) => setTimeout(resolve, windowMs));
      const after = await counters(endpoint);
      const delta = (name: string) =>
        ((after.get(name) ?? 0) - (before.get(name) ?? 0)) /
        (windowMs / 1000);
      rows.push({
        n,
        writes: delta("etcd_mvcc_put_total") + delta("etcd_mvcc_delete_total"),
        renewals: delta("etcd_debugging_lease_renewed_total"),
      });
      log(`6: ${n} instances, ${windowMs / 1000} s idle`);
    }
  } finally {
    holder.close();
  }
  const figures: Figure[] = [];
  for (const row of rows) {
    figures.push(figure({
      figure: `6 etcd writes/s, idle agent, ${instancesText(row.n)}`,
      unit: "writes/s",
      value: row.writes,
      baseline: rows[0].writes,
      baselineLabel: "with 1 instance",
      target: { equal: true },
      note: `lease renewals: ${row.renewals.toFixed(2)}/s`,
    }));
  }
  for (const row of rows) {
    figures.push(figure({
      figure: `6 go-discover equivalent, ${instancesText(row.n)}`,
      unit: "writes/s",
      value: row.n / GO_DISCOVER_INTERVAL_S,
      note: "every instance rewritten every 5 s",
    }));
  }
  return figures;
};
