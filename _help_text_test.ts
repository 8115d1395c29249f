// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { HELP_WIDTH, wrap } from "./_help_text.ts";

Deno.test("wrap: lines fit the width after the indent, words are never split", () => {
  const text = "word ".repeat(40).trim();
  const lines = wrap(text, 28);
  assert.ok(lines.length > 1);
  for (const line of lines) assert.ok(28 + line.length <= HELP_WIDTH, line);
  assert.equal(lines.join(" "), text);
  // A word longer than the room stays whole, on a line of its own.
  const long = "x".repeat(70);
  assert.deepEqual(wrap(`a ${long} b`, 28), ["a", long, "b"]);
});
