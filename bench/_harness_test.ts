// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  figure,
  percentile,
  readProc,
  settle,
  table,
  targetText,
} from "./_harness.ts";

Deno.test("percentile takes the nearest rank, whatever the order", () => {
  const samples = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
  assert.equal(percentile(samples, 50), 5);
  assert.equal(percentile(samples, 99), 10);
  assert.equal(percentile(samples, 100), 10);
  assert.equal(percentile(samples, 0), 1);
  assert.equal(percentile([7], 99), 7);
  assert.deepEqual(
    samples,
    [5, 1, 4, 2, 3, 10, 9, 8, 7, 6],
    "not sorted in place",
  );
  assert.throws(() => percentile([], 50), RangeError);
});

Deno.test("figure computes the ratio and judges each kind of target", () => {
  const atMost = figure({
    figure: "f",
    unit: "ms",
    value: 3,
    baseline: 2,
    baselineLabel: "b",
    target: { ratioAtMost: 1.5 },
  });
  assert.equal(atMost.ratio, 1.5);
  assert.equal(atMost.met, true);
  assert.equal(
    figure({ ...atMost, value: 3.1, target: { ratioAtMost: 1.5 } }).met,
    false,
  );
  const atLeast = { figure: "t", unit: "/s", baseline: 100 };
  assert.equal(
    figure({ ...atLeast, value: 49, target: { ratioAtLeast: 0.5 } }).met,
    false,
  );
  assert.equal(
    figure({ ...atLeast, value: 50, target: { ratioAtLeast: 0.5 } }).met,
    true,
  );
  assert.equal(
    figure({ figure: "s", unit: "ms", value: 999, target: { below: 1000 } })
      .met,
    true,
  );
  assert.equal(
    figure({ figure: "s", unit: "ms", value: 1000, target: { below: 1000 } })
      .met,
    false,
  );
  const zero = figure({
    figure: "w",
    unit: "/s",
    value: 0,
    baseline: 0,
    target: { equal: true },
  });
  assert.equal(zero.ratio, 1);
  assert.equal(zero.met, true);
  const more = figure({ ...zero, value: 0.5, target: { equal: true } });
  assert.equal(more.ratio, Infinity);
  assert.equal(more.met, false);
  const plain = figure({ figure: "p", unit: "ms", value: 1 });
  assert.equal(plain.ratio, undefined);
  assert.equal(plain.met, undefined);
});

Deno.test("table has a row per figure, with value, baseline, ratio, target and verdict", () => {
  const text = table([
    figure({
      figure: "1 thing p50",
      unit: "ms",
      value: 0.2,
      baseline: 0.1,
      baselineLabel: "echo",
      target: { ratioAtMost: 3 },
    }),
    figure({
      figure: "2 other",
      unit: "ms",
      value: 1500,
      target: { below: 1000 },
    }),
  ]);
  const lines = text.split("\n");
  assert.equal(lines.length, 4);
  assert.match(
    lines[0],
    /\| figure +\| value +\| baseline \(same run\) +\| ratio +\| target +\| met +\|/,
  );
  assert.match(
    lines[2],
    /\| 1 thing p50 +\| 0\.20 ms +\| 0\.10 ms \(echo\) +\| 2\.00x +\| ≤ 3x +\| yes +\|/,
  );
  assert.match(
    lines[3],
    /\| 2 other +\| 1,500 ms +\| - +\| - +\| < 1,000 ms +\| \*\*no\*\* +\|/,
  );
  assert.equal(targetText({ ratioAtLeast: 0.5 }, "/s"), "≥ 0.5x");
  assert.equal(targetText({ equal: true }, "/s"), "= baseline");
  assert.equal(targetText(undefined, "/s"), "-");
});

Deno.test("settle waits while a process keeps a core busy, and not once the machine is quiet enough", async () => {
  const cores = navigator.hardwareConcurrency;
  const spin = new Deno.Command("sh", {
    args: ["-c", "while :; do :; done"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    // One busy core of `cores` is above a threshold of half a core.
    const busy = await settle({
      busyBelow: 0.5 / cores,
      sampleMs: 300,
      maxMs: 1_200,
    });
    assert.ok(busy.waitedMs >= 1_200, `waited only ${busy.waitedMs} ms`);
    assert.ok(
      busy.busy !== undefined && busy.busy >= 0.8 / cores,
      `busy ${busy.busy} with a spinning process on ${cores} cores`,
    );
  } finally {
    spin.kill("SIGKILL");
    await spin.status;
  }
  // Anything below all of the machine counts as quiet here: one sample.
  const quiet = await settle({ busyBelow: 1.01, sampleMs: 300, maxMs: 10_000 });
  assert.notEqual(quiet.busy, undefined);
  assert.ok(quiet.waitedMs < 5_000, `waited ${quiet.waitedMs} ms`);
});

Deno.test("readProc reads /proc files in order, and names a file it cannot read", async () => {
  const text = await readProc(["/proc/stat", "/proc/loadavg"]);
  assert.match(text, /^cpu /);
  // /proc/loadavg: three averages, running/total tasks, last pid.
  assert.match(text, /\n[\d.]+ [\d.]+ [\d.]+ \d+\/\d+ \d+\n$/);
  await assert.rejects(
    readProc(["/proc/no-such-file"]),
    /could not read \/proc\/no-such-file: .*No such file/,
  );
});
