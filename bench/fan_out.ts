// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 4, fan-out: one change delivered to 1,000 subscriber
 * connections of one agent; the time from the registration's send until the
 * last subscriber has its `up`. Baseline: the baseline server broadcasting
 * one frame of the same size to 1,000 connections, timed from the trigger's
 * send until the last one has it. Rounds of both alternate.
 *
 * @module
 */

import { spawnAgent } from "../tools/agent_process.ts";
import {
  type Bench,
  closeAll,
  figure,
  openMany,
  openRaw,
  percentile,
  type RawSocket,
  spawnBaseline,
} from "./_harness.ts";

/** Sockets that count the frames containing a marker. */
class Receivers {
  #count = 0;
  #want = 0;
  #marker = "";
  #done?: () => void;
  sockets: WebSocket[] = [];

  /** Opens `n` sockets; `onOpen` may send a subscription. */
  async open(url: string, n: number, onOpen?: (ws: WebSocket) => void) {
    this.sockets = await openMany(url, n, {
      onOpen: (ws) => {
        ws.onmessage = (e) => {
          if ((e.data as string).includes(this.#marker)) {
            if (++this.#count === this.#want) this.#done?.();
          }
        };
        onOpen?.(ws);
      },
    });
  }

  /**
   * Resolves once `n` frames (default: one per socket) containing `marker`
   * have arrived.
   */
  expect(marker: string, n = this.sockets.length): Promise<void> {
    this.#count = 0;
    this.#want = n;
    this.#marker = marker;
    return new Promise((resolve) => this.#done = resolve);
  }

  close() {
    return closeAll(this.sockets);
  }
}

/** Runs benchmark 4. */
export const fanOut: Bench = async ({ quick, log }) => {
  const subscribers = quick ? 100 : 1000;
  const rounds = quick ? 5 : 50;
  const service = "bench-fan-out";
  await using agent = await spawnAgent([
    "--log-level",
    "warn",
    "--max-sessions",
    String(subscribers + 10),
    // Every subscriber connects from the same loopback address.
    "--max-sessions-per-address",
    String(subscribers + 10),
  ]);
  await using server = await spawnBaseline(5);

  const ours = new Receivers();
  const subscribed = ours.expect('"current"', subscribers);
  await ours.open(agent.url, subscribers, (ws) =>
    ws.send(JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "discover.subscribe",
      params: { service },
    })));
  await subscribed;
  const base = new Receivers();
  await base.open(server.url, subscribers);
  const writer: RawSocket = await openRaw(agent.url);
  const trigger: RawSocket = await openRaw(server.url);
  log(`4: ${subscribers} subscribers on each side`);

  let id = 0;
  const call = async (method: string, port: number) => {
    writer.send(JSON.stringify({
      jsonrpc: "2.0",
      id: ++id,
      method,
      params: { service, addr: `127.0.0.1:${port}` },
    }));
    return await writer.next();
  };
  // One real event, to broadcast the same bytes in the baseline.
  let frame = "";
  const sample = (e: MessageEvent) => frame ||= e.data as string;
  ours.sockets[0].addEventListener("message", sample);
  let up = ours.expect('"up"');
  await call("discover.register", 20_000);
  await up;
  ours.sockets[0].removeEventListener("message", sample);
  let down = ours.expect('"down"');
  await call("discover.unregister", 20_000);
  await down;

  const times: number[] = [], baseTimes: number[] = [];
  try {
    for (let r = 0; r < rounds + 2; r++) {
      const got = base.expect('"up"');
      let started = performance.now();
      trigger.send(JSON.stringify({ broadcast: frame }));
      await got;
      const b = performance.now() - started;

      up = ours.expect('"up"');
      started = performance.now();
      const response = call("discover.register", 20_001 + r);
      await up;
      const t = performance.now() - started;
      await response;
      down = ours.expect('"down"');
      await call("discover.unregister", 20_001 + r);
      await down;
      if (r >= 2) { // two warm-up rounds
        times.push(t);
        baseTimes.push(b);
      }
    }
  } finally {
    writer.close();
    trigger.close();
    await Promise.all([ours.close(), base.close()]);
  }
  log(`4: ${rounds} rounds`);
  return [figure({
    figure: `4 fan-out to ${
      subscribers.toLocaleString("en-US")
    } subscribers p50`,
    unit: "ms",
    value: percentile(times, 50),
    baseline: percentile(baseTimes, 50),
    baselineLabel: "bare broadcast p50",
    target: { ratioAtMost: 1.5 },
  })];
};
