// Copyright the discover authors. BSD-3-Clause license.

/**
 * The client under Node.js: bundles `mod.ts` (tools/bundle.ts), installs
 * npm `ws` into tests/node/ (from its lockfile, once), starts an agent
 * process and runs tests/node/client.mjs with Node's own test runner, then
 * requires the runner to report passes and no failures.
 *
 * Needs `node` (or the path in `NODE`) and `npm` on PATH.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bundleClient } from "../tools/bundle.ts";
import { spawnAgent } from "../tools/agent_process.ts";

const NODE_DIR = new URL("./node/", import.meta.url).pathname;
const NODE = Deno.env.get("NODE") ?? "node";

async function run(
  command: string,
  args: string[],
  options: Deno.CommandOptions = {},
): Promise<{ code: number; out: string }> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, {
      args,
      stdin: "null",
      signal: AbortSignal.timeout(120_000),
      ...options,
    }).output();
  } catch (error) {
    throw new Error(
      `cannot run '${command}' (${
        (error as Error).message
      }): the Node tests need Node.js and npm on PATH`,
    );
  }
  const text = new TextDecoder();
  return {
    code: output.code,
    out: text.decode(output.stdout) + text.decode(output.stderr),
  };
}

/** Installs npm `ws` into tests/node/node_modules unless it is there. */
async function installWs(): Promise<void> {
  try {
    await Deno.stat(`${NODE_DIR}node_modules/ws/package.json`);
    return;
  } catch { /* not installed yet */ }
  const { code, out } = await run("npm", [
    "ci",
    "--no-audit",
    "--no-fund",
    "--prefix",
    NODE_DIR,
  ]);
  assert.equal(code, 0, `npm ci in ${NODE_DIR} failed:\n${out}`);
}

/** Node 20 and 21 hide the global WebSocket behind a flag. */
async function websocketFlag(): Promise<string[]> {
  const { code, out } = await run(NODE, ["--version"]);
  assert.equal(code, 0, out);
  const major = Number(/^v(\d+)/.exec(out.trim())?.[1]);
  return major < 22 ? ["--experimental-websocket"] : [];
}

/** Reads a `# name N` count from a TAP summary. */
function tapCount(tap: string, name: string): number {
  const match = new RegExp(`^# ${name} (\\d+)$`, "m").exec(tap);
  assert.ok(match, `no '# ${name}' line in Node's TAP output`);
  return Number(match[1]);
}

Deno.test("the bundled client passes its tests under Node.js (global WebSocket and npm ws)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "discover-node-" });
  try {
    const { module } = await bundleClient(`${dir}/discover.mjs`);
    await installWs();
    await using agent = await spawnAgent();
    const { code, out } = await run(NODE, [
      ...await websocketFlag(),
      "--test",
      "--test-reporter=tap",
      `${NODE_DIR}client.mjs`,
    ], {
      env: { DISCOVER_URL: agent.url, DISCOVER_CLIENT: module },
    });
    console.log(out);
    const tests = tapCount(out, "tests");
    const pass = tapCount(out, "pass");
    const fail = tapCount(out, "fail");
    assert.ok(tests >= 4, `expected at least 4 Node tests, got ${tests}`);
    assert.equal(fail, 0, `Node's test runner reported ${fail} failures`);
    assert.equal(pass, tests, `only ${pass} of ${tests} Node tests passed`);
    assert.equal(code, 0, `node --test exited with ${code}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
