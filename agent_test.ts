// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { VERSION } from "./agent/version.ts";
import { AGENT_RUN_ARGS } from "./tools/agent_command.ts";

const AGENT = new URL("./agent.ts", import.meta.url).pathname;
const DENO_JSON = JSON.parse(
  await Deno.readTextFile(new URL("./deno.json", import.meta.url)),
) as { version: string };

/** Every flag of the command line, as the help must list it. */
const FLAGS = [
  "--listen",
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
  "--history-bytes",
  "--log-level",
  "--etcd-endpoints",
  "--etcd-prefix",
  "--etcd-lease-ttl",
  "--etcd-timeout",
  "--etcd-ca",
  "--etcd-cert",
  "--etcd-key",
  "--etcd-username",
  "-h",
  "--help",
  "-V",
  "--version",
];

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

Deno.test("agent.ts --help covers every option the parser knows", async () => {
  // Read the option table from the source, so that a flag added without
  // help (or without a line in FLAGS) fails this test.
  const source = await Deno.readTextFile(AGENT);
  const table = /parseArgs\(\{[\s\S]*?options: \{([\s\S]*?)\n {4}\},/.exec(
    source,
  );
  assert.ok(table, "the parseArgs option table was not found in agent.ts");
  const options = [
    ...table[1].matchAll(
      /^\s+"?([a-z][a-z-]*)"?: \{ type: "\w+"(?:, short: "(\w)")?/gm,
    ),
  ];
  assert.ok(options.length >= 13, `only ${options.length} options found`);
  const declared = options.flatMap((m) =>
    m[2] ? [`--${m[1]}`, `-${m[2]}`] : [`--${m[1]}`]
  );
  assert.deepEqual([...declared].sort(), [...FLAGS].sort());
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
    [["--max-sessions", "many"], "--max-sessions"],
    [["--listen", "nope"], "--listen"],
    [["--listen", "127.0.0.1:99999"], "--listen"],
    [["--backend", "nosuch"], "--backend"],
    [["--log-level", "loud"], "--log-level"],
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
