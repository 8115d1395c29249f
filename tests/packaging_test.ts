// Copyright the discover authors. BSD-3-Clause license.

/**
 * Packaging: `deno task bundle` makes a runtime-neutral, typed ES module of
 * the client, and `deno task compile` can make a single-binary agent: its
 * permissions are explicit and nothing in the agent reads files that sit
 * beside its source at run time (a compiled binary has no such files).
 *
 * @module
 */

import assert from "node:assert/strict";
import * as client from "../mod.ts";
import { runtimeSpecificReferences } from "../tools/bundle.ts";

const ROOT = new URL("../", import.meta.url);
const DENO = Deno.execPath();

async function run(
  args: string[],
  options: Deno.CommandOptions = {},
): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command(DENO, {
    args,
    cwd: ROOT.pathname,
    stdin: "null",
    signal: AbortSignal.timeout(120_000),
    ...options,
  }).output();
  const text = new TextDecoder();
  return {
    code: output.code,
    out: text.decode(output.stdout) + text.decode(output.stderr),
  };
}

async function tasks(): Promise<Record<string, string>> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  return config.tasks;
}

Deno.test("runtimeSpecificReferences() finds Deno, node: and CommonJS references", () => {
  assert.deepEqual(
    runtimeSpecificReferences("const a = 1;\nexport { a };"),
    [],
  );
  const found = runtimeSpecificReferences(
    'await Deno.readTextFile("x");\nimport fs from "node:fs";\nrequire("ws");\nprocess.exit(1);',
  );
  assert.equal(found.length, 4);
  assert.match(found[0], /^Deno\.\* at line 1/);
});

Deno.test("deno task bundle writes a typed ES module with exactly mod.ts's exports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "discover-bundle-" });
  try {
    const { code, out } = await run([
      "task",
      "bundle",
      "--output",
      `${dir}/discover.mjs`,
    ]);
    assert.equal(code, 0, out);
    const js = await Deno.readTextFile(`${dir}/discover.mjs`);
    const dts = await Deno.readTextFile(`${dir}/discover.d.mts`);
    assert.deepEqual(runtimeSpecificReferences(js), []);
    assert.deepEqual(runtimeSpecificReferences(dts), []);
    assert.doesNotMatch(js, /^\s*import\b/m, "the bundle imports nothing");

    const bundled = await import(`file://${dir}/discover.mjs`);
    assert.deepEqual(
      Object.keys(bundled).sort(),
      Object.keys(client).sort(),
    );
    assert.equal(bundled.ErrorCode.Timeout, client.ErrorCode.Timeout);

    // The declarations type a program that uses the bundle.
    await Deno.writeTextFile(
      `${dir}/use.ts`,
      `// @ts-types="./discover.d.mts"
import { connect, type Instance, type ServiceUpdate } from "./discover.mjs";
export async function use(url: string): Promise<ServiceUpdate | undefined> {
  const c = await connect(url, { requestTimeout: 1000 });
  const me: Instance = await c.register("a", 1, { attrs: { zone: "b" } });
  await using set = await c.services("a", { filter: { zone: me.attrs.zone } });
  for await (const u of set) return u;
}
// @ts-expect-error register resolves with an Instance, not a number
export const wrong: Promise<number> = (await connect("ws://x")).register("a", 1);
`,
    );
    const checked = await run(["check", "--no-config", `${dir}/use.ts`]);
    assert.equal(checked.code, 0, checked.out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task compile lists the agent's permissions explicitly", async () => {
  const compile = (await tasks()).compile;
  assert.match(compile, /^deno compile /);
  assert.match(compile, / agent\.ts$/);
  // Words as the shell passes them: quotes removed.
  const words = (task: string) =>
    task.split(/\s+/).map((w) => w.replace(/^'|'$/g, ""));
  const flags = words(compile).filter((w) => w.startsWith("-"));
  for (const broad of ["-A", "--allow-all"]) {
    assert.ok(!flags.includes(broad), `'${broad}' in: ${compile}`);
  }
  const allowed = flags.filter((f) => f.startsWith("--allow-"));
  assert.deepEqual(allowed.map((f) => f.replace(/=.*/, "")).sort(), [
    "--allow-env",
    "--allow-net",
    "--allow-read",
    "--allow-sys",
    "--allow-write",
  ]);
  // Environment and system access are scoped to what the agent reads.
  for (const scoped of ["--allow-env=", "--allow-sys="]) {
    assert.ok(
      allowed.some((f) => f.startsWith(scoped)),
      `'${scoped}...' in: ${compile}`,
    );
  }
  // The start task grants the same as the compiled agent.
  const start = (await tasks()).start;
  const startAllowed = words(start).filter((w) => w.startsWith("--allow-"));
  assert.deepEqual(startAllowed.sort(), [...allowed].sort());
});

Deno.test("deno task compile builds the agent's graph and takes its runtime from DENORT_BIN", async () => {
  // The runtime (denort) download is unreachable offline; pointing
  // DENORT_BIN at a missing file proves the task got past resolving and
  // type-checking agent.ts to the point of reading the runtime from it.
  const dir = await Deno.makeTempDir({ prefix: "discover-compile-" });
  try {
    const denort = `${dir}/no-such-denort`;
    const { code, out } = await run(["task", "compile"], {
      env: { DENORT_BIN: denort },
    });
    assert.notEqual(code, 0);
    assert.ok(
      out.includes(`Could not find denort at '${denort}'`),
      `expected deno compile to look for DENORT_BIN:\n${out}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Ways a module can read files at run time. A compiled binary holds the
 * module graph only, so such reads would find nothing beside the binary.
 */
const FILE_READS: [string, RegExp][] = [
  ["import.meta.url/dirname/filename", /import\.meta\.(url|dirname|filename)/],
  [
    "a Deno file read",
    /Deno\.(readFile|readTextFile|open|readDir|stat|lstat|realPath)(Sync)?\(/,
  ],
  ["a node:fs import", /["']node:fs/],
  ["fetch of a module-relative URL", /fetch\(\s*new URL\(/],
];

/** The allowed reads: files the operator names (etcd TLS files, the access rules). */
const ALLOWED = [
  { file: "agent.ts", line: "return await Deno.readFile(path);" },
  // The access rules file the operator names with --acl.
  { file: "agent/acl.ts", line: "text = await Deno.readTextFile(path);" },
  // The data directory the operator names with --data-dir.
  ...[
    "() => Deno.open(`${dir}/lock`, { create: true, write: true }),",
    "bytes = await Deno.readFile(path);",
    "() => Deno.open(tmp, { create: true, write: true, truncate: true }),",
    "const handle = await Deno.open(dir, { read: true });",
  ].map((line) => ({ file: "backends/_durable_log.ts", line })),
];

Deno.test("nothing in the agent's module graph reads files beside its source", async () => {
  const info = await new Deno.Command(DENO, {
    args: ["info", "--json", "agent.ts"],
    cwd: ROOT.pathname,
    stdin: "null",
    stderr: "inherit",
  }).output();
  assert.equal(info.code, 0, "deno info --json agent.ts failed");
  const graph = JSON.parse(new TextDecoder().decode(info.stdout)) as {
    modules: { specifier: string }[];
  };
  const own = graph.modules
    .map((m) => m.specifier)
    .filter((s) => s.startsWith(ROOT.href) && !s.includes("/node_modules/"));
  // The etcd backend is imported dynamically; it must be in the graph too.
  for (const expected of ["agent.ts", "agent/server.ts", "backends/etcd.ts"]) {
    assert.ok(own.includes(new URL(expected, ROOT).href), expected);
  }
  const found: string[] = [];
  for (const specifier of own) {
    const file = specifier.slice(ROOT.href.length);
    const lines = (await Deno.readTextFile(new URL(specifier))).split("\n");
    lines.forEach((text, i) => {
      const trimmed = text.trim();
      if (trimmed.startsWith("//") || trimmed.startsWith("*")) return;
      if (ALLOWED.some((a) => a.file === file && a.line === trimmed)) return;
      for (const [what, pattern] of FILE_READS) {
        if (pattern.test(text)) {
          found.push(`${file}:${i + 1}: ${what}: ${trimmed}`);
        }
      }
    });
  }
  assert.deepEqual(
    found,
    [],
    "a compiled agent has no files beside its source: embed the data in a module instead",
  );
});
