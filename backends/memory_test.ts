// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { openWatching, testBackend } from "./backend_suite.ts";
import { MemoryBackend } from "./memory.ts";

testBackend("memory", () => new MemoryBackend(), { history: true });

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

Deno.test("memory backend: stateAt reaches back as far as the changes kept, no further", async () => {
  const backend = new MemoryBackend({ historySize: 2 });
  await backend.open({ status: () => {} });
  const put = (addr: string, v: string) =>
    backend.put({
      service: "s",
      addr,
      attrs: { v },
      owner: "o",
      registeredAt: 0,
    });
  const r1 = await put("h:1", "1");
  const r2 = await put("h:1", "2");
  const r3 = await put("h:2", "1");
  // Kept: r2 and r3, so the state at r1 and after can be rebuilt.
  const at1 = await backend.stateAt("s", r1);
  assert.deepEqual(at1?.records.map((r) => [r.addr, r.attrs.v]), [[
    "h:1",
    "1",
  ]]);
  assert.equal((await backend.stateAt("s", r2))?.records.length, 1);
  assert.equal(await backend.stateAt("s", r1 - 1), undefined, "not kept");
  assert.equal(await backend.stateAt("s", r3 + 1), undefined, "the future");
  await backend.close();
});

Deno.test("memory backend: the changes kept are bounded by bytes too", async () => {
  const backend = new MemoryBackend({ historyBytes: 10_000 });
  await backend.open({ status: () => {} });
  const put = (v: string) =>
    backend.put({
      service: "s",
      addr: "h:1",
      attrs: { pad: v.repeat(1000) },
      owner: "o",
      registeredAt: 0,
    });
  const revisions: number[] = [];
  for (let i = 0; i < 30; i++) revisions.push(await put(String(i % 10)));
  // About 1,100 bytes a change: fewer than 10 of the 30 are kept.
  assert.equal(await backend.stateAt("s", revisions[5]), undefined);
  const recent = await backend.stateAt("s", revisions[25]);
  assert.equal(recent?.records[0].attrs.pad, "5".repeat(1000));
  await backend.close();
});
