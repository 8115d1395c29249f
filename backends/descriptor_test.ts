// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  type BackendDescriptor,
  checkFlagNames,
  FlagError,
  parseCount,
  parseSeconds,
  SHARED_FLAG_NAMES,
} from "./descriptor.ts";

Deno.test("parseSeconds: decimal seconds above 0, fractions included", () => {
  assert.equal(parseSeconds("ttl", "10"), 10);
  assert.equal(parseSeconds("ttl", "0.5"), 0.5);
  assert.equal(parseSeconds("ttl", ".25"), 0.25);
  for (const bad of ["0", "0.0", "-1", "abc", "", "1e3", "Infinity", "1,5"]) {
    assert.throws(
      () => parseSeconds("ttl", bad),
      (error: Error) =>
        error instanceof FlagError && error.message.includes("--ttl") &&
        error.message.includes("fractions") &&
        error.message.includes(`'${bad}'`),
      bad,
    );
  }
});

Deno.test("parseSeconds: a minimum, and whole seconds only where asked", () => {
  assert.equal(parseSeconds("x", "2", { min: 2, whole: true }), 2);
  assert.throws(
    () => parseSeconds("x", "1", { min: 2, whole: true }),
    /--x must be a whole number of seconds, at least 2: got '1'/,
  );
  assert.throws(
    () => parseSeconds("x", "2.5", { min: 2, whole: true }),
    /whole/,
  );
  assert.equal(parseSeconds("x", "0.5", { min: 0.5 }), 0.5);
  assert.throws(() => parseSeconds("x", "0.4", { min: 0.5 }), /at least 0.5/);
});

Deno.test("parseCount: whole numbers, at least the minimum, with the reason", () => {
  assert.equal(parseCount("n", "1"), 1);
  assert.throws(() => parseCount("n", "0"), /--n must be at least 1: got 0/);
  assert.throws(() => parseCount("n", "1.5"), /--n must be a whole number/);
  assert.throws(() => parseCount("n", "99999999999999999999"), /whole number/);
  assert.throws(
    () => parseCount("max-frame-bytes", "10", { min: 32768, reason: "why" }),
    /--max-frame-bytes must be at least 32768 \(why\): got 10/,
  );
});

Deno.test("checkFlagNames: a backend's prefix (its name, or flagPrefix) or a shared name, each once", () => {
  const make = (
    flags: string[],
    flagPrefix?: string,
  ): BackendDescriptor => ({
    name: "zookeeper",
    ...(flagPrefix ? { flagPrefix } : {}),
    summary: "s",
    flags: flags.map((name) => ({ name, type: "string", help: "h" })),
    create: () => Promise.reject(new Error("not built here")),
  });
  checkFlagNames(make(["zookeeper-connect", "data-dir"]));
  checkFlagNames(make(["zk-connect"], "zk"));
  assert.ok(SHARED_FLAG_NAMES.includes("data-dir"));
  assert.throws(
    () => checkFlagNames(make(["zk-connect"])),
    /the zookeeper backend's flag --zk-connect must start with 'zookeeper-' or be one of --data-dir/,
  );
  assert.throws(
    () => checkFlagNames(make(["zookeeper-connect"], "zk")),
    /must start with 'zk-'/,
  );
  assert.throws(
    () => checkFlagNames(make(["data-dir", "data-dir"])),
    /declares --data-dir twice/,
  );
});
