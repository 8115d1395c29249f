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
  await using a = await connect(agent.url, { clientId: "owner-a-0123456789" });
  await using b = await connect(agent.url, { clientId: "owner-b-0123456789" });
  assert.deepEqual(await a.owned(), []);

  await a.register("web", 8081, { attrs: { zone: "a" } });
  await a.register("api", "127.0.0.1:9000");
  await b.register("web", 8082);
  const ids = async (c: typeof a) => (await c.owned()).map((i) => i.id);
  assert.deepEqual(await ids(a), ["api/127.0.0.1:9000", "web/127.0.0.1:8081"]);
  assert.deepEqual(await ids(b), ["web/127.0.0.1:8082"]);
  assert.deepEqual((await a.owned())[1].attrs, { zone: "a" });

  // A second session with the same client id is the same owner.
  await using again = await connect(agent.url, {
    clientId: "owner-a-0123456789",
  });
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
        clientId: "first-client-0123456789",
        reconnect: false,
      });
      await first.register("db", 5432);
      // Cut without a clean close: the owner is lost, its instance waits
      // out the 30 s grace period, and another client may take it over.
      proxy.cut();
      await until(() => first.state === "closed", "the first client ends");
      await using second = await connect(agent.url, {
        clientId: "second-client-0123456789",
      });
      await second.register("db", 5432);
      assert.deepEqual((await second.owned()).map((i) => i.id), [
        "db/127.0.0.1:5432",
      ]);
      await using back = await connect(agent.url, {
        clientId: "first-client-0123456789",
      });
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

Deno.test("a client id shorter than 16 characters is refused, by the agent and by the client", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  const opens = (id: string) =>
    new Promise<boolean>((resolve) => {
      const socket = new WebSocket(`${agent.url}?client=${id}`);
      socket.onopen = () => {
        socket.close();
        resolve(true);
      };
      socket.onerror = () => resolve(false);
    });
  assert.equal(await opens("a"), false);
  assert.equal(await opens("fifteen-chars-0"), false);
  assert.equal(await opens("sixteen-chars-01"), true);
  await assert.rejects(
    connect(agent.url, { clientId: "fifteen-chars-0" }),
    /'clientId' must be 16 to 64 characters/,
  );
  await using ok = await connect(agent.url, { clientId: "sixteen-chars-01" });
  assert.equal(ok.clientId, "sixteen-chars-01");
});

Deno.test({
  name:
    "owners() tells each instance's owner and its client's state: connected, then lost with the time it expires, then back",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using agent = await startAgent({ port: 0, ttl: 30, ...quiet });
    const proxy = tcpProxy(Number(new URL(agent.url).port));
    try {
      const clientId = "owner-client-0123456789";
      const owner = await connect(proxy.url, { clientId, reconnect: false });
      await owner.register("db", 5432);
      await using reader = await connect(agent.url);
      await reader.register("db", 5433);
      const first = await reader.owners("db");
      assert.deepEqual(
        first.owners.map((o) => [o.addr, o.client, o.expires]),
        [
          ["127.0.0.1:5432", "connected", undefined],
          ["127.0.0.1:5433", "connected", undefined],
        ],
      );
      const shown = first.owners[0].owner;
      assert.match(shown, /^c:[A-Za-z0-9_-]{8}$/);
      assert.notEqual(shown, first.owners[1].owner, "two clients, two owners");
      assert.ok(!JSON.stringify(first).includes(clientId), "never the id");

      // Lost: kept for the 30 s grace TTL, and the agent says until when.
      const cutAt = Date.now();
      proxy.cut();
      await until(() => owner.state === "closed", "the owner is cut off");
      let lost;
      await until(async () => {
        lost = (await reader.owners("db")).owners[0];
        return lost.client === "lost";
      }, "the agent sees the owner lost");
      assert.equal(lost!.owner, shown);
      assert.ok(
        lost!.expires! >= cutAt + 29_000 &&
          lost!.expires! <= Date.now() + 30_000,
        `expires ${lost!.expires} about 30 s after the cut at ${cutAt}`,
      );

      // Back within the grace TTL: connected again, nothing expires.
      await using back = await connect(agent.url, { clientId });
      await back.register("db", 5432);
      const again = (await reader.owners("db")).owners[0];
      assert.deepEqual([again.owner, again.client, again.expires], [
        shown,
        "connected",
        undefined,
      ]);
      // The filter and health of discover.services apply.
      assert.deepEqual(
        (await reader.owners("db", { filter: { none: "x" } })).owners,
        [],
      );
    } finally {
      proxy.close();
    }
  },
});
