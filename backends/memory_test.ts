// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { testBackend } from "./backend_suite.ts";
import { MemoryBackend } from "./memory.ts";

testBackend("memory", () => new MemoryBackend());

Deno.test("memory backend: changes reach the watcher before the write resolves", async () => {
  const backend = new MemoryBackend();
  const seen: number[] = [];
  await backend.open({
    changes: (changes) => seen.push(...changes.map((c) => c.revision)),
    reset: () => {},
    status: () => {},
  });
  const revision = await backend.put({
    service: "s",
    addr: "h:1",
    attrs: {},
    owner: "o",
    registeredAt: 0,
  });
  assert.deepEqual(seen, [revision]);
  await backend.close();
});
