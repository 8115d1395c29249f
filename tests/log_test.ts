// Copyright the discover authors. BSD-3-Clause license.

/**
 * What an operator reads in the agent's logs at the default level, from a
 * real agent process: sessions opened and closed (remote address, client
 * id), instances registered, unregistered and expired (service, addr,
 * owner), refused origins, and, on etcd, an outage summarised rather than
 * streamed; as JSON lines (`--log-format json`) and as text.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { until } from "./_wait.ts";
import { spawnRegistrant } from "./_wait.ts";

/** One JSON log line. */
interface JsonRecord {
  time: string;
  level: string;
  category: string;
  message: string;
  [field: string]: unknown;
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Every line of `text`, each parsed and checked as a JSON log record. */
function parseJsonLines(text: string): JsonRecord[] {
  const lines = text.split("\n").filter((line) => line !== "");
  assert.ok(lines.length > 0, "no log lines");
  return lines.map((line) => {
    const record = JSON.parse(line) as JsonRecord;
    assert.match(record.time, ISO_TIME, line);
    assert.ok(["debug", "info", "warn", "error"].includes(record.level), line);
    assert.match(record.category, /^discover(\.[a-z]+)*$/, line);
    assert.equal(typeof record.message, "string", line);
    return record;
  });
}

/** The records whose message starts with `prefix` (a message may go on with why). */
function find(records: JsonRecord[], prefix: string): JsonRecord[] {
  return records.filter((r) => r.message.startsWith(prefix));
}

/** A WebSocket upgrade as a page from `origin` would send it: refused, 403. */
async function upgradeFrom(http: string, origin: string): Promise<number> {
  const response = await fetch(http, {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
      origin,
    },
  });
  await response.body?.cancel();
  return response.status;
}

Deno.test("--log-format json: sessions, register, unregister and expiry, one object per line", async () => {
  // A grace TTL of 1 s: the killed client's instance expires soon.
  const agent = await spawnAgent(["--log-format", "json", "--ttl", "1"]);
  try {
    const client = await connect(agent.url, { clientId: "logged-client-0001" });
    const watcher = await connect(agent.url);
    const batch = await watcher.services("batch");
    await client.register("web", 4000, { attrs: { zone: "a" } });
    assert.equal(await client.unregister("web", 4000), true);
    const registrant = await spawnRegistrant(agent.url, "batch", 7000);
    await until(() => batch.online().length === 1, "the batch instance is up");
    await registrant.kill();
    // Generous: down 1 s after the registrant's connection drops.
    await until(
      () => batch.online().length === 0 && batch.offline().length === 1,
      "the batch instance expires",
      15_000,
    );
    await client.close();
    await watcher.close();
    assert.equal(
      await upgradeFrom(agent.http, "http://elsewhere.example"),
      403,
    );
    await until(
      () =>
        agent.stderr().split("\n").filter((l) => l.includes("session closed"))
          .length >= 3,
      "the three sessions are logged closed",
    );
  } finally {
    assert.equal((await agent.stop()).code, 0);
  }
  const records = parseJsonLines(agent.stderr());
  const at = (prefix: string) =>
    records.findIndex((r) => r.message.startsWith(prefix));

  // One line for listening, with the URL.
  const listening = find(records, "listening");
  assert.equal(listening.length, 1);
  assert.equal(listening[0].url, agent.url);
  assert.equal(listening[0].level, "info");

  // Sessions: the client's with its id, each with the remote address.
  const opened = find(records, "session opened");
  assert.equal(opened.length, 3);
  for (const record of opened) {
    assert.equal(record.level, "info");
    assert.equal(record.remote, "127.0.0.1");
    assert.equal(typeof record.owner, "string");
  }
  const mine = opened.filter((r) => r.client === "logged-c…");
  assert.equal(mine.length, 1);
  const closed = find(records, "session closed");
  assert.equal(closed.length, 3);
  assert.ok(
    closed.some((r) => r.client === "logged-c…" && r.clean === true),
  );
  // The killed registrant's session was lost, not closed.
  assert.ok(closed.some((r) => r.clean === false));

  // register, unregister, expiry: with service, addr and owner, in order.
  const registered = find(records, "instance registered");
  const web = registered.find((r) => r.service === "web");
  assert.ok(web, "web registered");
  assert.deepEqual(
    [web.level, web.addr, web.owner],
    ["info", "127.0.0.1:4000", mine[0].owner],
  );
  const unregistered = find(records, "instance unregistered");
  assert.equal(unregistered.length, 1);
  assert.deepEqual(
    [unregistered[0].service, unregistered[0].addr, unregistered[0].owner],
    ["web", "127.0.0.1:4000", mine[0].owner],
  );
  const batchUp = registered.find((r) => r.service === "batch");
  assert.ok(batchUp, "batch registered");
  const expired = find(records, "instance expired");
  assert.equal(expired.length, 1);
  assert.deepEqual(
    [expired[0].level, expired[0].service, expired[0].addr, expired[0].owner],
    ["info", "batch", "127.0.0.1:7000", batchUp.owner],
  );
  const order = [
    records.indexOf(web),
    at("instance unregistered"),
    records.indexOf(batchUp),
    at("instance expired"),
  ];
  assert.deepEqual(order, [...order].sort((a, b) => a - b), "in order");

  // The page from another origin, refused, with where it came from.
  const refused = find(records, "session refused: origin not allowed");
  assert.equal(refused.length, 1);
  assert.deepEqual(
    [refused[0].level, refused[0].origin, refused[0].remote],
    ["warn", "http://elsewhere.example", "127.0.0.1"],
  );
  // Every layer names itself.
  assert.ok(records.every((r) => r.category.startsWith("discover")));
});

Deno.test("--log-format text (the default): TIME LEVEL CATEGORY MESSAGE key=value", async () => {
  const agent = await spawnAgent([]);
  try {
    const client = await connect(agent.url, { clientId: "texty-client-00001" });
    await client.register("web", 4001);
    await client.unregister("web", 4001);
    await client.close();
    await until(
      () => agent.stderr().includes("session closed"),
      "the session is logged closed",
    );
  } finally {
    assert.equal((await agent.stop()).code, 0);
  }
  const lines = agent.stderr().split("\n").filter((line) => line !== "");
  for (const line of lines) {
    assert.match(
      line,
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (DEBUG|INFO|WARN|ERROR) discover(\.[a-z]+)* \S/,
    );
    assert.doesNotMatch(line, /^\{/);
  }
  const line = (pattern: RegExp) => lines.filter((l) => pattern.test(l));
  assert.equal(line(/ INFO \S+ listening url=ws:\/\//).length, 1);
  assert.equal(
    line(
      / INFO \S+ session opened session=\d+ remote=127\.0\.0\.1 client=texty-cl… owner=\S+$/,
    )
      .length,
    1,
  );
  assert.equal(
    line(
      / INFO \S+ instance registered service=web addr=127\.0\.0\.1:4001 owner=\S+/,
    )
      .length,
    1,
  );
  assert.equal(
    line(
      / INFO \S+ instance unregistered service=web addr=127\.0\.0\.1:4001 owner=\S+/,
    )
      .length,
    1,
  );
  assert.equal(
    line(
      / INFO \S+ session closed session=\d+ remote=127\.0\.0\.1 client=texty-cl… code=1000 clean=true$/,
    )
      .length,
    1,
  );
});

/** A warning's kind, as the etcd backend counts them: without the wait, numbers and quoted names. */
function kindOf(message: string): string {
  return message.replace(/; retrying in .*$/, "; retrying")
    .replace(/'[^']*'/g, "''").replace(/\d+/g, "#");
}

Deno.test({
  name:
    "etcd outage: repeated failures are logged a few times, then counted; connect and reconnect are said",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using cluster = await startEtcd(1);
    const agent = await spawnAgent([
      "--log-format",
      "json",
      "--backend",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints[0],
      // Renewals are tried every 0.5 s once half of it passed: they fail
      // many times in a row while etcd is away.
      "--etcd-lease-ttl",
      "4",
    ]);
    try {
      await using client = await connect(agent.url);
      await client.register("web", 4002);
      await client.services("web");
      const logged = (prefix: string) =>
        parseJsonLines(agent.stderr()).filter((r) =>
          r.message.startsWith(prefix)
        );
      await until(() => logged("etcd connected").length === 1, "connected");
      await cluster.members[0].kill();
      // The third renewal failure says the next are counted; several more
      // fail (every 0.5 s) while etcd stays away.
      await until(
        () => logged("etcd lease renewal failed").some((r) => "repeats" in r),
        "the renewal failures are logged",
        20_000,
      );
      await new Promise((resolve) => setTimeout(resolve, 3000));
      await cluster.members[0].restart();
      await until(
        () => logged("etcd is reachable again").length === 1,
        "etcd is reachable again",
        30_000,
      );
    } finally {
      assert.equal((await agent.stop()).code, 0);
    }
    const records = parseJsonLines(agent.stderr());
    const backend = records.filter((r) => r.category === "discover.backend");
    // Connect and disconnect, at info and warn.
    const messages = backend.map((r) => r.message);
    assert.equal(messages.filter((m) => m === "etcd connected").length, 1);
    assert.ok(
      messages.filter((m) => m.startsWith("etcd is unreachable")).length >= 1,
    );
    assert.equal(
      messages.filter((m) => m === "etcd connection closed").length,
      1,
    );
    // No kind of warning streams: at most three lines each.
    const kinds = new Map<string, number>();
    for (const r of backend) {
      if (r.level !== "warn" || r.message === "repeated warnings not logged") {
        continue;
      }
      kinds.set(kindOf(r.message), (kinds.get(kindOf(r.message)) ?? 0) + 1);
    }
    for (const [kind, count] of kinds) {
      assert.ok(count <= 3, `${count}: ${kind}`);
    }
    // The rest were counted, and the count is logged before etcd is back.
    const counts = backend.filter((r) =>
      r.message === "repeated warnings not logged"
    );
    assert.ok(counts.length >= 1, "a count of what was not logged");
    const renewals = counts.find((r) =>
      String(r.like).startsWith("etcd lease renewal failed")
    );
    assert.ok(renewals, JSON.stringify(counts));
    assert.ok((renewals.count as number) >= 1);
    assert.ok(
      records.indexOf(renewals) <
        records.findIndex((r) => r.message === "etcd is reachable again"),
    );
  },
});
