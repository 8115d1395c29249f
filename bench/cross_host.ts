// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 2, cross-host propagation: a client registers through agent A,
 * a subscriber (client library) on agent B receives `up`, both agents on one
 * etcd.
 *
 * Baseline: a raw `etcd3` put until a watch on the same etcd delivers it.
 * The watch runs in another process that reports back on a pipe, so the
 * baseline's path crosses processes as the agents' does.
 *
 * The registering client is a bare JSON-RPC socket: on real hosts it runs
 * elsewhere, but here it shares the measuring process with the subscriber,
 * and the client library's handling of its response would delay the
 * subscriber's event. For reference, two more figures: the same with the
 * registering client on the client library, and the baseline with the
 * watch in the writer's own process. Samples of all four alternate.
 *
 * @module
 */

import { Etcd3 } from "etcd3";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { type Bench, etcdAgentArgs, figure, percentile } from "./_harness.ts";
import {
  alternate,
  clientWriter,
  propagationSampler,
  type Sampler,
  socketWriter,
} from "./_propagation.ts";
import { spawnEtcdWatcher } from "./_watcher_process.ts";

const VALUE = JSON.stringify({
  attrs: {},
  owner: "00000000-0000-4000-8000-000000000000",
  registeredAt: 1767225600000,
});

/**
 * A sampler of puts, each timed until `seen(key)` resolves; the key is
 * deleted again before the next, untimed.
 */
function putSampler(
  client: Etcd3,
  prefix: string,
  seen: (key: string) => Promise<void>,
  dispose: () => Promise<void>,
): Sampler {
  return {
    async sample(i) {
      const key = `${prefix}bench/127.0.0.1:${20_000 + (i % 1000)}`;
      const put = seen(key);
      const started = performance.now();
      const written = client.put(key).value(VALUE).exec();
      await put;
      const took = performance.now() - started;
      await written;
      await client.delete().key(key).exec();
      return took;
    },
    [Symbol.asyncDispose]: dispose,
  };
}

/**
 * Put until a prefix watch in the same process sees it.
 *
 * @param endpoints etcd.
 * @returns The sampler.
 */
export async function sameProcessSampler(
  endpoints: string[],
): Promise<Sampler> {
  const client = new Etcd3({ hosts: endpoints });
  const prefix = `/bench-${crypto.randomUUID().slice(0, 8)}/`;
  const watcher = await client.watch().prefix(prefix).create();
  let expect: { key: string; resolve: () => void } | undefined;
  watcher.on("put", (kv) => {
    if (expect && kv.key.toString() === expect.key) expect.resolve();
  });
  return putSampler(
    client,
    prefix,
    (key) => new Promise<void>((resolve) => expect = { key, resolve }),
    async () => {
      await watcher.cancel();
      client.close();
    },
  );
}

/**
 * Put until a prefix watch in another process (`_etcd_watcher.ts`) sees it
 * and says so on its standard output.
 *
 * @param endpoints etcd.
 * @returns The sampler.
 */
export async function otherProcessSampler(
  endpoints: string[],
): Promise<Sampler> {
  const prefix = `/bench-${crypto.randomUUID().slice(0, 8)}/`;
  let expect: { key: string; resolve: () => void } | undefined;
  const watcher = await spawnEtcdWatcher(endpoints[0], prefix, {
    onKey: (key) => {
      if (expect && key === expect.key) expect.resolve();
    },
  });
  const client = new Etcd3({ hosts: endpoints });
  return putSampler(
    client,
    prefix,
    (key) => new Promise<void>((resolve) => expect = { key, resolve }),
    async () => {
      client.close();
      await watcher.stop();
    },
  );
}

/** Runs benchmark 2. */
export const crossHost: Bench = async ({ quick, log }) => {
  const samples = quick ? 50 : 2000;
  const warmup = quick ? 10 : 100;
  await using cluster = await startEtcd();
  const etcdArgs = etcdAgentArgs(cluster.endpoints);
  await using a = await spawnAgent(etcdArgs);
  await using b = await spawnAgent(etcdArgs);
  await using writer = await connect(a.url);
  await using reader = await connect(b.url);
  await using other = await otherProcessSampler(cluster.endpoints);
  await using same = await sameProcessSampler(cluster.endpoints);
  await using ours = await propagationSampler(
    await socketWriter(a.url),
    reader,
  );
  await using ourLibrary = await propagationSampler(
    clientWriter(writer),
    reader,
  );
  const [base, one, times, libraryTimes] = await alternate(
    [other, same, ours, ourLibrary],
    samples,
    warmup,
  );
  log(`2: ${samples} samples of each etcd baseline and of agent A -> B`);
  const p50 = percentile(times, 50), p99 = percentile(times, 99);
  return [
    figure({
      figure: "2 cross-host propagation p50",
      unit: "ms",
      value: p50,
      baseline: percentile(base, 50),
      baselineLabel: "etcd put->watch p50",
      target: { ratioAtMost: 1.3 },
    }),
    figure({
      figure: "2 cross-host propagation p99",
      unit: "ms",
      value: p99,
      baseline: percentile(base, 99),
      baselineLabel: "etcd put->watch p99",
      target: { ratioAtMost: 2 },
    }),
    figure({
      figure: "2 same, registering through the client library p50",
      unit: "ms",
      value: percentile(libraryTimes, 50),
      baseline: percentile(base, 50),
      baselineLabel: "etcd put->watch p50",
    }),
    figure({
      figure: "2 same, watch in the writer's process p50",
      unit: "ms",
      value: p50,
      baseline: percentile(one, 50),
      baselineLabel: "put->watch, one process",
    }),
    figure({
      figure: "2 same, watch in the writer's process p99",
      unit: "ms",
      value: p99,
      baseline: percentile(one, 99),
      baselineLabel: "put->watch, one process",
    }),
  ];
};
