// Copyright the discover authors. BSD-3-Clause license.

/**
 * The ZooKeeper servers the tests and benchmarks start: a server that
 * cannot start is reported at once, with its log, not after the wait.
 *
 * Bound: a JVM that fails to bind exits within a few seconds; three
 * attempts are allowed 30 s in all, well under one attempt's 30 s wait
 * for a server that runs but does not serve.
 */

import assert from "node:assert/strict";
import { startZooKeeper } from "./zookeeper.ts";
import { freePort } from "./_process.ts";

Deno.test("a server whose client port is taken fails the start with its exit code and log", async () => {
  const port = freePort();
  using _taken = Deno.listen({ hostname: "127.0.0.1", port });
  const started = Date.now();
  const error = await startZooKeeper(1, { clientPorts: [port] }).then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(error instanceof Error, "the start succeeded on a taken port");
  assert.match(
    error.message,
    new RegExp(`zk1 at 127.0.0.1:${port} exited with code [1-9]`),
  );
  assert.match(error.message, /Address already in use/);
  assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
});

Deno.test("a started server serves, and stops serving once stopped", async () => {
  const zk = await startZooKeeper(1);
  assert.equal(await zk.members[0].mode(), "standalone");
  assert.ok(zk.members[0].pid);
  await zk.stop();
  assert.equal(zk.members[0].running, false);
  assert.equal(await zk.members[0].mode(), undefined);
});
