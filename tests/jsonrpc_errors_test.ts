// Copyright the discover authors. BSD-3-Clause license.

/**
 * Every way a peer can get JSON-RPC wrong, sent to a real agent process:
 * each bad input gets exactly the error the protocol names (code and id),
 * the connection stays usable, and an unrelated session that registered an
 * instance and holds a subscription loses nothing.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { etcdAgentArgs, startEtcd } from "../tools/etcd.ts";
import { openRaw, type RawSocket } from "./_raw_socket.ts";

type Json = Record<string, unknown>;
type Id = string | number | null;

const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;
const METHOD_NOT_FOUND = -32601;
const INVALID_PARAMS = -32602;
const NOT_OWNER = -32001;
const LIMIT_EXCEEDED = -32002;
const UNKNOWN_SUBSCRIPTION = -32003;

/** How long to wait for frames that must not come. */
const QUIET_MS = 200;

const WITNESS_SERVICE = "witness";
const WITNESS_ADDR = "127.0.0.1:7001";

// ---------------------------------------------------------------------------
// Expected replies

/** An error response expected for one request. */
interface ErrorReply {
  id: Id;
  code: number;
  /** Expected `error.data.field` (and named in the message). */
  field?: string;
}

/** A result expected for one request. */
interface ResultReply {
  id: Id;
  /** Checks the result; throws when it is wrong. */
  result: (result: unknown) => void;
}

type Entry = ErrorReply | ResultReply;

/** What a frame must get back. */
type Reply =
  | { error: ErrorReply }
  | { result: ResultReply }
  | { batch: Entry[] }
  | "none";

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function show(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length > 600 ? text.slice(0, 600) + "..." : text;
}

function assertError(frame: unknown, expected: ErrorReply): void {
  assert.ok(isObject(frame), `expected an error object, got ${show(frame)}`);
  assert.equal(frame.jsonrpc, "2.0", `bad jsonrpc in ${show(frame)}`);
  assert.ok(Object.hasOwn(frame, "id"), `no id in ${show(frame)}`);
  assert.equal(frame.id, expected.id, `wrong id in ${show(frame)}`);
  assert.ok(
    !Object.hasOwn(frame, "result"),
    `result and error in ${show(frame)}`,
  );
  const error = frame.error;
  assert.ok(isObject(error), `no error object in ${show(frame)}`);
  assert.equal(error.code, expected.code, `wrong code in ${show(frame)}`);
  assert.equal(typeof error.message, "string");
  assert.ok((error.message as string).length > 0, "empty error message");
  assert.ok(
    (error.message as string).length < 2000,
    `the error message is ${(error.message as string).length} characters long`,
  );
  if (expected.field !== undefined) {
    assert.ok(isObject(error.data), `no error.data in ${show(frame)}`);
    assert.equal(
      error.data.field,
      expected.field,
      `wrong field in ${show(frame)}`,
    );
    assert.ok(
      (error.message as string).includes(`'${expected.field}'`),
      `the message does not name '${expected.field}': ${error.message}`,
    );
  }
}

function assertResult(frame: unknown, expected: ResultReply): void {
  assert.ok(isObject(frame), `expected a response object, got ${show(frame)}`);
  assert.equal(frame.jsonrpc, "2.0", `bad jsonrpc in ${show(frame)}`);
  assert.equal(frame.id, expected.id, `wrong id in ${show(frame)}`);
  assert.ok(!Object.hasOwn(frame, "error"), `unexpected error: ${show(frame)}`);
  assert.ok(Object.hasOwn(frame, "result"), `no result in ${show(frame)}`);
  expected.result(frame.result);
}

function isErrorReply(entry: Entry): entry is ErrorReply {
  return "code" in entry;
}

/** Each expected entry matches exactly one response, and nothing is left. */
function assertBatch(frame: unknown, entries: Entry[]): void {
  assert.ok(Array.isArray(frame), `expected an array, got ${show(frame)}`);
  const left: unknown[] = [...frame];
  for (const entry of entries) {
    const index = left.findIndex((item) =>
      isObject(item) && item.id === entry.id &&
      (isErrorReply(entry)
        ? isObject(item.error) && item.error.code === entry.code
        : Object.hasOwn(item, "result"))
    );
    assert.notEqual(
      index,
      -1,
      `no response for ${show({ ...entry, result: undefined })} in ${
        show(frame)
      }`,
    );
    const [item] = left.splice(index, 1);
    if (isErrorReply(entry)) assertError(item, entry);
    else assertResult(item, entry);
  }
  assert.deepEqual(left, [], "responses nobody asked for");
}

async function expectReply(raw: RawSocket, reply: Reply): Promise<void> {
  if (reply === "none") return; // checked by assertUsable's drain
  const frame = await raw.next();
  if ("error" in reply) assertError(frame, reply.error);
  else if ("result" in reply) assertResult(frame, reply.result);
  else assertBatch(frame, reply.batch);
}

const isPong = (result: unknown) => assert.equal(result, "pong");

// ---------------------------------------------------------------------------
// Sessions

/**
 * The connection that sent the bad input still answers `$/ping`, and nothing
 * else arrives: no response was duplicated and notifications got none.
 */
async function assertUsable(raw: RawSocket): Promise<void> {
  const pong = await raw.call("$/ping");
  assert.ok(!Object.hasOwn(pong, "error"), `ping failed: ${show(pong)}`);
  assert.equal(pong.result, "pong");
  assert.deepEqual(await raw.drain(QUIET_MS), [], "frames after the answer");
}

/**
 * An unrelated session: it registered an instance and subscribed to its
 * service before any bad input. `check` proves it lost nothing.
 */
class Witness implements AsyncDisposable {
  #round = 0;
  instance: Json = {};
  subscription = "";

  private constructor(readonly raw: RawSocket) {}

  static async open(url: string): Promise<Witness> {
    const witness = new Witness(await openRaw(url));
    try {
      await witness.#start();
    } catch (error) {
      await witness.raw.close();
      throw error;
    }
    return witness;
  }

  async #start(): Promise<void> {
    const { raw } = this;
    const registered = await raw.call("discover.register", {
      service: WITNESS_SERVICE,
      addr: WITNESS_ADDR,
      attrs: { round: "0" },
    });
    assert.ok(isObject(registered.result), show(registered));
    this.instance = registered.result;
    assert.equal(this.instance.id, `${WITNESS_SERVICE}/${WITNESS_ADDR}`);
    const subscribed = await raw.call("discover.subscribe", {
      service: WITNESS_SERVICE,
    });
    assert.ok(isObject(subscribed.result), show(subscribed));
    const { subscription, revision, mode } = subscribed.result;
    assert.equal(typeof subscription, "string");
    assert.equal(mode, "snapshot");
    this.subscription = subscription as string;
    assert.deepEqual(
      await raw.next(),
      this.#event({
        kind: "up",
        revision,
        instance: this.instance,
      }),
    );
    assert.deepEqual(
      await raw.next(),
      this.#event({ kind: "leader", revision, instance: this.instance }),
    );
    assert.deepEqual(
      await raw.next(),
      this.#event({ kind: "current", revision }),
    );
  }

  #event(result: Json): Json {
    return {
      jsonrpc: "2.0",
      method: "discover.event",
      params: { subscription: this.subscription, result },
    };
  }

  /**
   * The instance is still listed, and the subscription still gets the next
   * event (an attributes change) and nothing else.
   */
  async check(): Promise<void> {
    const { raw } = this;
    const listed = await raw.call("discover.services", {
      service: WITNESS_SERVICE,
    });
    assert.ok(isObject(listed.result), show(listed));
    assert.deepEqual(listed.result.instances, [this.instance]);
    const round = String(++this.#round);
    const registered = await raw.call("discover.register", {
      service: WITNESS_SERVICE,
      addr: WITNESS_ADDR,
      attrs: { round },
    });
    assert.ok(isObject(registered.result), show(registered));
    const instance = registered.result;
    assert.deepEqual(instance.attrs, { round });
    assert.equal(instance.registeredAt, this.instance.registeredAt);
    assert.ok(
      (instance.revision as number) > (this.instance.revision as number),
    );
    this.instance = instance;
    assert.deepEqual(
      await raw.next(),
      this.#event({ kind: "update", revision: instance.revision, instance }),
    );
    assert.deepEqual(await raw.drain(50), [], "the witness got extra frames");
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.raw.close();
  }
}

// ---------------------------------------------------------------------------
// Cases

interface Case {
  name: string;
  frame: string | Uint8Array;
  reply: Reply;
}

const req = (id: unknown, method: unknown, params?: unknown): Json => {
  const message: Json = { jsonrpc: "2.0" };
  if (id !== undefined) message.id = id;
  message.method = method;
  if (params !== undefined) message.params = params;
  return message;
};
const frame = (value: unknown) => JSON.stringify(value);
const err = (id: Id, code: number, field?: string): Reply => ({
  error: { id, code, field },
});

function parseErrorCases(): Case[] {
  return [
    ["a truncated object", `{"jsonrpc":"2.0","id":1,"method":"$/ping"`],
    ["plain text", "hello"],
    ["an empty frame", ""],
    ["trailing garbage", `{"jsonrpc":"2.0","id":1,"method":"$/ping"}}`],
    ["single quotes", `{'jsonrpc':'2.0','id':1,'method':'$/ping'}`],
    ["a trailing comma", `{"jsonrpc":"2.0","id":1,"method":"$/ping",}`],
    ["a truncated batch", `[{"jsonrpc":"2.0","id":1,"method":"$/ping"},`],
  ].map(([name, text]) => ({
    name: `-32700: ${name}`,
    frame: text,
    reply: err(null, PARSE_ERROR),
  }));
}

function invalidRequestCases(): Case[] {
  const cases: [string, string, Id][] = [
    ["missing jsonrpc", frame({ id: 2, method: "$/ping" }), 2],
    [
      "jsonrpc 1.0",
      frame({ jsonrpc: "1.0", id: "three", method: "$/ping" }),
      "three",
    ],
    ["jsonrpc as a number", `{"jsonrpc":2.0,"id":4,"method":"$/ping"}`, 4],
    ["method a number", frame(req(5, 42)), 5],
    ["method missing", frame({ jsonrpc: "2.0", id: 6 }), 6],
    ["method null, id 0", frame(req(0, null)), 0],
    ["method an object", frame(req("obj", { name: "$/ping" })), "obj"],
    ["params a number", frame(req(7, "$/ping", 5)), 7],
    ["params a string", frame(req(8, "discover.status", "x")), 8],
    ["params null", frame(req(9, "$/ping", null)), 9],
    ["params true", frame(req(10, "$/ping", true)), 10],
    ["id an object", frame(req({}, "$/ping")), null],
    ["id an array", frame(req([1], "$/ping")), null],
    ["id a boolean", frame(req(true, "$/ping")), null],
    ["a number", "42", null],
    ["a string", `"$/ping"`, null],
    ["null", "null", null],
    ["true", "true", null],
    [
      "method a number, no id (the spec's example)",
      `{"jsonrpc":"2.0","method":1,"params":"bar"}`,
      null,
    ],
    ["jsonrpc missing, no id", frame({ method: "$/ping" }), null],
  ];
  return cases.map(([name, text, id]) => ({
    name: `-32600: ${name}`,
    frame: text,
    reply: err(id, INVALID_REQUEST),
  }));
}

function methodNotFoundCases(): Case[] {
  const cases: [string, string, Id][] = [
    ["an unknown method", "discover.lookup", 11],
    ["an empty method name", "", "empty"],
    ["a reserved rpc. name", "rpc.describe", 12],
    ["the wrong case", "Discover.Register", 13],
    ["discover.event (agent to client only)", "discover.event", 14],
  ];
  return cases.map(([name, method, id]) => ({
    name: `-32601: ${name}`,
    frame: frame(req(id, method, { service: "x" })),
    reply: err(id, METHOD_NOT_FOUND),
  }));
}

function invalidParamsCases(): Case[] {
  const many: Record<string, string> = {};
  for (let i = 0; i < 65; i++) many[`k${i}`] = "v";
  const cases: [string, string, unknown, string][] = [
    [
      "service with a slash",
      "discover.register",
      { service: "a/b", port: 1 },
      "service",
    ],
    ["service missing", "discover.register", { port: 1 }, "service"],
    ["service a number", "discover.services", { service: 5 }, "service"],
    [
      "service too long",
      "discover.services",
      { service: "s".repeat(64) },
      "service",
    ],
    ["port 0", "discover.register", { service: "x", port: 0 }, "port"],
    ["port 70000", "discover.register", { service: "x", port: 70000 }, "port"],
    ['port "80"', "discover.register", { service: "x", port: "80" }, "port"],
    ["port 1.5", "discover.register", { service: "x", port: 1.5 }, "port"],
    ["port -1", "discover.unregister", { service: "x", port: -1 }, "port"],
    ["neither port nor addr", "discover.register", { service: "x" }, "port"],
    ["addr without port", "discover.register", {
      service: "x",
      addr: "127.0.0.1",
    }, "addr"],
    [
      "addr with port 0",
      "discover.register",
      { service: "x", addr: "h:0" },
      "addr",
    ],
    ["addr unbracketed IPv6", "discover.unregister", {
      service: "x",
      addr: "::1:80",
    }, "addr"],
    ["addr a number", "discover.register", { service: "x", addr: 80 }, "addr"],
    ["both port and addr", "discover.register", {
      service: "x",
      port: 1,
      addr: "h:1",
    }, "addr"],
    ["attrs value a number", "discover.register", {
      service: "x",
      port: 1,
      attrs: { a: 1 },
    }, "attrs.a"],
    ["attrs value null", "discover.register", {
      service: "x",
      port: 1,
      attrs: { a: null },
    }, "attrs.a"],
    ["attrs a string", "discover.register", {
      service: "x",
      port: 1,
      attrs: "a=b",
    }, "attrs"],
    ["attrs an array", "discover.register", {
      service: "x",
      port: 1,
      attrs: ["a"],
    }, "attrs"],
    [
      "65 attrs",
      "discover.register",
      { service: "x", port: 1, attrs: many },
      "attrs",
    ],
    [
      "attrs value of 1025 characters",
      "discover.register",
      { service: "x", port: 1, attrs: { k: "v".repeat(1025) } },
      "attrs.k",
    ],
    ["attrs key starting with -", "discover.register", {
      service: "x",
      port: 1,
      attrs: { "-k": "v" },
    }, "attrs.-k"],
    ["an unknown field", "discover.register", {
      service: "x",
      port: 1,
      bogus: true,
    }, "bogus"],
    ["unregister with attrs", "discover.unregister", {
      service: "x",
      port: 1,
      attrs: {},
    }, "attrs"],
    ["params an array", "discover.register", ["x", 1], "params"],
    ["params an empty array", "discover.services", [], "params"],
    ["params missing (register)", "discover.register", undefined, "params"],
    ["params missing (subscribe)", "discover.subscribe", undefined, "params"],
    [
      "filter a number",
      "discover.services",
      { service: "x", filter: 5 },
      "filter",
    ],
    [
      "filter an array",
      "discover.subscribe",
      { service: "x", filter: [] },
      "filter",
    ],
    ["filter with an unknown field", "discover.services", {
      service: "x",
      filter: { zone: "b" },
    }, "filter.zone"],
    ["filter.attrs a string", "discover.services", {
      service: "x",
      filter: { attrs: "b" },
    }, "filter.attrs"],
    ["filter.attrs value a number", "discover.subscribe", {
      service: "x",
      filter: { attrs: { z: 1 } },
    }, "filter.attrs.z"],
    [
      "since negative",
      "discover.subscribe",
      { service: "x", since: -1 },
      "since",
    ],
    ["since 1.5", "discover.subscribe", { service: "x", since: 1.5 }, "since"],
    ['since "5"', "discover.subscribe", { service: "x", since: "5" }, "since"],
    [
      "subscription a number",
      "discover.unsubscribe",
      { subscription: 5 },
      "subscription",
    ],
    [
      "subscription empty",
      "discover.unsubscribe",
      { subscription: "" },
      "subscription",
    ],
    ["subscription missing", "discover.unsubscribe", {}, "subscription"],
    ["subscription of 65 characters", "discover.unsubscribe", {
      subscription: "1".repeat(65),
    }, "subscription"],
  ];
  return cases.map(([name, method, params, field], i) => {
    const id = `p${i}`;
    return {
      name: `-32602: ${name}`,
      frame: frame(req(id, method, params)),
      reply: err(id, INVALID_PARAMS, field),
    };
  });
}

/**
 * Methods without params take none, `{}` or `[]` (`validateNoParams`), and
 * reject anything else with -32602 on `params`.
 */
function noParamsCases(): Case[] {
  const cases: Case[] = [];
  for (const method of ["$/ping", "discover.status", "rpc.discover"]) {
    for (const params of [undefined, {}, []]) {
      const id = `${method} ${JSON.stringify(params)}`;
      cases.push({
        name: `${method} with params ${JSON.stringify(params)} is answered`,
        frame: frame(req(id, method, params)),
        reply: {
          result: {
            id,
            result: (result) =>
              assert.ok(
                method === "$/ping" ? result === "pong" : isObject(result),
                show(result),
              ),
          },
        },
      });
    }
    for (const params of [{ bogus: 1 }, [1]]) {
      const id = `${method} ${JSON.stringify(params)}`;
      cases.push({
        name: `-32602: ${method} with params ${JSON.stringify(params)}`,
        frame: frame(req(id, method, params)),
        reply: err(id, INVALID_PARAMS, "params"),
      });
    }
  }
  return cases;
}

function notificationCases(): Case[] {
  const cases: [string, Json][] = [
    ["an unknown method", req(undefined, "discover.lookup")],
    ["discover.event", req(undefined, "discover.event", { subscription: "1" })],
    [
      "bad params",
      req(undefined, "discover.register", { service: "a/b", port: 0 }),
    ],
    ["params an array", req(undefined, "discover.services", ["x"])],
    ["missing params", req(undefined, "discover.subscribe")],
    [
      "an unknown subscription",
      req(undefined, "discover.unsubscribe", { subscription: "999" }),
    ],
    [
      "registering the witness's instance (not owner)",
      req(undefined, "discover.register", {
        service: WITNESS_SERVICE,
        addr: WITNESS_ADDR,
      }),
    ],
    ["$/ping", req(undefined, "$/ping")],
  ];
  return cases.map(([name, message]) => ({
    name: `notification: ${name} gets no response`,
    frame: frame(message),
    reply: "none",
  }));
}

function batchCases(witness: Witness): Case[] {
  const pings = (n: number) =>
    Array.from({ length: n }, (_, i) => req(i, "$/ping"));
  return [
    {
      name: "batch: requests, invalid entries and notifications mixed",
      frame: frame([
        req("b1", "$/ping"),
        req("b2", "discover.lookup"),
        1,
        {},
        req(undefined, "$/ping"),
        req(undefined, "discover.lookup"),
        req("b3", "discover.register", { service: "x", port: 0 }),
        req("b4", "discover.services", { service: WITNESS_SERVICE }),
        req("b5", "$/ping", 7),
        { jsonrpc: "1.0", id: "b6", method: "$/ping" },
        req({ bad: 1 }, "$/ping"),
        [req("b7", "$/ping")],
        req(undefined, "discover.register", { service: "x" }),
      ]),
      reply: {
        batch: [
          { id: "b1", result: isPong },
          { id: "b2", code: METHOD_NOT_FOUND },
          { id: null, code: INVALID_REQUEST },
          { id: null, code: INVALID_REQUEST },
          { id: "b3", code: INVALID_PARAMS, field: "port" },
          {
            id: "b4",
            result: (result) => {
              assert.ok(isObject(result), show(result));
              assert.deepEqual(result.instances, [witness.instance]);
            },
          },
          { id: "b5", code: INVALID_REQUEST },
          { id: "b6", code: INVALID_REQUEST },
          { id: null, code: INVALID_REQUEST },
          { id: null, code: INVALID_REQUEST },
        ],
      },
    },
    {
      name: "batch: only notifications gets nothing",
      frame: frame([
        req(undefined, "$/ping"),
        req(undefined, "discover.lookup"),
        req(undefined, "discover.register", { service: "a/b", port: 1 }),
      ]),
      reply: "none",
    },
    {
      name: "batch: empty gets one error object",
      frame: "[]",
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "batch: empty, with whitespace",
      frame: " [ ] ",
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "batch: [1] gets an array of one error",
      frame: "[1]",
      reply: { batch: [{ id: null, code: INVALID_REQUEST }] },
    },
    {
      name: "batch: [1,2,3] gets an array of three errors",
      frame: "[1,2,3]",
      reply: {
        batch: [1, 2, 3].map(() => ({ id: null, code: INVALID_REQUEST })),
      },
    },
    {
      name: "batch: one request",
      frame: frame([req("one", "$/ping")]),
      reply: { batch: [{ id: "one", result: isPong }] },
    },
    {
      name: "batch: 1001 pings get one error object",
      frame: frame(pings(1001)),
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "batch: 1001 notifications get one error object",
      frame: frame(
        Array.from({ length: 1001 }, () => req(undefined, "$/ping")),
      ),
      reply: err(null, INVALID_REQUEST),
    },
  ];
}

const encoder = new TextEncoder();

function frameCases(maxFrameBytes: number): Case[] {
  const ping = frame(req("max", "$/ping"));
  return [
    {
      name: "binary frame holding a valid request",
      frame: encoder.encode(frame(req("bin", "$/ping"))),
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "empty binary frame",
      frame: new Uint8Array(0),
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "a text frame of maxFrameBytes + 1 bytes",
      frame: ping + " ".repeat(maxFrameBytes + 1 - ping.length),
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "a text frame of exactly maxFrameBytes bytes is accepted",
      frame: ping + " ".repeat(maxFrameBytes - ping.length),
      reply: { result: { id: "max", result: isPong } },
    },
  ];
}

async function runCase(
  raw: RawSocket,
  witness: Witness,
  { frame, reply }: Case,
): Promise<void> {
  raw.send(frame);
  await expectReply(raw, reply);
  await assertUsable(raw);
  await witness.check();
}

// ---------------------------------------------------------------------------
// Tests

Deno.test("jsonrpc errors: protocol errors get exact answers and harm nothing", async (t) => {
  await using agent = await spawnAgent();
  await using witness = await Witness.open(agent.url);
  await using raw = await openRaw(agent.url);
  const cases = [
    ...parseErrorCases(),
    ...invalidRequestCases(),
    ...methodNotFoundCases(),
    ...invalidParamsCases(),
    ...noParamsCases(),
    ...notificationCases(),
    ...batchCases(witness),
    ...frameCases(1024 * 1024),
  ];
  for (const c of cases) {
    await t.step(c.name, () => runCase(raw, witness, c));
  }
  await t.step(
    "-32600: a key given twice refuses the frame and registers nothing",
    async () => {
      raw.send(
        `{"jsonrpc":"2.0","id":1,"method":"discover.register",` +
          `"params":{"service":"a","service":"b","port":80}}`,
      );
      const reply = await raw.next();
      assertError(reply, { id: null, code: INVALID_REQUEST });
      assert.equal(
        ((reply as Json).error as Json).message,
        "invalid request: duplicate key 'service' in params; " +
          "JSON objects must not repeat a key",
      );
      for (const service of ["a", "b"]) {
        const listed = await raw.call("discover.services", { service });
        assert.ok(isObject(listed.result), show(listed));
        assert.deepEqual(listed.result.instances, [], `service ${service}`);
      }
      await assertUsable(raw);
      await witness.check();
    },
  );
  await t.step("a response-shaped message gets no answer", async () => {
    raw.sendJson({ jsonrpc: "2.0", id: 9, result: "x" });
    raw.sendJson({ jsonrpc: "2.0", id: 10, error: { code: 1, message: "m" } });
    await assertUsable(raw);
    await witness.check();
  });
  await t.step("many bad frames back to back each get one answer", async () => {
    const bad = [
      ...parseErrorCases(),
      ...invalidRequestCases(),
      ...methodNotFoundCases(),
      ...invalidParamsCases(),
    ];
    for (const c of bad) raw.send(c.frame);
    const answers: unknown[] = [];
    for (let i = 0; i < bad.length; i++) answers.push(await raw.next());
    // Requests run concurrently: match by id, null ids in arrival order.
    const expected = bad.map((c) => (c.reply as { error: ErrorReply }).error);
    assertBatch(answers, expected);
    await assertUsable(raw);
    await witness.check();
  });
});

Deno.test("jsonrpc errors: ownership, limits, subscriptions and frame size", async (t) => {
  await using agent = await spawnAgent([
    "--max-registrations",
    "2",
    "--max-subscriptions",
    "2",
    "--max-frame-bytes",
    "32768",
  ]);
  await using witness = await Witness.open(agent.url);
  await using raw = await openRaw(agent.url);

  const expectCall = async (
    method: string,
    params: unknown,
    check: ErrorReply | ((result: unknown) => void),
  ) => {
    const response = await raw.call(method, params);
    if (typeof check === "function") {
      assertResult(response, { id: response.id as Id, result: check });
    } else {
      assertError(response, { ...check, id: response.id as Id });
    }
    return response.result;
  };

  await t.step("-32001: register another live session's instance", async () => {
    for (const target of [{ addr: WITNESS_ADDR }, { port: 7001 }]) {
      await expectCall(
        "discover.register",
        { service: WITNESS_SERVICE, ...target, attrs: { x: "y" } },
        { id: null, code: NOT_OWNER },
      );
    }
    await assertUsable(raw);
    await witness.check();
  });

  await t.step(
    "-32001: unregister another live session's instance",
    async () => {
      for (const target of [{ addr: WITNESS_ADDR }, { port: 7001 }]) {
        await expectCall(
          "discover.unregister",
          { service: WITNESS_SERVICE, ...target },
          { id: null, code: NOT_OWNER },
        );
      }
      await assertUsable(raw);
      await witness.check();
    },
  );

  await t.step("-32002: maxRegistrations", async () => {
    const register = (port: number, zone = "a") =>
      raw.call("discover.register", { service: "lim", port, attrs: { zone } });
    for (const port of [9001, 9002]) {
      const response = await register(port);
      assert.ok(isObject(response.result), show(response));
    }
    const refused = await register(9003);
    assertError(refused, { id: refused.id as Id, code: LIMIT_EXCEEDED });
    assert.match(
      (refused.error as Json).message as string,
      /maxRegistrations/,
    );
    // Re-registering an instance it holds does not count again.
    const again = await register(9001, "b");
    assert.deepEqual((again.result as Json).attrs, { zone: "b" });
    // The refused one was not registered.
    await expectCall("discover.services", { service: "lim" }, (result) => {
      assert.ok(isObject(result));
      const addrs = (result.instances as Json[]).map((i) => i.addr).sort();
      assert.deepEqual(addrs, ["127.0.0.1:9001", "127.0.0.1:9002"]);
    });
    await expectCall(
      "discover.unregister",
      { service: "lim", port: 9002 },
      (result) => assert.equal(result, true),
    );
    const now = await register(9003);
    assert.ok(isObject(now.result), show(now));
    await assertUsable(raw);
    await witness.check();
  });

  await t.step("-32002: maxSubscriptions", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const result = await expectCall(
        "discover.subscribe",
        { service: "nothing" },
        (result) => assert.ok(isObject(result)),
      ) as Json;
      ids.push(result.subscription as string);
    }
    const refused = await raw.call("discover.subscribe", { service: "x" });
    assertError(refused, { id: refused.id as Id, code: LIMIT_EXCEEDED });
    assert.match(
      (refused.error as Json).message as string,
      /maxSubscriptions/,
    );
    await expectCall(
      "discover.unsubscribe",
      { subscription: ids[0] },
      (result) => assert.equal(result, true),
    );
    const last = await expectCall(
      "discover.subscribe",
      { service: "nothing" },
      (result) => assert.ok(isObject(result)),
    ) as Json;
    // Each accepted subscription (of a service with no instance) sent its
    // leader (none) and `current`, and nothing else.
    const frames = await raw.drain(QUIET_MS);
    assert.equal(frames.length, 6, show(frames));
    for (const f of frames) {
      assert.ok(isObject(f) && f.method === "discover.event", show(f));
      const result = (f.params as Json).result as Json;
      if (result.kind === "leader") assert.equal(result.instance, null);
      else assert.equal(result.kind, "current");
    }
    for (const subscription of [ids[1], last.subscription]) {
      await expectCall(
        "discover.unsubscribe",
        { subscription },
        (result) => assert.equal(result, true),
      );
    }
    await assertUsable(raw);
    await witness.check();
  });

  await t.step("-32003: unknown subscriptions", async () => {
    await expectCall(
      "discover.unsubscribe",
      { subscription: "999" },
      { id: null, code: UNKNOWN_SUBSCRIPTION },
    );
    // The witness's subscription is not open on this session.
    await expectCall(
      "discover.unsubscribe",
      { subscription: witness.subscription },
      { id: null, code: UNKNOWN_SUBSCRIPTION },
    );
    // Unsubscribing twice.
    const subscribed = await expectCall(
      "discover.subscribe",
      { service: "nothing" },
      (result) => assert.ok(isObject(result)),
    ) as Json;
    await expectCall(
      "discover.unsubscribe",
      { subscription: subscribed.subscription },
      (result) => assert.equal(result, true),
    );
    await expectCall(
      "discover.unsubscribe",
      { subscription: subscribed.subscription },
      { id: null, code: UNKNOWN_SUBSCRIPTION },
    );
    await raw.drain(QUIET_MS);
    await assertUsable(raw);
    await witness.check();
  });

  for (const c of frameCases(32768)) {
    await t.step(
      `maxFrameBytes 32768: ${c.name}`,
      () => runCase(raw, witness, c),
    );
  }

  await t.step("maxFrameBytes counts UTF-8 bytes, not characters", async () => {
    // A batch of a ping and a notification whose param is padded with
    // 2-byte characters: few characters, many bytes.
    const wrap = (pad: string) =>
      `[{"jsonrpc":"2.0","id":"utf8","method":"$/ping"},` +
      `{"jsonrpc":"2.0","method":"discover.lookup","params":{"x":"${pad}"}}]`;
    const padded = (bytes: number) => {
      const empty = encoder.encode(wrap("")).length;
      const body = wrap("\u00e9".repeat(Math.floor((bytes - empty) / 2)));
      return body + " ".repeat(bytes - encoder.encode(body).length);
    };
    const over = padded(32769);
    assert.ok(over.length <= 32768, "the frame must be small in characters");
    assert.equal(encoder.encode(over).length, 32769);
    raw.send(over);
    await expectReply(raw, err(null, INVALID_REQUEST));
    await assertUsable(raw);
    const exact = padded(32768);
    assert.equal(encoder.encode(exact).length, 32768);
    raw.send(exact);
    await expectReply(raw, { batch: [{ id: "utf8", result: isPong }] });
    await assertUsable(raw);
    await witness.check();
  });
});

async function upgradeStatusLine(http: string): Promise<string> {
  const url = new URL(http);
  const conn = await Deno.connect({
    hostname: url.hostname,
    port: Number(url.port),
  });
  let closed = false;
  const close = () => {
    if (!closed) conn.close();
    closed = true;
  };
  const timer = setTimeout(close, 5000);
  try {
    await conn.write(encoder.encode(
      `GET / HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        "Sec-WebSocket-Version: 13\r\n\r\n",
    ));
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(4096);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      head += decoder.decode(buffer.subarray(0, n));
    }
    return head.split("\r\n")[0];
  } finally {
    clearTimeout(timer);
    close();
  }
}

/** Opens a WebSocket and reports whether it opened; always waits for its close. */
async function tryOpen(url: string): Promise<"open" | "error"> {
  const socket = new WebSocket(url);
  const closed = new Promise((resolve) =>
    socket.addEventListener("close", resolve, { once: true })
  );
  const outcome = await new Promise<"open" | "error">((resolve) => {
    socket.addEventListener("open", () => resolve("open"), { once: true });
    socket.addEventListener("error", () => resolve("error"), { once: true });
  });
  if (socket.readyState === WebSocket.OPEN) socket.close(1000);
  await closed;
  return outcome;
}

async function healthSessions(agent: AgentProcess): Promise<number> {
  const response = await fetch(`${agent.http}healthz`);
  const body = await response.json();
  assert.equal(body.status, "ok");
  return body.sessions;
}

Deno.test("jsonrpc errors: upgrades beyond maxSessions get 503", async () => {
  await using agent = await spawnAgent(["--max-sessions", "2"]);
  await using witness = await Witness.open(agent.url);
  const raw = await openRaw(agent.url);
  try {
    await assertUsable(raw); // the agent holds both sessions now
    assert.equal(await healthSessions(agent), 2);
    assert.equal(await tryOpen(agent.url), "error");
    assert.match(await upgradeStatusLine(agent.http), /^HTTP\/1\.1 503\b/);
    assert.equal(await healthSessions(agent), 2);
    await assertUsable(raw);
    await witness.check();
  } finally {
    await raw.close();
  }
  // The slot is free once the agent has seen the close.
  const deadline = Date.now() + 5000;
  while (await healthSessions(agent) !== 1) {
    assert.ok(Date.now() < deadline, "the agent did not see the close");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await using again = await openRaw(agent.url);
  await assertUsable(again);
  await witness.check();
});

Deno.test({
  name:
    "jsonrpc errors: a session's calls under way are bounded; beyond, calls get -32002 and the others are served",
  // etcd's child process and the agent's connections to it.
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  // On etcd, each registration waits for its write: registrations of one
  // instance run one after another, one etcd round trip each (a
  // millisecond or more), while the agent dispatches a frame of 1,000 in
  // a few. 20 frames of 1,000 notifications (no answers, so no send queue
  // fills; the last frame ends with a request instead of its thousandth)
  // therefore leave more than MAX_PENDING_CALLS (10,000) under way when
  // the last frame's request is dispatched, however fast the machine: on
  // the memory backend, registrations run almost as fast as they arrive,
  // and how many are under way then depends on the machine.
  await using cluster = await startEtcd();
  await using agent = await spawnAgent(etcdAgentArgs(cluster.endpoints));
  await using witness = await Witness.open(agent.url);
  await using raw = await openRaw(agent.url);
  const frames = 20;
  for (let f = 0; f < frames; f++) {
    const last = f === frames - 1;
    const batch: Json[] = Array.from({ length: last ? 999 : 1000 }, (_, i) => ({
      jsonrpc: "2.0",
      method: "discover.register",
      params: {
        service: "flood",
        addr: "127.0.0.1:9000",
        attrs: { v: String((f * 1000 + i) % 2) },
      },
    }));
    if (last) batch.push({ jsonrpc: "2.0", id: "last", method: "$/ping" });
    raw.send(JSON.stringify(batch));
  }
  const answer = await raw.next(60_000) as Json[];
  assert.ok(Array.isArray(answer), show(answer));
  assert.equal(answer.length, 1, show(answer));
  assertError(answer[0], { id: "last", code: -32002 });
  assert.match(show(answer[0]), /10000 calls under way/);
  // Other sessions are served meanwhile, and this one as soon as a call
  // ends (a generous bound for one etcd write on a shared machine).
  await witness.check();
  const deadline = Date.now() + 60_000;
  for (;;) {
    const pong = await raw.call("$/ping");
    if (pong.result === "pong") break;
    assert.ok(Date.now() < deadline, show(pong));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
});

// ---------------------------------------------------------------------------
// Hostile input

/** Deterministic pseudo-random bytes (xorshift32). */
function randomBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

Deno.test("jsonrpc errors: hostile input is answered and the agent survives", async (t) => {
  await using agent = await spawnAgent();
  await using witness = await Witness.open(agent.url);
  await using raw = await openRaw(agent.url);
  const depth = 100_000;
  const cases: Case[] = [
    {
      name: `${depth} nested arrays (valid JSON: a batch of one non-object)`,
      frame: "[".repeat(depth) + "]".repeat(depth),
      reply: { batch: [{ id: null, code: INVALID_REQUEST }] },
    },
    {
      name: `${depth} unclosed arrays`,
      frame: "[".repeat(depth),
      reply: err(null, PARSE_ERROR),
    },
    {
      name: `${depth} nested objects`,
      frame: `{"a":`.repeat(depth) + "1" + "}".repeat(depth),
      reply: err(null, INVALID_REQUEST),
    },
    {
      name: "deeply nested attrs value",
      frame: `{"jsonrpc":"2.0","id":"deep","method":"discover.register",` +
        `"params":{"service":"x","port":1,"attrs":{"a":${
          "[".repeat(depth) + "]".repeat(depth)
        }}}}`,
      reply: err("deep", INVALID_PARAMS, "attrs.a"),
    },
    {
      name: "deeply nested id",
      frame: `{"jsonrpc":"2.0","method":"$/ping","id":${
        "[".repeat(depth) + "]".repeat(depth)
      }}`,
      reply: err(null, INVALID_REQUEST),
    },
    ...[1, 2, 3].map((seed): Case => ({
      name: `random bytes as text (seed ${seed})`,
      frame: "\u0001" + new TextDecoder().decode(randomBytes(8192, seed)),
      reply: err(null, PARSE_ERROR),
    })),
    {
      name: "invalid JSON with a huge string",
      frame: `{"jsonrpc":"2.0","id":1,"method":"${"x".repeat(900_000)}`,
      reply: err(null, PARSE_ERROR),
    },
    {
      name: "a huge method name",
      frame: frame(req("huge", "m".repeat(900_000))),
      reply: err("huge", METHOD_NOT_FOUND),
    },
    {
      name: "a huge id",
      frame: frame(req("i".repeat(500_000), "discover.lookup")),
      reply: err("i".repeat(500_000), METHOD_NOT_FOUND),
    },
    {
      name: "a huge service name",
      frame: frame(
        req("svc", "discover.services", { service: "s".repeat(900_000) }),
      ),
      reply: err("svc", INVALID_PARAMS, "service"),
    },
    {
      name: "a batch of 1000 pings",
      frame: frame(Array.from({ length: 1000 }, (_, i) => req(i, "$/ping"))),
      reply: {
        batch: Array.from(
          { length: 1000 },
          (_, i) => ({ id: i, result: isPong }),
        ),
      },
    },
    {
      name: "a batch of 1000 invalid entries",
      frame: frame(Array.from({ length: 1000 }, (_, i) => i)),
      reply: {
        batch: Array.from({ length: 1000 }, () => ({
          id: null,
          code: INVALID_REQUEST,
        })),
      },
    },
    {
      name: "NUL and lone surrogates in a method name",
      frame: frame(req("nul", "\u0000\ud800$/ping")),
      reply: err("nul", METHOD_NOT_FOUND),
    },
    {
      name: "__proto__ in params",
      frame: `{"jsonrpc":"2.0","id":"proto","method":"discover.register",` +
        `"params":{"service":"x","port":1,"__proto__":{"attrs":{"a":"b"}}}}`,
      reply: err("proto", INVALID_PARAMS, "__proto__"),
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => runCase(raw, witness, c));
  }
  await t.step("the agent is alive and healthy", async () => {
    assert.equal(await healthSessions(agent), 2);
    await assertUsable(raw);
    await witness.check();
  });
});
