// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { AGENT_RUN_ARGS, AGENT_V8_FLAGS } from "./agent_command.ts";

const config = JSON.parse(
  await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
) as { tasks: Record<string, string> };

Deno.test("discoverd runs with the same V8 flags from source, from the start task and compiled", () => {
  assert.match(AGENT_V8_FLAGS, /^--v8-flags=\S+$/);
  assert.ok(AGENT_RUN_ARGS.includes(AGENT_V8_FLAGS), AGENT_RUN_ARGS.join(" "));
  for (const task of ["start", "compile"]) {
    const words = config.tasks[task].split(/\s+/);
    assert.ok(words.includes(AGENT_V8_FLAGS), `${task}: ${config.tasks[task]}`);
  }
});

Deno.test("the agent's run arguments end with agent.ts, for its flags to follow", () => {
  assert.equal(AGENT_RUN_ARGS[0], "run");
  assert.match(AGENT_RUN_ARGS.at(-1)!, /\/agent\.ts$/);
});
