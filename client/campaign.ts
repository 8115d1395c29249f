// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Leader election: a {@linkcode Campaign} registers an instance, follows
 * the set it campaigns in, and says when this instance leads it, with a
 * fencing token (its `created` revision) that grows from one leader of the
 * set to the next.
 *
 * Two campaigners of a set never both believe they lead. A campaign
 * believes only while all of these hold:
 *
 * - the client is connected and the set is in sync (not `stale`);
 * - the set's leader is this instance, in the life it registered (its
 *   `created`), and that token is greater than any it was deposed with;
 * - the agent vouched for it: the latest `discover.lease` answered, sent at
 *   time S with answer `ms`, has not run out, at S + ms - margin. No agent
 *   can see the instance leave before S + ms: the agent keeps a lost
 *   client's instances for the grace TTL after it last heard from it
 *   (after S), and caps `ms` with what is certainly left of its etcd lease;
 * - that vouch rests on the lease the instance was registered under: the
 *   campaign asks `discover.lease` just before it registers, and a later
 *   answer naming another lease means the agent lost the one the instance
 *   was written under (etcd may have deleted it, and the agent written it
 *   back in a new life, while this agent's view still lags).
 *
 * Tokens are unique: the backend may write several registrations at one
 * revision (etcd batches them), so a campaign whose `created` another
 * instance of the set shares, present or gone since the set was opened
 * (before the registration), takes a new life instead of leading.
 *
 * Whatever ends a belief (`deposed`), the campaign then unregisters its
 * instance and registers it again: a new life, last in line, with a
 * greater token. So a leader that lost its connection for a moment, and
 * whose instance the agent kept, does not lead again with its old token.
 *
 * A campaign never keeps an instance registered in a set it no longer
 * follows: that instance could lead the set for every other campaigner
 * while nobody campaigns for it. When the set ends without the campaign
 * ending (the client gave it up: the agent refused to subscribe it again
 * after a reconnection), the campaign stops believing at once
 * (`set-closed`), unregisters its instance, then opens the set again,
 * retried with backoff while the failure can pass, and registers a new
 * life once the set is back. A subscribe refused for good, for a reason
 * the client also gives a set up for (`InvalidParams`, `LimitExceeded`,
 * `MethodNotFound`, `InvalidRequest`), ends the campaign instead: its
 * `elected` rejects with a {@linkcode CampaignEndedError} whose `reason` is
 * `set-closed` and whose `cause` is the refusal. `LimitExceeded` ends it
 * too: a session's subscription limit does not pass until the program
 * closes other sets, and a campaign retrying in silence would stay out of
 * the running without its program knowing; the program may campaign again
 * once it has made room.
 *
 * The margin assumes that the clocks of the client, its agent and etcd
 * advance at rates that differ by less than {@linkcode CLOCK_RATE_MARGIN}
 * (plus {@linkcode TIMER_MARGIN_MS}), as does any lease.
 *
 * @module
 */

import type { Attrs, Instance, LeaseResult } from "../protocol/types.ts";
import { Backoff } from "../protocol/backoff.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { deferred } from "./_deferred.ts";
import { isPermanent } from "./_permanent.ts";
import type { ServiceSet } from "./service_set.ts";

/** Share of a vouched time the client does not rely on: clock rates may differ by this much. */
export const CLOCK_RATE_MARGIN = 0.02;

/** Milliseconds of a vouched time the client does not rely on either (timers, scheduling). */
export const TIMER_MARGIN_MS = 100;

/**
 * Delays between the attempts at a new life (or at the last unregister),
 * in milliseconds: the first, and the largest.
 */
const REENTER_BACKOFF = { initialDelay: 100, maxDelay: 2000 };

/**
 * Errors of an unregister that can pass: the client is reconnecting (the
 * request could not be sent in time), the agent cannot reach its backend.
 */
const PASSING_ERRORS: ReadonlySet<number> = new Set([
  ErrorCode.Timeout,
  ErrorCode.BackendUnavailable,
]);

/** Options of `Client.campaign()`. */
export interface CampaignOptions {
  /**
   * Attributes of the instance. It must match `filter`.
   *
   * @default {{}}
   */
  attrs?: Attrs;
  /**
   * The set campaigned in: the passing instances of the service with
   * these attributes. Every instance of that set should be a campaigner
   * (an instance registered otherwise may lead it, and change its
   * attributes or health at will).
   *
   * @default {attrs}
   */
  filter?: Attrs;
  /** Stops waiting for the registration and the set (the campaign then resigns). */
  signal?: AbortSignal;
}

/**
 * The `elected` event of a {@linkcode Campaign}: this instance leads.
 */
export class ElectedEvent extends Event {
  /** The fencing token: the instance's `created` revision. */
  readonly token: number;

  /**
   * Creates the event.
   *
   * @param token The fencing token.
   */
  constructor(token: number) {
    super("elected");
    this.token = token;
  }
}

/**
 * The `deposed` event of a {@linkcode Campaign}: this client can no longer
 * be sure that its instance leads, and stops believing it.
 */
export class DeposedEvent extends Event {
  /** The token it led with. */
  readonly token: number;
  /**
   * Why: `disconnected`, `stale`, `leader` (another instance leads),
   * `expired` (the agent's vouch ran out), `lease` (the agent lost the
   * lease the instance was written under), `set-closed` (the set campaigned
   * in ended: the client gave it up), `resigned` or `closed`.
   */
  readonly reason: DeposedReason;
  /**
   * When the belief ended, in `performance.now()` time: now, or the vouch's
   * end when that came first (a timer that fired late).
   */
  readonly at: number;

  /**
   * Creates the event.
   *
   * @param init The token, the reason and when the belief ended.
   */
  constructor(init: { token: number; reason: DeposedReason; at: number }) {
    super("deposed");
    this.token = init.token;
    this.reason = init.reason;
    this.at = init.at;
  }
}

/** Why a {@linkcode Campaign} was deposed. */
export type DeposedReason =
  | "disconnected"
  | "stale"
  | "leader"
  | "expired"
  | "lease"
  | "set-closed"
  | "resigned"
  | "closed";

/**
 * The error `Campaign.elected` rejects with when the campaign ended before
 * this instance was elected: it resigned, its client closed, or the agent
 * refused its set for good.
 *
 * @example Usage
 * ```ts ignore
 * try {
 *   await me.elected;
 * } catch (error) {
 *   if (error instanceof CampaignEndedError && error.reason === "set-closed") {
 *     console.error("the agent refused the set:", error.cause);
 *   }
 * }
 * ```
 */
export class CampaignEndedError extends Error {
  /**
   * What ended it: `resigned`, `closed` (its client), or `set-closed` (the
   * agent refused to subscribe its set again, for good; `cause` is the
   * refusal). `undefined` when not given.
   */
  readonly reason: "resigned" | "closed" | "set-closed" | undefined;

  /**
   * Creates the error.
   *
   * @param message What ended.
   * @param options Why, and the error that caused it.
   */
  constructor(
    message: string,
    options?: {
      reason?: "resigned" | "closed" | "set-closed";
      cause?: unknown;
    },
  ) {
    super(
      message,
      options && "cause" in options ? { cause: options.cause } : undefined,
    );
    this.name = "CampaignEndedError";
    this.reason = options?.reason;
  }
}

/** Event map of {@linkcode Campaign}, for typed listeners. */
export interface CampaignEventMap {
  /** This instance leads. */
  elected: ElectedEvent;
  /** This client stopped believing that its instance leads. */
  deposed: DeposedEvent;
}

/**
 * What a campaign needs of its client: package-private (the client
 * provides it; not exported by `mod.ts`).
 */
export interface CampaignHost {
  /** The service. */
  readonly service: string;
  /** Milliseconds between lease requests (the client's ping interval). */
  readonly interval: number;
  /** Registers the instance (a new life when it was unregistered). */
  register(): Promise<Instance>;
  /** Unregisters the instance. */
  unregister(): Promise<boolean>;
  /** Sends `discover.lease` on the current connection, if any. */
  lease(): Promise<LeaseResult> | undefined;
  /** Sends `discover.lease`, waiting for a connection (within the request timeout). */
  leaseBefore(): Promise<LeaseResult>;
  /** Opens the set campaigned in. */
  openSet(signal?: AbortSignal): Promise<ServiceSet>;
  /** Whether the client is connected. */
  connected(): boolean;
  /** The campaign ended: the client forgets it. */
  ended(): void;
}

let start: (host: CampaignHost, signal?: AbortSignal) => Promise<Campaign>;

/**
 * Starts a campaign through its host; `Client.campaign()` calls it.
 *
 * @example Usage
 * ```ts ignore
 * import { startCampaign } from "./campaign.ts";
 * const campaign = await startCampaign(host);
 * ```
 *
 * @param host What the campaign needs of its client.
 * @param signal Stops waiting for the registration and the set.
 * @returns The campaign, registered and following its set.
 */
export function startCampaign(
  host: CampaignHost,
  signal?: AbortSignal,
): Promise<Campaign> {
  return start(host, signal);
}

/**
 * A campaign for the leadership of a set: get one from
 * `Client.campaign()`. `elected` resolves when this instance leads;
 * `token` is then its fencing token; a `deposed` event says, at once,
 * that this client can no longer be sure it leads.
 *
 * Should the set it follows end (the client gave it up after a
 * reconnection), the campaign is deposed at once (`set-closed`),
 * unregisters its instance and opens the set again, with backoff while the
 * failure can pass; refused for good (`InvalidParams`, `LimitExceeded`...),
 * it ends: `ended` is `true` and `elected` rejects with a
 * {@linkcode CampaignEndedError} (`reason` `set-closed`, `cause` the
 * refusal). Its instance is never left registered in a set it no longer
 * follows.
 *
 * @example Usage
 * ```ts ignore
 * const me = await client.campaign("db", 5432, { attrs: { shard: "3" } });
 * me.addEventListener("deposed", () => stopWriting());
 * await me.elected;
 * write({ token: me.token }); // the resource refuses tokens below the greatest it saw
 * await me.resign();
 * ```
 */
export class Campaign extends EventTarget implements AsyncDisposable {
  /** The service. */
  readonly service: string;
  readonly #host: CampaignHost;
  #set?: ServiceSet;
  /** The instance as registered in its current life. */
  #life?: Instance;
  /** The agent's lease just before the current life was registered. */
  #lifeLease?: string;
  /** A vouch named another lease than the life's: it can no longer lead. */
  #leaseLost = false;
  /** The token of the current belief. */
  #token?: number;
  /** No belief with a token up to this one: it was deposed with it. */
  #floor = 0;
  /** `performance.now()` time until which the agent vouches for the current life. */
  #vouched = -Infinity;
  /** Bumped at each new life: lease answers of an older one do not count. */
  #generation = 0;
  #reentering?: Promise<void>;
  #timer?: ReturnType<typeof setTimeout>;
  #poller?: ReturnType<typeof setInterval>;
  #elected = deferred<number>();
  /** Aborted when the campaign ends: a new life's wait before a retry ends with it. */
  readonly #ending = new AbortController();
  /**
   * Aborted when the client closes (nothing more can be sent): so does the
   * wait of an unregister retried after resigning.
   */
  readonly #closing = new AbortController();

  get #ended(): boolean {
    return this.#ending.signal.aborted;
  }

  get #closed(): boolean {
    return this.#closing.signal.aborted;
  }

  /** Campaigns are started by `Client.campaign()`. */
  private constructor(host: CampaignHost) {
    super();
    this.service = host.service;
    this.#host = host;
    this.#elected.promise.catch(() => {});
  }

  static {
    start = async (host, signal) => {
      const campaign = new Campaign(host);
      try {
        await campaign.#start(signal);
      } catch (error) {
        await campaign.resign().catch(() => {});
        throw error;
      }
      return campaign;
    };
  }

  /** Whether this client believes, now, that its instance leads the set. */
  get leading(): boolean {
    return this.#token !== undefined && performance.now() < this.#vouched;
  }

  /** The fencing token while leading (the instance's `created`); `undefined` otherwise. */
  get token(): number | undefined {
    return this.leading ? this.#token : undefined;
  }

  /**
   * Until when, in `performance.now()` time, the current belief holds if
   * nothing renews it: finish anything guarded by the token before it.
   * `undefined` while not leading.
   */
  get deadline(): number | undefined {
    return this.leading ? this.#vouched : undefined;
  }

  /** The instance in its current life, once registered. */
  get instance(): Instance | undefined {
    return this.#life;
  }

  /**
   * Resolves with the fencing token when this instance leads: at once
   * while it does, else at its next election. Rejects with a
   * {@linkcode CampaignEndedError} when the campaign ends first (resigned,
   * its client closed, or its set refused for good).
   */
  get elected(): Promise<number> {
    return this.#elected.promise;
  }

  /**
   * Whether the campaign ended: resigned, its client closed, or the agent
   * refused its set for good.
   */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Steps down: stops believing (a `deposed` event if it led), unregisters
   * the instance (the next oldest leads) and closes the set. An unregister
   * that cannot be made now (the client is reconnecting, the agent cannot
   * reach its backend) is tried again until it is, or the client closes;
   * the instance stays the campaign's meanwhile.
   *
   * @returns A promise that settles once the agent has been told, or the
   *   first attempt failed.
   */
  async resign(): Promise<void> {
    if (this.#ended) return;
    this.#end("resigned");
    await this.#set?.close();
    // A new life under way registers first: the unregister must come last.
    await this.#reentering;
    await this.#leave();
  }

  /**
   * Unregisters the instance. Tried once; should that fail for a reason
   * that can pass (the client is reconnecting, the agent cannot reach its
   * backend), tried again with backoff, in the background, until the agent
   * confirms it or the client closes (which ends the wait for the next try
   * at once): the client may be back within the
   * grace TTL, and its agent would then keep the instance for as long as
   * the client lives, a leader nobody campaigns for. The instance stays the
   * campaign's (the client will not register it otherwise) until then.
   */
  async #leave() {
    if (await this.#unregistered()) {
      this.#host.ended();
      return;
    }
    const backoff = new Backoff(REENTER_BACKOFF);
    void (async () => {
      while (!this.#closed) {
        await backoff.wait(this.#closing.signal);
        if (this.#closed || await this.#unregistered()) break;
      }
      this.#host.ended();
    })();
  }

  /** One unregister: whether it is done with (`false`: try again). */
  async #unregistered(): Promise<boolean> {
    try {
      await this.#host.unregister();
      return true;
    } catch (error) {
      return !(error instanceof RpcError && PASSING_ERRORS.has(error.code));
    }
  }

  /** Same as {@linkcode Campaign.resign}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.resign();
  }

  /**
   * The client ended (closed, or lost without reconnection): the campaign
   * ends with it. Package-private: the client calls it.
   *
   * @param reason Why.
   */
  end(reason: "closed"): void {
    this.#closing.abort();
    this.#end(reason);
    this.#host.ended();
    void this.#set?.close();
  }

  async #start(signal?: AbortSignal) {
    // The set first: it then sees every instance registered at the same
    // revision as this one, even one that leaves at once.
    const set = await this.#host.openSet(signal);
    this.#set = set;
    if (this.#ended) {
      await set.close();
      return;
    }
    await this.#register();
    signal?.throwIfAborted();
    this.#follow(set);
    this.#poller = setInterval(() => this.#poll(), this.#host.interval);
    this.#poll();
    this.#evaluate();
  }

  /** Re-evaluates at every change of the set (its end included). */
  #follow(set: ServiceSet) {
    const evaluate = () => this.#evaluate();
    set.addEventListener("leader", evaluate);
    set.addEventListener("update", evaluate);
    set.addEventListener("sync", evaluate);
    set.addEventListener("disconnect", evaluate);
    set.addEventListener("close", evaluate);
  }

  /** Asks the agent to vouch again; an answer renews the belief's deadline. */
  #poll() {
    if (this.#ended || this.#reentering) return;
    const generation = this.#generation;
    const sent = performance.now();
    this.#host.lease()?.then(({ ms, lease }) => {
      if (this.#ended || generation !== this.#generation) return;
      if (lease !== this.#lifeLease) {
        this.#leaseLost = true;
        this.#evaluate();
        return;
      }
      const until = sent + ms * (1 - CLOCK_RATE_MARGIN) - TIMER_MARGIN_MS;
      if (until > this.#vouched) this.#vouched = until;
      this.#evaluate();
    }, () => {});
  }

  /** Believes, keeps believing, or stops, from what is known now. */
  #evaluate() {
    if (this.#ended) return;
    const set = this.#set;
    const life = this.#life;
    const now = performance.now();
    let why: DeposedReason | undefined;
    if (!this.#host.connected()) why = "disconnected";
    else if (set?.closed) why = "set-closed";
    else if (!set || !set.connected) why = "stale";
    else if (this.#leaseLost) why = "lease";
    else if (now >= this.#vouched) why = "expired";
    else {
      const leader = set.leader();
      const mine = life !== undefined && leader !== undefined &&
        leader.id === life.id && leader.created === life.created;
      if (!mine || life.created <= this.#floor || this.#tied(set, life)) {
        why = "leader";
      }
    }
    if (this.#reentering) why ??= "leader";
    if (why === undefined) {
      this.#believe(life!.created);
      return;
    }
    if (this.#token !== undefined) {
      this.#depose(why, now);
      return;
    }
    // Not leading. After a lost connection the instance may be gone (or
    // kept, in its old life): a new life either way; so after a lost lease,
    // and after the set ended (the new life waits for it to be back).
    if (why === "disconnected" || why === "lease" || why === "set-closed") {
      this.#reenter();
      return;
    }
    // A life that can never lead again is replaced: one at or below the
    // floor, one whose token another instance shares, one the set holds in
    // another life, and one the set no longer holds although it has seen
    // the registration (removed without this client asking: its agent lost
    // it, or let it go; waiting would leave the set without this
    // campaigner, or without any leader at all).
    if (life !== undefined && set?.connected && !this.#reentering) {
      const seen = set.get(life.addr);
      if (
        life.created <= this.#floor || this.#tied(set, life) ||
        (seen !== undefined && seen.created !== life.created) ||
        (seen === undefined && set.revision >= life.revision)
      ) {
        this.#reenter();
      }
    }
  }

  /**
   * Whether another instance of the set, present or gone, has the same
   * `created`: the backend may write several registrations at one
   * revision, and a token shared by two leaders would not fence one from
   * the other. The campaign then takes a new life.
   */
  #tied(set: ServiceSet, life: Instance): boolean {
    const same = (i: Instance) =>
      i.id !== life.id && i.created === life.created;
    return set.online().some(same) || set.offline().some(same);
  }

  #believe(token: number) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => this.#evaluate(),
      Math.max(0, this.#vouched - performance.now()),
    );
    if (this.#token === token) return;
    this.#token = token;
    this.#elected.resolve(token);
    this.dispatchEvent(new ElectedEvent(token));
  }

  #depose(reason: DeposedReason, now: number) {
    const token = this.#token!;
    const at = Math.min(now, this.#vouched);
    this.#token = undefined;
    this.#floor = Math.max(this.#floor, token);
    clearTimeout(this.#timer);
    this.#elected = deferred<number>();
    this.#elected.promise.catch(() => {});
    this.dispatchEvent(new DeposedEvent({ token, reason, at }));
    if (!this.#ended) this.#reenter();
  }

  /**
   * A new life: unregister, open the set again if it ended, register again
   * (a greater `created`), retried until it works. A set refused for good
   * ends the campaign.
   */
  #reenter() {
    if (this.#reentering || this.#ended) return;
    this.#generation++;
    this.#vouched = -Infinity;
    this.#reentering = (async () => {
      const backoff = new Backoff(REENTER_BACKOFF);
      let unregistered = false;
      while (!this.#ended) {
        try {
          if (!unregistered) {
            await this.#host.unregister();
            unregistered = true;
          }
          if (this.#ended) return;
          if (this.#set?.closed && !await this.#reopen()) return;
          await this.#register();
          return;
        } catch {
          await backoff.wait(this.#ending.signal);
        }
      }
    })().finally(() => {
      this.#reentering = undefined;
      this.#generation++;
      this.#poll();
      this.#evaluate();
    });
  }

  /**
   * Opens the set again, the instance unregistered: whether the campaign
   * goes on (`false`: it ended). A refusal that can pass is thrown, to be
   * retried; one for good ends the campaign, with the same confirmed
   * unregister as a resign (it was unregistered already: the agent
   * confirms there is nothing left).
   */
  async #reopen(): Promise<boolean> {
    let set: ServiceSet;
    try {
      set = await this.#host.openSet();
    } catch (error) {
      if (this.#ended) return false;
      // The same refusals for which the client gives a set up after a
      // reconnection: the campaign then ends.
      if (!isPermanent(error)) throw error;
      this.#end("set-closed", error);
      await this.#leave();
      return false;
    }
    if (this.#ended) {
      await set.close();
      return false;
    }
    this.#set = set;
    this.#follow(set);
    return true;
  }

  /** Registers a life, and notes the agent's lease just before. */
  async #register() {
    const { lease } = await this.#host.leaseBefore();
    if (this.#ended) return; // resigned meanwhile: no new life
    this.#life = await this.#host.register();
    this.#lifeLease = lease;
    this.#leaseLost = false;
  }

  #end(reason: "resigned" | "closed" | "set-closed", cause?: unknown) {
    if (this.#ended) return;
    this.#ending.abort();
    if (this.#token !== undefined) this.#depose(reason, performance.now());
    clearTimeout(this.#timer);
    clearInterval(this.#poller);
    const why = cause instanceof RpcError
      ? `: the agent refused its set for good: ${cause.message} (${cause.code})`
      : "";
    this.#elected.reject(
      new CampaignEndedError(
        `the campaign of '${this.service}' ended (${reason}${why}) before its instance was elected`,
        cause === undefined ? { reason } : { reason, cause },
      ),
    );
  }
}

/** Typed listener overloads for {@linkcode Campaign}. */
export interface Campaign {
  /**
   * Adds a typed listener.
   *
   * @param type `"elected"` or `"deposed"`.
   * @param listener The listener.
   * @param options Listener options.
   */
  addEventListener<K extends keyof CampaignEventMap>(
    type: K,
    listener: (this: Campaign, event: CampaignEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /**
   * Adds a listener.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options Listener options.
   */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
