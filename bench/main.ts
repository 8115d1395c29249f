// Copyright the discover authors. BSD-3-Clause license.

/**
 * The benchmark suite: `deno task bench` runs every benchmark, prints one
 * table (figure, value, same-run baseline, ratio, target) and writes the
 * results as JSON. Before each benchmark (not with `--quick`), it waits
 * until less than 15 % of the machine's CPU time is busy (for at most 30 s
 * and one sample; `settle` in `_harness.ts`), so that what one benchmark
 * leaves running does not land in the next one's rounds.
 *
 * ```sh
 * deno task bench                    # full sizes; bench/results.json
 * deno task bench --quick            # small sizes: checks the suite runs
 * deno task bench --only 1,4 --json /tmp/out.json
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type Bench,
  type Figure,
  readProc,
  settle,
  table,
} from "./_harness.ts";
import { propagation } from "./propagation.ts";
import { crossHost } from "./cross_host.ts";
import { throughput } from "./throughput.ts";
import { fanOut } from "./fan_out.ts";
import { scale } from "./scale.ts";
import { backendCost } from "./backend_cost.ts";
import { catchUp } from "./catch_up.ts";
import { registrationStorm } from "./registration_storm.ts";
import { fleetMemory } from "./fleet_memory.ts";
import { firstSubscriber } from "./first_subscriber.ts";
import { fleetAgents } from "./fleet_agents.ts";
import { healthChecks } from "./health_checks.ts";
import { dns } from "./dns.ts";
import { durable } from "./durable.ts";
import { zookeeperCrossHost } from "./zookeeper.ts";
import { leaderFailover } from "./leader_failover.ts";

/** The benchmarks, by number. */
export const BENCHMARKS: ReadonlyMap<string, Bench> = new Map([
  ["1", propagation],
  ["2", crossHost],
  ["3", throughput],
  ["4", fanOut],
  ["5", scale],
  ["6", backendCost],
  ["7", catchUp],
  ["8", registrationStorm],
  ["9", fleetMemory],
  ["10", firstSubscriber],
  ["11", fleetAgents],
  ["12", healthChecks],
  ["13", dns],
  ["14", durable],
  ["15", zookeeperCrossHost],
  ["16", leaderFailover],
]);

/** The machine the suite ran on. */
export interface Machine {
  /** CPU model, from /proc/cpuinfo. */
  cpu: string;
  /** Logical CPUs. */
  cpus: number;
  /** Total memory, in GiB. */
  memoryGiB: number;
  /** Operating system and Deno version. */
  os: string;
  /** `deno --version`, first line. */
  deno: string;
}

/** The JSON the suite writes. */
export interface Results {
  /** When the run started (ISO 8601). */
  started: string;
  /** Seconds the run took. */
  seconds: number;
  /** Whether sizes were small. */
  quick: boolean;
  /** The command line. */
  command: string;
  /** The machine. */
  machine: Machine;
  /** Every figure. */
  figures: Figure[];
}

async function machine(): Promise<Machine> {
  let cpu = "unknown";
  try {
    const info = await readProc(["/proc/cpuinfo"]);
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1] ?? cpu;
  } catch { /* not Linux */ }
  return {
    cpu,
    cpus: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    os: `${Deno.build.os} ${Deno.osRelease()} ${Deno.build.arch}`,
    deno: `deno ${Deno.version.deno}`,
  };
}

/**
 * Runs the selected benchmarks, prints the table and writes the JSON.
 *
 * @param args Command-line arguments.
 * @returns The results.
 */
export async function main(args: string[]): Promise<Results> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      json: { type: "string", default: "bench/results.json" },
    },
  });
  const selected = values.only?.split(",").map((s) => s.trim()) ??
    [...BENCHMARKS.keys()];
  for (const n of selected) {
    if (!BENCHMARKS.has(n)) {
      throw new RangeError(
        `--only: no benchmark '${n}'; choose from ${
          [...BENCHMARKS.keys()].join(", ")
        }`,
      );
    }
  }
  const started = new Date();
  const log = (line: string) =>
    console.error(
      `[${((Date.now() - started.getTime()) / 1000).toFixed(1)} s] ${line}`,
    );
  const figures: Figure[] = [];
  for (const n of selected) {
    if (values.quick) {
      log(`benchmark ${n}`);
    } else {
      const { busy, waitedMs } = await settle();
      log(
        `benchmark ${n} (machine ${
          busy === undefined
            ? "load unknown"
            : `${(busy * 100).toFixed(0)} % busy`
        } after ${(waitedMs / 1000).toFixed(1)} s of waiting for quiet)`,
      );
    }
    figures.push(...await BENCHMARKS.get(n)!({ quick: values.quick, log }));
  }
  const results: Results = {
    started: started.toISOString(),
    seconds: Math.round((Date.now() - started.getTime()) / 1000),
    quick: values.quick,
    command: `deno task bench ${args.join(" ")}`.trim(),
    machine: await machine(),
    figures,
  };
  const m = results.machine;
  console.log(table(figures));
  const notes = figures.filter((f) => f.note);
  if (notes.length > 0) console.log("");
  for (const f of notes) console.log(`- ${f.figure}: ${f.note}`);
  console.log(
    `\n${m.cpus} CPUs (${m.cpu}), ${m.memoryGiB} GiB, ${m.os}, ${m.deno}; ` +
      `${results.seconds} s${values.quick ? ", quick sizes" : ""}`,
  );
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(results, null, 2) + "\n",
  );
  console.log(`results written to ${values.json}`);
  return results;
}

if (import.meta.main) await main(Deno.args);
