// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { admit, parseAllowHosts } from "./admit.ts";

/** A request as `Deno.serve` builds it: the URL's authority is `Host`. */
function request(host: string | null, url?: string): Request {
  const headers = new Headers();
  if (host !== null) headers.set("host", host);
  return new Request(url ?? `http://${host ?? "localhost:1111"}/`, {
    headers,
  });
}

async function status(
  req: Request,
  allowHosts: readonly string[] = [],
): Promise<number | string> {
  const refused = admit(req, { allowHosts });
  if (!refused) return "admitted";
  const text = await refused.text();
  return `${refused.status} ${text}`;
}

Deno.test("admit() refuses a DNS-rebinding Host with 403 naming the flag", async () => {
  const refused = admit(request("rebind.attacker.test:1111"), {
    allowHosts: [],
  });
  assert.equal(refused?.status, 403);
  const text = await refused!.text();
  assert.match(text, /'rebind\.attacker\.test' is not a name of this agent/);
  assert.match(text, /--allow-host rebind\.attacker\.test/);
  assert.match(text, /DNS rebinding/);
  for (const host of ["evil.example", "EVIL.example.:80", "127.0.0.1.nip.io"]) {
    assert.match(String(await status(request(host))), /^403 /, host);
  }
});

Deno.test("admit() accepts IP addresses, localhost and allowed names, with or without port", async () => {
  for (
    const host of [
      "127.0.0.1",
      "127.0.0.1:1111",
      "127.0.0.1.:1111",
      "10.1.2.3:80",
      "0.0.0.0:1111",
      "[::1]",
      "[::1]:1111",
      "[2001:DB8::7]:1111",
      "[::ffff:127.0.0.1]:1111",
      "localhost",
      "localhost:1111",
      "LOCALHOST.",
      "LocalHost.:1111",
      "app.localhost:1111",
    ]
  ) {
    assert.equal(await status(request(host)), "admitted", host);
  }
  const allowHosts = parseAllowHosts(["Discover.Test"]);
  for (
    const host of ["discover.test", "DISCOVER.test.:1111", "discover.test:80"]
  ) {
    assert.equal(await status(request(host), allowHosts), "admitted", host);
  }
  assert.match(
    String(await status(request("other.test:1111"), allowHosts)),
    /^403 /,
  );
  assert.match(
    String(await status(request("sub.discover.test:1111"), allowHosts)),
    /^403 /,
  );
  assert.equal(
    await status(request("anything.example:1111"), ["*"]),
    "admitted",
  );
});

Deno.test("admit() answers 400 to a missing or malformed Host", async () => {
  assert.match(String(await status(request(null))), /^400 .*no Host header/);
  for (
    const host of [
      "",
      "a b",
      "a@127.0.0.1",
      "127.0.0.1/evil",
      "127.0.0.1:99999",
      "127.0.0.1:x",
      "::1",
      "[::1",
      "[fe80::1%25eth0]:1111",
      "[127.0.0.1]:1111",
      "trailing-.example",
      "-lead.example",
      "a..b",
    ]
  ) {
    const req = new Request("http://localhost:1111/", { headers: { host } });
    assert.match(
      String(await status(req, ["*"])),
      /^400 bad request: Host/,
      host,
    );
  }
});

Deno.test("admit() checks the absolute URL of the request line too", async () => {
  // `GET http://rebind.attacker.test:1111/ HTTP/1.1` with `Host: 127.0.0.1`:
  // Deno builds the URL from the request line, and the Origin check
  // compares with that URL.
  const req = request("127.0.0.1:1111", "http://rebind.attacker.test:1111/");
  assert.match(String(await status(req)), /^403 .*'rebind\.attacker\.test'/);
  assert.equal(
    await status(request("127.0.0.1:1111", "http://localhost:1111/x")),
    "admitted",
  );
});

Deno.test("parseAllowHosts() normalizes, splits commas, drops IPs and rejects ports", () => {
  assert.deepEqual(
    parseAllowHosts([
      "Discover.Test.",
      " a.example , b.example",
      "discover.test",
      "127.0.0.1, ::1, [::1]",
    ]),
    ["discover.test", "a.example", "b.example"],
  );
  assert.deepEqual(parseAllowHosts(["a.example", "*"]), ["*"]);
  assert.deepEqual(parseAllowHosts([]), []);
  for (
    const bad of [
      "a.example:1111",
      "http://a.example",
      "a b",
      "[::1]:1111",
      "*.example",
    ]
  ) {
    assert.throws(() => parseAllowHosts([bad]), /'allowHosts' must hold/, bad);
  }
});
