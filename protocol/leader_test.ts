// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import fc from "fast-check";
import { leaderOf, precedes } from "./leader.ts";

Deno.test("the leader is the lowest created revision, ties broken by address", () => {
  assert.equal(
    leaderOf([
      { created: 7, addr: "a:1" },
      { created: 3, addr: "z:1" },
      { created: 3, addr: "m:1" },
    ])?.addr,
    "m:1",
  );
  assert.equal(leaderOf([]), undefined);
  assert.ok(precedes({ created: 1, addr: "z:1" }, { created: 2, addr: "a:1" }));
  assert.ok(
    !precedes({ created: 2, addr: "a:1" }, { created: 2, addr: "a:1" }),
  );
});

Deno.test("every order of the same instances elects the same leader, and it precedes all others", () => {
  const instance = fc.record({
    created: fc.integer({ min: 1, max: 20 }),
    addr: fc.constantFrom("a:1", "b:1", "c:1", "[::1]:1"),
  });
  fc.assert(
    fc.property(
      fc.uniqueArray(instance, {
        selector: (i) => `${i.created} ${i.addr}`,
        minLength: 1,
      }),
      (instances) => {
        const leader = leaderOf(instances)!;
        assert.deepEqual(leaderOf([...instances].reverse()), leader);
        for (const other of instances) {
          if (other !== leader) assert.ok(precedes(leader, other));
        }
      },
    ),
  );
});
