// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { Backoff } from "./backoff.ts";

Deno.test("Backoff doubles up to its ceiling and starts over on reset", () => {
  const b = new Backoff({ initialDelay: 50, maxDelay: 300, jitter: false });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [
    50,
    100,
    200,
    300,
    300,
  ]);
  assert.equal(b.attempt, 5);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.equal(b.next(), 50);
});

Deno.test("Backoff with jitter stays between 0 and each bound", () => {
  const b = new Backoff({ initialDelay: 10, maxDelay: 40 });
  const bounds = [10, 20, 40, 40, 40, 40];
  for (const bound of bounds) {
    const delay = b.next();
    assert.ok(delay >= 0 && delay <= bound, `${delay} within [0, ${bound}]`);
  }
});

Deno.test("Backoff does not overflow after many attempts", () => {
  const b = new Backoff({ initialDelay: 1, maxDelay: 1000, jitter: false });
  for (let i = 0; i < 5000; i++) b.next();
  assert.equal(b.next(), 1000);
});

Deno.test("Backoff rejects negative or non-finite delays", () => {
  assert.throws(
    () => new Backoff({ initialDelay: -1 }),
    /'initialDelay' must be a number of milliseconds, at least 0: current value is -1/,
  );
  assert.throws(() => new Backoff({ maxDelay: NaN }), /'maxDelay'/);
});

Deno.test("Backoff.wait() sleeps, and an abort ends the sleep early", async () => {
  const b = new Backoff({ initialDelay: 60_000, jitter: false });
  const controller = new AbortController();
  const started = Date.now();
  const sleeping = b.wait(controller.signal);
  controller.abort();
  await sleeping;
  assert.ok(Date.now() - started < 5000, "the abort ended a 60 s sleep");
  const short = new Backoff({ initialDelay: 20, jitter: false });
  const t0 = Date.now();
  await short.wait();
  assert.ok(Date.now() - t0 >= 15, "slept about its delay");
});
