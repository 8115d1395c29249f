// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 3, registration throughput through one agent (memory backend):
 * 8 concurrent clients, each registering and unregistering in a loop, one
 * call at a time. Baseline: 8 raw sockets sending the same request frames to
 * the baseline server, one at a time each. Rounds of both alternate.
 *
 * And the cost of the agent's metrics and of access rules: the same load on
 * three more agents started together, one with the defaults (metrics on, no
 * access rules), one with `--metrics off`, one with `--acl` whose clients
 * each present a token with write access to the service first
 * (`discover.authenticate`). Short spans on each alternate, in every order
 * in turn, so that all three have served as much load at any time; each
 * figure is the median of the rounds' ratios (defaults / `--metrics off`,
 * `--acl` / defaults), so that a busy spell of the machine weighs little.
 *
 * @module
 */

import { type Client, connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import {
  type Bench,
  type Figure,
  figure,
  openRaw,
  percentile,
  type RawSocket,
  spawnBaseline,
  type Target,
} from "./_harness.ts";

const CLIENTS = 8;
const SERVICE = "bench-throughput";

function request(id: number, method: string, port: number): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method,
    params: { service: SERVICE, addr: `127.0.0.1:${port}` },
  });
}

/**
 * Runs `pair` in a loop on every worker, one at a time each, for `ms`;
 * every pair is two calls (register, unregister). Returns calls per second.
 */
async function callsPerSecond<W>(
  workers: W[],
  ms: number,
  pair: (worker: W, port: number, i: number) => Promise<void>,
): Promise<number> {
  let calls = 0;
  const started = performance.now();
  const until = started + ms;
  await Promise.all(workers.map(async (worker, w) => {
    for (let i = 0; performance.now() < until; i++) {
      await pair(worker, 20_000 + w * 1000 + (i % 1000), i);
      calls += 2;
    }
  }));
  return calls / ((performance.now() - started) / 1000);
}

/** Through the client library. */
function ours(clients: Client[], ms: number): Promise<number> {
  return callsPerSecond(clients, ms, async (client, port) => {
    const addr = `127.0.0.1:${port}`;
    await client.register(SERVICE, addr);
    await client.unregister(SERVICE, addr);
  });
}

/** Round trips of the same frames to the baseline server. */
function baseline(sockets: RawSocket[], ms: number): Promise<number> {
  return callsPerSecond(sockets, ms, async (socket, port, i) => {
    socket.send(request(2 * i, "discover.register", port));
    await socket.next();
    socket.send(request(2 * i + 1, "discover.unregister", port));
    await socket.next();
  });
}

/**
 * The same load on agents that differ in one setting each, in short spans:
 * every round runs one span on each, in an order that changes from round to
 * round (each order in turn), so that a busy spell of the machine slows the
 * spans of a round alike, and every agent has served as much load as the
 * others by then (an agent that has served for longer is faster: a fresh
 * agent measured 0.74x of the same kind of agent 15 s of this load ahead).
 * Returns the calls per second of each agent's spans, by round.
 */
export async function alternate(
  sides: Client[][],
  options: { rounds: number; span: number },
): Promise<number[][]> {
  const n = sides.length;
  const out: number[][] = sides.map(() => []);
  for (let r = 0; r < options.rounds; r++) {
    // Rotation by r, reversed every other n rounds: every order of 2 or 3.
    const order = sides.map((_, k) => (r + k) % n);
    if (Math.floor(r / n) % 2 === 1) order.reverse();
    for (const k of order) out[k].push(await ours(sides[k], options.span));
  }
  return out;
}

/** Options of {@linkcode onVersusOff}. */
export interface OnVersusOffOptions {
  /** Milliseconds per span. */
  span: number;
  /** What the "off" side is, for the table. */
  baselineLabel: string;
  /** The target of the on/off ratio. */
  target: Target;
}

/**
 * The figure of two agents' spans from {@linkcode alternate}: the median of
 * the rounds' on/off ratios (a busy spell slows both spans of a round alike).
 */
export function onVersusOff(
  name: string,
  spans: { on: number[]; off: number[] },
  options: OnVersusOffOptions,
): Figure {
  const { on, off } = spans;
  const ratios = on.map((x, i) => x / off[i]);
  return figure({
    figure: name,
    unit: "x",
    value: percentile(ratios, 50),
    baseline: 1,
    baselineLabel: options.baselineLabel,
    target: options.target,
    note:
      `median of the on/off ratios of ${ratios.length} rounds of alternating ${options.span} ms spans (min ${
        Math.min(...ratios).toFixed(2)
      }, max ${Math.max(...ratios).toFixed(2)}); medians: on ${
        Math.round(percentile(on, 50))
      }, off ${Math.round(percentile(off, 50))} calls/s`,
  });
}

/**
 * A file of access rules in a temporary directory, removed on disposal:
 * nothing without a token, and one token (returned) with write access to
 * the service the load uses.
 */
async function aclFile(): Promise<
  AsyncDisposable & { path: string; token: string }
> {
  const hex = (bytes: Uint8Array) =>
    Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const token = hex(crypto.getRandomValues(new Uint8Array(32)));
  const sha256 = hex(
    new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)),
    ),
  );
  const dir = await Deno.makeTempDir({ prefix: "discover-bench-acl-" });
  const path = `${dir}/acl.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      default: "deny",
      tokens: [{
        name: "bench",
        sha256,
        rules: [{ service: SERVICE, access: "write" }],
      }],
    }),
  );
  return {
    path,
    token,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Runs benchmark 3. */
export const throughput: Bench = async ({ quick, log }) => {
  const rounds = quick ? 2 : 6;
  const ms = quick ? 300 : 1500;
  const spanRounds = quick ? 6 : 24;
  const span = quick ? 150 : 500;
  const quiet = ["--log-level", "warn"];
  await using rules = await aclFile();
  await using agent = await spawnAgent(quiet);
  // The agents compared: the same history each (see alternate()).
  await using metered = await spawnAgent(quiet);
  await using unmetered = await spawnAgent([...quiet, "--metrics", "off"]);
  await using guarded = await spawnAgent([...quiet, "--acl", rules.path]);
  await using server = await spawnBaseline(5);
  const open = (url: string, token?: string) =>
    Promise.all(
      Array.from(
        { length: CLIENTS },
        () => connect(url, token === undefined ? {} : { token }),
      ),
    );
  const clients = await open(agent.url);
  const metrics = await open(metered.url);
  const plain = await open(unmetered.url);
  // Each presents the token (discover.authenticate) before any other call.
  const authenticated = await open(guarded.url, rules.token);
  const sockets = await Promise.all(
    Array.from({ length: CLIENTS }, () => openRaw(server.url)),
  );
  try {
    await ours(clients, ms / 2); // warm-up
    await baseline(sockets, ms / 2);
    const base: number[] = [], mine: number[] = [];
    for (let r = 0; r < rounds; r++) {
      base.push(await baseline(sockets, ms));
      mine.push(await ours(clients, ms));
    }
    await alternate([metrics, plain, authenticated], {
      rounds: 3,
      span: ms / 6,
    }); // warm-up
    const [on, off, acl] = await alternate([metrics, plain, authenticated], {
      rounds: spanRounds,
      span,
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    log(
      `3: ${rounds} rounds of ${ms} ms each, ${spanRounds} rounds of ${span} ms spans`,
    );
    return [
      figure({
        figure: "3 registration throughput, 8 clients",
        unit: "calls/s",
        value: mean(mine),
        baseline: mean(base),
        baselineLabel: "echo round trips/s",
        target: { ratioAtLeast: 0.5 },
      }),
      onVersusOff("3 registration throughput, metrics on vs off", { on, off }, {
        span,
        baselineLabel: "the same agent with --metrics off",
        target: { ratioAtLeast: 0.95 },
      }),
      onVersusOff(
        "3 registration throughput, access rules on vs off",
        { on: acl, off: on },
        {
          span,
          baselineLabel: "the same agent without --acl",
          target: { ratioAtLeast: 0.9 },
        },
      ),
    ];
  } finally {
    await Promise.all(
      [...clients, ...metrics, ...plain, ...authenticated].map((c) =>
        c.close()
      ),
    );
    for (const s of sockets) s.close();
  }
};
