// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type { BackendChange, StoredRecord } from "./backend.ts";
import type { BackendLogger } from "./descriptor.ts";
import { encodeFrame } from "./_durable_frame.ts";
import {
  DataDirError,
  DurableLog,
  LOG_FILE,
  type LogSnapshot,
  MAGIC,
} from "./_durable_log.ts";
import { instanceKey } from "../protocol/instance_key.ts";
import { tempDir } from "../tools/_process.ts";

const BOOT = 1_700_000_000_000;

/** A logger that keeps what it is told. */
function recorder(): BackendLogger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (message) => void lines.push(`info ${message}`),
    warn: (message) => void lines.push(`warn ${message}`),
  };
}

function record(addr: string, v = "1"): StoredRecord {
  return {
    service: "web",
    addr,
    attrs: { v },
    owner: "o",
    registeredAt: 1,
    created: 1,
  };
}

/** The state a log's writer keeps: what a snapshot hands the log. */
class Model {
  records = new Map<string, StoredRecord>();
  revision = 0;
  /** The records at each revision, for snapshots at any of them. */
  states = new Map<number, StoredRecord[]>([[0, []]]);
  constructor(public epoch: string) {}
  put(addr: string, v = "1"): BackendChange {
    const change: BackendChange = {
      type: "put",
      revision: ++this.revision,
      record: record(addr, v),
    };
    this.records.set(instanceKey("web", addr), change.record);
    this.states.set(this.revision, [...this.records.values()]);
    return change;
  }
  del(addr: string): BackendChange {
    this.records.delete(instanceKey("web", addr));
    this.states.set(++this.revision, [...this.records.values()]);
    return {
      type: "delete",
      revision: this.revision,
      service: "web",
      addr,
    };
  }
  snapshot = (revision: number): LogSnapshot => ({
    epoch: this.epoch,
    revision,
    records: this.states.get(revision)!,
    changes: [],
  });
}

/** Writes one change. */
function append(log: DurableLog, change: BackendChange): void {
  log.add(change);
  log.flush();
}

/** Opens `dir`, writes `n` changes (puts, and a removal every fifth), and returns the log still open. */
async function writeChanges(
  dir: string,
  n: number,
  options: { compactBytes?: number } = {},
): Promise<{ log: DurableLog; model: Model }> {
  const log = await DurableLog.open(dir, { bootTime: BOOT, ...options });
  const model = new Model(log.loaded.epoch);
  await log.begin(model.snapshot, 0);
  for (let i = 1; i <= n; i++) {
    append(log, i % 5 === 0 ? model.del(`h:${i - 1}`) : model.put(`h:${i}`));
  }
  return { log, model };
}

/** Every change's revision and key, from what a log loaded. */
function summary(loaded: DurableLog["loaded"]): string[] {
  return loaded.changes.map((c) =>
    `${c.revision} ${c.type} ${c.type === "put" ? c.record.addr : c.addr}`
  );
}

/** The bytes of a log file as a crash would leave them: written, never closed. */
async function crashed(n: number): Promise<Uint8Array> {
  await using dir = await tempDir("discover-durable-");
  const { log } = await writeChanges(dir.path, n);
  const bytes = await Deno.readFile(`${dir.path}/${LOG_FILE}`);
  await log.close(n);
  return bytes;
}

/** Opens a directory holding `bytes` as its log. */
async function openBytes(
  dir: string,
  bytes: Uint8Array,
  options: { bootTime?: number; log?: BackendLogger } = {},
): Promise<DurableLog> {
  await Deno.writeFile(`${dir}/${LOG_FILE}`, bytes);
  return await DurableLog.open(dir, { bootTime: BOOT, ...options });
}

Deno.test("a log reads back its epoch and every change; a clean stop says so", async () => {
  await using dir = await tempDir("discover-durable-");
  const first = await writeChanges(dir.path, 12);
  await first.log.close(12);
  const again = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    const { loaded } = again;
    assert.equal(loaded.existed, true);
    assert.equal(loaded.clean, true);
    assert.equal(loaded.newEpoch, false);
    assert.equal(loaded.epoch, first.model.epoch);
    assert.equal(loaded.revision, 0);
    assert.equal(loaded.changes.length, 12);
    assert.deepEqual(summary(loaded).slice(3, 5), [
      "4 put h:4",
      "5 delete h:4",
    ]);
    assert.equal(loaded.dropped, undefined);
  } finally {
    await again.close(12);
  }
});

Deno.test("every field of a record reads back as it was written, whatever its characters, in the base state and in a change", async () => {
  await using dir = await tempDir("discover-durable-");
  // Every field: a field added to StoredRecord must be added here, and
  // the log must then write it for this test to pass.
  const full: Required<StoredRecord> = {
    service: "web",
    addr: "[::1]:8080",
    attrs: {
      zone: 'eu "west"',
      path: "a\\b",
      note: "naïve ☃ \u{1f600}",
      nl: "a\nb",
    },
    owner: 'owner "1"',
    registeredAt: 1_700_000_000_123,
    health: "critical",
    note: 'probe said: "502"\ttwice',
    created: 7,
  };
  const plain: StoredRecord = {
    service: "api",
    addr: "10.0.0.1:80",
    attrs: {},
    owner: "o",
    registeredAt: 2,
  };
  const log = await DurableLog.open(dir.path, { bootTime: BOOT });
  await log.begin(() => ({
    epoch: log.loaded.epoch,
    revision: 7,
    records: [full, plain],
    changes: [],
  }), 7);
  log.add({ type: "put", revision: 8, record: { ...full, created: 8 } });
  log.add({ type: "put", revision: 9, record: plain });
  log.flush();
  await log.close(9);
  const again = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    assert.deepEqual(again.loaded.records, [full, plain]);
    assert.deepEqual(again.loaded.changes, [
      { type: "put", revision: 8, record: { ...full, created: 8 } },
      { type: "put", revision: 9, record: plain },
    ]);
  } finally {
    await again.close(9);
  }
});

Deno.test("close flushes at once: it does not wait out the interval between flushes", async () => {
  await using dir = await tempDir("discover-durable-");
  const log = await DurableLog.open(dir.path, {
    bootTime: BOOT,
    syncInterval: 60_000,
  });
  const model = new Model(log.loaded.epoch);
  await log.begin(model.snapshot, 0);
  append(log, model.put("h:1"));
  const started = performance.now();
  await log.close(1);
  // Generous for a loaded machine; waiting out the interval takes 60 s.
  const took = performance.now() - started;
  assert.ok(took < 10_000, `close took ${Math.round(took)} ms`);
  const again = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    assert.equal(again.loaded.clean, true);
    assert.deepEqual(summary(again.loaded), ["1 put h:1"]);
  } finally {
    await again.close(1);
  }
});

Deno.test("the changes added since a flush go to the file together; a change too large for an entry is refused and leaves nothing", async () => {
  await using dir = await tempDir("discover-durable-");
  const log = await DurableLog.open(dir.path, { bootTime: BOOT });
  const model = new Model(log.loaded.epoch);
  await log.begin(model.snapshot, 0);
  const path = `${dir.path}/${LOG_FILE}`;
  const before = (await Deno.stat(path)).size;
  const first = model.put("h:1");
  const second = model.put("h:2");
  log.add(first);
  log.add(second);
  // Added, not written yet.
  assert.equal((await Deno.stat(path)).size, before);
  log.flush();
  const flushed = (await Deno.stat(path)).size;
  // The entries of the format, one after another.
  const entries = [first, second].map((change) =>
    change.type === "put"
      ? encodeFrame({ t: "put", rev: change.revision, rec: change.record })
      : []
  ).flatMap((frame) => [...frame]);
  assert.deepEqual(
    [...(await Deno.readFile(path)).subarray(before)],
    entries,
  );
  assert.equal(flushed, before + entries.length);
  const huge: BackendChange = {
    type: "put",
    revision: model.revision + 1,
    record: { ...record("h:3"), attrs: { v: "x".repeat(17 * 1024 * 1024) } },
  };
  assert.throws(() => log.add(huge), RangeError);
  log.flush(); // nothing added since the last one
  assert.equal((await Deno.stat(path)).size, flushed);
  const removal = model.del("h:1");
  log.add(removal);
  log.flush();
  assert.deepEqual(
    [...(await Deno.readFile(path)).subarray(flushed)],
    [...encodeFrame({ t: "del", rev: 3, service: "web", addr: "h:1" })],
  );
  await log.close(model.revision);
  const again = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    assert.equal(again.loaded.dropped, undefined);
    assert.deepEqual(summary(again.loaded), [
      "1 put h:1",
      "2 put h:2",
      "3 delete h:1",
    ]);
  } finally {
    await again.close(model.revision);
  }
});

Deno.test("a file cut anywhere in its last entry: the entry is dropped as a torn write, the rest kept, same epoch", async () => {
  const bytes = await crashed(8);
  // The 8th change's entry is the last one: cut inside it, at several places.
  const start = new TextDecoder("latin1").decode(bytes).indexOf('"rev":8') -
    `{"t":"put",`.length - 8;
  assert.equal(bytes[start + 8], "{".charCodeAt(0));
  for (const cut of [start + 1, start + 8, start + 20, bytes.length - 1]) {
    await using dir = await tempDir("discover-durable-");
    const log = recorder();
    const durable = await openBytes(dir.path, bytes.subarray(0, cut), { log });
    try {
      const { loaded } = durable;
      assert.equal(loaded.changes.length, 7, `cut at ${cut}`);
      assert.equal(loaded.dropped?.torn, true);
      assert.equal(loaded.dropped?.bytes, cut - start);
      assert.equal(loaded.newEpoch, false, "nothing acknowledged was lost");
      assert.equal(loaded.clean, false);
      assert.match(log.lines.join("\n"), /warn .*cut short/);
    } finally {
      await durable.close(7);
    }
  }
});

Deno.test("a file cut at an entry's end: the changes before it, the previous run not stopped cleanly", async () => {
  await using dir = await tempDir("discover-durable-");
  const bytes = await crashed(6);
  const log = recorder();
  const durable = await openBytes(dir.path, bytes, { log });
  try {
    assert.equal(durable.loaded.changes.length, 6);
    assert.equal(durable.loaded.clean, false);
    assert.equal(durable.loaded.newEpoch, false);
    assert.equal(durable.loaded.dropped, undefined);
    assert.match(log.lines.join("\n"), /info .*did not stop cleanly/);
  } finally {
    await durable.close(6);
  }
});

Deno.test("zeros at the end of the file, as a crash of the host can leave: dropped as a torn write; zeros and then anything else are damage", async () => {
  const bytes = await crashed(6);
  for (const zeros of [3, 8, 100, 8192]) {
    await using dir = await tempDir("discover-durable-");
    const padded = new Uint8Array(bytes.length + zeros);
    padded.set(bytes);
    const log = recorder();
    const durable = await openBytes(dir.path, padded, { log });
    try {
      const { loaded } = durable;
      assert.equal(loaded.changes.length, 6, `${zeros} zeros`);
      assert.deepEqual(loaded.dropped, {
        bytes: zeros,
        offset: bytes.length,
        reason: "a write cut short",
        torn: true,
      });
      assert.equal(loaded.newEpoch, false, "same boot: the same epoch");
      assert.match(log.lines.join("\n"), /warn .*cut short/);
      const names = [...Deno.readDirSync(dir.path)].map((e) => e.name);
      assert.ok(!names.some((n) => n.includes("damaged")), names.join(", "));
    } finally {
      await durable.close(6);
    }
  }
  await using dir = await tempDir("discover-durable-");
  const damaged = new Uint8Array(bytes.length + 100);
  damaged.set(bytes);
  damaged[bytes.length + 50] = 1;
  const durable = await openBytes(dir.path, damaged);
  try {
    assert.equal(durable.loaded.changes.length, 6);
    assert.equal(durable.loaded.dropped?.torn, false);
    assert.equal(durable.loaded.newEpoch, true);
  } finally {
    await durable.close(6);
  }
});

Deno.test("a damaged byte in the middle: the state before it, a new epoch, a warning, the damaged file kept aside", async () => {
  const bytes = await crashed(10);
  // The 6th change: find its entry by its revision.
  const text = new TextDecoder("latin1").decode(bytes);
  const at = text.indexOf('"rev":6');
  assert.ok(at > 0);
  for (const flip of [0x01, 0x20]) {
    await using dir = await tempDir("discover-durable-");
    const bad = bytes.slice();
    bad[at + 3] ^= flip;
    const log = recorder();
    const durable = await openBytes(dir.path, bad, { log });
    try {
      const { loaded } = durable;
      assert.equal(loaded.changes.length, 5);
      assert.equal(loaded.dropped?.torn, false);
      assert.match(loaded.dropped!.reason, /checksum/);
      assert.equal(loaded.newEpoch, true);
      const warning = log.lines.find((l) => l.startsWith("warn"));
      assert.match(warning ?? "", /damaged: a checksum that does not match/);
      assert.match(warning ?? "", /state of revision 5/);
      const names = [...Deno.readDirSync(dir.path)].map((e) => e.name);
      const aside = names.find((n) => n.startsWith(`${LOG_FILE}.damaged-`));
      assert.ok(aside, names.join(", "));
      assert.deepEqual(await Deno.readFile(`${dir.path}/${aside}`), bad);
    } finally {
      await durable.close(5);
    }
  }
});

Deno.test("a damaged file stays in place until the fresh file replaces it: a start that fails before recovers the same state again", async () => {
  const bytes = await crashed(10);
  const bad = bytes.slice();
  bad[new TextDecoder("latin1").decode(bytes).indexOf('"rev":6') + 3] ^= 0x01;
  await using dir = await tempDir("discover-durable-");
  const path = `${dir.path}/${LOG_FILE}`;
  const first = await openBytes(dir.path, bad);
  assert.equal(first.loaded.changes.length, 5);
  // The fresh file cannot be written (a full disk, say): the start fails.
  await Deno.mkdir(`${path}.tmp`);
  const model = new Model(first.loaded.epoch);
  await assert.rejects(first.begin(model.snapshot, 0));
  await first.close(5);
  await Deno.remove(`${path}.tmp`);
  assert.deepEqual(await Deno.readFile(path), bad);
  // The next start finds the same damage, and the same state before it.
  const second = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    assert.equal(second.loaded.existed, true);
    assert.deepEqual(summary(second.loaded), summary(first.loaded));
    assert.equal(second.loaded.dropped?.offset, first.loaded.dropped?.offset);
    await second.begin(() => ({ ...second.loaded, changes: [] }), 0);
    assert.notDeepEqual(await Deno.readFile(path), bad);
    const asides = [...Deno.readDirSync(dir.path)]
      .filter((e) => e.name.startsWith(`${LOG_FILE}.damaged-`));
    assert.ok(asides.length >= 1);
    for (const aside of asides) {
      assert.deepEqual(await Deno.readFile(`${dir.path}/${aside.name}`), bad);
    }
  } finally {
    await second.close(0);
  }
});

Deno.test("entries that break the log's rules are damage too: a revision gap, a removal of nothing", async () => {
  const magic = new TextEncoder().encode(MAGIC);
  const file = (...entries: object[]) =>
    new Uint8Array([
      ...magic,
      ...entries.flatMap((e) => [...encodeFrame(e)]),
    ]);
  const head = { t: "head", epoch: "E", revision: 0 };
  const cases: [Uint8Array, RegExp, number][] = [
    [
      file(head, { t: "put", rev: 1, rec: record("h:1") }, {
        t: "put",
        rev: 3,
        rec: record("h:2"),
      }),
      /revision 3 where 2 was due/,
      1,
    ],
    [
      file(head, { t: "del", rev: 1, service: "web", addr: "h:1" }),
      /removal of web\/h:1, which is not there/,
      0,
    ],
    [
      file(head, { t: "put", rev: 1, rec: { service: "web" } }),
      /a record without/,
      0,
    ],
  ];
  for (const [bytes, reason, kept] of cases) {
    await using dir = await tempDir("discover-durable-");
    const durable = await openBytes(dir.path, bytes);
    try {
      assert.match(durable.loaded.dropped?.reason ?? "", reason);
      assert.equal(durable.loaded.changes.length, kept);
      assert.equal(durable.loaded.newEpoch, true);
    } finally {
      await durable.close(kept);
    }
  }
});

Deno.test("a file that is not a discover log, or whose head is damaged, is refused with what to do", async () => {
  const good = await crashed(2);
  const magic = new TextEncoder().encode(MAGIC).length;
  const damagedHead = good.slice();
  damagedHead[magic + 12] ^= 0x40;
  const cases: [Uint8Array, RegExp][] = [
    [new TextEncoder().encode("hello\n"), /is not a discover data file/],
    [new TextEncoder().encode("discover-log 9\nxyz"), /another format/],
    [damagedHead, /damaged head .*checksum/],
    [good.subarray(0, magic + 3), /damaged head/],
  ];
  for (const [bytes, message] of cases) {
    await using dir = await tempDir("discover-durable-");
    await assert.rejects(
      openBytes(dir.path, bytes),
      (error: Error) =>
        error instanceof DataDirError && message.test(error.message) &&
        error.message.includes("move it away"),
    );
    // Nothing was changed, and the directory is free again.
    assert.deepEqual(await Deno.readFile(`${dir.path}/${LOG_FILE}`), bytes);
  }
});

Deno.test("after an unclean stop, the epoch is kept on the same boot only", async () => {
  const bytes = await crashed(3);
  const epochs = new Set<string>();
  for (
    const [bootTime, kept] of [
      [BOOT + 2000, true],
      [BOOT + 3_600_000, false],
      [undefined, false],
    ] as const
  ) {
    await using dir = await tempDir("discover-durable-");
    const log = recorder();
    const durable = await openBytes(dir.path, bytes, { bootTime, log });
    try {
      assert.equal(durable.loaded.newEpoch, !kept, String(bootTime));
      assert.equal(durable.loaded.changes.length, 3);
      epochs.add(durable.loaded.epoch);
      if (!kept) {
        assert.match(log.lines.join("\n"), /warn .*host has restarted/);
      }
    } finally {
      await durable.close(3);
    }
  }
  assert.equal(epochs.size, 3);
});

Deno.test("one agent per directory: a second open is refused until the first closes", async () => {
  await using dir = await tempDir("discover-durable-");
  const first = await writeChanges(dir.path, 1);
  await assert.rejects(
    DurableLog.open(dir.path),
    (error: Error) =>
      error instanceof DataDirError &&
      /in use by another agent/.test(error.message),
  );
  await first.log.close(1);
  const second = await DurableLog.open(dir.path, { bootTime: BOOT });
  assert.equal(second.loaded.changes.length, 1);
  await second.close(1);
});

Deno.test("the file is compacted once it grows, while writes go on, and reads back the same state", async () => {
  await using dir = await tempDir("discover-durable-");
  const path = `${dir.path}/${LOG_FILE}`;
  const { log, model } = await writeChanges(dir.path, 0, {
    compactBytes: 4096,
  });
  let largest = 0;
  for (let i = 0; i < 2000; i++) {
    append(log, model.put(`h:${i % 20}`, String(i)));
    if (i % 50 === 0) {
      largest = Math.max(largest, (await Deno.stat(path)).size);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  await log.close(model.revision);
  // 2,000 puts of ~130 bytes each would be ~260 KB uncompacted.
  assert.ok(largest < 64 * 1024, `the file reached ${largest} bytes`);
  const again = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    const { loaded } = again;
    assert.equal(loaded.clean, true);
    const state = new Map(
      loaded.records.map((r) => [instanceKey(r.service, r.addr), r]),
    );
    for (const change of loaded.changes) {
      if (change.type === "put") {
        state.set(instanceKey("web", change.record.addr), change.record);
      } else state.delete(instanceKey(change.service, change.addr));
    }
    assert.equal(loaded.revision + loaded.changes.length, model.revision);
    assert.deepEqual(
      [...state.values()].map((r) => `${r.addr}=${r.attrs.v}`).sort(),
      [...model.records.values()].map((r) => `${r.addr}=${r.attrs.v}`).sort(),
    );
  } finally {
    await again.close(model.revision);
  }
});

Deno.test("a compaction that fails is tried again once the file has grown by another threshold, not at every write", async () => {
  await using dir = await tempDir("discover-durable-");
  const path = `${dir.path}/${LOG_FILE}`;
  const logger = recorder();
  const compactBytes = 4096;
  const log = await DurableLog.open(dir.path, {
    bootTime: BOOT,
    compactBytes,
    log: logger,
  });
  const model = new Model(log.loaded.epoch);
  await log.begin(model.snapshot, 0);
  const failures = () =>
    logger.lines.filter((l) => /could not compact/.test(l)).length;
  try {
    // The compacted file cannot be written (a full disk, say).
    await Deno.mkdir(`${path}.tmp`);
    const start = (await Deno.stat(path)).size;
    for (let i = 0; i < 400; i++) {
      append(log, model.put(`h:${i % 20}`, String(i)));
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    const grown = (await Deno.stat(path)).size - start;
    assert.ok(grown > 10 * compactBytes, `${grown} bytes`);
    assert.ok(failures() >= 2, logger.lines.join("\n"));
    assert.ok(
      failures() <= grown / compactBytes + 1,
      `${failures()} attempts over ${grown} bytes`,
    );
    // Once the disk takes it again, a later attempt compacts the file.
    await Deno.remove(`${path}.tmp`);
    for (let i = 0; i < 100; i++) {
      append(log, model.put(`h:${i % 20}`, String(i)));
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.ok((await Deno.stat(path)).size < start + grown);
  } finally {
    await log.close(model.revision);
  }
  const again = await DurableLog.open(dir.path, { bootTime: BOOT });
  try {
    assert.equal(
      again.loaded.revision + again.loaded.changes.length,
      model.revision,
    );
  } finally {
    await again.close(model.revision);
  }
});

Deno.test("a directory the agent may not write is refused with the permission to grant", async () => {
  await using dir = await tempDir("discover-durable-");
  const script = `${dir.path}/open.ts`;
  const target = `${dir.path}/data`;
  await Deno.writeTextFile(
    script,
    `import { DurableLog } from ${
      JSON.stringify(new URL("./_durable_log.ts", import.meta.url).href)
    };
await DurableLog.open(${JSON.stringify(target)})
  .catch((e) => console.log(e.name + ": " + e.message));
`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--no-prompt", script],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(
    text.startsWith(`DataDirError: --data-dir '${target}' cannot be used`),
    text + new TextDecoder().decode(out.stderr),
  );
  assert.match(text, /run the agent with --allow-read and --allow-write/);
});
