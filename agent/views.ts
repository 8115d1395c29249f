// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's views of the services it uses: one {@linkcode View} per
 * watched scope (a service, or `"*"` for every service), opened when
 * something needs it and released after an idle time.
 *
 * A scope is *held* by whatever needs it: a subscription for as long as
 * it is open, a registration (and a removal still to make) for as long as
 * the agent keeps it, a one-shot lookup for its duration. All of them
 * share one view and one backend watch per scope. When the last hold goes,
 * the view stays for {@linkcode ViewsOptions.idleMs} (a client that
 * reconnects, or looks the same service up again, finds it warm, with its
 * history), then its watch is closed and its memory freed. An agent
 * therefore costs what its host uses, not what the fleet holds; a `"*"`
 * subscription (the dashboard) watches everything and costs what the
 * whole registry costs.
 *
 * A scope that holds no instance when it goes idle (a lookup of a name
 * nobody registered, say) stays for at most {@linkcode EMPTY_IDLE_MS}, and
 * is the first to close for room: lookups of random names, however many,
 * never push out a warm view of a service that has instances.
 *
 * Bounds: at most {@linkcode ViewsOptions.maxScopes} scopes at once (the
 * oldest idle ones are closed first to make room, empty ones before the
 * others; when every scope is in use, a new one fails with -32002), and
 * one history budget for all of them ({@linkcode HistoryBudget}).
 *
 * @module
 */

import type {
  Backend,
  BackendCatalog,
  BackendChange,
  BackendState,
  BackendWatch,
  BackendWatcher,
  WatchOptions,
} from "../backends/backend.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { ALL_SERVICES } from "../protocol/types.ts";
import { HistoryBudget, View } from "./view.ts";

/** Options of {@linkcode Views}. */
export interface ViewsOptions {
  /**
   * Most changes kept for `since` replays, by all views together.
   *
   * @default {50000}
   */
  historySize?: number;
  /**
   * Most bytes of changes kept for `since` replays, by all views together
   * (see `DEFAULT_HISTORY_BYTES` in `view.ts`: 16 MiB).
   *
   * @default {16777216}
   */
  historyBytes?: number;
  /**
   * How long a scope nobody holds stays watched, in milliseconds.
   *
   * @default {30000}
   */
  idleMs?: number;
  /**
   * Most scopes watched at once.
   *
   * @default {10000}
   */
  maxScopes?: number;
  /**
   * How long a scope nobody holds stays watched when it holds no instance
   * as it goes idle, in milliseconds (at most `idleMs`).
   *
   * @default {EMPTY_IDLE_MS}
   */
  emptyIdleMs?: number;
}

/** Default of {@linkcode ViewsOptions.idleMs}: 30 s. */
export const DEFAULT_IDLE_MS = 30_000;
/** Default of {@linkcode ViewsOptions.maxScopes}. */
export const DEFAULT_MAX_SCOPES = 10_000;
/** Default of {@linkcode ViewsOptions.emptyIdleMs}: 5 s. */
export const EMPTY_IDLE_MS = 5_000;

/** A hold on one scope's view; see {@linkcode Views.hold}. */
export interface Hold {
  /** The view of the scope. */
  readonly view: View;
  /** Lets the scope go (once; later calls do nothing). */
  release(): void;
}

/** What a scope tells its {@linkcode Views} of what its backend watch delivers. */
interface Seen {
  /** A revision a view applied. */
  revision(revision: number): void;
  /** The epoch of a state a view was reset to. */
  epoch(epoch: string): void;
}

/**
 * One watched scope, and the watcher of its backend watch: its methods
 * feed its view (an agent may watch thousands of scopes, and a closure per
 * callback costs more than the scope).
 */
class Scope implements BackendWatcher {
  watch?: BackendWatch;
  holds = 0;
  idle?: ReturnType<typeof setTimeout>;

  constructor(
    readonly name: string,
    readonly view: View,
    readonly seen: Seen,
  ) {}

  changes(changes: BackendChange[]): void {
    this.view.changes(changes);
    this.seen.revision(this.view.revision);
  }

  reset(state: BackendState): void {
    this.seen.epoch(state.epoch);
    this.view.reset(state);
    this.seen.revision(this.view.revision);
  }

  status(connected: boolean): void {
    this.view.status(connected);
  }
}

/** A hold on a scope: see {@linkcode Views.hold}. */
class ScopeHold implements Hold {
  readonly view: View;
  /** Until released. */
  #scope: Scope | undefined;
  readonly #letGo: (scope: Scope) => void;

  constructor(scope: Scope, letGo: (scope: Scope) => void) {
    this.view = scope.view;
    this.#scope = scope;
    this.#letGo = letGo;
  }

  release(): void {
    const scope = this.#scope;
    if (scope === undefined) return;
    this.#scope = undefined;
    this.#letGo(scope);
  }
}

/**
 * The views of one agent, over one backend.
 *
 * @example Usage
 * ```ts
 * import { MemoryBackend } from "../backends/memory.ts";
 * import { Views } from "./views.ts";
 * const views = new Views(new MemoryBackend());
 * await views.open();
 * const hold = await views.acquire("db");
 * console.log(hold.view.list("db").length); // 0
 * hold.release();
 * await views.close();
 * ```
 */
export class Views {
  readonly #backend: Backend;
  readonly #budget: HistoryBudget;
  readonly #idleMs: number;
  readonly #maxScopes: number;
  readonly #emptyIdleMs: number;
  #scopes = new Map<string, Scope>();
  /**
   * Scopes nobody holds, oldest first, that held no instance as they went
   * idle: the first to close for room.
   */
  #idleEmpty = new Set<Scope>();
  /** The other scopes nobody holds, oldest first: the next to close for room. */
  #idle = new Set<Scope>();
  #connected = false;
  #epoch = `unset-${crypto.randomUUID()}`;
  #revision = 0;
  #closed = false;
  /** What every scope's watcher reports: one object for all scopes. */
  readonly #feed: Seen = {
    revision: (revision) => this.#seen(revision),
    epoch: (epoch) => this.#epoch = epoch,
  };
  /** A hold let its scope go: one function for every hold. */
  readonly #letGo = (scope: Scope): void => {
    if (--scope.holds === 0) this.#idleOut(scope);
  };

  /**
   * Creates the views; nothing is watched before a hold.
   *
   * @param backend The backend.
   * @param options History bounds, idle time and the most scopes.
   */
  constructor(backend: Backend, options: ViewsOptions = {}) {
    this.#backend = backend;
    this.#budget = new HistoryBudget(options);
    this.#idleMs = options.idleMs ?? DEFAULT_IDLE_MS;
    this.#maxScopes = options.maxScopes ?? DEFAULT_MAX_SCOPES;
    this.#emptyIdleMs = Math.min(
      this.#idleMs,
      options.emptyIdleMs ?? EMPTY_IDLE_MS,
    );
  }

  /** Opens the backend; resolves as {@linkcode Backend.open} does. */
  open(): Promise<void> {
    return this.#backend.open({
      status: (connected) => this.#connected = connected,
      epoch: (epoch, revision) => {
        this.#epoch = epoch;
        this.#seen(revision);
      },
    });
  }

  /** Whether the backend says its store is reachable. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Epoch of the store's revisions, once a view or a catalog read learned it. */
  get epoch(): string {
    return this.#epoch;
  }

  /** Highest revision a view or a catalog read has seen. */
  get revision(): number {
    return this.#revision;
  }

  /** Number of scopes watched now (held or idle). */
  get size(): number {
    return this.#scopes.size;
  }

  /** The history budget all views share. */
  get budget(): HistoryBudget {
    return this.#budget;
  }

  /**
   * Holds a scope, watching it from now on if nobody did. The view may not
   * have its state yet: see {@linkcode Views.acquire}.
   *
   * @param scope A service name, or `"*"`.
   * @param options For a scope not watched yet, and a store that keeps
   *   history: start its view at this past revision, so that a client
   *   resuming from it gets every change since (see `Backend.watch`).
   * @returns The hold; release it when done.
   * @throws {RpcError} -32002 when {@linkcode ViewsOptions.maxScopes}
   *   scopes are in use.
   */
  hold(scope: string, options?: WatchOptions): Hold {
    const held = this.#scopes.get(scope) ?? this.#start(scope, options);
    held.holds++;
    if (held.idle !== undefined) {
      clearTimeout(held.idle);
      held.idle = undefined;
    }
    this.#idle.delete(held);
    this.#idleEmpty.delete(held);
    return new ScopeHold(held, this.#letGo);
  }

  /**
   * Holds a scope and waits until its view has its state (or the store
   * was found unreachable: the view then serves what it has, marked not
   * connected).
   *
   * @param scope A service name, or `"*"`.
   * @param options Where a scope not watched yet starts (see {@linkcode Views.hold}).
   * @returns The hold; release it when done.
   */
  async acquire(scope: string, options?: WatchOptions): Promise<Hold> {
    const hold = this.hold(scope, options);
    await hold.view.settled;
    return hold;
  }

  /**
   * The view of a scope, if it is watched now (nothing is started).
   *
   * @param scope A service name, or `"*"`.
   * @returns The view, if any.
   */
  peek(scope: string): View | undefined {
    return this.#scopes.get(scope)?.view;
  }

  /**
   * Resolves once every view that shows `service` (its own and `"*"`) has
   * applied `revision`.
   *
   * @param service The service written.
   * @param revision The revision of the write.
   * @param timeoutMs Rejects after this many milliseconds.
   * @returns A promise that resolves then.
   */
  async waitFor(
    service: string,
    revision: number,
    timeoutMs: number,
  ): Promise<void> {
    const views = [service, ALL_SERVICES]
      .map((scope) => this.peek(scope))
      .filter((view) => view !== undefined);
    await Promise.all(views.map((view) => view.waitFor(revision, timeoutMs)));
  }

  /**
   * Counts the instances of every service, through the backend (the
   * agent holds none of them for this).
   *
   * @returns The services with instances, and the revision of the read.
   */
  async catalog(): Promise<BackendCatalog> {
    const catalog = await this.#backend.catalog();
    this.#seen(catalog.revision);
    return catalog;
  }

  /**
   * The state of a scope at a past revision, from the store's own history
   * (see {@linkcode Backend.stateAt}).
   *
   * @param scope A service name, or `"*"`.
   * @param revision The past revision.
   * @returns The state, or `undefined` when the store cannot say.
   */
  async stateAt(
    scope: string,
    revision: number,
  ): Promise<BackendState | undefined> {
    try {
      return await this.#backend.stateAt?.(scope, revision);
    } catch {
      return undefined; // compacted, or unreachable: a snapshot then
    }
  }

  /** Closes every watch (the backend stays open). */
  async close(): Promise<void> {
    this.#closed = true;
    const scopes = [...this.#scopes.values()];
    this.#scopes.clear();
    this.#idle.clear();
    this.#idleEmpty.clear();
    await Promise.all(scopes.map((scope) => this.#stop(scope)));
  }

  #start(name: string, options?: WatchOptions): Scope {
    if (this.#closed) {
      throw new RpcError(
        ErrorCode.ShuttingDown,
        "the agent is shutting down; reconnect and retry",
      );
    }
    if (this.#scopes.size >= this.#maxScopes) {
      const oldest = this.#idleEmpty.values().next().value ??
        this.#idle.values().next().value;
      if (oldest === undefined) {
        throw new RpcError(
          ErrorCode.LimitExceeded,
          `limit reached: this agent already watches ${this.#scopes.size} services, all in use (maxScopes); retry later or use another agent`,
        );
      }
      this.#drop(oldest);
    }
    const view = new View({ budget: this.#budget });
    const scope = new Scope(name, view, this.#feed);
    this.#scopes.set(name, scope);
    scope.watch = this.#backend.watch(name, scope, options);
    return scope;
  }

  #idleOut(scope: Scope) {
    if (this.#closed || this.#scopes.get(scope.name) !== scope) return;
    const empty = scope.view.empty;
    (empty ? this.#idleEmpty : this.#idle).add(scope);
    scope.idle = setTimeout(
      () => this.#drop(scope),
      empty ? this.#emptyIdleMs : this.#idleMs,
    );
  }

  #drop(scope: Scope) {
    if (scope.holds > 0 || this.#scopes.get(scope.name) !== scope) return;
    this.#scopes.delete(scope.name);
    this.#idle.delete(scope);
    this.#idleEmpty.delete(scope);
    void this.#stop(scope);
  }

  async #stop(scope: Scope) {
    clearTimeout(scope.idle);
    scope.view.close();
    await scope.watch?.close().catch(() => {});
  }

  #seen(revision: number) {
    if (revision > this.#revision) this.#revision = revision;
  }
}
