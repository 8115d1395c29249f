// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Etcd3 } from "etcd3";
import {
  decodeRangeResponse,
  type Page,
  type PageQuery,
  READ_PAGE_KEYS,
  readAll,
  tooLarge,
} from "./_etcd_read.ts";

const PREFIX = "/p/instances/";

/**
 * A store of `count` keys answering range requests as etcd does, refusing
 * pages of more than `maxKeys` keys as too large.
 */
function store(count: number, maxKeys = Infinity) {
  const keys = Array.from(
    { length: count },
    (_, i) => `${PREFIX}s/10.0.0.${i}:${String(i).padStart(5, "0")}`,
  ).sort();
  const calls: { start: string; limit: number; revision?: string }[] = [];
  const query: PageQuery = (start, end, limit, revision) => {
    calls.push({ start: start.toString(), limit, revision });
    assert.equal(end.toString(), "/p/instances0");
    if (limit > maxKeys) {
      return Promise.reject(
        new Error("8 RESOURCE_EXHAUSTED: Received message larger than max"),
      );
    }
    const from = keys.filter((k) => Buffer.from(k).compare(start) >= 0);
    const page = from.slice(0, limit);
    return Promise.resolve(
      {
        header: { revision: "77", cluster_id: "123" },
        kvs: page.map((k) => ({
          key: Buffer.from(k),
          value: Buffer.from("{}"),
          mod_revision: "1",
          lease: "0",
        })),
        more: from.length > limit,
      } satisfies Page,
    );
  };
  return { keys, calls, query };
}

Deno.test("readAll: one page when the keys fit", async () => {
  const { keys, calls, query } = store(3);
  const read = await readAll(PREFIX, query);
  assert.equal(read.revision, 77);
  assert.equal(read.clusterId, "123");
  assert.deepEqual(read.kvs.map((kv) => kv.key.toString()), keys);
  assert.equal(calls.length, 1);
});

Deno.test("readAll: pages follow each other, all at the first page's revision", async () => {
  const { keys, calls, query } = store(READ_PAGE_KEYS * 2 + 5);
  const read = await readAll(PREFIX, query);
  assert.deepEqual(read.kvs.map((kv) => kv.key.toString()), keys);
  assert.equal(calls.length, 3);
  assert.equal(calls[0].revision, undefined);
  assert.ok(calls.slice(1).every((c) => c.revision === "77"));
  // Each page starts right after the last key of the one before.
  assert.equal(calls[1].start, `${keys[READ_PAGE_KEYS - 1]}\0`);
});

Deno.test("readAll: a page too large for gRPC is read again at half the size, down to what fits", async () => {
  const { keys, calls, query } = store(300, 100);
  const read = await readAll(PREFIX, query);
  assert.deepEqual(read.kvs.map((kv) => kv.key.toString()), keys);
  assert.deepEqual(calls.slice(0, 5).map((c) => c.limit), [
    1000,
    500,
    250,
    125,
    62,
  ]);
});

Deno.test("readAll: other failures, and a single key too large, reject", async () => {
  await assert.rejects(
    readAll(PREFIX, () => Promise.reject(new Error("14 UNAVAILABLE"))),
    /UNAVAILABLE/,
  );
  const { query } = store(3, 0);
  await assert.rejects(readAll(PREFIX, query), /RESOURCE_EXHAUSTED/);
});

Deno.test("tooLarge: gRPC's message limit, by class or by text", () => {
  assert.ok(tooLarge(new Error("Received message larger than max (5 vs 4)")));
  assert.ok(tooLarge("8 RESOURCE_EXHAUSTED: ..."));
  assert.ok(!tooLarge(new Error("14 UNAVAILABLE")));
});

Deno.test("decodeRangeResponse reads what etcd3's own decoder reads, 64-bit ids exact", () => {
  // The client's generated KV service knows the message: it serializes a
  // response, and decodes it the generic way for comparison.
  const client = new Etcd3({ hosts: "127.0.0.1:1" });
  try {
    // deno-lint-ignore no-explicit-any
    const range = (client as any).pool.hosts[0].getServiceClient("KV").range;
    const kv = (
      key: Uint8Array,
      value: string,
      lease: string,
      rev: string,
    ) => ({
      key: Buffer.from(key),
      create_revision: rev,
      mod_revision: String(BigInt(rev) + 1n),
      version: "1",
      value: Buffer.from(value),
      lease,
    });
    const response = {
      header: {
        cluster_id: "18446744073709551615",
        member_id: "5",
        revision: "9007199254740993",
        raft_term: "2",
      },
      kvs: [
        kv(
          Buffer.from("/p/instances/s/h:1"),
          '{"a":"é ✓"}',
          "7587869370468446210",
          "1",
        ),
        kv(Uint8Array.of(0xff, 0, 0x41), "", "0", "127"),
        kv(Buffer.from("k3"), "x", "7587869370468446210", "16384"),
        kv(Buffer.from("k4"), "y", "7587869370468446211", "9007199254740993"),
        kv(Buffer.from("k5"), "z", "1", "2"),
      ],
      more: true,
      count: "5",
    };
    const bytes: Uint8Array = range.responseSerialize(response);
    const theirs = range.responseDeserialize(bytes);
    const ours = decodeRangeResponse(bytes);
    assert.deepEqual(ours.header, {
      revision: theirs.header.revision,
      cluster_id: theirs.header.cluster_id,
    });
    assert.equal(ours.header.cluster_id, "18446744073709551615");
    assert.equal(ours.more, true);
    assert.deepEqual(
      ours.kvs.map((k) => [
        Buffer.from(k.key).toString("hex"),
        k.value.toString(),
        k.create_revision,
        k.mod_revision,
        String(k.lease),
      ]),
      theirs.kvs.map((k: Record<string, { toString(e?: string): string }>) => [
        k.key.toString("hex"),
        k.value.toString(),
        k.create_revision,
        k.mod_revision,
        String(k.lease),
      ]),
    );
    assert.equal(ours.kvs[3].lease, "7587869370468446211");
    // An empty response: every field at its default.
    assert.deepEqual(decodeRangeResponse(new Uint8Array()), {
      header: { revision: "0", cluster_id: "0" },
      kvs: [],
      more: false,
    });
    assert.throws(() => decodeRangeResponse(bytes.subarray(0, 40)), RangeError);
  } finally {
    client.close();
  }
});
