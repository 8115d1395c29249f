// Copyright the discover authors. BSD-3-Clause license.
import assert from "node:assert/strict";
import { instanceKey, splitInstanceKey } from "./instance_key.ts";

Deno.test("instanceKey and splitInstanceKey are inverses, IPv6 included", () => {
  for (
    const [service, addr] of [
      ["cache", "10.0.0.1:6379"],
      ["a.b-c_d", "[::1]:80"],
      ["x", "host.example.:1"],
    ]
  ) {
    const key = instanceKey(service, addr);
    assert.equal(key, `${service}/${addr}`);
    assert.deepEqual(splitInstanceKey(key), [service, addr]);
  }
});

Deno.test("splitInstanceKey rejects a key without a slash", () => {
  assert.throws(() => splitInstanceKey("cache"), {
    name: "TypeError",
    message: /'cache' is not an instance key/,
  });
});
