// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  type BackendChange,
  type BackendState,
  type BackendWatcher,
  OwnerConflictError,
} from "./backend.ts";
import { openWatching, testBackend } from "./backend_suite.ts";
import { MemoryBackend, memoryDescriptor } from "./memory.ts";

testBackend("memory", () => new MemoryBackend(), { history: true });

Deno.test("memory backend: changes reach the watcher before the write resolves", async () => {
  const backend = new MemoryBackend();
  const seen: number[] = [];
  await openWatching(backend, {
    changes: (changes) => seen.push(...changes.map((c) => c.revision)),
    reset: () => {},
    status: () => {},
  });
  const revision = await backend.put({
    service: "s",
    addr: "h:1",
    attrs: {},
    owner: "o",
    registeredAt: 0,
  });
  assert.deepEqual(seen, [revision]);
  await backend.close();
});

Deno.test("memory backend: a watch opened before open is told it is connected once open", async () => {
  const backend = new MemoryBackend();
  const statuses: boolean[] = [];
  backend.watch("svc", {
    changes: () => {},
    reset: () => {},
    status: (connected) => statuses.push(connected),
  });
  assert.deepEqual(statuses, []);
  await backend.open({ status: () => {} });
  assert.deepEqual(statuses, [true]);
  await backend.close();
});

Deno.test("memory backend: stateAt reaches back as far as the changes kept, no further", async () => {
  const backend = new MemoryBackend({ historySize: 2 });
  await backend.open({ status: () => {} });
  const put = (addr: string, v: string) =>
    backend.put({
      service: "s",
      addr,
      attrs: { v },
      owner: "o",
      registeredAt: 0,
    });
  const r1 = await put("h:1", "1");
  const r2 = await put("h:1", "2");
  const r3 = await put("h:2", "1");
  // Kept: r2 and r3, so the state at r1 and after can be rebuilt.
  const at1 = await backend.stateAt("s", r1);
  assert.deepEqual(at1?.records.map((r) => [r.addr, r.attrs.v]), [[
    "h:1",
    "1",
  ]]);
  assert.equal((await backend.stateAt("s", r2))?.records.length, 1);
  assert.equal(await backend.stateAt("s", r1 - 1), undefined, "not kept");
  assert.equal(await backend.stateAt("s", r3 + 1), undefined, "the future");
  await backend.close();
});

Deno.test("memory backend: the changes kept are bounded by bytes too", async () => {
  const backend = new MemoryBackend({ historyBytes: 10_000 });
  await backend.open({ status: () => {} });
  const put = (v: string) =>
    backend.put({
      service: "s",
      addr: "h:1",
      attrs: { pad: v.repeat(1000) },
      owner: "o",
      registeredAt: 0,
    });
  const revisions: number[] = [];
  for (let i = 0; i < 30; i++) revisions.push(await put(String(i % 10)));
  // About 1,100 bytes a change: fewer than 10 of the 30 are kept.
  assert.equal(await backend.stateAt("s", revisions[5]), undefined);
  const recent = await backend.stateAt("s", revisions[25]);
  assert.equal(recent?.records[0].attrs.pad, "5".repeat(1000));
  await backend.close();
});

// With a data directory.

/** Where this module's data directories go; removed when the tests end. */
const DATA = Deno.makeTempDirSync({ prefix: "discover-memory-test-" });
globalThis.addEventListener("unload", () => {
  Deno.removeSync(DATA, { recursive: true });
});
let dirs = 0;

/** A fresh data directory under {@linkcode DATA}. */
function dataDir(): string {
  return `${DATA}/${++dirs}`;
}

testBackend(
  "memory with a data directory",
  () => new MemoryBackend({ dataDir: dataDir() }),
  { history: true },
);

function rec(addr: string, owner = "o", v = "1") {
  return {
    service: "web",
    addr,
    attrs: { v },
    owner,
    registeredAt: 1_700_000_000_000,
  };
}

/** A watcher that keeps everything. */
function keeper() {
  const seen = {
    resets: [] as BackendState[],
    changes: [] as BackendChange[],
  };
  const watcher: BackendWatcher = {
    changes: (changes) => seen.changes.push(...changes),
    reset: (state) => seen.resets.push(state),
    status: () => {},
  };
  return { seen, watcher };
}

Deno.test("memory backend with a data directory: a restart keeps the records, revisions, epoch and the changes kept", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  const r1 = await first.put(rec("h:1"));
  const r2 = await first.put(rec("h:2"));
  await first.put(rec("h:1", "o", "2"));
  const r4 = await first.delete("web", "h:2");
  const epoch = (await first.stateAt("*", r4!))!.epoch;
  await first.close();

  const second = new MemoryBackend({ dataDir: dir });
  const told: [string, number][] = [];
  await second.open({
    status: () => {},
    epoch: (e, revision) => told.push([e, revision]),
  });
  try {
    assert.deepEqual(told, [[epoch, r4]]);
    const { seen, watcher } = keeper();
    // A subscriber that saw r2 resumes across the restart: a replay.
    const watch = second.watch("web", watcher, { since: r2, epoch });
    assert.equal(seen.resets[0].revision, r2);
    assert.deepEqual(
      seen.resets[0].records.map((r) => `${r.addr}=${r.attrs.v}`).sort(),
      ["h:1=1", "h:2=1"],
    );
    assert.deepEqual(seen.changes.map((c) => `${c.type} ${c.revision}`), [
      `put ${r2 + 1}`,
      `delete ${r4}`,
    ]);
    // Revisions go on from there, and created revisions are kept.
    const r5 = await second.put(rec("h:1", "o", "3"));
    assert.equal(r5, r4! + 1);
    const last = seen.changes.at(-1)!;
    assert.equal(last.type === "put" && last.record.created, r1);
    await watch.close();
  } finally {
    await second.close();
  }
});

Deno.test("memory backend with a data directory: records of the previous run stay for the grace period unless written again", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  await first.put(rec("h:1", "a"));
  await first.put(rec("h:2", "b"));
  await first.put(rec("h:3", "c"));
  assert.equal(first.keeps("web", "h:1"), true);
  await first.close();

  const second = new MemoryBackend({ dataDir: dir, restartGrace: 300 });
  await second.open({ status: () => {} });
  try {
    const { seen, watcher } = keeper();
    second.watch("*", watcher);
    assert.equal(seen.resets[0].records.length, 3);
    // Not kept by this run: an owner coming back writes its record again,
    // with the same state (subscribers see nothing of it).
    assert.equal(second.keeps("web", "h:1"), false);
    await second.put(rec("h:1", "a"), { ifOwner: "a" });
    assert.equal(second.keeps("web", "h:1"), true);
    // A cleanup of the records this agent keeps leaves the others alone.
    await assert.rejects(
      second.delete("web", "h:2", { ifOwner: "b", ifKept: true }),
      OwnerConflictError,
    );
    const before = seen.changes.length;
    await new Promise((resolve) => setTimeout(resolve, 600));
    // h:2 and h:3 were not written again: removed, like lost owners' records.
    assert.deepEqual(
      seen.changes.slice(before).map((c) =>
        `${c.type} ${c.type === "delete" ? c.addr : ""}`
      ).sort(),
      ["delete h:2", "delete h:3"],
    );
    assert.deepEqual((await second.catalog()).services, [
      { service: "web", instances: 1 },
    ]);
  } finally {
    await second.close();
  }
  // The removals were written too.
  const third = new MemoryBackend({ dataDir: dir });
  await third.open({ status: () => {} });
  assert.deepEqual((await third.catalog()).services, [
    { service: "web", instances: 1 },
  ]);
  await third.close();
});

Deno.test("memory backend with a data directory: release stops keeping a record, a write keeps it again", async () => {
  const backend = new MemoryBackend({ dataDir: dataDir() });
  await backend.open({ status: () => {} });
  try {
    await backend.put(rec("h:1", "a"));
    backend.release("web", "h:1", { ifOwner: "someone else" });
    assert.equal(backend.keeps("web", "h:1"), true);
    backend.release("web", "h:1", { ifOwner: "a" });
    assert.equal(backend.keeps("web", "h:1"), false);
    await backend.put(rec("h:1", "a"));
    assert.equal(backend.keeps("web", "h:1"), true);
    await backend.delete("web", "h:1", { ifOwner: "a", ifKept: true });
    assert.equal(backend.keeps("web", "h:1"), false);
  } finally {
    await backend.close();
  }
});

/** Runs `fn` while every write to a file fails, as on a full disk. */
async function withFailingWrites<T>(fn: () => Promise<T>): Promise<T> {
  const writeSync = Deno.FsFile.prototype.writeSync;
  Deno.FsFile.prototype.writeSync = () => {
    throw new Error("no space left on device (simulated)");
  };
  try {
    return await fn();
  } finally {
    Deno.FsFile.prototype.writeSync = writeSync;
  }
}

Deno.test("memory backend with a data directory: a failed write leaves a record of the previous run, and a released one, as before it", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  await first.put(rec("h:1", "a"));
  await first.put(rec("h:2", "b"));
  await first.close();

  const second = new MemoryBackend({ dataDir: dir, restartGrace: 300 });
  await second.open({ status: () => {} });
  try {
    // Its owner registers it again, and the disk refuses: still the
    // previous run's record, which expires with the grace period.
    await withFailingWrites(async () => {
      await assert.rejects(second.put(rec("h:1", "a", "2")), /no space/);
      await assert.rejects(second.delete("web", "h:2"), /no space/);
    });
    assert.equal(second.keeps("web", "h:1"), false);
    assert.equal(second.keeps("web", "h:2"), false);
    assert.equal((await second.catalog()).revision, 2);
    // A record this run wrote, then released: a failed removal leaves it
    // released.
    const r3 = await second.put(rec("h:3", "c"));
    second.release("web", "h:3", { ifOwner: "c" });
    await withFailingWrites(() =>
      assert.rejects(second.delete("web", "h:3", { ifOwner: "c" }), /no space/)
    );
    assert.equal(second.keeps("web", "h:3"), false);
    assert.equal((await second.catalog()).revision, r3);
    await new Promise((resolve) => setTimeout(resolve, 800));
    // h:1 and h:2 were not written again within the grace period: gone.
    const state = (await second.stateAt("*", r3 + 2))!;
    assert.deepEqual(state.records.map((r) => r.addr), ["h:3"]);
  } finally {
    await second.close();
  }
});

Deno.test("memory backend with a data directory: a call that changes nothing answers from what is written, not from a change whose write then fails", async () => {
  const backend = new MemoryBackend({ dataDir: dataDir() });
  await backend.open({ status: () => {} });
  const writeSync = Deno.FsFile.prototype.writeSync;
  /** The next write to a file fails, as on a full disk; the later ones do not. */
  const failNextWrite = () => {
    Deno.FsFile.prototype.writeSync = () => {
      Deno.FsFile.prototype.writeSync = writeSync;
      throw new Error("no space left on device (simulated)");
    };
  };
  try {
    await backend.put(rec("h:1", "a"));
    // Two removals in one turn; the write of the first fails.
    failNextWrite();
    const first = backend.delete("web", "h:1");
    const second = backend.delete("web", "h:1");
    await assert.rejects(first, /no space/);
    assert.equal(
      await second,
      2,
      "the record was there: the second removes it",
    );
    // Another owner takes the record, then its owner writes it again
    // (only if it is still its own); the first write fails.
    await backend.put(rec("h:1", "a"));
    failNextWrite();
    const taken = backend.put(rec("h:1", "b"));
    const kept = backend.put(rec("h:1", "a", "2"), { ifOwner: "a" });
    await assert.rejects(taken, /no space/);
    assert.equal(await kept, 4, "still its own: the write is made");
    const state = (await backend.stateAt("web", 4))!;
    assert.deepEqual(
      state.records.map((r) => `${r.owner} ${r.attrs.v}`),
      ["a 2"],
    );
  } finally {
    Deno.FsFile.prototype.writeSync = writeSync;
    await backend.close();
  }
});

Deno.test("memory backend with a data directory: a watch opened before open gets the state read from disk", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  const revision = await first.put(rec("h:1"));
  await first.close();
  const second = new MemoryBackend({ dataDir: dir });
  const { seen, watcher } = keeper();
  second.watch("web", watcher);
  assert.equal(seen.resets.length, 0, "nothing is known before open");
  const opened = second.open({ status: () => {} });
  const written = second.put(rec("h:2"));
  await opened;
  try {
    assert.equal(seen.resets.length, 1);
    assert.equal(seen.resets[0].revision, revision);
    assert.equal(await written, revision + 1, "a write waits for the state");
  } finally {
    await second.close();
  }
});

Deno.test("memory backend with a data directory: a watch opened before open is told it is connected with its state, before anything awaiting the state runs", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  await first.put(rec("h:1"));
  await first.close();
  const second = new MemoryBackend({ dataDir: dir });
  const calls: string[] = [];
  second.watch("web", {
    changes: () => {},
    reset: () => {
      calls.push("reset");
      // Where the agent's view resolves those waiting for its state: a
      // registration checks then that the store is reachable.
      queueMicrotask(() => calls.push("a waiter of the state runs"));
    },
    status: (connected) => calls.push(`status ${connected}`),
  });
  await second.open({ status: () => {} });
  try {
    assert.deepEqual(calls.slice(0, 3), [
      "reset",
      "status true",
      "a waiter of the state runs",
    ]);
  } finally {
    await second.close();
  }
});

Deno.test("memory backend with a data directory: a close while the directory is being read waits for the read, then releases the directory", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  const opened = first.open({ status: () => {} });
  await first.close();
  await opened;
  // The directory is free: another backend takes it.
  const second = new MemoryBackend({ dataDir: dir });
  await assert.doesNotReject(second.open({ status: () => {} }));
  await second.close();
});

Deno.test("memory backend with a data directory: a second agent on the directory is refused, and writes after close fail", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  const second = new MemoryBackend({ dataDir: dir });
  await assert.rejects(
    second.open({ status: () => {} }),
    /--data-dir '.*' is in use by another agent/,
  );
  await first.close();
  await assert.rejects(first.put(rec("h:1")), /is not open/);
});

Deno.test("memory backend with a data directory: an open that failed can be tried again, and succeeds once the directory is free", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  await first.open({ status: () => {} });
  await first.put(rec("h:1"));
  const second = new MemoryBackend({ dataDir: dir });
  await assert.rejects(second.open({ status: () => {} }), /in use/);
  await assert.rejects(second.put(rec("h:2")), /is not open/);
  await first.close();
  await second.open({ status: () => {} });
  try {
    assert.equal(await second.put(rec("h:2")), 2);
    assert.deepEqual((await second.catalog()).services, [
      { service: "web", instances: 2 },
    ]);
  } finally {
    await second.close();
  }
});

Deno.test("memory backend with a data directory: a change too large for the data file is refused and not applied; the changes after it are kept", async () => {
  const dir = dataDir();
  const backend = new MemoryBackend({ dataDir: dir });
  await backend.open({ status: () => {} });
  try {
    await assert.rejects(
      backend.put(rec("h:1", "o", "x".repeat(17 * 1024 * 1024))),
      RangeError,
    );
    assert.equal((await backend.catalog()).revision, 0);
    assert.equal(backend.keeps("web", "h:1"), false);
    const revisions = await Promise.all([
      backend.put(rec("h:1")),
      backend.put(rec("h:2")),
      backend.delete("web", "h:1"),
    ]);
    assert.deepEqual(revisions, [1, 2, 3]);
  } finally {
    await backend.close();
  }
  const again = new MemoryBackend({ dataDir: dir });
  await again.open({ status: () => {} });
  try {
    const state = await again.stateAt("*", 3);
    assert.deepEqual(state?.records.map((r) => r.addr), ["h:2"]);
    assert.equal((await again.catalog()).revision, 3);
  } finally {
    await again.close();
  }
});

Deno.test("memoryDescriptor: --data-dir builds a durable backend with the agent's TTL; an empty value does not", async () => {
  const dir = dataDir();
  const context = {
    log: { info() {}, warn() {} },
    env: () => undefined,
    readFile: () => Promise.reject(new Error("no files")),
    ttlMs: 250,
  };
  const durable = await memoryDescriptor.create({ "data-dir": dir }, context);
  await durable.open({ status: () => {} });
  await durable.put(rec("h:1"));
  await durable.close();
  assert.ok((await Deno.stat(`${dir}/discover.log`)).isFile);
  const again = await memoryDescriptor.create({ "data-dir": dir }, context);
  await again.open({ status: () => {} });
  // Nobody wrote it again within the TTL given.
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual((await again.catalog()).services, []);
  await again.close();
  const plain = await memoryDescriptor.create({ "data-dir": "" }, context);
  await plain.open({ status: () => {} });
  await plain.put(rec("h:1"));
  await plain.close();
});

Deno.test("memory backend with a data directory: compactions while writes go on keep every change", async () => {
  const dir = dataDir();
  // A compacted file holds the state and the changes kept: 50 here.
  const first = new MemoryBackend({
    dataDir: dir,
    compactBytes: 8192,
    historySize: 50,
  });
  await first.open({ status: () => {} });
  let last = 0;
  for (let round = 0; round < 40; round++) {
    // Several writes in one turn: they go to the file together.
    const writes = [];
    for (let i = 0; i < 25; i++) {
      writes.push(first.put(rec(`h:${i}`, "o", `${round}`)));
    }
    writes.push(first.delete("web", `h:${round % 25}`));
    last = Math.max(...(await Promise.all(writes)).map((r) => r ?? 0));
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  const expected = (await first.stateAt("*", last))!.records
    .map((r) => `${r.addr}=${r.attrs.v}`).sort();
  await first.close();
  const size = (await Deno.stat(`${dir}/discover.log`)).size;
  // 1,040 changes of ~150 bytes would be ~150 KB without compaction.
  assert.ok(size < 64 * 1024, `${size} bytes`);
  const second = new MemoryBackend({ dataDir: dir, historySize: 50 });
  await second.open({ status: () => {} });
  try {
    // The changes kept came back too: the state 40 changes ago.
    assert.ok(await second.stateAt("*", last - 40));
    const state = (await second.stateAt("*", last))!;
    assert.equal(state.revision, last);
    assert.deepEqual(
      state.records.map((r) => `${r.addr}=${r.attrs.v}`).sort(),
      expected,
    );
  } finally {
    await second.close();
  }
});

Deno.test("memory backend with a data directory: calls of one turn that reach it a few awaits apart each get their own revision, after their change is written", async () => {
  const dir = dataDir();
  const first = new MemoryBackend({ dataDir: dir });
  const { seen, watcher } = keeper();
  await first.open({ status: () => {} });
  first.watch("web", watcher);
  await first.put(rec("h:0"));
  // Callers that take 0 to 5 awaits to reach the backend, as the calls of
  // one turn do (a register takes more than an unregister).
  const calls = Array.from({ length: 6 }, async (_, depth) => {
    for (let i = 0; i < depth; i++) await Promise.resolve();
    const revision = depth % 2 === 0
      ? await first.put(rec(`h:${depth + 1}`))
      : await first.delete("web", "h:0");
    // Answered once the change reached the watchers, that is once written.
    if (revision !== undefined) {
      assert.ok(seen.changes.some((c) => c.revision === revision));
    }
    return revision;
  });
  const revisions = await Promise.all(calls);
  // One delete found the record; the others found nothing to remove.
  assert.deepEqual(
    revisions.filter((r) => r !== undefined),
    [2, 3, 4, 5],
  );
  assert.deepEqual(seen.changes.map((c) => `${c.type} ${c.revision}`), [
    "put 1",
    "put 2",
    "delete 3",
    "put 4",
    "put 5",
  ]);
  await first.close();
  const second = new MemoryBackend({ dataDir: dir });
  await second.open({ status: () => {} });
  try {
    const state = (await second.stateAt("web", 5))!;
    assert.deepEqual(state.records.map((r) => r.addr).sort(), [
      "h:1",
      "h:3",
      "h:5",
    ]);
  } finally {
    await second.close();
  }
});
