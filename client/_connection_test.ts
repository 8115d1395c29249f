// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { agentUrls, CLOSE_WAIT_MS } from "./_connection.ts";
import { connect, type WebSocketConstructor } from "./client.ts";
import { sessionCloses } from "../tests/_session_closes.ts";

const quiet = {
  advertiseHost: "127.0.0.1",
  logger: { debug() {}, info() {}, warn() {}, error() {} },
};

/** A loopback port where nothing listens. */
function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("agentUrls() keeps each URL's path and adds the client id", () => {
  assert.deepEqual(agentUrls("ws://h:1111/x?a=1", "me"), [
    { shown: "ws://h:1111/x?a=1", dialled: "ws://h:1111/x?a=1&client=me" },
  ]);
  assert.deepEqual(
    agentUrls([new URL("wss://a:1"), "ws://b:2"], "me").map((u) => u.shown),
    ["wss://a:1/", "ws://b:2/"],
  );
});

Deno.test("agentUrls() throws TypeError for bad URLs and empty lists", () => {
  for (
    const [urls, rule] of [
      ["not a url", /'url' must be a ws: or wss: URL such as/],
      [
        "http://127.0.0.1:1111",
        /'url' must be a ws: or wss: URL: current value is 'http:/,
      ],
      ["ws://h:1111/#x", /must not have a fragment/],
      ["ws://h:99999", /'url' must be a ws: or wss: URL such as/],
      [[], /a non-empty array of them: current value is an empty array/],
      [[5], /'url' must be a string or a URL: current value is 5/],
    ] as const
  ) {
    assert.throws(
      () => agentUrls(urls as unknown as string[], "me"),
      (e: unknown) => e instanceof TypeError && rule.test(e.message),
      String(urls),
    );
  }
});

Deno.test("connect() rejects bad URLs with TypeError before dialling", async () => {
  for (const url of ["127.0.0.1:1111", "http://127.0.0.1:1111", "ws://h/#x"]) {
    await assert.rejects(connect(url), TypeError, url);
  }
});

Deno.test("a failed connection names the URL, path included, and what answered there", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  const url = `ws://127.0.0.1:${agent.port}/foo`;
  await assert.rejects(connect(url), (e: unknown) => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, ErrorCode.ConnectionClosed);
    assert.equal(
      e.message,
      `could not connect to ${url}: the server there answered HTTP 404 (not found: /foo) instead of a WebSocket upgrade; a discover agent listens at the root path, e.g. ws://host:1111/`,
    );
    return true;
  });
  const nobody = `ws://127.0.0.1:${deadPort()}/`;
  await assert.rejects(
    connect(nobody),
    new RpcError(
      ErrorCode.ConnectionClosed,
      `could not connect to ${nobody}: nothing answered there; is the agent running, and is this its address?`,
    ),
  );
  // A web server that answers GET but is no agent.
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("hello"),
  );
  await assert.rejects(
    connect(`ws://127.0.0.1:${server.addr.port}`),
    /the server there answers HTTP but refused the WebSocket upgrade/,
  );
});

Deno.test("several URLs: the first that answers is used, and a failure names each", async () => {
  await using agent = await startAgent({ port: 0, ...quiet });
  const dead = `ws://127.0.0.1:${deadPort()}/`;
  await using client = await connect([dead, agent.url]);
  assert.equal(client.url, new URL(agent.url).href);
  const other = `ws://127.0.0.1:${deadPort()}/`;
  await assert.rejects(connect([dead, other]), (e: unknown) => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, ErrorCode.ConnectionClosed);
    assert.match(
      e.message,
      new RegExp(
        `could not connect to ${dead}.*; could not connect to ${other}`,
      ),
    );
    return true;
  });
});

Deno.test("waitForAgent: connect() rejects with Timeout once the wait has passed, and honours its signal", async () => {
  const url = `ws://127.0.0.1:${deadPort()}/`;
  const started = Date.now();
  await assert.rejects(connect(url, { waitForAgent: 600 }), (e: unknown) => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, ErrorCode.Timeout);
    assert.equal(
      e.message,
      `no agent answered within 600 ms (waitForAgent): could not connect to ${url}: nothing answered there; is the agent running, and is this its address?`,
    );
    return true;
  });
  const elapsed = Date.now() - started;
  // It kept trying for the whole wait, and stopped soon after (generous
  // bound for a loaded machine).
  assert.ok(elapsed >= 600 && elapsed < 5000, `gave up after ${elapsed} ms`);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error("stop waiting")), 100);
  await assert.rejects(
    connect(url, { waitForAgent: 60_000, signal: controller.signal }),
    /stop waiting/,
  );
});

Deno.test("close() resolves once the agent has seen a clean close: a process may exit right after", async () => {
  const { logger, closes } = sessionCloses();
  await using agent = await startAgent({ port: 0, ...quiet, logger });
  for (let i = 0; i < 3; i++) {
    const client = await connect(agent.url);
    await client.register("svc", 8000 + i);
    await client.close();
    assert.deepEqual(closes.splice(0), [true], `close ${i}`);
  }
});

/** A socket that opens, and never answers a close frame. */
class Unanswered extends EventTarget {
  readyState = 0;
  constructor(readonly url: string) {
    super();
    setTimeout(() => {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    }, 0);
  }
  send() {}
  close() {
    this.readyState = 2; // CLOSING, for good
  }
}

Deno.test("close() gives up on an agent that does not answer the close after CLOSE_WAIT_MS", async () => {
  const client = await connect("ws://agent.test:1111", {
    WebSocket: Unanswered as unknown as WebSocketConstructor,
    pingInterval: 60_000,
  });
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    client.close(),
    new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("close() did not end within the bound")),
        CLOSE_WAIT_MS + 4000,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  const elapsed = performance.now() - started;
  assert.equal(client.closed, true);
  // It waited for the answer, and no longer than the documented bound
  // (generous upper margin for a loaded machine; timers fire no earlier
  // than asked, up to a millisecond of clock rounding).
  assert.ok(
    elapsed >= CLOSE_WAIT_MS - 1 && elapsed < CLOSE_WAIT_MS + 4000,
    `close() took ${elapsed} ms`,
  );
});

Deno.test("close() while reconnecting ends the reconnection's wait: a program exits once it is done", async () => {
  const agent = await startAgent({ port: 0, ...quiet });
  const client = new URL("./client.ts", import.meta.url).href;
  // Three clients whose reconnection waits up to 30 s (full jitter).
  const script = `
    import { connect } from ${JSON.stringify(client)};
    const options = { reconnect: { initialDelay: 30000, maxDelay: 30000 } };
    const clients = await Promise.all(
      [0, 1, 2].map(() => connect(${JSON.stringify(agent.url)}, options)),
    );
    const lost = clients.map((c) =>
      new Promise((resolve) =>
        c.addEventListener("disconnect", resolve, { once: true })
      )
    );
    console.log("connected");
    await Promise.all(lost);
    await Promise.all(clients.map((c) => c.close()));
    console.log("closed");
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let printed = "";
  const until = async (line: string) => {
    while (!printed.includes(`${line}\n`)) {
      const { value, done } = await lines.read();
      assert.ok(!done, `the program ended before printing '${line}'`);
      printed += value;
    }
  };
  try {
    await until("connected");
    await agent.shutdown();
    await until("closed");
    const closed = performance.now();
    const status = await child.status;
    const lingered = performance.now() - closed;
    assert.equal(status.code, 0);
    // A program ends within milliseconds of its last work; 2 s is a
    // generous bound for a loaded machine. A reconnection left waiting
    // would hold it for a random part of 30 s: under 2 s for all three
    // clients once in 3,375 runs.
    assert.ok(lingered < 2000, `the program exited ${lingered} ms later`);
  } finally {
    await lines.cancel().catch(() => {});
    try {
      child.kill();
    } catch { /* exited */ }
    await child.status;
    await agent.shutdown();
  }
});
