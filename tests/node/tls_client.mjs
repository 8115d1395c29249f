// Copyright the discover authors. BSD-3-Clause license.

/**
 * The bundled client (dist/discover.mjs) under Node.js against an agent
 * that serves `wss://` with a certificate of a private CA, under Node's
 * own test runner. Two ways to trust that CA:
 *
 * - npm `ws`, given the CA as its `ca` option: a `WebSocket` class passed
 *   as `connect(url, { WebSocket })`;
 * - Node's global WebSocket (Node 20 needs --experimental-websocket),
 *   which trusts the certificates of `NODE_EXTRA_CA_CERTS`, read when
 *   Node starts. Without it, that WebSocket refuses the agent.
 *
 * tests/tls_test.ts runs it twice, without and with NODE_EXTRA_CA_CERTS,
 * with DISCOVER_URL (the agent's wss:// URL), DISCOVER_CLIENT (the
 * bundle's path) and DISCOVER_CA (the CA certificate's path) set.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

const url = process.env.DISCOVER_URL;
const clientPath = process.env.DISCOVER_CLIENT;
const caPath = process.env.DISCOVER_CA;
if (!url?.startsWith("wss://") || !clientPath || !caPath) {
  throw new Error(
    "set DISCOVER_URL (an agent's wss:// URL), DISCOVER_CLIENT (path of dist/discover.mjs) and DISCOVER_CA (its CA certificate); tests/tls_test.ts does",
  );
}
const { connect } = await import(pathToFileURL(clientPath).href);
// Required by name at run time, so that type checkers of this repository
// do not need tests/node/node_modules.
const wsModule = "ws";
const { WebSocket: NpmWebSocket } = createRequire(import.meta.url)(wsModule);
const ca = readFileSync(caPath, "utf8");

/** npm `ws` trusting the private CA (only it: `ca` replaces Node's roots). */
class TrustingWebSocket extends NpmWebSocket {
  constructor(address, protocols) {
    super(address, protocols, { ca });
  }
}

/** Registers through one client, and sees it through another. */
async function registerAndSee(WebSocket, service) {
  const options = { WebSocket, reconnect: false };
  const publisher = await connect(url, options);
  const watcher = await connect(url, options);
  try {
    const set = await watcher.services(service);
    const updates = set.updates();
    await publisher.register(service, 4443, { attrs: { via: service } });
    const { value } = await updates.next();
    assert.equal(value.kind, "up");
    assert.equal(value.instance.addr, "127.0.0.1:4443");
    assert.deepEqual(value.instance.attrs, { via: service });
    await set.close();
  } finally {
    await publisher.close();
    await watcher.close();
  }
}

const extra = Boolean(process.env.NODE_EXTRA_CA_CERTS);

describe("a wss:// agent of a private CA", () => {
  it("npm ws given the CA as 'ca' registers and subscribes", async () => {
    // Both runs go at once: each its own service.
    await registerAndSee(
      TrustingWebSocket,
      extra ? "node-ws-ca-extra" : "node-ws-ca",
    );
  });

  it(
    "the global WebSocket trusts NODE_EXTRA_CA_CERTS",
    { skip: !extra && "NODE_EXTRA_CA_CERTS is not set" },
    async () => {
      assert.equal(
        typeof globalThis.WebSocket,
        "function",
        "Node has no global WebSocket: run with --experimental-websocket",
      );
      await registerAndSee(undefined, "node-extra-ca-certs");
    },
  );

  // Node's own roots (and NODE_EXTRA_CA_CERTS when set) do not hold the CA.
  for (
    const [name, WebSocket] of [
      ["the global WebSocket", undefined],
      ["npm ws without 'ca'", NpmWebSocket],
    ]
  ) {
    it(
      `${name} refuses the certificate without NODE_EXTRA_CA_CERTS`,
      { skip: extra && "NODE_EXTRA_CA_CERTS is set" },
      async () => {
        await assert.rejects(
          connect(url, { WebSocket, reconnect: false }),
          /could not connect/,
        );
      },
    );
  }
});
