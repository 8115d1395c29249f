// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { startEtcd } from "../tools/etcd.ts";
import { testBackend } from "./backend_suite.ts";
import { EtcdBackend } from "./etcd.ts";
import type { BackendChange, BackendState } from "./backend.ts";
import { until } from "../tests/_wait.ts";

// One etcd for this module; every test gets its own key prefix.
const cluster = await startEtcd();
const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const prefix = () => `/test-${crypto.randomUUID()}/`;

testBackend(
  "etcd",
  () => new EtcdBackend({ endpoints: cluster.endpoints, prefix: prefix() }),
  etcdTest,
);

function recorder() {
  const changes: BackendChange[] = [];
  const resets: BackendState[] = [];
  const statuses: boolean[] = [];
  return {
    changes,
    resets,
    statuses,
    watcher: {
      changes: (c: BackendChange[]) => changes.push(...c),
      reset: (s: BackendState) => resets.push(s),
      status: (connected: boolean) => statuses.push(connected),
    },
  };
}

const record = (addr: string, owner = "o1") => ({
  service: "svc",
  addr,
  attrs: { a: "1" },
  owner,
  registeredAt: 1,
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: keys follow the documented layout, attached to the agent's lease",
  async fn() {
    const p = prefix();
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const r = recorder();
    await backend.open(r.watcher);
    try {
      await backend.put(record("10.0.0.1:80"));
      const res = await fetch(`${cluster.endpoints[0]}/v3/kv/range`, {
        method: "POST",
        body: JSON.stringify({ key: btoa(`${p}instances/svc/10.0.0.1:80`) }),
      });
      const kv = (await res.json()).kvs[0];
      assert.deepEqual(JSON.parse(atob(kv.value)), {
        attrs: { a: "1" },
        owner: "o1",
        registeredAt: 1,
      });
      assert.notEqual(kv.lease, undefined, "the key is attached to a lease");
      await until(
        () => backend.keeps("svc", "10.0.0.1:80"),
        "watch sees our key",
      );
      assert.equal(r.resets[0].epoch.startsWith("etcd-"), true);
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: two agents see each other's writes with the same revisions and epoch",
  async fn() {
    const p = prefix();
    const a = new EtcdBackend({ endpoints: cluster.endpoints, prefix: p });
    const b = new EtcdBackend({ endpoints: cluster.endpoints, prefix: p });
    const ra = recorder(), rb = recorder();
    await a.open(ra.watcher);
    await b.open(rb.watcher);
    try {
      const r1 = await a.put(record("h:1", "agent-a/1"));
      const r2 = await b.put(record("h:2", "agent-b/1"));
      await until(
        () => ra.changes.length === 2 && rb.changes.length === 2,
        "both changes",
      );
      assert.deepEqual(ra.changes.map((c) => c.revision), [r1, r2]);
      assert.deepEqual(rb.changes.map((c) => c.revision), [r1, r2]);
      assert.equal(ra.resets[0].epoch, rb.resets[0].epoch);
      // Conditional writes see the other agent's record.
      await until(() => a.keeps("svc", "h:1"), "a knows its key");
      await assert.rejects(
        b.put(record("h:1", "agent-b/1"), { ifOwner: null }),
      );
    } finally {
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: a closed agent's records expire with its lease, all at once",
  async fn() {
    const p = prefix();
    const a = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
      leaseTtl: 2,
    });
    const watcher = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const r = recorder();
    await a.open(recorder().watcher);
    await watcher.open(r.watcher);
    try {
      for (let i = 1; i <= 5; i++) await a.put(record(`h:${i}`));
      await until(() => r.changes.length === 5, "five puts");
      const closedAt = Date.now();
      await a.close(); // releases the lease without revoking it
      await until(() => r.changes.length === 10, "five deletes", 15_000);
      const deletes = r.changes.slice(5);
      assert.ok(deletes.every((c) => c.type === "delete"));
      assert.equal(
        new Set(deletes.map((c) => c.revision)).size,
        1,
        "one revision",
      );
      const elapsed = Date.now() - closedAt;
      // The lease TTL (2 s) plus etcd's expiry check: well under 10 s.
      assert.ok(
        elapsed >= 1000 && elapsed < 10_000,
        `expired after ${elapsed} ms`,
      );
    } finally {
      await watcher.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name: "etcd backend: keys that are not discover records are ignored",
  async fn() {
    const p = prefix();
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const r = recorder();
    await backend.open(r.watcher);
    try {
      const put = (key: string, value: string) =>
        fetch(`${cluster.endpoints[0]}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({
            key: btoa(`${p}instances/${key}`),
            value: btoa(value),
          }),
        });
      await put("svc/not-an-addr", "{}");
      await put("bad name/h:1", "{}");
      await put("svc/h:1", "not json");
      await backend.put(record("h:2"));
      await until(() => r.changes.length >= 1, "the real record");
      assert.deepEqual(
        r.changes.map((c) => c.type === "put" && c.record.addr),
        ["h:2"],
      );
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name: "etcd backend: options are checked",
  fn() {
    assert.throws(() => new EtcdBackend({ endpoints: [] }), /endpoints/);
    assert.throws(
      () => new EtcdBackend({ endpoints: ["http://x"], prefix: "nope" }),
      /prefix/,
    );
    assert.throws(
      () => new EtcdBackend({ endpoints: ["http://x"], leaseTtl: 1 }),
      /leaseTtl/,
    );
  },
});

Deno.test({
  ...etcdTest,
  name: "etcd backend: stop the module's etcd",
  async fn() {
    await cluster.stop();
  },
});
