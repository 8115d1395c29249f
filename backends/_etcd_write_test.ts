// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { allows, isConditional, KeyedSerial } from "./_etcd_write.ts";

const ours = (lease: string) => lease === "1" || lease === "2";
const mine = { owner: "a", modRevision: "5", lease: "1" };
const theirs = { owner: "a", modRevision: "5", lease: "9" };

Deno.test("isConditional: any of ifOwner, ifKept, ifVersion", () => {
  assert.equal(isConditional({}), false);
  assert.equal(isConditional({ ifKept: false }), false);
  assert.equal(isConditional({ ifOwner: null }), true);
  assert.equal(isConditional({ ifKept: true }), true);
  assert.equal(isConditional({ ifVersion: "3" }), true);
});

Deno.test("allows: ifOwner compares the owner, null meaning no record", () => {
  assert.ok(allows(mine, { ifOwner: "a" }, ours));
  assert.ok(!allows(mine, { ifOwner: "b" }, ours));
  assert.ok(allows(undefined, { ifOwner: null }, ours));
  assert.ok(!allows(mine, { ifOwner: null }, ours));
});

Deno.test("allows: ifKept needs a record on one of this agent's leases", () => {
  assert.ok(allows(mine, { ifKept: true }, ours));
  assert.ok(!allows(theirs, { ifKept: true }, ours));
  assert.ok(!allows(undefined, { ifKept: true }, ours));
});

Deno.test("allows: ifVersion needs that version, unless only this agent moved the record to a new lease", () => {
  assert.ok(allows(mine, { ifVersion: "5" }, ours));
  assert.ok(!allows(theirs, { ifVersion: "4" }, ours));
  // Rewritten by this agent's restore (its lease, same owner): still the one.
  const restored = { owner: "a", modRevision: "8", lease: "2" };
  assert.ok(allows(restored, { ifVersion: "5", ifOwner: "a" }, ours));
  assert.ok(!allows(restored, { ifVersion: "5", ifOwner: "b" }, ours));
  assert.ok(!allows(undefined, { ifVersion: "5" }, ours));
});

Deno.test("KeyedSerial: tasks of one key run one at a time, in order, whatever their outcome", async () => {
  const serial = new KeyedSerial();
  const log: string[] = [];
  const task = (name: string, fail = false) => async () => {
    log.push(`start ${name}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
    log.push(`end ${name}`);
    if (fail) throw new Error(name);
    return name;
  };
  const results = await Promise.allSettled([
    serial.run("k", task("a", true)),
    serial.run("k", task("b")),
    serial.run("other", task("c")),
  ]);
  assert.deepEqual(results.map((r) => r.status), [
    "rejected",
    "fulfilled",
    "fulfilled",
  ]);
  assert.ok(log.indexOf("end a") < log.indexOf("start b"), log.join(", "));
  // Another key does not wait.
  assert.ok(log.indexOf("start c") < log.indexOf("end a"), log.join(", "));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(serial.size, 0);
});
