// Copyright the discover authors. BSD-3-Clause license.

/**
 * Memory bounds of one client against an agent process with its DEFAULT
 * limits: within every documented limit, a client cannot grow the agent by
 * more than a bounded amount.
 *
 * - Changes with large attributes, many times over: the history of changes
 *   kept for resumes is bounded by bytes (`--history-bytes`, 16 MiB) as
 *   well as by number. Growth bound: {@linkcode HISTORY_RSS_BOUND_MIB}.
 * - A connection that never reads and subscribes again and again to every
 *   service: only one snapshot at a time may go beyond `maxQueueBytes`, the
 *   next subscribes wait for it to be read, and the session is dropped as a
 *   slow consumer (4008) when nothing is read for the idle timeout. Growth
 *   bound: {@linkcode QUEUE_RSS_BOUND_MIB}.
 *
 * Both attacks grew the agent by hundreds of MiB without the bounds
 * (measured on 2 shared cores: about 280 MiB for 30,000 changes, 450 MiB
 * for 50,000; about 250 MiB for the 100 subscribes).
 *
 * And an honest reader still gets snapshots bigger than `maxQueueBytes`,
 * three of them at once.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import {
  type AgentProcess,
  rssKiB,
  spawnAgent,
} from "../tools/agent_process.ts";
import { openRaw } from "./_raw_socket.ts";

/**
 * Most growth of the agent's resident set while 50,000 large changes go
 * through its history, in MiB. The history holds 16 MiB, but the garbage
 * collector lets the changes it drops pile up several times over before it
 * runs, and the traffic itself leaves garbage: measured 155 to 214 MiB on a
 * shared 2-core machine. Without the byte cap the agent grew 437 MiB.
 */
const HISTORY_RSS_BOUND_MIB = 300;

/**
 * Most growth of the agent's resident set while a connection that never
 * reads subscribes 100 times, in MiB: the session may hold about twice
 * 16 MiB plus one 2.2 MB snapshot, and the serialized snapshots are garbage
 * until collected: measured 30 to 58 MiB on a shared 2-core machine. Without
 * the bound, 40 such subscriptions grew the agent by about 200 MiB.
 */
const QUEUE_RSS_BOUND_MIB = 180;

const encoder = new TextEncoder();

/**
 * Attributes at the protocol's limit (8,192 characters as JSON): seven
 * values of 1,024 characters, and `tag`.
 */
function fatAttrs(tag: string): Record<string, string> {
  const attrs: Record<string, string> = { tag };
  for (let i = 0; i < 7; i++) attrs[`a${i}`] = String(i).repeat(1024);
  return attrs;
}

async function rssMiB(agent: AgentProcess): Promise<number> {
  return await rssKiB(agent.child.pid) / 1024;
}

/** Samples the agent's RSS every 100 ms; `stop()` returns the peak in MiB. */
function sampleRss(agent: AgentProcess) {
  let peak = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      peak = Math.max(peak, await rssMiB(agent).catch(() => 0));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return Math.max(peak, await rssMiB(agent));
    },
  };
}

/**
 * A WebSocket client written by hand on a TCP connection, which reads the
 * upgrade response and nothing after it: whatever the agent sends stays in
 * its queues.
 */
/** Prints what an attack did to the agent's RSS, and fails beyond `bound` MiB of growth. */
function assertGrowth(
  what: string,
  baseline: number,
  peak: number,
  bound: number,
): void {
  console.log(
    `${what}: agent RSS ${baseline.toFixed(0)} MiB before, ${
      peak.toFixed(0)
    } MiB at peak (growth bound ${bound} MiB)`,
  );
  assert.ok(
    peak - baseline < bound,
    `the agent grew by ${(peak - baseline).toFixed(0)} MiB`,
  );
}

async function openNonReader(agent: AgentProcess) {
  const url = new URL(agent.http);
  const conn = await Deno.connect({
    hostname: url.hostname,
    port: Number(url.port),
  });
  await conn.write(encoder.encode(
    `GET / HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  ));
  const buffer = new Uint8Array(4096);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`upgrade refused: ${head}`);
    head += new TextDecoder().decode(buffer.subarray(0, n));
  }
  assert.match(head, /^HTTP\/1\.1 101/);
  let closed = false;
  return {
    /** Sends a masked text frame, as a client must; false once closed. */
    async send(text: string): Promise<boolean> {
      if (closed) return false;
      const payload = encoder.encode(text);
      const n = payload.length;
      const header = n < 126
        ? [0x81, 0x80 | n]
        : n < 65536
        ? [0x81, 0x80 | 126, n >> 8, n & 255]
        : [
          0x81,
          0x80 | 127,
          0,
          0,
          0,
          0,
          n >>> 24,
          (n >> 16) & 255,
          (n >> 8) & 255,
          n & 255,
        ];
      const mask = crypto.getRandomValues(new Uint8Array(4));
      const frame = new Uint8Array(header.length + 4 + n);
      frame.set(header);
      frame.set(mask, header.length);
      for (let i = 0; i < n; i++) {
        frame[header.length + 4 + i] = payload[i] ^ mask[i & 3];
      }
      try {
        await conn.write(frame);
        return true;
      } catch {
        closed = true; // the agent closed it
        return false;
      }
    },
    close() {
      if (!closed) conn.close();
      closed = true;
    },
  };
}

async function sessions(agent: AgentProcess): Promise<number> {
  return (await (await fetch(`${agent.http}healthz`)).json()).sessions;
}

Deno.test({
  name:
    "memory: large attributes changed 50,000 times keep the history within --history-bytes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using agent = await spawnAgent(["--log-level", "warn"]);
    await using writer = await connect(agent.url, { requestTimeout: 30_000 });
    await writer.register("warm", 9999); // code paths loaded before the baseline
    const baseline = await rssMiB(agent);
    const sampler = sampleRss(agent);
    const ROUNDS = 50_000, AT_ONCE = 100;
    const started = Date.now();
    for (let round = 0; round < ROUNDS; round += AT_ONCE) {
      await Promise.all(
        Array.from(
          { length: AT_ONCE },
          (_, k) =>
            writer.register("fat", 9000, { attrs: fatAttrs(`${round + k}`) }),
        ),
      );
    }
    const seconds = (Date.now() - started) / 1000;
    assertGrowth(
      `${ROUNDS} changes of 7.3 KiB in ${seconds.toFixed(1)} s`,
      baseline,
      await sampler.stop(),
      HISTORY_RSS_BOUND_MIB,
    );

    // The oldest changes were dropped: a resume from the start gets a
    // snapshot, a recent one a replay.
    await using raw = await openRaw(agent.url);
    const status = await raw.call("discover.status");
    const { revision, epoch } = status.result as Record<string, number>;
    const old = await raw.call("discover.subscribe", {
      service: "fat",
      since: 1,
      epoch,
    });
    assert.equal((old.result as Record<string, string>).mode, "snapshot");
    const recent = await raw.call("discover.subscribe", {
      service: "fat",
      since: revision - 100,
      epoch,
    });
    assert.equal((recent.result as Record<string, string>).mode, "replay");
  },
});

Deno.test({
  name:
    "memory: a connection that never reads and subscribes to '*' 100 times is bounded, then dropped",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using agent = await spawnAgent(["--log-level", "warn"]);
    // The writer stays connected: its instances go when it closes.
    await using writer = await connect(agent.url);
    await Promise.all(
      Array.from(
        { length: 300 },
        (_, i) =>
          writer.register("wide", 20_000 + i, { attrs: fatAttrs(`${i}`) }),
      ),
    );
    // `*` holds 300 instances of 7.3 KiB: a snapshot of about 2.2 MB.
    const baseline = await rssMiB(agent);
    const sampler = sampleRss(agent);
    const attacker = await openNonReader(agent);
    try {
      for (let id = 1; id <= 100; id++) {
        await attacker.send(JSON.stringify({
          jsonrpc: "2.0",
          id,
          method: "discover.subscribe",
          params: { service: "*" },
        }));
      }
      // Keeps talking (notifications, which get no response), so that it
      // is not a silent peer.
      const deadline = Date.now() + 30_000;
      while (
        !agent.stderr().includes("slow consumer dropped") &&
        Date.now() < deadline
      ) {
        await attacker.send('{"jsonrpc":"2.0","method":"$/ping"}');
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    } finally {
      attacker.close();
    }
    assertGrowth(
      "100 subscribes of 2.2 MB, never read",
      baseline,
      await sampler.stop(),
      QUEUE_RSS_BOUND_MIB,
    );
    assert.match(
      agent.stderr(),
      /slow consumer dropped/,
      "the attacker was not dropped within 30 s",
    );
    // The writer's session is left.
    const ended = Date.now() + 10_000;
    while (await sessions(agent) !== 1) {
      assert.ok(Date.now() < ended, "the session did not end");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  },
});

Deno.test({
  name:
    "memory: an honest reader gets three snapshots bigger than maxQueueBytes at once",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using agent = await spawnAgent(["--log-level", "warn"]);
    // 2,400 instances of 7.3 KiB attributes: a snapshot of about 17.6 MB,
    // above the default maxQueueBytes of 16 MiB. Three writers, since
    // maxRegistrations is 1000 per client.
    const INSTANCES = 2400;
    const writers = [];
    for (let w = 0; w < 3; w++) {
      const writer = await connect(agent.url, { requestTimeout: 30_000 });
      writers.push(writer);
      for (let start = w * 800; start < (w + 1) * 800; start += 100) {
        await Promise.all(
          Array.from(
            { length: 100 },
            (_, k) =>
              writer.register("big", 30_000 + start + k, {
                attrs: fatAttrs(`${start + k}`),
              }),
          ),
        );
      }
    }
    try {
      // Generous timeouts: about 53 MB cross a shared, noisy machine.
      await using reader = await connect(agent.url, {
        requestTimeout: 30_000,
      });
      let disconnects = 0;
      reader.addEventListener("disconnect", () => disconnects++);
      const signal = AbortSignal.timeout(45_000);
      // Two sets of the service and one of every service: the second and
      // third subscribes find the queue over the limit and wait their turn.
      const sets = await Promise.all([
        reader.services("big", { signal }),
        reader.services("big", { signal }),
        reader.services("*", { signal }),
      ]);
      for (const set of sets) assert.equal(set.online().length, INSTANCES);
      const bytes = JSON.stringify(sets[0].online()).length;
      assert.ok(bytes > 16 * 1024 * 1024, `snapshot of ${bytes} bytes`);
      assert.equal(disconnects, 0, "the reader was never dropped");
      assert.doesNotMatch(agent.stderr(), /slow consumer dropped/);
      for (const set of sets) await set.close();
    } finally {
      for (const writer of writers) await writer.close();
    }
  },
});
