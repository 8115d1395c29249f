// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  EtcdLeaseInvalidError,
  type ICompare,
  type IRequestOp,
  type IResponseOp,
  type ITxnRequest,
  type ITxnResponse,
} from "etcd3";
import {
  keyWrite,
  type KeyWriteOptions,
  TxnBatcher,
  WriteTimeoutError,
} from "./_etcd_write.ts";
import { until } from "../tests/_wait.ts";

/** What the fake store holds of a key. */
interface FakeKv {
  value: string;
  mod: number;
  lease: string;
}

/**
 * An etcd KV service in memory, for the transactions a `TxnBatcher` sends:
 * compares on create and mod revision, puts, deletes, reads and nested
 * transactions; one revision per transaction that writes. Calls are held
 * until `release` when `hold` is set.
 */
class FakeEtcd {
  kvs = new Map<string, FakeKv>();
  revision = 1;
  leases = new Set(["7"]);
  /** Every transaction sent, in order. */
  calls: ITxnRequest[] = [];
  hold = false;
  /** A transaction with more operations than this is refused, as etcd's --max-txn-ops does. */
  maxOps = Infinity;
  /** Thrown at the next transaction, if set. */
  fail?: Error;
  #held: (() => void)[] = [];

  commit = async (txn: ITxnRequest): Promise<ITxnResponse> => {
    this.calls.push(txn);
    if (this.hold) {
      await new Promise<void>((resolve) => this.#held.push(resolve));
    }
    await Promise.resolve();
    if (this.fail) throw this.fail;
    if ((txn.success?.length ?? 0) > this.maxOps) {
      throw new Error(
        "3 INVALID_ARGUMENT: etcdserver: too many operations in txn request",
      );
    }
    this.#checkLeases(txn);
    const writes: (() => void)[] = [];
    const res = this.#txn(txn, writes);
    if (writes.length > 0) {
      this.revision++;
      for (const write of writes) write();
    }
    return { ...res, header: this.#header() };
  };

  /** Lets the held calls go, in order. */
  release(): void {
    for (const go of this.#held.splice(0)) go();
  }

  /** Calls waiting for `release`. */
  get waiting(): number {
    return this.#held.length;
  }

  #header() {
    return {
      cluster_id: "1",
      member_id: "1",
      revision: String(this.revision),
      raft_term: "1",
    };
  }

  #holds(c: ICompare): boolean {
    const kv = this.kvs.get(String(c.key));
    if (c.target === "Create") {
      return (kv === undefined) === (Number(c.create_revision) === 0);
    }
    return kv !== undefined && kv.mod === Number(c.mod_revision);
  }

  /** The ops of `txn` that run, nested ones included. */
  #path(txn: ITxnRequest): IRequestOp[] {
    const ops = (txn.compare ?? []).every((c) => this.#holds(c))
      ? txn.success ?? []
      : txn.failure ?? [];
    return ops.flatMap((op) =>
      op.request_txn ? this.#path(op.request_txn) : [op]
    );
  }

  #checkLeases(txn: ITxnRequest) {
    for (const op of this.#path(txn)) {
      const lease = op.request_put?.lease;
      if (lease !== undefined && !this.leases.has(String(lease))) {
        throw new EtcdLeaseInvalidError(String(lease));
      }
    }
  }

  #txn(txn: ITxnRequest, writes: (() => void)[]): ITxnResponse {
    const succeeded = (txn.compare ?? []).every((c) => this.#holds(c));
    const responses = (succeeded ? txn.success ?? [] : txn.failure ?? []).map(
      (op): IResponseOp => {
        const header = this.#header();
        if (op.request_txn) {
          return {
            response_txn: this.#txn(op.request_txn, writes),
          } as IResponseOp;
        }
        if (op.request_put) {
          const { key, value, lease } = op.request_put;
          writes.push(() =>
            this.kvs.set(String(key), {
              value: String(value),
              mod: this.revision,
              lease: String(lease ?? "0"),
            })
          );
          return { response_put: { header } } as IResponseOp;
        }
        if (op.request_delete_range) {
          const key = String(op.request_delete_range.key);
          const deleted = this.kvs.has(key) ? "1" : "0";
          writes.push(() => this.kvs.delete(key));
          return {
            response_delete_range: { header, deleted },
          } as IResponseOp;
        }
        const key = String(op.request_range!.key);
        const kv = this.kvs.get(key);
        return {
          response_range: {
            header,
            kvs: kv
              ? [{
                key,
                value: kv.value,
                mod_revision: String(kv.mod),
                lease: kv.lease,
              }]
              : [],
          },
        } as unknown as IResponseOp;
      },
    );
    return { header: this.#header(), succeeded, responses };
  }
}

const put = (key: string, options: KeyWriteOptions = {}, lease = "7") =>
  keyWrite(key, { put: `v-${key}`, lease }, options);

/** Writes of one transaction: 1 for a plain one, else its nested ones. */
const writesOf = (txn: ITxnRequest) =>
  txn.success?.[0]?.request_txn ? txn.success.length : 1;

Deno.test("keyWrite: a guard compares, and reads the key when it fails", () => {
  const bare = keyWrite("/k", { delete: true });
  assert.deepEqual(bare.txn.compare, []);
  assert.deepEqual(bare.txn.failure, []);
  assert.ok(bare.txn.success?.[0].request_delete_range);
  assert.equal(bare.lease, "");
  const absent = put("/k", { guard: { absent: true } });
  assert.deepEqual(
    absent.txn.compare?.map((c) => [c.target, c.create_revision]),
    [["Create", 0]],
  );
  assert.ok(absent.txn.failure?.[0].request_range);
  assert.equal(absent.lease, "7");
  const mod = put("/k", { guard: { modRevision: "12" } });
  assert.deepEqual(
    mod.txn.compare?.map((c) => [c.target, c.mod_revision]),
    [["Mod", "12"]],
  );
  // Counted: the key once per op, and the value.
  const big = keyWrite("/k", { put: "x".repeat(10_000), lease: "7" });
  assert.ok(big.bytes >= 10_000 && big.bytes < 10_200, String(big.bytes));
});

Deno.test("TxnBatcher: the first write goes at once; writes that arrive while it is in flight go together in one transaction, sharing its revision", async () => {
  const etcd = new FakeEtcd();
  etcd.hold = true;
  const batcher = new TxnBatcher(etcd.commit, {
    timeout: 10_000,
    maxInFlight: 1,
  });
  const first = batcher.run(put("/a"));
  await until(() => etcd.waiting === 1, "the first write is sent");
  assert.equal(writesOf(etcd.calls[0]), 1);
  assert.ok(!etcd.calls[0].success?.[0].request_txn, "sent as it is");
  const rest = Array.from({ length: 10 }, (_, i) => batcher.run(put(`/b${i}`)));
  await Promise.resolve();
  assert.equal(etcd.calls.length, 1, "they wait for the one in flight");
  assert.equal(batcher.queued, 10);
  etcd.release();
  assert.equal((await first).revision, 2);
  await until(() => etcd.waiting === 1, "the rest is sent");
  etcd.release();
  const outcomes = await Promise.all(rest);
  assert.equal(etcd.calls.length, 2);
  assert.equal(writesOf(etcd.calls[1]), 10);
  assert.deepEqual(
    outcomes.map((o) => [o.succeeded, o.revision]),
    Array(10).fill([true, 3]),
  );
  assert.equal(etcd.kvs.size, 11);
});

Deno.test("TxnBatcher: each write keeps its own guard and outcome within a batch", async () => {
  const etcd = new FakeEtcd();
  etcd.kvs.set("/taken", { value: "theirs", mod: 1, lease: "7" });
  etcd.kvs.set("/gone", { value: "old", mod: 1, lease: "7" });
  const batcher = new TxnBatcher(etcd.commit, { timeout: 10_000 });
  const [free, taken, stale, gone, plain] = await Promise.all([
    batcher.run(put("/free", { guard: { absent: true } })),
    batcher.run(put("/taken", { guard: { absent: true } })),
    batcher.run(put("/stale", { guard: { modRevision: "1" } })),
    batcher.run(
      keyWrite("/gone", { delete: true }, { guard: { modRevision: "1" } }),
    ),
    batcher.run(keyWrite("/nothing", { delete: true })),
  ]);
  assert.equal(etcd.calls.length, 1, "one transaction");
  assert.deepEqual(
    [free, taken, stale, gone, plain].map((o) => o.succeeded),
    [true, false, false, true, true],
  );
  // A failed guard tells what the key holds instead.
  assert.equal(
    String(taken.responses[0].response_range.kvs[0].value),
    "theirs",
  );
  assert.deepEqual(stale.responses[0].response_range.kvs, []);
  assert.equal(gone.responses[0].response_delete_range.deleted, "1");
  assert.equal(plain.responses[0].response_delete_range.deleted, "0");
  assert.equal(etcd.kvs.get("/taken")?.value, "theirs");
  assert.ok(!etcd.kvs.has("/gone"));
  assert.equal(
    new Set([free, taken, stale, gone, plain].map((o) => o.revision)).size,
    1,
  );
});

Deno.test("TxnBatcher: batches are bounded in writes and bytes; a write larger than the bound goes alone", async () => {
  const etcd = new FakeEtcd();
  const batcher = new TxnBatcher(etcd.commit, {
    timeout: 10_000,
    maxWrites: 8,
    maxBytes: 100_000,
    maxInFlight: 1,
  });
  const value = (n: number) => "é".repeat(n / 2); // two bytes each
  const writes = [
    ...Array.from({ length: 20 }, (_, i) => put(`/small${i}`)),
    ...Array.from(
      { length: 10 },
      (_, i) => keyWrite(`/attrs${i}`, { put: value(24 * 1024), lease: "7" }),
    ),
    keyWrite("/huge", { put: value(150_000), lease: "7" }),
    put("/last"),
  ];
  await Promise.all(writes.map((w) => batcher.run(w)));
  const bytes = (txn: ITxnRequest) =>
    (txn.success ?? []).reduce((sum, op) => {
      const inner = op.request_txn?.success?.[0] ?? op;
      return sum + (inner.request_put?.value?.length ?? 0);
    }, 0);
  const sizes = etcd.calls.map(writesOf);
  assert.deepEqual(sizes.reduce((a, b) => a + b), writes.length);
  assert.ok(sizes.every((n) => n <= 8), sizes.join(","));
  const huge = etcd.calls.findIndex((t) => bytes(t) >= 150_000);
  assert.equal(sizes[huge], 1, "the huge write alone");
  for (const [i, txn] of etcd.calls.entries()) {
    if (i !== huge) assert.ok(bytes(txn) <= 100_000, `${i}: ${bytes(txn)}`);
  }
  assert.equal(etcd.kvs.size, writes.length);
});

Deno.test("TxnBatcher: writes go at once while fewer than maxInFlight transactions are in flight; then they wait and go together", async () => {
  const etcd = new FakeEtcd();
  etcd.hold = true;
  const batcher = new TxnBatcher(etcd.commit, {
    timeout: 10_000,
    maxWrites: 4,
    maxInFlight: 3,
  });
  const first = batcher.run(put("/first"));
  await until(() => etcd.waiting === 1, "the first write is sent");
  // A slot is free: the next write does not wait for the first.
  const second = batcher.run(put("/second"));
  await until(() => etcd.waiting === 2, "the second write is sent");
  // One slot left: four go at once, the rest wait.
  const rest = Array.from({ length: 9 }, (_, i) => batcher.run(put(`/k${i}`)));
  await until(() => etcd.waiting === 3, "a third transaction");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(etcd.calls.map(writesOf), [1, 1, 4]);
  assert.equal(batcher.queued, 5);
  etcd.release();
  await Promise.all([first, second]);
  await until(() => etcd.waiting === 2, "the rest");
  etcd.release();
  await Promise.all(rest);
  assert.deepEqual(etcd.calls.map(writesOf), [1, 1, 4, 4, 1]);
  assert.equal(batcher.inFlight, 0);
});

Deno.test("TxnBatcher: a failed transaction fails each of its writes with its error", async () => {
  const etcd = new FakeEtcd();
  etcd.fail = new Error("14 UNAVAILABLE: No connection established");
  const batcher = new TxnBatcher(etcd.commit, { timeout: 10_000 });
  const results = await Promise.allSettled(
    Array.from({ length: 5 }, (_, i) => batcher.run(put(`/k${i}`))),
  );
  assert.equal(etcd.calls.length, 1);
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.equal((r as PromiseRejectedResult).reason, etcd.fail);
  }
  // The next writes go as usual.
  etcd.fail = undefined;
  assert.ok((await batcher.run(put("/k0"))).succeeded);
});

Deno.test("TxnBatcher: a lease etcd does not know fails the writes on it alone", async () => {
  const etcd = new FakeEtcd();
  etcd.kvs.set("/old", { value: "v", mod: 1, lease: "7" });
  const batcher = new TxnBatcher(etcd.commit, { timeout: 10_000 });
  const results = await Promise.allSettled([
    batcher.run(put("/a", {}, "99")),
    batcher.run(put("/b")),
    batcher.run(keyWrite("/old", { delete: true })),
    batcher.run(put("/c", {}, "99")),
  ]);
  assert.deepEqual(results.map((r) => r.status), [
    "rejected",
    "fulfilled",
    "fulfilled",
    "rejected",
  ]);
  assert.ok(
    (results[0] as PromiseRejectedResult).reason instanceof
      EtcdLeaseInvalidError,
  );
  assert.deepEqual([...etcd.kvs.keys()], ["/b"]);
});

Deno.test("TxnBatcher: a transaction over etcd's --max-txn-ops goes again in halves, and later batches are smaller", async () => {
  const etcd = new FakeEtcd();
  etcd.maxOps = 5;
  const warnings: string[] = [];
  const batcher = new TxnBatcher(etcd.commit, {
    timeout: 10_000,
    log: { info() {}, warn: (m) => void warnings.push(m) },
  });
  const outcomes = await Promise.all(
    Array.from({ length: 16 }, (_, i) => batcher.run(put(`/k${i}`))),
  );
  assert.ok(outcomes.every((o) => o.succeeded));
  assert.equal(etcd.kvs.size, 16);
  assert.equal(batcher.maxWrites, 4);
  assert.match(warnings[0], /--max-txn-ops/);
  const later = Promise.all(
    Array.from({ length: 8 }, (_, i) => batcher.run(put(`/later${i}`))),
  );
  const sent = etcd.calls.length;
  await later;
  assert.deepEqual(etcd.calls.slice(sent).map(writesOf), [4, 4]);
});

Deno.test("TxnBatcher: a write of a key waits for the one before it, in a batch or in flight", async () => {
  const etcd = new FakeEtcd();
  etcd.hold = true;
  const batcher = new TxnBatcher(etcd.commit, { timeout: 10_000 });
  const first = batcher.run(put("/k"));
  const other = batcher.run(put("/other"));
  const second = batcher.run(keyWrite("/k", { delete: true }));
  const third = batcher.run(put("/third"));
  await until(() => etcd.waiting === 1, "the first transaction");
  await new Promise((resolve) => setTimeout(resolve, 0));
  // Slots are free, yet the delete waits for the put of its key.
  assert.deepEqual(etcd.calls.map(writesOf), [2]);
  etcd.release();
  await until(() => etcd.waiting === 1, "the second transaction");
  etcd.release();
  await Promise.all([first, other, second, third]);
  assert.deepEqual(etcd.calls.map(writesOf), [2, 2]);
  assert.ok((await first).revision < (await second).revision);
  assert.ok(!etcd.kvs.has("/k"), "the delete came last");
});

Deno.test("TxnBatcher: a write that waits while no transaction completes fails unsent after the timeout", async () => {
  const etcd = new FakeEtcd();
  etcd.hold = true;
  const batcher = new TxnBatcher(etcd.commit, {
    timeout: 50,
    maxInFlight: 1,
  });
  const first = batcher.run(put("/a"));
  await until(() => etcd.waiting === 1, "the first write is sent");
  await assert.rejects(batcher.run(put("/b")), WriteTimeoutError);
  assert.equal(etcd.calls.length, 1, "never sent");
  assert.equal(batcher.queued, 0);
  etcd.release();
  assert.ok((await first).succeeded);
  assert.ok(!etcd.kvs.has("/b"));
});

Deno.test("TxnBatcher: a queued write waits as long as transactions complete", async () => {
  // Each transaction takes half the timeout; the last write waits for
  // five of them, two and a half times the timeout.
  const etcd = new FakeEtcd();
  const slow = async (txn: ITxnRequest) => {
    await new Promise((resolve) => setTimeout(resolve, 150));
    return await etcd.commit(txn);
  };
  const batcher = new TxnBatcher(slow, {
    timeout: 300,
    maxWrites: 1,
    maxInFlight: 1,
  });
  const outcomes = await Promise.all(
    Array.from({ length: 6 }, (_, i) => batcher.run(put(`/k${i}`))),
  );
  assert.ok(outcomes.every((o) => o.succeeded));
  assert.equal(etcd.calls.length, 6);
});

Deno.test("TxnBatcher: options are checked", () => {
  const commit = new FakeEtcd().commit;
  assert.throws(
    () => new TxnBatcher(commit, { timeout: 1, maxWrites: 0 }),
    /'maxWrites' must be a whole number, at least 1: current value is 0/,
  );
  assert.throws(
    () => new TxnBatcher(commit, { timeout: 1, maxInFlight: 1.5 }),
    /maxInFlight/,
  );
});

Deno.test("TxnBatcher: a queued write whose signal aborted is never sent; the others go", async () => {
  const etcd = new FakeEtcd();
  etcd.hold = true;
  const batcher = new TxnBatcher(etcd.commit, {
    timeout: 10_000,
    maxInFlight: 1,
  });
  const first = batcher.run(put("/a"));
  await until(() => etcd.waiting === 1, "the first write is sent");
  const abandon = new AbortController();
  const gone = batcher.run(put("/b", { signal: abandon.signal }));
  const kept = batcher.run(put("/c"));
  await Promise.resolve();
  abandon.abort(new Error("the session closed"));
  etcd.release();
  await first;
  await assert.rejects(gone, /the session closed/);
  await until(() => etcd.waiting === 1, "the rest is sent");
  etcd.release();
  await kept;
  assert.equal(etcd.calls.length, 2);
  assert.equal(writesOf(etcd.calls[1]), 1, "only /c");
  assert.ok(!etcd.kvs.has("/b"), "/b was never written");
  assert.ok(etcd.kvs.has("/c"));
  assert.equal(batcher.queued, 0);
});
