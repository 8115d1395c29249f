// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import type { Instance, LeaseResult } from "../protocol/types.ts";
import {
  type Campaign,
  CampaignEndedError,
  type CampaignHost,
  type DeposedEvent,
  startCampaign,
} from "./campaign.ts";
import { openSet, type SetControl } from "./service_set.ts";

function inst(addr: string, created: number): Instance {
  return {
    id: `db/${addr}`,
    service: "db",
    addr,
    attrs: {},
    revision: created,
    registeredAt: 0,
    created,
    health: "passing",
  };
}

const until = async (condition: () => boolean, what: string) => {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

/**
 * A host whose agent is played by the test: `created` is handed out in
 * order, `vouch` is what `discover.lease` answers (none: no answer).
 */
function fakeHost(others: Instance[] = []) {
  let next = 10;
  const calls: string[] = [];
  const state = {
    vouch: { ms: 60_000, lease: "L1" } as LeaseResult | undefined,
    control: undefined as SetControl | undefined,
    connected: true,
  };
  const host: CampaignHost = {
    service: "db",
    interval: 10,
    register: () => {
      const life = inst("h:1", next++);
      calls.push(`register ${life.created}`);
      state.control?.apply({
        kind: "up",
        revision: life.created,
        instance: life,
      });
      return Promise.resolve(life);
    },
    unregister: () => {
      calls.push("unregister");
      return Promise.resolve(true);
    },
    lease: () => state.vouch && Promise.resolve(state.vouch),
    leaseBefore: () => Promise.resolve(state.vouch ?? { ms: 0, lease: "L1" }),
    openSet: () => {
      const { set, control } = openSet(
        "db",
        undefined,
        () => Promise.resolve(),
      );
      state.control = control;
      control.beginSnapshot();
      for (const other of others) {
        control.apply({ kind: "up", revision: 5, instance: other });
      }
      control.apply({ kind: "current", revision: 5 });
      return Promise.resolve(set);
    },
    connected: () => state.connected,
    ended: () => calls.push("ended"),
  };
  return { host, calls, state };
}

function deposals(campaign: Campaign): string[] {
  const seen: string[] = [];
  campaign.addEventListener("deposed", (e: DeposedEvent) => {
    seen.push(`${e.token} ${e.reason}`);
  });
  return seen;
}

Deno.test("a campaign leads while its life leads the set and the agent vouches for it", async () => {
  const { host, calls } = fakeHost();
  const me = await startCampaign(host);
  assert.equal(await me.elected, 10);
  assert.equal(me.leading, true);
  assert.equal(me.token, 10);
  assert.ok(me.deadline! > performance.now());
  await me.resign();
  assert.equal(me.leading, false);
  assert.equal(me.token, undefined);
  // The instance is the campaign's until its removal is confirmed.
  assert.deepEqual(calls, ["register 10", "unregister", "ended"]);
});

Deno.test("an older instance leads: the campaign waits", async () => {
  const { host } = fakeHost([inst("h:0", 3)]);
  const me = await startCampaign(host);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(me.leading, false);
  await me.resign();
  await assert.rejects(me.elected, { name: "CampaignEndedError" });
});

Deno.test("without a fresh vouch the belief runs out, and the campaign takes a new life", async () => {
  const { host, calls, state } = fakeHost();
  state.vouch = { ms: 400, lease: "L1" };
  const me = await startCampaign(host);
  const seen = deposals(me);
  assert.equal(await me.elected, 10);
  state.vouch = undefined; // the agent stops answering
  await until(() => seen.length > 0, "deposed");
  assert.deepEqual(seen, ["10 expired"]);
  assert.equal(me.leading, false);
  await until(() => calls.includes("register 11"), "a new life");
  assert.deepEqual(calls.slice(0, 3), [
    "register 10",
    "unregister",
    "register 11",
  ]);
  state.vouch = { ms: 60_000, lease: "L1" };
  assert.equal(await me.elected, 11, "leads again with a greater token");
  await me.resign();
});

Deno.test("a vouch under another lease than the life's deposes at once", async () => {
  const { host, calls, state } = fakeHost();
  const me = await startCampaign(host);
  const seen = deposals(me);
  await me.elected;
  state.vouch = { ms: 60_000, lease: "L2" };
  await until(() => seen.length > 0, "deposed");
  assert.deepEqual(seen, ["10 lease"]);
  await until(() => calls.includes("register 11"), "a new life");
  assert.equal(await me.elected, 11);
  await me.resign();
});

Deno.test("a lost connection deposes at once", async () => {
  const { host, state } = fakeHost();
  const me = await startCampaign(host);
  const seen = deposals(me);
  await me.elected;
  state.connected = false;
  state.control!.disconnected();
  assert.deepEqual(seen, ["10 disconnected"]);
  assert.equal(me.leading, false);
  await me.resign();
});

Deno.test("a token another instance of the set shares is never led with", async () => {
  // h:9 was written at the revision this campaign's first life gets.
  const { host, calls } = fakeHost([inst("h:9", 10)]);
  const me = await startCampaign(host);
  // h:1 (10) precedes h:9 (10) by address, but shares its token: a new life.
  await until(() => calls.includes("register 11"), "a new life");
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(me.leading, false, "h:9 (10) leads the new life (11)");
  await me.resign();
});

Deno.test("resigning while a new life is being registered leaves no instance behind", async () => {
  const { host, calls, state } = fakeHost();
  state.vouch = { ms: 400, lease: "L1" };
  const me = await startCampaign(host);
  assert.equal(await me.elected, 10);
  // The next life waits for the agent's lease answer, held by the test.
  let answer!: () => void;
  const held = new Promise<void>((resolve) => answer = resolve);
  const leaseBefore = host.leaseBefore;
  host.leaseBefore = async () => {
    await held;
    return leaseBefore();
  };
  state.vouch = undefined; // the belief runs out: a new life starts
  await until(() => calls.includes("unregister"), "the old life goes");
  const resigned = me.resign();
  answer();
  await resigned;
  assert.deepEqual(calls.slice(-2), ["unregister", "ended"], calls.join(", "));
  assert.ok(!calls.includes("register 11"), calls.join(", "));
});

Deno.test("a life the set no longer holds, although it saw it registered, is replaced", async () => {
  // h:0 (5) leads; this campaign's first life is 10.
  const { host, calls, state } = fakeHost([inst("h:0", 5)]);
  const me = await startCampaign(host);
  await until(() => me.instance?.created === 10, "the first life");
  // The agent let the instance go without this client asking (its lease
  // ended, say): the set says so, the client stays connected.
  state.control!.apply({
    kind: "down",
    revision: 11,
    instance: inst("h:1", 10),
  });
  await until(() => calls.includes("register 11"), "a new life");
  assert.deepEqual(calls, ["register 10", "unregister", "register 11"]);
  await me.resign();
});

Deno.test("an unregister that cannot be sent is tried again until the agent confirms it", async () => {
  const { host, calls } = fakeHost();
  const me = await startCampaign(host);
  await me.elected;
  let refusals = 2;
  const unregister = host.unregister;
  host.unregister = () => {
    if (refusals-- > 0) {
      calls.push("unregister refused");
      return Promise.reject(
        new RpcError(
          ErrorCode.Timeout,
          "'discover.unregister' could not be sent within 1000 ms",
        ),
      );
    }
    return unregister();
  };
  // Resigned while the client reconnects: it returns after one attempt.
  await me.resign();
  assert.deepEqual(calls, ["register 10", "unregister refused"]);
  // The client is back: the instance goes, and only then is it the
  // client's again.
  await until(() => calls.includes("ended"), "the instance removed");
  assert.deepEqual(calls, [
    "register 10",
    "unregister refused",
    "unregister refused",
    "unregister",
    "ended",
  ]);
});

/** Lets every timer due now, and the microtasks they start, run. */
const nextTurn = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("the client's close ends the wait of an unregister retried after resigning at once: nothing is left to wait for", async () => {
  const { host, calls } = fakeHost();
  const me = await startCampaign(host);
  await me.elected;
  host.unregister = () => {
    calls.push("unregister refused");
    return Promise.reject(
      new RpcError(ErrorCode.Timeout, "'discover.unregister' timed out"),
    );
  };
  await me.resign();
  // The retries' waits grow to 400 ms, 800 ms, then 1.6 s at most (with
  // jitter): the close comes during one of them.
  await until(
    () => calls.filter((c) => c === "unregister refused").length >= 4,
    "four refusals",
  );
  await nextTurn();
  const refused = calls.length;
  me.end("closed");
  await nextTurn();
  // The close tells the host the campaign ended; the retries, stopped at
  // once, hand it back too (the host forgets it, as it did already).
  assert.deepEqual(calls.slice(refused), ["ended", "ended"], calls.join(", "));
});

Deno.test("resigning ends the wait of a new life that could not be registered at once", async () => {
  const { host, calls, state } = fakeHost();
  state.vouch = { ms: 400, lease: "L1" };
  const me = await startCampaign(host);
  assert.equal(await me.elected, 10);
  host.register = () => {
    calls.push("register refused");
    return Promise.reject(
      new RpcError(ErrorCode.Timeout, "'discover.register' timed out"),
    );
  };
  state.vouch = undefined; // the belief runs out: a new life starts
  await until(
    () => calls.filter((c) => c === "register refused").length >= 4,
    "four refusals",
  );
  await nextTurn();
  let resigned = false;
  void me.resign().then(() => resigned = true);
  await nextTurn();
  assert.ok(resigned, `resign() waited for the backoff: ${calls.join(", ")}`);
  assert.deepEqual(calls.slice(-2), ["unregister", "ended"], calls.join(", "));
});

/** A subscribe the agent refuses with `code`. */
function refusal(code: number): RpcError {
  return new RpcError(code, `refused with ${code}`);
}

for (
  const [name, code] of [
    ["InvalidParams", ErrorCode.InvalidParams],
    ["LimitExceeded", ErrorCode.LimitExceeded],
  ] as const
) {
  Deno.test(`a leader whose set ends is deposed at once; a set refused for good (${name}) ends the campaign, its instance unregistered`, async () => {
    const { host, calls, state } = fakeHost();
    const me = await startCampaign(host);
    const seen = deposals(me);
    assert.equal(await me.elected, 10);
    host.openSet = () => {
      calls.push("subscribe refused");
      return Promise.reject(refusal(code));
    };
    // The client gave the set up (its subscribe refused for good after a
    // reconnection): the set closes.
    state.control!.ended();
    assert.deepEqual(seen, ["10 set-closed"], "deposed at once");
    assert.equal(me.leading, false);
    await until(() => calls.includes("ended"), "the campaign ends");
    assert.equal(me.ended, true);
    assert.deepEqual(calls, [
      "register 10",
      "unregister",
      "subscribe refused",
      "unregister",
      "ended",
    ]);
    await assert.rejects(me.elected, (error: unknown) => {
      assert.ok(error instanceof CampaignEndedError);
      assert.equal(error.reason, "set-closed");
      assert.equal((error.cause as RpcError).code, code);
      assert.match(error.message, new RegExp(`refused with ${code}`));
      return true;
    });
    await me.resign(); // ended already: nothing more is sent
    assert.equal(calls.length, 5, calls.join(", "));
  });
}

Deno.test("a campaign that does not lead ends too when its set is refused for good: its instance may lead later", async () => {
  const { host, calls, state } = fakeHost([inst("h:0", 3)]);
  const me = await startCampaign(host);
  const seen = deposals(me);
  await until(() => me.instance?.created === 10, "the first life");
  host.openSet = () => Promise.reject(refusal(ErrorCode.InvalidParams));
  state.control!.ended();
  await until(() => calls.includes("ended"), "the campaign ends");
  assert.deepEqual(calls, ["register 10", "unregister", "unregister", "ended"]);
  assert.deepEqual(seen, [], "it never led");
  await assert.rejects(me.elected, { name: "CampaignEndedError" });
});

Deno.test("a set that ends is opened again while the failure can pass, and the campaign leads again in a new life", async () => {
  const { host, calls, state } = fakeHost();
  const me = await startCampaign(host);
  const seen = deposals(me);
  assert.equal(await me.elected, 10);
  const openSet = host.openSet;
  let refusals = 2;
  host.openSet = (signal) => {
    if (refusals-- > 0) {
      calls.push("subscribe timed out");
      return Promise.reject(refusal(ErrorCode.Timeout));
    }
    calls.push("subscribe");
    return openSet(signal);
  };
  state.control!.ended();
  assert.deepEqual(seen, ["10 set-closed"]);
  // Unregistered before the set is opened again, registered after.
  assert.equal(await me.elected, 11, "leads again with a greater token");
  assert.deepEqual(calls, [
    "register 10",
    "unregister",
    "subscribe timed out",
    "subscribe timed out",
    "subscribe",
    "register 11",
  ]);
  assert.equal(me.ended, false);
  // The reopened set is followed: it deposes as the first one did.
  state.control!.ended();
  assert.deepEqual(seen, ["10 set-closed", "11 set-closed"]);
  await me.resign();
});
