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
import {
  installWs,
  NODE,
  NODE_DIR,
  run,
  tapCount,
  websocketFlag,
} from "./_node.ts";

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
