// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { KeyedSerial } from "./keyed_serial.ts";

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
