// Copyright the discover authors. BSD-3-Clause license.
import assert from "node:assert/strict";
import { matches, sameAttrs } from "./instance_equal.ts";

Deno.test("sameAttrs() ignores key order and compares own keys only", () => {
  assert.equal(sameAttrs({ a: "1", b: "2" }, { b: "2", a: "1" }), true);
  assert.equal(sameAttrs({}, {}), true);
  assert.equal(sameAttrs({ a: "1" }, { a: "2" }), false);
  assert.equal(sameAttrs({ a: "1" }, { a: "1", b: "2" }), false);
  assert.equal(sameAttrs({ a: "1", b: "2" }, { a: "1" }), false);
  assert.equal(sameAttrs({ a: "" }, { b: "" }), false);
  assert.equal(sameAttrs({ constructor: "x" }, {}), false);
  assert.equal(sameAttrs({}, { constructor: "x" }), false);
});

// --- matches ---------------------------------------------------------------

Deno.test("matches() treats an absent or empty filter as matching everything", () => {
  assert.equal(matches({}, undefined), true);
  assert.equal(matches({ zone: "b" }, undefined), true);
  assert.equal(matches({ zone: "b" }, {}), true);
  assert.equal(matches({ zone: "b" }, { attrs: {} }), true);
});

Deno.test("matches() requires every filter attribute with the same value", () => {
  const attrs = { zone: "b", id: "1" };
  assert.equal(matches(attrs, { attrs: { zone: "b" } }), true);
  assert.equal(matches(attrs, { attrs: { zone: "b", id: "1" } }), true);
  assert.equal(matches(attrs, { attrs: { zone: "c" } }), false);
  assert.equal(matches(attrs, { attrs: { zone: "B" } }), false);
  assert.equal(matches(attrs, { attrs: { zone: "b", id: "2" } }), false);
  assert.equal(matches(attrs, { attrs: { rack: "1" } }), false);
  assert.equal(matches({}, { attrs: { zone: "" } }), false);
  assert.equal(matches({ zone: "" }, { attrs: { zone: "" } }), true);
});

Deno.test("matches() ignores inherited properties of the attributes", () => {
  assert.equal(matches({}, { attrs: { constructor: "Object" } }), false);
  assert.equal(matches({}, { attrs: { toString: "x" } }), false);
  assert.equal(
    matches({ constructor: "x" }, { attrs: { constructor: "x" } }),
    true,
  );
});
