// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { ErrorCode, RpcError } from "./errors.ts";
import type { CallContext } from "./jsonrpc.ts";
import {
  dispatcher,
  eventNotification,
  type MethodHandlers,
  type MethodTable,
  methodTable,
} from "./methods.ts";
import { openrpcDocument } from "./openrpc.ts";
import {
  EVENT_NOTIFICATION,
  type MethodName,
  type OpenRpcDocument,
} from "./types.ts";

/** Every method of the protocol, as `protocol/README.md` lists them. */
const NAMES: MethodName[] = [
  "$/ping",
  "discover.authenticate",
  "discover.catalog",
  "discover.leader",
  "discover.lease",
  "discover.owned",
  "discover.owners",
  "discover.register",
  "discover.services",
  "discover.setHealth",
  "discover.status",
  "discover.subscribe",
  "discover.unregister",
  "discover.unsubscribe",
  "rpc.discover",
];

const call: CallContext = { notification: false, afterResponse() {} };

function assertInvalidParams(fn: () => unknown, label: string) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof RpcError, `${label}: not an RpcError`);
    assert.equal(error.code, ErrorCode.InvalidParams, label);
    return true;
  }, label);
}

/** Handlers that record what they are called with. */
function recording() {
  const calls: [string, unknown][] = [];
  const document = { openrpc: "1.3.2" } as OpenRpcDocument;
  const instance = {
    id: "a/h:1",
    service: "a",
    addr: "h:1",
    attrs: {},
    revision: 1,
    registeredAt: 0,
    created: 1,
    health: "passing" as const,
  };
  const record = <T>(name: string, result: T) => (params: unknown): T => {
    calls.push([name, params]);
    return result;
  };
  const handlers: MethodHandlers = {
    "discover.register": record("discover.register", instance),
    "discover.authenticate": record("discover.authenticate", { name: "n" }),
    "discover.setHealth": record("discover.setHealth", instance),
    "discover.unregister": record("discover.unregister", true),
    "discover.leader": record("discover.leader", null),
    "discover.services": record("discover.services", {
      revision: 1,
      instances: [],
    }),
    "discover.owners": record("discover.owners", {
      revision: 1,
      owners: [],
    }),
    "discover.owned": record("discover.owned", {
      revision: 1,
      instances: [instance],
    }),
    "discover.catalog": record("discover.catalog", {
      revision: 1,
      services: [],
    }),
    "discover.subscribe": record("discover.subscribe", {
      subscription: "1",
      revision: 1,
      epoch: "e",
      mode: "snapshot" as const,
    }),
    "discover.unsubscribe": record("discover.unsubscribe", true),
    "discover.status": (params) => {
      calls.push(["discover.status", params]);
      return Promise.reject(new RpcError(ErrorCode.InternalError, "no status"));
    },
    "discover.lease": record("discover.lease", { ms: 1000, lease: "" }),
    "rpc.discover": record("rpc.discover", document),
    "$/ping": record("$/ping", "pong" as const),
  };
  return { calls, handlers };
}

Deno.test("methodTable has an entry for every method, and no other", () => {
  assert.deepEqual(Object.keys(methodTable).sort(), NAMES);
  for (const name of NAMES) {
    const spec = methodTable[name as MethodName];
    assert.equal(typeof spec.validate, "function", name);
    assert.ok(spec.openrpc.summary, `${name} has no summary`);
    assert.ok(spec.openrpc.examples.length > 0, `${name} has no example`);
  }
});

Deno.test("the OpenRPC methods are the table's, and discover.event", () => {
  const names = openrpcDocument.methods.map((m) => m.name);
  assert.deepEqual(names, [...Object.keys(methodTable), EVENT_NOTIFICATION]);
  for (const [name, spec] of Object.entries(methodTable)) {
    const entry = openrpcDocument.methods.find((m) => m.name === name);
    assert.deepEqual(entry, { name, ...spec.openrpc }, name);
  }
  assert.deepEqual(openrpcDocument.methods.at(-1), {
    name: EVENT_NOTIFICATION,
    ...eventNotification,
  });
});

Deno.test("every validator accepts the params of its OpenRPC examples", () => {
  let checked = 0;
  for (const [name, spec] of Object.entries(methodTable)) {
    for (const example of spec.openrpc.examples) {
      const params = Object.fromEntries(
        (example.params as { name: string; value: unknown }[]).map((p) => [
          p.name,
          p.value,
        ]),
      );
      spec.validate(params);
      // A method without params also takes none at all.
      if (example.params.length === 0) spec.validate(undefined);
      checked++;
    }
    assert.ok(spec.openrpc.examples.length > 0, name);
  }
  assert.ok(checked >= NAMES.length, `only ${checked} examples`);
});

Deno.test("every validator rejects bad params with -32602", () => {
  const bad: unknown[] = ["cache", 42, null, true, [1], { bogus: 1 }];
  for (const [name, spec] of Object.entries(methodTable)) {
    for (const params of bad) {
      assertInvalidParams(
        () => spec.validate(params),
        `${name} ${JSON.stringify(params)}`,
      );
    }
  }
});

Deno.test("dispatcher checks params with the table, then calls the handler", async () => {
  const { calls, handlers } = recording();
  const dispatch = dispatcher(handlers);
  const instance = dispatch("discover.register", {
    service: "cache",
    addr: "Cache-1.Example.:6379",
  }, call);
  assert.equal((instance as { id: string }).id, "a/h:1");
  // The handler gets the checked params: canonical address, default attrs.
  assert.deepEqual(calls, [["discover.register", {
    service: "cache",
    addr: "cache-1.example:6379",
    attrs: {},
  }]]);
  assert.equal(dispatch("$/ping", undefined, call), "pong");
  assert.equal(dispatch("$/ping", [], call), "pong");
  assert.deepEqual(calls.at(-1), ["$/ping", undefined]);
  // A handler's rejection is the caller's.
  await assert.rejects(
    Promise.resolve(dispatch("discover.status", {}, call)),
    /no status/,
  );
});

Deno.test("dispatcher answers bad params with -32602 without calling the handler", () => {
  const { calls, handlers } = recording();
  const dispatch = dispatcher(handlers);
  assertInvalidParams(
    () => dispatch("discover.register", { service: "cache" }, call),
    "no port or addr",
  );
  assertInvalidParams(() => dispatch("$/ping", { x: 1 }, call), "ping");
  assertInvalidParams(
    () => dispatch("discover.subscribe", { service: "a", since: -1 }, call),
    "since",
  );
  assert.deepEqual(calls, []);
});

Deno.test("dispatcher answers an unknown method with -32601", () => {
  const { calls, handlers } = recording();
  const dispatch = dispatcher(handlers);
  for (
    const method of [
      "discover.nope",
      "discover.event",
      "",
      "toString",
      "constructor",
      "__proto__",
      "hasOwnProperty",
      "x".repeat(500),
    ]
  ) {
    assert.throws(() => dispatch(method, undefined, call), (error: unknown) => {
      assert.ok(error instanceof RpcError, method);
      assert.equal(error.code, ErrorCode.MethodNotFound, method);
      assert.equal(
        error.message,
        `method not found: '${
          method.slice(0, 100)
        }'; see rpc.discover for the methods`,
      );
      return true;
    });
  }
  assert.deepEqual(calls, []);
});

Deno.test("a handler map or a table that misses a method does not compile", () => {
  const { handlers } = recording();
  const { "$/ping": _ping, ...withoutPing } = handlers;
  // @ts-expect-error: no handler for $/ping
  const incomplete: MethodHandlers = withoutPing;
  const mistyped: MethodHandlers = {
    ...handlers,
    // @ts-expect-error: $/ping answers "pong", not a number
    "$/ping": () => 1,
  };
  const { "discover.catalog": _catalog, ...withoutCatalog } = methodTable;
  // @ts-expect-error: no entry for discover.catalog
  const table: MethodTable = withoutCatalog;
  const extra: MethodTable = {
    ...methodTable,
    // @ts-expect-error: not a method of MethodTypes
    "discover.extra": methodTable["$/ping"],
  };
  // The checks are the compiler's; at runtime the values are what they are.
  assert.equal(Object.hasOwn(incomplete, "$/ping"), false);
  assert.equal(typeof mistyped["$/ping"], "function");
  assert.equal(Object.hasOwn(table, "discover.catalog"), false);
  assert.ok(Object.hasOwn(extra, "discover.extra"));
});
