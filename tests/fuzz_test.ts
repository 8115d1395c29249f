// Copyright the discover authors. BSD-3-Clause license.

/**
 * Property-based fuzzing (fast-check) of the frames a peer can send to a real
 * agent process: random text and bytes, deep nesting, frames around the size
 * limit, JSON-RPC-shaped objects with wrong types, valid methods with random
 * params, batches of 1 to 1500 entries, and floods of subscribe/unsubscribe.
 *
 * Invalid UTF-8 cannot be sent: the WebSocket API encodes every string as
 * UTF-8 (lone surrogates become U+FFFD), and binary frames are a separate
 * frame type. The WebSocket layer's handling of invalid UTF-8 is out of reach
 * of this test; the model below works on the string as it goes on the wire
 * (`toWellFormed()`).
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type AgentProcess,
  rssKiB,
  spawnAgent,
} from "../tools/agent_process.ts";
import { openRaw, type RawSocket } from "./_raw_socket.ts";
import { DEFAULT_LIMITS } from "../agent/mod.ts";
import { openrpcDocument } from "../protocol/openrpc.ts";

type Json = Record<string, unknown>;

const MAX_FRAME = 65536;
const MAX_BATCH = 1000; // the agent's default; there is no flag for it
const MAX_SUBSCRIPTIONS = 32;
const RSS_MARGIN_KIB = 64 * 1024;

const INVALID_PARAMS = -32602;
const LIMIT_EXCEEDED = -32002;
const UNKNOWN_SUBSCRIPTION = -32003;

const BYSTANDER_SERVICE = "bystander";
const BYSTANDER_ADDR = "127.0.0.1:7101";

const encoder = new TextEncoder();

const counts = { runs: 0, frames: 0, messages: 0 };

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 400 ? text.slice(0, 400) + "..." : text;
}

// ---------------------------------------------------------------------------
// Unique ids, resolved when a message is serialized

/** Stands for a fresh id (never used before on any socket) when serialized. */
class UniqueId {
  constructor(readonly kind: "string" | "number") {}
  toJSON(): string | number {
    uniqueCounter++;
    return this.kind === "string" ? `u${uniqueCounter}` : 1e9 + uniqueCounter;
  }
}
let uniqueCounter = 0;

const uniqueId = fc.constantFrom(
  new UniqueId("string"),
  new UniqueId("number"),
);

// ---------------------------------------------------------------------------
// Frames

type Frame = { text: string } | { bytes: Uint8Array };

/** What each `rpc.discover` call gets back: the OpenRPC document. */
const DISCOVER_RESPONSE_CHARS = JSON.stringify(openrpcDocument).length;

/**
 * Whether the responses to `frames` fit the agent's send queue (its
 * default `maxQueueBytes`) with room to spare. Beyond it the agent drops
 * the session as a slow consumer (close code 4008, as
 * `tests/slow_consumer_test.ts` shows), which this model does not follow:
 * about 350 `rpc.discover` calls in one batch are enough. Only those answers
 * are large; each is counted, with or without an id.
 */
function withinQueue(frames: Frame[]): boolean {
  let calls = 0;
  for (const frame of frames) {
    if ("text" in frame) calls += frame.text.split('"rpc.discover"').length - 1;
  }
  return calls * DISCOVER_RESPONSE_CHARS <= DEFAULT_LIMITS.maxQueueBytes / 2;
}

const METHODS = [
  "discover.register",
  "discover.unregister",
  "discover.services",
  "discover.catalog",
  "discover.owned",
  "discover.owners",
  "discover.leader",
  "discover.subscribe",
  "discover.unsubscribe",
  "discover.status",
  "discover.lease",
  "rpc.discover",
  "$/ping",
];

const FIELDS = [
  "service",
  "port",
  "addr",
  "attrs",
  "filter",
  "since",
  "epoch",
  "subscription",
];

/** Values that sometimes pass validation, mixed with anything at all. */
const plausible: Record<string, fc.Arbitrary<unknown>> = {
  service: fc.constantFrom("fz", "*", BYSTANDER_SERVICE, "x", "", "a/b"),
  port: fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.double()),
  addr: fc.constantFrom(
    "127.0.0.1:7201",
    BYSTANDER_ADDR,
    "[::1]:80",
    "999.1.1.1:80",
    "h:0",
  ),
  attrs: fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), {
    maxKeys: 4,
  }),
  filter: fc.record({
    attrs: fc.dictionary(fc.string({ maxLength: 4 }), fc.string(), {
      maxKeys: 2,
    }),
  }),
  since: fc.oneof(fc.nat(), fc.integer()),
  epoch: fc.string({ maxLength: 70 }),
  subscription: fc.oneof(
    fc.nat({ max: 50 }).map(String),
    fc.string({ maxLength: 70 }),
  ),
};

const anything = fc.anything({ maxDepth: 3, maxKeys: 4 });

/** Each known field absent, plausible, or anything. */
const randomParams = fc.record(
  Object.fromEntries(
    FIELDS.map((f) => [f, fc.oneof(plausible[f], anything)]),
  ),
  { requiredKeys: [] },
);

/** A valid request (valid id, method) with random params. */
const validMethodMessage = fc.record({
  jsonrpc: fc.constant("2.0"),
  id: uniqueId,
  method: fc.constantFrom(...METHODS),
  params: fc.oneof(randomParams, fc.object({ maxDepth: 2 }), anything),
}, { requiredKeys: ["jsonrpc", "id", "method"] });

/** A JSON-RPC-shaped object with any type in every field. */
const shapedMessage = fc.record({
  jsonrpc: fc.oneof(fc.constant("2.0"), anything),
  id: fc.oneof(uniqueId, anything),
  method: fc.oneof(fc.constantFrom(...METHODS, "nope"), anything),
  params: fc.oneof(randomParams, anything),
  result: anything,
  error: anything,
}, { requiredKeys: [] });

/** A tree of nested arrays and objects, via fc.letrec. */
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(null),
    fc.array(tie("tree"), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom("a", "id", "method"), tie("tree"), {
      maxKeys: 2,
    }),
  ),
}));

const message = fc.oneof(
  validMethodMessage,
  shapedMessage,
  tree,
  anything,
  fc.record({
    jsonrpc: fc.constant("2.0"),
    method: fc.constantFrom(...METHODS),
  }),
);

/** `undefined` (from fc.anything) goes on the wire as the text "undefined". */
const text = (value: unknown): Frame => ({
  text: JSON.stringify(value) ?? String(value),
});

/** A deeply nested value written as text (up to the frame limit). */
const deepFrame = fc.record({
  depth: fc.integer({ min: 1, max: 32_000 }),
  shape: fc.constantFrom("arrays", "unclosed", "objects", "in-params", "in-id"),
}).map(({ depth, shape }): Frame => {
  const arrays = "[".repeat(depth) + "]".repeat(depth);
  switch (shape) {
    case "arrays":
      return { text: arrays };
    case "unclosed":
      return { text: "[".repeat(depth) };
    case "objects":
      return { text: `{"a":`.repeat(depth) + "1" + "}".repeat(depth) };
    case "in-params":
      return {
        text: `{"jsonrpc":"2.0","id":"deep${++uniqueCounter}",` +
          `"method":"discover.register","params":{"service":"x","port":1,` +
          `"attrs":{"a":${arrays}}}}`,
      };
    default:
      return { text: `{"jsonrpc":"2.0","method":"$/ping","id":${arrays}}` };
  }
});

/** A request padded to a UTF-8 size around the frame limit. */
const hugeFrame = fc.record({
  delta: fc.integer({ min: -64, max: 64 }),
  char: fc.constantFrom("x", "\u00e9", "\u20ac", "\u{1F600}"),
  where: fc.constantFrom("method", "id", "params", "broken"),
}).map(({ delta, char, where }): Frame => {
  const target = MAX_FRAME + delta;
  const wrap = (pad: string) => {
    switch (where) {
      case "method":
        return JSON.stringify({
          jsonrpc: "2.0",
          id: `h${uniqueCounter}`,
          method: pad,
        });
      case "id":
        return JSON.stringify({ jsonrpc: "2.0", id: pad, method: "$/ping" });
      case "params":
        return JSON.stringify({
          jsonrpc: "2.0",
          id: `h${uniqueCounter}`,
          method: "discover.services",
          params: { service: pad },
        });
      default:
        return `{"jsonrpc":"2.0","id":1,"method":"${pad}`;
    }
  };
  uniqueCounter++;
  const empty = encoder.encode(wrap("")).length;
  const size = encoder.encode(char).length;
  const body = wrap(
    char.repeat(Math.max(0, Math.floor((target - empty) / size))),
  );
  // Top up with spaces (outside strings where possible) to hit the target.
  const missing = Math.max(0, target - encoder.encode(body).length);
  return {
    text: where === "broken"
      ? body + " ".repeat(missing)
      : " ".repeat(missing) + body,
  };
});

/** A batch: 1..1500 entries cycling through a few templates. */
const batchFrame = fc.record({
  length: fc.oneof(
    fc.integer({ min: 1, max: 20 }),
    fc.integer({ min: 1, max: 1500 }),
    fc.constantFrom(MAX_BATCH, MAX_BATCH + 1),
  ),
  templates: fc.array(
    fc.oneof(
      message,
      fc.record({
        jsonrpc: fc.constant("2.0"),
        id: uniqueId,
        method: fc.constant("$/ping"),
      }),
      fc.constantFrom(1, "x", null, [], {}),
    ),
    { minLength: 1, maxLength: 6 },
  ),
}).map(({ length, templates }) =>
  text(Array.from({ length }, (_, i) => templates[i % templates.length]))
);

const rawFrame: fc.Arbitrary<Frame> = fc.oneof(
  fc.string({ unit: "binary", maxLength: 300 }).map((t) => ({ text: t })),
  fc.string({ unit: "grapheme", maxLength: 100 }).map((t) => ({ text: t })),
  fc.json({ maxDepth: 3 }).map((t) => ({ text: t })),
  fc.array(
    fc.constantFrom(
      "[",
      "]",
      "{",
      "}",
      ",",
      ":",
      '"',
      "1",
      "null",
      '"id"',
      " ",
    ),
    { maxLength: 200 },
  ).map((parts) => ({ text: parts.join("") })),
  fc.uint8Array({ maxLength: 2048 }).map((bytes) => ({ bytes })),
);

/** Any frame the properties send. */
const anyFrame: fc.Arbitrary<Frame> = fc.oneof(
  rawFrame,
  message.map(text),
  batchFrame,
  hugeFrame,
  deepFrame,
);

// ---------------------------------------------------------------------------
// The model: which ids a frame must get answers for

/** Counts of expected (or received) responses by `JSON.stringify(id)`. */
type Ledger = Map<string, number>;

function bump(ledger: Ledger, key: string, by = 1) {
  ledger.set(key, (ledger.get(key) ?? 0) + by);
}

function expectOne(m: unknown, out: Ledger): void {
  if (!isObject(m)) return bump(out, "null");
  const hasId = Object.hasOwn(m, "id");
  const id = m.id;
  const validId = id === null || typeof id === "string" ||
    (typeof id === "number" && Number.isFinite(id));
  // A response-shaped message is ignored.
  if (
    !Object.hasOwn(m, "method") && hasId && validId &&
    (Object.hasOwn(m, "result") || Object.hasOwn(m, "error"))
  ) return;
  const responseKey = JSON.stringify(hasId && validId ? id : null);
  if (m.jsonrpc !== "2.0") return bump(out, responseKey);
  if (hasId && !validId) return bump(out, "null");
  if (typeof m.method !== "string") return bump(out, responseKey);
  if (
    Object.hasOwn(m, "params") &&
    (m.params === null || typeof m.params !== "object")
  ) return bump(out, responseKey);
  if (hasId) bump(out, responseKey); // a notification gets nothing
}

/** What the frame must get back, by id. */
function expected(frame: Frame): Ledger {
  const out: Ledger = new Map();
  if ("bytes" in frame) return bump(out, "null"), out;
  const wire = frame.text.toWellFormed();
  if (encoder.encode(wire).length > MAX_FRAME) return bump(out, "null"), out;
  let value: unknown;
  try {
    value = JSON.parse(wire);
  } catch {
    return bump(out, "null"), out;
  }
  if (!Array.isArray(value)) {
    counts.messages++;
    expectOne(value, out);
  } else if (value.length === 0 || value.length > MAX_BATCH) {
    counts.messages += value.length;
    bump(out, "null");
  } else {
    counts.messages += value.length;
    for (const m of value) expectOne(m, out);
  }
  return out;
}

/** Asserts a response object is well-formed. */
function assertResponse(r: unknown): asserts r is Json {
  assert.ok(isObject(r), `a response that is not an object: ${show(r)}`);
  assert.equal(r.jsonrpc, "2.0", `bad jsonrpc in ${show(r)}`);
  assert.ok(Object.hasOwn(r, "id"), `no id in ${show(r)}`);
  const id = r.id;
  assert.ok(
    id === null || typeof id === "string" || typeof id === "number",
    `bad id in ${show(r)}`,
  );
  const hasResult = Object.hasOwn(r, "result");
  const hasError = Object.hasOwn(r, "error");
  assert.ok(
    hasResult !== hasError,
    `not exactly one of result/error: ${show(r)}`,
  );
  if (hasError) {
    assert.ok(isObject(r.error), `error not an object: ${show(r)}`);
    assert.ok(
      Number.isInteger(r.error.code),
      `error.code not an integer: ${show(r)}`,
    );
    assert.equal(
      typeof r.error.message,
      "string",
      `no error.message: ${show(r)}`,
    );
  }
}

/**
 * A fuzzed socket with a running ledger of expected and received responses
 * (cumulative, so a duplicate that arrives late is still caught).
 */
class Fuzzed {
  readonly want: Ledger = new Map();
  readonly got: Ledger = new Map();
  #ping = 0;

  constructor(readonly raw: RawSocket) {}

  #take(frame: unknown): void {
    const items = Array.isArray(frame) ? frame : [frame];
    if (Array.isArray(frame)) {
      assert.ok(frame.length > 0, "an empty array of responses");
    }
    for (const item of items) {
      if (
        isObject(item) && Object.hasOwn(item, "method") && !Array.isArray(frame)
      ) {
        // A notification from the agent (an event of a subscription).
        assert.equal(item.jsonrpc, "2.0", `bad notification ${show(item)}`);
        assert.equal(item.method, "discover.event", `unexpected ${show(item)}`);
        continue;
      }
      assertResponse(item);
      const key = JSON.stringify(item.id);
      bump(this.got, key);
      assert.ok(
        (this.got.get(key) ?? 0) <= (this.want.get(key) ?? 0),
        `more responses with id ${key.slice(0, 100)} than requests ` +
          `(${this.got.get(key)} > ${this.want.get(key) ?? 0}): ${show(item)}`,
      );
    }
  }

  #missing(): string[] {
    const missing: string[] = [];
    for (const [key, n] of this.want) {
      if ((this.got.get(key) ?? 0) < n) missing.push(key.slice(0, 80));
    }
    return missing;
  }

  /** Sends the frames, then a ping; waits for every expected response. */
  async run(frames: Frame[]): Promise<void> {
    counts.runs++;
    for (const frame of frames) {
      for (const [key, n] of expected(frame)) bump(this.want, key, n);
      this.raw.send("bytes" in frame ? frame.bytes : frame.text);
      counts.frames++;
    }
    const pingId = `ping${++this.#ping}`;
    bump(this.want, JSON.stringify(pingId));
    this.raw.sendJson({ jsonrpc: "2.0", id: pingId, method: "$/ping" });
    counts.frames++;
    counts.messages++;
    let pong: unknown;
    while (this.#missing().length > 0) {
      let frame: unknown;
      try {
        frame = await this.raw.next(10_000);
      } catch (error) {
        throw new Error(
          `no response for ids ${
            show(this.#missing())
          } (socket state ${this.raw.socket.readyState})`,
          { cause: error },
        );
      }
      this.#take(frame);
      if (isObject(frame) && frame.id === pingId) pong = frame.result;
    }
    assert.equal(
      pong,
      "pong",
      "the $/ping after the case was not answered 'pong'",
    );
    assert.equal(
      this.raw.socket.readyState,
      WebSocket.OPEN,
      "the socket closed",
    );
  }

  /** Waits a moment for late duplicates; the ledgers must then be equal. */
  async settle(): Promise<void> {
    for (const frame of await this.raw.drain(300)) this.#take(frame);
    assert.deepEqual(this.#missing(), []);
  }
}

// ---------------------------------------------------------------------------
// Helpers

async function healthz(agent: AgentProcess): Promise<number> {
  const response = await fetch(`${agent.http}healthz`);
  await response.body?.cancel();
  return response.status;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for a frame of the socket that satisfies `match`, skipping others. */
async function waitFor(
  raw: RawSocket,
  match: (frame: Json) => boolean,
  ms = 5000,
): Promise<Json> {
  const deadline = Date.now() + ms;
  for (;;) {
    const frame = await raw.next(Math.max(1, deadline - Date.now()));
    if (isObject(frame) && match(frame)) return frame;
  }
}

// ---------------------------------------------------------------------------
// The test

Deno.test({
  name: "fuzz: random frames never break the agent, its sessions or its memory",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const started = Date.now();
    await using agent = await spawnAgent([
      "--max-frame-bytes",
      String(MAX_FRAME),
      "--max-subscriptions",
      String(MAX_SUBSCRIPTIONS),
      "--log-level",
      "error",
    ]);
    const pid = agent.child.pid;

    // The bystander: registered an instance and subscribed before fuzzing.
    await using bystander = await openRaw(agent.url);
    const registered = await bystander.call("discover.register", {
      service: BYSTANDER_SERVICE,
      addr: BYSTANDER_ADDR,
      attrs: { round: "0" },
    });
    assert.ok(isObject(registered.result), show(registered));
    const subscribed = await bystander.call("discover.subscribe", {
      service: BYSTANDER_SERVICE,
    });
    assert.ok(isObject(subscribed.result), show(subscribed));
    const subscription = subscribed.result.subscription;
    await waitFor(
      bystander,
      (f) =>
        isObject(f.params) && f.params.subscription === subscription &&
        isObject(f.params.result) && f.params.result.kind === "current",
    );

    // Warm-up: the same kinds of traffic, then the baseline.
    {
      const warm = new Fuzzed(await openRaw(agent.url));
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            anyFrame,
            {
              minLength: 1,
              maxLength: 4,
            },
          ),
          (frames) => warm.run(frames),
        ),
        { numRuns: 60, seed: 1, endOnFailure: true },
      );
      await warm.settle();
      await warm.raw.close();
      await sleep(1000);
    }
    const baseline = await rssKiB(pid);

    const sockets: RawSocket[] = [];
    const fuzzed = async () => {
      const f = new Fuzzed(await openRaw(agent.url));
      sockets.push(f.raw);
      return f;
    };
    const runs: Record<string, number> = {};
    const check = async <T>(
      name: string,
      arb: fc.Arbitrary<T>,
      numRuns: number,
      predicate: (value: T) => Promise<void>,
    ) => {
      runs[name] = numRuns;
      await fc.assert(fc.asyncProperty(arb, predicate), {
        numRuns,
        endOnFailure: true,
        verbose: true,
      });
    };

    // Frame properties: each on its own socket, whose answers are checked
    // case by case and drained at the end.
    const frameProperties = [
      {
        title: "1a. random text, bytes, shaped messages and params",
        name: "frames",
        frames: fc.array(fc.oneof(rawFrame, message.map(text)), {
          minLength: 1,
          maxLength: 5,
        }),
        runs: 300,
      },
      {
        title: "1b. deep nesting and frames around the size limit",
        name: "deep+huge",
        frames: fc.array(fc.oneof(deepFrame, hugeFrame), {
          minLength: 1,
          maxLength: 3,
        }),
        runs: 120,
      },
      {
        title: "1c. batches of 1 to 1500 entries",
        name: "batches",
        frames: fc.array(batchFrame, { minLength: 1, maxLength: 2 }),
        runs: 120,
      },
      {
        title: "1d. everything mixed on one socket",
        name: "mixed",
        frames: fc.array(
          anyFrame,
          { minLength: 1, maxLength: 6 },
        ),
        runs: 150,
      },
    ];
    for (const property of frameProperties) {
      await t.step(property.title, async () => {
        const f = await fuzzed();
        await check(
          property.name,
          property.frames.filter(withinQueue),
          property.runs,
          (frames) => f.run(frames),
        );
        await f.settle();
      });
    }

    await t.step("2. subscribe/unsubscribe floods", async () => {
      const op = fc.oneof(
        fc.record({
          op: fc.constant("sub" as const),
          service: fc.oneof(
            fc.constantFrom("fz", "*", BYSTANDER_SERVICE, "a", "b"),
            fc.string({ maxLength: 70 }),
          ),
          filter: fc.option(fc.oneof(plausible.filter, anything), {
            nil: undefined,
          }),
        }),
        fc.record({
          op: fc.constant("unsub" as const),
          pick: fc.nat(),
          junk: fc.option(fc.oneof(fc.string({ maxLength: 70 }), anything), {
            nil: undefined,
          }),
        }),
      );
      const flood = fc.array(
        fc.record({
          ops: fc.array(op, { minLength: 1, maxLength: 40 }),
          batch: fc.boolean(),
        }),
        { minLength: 1, maxLength: 4 },
      );
      await check("floods", flood, 40, async (chunks) => {
        counts.runs++;
        const raw = await openRaw(agent.url);
        try {
          const open = new Set<string>();
          const seen = new Set<string>();
          let n = 0;
          const request = async (messages: Json[], batch: boolean) => {
            const ids = messages.map((m) => m.id);
            if (batch) raw.sendJson(messages);
            else for (const m of messages) raw.sendJson(m);
            counts.frames += batch ? 1 : messages.length;
            counts.messages += messages.length;
            const answers = new Map<unknown, Json>();
            while (answers.size < ids.length) {
              const frame = await raw.next(10_000);
              for (const item of Array.isArray(frame) ? frame : [frame]) {
                if (isObject(item) && item.method === "discover.event") {
                  continue;
                }
                assertResponse(item);
                assert.ok(ids.includes(item.id), `unexpected ${show(item)}`);
                assert.ok(!answers.has(item.id), `twice: ${show(item)}`);
                answers.set(item.id, item);
              }
            }
            return ids.map((id) => answers.get(id)!);
          };
          for (const { ops, batch } of chunks) {
            const known = [...open];
            const messages = ops.map((o): Json => {
              const id = `f${++n}`;
              if (o.op === "sub") {
                const params: Json = { service: o.service };
                if (o.filter !== undefined) params.filter = o.filter;
                return {
                  jsonrpc: "2.0",
                  id,
                  method: "discover.subscribe",
                  params,
                };
              }
              const target = o.junk !== undefined || known.length === 0
                ? o.junk ?? "none"
                : known[o.pick % known.length];
              return {
                jsonrpc: "2.0",
                id,
                method: "discover.unsubscribe",
                params: { subscription: target },
              };
            });
            const answers = await request(messages, batch);
            const closedNow = new Set<string>();
            messages.forEach((m, i) => {
              const r = answers[i];
              const p = m.params as Json;
              if (m.method === "discover.subscribe") {
                if (isObject(r.error)) {
                  assert.ok(
                    [INVALID_PARAMS, LIMIT_EXCEEDED].includes(
                      r.error.code as number,
                    ),
                    `subscribe ${show(p)}: ${show(r)}`,
                  );
                  if (r.error.code === LIMIT_EXCEEDED) {
                    assert.ok(
                      open.size >= MAX_SUBSCRIPTIONS - ops.length,
                      show(r),
                    );
                  }
                } else {
                  assert.ok(isObject(r.result), show(r));
                  const s = r.result.subscription as string;
                  assert.ok(!open.has(s) && !seen.has(s), `reused id ${s}`);
                  open.add(s);
                  seen.add(s);
                }
              } else {
                const s = p.subscription;
                if (isObject(r.error)) {
                  assert.ok(
                    [INVALID_PARAMS, UNKNOWN_SUBSCRIPTION].includes(
                      r.error.code as number,
                    ),
                    `unsubscribe ${show(p)}: ${show(r)}`,
                  );
                  // A subscription open before this chunk, not closed earlier
                  // in it, must be closable.
                  assert.ok(
                    typeof s !== "string" || !known.includes(s) ||
                      closedNow.has(s),
                    `unsubscribe of open ${s} failed: ${show(r)}`,
                  );
                } else {
                  assert.equal(r.result, true, show(r));
                  assert.ok(
                    typeof s === "string" && seen.has(s),
                    `closed unknown ${show(s)}`,
                  );
                  assert.ok(!closedNow.has(s), `closed ${s} twice`);
                  closedNow.add(s);
                  open.delete(s);
                }
              }
            });
            assert.ok(
              open.size <= MAX_SUBSCRIPTIONS,
              `${open.size} subscriptions`,
            );
          }
          // discover.status still works.
          const status = await raw.call("discover.status");
          assert.ok(isObject(status.result), show(status));
          assert.equal(
            (status.result.limits as Json).maxSubscriptions,
            MAX_SUBSCRIPTIONS,
          );
          // The count reaches maxSubscriptions, then -32002.
          const fill = Array.from(
            { length: MAX_SUBSCRIPTIONS - open.size + 1 },
            (): Json => ({
              jsonrpc: "2.0",
              id: `f${++n}`,
              method: "discover.subscribe",
              params: { service: "fill" },
            }),
          );
          const answers = await request(fill, false);
          answers.forEach((r, i) => {
            if (i < answers.length - 1) {
              assert.ok(
                isObject(r.result),
                `fill ${i + open.size}: ${show(r)}`,
              );
            } else {
              assert.ok(isObject(r.error), `over the limit: ${show(r)}`);
              assert.equal(r.error.code, LIMIT_EXCEEDED, show(r));
            }
          });
          const pong = await raw.call("$/ping");
          assert.equal(pong.result, "pong");
        } finally {
          await raw.close();
        }
      });
    });

    for (const raw of sockets) await raw.close();

    await t.step("3. the bystander is unaffected", async () => {
      const listed = await bystander.call("discover.services", {
        service: BYSTANDER_SERVICE,
      });
      assert.ok(isObject(listed.result), show(listed));
      const ids = (listed.result.instances as Json[]).map((i) => i.id);
      assert.ok(
        ids.includes(`${BYSTANDER_SERVICE}/${BYSTANDER_ADDR}`),
        show(ids),
      );
      const again = await bystander.call("discover.register", {
        service: BYSTANDER_SERVICE,
        addr: BYSTANDER_ADDR,
        attrs: { round: "1" },
      });
      assert.ok(isObject(again.result), show(again));
      await waitFor(bystander, (f) => {
        if (f.method !== "discover.event" || !isObject(f.params)) return false;
        const result = f.params.result;
        return f.params.subscription === subscription && isObject(result) &&
          result.kind === "update" && isObject(result.instance) &&
          result.instance.id === `${BYSTANDER_SERVICE}/${BYSTANDER_ADDR}` &&
          isObject(result.instance.attrs) &&
          result.instance.attrs.round === "1";
      });
    });

    await t.step(
      "4. memory returns to baseline; the agent is alive",
      async () => {
        await sleep(3000);
        const after = await rssKiB(pid);
        console.log(
          `agent RSS: baseline ${baseline} KiB (${
            (baseline / 1024).toFixed(1)
          } MiB), ` +
            `after ${after} KiB (${(after / 1024).toFixed(1)} MiB), ` +
            `allowed up to baseline + ${RSS_MARGIN_KIB / 1024} MiB`,
        );
        assert.ok(
          after <= baseline + RSS_MARGIN_KIB,
          `RSS grew from ${baseline} to ${after} KiB`,
        );
        assert.equal(await healthz(agent), 200);
      },
    );

    const total = Object.values(runs).reduce((a, b) => a + b, 0);
    console.log(
      `fuzz: ${total} property runs (${
        show(runs)
      }), ${counts.runs} cases incl. warm-up, ` +
        `${counts.frames} frames, ${counts.messages} JSON messages sent; ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    await bystander.close();
    await agent.stop();
  },
});

Deno.test({
  name:
    "fuzz: with access rules, frames of sessions without a token change nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const token = "fuzz-admin-token-0123456789abcdef";
    const digest = await crypto.subtle.digest("SHA-256", encoder.encode(token));
    const dir = await Deno.makeTempDir();
    const path = `${dir}/acl.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        default: "deny",
        tokens: [{
          name: "admin",
          sha256: [...new Uint8Array(digest)]
            .map((b) => b.toString(16).padStart(2, "0")).join(""),
          rules: [{ service: "*", access: "admin" }],
        }],
      }),
    );
    try {
      await using agent = await spawnAgent([
        "--acl",
        path,
        "--max-frame-bytes",
        String(MAX_FRAME),
        "--log-level",
        "error",
      ]);
      await using admin = await openRaw(agent.url);
      const authenticated = await admin.call("discover.authenticate", {
        token,
      });
      assert.deepEqual(authenticated.result, { name: "admin" });
      const registered = await admin.call("discover.register", {
        service: BYSTANDER_SERVICE,
        addr: BYSTANDER_ADDR,
        attrs: { round: "0" },
      });
      assert.ok(isObject(registered.result), show(registered));
      const catalog = async () => (await admin.call("discover.catalog")).result;
      const before = await catalog();
      // A frame the agent drops the connection for (binary, oversized)
      // ends the socket: the next run opens another one.
      let anonymous = await openRaw(agent.url);
      let sockets = 1;
      await fc.assert(
        fc.asyncProperty(
          fc.array(anyFrame, { minLength: 1, maxLength: 5 }),
          async (frames) => {
            if (anonymous.socket.readyState !== WebSocket.OPEN) {
              await anonymous.close();
              anonymous = await openRaw(agent.url);
              sockets++;
            }
            for (const frame of frames) {
              if (anonymous.socket.readyState !== WebSocket.OPEN) break;
              anonymous.send("text" in frame ? frame.text : frame.bytes);
            }
            await anonymous.drain(5);
          },
        ),
        { numRuns: 200, seed: 7, endOnFailure: true },
      );
      await anonymous.drain(300);
      await anonymous.close();
      assert.ok(sockets < 200, "most runs reached an open session");
      assert.deepEqual(await catalog(), before, "nothing was registered");
      const listed = await admin.call("discover.services", {
        service: BYSTANDER_SERVICE,
      });
      assert.deepEqual(
        (listed.result as { instances: unknown[] }).instances,
        [registered.result],
        "the bystander is as it was",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
