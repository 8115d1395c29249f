// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// @ts-types="@types/node-zookeeper-client"
import zookeeper from "node-zookeeper-client";
import { startZooKeeper } from "../tools/zookeeper.ts";
import { openWatching, testBackend } from "./backend_suite.ts";
import { ZooKeeperBackend } from "./zookeeper.ts";
import { decodeCreation, encodeCreation } from "./_zk_mirror.ts";
import { ZkSession } from "./_zk_client.ts";
import type { BackendChange, BackendState } from "./backend.ts";
import { until } from "../tests/_wait.ts";
import { tcpProxy } from "../tests/_proxy.ts";

// One standalone server for this module; every test gets its own prefix.
const zk = await startZooKeeper();
const zkTest = { sanitizeOps: false, sanitizeResources: false };
const prefix = () => `/test-${crypto.randomUUID().slice(0, 8)}`;
const servers = zk.connect.split(",");

testBackend(
  "zookeeper",
  () => new ZooKeeperBackend({ servers, prefix: prefix(), sessionTimeout: 4 }),
  zkTest,
);

function recorder() {
  const changes: BackendChange[] = [];
  const calls: BackendChange[][] = [];
  const resets: BackendState[] = [];
  const statuses: boolean[] = [];
  return {
    changes,
    calls,
    resets,
    statuses,
    watcher: {
      changes: (c: BackendChange[]) => {
        calls.push([...c]);
        changes.push(...c);
      },
      reset: (state: BackendState) => resets.push(state),
      status: (connected: boolean) => statuses.push(connected),
    },
  };
}

/**
 * Two agents on prefix `p` (session timeouts `ttls`), watching with a
 * recorder each; the second watches only `only` when given.
 */
async function watchingPair(
  p: string,
  options: { ttls?: [number, number]; only?: string } = {},
) {
  const [ttlA, ttlB] = options.ttls ?? [4, 4];
  const a = new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: ttlA });
  const b = new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: ttlB });
  const ra = recorder(), rb = recorder();
  await openWatching(a, ra.watcher);
  if (options.only === undefined) await openWatching(b, rb.watcher);
  else await openWatching(b, rb.watcher, options.only);
  return { a, b, ra, rb };
}

const record = (service: string, addr: string, owner = "o1", v = "1") => ({
  service,
  addr,
  attrs: { v },
  owner,
  registeredAt: 1,
});

/** The state a watcher holds: its last reset, then its changes. */
function held(r: ReturnType<typeof recorder>): Map<string, string> {
  const state = new Map<string, string>();
  for (const x of r.resets.at(-1)?.records ?? []) {
    state.set(`${x.service}/${x.addr}`, `${x.owner}:${x.attrs.v}`);
  }
  const from = r.resets.at(-1)?.revision ?? 0;
  for (const c of r.changes) {
    if (c.revision <= from) continue;
    if (c.type === "put") {
      state.set(
        `${c.record.service}/${c.record.addr}`,
        `${c.record.owner}:${c.record.attrs.v}`,
      );
    } else state.delete(`${c.service}/${c.addr}`);
  }
  return state;
}

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: records are ephemeral znodes of the agent's session, and agents share revisions and epoch",
  async fn() {
    const p = prefix();
    const { a, b, ra, rb } = await watchingPair(p);
    try {
      const r1 = await a.put(record("svc", "10.0.0.1:80"));
      const r2 = await b.put(record("svc", "10.0.0.2:80", "o2"));
      await until(
        () => ra.changes.length === 2 && rb.changes.length === 2,
        "both see both",
      );
      assert.deepEqual(ra.changes.map((c) => c.revision), [r1, r2]);
      assert.deepEqual(rb.changes.map((c) => c.revision), [r1, r2]);
      assert.match(ra.resets[0].epoch, /^zk-[0-9a-f]+-[0-9]+$/);
      assert.equal(ra.resets[0].epoch, rb.resets[0].epoch);
      assert.ok(a.keeps("svc", "10.0.0.1:80"));
      assert.equal(b.keeps("svc", "10.0.0.1:80"), false);
      // A conditional write sees the other agent's record.
      await assert.rejects(
        b.put(record("svc", "10.0.0.1:80", "o2"), { ifOwner: null }),
      );
      // The same owner moves to b: b makes the znode again under its own
      // session; a no longer keeps it, the record keeps its life.
      const r3 = await b.put(record("svc", "10.0.0.1:80"), { ifOwner: "o1" });
      await until(() => ra.changes.some((c) => c.revision === r3), "a sees b");
      assert.equal(a.keeps("svc", "10.0.0.1:80"), false);
      const moved = ra.changes.at(-1)!;
      assert.equal(moved.type, "put");
      if (moved.type === "put") assert.equal(moved.record.created, r1);
      // ifKept spares what a does not keep; ifVersion spares a newer version.
      await assert.rejects(
        a.delete("svc", "10.0.0.1:80", { ifOwner: "o1", ifKept: true }),
      );
      const before = b.version("svc", "10.0.0.2:80")!;
      const r4 = await b.put(record("svc", "10.0.0.2:80", "o2", "2"));
      await until(() => rb.changes.some((c) => c.revision === r4), "b sees it");
      await assert.rejects(
        b.delete("svc", "10.0.0.2:80", { ifVersion: before }),
      );
      assert.ok(await b.delete("svc", "10.0.0.2:80", { ifKept: true }));
    } finally {
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: a removal is delivered at the zxid its delete returned, at every agent; a dead agent's records go in one transaction",
  async fn() {
    const p = prefix();
    const { a, b, ra, rb } = await watchingPair(p, {
      ttls: [2, 4],
      only: "svc",
    });
    try {
      // Each write once both have seen the one before (changes of one
      // znode between two reads of a watcher arrive as one, the last).
      const seen = async <T extends number | undefined>(write: Promise<T>) => {
        const r = (await write)!;
        await until(
          () =>
            ra.changes.some((c) => c.revision >= r) &&
            rb.changes.some((c) => c.revision >= r),
          `revision ${r} at both`,
        );
        return r;
      };
      const puts = [];
      for (let i = 1; i <= 5; i++) {
        puts.push(await seen(a.put(record("svc", `h:${i}`))));
      }
      const removed = await seen(a.delete("svc", "h:1"));
      const putAgain = await seen(a.put(record("svc", "h:1")));
      const removedAgain = await seen(b.delete("svc", "h:1"));
      assert.ok(removed! > puts[4] && putAgain > removed!);
      assert.ok(removedAgain! > putAgain);
      await until(() => rb.changes.length === 8, "every change at b", 5000);
      await until(() => ra.changes.length === 8, "every change at a", 5000);
      for (const r of [ra, rb]) {
        assert.deepEqual(
          r.changes.map((c) => [c.type, c.revision]),
          [
            ...puts.map((rev) => ["put", rev]),
            ["delete", removed],
            ["put", putAgain],
            ["delete", removedAgain],
          ],
        );
      }
      // a dies (its session is left to expire): its four records go at
      // once, one zxid for all.
      await a.close();
      await until(() => rb.changes.length === 12, "the expiry", 15_000);
      const gone = rb.changes.slice(8);
      assert.ok(gone.every((c) => c.type === "delete"));
      assert.equal(new Set(gone.map((c) => c.revision)).size, 1);
      assert.ok(gone[0].revision > removedAgain!);
    } finally {
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: a burst of writes from three agents, watched across one-shot watches: nothing lost, in zxid order",
  async fn() {
    const p = prefix();
    const writers = [0, 1, 2].map(() =>
      new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: 4 })
    );
    const watcher = new ZooKeeperBackend({
      servers,
      prefix: p,
      sessionTimeout: 4,
    });
    const all = recorder(), one = recorder();
    for (const w of writers) await openWatching(w, recorder().watcher);
    await openWatching(watcher, all.watcher);
    const oneWatch = watcher.watch("s1", one.watcher);
    try {
      // 600 writes: puts, updates and removals of 40 addresses in 4
      // services, from three sessions at once, not awaited one by one.
      let seed = 7;
      const random = (n: number) =>
        (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
      const revisions: number[] = [];
      await Promise.all(writers.map(async (w, k) => {
        for (let i = 0; i < 200; i++) {
          const service = `s${random(4)}`;
          const addr = `h:${random(10) + 1}`;
          const op = random(3);
          const write = op === 2
            ? w.delete(service, addr)
            : w.put(record(service, addr, `w${k}`, String(i)));
          if (i % 4 === 3) {
            const r = await write.catch(() => undefined);
            if (r) revisions.push(r);
          } else {
            void write.then((r) => r && revisions.push(r), () => {});
          }
        }
      }));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const last = Math.max(...revisions);
      await until(
        () => all.changes.some((c) => c.revision >= last),
        "the last write",
      );
      // Order: never below a revision already delivered; one revision in
      // one call only.
      for (const r of [all, one]) {
        let previous = r.resets[0].revision;
        for (const call of r.calls) {
          for (const c of call) {
            assert.ok(
              c.revision >= previous,
              `${c.revision} after ${previous}`,
            );
            previous = c.revision;
          }
        }
      }
      // Nothing lost: what the watches hold is what a fresh read says.
      const fresh = recorder();
      const check = new ZooKeeperBackend({ servers, prefix: p });
      await openWatching(check, fresh.watcher);
      assert.deepEqual(held(all), held(fresh));
      await until(
        () =>
          one.changes.at(-1)?.revision ===
            all.changes.filter((c) =>
              (c.type === "put" ? c.record.service : c.service) === "s1"
            ).at(-1)?.revision,
        "s1's watch caught up",
      );
      assert.deepEqual(
        held(one),
        new Map([...held(fresh)].filter(([k]) => k.startsWith("s1/"))),
      );
      assert.ok(held(fresh).size > 0);
      await check.close();
    } finally {
      await oneWatch.close();
      for (const w of [...writers, watcher]) await w.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: a live agent whose session expires writes its records back; its own watcher sees no change, another agent sees them return with their life; its lease (the session) runs out before the expiry can be seen, and is a new one after",
  async fn() {
    const p = prefix();
    const port = Number(servers[0].split(":")[1]);
    const proxy = tcpProxy(port);
    const warnings: string[] = [];
    const a = new ZooKeeperBackend({
      servers: [`127.0.0.1:${proxy.port}`],
      prefix: p,
      sessionTimeout: 2,
      log: { info() {}, warn: (m) => void warnings.push(m) },
    });
    const b = new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: 4 });
    const ra = recorder(), rb = recorder();
    await openWatching(a, ra.watcher);
    await openWatching(b, rb.watcher);
    try {
      const seen = async (r: number | undefined) => {
        await until(
          () =>
            ra.changes.some((c) => c.revision >= r!) &&
            rb.changes.some((c) => c.revision >= r!),
          `revision ${r} at both`,
        );
        return r!;
      };
      const first = await seen(await a.put(record("svc", "h:1")));
      await seen(await a.put(record("svc", "h:2", "o2")));
      // Not kept: never written back.
      await seen(await a.delete("svc", "h:2"));
      const before = held(ra);
      // The lease is the session; idle longer than the timeout (2 s), it
      // stays vouched for (a read goes out every third of it).
      const lease = a.lease();
      assert.match(lease.id, /^[0-9a-f]{16}$/);
      const idleUntil = performance.now() + 3000;
      while (performance.now() < idleUntil) {
        const { id, left } = a.lease();
        assert.equal(id, lease.id);
        assert.ok(left > 0 && left <= 2000, `${left} ms left while idle`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // a is cut off longer than its session timeout: the server expires
      // the session and removes its znode.
      const cut = performance.now();
      proxy.freeze();
      // Never more than what is left of the timeout since the cut, and
      // nothing by the time another agent sees the expiry.
      while (rb.changes.length < 4) {
        const left = a.lease().left;
        assert.ok(
          left <= Math.max(0, cut + 2000 - performance.now()) + 1,
          `${left} ms left ${performance.now() - cut} ms after the cut`,
        );
        assert.ok(performance.now() - cut < 15_000, "the expiry at b");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(a.lease().left, 0);
      assert.equal(rb.changes[3].type, "delete");
      proxy.thaw("reset");
      // a learns it on reconnecting, opens a new session and writes back.
      await until(() => rb.changes.length === 5, "the write-back", 15_000);
      const back = rb.changes[4];
      assert.equal(back.type, "put");
      if (back.type === "put") {
        assert.equal(back.record.addr, "h:1");
        assert.equal(back.record.created, first, "the record keeps its life");
      }
      await until(() => ra.statuses.at(-1) === true, "a connected again");
      const renewed = a.lease();
      assert.match(renewed.id, /^[0-9a-f]{16}$/);
      assert.notEqual(renewed.id, lease.id, "a new session is a new lease");
      assert.ok(renewed.left > 0);
      // a's own watcher: a fresh state, the same records, no change.
      assert.ok(ra.resets.length >= 2);
      assert.deepEqual(held(ra), before);
      assert.ok(
        ra.changes.every((c) => c.revision <= ra.resets[1].revision),
        "no change delivered after the expiry",
      );
      assert.ok(a.keeps("svc", "h:1"));
      assert.ok(
        warnings.some((w) => /session expired/.test(w)),
        warnings.join("\n"),
      );
    } finally {
      await a.close();
      await b.close();
      proxy.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: resume with since: the current state (no history), and stateAt answers only back to the scope's last change",
  async fn() {
    const p = prefix();
    const a = new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: 4 });
    const ra = recorder();
    await openWatching(a, ra.watcher);
    try {
      const r1 = await a.put(record("web", "h:1"));
      const r2 = await a.put(record("web", "h:1", "o1", "2"));
      const r3 = await a.put(record("db", "h:1"));
      await until(() => ra.changes.length === 3, "every change");
      const epoch = ra.resets[0].epoch;
      // web has not changed since r2: its state at r2 and r3 is the current one.
      const at = await a.stateAt("web", r3);
      assert.equal(at?.revision, r3);
      assert.deepEqual(at?.records.map((x) => x.attrs.v), ["2"]);
      assert.equal((await a.stateAt("web", r2))?.epoch, epoch);
      // Before its last change: ZooKeeper keeps no history.
      assert.equal(await a.stateAt("web", r1), undefined);
      assert.equal(await a.stateAt("*", r2), undefined);
      assert.ok(await a.stateAt("*", r3));
      // A watch from r1 starts from the current state.
      const past = recorder();
      const w = a.watch("web", past.watcher, { since: r1, epoch });
      await until(() => past.resets.length === 1, "the state");
      assert.ok(past.resets[0].revision >= r3);
      assert.deepEqual(past.resets[0].records.map((x) => x.attrs.v), ["2"]);
      await w.close();
    } finally {
      await a.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: a connection lost during the first read of a watched service is read again on reconnecting: the watch becomes live and delivers later writes",
  async fn() {
    const p = prefix();
    const proxy = tcpProxy(Number(servers[0].split(":")[1]));
    const b = new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: 4 });
    const a = new ZooKeeperBackend({
      servers: [`127.0.0.1:${proxy.port}`],
      prefix: p,
      sessionTimeout: 4,
    });
    const ra = recorder();
    // The connection is cut right after a's first listing of "web" is
    // sent: the listing, and what was sent with it, fail; the session
    // lives on and the client connects again at once.
    const getChildren = ZkSession.prototype.getChildren;
    let cuts = 0;
    ZkSession.prototype.getChildren = function (path, watcher) {
      const sent = getChildren.call(this, path, watcher);
      if (cuts === 0 && watcher && path === `${p}/services/web`) {
        cuts = proxy.cut();
      }
      return sent;
    };
    try {
      await b.open(recorder().watcher);
      await b.put(record("web", "h:1"));
      const watch = a.watch("web", ra.watcher);
      await a.open(ra.watcher);
      assert.ok(cuts > 0, "the connection was cut during the first read");
      // The reconnection takes a few tens of ms and the reads after it a
      // few more: 10 s (over twice the session timeout) is generous, and
      // well under never.
      await until(
        () => ra.resets.length === 1 && ra.statuses.at(-1) === true,
        "the first state, and connected",
        10_000,
      );
      assert.deepEqual([...held(ra).keys()], ["web/h:1"]);
      const r2 = await b.put(record("web", "h:2"));
      await until(
        () => ra.changes.some((c) => c.revision === r2),
        "a later write delivered",
        10_000,
      );
      assert.deepEqual([...held(ra).keys()].sort(), ["web/h:1", "web/h:2"]);
      await watch.close();
    } finally {
      ZkSession.prototype.getChildren = getChildren;
      await a.close();
      await b.close();
      proxy.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: open with ZooKeeper unreachable resolves, says not connected, and connects once it is up",
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const proxy = tcpProxy(port); // refuses: nothing listens there
    const backend = new ZooKeeperBackend({
      servers: [`127.0.0.1:${proxy.port}`],
      prefix: prefix(),
      sessionTimeout: 1,
    });
    const r = recorder();
    try {
      await backend.open(r.watcher);
      assert.deepEqual(r.statuses, [false]);
      await assert.rejects(backend.put(record("svc", "h:1")), /unavailable/);
      proxy.target = Number(servers[0].split(":")[1]);
      await until(() => r.statuses.at(-1) === true, "connected", 15_000);
      assert.ok(await backend.put(record("svc", "h:1")));
    } finally {
      await backend.close();
      proxy.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: a creation tells its service node what it made; watchers read it with the list, and znodes made otherwise are read themselves",
  async fn() {
    const p = prefix();
    const { a, b, ra, rb } = await watchingPair(p, { only: "svc" });
    const raw = zookeeper.createClient(servers.join(","));
    const call = <T>(run: (done: (e: unknown, v?: T) => void) => void) =>
      new Promise<T>((resolve, reject) =>
        run((e, v) => e ? reject(e) : resolve(v as T))
      );
    const connected = new Promise<void>((r) =>
      raw.once("connected", () => r())
    );
    raw.connect();
    await connected;
    try {
      const r1 = await a.put(record("svc", "10.0.0.1:80", "o1", "a"));
      // The service node's data names the znode, its session and its
      // data, at the creation's zxid.
      const [data, stat] = await call<[Buffer, zookeeper.Stat]>((done) =>
        raw.getData(
          `${p}/services/svc`,
          (e: unknown, d: Buffer, s: zookeeper.Stat) => done(e, [d, s]),
        )
      );
      assert.equal(Number(stat.mzxid.readBigUInt64BE(0)), r1);
      const told = decodeCreation(data)!;
      assert.equal(told.addr, "10.0.0.1:80");
      assert.match(told.session, /^[0-9a-f]{16}$/);
      assert.equal(
        JSON.parse(new TextDecoder().decode(told.data)).attrs.v,
        "a",
      );
      await until(
        () => ra.changes.length === 1 && rb.changes.length === 1,
        "both see the creation",
      );
      for (const r of [ra, rb]) {
        const [c] = r.changes;
        assert.equal(c.type, "put");
        assert.equal(c.revision, r1);
        if (c.type === "put") {
          assert.equal(c.record.attrs.v, "a");
          assert.equal(c.record.created, r1);
        }
      }
      // A znode made by hand, after: the service node still tells of the
      // one before, so the watchers read the new znode itself.
      const value = (v: string) =>
        Buffer.from(JSON.stringify({
          attrs: { v },
          owner: "o3",
          registeredAt: 1,
        }));
      await call((done) =>
        raw.create(
          `${p}/services/svc/10.0.0.3:80`,
          value("hand"),
          zookeeper.CreateMode.EPHEMERAL,
          done,
        )
      );
      // And a service node whose data is not a creation's, by hand.
      await call((done) =>
        raw.setData(`${p}/services/svc`, Buffer.from("not json"), -1, done)
      );
      await call((done) =>
        raw.create(
          `${p}/services/svc/10.0.0.4:80`,
          value("hand too"),
          zookeeper.CreateMode.EPHEMERAL,
          done,
        )
      );
      const r2 = await b.put(record("svc", "10.0.0.2:80", "o2", "b"));
      await until(
        () => ra.changes.length === 4 && rb.changes.length === 4,
        "every creation at both",
      );
      for (const r of [ra, rb]) {
        const got = r.changes.map((c) =>
          c.type === "put" ? [c.record.addr, c.record.attrs.v] : c.addr
        );
        assert.deepEqual(got, [
          ["10.0.0.1:80", "a"],
          ["10.0.0.3:80", "hand"],
          ["10.0.0.4:80", "hand too"],
          ["10.0.0.2:80", "b"],
        ]);
        assert.equal(r.changes.at(-1)!.revision, r2);
      }
      // Each agent knows who holds what: b's record is not a's to keep.
      assert.equal(a.keeps("svc", "10.0.0.2:80"), false);
      assert.ok(b.keeps("svc", "10.0.0.2:80"));
      // What the watches hold is what a fresh read says.
      const fresh = recorder();
      const check = new ZooKeeperBackend({ servers, prefix: p });
      await openWatching(check, fresh.watcher);
      assert.deepEqual(held(ra), held(fresh));
      assert.equal(held(fresh).size, 4);
      await check.close();
    } finally {
      raw.close();
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name: "zookeeper backend: what a creation tells its service node decodes",
  fn() {
    const data = new TextEncoder().encode('{"attrs":{}}');
    const told = decodeCreation(
      encodeCreation({ addr: "h:1", session: "0123456789abcdef", data }),
    );
    assert.deepEqual(told, { addr: "h:1", session: "0123456789abcdef", data });
    // A removal's (empty), or anything else: not a creation.
    for (const bytes of ["", "not json", "{}", '{"addr":1}', "null"]) {
      assert.equal(
        decodeCreation(new TextEncoder().encode(bytes)),
        undefined,
        bytes,
      );
    }
  },
});

/**
 * The connect requests a proxy passed on: one starts with its length (4
 * bytes), the protocol version (4), `lastZxidSeen` (8) and the timeout
 * (4), then the session id (8; 0 asks for a new session).
 */
function connectRequests() {
  const heads = new Map<number, Uint8Array>();
  const seen: { lastZxidSeen: bigint; sessionId: bigint }[] = [];
  const observe = (bytes: Uint8Array, connection: number) => {
    const before = heads.get(connection) ?? new Uint8Array();
    if (before.length >= 28) return;
    const head = new Uint8Array(before.length + bytes.length);
    head.set(before);
    head.set(bytes, before.length);
    heads.set(connection, head);
    if (head.length < 28) return;
    const view = new DataView(head.buffer);
    seen.push({
      lastZxidSeen: view.getBigUint64(8),
      sessionId: view.getBigUint64(20),
    });
  };
  return { seen, observe };
}

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: the session that follows an expired one asks for a server that has applied the last zxid the agent saw",
  async fn() {
    const p = prefix();
    const port = Number(servers[0].split(":")[1]);
    const requests = connectRequests();
    const proxy = tcpProxy(port, { observe: requests.observe });
    const a = new ZooKeeperBackend({
      servers: [`127.0.0.1:${proxy.port}`],
      prefix: p,
      sessionTimeout: 2,
      log: { info() {}, warn() {} },
    });
    const b = new ZooKeeperBackend({ servers, prefix: p, sessionTimeout: 4 });
    const ra = recorder(), rb = recorder();
    await openWatching(a, ra.watcher);
    await openWatching(b, rb.watcher);
    try {
      const r = await a.put(record("svc", "h:1"));
      await until(
        () =>
          ra.changes.some((c) => c.revision >= r) &&
          rb.changes.some((c) => c.revision >= r),
        "the put at both",
      );
      // a is cut off longer than its session timeout (2 s): the server
      // expires the session, and b sees the record go.
      proxy.refuse();
      await until(
        () => rb.changes.some((c) => c.type === "delete"),
        "the expiry at b",
        15_000,
      );
      proxy.admit();
      // a learns of the expiry on reconnecting and opens a new session,
      // which writes the record back.
      await until(
        () => rb.changes.at(-1)?.type === "put",
        "the write-back",
        15_000,
      );
      const fresh = requests.seen.filter((x) => x.sessionId === 0n);
      assert.equal(fresh.length, 2, "the first session and the one after");
      assert.equal(fresh[0].lastZxidSeen, 0n);
      // A follower that has not applied r yet would refuse it.
      assert.ok(
        fresh[1].lastZxidSeen >= BigInt(r),
        `lastZxidSeen 0x${fresh[1].lastZxidSeen.toString(16)} is below 0x${
          r.toString(16)
        }, the last write a saw`,
      );
    } finally {
      await a.close();
      await b.close();
      proxy.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name:
    "zookeeper backend: when no server has applied the last zxid an expired session saw (data restored from an older copy), a session without that guard takes over after twice the session timeout",
  async fn() {
    const p = prefix();
    const port = Number(servers[0].split(":")[1]);
    await using older = await startZooKeeper();
    const olderPort = Number(older.connect.split(",")[0].split(":")[1]);
    const requests = connectRequests();
    let admitted = false;
    const proxy = tcpProxy(port, {
      observe(bytes, connection) {
        const before = requests.seen.length;
        requests.observe(bytes, connection);
        const request = requests.seen[before];
        // The old session asks the server that expired it; every later
        // connection goes to a server whose data is older.
        if (admitted && request && request.sessionId !== 0n) {
          proxy.target = olderPort;
        }
      },
    });
    const warnings: string[] = [];
    const a = new ZooKeeperBackend({
      servers: [`127.0.0.1:${proxy.port}`],
      prefix: p,
      sessionTimeout: 2,
      log: { info() {}, warn: (m) => void warnings.push(m) },
    });
    const ra = recorder();
    await openWatching(a, ra.watcher);
    try {
      const r = await a.put(record("svc", "h:1"));
      await until(() => ra.changes.some((c) => c.revision >= r), "the put");
      proxy.refuse();
      // Past the session timeout (2 s) with a margin: the server expires it.
      await new Promise((resolve) => setTimeout(resolve, 4000));
      admitted = true;
      proxy.admit();
      const back = performance.now();
      await until(
        () => warnings.some((w) => /no server has applied zxid/.test(w)),
        "the warning",
        20_000,
      );
      await until(() => ra.statuses.at(-1) === true, "connected", 20_000);
      const guarded = requests.seen.findIndex((x) =>
        x.sessionId === 0n && x.lastZxidSeen >= BigInt(r)
      );
      const unguarded = requests.seen.findLastIndex((x) =>
        x.sessionId === 0n && x.lastZxidSeen === 0n
      );
      assert.ok(guarded > 0, "the guarded session asked");
      assert.ok(unguarded > guarded, "then one without the guard");
      // The guard held for twice the session timeout (less a margin for
      // the timers of a busy machine).
      assert.ok(performance.now() - back >= 3000);
      // What the older server holds: the prefix made anew, a new epoch.
      assert.notEqual(ra.resets.at(-1)?.epoch, ra.resets[0].epoch);
    } finally {
      await a.close();
      proxy.close();
    }
  },
});

Deno.test({
  ...zkTest,
  name: "zookeeper backend: options are checked",
  fn() {
    assert.throws(() => new ZooKeeperBackend({ servers: [] }), /servers/);
    assert.throws(
      () => new ZooKeeperBackend({ servers: ["h"] }),
      /HOST:PORT each: current value has 'h'/,
    );
    assert.throws(
      () => new ZooKeeperBackend({ servers: ["h:1"], prefix: "/a/" }),
      /prefix/,
    );
    assert.throws(
      () => new ZooKeeperBackend({ servers: ["h:1"], sessionTimeout: 0.5 }),
      /sessionTimeout/,
    );
  },
});

Deno.test({
  ...zkTest,
  name: "zookeeper backend: stop the module's server",
  async fn() {
    await zk.stop();
  },
});
