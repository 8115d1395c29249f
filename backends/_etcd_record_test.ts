// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { knownOf, parseKnown, RecordCodec } from "./_etcd_record.ts";

const codec = new RecordCodec("/discover/");
const record = {
  service: "cache",
  addr: "[::1]:6379",
  attrs: { zone: "b" },
  owner: "c:me",
  registeredAt: 1700000000000,
};

Deno.test("record codec: the key is the prefix, 'instances/' and the instance key", () => {
  assert.equal(codec.range, "/discover/instances/");
  assert.equal(
    codec.key("cache", "[::1]:6379"),
    "/discover/instances/cache/[::1]:6379",
  );
  assert.deepEqual(codec.split("/discover/instances/cache/[::1]:6379"), [
    "cache",
    "[::1]:6379",
  ]);
});

Deno.test("record codec: a record survives encode and decode", () => {
  const key = codec.key(record.service, record.addr);
  const value = codec.encode(record);
  assert.deepEqual(JSON.parse(value), {
    attrs: { zone: "b" },
    owner: "c:me",
    registeredAt: 1700000000000,
  });
  assert.deepEqual(codec.decode(key, value), record);
});

Deno.test("record codec: keys and values that are not records are refused with a reason", () => {
  const value = codec.encode(record);
  const cases: [string, string, RegExp][] = [
    ["/other/instances/cache/1.2.3.4:5", value, /not under/],
    ["/discover/instances/no-slash", value, /not an instance key/],
    ["/discover/instances/bad name/1.2.3.4:5", value, /service\/addr/],
    ["/discover/instances/cache/not an addr", value, /service\/addr|addr/],
    ["/discover/instances/cache/1.2.3.4:5", "not json", /JSON/],
    ["/discover/instances/cache/1.2.3.4:5", "null", /not a discover record/],
    [
      "/discover/instances/cache/1.2.3.4:5",
      '{"owner":"o","registeredAt":1,"attrs":{"a":1}}',
      /not a discover record/,
    ],
    [
      "/discover/instances/cache/1.2.3.4:5",
      '{"owner":"o","attrs":{}}',
      /not a discover record/,
    ],
  ];
  for (const [key, text, reason] of cases) {
    assert.throws(() => codec.decode(key, text), reason, `${key} ${text}`);
  }
});

Deno.test("record codec: a prefix must start and end with '/'", () => {
  for (const prefix of ["discover/", "/discover", ""]) {
    assert.throws(() => new RecordCodec(prefix), TypeError, prefix);
  }
});

Deno.test("parseKnown and knownOf: owner, modification revision and lease", () => {
  const kv = {
    key: "/discover/instances/cache/1.2.3.4:5",
    value: '{"owner":"o","attrs":{},"registeredAt":1}',
    mod_revision: "42",
    lease: 7,
  };
  const expected = { owner: "o", modRevision: "42", lease: "7" };
  assert.deepEqual(parseKnown(kv), expected);
  assert.deepEqual(knownOf({ ...record, owner: "o" }, kv), expected);
  assert.equal(parseKnown({ ...kv, value: "{" }), undefined);
});

Deno.test("record codec: a critical record carries its health and note; a passing one stays as small as before", () => {
  const key = codec.key(record.service, record.addr);
  const critical = { ...record, health: "critical" as const, note: "HTTP 500" };
  const value = codec.encode(critical);
  assert.deepEqual(JSON.parse(value), {
    attrs: { zone: "b" },
    owner: "c:me",
    registeredAt: 1700000000000,
    health: "critical",
    note: "HTTP 500",
  });
  assert.deepEqual(codec.decode(key, value), critical);
  assert.equal(
    codec.encode({ ...record, health: "passing" }),
    codec.encode(record),
  );
  assert.throws(
    () =>
      codec.decode(
        key,
        '{"owner":"o","registeredAt":1,"attrs":{},"health":"sick"}',
      ),
    /not a discover record/,
  );
});
