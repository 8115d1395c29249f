// Copyright the discover authors. BSD-3-Clause license.

/**
 * Running Node.js from the tests: the tests/node/ package (npm `ws` from
 * its lockfile, installed once), commands with a deadline, Node's
 * WebSocket flag, and its test runner's TAP summary.
 *
 * Needs `node` (or the path in `NODE`) and `npm` on PATH.
 *
 * @module
 */

import assert from "node:assert/strict";

/** The tests/node/ package directory, with a trailing slash. */
export const NODE_DIR = new URL("./node/", import.meta.url).pathname;
/** The Node.js executable: `NODE`, or `node` on PATH. */
export const NODE = Deno.env.get("NODE") ?? "node";

const decoder = new TextDecoder();

/**
 * Runs a command to its end (2 minutes at most), with its output.
 *
 * @example Usage
 * ```ts ignore
 * const { code, out } = await run(NODE, ["--version"]);
 * ```
 *
 * @param command The executable.
 * @param args Its arguments.
 * @param options More `Deno.Command` options (env, clearEnv...).
 * @returns Its exit code, and its standard output then error.
 */
export async function run(
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
  return {
    code: output.code,
    out: decoder.decode(output.stdout) + decoder.decode(output.stderr),
  };
}

/**
 * Installs npm `ws` into tests/node/node_modules unless it is there.
 *
 * @example Usage
 * ```ts ignore
 * await installWs();
 * ```
 */
export async function installWs(): Promise<void> {
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

/**
 * The flag Node 20 and 21 need for their global WebSocket (none after).
 *
 * @example Usage
 * ```ts ignore
 * await run(NODE, [...await websocketFlag(), "client.mjs"]);
 * ```
 *
 * @returns The flags.
 */
export async function websocketFlag(): Promise<string[]> {
  const { code, out } = await run(NODE, ["--version"]);
  assert.equal(code, 0, out);
  const major = Number(/^v(\d+)/.exec(out.trim())?.[1]);
  return major < 22 ? ["--experimental-websocket"] : [];
}

/**
 * Reads a `# name N` count from a TAP summary of Node's test runner.
 *
 * @example Usage
 * ```ts ignore
 * assert.equal(tapCount(out, "fail"), 0);
 * ```
 *
 * @param tap The runner's output.
 * @param name The count (`tests`, `pass`, `fail`...).
 * @returns The number.
 */
export function tapCount(tap: string, name: string): number {
  const match = new RegExp(`^# ${name} (\\d+)$`, "m").exec(tap);
  assert.ok(match, `no '# ${name}' line in Node's TAP output:\n${tap}`);
  return Number(match[1]);
}
