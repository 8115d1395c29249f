// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import type { StoredRecord, WriteOptions } from "../backends/backend.ts";
import { MemoryBackend } from "../backends/memory.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { type Client, connect, type WebSocketConstructor } from "./client.ts";
import { until } from "../tests/_wait.ts";

const quiet = {
  advertiseHost: "127.0.0.1",
  logger: { debug() {}, info() {}, warn() {}, error() {} },
};
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
    clientId: "abc-0123456789abcdef",
  });
  assert.equal(urls.length, 1);
  assert.match(urls[0], /[?&]client=abc-0123456789abcdef$/);
  assert.equal(client.clientId, "abc-0123456789abcdef");
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
    reconnect: false,
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

Deno.test("without reconnection, an agent shutdown ends the client and its sets", async () => {
  const agent = await startAgent({ port: 0, ...quiet });
  const client = await connect(agent.url, { reconnect: false });
  const set = await client.services("svc");
  const closed = new Promise<void>((resolve) =>
    client.addEventListener("close", () => resolve())
  );
  await agent.shutdown();
  await closed;
  assert.equal(set.closed, true);
  assert.equal((await set.updates().next()).done, true);
});

Deno.test("after an agent restart the client re-registers and its sets resume", async () => {
  const first = await startAgent({ port: 0, ...quiet });
  const port = first.port;
  await using watcher = await connect(first.url, {
    reconnect: { maxDelay: 200 },
  });
  await using client = await connect(first.url, {
    reconnect: { maxDelay: 200 },
  });
  await client.register("svc", 1, { attrs: { v: "1" } });
  await client.register("svc", 2);
  await using set = await watcher.services("svc");
  assert.equal(set.online().length, 2);
  const events: string[] = [];
  set.addEventListener("disconnect", () => events.push("disconnect"));
  set.addEventListener("sync", () => events.push("sync"));
  const reconnected = new Promise<void>((resolve) =>
    client.addEventListener("reconnect", () => resolve(), { once: true })
  );
  const disconnected = new Promise<void>((resolve) =>
    set.addEventListener("disconnect", () => resolve(), { once: true })
  );
  await first.shutdown();
  await disconnected;
  assert.equal(watcher.state, "disconnected");
  // Fail-static: the set keeps its last known state while disconnected.
  assert.equal(set.connected, false);
  assert.equal(set.online().length, 2);
  // A call made while disconnected waits for the new connection.
  const pending = client.lookup("svc");
  await using second = await startAgent({ port, ...quiet });
  await reconnected;
  assert.equal(client.state, "connected");
  await until(
    () => set.connected && set.online().length === 2,
    "the set resumes",
  );
  assert.deepEqual(set.online().map((i) => i.addr).sort(), [
    "127.0.0.1:1",
    "127.0.0.1:2",
  ]);
  assert.deepEqual(set.get("127.0.0.1:1")?.attrs, { v: "1" });
  assert.ok((await pending).length <= 2);
  assert.deepEqual(events.slice(0, 1), ["disconnect"]);
  assert.equal(events.at(-1), "sync");
  assert.equal(second.revision >= 2, true);
});

Deno.test("a resumed set receives exactly what it missed", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using writer = await connect(agent.url);
  // The watcher reaches the agent through a proxy we can cut.
  const proxy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of proxy) {
      const upstream = await Deno.connect({
        hostname: "127.0.0.1",
        port: agent.port,
      });
      conns.push(conn, upstream);
      conn.readable.pipeTo(upstream.writable).catch(() => {});
      upstream.readable.pipeTo(conn.writable).catch(() => {});
    }
  })().catch(() => {});
  await writer.register("svc", 1);
  await writer.register("svc", 2);
  const watcher = await connect(
    `ws://127.0.0.1:${(proxy.addr as Deno.NetAddr).port}`,
    {
      reconnect: { maxDelay: 100 },
    },
  );
  const set = await watcher.services("svc");
  const seen: string[] = [];
  set.addEventListener(
    "update",
    (e) => seen.push(`${e.kind} ${e.instance.addr}`),
  );
  // Cut every connection: the watcher reconnects through the proxy.
  const cut = new Promise<void>((resolve) =>
    watcher.addEventListener("disconnect", () => resolve(), { once: true })
  );
  for (const c of conns.splice(0)) {
    try {
      c.close();
    } catch { /* closed */ }
  }
  await cut;
  await writer.register("svc", 1, { attrs: { v: "2" } });
  await writer.unregister("svc", 2);
  await writer.register("svc", 3);
  await until(() => set.connected && seen.length >= 3, "the missed changes");
  assert.deepEqual(seen, [
    "update 127.0.0.1:1",
    "down 127.0.0.1:2",
    "up 127.0.0.1:3",
  ]);
  await watcher.close();
  proxy.close();
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed */ }
  }
});

Deno.test("catalog() lists services; services('*') follows every service, same addr in two services included", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using client = await connect(agent.url);
  assert.deepEqual((await client.catalog()).services, []);
  await client.register("web", 8080, { attrs: { zone: "a" } });
  await using all = await client.services("*");
  assert.deepEqual(all.online().map((i) => i.id), ["web/127.0.0.1:8080"]);
  const updates = all.updates();
  await client.register("api", 8080);
  await client.register("web", 8080, { attrs: { zone: "b" } });
  await client.unregister("web", 8080);
  const got: string[] = [];
  for (let n = 0; n < 3; n++) {
    const { value } = await updates.next();
    got.push(`${value.kind} ${value.instance.id}`);
  }
  assert.deepEqual(got, [
    "up api/127.0.0.1:8080",
    "update web/127.0.0.1:8080",
    "down web/127.0.0.1:8080",
  ]);
  assert.equal(all.get("api/127.0.0.1:8080")?.service, "api");
  const catalog = await client.catalog();
  assert.deepEqual(catalog.services, [{ service: "api", instances: 1 }]);
  assert.ok(catalog.revision >= 4);
  await assert.rejects(client.services("ca*"), isCode(ErrorCode.InvalidParams));
});

Deno.test("a shutdown answers the requests already under way before closing", async () => {
  class Slow extends MemoryBackend {
    override async put(record: StoredRecord, options?: WriteOptions) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return super.put(record, options);
    }
  }
  const agent = await startAgent({ port: 0, backend: new Slow(), ...quiet });
  const client = await connect(agent.url, { reconnect: false });
  const registering = client.register("svc", 1);
  await new Promise((resolve) => setTimeout(resolve, 50)); // under way
  const stopping = agent.shutdown();
  const instance = await registering;
  assert.equal(instance.addr, "127.0.0.1:1");
  await stopping;
  // Refused after the drain: the connection closed with 1001.
  await until(() => client.closed, "the client sees the shutdown");
});

Deno.test("every options object rejects keys it does not know, naming the key and where it belongs", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  await using client = await connect(agent.url);
  // deno-lint-ignore no-explicit-any
  const loose = client as any;
  const cases: [() => Promise<unknown>, string][] = [
    [
      () => loose.register("cache", 9876, { id: "cache1" }),
      "'id' is not an option of register(): attributes go in {attrs: {...}}",
    ],
    [
      () => loose.register("cache", 9876, { ttl: 30 }),
      "'ttl' is not an option of register(): its options are attrs, check, signal",
    ],
    [
      () => loose.lookup("cache", { zone: "b" }),
      `'zone' is not an option of lookup(): filter by attributes with {filter: {zone: "b"}}`,
    ],
    [
      () => loose.services("cache", { zone: "b" }),
      `'zone' is not an option of services(): filter by attributes with {filter: {zone: "b"}}`,
    ],
    [
      () => loose.services("cache", { "my-zone": "b" }),
      `'my-zone' is not an option of services(): filter by attributes with {filter: {"my-zone": "b"}}`,
    ],
    [
      () => loose.unregister("cache", 9876, { forced: true }),
      "'forced' is not an option of unregister(): its options are signal, force",
    ],
    [
      () => loose.catalog({ service: "cache" }),
      "'service' is not an option of catalog(): its options are signal",
    ],
    [
      () => loose.status({ verbose: true }),
      "'verbose' is not an option of status(): its options are signal",
    ],
    [
      () => connect(agent.url, { retry: 3 } as never),
      "'retry' is not an option of connect(): its options are signal, WebSocket, clientId, token, connectTimeout, requestTimeout, pingInterval, reconnect, waitForAgent",
    ],
    [
      () => connect(agent.url, { reconnect: { max: 3 } } as never),
      "'max' is not an option of connect({reconnect: {...}}): its options are initialDelay, maxDelay",
    ],
  ];
  for (const [call, message] of cases) {
    await assert.rejects(call, (e: unknown) => {
      assert.ok(e instanceof TypeError, `${message}: got ${e}`);
      assert.equal(e.message, message);
      return true;
    });
  }
  for (const bad of ["b", null, [], 5]) {
    await assert.rejects(
      () => loose.register("cache", 9876, bad),
      /^TypeError: the options of register\(\) must be an object/,
    );
    await assert.rejects(
      () => loose.lookup("cache", bad),
      /^TypeError: the options of lookup\(\) must be an object/,
    );
  }
  // The filter is an attribute map: its keys are free.
  assert.deepEqual(
    await client.lookup("cache", { filter: { signal: "x" } }),
    [],
  );
  await assert.rejects(
    () => connect(agent.url, { requestTimeout: -1 }),
    /^RangeError: 'requestTimeout' must be a number of milliseconds/,
  );
  assert.equal(agent.revision, 0, "nothing was registered");
  assert.deepEqual(client.registrations(), []);
});

/**
 * A scripted WebSocket: the test plays the agent, answering the client's
 * requests and sending events by hand.
 */
class FakeSocket extends EventTarget {
  static opened: FakeSocket[] = [];
  readyState = 0;
  readonly requests: { id: number; method: string; params: unknown }[] = [];
  #wake?: () => void;
  constructor(readonly url: string) {
    super();
    FakeSocket.opened.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    }, 0);
  }
  send(text: string) {
    this.requests.push(JSON.parse(text));
    this.#wake?.();
  }
  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(new Event("close"));
  }
  /** The next request of `method`, removed from the list. */
  async take(method: string) {
    const deadline = Date.now() + 5000;
    for (;;) {
      const i = this.requests.findIndex((r) => r.method === method);
      if (i >= 0) return this.requests.splice(i, 1)[0];
      assert.ok(Date.now() < deadline, `no '${method}' request within 5 s`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
  frame(message: unknown) {
    this.dispatchEvent(
      new MessageEvent("message", {
        data: JSON.stringify({ jsonrpc: "2.0", ...message as object }),
      }),
    );
  }
  /** The socket the client opened as its `n`th connection (from 0). */
  static async nth(n: number): Promise<FakeSocket> {
    await until(() => FakeSocket.opened.length > n, `connection ${n}`);
    return FakeSocket.opened[n];
  }
}

Deno.test("a set resumes with the epoch of its revision: a new epoch counts only once its snapshot is complete", async () => {
  FakeSocket.opened = [];
  const client = await connect("ws://agent.test:1111", {
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    reconnect: { initialDelay: 1, maxDelay: 5 },
    pingInterval: 60_000,
  });
  const inst = (revision: number) => ({
    id: "svc/h:1",
    service: "svc",
    addr: "h:1",
    attrs: {},
    revision,
    registeredAt: 0,
  });
  const event = (revision: number, kind = "up") => ({
    method: "discover.event",
    params: {
      subscription: "s",
      result: kind === "current"
        ? { kind, revision }
        : { kind, revision, instance: inst(revision) },
    },
  });
  /** Answers the subscribe of connection `n`; returns its params. */
  const subscribe = async (
    n: number,
    epoch: string,
    events: unknown[],
    mode = "snapshot",
  ) => {
    const socket = await FakeSocket.nth(n);
    const request = await socket.take("discover.subscribe");
    socket.frame({
      id: request.id,
      result: { subscription: "s", revision: 10, epoch, mode },
    });
    for (const e of events) socket.frame(e);
    return request.params;
  };

  const opening = client.services("svc");
  assert.deepEqual(
    await subscribe(0, "E1", [event(5), event(5, "current")]),
    { service: "svc", batch: true, chunks: true },
  );
  const set = await opening;
  assert.equal(set.revision, 5);

  // Cut: the client resumes from revision 4 of epoch E1. The agent answers
  // with a snapshot of a new epoch, E2, cut off before its `current`.
  FakeSocket.opened[0].close();
  assert.deepEqual(await subscribe(1, "E2", [event(10)]), {
    service: "svc",
    since: 4,
    epoch: "E1",
    batch: true,
    chunks: true,
  });
  assert.equal(set.revision, 5, "a snapshot counts once complete");
  FakeSocket.opened[1].close();
  // Revision 5 still belongs to E1: resuming it with E2 would replay the
  // wrong changes.
  assert.deepEqual(
    await subscribe(2, "E2", [event(10), event(10, "current")]),
    { service: "svc", since: 4, epoch: "E1", batch: true, chunks: true },
  );
  await until(() => set.revision === 10 && set.connected, "the snapshot");
  FakeSocket.opened[2].close();
  assert.deepEqual(await subscribe(3, "E2", [], "replay"), {
    service: "svc",
    since: 9,
    batch: true,
    chunks: true,
    epoch: "E2",
  });
  await client.close();
});

Deno.test("a set the agent refuses to resume: retried while the reason can pass, closed and reported once it cannot", async () => {
  FakeSocket.opened = [];
  const client = await connect("ws://agent.test:1111", {
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    reconnect: { initialDelay: 1, maxDelay: 5 },
    pingInterval: 60_000,
  });
  const opening = client.services("svc");
  const first = await FakeSocket.nth(0);
  const request = await first.take("discover.subscribe");
  first.frame({
    id: request.id,
    result: { subscription: "s", revision: 1, epoch: "E", mode: "snapshot" },
  });
  first.frame({
    method: "discover.event",
    params: { subscription: "s", result: { kind: "current", revision: 1 } },
  });
  const set = await opening;
  const lines: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    first.close();
    const second = await FakeSocket.nth(1);
    const refuse = async (code: number, message: string) => {
      const { id } = await second.take("discover.subscribe");
      second.frame({ id, error: { code, message } });
    };
    await refuse(ErrorCode.BackendUnavailable, "the backend is unreachable");
    await until(() => lines.length === 1, "the first failure is reported");
    assert.match(
      lines[0],
      /^discover: resuming the set of 'svc' after a reconnection failed: the backend is unreachable \(-32000\); retrying with backoff/,
    );
    assert.equal(set.closed, false);
    // The retry is refused for good: the set ends.
    await refuse(ErrorCode.LimitExceeded, "limit reached: maxSubscriptions");
    await until(() => set.closed, "the set is closed");
    assert.equal(lines.length, 2);
    assert.match(
      lines[1],
      /limit reached: maxSubscriptions \(-32002\); given up: the set is closed/,
    );
  } finally {
    console.error = consoleError;
    await client.close();
  }
});

Deno.test("a set never resumes with an empty epoch, and a refused resume point falls back to a snapshot", async () => {
  FakeSocket.opened = [];
  const client = await connect("ws://agent.test:1111", {
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    reconnect: { initialDelay: 1, maxDelay: 5 },
    pingInterval: 60_000,
  });
  const answer = async (
    socket: FakeSocket,
    epoch: string,
    revision: number,
  ) => {
    const request = await socket.take("discover.subscribe");
    socket.frame({
      id: request.id,
      result: { subscription: "s", revision, epoch, mode: "snapshot" },
    });
    socket.frame({
      method: "discover.event",
      params: { subscription: "s", result: { kind: "current", revision } },
    });
    return request.params;
  };
  const opening = client.services("svc");
  // An agent that has not reached its backend yet: no epoch.
  await answer(await FakeSocket.nth(0), "", 3);
  const set = await opening;
  FakeSocket.opened[0].close();
  assert.deepEqual(await answer(await FakeSocket.nth(1), "E", 4), {
    service: "svc",
    batch: true,
    chunks: true,
  });
  await until(() => set.revision === 4, "the snapshot");
  FakeSocket.opened[1].close();
  // An agent that refuses the resume point gets a snapshot request at once.
  const third = await FakeSocket.nth(2);
  const refused = await third.take("discover.subscribe");
  assert.deepEqual(refused.params, {
    service: "svc",
    since: 3,
    epoch: "E",
    batch: true,
    chunks: true,
  });
  third.frame({
    id: refused.id,
    error: { code: ErrorCode.InvalidParams, message: "'since' is too old" },
  });
  assert.deepEqual(await answer(third, "E", 5), {
    service: "svc",
    batch: true,
    chunks: true,
  });
  await until(() => set.revision === 5 && set.connected, "the snapshot");
  assert.equal(set.closed, false);
  await client.close();
});

/** Answers subscribe `id` with -32602 naming `field`, as an agent that does not know it. */
function refuseField(socket: FakeSocket, id: unknown, field: string) {
  socket.frame({
    id,
    error: {
      code: ErrorCode.InvalidParams,
      message: `'${field}' is not a known field`,
      data: { field },
    },
  });
}

/** Answers subscribe `id` with an empty snapshot: the result, then `current`. */
function snapshotOf(
  socket: FakeSocket,
  id: unknown,
  { subscription, revision }: { subscription: string; revision: number },
) {
  socket.frame({
    id,
    result: { subscription, revision, epoch: "E", mode: "snapshot" },
  });
  socket.frame({
    method: "discover.event",
    params: { subscription, result: { kind: "current", revision } },
  });
}

Deno.test("sets ask for batch frames and chunks; an agent that refuses a param gets subscribes without it until the next connection", async () => {
  const client = await fakeClient();
  try {
    const socket = await FakeSocket.nth(0);
    const opening = client.services("svc");
    const first = await socket.take("discover.subscribe");
    assert.deepEqual(first.params, {
      service: "svc",
      batch: true,
      chunks: true,
    });
    refuseField(socket, first.id, "batch");
    // An agent that knows neither refuses one at a time.
    const next = await socket.take("discover.subscribe");
    assert.deepEqual(next.params, { service: "svc", chunks: true });
    refuseField(socket, next.id, "chunks");
    const second = await socket.take("discover.subscribe");
    assert.deepEqual(second.params, { service: "svc" });
    socket.frame({
      id: second.id,
      result: { subscription: "s", revision: 2, epoch: "E", mode: "snapshot" },
    });
    // A batch frame: a JSON array of notifications.
    socket.dispatchEvent(
      new MessageEvent("message", {
        data: JSON.stringify([{
          jsonrpc: "2.0",
          method: "discover.event",
          params: {
            subscription: "s",
            result: { kind: "current", revision: 2 },
          },
        }]),
      }),
    );
    const set = await opening;
    assert.equal(set.revision, 2, "a batch frame is read like single frames");
    const other = client.services("other");
    const third = await socket.take("discover.subscribe");
    assert.deepEqual(third.params, { service: "other" });
    snapshotOf(socket, third.id, { subscription: "t", revision: 2 });
    await other;
    // The next connection may reach an upgraded agent: both are asked again.
    socket.close();
    const upgraded = await FakeSocket.nth(1);
    const resumed = [
      await upgraded.take("discover.subscribe"),
      await upgraded.take("discover.subscribe"),
    ].map((request) => request.params as { service: string })
      .sort((a, b) => a.service.localeCompare(b.service));
    assert.deepEqual(resumed, [
      { service: "other", since: 1, epoch: "E", batch: true, chunks: true },
      { service: "svc", since: 1, epoch: "E", batch: true, chunks: true },
    ]);
  } finally {
    await client.close();
  }
});

Deno.test("a set takes its snapshot from snapshot events, and an agent that refuses chunks keeps batch frames", async () => {
  const client = await fakeClient();
  try {
    const socket = await FakeSocket.nth(0);
    const instance = (addr: string, revision: number) => ({
      id: `svc/${addr}`,
      service: "svc",
      addr,
      attrs: {},
      revision,
      registeredAt: 0,
      created: revision,
      health: "passing",
    });
    const opening = client.services("svc");
    const first = await socket.take("discover.subscribe");
    assert.equal((first.params as { chunks?: boolean }).chunks, true);
    socket.frame({
      id: first.id,
      result: { subscription: "s", revision: 3, epoch: "E", mode: "snapshot" },
    });
    // Three events, an empty one among them: the set holds them all.
    const pieces = [[instance("h:1", 1), instance("h:2", 2)], [], [
      instance("h:3", 3),
    ]];
    for (const instances of pieces) {
      socket.frame({
        method: "discover.event",
        params: {
          subscription: "s",
          result: { kind: "snapshot", revision: 3, instances },
        },
      });
    }
    socket.frame({
      method: "discover.event",
      params: { subscription: "s", result: { kind: "current", revision: 3 } },
    });
    const set = await opening;
    assert.deepEqual(set.online().map((i) => i.addr), ["h:1", "h:2", "h:3"]);
    assert.equal(set.revision, 3);
    assert.equal(set.leader()?.addr, "h:1");
    // An agent that knows batch frames but not chunks.
    const other = client.services("other");
    const refused = await socket.take("discover.subscribe");
    refuseField(socket, refused.id, "chunks");
    const again = await socket.take("discover.subscribe");
    assert.deepEqual(again.params, { service: "other", batch: true });
    snapshotOf(socket, again.id, { subscription: "t", revision: 3 });
    await other;
  } finally {
    await client.close();
  }
});

Deno.test("several subscribes refused for batch at once are each sent again without it", async () => {
  const client = await fakeClient();
  try {
    const socket = await FakeSocket.nth(0);
    const opening = [client.services("a"), client.services("b")];
    const first = [
      await socket.take("discover.subscribe"),
      await socket.take("discover.subscribe"),
    ];
    for (const request of first) {
      assert.equal((request.params as { batch?: boolean }).batch, true);
      refuseField(socket, request.id, "batch");
    }
    for (let i = 0; i < 2; i++) {
      const again = await socket.take("discover.subscribe");
      assert.equal((again.params as { batch?: boolean }).batch, undefined);
      const id = `s${i}`;
      snapshotOf(socket, again.id, { subscription: id, revision: 1 });
    }
    const sets = await Promise.all(opening);
    assert.deepEqual(sets.map((s) => s.service).sort(), ["a", "b"]);
  } finally {
    await client.close();
  }
});

/**
 * A client on {@linkcode FakeSocket}s that reconnects at once and keeps
 * its restore errors to itself.
 */
async function fakeClient() {
  FakeSocket.opened = [];
  const client = await connect("ws://agent.test:1111", {
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    reconnect: { initialDelay: 1, maxDelay: 5 },
    pingInterval: 60_000,
  });
  client.addEventListener("error", (event) => event.preventDefault());
  return client;
}

/** Registers `svc` at `addr`, with `socket` answering as the agent. */
async function registerThrough(
  client: Client,
  socket: FakeSocket,
  addr: string,
) {
  const registering = client.register("svc", addr);
  const request = await socket.take("discover.register");
  socket.frame({
    id: request.id,
    result: {
      id: `svc/${addr}`,
      service: "svc",
      addr,
      attrs: {},
      revision: 2,
      registeredAt: 0,
    },
  });
  await registering;
}

/** The agent's refusal while another client holds the instance. */
const NOT_OWNER = {
  code: ErrorCode.NotOwner,
  message: "held by another client",
};

/**
 * Drops the client's first connection, then refuses the first `n`
 * registrations it restores on the next one (another client holds the
 * instances for now), and returns that next connection.
 */
async function reconnectRefusing(
  first: FakeSocket,
  n: number,
): Promise<FakeSocket> {
  first.close();
  const second = await FakeSocket.nth(1);
  for (let i = 0; i < n; i++) {
    const request = await second.take("discover.register");
    second.frame({ id: request.id, error: NOT_OWNER });
  }
  return second;
}

Deno.test("close() stops restoring: a registration being retried is never sent again after close's unregister", async () => {
  const client = await fakeClient();
  const first = await FakeSocket.nth(0);
  await registerThrough(client, first, "h:1");

  // The connection drops; on the next one, the restore and its first
  // retry are refused (another client holds the instance for now), so
  // the client waits out its backoff (at most 500 ms) to try again.
  const second = await reconnectRefusing(first, 2);
  assert.equal(client.registrations()[0].state, "restoring");
  // The loop goes on to wait out its backoff (a retry it made meanwhile
  // is refused too), and close() cuts that wait short.
  await new Promise((resolve) => setTimeout(resolve, 10));
  for (const again of second.requests.splice(0)) {
    second.frame({ id: again.id, error: NOT_OWNER });
  }

  const closing = client.close();
  const unregister = await second.take("discover.unregister");
  assert.deepEqual(unregister.params, { service: "svc", addr: "h:1" });
  // The agent takes its time: 1 s, at least the longest backoff the loop
  // could be waiting out. A retry sent now would register the instance
  // again after the unregister, for good.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.deepEqual(second.requests.map((r) => r.method), []);
  second.frame({ id: unregister.id, result: false });
  await closing;
  assert.equal(client.closed, true);
});

Deno.test("close(): a register() that fails meanwhile sends nothing more, and a register() or campaign() after it began is refused", async () => {
  const client = await fakeClient();
  const addrOf = (request: { params: unknown }) =>
    (request.params as { addr: string }).addr;
  const first = await FakeSocket.nth(0);
  await registerThrough(client, first, "h:1");
  await registerThrough(client, first, "h:2");
  // Reconnected, both restores are refused; the retry loop's next attempt
  // at h:2 stays unanswered, so the loop is still running.
  const second = await reconnectRefusing(first, 2);
  let retrying: { id: number } | undefined;
  for (let i = 0; i < 2; i++) {
    const request = await second.take("discover.register");
    if (addrOf(request) === "h:1") {
      second.frame({ id: request.id, error: NOT_OWNER });
    } else retrying = request;
  }
  // The program registers h:1 anew, and closes while that call is out.
  const registering = client.register("svc", "h:1", { attrs: { v: "2" } })
    .catch((error) => error);
  const request = await second.take("discover.register");
  const closing = client.close();
  const unregisters = [
    await second.take("discover.unregister"),
    await second.take("discover.unregister"),
  ];
  assert.deepEqual(unregisters.map(addrOf).sort(), ["h:1", "h:2"]);
  await assert.rejects(client.register("svc", "h:3"), (error: unknown) => {
    assert.ok(isCode(ErrorCode.ConnectionClosed)(error));
    assert.equal(
      (error as RpcError).message,
      "'discover.register' was not sent: the client is closing; connect again",
    );
    return true;
  });
  await assert.rejects(
    client.campaign("svc", "h:4"),
    isCode(ErrorCode.ConnectionClosed),
  );
  // Its call fails, then the loop's attempt ends: neither sends again,
  // within twice the longest backoff the loop could wait out.
  second.frame({ id: request.id, error: NOT_OWNER });
  assert.ok(isCode(ErrorCode.NotOwner)(await registering));
  second.frame({ id: retrying!.id, error: NOT_OWNER });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.deepEqual(second.requests.map((r) => r.method), []);
  for (const { id } of unregisters) second.frame({ id, result: true });
  await closing;
  assert.equal(client.closed, true);
});
