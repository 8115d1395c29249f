// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { BACKENDS, checkFlagNames } from "./mod.ts";

Deno.test("BACKENDS: memory first (the default), names unique, each flag named after its backend", () => {
  assert.equal(BACKENDS[0].name, "memory");
  const names = BACKENDS.map((b) => b.name);
  assert.equal(new Set(names).size, names.length);
  assert.deepEqual(names, ["memory", "etcd", "zookeeper"]);
  const flags = new Map<string, string>();
  for (const backend of BACKENDS) {
    assert.match(backend.name, /^[a-z][a-z0-9]*$/);
    assert.ok(backend.summary.length > 0, backend.name);
    checkFlagNames(backend);
    for (const flag of backend.flags) {
      // A shared flag (--data-dir) may be declared by several backends.
      const other = flags.get(flag.name);
      assert.ok(
        other === undefined ||
          !flag.name.startsWith(`${backend.flagPrefix ?? backend.name}-`),
        `--${flag.name} declared by ${other} and ${backend.name}`,
      );
      flags.set(flag.name, backend.name);
    }
  }
  const zk = BACKENDS.find((b) => b.name === "zookeeper")!;
  assert.deepEqual(zk.flags.map((f) => f.name), [
    "zk-connect",
    "zk-prefix",
    "zk-session-timeout",
  ]);
});

const context = {
  log: { info() {}, warn() {} },
  env: () => undefined,
  readFile: () => Promise.reject(new Error("no files")),
};

Deno.test("BACKENDS: the zookeeper flags are checked, and the backend builds without connecting", async () => {
  const zk = BACKENDS.find((b) => b.name === "zookeeper")!;
  await assert.rejects(
    zk.create({ "zk-connect": "127.0.0.1" }, context),
    /--zk-connect must be comma-separated HOST:PORT addresses: got '127\.0\.0\.1'/,
  );
  await assert.rejects(
    zk.create({ "zk-prefix": "/discover/" }, context),
    /--zk-prefix must be a path such as \/discover/,
  );
  await assert.rejects(
    zk.create({ "zk-session-timeout": "0.5" }, context),
    /--zk-session-timeout must be a number of seconds of at least 1/,
  );
  const backend = await zk.create({
    "zk-connect": "127.0.0.1:2181,127.0.0.2:2181",
    "zk-prefix": "/a/b",
    "zk-session-timeout": "4",
  }, context);
  assert.equal(backend.name, "zookeeper");
  await backend.close();
});

Deno.test("BACKENDS: the memory backend builds and opens", async () => {
  const backend = await BACKENDS[0].create({}, context);
  let connected = false;
  await backend.open({ status: (up) => void (connected = up) });
  assert.ok(connected);
  await backend.close();
});
