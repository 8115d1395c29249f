// Copyright the discover authors. BSD-3-Clause license.

/**
 * The memory backend's data file (`--data-dir DIR`): an append-only log,
 * `DIR/discover.log`, of every change, each entry one checksummed frame
 * (`_durable_frame.ts`).
 *
 * ## Why an append-only log
 *
 * The backend already holds its whole state in memory and needs the file
 * only to get it back after a restart, in order, with its revisions: a
 * log of changes is exactly that, and writing one costs one `write(2)` of
 * a few hundred bytes per change. Deno KV needs `--unstable-kv`, in the
 * compiled binary too; SQLite (`node:sqlite`) is synchronous, so each
 * commit's `fsync` would stop the agent's only thread. An `fsync` before
 * each acknowledgement would not do either: it takes about 0.6 ms on a
 * virtual disk, twice what a registration takes, so the agent would
 * register at half its rate. Here a change is acknowledged once the kernel
 * has it, which an agent crash cannot undo, and the `fsync` runs beside
 * the agent's thread, for a crash of the host.
 *
 * ## Layout
 *
 * The file starts with the line `discover-log 1`, then frames whose JSON
 * payloads are, in order:
 *
 * - `{"t":"head","epoch":E,"revision":R}`: the epoch of the revisions, and
 *   the revision of the base state that follows;
 * - `{"t":"rec","rec":{...}}`, one per record of the base state;
 * - `{"t":"put","rev":N,"rec":{...}}` and
 *   `{"t":"del","rev":N,"service":S,"addr":A}`: the changes after it, at
 *   revisions R+1, R+2, ... with no gap;
 * - `{"t":"run","boot":B,"at":T}` where an agent started writing (B: when
 *   its host booted, in ms since the epoch, or `null` when unknown), and
 *   `{"t":"stop","rev":N}` where it stopped cleanly.
 *
 * Each start rewrites the file (a temporary file renamed over it) with the
 * base state at the oldest change the backend keeps for resumes, those
 * changes and a `run` entry; so does a compaction once the file has grown
 * by {@linkcode DurableLogOptions.compactBytes} (and by twice its size
 * after the last rewrite), while writes go on. A compaction that fails
 * (the disk is full, say) is tried again once the file has grown by
 * another `compactBytes`, not at every write.
 *
 * ## Guarantees
 *
 * - A change is in the file (written with `write(2)`) before any watcher
 *   sees it and before it is acknowledged: an agent killed at any moment
 *   (SIGKILL included) restarts with every change it acknowledged, and
 *   with a prefix of the changes made (the order is the revisions').
 *   The changes of one turn of the event loop go in one `write(2)`.
 * - `fdatasync(2)` follows the writes beside them, at most
 *   {@linkcode DurableLogOptions.syncInterval} (100 ms) apart, covering
 *   every write made meanwhile. A crash of the host itself loses at most
 *   the changes of that interval and its flush; the agent then starts
 *   with the state of the last revision on disk and a new epoch, so that
 *   no subscriber resumes from a revision it saw but the file lost.
 * - Damage is found, never served: a frame cut short at the end of the
 *   file (a write torn by a crash, never acknowledged), or zero bytes from
 *   where an entry is due to the end of the file (writes that a crash of
 *   the host kept from the disk), is dropped with a warning; a checksum that does not match, a payload that is not an
 *   entry, or a gap in the revisions anywhere else keeps the state before
 *   it, says what was dropped, keeps a copy of the damaged file
 *   (`discover.log.damaged-<time>`) and starts a new epoch; the damaged
 *   file stays in place until the fresh one is renamed over it, so a
 *   start that fails before recovers the same state the next time. A file that is
 *   not a discover log, or whose head is damaged, is refused with a
 *   message that says what to do.
 * - One agent per directory: a second one is refused (`DIR/lock` is held
 *   with `flock(2)` while the backend is open).
 *
 * @module
 */

import type { BackendChange, StoredRecord } from "./backend.ts";
import type { BackendLogger } from "./descriptor.ts";
import {
  encodeFrame,
  FrameBuffer,
  nextFrame,
  readFrame,
} from "./_durable_frame.ts";
import { instanceKey } from "../protocol/instance_key.ts";

/** The first line of the file. */
export const MAGIC = "discover-log 1\n";

/** The log's file name in the data directory. */
export const LOG_FILE = "discover.log";

/** A data directory that cannot be used; the message says why and what to do. */
export class DataDirError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong and what to do.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DataDirError";
  }
}

/** A state to write as the base of a fresh file, and the changes after it. */
export interface LogSnapshot {
  /** Epoch of the revisions. */
  epoch: string;
  /** Revision of `records`. */
  revision: number;
  /** Every record at `revision`. */
  records: StoredRecord[];
  /** The changes after `revision`, in order, with no gap. */
  changes: BackendChange[];
}

/** What the file held, as {@linkcode DurableLog.open} found it. */
export interface LoadedLog extends LogSnapshot {
  /** Whether the file existed. */
  existed: boolean;
  /** Whether the epoch is new (no file, damage, or a host restart after an unclean stop). */
  newEpoch: boolean;
  /** Whether the last agent that wrote the file stopped cleanly (no file: true). */
  clean: boolean;
  /** Bytes dropped from the end of the file, if any, and why. */
  dropped?: { bytes: number; offset: number; reason: string; torn: boolean };
}

/** Options of {@linkcode DurableLog.open}. */
export interface DurableLogOptions {
  /** Where to say what was found and dropped. */
  log?: BackendLogger;
  /**
   * Rewrite the file once it has grown by this many bytes since the last
   * rewrite (and by twice its size then). 64 MiB. After a rewrite that
   * failed, the next is tried once the file has grown by this many bytes
   * again.
   *
   * @default {67108864}
   */
  compactBytes?: number;
  /**
   * Milliseconds a flush to disk waits for more writes to cover (group
   * commit): the most a crash of the host can lose, beyond the flush's own
   * time. 0: flush again as soon as the previous flush ends. Each flush
   * is a journal commit that the host's kernel and disk work through
   * beside the agent: at 10 ms apart, benchmark 14's load made 5 to 10 %
   * fewer registrations than at 100 ms.
   *
   * @default {100}
   */
  syncInterval?: number;
  /**
   * When this host booted, in milliseconds since the epoch (`undefined`:
   * unknown). Tells a host restart from an agent restart after an unclean
   * stop. Read from `Deno.osUptime()` by default.
   */
  bootTime?: number;
}

/** Boot times further apart than this are two boots. */
const BOOT_SLACK_MS = 5_000;

/** When this host booted, if the agent may ask (`--allow-sys=osUptime`). */
function hostBootTime(): number | undefined {
  try {
    return Date.now() - Deno.osUptime() * 1000;
  } catch {
    return undefined;
  }
}

const encoder = new TextEncoder();

/**
 * The data file of one directory, open for appending. See the module
 * documentation for its format and guarantees.
 *
 * @example Usage
 * ```ts ignore
 * import { DurableLog } from "./_durable_log.ts";
 * const log = await DurableLog.open("/var/lib/discover");
 * await log.begin((revision) => snapshotOfTheBackendAt(revision), 7);
 * log.add({ type: "delete", revision: 8, service: "web", addr: "h:1" });
 * log.flush();
 * await log.close(8);
 * ```
 */
export class DurableLog {
  /** What the file held when opened. */
  readonly loaded: LoadedLog;
  readonly #dir: string;
  readonly #path: string;
  readonly #lock: Deno.FsFile;
  readonly #logger?: BackendLogger;
  readonly #compactBytes: number;
  readonly #syncInterval: number;
  readonly #bootTime: number | undefined;
  #file?: Deno.FsFile;
  #snapshot?: (revision: number) => LogSnapshot;
  /** The last revision written. */
  #written = 0;
  /** Frames added and not written yet, and the revision of the last. */
  readonly #pending = new FrameBuffer();
  #pendingRevision = 0;
  /** Bytes in the file now. */
  #size = 0;
  /** Size at which the file is compacted next. */
  #compactAt = 0;
  /** Frames appended while a compaction writes its file, for its end. */
  #tail?: Uint8Array[];
  #compacting?: Promise<void>;
  #dirty = false;
  #syncing?: Promise<void>;
  /** The `fdatasync` under way. */
  #flushing?: Promise<void>;
  #syncFailed = false;
  /** Ends the wait of the flush loop before its next flush (close). */
  #wake?: () => void;
  #closed = false;

  private constructor(
    dir: string,
    lock: Deno.FsFile,
    loaded: LoadedLog,
    options: DurableLogOptions & { bootTime: number | undefined },
  ) {
    this.#dir = dir;
    this.#path = `${dir}/${LOG_FILE}`;
    this.#lock = lock;
    this.loaded = loaded;
    this.#logger = options.log;
    this.#compactBytes = options.compactBytes ?? 64 * 1024 * 1024;
    this.#syncInterval = options.syncInterval ?? 100;
    this.#bootTime = options.bootTime;
  }

  /**
   * Opens a data directory (creating it if needed), takes its lock, and
   * reads its file; {@linkcode DurableLog.begin} then starts writing.
   *
   * @param dir The directory.
   * @param options Logging, compaction and the host's boot time.
   * @returns The open log; its {@linkcode DurableLog.loaded} says what the file held.
   * @throws {DataDirError} When the directory cannot be used, another
   *   agent holds it, or the file is not a discover log.
   */
  static async open(
    dir: string,
    options: DurableLogOptions = {},
  ): Promise<DurableLog> {
    const bootTime = "bootTime" in options ? options.bootTime : hostBootTime();
    await access(dir, () => Deno.mkdir(dir, { recursive: true }));
    const lock = await access(
      dir,
      () => Deno.open(`${dir}/lock`, { create: true, write: true }),
    );
    let loaded: LoadedLog;
    try {
      if (!(await lock.tryLock(true))) {
        throw new DataDirError(
          `--data-dir '${dir}' is in use by another agent (it holds ${dir}/lock); stop it, or give this one another directory`,
        );
      }
      const path = `${dir}/${LOG_FILE}`;
      let bytes: Uint8Array | undefined;
      try {
        bytes = await Deno.readFile(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) {
          throw accessError(dir, error);
        }
      }
      loaded = bytes === undefined
        ? {
          existed: false,
          newEpoch: true,
          clean: true,
          epoch: crypto.randomUUID(),
          revision: 0,
          records: [],
          changes: [],
        }
        : parseLog(bytes, path, bootTime);
      const lastRevision = loaded.revision + loaded.changes.length;
      if (loaded.dropped && !loaded.dropped.torn) {
        // A copy kept for a look. The file itself stays until the fresh
        // one replaces it (`begin`): a start that fails or dies before
        // finds it again, and the same intact prefix.
        const aside = `${path}.damaged-${
          new Date().toISOString().replaceAll(":", "-")
        }`;
        await access(dir, () => Deno.copyFile(path, aside));
        options.log?.warn(
          `the data file is damaged: ${loaded.dropped.reason} at byte ${loaded.dropped.offset}; the agent starts with the state of revision ${lastRevision} that precedes it (${loaded.dropped.bytes} bytes after it are dropped) under a new epoch, so that subscribers get a fresh state; the damaged file is kept as ${aside}`,
          {
            dataDir: dir,
            offset: loaded.dropped.offset,
            droppedBytes: loaded.dropped.bytes,
            revision: lastRevision,
            damagedFile: aside,
          },
        );
      } else if (loaded.dropped) {
        options.log?.warn(
          `the data file ends with a write cut short (${loaded.dropped.bytes} bytes at byte ${loaded.dropped.offset}, never acknowledged): dropped; the agent starts with the state of revision ${lastRevision}`,
          {
            dataDir: dir,
            offset: loaded.dropped.offset,
            droppedBytes: loaded.dropped.bytes,
            revision: lastRevision,
          },
        );
      }
      const damaged = loaded.dropped !== undefined && !loaded.dropped.torn;
      if (!loaded.clean && loaded.newEpoch && !damaged) {
        options.log?.warn(
          `the agent that wrote the data file did not stop cleanly and the host has restarted since (or its boot time is unknown: grant --allow-sys=osUptime), so changes of its last moments may be missing: the agent starts with the state of revision ${lastRevision} under a new epoch, so that subscribers get a fresh state`,
          { dataDir: dir, revision: lastRevision },
        );
      } else if (loaded.existed && !damaged) {
        options.log?.info(
          `state of revision ${lastRevision} restored from the data file${
            loaded.clean ? "" : " (the agent before did not stop cleanly)"
          }`,
          {
            dataDir: dir,
            revision: lastRevision,
            records: loaded.records.length,
            changes: loaded.changes.length,
          },
        );
      }
    } catch (error) {
      lock.close();
      throw error;
    }
    return new DurableLog(dir, lock, loaded, { ...options, bootTime });
  }

  /**
   * Writes a fresh file with `snapshot(revision)`'s state and history,
   * renames it over the old one, and opens it for appending. `snapshot` is
   * called again for every compaction, with the last revision written.
   *
   * @param snapshot The backend's state at a revision it has written, and
   *   the changes it keeps up to there.
   * @param revision The backend's revision now (what it loaded).
   */
  async begin(
    snapshot: (revision: number) => LogSnapshot,
    revision: number,
  ): Promise<void> {
    this.#snapshot = snapshot;
    this.#written = revision;
    const { file, size } = await this.#rewrite(snapshot(revision));
    this.#file = file;
    this.#rewritten(size);
  }

  /** The file was just rewritten, `size` bytes: when to compact it next. */
  #rewritten(size: number): void {
    this.#size = size;
    this.#compactAt = size + Math.max(this.#compactBytes, 2 * size);
  }

  /**
   * Adds a change to those the next {@linkcode DurableLog.flush} writes.
   *
   * @param change The change, at the revision after the last one added.
   * @throws {RangeError} When the change is too large for a frame; it is
   *   not added then.
   */
  add(change: BackendChange): void {
    this.#pending.add(changeJson(change));
    this.#pendingRevision = change.revision;
  }

  /**
   * Writes the changes added since the last flush, in one `write(2)`: the
   * kernel has them when this returns. They are dropped from the changes
   * to write either way.
   *
   * @throws {Error} When they cannot be written; the file is as before.
   */
  flush(): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    try {
      this.#write(pending.bytes(), this.#pendingRevision);
    } finally {
      pending.clear();
    }
  }

  #write(frames: Uint8Array, revision: number): void {
    const file = this.#file;
    if (!file || this.#closed) {
      throw new Error(`the data file ${this.#path} is not open`);
    }
    try {
      writeAll(file, frames);
    } catch (error) {
      try {
        // A partial entry would hide every later one.
        file.truncateSync(this.#size);
        file.seekSync(this.#size, Deno.SeekMode.Start);
      } catch { /* the next start drops it as a torn write */ }
      throw new Error(
        `could not write to the data file ${this.#path}: ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
    this.#size += frames.length;
    this.#written = revision;
    // A copy: `frames` is a view of a buffer used again.
    this.#tail?.push(frames.slice());
    this.#sync();
    if (this.#size > this.#compactAt && !this.#compacting) {
      this.#compacting = this.#compact().finally(() =>
        this.#compacting = undefined
      );
    }
  }

  /**
   * Waits for the writes so far to reach the disk, writes that the agent
   * stopped cleanly at `revision`, and releases the directory.
   *
   * @param revision The last revision written.
   */
  async close(revision: number): Promise<void> {
    if (this.#closed) return;
    await this.#compacting;
    this.#closed = true;
    // The flush due covers every write: it runs now, not after its wait.
    this.#wake?.();
    await this.#syncing;
    const file = this.#file;
    this.#file = undefined;
    try {
      if (file) {
        writeAll(file, encodeFrame({ t: "stop", rev: revision }));
        await file.syncData();
        file.close();
      }
    } finally {
      this.#lock.close();
    }
  }

  /** Keeps `fdatasync` going while there are writes it has not covered. */
  #sync(): void {
    this.#dirty = true;
    this.#syncing ??= (async () => {
      while (this.#dirty && this.#file) {
        if (this.#syncInterval > 0 && !this.#closed) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, this.#syncInterval);
            this.#wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.#wake = undefined;
        }
        this.#dirty = false;
        try {
          await (this.#flushing = this.#file.syncData());
          this.#syncFailed = false;
        } catch (error) {
          if (!this.#syncFailed) {
            this.#logger?.warn(
              "could not flush the data file to disk; a crash of the host may lose recent changes",
              { file: this.#path, error },
            );
          }
          this.#syncFailed = true;
        }
      }
      this.#flushing = undefined;
      this.#syncing = undefined;
    })();
  }

  async #compact(): Promise<void> {
    const snapshot = this.#snapshot!;
    // From here on, every write also goes to the compacted file's end.
    this.#tail = [];
    let fresh: { file: Deno.FsFile; size: number; tmp: string } | undefined;
    try {
      fresh = await this.#rewrite(snapshot(this.#written), { rename: false });
    } catch (error) {
      this.#tail = undefined;
      this.#compactFailed(error);
      return;
    }
    const { file, tmp } = fresh;
    let size = fresh.size;
    try {
      // From here to the switch nothing else runs: no write is missed.
      for (const frames of this.#tail) {
        writeAll(file, frames);
        size += frames.length;
      }
      Deno.renameSync(tmp, this.#path);
    } catch (error) {
      file.close();
      await Deno.remove(tmp).catch(() => {});
      this.#compactFailed(error);
      return;
    } finally {
      this.#tail = undefined;
    }
    const old = this.#file!;
    const flushing = this.#flushing;
    this.#file = file;
    this.#rewritten(size);
    this.#sync();
    // The old file is unlinked; closed once no flush uses it.
    await flushing?.catch(() => {});
    old.close();
    await syncDir(this.#dir);
  }

  /**
   * A compaction failed: the next one waits until the file has grown by
   * another `compactBytes`, so that a disk that refuses is not asked to
   * take a whole snapshot again at every write.
   */
  #compactFailed(error: unknown): void {
    this.#compactAt = this.#size + this.#compactBytes;
    this.#logger?.warn(
      "could not compact the data file; it keeps growing, and is compacted again once it has grown by another compaction threshold",
      { file: this.#path, error, compactBytes: this.#compactBytes },
    );
  }

  /**
   * Writes `snapshot` and a `run` entry to a temporary file, flushed, and
   * renames it over the log unless told not to.
   */
  async #rewrite(
    snapshot: LogSnapshot,
    options: { rename?: boolean } = {},
  ): Promise<{ file: Deno.FsFile; size: number; tmp: string }> {
    const tmp = `${this.#path}.tmp`;
    const file = await access(
      this.#dir,
      () => Deno.open(tmp, { create: true, write: true, truncate: true }),
    );
    try {
      let size = 0;
      const frames = new FrameBuffer();
      const write = async (bytes: Uint8Array) => {
        let at = 0;
        while (at < bytes.length) at += await file.write(bytes.subarray(at));
        size += bytes.length;
      };
      const flush = async () => {
        await write(frames.bytes());
        frames.clear();
      };
      const add = async (json: string) => {
        frames.add(json);
        // Written in pieces: the agent serves on between them.
        if (frames.length >= 256 * 1024) await flush();
      };
      await write(encoder.encode(MAGIC));
      await add(JSON.stringify({
        t: "head",
        epoch: snapshot.epoch,
        revision: snapshot.revision,
      }));
      for (const rec of snapshot.records) {
        await add(`{"t":"rec","rec":${recordJson(rec)}}`);
      }
      for (const change of snapshot.changes) await add(changeJson(change));
      await add(JSON.stringify({
        t: "run",
        boot: this.#bootTime ?? null,
        at: Date.now(),
      }));
      await flush();
      await file.syncData();
      if (options.rename !== false) {
        await access(this.#dir, () => Deno.rename(tmp, this.#path));
        await syncDir(this.#dir);
      }
      return { file, size, tmp };
    } catch (error) {
      file.close();
      await Deno.remove(tmp).catch(() => {});
      throw error;
    }
  }
}

/**
 * The JSON of a change's entry, as `JSON.stringify` writes
 * `{ t: "put", rev, rec }` or `{ t: "del", rev, service, addr }`, without
 * building that object.
 */
function changeJson(change: BackendChange): string {
  return change.type === "put"
    ? `{"t":"put","rev":${change.revision},"rec":${recordJson(change.record)}}`
    : `{"t":"del","rev":${change.revision},"service":${
      JSON.stringify(change.service)
    },"addr":${JSON.stringify(change.addr)}}`;
}

/**
 * The JSON of a record, field by field: what `JSON.parse` reads back equals
 * the record. Several times faster than `JSON.stringify` of the record
 * object, and written for every registration. A field added to
 * `StoredRecord` must be added here: the test that reads back a record
 * with every field (a `Required<StoredRecord>`) fails until it is.
 */
function recordJson(record: StoredRecord): string {
  let json = `{"service":${JSON.stringify(record.service)},"addr":${
    JSON.stringify(record.addr)
  },"attrs":${JSON.stringify(record.attrs)},"owner":${
    JSON.stringify(record.owner)
  },"registeredAt":${JSON.stringify(record.registeredAt)}`;
  if (record.health !== undefined) {
    json += `,"health":${JSON.stringify(record.health)}`;
  }
  if (record.note !== undefined) {
    json += `,"note":${JSON.stringify(record.note)}`;
  }
  if (record.created !== undefined) {
    json += `,"created":${JSON.stringify(record.created)}`;
  }
  return json + "}";
}

/** Writes every byte of `bytes` (a write may take only part of them). */
function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  let at = 0;
  while (at < bytes.length) at += file.writeSync(bytes.subarray(at));
}

/** Makes a rename in `dir` durable (best effort where directories cannot be opened). */
async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await Deno.open(dir, { read: true });
    try {
      await handle.sync();
    } finally {
      handle.close();
    }
  } catch { /* not every platform syncs directories */ }
}

/** Runs a file operation on the data directory; a refusal says which permission or right is missing. */
async function access<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw accessError(dir, error);
  }
}

function accessError(dir: string, error: unknown): DataDirError {
  const message = (error as Error)?.message ?? String(error);
  const hint = error instanceof Deno.errors.NotCapable
    ? `; run the agent with --allow-read and --allow-write for it (e.g. --allow-write=${dir})`
    : error instanceof Deno.errors.PermissionDenied
    ? "; the agent's user must be able to create and write files there"
    : "";
  return new DataDirError(
    `--data-dir '${dir}' cannot be used: ${message}${hint}`,
    { cause: error },
  );
}

/**
 * Reads a whole file: its head, base state and changes, as far as they are
 * intact. Throws {@linkcode DataDirError} when the head itself is not.
 */
function parseLog(
  bytes: Uint8Array,
  path: string,
  bootTime: number | undefined,
): LoadedLog {
  const magic = encoder.encode(MAGIC);
  const refuse = (what: string) =>
    new DataDirError(
      `${path} ${what}; move it away (the agent then starts empty) or give another --data-dir`,
    );
  if (
    bytes.length < magic.length ||
    magic.some((byte, i) => bytes[i] !== byte)
  ) {
    const line = new TextDecoder().decode(bytes.subarray(0, 40)).split("\n")[0];
    throw refuse(
      /^discover-log \d+$/.test(line)
        ? `is a data file of another format ('${line}'; this agent reads '${MAGIC.trim()}')`
        : "is not a discover data file (it does not start with 'discover-log 1')",
    );
  }
  const head = readFrame(bytes, magic.length);
  const value = head.kind === "frame" ? head.value : undefined;
  if (
    head.kind !== "frame" || value?.t !== "head" ||
    typeof value.epoch !== "string" || value.epoch === "" ||
    !isRevision(value.revision)
  ) {
    throw refuse(
      `has a damaged head (${
        head.kind === "corrupt" ? head.reason : "no epoch and revision"
      }), so none of it can be trusted`,
    );
  }
  const epoch = value.epoch;
  const base = value.revision as number;
  const records = new Map<string, StoredRecord>();
  const changes: BackendChange[] = [];
  /** Keys present after the changes so far. */
  let present: Set<string> | undefined;
  let revision = base;
  let inBase = true;
  let run: { boot: number | null } | undefined;
  let clean = true;
  let offset = head.end;
  let dropped: LoadedLog["dropped"];
  while (offset < bytes.length) {
    const read = readFrame(bytes, offset);
    let problem: string | undefined;
    if (read.kind === "frame") {
      problem = apply(read.value);
      if (problem === undefined) {
        offset = read.end;
        continue;
      }
    } else if (
      read.kind === "torn" && nextFrame(bytes, offset + 1) === undefined
    ) {
      dropped = {
        bytes: bytes.length - offset,
        offset,
        reason: "a write cut short",
        torn: true,
      };
      break;
    }
    dropped = {
      bytes: bytes.length - offset,
      offset,
      reason: read.kind === "corrupt"
        ? read.reason
        : read.kind === "torn"
        ? "an entry cut short with whole entries after it"
        : problem!,
      torn: false,
    };
    break;
  }
  // A stop without a run after it: clean; a run without a stop: not.
  const rebooted = run !== undefined && !clean &&
    (bootTime === undefined || run.boot === null ||
      Math.abs(bootTime - run.boot) > BOOT_SLACK_MS);
  const damaged = dropped !== undefined && !dropped.torn;
  return {
    existed: true,
    newEpoch: damaged || rebooted,
    clean,
    epoch: damaged || rebooted ? crypto.randomUUID() : epoch,
    revision: base,
    records: [...records.values()],
    changes,
    ...(dropped ? { dropped } : {}),
  };

  /** Applies one entry; says what is wrong with it, if anything. */
  function apply(entry: Record<string, unknown>): string | undefined {
    switch (entry.t) {
      case "rec": {
        const record = checkRecord(entry.rec);
        if (!inBase || typeof record === "string") {
          return typeof record === "string"
            ? record
            : "a base record after the changes";
        }
        records.set(instanceKey(record.service, record.addr), record);
        return undefined;
      }
      case "put":
      case "del": {
        if (entry.rev !== revision + 1) {
          return `revision ${entry.rev} where ${revision + 1} was due`;
        }
        inBase = false;
        present ??= new Set(records.keys());
        if (entry.t === "put") {
          const record = checkRecord(entry.rec);
          if (typeof record === "string") return record;
          present.add(instanceKey(record.service, record.addr));
          changes.push({ type: "put", revision: revision + 1, record });
        } else {
          if (
            typeof entry.service !== "string" || typeof entry.addr !== "string"
          ) {
            return "a removal without service and address";
          }
          if (!present.delete(instanceKey(entry.service, entry.addr))) {
            return `a removal of ${entry.service}/${entry.addr}, which is not there`;
          }
          changes.push({
            type: "delete",
            revision: revision + 1,
            service: entry.service,
            addr: entry.addr,
          });
        }
        revision++;
        return undefined;
      }
      case "run":
        inBase = false;
        if (entry.boot !== null && typeof entry.boot !== "number") {
          return "a run entry without a boot time";
        }
        run = { boot: entry.boot as number | null };
        clean = false;
        return undefined;
      case "stop":
        if (entry.rev !== revision) {
          return `a stop at revision ${entry.rev} after revision ${revision}`;
        }
        clean = true;
        return undefined;
      default:
        return `an entry of unknown type ${JSON.stringify(entry.t)}`;
    }
  }
}

function isRevision(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** The record in an entry, or what is wrong with it. */
function checkRecord(value: unknown): StoredRecord | string {
  const bad = "a record without service, address, attributes, owner and time";
  if (typeof value !== "object" || value === null) return bad;
  const r = value as Record<string, unknown>;
  if (
    typeof r.service !== "string" || typeof r.addr !== "string" ||
    typeof r.owner !== "string" || typeof r.registeredAt !== "number" ||
    typeof r.attrs !== "object" || r.attrs === null ||
    Array.isArray(r.attrs) ||
    Object.values(r.attrs).some((v) => typeof v !== "string") ||
    (r.health !== undefined && r.health !== "passing" &&
      r.health !== "critical") ||
    (r.note !== undefined && typeof r.note !== "string") ||
    (r.created !== undefined && !isRevision(r.created))
  ) return bad;
  return r as unknown as StoredRecord;
}
