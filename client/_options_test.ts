// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { checkOptions } from "./_options.ts";

const rule = {
  where: "lookup()",
  known: ["filter", "signal"],
  hint: (key: string, value: unknown) =>
    typeof value === "string" ? `try {filter: {${key}: ...}}` : undefined,
};

Deno.test("checkOptions() passes known keys and stands in {} for undefined", () => {
  const options = { filter: { any: "key" }, signal: undefined };
  assert.equal(checkOptions(options, rule), options);
  assert.deepEqual(checkOptions(undefined, rule), {});
});

Deno.test("checkOptions() names an unknown key, with the rule's hint or the known keys", () => {
  assert.throws(
    () => checkOptions({ zone: "b" } as object, rule),
    new TypeError(
      "'zone' is not an option of lookup(): try {filter: {zone: ...}}",
    ),
  );
  assert.throws(
    () => checkOptions({ filter: {}, limit: 5 } as object, rule),
    new TypeError(
      "'limit' is not an option of lookup(): its options are filter, signal",
    ),
  );
  // An unknown key counts even when its value is undefined.
  assert.throws(
    () => checkOptions({ timeout: undefined } as object, rule),
    /'timeout' is not an option of lookup\(\)/,
  );
});

Deno.test("checkOptions() refuses options that are not an object", () => {
  for (
    const [value, shown] of [
      ["b", `the string "b"`],
      [null, "null"],
      [[], "an array"],
      [5, "number 5"],
      [true, "boolean true"],
    ] as const
  ) {
    assert.throws(
      () => checkOptions(value as unknown as object, rule),
      new TypeError(
        `the options of lookup() must be an object such as {filter: ...}: got ${shown}`,
      ),
    );
  }
});
