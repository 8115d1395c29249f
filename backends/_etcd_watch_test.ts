// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Etcd3, IWatchResponse } from "etcd3";
import { StateWatch, type StateWatchHooks } from "./_etcd_watch.ts";

class FakeWatcher extends EventEmitter {
  cancelled = false;
  cancel() {
    this.cancelled = true;
    return Promise.resolve();
  }
}

/** A client whose watches are fake watchers, recorded with their start revision. */
function fakeClient() {
  const watches: { prefix: string; from: string; watcher: FakeWatcher }[] = [];
  const client = {
    watch() {
      let prefix = "", from = "";
      const builder = {
        prefix(p: string) {
          prefix = p;
          return builder;
        },
        startRevision(r: string) {
          from = r;
          return builder;
        },
        create() {
          const watcher = new FakeWatcher();
          watches.push({ prefix, from, watcher });
          return Promise.resolve(watcher);
        },
      };
      return builder;
    },
  } as unknown as Etcd3;
  return { client, watches };
}

const response = (n: number) => ({ events: [n] }) as unknown as IWatchResponse;

function hooks(read: () => Promise<number | undefined>) {
  const log: string[] = [];
  const warnings: string[] = [];
  const h: StateWatchHooks = {
    log: {
      info: () => {},
      warn: (message, fields) =>
        void warnings.push(`${message} ${JSON.stringify(fields)}`),
    },
    readState: async (delivered) => {
      log.push("read");
      const revision = await read();
      if (revision !== undefined) delivered?.();
      return revision;
    },
    apply: (r) => void log.push(`apply ${(r.events as unknown[])[0]}`),
    status: (up) => void log.push(up ? "up" : "down"),
    retrying: async (_what, attempt) => {
      while (!(await attempt().catch(() => false))) { /* again */ }
    },
  };
  return { log, warnings, hooks: h };
}

Deno.test("StateWatch.start: reads, says up, and watches from the revision after the read", async () => {
  const { client, watches } = fakeClient();
  const { log, hooks: h } = hooks(() => Promise.resolve(41));
  const watch = new StateWatch(client, "/p/instances/", h);
  await watch.start();
  assert.ok(watch.active);
  assert.deepEqual(watches.map((w) => [w.prefix, w.from]), [[
    "/p/instances/",
    "42",
  ]]);
  watches[0].watcher.emit("data", response(1));
  assert.deepEqual(log, ["read", "up", "apply 1"]);
  await watch.close();
  assert.ok(watches[0].watcher.cancelled);
  assert.ok(!watch.active);
});

Deno.test("StateWatch.catchUp: says down, holds events during the read, applies them after it, then says up", async () => {
  const { client, watches } = fakeClient();
  let release: (() => void) | undefined;
  let reads = 0;
  const { log, hooks: h } = hooks(() => {
    if (++reads === 1) return Promise.resolve(10);
    return new Promise((resolve) => release = () => resolve(20));
  });
  const watch = new StateWatch(client, "/p/", h);
  await watch.start();
  const catchingUp = watch.catchUp();
  await new Promise((resolve) => setTimeout(resolve, 0));
  watches[0].watcher.emit("data", response(7)); // during the read: held
  release!();
  await catchingUp;
  assert.deepEqual(log, ["read", "up", "down", "read", "apply 7", "up"]);
  await watch.close();
});

Deno.test("StateWatch.catchUp begun as another lets its held events through: each holds its own events, and the second ends live", async () => {
  const { client, watches } = fakeClient();
  const reads: ((revision: number) => void)[] = [];
  let reading = 0;
  const { log, hooks: h } = hooks(() => {
    reading++;
    if (reading === 1 || reading > 3) return Promise.resolve(10 * reading);
    return new Promise((resolve) => reads.push(resolve));
  });
  const errors: string[] = [];
  let second: Promise<void> | undefined;
  const status = h.status;
  h.status = (up) => {
    status(up);
    // The first catch-up says live: another begins at once (the lease
    // came back while the stream did, say).
    if (up && log.filter((l) => l === "up").length === 2) {
      second = watch.catchUp();
    }
  };
  h.retrying = async (_what, attempt) => {
    for (let i = 0; i < 3; i++) {
      try {
        if (await attempt()) return;
      } catch (error) {
        errors.push(String(error));
      }
    }
  };
  const watch = new StateWatch(client, "/p/", h);
  await watch.start();
  const first = watch.catchUp();
  await new Promise((resolve) => setTimeout(resolve, 0));
  reads[0](20);
  await first;
  await new Promise((resolve) => setTimeout(resolve, 0));
  watches[0].watcher.emit("data", response(8)); // during the second read: held
  reads[1](30);
  await second;
  assert.deepEqual(errors, []);
  assert.deepEqual(log, [
    ...["read", "up"], // start
    ...["down", "read", "up"], // the first catch-up
    ...["down", "read", "apply 8", "up"], // the second
  ]);
  await watch.close();
});

Deno.test("StateWatch: a lost stream says down, and catches up when it is back", async () => {
  const { client, watches } = fakeClient();
  const { log, warnings, hooks: h } = hooks(() => Promise.resolve(5));
  const watch = new StateWatch(client, "/p/", h);
  await watch.start();
  const { watcher } = watches[0];
  watcher.emit("disconnected", new Error("14 UNAVAILABLE: Connection dropped"));
  watcher.emit("connected");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(log, ["read", "up", "down", "down", "read", "up"]);
  // Why it was lost is said once, with the cause.
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0],
    /^etcd watch stream lost \(unavailable\); .*"error":"14 UNAVAILABLE: Connection dropped"/,
  );
  await watch.close();
});

Deno.test("StateWatch: a catch-up while the stream is lost says down, and waits for the stream to read again", async () => {
  const { client, watches } = fakeClient();
  const { log, hooks: h } = hooks(() => Promise.resolve(5));
  const watch = new StateWatch(client, "/p/", h);
  await watch.start();
  const { watcher } = watches[0];
  watcher.emit("disconnected", new Error("14 UNAVAILABLE: Connection dropped"));
  // The lease comes back before the stream: a read now would say live
  // while no change reaches the watch.
  await watch.catchUp();
  assert.deepEqual(log, ["read", "up", "down", "down"]);
  watcher.emit("connected");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(log, ["read", "up", "down", "down", "down", "read", "up"]);
  await watch.close();
});

Deno.test("StateWatch: a stream lost during a catch-up read is not said live when the read ends", async () => {
  const { client, watches } = fakeClient();
  let release: (() => void) | undefined;
  let reads = 0;
  const { log, hooks: h } = hooks(() => {
    if (++reads !== 2) return Promise.resolve(10);
    return new Promise((resolve) => release = () => resolve(20));
  });
  const watch = new StateWatch(client, "/p/", h);
  await watch.start();
  const catchingUp = watch.catchUp();
  await new Promise((resolve) => setTimeout(resolve, 0));
  const { watcher } = watches[0];
  watcher.emit("disconnected", new Error("14 UNAVAILABLE: Connection dropped"));
  release!();
  await catchingUp;
  assert.deepEqual(log, ["read", "up", "down", "read", "down", "down"]);
  watcher.emit("connected");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(log.at(-1), "up");
  await watch.close();
});

Deno.test("StateWatch: a failed watch says down and resyncs with a new watch; nothing after close", async () => {
  const { client, watches } = fakeClient();
  let revision = 5;
  const { log, hooks: h } = hooks(() => Promise.resolve(revision++));
  const watch = new StateWatch(client, "/p/", h);
  await watch.start();
  watches[0].watcher.emit(
    "error",
    new Error("etcdserver: mvcc: required revision has been compacted"),
  );
  assert.deepEqual(log, ["read", "up", "down"]);
  const deadline = Date.now() + 5000; // the resync waits 500 ms
  while (watches.length < 2) {
    assert.ok(Date.now() < deadline, "no resync");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // The client library dropped the failed watch: cancelling it would send
  // a watch id etcd no longer knows, whose answer the library throws on.
  assert.equal(watches[0].watcher.cancelled, false);
  assert.equal(watches[1].from, "7");
  await watch.close();
  watches[1].watcher.emit("error", new Error("late"));
  await watch.resync();
  assert.equal(watches.length, 2);
});

Deno.test("StateWatch.catchUp while a start creates its watch: down at once, then a fresh read once the watch exists, and only then up", async () => {
  const { client, watches } = fakeClient();
  // Watch creation waits until released (the stream is slow to open).
  const gate = Promise.withResolvers<void>();
  const create = client.watch;
  client.watch = () => {
    const builder = create.call(client);
    const created = builder.create.bind(builder);
    builder.create = async () => {
      await gate.promise;
      return await created();
    };
    return builder;
  };
  let revision = 10;
  const { log, hooks: h } = hooks(() => Promise.resolve(revision++));
  const watch = new StateWatch(client, "/p/instances/", h);
  const started = watch.start();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(log, ["read", "up"]);
  // The store was in doubt (a lost lease, back now) before the watch exists.
  await watch.catchUp();
  assert.deepEqual(log, ["read", "up", "down"]);
  gate.resolve();
  await started;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(log, ["read", "up", "down", "down", "read", "up"]);
  assert.equal(watches.length, 1, "the watch itself is kept");
  await watch.close();
});

Deno.test("StateWatch.catchUp with no start under way does nothing: the next start reads afresh", async () => {
  const { client } = fakeClient();
  const { log, hooks: h } = hooks(() => Promise.resolve(1));
  const watch = new StateWatch(client, "/p/instances/", h);
  await watch.catchUp();
  assert.deepEqual(log, []);
  await watch.close();
});
