// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import fc from "fast-check";
import { type DuplicateKey, findDuplicateKey } from "./_json_keys.ts";

/** Checks `text` is valid JSON, then returns what the scanner finds in it. */
function scan(text: string): DuplicateKey | undefined {
  JSON.parse(text);
  return findDuplicateKey(text);
}

// --- examples ----------------------------------------------------------------

Deno.test("findDuplicateKey finds a key repeated at the top level", () => {
  assert.deepEqual(scan(`{"a":1,"a":2}`), { key: "a", path: "" });
  assert.deepEqual(
    scan(`{"jsonrpc":"2.0","id":1,"id":2,"method":"$/ping"}`),
    { key: "id", path: "" },
  );
  assert.deepEqual(scan(` { "k" : 1 ,\n\t"k"\r\n:\n2 } `), {
    key: "k",
    path: "",
  });
});

Deno.test("findDuplicateKey finds a key repeated in params", () => {
  const text = `{"jsonrpc":"2.0","id":1,"method":"discover.register",` +
    `"params":{"service":"a","service":"b","port":80}}`;
  assert.deepEqual(scan(text), { key: "service", path: "params" });
});

Deno.test("findDuplicateKey finds a key repeated deep down, and names the path", () => {
  assert.deepEqual(
    scan(`{"params":{"attrs":{"zone":"a","role":"x","zone":"b"}}}`),
    { key: "zone", path: "params.attrs" },
  );
  assert.deepEqual(scan(`{"a":{"b":{"c":{"d":{"e":1,"e":1}}}}}`), {
    key: "e",
    path: "a.b.c.d",
  });
});

Deno.test("findDuplicateKey finds a key repeated in an array of objects", () => {
  assert.deepEqual(scan(`[{"a":1},{"a":1,"b":2,"a":3}]`), {
    key: "a",
    path: "[1]",
  });
  assert.deepEqual(scan(`{"x":[1,[2,{"y":[{},{"k":0,"k":0}]}]]}`), {
    key: "k",
    path: "x[1][1].y[1]",
  });
  // A batch: the second message repeats `params`.
  const batch = `[{"jsonrpc":"2.0","id":1,"method":"$/ping"},` +
    `{"jsonrpc":"2.0","id":2,"method":"x","params":{},"params":[]}]`;
  assert.deepEqual(scan(batch), { key: "params", path: "[1]" });
});

Deno.test("findDuplicateKey reports the first repetition in text order", () => {
  assert.deepEqual(scan(`{"a":{"b":1,"b":2},"a":3}`), {
    key: "b",
    path: "a",
  });
  assert.deepEqual(scan(`{"a":1,"a":{"b":1,"b":2}}`), { key: "a", path: "" });
});

Deno.test("findDuplicateKey treats escaped and plain spellings of a key as one key", () => {
  for (
    const [text, key] of [
      [`{"a":1,"\\u0061":2}`, "a"],
      [`{"\\u0061":1,"a":2}`, "a"],
      [`{"\\u0061":1,"\\u0061":2}`, "a"],
      [`{"\\u0041b":1,"\\u0041\\u0062":2}`, "Ab"],
      [`{"\\u0061b":1,"ab":2}`, "ab"], // the escape is not at the key's end
      [`{"ab":1,"a\\u0062":2}`, "ab"],
      [`{"x":"\\\\","ab":1,"\\u0061b":2}`, "ab"], // a value ends in a backslash
      [`{"a/b":1,"a\\/b":2}`, "a/b"],
      [`{"\\n":1,"\\u000a":2}`, "\n"],
      [`{"q\\"":1,"q\\u0022":2}`, 'q"'],
      [`{"\\\\":1,"\\u005C":2}`, "\\"],
      [`{"é":1,"\\u00e9":2}`, "é"],
      [`{"😀":1,"\\ud83d\\ude00":2}`, "😀"],
      [`{"\\uD83D\\uDE00":1,"\\ud83d\\ude00":2}`, "😀"],
    ]
  ) {
    assert.deepEqual(scan(text), { key, path: "" }, text);
  }
});

Deno.test("findDuplicateKey tells apart keys that only look alike", () => {
  for (
    const text of [
      `{"a":1,"A":2}`,
      `{"a":1,"a ":2}`,
      `{"a":1," a":2}`,
      `{"a":1,"\\u0061\\u0061":2}`,
      `{"ab":1,"a":2,"b":3}`,
      `{"a\\\\":1,"a\\"":2,"a":3}`,
      `{"é":1,"e\\u0301":2}`, // same letter, other code points
      `{"":1," ":2}`,
      `{"1":1,"01":2,"1.0":3}`,
      `{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}`,
    ]
  ) {
    assert.equal(scan(text), undefined, text);
  }
});

Deno.test("findDuplicateKey ignores what strings hold", () => {
  for (
    const text of [
      `{"a":"\\"a\\":1,","b":"{\\"a\\":1,\\"a\\":2}"}`,
      `{"a":"}","b":"{","c":"\\\\","d":"\\\\\\""}`,
      `["{\\"k\\":1,\\"k\\":2}"]`,
      `{"a\\":1,\\"a":1,"a":2}`, // keys a":1,"a and a
      `{"x":"a","y":"a"}`, // equal values, not keys
      `["a","a",{"a":"a"}]`,
      `"{\\"a\\":1,\\"a\\":2}"`,
    ]
  ) {
    assert.equal(scan(text), undefined, text);
  }
  assert.deepEqual(scan(`{"a":"}{\\"","b":"\\\\","a":"\\\\\\""}`), {
    key: "a",
    path: "",
  });
});

Deno.test("findDuplicateKey finds nothing in valid frames", () => {
  for (
    const text of [
      `{"jsonrpc":"2.0","id":1,"method":"discover.status"}`,
      `{"jsonrpc":"2.0","id":2,"method":"discover.register","params":{"service":"cache","port":6379,"attrs":{"zone":"b","role":"primary"}}}`,
      `[{"jsonrpc":"2.0","id":9,"method":"discover.services","params":{"service":"cache","filter":{"attrs":{"zone":"b"}}}},{"jsonrpc":"2.0","method":"$/ping"},{"jsonrpc":"2.0","id":10,"method":"discover.status"}]`,
      `{"jsonrpc":"2.0","method":"discover.event","params":{"subscription":"1","result":{"kind":"up","revision":43,"instance":{"id":"cache/192.0.2.11:6379","service":"cache","addr":"192.0.2.11:6379","attrs":{"zone":"b"},"revision":17,"registeredAt":1767225000000}}}}`,
      `{}`,
      `[]`,
      `[{},{},[]]`,
      `1`,
      `"x"`,
      `null`,
      ` true `,
    ]
  ) {
    assert.equal(scan(text), undefined, text);
  }
});

Deno.test("findDuplicateKey keeps the keys of each object apart", () => {
  // Many keys (kept in a Set), then a nested object reusing them, then more.
  const keys = Array.from({ length: 40 }, (_, i) => `"k${i}":${i}`);
  const nested = `{${keys.join(",")}}`;
  assert.equal(scan(`{${keys.join(",")},"n":${nested},"m":1}`), undefined);
  assert.deepEqual(scan(`{${keys.join(",")},"n":${nested},"k3":1}`), {
    key: "k3",
    path: "",
  });
  assert.deepEqual(scan(`{"a":1,"n":${nested},"a":2}`), {
    key: "a",
    path: "",
  });
  assert.deepEqual(scan(`{"n":{${keys.join(",")},"k39":0}}`), {
    key: "k39",
    path: "n",
  });
  // Siblings do not share keys.
  assert.equal(scan(`[${nested},${nested},{"k0":{"k0":{}}}]`), undefined);
});

Deno.test("findDuplicateKey handles large and deep texts", () => {
  const many = Array.from({ length: 20_000 }, (_, i) => `"key${i}":${i}`);
  assert.equal(scan(`{${many.join(",")}}`), undefined);
  assert.deepEqual(scan(`{${many.join(",")},"key7":0}`), {
    key: "key7",
    path: "",
  });
  const depth = 100_000;
  const deep = `{"a":`.repeat(depth) + "1" + "}".repeat(depth);
  assert.equal(scan(deep), undefined);
  const deepDuplicate = `{"a":`.repeat(depth) + `{"b":1,"b":2}` +
    "}".repeat(depth);
  const found = scan(deepDuplicate);
  assert.equal(found?.key, "b");
  assert.equal(found?.path, `...a${".a".repeat(62)}`);
  assert.equal(found?.path.length, 128);
});

Deno.test("findDuplicateKey reads a long frame once, also once optimized", () => {
  // Many small frames first, so that the scanner runs as optimized code, as
  // in an agent that has answered for a while. Optimized code that searched
  // the whole text for a backslash at every character of the loop would
  // take some ten seconds on each frame below, instead of milliseconds.
  const frames = [
    `{"jsonrpc":"2.0","id":1,"method":"discover.register",` +
    `"params":{"service":"w","addr":"127.0.0.1:1","attrs":{"round":"1"}}}`,
    `{"jsonrpc":"2.0","id":1000001,"method":"$/ping"}`,
    `{"jsonrpc":"2.0","id":"x {\\"bogus\\":1}","method":"$/ping"}`,
  ];
  for (let round = 0; round < 20_000; round++) {
    for (const frame of frames) {
      assert.equal(findDuplicateKey(frame), undefined);
    }
  }
  // Texts of the agent's largest frame (1 MiB) that the loop reads a
  // character at a time. The bound is some hundred times what one pass
  // takes, for a busy machine.
  const size = 1024 * 1024;
  const ping = `{"jsonrpc":"2.0","id":"max","method":"$/ping"}`;
  const cases: [string, string, DuplicateKey | undefined][] = [
    ["trailing spaces", ping + " ".repeat(size - ping.length), undefined],
    ["an array of numbers", `[${"0,".repeat(size / 2 - 1)}0]`, undefined],
    ["spaces between two equal keys", `{"a":1,${" ".repeat(size)}"a":2}`, {
      key: "a",
      path: "",
    }],
  ];
  for (const [name, text, expected] of cases) {
    JSON.parse(text);
    const started = performance.now();
    const found = findDuplicateKey(text);
    const ms = performance.now() - started;
    assert.deepEqual(found, expected, name);
    assert.ok(
      ms < 2000,
      `${name}: ${Math.round(ms)} ms to scan ${text.length} characters`,
    );
  }
});

Deno.test("findDuplicateKey returns the whole key and cuts long path steps", () => {
  const long = "k".repeat(1000);
  assert.deepEqual(scan(`{"${long}":1,"${long}":2}`), { key: long, path: "" });
  const found = scan(`{"${long}":{"x":1,"x":2}}`);
  assert.deepEqual(found, { key: "x", path: `${"k".repeat(61)}...` });
  assert.deepEqual(scan(`{"":[{"":{"x":1,"x":2}}]}`), {
    key: "x",
    path: '""[0].""',
  });
});

// --- against a reference parser ----------------------------------------------

/**
 * A slow reference: a recursive-descent JSON parser that decodes every key
 * with `JSON.parse` and keeps each object's keys in a `Set`. Returns the
 * first repeated key and its object's path, formatted as the scanner does
 * (keys here are short: no cutting).
 */
function reference(text: string): DuplicateKey | undefined {
  let i = 0;
  const space = () => {
    while (" \t\n\r".includes(text[i]) && i < text.length) i++;
  };
  const string = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const show = (path: (string | number)[]) =>
    path.map((step, k) =>
      typeof step === "number"
        ? `[${step}]`
        : (k === 0 ? "" : ".") + (step === "" ? '""' : step)
    ).join("");
  const value = (path: (string | number)[]): DuplicateKey | undefined => {
    space();
    const c = text[i];
    if (c === "{") {
      i++;
      const seen = new Set<string>();
      space();
      if (text[i] === "}") return void i++;
      for (;;) {
        space();
        const key = string();
        if (seen.has(key)) return { key, path: show(path) };
        seen.add(key);
        space();
        i++; // :
        const found = value([...path, key]);
        if (found) return found;
        space();
        if (text[i++] === "}") return undefined;
      }
    }
    if (c === "[") {
      i++;
      space();
      if (text[i] === "]") return void i++;
      for (let index = 0;; index++) {
        const found = value([...path, index]);
        if (found) return found;
        space();
        if (text[i++] === "]") return undefined;
      }
    }
    if (c === '"') {
      string();
      return undefined;
    }
    while (i < text.length && !",]} \t\n\r".includes(text[i])) i++;
    return undefined;
  };
  return value([]);
}

Deno.test("reference parser agrees with the examples", () => {
  assert.deepEqual(reference(`{"a":{"b":1,"b":2},"a":3}`), {
    key: "b",
    path: "a",
  });
  assert.deepEqual(reference(`{"x":[1,[2,{"y":[{},{"k":0,"k":0}]}]]}`), {
    key: "k",
    path: "x[1][1].y[1]",
  });
  assert.deepEqual(reference(`{"a":1,"\\u0061":2}`), { key: "a", path: "" });
  assert.equal(reference(`{"a":"{\\"a\\":1,\\"a\\":2}","b":[1,2]}`), undefined);
});

const whitespace = fc.constantFrom("", "", "", " ", "\n", "\t", "\r\n  ");

/**
 * Keys from a small pool, so that objects often repeat one, each written in
 * one of several spellings: plain, every character escaped, or a mix.
 */
const key = fc.tuple(
  fc.oneof(
    fc.constantFrom(
      "a",
      "b",
      "id",
      'a"',
      "a\\",
      "a/b",
      "{",
      ":",
      "é",
      "😀",
      "",
    ),
    fc.nat(40).map((n) => `k${n}`),
  ),
  fc.array(fc.constantFrom("plain", "u", "U", "short"), {
    minLength: 4,
    maxLength: 4,
  }),
).map(([name, spellings]) => {
  let out = '"';
  for (let k = 0; k < name.length; k++) {
    const c = name[k];
    const spelling = spellings[k % spellings.length];
    const hex = c.charCodeAt(0).toString(16).padStart(4, "0");
    if (spelling === "u") out += `\\u${hex}`;
    else if (spelling === "U") out += `\\u${hex.toUpperCase()}`;
    else if (c === '"' || c === "\\") out += `\\${c}`;
    else if (spelling === "short" && c === "/") out += "\\/";
    else out += c;
  }
  return out + '"';
});

/** Scalars, and strings that hold quotes, braces and JSON text. */
const scalar = fc.oneof(
  fc.jsonValue({ maxDepth: 0 }).map((v) => JSON.stringify(v)),
  fc.string({ unit: fc.constantFrom('"', "\\", "{", "}", ":", ",", "a") })
    .map((s) => JSON.stringify(s)),
  fc.constantFrom(
    JSON.stringify(`{"a":1,"a":2}`),
    `"\\\\"`,
    `"\\\\\\""`,
    `"\\u0022:"`,
  ),
);

/** An object of `members` from `[w1, key, w2, w3, value, w4]` tuples. */
const object = (members: string[][]) =>
  `{${
    members.map(([w1, k, w2, w3, v, w4]) => `${w1}${k}${w2}:${w3}${v}${w4}`)
      .join(",")
  }}`;

const { json } = fc.letrec<
  { json: string; object: string; wide: string; array: string }
>((tie) => ({
  json: fc.oneof(
    { depthSize: "small", maxDepth: 5, withCrossShrink: true },
    scalar,
    tie("object"),
    tie("wide"),
    tie("array"),
  ),
  object: fc.array(
    fc.tuple(whitespace, key, whitespace, whitespace, tie("json"), whitespace),
    { maxLength: 6 },
  ).map(object),
  // Objects with more keys than the scanner searches one by one; their
  // values are scalars, so that they stay small.
  wide: fc.tuple(
    fc.uniqueArray(fc.nat(60), { minLength: 15, maxLength: 30 }),
    fc.array(fc.boolean(), { minLength: 31, maxLength: 31 }),
    fc.option(fc.nat(29)),
  ).map(([unique, escape, repeat]) => {
    const numbers = repeat === null
      ? unique
      : [...unique, unique[repeat % unique.length]];
    return `{${
      numbers.map((n, i) => `"${escape[i] ? "\\u006b" : "k"}${n}":${i}`)
        .join(",")
    }}`;
  }),
  array: fc.array(fc.tuple(whitespace, tie("json"), whitespace), {
    maxLength: 5,
  }).map((items) => `[${items.map((t) => t.join("")).join(",")}]`),
}));

/**
 * Checks the scanner against {@linkcode reference} on 3,000 of `texts`,
 * and that both kinds of text were tried, often: some that repeat a key,
 * some with keys that do not.
 */
function agreesWithReference(texts: fc.Arbitrary<string>) {
  let repeated = 0;
  let unique = 0;
  fc.assert(
    fc.property(texts, (text) => {
      const expected = reference(text);
      assert.deepEqual(scan(text), expected);
      if (expected) repeated++;
      else if (text.includes(":")) unique++;
    }),
    { numRuns: 3000 },
  );
  assert.ok(repeated > 300, `only ${repeated} texts repeated a key`);
  assert.ok(unique > 300, `only ${unique} texts had unique keys`);
}

Deno.test("findDuplicateKey agrees with a reference parser on generated texts", () => {
  agreesWithReference(
    fc.tuple(whitespace, json, whitespace).map((parts) => parts.join("")),
  );
});

/** Texts without a backslash, as most frames are (they are scanned without decoding keys). */
const { json: plainJson } = fc.letrec<{ json: string; object: string }>(
  (tie) => ({
    json: fc.oneof(
      { depthSize: "small", maxDepth: 3, withCrossShrink: true },
      fc.oneof(
        fc.jsonValue({ maxDepth: 0 }).map((v) => JSON.stringify(v)),
        fc.constantFrom('"{"', '"}"', '":"', '"a:"', '"{a:1,a:2}"'),
      ).filter((t) => !t.includes("\\")),
      tie("object"),
      fc.array(tie("json"), { maxLength: 3 }).map((items) =>
        `[${items.join(",")}]`
      ),
    ),
    object: fc.array(
      fc.tuple(
        whitespace,
        fc.oneof(
          fc.constantFrom("a", "b", "id", "", "é", "😀", "a/b", "{", ":"),
          fc.nat(20).map((n) => `k${n}`),
        ),
        whitespace,
        tie("json"),
      ),
      { maxLength: 20, depthIdentifier: "plain" },
    ).map((members) =>
      `{${members.map(([w1, k, w2, v]) => `${w1}"${k}"${w2}:${v}`).join(",")}}`
    ),
  }),
);

Deno.test("findDuplicateKey agrees with a reference parser on texts without escapes", () => {
  agreesWithReference(plainJson.map((text) => {
    assert.ok(!text.includes("\\"));
    return text;
  }));
});

Deno.test("findDuplicateKey finds nothing in what JSON.stringify writes", () => {
  fc.assert(
    fc.property(
      fc.jsonValue(),
      fc.constantFrom(0, 1, "\t"),
      (value, indent) => {
        const text = JSON.stringify(value, null, indent);
        assert.equal(findDuplicateKey(text), undefined);
        assert.equal(reference(text), undefined);
      },
    ),
    { numRuns: 1000 },
  );
});
