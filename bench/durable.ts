// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 14, the memory backend with `--data-dir`:
 *
 * - Registration throughput as in benchmark 3 (8 clients, each registering
 *   and unregistering in a loop, one call at a time) on an agent with
 *   `--data-dir` against one without, started together: short spans on
 *   each alternate, and the figure is the median of the rounds' ratios.
 *   The rounds are spread over 4 pairs of fresh agents (`--quick`: one),
 *   started in turn in either order: in a run with the same agent on both
 *   sides, one side's median was 17 % below the other's, so one pair alone
 *   says as much about those two processes as about the data directory.
 *   Target: at least 0.9x.
 * - An agent restart (SIGTERM, then a new process on the same port) with
 *   N instances held by 10 clients and a subscriber of every service:
 *   the `down` and `up` events the subscriber sees from the restart until
 *   the grace TTL has passed, with `--data-dir` against the same restart
 *   without it. Target: none with it.
 *
 * @module
 */

import { type Client, connect } from "../mod.ts";
import { AGENT_RUN_ARGS } from "../tools/agent_command.ts";
import { type AgentProcess, spawnServer } from "../tools/agent_process.ts";
import { type BenchOptions, type Figure, figure } from "./_harness.ts";
import { alternate, onVersusOff } from "./throughput.ts";
import { freePort } from "../tools/_process.ts";
import { tempDir } from "../tools/_process.ts";

const CLIENTS = 8;
const OWNERS = 10;
/** Grace TTL of the restarted agents, in seconds. */
const TTL = 2;

/**
 * Starts the agent from source (on a free port unless `args` give
 * `--listen`), with `--data-dir dir` when given.
 */
function spawnWith(
  dir: string | undefined,
  args: string[],
): Promise<AgentProcess> {
  const script = AGENT_RUN_ARGS.at(-1)!;
  return spawnServer([
    ...AGENT_RUN_ARGS.slice(0, -1),
    ...(dir === undefined ? [] : [`--allow-write=${dir}`]),
    script,
    ...(args.includes("--listen") ? [] : ["--listen", "127.0.0.1:0"]),
    "--advertise-host",
    "127.0.0.1",
    "--log-level",
    "warn",
    ...(dir === undefined ? [] : ["--data-dir", dir]),
    ...args,
  ]);
}

/** Polls `condition` every 20 ms until it holds, or throws after `ms`. */
async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms: number,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** What a subscriber saw across one restart. */
interface RestartResult {
  /** `down` and `up` events from the restart until the grace TTL passed. */
  flaps: number;
  /** Milliseconds from the stop to every owner holding its instances again. */
  restoreMs: number;
}

/**
 * Registers `n` instances through {@linkcode OWNERS} clients, restarts the
 * agent on the same port, and counts what a subscriber of `"*"` sees.
 */
async function restart(n: number, durable: boolean): Promise<RestartResult> {
  await using dir = await tempDir("discover-bench-durable-");
  const port = freePort();
  const args = ["--listen", `127.0.0.1:${port}`, "--ttl", String(TTL)];
  const data = durable ? dir.path : undefined;
  let agent = await spawnWith(data, args);
  const fast = { reconnect: { initialDelay: 50, maxDelay: 300 } };
  const clients: Client[] = [];
  try {
    const owners = await Promise.all(
      Array.from({ length: OWNERS }, () => connect(agent.url, fast)),
    );
    clients.push(...owners);
    await Promise.all(owners.map(async (owner, o) => {
      for (let i = o; i < n; i += OWNERS) {
        await owner.register("bench-restart", 30_000 + i);
      }
    }));
    const watcher = await connect(agent.url, fast);
    clients.push(watcher);
    const set = await watcher.services("*");
    await waitFor(() => set.online().length === n, "the set is full", 30_000);
    let flaps = 0;
    set.addEventListener("update", (event) => {
      const { kind } = event as unknown as { kind: string };
      if (kind === "down" || kind === "up") flaps++;
    });
    const stopped = performance.now();
    await agent.stop();
    agent = await spawnWith(data, args);
    await waitFor(
      () =>
        set.connected &&
        owners.every((owner) =>
          owner.state === "connected" &&
          owner.registrations().every((r) => r.state === "registered")
        ),
      "every owner registered its instances again",
      60_000,
    );
    const restoreMs = performance.now() - stopped;
    // Anything not taken over would go down once the grace TTL passed.
    await new Promise((resolve) => setTimeout(resolve, TTL * 1000 + 1000));
    return { flaps, restoreMs };
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await agent.stop();
  }
}

/**
 * One pair of fresh agents, one with `--data-dir` and one without (started
 * first when `keptFirst`), each with {@linkcode CLIENTS} clients: warmed
 * up, then loaded in alternating spans. Returns each side's calls per
 * second in each span, and the data file's size after the load.
 */
async function loadPair(
  keptFirst: boolean,
  options: { rounds: number; span: number },
): Promise<[{ spans: number[]; size: number }, { spans: number[] }]> {
  await using dir = await tempDir("discover-bench-durable-");
  await using first = await spawnWith(keptFirst ? dir.path : undefined, []);
  await using second = await spawnWith(keptFirst ? undefined : dir.path, []);
  const [kept, plain] = keptFirst ? [first, second] : [second, first];
  const clients: Client[] = [];
  /** Connects {@linkcode CLIENTS} clients; all are closed at the end, even when one fails. */
  const open = async (url: string) => {
    const settled = await Promise.allSettled(
      Array.from({ length: CLIENTS }, () => connect(url)),
    );
    const opened = settled.flatMap((s) =>
      s.status === "fulfilled" ? [s.value] : []
    );
    clients.push(...opened);
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    return opened;
  };
  try {
    const sides = [await open(kept.url), await open(plain.url)];
    await alternate(sides, { rounds: 2, span: options.span }); // warm-up
    const [on, off] = await alternate(sides, options);
    const size = (await Deno.stat(`${dir.path}/discover.log`)).size;
    return [{ spans: on, size }, { spans: off }];
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/**
 * Runs benchmark 14.
 *
 * @example Usage
 * ```ts ignore
 * import { durable } from "./durable.ts";
 * const figures = await durable({ quick: true, log: console.error });
 * ```
 *
 * @param options Small sizes or not, and where to say what it does.
 * @returns The figures.
 */
export async function durable(options: BenchOptions): Promise<Figure[]> {
  const { quick, log } = options;
  const spanRounds = quick ? 6 : 24;
  const span = quick ? 150 : 500;
  const n = quick ? 100 : 1000;
  const pairs = quick ? 1 : 4;
  const on: number[] = [], off: number[] = [];
  let size = 0;
  for (let p = 0; p < pairs; p++) {
    const [a, b] = await loadPair(p % 2 === 1, {
      rounds: spanRounds / pairs,
      span,
    });
    on.push(...a.spans);
    off.push(...b.spans);
    size = a.size;
  }
  log(
    `14: ${pairs} pair${pairs === 1 ? "" : "s"} of fresh agents, ${
      spanRounds / pairs
    } rounds each; data file ${Math.round(size / 1024)} KiB after a load`,
  );
  const throughput = onVersusOff(
    "14 registration throughput, --data-dir vs none",
    { on, off },
    {
      span,
      baselineLabel: "the same load on an agent without --data-dir",
      target: { ratioAtLeast: 0.9 },
    },
  );
  const without = await restart(n, false);
  const withDir = await restart(n, true);
  log(
    `14: ${spanRounds} rounds of ${span} ms spans; restarts with ${n} instances`,
  );
  return [
    throughput,
    figure({
      figure:
        `14 agent restart with ${n} instances: down/up events at a subscriber`,
      unit: "events",
      value: withDir.flaps,
      baseline: without.flaps,
      baselineLabel: "the same restart without --data-dir",
      target: { below: 1 },
      note: `every owner held its instances again ${
        Math.round(withDir.restoreMs)
      } ms after the stop with --data-dir (${
        Math.round(without.restoreMs)
      } ms without); events counted until the grace TTL (${TTL} s) had passed`,
    }),
  ];
}
