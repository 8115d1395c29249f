// Copyright the discover authors. BSD-3-Clause license.

/**
 * Health checks end to end, through real agents and clients: HTTP and TCP
 * checks against real servers on loopback, owners' own reports
 * (`setHealth`), the check policy, the status counts, and on etcd the
 * health seen at another agent, the absence of writes while a check keeps
 * passing, and an agent restart that causes no flap.
 *
 * The documented detection bound, from the moment an endpoint starts
 * failing to `down` at every subscriber of every agent, is
 * `interval × failuresBeforeCritical + timeout + propagation`: well under a
 * second with the checks used here. Every wait allows 10 s, generous for a
 * busy 2-core machine; no test asserts a duration. The restart test
 * watches the other agent's sets until 3 s past the old agent's lease TTL
 * (5 s), so that a record lost with that lease would show.
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import {
  type Client,
  connect,
  ErrorCode,
  type Instance,
  RpcError,
  type ServiceSet,
} from "../mod.ts";
import { type Agent, type AgentOptions, startAgent } from "../agent/mod.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { type EtcdCluster, startEtcd } from "../tools/etcd.ts";
import { healthServer } from "./_health_server.ts";
import { until } from "./_wait.ts";

/** Every wait: generous for a busy 2-core machine. */
const WAIT_MS = 10_000;
const etcdTest = { sanitizeOps: false, sanitizeResources: false };

/** One update of a set, as recorded. */
interface Seen {
  kind: "up" | "update" | "down";
  addr: string;
  health: Instance["health"];
  note?: string;
}

/** Records every update of `set`, in order. */
function record(set: ServiceSet): Seen[] {
  const seen: Seen[] = [];
  set.addEventListener("update", (e) => {
    seen.push({
      kind: e.kind,
      addr: e.instance.addr,
      health: e.instance.health,
      ...(e.instance.note === undefined ? {} : { note: e.instance.note }),
    });
  });
  return seen;
}

/**
 * Waits until `seen` holds, from index `from` on, an update matching
 * `want` (every given field equal; `note` may be a pattern), and returns
 * its index.
 */
async function waitFor(
  seen: Seen[],
  from: number,
  want: Partial<Omit<Seen, "note">> & { note?: string | RegExp },
  what: string,
): Promise<number> {
  const matches = (s: Seen) =>
    (want.kind === undefined || s.kind === want.kind) &&
    (want.addr === undefined || s.addr === want.addr) &&
    (want.health === undefined || s.health === want.health) &&
    (want.note === undefined ||
      (want.note instanceof RegExp
        ? want.note.test(s.note ?? "")
        : s.note === want.note));
  let found = -1;
  await until(
    () => {
      found = seen.findIndex((s, i) => i >= from && matches(s));
      return found >= 0;
    },
    `${what} (seen: ${JSON.stringify(seen.slice(from))})`,
    WAIT_MS,
  );
  return found;
}

/** Calls `fn` and returns the `RpcError` it must reject with. */
async function rpcError(fn: () => Promise<unknown>): Promise<RpcError> {
  try {
    await fn();
  } catch (error) {
    assert.ok(error instanceof RpcError, `an RpcError: ${error}`);
    return error;
  }
  assert.fail("the call did not fail");
}

/** An in-process agent on the memory backend. */
function memoryAgent(options: AgentOptions = {}) {
  return startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ...options,
  });
}

Deno.test("an HTTP check: not ready until its first pass, then down and up with the endpoint, a hung endpoint times out", async () => {
  // Starts failing: the instance must stay out of passing sets until it passes.
  await using server = healthServer(500);
  await using agent = await memoryAgent();
  await using owner = await connect(agent.url);
  await using watcher = await connect(agent.url);
  await using passing = await watcher.services("web");
  await using any = await watcher.services("web", { health: "any" });
  const up = record(passing);
  const all = record(any);
  const addr = `127.0.0.1:${server.port}`;

  const registered = await owner.register("web", server.port, {
    check: { http: server.url, interval: 0.2, timeout: 0.1 },
  });
  assert.equal(registered.health, "critical");
  assert.equal(registered.note, "no check result yet");
  // The first failing result replaces the initial note; still not passing.
  let at = await waitFor(all, 0, {
    kind: "update",
    addr,
    health: "critical",
    note: "HTTP 500",
  }, "the any set sees the first result");
  assert.deepEqual(all[0], {
    kind: "up",
    addr,
    health: "critical",
    note: "no check result yet",
  });
  assert.deepEqual(passing.online(), []);
  assert.deepEqual(await watcher.lookup("web"), []);
  const [critical] = await watcher.lookup("web", { health: "any" });
  assert.equal(critical.health, "critical");
  assert.equal(critical.note, "HTTP 500");
  assert.equal(up.length, 0, "nothing joined the passing set");

  // First pass: joins.
  server.set(200);
  let mark = await waitFor(
    up,
    0,
    { kind: "up", addr, health: "passing" },
    "up",
  );
  assert.equal(up[mark].note, undefined);
  at = await waitFor(all, at + 1, {
    kind: "update",
    addr,
    health: "passing",
  }, "the any set sees it pass");
  assert.deepEqual(passing.online().map((i) => i.addr), [addr]);
  assert.equal((await watcher.lookup("web"))[0].health, "passing");

  // 500: leaves the passing set, stays in the any set.
  server.set(500);
  mark = await waitFor(up, mark + 1, {
    kind: "down",
    addr,
    health: "critical",
    note: "HTTP 500",
  }, "down on HTTP 500");
  at = await waitFor(all, at + 1, {
    kind: "update",
    addr,
    health: "critical",
    note: "HTTP 500",
  }, "the any set sees HTTP 500");
  assert.deepEqual(passing.online(), []);
  assert.equal(any.get(addr)?.health, "critical");

  // Back to 200: up again.
  server.set(200);
  mark = await waitFor(up, mark + 1, {
    kind: "up",
    addr,
    health: "passing",
  }, "up again");
  at = await waitFor(all, at + 1, {
    kind: "update",
    addr,
    health: "passing",
  }, "the any set sees it pass again");

  // Hung: the run's own deadline fails it.
  server.set("hang");
  mark = await waitFor(up, mark + 1, {
    kind: "down",
    addr,
    health: "critical",
    note: /timed out/,
  }, "down on a hung endpoint");
  assert.match(up[mark].note!, /timed out after 100 ms/);
  await waitFor(all, at + 1, {
    kind: "update",
    addr,
    note: /timed out/,
  }, "the any set sees the timeout");
  assert.deepEqual(
    all.map((s) => s.kind).filter((k) => k !== "update"),
    ["up"],
    "the any set only ever updated the instance",
  );
  // The owner unregisters it: it leaves the any set too.
  assert.equal(await owner.unregister("web", server.port), true);
  await waitFor(all, 0, { kind: "down", addr }, "down at unregister");
});

Deno.test("a TCP check: a listener closed is down, reopened on the same port is up", async () => {
  const serve = (listener: Deno.Listener) =>
    (async () => {
      try {
        for await (const conn of listener) conn.close();
      } catch { /* closed */ }
    })();
  let listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let accepting = serve(listener);
  await using agent = await memoryAgent();
  await using owner = await connect(agent.url);
  await using watcher = await connect(agent.url);
  await using passing = await watcher.services("db");
  const seen = record(passing);
  const addr = `127.0.0.1:${port}`;
  try {
    await owner.register("db", port, {
      check: { tcp: addr, interval: 0.2, timeout: 0.1 },
    });
    let mark = await waitFor(seen, 0, { kind: "up", addr }, "up");

    listener.close();
    await accepting;
    mark = await waitFor(seen, mark + 1, {
      kind: "down",
      addr,
      health: "critical",
    }, "down once the listener is closed");
    assert.ok(seen[mark].note, "a critical instance says why");

    listener = Deno.listen({ hostname: "127.0.0.1", port });
    accepting = serve(listener);
    await waitFor(seen, mark + 1, {
      kind: "up",
      addr,
      health: "passing",
    }, "up once it listens again");
    assert.deepEqual(passing.online().map((i) => i.addr), [addr]);
  } finally {
    await owner.close();
    try {
      listener.close();
    } catch { /* already closed */ }
    await accepting;
  }
});

Deno.test("setHealth: the owner's report takes an instance out of passing sets and back; only the owner of a registered instance may set it; a critical report outweighs a passing check", async () => {
  await using agent = await memoryAgent();
  await using owner = await connect(agent.url);
  await using other = await connect(agent.url);
  await using passing = await other.services("worker");
  await using any = await other.services("worker", { health: "any" });
  const up = record(passing);
  const all = record(any);
  const addr = "127.0.0.1:9000";

  const registered = await owner.register("worker", 9000);
  assert.equal(registered.health, "passing", "no check: passing at once");
  let mark = await waitFor(up, 0, { kind: "up", addr }, "up");
  let at = await waitFor(all, 0, { kind: "up", addr }, "up in the any set");

  const reported = await owner.setHealth("worker", 9000, "critical", {
    note: "database unreachable",
  });
  assert.equal(reported.health, "critical");
  assert.equal(reported.note, "database unreachable");
  mark = await waitFor(up, mark + 1, {
    kind: "down",
    addr,
    health: "critical",
    note: "database unreachable",
  }, "down on a critical report");
  at = await waitFor(all, at + 1, {
    kind: "update",
    addr,
    health: "critical",
    note: "database unreachable",
  }, "the any set sees the report with its note");

  const back = await owner.setHealth("worker", 9000, "passing");
  assert.equal(back.health, "passing");
  assert.equal(back.note, undefined);
  mark = await waitFor(up, mark + 1, {
    kind: "up",
    addr,
    health: "passing",
  }, "up on a passing report");
  await waitFor(all, at + 1, {
    kind: "update",
    addr,
    health: "passing",
  }, "the any set sees it pass");

  // Another client may not set it; nobody may set an unregistered one.
  const notOwner = await rpcError(() =>
    other.setHealth("worker", "127.0.0.1:9000", "critical")
  );
  assert.equal(notOwner.code, ErrorCode.NotOwner);
  assert.equal(notOwner.code, -32001);
  const unknown = await rpcError(() =>
    owner.setHealth("worker", 9001, "critical")
  );
  assert.equal(unknown.code, ErrorCode.InvalidParams);
  assert.equal(unknown.code, -32602);
  assert.match(unknown.message, /not registered/);
  assert.equal((await other.lookup("worker"))[0].health, "passing");

  // A passing check and a critical report: critical, whatever the check says.
  await using server = healthServer(200);
  const checked = `127.0.0.1:${server.port}`;
  await owner.register("worker", server.port, {
    check: { http: server.url, interval: 0.2, timeout: 0.1 },
  });
  mark = await waitFor(up, mark + 1, {
    kind: "up",
    addr: checked,
  }, "the checked instance passes");
  await owner.setHealth("worker", server.port, "critical", {
    note: "draining",
  });
  mark = await waitFor(up, mark + 1, {
    kind: "down",
    addr: checked,
    note: "draining",
  }, "down on the report despite the check");
  const runs = server.requests;
  await until(
    () => server.requests >= runs + 5,
    "the check keeps running",
    WAIT_MS,
  );
  const held = (await other.lookup("worker", { health: "any" }))
    .find((i) => i.addr === checked);
  assert.ok(held);
  assert.equal(held.health, "critical");
  assert.equal(held.note, "draining");
  assert.equal(
    up.slice(mark + 1).filter((s) => s.addr === checked).length,
    0,
    "a passing check does not bring it back",
  );
  await owner.setHealth("worker", server.port, "passing");
  await waitFor(up, mark + 1, {
    kind: "up",
    addr: checked,
    health: "passing",
  }, "up once the report passes too");
});

Deno.test("a check may target another host only when the agent allows it with --check-allow", async () => {
  const check = { http: "http://192.0.2.1/health", interval: 1, timeout: 0.5 };
  {
    await using agent = await memoryAgent();
    await using client = await connect(agent.url);
    const refused = await rpcError(() =>
      client.register("ext", 8080, { check })
    );
    assert.equal(refused.code, ErrorCode.InvalidParams);
    assert.equal(refused.code, -32602);
    assert.match(refused.message, /192\.0\.2\.1/);
    assert.match(refused.message, /--check-allow/);
    assert.deepEqual(await client.lookup("ext", { health: "any" }), []);
    assert.equal((await client.status()).instances.checks, 0);
  }
  {
    await using agent = await memoryAgent({ checkAllow: ["192.0.2.1"] });
    await using client = await connect(agent.url);
    const accepted = await client.register("ext", 8080, { check });
    assert.equal(accepted.addr, "127.0.0.1:8080");
    assert.equal(accepted.health, "critical");
    assert.equal((await client.status()).instances.checks, 1);
    assert.deepEqual(await client.lookup("ext"), [], "not passing yet");
  }
});

Deno.test("discover.status counts the instances by health and the checks", async () => {
  await using server = healthServer(200);
  await using agent = await memoryAgent();
  await using client = await connect(agent.url);
  const counts = async () => (await client.status()).instances;
  const expect = async (
    want: {
      registered: number;
      passing: number;
      critical: number;
      checks: number;
    },
    what: string,
  ) => {
    let last = await counts();
    await until(
      async () => {
        last = await counts();
        return JSON.stringify(last) === JSON.stringify(want);
      },
      `${what} (last: ${JSON.stringify(last)})`,
      WAIT_MS,
    );
  };
  assert.deepEqual(await counts(), {
    registered: 0,
    passing: 0,
    critical: 0,
    checks: 0,
  });
  await client.register("web", server.port, {
    check: { http: server.url, interval: 0.2, timeout: 0.1 },
  });
  await expect(
    { registered: 1, passing: 1, critical: 0, checks: 1 },
    "the checked instance passes",
  );
  await client.register("web", 9100);
  await expect(
    { registered: 2, passing: 2, critical: 0, checks: 1 },
    "one more, without a check",
  );
  server.set(500);
  await expect(
    { registered: 2, passing: 1, critical: 1, checks: 1 },
    "the check fails",
  );
  await client.setHealth("web", 9100, "critical", { note: "maintenance" });
  await expect(
    { registered: 2, passing: 0, critical: 2, checks: 1 },
    "the owner reports the other critical",
  );
  server.set(200);
  await expect(
    { registered: 2, passing: 1, critical: 1, checks: 1 },
    "the check passes again",
  );
  await client.unregister("web", server.port);
  await expect(
    { registered: 1, passing: 0, critical: 1, checks: 0 },
    "the checked instance and its check are gone",
  );
  await client.unregister("web", 9100);
  await expect(
    { registered: 0, passing: 0, critical: 0, checks: 0 },
    "nothing left",
  );
});

const prefix = () => `/health-${crypto.randomUUID().slice(0, 8)}/`;

/** An in-process agent on `cluster`, under `keyPrefix`. */
function etcdAgent(
  cluster: EtcdCluster,
  keyPrefix: string,
  options: AgentOptions & { leaseTtl?: number } = {},
) {
  const { leaseTtl = 3, ...rest } = options;
  return startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ...rest,
    backend: new EtcdBackend({
      endpoints: cluster.endpoints,
      prefix: keyPrefix,
      leaseTtl,
    }),
  });
}

/** The etcd record of an instance: its value and its mod revision. */
async function stored(etcd: Etcd3, key: string) {
  const response = await etcd.get(key).exec();
  const kv = response.kvs[0];
  assert.ok(kv, `${key} is in etcd`);
  return {
    modRevision: kv.mod_revision,
    value: JSON.parse(kv.value.toString()) as Record<string, unknown>,
  };
}

Deno.test({
  ...etcdTest,
  name:
    "etcd: a check run by one agent drives the sets of another; a passing check writes nothing",
  async fn() {
    await using cluster = await startEtcd();
    const p = prefix();
    await using server = healthServer(200);
    await using a = await etcdAgent(cluster, p);
    await using b = await etcdAgent(cluster, p);
    await using owner = await connect(a.url);
    await using watcher = await connect(b.url);
    await using passing = await watcher.services("api");
    await using any = await watcher.services("api", { health: "any" });
    const up = record(passing);
    const all = record(any);
    const addr = `127.0.0.1:${server.port}`;
    const key = `${p}instances/api/${addr}`;
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    try {
      // Three failures in a row before critical: a run slowed by a busy
      // machine does not turn it critical (which would be a write).
      await owner.register("api", server.port, {
        check: {
          http: server.url,
          interval: 0.1,
          timeout: 0.08,
          failuresBeforeCritical: 3,
        },
      });
      let mark = await waitFor(up, 0, {
        kind: "up",
        addr,
        health: "passing",
      }, "up at the other agent");
      let at = await waitFor(all, 0, {
        kind: "update",
        addr,
        health: "passing",
      }, "the any set at the other agent sees it pass");

      // Passing for a while: the check runs, etcd is not written.
      const before = await stored(etcd, key);
      assert.equal(before.value.health, undefined, "passing: no health field");
      const runs = server.requests;
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assert.ok(
        server.requests - runs >= 5,
        `the check ran (${server.requests - runs} runs in 2 s)`,
      );
      assert.equal((await stored(etcd, key)).modRevision, before.modRevision);
      assert.equal(up.length, mark + 1, "no event while it passes");
      assert.equal(all.length, at + 1, "no event while it passes");

      server.set(500);
      mark = await waitFor(up, mark + 1, {
        kind: "down",
        addr,
        health: "critical",
        note: "HTTP 500",
      }, "down at the other agent");
      at = await waitFor(all, at + 1, {
        kind: "update",
        addr,
        health: "critical",
        note: "HTTP 500",
      }, "the any set at the other agent sees HTTP 500");
      const critical = await stored(etcd, key);
      assert.equal(critical.value.health, "critical");
      assert.equal(critical.value.note, "HTTP 500");

      server.set(200);
      await waitFor(up, mark + 1, {
        kind: "up",
        addr,
        health: "passing",
      }, "up again at the other agent");
      await waitFor(all, at + 1, {
        kind: "update",
        addr,
        health: "passing",
      }, "the any set at the other agent sees it pass again");
    } finally {
      etcd.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name:
    "etcd: an agent restarted within its lease TTL resumes a passing check without a flap at subscribers",
  async fn() {
    await using cluster = await startEtcd();
    const p = prefix();
    const leaseTtl = 5;
    await using server = healthServer(200);
    await using b = await etcdAgent(cluster, p);
    const a1 = await etcdAgent(cluster, p, { leaseTtl, ttl: 10 });
    const port = a1.port;
    let a2: Agent | undefined;
    let owner: Client | undefined;
    try {
      owner = await connect(a1.url, {
        clientId: `health-${crypto.randomUUID().slice(0, 18)}`,
        reconnect: { initialDelay: 50, maxDelay: 250 },
      });
      await using watcher = await connect(b.url);
      await using passing = await watcher.services("api");
      await using any = await watcher.services("api", { health: "any" });
      const up = record(passing);
      const all = record(any);
      const addr = `127.0.0.1:${server.port}`;
      await owner.register("api", server.port, {
        check: { http: server.url, interval: 0.2, timeout: 0.1 },
      });
      await waitFor(up, 0, {
        kind: "up",
        addr,
        health: "passing",
      }, "up before the restart");
      const mark = up.length;
      const at = all.length;
      let reconnected = false;
      owner.addEventListener("reconnect", () => reconnected = true);

      // The agent stops (its sessions end uncleanly: the records stay in
      // etcd, on its lease) and starts again on the same port.
      await a1.shutdown();
      const stopped = Date.now();
      a2 = await etcdAgent(cluster, p, { port, leaseTtl, ttl: 10 });
      await until(() => reconnected, "the client reconnects", WAIT_MS);
      await until(
        () => owner!.registrations().every((r) => r.state === "registered"),
        "registered again",
        WAIT_MS,
      );
      const owned = await owner.owned();
      assert.deepEqual(owned.map((i) => [i.addr, i.health]), [
        [addr, "passing"],
      ]);
      await until(
        async () => (await owner!.status()).instances.checks === 1,
        "the new agent runs the check",
        WAIT_MS,
      );
      // Past the old lease's expiry, with checks running at the new agent.
      const runs = server.requests;
      await new Promise((resolve) =>
        setTimeout(
          resolve,
          Math.max(0, stopped + (leaseTtl + 3) * 1000 - Date.now()),
        )
      );
      assert.ok(server.requests > runs, "the new agent ran the check");

      assert.deepEqual(
        up.slice(mark).filter((s) => s.addr === addr),
        [],
        "the passing set at the other agent saw no down and no up",
      );
      assert.deepEqual(
        all.slice(at).filter((s) =>
          s.addr === addr && (s.kind !== "update" || s.health !== "passing")
        ),
        [],
        "the any set at the other agent never saw it leave or turn critical",
      );
      assert.deepEqual(passing.online().map((i) => i.addr), [addr]);
      const [now] = await watcher.lookup("api");
      assert.equal(now?.health, "passing");
      assert.equal((await owner.status()).instances.passing, 1);
    } finally {
      await owner?.close();
      await a2?.shutdown();
      await a1.shutdown();
    }
  },
});
