// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  GRPCDeadlineExceededError,
  GRPCInvalidArgumentError,
  isRecoverableError,
} from "etcd3";
import { EndpointDownError, EndpointHealth } from "./_etcd_health.ts";

const A = "http://127.0.0.1:1";
const B = "http://127.0.0.1:2";
const C = "http://127.0.0.1:3";

/** A probe whose answer per member the test sets. */
function fakeProbe() {
  const healthy = new Set<string>();
  const probed: string[] = [];
  return {
    healthy,
    probed,
    probe(endpoint: string): Promise<void> {
      probed.push(endpoint);
      return healthy.has(endpoint)
        ? Promise.resolve()
        : Promise.reject(new Error(`${endpoint} does not answer`));
    },
  };
}

function wait(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function fail(health: EndpointHealth, endpoint: string, error: Error) {
  await assert.rejects(
    health.policy(endpoint).execute(() => {
      throw error;
    }),
    (e) => e === error,
  );
}

Deno.test("a member whose call times out is skipped, the others are not", async () => {
  const { probe } = fakeProbe();
  const health = new EndpointHealth([A, B, C], probe, { probeInterval: 10 });
  try {
    await fail(health, B, new GRPCDeadlineExceededError("deadline exceeded"));
    assert.deepEqual(health.down, [B]);
    let ran = false;
    const refused = health.policy(B).execute(() => {
      ran = true;
    });
    await assert.rejects(refused, EndpointDownError);
    await refused.catch((e) => assert.ok(isRecoverableError(e)));
    assert.equal(ran, false, "the call did not reach the member");
    assert.equal(await health.policy(A).execute(() => "a"), "a");
    assert.equal(await health.policy(C).execute(() => "c"), "c");
  } finally {
    health.close();
  }
});

Deno.test("an error about the request, not the member, leaves it in", async () => {
  const { probe } = fakeProbe();
  const downs: string[] = [];
  const health = new EndpointHealth([A, B], probe, {
    probeInterval: 10,
    onDown: (endpoint) => downs.push(endpoint),
  });
  try {
    await fail(health, A, new GRPCInvalidArgumentError("bad key"));
    await fail(health, A, new TypeError("not an etcd error"));
    assert.deepEqual(health.down, []);
    assert.deepEqual(downs, [], "onDown not called");
    assert.equal(await health.policy(A).execute(() => 1), 1);
    await fail(health, A, new GRPCDeadlineExceededError("deadline exceeded"));
    await assert.rejects(health.policy(A).execute(() => 1), EndpointDownError);
    health.markDown(A);
    assert.deepEqual(downs, [A], "onDown called once when A is left out");
  } finally {
    health.close();
  }
});

Deno.test("a member is taken back once a probe finds it healthy, not before", async () => {
  const { probe, healthy, probed } = fakeProbe();
  const health = new EndpointHealth([A, B], probe, { probeInterval: 10 });
  try {
    await fail(health, A, new GRPCDeadlineExceededError("deadline exceeded"));
    await wait(60);
    assert.ok(probed.length >= 2, `probed ${probed.length} times`);
    assert.ok(probed.every((e) => e === A), "only the member left out");
    assert.equal(health.skips(A), true);
    healthy.add(A);
    await wait(60);
    assert.equal(health.skips(A), false);
    assert.deepEqual(health.down, []);
    const count = probed.length;
    await wait(40);
    assert.equal(probed.length, count, "no probes while all are healthy");
  } finally {
    health.close();
  }
});

Deno.test("with every member left out, calls go to all of them", async () => {
  const { probe } = fakeProbe();
  const health = new EndpointHealth([A, B], probe, { probeInterval: 10 });
  try {
    await fail(health, A, new GRPCDeadlineExceededError("deadline exceeded"));
    assert.equal(health.skips(A), true);
    await fail(health, B, new GRPCDeadlineExceededError("deadline exceeded"));
    assert.equal(health.skips(A), false);
    assert.equal(health.skips(B), false);
    assert.equal(await health.policy(A).execute(() => "tried"), "tried");
  } finally {
    health.close();
  }
});

Deno.test("a single member is never skipped", async () => {
  const { probe } = fakeProbe();
  const health = new EndpointHealth([A], probe, { probeInterval: 10 });
  try {
    await fail(health, A, new GRPCDeadlineExceededError("deadline exceeded"));
    assert.equal(health.skips(A), false);
    assert.equal(await health.policy(A).execute(() => "a"), "a");
  } finally {
    health.close();
  }
});

Deno.test("close stops probing and forgets members left out", async () => {
  const { probe, probed } = fakeProbe();
  const health = new EndpointHealth([A, B], probe, { probeInterval: 10 });
  await fail(health, A, new GRPCDeadlineExceededError("deadline exceeded"));
  health.close();
  const count = probed.length;
  await wait(40);
  assert.equal(probed.length, count);
  assert.deepEqual(health.down, []);
  await fail(health, B, new GRPCDeadlineExceededError("deadline exceeded"));
  assert.deepEqual(health.down, [], "nothing is left out after close");
});
