// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { VERSION } from "./agent/version.ts";
import { AGENT_RUN_ARGS } from "./tools/agent_command.ts";
import { helpText, optionTable, parseCommandLine } from "./agent.ts";
import {
  DEFAULT_LIMITS,
  LIMIT_MINIMUMS,
  ListenError,
  startAgent,
} from "./agent/mod.ts";
import { BACKENDS, FlagError } from "./backends/mod.ts";
import { connect } from "./mod.ts";
import { MAX_ATTRS_JSON_LENGTH } from "./protocol/validate.ts";

const DENO_JSON = JSON.parse(
  await Deno.readTextFile(new URL("./deno.json", import.meta.url)),
) as { version: string };

/** Every flag of the command line, as the help must list it. */
const FLAGS = [
  "--listen",
  "--tls-cert",
  "--tls-key",
  "--watch-idle",
  "--max-watches",
  "--advertise-host",
  "--backend",
  "--ttl",
  "--idle-timeout",
  "--history",
  "--max-frame-bytes",
  "--max-sessions",
  "--max-queue-bytes",
  "--max-registrations",
  "--max-subscriptions",
  "--allow-origin",
  "--allow-host",
  "--check-allow",
  "--acl",
  "--max-sessions-per-address",
  "--dns",
  "--dns-domain",
  "--dns-ttl",
  "--history-bytes",
  "--log-level",
  "--data-dir",
  "--log-format",
  "--metrics",
  "--etcd-endpoints",
  "--etcd-prefix",
  "--etcd-lease-ttl",
  "--etcd-timeout",
  "--etcd-ca",
  "--etcd-cert",
  "--etcd-key",
  "--etcd-username",
  "--zk-connect",
  "--zk-prefix",
  "--zk-session-timeout",
  "-h",
  "--help",
  "-V",
  "--version",
];

/** The limit flags and the limit each sets. */
const LIMIT_FLAG_NAMES = [
  ["max-frame-bytes", "maxFrameBytes"],
  ["max-sessions", "maxSessions"],
  ["max-queue-bytes", "maxQueueBytes"],
  ["max-registrations", "maxRegistrations"],
  ["max-subscriptions", "maxSubscriptions"],
] as const;

function command(args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [...AGENT_RUN_ARGS, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs the agent to completion (killing it after 30 s) and returns its output. */
async function run(args: string[]) {
  const child = command(args).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const { code, stdout, stderr } = await child.output();
    const decoder = new TextDecoder();
    return {
      code,
      stdout: decoder.decode(stdout),
      stderr: decoder.decode(stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("agent.ts --help exits 0 and lists every flag", async () => {
  for (const flag of ["--help", "-h"]) {
    const { code, stdout } = await run([flag]);
    assert.equal(code, 0, flag);
    assert.match(stdout, /^discoverd /, flag);
    for (const listed of FLAGS) {
      assert.match(
        stdout,
        new RegExp(`(^|[\\s,])${listed}([\\s,]|$)`, "m"),
        `${flag} does not mention ${listed}`,
      );
    }
    for (const level of ["debug", "info", "warn", "error"]) {
      assert.ok(stdout.includes(level), `${flag} does not mention ${level}`);
    }
  }
});

Deno.test("agent.ts --help covers every option the parser knows", () => {
  // The parser's table is composed from the agent's flags and every
  // backend's: a flag added without help (or without a line in FLAGS)
  // fails this test.
  const table = optionTable();
  const declared = Object.entries(table).flatMap(([name, option]) =>
    option.short ? [`--${name}`, `-${option.short}`] : [`--${name}`]
  );
  assert.deepEqual([...declared].sort(), [...FLAGS].sort());
  const help = helpText();
  for (const flag of declared) {
    assert.match(help, new RegExp(`(^|[\\s,])${flag}[\\s,]`, "m"), flag);
  }
});

Deno.test("agent.ts --help lists each backend's flags under its own heading, with defaults", () => {
  const help = helpText();
  const list = help.indexOf("Backends (--backend NAME):");
  assert.ok(list > 0, help);
  for (const backend of BACKENDS) {
    assert.match(help.slice(list), new RegExp(`^  ${backend.name} `, "m"));
    if (backend.flags.length === 0) continue;
    const heading = help.indexOf(
      `${backend.name} backend (with --backend ${backend.name}):`,
    );
    assert.ok(heading > list, `no heading for ${backend.name}`);
    const section = help.slice(heading).split("\n\n")[0];
    for (const flag of backend.flags) {
      assert.ok(section.includes(`--${flag.name} `), flag.name);
      if (flag.default !== undefined) {
        // The default follows the flag's help, maybe wrapped.
        const text = section.slice(section.indexOf(`--${flag.name} `))
          .replace(/\s+/g, " ");
        assert.ok(
          text.includes(`(default ${flag.default})`),
          `${flag.name}: no default in ${text.slice(0, 200)}`,
        );
      }
    }
  }
  for (const [name, limit] of LIMIT_FLAG_NAMES) {
    const text = help.slice(help.indexOf(`--${name} `)).replace(/\s+/g, " ");
    assert.ok(
      text.includes(`at least ${LIMIT_MINIMUMS[limit].value}`),
      `${name}: no minimum`,
    );
    assert.ok(text.includes(`(default ${DEFAULT_LIMITS[limit]})`), name);
  }
  for (const line of help.split("\n")) {
    assert.ok(line.length <= 80, `a line over 80 columns: ${line}`);
  }
});

Deno.test("agent.ts --version prints deno.json's version", async () => {
  assert.equal(VERSION, DENO_JSON.version);
  for (const flag of ["--version", "-V"]) {
    const { code, stdout } = await run([flag]);
    assert.equal(code, 0, flag);
    assert.equal(stdout.trim(), DENO_JSON.version, flag);
  }
});

Deno.test("agent.ts exits 2 on a bad flag, naming it", async () => {
  const cases: [string[], string][] = [
    [["--ttl", "0"], "--ttl"],
    [["--ttl", "abc"], "--ttl"],
    [["--ttl", "-5"], "--ttl"],
    [["--idle-timeout", "0"], "--idle-timeout"],
    [["--watch-idle", "soon"], "--watch-idle"],
    [["--max-watches", "0"], "--max-watches"],
    [["--max-sessions", "many"], "--max-sessions"],
    [["--listen", "nope"], "--listen"],
    [["--listen", "127.0.0.1:99999"], "--listen"],
    [["--backend", "nosuch"], "--backend"],
    [["--log-level", "loud"], "--log-level"],
    [["--log-format", "xml"], "--log-format"],
    [["--nope"], "--nope"],
    [["--ttl"], "--ttl"], // missing value
    [["--backend", "etcd", "--etcd-endpoints", "nope"], "--etcd-endpoints"],
    [["--backend", "etcd", "--etcd-lease-ttl", "1"], "--etcd-lease-ttl"],
    [["--backend", "etcd", "--etcd-ca", "/nonexistent/ca.pem"], "--etcd-ca"],
    [
      ["--backend", "etcd", "--etcd-username", "root"],
      "DISCOVER_ETCD_PASSWORD",
    ],
    [["--advertise-host", "not a host!"], "advertiseHost"],
  ];
  for (const [args, flag] of cases) {
    // Listen on a free port so that a missed check cannot clash with 1111.
    const listen = args[0] === "--listen" ? [] : ["--listen", "127.0.0.1:0"];
    const { code, stdout, stderr } = await run([...listen, ...args]);
    const label = args.join(" ");
    assert.equal(code, 2, `${label}: exit code ${code}; stderr: ${stderr}`);
    assert.ok(stderr.includes(flag), `${label}: stderr: ${stderr}`);
    assert.match(stderr, /--help/, label);
    assert.ok(!stdout.includes("listening"), `${label}: it started`);
  }
});

Deno.test("agent.ts exits 2 on a positional argument", async () => {
  const { code, stderr } = await run(["--listen", "127.0.0.1:0", "extra"]);
  assert.equal(code, 2, stderr);
  assert.match(stderr, /extra/);
});

Deno.test("agent.ts prints its URL and exits 0 on SIGTERM", async () => {
  const child = command(["--listen", "127.0.0.1:0", "--log-level", "error"])
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let port: number | undefined;
  try {
    while (port === undefined) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
      const match = /^discoverd listening on ws:\/\/127\.0\.0\.1:(\d+)\/$/m
        .exec(out);
      if (match) port = Number(match[1]);
    }
    assert.ok(port !== undefined, `no listening line in: ${out}`);
    assert.ok(port > 0 && port <= 65535, `port ${port}`);
    // It really listens there.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    child.kill("SIGTERM");
    const status = await child.status;
    while (!(await reader.read()).done) { /* drain */ }
    assert.equal(status.code, 0, await stderr);
    assert.equal(status.signal, null);
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await child.status;
    await reader.cancel().catch(() => {});
    await stderr;
  }
});

/** Runs the parser and returns the error it throws. */
function parseError(args: string[]): FlagError {
  try {
    parseCommandLine(args);
  } catch (error) {
    assert.ok(error instanceof FlagError, String(error));
    return error;
  }
  assert.fail(`${args.join(" ")} was accepted`);
}

Deno.test("a backend's flag without that backend is a usage error naming both", async () => {
  for (const backend of BACKENDS.slice(1)) {
    for (const flag of backend.flags) {
      const error = parseError([`--${flag.name}`, "x"]);
      assert.match(
        error.message,
        new RegExp(`^--${flag.name} needs --backend ${backend.name}`),
      );
    }
  }
  // The default backend's flags (--data-dir), with another backend.
  for (const flag of BACKENDS[0].flags) {
    const error = parseError([
      "--backend",
      BACKENDS[1].name,
      `--${flag.name}`,
      "x",
    ]);
    assert.match(
      error.message,
      new RegExp(
        `^--${flag.name} needs --backend ${
          BACKENDS[0].name
        } \\(the backend is ${BACKENDS[1].name}\\)`,
      ),
    );
  }
  const { code, stderr } = await run([
    "--listen",
    "127.0.0.1:0",
    "--etcd-endpoints",
    "http://127.0.0.1:2379",
  ]);
  assert.equal(code, 2, stderr);
  assert.match(stderr, /--etcd-endpoints needs --backend etcd/);
});

Deno.test("an unknown backend is a usage error listing the known ones", () => {
  const error = parseError(["--backend", "redis"]);
  assert.equal(
    error.message,
    `--backend must be one of ${
      BACKENDS.map((b) => b.name).join(", ")
    }: got 'redis'`,
  );
});

Deno.test("each limit flag accepts its minimum and refuses less, naming the minimum", () => {
  for (const [name, limit] of LIMIT_FLAG_NAMES) {
    const min = LIMIT_MINIMUMS[limit].value;
    const command = parseCommandLine([`--${name}`, String(min)]);
    assert.equal(command.action, "run");
    if (command.action === "run") {
      assert.equal(command.options.limits?.[limit], min, name);
    }
    const error = parseError([`--${name}`, String(min - 1)]);
    assert.match(
      error.message,
      new RegExp(`^--${name} must be at least ${min}`),
    );
  }
  assert.match(
    parseError(["--max-frame-bytes", "10"]).message,
    /--max-frame-bytes must be at least 32768 \(what the largest valid request needs\): got 10/,
  );
  for (const name of ["history", "history-bytes"]) {
    assert.match(parseError([`--${name}`, "0"]).message, /at least 1/);
  }
});

Deno.test("startAgent refuses limits below their minimum", async () => {
  for (const [, limit] of LIMIT_FLAG_NAMES) {
    const min = LIMIT_MINIMUMS[limit].value;
    if (min <= 1) continue; // 0 is refused as not positive
    await assert.rejects(
      startAgent({ port: 0, logLevel: "error", limits: { [limit]: min - 1 } }),
      new RegExp(`'limits.${limit}' must be at least ${min}`),
    );
  }
  await assert.rejects(
    startAgent({ port: 0, logLevel: "error", limits: { maxBatch: 0 } }),
    RangeError,
  );
});

Deno.test("durations in seconds take fractions, except the etcd lease TTL", async () => {
  const command = parseCommandLine(["--ttl", "0.5", "--idle-timeout", "1.5"]);
  assert.equal(command.action, "run");
  if (command.action === "run") {
    assert.equal(command.options.ttl, 0.5);
    assert.equal(command.options.idleTimeout, 1.5);
  }
  const etcd = parseCommandLine([
    "--backend",
    "etcd",
    "--etcd-timeout",
    "0.5",
  ]);
  assert.equal(etcd.action, "run");
  if (etcd.action === "run") {
    assert.equal(etcd.backendValues["etcd-timeout"], "0.5");
  }
  assert.match(parseError(["--ttl", "0"]).message, /fractions/);
  assert.match(parseError(["--idle-timeout=-1"]).message, /fractions/);
  const etcdBackend = BACKENDS.find((b) => b.name === "etcd")!;
  await assert.rejects(
    etcdBackend.create({ "etcd-lease-ttl": "2.5" }, {
      log: { info() {}, warn() {} },
      env: () => undefined,
      readFile: () => Promise.reject(new Error("no files")),
    }),
    /--etcd-lease-ttl must be a whole number of seconds, at least 2: got '2.5'/,
  );
});

Deno.test("the largest valid request and event work at the smallest frame and queue limits", async () => {
  // Eight values of 1015 three-byte characters and one empty value make
  // attributes of exactly 8192 JSON characters: about 24 KiB of UTF-8.
  const attrs: Record<string, string> = { b: "" };
  for (let i = 0; i < 8; i++) attrs[`a${i}`] = "\u20ac".repeat(1015);
  assert.equal(JSON.stringify(attrs).length, MAX_ATTRS_JSON_LENGTH);
  await using agent = await startAgent({
    port: 0,
    logLevel: "error",
    limits: {
      maxFrameBytes: LIMIT_MINIMUMS.maxFrameBytes.value,
      maxQueueBytes: LIMIT_MINIMUMS.maxQueueBytes.value,
    },
  });
  await using watcher = await connect(agent.url);
  const set = await watcher.services("s".repeat(63));
  await using client = await connect(agent.url);
  const host = `${"h".repeat(63)}.${"h".repeat(63)}.${"h".repeat(63)}.${
    "h".repeat(61)
  }`;
  const frame = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "discover.register",
    params: { service: "s".repeat(63), addr: `${host}:65535`, attrs },
  });
  const bytes = new TextEncoder().encode(frame).length;
  assert.ok(bytes > 24 * 1024, `the request is only ${bytes} bytes`);
  const instance = await client.register("s".repeat(63), `${host}:65535`, {
    attrs,
  });
  assert.deepEqual(instance.attrs, attrs);
  const deadline = Date.now() + 10_000;
  while (set.get(`${host}:65535`) === undefined) {
    assert.ok(Date.now() < deadline, "the subscriber did not get the event");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.ok(set.connected);
});

Deno.test("a port in use exits 1 naming the address, with a hint and no stack trace", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const { code, stdout, stderr } = await run([
    "--listen",
    `127.0.0.1:${port}`,
  ]);
  assert.equal(code, 1, stderr);
  assert.equal(
    stderr.trim(),
    `discoverd: cannot listen on 127.0.0.1:${port}: address already in use; is another agent running? choose another address with --listen HOST:PORT`,
  );
  assert.ok(!stdout.includes("listening"), stdout);
});

Deno.test("startAgent on a port in use rejects with a ListenError naming the address", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  await assert.rejects(
    startAgent({ port, logLevel: "error" }),
    (error: unknown) =>
      error instanceof ListenError && error.port === port &&
      error.cause instanceof Deno.errors.AddrInUse &&
      error.message ===
        `cannot listen on 127.0.0.1:${port}: address already in use`,
  );
});

Deno.test("--log-level and --log-format: info and text by default, each checked", () => {
  const defaults = parseCommandLine([]);
  assert.equal(defaults.action, "run");
  if (defaults.action !== "run") return;
  assert.deepEqual([defaults.logLevel, defaults.logFormat], ["info", "text"]);
  const set = parseCommandLine([
    "--log-level",
    "debug",
    "--log-format",
    "json",
  ]);
  if (set.action !== "run") throw new Error(set.action);
  assert.deepEqual([set.logLevel, set.logFormat], ["debug", "json"]);
  assert.throws(
    () => parseCommandLine(["--log-format", "JSON"]),
    /--log-format must be one of text, json: got 'JSON'/,
  );
});
