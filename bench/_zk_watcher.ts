// Copyright the discover authors. BSD-3-Clause license.

/**
 * The other side of the ZooKeeper benchmark's baseline: a process that
 * watches the children of a znode with `node-zookeeper-client` (a one-shot
 * child watch, set again by each listing) and prints the name of every
 * child that appears, a line each, as soon as it sees it.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env --allow-sys bench/_zk_watcher.ts HOST:PORT PATH
 * ```
 *
 * Prints `watching` once the watch is set.
 *
 * @module
 */

// @ts-types="@types/node-zookeeper-client"
import zookeeper from "node-zookeeper-client";

const [connect, path] = Deno.args;
const client = zookeeper.createClient(connect, { sessionTimeout: 10_000 });
const encoder = new TextEncoder();
let known = new Set<string>();
let first = true;

function list() {
  client.getChildren(path, () => list(), (error, children) => {
    if (error) throw error;
    for (const child of children) {
      if (!known.has(child)) {
        Deno.stdout.writeSync(encoder.encode(`${child}\n`));
      }
    }
    known = new Set(children);
    if (first) {
      first = false;
      console.log("watching");
    }
  });
}

client.once("connected", list);
client.connect();
Deno.addSignalListener("SIGTERM", () => {
  client.close();
  Deno.exit(0);
});
