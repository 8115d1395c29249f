// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend's watch: one prefix watch per agent, however many
 * subscribers it has.
 *
 * It starts from a full read (delivered as a reset) and watches from the
 * revision after it. A broken stream resumes where it left off; since
 * nothing says when a resumed stream has caught up (it may lag for
 * seconds), everything is read afresh meanwhile, holding the stream's
 * events until the read is delivered ({@linkcode StateWatch.catchUp}), and
 * only then is the watch live again. A compacted revision (or any other
 * watch failure) triggers a full resync.
 *
 * @module
 */

import type { Etcd3, IWatchResponse, Watcher } from "etcd3";
import type { BackendLogger } from "./descriptor.ts";
import { describeEtcdError } from "./_etcd_retry.ts";

/** Wait before a resync after a watch failure, in ms. */
const RESYNC_DELAY_MS = 500;

/** What {@linkcode StateWatch} needs from its owner. */
export interface StateWatchHooks {
  /**
   * Reads everything and delivers it as a reset.
   *
   * @param delivered Called right after the reset is delivered, in the
   *   same turn: whoever waits for the state finds the watch's status
   *   told with it.
   * @returns The revision read, or `undefined` once the backend closed.
   */
  readState(delivered?: () => void): Promise<number | undefined>;
  /** Applies one watch response. */
  apply(response: IWatchResponse): void;
  /** The watch is live and caught up (`true`), or not. */
  status(up: boolean): void;
  /** Runs `attempt` until it says it is done, retrying failures (see `_etcd_retry.ts`). */
  retrying(what: string, attempt: () => Promise<boolean>): Promise<void>;
  /** Where to log. */
  log?: BackendLogger;
}

/**
 * The prefix watch of one backend.
 *
 * @example Usage
 * ```ts ignore
 * import { StateWatch } from "./_etcd_watch.ts";
 * const watch = new StateWatch(client, "/discover/instances/", hooks);
 * await watch.start(); // reads, delivers, watches; rejects on failure
 * ```
 */
export class StateWatch {
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #hooks: StateWatchHooks;
  #watcher?: Watcher;
  #resyncing?: Promise<void>;
  /** Watch responses held while a catch-up read is under way. */
  #held?: IWatchResponse[];
  #closed = false;
  /** A start is under way (reading, then creating the watch). */
  #starting = false;
  /** A catch-up was asked for while a start was under way: it follows the start. */
  #catchUpAfterStart = false;
  /**
   * The watch's stream is lost and not created again yet: nothing that is
   * read now can be kept current, so the watch is not live before the
   * stream is back (its `connected` event catches up then).
   */
  #lost = false;

  /**
   * Creates the watch; nothing is read before {@linkcode StateWatch.start}.
   *
   * @param client The etcd client.
   * @param prefix The key prefix watched.
   * @param hooks Reading, applying, status and retries.
   */
  constructor(client: Etcd3, prefix: string, hooks: StateWatchHooks) {
    this.#client = client;
    this.#prefix = prefix;
    this.#hooks = hooks;
  }

  /** Whether a watch stream was created (it may be reconnecting). */
  get active(): boolean {
    return this.#watcher !== undefined;
  }

  /**
   * One attempt: reads everything, delivers it, and watches from there.
   * Rejects when a call fails (the caller retries).
   */
  async start(): Promise<void> {
    const old = this.#watcher;
    this.#watcher = undefined;
    this.#lost = false;
    await old?.cancel().catch(() => {});
    this.#starting = true;
    this.#catchUpAfterStart = false;
    try {
      await this.#start();
    } finally {
      this.#starting = false;
    }
    if (this.#catchUpAfterStart && this.#watcher) {
      // The store was in doubt after this start's read: read again.
      this.#catchUpAfterStart = false;
      void this.catchUp();
    }
  }

  async #start(): Promise<void> {
    const revision = await this.#hooks.readState(() => {
      if (!this.#catchUpAfterStart) this.#hooks.status(true);
    });
    if (revision === undefined) return;
    const watcher = await this.#client.watch().prefix(this.#prefix)
      .startRevision(String(revision + 1)).create();
    if (this.#closed) {
      await watcher.cancel().catch(() => {});
      return;
    }
    this.#watcher = watcher;
    this.#lost = false;
    watcher.on("data", (response) => this.#onData(response));
    watcher.on("disconnected", (error?: unknown) => {
      if (this.#watcher !== watcher) return;
      this.#lost = true;
      this.#hooks.status(false);
      // Every scope's watcher hears of it: the log counts repeats.
      this.#hooks.log?.warn(
        `etcd watch stream lost (${
          error === undefined ? "no reason given" : describeEtcdError(error)
        }); resuming where it left off`,
        {
          scope: this.#prefix,
          ...(error instanceof Error ? { error: error.message } : {}),
        },
      );
    });
    watcher.on("connected", () => {
      if (!this.#lost || this.#closed || this.#watcher !== watcher) return;
      this.#lost = false;
      void this.catchUp();
    });
    watcher.on("error", (error) => {
      if (this.#closed || this.#watcher !== watcher) return;
      // etcd cancelled it (a compacted revision, say), and the client
      // library has dropped it: a cancel of it now would go out with a
      // watch id etcd no longer knows, whose answer the library cannot
      // place (it throws, out of reach of any caller), and would never end.
      this.#watcher = undefined;
      this.#hooks.status(false);
      this.#hooks.log?.warn(
        `etcd watch failed (${describeEtcdError(error)}); resyncing`,
      );
      setTimeout(() => void this.resync(), RESYNC_DELAY_MS);
    });
  }

  /** Reads everything, delivers it as a reset, and watches from there, retrying until done. */
  resync(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#resyncing ??= (async () => {
      try {
        await this.#hooks.retrying("resync", async () => {
          try {
            await this.start();
            return true;
          } catch (error) {
            this.#hooks.status(false);
            throw error;
          }
        });
      } finally {
        this.#resyncing = undefined;
      }
    })();
  }

  /**
   * After the watch stream or the lease came back: reads everything
   * afresh, holding the stream's events meanwhile, and says the watch is
   * live only once they are applied, so `current` means the subscriber
   * holds what changed meanwhile. The watch itself is left as it is
   * (recreating it makes the client library end its stream). While the
   * stream is lost (the lease came back first), it only says the watch is
   * not live: the stream's return catches up.
   */
  async catchUp(): Promise<void> {
    if (this.#held || this.#closed) return;
    if (this.#lost) {
      // Its stream catches up once it is back; until then it is not live.
      this.#hooks.status(false);
      return;
    }
    if (!this.#watcher) {
      // A start under way read before the store was in doubt: it catches
      // up once its watch exists, and says live only then. (Without a
      // start under way, the next one reads afresh anyway.)
      if (this.#starting) {
        this.#catchUpAfterStart = true;
        this.#hooks.status(false);
      }
      return;
    }
    let held: IWatchResponse[] = [];
    this.#held = held;
    this.#hooks.status(false);
    try {
      await this.#hooks.retrying("catch up", async () => {
        if (this.#held !== held) {
          // Another catch-up holds the events now, and reads afresh.
          if (this.#held || this.#closed) return true;
          // An attempt that failed after letting the events through: hold
          // them again for this read.
          this.#held = held = [];
        }
        if (await this.#hooks.readState() === undefined) return true;
        this.#held = undefined;
        for (const response of held) this.#onData(response);
        // Lost during the read: the stream's return catches up.
        this.#hooks.status(!this.#lost);
        return true;
      });
    } finally {
      // Only what this catch-up holds: another one may have begun since
      // it let the events through.
      if (this.#held === held) this.#held = undefined;
    }
  }

  /**
   * A member was left out: the watch stream may be on it, and would wait
   * for gRPC keep-alive (up to 8 s) to notice. Restarts the stream now;
   * the connection pool opens it on a member that is not left out, and
   * every watcher resumes from the last revision it saw, so nothing is
   * missed. `etcd3` has no public call for this: its watch manager's error
   * path is that call.
   */
  move(): void {
    // deno-lint-ignore no-explicit-any
    const manager = (this.#client as any)?.watchManager;
    if (this.#closed || !this.#watcher) return;
    if (typeof manager?.handleError !== "function") return;
    manager.handleError(
      new Error("an etcd member was left out; moving the watch stream"),
    );
  }

  /** Stops watching. */
  async close(): Promise<void> {
    this.#closed = true;
    const watcher = this.#watcher;
    this.#watcher = undefined;
    await watcher?.cancel().catch(() => {});
  }

  #onData(response: IWatchResponse) {
    if (this.#held) {
      this.#held.push(response); // applied after the catch-up read
      return;
    }
    this.#hooks.apply(response);
  }
}
