// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { describeEtcdError, retrying, where } from "./_etcd_retry.ts";

Deno.test("describeEtcdError: the failures people meet, in words", () => {
  const cases: [unknown, string][] = [
    [
      new Error(
        "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:2379. Resolution note: ",
      ),
      "connection refused",
    ],
    [
      new Error(
        "14 UNAVAILABLE: Name resolution failed for target dns:nope:2379",
      ),
      "host not found",
    ],
    [new Error("4 DEADLINE_EXCEEDED: Deadline exceeded"), "no answer in time"],
    [
      new Error(
        "etcdserver: authentication failed, invalid user ID or password",
      ),
      "authentication failed: check the user name and password",
    ],
    [
      new Error("etcdserver: permission denied"),
      "permission denied for this user",
    ],
    [new Error("14 UNAVAILABLE: No connection established"), "unavailable"],
    [new Error("13 INTERNAL: something odd\nat stack"), "something odd"],
    [
      new Error("Execution prevented because the circuit breaker is open"),
      "calls paused after repeated failures",
    ],
    ["plain text", "plain text"],
  ];
  for (const [error, expected] of cases) {
    assert.equal(describeEtcdError(error), expected, String(error));
  }
});

Deno.test("where: the members' host:port", () => {
  assert.equal(where(["http://127.0.0.1:2379"]), "etcd at 127.0.0.1:2379");
  assert.equal(
    where(["https://a:1/", "http://[::1]:2"]),
    "etcd at a:1, [::1]:2",
  );
});

Deno.test("retrying: one line per failure, then done", async () => {
  const lines: string[] = [];
  const log = { info() {}, warn: (m: string) => void lines.push(m) };
  let tries = 0;
  await retrying("connect", () => {
    tries++;
    if (tries < 3) {
      return Promise.reject(
        new Error("14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:2379"),
      );
    }
    return Promise.resolve(true);
  }, {
    signal: new AbortController().signal,
    endpoints: ["http://127.0.0.1:2379"],
    log,
    backoff: { initialDelay: 2, maxDelay: 4, jitter: false },
  });
  assert.equal(tries, 3);
  assert.deepEqual(lines, [
    "etcd at 127.0.0.1:2379: could not connect (connection refused); retrying in 2 ms",
    "etcd at 127.0.0.1:2379: could not connect (connection refused); retrying in 4 ms",
  ]);
});

Deno.test("retrying: an abort ends the wait and the loop", async () => {
  const controller = new AbortController();
  let tries = 0;
  const done = retrying("resync", () => {
    tries++;
    return Promise.reject(new Error("down"));
  }, {
    signal: controller.signal,
    endpoints: ["http://127.0.0.1:2379"],
    backoff: { initialDelay: 60_000, jitter: false },
  });
  await new Promise((resolve) => setTimeout(resolve, 10));
  controller.abort();
  await done; // well before the minute's wait
  assert.equal(tries, 1);
});

Deno.test("retrying: the circuit breaker's refusal is logged with the last real reason", async () => {
  const lines: string[] = [];
  const errors = [
    new Error("14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:2379"),
    new Error("Execution prevented because the circuit breaker is open"),
  ];
  await retrying("connect", () => {
    const error = errors.shift();
    return error ? Promise.reject(error) : Promise.resolve(true);
  }, {
    signal: new AbortController().signal,
    endpoints: ["http://127.0.0.1:2379"],
    log: { info() {}, warn: (m: string) => void lines.push(m) },
    backoff: { initialDelay: 1, jitter: false },
  });
  assert.equal(lines.length, 2);
  assert.ok(
    lines.every((l) => l.includes("(connection refused)")),
    lines.join("\n"),
  );
});
