// Copyright the discover authors. BSD-3-Clause license.

/**
 * Plain JavaScript under Node.js: no type checker stands between a program
 * and the client, so every options object must refuse keys it does not
 * know, with a TypeError that names the key and where it belongs, before
 * anything is sent.
 *
 * tests/node_strict_options_test.ts runs it with Node's test runner, with
 * DISCOVER_URL (an agent) and DISCOVER_CLIENT (the bundled client) set.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

const url = process.env.DISCOVER_URL;
const clientPath = process.env.DISCOVER_CLIENT;
if (!url || !clientPath) {
  throw new Error(
    "set DISCOVER_URL and DISCOVER_CLIENT; tests/node_strict_options_test.ts does",
  );
}
const { connect } = await import(pathToFileURL(clientPath).href);

/** Asserts that `promise` rejects with a TypeError of exactly `message`. */
async function refused(promise, message) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof TypeError, `not a TypeError: ${error}`);
    assert.equal(error.message, message);
    return true;
  });
}

test("unknown options are TypeErrors that say where the key belongs, and nothing is registered", async () => {
  const client = await connect(url, { reconnect: false });
  try {
    await refused(
      client.register("cache", 9876, { id: "cache1" }),
      "'id' is not an option of register(): attributes go in {attrs: {...}}",
    );
    await refused(
      client.lookup("cache", { zone: "b" }),
      `'zone' is not an option of lookup(): filter by attributes with {filter: {zone: "b"}}`,
    );
    await refused(
      client.services("cache", { zone: "b" }),
      `'zone' is not an option of services(): filter by attributes with {filter: {zone: "b"}}`,
    );
    await refused(
      client.unregister("cache", 9876, { id: "cache1" }),
      "'id' is not an option of unregister(): its options are signal, force",
    );
    await refused(
      client.catalog({ service: "cache" }),
      "'service' is not an option of catalog(): its options are signal",
    );
    await refused(
      client.status({ verbose: true }),
      "'verbose' is not an option of status(): its options are signal",
    );
    await refused(
      connect(url, { reconect: false }),
      "'reconect' is not an option of connect(): its options are signal, WebSocket, clientId, token, connectTimeout, requestTimeout, pingInterval, reconnect, waitForAgent",
    );
    await refused(
      connect(url, { reconnect: { maxDelayMs: 100 } }),
      "'maxDelayMs' is not an option of connect({reconnect: {...}}): its options are initialDelay, maxDelay",
    );
    await refused(
      client.register("cache", 9876, "cache1"),
      `the options of register() must be an object such as {attrs: ...}: got the string "cache1"`,
    );
    await refused(
      client.lookup("cache", "zone=b"),
      `the options of lookup() must be an object such as {filter: ...}: got the string "zone=b"`,
    );
    const set = await client.services("cache");
    assert.throws(() => set.updates({ signl: undefined }), {
      name: "TypeError",
      message: "'signl' is not an option of updates(): its options are signal",
    });
    await set.close();

    // Nothing reached the agent's registry.
    assert.deepEqual(await client.lookup("cache"), []);
    assert.deepEqual((await client.catalog()).services, []);
    assert.deepEqual(client.registrations(), []);
  } finally {
    await client.close();
  }
});

test("bad URLs are TypeErrors", async () => {
  for (const bad of ["127.0.0.1:1111", "http://127.0.0.1:1111", "ws://h/#x"]) {
    await assert.rejects(connect(bad), TypeError, bad);
  }
  await assert.rejects(connect([]), TypeError);
});
