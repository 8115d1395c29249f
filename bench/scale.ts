// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 5, scale.
 *
 * - 10,000 concurrent sessions on one agent, each with one registration and
 *   one subscription: the agent's RSS growth per session. Baseline: the
 *   baseline server holding 10,000 idle connections.
 * - One service with 100,000 instances: the agent's RSS, the memory it holds
 *   per instance, and the time for a new subscriber (the client library's
 *   `services()`) to hold the full snapshot, `current` included.
 *
 * The RSS right after a burst of registrations counts much that the agent
 * does not hold: garbage not collected yet, and a young generation the
 * collector grew during the burst (about 50 MiB, whatever is registered).
 * So the memory held per instance is read after a full garbage collection,
 * which the benchmark asks of the agent through V8's inspector, against
 * the same agent empty, read the same way. Before it is read empty, the
 * agent registers and removes a few thousand instances: the code that
 * serves registrations (about 8 MiB of the `deno` binary) is then part of
 * both readings, as it is of an agent that has served any.
 *
 * @module
 */

import { connect } from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import {
  addrOf,
  type Bench,
  closeAll,
  figure,
  openMany,
  openRaw,
  percentile,
  registerRange,
  spawnBaseline,
} from "./_harness.ts";
import { settledRss, spawnInspectedAgent } from "./_inspected_agent.ts";

/**
 * Opens `n` sockets to `server` (`setup` runs on each once open, and
 * resolves when the socket is ready), and returns the RSS growth of
 * `server`'s process per socket, in KiB.
 */
async function perConnection(
  server: AgentProcess,
  n: number,
  setup: (ws: WebSocket, i: number) => Promise<void> | void,
): Promise<number> {
  const before = await settledRss(server.child.pid);
  const sockets = await openMany(server.url, n, {
    concurrency: 50,
    onOpen: setup,
  });
  const after = await settledRss(server.child.pid);
  await closeAll(sockets);
  return (after - before) / n;
}

/** Sends `request` on `ws` and resolves once a frame containing `marker` arrives. */
function exchange(ws: WebSocket, request: string, marker: string) {
  return new Promise<void>((resolve) => {
    const onMessage = (e: MessageEvent) => {
      if ((e.data as string).includes(marker)) {
        ws.removeEventListener("message", onMessage);
        resolve();
      }
    };
    ws.addEventListener("message", onMessage);
    ws.send(request);
  });
}

/**
 * Registers `count` instances of `service` over one socket, which holds
 * them until it closes.
 */
async function registerMany(url: string, service: string, count: number) {
  const socket = await openRaw(url);
  try {
    await registerRange(socket, [0, count], (i) => ({
      service,
      addr: addrOf(i),
      attrs: { zone: `z${i % 3}` },
    }));
  } catch (error) {
    socket.close();
    throw error;
  }
  return { [Symbol.dispose]: () => socket.close() };
}

/**
 * Registers `count` instances of `service` over one socket and removes
 * them again, so that the agent has run the code the measurement runs,
 * and holds nothing.
 */
async function warmUp(url: string, service: string, count: number) {
  const socket = await openRaw(url);
  try {
    await registerRange(socket, [0, count], (i) => ({
      service,
      addr: addrOf(i),
      attrs: { zone: `z${i % 3}` },
    }));
    for (let start = 0; start < count; start += 1000) {
      const batch = [];
      for (let i = start; i < Math.min(count, start + 1000); i++) {
        batch.push({
          jsonrpc: "2.0",
          id: i,
          method: "discover.unregister",
          params: { service, addr: addrOf(i) },
        });
      }
      socket.send(JSON.stringify(batch));
      const responses = JSON.parse(await socket.next());
      if (responses.some((r: { result?: unknown }) => r.result !== true)) {
        throw new Error(
          `an unregistration failed: ${JSON.stringify(responses)}`,
        );
      }
    }
  } finally {
    socket.close();
  }
}

/** Runs benchmark 5. */
export const scale: Bench = async ({ quick, log }) => {
  const sessions = quick ? 500 : 10_000;
  const instances = quick ? 5_000 : 100_000;

  let baseline: number;
  {
    await using server = await spawnBaseline(5);
    baseline = await perConnection(server, sessions, () => {});
  }
  log(`5: ${sessions} idle connections to the bare server`);
  let ours: number;
  {
    await using agent = await spawnAgent([
      "--log-level",
      "warn",
      "--max-sessions",
      String(sessions + 10),
      // Every session connects from the same loopback address.
      "--max-sessions-per-address",
      String(sessions + 10),
    ]);
    ours = await perConnection(agent, sessions, async (ws, i) => {
      await exchange(
        ws,
        JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "discover.register",
          params: { service: `s${i}`, addr: addrOf(i) },
        }),
        '"id":1',
      );
      await exchange(
        ws,
        JSON.stringify({
          jsonrpc: "2.0",
          id: 2,
          method: "discover.subscribe",
          params: { service: `s${i}` },
        }),
        '"current"',
      );
    });
  }
  log(`5: ${sessions} sessions with a registration and a subscription each`);

  await using inspected = await spawnInspectedAgent([
    "--log-level",
    "warn",
    "--max-registrations",
    String(instances),
  ]);
  const agent = inspected.agent;
  const empty = await settledRss(agent.child.pid);
  await warmUp(agent.url, "warm-up", quick ? 1_000 : 5_000);
  const emptyCollected = await inspected.collectedRss();
  using _holder = await registerMany(agent.url, "big", instances);
  const full = await settledRss(agent.child.pid);
  // Before the snapshots: sending them grows the process by more than the
  // instances take, and a collection does not give that back.
  const fullCollected = await inspected.collectedRss();
  log(`5: ${instances} instances registered`);
  const snapshots: number[] = [];
  await using client = await connect(agent.url, { requestTimeout: 60_000 });
  for (let round = 0; round < 3; round++) {
    const started = performance.now();
    await using set = await client.services("big");
    snapshots.push(performance.now() - started);
    if (set.online().length !== instances) {
      throw new Error(
        `the snapshot held ${set.online().length} instances, not ${instances}`,
      );
    }
  }
  const label = instances.toLocaleString("en-US");
  return [
    figure({
      figure: `5 memory per session (${sessions.toLocaleString("en-US")})`,
      unit: "KiB",
      value: ours,
      baseline,
      baselineLabel: "bare server, per idle connection",
      target: { ratioAtMost: 1.5 },
    }),
    figure({
      figure: `5 agent RSS with ${label} instances`,
      unit: "MiB",
      value: full / 1024,
      baseline: empty / 1024,
      baselineLabel: "the same agent empty",
      note: `${
        ((full - empty) * 1024 / instances).toFixed(0)
      } bytes per instance, garbage included`,
    }),
    figure({
      figure: `5 memory held per instance (${label})`,
      unit: "B",
      value: (fullCollected - emptyCollected) * 1024 / instances,
      target: { below: 500 },
      note: `RSS after a full garbage collection: ${
        (fullCollected / 1024).toFixed(0)
      } MiB, ${(emptyCollected / 1024).toFixed(0)} MiB empty`,
    }),
    figure({
      figure: `5 snapshot of ${label} instances to a new subscriber`,
      unit: "ms",
      value: percentile(snapshots, 50),
      target: { below: 1000 },
      note: `median of 3: ${snapshots.map((t) => t.toFixed(0)).join(", ")} ms`,
    }),
  ];
};
