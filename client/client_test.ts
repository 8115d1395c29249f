// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { connect } from "./client.ts";

const quiet = { logger: { debug() {}, info() {}, warn() {}, error() {} } };
const isCode = (code: number) => (e: unknown) =>
  e instanceof RpcError && e.code === code;

Deno.test("connect fails clearly when no agent listens, and honours its signal", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // a port where nothing listens now
  await assert.rejects(
    connect(`ws://127.0.0.1:${port}`),
    (e: unknown) =>
      isCode(ErrorCode.ConnectionClosed)(e) &&
      (e as Error).message.includes("could not connect"),
  );
  const controller = new AbortController();
  controller.abort(new Error("stop"));
  await assert.rejects(
    connect(`ws://127.0.0.1:${port}`, { signal: controller.signal }),
    /stop/,
  );
});

Deno.test("connect checks its arguments", async () => {
  await assert.rejects(connect("http://127.0.0.1:1"), TypeError);
  await assert.rejects(
    connect("ws://127.0.0.1:1", { clientId: "no spaces" }),
    /clientId/,
  );
  const saved = globalThis.WebSocket;
  try {
    // deno-lint-ignore no-explicit-any
    delete (globalThis as any).WebSocket;
    await assert.rejects(connect("ws://127.0.0.1:1"), /options\.WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

Deno.test("the client uses a WebSocket constructor given in its options", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  const urls: string[] = [];
  class Counting extends WebSocket {
    constructor(url: string) {
      super(url);
      urls.push(url);
    }
  }
  await using client = await connect(agent.url, {
    WebSocket: Counting,
    clientId: "abc",
  });
  assert.equal(urls.length, 1);
  assert.match(urls[0], /[?&]client=abc$/);
  assert.equal(client.clientId, "abc");
  assert.equal((await client.status()).backend, "memory");
});

Deno.test("bad arguments are rejected before anything is sent", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using client = await connect(agent.url);
  await assert.rejects(
    client.register("a/b", 1),
    isCode(ErrorCode.InvalidParams),
  );
  await assert.rejects(
    client.register("ok", 0),
    isCode(ErrorCode.InvalidParams),
  );
  await assert.rejects(
    client.register("ok", "nohost"),
    isCode(ErrorCode.InvalidParams),
  );
  await assert.rejects(
    client.register("ok", 1, { attrs: { k: 1 as unknown as string } }),
    isCode(ErrorCode.InvalidParams),
  );
  await assert.rejects(
    client.services("ok", { filter: [] as unknown as Record<string, string> }),
    isCode(ErrorCode.InvalidParams),
  );
  assert.equal(agent.revision, 0);
});

Deno.test("calls honour an aborted signal", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using client = await connect(agent.url);
  const signal = AbortSignal.abort(new Error("not now"));
  await assert.rejects(client.register("svc", 1, { signal }), /not now/);
  await assert.rejects(client.services("svc", { signal }), /not now/);
  await assert.rejects(client.lookup("svc", { signal }), /not now/);
});

Deno.test("close unregisters, ends sets and refuses further calls", async () => {
  await using agent = await startAgent({ port: 0, ttl: 60, ...quiet });
  await using watcher = await connect(agent.url);
  const client = await connect(agent.url);
  await client.register("svc", 1);
  const own = await client.services("svc");
  const watched = await watcher.services("svc");
  const updates = watched.updates();
  let closeEvents = 0;
  client.addEventListener("close", () => closeEvents++);
  await client.close();
  assert.equal((await updates.next()).value?.kind, "down");
  assert.equal(own.closed, true);
  assert.equal(client.closed, true);
  assert.equal(closeEvents, 1);
  await assert.rejects(
    client.register("svc", 2),
    isCode(ErrorCode.ConnectionClosed),
  );
  await client.close(); // twice is fine
});

Deno.test("a silent agent is detected by ping and the connection given up", async () => {
  // A WebSocket server that accepts and then never answers anything.
  const sockets: WebSocket[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      sockets.push(socket);
      return response;
    },
  );
  const client = await connect(`ws://127.0.0.1:${server.addr.port}`, {
    pingInterval: 100,
    requestTimeout: 400,
  });
  const started = performance.now();
  const pending = client.lookup("svc").then(() => "answered", (e) => e);
  await new Promise<void>((resolve) =>
    client.addEventListener("close", () => resolve())
  );
  const elapsed = performance.now() - started;
  assert.equal(client.closed, true);
  // Detected within one ping interval plus the ping timeout, with slack.
  assert.ok(elapsed < 3000, `detected after ${elapsed} ms`);
  assert.ok((await pending) instanceof RpcError);
  for (const s of sockets) s.close();
  await server.shutdown();
});

Deno.test("an agent shutdown ends the client and its sets", async () => {
  const agent = await startAgent({ port: 0, ...quiet });
  const client = await connect(agent.url);
  const set = await client.services("svc");
  const closed = new Promise<void>((resolve) =>
    client.addEventListener("close", () => resolve())
  );
  await agent.shutdown();
  await closed;
  assert.equal(set.closed, true);
  assert.equal((await set.updates().next()).done, true);
});
