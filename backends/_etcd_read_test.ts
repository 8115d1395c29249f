// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
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
