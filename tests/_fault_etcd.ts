// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: evidence from etcd for a fault test's failure report: every
 * revision of one key (puts with their lease and value, deletes), and
 * whether each lease that held it is still alive. A record deleted while
 * its lease is still alive was deleted by a call, not by a lease expiry.
 *
 * @module
 */

import { Etcd3 } from "etcd3";
import type { EtcdCluster } from "../tools/etcd.ts";

/**
 * The history of `key` from etcd's first revision, one line per change,
 * then one line per lease that held it.
 *
 * @param client An etcd client.
 * @param key The key.
 * @param ms How long to wait for the history, at most.
 * @returns The lines.
 */
export async function keyHistory(
  client: Etcd3,
  key: string,
  ms = 2000,
): Promise<string[]> {
  const lines: string[] = [];
  const leases = new Set<string>();
  let last = Date.now();
  const watcher = await client.watch().key(key).startRevision("1")
    .withPreviousKV().create();
  try {
    watcher.on("data", () => last = Date.now());
    watcher.on("put", (kv) => {
      leases.add(String(kv.lease));
      lines.push(
        `rev ${kv.mod_revision} put, lease ${kv.lease}: ${kv.value.toString()}`,
      );
    });
    watcher.on("delete", (kv, previous) => {
      lines.push(
        `rev ${kv.mod_revision} delete (the record was on lease ${
          previous?.lease ?? "?"
        })`,
      );
    });
    // The replay arrives in one burst: wait until it has been quiet a while.
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && Date.now() - last < 400) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await watcher.cancel().catch(() => {});
  }
  for (const lease of leases) {
    if (lease === "0") continue;
    try {
      const res = await client.leaseClient.leaseTimeToLive({ ID: lease });
      const ttl = Number(res.TTL);
      lines.push(
        `lease ${lease}: ${ttl > 0 ? `alive (${ttl} s left)` : "gone"}`,
      );
    } catch (error) {
      lines.push(`lease ${lease}: ${String(error)}`);
    }
  }
  return lines;
}

/**
 * The addresses etcd itself holds for `service`, sorted.
 *
 * @param cluster The etcd cluster.
 * @param keyPrefix The agents' key prefix (`--etcd-prefix`).
 * @param service The service.
 * @returns The addresses.
 */
export async function etcdAddrs(
  cluster: EtcdCluster,
  keyPrefix: string,
  service: string,
): Promise<string[]> {
  const etcd = new Etcd3({ hosts: cluster.endpoints });
  try {
    const keys = await etcd.getAll().prefix(`${keyPrefix}instances/${service}/`)
      .keys();
    return keys.map((k) => k.slice(k.lastIndexOf("/") + 1)).sort();
  } finally {
    etcd.close();
  }
}
