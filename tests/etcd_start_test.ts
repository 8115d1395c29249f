// Copyright the discover authors. BSD-3-Clause license.

/**
 * Starting an agent on the etcd backend: with exactly the permissions of
 * `deno task start`, and while etcd cannot be reached yet.
 *
 * Bounds: an agent whose etcd is down answers at once (its first attempt
 * fails on a refused connection); once etcd is up, the agent connects
 * within its longest retry delay (4 s) plus one attempt. The tests allow
 * 30 s for that, and 20 s for etcd itself to start.
 */

import assert from "node:assert/strict";
import { connect, ErrorCode, RpcError } from "../mod.ts";
import { spawnServer } from "../tools/agent_process.ts";
import { freePort, startEtcd } from "../tools/etcd.ts";
import { until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const ROOT = new URL("../", import.meta.url);
const AGENT = new URL("agent.ts", ROOT).pathname;
const CONNECT_BOUND_MS = 30_000;
const fast = { reconnect: { maxDelay: 200 }, requestTimeout: 5000 };

/** Splits a task's command line into words, as the task shell does for quotes. */
function words(command: string): string[] {
  return [...command.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) =>
    m[1] ?? m[2] ?? m[3]
  );
}

/** The `deno` arguments of `deno task start` before `agent.ts`. */
async function startTaskArgs(): Promise<string[]> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  ) as { tasks: Record<string, string> };
  const all = words(config.tasks.start);
  assert.equal(all[0], "deno", config.tasks.start);
  const script = all.indexOf("agent.ts");
  assert.ok(script > 0, `no agent.ts in: ${config.tasks.start}`);
  assert.equal(script, all.length - 1, "agent.ts must end the start task");
  return all.slice(1, script);
}

/** Starts agent.ts as `deno task start` does, with `args`. */
async function startAsTask(args: string[]) {
  return spawnServer([
    ...await startTaskArgs(),
    AGENT,
    "--listen",
    "127.0.0.1:0",
    "--advertise-host",
    "127.0.0.1",
    ...args,
  ]);
}

async function healthz(http: string) {
  const res = await fetch(new URL("/healthz", http));
  return { status: res.status, body: await res.json() };
}

Deno.test("the start task grants only scoped permissions", async () => {
  const args = await startTaskArgs();
  for (const broad of ["-A", "--allow-all", "--allow-env", "--allow-sys"]) {
    assert.ok(!args.includes(broad), `'${broad}' in the start task`);
  }
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an agent started with exactly the start task's permissions serves",
  async fn() {
    await using cluster = await startEtcd();
    await using agent = await startAsTask([
      "--backend",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints[0],
      "--etcd-prefix",
      `/start-${crypto.randomUUID().slice(0, 8)}/`,
      "--log-level",
      "warn",
    ]);
    const { status, body } = await healthz(agent.http);
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.backend, "etcd");
    await using client = await connect(agent.url, fast);
    await client.register("web", "10.0.0.1:80", { attrs: { v: "1" } });
    const found = await client.lookup("web");
    assert.deepEqual(found.map((i) => i.addr), ["10.0.0.1:80"]);
    assert.doesNotMatch(agent.stderr(), /Requires .* access/);
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an agent started before etcd serves as not connected, then connects when etcd comes up",
  async fn() {
    const etcdPort = freePort();
    const endpoint = `http://127.0.0.1:${etcdPort}`;
    await using agent = await startAsTask([
      "--backend",
      "etcd",
      "--etcd-endpoints",
      endpoint,
      "--log-level",
      "warn",
    ]);

    // Not connected, and saying so.
    const down = await healthz(agent.http);
    assert.equal(down.status, 503);
    assert.equal(down.body.connected, false);
    await using client = await connect(agent.url, fast);
    assert.equal((await client.status()).connected, false);
    const started = Date.now();
    await assert.rejects(
      client.register("web", "10.0.0.1:80"),
      (error: unknown) =>
        error instanceof RpcError &&
        error.code === ErrorCode.BackendUnavailable,
    );
    assert.ok(Date.now() - started < 2500, "a write waited for etcd");
    const set = await client.services("web");
    // The agent sends `stale` right after the snapshot's `current`.
    await until(() => !set.connected, "the set is told the agent is stale");

    // One human line per attempt, naming etcd's address, without gRPC's text.
    const attempts = () =>
      agent.stderr().split("\n").filter((l) => l.includes("could not connect"));
    await until(
      () => attempts().length >= 3,
      "the agent logs its attempts",
      15_000,
    );
    const lines = attempts();
    // A call made while gRPC's first connection attempt is still under way
    // fails before any reason is known ("unavailable"); the reason is named
    // once it is.
    for (const line of lines) {
      assert.match(
        line,
        new RegExp(
          `etcd at 127\\.0\\.0\\.1:${etcdPort}: could not connect \\((connection refused|unavailable)\\); retrying in \\d`,
        ),
      );
    }
    assert.ok(
      lines.some((line) => line.includes("(connection refused)")),
      lines.join("\n"),
    );
    assert.doesNotMatch(agent.stderr(), /UNAVAILABLE|ECONNREFUSED|at .*\.js/);

    // etcd comes up where the agent looks for it.
    await using _cluster = await startEtcd(1, { clientPorts: [etcdPort] });
    const upAt = Date.now();
    await until(
      () => set.connected,
      "the subscriber learns that the agent is connected",
      CONNECT_BOUND_MS,
    );
    const up = await healthz(agent.http);
    assert.equal(up.status, 200, JSON.stringify(up.body));
    assert.equal((await client.status()).connected, true);
    await client.register("web", "10.0.0.1:80");
    assert.deepEqual(
      (await client.lookup("web")).map((i) => i.addr),
      ["10.0.0.1:80"],
    );
    await until(
      () => set.get("10.0.0.1:80") !== undefined,
      "the subscriber gets the instance",
      5000,
    );
    console.log(`connected ${Date.now() - upAt} ms after etcd was up`);
  },
});
