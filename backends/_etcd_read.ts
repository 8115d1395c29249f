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
 * @module
 */

import { Buffer } from "node:buffer";
import { GRPCResourceExhastedError, Range } from "etcd3";
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
