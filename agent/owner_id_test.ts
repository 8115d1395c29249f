// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { clientOwnerId } from "./owner_id.ts";

Deno.test("a client's owner id hides its client id and depends on its token name", () => {
  const id = clientOwnerId("worker-7f3a9c1e2b4d6f80");
  assert.match(id, /^c:[A-Za-z0-9_-]{32}$/);
  assert.ok(!id.includes("worker"));
  assert.equal(clientOwnerId("worker-7f3a9c1e2b4d6f80"), id, "stable");
  assert.notEqual(clientOwnerId("worker-7f3a9c1e2b4d6f80", "deployer"), id);
  assert.notEqual(
    clientOwnerId("worker-7f3a9c1e2b4d6f80", "deployer"),
    clientOwnerId("worker-7f3a9c1e2b4d6f80", "ops"),
  );
  // Names and client ids never hold the newline that separates them.
  assert.notEqual(clientOwnerId("b", "a"), clientOwnerId("ab"));
});
