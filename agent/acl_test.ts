// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Access,
  Acl,
  AclError,
  allows,
  AuthLimiter,
  globMatch,
  MAX_TOKEN_LENGTH,
} from "./acl.ts";

/** `printf %s TOKEN | sha256sum`, as the file holds it. */
async function sha256(token: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(token),
  );
  return [...new Uint8Array(digest)]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** `printf %s test | sha256sum` */
const TEST_HASH =
  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/** Asserts that parsing `value` fails at `path` with a message matching `rule`. */
function assertRefused(value: unknown, path: string, rule: RegExp): void {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  assert.throws(
    () => Acl.parse(text, "/etc/discover/acl.json"),
    (error: unknown) => {
      assert.ok(error instanceof AclError, String(error));
      assert.equal(error.name, "AclError");
      assert.equal(error.source, "/etc/discover/acl.json");
      assert.equal(error.path, path);
      assert.ok(
        error.message.startsWith("/etc/discover/acl.json: "),
        error.message,
      );
      if (path !== "") {
        assert.ok(error.message.includes(`'${path}'`), error.message);
      }
      assert.match(error.message, rule);
      return true;
    },
    `${text} at ${path}`,
  );
}

const token = (extra: Record<string, unknown> = {}) => ({
  name: "a",
  sha256: TEST_HASH,
  ...extra,
});

Deno.test("Acl.parse() refuses text that is not JSON, or not an object", () => {
  assertRefused("{default: deny}", "", /is not valid JSON/);
  assertRefused("", "", /is not valid JSON/);
  assertRefused("[]", "", /the top level must be an object: got an array/);
  assertRefused("null", "", /the top level must be an object: got null/);
});

Deno.test("Acl.parse() refuses unknown and repeated keys, naming their path", () => {
  assertRefused(
    { default: "deny", token: [] },
    "token",
    /is not a known key; allowed: default, tokens/,
  );
  assertRefused(
    { tokens: [token({ hash: TEST_HASH })] },
    "tokens[0].hash",
    /is not a known key; allowed: name, sha256, rules/,
  );
  assertRefused(
    { tokens: [token({ rules: [{ service: "a", acess: "read" }] })] },
    "tokens[0].rules[0].acess",
    /is not a known key; allowed: service, access/,
  );
  assertRefused(
    '{"default": "write", "default": "deny"}',
    "default",
    /appears twice in one object/,
  );
  assertRefused(
    `{"tokens": [{"name": "a", "sha256": "${TEST_HASH}", "rules": [{"service": "a", "access": "read", "access": "admin"}]}]}`,
    "tokens[0].rules[0].access",
    /appears twice in one object/,
  );
});

Deno.test("Acl.parse() checks 'default' and 'tokens'", () => {
  for (const value of ["allow", "admin", "none", "Deny", 1, null]) {
    assertRefused(
      { default: value },
      "default",
      /must be "deny", "read" or "write": got /,
    );
  }
  assertRefused({ tokens: {} }, "tokens", /must be an array: got an object/);
  assertRefused({ tokens: ["x"] }, "tokens[0]", /must be an object: got "x"/);
  assertRefused({ tokens: null }, "tokens", /must be an array: got null/);
  assertRefused(
    { tokens: [token({ rules: null })] },
    "tokens[0].rules",
    /must be an array of .*: got null/,
  );
  assert.equal(Acl.parse("{}").default, "deny");
  assert.deepEqual(Acl.parse("{}").names, []);
});

Deno.test("Acl.parse() checks token names: 1 to 64 characters of A-Za-z0-9_.@-, unique", () => {
  for (const name of ["", "a b", "x".repeat(65), "a/b", "é", 7, undefined]) {
    assertRefused(
      { tokens: [token({ name })] },
      "tokens[0].name",
      /must be 1 to 64 characters of A-Z a-z 0-9 _ \. @ -: got /,
    );
  }
  const names = ["a", "ops@example.com", "x".repeat(64), "A_b-c.d"];
  const acl = Acl.parse(JSON.stringify({
    tokens: namedTokens(names),
  }));
  assert.deepEqual(acl.names, names);
  assertRefused(
    { tokens: [token(), token({ sha256: "0".repeat(64) })] },
    "tokens[1].name",
    /must be unique: "a" is also the name of tokens\[0\]/,
  );
});

/** Tokens named `names`, each with a distinct made-up hash. */
function namedTokens(names: string[]): unknown[] {
  return names.map((name, i) => ({
    name,
    sha256: i.toString(16).padStart(64, "0"),
  }));
}

Deno.test("Acl.parse() checks sha256: 64 lowercase hex digits, unique, never echoed", () => {
  const secret = "my-secret-token-put-here-by-mistake";
  for (
    const sha256 of [
      TEST_HASH.toUpperCase(),
      TEST_HASH.slice(1),
      TEST_HASH + "0",
      "g".repeat(64),
      secret,
      1,
      undefined,
    ]
  ) {
    assertRefused(
      { tokens: [token({ sha256 })] },
      "tokens[0].sha256",
      /must be the SHA-256 of the token as 64 lowercase hex digits \(printf %s TOKEN \| sha256sum\): got /,
    );
  }
  assert.throws(
    () => Acl.parse(JSON.stringify({ tokens: [token({ sha256: secret })] })),
    (error: Error) => !error.message.includes(secret),
  );
  assertRefused(
    { tokens: [token(), token({ name: "b" })] },
    "tokens[1].sha256",
    /must be unique: tokens\[0\] has the same hash/,
  );
});

Deno.test("Acl.parse() checks rules: globs and access values", () => {
  assertRefused(
    { tokens: [token({ rules: { service: "a", access: "read" } })] },
    "tokens[0].rules",
    /must be an array of \{"service", "access"\}: got an object/,
  );
  assertRefused(
    { tokens: [token({ rules: ["a"] })] },
    "tokens[0].rules[0]",
    /must be an object: got "a"/,
  );
  for (
    const service of ["", "db/*", "db-[ab]", "a b", "x".repeat(129), 1, null]
  ) {
    assertRefused(
      { tokens: [token({ rules: [{ service, access: "read" }] })] },
      "tokens[0].rules[0].service",
      /must be a glob of 1 to 128 characters of A-Z a-z 0-9 \. _ - and the wildcards \* \(any run of characters\) and \? \(one character\): got /,
    );
  }
  for (const access of ["none", "deny", "Read", "owner", undefined]) {
    assertRefused(
      {
        tokens: [token({
          rules: [{ service: "a", access: "read" }, { service: "b", access }],
        })],
      },
      "tokens[0].rules[1].access",
      /must be "read", "write" or "admin" \(to deny, leave the service out of the rules\): got /,
    );
  }
  const acl = Acl.parse(JSON.stringify({
    tokens: [token({ rules: [{ service: "db-*", access: "write" }] })],
  }));
  assert.deepEqual(acl.tokens, [{
    name: "a",
    rules: [{ service: "db-*", access: "write" }],
  }]);
});

Deno.test("Acl.authenticate() finds the token by its hash and refuses others", async () => {
  const tokens = ["alpha-token", "beta-token", "x".repeat(MAX_TOKEN_LENGTH)];
  const acl = Acl.parse(JSON.stringify({
    tokens: [
      { name: "alpha", sha256: await sha256(tokens[0]) },
      { name: "beta", sha256: await sha256(tokens[1]) },
      { name: "longest", sha256: await sha256(tokens[2]) },
      { name: "test", sha256: TEST_HASH },
    ],
  }));
  assert.equal(await acl.authenticate("alpha-token"), "alpha");
  assert.equal(await acl.authenticate("beta-token"), "beta");
  assert.equal(await acl.authenticate("test"), "test");
  assert.equal(await acl.authenticate(tokens[2]), "longest");
  for (
    const wrong of ["alpha-token\n", "Alpha-token", "alpha", "", TEST_HASH]
  ) {
    assert.equal(await acl.authenticate(wrong), undefined, wrong);
  }
});

Deno.test("Acl.authenticate() refuses a token longer than MAX_TOKEN_LENGTH even when its hash is listed", async () => {
  const long = "x".repeat(MAX_TOKEN_LENGTH + 1);
  const acl = Acl.parse(JSON.stringify({
    tokens: [{ name: "long", sha256: await sha256(long) }],
  }));
  assert.equal(await acl.authenticate(long), undefined);
  assert.equal(await acl.authenticate("x".repeat(1_000_000)), undefined);
});

Deno.test("Acl.access() grants the highest of the default and the matching rules", () => {
  const acl = Acl.parse(JSON.stringify({
    default: "deny",
    tokens: [
      token({
        name: "app",
        rules: [
          { service: "db-*", access: "read" },
          { service: "db-eu", access: "write" },
          { service: "cache-?", access: "write" },
          { service: "a.b", access: "admin" },
        ],
      }),
      token({
        name: "ops",
        sha256: "1".repeat(64),
        rules: [{ service: "*", access: "admin" }],
      }),
      token({ name: "none", sha256: "2".repeat(64) }),
    ],
  }));
  const cases: [string | undefined, string, Access][] = [
    ["app", "db-eu", "write"],
    ["app", "db-us", "read"],
    ["app", "db-", "read"],
    ["app", "db", "none"],
    ["app", "xdb-eu", "none"],
    ["app", "cache-1", "write"],
    ["app", "cache-12", "none"],
    ["app", "cache-", "none"],
    ["app", "a.b", "admin"],
    ["app", "axb", "none"],
    ["app", "A.b", "none"],
    ["ops", "anything", "admin"],
    ["ops", "db-eu", "admin"],
    ["none", "db-eu", "none"],
    [undefined, "db-eu", "none"],
    ["unknown", "db-eu", "none"],
  ];
  for (const [name, service, access] of cases) {
    assert.equal(acl.access(name, service), access, `${name} ${service}`);
  }
});

Deno.test("Acl.access() gives the default to sessions without a token, and as a floor to tokens", () => {
  for (
    const [fallback, access] of [["deny", "none"], ["read", "read"], [
      "write",
      "write",
    ]] as const
  ) {
    const acl = Acl.parse(JSON.stringify({
      default: fallback,
      tokens: [
        token({ rules: [{ service: "db", access: "read" }] }),
        token({
          name: "b",
          sha256: "1".repeat(64),
          rules: [{ service: "db", access: "admin" }],
        }),
      ],
    }));
    assert.equal(acl.default, fallback);
    assert.equal(acl.access(undefined, "db"), access);
    assert.equal(acl.access(undefined, "other"), access);
    assert.equal(acl.access("a", "other"), access);
    assert.equal(
      acl.access("a", "db"),
      fallback === "write" ? "write" : "read",
    );
    assert.equal(acl.access("b", "db"), "admin");
  }
});

Deno.test("Acl.access() opens the all-services subscription only to globs that match every name", () => {
  const acl = Acl.parse(JSON.stringify({
    default: "deny",
    tokens: [
      token({ name: "star", rules: [{ service: "*", access: "read" }] }),
      token({
        name: "anyone",
        sha256: "1".repeat(64),
        rules: [{ service: "?*", access: "write" }],
      }),
      token({
        name: "some",
        sha256: "2".repeat(64),
        rules: [
          { service: "db-*", access: "admin" },
          { service: "?", access: "admin" },
          { service: "??*", access: "admin" },
        ],
      }),
    ],
  }));
  assert.equal(acl.access("star", "*"), "read");
  assert.equal(acl.access("anyone", "*"), "write");
  assert.equal(acl.access("some", "*"), "none");
  assert.equal(acl.access(undefined, "*"), "none");
  assert.equal(
    Acl.parse('{"default": "read"}').access(undefined, "*"),
    "read",
  );
});

Deno.test("Acl.has() follows tokens across a reload, and a token replaced under the same name", () => {
  const before = Acl.parse(JSON.stringify({
    tokens: [token(), token({ name: "b", sha256: "1".repeat(64) })],
  }));
  const after = Acl.parse(JSON.stringify({
    tokens: [token({ sha256: "2".repeat(64) }), token({ name: "c" })],
  }));
  assert.ok(before.has("a") && before.has("b") && !before.has("c"));
  assert.ok(after.has("a"));
  assert.ok(!after.has("b"));
  assert.ok(!after.has("a", { since: before }), "a's token was replaced");
  assert.ok(after.has("c") && !after.has("c", { since: before }));
  assert.ok(before.has("a", { since: before }));
});

Deno.test("allows() orders none < read < write < admin", () => {
  const levels: Access[] = ["none", "read", "write", "admin"];
  for (const [i, access] of levels.entries()) {
    for (const [j, needed] of levels.entries()) {
      if (needed === "none") continue;
      assert.equal(allows(access, needed), i >= j, `${access} ${needed}`);
    }
  }
});

Deno.test("globMatch() matches * as any run, ? as one character, the rest literally", () => {
  const cases: [string, string, boolean][] = [
    ["*", "db", true],
    ["*", "a", true],
    ["db-*", "db-", true],
    ["db-*", "db-eu-1", true],
    ["db-*", "db", false],
    ["db-*", "DB-eu", false],
    ["*-eu", "db-eu", true],
    ["*-eu", "db-eu2", false],
    ["db-*-1", "db-eu-1", true],
    ["db-*-1", "db-1", false],
    ["?", "a", true],
    ["?", "ab", false],
    ["cache-?", "cache-7", true],
    ["cache-?", "cache-", false],
    ["a.b", "a.b", true],
    ["a.b", "axb", false],
    ["a.*", "a.b.c", true],
    ["a*a", "a", false],
    ["a*a", "aa", true],
    ["*a*b*", "xaybz", true],
    ["*a*b*", "xbya", false],
    ["**", "x", true],
  ];
  for (const [glob, service, expected] of cases) {
    assert.equal(globMatch(glob, service), expected, `${glob} ${service}`);
  }
  assert.throws(() => globMatch("db-[ab]", "db-a"), TypeError);
  assert.throws(() => globMatch("", "db"), TypeError);
});

Deno.test("globMatch() agrees with a reference matcher, and pathological globs end", () => {
  /** Classic dynamic programming over glob and name. */
  function reference(glob: string, name: string): boolean {
    let row = [true, ...Array.from({ length: name.length }, () => false)];
    for (const g of glob) {
      const next = [g === "*" && row[0]];
      for (let j = 1; j <= name.length; j++) {
        next[j] = g === "*"
          ? next[j - 1] || row[j]
          : row[j - 1] && (g === "?" || g === name[j - 1]);
      }
      row = next;
    }
    return row[name.length];
  }
  const globs = fc.string({
    unit: fc.constantFrom("a", "b", ".", "*", "?"),
    minLength: 1,
    maxLength: 10,
  });
  const names = fc.string({
    unit: fc.constantFrom("a", "b", "."),
    minLength: 1,
    maxLength: 12,
  });
  fc.assert(
    fc.property(globs, names, (glob, name) => {
      assert.equal(globMatch(glob, name), reference(glob, name));
    }),
    { numRuns: 2000 },
  );
  // Would try every split of the name (C(63, 32) ways) with a naive
  // translation to RegExp; here it answers at once.
  const glob = "*a".repeat(63).slice(0, 127) + "b";
  assert.equal(globMatch(glob, "a".repeat(63)), false);
  const acl = Acl.parse(JSON.stringify({
    tokens: [token({ rules: [{ service: glob, access: "read" }] })],
  }));
  assert.equal(acl.access("a", "a".repeat(63)), "none");
});

Deno.test("AuthLimiter.serially runs the attempts of one address one at a time, and of other addresses meanwhile", async () => {
  const limiter = new AuthLimiter({ burst: 2, perSecond: 1, now: () => 0 });
  const order: string[] = [];
  const attempt = (address: string, tag: string) =>
    limiter.serially(address, async () => {
      order.push(`${tag} starts`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      order.push(`${tag} ends`);
      return tag;
    });
  const done = await Promise.all([
    attempt("192.0.2.1", "a1"),
    attempt("192.0.2.1", "a2"),
    attempt("192.0.2.2", "b1"),
  ]);
  assert.deepEqual(done, ["a1", "a2", "b1"]);
  assert.deepEqual(order, [
    "a1 starts",
    "b1 starts",
    "a1 ends",
    "a2 starts",
    "b1 ends",
    "a2 ends",
  ]);
  // An attempt that fails does not stop the next.
  const failed = limiter.serially("192.0.2.1", () => {
    throw new Error("refused");
  });
  await assert.rejects(failed, /refused/);
  assert.equal(await attempt("192.0.2.1", "a3"), "a3");
});

Deno.test("AuthLimiter allows a burst, then one try per 1/perSecond, recovering over time", () => {
  let clock = 1_000;
  const limiter = new AuthLimiter({ burst: 3, perSecond: 2, now: () => clock });
  const address = "192.0.2.1";
  assert.equal(limiter.delay(address), 0);
  limiter.failed(address);
  limiter.failed(address);
  assert.equal(limiter.delay(address), 0);
  limiter.failed(address);
  assert.equal(limiter.delay(address), 500);
  assert.equal(limiter.delay("192.0.2.2"), 0, "other addresses are not held");
  clock += 200;
  assert.equal(limiter.delay(address), 300);
  clock += 300;
  assert.equal(limiter.delay(address), 0);
  limiter.failed(address);
  assert.equal(limiter.delay(address), 500);
  // Failing again while held does not push the wait further out.
  limiter.failed(address);
  assert.equal(limiter.delay(address), 500);
  clock += 1_500;
  assert.equal(limiter.delay(address), 0);
  assert.equal(limiter.size, 0, "a full bucket is forgotten");
  for (let i = 0; i < 3; i++) limiter.failed(address);
  assert.equal(limiter.delay(address), 500, "the burst is back");
});

Deno.test("AuthLimiter defaults to a burst of 5 then 1 per second", () => {
  let clock = 0;
  const limiter = new AuthLimiter({ now: () => clock });
  for (let i = 0; i < 4; i++) limiter.failed("a");
  assert.equal(limiter.delay("a"), 0);
  limiter.failed("a");
  assert.equal(limiter.delay("a"), 1000);
  clock += 999;
  assert.equal(limiter.delay("a"), 1);
  clock += 1;
  assert.equal(limiter.delay("a"), 0);
});

Deno.test("AuthLimiter remembers at most maxAddresses, forgetting the oldest failure first", () => {
  const clock = 0;
  const limiter = new AuthLimiter({
    burst: 1,
    maxAddresses: 3,
    now: () => clock,
  });
  for (const address of ["a", "b", "c"]) limiter.failed(address);
  assert.equal(limiter.size, 3);
  limiter.failed("a"); // a's failure is now the newest
  limiter.failed("d");
  assert.equal(limiter.size, 3);
  assert.equal(limiter.delay("b"), 0, "b was the oldest: forgotten");
  for (const address of ["a", "c", "d"]) {
    assert.equal(limiter.delay(address), 1000, address);
  }
  for (let i = 0; i < 1000; i++) limiter.failed(`198.51.100.${i}`);
  assert.equal(limiter.size, 3);
});

Deno.test("AuthLimiter refuses unknown options and bad bounds", () => {
  assert.throws(
    // @ts-expect-error: not an option
    () => new AuthLimiter({ rate: 1 }),
    /'rate' is not an option of AuthLimiter: its options are burst, perSecond, maxAddresses, now/,
  );
  assert.throws(
    () => new AuthLimiter({ burst: 0 }),
    /'burst' must be an integer, at least 1: current value is 0/,
  );
  assert.throws(() => new AuthLimiter({ perSecond: 0 }), RangeError);
  assert.throws(() => new AuthLimiter({ perSecond: Infinity }), RangeError);
  assert.throws(() => new AuthLimiter({ maxAddresses: 1.5 }), RangeError);
});

Deno.test("Acl.load() reads a file, and names the path when it cannot", async () => {
  const dir = await Deno.makeTempDir({ prefix: "discover_acl_" });
  try {
    const path = `${dir}/acl.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        default: "read",
        tokens: [{
          name: "test",
          sha256: TEST_HASH,
          rules: [{ service: "db-*", access: "write" }],
        }],
      }),
    );
    const acl = await Acl.load(path);
    assert.equal(acl.default, "read");
    assert.equal(await acl.authenticate("test"), "test");
    assert.equal(acl.access("test", "db-1"), "write");

    const missing = `${dir}/missing.json`;
    await assert.rejects(() => Acl.load(missing), (error: unknown) => {
      assert.ok(error instanceof AclError);
      assert.equal(error.source, missing);
      assert.equal(
        error.message,
        `${missing}: cannot read the ACL file: no such file`,
      );
      return true;
    });

    await Deno.writeTextFile(path, '{"default": "allow"}');
    await assert.rejects(() => Acl.load(path), (error: unknown) => {
      assert.ok(error instanceof AclError);
      assert.equal(error.path, "default");
      assert.equal(
        error.message,
        `${path}: 'default' must be "deny", "read" or "write": got "allow"`,
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
