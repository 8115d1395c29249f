// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 3, registration throughput through one agent (memory backend):
 * 8 concurrent clients, each registering and unregistering in a loop, one
 * call at a time. Baseline: 8 raw sockets sending the same request frames to
 * the baseline server, one at a time each. Rounds of both alternate.
 *
 * @module
 */

import { type Client, connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import {
  type Bench,
  figure,
  openRaw,
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
  await using agent = await spawnAgent(["--log-level", "warn"]);
  await using server = await spawnBaseline(5);
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, () => connect(agent.url)),
  );
  const sockets = await Promise.all(
    Array.from({ length: CLIENTS }, () => openRaw(server.url)),
  );
  try {
    await ours(clients, ms / 2); // warm-up
    await baseline(sockets, ms / 2);
    const base: number[] = [], mine: number[] = [];
    for (let r = 0; r < rounds; r++) {
      base.push(await baseline(sockets, ms));
      mine.push(await ours(clients, ms));
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    log(`3: ${rounds} rounds of ${ms} ms each`);
    return [figure({
      figure: "3 registration throughput, 8 clients",
      unit: "calls/s",
      value: mean(mine),
      baseline: mean(base),
      baselineLabel: "echo round trips/s",
      target: { ratioAtLeast: 0.5 },
    })];
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    for (const s of sockets) s.close();
  }
};
