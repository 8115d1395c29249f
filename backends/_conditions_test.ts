// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { allows, isConditional } from "./_conditions.ts";

const mine = { owner: "a", version: "5", ours: true };
const theirs = { owner: "a", version: "5", ours: false };

Deno.test("isConditional: any of ifOwner, ifKept, ifVersion", () => {
  assert.equal(isConditional({}), false);
  assert.equal(isConditional({ ifKept: false }), false);
  assert.equal(isConditional({ ifOwner: null }), true);
  assert.equal(isConditional({ ifKept: true }), true);
  assert.equal(isConditional({ ifVersion: "3" }), true);
});

Deno.test("allows: ifOwner compares the owner, null meaning no record", () => {
  assert.ok(allows(mine, { ifOwner: "a" }));
  assert.ok(!allows(mine, { ifOwner: "b" }));
  assert.ok(allows(undefined, { ifOwner: null }));
  assert.ok(!allows(mine, { ifOwner: null }));
});

Deno.test("allows: ifKept needs a record that this agent keeps alive", () => {
  assert.ok(allows(mine, { ifKept: true }));
  assert.ok(!allows(theirs, { ifKept: true }));
  assert.ok(!allows(undefined, { ifKept: true }));
});

Deno.test("allows: ifVersion needs that version, unless only this agent moved the record", () => {
  assert.ok(allows(mine, { ifVersion: "5" }));
  assert.ok(!allows(theirs, { ifVersion: "4" }));
  // Rewritten by this agent's restore (kept by it, same owner): still the one.
  const restored = { owner: "a", version: "8", ours: true };
  assert.ok(allows(restored, { ifVersion: "5", ifOwner: "a" }));
  assert.ok(!allows(restored, { ifVersion: "5", ifOwner: "b" }));
  assert.ok(!allows(undefined, { ifVersion: "5" }));
});
