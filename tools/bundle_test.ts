// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { CLIENT_JS } from "../agent/dashboard/_client_bundle.ts";
import {
  bundleSource,
  DASHBOARD_MODULE,
  dashboardModule,
  runtimeSpecificReferences,
} from "./bundle.ts";

Deno.test("the agent's embedded client bundle is up to date with mod.ts", async () => {
  const fresh = await bundleSource();
  assert.ok(
    CLIENT_JS === fresh,
    "agent/dashboard/_client_bundle.ts is stale: run `deno task bundle`",
  );
  assert.equal(
    await Deno.readTextFile(DASHBOARD_MODULE),
    await dashboardModule(fresh),
  );
});

Deno.test("the embedded bundle is an ES module that any runtime can load", () => {
  assert.match(CLIENT_JS, /export \{[^}]*\bconnect\b/);
  assert.doesNotMatch(CLIENT_JS, /\bimport\s.*\sfrom\s/);
  assert.deepEqual(runtimeSpecificReferences(CLIENT_JS), []);
});
