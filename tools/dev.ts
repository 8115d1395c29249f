// Copyright the discover authors. BSD-3-Clause license.

/**
 * `deno task dev`: a multi-host setup on one machine. Starts a local etcd
 * (from PATH, with a throwaway data directory) and two agents sharing it,
 * on ports 1111 and 1112, until Ctrl-C.
 *
 * ```sh
 * deno task dev                      # agents on 1111 and 1112
 * deno task dev --ports 2001,2002,2003
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startEtcd } from "./etcd.ts";
import { AGENT_RUN_ARGS } from "./agent_command.ts";

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
  const agents = ports(values.ports!).map((port) =>
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
      ],
      stdin: "null",
    }).spawn()
  );
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
