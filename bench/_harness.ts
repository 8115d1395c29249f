// Copyright the discover authors. BSD-3-Clause license.

/**
 * What every benchmark shares: the shape of a result, percentiles, the
 * baseline server, raw WebSocket helpers, process memory, and the table.
 *
 * @module
 */

import { type AgentProcess, spawnServer } from "../tools/agent_process.ts";
export { etcdAgentArgs } from "../tools/etcd.ts";

/** How a figure is judged against its baseline or on its own. */
export type Target =
  /** value / baseline at most this. */
  | { ratioAtMost: number }
  /** value / baseline at least this. */
  | { ratioAtLeast: number }
  /** value below this, in the figure's unit. */
  | { below: number }
  /** value equal to the baseline. */
  | { equal: true };

/** One row of the table. */
export interface Figure {
  /** Benchmark number and what is measured. */
  figure: string;
  /** Unit of `value` and `baseline`. */
  unit: string;
  /** Our value. */
  value: number;
  /** The same-run baseline, when there is one. */
  baseline?: number;
  /** What the baseline is. */
  baselineLabel?: string;
  /** value / baseline. */
  ratio?: number;
  /** The target, when there is one. */
  target?: Target;
  /** Whether the target is met. */
  met?: boolean;
  /** Anything worth knowing next to the figure. */
  note?: string;
}

/** Options every benchmark takes. */
export interface BenchOptions {
  /** Small sizes: checks that the suite runs, not how fast. */
  quick: boolean;
  /** Progress lines go here. */
  log: (line: string) => void;
}

/** A benchmark: returns its figures. */
export type Bench = (options: BenchOptions) => Promise<Figure[]>;

/**
 * Builds a figure, computing the ratio and whether the target is met.
 *
 * @param figure Everything but `ratio` and `met`.
 * @returns The figure.
 */
export function figure(figure: Omit<Figure, "ratio" | "met">): Figure {
  const out: Figure = { ...figure };
  if (figure.baseline !== undefined) {
    out.ratio = figure.baseline === 0
      ? (figure.value === 0 ? 1 : Infinity)
      : figure.value / figure.baseline;
  }
  const t = figure.target;
  if (t) {
    if ("ratioAtMost" in t) out.met = out.ratio! <= t.ratioAtMost;
    else if ("ratioAtLeast" in t) out.met = out.ratio! >= t.ratioAtLeast;
    else if ("below" in t) out.met = figure.value < t.below;
    else out.met = figure.value === figure.baseline;
  }
  return out;
}

/**
 * The p-th percentile (nearest rank) of `samples`.
 *
 * @param samples The samples, in any order.
 * @param p 0 to 100.
 * @returns The percentile.
 */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) throw new RangeError("no samples");
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/**
 * `promise`, or a rejection naming `what` after `ms`: a benchmark that
 * waits for something that never comes fails instead of hanging.
 *
 * @param promise What to wait for.
 * @param ms How long at most.
 * @param what What is awaited, for the error message.
 * @returns The promise's value.
 */
export function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`waited ${ms} ms for ${what} in vain`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Starts the baseline WebSocket server (`_baseline_server.ts`).
 *
 * @param idleTimeout Its WebSocket idle timeout in seconds; 0 for none.
 * @returns The running server.
 */
export function spawnBaseline(idleTimeout = 0): Promise<AgentProcess> {
  return spawnServer([
    "run",
    "--allow-net=127.0.0.1",
    new URL("./_baseline_server.ts", import.meta.url).pathname,
    String(idleTimeout),
  ]);
}

/**
 * A raw WebSocket with a queue of incoming text messages. Unlike the tests'
 * `tests/_raw_socket.ts`, it neither parses frames nor sets a timer per
 * frame: it sits on measured paths.
 */
export interface RawSocket {
  /** The socket. */
  readonly ws: WebSocket;
  /** Sends a text frame. */
  send(text: string): void;
  /** Resolves with the next message (queued ones first); rejects once closed. */
  next(): Promise<string>;
  /** Closes the socket. */
  close(): void;
}

/**
 * Opens a raw WebSocket and resolves once it is open.
 *
 * @param url The server.
 * @returns The socket.
 */
export function openRaw(url: string): Promise<RawSocket> {
  const ws = new WebSocket(url);
  const queue: string[] = [];
  const waiting: {
    resolve: (text: string) => void;
    reject: (e: Error) => void;
  }[] = [];
  let closed: Error | undefined;
  ws.onmessage = (e) => {
    const w = waiting.shift();
    if (w) w.resolve(e.data as string);
    else queue.push(e.data as string);
  };
  ws.addEventListener("close", (e) => {
    closed = new Error(
      `the connection to ${url} closed (code ${e.code}${
        e.reason ? `: ${e.reason}` : ""
      })`,
    );
    for (const w of waiting.splice(0)) w.reject(closed);
  });
  return new Promise((resolve, reject) => {
    ws.onerror = () => reject(new Error(`could not connect to ${url}`));
    ws.onopen = () => {
      ws.onerror = null;
      resolve({
        ws,
        send: (text) => ws.send(text),
        next: () =>
          queue.length > 0
            ? Promise.resolve(queue.shift()!)
            : closed
            ? Promise.reject(closed)
            : new Promise((resolve, reject) =>
              waiting.push({ resolve, reject })
            ),
        close: () => ws.close(),
      });
    };
  });
}

/**
 * An address per index, for instances a benchmark registers: `10.a.b.c:80`.
 *
 * @param i The index, below 2^24.
 * @returns The address.
 */
export function addrOf(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80`;
}

/**
 * Registers instances `from` to `to - 1` over `socket`, in JSON-RPC
 * batches of 1,000 (the agent's default `maxBatch`).
 *
 * @param socket A connection to the agent; it holds the instances.
 * @param range `[from, to)`.
 * @param params The params of instance `i`'s `discover.register`.
 */
export async function registerRange(
  socket: RawSocket,
  range: [number, number],
  params: (i: number) => Record<string, unknown>,
): Promise<void> {
  const [from, to] = range;
  for (let start = from; start < to; start += 1000) {
    const batch = [];
    for (let i = start; i < Math.min(to, start + 1000); i++) {
      batch.push({
        jsonrpc: "2.0",
        id: i,
        method: "discover.register",
        params: params(i),
      });
    }
    socket.send(JSON.stringify(batch));
    const text = await socket.next();
    const responses = JSON.parse(text);
    if (!Array.isArray(responses)) {
      throw new Error(`a batch of registrations got ${text.slice(0, 300)}`);
    }
    const failed = responses.find((r: { error?: unknown }) => r.error);
    if (failed) {
      throw new Error(`a registration failed: ${JSON.stringify(failed)}`);
    }
  }
}

/**
 * Opens `count` WebSockets, `concurrency` at a time.
 *
 * @param url The server.
 * @param count How many.
 * @param options How many handshakes at once, and what to do with each socket once open.
 * @returns The sockets, open.
 */
export async function openMany(
  url: string,
  count: number,
  options: {
    concurrency?: number;
    onOpen?: (ws: WebSocket, index: number) => Promise<void> | void;
  } = {},
): Promise<WebSocket[]> {
  const sockets: WebSocket[] = new Array(count);
  let nextIndex = 0;
  const worker = async () => {
    while (nextIndex < count) {
      const i = nextIndex++;
      const ws = new WebSocket(url);
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error(`socket ${i}: could not connect`));
      });
      ws.onerror = null;
      sockets[i] = ws;
      await options.onOpen?.(ws, i);
    }
  };
  await Promise.all(
    Array.from({ length: options.concurrency ?? 100 }, worker),
  );
  return sockets;
}

/** Closes sockets and waits until every one is closed. */
export async function closeAll(sockets: WebSocket[]): Promise<void> {
  await Promise.all(
    sockets.map((ws) =>
      ws.readyState === WebSocket.CLOSED
        ? undefined
        : new Promise<void>((r) => {
          ws.addEventListener("close", () => r(), { once: true });
          ws.close();
        })
    ),
  );
}

function fmt(n: number | undefined, unit = ""): string {
  if (n === undefined) return "-";
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  const s = abs >= 100
    ? Math.round(n).toLocaleString("en-US")
    : abs >= 10
    ? n.toFixed(1)
    : abs >= 1
    ? n.toFixed(2)
    : n === 0
    ? "0"
    : n.toPrecision(2);
  return unit ? `${s} ${unit}` : s;
}

/**
 * A target, in words.
 *
 * @param t The target.
 * @param unit The figure's unit.
 * @returns For example `≤ 3x`.
 */
export function targetText(t: Target | undefined, unit: string): string {
  if (!t) return "-";
  if ("ratioAtMost" in t) return `≤ ${t.ratioAtMost}x`;
  if ("ratioAtLeast" in t) return `≥ ${t.ratioAtLeast}x`;
  if ("below" in t) return `< ${fmt(t.below, unit)}`;
  return "= baseline";
}

/**
 * The figures as a Markdown table.
 *
 * @param figures The figures.
 * @returns The table.
 */
export function table(figures: Figure[]): string {
  const rows = [
    ["figure", "value", "baseline (same run)", "ratio", "target", "met"],
    ...figures.map((f) => [
      f.figure,
      fmt(f.value, f.unit),
      f.baseline === undefined
        ? "-"
        : `${fmt(f.baseline, f.unit)} (${f.baselineLabel})`,
      f.ratio === undefined ? "-" : `${fmt(f.ratio)}x`,
      targetText(f.target, f.unit),
      f.met === undefined ? "-" : f.met ? "yes" : "**no**",
    ]),
  ];
  const widths = rows[0].map((_, c) =>
    Math.max(...rows.map((r) => [...r[c]].length))
  );
  const line = (r: string[]) =>
    `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(" | ")} |`;
  return [
    line(rows[0]),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...rows.slice(1).map(line),
  ].join("\n");
}

/**
 * CPU time so far of processes, in clock ticks (user plus system, from
 * `/proc/PID/stat`; see {@linkcode ticksPerSecond}).
 *
 * @example Usage
 * ```ts ignore
 * const [before] = await cpuTicks([pid]);
 * ```
 *
 * @param pids The processes.
 * @returns Their ticks, in the same order.
 */
export async function cpuTicks(pids: number[]): Promise<number[]> {
  const text = await readProc(pids.map((pid) => `/proc/${pid}/stat`));
  return text.trim().split("\n").map((line) => {
    // Fields after the command name, which may hold spaces: state is
    // field 3, utime 14, stime 15.
    const fields = line.slice(line.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  });
}

/**
 * The text of files under `/proc`, one after another. Deno reads `/proc`
 * only with `--allow-all`; through `cat` it takes `--allow-run`.
 *
 * @example Usage
 * ```ts ignore
 * const info = await readProc(["/proc/cpuinfo"]);
 * ```
 *
 * @param paths The files.
 * @returns Their text.
 * @throws {Error} When one cannot be read (or there is no `cat`), naming it.
 */
export async function readProc(paths: string[]): Promise<string> {
  const out = await new Deno.Command("cat", {
    args: paths,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `could not read ${paths.join(", ")}: ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/**
 * Clock ticks per second, for {@linkcode cpuTicks} (`getconf CLK_TCK`, 100
 * when it cannot say).
 *
 * @example Usage
 * ```ts ignore
 * const seconds = ticks / await ticksPerSecond();
 * ```
 *
 * @returns Ticks per second.
 */
export async function ticksPerSecond(): Promise<number> {
  const out = await new Deno.Command("getconf", { args: ["CLK_TCK"] })
    .output();
  const n = Number(new TextDecoder().decode(out.stdout).trim());
  return out.success && n > 0 ? n : 100;
}

/** The machine's CPU time so far, busy and in all, in ticks (`/proc/stat`). */
async function machineTicks(): Promise<{ busy: number; total: number }> {
  const line = (await readProc(["/proc/stat"])).split("\n")[0];
  if (!line.startsWith("cpu ")) throw new Error("no cpu line in /proc/stat");
  // user nice system idle iowait irq softirq steal ...
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  return { busy: total - ticks[3] - ticks[4], total };
}

/** Options of {@linkcode settle}. */
export interface SettleOptions {
  /**
   * The machine counts as quiet once less than this share of its CPU time
   * is busy over a sample.
   *
   * @default {0.15}
   */
  busyBelow?: number;
  /** Length of a sample, in ms. @default {500} */
  sampleMs?: number;
  /**
   * No sample starts once this many ms have passed, so a machine that
   * others keep busy is waited for at most this plus one sample.
   *
   * @default {30_000}
   */
  maxMs?: number;
}

/**
 * Waits until the machine is quiet: until less than
 * {@linkcode SettleOptions.busyBelow} of all its CPU time is busy over
 * one sample, or {@linkcode SettleOptions.maxMs} has passed. What the
 * benchmark before left running (a killed process's teardown, a large
 * heap's collection) then lands in no benchmark's rounds.
 *
 * @example Usage
 * ```ts ignore
 * const { busy, waitedMs } = await settle();
 * ```
 *
 * @param options Threshold, sample length and longest wait.
 * @returns The busy share of the last sample, and how long it waited
 *   (`busy` is `undefined` where there is no `/proc/stat`).
 */
export async function settle(
  options: SettleOptions = {},
): Promise<{ busy: number | undefined; waitedMs: number }> {
  const { busyBelow = 0.15, sampleMs = 500, maxMs = 30_000 } = options;
  const started = Date.now();
  let busy: number | undefined;
  try {
    let before = await machineTicks();
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, sampleMs));
      const after = await machineTicks();
      busy = (after.busy - before.busy) /
        Math.max(1, after.total - before.total);
      before = after;
      if (busy < busyBelow || Date.now() - started >= maxMs) break;
    }
  } catch { /* not Linux: nothing to wait for */ }
  return { busy, waitedMs: Date.now() - started };
}
