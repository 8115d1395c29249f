// Copyright the discover authors. BSD-3-Clause license.

/**
 * How the etcd backend orders, guards and batches its writes.
 *
 * - The writes of one key run one at a time (`KeyedSerial` in `protocol/keyed_serial.ts`: a
 *   lease restore must not race an unregister).
 * - A conditional write first checks its conditions against what the
 *   watch told of the key (`allows` in `_conditions.ts`), then lets etcd check the
 *   key's version atomically with the write ({@linkcode keyWrite}: a
 *   transaction of its own, whose failure branch reads the key).
 * - Writes go to etcd in batches ({@linkcode TxnBatcher}): a write goes at
 *   once unless {@linkcode BATCH_MAX_IN_FLIGHT} transactions are in
 *   flight; writes that arrive meanwhile wait for one to return and go
 *   together, each as a nested transaction of one outer transaction with
 *   no compares (etcd 3.3 or later). Each write keeps its own condition and its own outcome; the
 *   writes of a batch share its revision, and etcd's watch delivers a
 *   revision's events in one response. A registration storm of thousands
 *   of writes then costs etcd a few dozen transactions instead of
 *   thousands.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { setImmediate } from "node:timers";
import {
  EtcdLeaseInvalidError,
  type ICompare,
  type IRequestOp,
  type IResponseOp,
  type ITxnRequest,
  type ITxnResponse,
} from "etcd3";
import type { BackendLogger } from "./descriptor.ts";

/**
 * Most writes in one transaction. etcd refuses a transaction with more
 * operations than `--max-txn-ops` (128 by default); a nested transaction
 * is one operation of its parent, and its own operations count against
 * what its parent leaves (128 - 64 = 64, and a write takes at most 1).
 */
export const BATCH_MAX_WRITES = 64;

/**
 * Most bytes of writes in one transaction, as {@linkcode TxnWrite.bytes}
 * counts them: well under etcd's request limit (`--max-request-bytes`,
 * 1.5 MiB by default), since a record's attributes alone may take 24 KiB.
 * A larger write goes alone.
 */
export const BATCH_MAX_BYTES = 1024 * 1024;

/**
 * Most transactions in flight at once; writes wait only while all are in
 * flight. Under a storm they are, and batches fill; a few writers that
 * each wait for their last write (an agent's sessions register one
 * instance at a time) never wait for each other's transactions, and stay
 * in step: their next writes go together again. Several transactions in
 * flight also keep etcd's pipeline busy (several proposals per disk sync).
 */
export const BATCH_MAX_IN_FLIGHT = 4;

/** What a write does to its key. */
export type KeyChange =
  | {
    /** The value to store. */
    put: string;
    /** The lease to attach the key to. */
    lease: string;
  }
  | {
    /** Remove the key. */
    delete: true;
  };

/** What the key must be for a write to go ahead. */
export type KeyGuard =
  | {
    /** The key must not exist. */
    absent: true;
  }
  | {
    /** The key's modification revision must be this one. */
    modRevision: string;
  };

/** Options of {@linkcode keyWrite}. */
export interface KeyWriteOptions {
  /**
   * What the key must be for the write to go ahead; when it is not, the
   * write reads the key instead. Omit it for an unconditional write.
   */
  guard?: KeyGuard;
  /**
   * Abandons the write if this aborts before the write is sent: it then
   * rejects with the signal's reason, and nothing is written.
   */
  signal?: AbortSignal;
}

/** One write: a transaction of its own on one key. */
export interface TxnWrite {
  /** The key it writes. */
  readonly key: string;
  /** Its transaction: the guard's compare, the change, and a read of the key when the guard fails. */
  readonly txn: ITxnRequest;
  /** The lease its change attaches the key to; `""` for none. */
  readonly lease: string;
  /** Roughly what it adds to a request, in bytes. */
  readonly bytes: number;
  /** Abandons the write if it aborts before the write is sent. */
  readonly signal?: AbortSignal;
}

/** What became of a write. */
export interface TxnOutcome {
  /** Whether its guard held (always, without one): the change was made. */
  succeeded: boolean;
  /**
   * The store's revision after the transaction it went in; every write of
   * a batch has the same.
   */
  revision: number;
  /**
   * Its responses: the change's when it succeeded, else the read of the
   * key (`responses[0].response_range`).
   */
  responses: IResponseOp[];
}

/** Bytes a request spends per operation besides its key and value, roughly. */
const OP_OVERHEAD = 32;

/**
 * The transaction of one write on `key`.
 *
 * @example Usage
 * ```ts
 * import { keyWrite } from "./_etcd_write.ts";
 * const write = keyWrite("/discover/instances/cache/10.0.0.1:80", {
 *   put: '{"attrs":{},"owner":"o","registeredAt":1}',
 *   lease: "7587",
 * }, { guard: { absent: true } });
 * console.log(write.txn.compare?.length); // 1
 * ```
 *
 * @param key The key.
 * @param change What to do to it.
 * @param options The guard.
 * @returns The write.
 */
export function keyWrite(
  key: string,
  change: KeyChange,
  options: KeyWriteOptions = {},
): TxnWrite {
  const k = Buffer.from(key);
  const op: IRequestOp = "put" in change
    ? {
      request_put: {
        key: k,
        value: Buffer.from(change.put),
        lease: change.lease,
      },
    }
    : { request_delete_range: { key: k } };
  const { guard } = options;
  const compare: ICompare[] = guard === undefined
    ? []
    : "absent" in guard
    ? [{ key: k, target: "Create", result: "Equal", create_revision: 0 }]
    : [{
      key: k,
      target: "Mod",
      result: "Equal",
      mod_revision: guard.modRevision,
    }];
  const failure: IRequestOp[] = guard === undefined
    ? []
    : [{ request_range: { key: k } }];
  const ops = 1 + compare.length + failure.length;
  const value = "put" in change ? op.request_put!.value!.length : 0;
  return {
    key,
    txn: { compare, success: [op], failure },
    lease: "put" in change ? change.lease : "",
    bytes: ops * (k.length + OP_OVERHEAD) + value,
    ...(options.signal ? { signal: options.signal } : {}),
  };
}

/**
 * A write that waited to be sent while no transaction completed for the
 * whole deadline (etcd hangs or cannot be reached): it was never sent, so
 * nothing was written.
 *
 * @example Usage
 * ```ts
 * import { WriteTimeoutError } from "./_etcd_write.ts";
 * const error = new WriteTimeoutError("/discover/instances/a/h:1", 3000);
 * console.log(error.name); // "WriteTimeoutError"
 * ```
 */
export class WriteTimeoutError extends Error {
  /**
   * Creates the error.
   *
   * @param key The key of the write.
   * @param ms How long it waited, in milliseconds.
   */
  constructor(key: string, ms: number) {
    super(
      `the write of '${key}' timed out: no etcd transaction completed for ${ms} ms while it waited to be sent, and it was not sent`,
    );
    this.name = "WriteTimeoutError";
  }
}

/** Options of {@linkcode TxnBatcher}. */
export interface TxnBatcherOptions {
  /**
   * How long a queued write waits while no transaction completes, in
   * milliseconds (the deadline of an etcd call); it then fails with
   * {@linkcode WriteTimeoutError}. While transactions complete, the queue
   * drains and its writes wait as long as it takes.
   */
  timeout: number;
  /**
   * Most writes in one transaction.
   *
   * @default {BATCH_MAX_WRITES}
   */
  maxWrites?: number;
  /**
   * Most bytes of writes in one transaction.
   *
   * @default {BATCH_MAX_BYTES}
   */
  maxBytes?: number;
  /**
   * Most transactions in flight at once.
   *
   * @default {BATCH_MAX_IN_FLIGHT}
   */
  maxInFlight?: number;
  /** Where to log a limit lowered because etcd refused a transaction. */
  log?: BackendLogger;
}

interface Pending {
  write: TxnWrite;
  queuedAt: number;
  resolve: (outcome: TxnOutcome) => void;
  reject: (error: unknown) => void;
}

/** etcd's answers to a transaction over its limits (`--max-txn-ops`, `--max-request-bytes`). */
const TOO_MANY_OPS = /too many operations in txn request/;
const TOO_LARGE = /request is too large/;

/**
 * Sends writes to etcd in transactions of at most
 * {@linkcode BATCH_MAX_WRITES} writes and {@linkcode BATCH_MAX_BYTES}
 * bytes, without waiting on a timer: while fewer than
 * {@linkcode BATCH_MAX_IN_FLIGHT} transactions are in flight, what is
 * queued goes at once (the writes caused by one event together: they go
 * once its promise chains have run, before the next I/O); what arrives
 * while all are in flight waits for one to return, and goes together. A
 * batch of several writes is one outer transaction with no
 * compares whose operations are the writes' own transactions, so each
 * keeps its own guard and outcome; a batch of one is sent as it is.
 *
 * A batch that fails fails every write in it with the same error, as the
 * write alone would have. Except where the error may come from some
 * writes only: a lease etcd no longer knows fails the writes on that
 * lease and sends the others again; a transaction over etcd's limits is
 * sent again in halves, and the limit is lowered for the next ones. A
 * write of a key waits for the one before it (it neither shares its
 * batch nor is in flight with it), so they apply in the order given. A
 * queued write fails unsent ({@linkcode WriteTimeoutError}) once no
 * transaction has completed for `timeout` while it waited (etcd hangs or
 * is away), so a write fails within two deadlines at most: one queued,
 * one in flight.
 *
 * @example Usage
 * ```ts ignore
 * import { KVClient } from "etcd3";
 * import { clientPool } from "./_etcd_client.ts";
 * import { keyWrite, TxnBatcher } from "./_etcd_write.ts";
 * const writes = new KVClient(clientPool(client, { resend: false })!);
 * const batcher = new TxnBatcher((txn) => writes.txn(txn), { timeout: 3000 });
 * const { succeeded, revision } = await batcher.run(
 *   keyWrite("/k", { put: "v", lease: "0" }, { guard: { absent: true } }),
 * );
 * ```
 */
export class TxnBatcher {
  readonly #commit: (txn: ITxnRequest) => Promise<ITxnResponse>;
  readonly #timeout: number;
  readonly #maxInFlight: number;
  readonly #log?: BackendLogger;
  #maxWrites: number;
  #maxBytes: number;
  #queue: Pending[] = [];
  #head = 0;
  #queuedBytes = 0;
  #inFlight = 0;
  #scheduled = false;
  #timer?: ReturnType<typeof setTimeout>;
  /** When a transaction last completed. */
  #progress = 0;
  /** Keys of the writes in flight. */
  #busy = new Set<string>();

  /**
   * Creates the batcher.
   *
   * @param commit Sends one transaction to etcd, once: a transaction
   *   whose answer is lost must fail (its writes' outcome is unknown), not
   *   be sent again, where its guards would fail on its own changes
   *   (`txn` of a `KVClient` on `clientPool(client, { resend: false })`).
   * @param options The deadline of a queued write, the limits, the logger.
   */
  constructor(
    commit: (txn: ITxnRequest) => Promise<ITxnResponse>,
    options: TxnBatcherOptions,
  ) {
    this.#commit = commit;
    this.#timeout = options.timeout;
    this.#maxWrites = positive(
      "maxWrites",
      options.maxWrites,
      BATCH_MAX_WRITES,
    );
    this.#maxBytes = positive("maxBytes", options.maxBytes, BATCH_MAX_BYTES);
    this.#maxInFlight = positive(
      "maxInFlight",
      options.maxInFlight,
      BATCH_MAX_IN_FLIGHT,
    );
    this.#log = options.log;
  }

  /** Writes queued, not sent yet. */
  get queued(): number {
    return this.#queue.length - this.#head;
  }

  /** Transactions in flight. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Most writes of the next transaction (lowered when etcd refused more). */
  get maxWrites(): number {
    return this.#maxWrites;
  }

  /**
   * Sends `write` with whatever else is queued.
   *
   * @param write The write.
   * @returns What became of it; rejects as the transaction it went in did.
   */
  run(write: TxnWrite): Promise<TxnOutcome> {
    const { promise, resolve, reject } = Promise.withResolvers<TxnOutcome>();
    this.#queue.push({
      write,
      queuedAt: Date.now(),
      resolve,
      reject,
    });
    this.#queuedBytes += write.bytes;
    if (!this.#scheduled) {
      // Once the event that caused this write has run its course (every
      // promise it settled, however many steps): the writes it caused go
      // together. No timer: `setImmediate` runs before the next I/O wait.
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#flush();
      });
    }
    return promise;
  }

  #flush(): void {
    this.#expire();
    while (this.queued > 0 && this.#inFlight < this.#maxInFlight) {
      const batch = this.#take();
      if (batch.length === 0) break; // its key is in flight: it waits
      this.#inFlight++;
      for (const p of batch) this.#busy.add(p.write.key);
      void this.#send(batch).finally(() => {
        this.#inFlight--;
        for (const p of batch) this.#busy.delete(p.write.key);
        this.#flush();
      });
    }
    this.#arm();
  }

  /**
   * The next batch, from the head of the queue: it ends before a write of
   * a key already in it or in flight, which goes after those.
   */
  #take(): Pending[] {
    const batch: Pending[] = [];
    const keys = new Set<string>();
    let bytes = 0;
    while (this.queued > 0 && batch.length < this.#maxWrites) {
      const next = this.#queue[this.#head];
      if (next.write.signal?.aborted) {
        // Abandoned while it waited: never sent.
        this.#head++;
        this.#queuedBytes -= next.write.bytes;
        next.reject(next.write.signal.reason);
        continue;
      }
      const { key } = next.write;
      if (keys.has(key) || this.#busy.has(key)) break;
      if (batch.length > 0 && bytes + next.write.bytes > this.#maxBytes) break;
      batch.push(next);
      keys.add(next.write.key);
      bytes += next.write.bytes;
      this.#head++;
    }
    this.#queuedBytes -= bytes;
    this.#compact();
    return batch;
  }

  /**
   * When the oldest queued write fails: `timeout` after it was queued or
   * after the last transaction completed, whichever is later.
   */
  #deadline(): number {
    const oldest = this.#queue[this.#head].queuedAt;
    return Math.max(oldest, this.#progress) + this.#timeout;
  }

  /** Fails the queued writes past their deadline (the oldest are first). */
  #expire(): void {
    const now = Date.now();
    while (this.queued > 0 && this.#deadline() <= now) {
      const late = this.#queue[this.#head++];
      this.#queuedBytes -= late.write.bytes;
      late.reject(new WriteTimeoutError(late.write.key, this.#timeout));
    }
    this.#compact();
  }

  #compact(): void {
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /** A timer at the oldest queued write's deadline, while one is queued (early after progress: it looks again). */
  #arm(): void {
    if (this.queued === 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    } else if (this.#timer === undefined) {
      const wait = this.#deadline() - Date.now();
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#flush();
      }, Math.max(0, wait));
    }
  }

  async #send(batch: Pending[]): Promise<void> {
    let outcomes: TxnOutcome[];
    try {
      outcomes = await this.#transact(batch.map((p) => p.write));
      this.#progress = Date.now();
    } catch (error) {
      const parts = batch.length > 1 ? this.#split(batch, error) : undefined;
      if (parts) {
        await Promise.all(parts.map((part) => this.#send(part)));
      } else {
        for (const p of batch) p.reject(error);
      }
      return;
    }
    batch.forEach((p, i) => p.resolve(outcomes[i]));
  }

  async #transact(writes: TxnWrite[]): Promise<TxnOutcome[]> {
    if (writes.length === 1) {
      const res = await this.#commit(writes[0].txn);
      return [{
        succeeded: res.succeeded,
        revision: Number(res.header.revision),
        responses: res.responses,
      }];
    }
    const res = await this.#commit({
      compare: [],
      success: writes.map((w) => ({ request_txn: w.txn })),
      failure: [],
    });
    const revision = Number(res.header.revision);
    if (res.responses.length !== writes.length) {
      throw new Error(
        `etcd answered a transaction of ${writes.length} writes with ${res.responses.length} responses: nested transactions need etcd 3.3 or later`,
      );
    }
    return res.responses.map((r) => ({
      succeeded: r.response_txn.succeeded,
      revision,
      responses: r.response_txn.responses,
    }));
  }

  /**
   * The parts to send again when `error` may come from some writes of
   * `batch` only; `undefined` when it is the whole batch's.
   */
  #split(batch: Pending[], error: unknown): Pending[][] | undefined {
    if (error instanceof EtcdLeaseInvalidError) {
      // etcd checks only the leases a transaction uses: by lease, the
      // writes of an unknown one fail alone.
      const byLease = Map.groupBy(batch, (p) => p.write.lease);
      return byLease.size > 1 ? [...byLease.values()] : undefined;
    }
    const message = error instanceof Error ? error.message : "";
    const half = Math.ceil(batch.length / 2);
    if (TOO_MANY_OPS.test(message)) {
      if (half < this.#maxWrites) {
        this.#maxWrites = half;
        this.#log?.warn(
          `etcd refused a transaction of ${batch.length} writes (too many operations; etcd's --max-txn-ops); transactions hold at most ${half} writes from now on`,
        );
      }
    } else if (TOO_LARGE.test(message)) {
      const bytes = batch.reduce((sum, p) => sum + p.write.bytes, 0);
      const most = Math.max(1, Math.floor(bytes / 2));
      if (most < this.#maxBytes) {
        this.#maxBytes = most;
        this.#log?.warn(
          `etcd refused a transaction of ${bytes} bytes (request too large; etcd's --max-request-bytes); transactions hold at most ${most} bytes from now on`,
        );
      }
    } else {
      return undefined;
    }
    return [batch.slice(0, half), batch.slice(half)];
  }
}

function positive(name: string, value: number | undefined, fallback: number) {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(
      `'${name}' must be a whole number, at least 1: current value is ${value}`,
    );
  }
  return value;
}
