// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { ErrorCode, RpcError } from "./errors.ts";
import {
  type CallContext,
  JsonRpcPeer,
  type JsonRpcPeerOptions,
  type RequestHandler,
} from "./jsonrpc.ts";

type Json = Record<string, unknown>;

/** A peer whose sent frames are recorded instead of delivered. */
function recorder(options: Omit<JsonRpcPeerOptions, "send"> = {}) {
  const sent: string[] = [];
  const peer = new JsonRpcPeer({ ...options, send: (t) => void sent.push(t) });
  return {
    peer,
    sent,
    /** The sent frames, parsed. */
    frames: () => sent.map((t) => JSON.parse(t)),
    /** Delivers `message` (JSON-encoded unless a string) and waits for the answer. */
    receive: (message: unknown) =>
      peer.receive(
        typeof message === "string" ? message : JSON.stringify(message),
      ),
  };
}

/**
 * Two peers wired back to back: `client` sends requests, `server` answers
 * them with `onRequest`. Every frame is recorded in `wire` in send order.
 */
function pair(
  onRequest?: RequestHandler,
  serverOptions: Omit<JsonRpcPeerOptions, "send" | "onRequest"> = {},
) {
  const wire: { from: "client" | "server"; message: unknown }[] = [];
  const delivered: Promise<void>[] = [];
  // deno-lint-ignore prefer-const
  let server: JsonRpcPeer;
  const client = new JsonRpcPeer({
    send: (text) => {
      wire.push({ from: "client", message: JSON.parse(text) });
      delivered.push(server.receive(text));
    },
  });
  server = new JsonRpcPeer({
    ...serverOptions,
    onRequest,
    send: (text) => {
      wire.push({ from: "server", message: JSON.parse(text) });
      delivered.push(client.receive(text));
    },
  });
  return { client, server, wire, settled: () => Promise.all(delivered) };
}

// --- requests and responses ------------------------------------------------

Deno.test("JsonRpcPeer resolves a request with the other peer's result", async () => {
  const { client, wire } = pair((method, params) => {
    assert.equal(method, "sum");
    const { a, b } = params as { a: number; b: number };
    return a + b;
  });
  assert.equal(await client.request("sum", { a: 1, b: 2 }), 3);
  assert.deepEqual(wire, [
    {
      from: "client",
      message: { jsonrpc: "2.0", id: 1, method: "sum", params: { a: 1, b: 2 } },
    },
    { from: "server", message: { jsonrpc: "2.0", id: 1, result: 3 } },
  ]);
  assert.equal(client.pendingCount, 0);
});

Deno.test("JsonRpcPeer omits absent params and answers undefined with null", async () => {
  const seen: unknown[] = [];
  const { client, wire } = pair((_method, params) => void seen.push(params));
  assert.equal(await client.request("ping"), null);
  assert.deepEqual(seen, [undefined]);
  assert.deepEqual(wire[0].message, { jsonrpc: "2.0", id: 1, method: "ping" });
  assert.deepEqual(wire[1].message, { jsonrpc: "2.0", id: 1, result: null });
});

Deno.test("JsonRpcPeer awaits async handlers and matches concurrent responses by id", async () => {
  const { client } = pair(async (_method, params) => {
    const { delay, value } = params as { delay: number; value: string };
    await new Promise((r) => setTimeout(r, delay));
    return value;
  });
  const slow = client.request("echo", { delay: 30, value: "slow" });
  const fast = client.request("echo", { delay: 0, value: "fast" });
  assert.equal(client.pendingCount, 2);
  assert.deepEqual(await Promise.all([slow, fast]), ["slow", "fast"]);
  assert.equal(client.pendingCount, 0);
});

Deno.test("JsonRpcPeer uses a fresh id for every request", async () => {
  const { client, wire } = pair(() => "ok");
  await client.request("a");
  await client.request("b");
  await client.request("c");
  const ids = wire.filter((w) => w.from === "client").map((w) =>
    (w.message as Json).id
  );
  assert.equal(new Set(ids).size, 3);
});

Deno.test("JsonRpcPeer echoes string ids", async () => {
  const r = recorder({ onRequest: () => "ok" });
  await r.receive({ jsonrpc: "2.0", id: "abc", method: "m" });
  assert.deepEqual(r.frames(), [{ jsonrpc: "2.0", id: "abc", result: "ok" }]);
});

// --- errors ----------------------------------------------------------------

Deno.test("JsonRpcPeer turns an error response into an RpcError with code, message and data", async () => {
  const { client, wire } = pair(() => {
    throw new RpcError(ErrorCode.NotOwner, "owned by another session", {
      owner: "x",
    });
  });
  const error = await client.request("discover.register", {}).then(
    () => assert.fail("resolved"),
    (e) => e,
  );
  assert.ok(error instanceof RpcError);
  assert.equal(error.code, -32001);
  assert.equal(error.message, "owned by another session");
  assert.deepEqual(error.data, { owner: "x" });
  assert.deepEqual(wire[1].message, {
    jsonrpc: "2.0",
    id: 1,
    error: {
      code: -32001,
      message: "owned by another session",
      data: { owner: "x" },
    },
  });
});

Deno.test("JsonRpcPeer rejects with -32603 on a malformed error object", async () => {
  const r = recorder();
  const pending = r.peer.request("m", undefined, { timeout: 1000 });
  await r.receive({ jsonrpc: "2.0", id: 1, error: { code: "x" } });
  const error = await pending.then(() => assert.fail("resolved"), (e) => e);
  assert.ok(error instanceof RpcError);
  assert.equal(error.code, ErrorCode.InternalError);
  assert.match(error.message, /'m' failed with a malformed error/);
});

Deno.test("JsonRpcPeer answers -32601 to every request when it has no handler", async () => {
  const r = recorder();
  await r.receive({ jsonrpc: "2.0", id: 7, method: "nope" });
  const [response] = r.frames();
  assert.equal(response.id, 7);
  assert.equal(response.error.code, ErrorCode.MethodNotFound);
  assert.equal(response.error.code, -32601);
  assert.match(response.error.message, /'nope'/);

  const { client } = pair(undefined);
  await assert.rejects(
    client.request("nope"),
    (e: unknown) => e instanceof RpcError && e.code === -32601,
  );
});

Deno.test("JsonRpcPeer sends a handler's RpcError as is and does not report it", async () => {
  const internal: unknown[] = [];
  const r = recorder({
    onRequest: () => {
      throw new RpcError(-32602, "'port' must be an integer", {
        field: "port",
      });
    },
    onInternalError: (e) => void internal.push(e),
  });
  await r.receive({ jsonrpc: "2.0", id: 1, method: "m" });
  assert.deepEqual(r.frames(), [{
    jsonrpc: "2.0",
    id: 1,
    error: {
      code: -32602,
      message: "'port' must be an integer",
      data: { field: "port" },
    },
  }]);
  assert.deepEqual(internal, []);
});

Deno.test("JsonRpcPeer answers a plain Error with -32603 and reports it", async () => {
  for (const mode of ["sync", "async"] as const) {
    const boom = new Error("boom");
    const internal: [unknown, string][] = [];
    const r = recorder({
      onRequest: mode === "sync"
        ? () => {
          throw boom;
        }
        : () => Promise.reject(boom),
      onInternalError: (e, method) => void internal.push([e, method]),
    });
    await r.receive({ jsonrpc: "2.0", id: 3, method: "discover.status" });
    const [response] = r.frames();
    assert.equal(response.id, 3, mode);
    assert.equal(response.error.code, ErrorCode.InternalError, mode);
    assert.equal(response.error.code, -32603, mode);
    assert.match(response.error.message, /'discover\.status'/, mode);
    assert.match(response.error.message, /boom/, mode);
    assert.deepEqual(internal, [[boom, "discover.status"]], mode);
  }
});

Deno.test("JsonRpcPeer answers -32603 when the result cannot be serialised, and receive() resolves", async () => {
  // receive() is documented never to throw: the agent calls it without
  // awaiting, so a rejection would be an unhandled one.
  const r = recorder({ onRequest: () => ({ big: 1n }) });
  await r.receive({ jsonrpc: "2.0", id: 1, method: "m" });
  const [response] = r.frames();
  assert.equal(response.id, 1);
  assert.equal(response.error.code, ErrorCode.InternalError);
});

// --- notifications ---------------------------------------------------------

Deno.test("JsonRpcPeer never answers a notification, even on error", async () => {
  const handlers: RequestHandler[] = [
    () => "ok",
    () => {
      throw new RpcError(-32602, "bad params");
    },
    () => {
      throw new Error("boom");
    },
    () => Promise.reject(new Error("boom")),
  ];
  for (const [i, onRequest] of handlers.entries()) {
    const calls: CallContext[] = [];
    const r = recorder({
      onRequest: (method, params, context) => {
        calls.push(context);
        return onRequest(method, params, context);
      },
      onInternalError: () => {},
    });
    await r.receive({ jsonrpc: "2.0", method: "m", params: {} });
    assert.deepEqual(r.sent, [], `handler ${i}`);
    assert.equal(calls.length, 1, `handler ${i}`);
    assert.equal(calls[0].notification, true, `handler ${i}`);
  }
  const r = recorder(); // no handler: still no -32601
  await r.receive({ jsonrpc: "2.0", method: "nope" });
  assert.deepEqual(r.sent, []);
});

Deno.test("JsonRpcPeer tells a handler whether the call is a notification", async () => {
  const seen: boolean[] = [];
  const r = recorder({
    onRequest: (_m, _p, c) => void seen.push(c.notification),
  });
  await r.receive({ jsonrpc: "2.0", id: 1, method: "m" });
  await r.receive({ jsonrpc: "2.0", id: null, method: "m" });
  await r.receive({ jsonrpc: "2.0", method: "m" });
  assert.deepEqual(seen, [false, false, true]);
  // A request with a null id is still a request and is answered.
  assert.deepEqual(r.frames(), [
    { jsonrpc: "2.0", id: 1, result: null },
    { jsonrpc: "2.0", id: null, result: null },
  ]);
});

Deno.test("JsonRpcPeer reports a plain Error thrown by a notification handler", async () => {
  // onInternalError is documented as "called with errors thrown by a handler
  // that are not RpcErrors"; a notification's failure has no other outlet.
  const boom = new Error("boom");
  const internal: [unknown, string][] = [];
  const r = recorder({
    onRequest: () => {
      throw boom;
    },
    onInternalError: (e, method) => void internal.push([e, method]),
  });
  await r.receive({ jsonrpc: "2.0", method: "note" });
  assert.deepEqual(r.sent, []);
  assert.deepEqual(internal, [[boom, "note"]]);
});

Deno.test("JsonRpcPeer.notify() sends a message without id", () => {
  const r = recorder();
  r.peer.notify("discover.event", { subscription: "1" });
  r.peer.notify("$/ping");
  assert.deepEqual(r.frames(), [
    { jsonrpc: "2.0", method: "discover.event", params: { subscription: "1" } },
    { jsonrpc: "2.0", method: "$/ping" },
  ]);
  assert.equal(r.peer.pendingCount, 0);
});

// --- batches ---------------------------------------------------------------

Deno.test("JsonRpcPeer answers a mixed batch in one frame without notification entries", async () => {
  const calls: string[] = [];
  const r = recorder({
    onRequest: (method) => {
      calls.push(method);
      if (method === "fail") throw new RpcError(-32003, "unknown subscription");
      return method.toUpperCase();
    },
  });
  await r.receive([
    { jsonrpc: "2.0", id: 1, method: "a" },
    { jsonrpc: "2.0", method: "note" },
    1,
    { jsonrpc: "2.0", id: 2, method: "fail" },
    { jsonrpc: "2.0", id: 3, method: "b" },
  ]);
  assert.deepEqual(calls, ["a", "note", "fail", "b"]);
  assert.equal(r.sent.length, 1);
  const [batch] = r.frames();
  assert.ok(Array.isArray(batch));
  assert.equal(batch.length, 4);
  const byId = (id: unknown) => batch.filter((m: Json) => m.id === id);
  assert.deepEqual(byId(1), [{ jsonrpc: "2.0", id: 1, result: "A" }]);
  assert.deepEqual(byId(3), [{ jsonrpc: "2.0", id: 3, result: "B" }]);
  assert.deepEqual(byId(2), [{
    jsonrpc: "2.0",
    id: 2,
    error: { code: -32003, message: "unknown subscription" },
  }]);
  const [invalid] = byId(null);
  assert.equal(invalid.error.code, ErrorCode.InvalidRequest);
});

Deno.test("JsonRpcPeer answers an empty batch with one -32600 object", async () => {
  const r = recorder({ onRequest: () => "ok" });
  await r.receive([]);
  const frames = r.frames();
  assert.equal(frames.length, 1);
  assert.ok(!Array.isArray(frames[0]));
  assert.equal(frames[0].id, null);
  assert.equal(frames[0].error.code, -32600);
});

Deno.test("JsonRpcPeer refuses a batch over maxBatch without running any of it", async () => {
  const calls: string[] = [];
  const r = recorder({
    maxBatch: 2,
    onRequest: (method) => void calls.push(method),
  });
  const message = (id: number) => ({ jsonrpc: "2.0", id, method: `m${id}` });
  await r.receive([message(1), message(2), message(3)]);
  assert.deepEqual(calls, []);
  const frames = r.frames();
  assert.equal(frames.length, 1);
  assert.ok(!Array.isArray(frames[0]));
  assert.equal(frames[0].id, null);
  assert.equal(frames[0].error.code, -32600);
  assert.match(frames[0].error.message, /3/);

  r.sent.length = 0;
  await r.receive([message(1), message(2)]);
  assert.deepEqual(calls, ["m1", "m2"]);
  assert.equal(r.frames()[0].length, 2);
});

Deno.test("JsonRpcPeer defaults maxBatch to 1000", async () => {
  const r = recorder({ onRequest: () => "ok" });
  const notes = (n: number) =>
    Array.from({ length: n }, () => ({ jsonrpc: "2.0", method: "n" }));
  await r.receive(notes(1000));
  assert.deepEqual(r.sent, []);
  await r.receive(notes(1001));
  assert.equal(r.frames()[0].error.code, -32600);
});

Deno.test("JsonRpcPeer sends nothing for a batch of notifications", async () => {
  const calls: string[] = [];
  const r = recorder({
    onRequest: (method) => {
      calls.push(method);
      if (method === "b") throw new Error("boom");
    },
    onInternalError: () => {},
  });
  await r.receive([
    { jsonrpc: "2.0", method: "a" },
    { jsonrpc: "2.0", method: "b" },
  ]);
  assert.deepEqual(calls, ["a", "b"]);
  assert.deepEqual(r.sent, []);
});

// --- malformed input -------------------------------------------------------

Deno.test("JsonRpcPeer answers unparsable frames with -32700 and id null", async () => {
  const r = recorder({ onRequest: () => assert.fail("called") });
  await r.receive('{"jsonrpc":"2.0","id":1,"method":');
  await r.receive("");
  const frames = r.frames();
  assert.equal(frames.length, 2);
  for (const frame of frames) {
    assert.equal(frame.jsonrpc, "2.0");
    assert.equal(frame.id, null);
    assert.equal(frame.error.code, ErrorCode.ParseError);
    assert.equal(frame.error.code, -32700);
  }
});

Deno.test("JsonRpcPeer answers invalid request shapes with -32600", async () => {
  const cases: [unknown, unknown][] = [
    [1, null],
    ["x", null],
    [null, null],
    [true, null],
    [{ id: 1, method: "m" }, 1],
    [{ jsonrpc: "1.0", id: 1, method: "m" }, 1],
    [{ jsonrpc: "1.0", id: {}, method: "m" }, null],
    [{ jsonrpc: "2.0", id: {}, method: "m" }, null],
    [{ jsonrpc: "2.0", id: [1], method: "m" }, null],
    [{ jsonrpc: "2.0", id: true, method: "m" }, null],
    [{ jsonrpc: "2.0", id: 1 }, 1],
    [{ jsonrpc: "2.0", id: "a", method: 5 }, "a"],
    [{ jsonrpc: "2.0", method: 5 }, null], // malformed, so not a notification
    [{ jsonrpc: "2.0", id: 1, method: "m", params: null }, 1],
    [{ jsonrpc: "2.0", id: 1, method: "m", params: "x" }, 1],
    [{ jsonrpc: "2.0", id: 1, method: "m", params: 5 }, 1],
    [{ jsonrpc: "2.0", id: 1, method: "m", params: false }, 1],
  ];
  for (const [message, id] of cases) {
    const r = recorder({ onRequest: () => assert.fail("called") });
    const label = JSON.stringify(message);
    await r.peer.receive(label);
    const frames = r.frames();
    assert.equal(frames.length, 1, label);
    assert.equal(frames[0].id, id, label);
    assert.equal(frames[0].error.code, ErrorCode.InvalidRequest, label);
    assert.equal(frames[0].error.code, -32600, label);
  }
});

Deno.test("JsonRpcPeer refuses a frame that repeats a key, whatever it holds", async () => {
  const rule = "JSON objects must not repeat a key";
  const cases: [string, string][] = [
    [
      `{"jsonrpc":"2.0","id":1,"method":"discover.register",` +
      `"params":{"service":"a","service":"b","port":80}}`,
      `invalid request: duplicate key 'service' in params; ${rule}`,
    ],
    [
      `{"jsonrpc":"2.0","id":1,"method":"m","id":2}`,
      `invalid request: duplicate key 'id' at the top level; ${rule}`,
    ],
    [
      `{"jsonrpc":"2.0","method":"m","params":{"a":{"x":1,"\u0078":2}}}`,
      `invalid request: duplicate key 'x' in params.a; ${rule}`,
    ],
    [
      `[{"jsonrpc":"2.0","id":1,"method":"m"},` +
      `{"jsonrpc":"2.0","id":2,"method":"m","params":[{"k":1,"k":1}]}]`,
      `invalid request: duplicate key 'k' in [1].params[0]; ${rule}`,
    ],
    [
      `{"jsonrpc":"2.0","id":1,"method":"m","params":` +
      `{"${"k".repeat(1000)}":1,"${"k".repeat(1000)}":2}}`,
      `invalid request: duplicate key '${
        "k".repeat(61)
      }...' in params; ${rule}`,
    ],
  ];
  for (const [text, message] of cases) {
    const r = recorder({ onRequest: () => assert.fail("called") });
    await r.receive(text);
    assert.deepEqual(r.frames(), [{
      jsonrpc: "2.0",
      id: null,
      error: { code: ErrorCode.InvalidRequest, message },
    }], text);
  }
  // The same frames with unique keys are carried out.
  const r = recorder({ onRequest: (method) => method });
  await r.receive(
    `{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":{"x":1,"\u0079":2}}}`,
  );
  assert.deepEqual(r.frames(), [{ jsonrpc: "2.0", id: 1, result: "m" }]);
});

Deno.test("JsonRpcPeer does not take a response that repeats a key", async () => {
  const r = recorder({ timeout: 60_000 });
  const pending = r.peer.request("m");
  await r.receive(`{"jsonrpc":"2.0","id":1,"result":"first","result":"last"}`);
  assert.equal(r.peer.pendingCount, 1);
  assert.equal(r.frames().length, 2);
  assert.equal(r.frames()[1].id, null);
  assert.equal(r.frames()[1].error.code, ErrorCode.InvalidRequest);
  assert.match(r.frames()[1].error.message, /duplicate key 'result'/);
  await r.receive({ jsonrpc: "2.0", id: 1, result: "only" });
  assert.equal(await pending, "only");
});

Deno.test("JsonRpcPeer passes array params to the handler", async () => {
  const seen: unknown[] = [];
  const r = recorder({ onRequest: (_m, p) => void seen.push(p) });
  await r.receive({ jsonrpc: "2.0", id: 1, method: "m", params: [1, 2] });
  assert.deepEqual(seen, [[1, 2]]);
  assert.deepEqual(r.frames(), [{ jsonrpc: "2.0", id: 1, result: null }]);
});

// --- afterResponse ---------------------------------------------------------

Deno.test("JsonRpcPeer tells onSettled of every handled call once, with its start and its error, before the response", async () => {
  const settled: { method: string; error?: unknown; frames: number }[] = [];
  const failure = new RpcError(ErrorCode.InvalidParams, "bad");
  // deno-lint-ignore prefer-const
  let r: ReturnType<typeof recorder>;
  r = recorder({
    onRequest: (method) => {
      switch (method) {
        case "sync":
          return 1;
        case "throws":
          throw failure;
        case "async":
          return new Promise((resolve) => setTimeout(() => resolve(2), 5));
        default:
          return Promise.reject(failure);
      }
    },
    onSettled(method, started, error) {
      assert.ok(started > 0 && started <= performance.now(), method);
      settled.push({
        method,
        frames: r.sent.length,
        ...(error === undefined ? {} : { error }),
      });
    },
  });
  await r.receive({ jsonrpc: "2.0", id: 1, method: "sync" });
  await r.receive({ jsonrpc: "2.0", id: 2, method: "throws" });
  await r.receive({ jsonrpc: "2.0", id: 3, method: "async" });
  await r.receive({ jsonrpc: "2.0", id: 4, method: "rejects" });
  await r.receive({ jsonrpc: "2.0", method: "sync" }); // a notification
  await r.receive([
    { jsonrpc: "2.0", id: 5, method: "sync" },
    { jsonrpc: "2.0", id: 6, method: "async" },
  ]);
  // A frame that is not a call reaches no handler: nothing to tell.
  await r.receive("{");
  assert.deepEqual(settled, [
    { method: "sync", frames: 0 },
    { method: "throws", frames: 1, error: failure },
    { method: "async", frames: 2 },
    { method: "rejects", frames: 3, error: failure },
    { method: "sync", frames: 4 },
    { method: "sync", frames: 4 },
    { method: "async", frames: 4 },
  ]);
  assert.equal(r.sent.length, 6);
});

Deno.test("JsonRpcPeer runs afterResponse hooks after the response frame is sent", async () => {
  for (const mode of ["sync", "async"] as const) {
    // deno-lint-ignore prefer-const
    let r: ReturnType<typeof recorder>;
    const order: string[] = [];
    r = recorder({
      onRequest: async (_m, _p, context) => {
        context.afterResponse(() => {
          order.push(`hook1 after ${r.sent.length} frames`);
          r.peer.notify("discover.event", { n: 1 });
        });
        context.afterResponse(() => r.peer.notify("discover.event", { n: 2 }));
        if (mode === "async") await new Promise((res) => setTimeout(res, 5));
        return { subscription: "1" };
      },
    });
    await r.receive({ jsonrpc: "2.0", id: 1, method: "discover.subscribe" });
    assert.deepEqual(order, ["hook1 after 1 frames"], mode);
    assert.deepEqual(r.frames(), [
      { jsonrpc: "2.0", id: 1, result: { subscription: "1" } },
      { jsonrpc: "2.0", method: "discover.event", params: { n: 1 } },
      { jsonrpc: "2.0", method: "discover.event", params: { n: 2 } },
    ], mode);
  }
});

Deno.test("JsonRpcPeer runs a batch's afterResponse hooks after the batch frame", async () => {
  // deno-lint-ignore prefer-const
  let r: ReturnType<typeof recorder>;
  r = recorder({
    onRequest: async (method, _p, context) => {
      context.afterResponse(() => r.peer.notify("event", { method }));
      if (method === "slow") await new Promise((res) => setTimeout(res, 5));
      return method;
    },
  });
  await r.receive([
    { jsonrpc: "2.0", id: 1, method: "slow" },
    { jsonrpc: "2.0", id: 2, method: "fast" },
  ]);
  const frames = r.frames();
  assert.equal(frames.length, 3);
  assert.ok(Array.isArray(frames[0]), "the batch response comes first");
  assert.deepEqual(
    frames.slice(1).map((f) => f.params.method).sort(),
    ["fast", "slow"],
  );
});

Deno.test("JsonRpcPeer runs hooks of a notification once its handler has finished", async () => {
  const order: string[] = [];
  const r = recorder({
    onRequest: async (_m, _p, context) => {
      context.afterResponse(() => order.push("hook"));
      await new Promise((res) => setTimeout(res, 5));
      order.push("handler done");
    },
  });
  await r.receive({ jsonrpc: "2.0", method: "note" });
  assert.deepEqual(order, ["handler done", "hook"]);
  assert.deepEqual(r.sent, []);
});

Deno.test("JsonRpcPeer runs hooks after an error response too", async () => {
  // deno-lint-ignore prefer-const
  let r: ReturnType<typeof recorder>;
  const seenFrames: number[] = [];
  r = recorder({
    onRequest: (_m, _p, context) => {
      context.afterResponse(() => seenFrames.push(r.sent.length));
      throw new RpcError(-32002, "limit");
    },
  });
  await r.receive({ jsonrpc: "2.0", id: 1, method: "m" });
  assert.deepEqual(seenFrames, [1]);
});

// --- timeouts, aborts, close -----------------------------------------------

Deno.test("JsonRpcPeer rejects with -32005 on timeout and ignores the late response", async () => {
  const r = recorder({ timeout: 20 });
  const started = Date.now();
  const error = await r.peer.request("discover.status").then(
    () => assert.fail("resolved"),
    (e) => e,
  );
  assert.ok(Date.now() - started >= 15);
  assert.ok(error instanceof RpcError);
  assert.equal(error.code, ErrorCode.Timeout);
  assert.equal(error.code, -32005);
  assert.match(error.message, /'discover\.status'/);
  assert.match(error.message, /20 ms/);
  assert.equal(r.peer.pendingCount, 0);
  // The late response is dropped silently.
  r.sent.length = 0;
  await r.receive({ jsonrpc: "2.0", id: 1, result: "late" });
  assert.deepEqual(r.sent, []);
  assert.equal(r.peer.pendingCount, 0);
});

Deno.test("JsonRpcPeer lets a request override the default timeout", async () => {
  const r = recorder({ timeout: 60_000 });
  await assert.rejects(
    r.peer.request("m", undefined, { timeout: 10 }),
    (e: unknown) => e instanceof RpcError && e.code === -32005,
  );
  // A response within the timeout wins.
  const ok = r.peer.request("m", undefined, { timeout: 1000 });
  await r.receive({ jsonrpc: "2.0", id: 2, result: "ok" });
  assert.equal(await ok, "ok");
});

Deno.test("JsonRpcPeer times out each request on its own deadline, whatever the order", async () => {
  const r = recorder({ timeout: 60_000 });
  const started = Date.now();
  const outcome = (p: Promise<unknown>) =>
    p.then(
      () => ({ ms: Date.now() - started, timedOut: false }),
      (e) => ({
        ms: Date.now() - started,
        timedOut: e instanceof RpcError && e.code === ErrorCode.Timeout,
      }),
    );
  const long = outcome(r.peer.request("long", undefined, { timeout: 2000 }));
  const short = outcome(r.peer.request("short", undefined, { timeout: 30 }));
  const middle = outcome(r.peer.request("middle", undefined, { timeout: 90 }));
  const s = await short;
  assert.equal(s.timedOut, true);
  assert.ok(s.ms >= 25 && s.ms < 1000, `short timed out after ${s.ms} ms`);
  const m = await middle;
  assert.equal(m.timedOut, true);
  assert.ok(m.ms >= 85 && m.ms < 1000, `middle timed out after ${m.ms} ms`);
  assert.equal(r.peer.pendingCount, 1, "the long one still waits");
  await r.receive({ jsonrpc: "2.0", id: 1, result: "in time" });
  assert.equal((await long).timedOut, false);
  assert.equal(r.peer.pendingCount, 0);
});

Deno.test("JsonRpcPeer rejects with the signal's reason on abort", async () => {
  const r = recorder({ timeout: 60_000 });
  const controller = new AbortController();
  const pending = r.peer.request("m", undefined, { signal: controller.signal });
  assert.equal(r.peer.pendingCount, 1);
  const reason = new Error("gave up");
  controller.abort(reason);
  await assert.rejects(pending, (e: unknown) => e === reason);
  assert.equal(r.peer.pendingCount, 0);
  // The late response is ignored.
  await r.receive({ jsonrpc: "2.0", id: 1, result: "late" });
  assert.equal(r.sent.length, 1);
});

Deno.test("JsonRpcPeer does not send a request whose signal is already aborted", async () => {
  const r = recorder();
  const reason = new Error("already");
  await assert.rejects(
    r.peer.request("m", undefined, { signal: AbortSignal.abort(reason) }),
    (e: unknown) => e === reason,
  );
  assert.deepEqual(r.sent, []);
  assert.equal(r.peer.pendingCount, 0);
});

Deno.test("JsonRpcPeer.close() rejects pending requests and refuses new ones", async () => {
  const r = recorder({ timeout: 60_000 });
  const controller = new AbortController();
  const a = r.peer.request("a");
  const b = r.peer.request("b", undefined, { signal: controller.signal });
  assert.equal(r.peer.pendingCount, 2);
  const reason = new RpcError(ErrorCode.ConnectionClosed, "closed");
  r.peer.close(reason);
  assert.equal(r.peer.pendingCount, 0);
  await assert.rejects(a, (e: unknown) => e === reason);
  await assert.rejects(b, (e: unknown) => e === reason);
  // Aborting after close has no further effect.
  controller.abort(new Error("late abort"));

  const sentBefore = r.sent.length;
  await assert.rejects(r.peer.request("c"), (e: unknown) => e === reason);
  r.peer.notify("n");
  assert.equal(r.sent.length, sentBefore);
  assert.equal(r.peer.pendingCount, 0);

  // A second close keeps the first reason.
  r.peer.close(new Error("other"));
  await assert.rejects(r.peer.request("d"), (e: unknown) => e === reason);
});

Deno.test("JsonRpcPeer ignores responses with unknown ids", async () => {
  const r = recorder({ timeout: 60_000 });
  const pending = r.peer.request("m");
  for (
    const response of [
      { jsonrpc: "2.0", id: 999, result: "x" },
      { jsonrpc: "2.0", id: "1", result: "x" },
      { jsonrpc: "2.0", id: null, error: { code: -32700, message: "parse" } },
      { jsonrpc: "2.0", id: 2, error: { code: 1, message: "x" } },
    ]
  ) {
    await r.receive(response);
  }
  assert.equal(r.sent.length, 1, "nothing is answered to a response");
  assert.equal(r.peer.pendingCount, 1);
  await r.receive({ jsonrpc: "2.0", id: 1, result: "mine" });
  assert.equal(await pending, "mine");
  // A duplicate response for a settled id is ignored too.
  await r.receive({ jsonrpc: "2.0", id: 1, result: "again" });
  assert.equal(r.sent.length, 1);
  assert.equal(r.peer.pendingCount, 0);
});

Deno.test("JsonRpcPeer.pendingCount counts requests waiting for a response", async () => {
  const r = recorder({ timeout: 60_000 });
  assert.equal(r.peer.pendingCount, 0);
  const one = r.peer.request("a");
  const two = r.peer.request("b");
  assert.equal(r.peer.pendingCount, 2);
  await r.receive({ jsonrpc: "2.0", id: 2, result: 2 });
  assert.equal(r.peer.pendingCount, 1);
  await r.receive({
    jsonrpc: "2.0",
    id: 1,
    error: { code: -32000, message: "down" },
  });
  assert.equal(r.peer.pendingCount, 0);
  assert.equal(await two, 2);
  await assert.rejects(
    one,
    (e: unknown) => e instanceof RpcError && e.code === -32000,
  );
});

Deno.test("JsonRpcPeer accepts responses inside a batch", async () => {
  const r = recorder({ timeout: 60_000 });
  const a = r.peer.request("a");
  const b = r.peer.request("b");
  await r.receive([
    { jsonrpc: "2.0", id: 2, result: "B" },
    { jsonrpc: "2.0", id: 1, result: "A" },
  ]);
  assert.deepEqual(await Promise.all([a, b]), ["A", "B"]);
  assert.equal(r.sent.length, 2, "no frame is sent back for responses");
});

Deno.test("JsonRpcPeer with rejectDuplicateKeys off takes the last of repeated keys, as JSON.parse does", async () => {
  const seen: unknown[] = [];
  const r = recorder({
    rejectDuplicateKeys: false,
    onRequest: (_method, params) => void seen.push(params),
  });
  await r.peer.receive(
    '{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"a":2}}',
  );
  assert.deepEqual(seen, [{ a: 2 }]);
  assert.equal(r.frames()[0].error, undefined);
});
