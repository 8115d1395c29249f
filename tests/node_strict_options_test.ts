// Copyright the discover authors. BSD-3-Clause license.

/**
 * The client's strict options as plain JavaScript sees them: bundles
 * `mod.ts`, starts an agent process and runs tests/node/strict_options.mjs
 * under Node.js's own test runner (Node 20 and 21 with
 * `--experimental-websocket`), then requires every Node test to pass.
 *
 * Needs `node` (or the path in `NODE`) on PATH.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bundleClient } from "../tools/bundle.ts";
import { spawnAgent } from "../tools/agent_process.ts";

const SCRIPT = new URL("./node/strict_options.mjs", import.meta.url).pathname;
const NODE = Deno.env.get("NODE") ?? "node";

async function node(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(NODE, {
      args,
      env,
      stdin: "null",
      signal: AbortSignal.timeout(120_000),
    }).output();
  } catch (error) {
    throw new Error(
      `cannot run '${NODE}' (${
        (error as Error).message
      }): the Node tests need Node.js on PATH`,
    );
  }
  const text = new TextDecoder();
  return {
    code: output.code,
    out: text.decode(output.stdout) + text.decode(output.stderr),
  };
}

Deno.test("plain JavaScript under Node.js: unknown options and bad URLs are TypeErrors, and nothing is registered", async () => {
  const version = await node(["--version"]);
  assert.equal(version.code, 0, version.out);
  const major = Number(/^v(\d+)/.exec(version.out.trim())?.[1]);
  const dir = await Deno.makeTempDir({ prefix: "discover-node-strict-" });
  try {
    const { module } = await bundleClient(`${dir}/discover.mjs`);
    await using agent = await spawnAgent();
    const { code, out } = await node([
      ...(major < 22 ? ["--experimental-websocket"] : []),
      "--test",
      "--test-reporter=tap",
      SCRIPT,
    ], { DISCOVER_URL: agent.url, DISCOVER_CLIENT: module });
    const count = (name: string) =>
      Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(out)?.[1]);
    assert.equal(code, 0, `node --test exited with ${code}:\n${out}`);
    assert.equal(count("tests"), 2, out);
    assert.equal(count("pass"), 2, out);
    assert.equal(count("fail"), 0, out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
