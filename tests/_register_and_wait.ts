// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper program: registers one instance through the client module,
 * prints `registered`, and waits until it is killed. Arguments: agent URL,
 * service, port.
 *
 * @module
 */

import { connect } from "../mod.ts";

const [url, service, port] = Deno.args;
const client = await connect(url);
await client.register(service, Number(port), {
  attrs: { pid: String(Deno.pid) },
});
console.log("registered");
await new Promise(() => {}); // until killed
