// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 7, catch-up: a subscriber that missed 10,000 events resumes
 * with `since`; the time from its `discover.subscribe` until its `current`,
 * every missed event received. Baseline: the baseline server sending the
 * same number of frames of the same size to one connection. Rounds of both
 * alternate.
 *
 * @module
 */

import { spawnAgent } from "../tools/agent_process.ts";
import {
  addrOf,
  type Bench,
  figure,
  openRaw,
  percentile,
  type RawSocket,
  registerRange,
  spawnBaseline,
} from "./_harness.ts";

const SERVICE = "bench-catch-up";
const INSTANCES = 100;

/** Receives frames until one contains `marker`; returns how many came. */
async function until(socket: RawSocket, marker: string): Promise<number> {
  for (let n = 1;; n++) {
    if ((await socket.next()).includes(marker)) return n;
  }
}

/** `count` attribute changes, spread over the instances. */
function churn(writer: RawSocket, count: number, round: number) {
  return registerRange(writer, [0, count], (i) => ({
    service: SERVICE,
    addr: addrOf(i % INSTANCES),
    attrs: { v: `${round}-${i}` },
  }));
}

/** Runs benchmark 7. */
export const catchUp: Bench = async ({ quick, log }) => {
  const missed = quick ? 1_000 : 10_000;
  const rounds = quick ? 2 : 5;
  await using agent = await spawnAgent(["--log-level", "warn"]);
  await using server = await spawnBaseline(5);
  const writer = await openRaw(agent.url);
  const base = await openRaw(server.url);
  const times: number[] = [], baseTimes: number[] = [];
  let frames = 0;
  try {
    await registerRange(writer, [0, INSTANCES], (i) => ({
      service: SERVICE,
      addr: addrOf(i),
    }));
    for (let round = 0; round < rounds + 1; round++) {
      // Subscribe, note where we are, and go away.
      const reader = await openRaw(agent.url);
      reader.send(JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "discover.subscribe",
        params: { service: SERVICE },
      }));
      const { result } = JSON.parse(await reader.next());
      let current = "";
      for (;;) {
        const frame = await reader.next();
        if (frame.includes('"current"')) {
          current = frame;
          break;
        }
      }
      const since = JSON.parse(current).params.result.revision;
      reader.close();

      await churn(writer, missed, round);

      // Resume.
      const again = await openRaw(agent.url);
      let started = performance.now();
      again.send(JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "discover.subscribe",
        params: { service: SERVICE, since, epoch: result.epoch },
      }));
      frames = await until(again, '"current"');
      const t = performance.now() - started;
      again.close();
      if (frames < missed) {
        throw new Error(
          `the resume delivered ${frames} frames for ${missed} missed events: not a replay`,
        );
      }

      const frame = JSON.stringify({
        jsonrpc: "2.0",
        method: "discover.event",
        params: {
          subscription: "1",
          result: {
            kind: "update",
            revision: since + missed,
            instance: {
              id: `${SERVICE}/${addrOf(INSTANCES - 1)}`,
              service: SERVICE,
              addr: addrOf(INSTANCES - 1),
              attrs: { v: `${round}-${missed - 1}` },
              revision: since + missed,
              registeredAt: Date.now(),
            },
          },
        },
      });
      started = performance.now();
      base.send(JSON.stringify({ stream: frames, frame }));
      for (let i = 0; i < frames; i++) await base.next();
      const b = performance.now() - started;
      if (round > 0) { // the first round warms up
        times.push(t);
        baseTimes.push(b);
      }
    }
  } finally {
    writer.close();
    base.close();
  }
  log(`7: ${rounds} resumes after ${missed} missed events`);
  return [figure({
    figure: `7 catch-up after ${missed.toLocaleString("en-US")} missed events`,
    unit: "ms",
    value: percentile(times, 50),
    baseline: percentile(baseTimes, 50),
    baselineLabel: `bare server, ${frames.toLocaleString("en-US")} frames`,
    note: `${frames} frames (events and current); median of ${rounds}`,
  })];
};
