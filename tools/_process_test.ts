// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { freePort, restartableProcess } from "./_process.ts";

Deno.test("freePort hands out distinct bindable ports below the kernel's ephemeral range", async () => {
  // (Reading /proc directly needs --allow-all.)
  const range = await new Deno.Command("cat", {
    args: ["/proc/sys/net/ipv4/ip_local_port_range"],
  }).output();
  const low = Number(new TextDecoder().decode(range.stdout).split(/\s+/)[0]);
  assert.ok(low > 0, "no ephemeral range read");
  const ports = Array.from({ length: 200 }, () => freePort());
  assert.equal(
    new Set(ports).size,
    ports.length,
    "a port was handed out twice",
  );
  for (const port of ports) {
    assert.ok(
      port >= 20_000 && port < low,
      `${port} is not in [20000, ${low})`,
    );
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  }
});

Deno.test("a process that exits by itself has a status; a killed one has none", async () => {
  const exits = restartableProcess("sh", ["-c", "exit 3"]);
  exits.spawn();
  await exits.exited;
  assert.equal(exits.status?.code, 3);
  assert.equal(exits.running, true, "it ended, but nobody killed it");

  const sleeps = restartableProcess("sleep", ["60"]);
  sleeps.spawn();
  assert.equal(sleeps.status, undefined);
  await sleeps.kill();
  assert.equal(sleeps.running, false);
  assert.equal(sleeps.status, undefined);

  exits.spawn();
  const code = () => exits.status?.code;
  assert.equal(code(), undefined, "a new process starts without a status");
  await exits.exited;
  assert.equal(code(), 3);
});
