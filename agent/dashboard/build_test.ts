// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { CLIENT_JS } from "./_client_bundle.ts";
import { bundleClient, clientBundleModule } from "./build.ts";

Deno.test("the embedded client bundle is up to date with mod.ts", async () => {
  const fresh = await bundleClient();
  assert.ok(
    CLIENT_JS === fresh,
    "agent/dashboard/_client_bundle.ts is stale: run `deno run --allow-run --allow-read --allow-write agent/dashboard/build.ts`",
  );
  const onDisk = await Deno.readTextFile(
    new URL("./_client_bundle.ts", import.meta.url),
  );
  assert.equal(onDisk, await clientBundleModule(fresh));
});

Deno.test("the bundle is browser code: an ES module that touches no Deno API", () => {
  assert.match(CLIENT_JS, /export \{[^}]*\bconnect\b/);
  assert.doesNotMatch(CLIENT_JS, /\bDeno\./);
  assert.doesNotMatch(CLIENT_JS, /\bimport\s.*\sfrom\s/);
});
