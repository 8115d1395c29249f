// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend's full read: every key under a prefix, in pages of at
 * most {@linkcode READ_PAGE_KEYS} keys, all read at the revision of the
 * first page (one consistent snapshot, however large the registry). A
 * page that exceeds gRPC's message limit (4 MiB by default) is read again
 * at half the size, down to one key; the next page grows back. A registry
 * of any size can be read; a single record larger than the gRPC limit
 * cannot (the agent's frame limit keeps records far smaller).
 *
 * The pages of records are requested through the client's own connection
 * pool ({@linkcode rangeCall}) and decoded here from etcd's protobuf
 * ({@linkcode decodeRangeResponse}): the client's generic decoder costs
 * several times the read itself.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  type Etcd3,
  EtcdInvalidAuthTokenError,
  GRPCResourceExhastedError,
  type IRangeRequest,
  Range,
} from "etcd3";
import { clientPool } from "./_etcd_client.ts";
import type { StoredKeyValue } from "./_etcd_record.ts";

/** Most keys one page of the full read asks for. */
export const READ_PAGE_KEYS = 1000;

/** The key-values of a full read, in key order. */
export interface PageKeyValue extends StoredKeyValue {
  /** The key, as bytes. */
  key: Buffer;
}

/** One page, as etcd answers a range request. */
export interface Page {
  /** The store's revision and cluster id. */
  header: { revision: string | number; cluster_id: string | number };
  /** The keys of the page. */
  kvs: PageKeyValue[];
  /** Whether keys are left after the page. */
  more: boolean;
}

/**
 * Asks etcd for the keys in `[start, end)`, at most `limit` of them, at
 * `revision` when given.
 */
export type PageQuery = (
  start: Buffer,
  end: Buffer,
  limit: number,
  revision: string | undefined,
) => Promise<Page>;

/** The outcome of a full read. */
export interface FullRead {
  /** The revision every page was read at. */
  revision: number;
  /** The etcd cluster id. */
  clusterId: string;
  /** Every key-value under the prefix. */
  kvs: PageKeyValue[];
}

/** Options of {@linkcode readAll} and {@linkcode readPages}. */
export interface ReadOptions {
  /**
   * Read at this past revision instead of the current one (etcd keeps
   * revisions until it compacts them; an older one rejects).
   */
  revision?: number;
}

/**
 * Reads every key under `prefix` through `query`, page by page.
 *
 * @example Usage
 * ```ts ignore
 * import { readAll } from "./_etcd_read.ts";
 * const { revision, kvs } = await readAll("/discover/instances/", query);
 * ```
 *
 * @param prefix The key prefix.
 * @param query Runs one range request.
 * @param options A past revision to read at.
 * @returns The revision, the cluster id and the key-values.
 */
export async function readAll(
  prefix: string,
  query: PageQuery,
  options: ReadOptions = {},
): Promise<FullRead> {
  const kvs: PageKeyValue[] = [];
  const read = await readPages(prefix, query, {
    ...options,
    onPage: (page) => void kvs.push(...page),
  });
  return { ...read, kvs };
}

/** Options of {@linkcode readPages}. */
export interface ReadPagesOptions extends ReadOptions {
  /** Receives each page's key-values, in key order. */
  onPage(kvs: PageKeyValue[]): void;
  /**
   * Most keys a page asks for. etcd 3.4 looks at every key left in the
   * range for each limited page, so a read of `n` keys costs about
   * `n² / pageKeys`: a keys-only read, whose pages are small, asks for
   * more at a time.
   *
   * @default {READ_PAGE_KEYS}
   */
  pageKeys?: number;
}

/**
 * Reads every key under `prefix` through `query`, handing each page to
 * `onPage` without keeping it (a keys-only count of a large registry holds
 * one page at a time).
 *
 * @example Usage
 * ```ts ignore
 * import { readPages } from "./_etcd_read.ts";
 * let keys = 0;
 * await readPages("/discover/instances/", query, { onPage: (p) => keys += p.length });
 * ```
 *
 * @param prefix The key prefix.
 * @param query Runs one range request.
 * @param options Where pages go, and a past revision to read at.
 * @returns The revision and the cluster id.
 */
export async function readPages(
  prefix: string,
  query: PageQuery,
  options: ReadPagesOptions,
): Promise<Omit<FullRead, "kvs">> {
  const end = Range.prefix(prefix).end;
  let start: Buffer = Buffer.from(prefix);
  const pageKeys = options.pageKeys ?? READ_PAGE_KEYS;
  let limit = pageKeys;
  let revision = options.revision === undefined
    ? undefined
    : String(options.revision);
  let clusterId: string | undefined;
  for (;;) {
    let res: Page;
    try {
      res = await query(start, end, limit, revision);
    } catch (error) {
      if (tooLarge(error) && limit > 1) {
        limit = Math.max(1, limit >> 1);
        continue;
      }
      throw error;
    }
    revision ??= String(res.header.revision);
    clusterId ??= String(res.header.cluster_id);
    options.onPage(res.kvs);
    if (!res.more || res.kvs.length === 0) {
      return { revision: Number(revision), clusterId };
    }
    // The next page starts right after the last key read.
    start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.of(0)]);
    limit = Math.min(pageKeys, limit * 2);
  }
}

/**
 * Decodes etcd's `RangeResponse` from its protobuf bytes, straight into a
 * {@linkcode Page}: keys are views of `bytes` (nothing copied), values
 * are decoded to text, and revisions and lease ids are decimal strings,
 * exact over their whole 64 bits. The generic decoder of the gRPC client
 * builds an object per field, a `Long` per integer and a `Buffer` per
 * byte string, which costs several times the read itself for a page of
 * 1,000 keys.
 *
 * The fields read (etcd's `rpc.proto` and `kv.proto`, stable since etcd
 * 3.0): `header` (1: `cluster_id` 1, `revision` 3), `kvs` (2: `key` 1,
 * `create_revision` 2, `mod_revision` 3, `value` 5, `lease` 6) and
 * `more` (3); every other field is skipped.
 *
 * @example Usage
 * ```ts
 * import { decodeRangeResponse } from "./_etcd_read.ts";
 * // header {revision: 5}, more: true
 * const page = decodeRangeResponse(new Uint8Array([10, 2, 24, 5, 24, 1]));
 * console.log(page.header.revision, page.kvs.length, page.more); // "5" 0 true
 * ```
 *
 * @param bytes The response message, as gRPC received it.
 * @returns The page.
 * @throws {RangeError} When the bytes end inside a field.
 */
export function decodeRangeResponse(bytes: Uint8Array): Page {
  const reader = new ProtoReader(bytes);
  const header = { revision: "0", cluster_id: "0" };
  const kvs: PageKeyValue[] = [];
  let more = false;
  while (reader.pos < reader.end) {
    const tag = reader.uint();
    if (tag === HEADER_TAG) {
      const end = reader.length();
      while (reader.pos < end) {
        const field = reader.uint();
        if (field === CLUSTER_ID_TAG) header.cluster_id = reader.decimal(false);
        else if (field === REVISION_TAG) header.revision = reader.decimal();
        else reader.skip(field, end);
      }
    } else if (tag === KVS_TAG) {
      kvs.push(reader.keyValue(reader.length()));
    } else if (tag === MORE_TAG) {
      more = reader.uint() !== 0;
    } else {
      reader.skip(tag, reader.end);
    }
  }
  return { header, kvs, more };
}

/** Tags (field number and wire type) of the fields {@linkcode decodeRangeResponse} reads. */
const HEADER_TAG = (1 << 3) | 2,
  KVS_TAG = (2 << 3) | 2,
  MORE_TAG = 3 << 3,
  CLUSTER_ID_TAG = 1 << 3,
  REVISION_TAG = 3 << 3,
  KEY_TAG = (1 << 3) | 2,
  CREATE_REVISION_TAG = 2 << 3,
  MOD_REVISION_TAG = 3 << 3,
  VALUE_TAG = (5 << 3) | 2,
  LEASE_TAG = 6 << 3;

/** Reads protobuf's wire format from a buffer. */
class ProtoReader {
  readonly buf: Buffer;
  readonly end: number;
  pos = 0;
  /** Where the last lease id read starts and ends, and its text. */
  #lease = { start: 0, end: 0, text: "0" };

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.end = bytes.byteLength;
  }

  /** A varint of at most 53 bits (tags, lengths, booleans). */
  uint(): number {
    const buf = this.buf;
    let value = 0, scale = 1;
    for (;;) {
      if (this.pos >= this.end) throw truncated();
      const byte = buf[this.pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  }

  /** A varint (an int64, or a uint64 when not `signed`) as a decimal string, exact. */
  decimal(signed = true): string {
    const start = this.pos;
    const value = this.uint();
    if (this.pos - start <= 7) return String(value); // below 2^49
    let exact = 0n;
    for (let i = this.pos - 1; i >= start; i--) {
      exact = (exact << 7n) | BigInt(this.buf[i] & 0x7f);
    }
    return (signed ? BigInt.asIntN(64, exact) : exact).toString();
  }

  /** A length prefix: the end of what it covers. */
  length(): number {
    const length = this.uint();
    const end = this.pos + length;
    if (end > this.end) throw truncated();
    return end;
  }

  /** One `mvccpb.KeyValue`, ending at `end`. */
  keyValue(end: number): PageKeyValue {
    const buf = this.buf;
    const kv: PageKeyValue = {
      key: EMPTY,
      value: "",
      mod_revision: "0",
      create_revision: "0",
      lease: "0",
    };
    while (this.pos < end) {
      const tag = this.uint();
      if (tag === KEY_TAG) {
        const to = this.length();
        kv.key = buf.subarray(this.pos, to);
        this.pos = to;
      } else if (tag === VALUE_TAG) {
        const to = this.length();
        kv.value = buf.toString("utf8", this.pos, to);
        this.pos = to;
      } else if (tag === MOD_REVISION_TAG) {
        kv.mod_revision = this.decimal();
      } else if (tag === CREATE_REVISION_TAG) {
        kv.create_revision = this.decimal();
      } else if (tag === LEASE_TAG) {
        kv.lease = this.#leaseId();
      } else {
        this.skip(tag, end);
      }
    }
    return kv;
  }

  /** A lease id: the keys of one agent share it, so its text is made once. */
  #leaseId(): string {
    const last = this.#lease, buf = this.buf, start = this.pos;
    let i = 0;
    const length = last.end - last.start;
    while (i < length && buf[start + i] === buf[last.start + i]) i++;
    if (i === length && i > 0 && buf[start + i - 1] < 0x80) {
      this.pos = start + length;
      return last.text;
    }
    const text = this.decimal();
    this.#lease = { start, end: this.pos, text };
    return text;
  }

  /** Skips a field of the wire type in `tag`, which must end by `end`. */
  skip(tag: number, end: number): void {
    switch (tag & 7) {
      case 0:
        this.uint();
        break;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.length();
        break;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new RangeError(
          `unexpected protobuf wire type ${tag & 7} in an etcd range response`,
        );
    }
    if (this.pos > end) throw truncated();
  }
}

const EMPTY = Buffer.alloc(0);

function truncated(): RangeError {
  return new RangeError("an etcd range response ended inside a field");
}

/** A range request on its way: resolves with the decoded page. */
export type RangeCall = (
  request: IRangeRequest,
  deadline: number,
) => Promise<Page>;

/**
 * Range requests made as the client's own `kv.range` makes them (its
 * connection pool: the endpoint's fault handling, the retries of
 * recoverable errors, the authentication token), with the response decoded
 * by {@linkcode decodeRangeResponse}. A rejected token is left to the
 * client's own call, which gets a new one and tries again. `undefined`
 * when the client's pool is not the one this relies on (another version of
 * `etcd3`): then its own `kv.range` serves.
 *
 * @example Usage
 * ```ts ignore
 * import { rangeCall } from "./_etcd_read.ts";
 * const range = rangeCall(client);
 * const page = await range?.({ key, range_end }, Date.now() + 3000);
 * ```
 *
 * @param client The etcd client.
 * @returns The call, if the client allows it.
 */
export function rangeCall(client: Etcd3): RangeCall | undefined {
  // A read may be sent again.
  const pool = clientPool(client, { resend: true });
  if (!pool) return undefined;
  const own: RangeCall = (request, deadline) =>
    client.kv.range(request, { deadline }) as Promise<Page>;
  return async (request, deadline) => {
    if (pool.mockImpl) return own(request, deadline);
    try {
      return await pool.globalPolicy.execute(() =>
        pool.withConnection(
          "KV",
          // deno-lint-ignore no-explicit-any
          ({ client: kv, metadata }: { client: any; metadata: unknown }) =>
            new Promise<Page>((resolve, reject) => {
              const method = kv.range;
              kv.makeUnaryRequest(
                method.path,
                method.requestSerialize,
                decodeRangeResponse,
                request,
                metadata,
                { deadline },
                (error: Error | null, page: Page) =>
                  error ? reject(error) : resolve(page),
              );
            }),
        )
      );
    } catch (error) {
      if (!(error instanceof EtcdInvalidAuthTokenError)) throw error;
      return own(request, deadline);
    }
  };
}

/**
 * Whether an etcd call failed because its response exceeded gRPC's
 * message limit.
 *
 * @param error What the call rejected with.
 * @returns Whether it was too large.
 */
export function tooLarge(error: unknown): boolean {
  return error instanceof GRPCResourceExhastedError ||
    /RESOURCE_EXHAUSTED|larger than max/.test(String(error));
}
