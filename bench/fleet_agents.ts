// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 11, twenty agents: 20 agent processes on one etcd, 1,000
 * services of 2 instances each (written straight into etcd in the agent's
 * record format). Each agent has one client (the client library) with
 * sets of its own 50 services, so each service has exactly one
 * subscribing agent. A writer (raw `etcd3` puts, in the agent's format)
 * changes an instance's attributes 200 times a second, round the
 * services so that consecutive changes go to different agents, open loop.
 * A sample runs from the put until the subscribing agent's client has the
 * `update`.
 *
 * Every change is wanted at one agent of the twenty: an agent that watches
 * the whole prefix receives and handles all of them, one that watches the
 * services it serves only its own.
 *
 * Baseline: the same puts under another prefix, seen by 20 raw `etcd3`
 * watchers in 20 processes (`_etcd_watcher.ts`), watcher `k` watching the
 * range of agent `k`'s 50 services (their names share a prefix), until
 * the subscribing watcher's line arrives.
 *
 * Ours and the baseline alternate in spans of one second, ten of each
 * after an untimed one of each (2,000 samples each; `--quick`: 3 agents,
 * 60 services, 2 spans of 50).
 * A span ends once all its samples arrived, so spans do not overlap, and
 * the agents are idle while the baseline runs.
 *
 * The agents' CPU: utime + stime from `/proc/PID/stat`, read before and
 * after every span of ours, summed, as a share of one core over the
 * spans' time, the mean per agent; the same of the watcher processes over
 * the baseline's spans.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { Etcd3 } from "etcd3";
import { type Client, connect } from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { fleetValue, writeFleet } from "./_etcd_fleet.ts";
import {
  addrOf,
  type Bench,
  cpuTicks,
  etcdAgentArgs,
  figure,
  percentile,
  ticksPerSecond,
  within,
} from "./_harness.ts";
import { spawnEtcdWatcher, type WatcherProcess } from "./_watcher_process.ts";

/** Instances of each service. */
const INSTANCES = 2;
/** The agents' prefix, and the baseline's (of the same length). */
const OURS = "/discover/", BASE = "/baseline/";
/** Processes started at once. */
const SPAWN_CONCURRENCY = 4;

/** Sizes of one run. */
interface Sizes {
  /** Agent processes (and watcher processes). */
  agents: number;
  /** Services each agent subscribes to. */
  perAgent: number;
  /** Changes per second. */
  rate: number;
  /** Spans of each side, one second each. */
  spans: number;
}

const FULL: Sizes = { agents: 20, perAgent: 50, rate: 200, spans: 10 };
const QUICK: Sizes = { agents: 3, perAgent: 20, rate: 50, spans: 2 };

/** Service `j` of agent `k`: the services of one agent share a prefix. */
function serviceOf(k: number, j: number): string {
  return `fleet-${String(k).padStart(2, "0")}-${String(j).padStart(2, "0")}`;
}

/**
 * Runs `make` on every index below `count`, `SPAWN_CONCURRENCY` at a
 * time, and puts what it makes into `into` at once (so that whoever stops
 * them finds them all, should one fail to start). After a failure, starts
 * no more, waits for those under way, and rejects.
 */
async function startAll<T>(
  into: T[],
  make: (k: number) => Promise<T>,
  { count }: { count: number },
): Promise<void> {
  let next = 0, failed = false;
  const results = await Promise.allSettled(
    Array.from({ length: SPAWN_CONCURRENCY }, async () => {
      while (next < count && !failed) {
        const k = next++;
        try {
          into[k] = await make(k);
        } catch (error) {
          failed = true;
          throw error;
        }
      }
    }),
  );
  const failure = results.find((r) => r.status === "rejected");
  if (failure) throw (failure as PromiseRejectedResult).reason;
}

/** Samples in flight, by key; each resolves with its time in ms. */
class Pending {
  #waiting = new Map<string, { started: number; resolve: () => void }>();
  readonly times: number[] = [];

  /** Starts timing `key`; resolves once {@linkcode Pending.seen} is called for it. */
  expect(key: string): Promise<void> {
    if (this.#waiting.has(key)) {
      throw new Error(`a change of ${key} is in flight already`);
    }
    return new Promise<void>((resolve) => {
      this.#waiting.set(key, { started: performance.now(), resolve });
    });
  }

  /** `key`'s change arrived. */
  seen(key: string): void {
    const w = this.#waiting.get(key);
    if (!w) return;
    this.times.push(performance.now() - w.started);
    this.#waiting.delete(key);
    w.resolve();
  }
}

/** Runs benchmark 11. */
export const fleetAgents: Bench = async ({ quick, log }) => {
  const { agents: n, perAgent, rate, spans } = quick ? QUICK : FULL;
  const services: string[] = [];
  // Round the services so that consecutive changes go to different agents.
  for (let j = 0; j < perAgent; j++) {
    for (let k = 0; k < n; k++) services.push(serviceOf(k, j));
  }
  const began = performance.now();
  await using cluster = await startEtcd();
  const endpoint = cluster.endpoints[0];
  const etcd = new Etcd3({ hosts: [endpoint] });
  const lease = etcd.lease(60);
  const agents: AgentProcess[] = [];
  const watchers: WatcherProcess[] = [];
  const clients: Client[] = [];
  try {
    const id = await lease.grant();
    for (const prefix of [OURS, BASE]) {
      await writeFleet(etcd, services, {
        perService: INSTANCES,
        prefix,
        lease: id,
      });
    }
    const ours = new Pending(), base = new Pending();
    const agentArgs = etcdAgentArgs([endpoint], OURS);
    await startAll(agents, () => spawnAgent(agentArgs), { count: n });
    log(`11: ${n} agents started`);
    const seen = (key: string) =>
      base.seen(key.slice(BASE.length + "instances/".length));
    await startAll(
      watchers,
      (k) =>
        spawnEtcdWatcher(
          endpoint,
          `${BASE}instances/${serviceOf(k, 0).slice(0, -2)}`,
          { onKey: seen },
        ),
      { count: n },
    );
    log(`11: ${n} etcd watcher processes started`);
    for (const [k, agent] of agents.entries()) {
      const client = await connect(agent.url, { requestTimeout: 30_000 });
      clients.push(client);
      await Promise.all(
        Array.from({ length: perAgent }, async (_, j) => {
          const set = await client.services(serviceOf(k, j));
          if (set.online().length !== INSTANCES) {
            throw new Error(
              `the set of ${
                serviceOf(k, j)
              } at agent ${k} held ${set.online().length} instances, not ${INSTANCES}`,
            );
          }
          set.addEventListener("update", (e) => {
            if (e.kind === "update") {
              ours.seen(`${serviceOf(k, j)}/${e.instance.addr}`);
            }
          });
        }),
      );
    }
    log(
      `11: ${n * perAgent} sets open, ${
        (performance.now() - began) / 1000 | 0
      } s in`,
    );

    const ticks = await ticksPerSecond();
    const cpu = {
      ours: new Array(n).fill(0),
      base: new Array(n).fill(0),
      oursMs: 0,
      baseMs: 0,
      /** The measuring process's. */
      self: 0,
    };
    let change = 0;
    /** One span: `rate` changes in a second, under `prefix`, until all arrived. */
    const span = async (prefix: string, pending: Pending, pids: number[]) => {
      // The measuring process too: it must not be what holds samples up.
      const watched = [...pids, Deno.pid];
      const before = await cpuTicks(watched);
      const started = performance.now();
      const arrivals: Promise<void>[] = [];
      const puts: Promise<unknown>[] = [];
      for (let i = 0; i < rate; i++) {
        const wait = started + i * 1000 / rate - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        const c = change++;
        const service = services[c % services.length];
        // Every change gets new attributes: the agents see an `update`.
        const addr = addrOf(Math.floor(c / services.length) % INSTANCES);
        const key = `${service}/${addr}`;
        arrivals.push(pending.expect(key));
        puts.push(
          etcd.kv.put({
            key: Buffer.from(`${prefix}instances/${key}`),
            value: Buffer.from(fleetValue({ change: String(c) })),
          }),
        );
      }
      await within(
        Promise.all([...arrivals, ...puts]),
        30_000,
        `every change of a span under ${prefix}`,
      );
      const elapsed = performance.now() - started;
      const after = await cpuTicks(watched);
      const used = after.map((t, k) => t - before[k]);
      return { elapsed, self: used.pop()!, used };
    };
    // One untimed span of each first.
    for (let s = -1; s < spans; s++) {
      const a = await span(OURS, ours, agents.map((p) => p.child.pid));
      const b = await span(BASE, base, watchers.map((w) => w.pid));
      const recent = (times: number[]) =>
        `p50 ${percentile(times.slice(-rate), 50).toFixed(1)} ms, p99 ${
          percentile(times.slice(-rate), 99).toFixed(1)
        } ms`;
      log(
        `11: span ${s + 1}: through the agents ${recent(ours.times)}; raw ${
          recent(base.times)
        }`,
      );
      if (s < 0) {
        ours.times.length = 0;
        base.times.length = 0;
        continue;
      }
      cpu.self += a.self + b.self;
      cpu.oursMs += a.elapsed;
      a.used.forEach((t, k) => cpu.ours[k] += t);
      cpu.baseMs += b.elapsed;
      b.used.forEach((t, k) => cpu.base[k] += t);
    }
    log(
      `11: ${spans} spans of ${rate} changes through the agents and raw, ${
        (performance.now() - began) / 1000 | 0
      } s in`,
    );

    /** Mean CPU per process, as a percentage of one core over `ms`. */
    const share = (used: number[], ms: number) =>
      used.reduce((a, b) => a + b, 0) / used.length / ticks * 1000 / ms * 100;
    const busiest = (used: number[], ms: number) =>
      Math.max(...used) / ticks * 1000 / ms * 100;
    const samples = ours.times.length;
    const label = `${n} agents, ${rate} changes/s`;
    return [
      figure({
        figure: `11 cross-host propagation p50, ${label}`,
        unit: "ms",
        value: percentile(ours.times, 50),
        baseline: percentile(base.times, 50),
        baselineLabel: `etcd put->watch p50, ${n} watcher processes`,
      }),
      figure({
        figure: `11 cross-host propagation p99, ${label}`,
        unit: "ms",
        value: percentile(ours.times, 99),
        baseline: percentile(base.times, 99),
        baselineLabel: `etcd put->watch p99, ${n} watcher processes`,
        target: { ratioAtMost: 2 },
        note: `${samples} samples each; ${
          n * perAgent
        } services, each with one subscribing agent`,
      }),
      figure({
        figure: `11 agent CPU, mean per agent, ${label}`,
        unit: "%",
        value: share(cpu.ours, cpu.oursMs),
        baseline: share(cpu.base, cpu.baseMs),
        baselineLabel: "per etcd3 watcher process",
        note:
          `% of one core over the writer's spans (/proc/PID/stat utime + stime); busiest agent ${
            busiest(cpu.ours, cpu.oursMs).toFixed(1)
          } %, busiest watcher ${
            busiest(cpu.base, cpu.baseMs).toFixed(1)
          } %; the measuring process ${
            busiest([cpu.self], cpu.oursMs + cpu.baseMs).toFixed(1)
          } %`,
      }),
    ];
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    // Holes, should a start have failed.
    await Promise.all([
      ...agents.filter((a) => a).map((a) => a.stop()),
      ...watchers.filter((w) => w).map((w) => w.stop()),
    ]);
    lease.release();
    etcd.close();
  }
};
