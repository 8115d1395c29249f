// Copyright the discover authors. BSD-3-Clause license.

/**
 * `discover.owned` through the client: each client sees the instances its
 * client id holds at the agent, shared by its sessions, and nothing of
 * another client's; an instance taken over by another client moves with it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { connect } from "../mod.ts";
import { tcpProxy } from "./_proxy.ts";
import { until } from "./_wait.ts";

const quiet = {
  advertiseHost: "127.0.0.1",
  logger: { debug() {}, info() {}, warn() {}, error() {} },
};

Deno.test("owned() lists what this client id holds at the agent, and only that", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using a = await connect(agent.url, { clientId: "owner-a" });
  await using b = await connect(agent.url, { clientId: "owner-b" });
  assert.deepEqual(await a.owned(), []);

  await a.register("web", 8081, { attrs: { zone: "a" } });
  await a.register("api", "127.0.0.1:9000");
  await b.register("web", 8082);
  const ids = async (c: typeof a) => (await c.owned()).map((i) => i.id);
  assert.deepEqual(await ids(a), ["api/127.0.0.1:9000", "web/127.0.0.1:8081"]);
  assert.deepEqual(await ids(b), ["web/127.0.0.1:8082"]);
  assert.deepEqual((await a.owned())[1].attrs, { zone: "a" });

  // A second session with the same client id is the same owner.
  await using again = await connect(agent.url, { clientId: "owner-a" });
  assert.deepEqual(await ids(again), await ids(a));

  // Unregistered: gone.
  assert.equal(await a.unregister("api", "127.0.0.1:9000"), true);
  assert.deepEqual(await ids(a), ["web/127.0.0.1:8081"]);
});

Deno.test({
  name: "owned() follows a takeover: the instance leaves the lost owner's list",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using agent = await startAgent({ port: 0, ttl: 30, ...quiet });
    const proxy = tcpProxy(Number(new URL(agent.url).port));
    try {
      const first = await connect(proxy.url, {
        clientId: "first",
        reconnect: false,
      });
      await first.register("db", 5432);
      // Cut without a clean close: the owner is lost, its instance waits
      // out the 30 s grace period, and another client may take it over.
      proxy.cut();
      await until(() => first.state === "closed", "the first client ends");
      await using second = await connect(agent.url, { clientId: "second" });
      await second.register("db", 5432);
      assert.deepEqual((await second.owned()).map((i) => i.id), [
        "db/127.0.0.1:5432",
      ]);
      await using back = await connect(agent.url, { clientId: "first" });
      assert.deepEqual(await back.owned(), []);
    } finally {
      proxy.close();
    }
  },
});

Deno.test("owned() rejects unknown options like every call", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using client = await connect(agent.url);
  await assert.rejects(
    // @ts-expect-error: plain JavaScript callers get no type check
    () => client.owned({ service: "web" }),
    { name: "TypeError", message: /'service' is not an option of owned\(\)/ },
  );
});
