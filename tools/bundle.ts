// Copyright the discover authors. BSD-3-Clause license.

/**
 * Builds the client (`mod.ts`) as one ES module that Node.js and browsers
 * import as is: `dist/discover.mjs`, with its types in `dist/discover.d.mts`.
 * Uses `deno bundle` (offline: the client has no dependencies), then fails
 * if the output refers to `Deno.*`, `node:` modules, `require(` or
 * `process.`, which would tie it to one runtime.
 *
 * ```sh
 * deno task bundle                      # dist/discover.mjs
 * deno task bundle --output /tmp/x.mjs  # elsewhere
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Where `deno task bundle` writes the client by default. */
export const DEFAULT_OUTPUT = new URL("../dist/discover.mjs", import.meta.url);

const ENTRY = new URL("../mod.ts", import.meta.url);

/** Patterns that tie a module to one runtime, with a name for each. */
const RUNTIME_SPECIFIC: [string, RegExp][] = [
  ["Deno.*", /\bDeno\./],
  ["a node: import", /["']node:/],
  ["require(", /\brequire\(/],
  ["process.", /\bprocess\./],
];

/**
 * Lists the runtime-specific references in `code` (empty when it runs in
 * every runtime).
 *
 * @param code JavaScript or declaration text.
 * @returns One `"<what> at line <n>"` entry per offending line.
 */
export function runtimeSpecificReferences(code: string): string[] {
  const found: string[] = [];
  code.split("\n").forEach((line, i) => {
    for (const [what, pattern] of RUNTIME_SPECIFIC) {
      if (pattern.test(line)) found.push(`${what} at line ${i + 1}: ${line}`);
    }
  });
  return found;
}

/** What {@linkcode bundleClient} wrote. */
export interface BundleResult {
  /** The ES module. */
  module: string;
  /** Its type declarations. */
  declarations: string;
}

/**
 * Bundles `mod.ts` into `output` (and its declarations beside it, `.d.mts`)
 * and checks that the result is runtime-neutral.
 *
 * @param output Path of the `.mjs` file to write.
 * @returns The paths written.
 */
export async function bundleClient(
  output: string | URL = DEFAULT_OUTPUT,
): Promise<BundleResult> {
  const module = output instanceof URL ? output.pathname : output;
  if (!module.endsWith(".mjs")) {
    throw new TypeError(
      `'output' must end with .mjs (Node.js then loads it as an ES module): current value is '${module}'`,
    );
  }
  const declarations = module.replace(/\.mjs$/, ".d.mts");
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform=browser",
      "--format=esm",
      "--declaration",
      `--output=${module}`,
      ENTRY.pathname,
    ],
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(
      `deno bundle failed (exit ${code}):\n${new TextDecoder().decode(stderr)}`,
    );
  }
  for (const path of [module, declarations]) {
    const found = runtimeSpecificReferences(await Deno.readTextFile(path));
    if (found.length > 0) {
      throw new Error(
        `${path} must run in Deno, Node.js and browsers alike, but it has:\n  ${
          found.join("\n  ")
        }\nKeep client/ and protocol/ on Web-standard APIs.`,
      );
    }
  }
  return { module, declarations };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { output: { type: "string", short: "o" } },
    strict: true,
  });
  try {
    const { module, declarations } = await bundleClient(
      values.output ?? DEFAULT_OUTPUT,
    );
    console.log(`wrote ${module} and ${declarations}`);
  } catch (error) {
    console.error(`bundle: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
