// Copyright the discover authors. BSD-3-Clause license.

/**
 * Leader election end to end (`client.campaign()`): the oldest campaigner
 * is elected, `resign()` hands leadership to the next, a lost connection
 * deposes at once and the campaign comes back in a new life with a greater
 * token; a campaign's instance is its own; an agent whose grace TTL is not
 * above the client's loss detection bound is refused; a campaign whose set
 * the agent refuses for good after a reconnection ends and leaves no
 * instance behind.
 *
 * On the memory backend with one agent, and on etcd with two agents
 * sharing a prefix (campaigners on both; the leader agreed at both agents
 * whenever a set is current). Waits are 15 s at most, generous for a busy
 * 2-core machine.
 */

import assert from "node:assert/strict";
import { startAgent } from "../agent/mod.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import {
  type Campaign,
  CampaignEndedError,
  type Client,
  connect,
  type DeposedEvent,
  type ElectedEvent,
  ErrorCode,
  type RestoreErrorEvent,
  RpcError,
} from "../mod.ts";
import { startEtcd } from "../tools/etcd.ts";
import { tcpProxy } from "./_proxy.ts";
import { until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const WAIT = 15_000;
/** Client timings well inside the agents' grace TTL of 3 s. */
const FAST = { pingInterval: 300, requestTimeout: 1000 };

/** What a campaign was told, in order: `elected T` and `deposed T reason`. */
function record(campaign: Campaign): string[] {
  const seen: string[] = [];
  campaign.addEventListener("elected", (e: ElectedEvent) => {
    seen.push(`elected ${e.token}`);
  });
  campaign.addEventListener("deposed", (e: DeposedEvent) => {
    seen.push(`deposed ${e.token} ${e.reason}`);
  });
  return seen;
}

/**
 * The story both backends run: campaigners `a`, `b`, `c` (in that order)
 * through `clients` (round robin), watched by `watchers`.
 */
async function story(clients: Client[], watchers: Client[]) {
  const sets = await Promise.all(
    watchers.map((w) => w.services("db", { filter: { shard: "3" } })),
  );
  const agreed = async (what: string) => {
    await until(
      () => {
        const leaders = sets.map((s) => s.leader()?.id ?? "none");
        return leaders.every((l) => l === leaders[0]) &&
          sets.every((s) => s.connected);
      },
      `every agent has the same leader: ${what}`,
      WAIT,
    );
    return sets[0].leader();
  };
  const campaign = (i: number) =>
    clients[i % clients.length].campaign("db", `10.0.0.${i + 1}:5432`, {
      attrs: { shard: "3" },
    });
  const a = await campaign(0);
  const seenA = record(a);
  const b = await campaign(1);
  const seenB = record(b);
  const c = await campaign(2);
  const tokenA = await a.elected;
  assert.equal(a.leading, true);
  assert.equal(a.token, tokenA);
  assert.equal(tokenA, a.instance!.created);
  assert.equal(b.leading, false);
  assert.equal(b.token, undefined);
  assert.equal((await agreed("a leads"))?.created, tokenA);
  // Resigning hands leadership to the next oldest, with a greater token.
  await a.resign();
  assert.equal(a.leading, false);
  assert.deepEqual(seenA, [`elected ${tokenA}`, `deposed ${tokenA} resigned`]);
  await assert.rejects(a.elected, { name: "CampaignEndedError" });
  const tokenB = await b.elected;
  assert.ok(tokenB > tokenA, "the next leader has a greater token");
  assert.equal((await agreed("b leads"))?.created, tokenB);
  assert.equal(c.leading, false);
  await b.resign();
  const tokenC = await c.elected;
  assert.ok(tokenC > tokenB);
  assert.equal((await agreed("c leads"))?.created, tokenC);
  assert.deepEqual(seenB, [`elected ${tokenB}`, `deposed ${tokenB} resigned`]);
  await c.resign();
  assert.equal(await agreed("nobody left"), undefined);
  await Promise.all(sets.map((s) => s.close()));
}

Deno.test("memory backend: the oldest campaigner leads, resign hands over", async () => {
  await using agent = await startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ttl: 3,
  });
  await using one = await connect(agent.url, FAST);
  await using two = await connect(agent.url, FAST);
  await using watcher = await connect(agent.url);
  await story([one, two], [watcher]);
});

Deno.test(
  "etcd, two agents: campaigners on both, the leader agreed at both agents",
  etcdTest,
  async () => {
    await using cluster = await startEtcd();
    const prefix = `/campaign-${crypto.randomUUID().slice(0, 8)}/`;
    const agentOn = () =>
      startAgent({
        port: 0,
        advertiseHost: "127.0.0.1",
        logLevel: "error",
        ttl: 3,
        backend: new EtcdBackend({
          endpoints: cluster.endpoints,
          prefix,
          leaseTtl: 3,
        }),
      });
    await using x = await agentOn();
    await using y = await agentOn();
    await using atX = await connect(x.url, FAST);
    await using atY = await connect(y.url, FAST);
    await using watchX = await connect(x.url);
    await using watchY = await connect(y.url);
    await story([atX, atY], [watchX, watchY]);
  },
);

/**
 * An agent on the memory backend (grace TTL 3 s), a client that reaches it
 * through a proxy (to cut or refuse its path), and one that reaches it
 * straight; all closed in turn when disposed.
 */
async function proxiedClients() {
  const agent = await startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ttl: 3,
  });
  const proxy = tcpProxy(Number(new URL(agent.url).port));
  const leaderClient = await connect(proxy.url, {
    ...FAST,
    reconnect: { initialDelay: 50, maxDelay: 200 },
  });
  const otherClient = await connect(agent.url, FAST);
  return {
    proxy,
    leaderClient,
    otherClient,
    async [Symbol.asyncDispose]() {
      await otherClient.close();
      await leaderClient.close();
      proxy.close();
      await agent[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a cut connection deposes at once; the campaign comes back in a new life with a greater token", async () => {
  await using clients = await proxiedClients();
  const { proxy, leaderClient, otherClient } = clients;
  const first = await leaderClient.campaign("lock", 7001);
  const seen = record(first);
  const second = await otherClient.campaign("lock", 7002);
  const token1 = await first.elected;
  proxy.cut();
  // Deposed before anything else can happen: the connection is gone.
  await until(() => !first.leading, "deposed after the cut", WAIT);
  assert.deepEqual(seen, [
    `elected ${token1}`,
    `deposed ${token1} disconnected`,
  ]);
  // The old life is given up: the second campaigner leads.
  const token2 = await second.elected;
  assert.ok(token2 > token1);
  // The first comes back last in line, in a new life.
  await until(
    () => (first.instance?.created ?? 0) > token2,
    "a new life, after the second's",
    WAIT,
  );
  await second.resign();
  const token3 = await first.elected;
  assert.ok(token3 > token2, "the token grew again");
  assert.deepEqual(seen, [
    `elected ${token1}`,
    `deposed ${token1} disconnected`,
    `elected ${token3}`,
  ]);
  await first.resign();
});

Deno.test("a leader that resigns while its client reconnects leaves no instance behind once the client is back", async () => {
  await using clients = await proxiedClients();
  const { proxy, leaderClient, otherClient } = clients;
  const first = await leaderClient.campaign("lock", 7101);
  const second = await otherClient.campaign("lock", 7102);
  const token1 = await first.elected;
  // The path to the agent is down: the unregister cannot be sent.
  proxy.refuse();
  await first.resign();
  // Back well within the grace TTL: the agent keeps the owner's
  // instances, and would keep this one as long as the client lives.
  proxy.admit();
  await until(() => second.leading, "the next campaigner leads", WAIT);
  const token2 = await second.elected;
  assert.ok(token2 > token1);
  assert.deepEqual(await leaderClient.owned(), [], "nothing left behind");
  await second.resign();
});

Deno.test("a campaign's instance is its own; campaign() checks its options and the agent's TTL", async () => {
  await using agent = await startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ttl: 3,
  });
  await using client = await connect(agent.url, FAST);
  const me = await client.campaign("job", 9000, { attrs: { zone: "b" } });
  await me.elected;
  await assert.rejects(
    client.setHealth("job", 9000, "critical"),
    /setHealth\(\): 'job\/:9000' is a campaign's instance/,
  );
  await assert.rejects(client.unregister("job", 9000), TypeError);
  await assert.rejects(client.register("job", 9000), TypeError);
  await assert.rejects(client.campaign("job", 9000), /already campaigning/);
  await assert.rejects(
    client.campaign("job", 9001, {
      attrs: { zone: "a" },
      filter: { zone: "b" },
    }),
    /'attrs' must match 'filter'/,
  );
  await assert.rejects(
    client.campaign("job", 9001, { bogus: 1 } as never),
    TypeError,
  );
  assert.equal(me.leading, true);
  await me.resign();
  // After resigning, the instance is the client's to register again.
  await client.register("job", 9000);
  await client.unregister("job", 9000);

  // Default timings (2 s + 5 s) against a grace TTL of 3 s: refused.
  await using slow = await connect(agent.url);
  await assert.rejects(
    slow.campaign("job", 9002),
    (error: unknown) => {
      assert.ok(error instanceof RangeError);
      assert.match(
        error.message,
        /grace TTL \(3 s.*pingInterval \+ requestTimeout \(2000 \+ 5000 = 7000 ms\)/,
      );
      return true;
    },
  );
  assert.deepEqual(await slow.owned(), [], "nothing was registered");
});

Deno.test("closing the client deposes its campaign first", async () => {
  await using agent = await startAgent({
    port: 0,
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ttl: 3,
  });
  await using other = await connect(agent.url, FAST);
  const client = await connect(agent.url, FAST);
  const me = await client.campaign("svc", 8000);
  const seen = record(me);
  const next = await other.campaign("svc", 8001);
  const token = await me.elected;
  await client.close();
  assert.equal(seen.at(-1), `deposed ${token} resigned`);
  assert.equal(me.ended, true);
  assert.ok((await next.elected) > token);
  await next.resign();
});

Deno.test("a campaign whose set the agent refuses for good after a reconnection ends, and leaves no instance behind", async () => {
  const options = {
    advertiseHost: "127.0.0.1",
    logLevel: "error",
    ttl: 3,
  } as const;
  const first = await startAgent({ ...options, port: 0 });
  const port = first.port;
  await using client = await connect(first.url, {
    ...FAST,
    reconnect: { initialDelay: 50, maxDelay: 200 },
  });
  const refusals: RestoreErrorEvent[] = [];
  client.addEventListener("error", (e) => {
    e.preventDefault();
    refusals.push(e);
  });
  // Two campaigns of one client, in two sets: one subscription each.
  const a = await client.campaign("lock-a", 7201);
  const b = await client.campaign("lock-b", 7202);
  await Promise.all([a.elected, b.elected]);
  await first.shutdown();
  // Back on the same port, allowing each session one subscription: one
  // set is resumed, the other refused with LimitExceeded (a permanent
  // error: the client gives that set up), and so is its campaign's reopen.
  await using _second = await startAgent({
    ...options,
    port,
    limits: { maxSubscriptions: 1 },
  });
  await until(() => a.ended || b.ended, "a campaign ends", WAIT);
  const [ended, kept] = a.ended ? [a, b] : [b, a];
  assert.equal(kept.ended, false, "the other campaign goes on");
  await assert.rejects(ended.elected, (error: unknown) => {
    assert.ok(error instanceof CampaignEndedError);
    assert.equal(error.reason, "set-closed");
    assert.ok(error.cause instanceof RpcError);
    assert.equal(error.cause.code, ErrorCode.LimitExceeded);
    return true;
  });
  assert.equal(ended.leading, false);
  assert.equal(refusals.length, 1);
  assert.equal(refusals[0].permanent, true);
  assert.equal(refusals[0].set?.service, ended.service);
  // The campaign that goes on leads again, in a new life; the ended one's
  // instance is gone (a set nobody campaigns in has no leader).
  await kept.elected;
  assert.deepEqual(
    (await client.owned()).map((i) => i.service),
    [kept.service],
  );
  assert.equal(await client.leader(ended.service), undefined);
  // The instance is the client's again (its removal was confirmed before
  // owned() answered): it may register it, or campaign anew.
  await client.register(ended.service, ended.instance!.addr);
  await client.unregister(ended.service, ended.instance!.addr);
  await kept.resign();
});
