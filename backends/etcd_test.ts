// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { startEtcd } from "../tools/etcd.ts";
import { testBackend } from "./backend_suite.ts";
import { Etcd3 } from "etcd3";
import { EtcdBackend, READ_PAGE_KEYS } from "./etcd.ts";
import {
  type BackendChange,
  type BackendState,
  OwnerConflictError,
} from "./backend.ts";
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

/** Two backends on one prefix, as two agents would hold them; closed when disposed. */
async function twoAgents(keyPrefix: string) {
  const a = new EtcdBackend({
    endpoints: cluster.endpoints,
    prefix: keyPrefix,
  });
  const b = new EtcdBackend({
    endpoints: cluster.endpoints,
    prefix: keyPrefix,
  });
  const ra = recorder(), rb = recorder();
  await a.open(ra.watcher);
  await b.open(rb.watcher);
  return {
    a,
    b,
    ra,
    rb,
    [Symbol.asyncDispose]: async () => {
      await a.close();
      await b.close();
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
      assert.ok(backend.keeps("svc", "10.0.0.1:80"), "kept by this agent");
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
    await using pair = await twoAgents(p);
    const { a, b, ra, rb } = pair;
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
    await assert.rejects(
      b.put(record("h:1", "agent-b/1"), { ifOwner: null }),
    );
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
    assert.throws(
      () => new EtcdBackend({ endpoints: ["http://x"], callTimeout: 0 }),
      /callTimeout/,
    );
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: open with etcd unreachable resolves, says not connected, logs each attempt, and close ends the retries",
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close(); // nothing listens there now
    const lines: string[] = [];
    const backend = new EtcdBackend({
      endpoints: [`http://127.0.0.1:${port}`],
      prefix: prefix(),
      log: { info() {}, warn: (m) => void lines.push(m) },
    });
    const r = recorder();
    const started = Date.now();
    await backend.open(r.watcher);
    // A refused connection fails at once; the bound is generous.
    assert.ok(Date.now() - started < 5000, "open waited for etcd");
    assert.deepEqual(r.statuses, [false]);
    assert.deepEqual(r.resets, []);
    await until(() => lines.length >= 2, "attempts are logged", 10_000);
    assert.match(
      lines[0],
      new RegExp(
        `^etcd at 127\\.0\\.0\\.1:${port}: could not connect \\(connection refused\\); retrying in `,
      ),
    );
    await backend.close();
    const after = lines.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok(lines.length <= after + 1, "it kept retrying after close");
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: a record stops being kept when it is deleted or another agent writes it, and ifKept spares the other agent's",
  async fn() {
    const p = prefix();
    await using pair = await twoAgents(p);
    const { a, b, ra } = pair;
    await a.put(record("h:1"));
    await a.put(record("h:2"));
    assert.ok(a.keeps("svc", "h:1") && a.keeps("svc", "h:2"));
    assert.equal(b.keeps("svc", "h:1"), false, "b did not write it");

    // The same owner moves to agent b, which writes the record again.
    await until(() => ra.changes.length === 2, "a sees its writes");
    const r3 = await b.put(record("h:1"), { ifOwner: "o1" });
    await until(() => ra.changes.some((c) => c.revision === r3), "a sees b");
    assert.equal(a.keeps("svc", "h:1"), false, "b keeps it now");
    // A removal that only applies to what a keeps leaves it alone...
    await assert.rejects(
      a.delete("svc", "h:1", { ifOwner: "o1", ifKept: true }),
      OwnerConflictError,
    );
    // A removal meant for an older version leaves a newer one alone.
    const before = a.version("svc", "h:2");
    assert.ok(before !== undefined);
    const r4 = await a.put({ ...record("h:2"), attrs: { a: "2" } });
    await until(() => ra.changes.some((c) => c.revision === r4), "a sees it");
    assert.notEqual(a.version("svc", "h:2"), before);
    await assert.rejects(
      a.delete("svc", "h:2", { ifVersion: before }),
      OwnerConflictError,
    );
    // ...and removes what a does keep.
    assert.ok(await a.delete("svc", "h:2", { ifOwner: "o1", ifKept: true }));
    assert.equal(a.keeps("svc", "h:2"), false);
    const keys = await getKeys(`${p}instances/svc/`);
    assert.deepEqual(keys, [`${p}instances/svc/h:1`]);
  },
});

Deno.test({
  ...etcdTest,
  name: "etcd backend: a record is released only on its owner's behalf",
  async fn() {
    const p = prefix();
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    await backend.open(recorder().watcher);
    try {
      await backend.put(record("h:1"));
      // A delete on another owner's behalf leaves this owner's record kept.
      await assert.rejects(
        backend.delete("svc", "h:1", { ifOwner: "someone-else" }),
        OwnerConflictError,
      );
      assert.ok(backend.keeps("svc", "h:1"));
      // Releasing it on another owner's behalf does nothing either; on its
      // owner's, it is no longer kept, while etcd still holds it.
      backend.release("svc", "h:1", { ifOwner: "someone-else" });
      assert.ok(backend.keeps("svc", "h:1"));
      backend.release("svc", "h:1", { ifOwner: "o1" });
      assert.equal(backend.keeps("svc", "h:1"), false);
      assert.deepEqual(await getKeys(`${p}instances/svc/`), [
        `${p}instances/svc/h:1`,
      ]);
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    `etcd backend: the initial read is paginated (more than ${READ_PAGE_KEYS} keys, one revision)`,
  async fn() {
    const p = prefix();
    const count = READ_PAGE_KEYS * 2 + 500;
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    try {
      for (let i = 0; i < count; i += 250) {
        await Promise.all(
          Array.from(
            { length: 250 },
            (_, j) =>
              etcd.put(
                `${p}instances/svc/10.2.${(i + j) >> 8}.${(i + j) & 255}:80`,
              )
                .value(
                  JSON.stringify({ attrs: {}, owner: "o", registeredAt: 1 }),
                ),
          ),
        );
      }
    } finally {
      etcd.close();
    }
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const r = recorder();
    await backend.open(r.watcher);
    try {
      const addrs = r.resets[0].records.map((x) => x.addr);
      assert.equal(addrs.length, count);
      assert.equal(new Set(addrs).size, count, "no key read twice");
    } finally {
      await backend.close();
    }
  },
});

async function getKeys(keyPrefix: string): Promise<string[]> {
  const etcd = new Etcd3({ hosts: cluster.endpoints });
  try {
    return (await etcd.getAll().prefix(keyPrefix).keys()).sort();
  } finally {
    etcd.close();
  }
}

Deno.test({
  ...etcdTest,
  name: "etcd backend: stop the module's etcd",
  async fn() {
    await cluster.stop();
  },
});
