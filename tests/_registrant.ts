// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper program: a client in its own process, driven line by line on
 * standard input. Argument: the agent URL. Commands:
 * `register SERVICE PORT [KEY=VALUE...]` and `unregister SERVICE PORT`;
 * each prints `ok` once done (`ready` once connected).
 *
 * @module
 */

import { connect } from "../mod.ts";

const client = await connect(Deno.args[0]);
console.log("ready");
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let buffered = "";
for await (const chunk of lines) {
  buffered += chunk;
  let newline;
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const [command, service, port, ...pairs] = buffered.slice(0, newline)
      .trim().split(/\s+/);
    buffered = buffered.slice(newline + 1);
    if (command === "register") {
      const attrs = Object.fromEntries(pairs.map((p) => p.split("=", 2)));
      await client.register(service, Number(port), { attrs });
    } else if (command === "unregister") {
      await client.unregister(service, Number(port));
    } else {
      throw new Error(`unknown command: ${command}`);
    }
    console.log("ok");
  }
}
await client.close();
