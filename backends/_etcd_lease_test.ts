// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Etcd3 } from "etcd3";
import {
  AgentLease,
  type AgentLeaseEvents,
  expired,
  MAX_OWN_LEASES,
} from "./_etcd_lease.ts";

/** A lease of the fake client: grants as told, renews as told. */
class FakeLease extends EventEmitter {
  released = false;
  renewals = 0;
  constructor(
    readonly granted: Promise<string>,
    readonly renew: () => Promise<{ TTL: string }>,
  ) {
    super();
    granted.catch(() => {});
  }
  grant() {
    return this.granted;
  }
  keepaliveOnce() {
    this.renewals++;
    return this.renew();
  }
  release() {
    this.released = true;
  }
}

function fakeClient(
  grants: (() => Promise<string>)[],
  renew = () => Promise.resolve({ TTL: "10" }),
) {
  const leases: FakeLease[] = [];
  const client = {
    lease() {
      const lease = new FakeLease(grants.shift()!(), renew);
      leases.push(lease);
      return lease;
    },
  } as unknown as Etcd3;
  return { client, leases };
}

function recorder() {
  const seen: string[] = [];
  const events: AgentLeaseEvents = {
    renewed: () => void seen.push("renewed"),
    lost: (id) => void seen.push(`lost ${id}`),
    failed: () => void seen.push("failed"),
  };
  return { seen, events };
}

Deno.test("AgentLease: one grant shared by every caller; a failed grant is released and tried again", async () => {
  const { client, leases } = fakeClient([
    () => Promise.reject(new Error("14 UNAVAILABLE")),
    () => Promise.resolve("11"),
  ]);
  const { seen, events } = recorder();
  const lease = new AgentLease(client, { ttl: 10, callTimeout: 3000, events });
  await assert.rejects(lease.current(), /UNAVAILABLE/);
  assert.ok(leases[0].released);
  assert.equal(lease.id, undefined);
  const [a, b] = await Promise.all([lease.current(), lease.current()]);
  assert.equal(a, "11");
  assert.equal(b, "11");
  assert.equal(leases.length, 2);
  assert.equal(lease.id, "11");
  assert.ok(lease.ours("11"));
  assert.deepEqual(seen, ["renewed"]);
  lease.close();
});

Deno.test("AgentLease: a lost lease is reported once and forgotten, but stays ours", async () => {
  const { client, leases } = fakeClient([
    () => Promise.resolve("1"),
    () => Promise.resolve("2"),
  ]);
  const { seen, events } = recorder();
  const lease = new AgentLease(client, { ttl: 10, callTimeout: 3000, events });
  await lease.current();
  leases[0].emit("lost", new Error("expired"));
  assert.deepEqual(seen, ["renewed", "lost 1"]);
  lease.drop();
  assert.ok(leases[0].released);
  leases[0].emit("lost", new Error("again")); // listeners are gone
  assert.equal(await lease.current(), "2");
  assert.ok(lease.ours("1") && lease.ours("2"));
  lease.close();
});

Deno.test("AgentLease: only the last MAX_OWN_LEASES leases count as ours", async () => {
  const grants = Array.from(
    { length: MAX_OWN_LEASES + 1 },
    (_, i) => () => Promise.resolve(String(i)),
  );
  const { client } = fakeClient(grants);
  const lease = new AgentLease(client, {
    ttl: 10,
    callTimeout: 3000,
    events: recorder().events,
  });
  for (let i = 0; i <= MAX_OWN_LEASES; i++) {
    await lease.current();
    lease.drop();
  }
  assert.ok(!lease.ours("0"));
  assert.ok(lease.ours("1"));
  assert.ok(lease.ours(String(MAX_OWN_LEASES)));
  lease.close();
});

Deno.test("AgentLease: check renews on a fresh call only after half the TTL without a renewal", async () => {
  let fail = false;
  const { client, leases } = fakeClient(
    [() => Promise.resolve("1")],
    () =>
      fail
        ? Promise.reject(new Error("4 DEADLINE_EXCEEDED"))
        : Promise.resolve({ TTL: "1" }),
  );
  const { seen, events } = recorder();
  // A TTL of 0.02 s: half of it passes in 10 ms.
  const lease = new AgentLease(client, {
    ttl: 0.02,
    callTimeout: 3000,
    events,
  });
  await lease.current();
  await lease.check();
  assert.equal(leases[0].renewals, 0, "renewed although it was just granted");
  await new Promise((resolve) => setTimeout(resolve, 15));
  await lease.check();
  assert.equal(leases[0].renewals, 1);
  fail = true;
  await new Promise((resolve) => setTimeout(resolve, 15));
  await lease.check();
  assert.deepEqual(seen, ["renewed", "renewed", "failed"]);
  lease.close();
  await lease.check(); // closed: nothing
  assert.equal(leases[0].renewals, 2);
});

Deno.test("expired: a keep-alive TTL of 0 (etcd) or -1 (etcd 3.4's gRPC proxy) means the lease is gone", () => {
  assert.equal(expired({ TTL: "0" }), true);
  assert.equal(expired({ TTL: "-1" }), true);
  assert.equal(expired({ TTL: 0 }), true);
  assert.equal(expired({ TTL: "10" }), false);
  assert.equal(expired({ TTL: "1" }), false);
});

Deno.test("AgentLease: a renewal answered with TTL -1 or 0 is a lost lease, not a renewal", async () => {
  for (const TTL of ["-1", "0"]) {
    const { client, leases } = fakeClient(
      [() => Promise.resolve("5")],
      () => Promise.resolve({ TTL }),
    );
    const { seen, events } = recorder();
    const lease = new AgentLease(client, {
      ttl: 0.02,
      callTimeout: 3000,
      events,
    });
    await lease.current();
    assert.deepEqual(seen.splice(0), ["renewed"], "the grant");
    // The keep-alive stream's answer, as the gRPC proxy of etcd 3.4 sends it
    // for an expired lease.
    leases[0].emit("keepaliveSucceeded", { ID: "5", TTL });
    assert.deepEqual(seen, ["lost 5"], `stream, TTL ${TTL}`);
    seen.length = 0;
    // A fresh renewal after half the TTL answers the same.
    await new Promise((resolve) => setTimeout(resolve, 15));
    await lease.check();
    assert.deepEqual(seen, ["lost 5"], `check, TTL ${TTL}`);
    lease.close();
  }
});

Deno.test("AgentLease.left: a renewal counts from the send of the keep-alive it answers, never later", async () => {
  const { client, leases } = fakeClient([() => Promise.resolve("21")]);
  const { events } = recorder();
  const lease = new AgentLease(client, { ttl: 10, callTimeout: 3000, events });
  assert.equal(lease.left(), 0, "no lease yet");
  const before = performance.now();
  await lease.current();
  // Granted: the TTL runs from (at the latest) the grant's send.
  const granted = lease.left();
  assert.ok(granted <= 10_000 && granted > 9_000, `left ${granted}`);
  assert.ok(performance.now() + granted <= before + 10_000 + 50);
  const stream = leases[0];
  stream.emit("keepaliveEstablished");
  stream.emit("keepaliveFired"); // sent now
  const fired = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 60));
  stream.emit("keepaliveFired"); // a later one, not answered yet
  // The answer is credited to the oldest keep-alive in flight.
  stream.emit("keepaliveSucceeded", { TTL: "10" });
  const left = lease.left();
  assert.ok(
    performance.now() + left <= fired + 10_000 + 1,
    "credited with the first send, not the second",
  );
  // A new stream starts over: an answer without a keep-alive of its own
  // credits nothing.
  stream.emit("keepaliveEstablished");
  const now = performance.now();
  stream.emit("keepaliveSucceeded", { TTL: "10" });
  assert.ok(now + lease.left() <= fired + 10_000 + 1);
  lease.close();
  assert.equal(lease.left(), 0, "closed: nothing to vouch for");
});
