// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 16, leader election:
 *
 * - failover: the leader is a campaigner in a process of its own, on agent
 *   A (etcd backend, grace TTL 2 s, lease TTL 2 s); the next campaigner
 *   waits on agent B. The leader's process is SIGKILLed; the figure is the
 *   time until the next campaigner is elected (`elected` resolves).
 *   Baseline: the same with npm `etcd3`'s own `Election` (a lease of TTL
 *   2 s per campaigner), the leader in a process of its own, the next
 *   campaigner in this one. Rounds of both alternate.
 * - the leader event's propagation: a client registers through agent A the
 *   one instance of a service, and the sample ends when a set of that
 *   service on agent B (client library) fires its `"leader"` event; then
 *   it is unregistered, untimed. Baseline: benchmark 2's, an etcd put until
 *   a watch in another process sees it. Samples alternate.
 *
 * Run as `deno run -A bench/leader_failover.ts campaign discover URL` or
 * `... campaign etcd3 ENDPOINT NAME`, the module is the leader's process:
 * it campaigns, prints `elected` once it leads, and waits to be killed.
 *
 * @module
 */

import { Etcd3 } from "etcd3";
import { type Client, connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import {
  type Bench,
  etcdAgentArgs,
  figure,
  percentile,
  within,
} from "./_harness.ts";
import {
  alternate,
  type Sampler,
  socketWriter,
  type Writer,
} from "./_propagation.ts";
import { otherProcessSampler } from "./cross_host.ts";

/** Grace TTL and lease TTL, in seconds. */
const TTL = 2;
/** Client timings within the TTL: the loss detection bound is 1.3 s. */
const TIMINGS = { pingInterval: 300, requestTimeout: 1000 };

/** The leader's process: campaigns, says `elected`, waits to be killed. */
async function leaderProcess(kind: string, where: string, name: string) {
  if (kind === "discover") {
    const client = await connect(where, TIMINGS);
    const me = await client.campaign(name, "127.0.0.1:4000");
    await me.elected;
  } else {
    const client = new Etcd3({ hosts: [where] });
    const campaign = client.election(name, TTL).campaign("leader");
    await campaign.wait();
  }
  console.log("elected");
  // Held open until killed.
  setInterval(() => {}, 60_000);
}

if (import.meta.main && Deno.args[0] === "campaign") {
  await leaderProcess(Deno.args[1], Deno.args[2], Deno.args[3]);
}

/** Starts the leader's process and resolves once it leads. */
async function spawnLeader(args: string[]): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "campaign", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("elected")) {
    const { value, done } = await within(
      reader.read(),
      30_000,
      "the leader's process to be elected",
    );
    if (done) throw new Error("the leader's process ended before it led");
    text += value;
  }
  void reader.cancel().catch(() => {});
  return child;
}

/** Kills `child` and times until `elected` settles. */
async function failover(
  child: Deno.ChildProcess,
  elected: Promise<unknown>,
): Promise<number> {
  const started = performance.now();
  child.kill("SIGKILL");
  await within(elected, 30_000, "the next campaigner to be elected");
  const took = performance.now() - started;
  await child.status;
  return took;
}

/** Runs benchmark 16. */
export const leaderFailover: Bench = async ({ quick, log }) => {
  const rounds = quick ? 2 : 10;
  const samples = quick ? 50 : 1000;
  const warmup = quick ? 10 : 100;
  await using cluster = await startEtcd();
  const args = [
    ...etcdAgentArgs(cluster.endpoints),
    "--ttl",
    String(TTL),
    "--etcd-lease-ttl",
    String(TTL),
  ];
  await using a = await spawnAgent(args);
  await using b = await spawnAgent(args);
  await using next = await connect(b.url, TIMINGS);
  const etcd = new Etcd3({ hosts: cluster.endpoints });
  const ours: number[] = [];
  const theirs: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const name = `failover-${i}`;
      const leader = await spawnLeader(["discover", a.url, name]);
      const me = await next.campaign(name, "127.0.0.1:4001");
      ours.push(await failover(leader, me.elected));
      await me.resign();
      const etcdLeader = await spawnLeader([
        "etcd3",
        cluster.endpoints[0],
        name,
      ]);
      const campaign = etcd.election(name, TTL).campaign("next");
      theirs.push(await failover(etcdLeader, campaign.wait()));
      await campaign.resign();
    }
  } finally {
    etcd.close();
  }
  log(`16: ${rounds} failovers of each, after a SIGKILLed leader process`);

  await using base = await otherProcessSampler(cluster.endpoints);
  await using reader = await connect(b.url);
  await using leaderSampler = await leaderEventSampler(
    await socketWriter(a.url),
    reader,
  );
  const [baseTimes, leaderTimes] = await alternate(
    [base, leaderSampler],
    samples,
    warmup,
  );
  log(`16: ${samples} samples of the leader event, agent A -> B`);
  return [
    figure({
      figure: "16 failover after a SIGKILLed leader (TTL 2 s) p50",
      unit: "ms",
      value: percentile(ours, 50),
      baseline: percentile(theirs, 50),
      baselineLabel: "etcd3 Election (lease TTL 2 s) p50",
      note: `max ${percentile(ours, 100).toFixed(0)} ms vs ${
        percentile(theirs, 100).toFixed(0)
      } ms`,
    }),
    figure({
      figure: "16 leader event propagation p50",
      unit: "ms",
      value: percentile(leaderTimes, 50),
      baseline: percentile(baseTimes, 50),
      baselineLabel: "etcd put->watch p50 (benchmark 2's)",
      target: { ratioAtMost: 1.3 },
    }),
  ];
};

/**
 * `writer` registers the one instance of a service, and the sample ends
 * when `reader`'s set of it fires `"leader"`; then it is unregistered and
 * the set's next `"leader"` (none) awaited, untimed.
 */
async function leaderEventSampler(
  writer: Writer,
  reader: Client,
): Promise<Sampler> {
  const service = `bench-${crypto.randomUUID().slice(0, 8)}`;
  const set = await reader.services(service);
  let expect: { addr: string | undefined; resolve: () => void } | undefined;
  set.addEventListener("leader", (e) => {
    if (expect && e.instance?.addr === expect.addr) expect.resolve();
  });
  const seen = (addr: string | undefined) =>
    within(
      new Promise<void>((resolve) => expect = { addr, resolve }),
      10_000,
      `the leader event of ${addr ?? "none"} at the subscriber`,
    );
  return {
    async sample(i) {
      const addr = `127.0.0.1:${20_000 + (i % 1000)}`;
      const elected = seen(addr);
      const started = performance.now();
      const registered = writer.register(service, addr);
      await elected;
      const took = performance.now() - started;
      await registered;
      const none = seen(undefined);
      await writer.unregister(service, addr);
      await none;
      return took;
    },
    async [Symbol.asyncDispose]() {
      writer.close();
      await set.close();
    },
  };
}

if (import.meta.main && Deno.args[0] !== "campaign") {
  const figures = await leaderFailover({
    quick: Deno.args.includes("--quick"),
    log: (line) => console.error(line),
  });
  for (const f of figures) console.log(JSON.stringify(f));
}
