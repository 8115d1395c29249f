// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 9, fleet memory: what an agent holds of a large fleet it mostly
 * does not use. 1,000,000 instances across 10,000 services (100 each) are
 * written straight into etcd in the agent's record format, as the other
 * agents of a large cluster would have registered them (transactions of
 * 128 puts, 4 at once, every key attached to one lease). An agent then
 * starts on that etcd, and 100 client sessions (the client library) use
 * 10 of those services: session `i` subscribes to services `i % 10` and
 * `(i + 1) % 10` of the ten, keeps both sets open, and looks up service
 * `(i + 2) % 10` once. Each of the ten is spread across the fleet (every
 * thousandth service).
 *
 * The figure is the agent's RSS after a full garbage collection (asked of
 * the agent through V8's inspector, `_inspected_agent.ts`) once the
 * sessions are settled. Baseline: the same agent with the same 100
 * sessions on the same etcd under a prefix that holds nothing, read the
 * same way. An agent that holds only the services its sessions use holds
 * 1,000 instances more than the baseline; one that holds the whole prefix
 * holds them all.
 *
 * An agent that does not listen within 20 s of its start (the time
 * `spawnServer` gives it; one that reads the whole prefix first takes
 * minutes on etcd 3.4) has no RSS to read: the figure is then `Infinity`
 * (`null` in the JSON), its target missed, and the note says why.
 *
 * Sizes: `DISCOVER_BENCH_FLEET` sets the number of instances (a multiple
 * of 1,000, default 1,000,000) for quicker runs; `--quick` uses 10,000.
 * etcd's default quota (2 GiB) holds the default fleet (about 230 MB of
 * database). Writing it takes 30 to 45 s on 2 CPUs.
 *
 * @module
 */

import { Etcd3 } from "etcd3";
import { type Client, connect } from "../mod.ts";
import { startEtcd } from "../tools/etcd.ts";
import { writeFleet } from "./_etcd_fleet.ts";
import { type Bench, etcdAgentArgs, figure, within } from "./_harness.ts";
import { CATALOG_PAGE_KEYS } from "../backends/etcd.ts";
import {
  type InspectedAgent,
  settledRss,
  spawnInspectedAgent,
} from "./_inspected_agent.ts";

/** Instances per service. */
const PER_SERVICE = 100;
/** Client sessions on the agent. */
const SESSIONS = 100;
/** Services the sessions use. */
const USED = 10;

/** The fleet's size: `DISCOVER_BENCH_FLEET`, or the default. */
function fleetSize(quick: boolean): number {
  const given = Deno.env.get("DISCOVER_BENCH_FLEET");
  if (given === undefined || given === "") return quick ? 10_000 : 1_000_000;
  const n = Number(given);
  if (!Number.isInteger(n) || n < 1000 || n % 1000 !== 0) {
    throw new RangeError(
      `DISCOVER_BENCH_FLEET must be a multiple of 1000, at least 1000: current value is '${given}'`,
    );
  }
  return n;
}

/** The name of service `i` of the fleet. */
function serviceName(i: number): string {
  return `fleet-${String(i).padStart(5, "0")}`;
}

/** The agent's memory with the sessions open. */
interface Reading {
  /** RSS once settled, in KiB. */
  settled: number;
  /** RSS after a full garbage collection, in KiB. */
  collected: number;
  /** From the agent's start until it listened, in ms. */
  started: number;
  /** Until every session had its sets and its lookup, in ms. */
  sessions: number;
  /** One `catalog()` through the agent, in ms, and the instances it counted. */
  catalog: { ms: number; instances: number };
}

/** Where {@linkcode measure} starts its agent, and what its sessions use. */
interface MeasureOptions {
  /** The agent's etcd prefix. */
  prefix: string;
  /** The services the sessions use. */
  used: string[];
  /** The instances each set and lookup must hold. */
  expected: number;
}

/** Starts an agent on `endpoint`, opens the sessions, and reads its memory. */
async function measure(
  endpoint: string,
  { prefix, used, expected }: MeasureOptions,
): Promise<Reading> {
  let began = performance.now();
  await using inspected: InspectedAgent = await spawnInspectedAgent(
    etcdAgentArgs([endpoint], prefix),
  );
  const started = performance.now() - began;
  const agent = inspected.agent;
  began = performance.now();
  const clients: Client[] = [];
  try {
    // Settled, so that the finally below finds every client.
    const opened = await within(
      Promise.allSettled(
        Array.from({ length: SESSIONS }, async (_, i) => {
          const client = await connect(agent.url, { requestTimeout: 60_000 });
          clients.push(client);
          for (const k of [i, i + 1]) {
            const set = await client.services(used[k % USED]);
            if (set.online().length !== expected) {
              throw new Error(
                `the set of ${
                  used[k % USED]
                } held ${set.online().length} instances, not ${expected}`,
              );
            }
          }
          const found = await client.lookup(used[(i + 2) % USED]);
          if (found.length !== expected) {
            throw new Error(
              `the lookup of ${
                used[(i + 2) % USED]
              } found ${found.length} instances, not ${expected}`,
            );
          }
        }),
      ),
      120_000,
      `${SESSIONS} sessions with their sets and lookups`,
    );
    const failure = opened.find((r) => r.status === "rejected");
    if (failure) throw (failure as PromiseRejectedResult).reason;
    const sessions = performance.now() - began;
    const settled = await settledRss(agent.child.pid);
    const collected = await inspected.collectedRss();
    // The service list, after the memory readings: it holds one page.
    const listed = performance.now();
    const { services } = await clients[0].catalog();
    const catalog = {
      ms: performance.now() - listed,
      instances: services.reduce((sum, s) => sum + s.instances, 0),
    };
    return { settled, collected, started, sessions, catalog };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/** Runs benchmark 9. */
export const fleetMemory: Bench = async ({ quick, log }) => {
  const instances = fleetSize(quick);
  const count = instances / PER_SERVICE;
  await using cluster = await startEtcd();
  const endpoint = cluster.endpoints[0];
  const etcd = new Etcd3({ hosts: [endpoint] });
  // Every key goes with the lease, should the etcd outlive the benchmark.
  const lease = etcd.lease(60);
  let ours: Reading | undefined, base: Reading, wrote: number;
  /** etcd counting the prefix itself (count only), in ms. */
  let counted = NaN;
  try {
    const id = await lease.grant();
    const services = Array.from({ length: count }, (_, i) => serviceName(i));
    const began = performance.now();
    await writeFleet(etcd, services, { perService: PER_SERVICE, lease: id });
    wrote = performance.now() - began;
    log(
      `9: ${instances} instances in ${count} services written in ${
        (wrote / 1000).toFixed(1)
      } s`,
    );
    const used = Array.from(
      { length: USED },
      (_, k) => serviceName(Math.floor(k * count / USED)),
    );
    // `/baseline/` is as long as `/discover/` and holds nothing.
    base = await measure(endpoint, { prefix: "/baseline/", used, expected: 0 });
    log(`9: agent on an empty prefix, ${SESSIONS} sessions`);
    try {
      ours = await measure(endpoint, {
        prefix: "/discover/",
        used,
        expected: PER_SERVICE,
      });
      log(`9: agent on the fleet, ${SESSIONS} sessions`);
      const began = performance.now();
      await etcd.getAll().prefix("/discover/instances/").count();
      counted = performance.now() - began;
    } catch (error) {
      // An agent that reads the whole prefix at start may not listen
      // within the time `spawnServer` gives it (20 s): the figure says so
      // instead of ending the suite.
      if (!/did not start/.test(String(error))) throw error;
      ours = undefined;
      log(`9: the agent on the fleet did not start: ${firstLine(error)}`);
    }
  } finally {
    lease.release();
    etcd.close();
  }
  const label = instances.toLocaleString("en-US");
  const mib = (kib: number) => (kib / 1024).toFixed(0);
  const seconds = (ms: number) => (ms / 1000).toFixed(1);
  const name =
    `9 agent RSS, ${label} instances in etcd, ${SESSIONS} sessions using ${
      (USED * PER_SERVICE).toLocaleString("en-US")
    }`;
  const shared = {
    figure: name,
    unit: "MiB",
    baseline: base.collected / 1024,
    baselineLabel: "the same on an empty etcd prefix",
    target: { ratioAtMost: 1.25 },
  };
  if (ours === undefined) {
    return [figure({
      ...shared,
      value: Infinity,
      note:
        `the agent did not listen within 20 s of its start on an etcd holding ${label} instances, so it has no RSS to read (the JSON says null); on the empty prefix it listened after ${
          seconds(base.started)
        } s; writing the fleet took ${seconds(wrote)} s`,
    })];
  }
  if (ours.catalog.instances !== instances) {
    throw new Error(
      `the catalog counted ${ours.catalog.instances} instances, not ${instances}`,
    );
  }
  return [
    figure({
      figure:
        `9 service list (catalog) of ${label} instances, through the agent`,
      unit: "ms",
      value: ours.catalog.ms,
      baseline: counted,
      baselineLabel: "etcd counting the prefix, count only",
      note:
        `a keys-only read of the whole prefix, ${CATALOG_PAGE_KEYS} keys a page; etcd 3.4 looks at every key left for each page`,
    }),
    figure({
      ...shared,
      value: ours.collected / 1024,
      note: `RSS after a full garbage collection; before it, settled: ${
        mib(ours.settled)
      } MiB (${
        mib(base.settled)
      } MiB on the empty prefix); the agent listened after ${
        seconds(ours.started)
      } s (${
        seconds(base.started)
      } s), the sessions had their sets and lookups after ${
        seconds(ours.sessions)
      } s (${seconds(base.sessions)} s); writing the fleet took ${
        seconds(wrote)
      } s`,
    }),
  ];
};

/** The first line of an error's message. */
function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split("\n")[0];
}
