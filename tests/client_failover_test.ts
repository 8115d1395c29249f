// Copyright the discover authors. BSD-3-Clause license.

/**
 * A client given several agent URLs moves to the next agent when the one
 * it uses is down, at the first connection and at every reconnection, and
 * registers everything again there; and a program started before its
 * agent waits for it with `waitForAgent`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { until } from "./_wait.ts";
import { freePort } from "../tools/_process.ts";

const quiet = {
  advertiseHost: "127.0.0.1",
  logger: { debug() {}, info() {}, warn() {}, error() {} },
};

Deno.test("the first URL is dead: the client connects to the second", async () => {
  await using second = await spawnAgent();
  const dead = `ws://127.0.0.1:${freePort()}/`;
  await using client = await connect([dead, second.url]);
  assert.equal(client.url, new URL(second.url).href);
  await client.register("svc", "10.0.0.1:80");
  await using reader = await connect(second.url);
  assert.deepEqual((await reader.lookup("svc")).map((i) => i.addr), [
    "10.0.0.1:80",
  ]);
});

Deno.test("the agent in use is killed: the client reconnects to the other and restores its registrations and sets", async () => {
  await using a = await spawnAgent();
  await using b = await spawnAgent();
  await using client = await connect([a.url, b.url], {
    reconnect: { maxDelay: 200 },
  });
  assert.equal(client.url, new URL(a.url).href);
  await client.register("svc", "10.0.0.1:80", { attrs: { v: "1" } });
  await client.register("svc", "10.0.0.2:80");
  await using own = await client.services("svc");
  assert.equal(own.online().length, 2);
  const reconnected = new Promise<void>((resolve) =>
    client.addEventListener("reconnect", () => resolve(), { once: true })
  );

  a.kill("SIGKILL");
  await reconnected;
  assert.equal(client.url, new URL(b.url).href);
  await using reader = await connect(b.url);
  assert.deepEqual(
    (await reader.lookup("svc")).map((i) => `${i.addr} ${i.attrs.v ?? "-"}`)
      .sort(),
    ["10.0.0.1:80 1", "10.0.0.2:80 -"],
  );
  assert.deepEqual(
    client.registrations().map((r) => `${r.at} ${r.state}`),
    ["10.0.0.1:80 registered", "10.0.0.2:80 registered"],
  );
  // The set resumed at the new agent (a snapshot: another epoch) and
  // follows it.
  await until(() => own.connected, "the set is in sync again");
  assert.equal(own.online().length, 2);
  await reader.register("svc", "10.0.0.3:80");
  await until(() => own.online().length === 3, "the set follows agent b");
});

Deno.test("waitForAgent: a client started before its agent connects once the agent is up", async () => {
  const port = freePort();
  const started = Date.now();
  const connecting = connect(`ws://127.0.0.1:${port}`, {
    waitForAgent: 30_000,
  });
  let settled = false;
  connecting.finally(() => settled = true).catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(settled, false, "still waiting for the agent");
  await using agent = await startAgent({ port, ...quiet });
  await using client = await connecting;
  assert.equal(client.state, "connected");
  assert.ok(Date.now() - started >= 1000);
  await client.register("svc", 1);
  assert.equal(agent.revision, 1);
});
