// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { startEtcd } from "../tools/etcd.ts";
import { openWatching, testBackend } from "./backend_suite.ts";
import { Etcd3 } from "etcd3";
import { BATCH_MAX_WRITES, EtcdBackend, READ_PAGE_KEYS } from "./etcd.ts";
import {
  type BackendChange,
  type BackendState,
  OwnerConflictError,
} from "./backend.ts";
import { until } from "../tests/_wait.ts";
import { keyWrite, TxnBatcher } from "./_etcd_write.ts";

// One etcd for this module; every test gets its own key prefix.
const cluster = await startEtcd();
const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const prefix = () => `/test-${crypto.randomUUID()}/`;

testBackend(
  "etcd",
  () => new EtcdBackend({ endpoints: cluster.endpoints, prefix: prefix() }),
  { ...etcdTest, history: true },
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
  await openWatching(a, ra.watcher);
  await openWatching(b, rb.watcher);
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
    "etcd backend: a watch's first state comes with its status, in the same turn",
  async fn() {
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: prefix(),
    });
    await backend.open({ status: () => {} });
    try {
      // What an agent's view does: whoever waits for the first state runs
      // in a later microtask, and must find the watch live (a write in a
      // view said to be unreachable is refused).
      const seen: (boolean | undefined)[] = [];
      let up: boolean | undefined;
      const { promise: checked, resolve } = Promise.withResolvers<void>();
      const watch = backend.watch("svc", {
        changes: () => {},
        reset: () =>
          queueMicrotask(() => {
            seen.push(up);
            resolve();
          }),
        status: (connected) => up = connected,
      });
      await checked;
      assert.deepEqual(seen, [true]);
      await watch.close();
    } finally {
      await backend.close();
    }
  },
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
    await openWatching(backend, r.watcher);
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
    await openWatching(a, recorder().watcher);
    await openWatching(watcher, r.watcher);
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
  name:
    "etcd backend: a service's watch is live once its state is read, and a change written right then, before the watch exists, still arrives",
  async fn() {
    await using agents = await twoAgents(prefix());
    const { a, b } = agents;
    await b.put(record("h:1"));
    const events: string[] = [];
    let written: Promise<number> | undefined;
    const watch = a.watch("svc", {
      reset: (state) => {
        events.push(`reset ${state.records.map((r) => r.addr)}`);
        // The watch is created only once the read is delivered: this
        // write can land before it, after the revision read.
        written = b.put(record("h:2", "o2"));
      },
      status: (connected) => events.push(`status ${connected}`),
      changes: (changes) => {
        for (const change of changes) {
          events.push(
            `${change.type} ${change.type === "put" ? change.record.addr : ""}`,
          );
        }
      },
    });
    try {
      await until(() => events.includes("put h:2"), "the change written");
      // Live (the agent's `current`) as soon as the state is read, without
      // waiting for the watch.
      assert.deepEqual(events, ["reset h:1", "status true", "put h:2"]);
      assert.ok(written, "written on reset");
      await written;
    } finally {
      await watch.close();
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
    await openWatching(backend, r.watcher);
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
    // A watch opened meanwhile says at once that it is not connected.
    const w = recorder();
    backend.watch("svc", w.watcher);
    assert.deepEqual(w.statuses, [false]);
    assert.deepEqual(w.resets, []);
    const attempt = new RegExp(
      `^etcd at 127\\.0\\.0\\.1:${port}: could not connect \\(connection refused\\); retrying in `,
    );
    await until(
      () => lines.filter((l) => attempt.test(l)).length >= 2,
      "attempts are logged",
      10_000,
    );
    assert.equal(lines[0], "etcd is unreachable: writes fail until it answers");
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
    const { a, b, ra, rb } = pair;
    await a.put(record("h:1"));
    await a.put(record("h:2"));
    assert.ok(a.keeps("svc", "h:1") && a.keeps("svc", "h:2"));
    assert.equal(b.keeps("svc", "h:1"), false, "b did not write it");

    // The same owner moves to agent b, which writes the record again (b's
    // conditional write goes by what b's watch told it).
    await until(
      () => ra.changes.length === 2 && rb.changes.length === 2,
      "both see a's writes",
    );
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
  name:
    "etcd backend: what a read says of a record counts from its delivery on: who keeps it and its version",
  async fn() {
    const p = prefix();
    // Neither watches every service: a learns of b's write by its read.
    const a = new EtcdBackend({ endpoints: cluster.endpoints, prefix: p });
    const b = new EtcdBackend({ endpoints: cluster.endpoints, prefix: p });
    await using _ = {
      [Symbol.asyncDispose]: async () => {
        await a.close();
        await b.close();
      },
    };
    await b.open(recorder().watcher);
    const first = await openWatching(a, recorder().watcher, "svc");
    await a.put(record("h:1"));
    assert.ok(a.keeps("svc", "h:1"));
    // a stops watching the service; b writes the record under its lease.
    await first.close();
    const rb = await b.put(record("h:1"));
    // a reads the service again, and is asked in the same turn as the
    // read's delivery, before anything else runs.
    const seen: { keeps: boolean; version?: string }[] = [];
    const delivered = Promise.withResolvers<void>();
    const again = a.watch("svc", {
      changes: () => {},
      reset: () => {
        seen.push({
          keeps: a.keeps("svc", "h:1"),
          version: a.version("svc", "h:1"),
        });
        delivered.resolve();
      },
      status: () => {},
    });
    await delivered.promise;
    await again.close();
    assert.deepEqual(seen, [{ keeps: false, version: String(rb) }]);
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
    await openWatching(backend, recorder().watcher);
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
    await openWatching(backend, r.watcher);
    try {
      const addrs = r.resets[0].records.map((x) => x.addr);
      assert.equal(addrs.length, count);
      assert.equal(new Set(addrs).size, count, "no key read twice");
    } finally {
      await backend.close();
    }
  },
});

/** A watcher that keeps each `changes()` call apart. */
function callRecorder() {
  const calls: BackendChange[][] = [];
  const resets: BackendState[] = [];
  return {
    calls,
    resets,
    /** Every change delivered. */
    get changes() {
      return calls.flat();
    },
    /** The addresses held: the last reset's, then the changes after it. */
    held(): Set<string> {
      const last = resets.at(-1);
      const held = new Set(last?.records.map((r) => r.addr));
      for (const change of calls.flat()) {
        if (change.revision <= (last?.revision ?? 0)) continue;
        if (change.type === "put") held.add(change.record.addr);
        else held.delete(change.addr);
      }
      return held;
    },
    watcher: {
      changes: (c: BackendChange[]) => void calls.push([...c]),
      reset: (state: BackendState) => void resets.push(state),
      status() {},
    },
  };
}

/** Each revision of `calls`, with its changes: they must all come in one call. */
function byRevision(calls: BackendChange[][]): Map<number, BackendChange[]> {
  const out = new Map<number, BackendChange[]>();
  const seenIn = new Map<number, number>();
  for (const [i, call] of calls.entries()) {
    for (const change of call) {
      const first = seenIn.get(change.revision) ?? i;
      assert.equal(
        first,
        i,
        `revision ${change.revision} came in two changes() calls`,
      );
      seenIn.set(change.revision, i);
      out.set(change.revision, [...out.get(change.revision) ?? [], change]);
    }
  }
  return out;
}

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: a storm of 500 concurrent registrations takes far fewer transactions than writes, each revision delivered in one call",
  async fn() {
    const p = prefix();
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const watching = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const r = callRecorder();
    await openWatching(backend, recorder().watcher);
    await openWatching(watching, r.watcher);
    try {
      const count = 500;
      const revisions = await Promise.all(
        Array.from(
          { length: count },
          (_, i) =>
            backend.put(record(`10.3.${i >> 8}.${i & 255}:80`), {
              ifOwner: null,
            }),
        ),
      );
      // Each transaction is one revision: at least count / BATCH_MAX_WRITES
      // of them, and far fewer than one per write.
      const txns = new Set(revisions).size;
      assert.ok(
        txns >= Math.ceil(count / BATCH_MAX_WRITES) && txns <= count / 5,
        `${count} writes in ${txns} transactions`,
      );
      await until(() => r.changes.length === count, "every registration");
      const delivered = byRevision(r.calls);
      assert.deepEqual(
        [...delivered.keys()].sort((a, b) => a - b),
        [...new Set(revisions)].sort((a, b) => a - b),
      );
      for (const [revision, changes] of delivered) {
        assert.equal(
          changes.length,
          revisions.filter((x) => x === revision).length,
          `the writes of revision ${revision}`,
        );
      }
    } finally {
      await backend.close();
      await watching.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: within a batch each write keeps its own condition: one conflict fails alone",
  async fn() {
    const p = prefix();
    await using pair = await twoAgents(p);
    const { a, b, ra } = pair;
    // Another agent holds h:7; agent a has not heard of it yet, or has.
    const taken = await b.put(record("h:7", "other"), { ifOwner: null });
    await until(
      () => ra.changes.some((c) => c.revision === taken),
      "a sees b's write",
    );
    // Held in flight: everything below goes in shared transactions.
    const first = a.put(record("h:0"), { ifOwner: null });
    const results = await Promise.allSettled(
      Array.from(
        { length: 40 },
        (_, i) => a.put(record(`h:${i + 1}`), { ifOwner: null }),
      ),
    );
    await first;
    const rejected = results.flatMap((r, i) =>
      r.status === "rejected" ? [[i + 1, r.reason]] : []
    );
    assert.equal(rejected.length, 1, "only the conflicting write fails");
    const [index, error] = rejected[0];
    assert.equal(index, 7);
    assert.ok(error instanceof OwnerConflictError);
    assert.equal(error.owner, "other");
    const fulfilled = results.flatMap((r) =>
      r.status === "fulfilled" ? [r.value] : []
    );
    assert.ok(
      new Set(fulfilled).size < fulfilled.length,
      "the others shared transactions",
    );
    // A conditional delete in a batch with others: the same.
    const removals = await Promise.allSettled([
      a.delete("svc", "h:1", { ifOwner: "o1" }),
      a.delete("svc", "h:7", { ifOwner: "o1" }),
      a.delete("svc", "h:2", { ifOwner: "o1" }),
    ]);
    assert.deepEqual(removals.map((r) => r.status), [
      "fulfilled",
      "rejected",
      "fulfilled",
    ]);
    const keys = await getKeys(`${p}instances/svc/`);
    assert.ok(keys.includes(`${p}instances/svc/h:7`));
    assert.ok(!keys.includes(`${p}instances/svc/h:1`));
    assert.equal(keys.length, 41 - 2);
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: etcd decides each write of a batch by its own compare, in one revision",
  async fn() {
    const p = prefix();
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    try {
      await etcd.put(`${p}taken`).value("theirs");
      const old = await etcd.put(`${p}moved`).value("v1");
      await etcd.put(`${p}moved`).value("v2");
      let transactions = 0;
      const batcher = new TxnBatcher((txn) => {
        transactions++;
        return etcd.kv.txn(txn);
      }, { timeout: 10_000 });
      const put = (key: string, guard?: { absent: true }) =>
        batcher.run(
          keyWrite(`${p}${key}`, { put: "ours", lease: "0" }, { guard }),
        );
      const outcomes = await Promise.all([
        put("free", { absent: true }),
        put("taken", { absent: true }),
        batcher.run(keyWrite(`${p}moved`, { delete: true }, {
          guard: { modRevision: old.header.revision },
        })),
        put("plain"),
      ]);
      assert.equal(transactions, 1);
      assert.deepEqual(outcomes.map((o) => o.succeeded), [
        true,
        false,
        false,
        true,
      ]);
      assert.equal(new Set(outcomes.map((o) => o.revision)).size, 1);
      // A failed compare reads the key instead.
      assert.equal(
        outcomes[1].responses[0].response_range.kvs[0].value.toString(),
        "theirs",
      );
      assert.equal(
        outcomes[2].responses[0].response_range.kvs[0].value.toString(),
        "v2",
      );
      const values = await etcd.getAll().prefix(p).strings();
      assert.deepEqual(values, {
        [`${p}free`]: "ours",
        [`${p}moved`]: "v2",
        [`${p}plain`]: "ours",
        [`${p}taken`]: "theirs",
      });
    } finally {
      etcd.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name: "etcd backend: writes of one key keep their order, batched or not",
  async fn() {
    const p = prefix();
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
    });
    const r = callRecorder();
    await openWatching(backend, r.watcher);
    try {
      const v = (n: string) => ({ ...record("h:1"), attrs: { v: n } });
      // Other keys keep transactions busy meanwhile.
      const noise = Array.from(
        { length: 100 },
        (_, i) => backend.put(record(`n:${i + 1}`)),
      );
      const ordered = [
        backend.put(v("1")),
        backend.put(v("2")),
        backend.delete("svc", "h:1", { ifOwner: "o1" }),
        backend.put(v("3")),
        backend.delete("svc", "h:1"),
        backend.put(v("4")),
      ];
      const revisions = await Promise.all(ordered);
      await Promise.all(noise);
      for (let i = 1; i < revisions.length; i++) {
        assert.ok(revisions[i]! > revisions[i - 1]!, revisions.join(", "));
      }
      await until(() => r.changes.length === 106, "every change");
      const mine = r.changes.filter((c) =>
        c.type === "delete" ? c.addr === "h:1" : c.record.addr === "h:1"
      );
      assert.deepEqual(
        mine.map((c) => c.type === "put" ? c.record.attrs.v : "deleted"),
        ["1", "2", "deleted", "3", "deleted", "4"],
      );
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: a flood of records with 24 KiB attributes stays under etcd's request limit",
  async fn() {
    const p = prefix();
    const warnings: string[] = [];
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
      log: { info() {}, warn: (m) => void warnings.push(m) },
    });
    const r = callRecorder();
    await openWatching(backend, r.watcher);
    try {
      // 8,180 characters of 3 bytes: about 24 KiB of attributes each, so
      // 64 in one transaction would exceed etcd's 1.5 MiB.
      const big = "€".repeat(8180);
      const count = 200;
      const revisions = await Promise.all(
        Array.from(
          { length: count },
          (_, i) =>
            backend.put({ ...record(`h:${i + 1}`), attrs: { a: big } }, {
              ifOwner: null,
            }),
        ),
      );
      assert.deepEqual(warnings, [], "no transaction refused");
      await until(() => r.changes.length === count, "every record");
      const delivered = byRevision(r.calls);
      const perTxn = [...delivered.values()].map((c) => c.length);
      // At most 1 MiB of values a transaction: 42 of these.
      assert.ok(perTxn.every((n) => n <= 42), perTxn.join(","));
      assert.ok(new Set(revisions).size < count / 5, "still batched");
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend: the records of a lost lease are written back together, in a few transactions",
  async fn() {
    const p = prefix();
    const backend = new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: p,
      leaseTtl: 3,
    });
    const r = callRecorder();
    await openWatching(backend, r.watcher);
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    try {
      const count = 300;
      await Promise.all(
        Array.from(
          { length: count },
          (_, i) => backend.put(record(`h:${i + 1}`)),
        ),
      );
      await until(() => r.changes.length === count, "every record");
      const kv = await etcd.get(`${p}instances/svc/h:1`).exec();
      await etcd.leaseClient.leaseRevoke({ ID: kv.kvs[0].lease });
      // etcd deletes them all; the backend grants a new lease and writes
      // every record back. The watcher gets the puts as changes or, when
      // the backend counted etcd unreachable meanwhile (its lease was
      // lost), in the fresh state it delivers once back: either way it
      // holds every record again.
      await until(
        () => r.changes.filter((c) => c.type === "delete").length === count,
        "every record deleted with the lease",
      );
      await until(
        () => r.held().size === count,
        "every record written back",
        20_000,
      );
      const kvs = (await etcd.getAll().prefix(`${p}instances/svc/`).exec())
        .kvs;
      assert.equal(kvs.length, count);
      assert.ok(kvs.every((k) => String(k.lease) !== String(kv.kvs[0].lease)));
      const txns = new Set(kvs.map((k) => String(k.mod_revision))).size;
      assert.ok(txns <= count / 5, `${count} records in ${txns} transactions`);
    } finally {
      etcd.close();
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
