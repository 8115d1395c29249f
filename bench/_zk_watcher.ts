// Copyright the discover authors. BSD-3-Clause license.

/**
 * The other side of the ZooKeeper benchmark's baseline: a process that
 * watches the children of a znode with `node-zookeeper-client` (a one-shot
 * child watch, set again by each listing) and prints the name of every
 * child that appears, a line each, as soon as it sees it.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env --allow-sys bench/_zk_watcher.ts HOST:PORT PATH [--data]
 * ```
 *
 * Prints `watching` once the watch is set. With `--data`, a child's name is
 * printed once its data is read too (a child watch tells only names; a
 * client that needs what a znode holds reads it after the listing).
 *
 * @module
 */

// @ts-types="@types/node-zookeeper-client"
import zookeeper from "node-zookeeper-client";

const [connect, path, mode] = Deno.args;
/** `--data`: a child is printed once its data is read, as a client needs it. */
const readData = mode === "--data";
const client = zookeeper.createClient(connect, { sessionTimeout: 10_000 });
const encoder = new TextEncoder();
let known = new Set<string>();
let first = true;

function say(child: string) {
  Deno.stdout.writeSync(encoder.encode(`${child}\n`));
}

function list() {
  client.getChildren(path, () => list(), (error, children) => {
    if (error) throw error;
    for (const child of children) {
      if (known.has(child)) continue;
      if (!readData) say(child);
      else {
        client.getData(`${path}/${child}`, (error, data) => {
          if (!error && data && data.length > 0) say(child);
        });
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
