// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  childLogger,
  createLogger,
  isLogFormat,
  isLogLevel,
  jsonFormatter,
  LOG_FORMATS,
  LOG_LEVELS,
  type Logger,
  type LogLevel,
  logtapeLogger,
  textFormatter,
} from "./log.ts";

function capture(level: LogLevel, format: "text" | "json" = "text") {
  const lines: string[] = [];
  const log = createLogger(level, {
    format,
    write: (line) => void lines.push(line),
  });
  return { log, lines };
}

/** The part of a text line after `<ISO time> <LEVEL> <category> `. */
function rest(line: string): string {
  return line.split(" ").slice(1).filter((_, i) => i !== 1).join(" ");
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

Deno.test("isLogFormat() accepts text and json only", () => {
  assert.deepEqual([...LOG_FORMATS], ["text", "json"]);
  for (const format of LOG_FORMATS) assert.equal(isLogFormat(format), true);
  for (const value of ["JSON", "logfmt", "", "text "]) {
    assert.equal(isLogFormat(value), false, value);
  }
});

Deno.test("createLogger() refuses an unknown level or format", () => {
  assert.throws(
    () => createLogger("loud" as LogLevel),
    /'level' must be one of debug, info, warn, error: current value is 'loud'/,
  );
  assert.throws(
    () => createLogger("info", { format: "xml" as "json" }),
    /'format' must be one of text, json: current value is 'xml'/,
  );
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
    // Children keep the level.
    const child = capture(level);
    const registry = child.log.child("registry");
    registry.debug("m");
    registry.info("m");
    registry.warn("m");
    registry.error("m");
    assert.equal(child.lines.length, expected[level].length, level);
  }
});

Deno.test("createLogger() writes <ISO time> <LEVEL> <category> <message> key=value", () => {
  const { log, lines } = capture("debug");
  const before = Date.now();
  log.child("agent").info("listening", {
    url: "ws://127.0.0.1:1111/",
    backend: "memory",
  });
  const after = Date.now();
  assert.equal(lines.length, 1);
  const match =
    /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) INFO discover\.agent listening url=ws:\/\/127\.0\.0\.1:1111\/ backend=memory$/
      .exec(lines[0]);
  assert.ok(match, lines[0]);
  const time = Date.parse(match[1]);
  assert.ok(time >= before && time <= after, match[1]);
});

Deno.test("child() names the layer after the parent's category", () => {
  const { log, lines } = capture("debug");
  assert.deepEqual(log.category, ["discover"]);
  for (const layer of ["agent", "session", "registry", "backend", "dns"]) {
    const child = log.child(layer);
    assert.deepEqual(child.category, ["discover", layer]);
    child.info("m");
  }
  log.child("registry").child("ttl").warn("m");
  log.info("m");
  assert.deepEqual(lines.map((line) => line.split(" ")[2]), [
    "discover.agent",
    "discover.session",
    "discover.registry",
    "discover.backend",
    "discover.dns",
    "discover.registry.ttl",
    "discover",
  ]);
});

Deno.test("childLogger() uses child() when there is one, else the logger", () => {
  const { log, lines } = capture("debug");
  childLogger(log, "checks").info("m");
  assert.equal(lines[0].split(" ")[2], "discover.checks");
  const seen: string[] = [];
  const plain: Logger = {
    debug: (m) => void seen.push(m),
    info: (m) => void seen.push(m),
    warn: (m) => void seen.push(m),
    error: (m) => void seen.push(m),
  };
  assert.equal(childLogger(plain, "checks"), plain);
});

Deno.test("createLogger() writes a message without fields as is", () => {
  const { log, lines } = capture("debug");
  log.warn("backend lost");
  log.error("stopped", {});
  assert.deepEqual(lines.map(rest), ["WARN backend lost", "ERROR stopped"]);
});

Deno.test("createLogger() takes braces in a message literally", () => {
  const { log, lines } = capture("debug", "json");
  log.info("got {service} and {{x}}", { service: "web" });
  assert.equal(JSON.parse(lines[0]).message, "got {service} and {{x}}");
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
  log.info("two\nlines");
  const json = capture("debug", "json");
  json.log.info("two\nlines", { value: "a\nb" });
  for (const line of [...lines, ...json.lines]) {
    assert.ok(!/[\r\n]/.test(line), line);
  }
  assert.equal(rest(lines[0]), 'INFO m value="line1\\nline2\\r\\nfake=record"');
  assert.equal(rest(lines[1]), 'INFO "two\\nlines"');
  assert.deepEqual(JSON.parse(json.lines[0]).value, "a\nb");
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

Deno.test("createLogger() in JSON: one object per line with time, level, category, message and the fields", () => {
  const { log, lines } = capture("debug", "json");
  const before = Date.now();
  log.child("registry").info("instance registered", {
    service: "web",
    addr: "10.0.0.1:80",
    owner: "c:api",
    ttl: 1.5,
  });
  log.child("session").warn("slow consumer dropped", { queued: 10n });
  log.error("method failed", {
    error: new TypeError("boom"),
    nested: { errors: [new Error("inner")] },
    gone: undefined,
  });
  log.debug("m", { message: "a field", level: 3 });
  const after = Date.now();
  const records = lines.map((line) => JSON.parse(line));
  assert.deepEqual(records[0], {
    time: records[0].time,
    level: "info",
    category: "discover.registry",
    message: "instance registered",
    service: "web",
    addr: "10.0.0.1:80",
    owner: "c:api",
    ttl: 1.5,
  });
  const time = Date.parse(records[0].time);
  assert.ok(time >= before && time <= after, records[0].time);
  assert.match(
    records[0].time,
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/,
  );
  assert.equal(records[1].level, "warn");
  assert.equal(records[1].queued, "10");
  assert.deepEqual(
    {
      level: records[2].level,
      category: records[2].category,
      error: records[2].error,
      nested: records[2].nested,
      gone: records[2].gone,
    },
    {
      level: "error",
      category: "discover",
      error: "boom",
      nested: { errors: ["inner"] },
      gone: null,
    },
  );
  assert.ok(!lines[2].includes(" at "), "no stack trace");
  assert.deepEqual(
    [
      records[3].message,
      records[3]._message,
      records[3].level,
      records[3]._level,
    ],
    ["m", "a field", "debug", 3],
  );
});

Deno.test("textFormatter and jsonFormatter format records from LogTape too", () => {
  const record: LogRecord = {
    category: ["app"],
    level: "fatal",
    message: ["took ", 12, " ms"],
    rawMessage: "took {ms} ms",
    timestamp: 0,
    properties: { ms: 12 },
  };
  assert.equal(
    textFormatter(record),
    "1970-01-01T00:00:00.000Z FATAL app took 12 ms ms=12",
  );
  assert.deepEqual(JSON.parse(jsonFormatter(record)), {
    time: "1970-01-01T00:00:00.000Z",
    level: "fatal",
    category: "app",
    message: "took 12 ms",
    ms: 12,
  });
});

Deno.test("logtapeLogger() hands records to LogTape's configuration", async () => {
  const records: LogRecord[] = [];
  await configure({
    sinks: { memory: (record) => void records.push(record) },
    loggers: [
      { category: "discover", lowestLevel: "info", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning" },
    ],
  });
  try {
    const log = logtapeLogger();
    log.debug("dropped by the configuration");
    log.child("registry").info("instance registered {x}", { service: "web" });
    log.child("backend").warn("etcd is unreachable");
  } finally {
    await reset();
  }
  assert.deepEqual(
    records.map((r) => [r.category, r.level, r.message, r.properties]),
    [
      [["discover", "registry"], "info", ["instance registered {x}"], {
        service: "web",
      }],
      [["discover", "backend"], "warning", ["etcd is unreachable"], {}],
    ],
  );
});
