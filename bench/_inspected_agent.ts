// Copyright the discover authors. BSD-3-Clause license.

/**
 * An agent process whose memory a benchmark reads: its RSS once it has
 * stopped moving, and its RSS after a full garbage collection, which the
 * benchmark asks of the agent through V8's inspector (the agent runs with
 * `--inspect` on a free loopback port). The RSS right after a burst of work
 * counts much that the agent does not hold: garbage not collected yet, and
 * a young generation the collector grew during the burst.
 *
 * @module
 */

import {
  type AgentProcess,
  rssKiB,
  spawnServer,
} from "../tools/agent_process.ts";
import { AGENT_RUN_ARGS } from "../tools/agent_command.ts";
import { within } from "./_harness.ts";

/**
 * The RSS of a process once it has stopped moving much (by less than 256
 * KiB in half a second; at most 5 s), in KiB.
 *
 * @example Usage
 * ```ts ignore
 * import { settledRss } from "./_inspected_agent.ts";
 * const kib = await settledRss(agent.child.pid);
 * ```
 *
 * @param pid The process.
 * @returns RSS in KiB.
 */
export async function settledRss(pid: number): Promise<number> {
  let last = await rssKiB(pid);
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const now = await rssKiB(pid);
    if (Math.abs(now - last) < 256) return now;
    last = now;
  }
  return last;
}

/** An agent whose garbage the benchmark can have collected. */
export interface InspectedAgent extends AsyncDisposable {
  /** The agent. */
  readonly agent: AgentProcess;
  /** Runs a full garbage collection in the agent, and resolves with its RSS then, in KiB. */
  collectedRss(): Promise<number>;
}

/**
 * Starts the agent with `args` and V8's inspector on a free loopback port,
 * which only {@linkcode InspectedAgent.collectedRss} uses.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnInspectedAgent } from "./_inspected_agent.ts";
 * await using inspected = await spawnInspectedAgent(["--log-level", "warn"]);
 * console.log(await inspected.collectedRss(), "KiB");
 * ```
 *
 * @param args The agent's flags.
 * @returns The running agent.
 */
export async function spawnInspectedAgent(
  args: string[],
): Promise<InspectedAgent> {
  const [run, ...rest] = AGENT_RUN_ARGS;
  if (run !== "run") {
    throw new Error(`expected AGENT_RUN_ARGS to start with 'run': ${run}`);
  }
  const agent = await spawnServer([
    run,
    "--inspect=127.0.0.1:0",
    ...rest,
    "--listen",
    "127.0.0.1:0",
    "--advertise-host",
    "127.0.0.1",
    ...args,
  ]);
  // Deno says where the inspector listens on standard error, at start.
  let inspector: string | undefined;
  for (let i = 0; i < 100 && inspector === undefined; i++) {
    inspector = /Debugger listening on (ws:\/\/\S+)/.exec(agent.stderr())?.[1];
    if (inspector === undefined) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  if (inspector === undefined) {
    await agent.stop();
    throw new Error(
      `the agent did not say where its inspector listens: ${agent.stderr()}`,
    );
  }
  const url = inspector;
  return {
    agent,
    async collectedRss() {
      const ws = new WebSocket(url);
      try {
        await new Promise((resolve, reject) => {
          ws.onopen = resolve;
          ws.onerror = () => reject(new Error(`could not connect to ${url}`));
        });
        // Twice: what the first one finalizes, the second one frees.
        for (const id of [1, 2]) {
          const done = new Promise<void>((resolve, reject) => {
            ws.onmessage = (e) => {
              const reply = JSON.parse(e.data as string);
              if (reply.id !== id) return;
              if (reply.error) {
                reject(
                  new Error(
                    `the agent's inspector refused to collect garbage: ${
                      JSON.stringify(reply.error)
                    }`,
                  ),
                );
              } else resolve();
            };
          });
          ws.send(
            JSON.stringify({ id, method: "HeapProfiler.collectGarbage" }),
          );
          await within(done, 60_000, "a garbage collection in the agent");
        }
      } finally {
        ws.close();
      }
      return await settledRss(agent.child.pid);
    },
    [Symbol.asyncDispose]: () => agent[Symbol.asyncDispose](),
  };
}
