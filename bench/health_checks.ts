// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 12, health checks: 1,000 instances registered through agent A
 * (a process of its own), each with an HTTP check every 1 s (timeout
 * 0.5 s, one failure turns it critical, one success passing again), their
 * targets 1,000 paths of one HTTP server in the measuring process
 * (`_check_targets.ts`). Agent B, another process on the same etcd, holds
 * a subscriber (client library) to the service's passing instances.
 *
 * - While every check passes: agent A's CPU (utime + stime from
 *   `/proc/PID/stat`, as a share of one core) and etcd's writes per second
 *   (`etcd_mvcc_put_total` + `etcd_mvcc_delete_total`, as benchmark 6
 *   reads them) over a window of 10 s, and the check runs per second the
 *   targets answered (1,000 expected). Baseline: the same agent holding the
 *   same 1,000 instances without checks, idle, over a window as long,
 *   measured first. The agent writes to etcd only when a health changes:
 *   the target is 0 writes/s, as without checks.
 * - Failure detection: one target chosen at random starts answering 500;
 *   a sample runs from that moment until the subscriber at B has the
 *   instance's `down`. The target passes again, and the next round starts
 *   once B has its `up`; 20 rounds. The documented bound is interval ×
 *   failuresBeforeCritical + timeout + propagation, 1.5 s + propagation
 *   here; rounds are judged against 1.5 s + 0.25 s.
 *
 * `--quick`: 100 instances, windows of 3 s, 5 rounds.
 *
 * @module
 */

import { connect, type ServiceSet, type ServiceUpdateEvent } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { type EtcdCluster, startEtcd } from "../tools/etcd.ts";
import { serveCheckTargets } from "./_check_targets.ts";
import {
  type Bench,
  cpuTicks,
  figure,
  openRaw,
  percentile,
  type RawSocket,
  registerRange,
  ticksPerSecond,
  within,
} from "./_harness.ts";

const SERVICE = "bench-health";
/** The check of every instance, as `discover.register` takes it (seconds). */
const CHECK = {
  interval: 1,
  timeout: 0.5,
  failuresBeforeCritical: 1,
  successesBeforePassing: 1,
};
/** The documented detection bound without propagation, in ms. */
const BOUND_MS = (CHECK.interval * CHECK.failuresBeforeCritical +
  CHECK.timeout) * 1000;
/** What rounds are allowed for propagation on top of the bound, in ms. */
const PROPAGATION_ALLOWANCE_MS = 250;

/** Sizes of one run. */
interface Sizes {
  /** Instances, each with its check. */
  instances: number;
  /** Length of each measuring window, in ms. */
  windowMs: number;
  /** Failure detection rounds. */
  rounds: number;
}

const FULL: Sizes = { instances: 1_000, windowMs: 10_000, rounds: 20 };
const QUICK: Sizes = { instances: 100, windowMs: 3_000, rounds: 5 };

/**
 * Instance `i`'s address: on loopback, the agent's host, whose checks may
 * target loopback (`CheckPolicy`); ports are distinct, the check URL says
 * where the check goes.
 */
function addrOf(i: number): string {
  return `127.0.0.1:${10_000 + i}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** etcd's writes so far: puts and deletes. */
async function etcdWrites(cluster: EtcdCluster): Promise<number> {
  const [puts, deletes] = await Promise.all([
    cluster.metric("etcd_mvcc_put_total"),
    cluster.metric("etcd_mvcc_delete_total"),
  ]);
  return puts + deletes;
}

/** Resolves once `set` holds `count` instances (waiting at most `ms`). */
function holding(set: ServiceSet, count: number, ms: number): Promise<void> {
  const done = new AbortController();
  const reached = new Promise<void>((resolve) => {
    const check = () => {
      if (set.online().length === count) resolve();
    };
    set.addEventListener("update", check, { signal: done.signal });
    check();
  });
  return within(reached, ms, `${count} passing instances at agent B`)
    .finally(() => done.abort());
}

/**
 * Resolves with the time (`performance.now()`) at which `set` has the
 * update `kind` of `addr`, taken in the listener.
 */
function arrival(
  set: ServiceSet,
  kind: "up" | "down",
  addr: string,
): Promise<number> {
  const done = new AbortController();
  return new Promise((resolve) => {
    set.addEventListener("update", (e: ServiceUpdateEvent) => {
      if (e.kind !== kind || e.instance.addr !== addr) return;
      done.abort();
      resolve(performance.now());
    }, { signal: done.signal });
  });
}

/** Runs benchmark 12. */
export const healthChecks: Bench = async ({ quick, log }) => {
  const { instances: n, windowMs, rounds } = quick ? QUICK : FULL;
  const count = n.toLocaleString("en-US");
  await using cluster = await startEtcd();
  await using targets = serveCheckTargets();
  const agentArgs = [
    "--backend",
    "etcd",
    "--etcd-endpoints",
    cluster.endpoints[0],
    "--log-level",
    "warn",
    "--max-registrations",
    String(n),
  ];
  await using agentA = await spawnAgent(agentArgs);
  await using agentB = await spawnAgent(agentArgs);
  const pid = agentA.child.pid;
  const ticks = await ticksPerSecond();
  const client = await connect(agentB.url, { requestTimeout: 30_000 });
  let holder: RawSocket | undefined;
  try {
    const set = await client.services(SERVICE);

    /** Agent A's CPU, etcd's writes and the check runs over one window. */
    const measure = async () => {
      const before = {
        cpu: (await cpuTicks([pid]))[0],
        writes: await etcdWrites(cluster),
        renewals: await cluster.metric("etcd_debugging_lease_renewed_total"),
        runs: targets.runs,
        at: performance.now(),
      };
      await sleep(windowMs);
      const after = {
        cpu: (await cpuTicks([pid]))[0],
        writes: await etcdWrites(cluster),
        renewals: await cluster.metric("etcd_debugging_lease_renewed_total"),
        runs: targets.runs,
        at: performance.now(),
      };
      const seconds = (after.at - before.at) / 1000;
      return {
        cpu: (after.cpu - before.cpu) / ticks / seconds * 100,
        writes: (after.writes - before.writes) / seconds,
        renewals: (after.renewals - before.renewals) / seconds,
        runs: (after.runs - before.runs) / seconds,
      };
    };

    // Baseline: the same instances without checks.
    holder = await openRaw(agentA.url);
    await registerRange(holder, [0, n], (i) => ({
      service: SERVICE,
      addr: addrOf(i),
    }));
    await holding(set, n, 30_000);
    await sleep(1000);
    const idle = await measure();
    log(
      `12: ${count} instances without checks: agent A ${
        idle.cpu.toFixed(1)
      } % CPU, ${idle.writes.toFixed(2)} etcd writes/s`,
    );

    // The client leaves: its instances go, and come back with checks,
    // critical until their first passing run.
    holder.close();
    await holding(set, 0, 30_000);
    holder = await openRaw(agentA.url);
    const registered = performance.now();
    await registerRange(holder, [0, n], (i) => ({
      service: SERVICE,
      addr: addrOf(i),
      check: { http: targets.url(i), ...CHECK },
    }));
    await holding(set, n, 30_000);
    log(
      `12: ${count} instances with checks passing at agent B after ${
        Math.round(performance.now() - registered)
      } ms`,
    );
    // Past the second runs, which are spread over an interval.
    await sleep(CHECK.interval * 1000 + 1000);
    const checked = await measure();
    log(
      `12: with checks: agent A ${checked.cpu.toFixed(1)} % CPU, ${
        checked.writes.toFixed(2)
      } etcd writes/s, ${Math.round(checked.runs)} check runs/s`,
    );
    if (set.online().length !== n) {
      throw new Error(
        `${
          n - set.online().length
        } instances turned critical while every target passed`,
      );
    }

    // Failure detection.
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const i = Math.floor(Math.random() * n);
      const down = arrival(set, "down", addrOf(i));
      const failed = performance.now();
      targets.setFailing(i, true);
      times.push(
        await within(down, 10_000, `the down of ${addrOf(i)} at agent B`) -
          failed,
      );
      const up = arrival(set, "up", addrOf(i));
      targets.setFailing(i, false);
      await within(up, 10_000, `the up of ${addrOf(i)} at agent B`);
    }
    const inBound = times.filter((t) =>
      t < BOUND_MS + PROPAGATION_ALLOWANCE_MS
    ).length;
    log(
      `12: ${rounds} failures detected: p50 ${
        percentile(times, 50).toFixed(0)
      } ms, max ${Math.max(...times).toFixed(0)} ms`,
    );

    const label = `${count} HTTP checks every ${CHECK.interval} s`;
    const bound = `bound interval × failuresBeforeCritical + timeout + ` +
      `propagation = ${BOUND_MS.toLocaleString("en-US")} ms + propagation`;
    return [
      figure({
        figure: `12 agent CPU, ${label}, all passing`,
        unit: "%",
        value: checked.cpu,
        baseline: idle.cpu,
        baselineLabel: "same instances, no checks",
        note: `% of one core over ${
          windowMs / 1000
        } s (/proc/PID/stat utime + stime) of the agent running the checks; ${
          Math.round((checked.cpu - idle.cpu) / 100 / checked.runs * 1e6)
        } µs of CPU per check run`,
      }),
      figure({
        figure: `12 etcd writes/s, ${label}, all passing`,
        unit: "writes/s",
        value: checked.writes,
        baseline: idle.writes,
        baselineLabel: "same instances, no checks",
        target: { equal: true },
        note: `target 0: the agent writes only when a health changes; ` +
          `lease renewals ${checked.renewals.toFixed(2)}/s (without checks ${
            idle.renewals.toFixed(2)
          }/s)`,
      }),
      figure({
        figure: `12 check runs/s at the targets, ${label}`,
        unit: "runs/s",
        value: checked.runs,
        note: `${count} instances / ${CHECK.interval} s interval expected`,
      }),
      figure({
        figure: `12 failure to down at another agent's subscriber p50`,
        unit: "ms",
        value: percentile(times, 50),
        note: `${rounds} rounds, one target of ${count} turned to HTTP 500 ` +
          `at random; ${bound}`,
      }),
      figure({
        figure: `12 failure to down at another agent's subscriber p99`,
        unit: "ms",
        value: percentile(times, 99),
      }),
      figure({
        figure: `12 failure to down at another agent's subscriber max`,
        unit: "ms",
        value: Math.max(...times),
        target: { below: BOUND_MS + PROPAGATION_ALLOWANCE_MS },
        note: `${inBound} of ${rounds} rounds within ${
          (BOUND_MS + PROPAGATION_ALLOWANCE_MS).toLocaleString("en-US")
        } ms (${bound}, ${PROPAGATION_ALLOWANCE_MS} ms allowed for it)`,
      }),
    ];
  } finally {
    holder?.close();
    await client.close();
  }
};
