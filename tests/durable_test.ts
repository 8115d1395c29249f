// Copyright the discover authors. BSD-3-Clause license.

/**
 * The memory backend with `--data-dir`, across restarts of real agent
 * processes on the same directory and port: subscribers see no `down` and
 * no `up`, a resume with `since` replays exactly what was missed, a
 * SIGKILL during a write storm loses nothing acknowledged, and a damaged
 * file is found and reported.
 *
 * Time bounds are generous (a restart takes a Deno start-up, about a
 * second; clients reconnect within their backoff of at most 300 ms here).
 */

import assert from "node:assert/strict";
import { type Client, connect, type ServiceUpdate } from "../mod.ts";
import { AGENT_RUN_ARGS } from "../tools/agent_command.ts";
import { type AgentProcess, spawnServer } from "../tools/agent_process.ts";
import { openRaw } from "./_raw_socket.ts";
import { until } from "./_wait.ts";
import { freePort } from "../tools/_process.ts";
import { tempDir } from "../tools/_process.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

/** Grace TTL of the agents here, in seconds. */
const TTL = 2;

/**
 * Starts the agent from source on `port` with `--data-dir dir`, allowed to
 * write there only.
 */
function spawnDurable(
  dir: string,
  port: number,
  args: string[] = [],
): Promise<AgentProcess> {
  const script = AGENT_RUN_ARGS.at(-1)!;
  return spawnServer([
    ...AGENT_RUN_ARGS.slice(0, -1),
    `--allow-write=${dir}`,
    script,
    "--listen",
    `127.0.0.1:${port}`,
    "--advertise-host",
    "127.0.0.1",
    "--ttl",
    String(TTL),
    "--data-dir",
    dir,
    ...args,
  ]);
}

/** Stops an agent the way `signal` does, and waits for it to exit. */
async function stopWith(agent: AgentProcess, signal: Deno.Signal) {
  if (signal === "SIGTERM") {
    await agent.stop();
    return;
  }
  agent.kill(signal);
  await agent.stop();
}

/** Every update of a set, as `kind addr`, as they come. */
function record(set: AsyncIterable<ServiceUpdate>): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const u of set) seen.push(`${u.kind} ${u.instance.addr}`);
  })();
  return seen;
}

/** Reconnects fast, so that it is back well within the grace TTL. */
const FAST = { reconnect: { initialDelay: 50, maxDelay: 300 } };

for (const signal of ["SIGTERM", "SIGKILL"] as const) {
  Deno.test(`an agent restarted on its data directory after ${signal}: no down and no up at subscribers; an instance whose client does not come back goes down after the grace TTL`, async () => {
    await using dir = await tempDir("discover-durable-");
    const port = freePort();
    let agent = await spawnDurable(dir.path, port);
    const url = agent.url;
    const clients: Client[] = [];
    try {
      const owner = await connect(url, FAST);
      clients.push(owner);
      // A client that will not come back after the restart.
      const gone = await connect(url, { reconnect: false });
      clients.push(gone);
      const watcher = await connect(url, FAST);
      clients.push(watcher);
      await owner.register("web", 8001, { attrs: { v: "1" } });
      await owner.register("web", 8002, { attrs: { v: "1" } });
      await owner.register("api", 9001);
      await gone.register("web", 8009);
      const set = await watcher.services("web");
      const all = await watcher.services("*");
      assert.deepEqual(set.online().map((i) => i.addr).sort(), [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
        "127.0.0.1:8009",
      ]);
      const seen = record(set);
      const seenAll = record(all);
      const before = (await watcher.status()).revision;

      await stopWith(agent, signal);
      await until(() => !set.connected, "the watcher sees the agent go");
      agent = await spawnDurable(dir.path, port);
      assert.equal(agent.url, url);

      // Everyone who reconnects is back in sync, and the owner's
      // instances are registered again, with no write anyone sees.
      await until(() => set.connected && all.connected, "the sets resume");
      await until(
        async () =>
          owner.state === "connected" &&
          owner.registrations().every((r) => r.state === "registered") &&
          (await owner.owned()).length === 3,
        "the owner takes its instances over",
      );
      const status = await watcher.status();
      assert.ok(status.revision >= before, `${status.revision} < ${before}`);
      // The instance of the client that did not come back leaves once the
      // grace TTL has passed since the restart; nothing else changes.
      await until(
        () => seen.includes("down 127.0.0.1:8009"),
        "the lost client's instance goes down",
        TTL * 1000 + 10_000,
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(seen, ["down 127.0.0.1:8009"]);
      assert.deepEqual(seenAll, ["down 127.0.0.1:8009"]);
      assert.deepEqual(set.online().map((i) => i.addr).sort(), [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
      ]);
      // The owner's instances kept their revisions and times.
      const [first] = await watcher.lookup("web", { filter: { v: "1" } });
      assert.equal(first.revision <= before, true);
      // Still its own: another client cannot take them.
      const intruder = await connect(url, { reconnect: false });
      clients.push(intruder);
      await assert.rejects(intruder.register("web", 8001), /registered by/);
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await agent.stop();
    }
  });
}

Deno.test("a resume with since across a restart replays exactly the changes missed", async () => {
  await using dir = await tempDir("discover-durable-");
  const port = freePort();
  // A long grace TTL: the writer's instances stay while the test reads.
  const args = ["--ttl", "60"];
  let agent = await spawnDurable(dir.path, port, args);
  const writer = await connect(agent.url, { reconnect: false });
  try {
    await writer.register("web", 80);
    await writer.register("web", 81);
    let seen: number, epoch: string;
    {
      await using reader = await openRaw(agent.url);
      const first = await reader.call("discover.subscribe", { service: "web" });
      ({ revision: seen, epoch } = first.result as Json);
    }
    // Missed while away: an attribute change, a removal, another
    // service, a new instance.
    await writer.register("web", 80, { attrs: { v: "2" } });
    await writer.unregister("web", 81);
    await writer.register("api", 90);
    await writer.register("web", 82);
    // The agent stops under the writer: its instances stay.
    await agent.stop();
    agent = await spawnDurable(dir.path, port, args);

    await using reader = await openRaw(agent.url);
    const resumed = await reader.call("discover.subscribe", {
      service: "web",
      since: seen,
      epoch,
    });
    const result = resumed.result as Json;
    assert.equal(result.mode, "replay", JSON.stringify(resumed));
    assert.equal(result.epoch, epoch);
    const events: Json[] = [];
    for (;;) {
      const event = (await reader.next() as Json).params.result;
      events.push(event);
      if (event.kind === "current") break;
    }
    assert.deepEqual(
      events.filter((e) => e.kind !== "leader").map((e) => [
        e.kind,
        e.instance?.addr,
        e.revision - seen,
      ]),
      [
        ["update", "127.0.0.1:80", 1],
        ["down", "127.0.0.1:81", 2],
        ["up", "127.0.0.1:82", 4],
        ["current", undefined, 4],
      ],
    );
  } finally {
    await writer.close();
    await agent.stop();
  }
});

Deno.test("a SIGKILL during a write storm: the restarted agent has every acknowledged registration and nothing out of order", async () => {
  await using dir = await tempDir("discover-durable-");
  const port = freePort();
  let agent = await spawnDurable(dir.path, port);
  const WRITERS = 4;
  const writers = await Promise.all(
    Array.from(
      { length: WRITERS },
      () => connect(agent.url, { reconnect: false }),
    ),
  );
  // Each writer registers its ports in order, one call at a time.
  const acknowledged = writers.map(() => 0);
  const storms = writers.map(async (client, w) => {
    try {
      for (let i = 0;; i++) {
        await client.register("storm", 20_000 + w * 1000 + i);
        acknowledged[w] = i + 1;
      }
    } catch { /* the agent died */ }
  });
  try {
    await until(
      () => acknowledged.every((n) => n >= 50),
      "every writer had 50 registrations acknowledged",
      20_000,
    );
    agent.kill("SIGKILL");
    await agent.stop();
    await Promise.all(storms);
    agent = await spawnDurable(dir.path, port);
    await using reader = await connect(agent.url);
    const addrs = (await reader.lookup("storm")).map((i) => i.addr);
    for (let w = 0; w < WRITERS; w++) {
      const ports = addrs
        .map((addr) => Number(addr.split(":")[1]) - 20_000 - w * 1000)
        .filter((n) => n >= 0 && n < 1000)
        .sort((a, b) => a - b);
      // A prefix of what the writer sent: every acknowledged call, and at
      // most the one under way when the agent died.
      const kept = ports.length;
      assert.deepEqual(ports, Array.from({ length: kept }, (_, i) => i));
      assert.ok(
        kept === acknowledged[w] || kept === acknowledged[w] + 1,
        `writer ${w}: ${kept} kept, ${acknowledged[w]} acknowledged`,
      );
    }
    assert.match(agent.stderr(), /did not stop cleanly/);
  } finally {
    await Promise.all(writers.map((c) => c.close().catch(() => {})));
    await agent.stop();
  }
});

Deno.test("a damaged data file: the agent starts with the state before the damage and says what it dropped; a foreign file is refused", async () => {
  await using dir = await tempDir("discover-durable-");
  const port = freePort();
  let agent = await spawnDurable(dir.path, port);
  /** The epoch an agent's subscriptions are in. */
  const epochAt = async (url: string): Promise<string> => {
    await using raw = await openRaw(url);
    const subscribed = await raw.call("discover.subscribe", { service: "web" });
    return (subscribed.result as Json).epoch;
  };
  let epoch: string;
  try {
    const writer = await connect(agent.url);
    for (let i = 0; i < 6; i++) await writer.register("web", 8000 + i);
    epoch = await epochAt(agent.url);
    await writer.close();
  } finally {
    await agent.stop();
  }
  // Damage the 4th registration's entry (revision 4; the file holds JSON).
  const path = `${dir.path}/discover.log`;
  const bytes = await Deno.readFile(path);
  const text = new TextDecoder("latin1").decode(bytes);
  const at = text.indexOf('"rev":4,');
  assert.ok(at > 0);
  bytes[at + 20] ^= 0x04;
  await Deno.writeFile(path, bytes);

  agent = await spawnDurable(dir.path, port);
  try {
    await using reader = await connect(agent.url);
    const addrs = (await reader.lookup("web")).map((i) => i.addr).sort();
    assert.deepEqual(addrs, [
      "127.0.0.1:8000",
      "127.0.0.1:8001",
      "127.0.0.1:8002",
    ]);
    const log = agent.stderr();
    assert.match(
      log,
      /the data file is damaged: a checksum that does not match/,
    );
    assert.match(log, /state of revision 3/);
    assert.match(log, /new epoch/);
    const names = [...Deno.readDirSync(dir.path)].map((e) => e.name);
    assert.ok(
      names.some((n) => n.startsWith("discover.log.damaged-")),
      names.join(", "),
    );
    assert.notEqual(await epochAt(agent.url), epoch);
  } finally {
    await agent.stop();
  }

  // Not a discover file at all: the agent refuses to start, and says why.
  await Deno.writeTextFile(path, "something else\n");
  const refused = await new Deno.Command(Deno.execPath(), {
    args: [
      ...AGENT_RUN_ARGS.slice(0, -1),
      `--allow-write=${dir.path}`,
      AGENT_RUN_ARGS.at(-1)!,
      "--listen",
      `127.0.0.1:${port}`,
      "--data-dir",
      dir.path,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(refused.code, 1);
  assert.match(
    new TextDecoder().decode(refused.stderr),
    /discover\.log is not a discover data file .* move it away/,
  );
  assert.equal(await Deno.readTextFile(path), "something else\n");
});
