// Copyright the discover authors. BSD-3-Clause license.

/**
 * `discover` (cli.ts) as a separate process against real agents: started
 * in this process on free loopback ports, with the memory backend, and
 * once with the etcd backend on a throwaway etcd.
 *
 * Bounds: every line the program is waited for has 10 s (an agent on the
 * same host answers within milliseconds); a connection that nothing
 * answers is given up after the program's own 5 s, which the test allows
 * 20 s. After an agent restart the program reconnects within its longest
 * backoff delay (5 s): 20 s are allowed. A health check run every 0.5 s
 * on loopback changes an instance's health within a second: 10 s are
 * allowed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Agent, startAgent } from "../agent/mod.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { type Client, connect, type Instance } from "../mod.ts";
import { freePort, startEtcd } from "../tools/etcd.ts";
import { nextWithin, until } from "./_wait.ts";
import { healthServer } from "./_health_server.ts";
import { tokenHash } from "./_tokens.ts";
import { sessionCloses } from "./_session_closes.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const LINE_MS = 10_000;
const quiet = {
  advertiseHost: "127.0.0.1",
  logger: { debug() {}, info() {}, warn() {}, error() {} },
};
/** The test's own clients reconnect quickly after an agent restart. */
const fast = { reconnect: { maxDelay: 200 } };

/** Runs the program to its end. `DISCOVER_AGENT` is unset unless given. */
async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env: { DISCOVER_AGENT: "", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/** Runs the program and parses its standard output as JSON; it must exit 0. */
async function cliJson(args: string[]): Promise<unknown> {
  const { code, stdout, stderr } = await cli([...args, "--json"]);
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout);
}

async function* linesOf(stream: ReadableStream<Uint8Array>) {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      yield buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
    }
  }
  if (buffer) yield buffer;
}

/** A running `discover` (watch, register): its output line by line. */
interface Running extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** The next line of standard output. */
  line(): Promise<string>;
  /** Lines until one matches (returned); the others are dropped. */
  lineMatching(pattern: RegExp): Promise<string>;
  /** Standard error so far. */
  stderr(): string;
  /** Writes to standard input (spawned with `stdin: true`). */
  write(text: string): Promise<void>;
  /** Waits for the exit; returns the code and the lines not read yet. */
  exit(): Promise<{ code: number; rest: string[] }>;
}

function spawnCli(
  args: string[],
  options: { stdin?: boolean; env?: Record<string, string> } = {},
): Running {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env: { DISCOVER_AGENT: "", ...options.env },
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = linesOf(child.stdout);
  let errText = "";
  const errDone = (async () => {
    for await (
      const chunk of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      errText += chunk;
    }
  })();
  const stdin = options.stdin ? child.stdin.getWriter() : undefined;
  let exited = false;
  const exit = async () => {
    const { code } = await child.status;
    exited = true;
    const rest = [];
    for await (const line of lines) rest.push(line);
    await errDone;
    await stdin?.close().catch(() => {});
    return { code, rest };
  };
  const running: Running = {
    child,
    line: () => nextWithin(lines, LINE_MS),
    async lineMatching(pattern) {
      const deadline = Date.now() + LINE_MS;
      for (;;) {
        const line = await nextWithin(
          lines,
          Math.max(1, deadline - Date.now()),
        ).catch((error) => {
          throw new Error(`no line matching ${pattern}: ${error.message}`);
        });
        if (pattern.test(line)) return line;
      }
    },
    stderr: () => errText,
    async write(text) {
      await stdin!.write(new TextEncoder().encode(text));
    },
    exit,
    async [Symbol.asyncDispose]() {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
        await exit();
      }
    },
  };
  return running;
}

/** An owner id as `discover.owners` gives it for a client with an id. */
const OWNER_ID = /^c:[A-Za-z0-9_-]{8}$/;

/** An instance as `discover ls --json` prints it. */
type Listed = Instance & {
  owner: string;
  client: "connected" | "lost" | "elsewhere";
  expires?: number;
  token?: string;
};

async function addrs(client: Client, service: string): Promise<string[]> {
  return (await client.lookup(service)).map((i) => i.addr).sort();
}

function quietAgent(options: { port?: number; ttl?: number } = {}) {
  return startAgent({ port: 0, ...quiet, ...options });
}

Deno.test("services, ls and status print what the agent holds, as text and as JSON", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await client.register("web", 8081, { attrs: { zone: "b", note: "x y" } });
  await client.register("web", 8080, { attrs: { zone: "a" } });
  await client.register("api", "10.0.0.1:7000");
  const url = ["--agent", agent.url];

  assert.deepEqual(await cliJson(["services", ...url]), [
    { service: "api", instances: 1 },
    { service: "web", instances: 2 },
  ]);
  const services = await cli(["services", ...url]);
  assert.equal(services.code, 0, services.stderr);
  assert.equal(services.stdout, "api\t1\nweb\t2\n");

  const web = await cliJson(["ls", "web", ...url]) as Listed[];
  assert.deepEqual(web.map((i) => [i.addr, i.attrs]), [
    ["127.0.0.1:8080", { zone: "a" }],
    ["127.0.0.1:8081", { zone: "b", note: "x y" }],
  ]);
  // Each instance as the agent reports it, with its owner: the test's
  // client, connected.
  const { owner, client: state, ...listed } = web[0];
  assert.deepEqual(
    listed,
    (await client.lookup("web")).find((i) => i.addr === "127.0.0.1:8080"),
  );
  assert.match(owner, OWNER_ID);
  assert.equal(state, "connected");
  assert.equal(web[1].owner, owner);
  const filtered = await cliJson(["ls", "web", "--filter", "zone=b", ...url]);
  assert.deepEqual((filtered as Instance[]).map((i) => i.addr), [
    "127.0.0.1:8081",
  ]);
  const ls = await cli(["ls", "web", ...url]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.equal(
    ls.stdout,
    `127.0.0.1:8080\tzone=a\tpassing\t\t${owner}\tconnected\n127.0.0.1:8081\tzone=b note="x y"\tpassing\t\t${owner}\tconnected\n`,
  );
  assert.deepEqual(await cliJson(["ls", "nothing", ...url]), []);

  const status = await cliJson(["status", ...url]) as Record<string, unknown>;
  assert.equal(status.backend, "memory");
  assert.equal(status.connected, true);
  assert.equal(status.advertiseHost, "127.0.0.1");
  assert.equal(status.revision, agent.revision);
  assert.equal(status.ttl, 10);
  const text = await cli(["status", ...url]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^backend\tmemory$/m);
  assert.match(text.stdout, /^limits\.maxRegistrations\t1000$/m);

  // DISCOVER_AGENT names the agent when --agent is not given.
  const byEnv = await cli(["services", "--json"], {
    DISCOVER_AGENT: agent.url,
  });
  assert.equal(byEnv.code, 0, byEnv.stderr);
  assert.equal(JSON.parse(byEnv.stdout).length, 2);
});

Deno.test("register keeps the instance until SIGINT, then unregisters it and closes cleanly", async () => {
  const { logger, closes } = sessionCloses();
  await using agent = await startAgent({ port: 0, ...quiet, logger });
  await using client = await connect(agent.url);
  await using register = spawnCli([
    "register",
    "cache",
    "6379",
    "--attr",
    "zone=b",
    "--json",
    "--agent",
    agent.url,
  ]);
  const printed = JSON.parse(await register.line()) as Instance;
  assert.equal(printed.addr, "127.0.0.1:6379");
  assert.deepEqual(printed.attrs, { zone: "b" });
  assert.deepEqual(await client.lookup("cache"), [printed]);

  register.child.kill("SIGINT");
  const { code } = await register.exit();
  assert.equal(code, 0, register.stderr());
  assert.deepEqual(await client.lookup("cache"), []);
  // The program waited for the agent's answer to its close before it
  // exited: the agent saw a client that is done, not a lost one.
  await until(() => closes.length > 0, "the agent sees the session end");
  assert.deepEqual(closes, [true]);
});

Deno.test("register -- COMMAND: the command's exit code; unregistered as soon as it exits", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await using set = await client.services("job");
  const updates = set.updates();
  await using register = spawnCli([
    "register",
    "job",
    "127.0.0.1:7001",
    "--attr",
    "a=1",
    "--agent",
    agent.url,
    "--",
    "sh",
    "-c",
    'read line; echo "child read $line"; exit 3',
  ], { stdin: true });
  const up = await nextWithin(updates, LINE_MS);
  assert.equal(up.kind, "up");
  assert.deepEqual(up.instance.attrs, { a: "1" });
  // The command runs meanwhile, with discover's standard streams.
  await register.write("go\n");
  const { code, rest } = await register.exit();
  assert.equal(code, 3, register.stderr());
  assert.deepEqual(rest, ["child read go"]);
  assert.match(register.stderr(), /sh exited with 3/);
  assert.deepEqual(await cliJson(["ls", "job", "--agent", agent.url]), []);
  assert.equal((await nextWithin(updates, LINE_MS)).kind, "down");
});

Deno.test("register -- COMMAND: a command killed by SIGKILL exits 137, unregistered at once", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await using register = spawnCli([
    "register",
    "job",
    "7002",
    "--agent",
    agent.url,
    "--",
    "sh",
    "-c",
    "echo ready; read line; kill -9 $$",
  ], { stdin: true });
  assert.equal(await register.line(), "ready");
  assert.deepEqual(await addrs(client, "job"), ["127.0.0.1:7002"]);
  await register.write("go\n");
  const { code } = await register.exit();
  assert.equal(code, 137, register.stderr());
  assert.deepEqual(await cliJson(["ls", "job", "--agent", agent.url]), []);
});

Deno.test("register -- COMMAND passes SIGTERM on to the command", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await using register = spawnCli([
    "register",
    "job",
    "7003",
    "--agent",
    agent.url,
    "--",
    "sh",
    "-c",
    'trap "echo got TERM; exit 5" TERM; echo ready; while :; do sleep 0.1; done',
  ]);
  assert.equal(await register.line(), "ready");
  assert.deepEqual(await addrs(client, "job"), ["127.0.0.1:7003"]);
  register.child.kill("SIGTERM");
  const { code, rest } = await register.exit();
  assert.equal(code, 5, register.stderr());
  assert.deepEqual(rest, ["got TERM"]);
  assert.deepEqual(await addrs(client, "job"), []);
});

Deno.test("register -- COMMAND: a command not found exits 127; a refused registration exits 1 without running it", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  const missing = await cli([
    "register",
    "job",
    "7004",
    "--agent",
    agent.url,
    "--",
    "no-such-command-for-discover",
  ]);
  assert.equal(missing.code, 127);
  assert.match(
    missing.stderr,
    /cannot run 'no-such-command-for-discover': not found/,
  );
  assert.deepEqual(await addrs(client, "job"), []);

  // Held by a connected client: -32001.
  await client.register("job", 7005);
  const taken = await cli([
    "register",
    "job",
    "127.0.0.1:7005",
    "--agent",
    agent.url,
    "--",
    "sh",
    "-c",
    "echo should not run",
  ]);
  assert.equal(taken.code, 1);
  assert.equal(taken.stdout, "");
  assert.match(
    taken.stderr,
    /^discover: registering job at 127\.0\.0\.1:7005 failed: .*still connected.*\(-32001\)$/m,
  );
});

Deno.test("register --check-http: the agent checks the instance; ls and watch show its health", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await using http = healthServer();
  const { port } = http;
  const addr = `127.0.0.1:${port}`;
  const url = ["--agent", agent.url];
  const health = async () =>
    (await client.lookup("svc", { health: "any" })).map((i) =>
      [i.health, i.note ?? ""].join(" ").trim()
    );

  await using register = spawnCli([
    "register",
    "svc",
    String(port),
    "--check-http",
    `http://127.0.0.1:${port}/h`,
    "--check-interval",
    "0.5",
    ...url,
  ]);
  assert.equal(await register.line(), `registered svc ${addr}`);
  // Standard error is read apart from standard output: waited for.
  const notice = new RegExp(
    `the agent checks svc at ${addr} \\(GET http://127\\.0\\.0\\.1:${port}/h every 0\\.5 s\\); it is (critical until a check passes|passing)`,
  );
  await until(() => notice.test(register.stderr()), "the check notice");
  await until(
    async () => (await health()).join() === "passing",
    "the first check passes",
  );
  const passing = await cli(["ls", "svc", ...url]);
  assert.equal(passing.code, 0, passing.stderr);
  assert.match(
    passing.stdout,
    new RegExp(`^${addr}\t\tpassing\t\tc:[\\w-]{8}\tconnected\n$`),
  );

  await using watch = spawnCli(["watch", "svc", "--health", "any", ...url]);
  assert.equal(await watch.line(), `up\t${addr}\t\tpassing\t`);
  assert.equal(await watch.line(), `leader\t${addr}\t\tpassing\t`);

  http.set(500);
  await until(
    async () => (await health()).join() === "critical HTTP 500",
    "the check fails",
  );
  assert.equal(await watch.line(), `update\t${addr}\t\tcritical\tHTTP 500`);
  // Left out by default, shown with --health any.
  const omitted = await cli(["ls", "svc", ...url]);
  assert.equal(omitted.code, 0, omitted.stderr);
  assert.equal(omitted.stdout, "");
  assert.deepEqual(await cliJson(["ls", "svc", ...url]), []);
  const any = await cliJson(["ls", "svc", "--health", "any", ...url]);
  assert.deepEqual(
    (any as Instance[]).map((i) => [i.addr, i.health, i.note]),
    [[addr, "critical", "HTTP 500"]],
  );
  const anyText = await cli(["ls", "svc", "--health", "any", ...url]);
  assert.match(
    anyText.stdout,
    new RegExp(`^${addr}\t\tcritical\tHTTP 500\tc:[\\w-]{8}\tconnected\n$`),
  );

  http.set(204);
  assert.equal(await watch.line(), `update\t${addr}\t\tpassing\t`);
  watch.child.kill("SIGINT");
  assert.equal((await watch.exit()).code, 0, watch.stderr());

  register.child.kill("SIGINT");
  assert.equal((await register.exit()).code, 0, register.stderr());
  assert.deepEqual(await health(), []);
});

Deno.test("register --check-http -- COMMAND: a check the agent refuses exits 1 naming --check-allow", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  const refused = await cli([
    "register",
    "svc",
    "127.0.0.1:7010",
    "--check-http",
    "http://192.0.2.1/h",
    "--agent",
    agent.url,
    "--",
    "sh",
    "-c",
    "echo should not run",
  ]);
  assert.equal(refused.code, 1, refused.stderr);
  assert.equal(refused.stdout, "");
  assert.match(
    refused.stderr,
    /^discover: registering svc at 127\.0\.0\.1:7010 failed: 'check\.http' targets host "192\.0\.2\.1".*start the agent with --check-allow 192\.0\.2\.1 .*\(-32602\)$/m,
  );
  assert.deepEqual(await client.lookup("svc", { health: "any" }), []);
});

Deno.test("watch prints up, update and down as other clients change the service", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await client.register("web", 8080, { attrs: { zone: "b" } });
  await using watch = spawnCli([
    "watch",
    "web",
    "--json",
    "--agent",
    agent.url,
  ]);
  // The instance already there, then the changes.
  const first = JSON.parse(await watch.line());
  assert.equal(first.kind, "up");
  assert.equal(first.instance.addr, "127.0.0.1:8080");
  const leader = JSON.parse(await watch.line());
  assert.deepEqual([leader.kind, leader.instance], ["leader", first.instance]);
  await client.register("web", 8081, { attrs: { zone: "a" } });
  const up = JSON.parse(await watch.line());
  assert.deepEqual([up.kind, up.instance.addr, up.instance.attrs], [
    "up",
    "127.0.0.1:8081",
    { zone: "a" },
  ]);
  assert.equal(typeof up.revision, "number");
  await client.register("web", 8081, { attrs: { zone: "c" } });
  const update = JSON.parse(await watch.line());
  assert.deepEqual([update.kind, update.instance.attrs], ["update", {
    zone: "c",
  }]);
  await client.unregister("web", 8081);
  const down = JSON.parse(await watch.line());
  assert.deepEqual([down.kind, down.instance.addr], ["down", "127.0.0.1:8081"]);
  assert.ok(down.revision > up.revision);

  watch.child.kill("SIGTERM");
  const { code, rest } = await watch.exit();
  assert.equal(code, 0, watch.stderr());
  assert.deepEqual(rest, []);
});

Deno.test("watch prints a leader line when the oldest instance leaves", async () => {
  await using agent = await quietAgent();
  await using first = await connect(agent.url);
  await using later = await connect(agent.url);
  await first.register("db", 5432);
  await later.register("db", 5433);
  await later.register("db", 5431);
  const url = ["--agent", agent.url];
  await using json = spawnCli(["watch", "db", "--json", ...url]);
  await using text = spawnCli(["watch", "db", ...url]);
  const next = async () => {
    const line = JSON.parse(await json.line());
    return [line.kind, line.instance?.addr ?? null];
  };

  // The instances by address, then the leader: the oldest, 5432.
  assert.deepEqual(
    [await next(), await next(), await next(), await next()],
    [
      ["up", "127.0.0.1:5431"],
      ["up", "127.0.0.1:5432"],
      ["up", "127.0.0.1:5433"],
      ["leader", "127.0.0.1:5432"],
    ],
  );
  for (const addr of ["127.0.0.1:5431", "127.0.0.1:5432", "127.0.0.1:5433"]) {
    assert.equal(await text.line(), `up\t${addr}\t\tpassing\t`);
  }
  assert.equal(await text.line(), "leader\t127.0.0.1:5432\t\tpassing\t");

  // A newer instance does not lead, whatever its address.
  await later.register("db", 5430);
  assert.deepEqual(await next(), ["up", "127.0.0.1:5430"]);
  assert.equal(await text.line(), "up\t127.0.0.1:5430\t\tpassing\t");

  // The leader leaves: the next oldest leads, after its down line.
  await first.unregister("db", 5432);
  const down = JSON.parse(await json.line());
  const leader = JSON.parse(await json.line());
  assert.deepEqual(
    [down.kind, down.instance.addr, leader.kind, leader.instance.addr],
    ["down", "127.0.0.1:5432", "leader", "127.0.0.1:5433"],
  );
  assert.ok(leader.revision >= down.revision);
  assert.deepEqual(
    leader.instance,
    (await first.lookup("db")).find((i) => i.addr === "127.0.0.1:5433"),
  );
  assert.equal(await text.line(), "down\t127.0.0.1:5432\t\tpassing\t");
  assert.equal(await text.line(), "leader\t127.0.0.1:5433\t\tpassing\t");

  // A non-leader leaving changes nothing; the last one leaving leaves none.
  await later.unregister("db", 5431);
  assert.deepEqual(await next(), ["down", "127.0.0.1:5431"]);
  await later.unregister("db", 5430);
  assert.deepEqual(await next(), ["down", "127.0.0.1:5430"]);
  await later.unregister("db", 5433);
  assert.deepEqual(await next(), ["down", "127.0.0.1:5433"]);
  assert.deepEqual(await next(), ["leader", null]);
  for (const addr of ["127.0.0.1:5431", "127.0.0.1:5430", "127.0.0.1:5433"]) {
    assert.equal(await text.line(), `down\t${addr}\t\tpassing\t`);
  }
  assert.equal(await text.line(), "leader\t\t\t\t");

  for (const watch of [json, text]) {
    watch.child.kill("SIGINT");
    const { code, rest } = await watch.exit();
    assert.equal(code, 0, watch.stderr());
    assert.deepEqual(rest, []);
  }
});

Deno.test("ls shows each instance's owner with its token name, and a lost client's", async () => {
  const dir = await Deno.makeTempDir({ prefix: "discover-cli-acl-" });
  try {
    const deployer = `deploy-${crypto.randomUUID()}`;
    const viewer = `view-${crypto.randomUUID()}`;
    const acl = `${dir}/acl.json`;
    await Deno.writeTextFile(
      acl,
      JSON.stringify({
        default: "deny",
        tokens: [
          {
            name: "deployer",
            sha256: await tokenHash(deployer),
            rules: [{ service: "*", access: "write" }],
          },
          {
            name: "viewer",
            sha256: await tokenHash(viewer),
            rules: [{ service: "*", access: "read" }],
          },
        ],
      }),
    );
    await using agent = await startAgent({
      port: 0,
      ...quiet,
      ttl: 60,
      acl,
    });
    const url = ["--agent", agent.url];
    await using client = await connect(agent.url, { token: deployer });
    await client.register("web", 8080);
    // A `discover register` (with the deployer's token) killed without a
    // chance to unregister: its client is lost, its instance stays.
    await using register = spawnCli(["register", "web", "8081", ...url], {
      env: { DISCOVER_TOKEN: deployer },
    });
    assert.equal(await register.line(), "registered web 127.0.0.1:8081");
    register.child.kill("SIGKILL");
    assert.equal((await register.exit()).code, 137);
    await until(
      () => agent.sessions === 1,
      "the agent notices the lost client",
    );

    const asViewer = { DISCOVER_TOKEN: viewer };
    const listed = await cli(["ls", "web", "--json", ...url], asViewer);
    assert.equal(listed.code, 0, listed.stderr);
    const [live, lost] = JSON.parse(listed.stdout) as Listed[];
    assert.deepEqual(
      [live.addr, live.client, live.token, live.expires],
      ["127.0.0.1:8080", "connected", "deployer", undefined],
    );
    assert.deepEqual(
      [lost.addr, lost.client, lost.token],
      ["127.0.0.1:8081", "lost", "deployer"],
    );
    for (const { owner } of [live, lost]) assert.match(owner, OWNER_ID);
    assert.notEqual(live.owner, lost.owner);
    assert.ok(lost.expires! > Date.now());
    const text = await cli(["ls", "web", ...url], asViewer);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(
      text.stdout,
      `127.0.0.1:8080\t\tpassing\t\t${live.owner}\tconnected\n` +
        `127.0.0.1:8081\t\tpassing\t\t${lost.owner}\tlost\n`,
    );
    // Without a token, nothing may be read.
    const refused = await cli(["ls", "web", ...url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /\(-32007\)$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watch with a filter prints tab-separated lines of the matching instances", async () => {
  await using agent = await quietAgent();
  await using client = await connect(agent.url);
  await using watch = spawnCli([
    "watch",
    "web",
    "--filter",
    "zone=b",
    "--agent",
    agent.url,
  ]);
  // Registered until the watch has seen it: it may come as the state or as a change.
  await client.register("web", 8082, { attrs: { zone: "b" } });
  assert.equal(await watch.line(), "up\t127.0.0.1:8082\tzone=b\tpassing\t");
  assert.equal(
    await watch.line(),
    "leader\t127.0.0.1:8082\tzone=b\tpassing\t",
  );
  await client.register("web", 8083, { attrs: { zone: "a" } });
  await client.unregister("web", 8082);
  assert.equal(
    await watch.line(),
    "down\t127.0.0.1:8082\tzone=b\tpassing\t",
  );
  // None of the matching instances is left: no leader.
  assert.equal(await watch.line(), "leader\t\t\t\t");
  watch.child.kill("SIGINT");
  const { code, rest } = await watch.exit();
  assert.equal(code, 0, watch.stderr());
  assert.deepEqual(rest, []);
});

Deno.test({
  name: "watch carries on across an agent restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let agent: Agent = await quietAgent();
    const port = agent.port;
    try {
      await using client = await connect(agent.url, fast);
      await client.register("web", 8080);
      await using watch = spawnCli(["watch", "web", "--agent", agent.url]);
      assert.equal(await watch.line(), "up\t127.0.0.1:8080\t\tpassing\t");

      const restored = new Promise((resolve) =>
        client.addEventListener("reconnect", resolve, { once: true })
      );
      await agent.shutdown();
      agent = await quietAgent({ port });
      await restored; // the client registered 8080 again
      await client.register("web", 8081);
      // A memory agent starts empty: the watch may see 8080 leave and come
      // back, depending on who reconnects first.
      await watch.lineMatching(/^up\t127\.0\.0\.1:8081\t\tpassing\t$/);
      await client.unregister("web", 8080);
      await watch.lineMatching(/^down\t127\.0\.0\.1:8080\t\tpassing\t$/);
      await until(
        () => /in sync with the agent .* again/.test(watch.stderr()),
        "the watch says it is in sync again",
        LINE_MS,
      );
      assert.match(watch.stderr(), /out of sync with the agent at ws:\/\//);
      watch.child.kill("SIGTERM");
      assert.equal((await watch.exit()).code, 0, watch.stderr());
    } finally {
      await agent.shutdown();
    }
  },
});

Deno.test("unregister removes a lost client's instance, and refuses a connected client's", async () => {
  await using agent = await quietAgent({ ttl: 60 });
  await using client = await connect(agent.url);
  const url = ["--agent", agent.url];

  // A `discover register` killed without a chance to unregister: the agent
  // keeps its instance for the TTL, and unregister removes it.
  await using register = spawnCli(["register", "db", "127.0.0.1:5433", ...url]);
  assert.equal(await register.line(), "registered db 127.0.0.1:5433");
  register.child.kill("SIGKILL");
  assert.equal((await register.exit()).code, 137);
  await until(() => agent.sessions === 1, "the agent notices the lost client");
  assert.deepEqual(await addrs(client, "db"), ["127.0.0.1:5433"]);
  // ls says whose it is: a lost client's, until its TTL runs out.
  const [lost] = await cliJson(["ls", "db", ...url]) as Listed[];
  assert.match(lost.owner, OWNER_ID);
  assert.equal(lost.client, "lost");
  assert.ok(
    lost.expires! > Date.now() && lost.expires! <= Date.now() + 60_000,
    `expires ${lost.expires} is within the TTL`,
  );
  const lostText = await cli(["ls", "db", ...url]);
  assert.equal(
    lostText.stdout,
    `127.0.0.1:5433\t\tpassing\t\t${lost.owner}\tlost\n`,
  );
  assert.deepEqual(
    await cliJson(["unregister", "db", "127.0.0.1:5433", ...url]),
    { service: "db", addr: "127.0.0.1:5433", removed: true },
  );
  assert.deepEqual(await addrs(client, "db"), []);

  // Nothing there.
  const none = await cli(["unregister", "db", "5433", ...url]);
  assert.equal(none.code, 1);
  assert.match(
    none.stderr,
    /^discover: db has no instance at port 5433 of the agent's advertised host: nothing to unregister$/m,
  );

  // A connected client's instance.
  await client.register("db", 5432);
  const refused = await cli(["unregister", "db", "5432", ...url]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /still connected.*\(-32001\)/);
  assert.deepEqual(await addrs(client, "db"), ["127.0.0.1:5432"]);
});

Deno.test("usage errors exit 2 with the bad value and the rule; --help exits 0", async () => {
  const cases: [string[], RegExp][] = [
    [["lst"], /^discover: unknown command 'lst': the commands are /],
    [["ls", "web", "--verbose"], /^discover: unknown flag '--verbose'/],
    [
      ["register", "web", "80", "--attr", "zone"],
      /^discover: --attr must be KEY=VALUE \(e\.g\. --attr zone=b\): got 'zone'/,
    ],
    [
      ["register", "web", "0"],
      /^discover: PORT must be from 1 to 65535: got '0'/,
    ],
    [["ls"], /^discover: ls needs SERVICE/],
    [
      [
        "register",
        "web",
        "80",
        "--check-http",
        "http://127.0.0.1/h",
        "--check-tcp",
        "127.0.0.1:80",
      ],
      /^discover: give one check, --check-http URL or --check-tcp HOST:PORT: got both/,
    ],
    [
      ["register", "web", "80", "--check-interval", "5"],
      /^discover: --check-interval is only for a health check/,
    ],
    [
      [
        "register",
        "web",
        "80",
        "--check-tcp",
        "127.0.0.1:80",
        "--check-interval",
        "0.01",
      ],
      /^discover: --check-interval must be a number of seconds from 0\.1 to 86400: got '0\.01'/,
    ],
    [
      ["ls", "web", "--health", "critical"],
      /^discover: --health must be "passing" or "any": got "critical"/,
    ],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await cli(args);
    assert.equal(code, 2, `${args.join(" ")}: ${stderr}`);
    assert.equal(stdout, "");
    assert.match(stderr, message);
    assert.match(stderr, /^Run 'discover( \w+)? --help' for usage\.$/m);
  }
  const help = await cli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: discover \[--agent URL\]/m);
  const lsHelp = await cli(["ls", "--help"]);
  assert.equal(lsHelp.code, 0);
  assert.match(lsHelp.stdout, /^Usage: discover ls SERVICE/);
});

Deno.test({
  name: "an unreachable agent exits 1 with a message naming its URL",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const closed = `ws://127.0.0.1:${freePort()}/`;
    for (
      const args of [
        ["status"],
        ["watch", "web"],
        ["register", "web", "80", "--", "sh", "-c", "echo should not run"],
      ]
    ) {
      const { code, stdout, stderr } = await cli(["--agent", closed, ...args]);
      assert.equal(code, 1, `${args[0]}: ${stderr}`);
      assert.equal(stdout, "");
      assert.match(
        stderr,
        new RegExp(
          `^discover: could not connect to ${closed}: nothing answered`,
        ),
      );
    }
    // A server that accepts the connection and never answers: the program
    // gives up after its connect timeout instead of hanging.
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) held.push(conn);
    })();
    try {
      const url = `ws://127.0.0.1:${silent.addr.port}/`;
      const { code, stderr } = await cli(["ls", "web", "--agent", url]);
      assert.equal(code, 1, stderr);
      assert.match(
        stderr,
        new RegExp(`^discover: connecting to ${url} took more than 5000 ms`),
      );
    } finally {
      silent.close();
      await accepting.catch(() => {});
      for (const conn of held) conn.close();
    }
  },
});

Deno.test({
  name:
    "etcd: every command against an agent on etcd, and a watch and a registration across its restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using cluster = await startEtcd();
    const prefix = `/cli-${crypto.randomUUID().slice(0, 8)}/`;
    const etcdAgent = (port = 0) =>
      startAgent({
        port,
        ...quiet,
        backend: new EtcdBackend({
          endpoints: cluster.endpoints,
          prefix,
          leaseTtl: 5,
        }),
      });
    let agent = await etcdAgent();
    const port = agent.port;
    const url = ["--agent", agent.url];
    try {
      const status = await cliJson(["status", ...url]) as Record<
        string,
        unknown
      >;
      assert.equal(status.backend, "etcd");
      assert.equal(status.connected, true);

      await using watch = spawnCli(["watch", "web", ...url]);
      await using register = spawnCli([
        "register",
        "web",
        "8080",
        "--attr",
        "zone=b",
        ...url,
      ]);
      assert.equal(
        await register.line(),
        "registered web 127.0.0.1:8080 zone=b",
      );
      assert.equal(
        await watch.lineMatching(/8080/),
        "up\t127.0.0.1:8080\tzone=b\tpassing\t",
      );
      assert.equal(
        await watch.line(),
        "leader\t127.0.0.1:8080\tzone=b\tpassing\t",
      );
      assert.deepEqual(await cliJson(["services", ...url]), [
        { service: "web", instances: 1 },
      ]);
      const listed = await cliJson(["ls", "web", ...url]) as Instance[];
      assert.deepEqual(listed.map((i) => [i.addr, i.attrs]), [
        ["127.0.0.1:8080", { zone: "b" }],
      ]);

      // A command's registration, gone when it exits.
      const job = await cli([
        "register",
        "web",
        "8082",
        ...url,
        "--",
        "sh",
        "-c",
        "exit 4",
      ]);
      assert.equal(job.code, 4, job.stderr);
      assert.equal(await watch.line(), "up\t127.0.0.1:8082\t\tpassing\t");
      assert.equal(await watch.line(), "down\t127.0.0.1:8082\t\tpassing\t");
      const none = await cli(["unregister", "web", "8082", ...url]);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /nothing to unregister/);

      // The agent restarts on the same port: both programs reconnect by
      // themselves, the registration is made again, the watch resumes.
      await agent.shutdown();
      agent = await etcdAgent(port);
      await until(
        () => /reconnected to the agent/.test(register.stderr()),
        "the registration is made again",
        20_000,
      );
      await until(
        () => /in sync with the agent .* again/.test(watch.stderr()),
        "the watch is in sync again",
        20_000,
      );
      register.child.kill("SIGINT");
      assert.equal((await register.exit()).code, 0, register.stderr());
      await watch.lineMatching(
        /^down\t127\.0\.0\.1:8080\tzone=b\tpassing\t$/,
      );
      assert.deepEqual(await cliJson(["ls", "web", ...url]), []);
      watch.child.kill("SIGINT");
      assert.equal((await watch.exit()).code, 0, watch.stderr());
    } finally {
      await agent.shutdown();
    }
  },
});
