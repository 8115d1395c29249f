// Copyright the discover authors. BSD-3-Clause license.

/**
 * The other side of benchmark 2's baseline: a process that watches an etcd
 * prefix with `etcd3` and prints the key of every put it sees, a line each,
 * as soon as it sees it. The benchmark writes and reads those lines, so the
 * baseline crosses processes as the agents' path does.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env --allow-sys bench/_etcd_watcher.ts ENDPOINT PREFIX
 * ```
 *
 * Prints `watching` once the watch is established.
 *
 * @module
 */

import { Etcd3 } from "etcd3";

const [endpoint, prefix] = Deno.args;
const client = new Etcd3({ hosts: [endpoint] });
const watcher = await client.watch().prefix(prefix).create();
const encoder = new TextEncoder();
watcher.on("put", (kv) => {
  Deno.stdout.writeSync(encoder.encode(`${kv.key.toString()}\n`));
});
console.log("watching");
Deno.addSignalListener("SIGTERM", () => {
  client.close();
  Deno.exit(0);
});
