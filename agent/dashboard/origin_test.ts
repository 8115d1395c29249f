// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { originAllowed, parseAllowOrigins } from "./origin.ts";

const upgrade = (origin?: string, url = "http://127.0.0.1:1111/") =>
  new Request(url, { headers: origin === undefined ? {} : { origin } });

Deno.test("originAllowed() accepts no Origin and the agent's own origin", () => {
  assert.ok(originAllowed(upgrade(), []));
  assert.ok(originAllowed(upgrade("http://127.0.0.1:1111"), []));
  assert.ok(originAllowed(upgrade("HTTP://127.0.0.1:1111"), []));
  assert.ok(
    originAllowed(upgrade("http://localhost", "http://localhost:80/"), []),
  );
});

Deno.test("originAllowed() refuses other origins unless listed", () => {
  for (
    const origin of [
      "http://127.0.0.1:1112",
      "https://127.0.0.1:1111",
      "http://localhost:1111",
      "https://evil.example",
      "null",
      "not a url",
    ]
  ) {
    assert.equal(originAllowed(upgrade(origin), []), false, origin);
  }
  const allowed = parseAllowOrigins(["http://localhost:3000"]);
  assert.ok(originAllowed(upgrade("http://localhost:3000"), allowed));
  assert.equal(originAllowed(upgrade("http://localhost:3001"), allowed), false);
  assert.ok(originAllowed(upgrade("https://evil.example"), ["*"]));
});

Deno.test("parseAllowOrigins() normalizes, splits commas and rejects non-URLs", () => {
  assert.deepEqual(
    parseAllowOrigins([
      "http://LocalHost:3000/path",
      " https://a.example:443 , http://b.example:80",
      "http://localhost:3000",
    ]),
    ["http://localhost:3000", "https://a.example", "http://b.example"],
  );
  assert.deepEqual(parseAllowOrigins(["http://a.example", "*"]), ["*"]);
  assert.deepEqual(parseAllowOrigins([]), []);
  for (const bad of ["localhost:3000", "ftp://a.example", "ws://a.example"]) {
    assert.throws(() => parseAllowOrigins([bad]), /allowOrigins/, bad);
  }
});
