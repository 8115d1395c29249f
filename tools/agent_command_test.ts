// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { AGENT_RUN_ARGS, AGENT_V8_FLAGS } from "./agent_command.ts";

const FLAG = `--v8-flags=${AGENT_V8_FLAGS}`;
const MiB = 1024 * 1024;

/** The young generation's room, in bytes, as `deno` with `args` reports it at start and after a burst of garbage. */
async function youngRoom(args: string[]): Promise<[number, number]> {
  const code = `
    import v8 from "node:v8";
    const room = () => {
      const s = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space");
      return s.space_used_size + s.space_available_size;
    };
    const before = room();
    let keep = [];
    for (let i = 0; i < 200000; i++) {
      keep.push({ i, s: "x" + i });
      if (keep.length > 20000) keep = [];
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    console.log(JSON.stringify([before, room()]));
  `;
  const { code: status, stdout, stderr } = await new Deno.Command(
    Deno.execPath(),
    { args: ["eval", ...args, code], stdout: "piped", stderr: "piped" },
  ).output();
  const text = new TextDecoder().decode(stdout);
  assert.equal(status, 0, new TextDecoder().decode(stderr));
  return JSON.parse(text) as [number, number];
}

Deno.test("the start and compile tasks and AGENT_RUN_ARGS run the agent with AGENT_V8_FLAGS", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  ) as { tasks: Record<string, string> };
  for (const task of ["start", "compile"]) {
    const words = config.tasks[task].split(/\s+/);
    assert.ok(words.includes(FLAG), `deno task ${task}: ${config.tasks[task]}`);
    assert.ok(
      words.indexOf(FLAG) < words.indexOf("agent.ts"),
      `deno task ${task} gives the V8 flags to deno, not to the agent`,
    );
  }
  assert.equal(AGENT_RUN_ARGS[0], "run");
  assert.ok(AGENT_RUN_ARGS.includes(FLAG), AGENT_RUN_ARGS.join(" "));
});

Deno.test("AGENT_V8_FLAGS give the young generation a fixed room of 16 MiB", async () => {
  const [start, afterBurst] = await youngRoom([FLAG]);
  for (const room of [start, afterBurst]) {
    assert.ok(
      room >= 15 * MiB && room <= 16 * MiB,
      `young generation room ${room} bytes, not about 16 MiB`,
    );
  }
  // Without them V8 starts the young generation small and sizes it as it goes.
  const [plain] = await youngRoom([]);
  assert.ok(plain < 8 * MiB, `V8's own start: ${plain} bytes`);
});
