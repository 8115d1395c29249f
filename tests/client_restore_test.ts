// Copyright the discover authors. BSD-3-Clause license.

/**
 * What a client does when the agent refuses a registration it restores
 * after a reconnection: a refusal that can pass (the instance was taken by
 * another client during the blip: -32001) is retried until it succeeds; a
 * refusal that retrying cannot fix (a limit: -32002) is given up and
 * surfaced: in `client.registrations()`, as a permanent `error` event, and
 * with `console.error` when no listener handles that event.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import {
  connect,
  ErrorCode,
  type Registration,
  type RestoreErrorEvent,
  RpcError,
} from "../mod.ts";
import { tcpProxy } from "./_proxy.ts";
import { until } from "./_wait.ts";

const quiet = {
  advertiseHost: "127.0.0.1",
  logger: { debug() {}, info() {}, warn() {}, error() {} },
};

const codeOf = (error: unknown) =>
  error instanceof RpcError ? error.code : undefined;

const show = (r: Registration) =>
  `${r.at} ${r.state}${r.error === undefined ? "" : ` ${codeOf(r.error)}`}`;

Deno.test({
  name:
    "an instance taken during a blip is 'restoring' while the client retries, and 'registered' again once the taker lets go",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A long grace TTL: only a takeover can move the instance.
    await using agent = await startAgent({ port: 0, ttl: 30, ...quiet });
    const proxy = tcpProxy(agent.port);
    try {
      await using owner = await connect(proxy.url, {
        reconnect: { initialDelay: 50, maxDelay: 200 },
        connectTimeout: 500,
      });
      const events: RestoreErrorEvent[] = [];
      owner.addEventListener("error", (e) => {
        e.preventDefault();
        events.push(e);
      });
      const addr = "10.0.0.5:5432";
      await owner.register("db", addr, { attrs: { who: "owner" } });
      assert.deepEqual(owner.registrations().map(show), [
        "10.0.0.5:5432 registered",
      ]);

      // The blip: the owner's connection drops, and its reconnection is
      // held back until another client has taken the instance.
      proxy.freeze();
      proxy.cut();
      await using taker = await connect(agent.url);
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await taker.register("db", addr, { attrs: { who: "taker" } });
          break;
        } catch (error) {
          // Refused until the agent has seen the owner's session end.
          assert.equal(codeOf(error), ErrorCode.NotOwner, String(error));
          assert.ok(Date.now() < deadline, "the takeover never succeeded");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      proxy.thaw();
      await until(
        () => events.length > 0 && owner.state === "connected",
        "the owner reconnects and is told",
      );
      assert.equal(events[0].permanent, false);
      assert.equal(codeOf(events[0].error), ErrorCode.NotOwner);
      assert.equal(events[0].detail, events[0].error);
      assert.equal(events[0].registration?.service, "db");
      assert.deepEqual(owner.registrations().map(show), [
        `10.0.0.5:5432 restoring ${ErrorCode.NotOwner}`,
      ]);

      await taker.close();
      await until(
        () => owner.registrations()[0].state === "registered",
        "the retry succeeds once the taker left (retries back off up to 5 s)",
        15_000,
      );
      assert.deepEqual(owner.registrations().map(show), [
        "10.0.0.5:5432 registered",
      ]);
      const [held] = await owner.lookup("db");
      assert.deepEqual(held.attrs, { who: "owner" });
      assert.equal(events.length, 1, "told once, not at every retry");
    } finally {
      proxy.close();
    }
  },
});

Deno.test("a restore refused for good is given up and surfaced: registrations(), a permanent error event, console.error when unhandled", async () => {
  const first = await startAgent({ port: 0, ...quiet });
  const port = first.port;
  const options = { reconnect: { initialDelay: 50, maxDelay: 200 } };
  await using handled = await connect(first.url, options);
  await using unhandled = await connect(first.url, options);
  for (const [i, client] of [handled, unhandled].entries()) {
    await client.register("svc", `10.0.${i}.1:80`);
    await client.register("svc", `10.0.${i}.2:80`);
  }
  const events: RestoreErrorEvent[] = [];
  handled.addEventListener("error", (e) => {
    e.preventDefault();
    events.push(e);
  });
  const lines: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    // The agent comes back allowing each client one registration only.
    await first.shutdown();
    await using second = await startAgent({
      port,
      limits: { maxRegistrations: 1 },
      ...quiet,
    });
    await until(
      () => events.length > 0 && lines.length > 0,
      "both clients hear of the refusal",
    );
    assert.equal(events.length, 1);
    assert.equal(events[0].permanent, true);
    assert.equal(codeOf(events[0].error), ErrorCode.LimitExceeded);
    assert.equal(events[0].registration?.state, "failed");
    for (const client of [handled, unhandled]) {
      assert.deepEqual(
        client.registrations().map((r) => r.state).sort(),
        ["failed", "registered"],
      );
      const failed = client.registrations().find((r) => r.state === "failed")!;
      assert.equal(codeOf(failed.error), ErrorCode.LimitExceeded);
    }
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(
      lines[0],
      /^discover: registering svc at 10\.0\.1\.[12]:80 again after a reconnection failed: .*limit.* \(-32002\); given up: register it again or unregister it/,
    );
    await until(() => second.revision === 2, "one registration of each");
    // Given up: the program retries by registering it again (here after
    // making room for it).
    const before = second.revision;
    await handled.unregister(
      "svc",
      handled.registrations().find((r) => r.state === "registered")!.at,
    );
    const failed = handled.registrations()[0];
    assert.equal(failed.state, "failed");
    await handled.register("svc", failed.at);
    assert.deepEqual(handled.registrations().map((r) => r.state), [
      "registered",
    ]);
    assert.equal(second.revision, before + 2);
    assert.equal(events.length, 1);
  } finally {
    console.error = consoleError;
  }
});
