// Copyright the discover authors. BSD-3-Clause license.

/**
 * The bundled client (dist/discover.mjs) under Node.js's own test runner,
 * against a real agent: once with Node's global WebSocket (Node 20 needs
 * --experimental-websocket) and once with npm `ws` passed as
 * `connect(url, { WebSocket })`.
 *
 * tests/node_test.ts runs it: it bundles the client, installs `ws` here
 * (package.json), starts an agent and runs
 * `node --experimental-websocket --test tests/node/client.mjs` with
 * DISCOVER_URL (the agent) and DISCOVER_CLIENT (the bundle's path) set.
 * The file name avoids the `*_test`/`*.test` patterns so that `deno test`
 * does not pick it up.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const url = process.env.DISCOVER_URL;
const clientPath = process.env.DISCOVER_CLIENT;
if (!url || !clientPath) {
  throw new Error(
    "set DISCOVER_URL (an agent's ws:// URL) and DISCOVER_CLIENT (path of dist/discover.mjs); tests/node_test.ts does",
  );
}
const { connect, ErrorCode, RpcError, ServiceSet } = await import(
  pathToFileURL(clientPath).href
);
// Required by name at run time, so that type checkers of this repository
// do not need tests/node/node_modules.
const wsModule = "ws";
const { WebSocket: NpmWebSocket } = createRequire(import.meta.url)(wsModule);

/** Resolves with the next value of `iterator`, or rejects after `ms`. */
async function next(iterator, ms = 5000) {
  let timer;
  try {
    return await Promise.race([
      iterator.next(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no update in ${ms} ms`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const implementations = [
  ["global WebSocket", undefined],
  ["npm ws", NpmWebSocket],
];

for (const [name, WebSocket] of implementations) {
  describe(`client with ${name}`, () => {
    const service = `node-${name.replace(/\W/g, "-")}`;
    const options = { WebSocket, reconnect: false };
    let publisher;
    let watcher;

    before(async () => {
      if (WebSocket === undefined) {
        assert.equal(
          typeof globalThis.WebSocket,
          "function",
          "Node has no global WebSocket: run with --experimental-websocket",
        );
      }
      publisher = await connect(url, options);
      watcher = await connect(url, options);
    });

    after(async () => {
      await publisher?.close();
      await watcher?.close();
    });

    it("registers, filters, streams updates and unregisters", async () => {
      const set = await watcher.services(service, { filter: { zone: "b" } });
      assert.ok(set instanceof ServiceSet);
      assert.deepEqual(set.online(), []);
      const events = [];
      set.addEventListener("update", (e) => events.push(e.kind));
      const updates = set.updates();

      const up = await publisher.register(service, 4001, {
        attrs: { zone: "b", id: "one" },
      });
      assert.equal(up.addr, "127.0.0.1:4001");
      assert.deepEqual(up.attrs, { zone: "b", id: "one" });
      // Filtered out by the agent: never reaches the set.
      await publisher.register(service, 4002, { attrs: { zone: "a" } });

      let u = await next(updates);
      assert.equal(u.value.kind, "up");
      assert.equal(u.value.instance.addr, "127.0.0.1:4001");

      await publisher.register(service, 4001, {
        attrs: { zone: "b", id: "two" },
      });
      u = await next(updates);
      assert.equal(u.value.kind, "update");
      assert.deepEqual(u.value.instance.attrs, { zone: "b", id: "two" });
      assert.deepEqual(set.online().map((i) => i.addr), ["127.0.0.1:4001"]);

      const all = await watcher.lookup(service);
      assert.deepEqual(all.map((i) => i.addr).sort(), [
        "127.0.0.1:4001",
        "127.0.0.1:4002",
      ]);

      assert.equal(await publisher.unregister(service, 4001), true);
      u = await next(updates);
      assert.equal(u.value.kind, "down");
      assert.deepEqual(set.online(), []);
      assert.deepEqual(set.offline().map((i) => i.addr), ["127.0.0.1:4001"]);
      assert.deepEqual(events, ["up", "update", "down"]);

      await set.close();
      assert.equal(set.closed, true);
      assert.equal((await updates.next()).done, true);
    });

    it("reports bad input as RpcError and closes cleanly", async () => {
      await assert.rejects(
        publisher.register(service, 4003, { attrs: { zone: 7 } }),
        (error) => error instanceof TypeError || error instanceof RpcError,
      );
      const client = await connect(url, options);
      let closed = 0;
      client.addEventListener("close", () => closed++);
      assert.equal(client.state, "connected");
      await client.close();
      assert.equal(client.closed, true);
      assert.equal(closed, 1);
      await assert.rejects(
        client.register(service, 4004),
        (error) =>
          error instanceof RpcError &&
          error.code === ErrorCode.ConnectionClosed,
      );
    });
  });
}
