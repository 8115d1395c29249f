// Copyright the discover authors. BSD-3-Clause license.

/**
 * The OpenRPC document as a running agent serves it: `rpc.discover` over
 * the wire and `GET /openrpc.json` return `openrpcDocument`, it is a valid
 * OpenRPC document, and it describes every method the agent answers, the
 * results it sends and the events it pushes.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Ajv, ValidateFunction } from "ajv";
import { openrpcDocument } from "../protocol/openrpc.ts";
import { methodTable } from "../protocol/methods.ts";
import { EVENT_NOTIFICATION } from "../protocol/types.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { openRaw } from "./_raw_socket.ts";
import { META_ID, openrpcAjv } from "./_openrpc_ajv.ts";

type Json = Record<string, unknown>;

const DOC_ID = "urn:discover:openrpc:served";
/** Errors any request may get besides the ones a method lists. */
const ENVELOPE_ERRORS = [-32700, -32600, -32601, -32603];

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function explain(ajv: Ajv, validate: ValidateFunction): string {
  return ajv.errorsText(validate.errors, { separator: "\n" });
}

/** Follows a local `$ref` (`#/components/...`) in `doc`. */
function resolve(doc: Json, pointer: string): unknown {
  assert.ok(pointer.startsWith("#/"), `not a local $ref: ${pointer}`);
  let node: unknown = doc;
  for (const part of pointer.slice(2).split("/")) {
    assert.ok(isObject(node) && Object.hasOwn(node, part), pointer);
    node = node[part];
  }
  return node;
}

/**
 * Paths of fields in `value` that `schema` does not describe: a field the
 * agent sends must be in the document.
 */
function undocumented(
  doc: Json,
  value: unknown,
  schema: unknown,
  path: string,
  out: string[] = [],
): string[] {
  while (isObject(schema) && typeof schema.$ref === "string") {
    if (!schema.$ref.startsWith("#/")) return out; // an external schema
    schema = resolve(doc, schema.$ref);
  }
  if (!isObject(schema)) return out;
  if (isObject(value) && isObject(schema.properties)) {
    for (const [key, item] of Object.entries(value)) {
      if (!Object.hasOwn(schema.properties, key)) {
        if (schema.additionalProperties === undefined) {
          out.push(`${path}.${key}`);
        }
        continue;
      }
      undocumented(doc, item, schema.properties[key], `${path}.${key}`, out);
    }
  }
  if (Array.isArray(value) && schema.items !== undefined) {
    value.forEach((item, i) =>
      undocumented(doc, item, schema.items, `${path}[${i}]`, out)
    );
  }
  return out;
}

Deno.test("openrpc agent: rpc.discover and GET /openrpc.json serve a valid document", async () => {
  await using agent = await spawnAgent();
  await using raw = await openRaw(agent.url);
  const response = await raw.call("rpc.discover");
  assert.ok(!Object.hasOwn(response, "error"), JSON.stringify(response.error));
  const served = response.result;
  assert.ok(isObject(served));

  const ajv = openrpcAjv();
  const validate = ajv.getSchema(META_ID);
  assert.ok(validate, "the meta-schema did not compile");
  assert.ok(validate(served), explain(ajv, validate));
  // The validator does reject: a document without methods is not OpenRPC.
  assert.equal(validate({ ...served, methods: undefined }), false);
  assert.equal(validate({ ...served, openrpc: 1 }), false);

  assert.deepEqual(served, openrpcDocument);

  const http = await fetch(`${agent.http}openrpc.json`);
  assert.equal(http.status, 200);
  assert.match(http.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await http.json(), served);
});

Deno.test("openrpc agent: the document describes every method the agent answers", async (t) => {
  await using agent = await spawnAgent();
  await using raw = await openRaw(agent.url);
  const response = await raw.call("rpc.discover");
  const doc = response.result as Json;
  assert.ok(isObject(doc), JSON.stringify(response));
  const methods = doc.methods as Json[];
  const names = methods.map((m) => m.name as string);

  await t.step("the method names are exactly the method table's", () => {
    assert.equal(new Set(names).size, names.length, `duplicates in ${names}`);
    assert.deepEqual(
      [...names].sort(),
      [...Object.keys(methodTable), EVENT_NOTIFICATION].sort(),
    );
  });

  const ajv = openrpcAjv();
  ajv.addSchema(structuredClone(doc), DOC_ID);
  const compileAt = (pointer: string) =>
    ajv.compile({ $ref: `${DOC_ID}#${pointer}` });
  const eventIndex = names.indexOf(EVENT_NOTIFICATION);
  const eventParams = (methods[eventIndex].params as Json[]).map((p) => ({
    name: p.name as string,
    validate: compileAt(
      `/methods/${eventIndex}/params/${
        (methods[eventIndex].params as Json[]).indexOf(p)
      }/schema`,
    ),
    schema: p.schema,
  }));

  /** Kinds of the events checked. */
  const kinds = new Set<unknown>();
  /** Every frame that is not a response must be a documented event. */
  const checkEvents = (frames: unknown[]) => {
    for (const frame of frames) {
      assert.ok(isObject(frame), JSON.stringify(frame));
      assert.equal(frame.method, EVENT_NOTIFICATION, JSON.stringify(frame));
      assert.ok(!Object.hasOwn(frame, "id"), "an event with an id");
      const params = frame.params as Json;
      kinds.add((params.result as Json | undefined)?.kind);
      assert.deepEqual(
        Object.keys(params).sort(),
        eventParams.map((p) => p.name).sort(),
      );
      for (const p of eventParams) {
        assert.ok(p.validate(params[p.name]), explain(ajv, p.validate));
        assert.deepEqual(
          undocumented(doc, params[p.name], p.schema, p.name),
          [],
          "event fields missing from the document",
        );
      }
    }
  };

  for (const [index, method] of methods.entries()) {
    const name = method.name as string;
    if (name === EVENT_NOTIFICATION) continue;
    await t.step(
      `${name}: every example is answered as documented`,
      async () => {
        const examples = method.examples as Json[];
        assert.ok(examples.length > 0, `${name} has no example`);
        const validateResult = compileAt(`/methods/${index}/result/schema`);
        const listed = (method.errors as Json[]).map((e) =>
          (resolve(doc, e.$ref as string) as Json).code
        );
        for (const example of examples) {
          const params = Object.fromEntries(
            (example.params as Json[]).map((p) => [p.name, p.value]),
          );
          const reply = await raw.call(
            name,
            Object.keys(params).length > 0 ? params : undefined,
          );
          const label = `${name} (${example.name})`;
          if (Object.hasOwn(reply, "error")) {
            const code = (reply.error as Json).code as number;
            assert.notEqual(
              code,
              -32601,
              `${label}: the agent does not know it`,
            );
            assert.notEqual(code, -32602, `${label}: the example is invalid`);
            assert.ok(
              listed.includes(code) || ENVELOPE_ERRORS.includes(code),
              `${label}: error ${code} is not listed for the method`,
            );
            continue;
          }
          assert.ok(
            validateResult(reply.result),
            `${label}: ${explain(ajv, validateResult)}`,
          );
          assert.deepEqual(
            undocumented(
              doc,
              reply.result,
              (method.result as Json).schema,
              "result",
            ),
            [],
            `${label}: result fields missing from the document`,
          );
        }
        checkEvents(await raw.drain(200));
      },
    );
  }

  await t.step(
    "every documented method is answered, others are not",
    async () => {
      for (const name of names) {
        const reply = await raw.call(name, {});
        const code = isObject(reply.error) ? reply.error.code : undefined;
        if (name === EVENT_NOTIFICATION) {
          // Agent to client only.
          assert.equal(code, -32601, JSON.stringify(reply));
        } else {
          assert.notEqual(code, -32601, `${name}: ${JSON.stringify(reply)}`);
        }
      }
      for (const name of ["discover.lookup", "rpc.describe", "$/cancel"]) {
        const reply = await raw.call(name, {});
        assert.equal(
          (reply.error as Json)?.code,
          -32601,
          JSON.stringify(reply),
        );
      }
      checkEvents(await raw.drain(200));
    },
  );

  await t.step(
    "the examples made the agent send snapshot events as well as up events",
    () => {
      // Both forms of a snapshot went through the checks above.
      for (const kind of ["snapshot", "up", "leader", "current"]) {
        assert.ok(kinds.has(kind), `no ${kind} event: ${[...kinds]}`);
      }
    },
  );
});
