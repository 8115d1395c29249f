// Copyright the discover authors. BSD-3-Clause license.

/**
 * A subscriber that stops reading while 100,000 events flow: the agent
 * drops it (close code 4008) instead of queueing without bound, the other
 * subscribers get every event, and the slow one recovers to the right state.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { rssKiB, spawnAgent } from "../tools/agent_process.ts";
import { until } from "./_wait.ts";
import { tcpProxy } from "./_proxy.ts";

async function rssMiB(pid: number): Promise<number> {
  return await rssKiB(pid) / 1024;
}

Deno.test({
  name:
    "a slow consumer is dropped with 4008 and recovers; others get every event; memory stays bounded",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const RSS_BOUND_MIB = 400;
    const INSTANCES = 1000, ROUNDS = 100; // 100,000 events
    await using agent = await spawnAgent([
      "--max-queue-bytes",
      String(1024 * 1024),
      "--ttl",
      "30",
      "--history",
      "200000",
      "--log-level",
      "warn",
    ]);
    const proxy = tcpProxy(Number(new URL(agent.http).port));
    await using writer = await connect(agent.url, { requestTimeout: 30_000 });
    await using fast = await connect(agent.url);
    await using slow = await connect(`ws://127.0.0.1:${proxy.port}`, {
      reconnect: { maxDelay: 200 },
      requestTimeout: 30_000,
    });
    try {
      await using fastSet = await fast.services("load");
      let fastEvents = 0;
      fastSet.addEventListener("update", () => fastEvents++);
      await using slowSet = await slow.services("load");
      let dropped = false;
      slow.addEventListener("disconnect", () => dropped = true);

      const baseline = await rssMiB(agent.child.pid);
      let peak = baseline;
      const sampler = setInterval(async () => {
        peak = Math.max(peak, await rssMiB(agent.child.pid).catch(() => 0));
      }, 100);
      proxy.pause();
      const pad = "p".repeat(400);
      for (let round = 0; round < ROUNDS; round++) {
        const batch = [];
        for (let i = 1; i <= INSTANCES; i++) {
          batch.push(
            writer.register("load", 10_000 + i, {
              attrs: { round: String(round), pad },
            }),
          );
        }
        await Promise.all(batch);
      }
      await until(
        () => fastEvents === INSTANCES * ROUNDS,
        "every event at the fast subscriber",
        60_000,
      );
      clearInterval(sampler);
      peak = Math.max(peak, await rssMiB(agent.child.pid));
      assert.ok(
        agent.stderr().includes("slow consumer dropped"),
        "the agent dropped the slow consumer",
      );

      proxy.resume();
      await until(() => dropped, "the slow client saw the drop", 30_000);
      const last = String(ROUNDS - 1);
      await until(
        () =>
          slowSet.connected && slowSet.online().length === INSTANCES &&
          slowSet.online().every((i) => i.attrs.round === last),
        "the slow subscriber recovers to the right state",
        60_000,
      );
      console.log(
        `events: ${fastEvents} delivered to the fast subscriber; agent RSS ${
          baseline.toFixed(0)
        } MiB before, ${
          peak.toFixed(0)
        } MiB at peak (bound ${RSS_BOUND_MIB} MiB)`,
      );
      assert.equal(fastEvents, INSTANCES * ROUNDS);
      assert.ok(peak < RSS_BOUND_MIB, `agent RSS peaked at ${peak} MiB`);
    } finally {
      proxy.close();
    }
  },
});

Deno.test({
  name:
    "a snapshot larger than the queue limit is delivered whole, without a drop",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const instances = 3000;
    const maxQueueBytes = 64 * 1024;
    await using agent = await spawnAgent([
      "--max-queue-bytes",
      String(maxQueueBytes),
      "--max-registrations",
      String(instances + 1),
      "--log-level",
      "warn",
    ]);
    await using writer = await connect(agent.url);
    // 100 calls in flight at a time: their responses stay under the limit.
    for (let start = 0; start < instances; start += 100) {
      await Promise.all(
        Array.from(
          { length: 100 },
          (_, k) =>
            writer.register(
              "big",
              `10.0.${(start + k) >> 8}.${(start + k) & 255}:80`,
              { attrs: { zone: `zone-${k % 3}`, padding: "x".repeat(64) } },
            ),
        ),
      );
    }
    await using reader = await connect(agent.url);
    let disconnects = 0;
    reader.addEventListener("disconnect", () => disconnects++);
    await using set = await reader.services("big", {
      signal: AbortSignal.timeout(30_000),
    });
    assert.equal(set.online().length, instances);
    // The snapshot alone is far above the limit.
    const bytes = JSON.stringify(set.online()).length;
    assert.ok(bytes > 4 * maxQueueBytes, `snapshot of ${bytes} bytes`);
    // Live events still arrive on the same connection.
    await writer.register("big", "10.1.0.1:80");
    await until(() => set.get("10.1.0.1:80") !== undefined, "live event");
    assert.equal(disconnects, 0, "the reader was never dropped");
    assert.doesNotMatch(agent.stderr(), /slow consumer dropped/);
  },
});
