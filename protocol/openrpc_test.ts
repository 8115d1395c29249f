// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type { Ajv, ValidateFunction } from "ajv";
import { META_ID, openrpcAjv } from "../tests/_openrpc_ajv.ts";
import type { BackendChange } from "../backends/backend.ts";
import { View } from "../agent/view.ts";
import { methodTable } from "./methods.ts";
import { openrpcDocument } from "./openrpc.ts";
import { ErrorCode } from "./errors.ts";
import { EVENT_NOTIFICATION, type Filter } from "./types.ts";
import {
  validateAddr,
  validateAttrs,
  validateNoParams,
  validatePort,
  validateServiceName,
  validateServices,
  validateSubscribe,
  validateUnsubscribe,
} from "./validate.ts";

type Json = Record<string, unknown>;

const DOC_ID = "urn:discover:openrpc";
/** Codes raised by clients only; the agent never sends them. */
const CLIENT_ONLY: number[] = [ErrorCode.Timeout, ErrorCode.ConnectionClosed];
/** Methods that take no params. */
const NO_PARAMS: string[] = [
  "discover.status",
  "discover.catalog",
  "discover.owned",
  "discover.lease",
  "rpc.discover",
  "$/ping",
];

/** An ajv that knows the OpenRPC meta-schema and this document. */
function makeAjv(): Ajv {
  const ajv = openrpcAjv();
  ajv.addSchema(structuredClone(openrpcDocument), DOC_ID);
  return ajv;
}

const ajv = makeAjv();

function compileAt(pointer: string): ValidateFunction {
  return ajv.compile({ $ref: `${DOC_ID}#${pointer}` });
}

function explain(validate: ValidateFunction): string {
  return ajv.errorsText(validate.errors, { separator: "\n" });
}

function methods(): Json[] {
  return openrpcDocument.methods as Json[];
}

function methodIndex(name: string): number {
  const index = methods().findIndex((m) => m.name === name);
  assert.ok(index >= 0, `no method entry for ${name}`);
  return index;
}

function resolve(pointer: string): unknown {
  assert.ok(pointer.startsWith("#/"), `not a local $ref: ${pointer}`);
  let node: unknown = openrpcDocument;
  for (const part of pointer.slice(2).split("/")) {
    const key = part.replaceAll("~1", "/").replaceAll("~0", "~");
    assert.ok(
      node !== null && typeof node === "object" && Object.hasOwn(node, key),
      `$ref ${pointer} does not resolve`,
    );
    node = (node as Json)[key];
  }
  return node;
}

function refs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const item of node) refs(item, out);
  } else if (node !== null && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string") out.push(value);
      else refs(value, out);
    }
  }
  return out;
}

function examples(name: string): Json[] {
  return methods()[methodIndex(name)].examples as Json[];
}

function paramsOf(example: Json): Json {
  return Object.fromEntries(
    (example.params as Json[]).map((p) => [p.name, p.value]),
  );
}

function resultOf(example: Json): Json {
  return (example.result as Json).value as Json;
}

function accepts(check: () => unknown): boolean {
  try {
    check();
    return true;
  } catch {
    return false;
  }
}

Deno.test("openrpcDocument is valid against the OpenRPC meta-schema", () => {
  const validate = ajv.getSchema(META_ID) as ValidateFunction | undefined;
  assert.ok(validate, "the OpenRPC meta-schema did not compile");
  const valid = validate(openrpcDocument);
  if (!valid) {
    console.error(JSON.stringify(validate.errors, null, 2));
  }
  assert.equal(valid, true, explain(validate));
  assert.equal(openrpcDocument.openrpc, "1.3.2");
  assert.equal(openrpcDocument.info.title, "discover");
  assert.equal(openrpcDocument.info.version, "0.1.0");
  assert.deepEqual(openrpcDocument.info.license, {
    name: "BSD-3-Clause",
    url: "https://opensource.org/licenses/BSD-3-Clause",
  });
});

Deno.test("openrpcDocument is plain JSON data", () => {
  assert.deepEqual(
    JSON.parse(JSON.stringify(openrpcDocument)),
    openrpcDocument,
  );
});

Deno.test("openrpcDocument has one by-name entry per method", () => {
  const names = methods().map((m) => m.name);
  assert.equal(new Set(names).size, names.length, "duplicate method names");
  assert.deepEqual(
    [...names].sort(),
    [...Object.keys(methodTable), EVENT_NOTIFICATION].sort(),
    "the methods differ from the method table",
  );
  for (const method of methods()) {
    assert.equal(method.paramStructure, "by-name", `${method.name}`);
    const examples = method.examples as unknown[] | undefined;
    assert.ok(examples?.length, `${method.name} has no example`);
  }
  const event = methods()[methodIndex(EVENT_NOTIFICATION)];
  assert.equal(event.result, undefined, "a notification has no result");
  assert.match(String(event.description), /notification/);
});

Deno.test("every $ref resolves", () => {
  for (const ref of refs(openrpcDocument)) {
    if (ref === META_ID) continue;
    resolve(ref);
  }
});

Deno.test("components.errors lists every code the agent sends", () => {
  const errors = openrpcDocument.components.errors as Record<
    string,
    { code: number; message: string }
  >;
  const codes = Object.values(errors).map((e) => e.code);
  assert.equal(new Set(codes).size, codes.length, "duplicate error codes");
  for (const [name, code] of Object.entries(ErrorCode)) {
    if (CLIENT_ONLY.includes(code)) {
      assert.ok(!codes.includes(code), `${name} (${code}) is client-side only`);
    } else {
      assert.ok(codes.includes(code), `${name} (${code}) is missing`);
      assert.equal(errors[name]?.code, code, `components.errors.${name}`);
    }
  }
  for (const method of methods()) {
    for (const ref of refs(method.errors ?? [])) {
      assert.match(ref, /^#\/components\/errors\//, `${method.name}`);
    }
  }
});

Deno.test("examples validate against the param and result schemas", () => {
  let checked = 0;
  methods().forEach((method, m) => {
    const params = method.params as Json[];
    const names = params.map((p) => p.name);
    const examples = method.examples as Json[];
    examples.forEach((example) => {
      const where = `${method.name} example '${example.name}'`;
      const given = (example.params as Json[]).map((p) => p.name);
      assert.equal(new Set(given).size, given.length, `${where}: repeated`);
      for (const param of params) {
        if (param.required) {
          assert.ok(given.includes(param.name), `${where}: no ${param.name}`);
        }
      }
      for (const { name, value } of example.params as Json[]) {
        const p = names.indexOf(name);
        assert.ok(p >= 0, `${where}: unknown param ${name}`);
        const validate = compileAt(`/methods/${m}/params/${p}/schema`);
        assert.ok(validate(value), `${where}, ${name}: ${explain(validate)}`);
        checked++;
      }
      const result = example.result as Json | undefined;
      if (method.result === undefined) {
        assert.equal(
          result,
          undefined,
          `${where}: a notification has no result`,
        );
        return;
      }
      assert.ok(result, `${where}: no result`);
      const validate = compileAt(`/methods/${m}/result/schema`);
      assert.ok(
        validate(result.value),
        `${where}, result: ${explain(validate)}`,
      );
      checked++;
    });
  });
  assert.ok(checked > 20, `only ${checked} example values checked`);
});

Deno.test("methods without params list -32602 and the rule", () => {
  for (const name of NO_PARAMS) {
    const method = methods()[methodIndex(name)];
    assert.deepEqual(method.params, [], `${name} has params`);
    assert.ok(
      refs(method.errors).includes("#/components/errors/InvalidParams"),
      `${name} does not list InvalidParams`,
    );
    assert.match(String(method.description), /`\{\}` or `\[\]`/, name);
  }
  for (const ok of [undefined, {}, []]) {
    assert.ok(accepts(() => validateNoParams(ok)), JSON.stringify(ok));
  }
  for (const bad of [{ x: 1 }, [1], [{}]]) {
    assert.throws(
      () => validateNoParams(bad),
      (e: { code?: number }) => e.code === ErrorCode.InvalidParams,
      JSON.stringify(bad),
    );
  }
});

Deno.test("result schemas require every field they describe", () => {
  const schemas = openrpcDocument.components.schemas as Record<string, Json>;
  const fields = (name: string) => ({
    required: [...(schemas[name].required as string[])].sort(),
    properties: Object.keys(schemas[name].properties as Json).sort(),
  });
  for (
    const name of [
      "Instance",
      "ServicesResult",
      "CatalogResult",
      "SubscribeResult",
      "StatusResult",
    ]
  ) {
    const { required, properties } = fields(name);
    // A critical instance's note is the one field that may be absent.
    const optional = name === "Instance" ? ["note"] : [];
    assert.deepEqual(
      required,
      properties.filter((field) => !optional.includes(field)),
      `${name}: every field is required`,
    );
  }
  assert.ok(fields("SubscribeResult").required.includes("epoch"));
  assert.ok(fields("StatusResult").required.includes("epoch"));
});

/**
 * The agent's view (agent/view.ts) at `revision` of the story the examples
 * tell: 192.0.2.11:6379 registered at 17; 192.0.2.10:6379 registered at 42,
 * its attributes changed at 43 and 44, removed at 45.
 */
function storyView(epoch: string, revision: number): View {
  const record = (addr: string, attrs: Record<string, string>) => ({
    service: "cache",
    addr,
    attrs,
    owner: addr,
    registeredAt: 0,
  });
  const ours = "192.0.2.10:6379";
  const changes: BackendChange[] = [
    {
      type: "put",
      revision: 17,
      record: record("192.0.2.11:6379", { zone: "b" }),
    },
    { type: "put", revision: 42, record: record(ours, { zone: "b" }) },
    {
      type: "put",
      revision: 43,
      record: record(ours, { zone: "b", role: "primary" }),
    },
    {
      type: "put",
      revision: 44,
      record: record(ours, { zone: "b", role: "replica" }),
    },
    { type: "delete", revision: 45, service: "cache", addr: ours },
  ];
  const view = new View();
  view.reset({ revision: 0, epoch, records: [] });
  view.changes(changes.filter((c) => c.revision <= revision));
  return view;
}

Deno.test("subscribe examples use one epoch and the agent's replay rules", () => {
  const [status] = examples("discover.status");
  const epoch = String(resultOf(status).epoch);
  let foreign = 0;
  for (const example of examples("discover.subscribe")) {
    const where = `subscribe example '${example.name}'`;
    const params = paramsOf(example);
    const result = resultOf(example);
    const description = String(example.description);
    assert.equal(result.epoch, epoch, `${where}: another epoch`);
    if (params.epoch !== undefined && params.epoch !== epoch) foreign++;
    const view = storyView(epoch, Number(result.revision));
    assert.equal(view.revision, result.revision, `${where}: revision`);
    const replay = params.since === undefined ? undefined : view.replay(
      String(params.service),
      params.filter as Filter | undefined,
      Number(params.since),
      params.epoch as string | undefined,
    );
    assert.equal(result.mode, replay ? "replay" : "snapshot", where);
    if (replay) {
      for (const event of replay) {
        const said = `\`${event.kind}\` at ${event.revision}`;
        assert.ok(description.includes(said), `${where}: says no ${said}`);
      }
    } else {
      for (const instance of view.list(String(params.service))) {
        assert.ok(description.includes(instance.addr), `${where}: no up`);
      }
    }
  }
  assert.ok(foreign > 0, "no example of a since from another epoch");
});

Deno.test("address examples are in the canonical form validate.ts gives", () => {
  for (const example of examples("discover.register")) {
    const params = paramsOf(example);
    if (params.addr === undefined) continue;
    assert.equal(validateAddr(params.addr), resultOf(example).addr);
  }
  // The canonical forms the documents describe.
  const canonical: [string, string][] = [
    ["Cache-2.Example.NET:06379", "cache-2.example.net:6379"],
    ["Cache.Example.:80", "cache.example:80"],
    ["[2001:DB8::7]:6379", "[2001:db8::7]:6379"],
    ["[0::1]:80", "[::1]:80"],
    ["[::FFFF:192.0.2.1]:80", "[::ffff:c000:201]:80"],
    ["010.000.0.01:80", "10.0.0.1:80"],
    ["192.0.2.10:6379", "192.0.2.10:6379"],
  ];
  for (const [given, expected] of canonical) {
    assert.equal(validateAddr(given), expected, given);
  }
});

Deno.test("schemas accept what validate.ts accepts", () => {
  const s = "/components/schemas";
  const subscribe = methods()[methodIndex("discover.subscribe")];
  const param = (name: string) =>
    `/methods/${methodIndex("discover.subscribe")}/params/${
      (subscribe.params as Json[]).findIndex((p) => p.name === name)
    }/schema`;
  const label = (n: number) => "a".repeat(n);
  const host253 = [label(63), label(63), label(63), label(61)].join(".");
  const host254 = [label(63), label(63), label(63), label(62)].join(".");
  const manyAttrs = (n: number) =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
  const cases: [string, (value: unknown) => unknown, unknown[]][] = [
    [`${s}/ServiceName`, validateServiceName, [
      "cache",
      "a",
      "A.b_c-d",
      "9x",
      "x".repeat(63),
      "x".repeat(64),
      "",
      "-x",
      ".x",
      "_x",
      "a/b",
      "a b",
      "caché",
      "a\n",
      5,
      null,
    ]],
    [`${s}/Port`, validatePort, [1, 80, 65535, 0, 65536, -1, 1.5, "80", null]],
    [`${s}/Addr`, validateAddr, [
      "10.0.0.1:6379",
      "192.0.2.10:1",
      "Cache-2.Example.NET:6379",
      "example.com.:80",
      "localhost:65535",
      "host:00080",
      "host:0",
      "host:00000",
      "host:65536",
      "host:000001",
      "host:",
      "host",
      ":80",
      "[::1]:80",
      "[2001:DB8::7]:06379",
      "[::ffff:192.0.2.1]:80",
      "[::1]",
      "[::1:80",
      "[::1]]:80",
      "[g::1]:80",
      "[:]:80",
      `[${"1".repeat(45)}]:80`,
      `[${"1".repeat(46)}]:80`,
      "::1:80",
      "-bad.example:80",
      "bad-.example:80",
      "a_b:80",
      "a..b:80",
      "host:80 ",
      " host:80",
      "999.1.1.1:80",
      "256.1.1.1:80",
      "0.0.0.0:80",
      "255.255.255.255:80",
      "192.0.2.255:80",
      "192.0.2.256:80",
      "010.0.0.1:80",
      "0000255.1.1.1:80",
      "1.2.3:80",
      "1.2.3.4.5:80",
      "1.2.3.4.:80",
      "1..2.3:80",
      "1.2.3.4a:80",
      "1:80",
      "12345:80",
      "Cache.Example.:80",
      `${label(63)}:80`,
      `${label(64)}:80`,
      `${host253}:80`,
      `${host254}:80`,
      `${label(63)}.${label(63)}.${label(63)}.${label(60)}.:80`,
      "host:80\n",
      80,
      null,
    ]],
    [`${s}/Attrs`, validateAttrs, [
      {},
      { zone: "b" },
      { "a:b.c_d-e": "x" },
      { ["k".repeat(64)]: "v" },
      { ["k".repeat(65)]: "v" },
      { "-a": "x" },
      { "": "x" },
      { "a b": "x" },
      { a: 1 },
      { a: null },
      { a: "x".repeat(1024) },
      { a: "x".repeat(1025) },
      manyAttrs(64),
      manyAttrs(65),
      [],
      null,
      "zone=b",
    ]],
    [`${s}/SubscriptionId`, (v) => validateUnsubscribe({ subscription: v }), [
      "1",
      "x".repeat(64),
      "x".repeat(65),
      "",
      1,
      null,
    ]],
    [`${s}/Filter`, (v) => validateServices({ service: "a", filter: v }), [
      {},
      { attrs: {} },
      { attrs: { zone: "b" } },
      { zone: "b" },
      { attrs: [] },
      { attrs: { zone: 1 } },
      null,
      [],
    ]],
    [param("epoch"), (v) => validateSubscribe({ service: "a", epoch: v }), [
      "3f1c2a9e-6b1d-4c53-9a51-0f6f3b8e2d47",
      "e",
      "x".repeat(64),
      "x".repeat(65),
      "",
      42,
      null,
    ]],
    [param("since"), (v) => validateSubscribe({ service: "a", since: v }), [
      0,
      43,
      Number.MAX_SAFE_INTEGER,
      Number.MAX_SAFE_INTEGER + 1,
      -1,
      1.5,
      "43",
      null,
    ]],
  ];
  for (const [pointer, check, values] of cases) {
    const validate = compileAt(pointer);
    for (const value of values) {
      const shown = JSON.stringify(value)?.slice(0, 60);
      assert.equal(
        validate(value),
        accepts(() => check(value)),
        `${pointer} disagrees with validate.ts on ${shown}`,
      );
    }
  }
  // Rules the schemas can only state in words: the JSON length of the
  // attribute map, and value lengths in UTF-16 code units (JSON Schema
  // counts code points).
  const long = Object.fromEntries(
    Array.from({ length: 9 }, (_, i) => [`k${i}`, "x".repeat(1000)]),
  );
  assert.equal(accepts(() => validateAttrs(long)), false);
  const attrs = openrpcDocument.components.schemas.Attrs as Json;
  assert.match(String(attrs.description), /8192 characters as JSON/);
  assert.match(String(attrs.description), /UTF-16 code units/);
});

Deno.test("event examples follow the rules of ServiceEvent", () => {
  const validate = compileAt("/components/schemas/ServiceEvent");
  const instance = {
    id: "a/h:1",
    service: "a",
    addr: "h:1",
    attrs: {},
    revision: 1,
    registeredAt: 0,
    created: 1,
    health: "passing",
  };
  assert.ok(validate({ kind: "current", revision: 3 }), explain(validate));
  assert.ok(validate({ kind: "leader", revision: 3, instance }));
  assert.ok(validate({ kind: "leader", revision: 3, instance: null }));
  assert.ok(!validate({ kind: "leader", revision: 3 }));
  assert.ok(!validate({ kind: "up", revision: 3, instance: null }));
  assert.ok(validate({
    kind: "down",
    revision: 3,
    instance: { ...instance, health: "critical", note: "HTTP 500" },
  }));
  assert.ok(
    !validate({
      kind: "up",
      revision: 3,
      instance: { ...instance, health: "ok" },
    }),
  );
  assert.ok(validate({ kind: "down", revision: 3, instance }));
  assert.ok(!validate({ kind: "current", revision: 3, instance }));
  assert.ok(!validate({ kind: "up", revision: 3 }));
  assert.ok(!validate({ kind: "gone", revision: 3, instance }));
});
