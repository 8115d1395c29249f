// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { openWatching, testBackend } from "./backend_suite.ts";
import { MemoryBackend } from "./memory.ts";

testBackend("memory", () => new MemoryBackend());

Deno.test("memory backend: changes reach the watcher before the write resolves", async () => {
  const backend = new MemoryBackend();
  const seen: number[] = [];
  await openWatching(backend, {
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

Deno.test("memory backend: a watch opened before open is told it is connected once open", async () => {
  const backend = new MemoryBackend();
  const statuses: boolean[] = [];
  backend.watch("svc", {
    changes: () => {},
    reset: () => {},
    status: (connected) => statuses.push(connected),
  });
  assert.deepEqual(statuses, []);
  await backend.open({ status: () => {} });
  assert.deepEqual(statuses, [true]);
  await backend.close();
});
