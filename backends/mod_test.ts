// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { BACKENDS } from "./mod.ts";

Deno.test("BACKENDS: memory first (the default), names unique, each flag named after its backend", () => {
  assert.equal(BACKENDS[0].name, "memory");
  const names = BACKENDS.map((b) => b.name);
  assert.equal(new Set(names).size, names.length);
  const flags = new Set<string>();
  for (const backend of BACKENDS) {
    assert.match(backend.name, /^[a-z][a-z0-9]*$/);
    assert.ok(backend.summary.length > 0, backend.name);
    for (const flag of backend.flags) {
      assert.ok(
        flag.name.startsWith(`${backend.name}-`),
        `${backend.name}: --${flag.name}`,
      );
      assert.ok(!flags.has(flag.name), `--${flag.name} twice`);
      flags.add(flag.name);
    }
  }
});

Deno.test("BACKENDS: the memory backend builds and opens", async () => {
  const backend = await BACKENDS[0].create({}, {
    log: { info() {}, warn() {} },
    env: () => undefined,
    readFile: () => Promise.reject(new Error("no files")),
  });
  let connected = false;
  await backend.open({ status: (up) => void (connected = up) });
  assert.ok(connected);
  await backend.close();
});
