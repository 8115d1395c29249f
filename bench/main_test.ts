// Copyright the discover authors. BSD-3-Clause license.

/**
 * The suite at quick sizes, as `deno task bench --quick` runs it: every
 * benchmark runs and reports every figure. Speed is not asserted here; the
 * full run's table is where the targets are judged.
 */

import assert from "node:assert/strict";
import type { Results } from "./main.ts";

Deno.test({
  name:
    "deno task bench --quick runs every benchmark and writes the table and the JSON",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const json = `${dir}/results.json`;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["task", "bench", "--quick", "--json", json],
        cwd: new URL("..", import.meta.url).pathname,
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // A hang fails the test instead of the whole run.
      const timer = setTimeout(() => child.kill("SIGKILL"), 10 * 60_000);
      const out = await child.output();
      clearTimeout(timer);
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `the suite failed:\n${stdout}\n${stderr}`);
      const results: Results = JSON.parse(await Deno.readTextFile(json));
      assert.equal(results.quick, true);
      assert.ok(results.machine.cpus >= 1);
      const numbers = new Set(
        results.figures.map((f) => f.figure.split(" ")[0]),
      );
      assert.deepEqual([...numbers].sort((a, b) => Number(a) - Number(b)), [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "10",
        "11",
        "12",
        "13",
        "14",
        "15",
        "16",
      ]);
      for (const f of results.figures) {
        assert.ok(
          Number.isFinite(f.value) && f.value >= 0,
          `${f.figure}: value ${f.value}`,
        );
        if (f.baseline !== undefined && f.baseline > 0) {
          assert.ok(Math.abs(f.ratio! - f.value / f.baseline) < 1e-9, f.figure);
        }
        if (f.target) assert.equal(typeof f.met, "boolean", f.figure);
        // Every figure is a row of the printed table.
        assert.ok(stdout.includes(`| ${f.figure} `), `${f.figure} printed`);
      }
      // The figures every benchmark must report.
      for (
        const pattern of [
          /^1 local propagation p50$/,
          /^1 local propagation p99$/,
          /^2 cross-host propagation p50$/,
          /^2 cross-host propagation p99$/,
          /^3 registration throughput/,
          /^3 registration throughput, metrics on vs off$/,
          /^3 registration throughput, access rules on vs off$/,
          /^4 fan-out to .* subscribers p50$/,
          /^5 memory per session/,
          /^5 snapshot of .* instances to a new subscriber$/,
          /^6 etcd writes\/s, idle agent/,
          /^6 go-discover equivalent/,
          /^7 catch-up after .* missed events$/,
          /^5 memory held per instance/,
          /^8 .* registrations at once, until all are up at agent B$/,
          /^9 agent RSS, .* instances in etcd, .* sessions using .*$/,
          /^9 service list \(catalog\) of .* instances, through the agent$/,
          /^10 first subscriber to a service of .* instances in etcd$/,
          /^11 cross-host propagation p99, .* agents, .* changes\/s$/,
          /^11 agent CPU, mean per agent, .* agents, .* changes\/s$/,
          /^12 agent CPU, .* HTTP checks every .* s, all passing$/,
          /^12 etcd writes\/s, .* HTTP checks every .* s, all passing$/,
          /^12 failure to down at another agent's subscriber max$/,
          /^13 DNS queries\/s, A of .* instances$/,
          /^13 CPU per DNS answer, A of .* instances$/,
          /^13 DNS query latency p50, A of .* instances$/,
          /^13 DNS query latency p99, A of .* instances$/,
          /^13 DNS answer freshness p50, register at A -> resolves at B$/,
          /^13 DNS answer freshness p99, register at A -> resolves at B$/,
        ]
      ) {
        assert.ok(
          results.figures.some((f) => pattern.test(f.figure)),
          `a figure matching ${pattern}`,
        );
      }
      // An idle agent writes nothing to etcd, whatever it holds.
      for (const f of results.figures) {
        if (f.figure.startsWith("6 etcd writes/s")) assert.equal(f.value, 0);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
