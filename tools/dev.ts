// Copyright the discover authors. BSD-3-Clause license.

/**
 * `deno task dev`: a multi-host setup on one machine. Starts a local etcd
 * (from PATH, with a throwaway data directory) and two agents sharing it,
 * on ports 1111 and 1112, until Ctrl-C. Each line an agent prints is
 * prefixed with its name, `agent:PORT | `, on standard output or error as
 * the agent printed it; `--log-format json` and `--log-level LEVEL` are
 * passed on to the agents.
 *
 * ```sh
 * deno task dev                      # agents on 1111 and 1112
 * deno task dev --ports 2001,2002,2003
 * deno task dev --log-level debug
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startEtcd } from "./etcd.ts";
import { AGENT_RUN_ARGS } from "./agent_command.ts";

/**
 * Copies the lines of `stream` to `write`, each after `prefix`; a last
 * line without a line feed gets one.
 *
 * @param stream What a process prints.
 * @param prefix Put before each line.
 * @param write Where each prefixed line goes, with its line feed.
 */
async function prefixLines(
  stream: ReadableStream<Uint8Array>,
  prefix: string,
  write: (line: string) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) write(`${prefix}${line}\n`);
  }
  if (rest !== "") write(`${prefix}${rest}\n`);
}

/** Writes all of `text` to a standard stream at once. */
function writeAll(stream: typeof Deno.stdout, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let written = 0;
  while (written < bytes.length) {
    written += stream.writeSync(bytes.subarray(written));
  }
}

/** Parses `--ports`, or exits with a message. */
function ports(text: string): number[] {
  const list = text.split(",").map((p) => Number(p.trim()));
  if (list.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    console.error(`dev: --ports must be comma-separated ports: got '${text}'`);
    Deno.exit(2);
  }
  return list;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ports: { type: "string", default: "1111,1112" },
      ttl: { type: "string", default: "10" },
      "log-level": { type: "string", default: "info" },
      "log-format": { type: "string", default: "text" },
    },
  });
  let cluster;
  try {
    cluster = await startEtcd();
  } catch (error) {
    console.error(`dev: ${(error as Error).message}`);
    Deno.exit(1);
  }
  const endpoint = cluster.endpoints[0];
  const children = ports(values.ports!).map((port) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        ...AGENT_RUN_ARGS,
        "--backend",
        "etcd",
        "--etcd-endpoints",
        endpoint,
        "--listen",
        `127.0.0.1:${port}`,
        "--etcd-lease-ttl",
        values.ttl!,
        "--ttl",
        values.ttl!,
        "--log-level",
        values["log-level"]!,
        "--log-format",
        values["log-format"]!,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn()
  );
  // Each agent's lines, prefixed; an agent's status resolves once they
  // are all printed.
  const agents = children.map((child, i) => {
    const prefix = `agent:${ports(values.ports!)[i]} | `;
    const printed = Promise.all([
      prefixLines(child.stdout, prefix, (l) => writeAll(Deno.stdout, l)),
      prefixLines(child.stderr, prefix, (l) => writeAll(Deno.stderr, l)),
    ]);
    return {
      kill: (signal: Deno.Signal) => child.kill(signal),
      status: printed.then(() => child.status),
    };
  });
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const agent of agents) {
      try {
        agent.kill("SIGTERM");
      } catch { /* exited */ }
    }
    await Promise.all(agents.map((a) => a.status));
    await cluster.stop();
    Deno.exit(code);
  };
  Deno.addSignalListener("SIGINT", () => void stop(0));
  Deno.addSignalListener("SIGTERM", () => void stop(0));
  console.log(`dev: etcd at ${endpoint}`);
  // An agent answers before it reaches etcd (as not connected): the line
  // below is printed once both serve registrations.
  const exited = Promise.race(agents.map((a) => a.status));
  const serving = await Promise.race([
    Promise.all(ports(values.ports!).map(connected)).then(() => true),
    exited.then(() => false),
  ]);
  if (!serving) {
    console.error(`dev: an agent exited with code ${(await exited).code}`);
    await stop(1);
  }
  console.log(
    `dev: agents at ${
      ports(values.ports!).map((p) => `ws://127.0.0.1:${p}/`).join(" ")
    } (Ctrl-C stops everything)`,
  );
  // An agent that exits on its own (a port in use, say) ends the setup.
  const first = await exited;
  if (!stopping) {
    console.error(`dev: an agent exited with code ${first.code}; stopping`);
    await stop(1);
  }
}

/** Resolves once the agent on `port` answers `/healthz` with 200 (connected). */
async function connected(port: number): Promise<void> {
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
