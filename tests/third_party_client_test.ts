// Copyright the discover authors. BSD-3-Clause license.

/**
 * A JSON-RPC client written by someone else, `@open-rpc/client-js` over its
 * WebSocket transport (the npm `ws` package under Deno), talks to a real
 * agent process: the protocol is standard JSON-RPC 2.0.
 *
 * The library starts a timer per request that it never clears; requests are
 * sent with timeout 0 (no library timer) and bounded here instead, so that
 * the test leaks no timers.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  Client,
  JSONRPCError,
  RequestManager,
  WebSocketTransport,
} from "@open-rpc/client-js";
import { spawnAgent } from "../tools/agent_process.ts";
import { openRaw } from "./_raw_socket.ts";

type Json = Record<string, unknown>;

const INVALID_PARAMS = -32602;
const METHOD_NOT_FOUND = -32601;

/** Rejects when `promise` does not settle within `ms`. */
async function within<T>(promise: Promise<T>, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`nothing within ${ms} ms`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for a promise that must reject, and returns its reason. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    const value = await within(promise);
    throw new assert.AssertionError({
      message: `expected a rejection, got ${JSON.stringify(value)}`,
    });
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    return error;
  }
}

function assertRpcError(error: unknown, code: number, field?: string): void {
  assert.ok(
    error instanceof JSONRPCError,
    `expected a JSONRPCError, got ${error}`,
  );
  assert.equal(error.code, code, error.message);
  assert.equal(typeof error.message, "string");
  if (field !== undefined) {
    assert.deepEqual(error.data, { field });
    assert.ok(error.message.includes(`'${field}'`), error.message);
  }
}

Deno.test("third-party client: @open-rpc/client-js over WebSocket", async (t) => {
  await using agent = await spawnAgent();
  const transport = new WebSocketTransport(agent.url);
  const closed = new Promise<unknown>((resolve) =>
    transport.connection.addEventListener("close", resolve)
  );
  const client = new Client(new RequestManager([transport]));
  let closing: Promise<unknown> | undefined;
  const closeClient = () => closing ??= (client.close(), within(closed));

  const notifications: Json[] = [];
  let wake: (() => void) | undefined;
  client.onNotification((notification) => {
    notifications.push(notification as unknown as Json);
    wake?.();
  });
  const unmatched: unknown[] = [];
  client.onError((error) => unmatched.push(error));
  const nextNotification = async (): Promise<Json> => {
    const deadline = Date.now() + 5000;
    while (notifications.length === 0) {
      assert.ok(Date.now() < deadline, "no notification within 5000 ms");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        wake = () => (clearTimeout(timer), resolve());
      });
      wake = undefined;
    }
    return notifications.shift()!;
  };

  const request = (method: string, params: unknown) =>
    within(client.request({ method, params: params as Json }, 0));

  const web1 = {
    id: "web/127.0.0.1:8080",
    service: "web",
    addr: "127.0.0.1:8080",
    attrs: { zone: "b", tier: "front" },
    health: "passing",
  };
  let registered: Json = {};

  try {
    await t.step("$/ping", async () => {
      assert.equal(await request("$/ping", {}), "pong");
      // Without params the library sends `"params": []`.
      assert.equal(
        await within(client.request({ method: "$/ping" }, 0)),
        "pong",
      );
    });

    await t.step("discover.register with attrs", async () => {
      registered = await request("discover.register", {
        service: "web",
        port: 8080,
        attrs: { zone: "b", tier: "front" },
      }) as Json;
      assert.deepEqual(
        { ...registered, revision: 0, registeredAt: 0, created: 0 },
        { ...web1, revision: 0, registeredAt: 0, created: 0 },
      );
      assert.ok(Number.isInteger(registered.revision));
      assert.ok(Number.isInteger(registered.registeredAt));
      assert.equal(registered.created, registered.revision);
      const other = await request("discover.register", {
        service: "web",
        addr: "Web-2.Example:8081",
        attrs: { zone: "c" },
      }) as Json;
      assert.equal(other.addr, "web-2.example:8081");
      assert.deepEqual(other.attrs, { zone: "c" });
    });

    await t.step("discover.services reads it back with a filter", async () => {
      const filtered = await request("discover.services", {
        service: "web",
        filter: { attrs: { zone: "b" } },
      }) as Json;
      assert.deepEqual(filtered.instances, [registered]);
      assert.ok(
        (filtered.revision as number) >= (registered.revision as number),
      );
      const all = await request("discover.services", { service: "web" });
      const addrs = ((all as Json).instances as Json[]).map((i) => i.addr);
      assert.deepEqual(addrs.sort(), ["127.0.0.1:8080", "web-2.example:8081"]);
    });

    await t.step("discover.subscribe delivers notifications", async () => {
      const subscribed = await request("discover.subscribe", {
        service: "web",
        filter: { attrs: { tier: "front" } },
      }) as Json;
      assert.equal(subscribed.mode, "snapshot");
      const event = (result: Json) => ({
        jsonrpc: "2.0",
        method: "discover.event",
        params: { subscription: subscribed.subscription, result },
      });
      assert.deepEqual(
        await nextNotification(),
        event({
          kind: "up",
          revision: subscribed.revision,
          instance: registered,
        }),
      );
      assert.deepEqual(
        await nextNotification(),
        event({
          kind: "leader",
          revision: subscribed.revision,
          instance: registered,
        }),
      );
      assert.deepEqual(
        await nextNotification(),
        event({ kind: "current", revision: subscribed.revision }),
      );
      const changed = await request("discover.register", {
        service: "web",
        port: 8080,
        attrs: { zone: "b", tier: "front", version: "2" },
      }) as Json;
      assert.deepEqual(
        await nextNotification(),
        event({
          kind: "update",
          revision: changed.revision,
          instance: changed,
        }),
      );
      registered = changed;
      assert.equal(
        await request("discover.unsubscribe", {
          subscription: subscribed.subscription,
        }),
        true,
      );
    });

    await t.step("a bad request surfaces as a JSON-RPC error", async () => {
      assertRpcError(
        await rejection(request("discover.register", {
          service: "web",
          port: 0,
        })),
        INVALID_PARAMS,
        "port",
      );
      assertRpcError(
        await rejection(request("discover.services", {
          service: "web",
          filter: { attrs: { zone: 1 } },
        })),
        INVALID_PARAMS,
        "filter.attrs.zone",
      );
      assertRpcError(
        await rejection(request("discover.lookup", { service: "web" })),
        METHOD_NOT_FOUND,
      );
      // The connection is still usable.
      assert.equal(await request("$/ping", {}), "pong");
    });

    await t.step("a batch through the library", async () => {
      client.startBatch();
      const pending = [
        client.request({ method: "$/ping", params: {} }),
        client.request({
          method: "discover.services",
          params: { service: "web" },
        }),
        client.request({
          method: "discover.register",
          params: { service: "web" },
        }),
      ];
      // Client.request queues after a resolved await: let it run first.
      await new Promise((resolve) => setTimeout(resolve, 0));
      client.stopBatch();
      const [ping, services, bad] = await within(Promise.allSettled(pending));
      assert.deepEqual(ping, { status: "fulfilled", value: "pong" });
      assert.equal(services.status, "fulfilled");
      assert.equal(
        ((services as PromiseFulfilledResult<Json>).value.instances as Json[])
          .length,
        2,
      );
      assert.equal(bad.status, "rejected");
      assertRpcError(
        (bad as PromiseRejectedResult).reason,
        INVALID_PARAMS,
        "port",
      );
    });

    assert.deepEqual(notifications, [], "unexpected notifications");
    assert.deepEqual(unmatched, [], "responses the library could not match");

    await t.step("closing the transport is a clean close", async () => {
      // Another session watches the instances go down.
      await using raw = await openRaw(agent.url);
      const subscribed = await raw.call("discover.subscribe", {
        service: "web",
      });
      const { subscription } = subscribed.result as Json;
      const kinds = async (count: number) => {
        const out: string[] = [];
        for (let i = 0; i < count; i++) {
          const frame = await raw.next() as Json;
          const params = frame.params as Json;
          assert.equal(params.subscription, subscription);
          const event = params.result as Json;
          const instance = event.instance as Json | undefined;
          out.push(`${event.kind} ${instance?.addr ?? ""}`.trim());
        }
        return out.sort();
      };
      assert.deepEqual(await kinds(4), [
        "current",
        "leader 127.0.0.1:8080",
        "up 127.0.0.1:8080",
        "up web-2.example:8081",
      ]);
      // The library closes without a close code: a clean close (README,
      // "Sessions"), so the instances go down at once.
      const event = await closeClient() as CloseEvent;
      assert.equal(event.wasClean, true);
      // Each down, and leadership passing on (or not, if the follower goes
      // first), until nobody is left to lead.
      const gone: string[] = [];
      while (!gone.includes("leader")) gone.push(...await kinds(1));
      assert.deepEqual(gone.filter((k) => k.startsWith("down")).sort(), [
        "down 127.0.0.1:8080",
        "down web-2.example:8081",
      ]);
      const listed = await raw.call("discover.services", { service: "web" });
      assert.deepEqual((listed.result as Json).instances, []);
      assert.deepEqual(await raw.drain(200), []);
    });
  } finally {
    await closeClient();
  }
});
