// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 1, local propagation: client A registers, subscriber B on the
 * same agent (memory backend) receives `up`. Baseline: a JSON-RPC request
 * of the same shape and its response, to the baseline server on loopback.
 * Samples of both alternate.
 *
 * @module
 */

import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import {
  type Bench,
  figure,
  openRaw,
  percentile,
  spawnBaseline,
} from "./_harness.ts";
import {
  alternate,
  clientWriter,
  propagationSampler,
  type Sampler,
} from "./_propagation.ts";

/**
 * Round trips of a `discover.register`-shaped request to the baseline
 * server.
 *
 * @param url The baseline server.
 * @returns The sampler.
 */
export async function echoSampler(url: string): Promise<Sampler> {
  const socket = await openRaw(url);
  return {
    async sample(i) {
      const request = JSON.stringify({
        jsonrpc: "2.0",
        id: i,
        method: "discover.register",
        params: { service: "bench", addr: `127.0.0.1:${20_000 + (i % 1000)}` },
      });
      const started = performance.now();
      socket.send(request);
      await socket.next();
      return performance.now() - started;
    },
    [Symbol.asyncDispose]: () => Promise.resolve(socket.close()),
  };
}

/** Runs benchmark 1. */
export const propagation: Bench = async ({ quick, log }) => {
  const samples = quick ? 100 : 2000;
  const warmup = quick ? 20 : 200;
  // The baseline server gets the agent's default idle timeout, which costs
  // Deno a timer reset per message.
  await using agent = await spawnAgent(["--log-level", "warn"]);
  await using baseline = await spawnBaseline(5);
  await using a = await connect(agent.url);
  await using b = await connect(agent.url);
  await using echo = await echoSampler(baseline.url);
  await using ours = await propagationSampler(clientWriter(a), b);
  const [base, times] = await alternate([echo, ours], samples, warmup);
  log(`1: ${samples} echo round trips and ${samples} propagations`);
  return [
    figure({
      figure: "1 local propagation p50",
      unit: "ms",
      value: percentile(times, 50),
      baseline: percentile(base, 50),
      baselineLabel: "echo RTT p50",
      target: { ratioAtMost: 3 },
    }),
    figure({
      figure: "1 local propagation p99",
      unit: "ms",
      value: percentile(times, 99),
      baseline: percentile(base, 99),
      baselineLabel: "echo RTT p99",
    }),
  ];
};
