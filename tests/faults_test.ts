// Copyright the discover authors. BSD-3-Clause license.

/**
 * Faults between clients and one agent: the agent killed and restarted, and
 * a connection that goes silent without closing (half-open).
 */

import assert from "node:assert/strict";
import {
  type Client,
  connect,
  ErrorCode,
  RpcError,
  type ServiceSet,
} from "../mod.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { until } from "./_wait.ts";
import { tcpProxy } from "./_proxy.ts";

const fast = { reconnect: { maxDelay: 300 } };

/** Per-instance event kinds a set saw. */
function kindsByAddr(set: ServiceSet): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  set.addEventListener("update", (e) => {
    const list = seen.get(e.instance.addr) ?? [];
    list.push(e.kind);
    seen.set(e.instance.addr, list);
  });
  return seen;
}

/** No `up` after `up`, no `down` without an `up` before it. */
function assertConsistent(seen: Map<string, string[]>, initial: Set<string>) {
  for (const [addr, kinds] of seen) {
    let up = initial.has(addr);
    for (const kind of kinds) {
      if (kind === "up") assert.ok(!up, `${addr}: duplicate up in ${kinds}`);
      if (kind !== "up") {
        assert.ok(up, `${addr}: ${kind} while down in ${kinds}`);
      }
      up = kind !== "down";
    }
  }
}

Deno.test({
  name:
    "agent SIGKILLed and restarted: every client re-registers, every set ends exact, no duplicates",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let agent: AgentProcess = await spawnAgent();
    const listen = `127.0.0.1:${new URL(agent.http).port}`;
    const clients: Client[] = [];
    try {
      for (let i = 0; i < 5; i++) clients.push(await connect(agent.url, fast));
      for (const [i, c] of clients.entries()) {
        await c.register("svc", 2000 + i, { attrs: { client: String(i) } });
      }
      const sets = await Promise.all(clients.map((c) => c.services("svc")));
      const logs = sets.map(kindsByAddr);
      const initial = new Set(sets[0].online().map((i) => i.addr));
      assert.equal(initial.size, 5);

      agent.kill("SIGKILL");
      await agent.stop();
      const killedAt = Date.now();
      agent = await spawnAgent(["--listen", listen]);
      await until(
        () => sets.every((s) => s.connected && s.online().length === 5),
        "every set holds every instance again",
        20_000,
      );
      console.log(
        `after the restart, every set was exact in ${Date.now() - killedAt} ms`,
      );
      for (const set of sets) {
        assert.deepEqual(
          set.online().map((i) => `${i.addr} ${i.attrs.client}`).sort(),
          [0, 1, 2, 3, 4].map((i) => `127.0.0.1:${2000 + i} ${i}`),
        );
      }
      // The new (empty) agent's snapshots are diffed against what each set
      // held: an instance whose client had not re-registered yet goes down
      // and comes back up, but nothing is announced twice.
      let events = 0;
      for (const log of logs) {
        assertConsistent(log, initial);
        for (const kinds of log.values()) {
          events += kinds.length;
          if (kinds.length > 0) assert.equal(kinds.at(-1), "up");
        }
      }
      console.log(`events seen by the 5 sets across the restart: ${events}`);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await agent.stop();
    }
  },
});

Deno.test({
  name:
    "a half-open connection is detected by ping within the bound, and the client recovers",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const PING = 500, TIMEOUT = 1500; // bound: PING + TIMEOUT, plus slack
    await using agent = await spawnAgent([
      "--ttl",
      "30",
      "--idle-timeout",
      "30",
    ]);
    const proxy = tcpProxy(Number(new URL(agent.http).port));
    await using writer = await connect(agent.url);
    const client = await connect(`ws://127.0.0.1:${proxy.port}`, {
      pingInterval: PING,
      requestTimeout: TIMEOUT,
      reconnect: { maxDelay: 300 },
    });
    try {
      await client.register("half", 3000);
      const set = await client.services("half");
      proxy.freeze();
      const frozenAt = Date.now();
      await new Promise<void>((resolve) =>
        client.addEventListener("disconnect", () => resolve(), { once: true })
      );
      const detected = Date.now() - frozenAt;
      console.log(
        `half-open connection detected in ${detected} ms (bound ${
          PING + TIMEOUT
        } ms + 1 s)`,
      );
      assert.ok(
        detected <= PING + TIMEOUT + 1000,
        `detected after ${detected} ms`,
      );
      // Fail-static meanwhile, and changes happen behind its back.
      assert.equal(set.connected, false);
      assert.equal(set.online().length, 1);
      await writer.register("half", 3001);
      proxy.thaw();
      await until(
        () => set.connected && set.online().length === 2,
        "the set catches up after the path is back",
        20_000,
      );
      assert.deepEqual(
        (await writer.lookup("half")).map((i) => i.addr).sort(),
        [
          "127.0.0.1:3000",
          "127.0.0.1:3001",
        ],
      );
    } finally {
      await client.close();
      proxy.close();
    }
  },
});

Deno.test({
  name:
    "an instance taken over during a blip: its owner is told, keeps retrying, and gets it back when the taker leaves",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A long grace TTL: only a takeover can move the instance.
    await using agent = await spawnAgent(["--ttl", "30"]);
    const proxy = tcpProxy(Number(new URL(agent.http).port));
    try {
      await using owner = await connect(proxy.url, {
        reconnect: { initialDelay: 100, maxDelay: 300 },
        connectTimeout: 500,
      });
      const errors: unknown[] = [];
      owner.addEventListener("error", (e) => errors.push(e.detail));
      const addr = "10.0.0.5:5432";
      await owner.register("db", addr, { attrs: { who: "owner" } });
      await using reader = await connect(agent.url);
      const set = await reader.services("db");

      // The blip: the owner's connection drops, and its reconnection is
      // held back until another client has taken the instance.
      proxy.freeze();
      proxy.cut();
      await using taker = await connect(agent.url);
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await taker.register("db", addr, { attrs: { who: "taker" } });
          break;
        } catch (error) {
          // Refused while the agent has not yet seen the owner's session end.
          assert.ok(error instanceof RpcError, String(error));
          assert.equal(error.code, ErrorCode.NotOwner);
          assert.ok(Date.now() < deadline, "the takeover never succeeded");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      proxy.thaw();
      await until(
        () => errors.length > 0 && owner.state === "connected",
        "the owner reconnects and is told that it lost the instance",
      );
      const error = errors[0];
      assert.ok(error instanceof RpcError, String(error));
      assert.equal(error.code, ErrorCode.NotOwner);
      assert.match(error.message, /db\/10\.0\.0\.5:5432/);
      await until(() => set.get(addr)?.attrs.who === "taker", "taker holds it");

      // The owner did not give up: once the taker leaves, it is the owner's
      // again (its retries back off up to 5 s).
      await taker.close();
      await until(
        () => set.get(addr)?.attrs.who === "owner",
        "the instance is the owner's again",
        15_000,
      );
      assert.equal(errors.length, 1, "told once, not at every retry");
    } finally {
      proxy.close();
    }
  },
});
