// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 3, registration throughput through one agent (memory backend):
 * 8 concurrent clients, each registering and unregistering in a loop, one
 * call at a time. Baseline: 8 raw sockets sending the same request frames to
 * the baseline server, one at a time each. Rounds of both alternate.
 *
 * And the cost of the agent's metrics: the same clients against a second
 * agent started with `--metrics off`, in short spans alternating with those
 * of the first (metrics on, the default), which goes first every other
 * pair; medians of both, so that a busy spell of the machine weighs little.
 *
 * @module
 */

import { type Client, connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import {
  type Bench,
  figure,
  openRaw,
  percentile,
  type RawSocket,
  spawnBaseline,
} from "./_harness.ts";

const CLIENTS = 8;

function request(id: number, method: string, port: number): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method,
    params: { service: "bench-throughput", addr: `127.0.0.1:${port}` },
  });
}

/**
 * Runs `pair` in a loop on every worker, one at a time each, for `ms`;
 * every pair is two calls (register, unregister). Returns calls per second.
 */
async function callsPerSecond<W>(
  workers: W[],
  ms: number,
  pair: (worker: W, port: number, i: number) => Promise<void>,
): Promise<number> {
  let calls = 0;
  const started = performance.now();
  const until = started + ms;
  await Promise.all(workers.map(async (worker, w) => {
    for (let i = 0; performance.now() < until; i++) {
      await pair(worker, 20_000 + w * 1000 + (i % 1000), i);
      calls += 2;
    }
  }));
  return calls / ((performance.now() - started) / 1000);
}

/** Through the client library. */
function ours(clients: Client[], ms: number): Promise<number> {
  return callsPerSecond(clients, ms, async (client, port) => {
    const addr = `127.0.0.1:${port}`;
    await client.register("bench-throughput", addr);
    await client.unregister("bench-throughput", addr);
  });
}

/** Round trips of the same frames to the baseline server. */
function baseline(sockets: RawSocket[], ms: number): Promise<number> {
  return callsPerSecond(sockets, ms, async (socket, port, i) => {
    socket.send(request(2 * i, "discover.register", port));
    await socket.next();
    socket.send(request(2 * i + 1, "discover.unregister", port));
    await socket.next();
  });
}

/** Runs benchmark 3. */
export const throughput: Bench = async ({ quick, log }) => {
  const rounds = quick ? 2 : 6;
  const ms = quick ? 300 : 1500;
  const pairs = quick ? 2 : 24;
  const span = quick ? 150 : 500;
  await using agent = await spawnAgent(["--log-level", "warn"]);
  await using unmetered = await spawnAgent([
    "--log-level",
    "warn",
    "--metrics",
    "off",
  ]);
  await using server = await spawnBaseline(5);
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, () => connect(agent.url)),
  );
  const plain = await Promise.all(
    Array.from({ length: CLIENTS }, () => connect(unmetered.url)),
  );
  const sockets = await Promise.all(
    Array.from({ length: CLIENTS }, () => openRaw(server.url)),
  );
  try {
    await ours(clients, ms / 2); // warm-up
    await ours(plain, ms / 2);
    await baseline(sockets, ms / 2);
    const base: number[] = [], mine: number[] = [];
    for (let r = 0; r < rounds; r++) {
      base.push(await baseline(sockets, ms));
      mine.push(await ours(clients, ms));
    }
    const on: number[] = [], off: number[] = [];
    for (let r = 0; r < pairs; r++) {
      if (r % 2 === 0) {
        on.push(await ours(clients, span));
        off.push(await ours(plain, span));
      } else {
        off.push(await ours(plain, span));
        on.push(await ours(clients, span));
      }
    }
    const ratios = on.map((x, i) => x / off[i]);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    log(`3: ${rounds} rounds of ${ms} ms each`);
    return [
      figure({
        figure: "3 registration throughput, 8 clients",
        unit: "calls/s",
        value: mean(mine),
        baseline: mean(base),
        baselineLabel: "echo round trips/s",
        target: { ratioAtLeast: 0.5 },
      }),
      figure({
        figure: "3 registration throughput, metrics on vs off",
        unit: "x",
        // The median of the pairs' ratios: a busy spell of the machine
        // slows both spans of a pair alike.
        value: percentile(ratios, 50),
        baseline: 1,
        baselineLabel: "the same agent with --metrics off",
        target: { ratioAtLeast: 0.95 },
        note:
          `median of the on/off ratios of ${pairs} pairs of alternating ${span} ms spans (min ${
            Math.min(...ratios).toFixed(2)
          }, max ${Math.max(...ratios).toFixed(2)}); medians: on ${
            Math.round(percentile(on, 50))
          }, off ${Math.round(percentile(off, 50))} calls/s`,
      }),
    ];
  } finally {
    await Promise.all([...clients, ...plain].map((c) => c.close()));
    for (const s of sockets) s.close();
  }
};
