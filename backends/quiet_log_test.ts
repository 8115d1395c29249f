// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { QUIET_LINES, QUIET_SUMMARY_MS, QuietLog } from "./quiet_log.ts";

/** A QuietLog writing into a list, on a clock the test moves. */
function quiet() {
  const lines: [string, string, Record<string, unknown>?][] = [];
  const clock = { now: 0 };
  const log = new QuietLog({
    info: (message, fields) => void lines.push(["info", message, fields]),
    warn: (message, fields) => void lines.push(["warn", message, fields]),
  }, { now: () => clock.now });
  return { log, lines, clock };
}

Deno.test("QuietLog: a few lines of a kind, then a count when settled", () => {
  const { log, lines, clock } = quiet();
  for (let i = 0; i < 10; i++) {
    clock.now += 500;
    log.warn("etcd lease renewal failed (connection refused); retrying");
  }
  assert.equal(lines.length, QUIET_LINES);
  assert.deepEqual(lines.map(([, m]) => m), [
    "etcd lease renewal failed (connection refused); retrying",
    "etcd lease renewal failed (connection refused); retrying",
    "etcd lease renewal failed (connection refused); retrying",
  ]);
  // The last line written says the next are counted.
  assert.equal(lines[0][2], undefined);
  assert.match(
    String(lines[2][2]?.repeats),
    /counted, not logged; a count every 30 s/,
  );
  log.settle();
  assert.deepEqual(lines[3], ["warn", "repeated warnings not logged", {
    count: 10 - QUIET_LINES,
    seconds: 4,
    like: "etcd lease renewal failed (connection refused); retrying",
  }]);
  // Each kind starts over: the next outage is logged again.
  log.warn("etcd lease renewal failed (connection refused); retrying");
  assert.equal(lines.length, 5);
  log.settle();
  assert.equal(lines.length, 5, "nothing counted, nothing to say");
});

Deno.test("QuietLog: waits, numbers and quoted names do not make another kind; a new reason does", () => {
  const { log, lines } = quiet();
  const at = "etcd at 127.0.0.1:2379";
  for (
    const [scope, wait] of [["web", "250 ms"], ["db", "1.6 s"], ["a", "4 s"], [
      "b",
      "12 s",
    ]]
  ) {
    log.warn(
      `${at}: could not resync '${scope}' (connection refused); retrying in ${wait}`,
    );
  }
  assert.equal(lines.length, 3);
  log.warn(
    `${at}: could not resync 'web' (authentication failed: check the user name and password); retrying in 4 s`,
  );
  assert.equal(lines.length, 4, "another reason is news");
  log.info("etcd lease restored", { records: 1 });
  log.info("etcd lease restored", { records: 1 });
  log.info("etcd lease restored", { records: 1 });
  log.info("etcd lease restored", { records: 1 });
  assert.equal(lines.filter(([level]) => level === "info").length, 4);
});

Deno.test("QuietLog: a count at most every QUIET_SUMMARY_MS while it goes on", () => {
  const { log, lines, clock } = quiet();
  const message =
    "etcd at 127.0.0.1:2379: could not connect (connection refused); retrying in 4 s";
  for (let i = 0; i < 3; i++) log.warn(message);
  const counts = () =>
    lines.filter(([, m]) => m === "repeated warnings not logged");
  for (let i = 0; i < 100; i++) {
    clock.now += 1000;
    log.warn(message);
  }
  // 100 s of one line a second: a count every 30 s, not a line a second.
  assert.equal(counts().length, Math.floor(100_000 / QUIET_SUMMARY_MS));
  assert.deepEqual(counts().map(([, , f]) => [f?.count, f?.seconds]), [
    [30, 30],
    [30, 30],
    [30, 30],
  ]);
  log.settle();
  assert.deepEqual(counts().at(-1)?.[2]?.count, 10);
});

Deno.test("QuietLog: refuses a count of lines below 1 and a period of 0", () => {
  const log = { info() {}, warn() {} };
  assert.throws(
    () => new QuietLog(log, { lines: 0 }),
    /'lines' must be a whole number of at least 1: current value is 0/,
  );
  assert.throws(
    () => new QuietLog(log, { summaryMs: 0 }),
    /'summaryMs' must be a number of milliseconds above 0: current value is 0/,
  );
});
