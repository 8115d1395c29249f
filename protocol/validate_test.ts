// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { ErrorCode, RpcError } from "./errors.ts";
import {
  ADDR_PATTERN,
  ATTR_KEY_PATTERN,
  MAX_ADDR_LENGTH,
  MAX_ATTR_VALUE_LENGTH,
  MAX_ATTRS,
  MAX_ATTRS_JSON_LENGTH,
  SERVICE_NAME_PATTERN,
  validateAddr,
  validateAttrs,
  validateCheck,
  validateNoParams,
  validatePort,
  validateRegister,
  validateServiceName,
  validateServices,
  validateSetHealth,
  validateSubscribe,
  validateUnregister,
  validateUnsubscribe,
} from "./validate.ts";

/**
 * Asserts that `fn` throws an invalid-params RpcError naming `field`, both in
 * `data.field` and at the start of the message.
 */
function assertInvalid(fn: () => unknown, field: string, label = field) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof RpcError, `${label}: not an RpcError`);
    assert.equal(error.code, ErrorCode.InvalidParams, label);
    assert.equal(error.code, -32602, label);
    assert.deepEqual(error.data, { field }, label);
    assert.ok(
      error.message.startsWith(`'${field}' `),
      `${label}: message does not name '${field}': ${error.message}`,
    );
    return true;
  }, label);
}

/** Attributes of `count` keys `k0`, `k1`, ... with the value `"v"`. */
function manyAttrs(count: number): Record<string, string> {
  return Object.fromEntries(
    Array.from({ length: count }, (_, i) => [`k${i}`, "v"]),
  );
}

/** Attributes whose compact JSON text is exactly `size` characters. */
function attrsOfJsonSize(size: number): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (let i = 0; i < 7; i++) attrs[`k${i}`] = "x".repeat(1024);
  const base = JSON.stringify(attrs).length; // 7 entries
  // One more entry adds `,"k7":"` + value + `"`: 8 characters plus the value.
  attrs.k7 = "y".repeat(size - base - 8);
  assert.equal(JSON.stringify(attrs).length, size);
  return attrs;
}

// --- service names ---------------------------------------------------------

Deno.test("validateServiceName() accepts names of 1 to 63 allowed characters", () => {
  for (
    const name of [
      "cache",
      "a",
      "7",
      "Cache",
      "x.y_z-1",
      "a".repeat(63),
      "A0" + "._-".repeat(20) + "z",
    ]
  ) {
    assert.equal(validateServiceName(name), name, name);
    assert.ok(SERVICE_NAME_PATTERN.test(name), name);
  }
});

Deno.test("validateServiceName() rejects bad names naming the field", () => {
  for (
    const name of [
      "",
      "a".repeat(64),
      ".cache",
      "-cache",
      "_cache",
      "a/b",
      "..",
      "café",
      "кэш",
      "a b",
      "cache\n",
      "a:b",
    ]
  ) {
    assertInvalid(() => validateServiceName(name), "service", name);
  }
});

Deno.test("validateServiceName() rejects non-strings", () => {
  for (const value of [undefined, null, 1, true, {}, ["cache"]]) {
    assertInvalid(
      () => validateServiceName(value),
      "service",
      String(value),
    );
  }
});

Deno.test("validateServiceName() uses the given field name", () => {
  assertInvalid(
    () => validateServiceName("", "filter.service"),
    "filter.service",
  );
});

// --- ports -----------------------------------------------------------------

Deno.test("validatePort() accepts 1 to 65535", () => {
  assert.equal(validatePort(1), 1);
  assert.equal(validatePort(80), 80);
  assert.equal(validatePort(65535), 65535);
});

Deno.test("validatePort() rejects out-of-range, fractional and non-number ports", () => {
  for (
    const value of [
      0,
      -1,
      65536,
      1.5,
      NaN,
      Infinity,
      "80",
      null,
      undefined,
      [80],
    ]
  ) {
    assertInvalid(() => validatePort(value), "port", String(value));
  }
});

// --- addresses -------------------------------------------------------------

Deno.test("validateAddr() accepts hostnames, IPv4 and bracketed IPv6", () => {
  for (
    const addr of [
      "cache:6379",
      "cache-1.example:6379",
      "localhost:1",
      "localhost:65535",
      "10.0.0.1:80",
      "192.0.2.10:6379",
      "[::1]:80",
      "[::]:80",
      "[2001:db8::7]:6379",
    ]
  ) {
    assert.equal(validateAddr(addr), addr, addr);
  }
});

Deno.test("validateAddr() lower-cases the host and drops leading zeros of the port", () => {
  assert.equal(
    validateAddr("Cache-1.Example:6379"),
    "cache-1.example:6379",
  );
  assert.equal(
    validateAddr("Cache-2.Example.NET:06379"),
    "cache-2.example.net:6379",
  );
  assert.equal(validateAddr("[2001:DB8::7]:6379"), "[2001:db8::7]:6379");
  assert.equal(validateAddr("[::1]:00080"), "[::1]:80");
});

Deno.test("validateAddr() accepts a 253-character hostname, not a 254-character one", () => {
  const label = "a".repeat(63);
  const host253 = [label, label, label, "b".repeat(61)].join(".");
  assert.equal(host253.length, 253);
  assert.equal(validateAddr(`${host253}:80`), `${host253}:80`);
  const host254 = [label, label, label, "b".repeat(62)].join(".");
  assertInvalid(() => validateAddr(`${host254}:80`), "addr", "254 characters");
});

Deno.test("validateAddr() rejects labels over 63 characters and bad label edges", () => {
  for (
    const addr of [
      `${"a".repeat(64)}.example:80`,
      "-cache:80",
      "cache-:80",
      "a..b:80",
      ".cache:80",
      "ca che:80",
      "cache/1:80",
      "café:80",
    ]
  ) {
    assertInvalid(() => validateAddr(addr), "addr", addr);
  }
});

Deno.test("validateAddr() rejects a missing or bad port", () => {
  for (
    const addr of [
      "cache",
      "cache:0",
      "cache:65536",
      "cache:123456",
      "cache:",
      ":80",
      "cache:+80",
      "cache:8 0",
      "cache:80a",
      "cache:-1",
    ]
  ) {
    assertInvalid(() => validateAddr(addr), "addr", addr);
  }
});

Deno.test("validateAddr() requires IPv6 addresses in brackets", () => {
  for (
    const addr of [
      "::1:80", // the documented rule is "bracketed IPv6"
      "2001:db8::7:6379",
      "[::1",
      "[::1]",
      "[::1]:",
      "::1]:80",
      "[::1:80",
      "[:]:80", // fewer than 2 characters inside
      "[zz::1]:80",
      "[]:80",
      "[::1]x:80",
    ]
  ) {
    assertInvalid(() => validateAddr(addr), "addr", addr);
  }
});

Deno.test("validateAddr() rejects non-strings and addresses over the length limit", () => {
  for (const value of [undefined, null, 80, {}, ["cache:80"]]) {
    assertInvalid(() => validateAddr(value), "addr", String(value));
  }
  const long = "a.".repeat(130) + "b:80";
  assert.ok(long.length > MAX_ADDR_LENGTH);
  assertInvalid(() => validateAddr(long), "addr", "too long");
});

Deno.test("validateAddr() uses the given field name", () => {
  assertInvalid(() => validateAddr("nope", "target"), "target");
});

// --- attributes ------------------------------------------------------------

Deno.test("validateAttrs() accepts up to 64 keys, not 65", () => {
  assert.equal(MAX_ATTRS, 64);
  assert.deepEqual(validateAttrs(manyAttrs(64)), manyAttrs(64));
  assertInvalid(() => validateAttrs(manyAttrs(65)), "attrs");
});

Deno.test("validateAttrs() accepts values up to 1024 code units, not 1025", () => {
  assert.equal(MAX_ATTR_VALUE_LENGTH, 1024);
  const ok = { k: "x".repeat(1024) };
  assert.deepEqual(validateAttrs(ok), ok);
  assertInvalid(() => validateAttrs({ k: "x".repeat(1025) }), "attrs.k");
  // Measured in UTF-16 code units: 512 surrogate pairs are 1024 units.
  const astral = { k: "😀".repeat(512) };
  assert.deepEqual(validateAttrs(astral), astral);
  assertInvalid(() => validateAttrs({ k: "😀".repeat(513) }), "attrs.k");
  assert.deepEqual(validateAttrs({ k: "" }), { k: "" });
});

Deno.test("validateAttrs() limits the map's JSON text to 8192 characters", () => {
  assert.equal(MAX_ATTRS_JSON_LENGTH, 8192);
  const ok = attrsOfJsonSize(8192);
  assert.deepEqual(validateAttrs(ok), ok);
  assertInvalid(() => validateAttrs(attrsOfJsonSize(8193)), "attrs");
});

Deno.test("validateAttrs() checks keys against the key pattern", () => {
  for (
    const key of [
      "zone",
      "Z",
      "0",
      "app.kubernetes.io:name",
      "a_b-c",
      "k".repeat(64),
    ]
  ) {
    assert.deepEqual(validateAttrs({ [key]: "v" }), { [key]: "v" }, key);
    assert.ok(ATTR_KEY_PATTERN.test(key), key);
  }
  for (
    const key of [
      "",
      "-zone",
      "_zone",
      ".zone",
      ":zone",
      "a b",
      "a/b",
      "zöne",
      "__proto__",
    ]
  ) {
    assertInvalid(() => validateAttrs({ [key]: "v" }), `attrs.${key}`, key);
  }
});

Deno.test("validateAttrs() names a long bad key by its first 40 characters", () => {
  const key = "k".repeat(65);
  assertInvalid(
    () => validateAttrs({ [key]: "v" }),
    `attrs.${"k".repeat(40)}...`,
  );
});

Deno.test("validateAttrs() rejects non-string values naming the key", () => {
  for (const value of [1, true, null, {}, ["a"], undefined]) {
    assertInvalid(
      () => validateAttrs({ zone: "b", bad: value }),
      "attrs.bad",
      String(value),
    );
  }
});

Deno.test("validateAttrs() rejects anything but an object", () => {
  for (const value of [undefined, null, [], [["k", "v"]], "k=v", 1, true]) {
    assertInvalid(() => validateAttrs(value), "attrs", String(value));
  }
});

Deno.test("validateAttrs() returns a copy", () => {
  const input: Record<string, string> = { zone: "b" };
  const output = validateAttrs(input);
  assert.deepEqual(output, { zone: "b" });
  assert.notEqual(output, input);
  input.zone = "c";
  input.extra = "x";
  assert.deepEqual(output, { zone: "b" });
});

Deno.test("validateAttrs() uses the given field name", () => {
  assertInvalid(
    () => validateAttrs({ k: 1 }, "filter.attrs"),
    "filter.attrs.k",
  );
});

// --- discover.register -----------------------------------------------------

Deno.test("validateRegister() accepts a port or an address", () => {
  assert.deepEqual(validateRegister({ service: "cache", port: 6379 }), {
    service: "cache",
    port: 6379,
    attrs: {},
  });
  assert.deepEqual(
    validateRegister({
      service: "cache",
      addr: "Cache-2.Example.NET:6379",
      attrs: { zone: "b" },
    }),
    {
      service: "cache",
      addr: "cache-2.example.net:6379",
      attrs: { zone: "b" },
    },
  );
});

Deno.test("validateRegister() returns a copy of the attributes", () => {
  const attrs: Record<string, string> = { zone: "b" };
  const checked = validateRegister({ service: "cache", port: 1, attrs });
  attrs.zone = "c";
  assert.deepEqual(checked.attrs, { zone: "b" });
});

Deno.test("validateRegister() requires params as an object", () => {
  for (const params of [undefined, null, [], ["cache", 6379], "cache", 1]) {
    assertInvalid(() => validateRegister(params), "params", String(params));
  }
});

Deno.test("validateRegister() requires service and one of port and addr", () => {
  assertInvalid(() => validateRegister({ port: 6379 }), "service");
  assertInvalid(() => validateRegister({ service: "cache" }), "port");
  assertInvalid(
    () => validateRegister({ service: "cache", port: 80, addr: "cache:80" }),
    "addr",
  );
});

Deno.test("validateRegister() checks each field's rule", () => {
  assertInvalid(() => validateRegister({ service: "-x", port: 80 }), "service");
  assertInvalid(() => validateRegister({ service: "x", port: 0 }), "port");
  assertInvalid(() => validateRegister({ service: "x", port: "80" }), "port");
  assertInvalid(() => validateRegister({ service: "x", port: null }), "port");
  assertInvalid(
    () => validateRegister({ service: "x", addr: "::1:80" }),
    "addr",
  );
  assertInvalid(
    () => validateRegister({ service: "x", port: 80, attrs: [] }),
    "attrs",
  );
  assertInvalid(
    () => validateRegister({ service: "x", port: 80, attrs: { zone: 1 } }),
    "attrs.zone",
  );
});

Deno.test("validateRegister() rejects unknown fields naming them", () => {
  assertInvalid(
    () => validateRegister({ service: "cache", port: 80, ttl: 5 }),
    "ttl",
  );
  assert.throws(
    () => validateRegister({ service: "cache", port: 80, ttl: 5 }),
    /'ttl' is not a known field; allowed: service, port, addr, attrs/,
  );
});

// --- discover.unregister ---------------------------------------------------

Deno.test("validateUnregister() accepts a port or an address", () => {
  assert.deepEqual(validateUnregister({ service: "cache", port: 6379 }), {
    service: "cache",
    port: 6379,
  });
  assert.deepEqual(
    validateUnregister({ service: "cache", addr: "[2001:DB8::7]:6379" }),
    { service: "cache", addr: "[2001:db8::7]:6379" },
  );
});

Deno.test("validateUnregister() rejects missing, doubled and unknown fields", () => {
  assertInvalid(() => validateUnregister(undefined), "params");
  assertInvalid(() => validateUnregister([]), "params");
  assertInvalid(() => validateUnregister({ port: 80 }), "service");
  assertInvalid(() => validateUnregister({ service: "cache" }), "port");
  assertInvalid(
    () => validateUnregister({ service: "cache", port: 80, addr: "a:80" }),
    "addr",
  );
  assertInvalid(
    () => validateUnregister({ service: "cache", port: 80, attrs: {} }),
    "attrs",
  );
  assertInvalid(
    () => validateUnregister({ service: "cache", addr: "a:0" }),
    "addr",
  );
});

// --- discover.services -----------------------------------------------------

Deno.test("validateServices() accepts a service with an optional filter", () => {
  const plain = validateServices({ service: "cache" });
  assert.equal(plain.service, "cache");
  assert.equal(plain.filter, undefined);
  assert.deepEqual(
    validateServices({ service: "cache", filter: {} }).filter,
    {},
  );
  assert.deepEqual(
    validateServices({ service: "cache", filter: { attrs: { zone: "b" } } })
      .filter,
    { attrs: { zone: "b" } },
  );
});

Deno.test("validateServices() checks the filter's shape", () => {
  for (const filter of [null, [], "zone=b", 1]) {
    assertInvalid(
      () => validateServices({ service: "cache", filter }),
      "filter",
      String(filter),
    );
  }
  assertInvalid(
    () => validateServices({ service: "cache", filter: { zone: "b" } }),
    "filter.zone",
  );
  assertInvalid(
    () => validateServices({ service: "cache", filter: { attrs: [] } }),
    "filter.attrs",
  );
  assertInvalid(
    () => validateServices({ service: "cache", filter: { attrs: { z: 1 } } }),
    "filter.attrs.z",
  );
  assertInvalid(
    () =>
      validateServices({ service: "cache", filter: { attrs: manyAttrs(65) } }),
    "filter.attrs",
  );
});

Deno.test("validateServices() rejects missing and unknown fields", () => {
  assertInvalid(() => validateServices({}), "service");
  assertInvalid(() => validateServices(["cache"]), "params");
  assertInvalid(
    () => validateServices({ service: "cache", since: 1 }),
    "since",
  );
});

// --- discover.subscribe ----------------------------------------------------

Deno.test("validateSubscribe() accepts since from 0 to 2^53 - 1", () => {
  for (const since of [0, 1, 42, Number.MAX_SAFE_INTEGER]) {
    assert.equal(validateSubscribe({ service: "cache", since }).since, since);
  }
  const plain = validateSubscribe({ service: "cache" });
  assert.equal(plain.service, "cache");
  assert.equal(plain.since, undefined);
  assert.equal(plain.filter, undefined);
  assert.deepEqual(
    validateSubscribe({ service: "cache", filter: { attrs: { zone: "b" } } })
      .filter,
    { attrs: { zone: "b" } },
  );
});

Deno.test("validateSubscribe() rejects bad since values", () => {
  for (
    const since of [-1, 1.5, "1", null, NaN, Infinity, 2 ** 53, true, {}]
  ) {
    assertInvalid(
      () => validateSubscribe({ service: "cache", since }),
      "since",
      String(since),
    );
  }
});

Deno.test("validateSubscribe() rejects missing and unknown fields and bad filters", () => {
  assertInvalid(() => validateSubscribe(undefined), "params");
  assertInvalid(() => validateSubscribe({ since: 1 }), "service");
  assertInvalid(
    () => validateSubscribe({ service: "cache", subscription: "1" }),
    "subscription",
  );
  assertInvalid(
    () => validateSubscribe({ service: "cache", filter: { attr: {} } }),
    "filter.attr",
  );
});

Deno.test("validateSubscribe() takes '*' for every service, and no other pattern", () => {
  assert.equal(validateSubscribe({ service: "*" }).service, "*");
  for (const service of ["**", "ca*", "*.x", " *"]) {
    assertInvalid(() => validateSubscribe({ service }), "service", service);
  }
  assertInvalid(() => validateServices({ service: "*" }), "service");
  assertInvalid(() => validateRegister({ service: "*", port: 1 }), "service");
});

Deno.test("validateSubscribe() takes an epoch string with since", () => {
  assert.equal(
    validateSubscribe({ service: "cache", since: 3, epoch: "e-1" }).epoch,
    "e-1",
  );
  assert.equal(validateSubscribe({ service: "cache" }).epoch, undefined);
  for (const epoch of ["", 7, null, "x".repeat(65)]) {
    assertInvalid(
      () => validateSubscribe({ service: "cache", since: 1, epoch }),
      "epoch",
      `epoch ${JSON.stringify(epoch)}`,
    );
  }
});

// --- methods without params ------------------------------------------------

Deno.test("validateNoParams() accepts absent or empty params only", () => {
  validateNoParams(undefined);
  validateNoParams({});
  validateNoParams([]);
  assertInvalid(() => validateNoParams({ x: 1 }), "params");
  assertInvalid(() => validateNoParams([1]), "params");
  assertInvalid(() => validateNoParams("x"), "params");
});

// --- addresses: IPv4 ranges and trailing dots ------------------------------

Deno.test("validateAddr() range-checks dotted IPv4 and drops a trailing dot", () => {
  assert.equal(validateAddr("255.255.255.255:1"), "255.255.255.255:1");
  assert.equal(validateAddr("Cache.Example.:80"), "cache.example:80");
  assert.equal(validateAddr("010.000.0.01:80"), "10.0.0.1:80");
  assert.equal(validateAddr("[0:0::1]:80"), "[::1]:80");
  assert.equal(validateAddr("[2001:DB8:0:0:0:0:0:7]:80"), "[2001:db8::7]:80");
  for (const bad of ["[1.2.3.4]:80", "[::1::2]:80", "[12345::]:80"]) {
    assertInvalid(() => validateAddr(bad), "addr", bad);
  }
  for (const bad of ["256.1.1.1:80", "1.2.3:80", "1.2.3.4.5:80", "999:80"]) {
    assertInvalid(() => validateAddr(bad), "addr", bad);
  }
});

Deno.test("validateAddr() accepts what ADDR_PATTERN matches within MAX_ADDR_LENGTH, and only that", () => {
  // Deterministic pseudo-random text around the edges of the rule.
  const pieces = [
    "0",
    "1",
    "2",
    "5",
    "9",
    "00",
    "255",
    "256",
    "65535",
    "65536",
    "a",
    "F",
    "g",
    "-",
    ".",
    ":",
    "::",
    "[",
    "]",
    "_",
    " ",
    "\n",
    "example",
    "0x",
  ];
  const seeds = [
    "10.0.0.1:80",
    "[::1]:80",
    "host:80",
    "a.b.c:65535",
    "1.2.3.4:080",
    "[::ffff:1.2.3.4]:1",
    "example.com.:1",
  ];
  let state = 0x2545f491;
  const next = (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    let text = seeds[i % seeds.length];
    if (i % 2 === 0) {
      for (let k = next(3) + 1; k > 0; k--) {
        const at = next(text.length + 1);
        text = text.slice(0, at) + pieces[next(pieces.length)] +
          text.slice(at + next(2));
      }
    } else {
      text = "";
      for (let k = next(8) + 1; k > 0; k--) text += pieces[next(pieces.length)];
    }
    let valid = true;
    try {
      validateAddr(text);
    } catch {
      valid = false;
    }
    if (valid) accepted++;
    // The pattern admits some IPv6 text that the URL standard rejects.
    const bracketed = text.startsWith("[");
    if (!bracketed || valid) {
      assert.equal(
        valid,
        text.length <= MAX_ADDR_LENGTH && ADDR_PATTERN.test(text),
        JSON.stringify(text),
      );
    }
  }
  assert.ok(accepted > 1000, `only ${accepted} valid addresses generated`);
  assert.ok(ADDR_PATTERN.test("[1:2]:80"));
  assertInvalid(() => validateAddr("[1:2]:80"), "addr", "[1:2]:80");
});

// --- discover.unsubscribe --------------------------------------------------

Deno.test("validateUnsubscribe() accepts an id of 1 to 64 characters", () => {
  assert.deepEqual(validateUnsubscribe({ subscription: "1" }), {
    subscription: "1",
  });
  const long = "s".repeat(64);
  assert.deepEqual(validateUnsubscribe({ subscription: long }), {
    subscription: long,
  });
});

Deno.test("validateUnsubscribe() rejects bad ids and unknown fields", () => {
  for (const subscription of [undefined, "", "s".repeat(65), 1, null, ["1"]]) {
    assertInvalid(
      () => validateUnsubscribe({ subscription }),
      "subscription",
      String(subscription),
    );
  }
  assertInvalid(() => validateUnsubscribe({}), "subscription");
  assertInvalid(() => validateUnsubscribe(null), "params");
  assertInvalid(
    () => validateUnsubscribe({ subscription: "1", service: "cache" }),
    "service",
  );
});

// --- health ----------------------------------------------------------------

Deno.test("validateCheck() fills in the defaults and canonicalises the target", () => {
  assert.deepEqual(validateCheck({ http: "HTTP://Example.COM:80/h" }), {
    http: "http://example.com/h",
    interval: 5,
    timeout: 2,
    failuresBeforeCritical: 1,
    successesBeforePassing: 1,
  });
  assert.deepEqual(validateCheck({ tcp: "Db.Local:05432", interval: 0.5 }), {
    tcp: "db.local:5432",
    interval: 0.5,
    timeout: 0.25,
    failuresBeforeCritical: 1,
    successesBeforePassing: 1,
  });
  const register = validateRegister({
    service: "web",
    port: 80,
    check: { tcp: "127.0.0.1:80", failuresBeforeCritical: 3 },
  });
  assert.equal(register.check?.failuresBeforeCritical, 3);
});

Deno.test("validateCheck() rejects what it cannot run, naming the field", () => {
  assertInvalid(() => validateCheck("http://x/"), "check");
  assertInvalid(() => validateCheck({}), "check");
  assertInvalid(
    () => validateCheck({ http: "http://x/", tcp: "x:1" }),
    "check",
  );
  assertInvalid(() => validateCheck({ http: "ftp://x/" }), "check.http");
  assertInvalid(() => validateCheck({ http: "not a url" }), "check.http");
  assertInvalid(
    () => validateCheck({ http: `http://x/${"a".repeat(3000)}` }),
    "check.http",
  );
  // A port that fetch refuses to reach: the check could never pass.
  for (const http of ["http://x:6000/h", "https://x:22/", "http://x:10080"]) {
    assertInvalid(() => validateCheck({ http }), "check.http", http);
  }
  assert.throws(
    () => validateCheck({ http: "http://db.local:6000/h" }),
    /port 6000 .*\{"tcp": "db\.local:6000"\} instead/,
  );
  assert.equal(
    validateCheck({ http: "http://x:6001/" }).http,
    "http://x:6001/",
  );
  assert.equal(validateCheck({ tcp: "x:6000" }).tcp, "x:6000");
  assertInvalid(() => validateCheck({ tcp: "x" }), "check.tcp");
  assertInvalid(
    () => validateCheck({ tcp: "x:1", script: "rm" }),
    "check.script",
  );
  for (const interval of [0.05, 86_401, "5", Infinity]) {
    assertInvalid(
      () => validateCheck({ tcp: "x:1", interval }),
      "check.interval",
      `interval ${interval}`,
    );
  }
  for (const timeout of [0, -1, 5, 6]) {
    assertInvalid(
      () => validateCheck({ tcp: "x:1", interval: 5, timeout }),
      "check.timeout",
      `timeout ${timeout}`,
    );
  }
  for (const n of [0, 1.5, 101]) {
    assertInvalid(
      () => validateCheck({ tcp: "x:1", failuresBeforeCritical: n }),
      "check.failuresBeforeCritical",
    );
    assertInvalid(
      () => validateCheck({ tcp: "x:1", successesBeforePassing: n }),
      "check.successesBeforePassing",
    );
  }
});

Deno.test("validateSetHealth() and the health filter of services and subscribe", () => {
  assert.deepEqual(
    validateSetHealth({
      service: "w",
      port: 9,
      health: "critical",
      note: "db down",
    }),
    { service: "w", port: 9, health: "critical", note: "db down" },
  );
  assertInvalid(
    () => validateSetHealth({ service: "w", port: 9, health: "sick" }),
    "health",
  );
  assertInvalid(
    () =>
      validateSetHealth({
        service: "w",
        port: 9,
        health: "critical",
        note: "x".repeat(257),
      }),
    "note",
  );
  assertInvalid(
    () =>
      validateSetHealth({ service: "w", port: 9, health: "passing", note: "" }),
    "note",
  );
  assert.equal(validateServices({ service: "w", health: "any" }).health, "any");
  assert.equal(
    validateSubscribe({ service: "*", health: "passing" }).health,
    "passing",
  );
  assert.equal("health" in validateServices({ service: "w" }), false);
  assertInvalid(
    () => validateSubscribe({ service: "w", health: "all" }),
    "health",
  );
});

for (const field of ["batch", "chunks"] as const) {
  Deno.test(`validateSubscribe() takes ${field} as a boolean, and leaves it out when false`, () => {
    assert.equal(
      validateSubscribe({ service: "cache", [field]: true })[field],
      true,
    );
    assert.equal(
      field in validateSubscribe({ service: "cache", [field]: false }),
      false,
    );
    assertInvalid(
      () => validateSubscribe({ service: "cache", [field]: "yes" }),
      field,
    );
    assert.throws(
      () => validateSubscribe({ service: "cache", [field]: 1 }),
      new RegExp(`'${field}' must be true or false`),
    );
  });
}
