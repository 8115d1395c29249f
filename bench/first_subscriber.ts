// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 10, first subscriber: a service of 1,000 instances is in etcd
 * (written straight into it in the agent's record format, as other agents
 * of the cluster would have registered them), and the agent has never
 * been asked for it. The time from a subscribe (the client library's
 * `services()`) until it resolves, the set current with all 1,000.
 * Baseline: a raw `etcd3` range read of the same 1,000 keys, and a watch
 * of their range from the revision after the read, until etcd confirms
 * the watch.
 *
 * Every round uses a service no one asked for before, ours and the
 * baseline's the same one, in alternating order; the baseline's client
 * holds a watch of an unrelated key throughout, so its watch stream is
 * open as an agent's is. Three untimed rounds come first. The figure is
 * the median of 41 rounds (`--quick`: 2).
 *
 * @module
 */

import { Etcd3 } from "etcd3";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { writeFleet } from "./_etcd_fleet.ts";
import {
  type Bench,
  etcdAgentArgs,
  figure,
  percentile,
  within,
} from "./_harness.ts";

/** Instances of the service. */
const INSTANCES = 1000;
/** Untimed rounds first. */
const WARMUP = 3;
/** The agent's key prefix. */
const PREFIX = "/discover/";

/** Runs benchmark 10. */
export const firstSubscriber: Bench = async ({ quick, log }) => {
  const rounds = quick ? 2 : 41;
  await using cluster = await startEtcd();
  const endpoint = cluster.endpoints[0];
  const etcd = new Etcd3({ hosts: [endpoint] });
  const lease = etcd.lease(60);
  const ours: number[] = [], base: number[] = [];
  try {
    const services = Array.from(
      { length: WARMUP + rounds },
      (_, r) => `first-${r}`,
    );
    await writeFleet(etcd, services, {
      perService: INSTANCES,
      lease: await lease.grant(),
    });
    log(`10: ${services.length} services of ${INSTANCES} instances written`);
    const idle = await etcd.watch().key("/bench-idle").create();
    await using agent = await spawnAgent(etcdAgentArgs([endpoint], PREFIX));
    await using client = await connect(agent.url, { requestTimeout: 30_000 });

    const subscribe = async (service: string) => {
      const started = performance.now();
      const set = await client.services(service);
      const took = performance.now() - started;
      const held = set.online().length;
      await set.close();
      if (held !== INSTANCES) {
        throw new Error(
          `the set of ${service} held ${held} instances, not ${INSTANCES}`,
        );
      }
      return took;
    };
    const readAndWatch = async (service: string) => {
      const range = `${PREFIX}instances/${service}/`;
      const started = performance.now();
      const read = await etcd.getAll().prefix(range).exec();
      const watcher = await etcd.watch().prefix(range)
        .startRevision(String(Number(read.header.revision) + 1))
        .create();
      const took = performance.now() - started;
      await watcher.cancel();
      if (read.kvs.length !== INSTANCES) {
        throw new Error(
          `the range of ${service} held ${read.kvs.length} keys, not ${INSTANCES}`,
        );
      }
      return took;
    };

    for (const [r, service] of services.entries()) {
      const pair = r % 2 === 0
        ? [() => subscribe(service), () => readAndWatch(service)]
        : [() => readAndWatch(service), () => subscribe(service)];
      const first = await within(pair[0](), 60_000, `round ${r} on ${service}`);
      const second = await within(
        pair[1](),
        60_000,
        `round ${r} on ${service}`,
      );
      const [agentTook, rawTook] = r % 2 === 0
        ? [first, second]
        : [second, first];
      if (r >= WARMUP) {
        ours.push(agentTook);
        base.push(rawTook);
      }
      log(
        `10: round ${r}: ${agentTook.toFixed(1)} ms through the agent, ${
          rawTook.toFixed(1)
        } ms raw read and watch`,
      );
    }
    await idle.cancel();
  } finally {
    lease.release();
    etcd.close();
  }
  return [
    figure({
      figure: `10 first subscriber to a service of ${
        INSTANCES.toLocaleString("en-US")
      } instances in etcd`,
      unit: "ms",
      value: percentile(ours, 50),
      baseline: percentile(base, 50),
      baselineLabel: "etcd3 range read + watch created",
      target: { ratioAtMost: 2 },
      note: `median of ${rounds} rounds; min, p90, max: ${
        spread(ours)
      } ms (raw: ${spread(base)} ms)`,
    }),
  ];
};

/** Minimum, 90th percentile and maximum of `times`, in words. */
function spread(times: number[]): string {
  return [Math.min(...times), percentile(times, 90), Math.max(...times)]
    .map((t) => t.toFixed(1)).join(", ");
}
