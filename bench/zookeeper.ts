// Copyright the discover authors. BSD-3-Clause license.

/**
 * Cross-host propagation on ZooKeeper: a client registers through agent A,
 * a subscriber (client library) on agent B receives `up`, both agents on
 * one ZooKeeper server (`--backend zookeeper`).
 *
 * Baseline: a raw `node-zookeeper-client` create of an ephemeral znode
 * until a child watch in another process (`_zk_watcher.ts`) lists it and
 * says so on a pipe, so the baseline's path crosses processes as the
 * agents' does. The registering client is a bare JSON-RPC socket, as in
 * benchmark 2. Samples of both alternate, in the same run.
 *
 * @module
 */

import { Buffer } from "node:buffer";
// @ts-types="@types/node-zookeeper-client"
import zookeeper from "node-zookeeper-client";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startZooKeeper } from "../tools/zookeeper.ts";
import { type Bench, figure, percentile } from "./_harness.ts";
import { spawnWatcher } from "./_watcher_process.ts";
import {
  alternate,
  propagationSampler,
  type Sampler,
  socketWriter,
} from "./_propagation.ts";

const VALUE = Buffer.from(JSON.stringify({
  attrs: {},
  owner: "00000000-0000-4000-8000-000000000000",
  registeredAt: 1767225600000,
}));

function call<T>(
  run: (done: (error: unknown, value?: T) => void) => void,
): Promise<T> {
  return new Promise((resolve, reject) =>
    run((error, value) => error ? reject(error) : resolve(value as T))
  );
}

/** Options of {@linkcode zkBaselineSampler}. */
export interface ZkBaselineOptions {
  /**
   * Whether the watcher reads the new znode's data before it says it saw
   * it (a listing tells only names).
   *
   * @default {false}
   */
  readData?: boolean;
}

/**
 * Creates an ephemeral znode until a child watch in another process lists
 * it (and, with `readData`, has read it); the znode is removed again
 * before the next sample, untimed.
 *
 * @example Usage
 * ```ts ignore
 * import { zkBaselineSampler } from "./zookeeper.ts";
 * await using sampler = await zkBaselineSampler("127.0.0.1:2181");
 * console.log(await sampler.sample(0), "ms");
 * ```
 *
 * @param connectString The server.
 * @param options Whether the watcher reads the data too.
 * @returns The sampler.
 */
export async function zkBaselineSampler(
  connectString: string,
  options: ZkBaselineOptions = {},
): Promise<Sampler> {
  const path = `/bench-${crypto.randomUUID().slice(0, 8)}`;
  const client = zookeeper.createClient(connectString);
  const connected = new Promise<void>((resolve) =>
    client.once("connected", () => resolve())
  );
  client.connect();
  await connected;
  await call<string>((done) => client.create(path, done));
  let expect: { name: string; resolve: () => void } | undefined;
  const watcher = await spawnWatcher(
    new URL("./_zk_watcher.ts", import.meta.url),
    [connectString, path, ...(options.readData ? ["--data"] : [])],
    {
      onKey: (line) => {
        if (expect && line === expect.name) expect.resolve();
      },
      what: `the ZooKeeper watcher of ${path}`,
    },
  );
  return {
    async sample(i) {
      const name = `127.0.0.1:${20_000 + (i % 1000)}`;
      const seen = new Promise<void>((resolve) => expect = { name, resolve });
      const started = performance.now();
      const created = call<string>((done) =>
        client.create(
          `${path}/${name}`,
          VALUE,
          zookeeper.CreateMode.EPHEMERAL,
          done,
        )
      );
      await seen;
      const took = performance.now() - started;
      await created;
      await call<void>((done) => client.remove(`${path}/${name}`, done));
      return took;
    },
    async [Symbol.asyncDispose]() {
      await watcher.stop();
      client.close();
    },
  };
}

/**
 * Runs the ZooKeeper cross-host benchmark.
 *
 * @example Usage
 * ```ts ignore
 * import { zookeeperCrossHost } from "./zookeeper.ts";
 * const figures = await zookeeperCrossHost({ quick: true, log: console.log });
 * ```
 */
export const zookeeperCrossHost: Bench = async ({ quick, log }) => {
  const samples = quick ? 50 : 2000;
  const warmup = quick ? 10 : 100;
  await using zk = await startZooKeeper();
  const args = [
    "--backend",
    "zookeeper",
    "--zk-connect",
    zk.connect,
    "--zk-prefix",
    `/bench-${crypto.randomUUID().slice(0, 8)}`,
    "--log-level",
    "error",
  ];
  await using a = await spawnAgent(args);
  await using b = await spawnAgent(args);
  await using reader = await connect(b.url);
  await using base = await zkBaselineSampler(zk.connect);
  await using ours = await propagationSampler(
    await socketWriter(a.url),
    reader,
  );
  const [baseTimes, times] = await alternate([base, ours], samples, warmup);
  log(`zk: ${samples} samples of the ZooKeeper baseline and of agent A -> B`);
  return [
    figure({
      figure: "15 cross-host propagation on ZooKeeper p50",
      unit: "ms",
      value: percentile(times, 50),
      baseline: percentile(baseTimes, 50),
      baselineLabel: "ZooKeeper create->watch p50",
      target: { ratioAtMost: 1.3 },
    }),
    figure({
      figure: "15 cross-host propagation on ZooKeeper p99",
      unit: "ms",
      value: percentile(times, 99),
      baseline: percentile(baseTimes, 99),
      baselineLabel: "ZooKeeper create->watch p99",
      target: { ratioAtMost: 2 },
    }),
  ];
};

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const figures = await zookeeperCrossHost({ quick, log: console.error });
  for (const f of figures) {
    console.log(
      `${f.figure}: ${f.value.toFixed(2)} ${f.unit} (baseline ${
        f.baseline?.toFixed(2)
      } ${f.unit}, ratio ${f.ratio?.toFixed(2)})`,
    );
  }
}
