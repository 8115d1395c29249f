// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { createLogger, isLogLevel, LOG_LEVELS, type LogLevel } from "./log.ts";

function capture(level: LogLevel) {
  const lines: string[] = [];
  const log = createLogger(level, { write: (line) => void lines.push(line) });
  return { log, lines };
}

/** The part of a line after `<ISO time> `. */
function rest(line: string): string {
  return line.slice(line.indexOf(" ") + 1);
}

Deno.test("isLogLevel() accepts exactly the four levels", () => {
  assert.deepEqual([...LOG_LEVELS], ["debug", "info", "warn", "error"]);
  for (const level of LOG_LEVELS) assert.equal(isLogLevel(level), true, level);
  for (
    const value of ["loud", "INFO", "Info", "", "warning", "trace", " info"]
  ) {
    assert.equal(isLogLevel(value), false, value);
  }
});

Deno.test("createLogger() drops records below its level", () => {
  const expected: Record<LogLevel, string[]> = {
    debug: ["DEBUG", "INFO", "WARN", "ERROR"],
    info: ["INFO", "WARN", "ERROR"],
    warn: ["WARN", "ERROR"],
    error: ["ERROR"],
  };
  for (const level of LOG_LEVELS) {
    const { log, lines } = capture(level);
    log.debug("m");
    log.info("m");
    log.warn("m");
    log.error("m");
    assert.deepEqual(
      lines.map((line) => line.split(" ")[1]),
      expected[level],
      level,
    );
  }
});

Deno.test("createLogger() writes <ISO time> <LEVEL> <message> key=value", () => {
  const { log, lines } = capture("debug");
  const before = Date.now();
  log.info("listening", { url: "ws://127.0.0.1:1111/", backend: "memory" });
  const after = Date.now();
  assert.equal(lines.length, 1);
  const match =
    /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) INFO listening url=ws:\/\/127\.0\.0\.1:1111\/ backend=memory$/
      .exec(lines[0]);
  assert.ok(match, lines[0]);
  const time = Date.parse(match[1]);
  assert.ok(time >= before && time <= after, match[1]);
});

Deno.test("createLogger() writes a message without fields as is", () => {
  const { log, lines } = capture("debug");
  log.warn("backend lost");
  log.error("stopped", {});
  assert.deepEqual(lines.map(rest), ["WARN backend lost", "ERROR stopped"]);
});

Deno.test("createLogger() quotes values that need it", () => {
  const { log, lines } = capture("debug");
  log.info("m", {
    plain: "memory",
    spaced: "hello world",
    empty: "",
    equals: "a=b",
    quote: 'say "hi"',
    tab: "a\tb",
  });
  assert.equal(
    rest(lines[0]),
    'INFO m plain=memory spaced="hello world" empty="" equals="a=b" quote="say \\"hi\\"" tab="a\\tb"',
  );
});

Deno.test("createLogger() keeps each record on one line", () => {
  const { log, lines } = capture("debug");
  log.info("m", { value: "line1\nline2\r\nfake=record" });
  assert.equal(lines.length, 1);
  assert.ok(!/[\r\n]/.test(lines[0]), lines[0]);
  assert.equal(rest(lines[0]), 'INFO m value="line1\\nline2\\r\\nfake=record"');
});

Deno.test("createLogger() writes numbers and booleans bare", () => {
  const { log, lines } = capture("debug");
  log.info("m", { sessions: 2, ttl: 1.5, connected: true, none: null });
  assert.equal(
    rest(lines[0]),
    "INFO m sessions=2 ttl=1.5 connected=true none=null",
  );
});

Deno.test("createLogger() shows errors by their message", () => {
  const { log, lines } = capture("debug");
  log.error("method failed", {
    method: "discover.register",
    error: new Error("disk full"),
  });
  log.error("method failed", { error: new TypeError("boom") });
  assert.equal(
    rest(lines[0]),
    'ERROR method failed method=discover.register error="disk full"',
  );
  const second = rest(lines[1]);
  assert.match(second, /^ERROR method failed error="?boom"?$/);
  assert.ok(!second.includes("TypeError"));
  assert.ok(!second.includes(" at "), "no stack trace");
});
