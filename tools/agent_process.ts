// Copyright the discover authors. BSD-3-Clause license.

/**
 * Runs discoverd (`agent.ts`), or another WebSocket server written in Deno,
 * as a separate process on a free loopback port, and stops it: for the tests
 * and the benchmarks.
 *
 * @module
 */

import { AGENT_RUN_ARGS } from "./agent_command.ts";

/** A running agent process. */
export interface AgentProcess extends AsyncDisposable {
  /** WebSocket URL of the agent. */
  readonly url: string;
  /** HTTP base URL of the agent. */
  readonly http: string;
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** What the agent wrote on standard error so far. */
  stderr(): string;
  /** Sends a signal. */
  kill(signal?: Deno.Signal): void;
  /** Stops the agent (SIGTERM) and waits for it to exit. */
  stop(): Promise<Deno.CommandStatus>;
}

/**
 * Starts `agent.ts` with `args` (plus `--listen 127.0.0.1:0` unless given)
 * and resolves once it listens.
 *
 * @param args Extra command-line arguments.
 * @returns The running process.
 */
export function spawnAgent(args: string[] = []): Promise<AgentProcess> {
  const listen = args.includes("--listen") ? [] : ["--listen", "127.0.0.1:0"];
  return spawnServer([
    ...AGENT_RUN_ARGS,
    ...listen,
    "--advertise-host",
    "127.0.0.1",
    ...args,
  ]);
}

/**
 * Starts `deno` with `args`, a program that prints `listening on ws://...`
 * on standard output once it accepts connections, and resolves then.
 *
 * @param args The `deno` command line (`run`, permissions, script, flags).
 * @returns The running process.
 */
export async function spawnServer(args: string[]): Promise<AgentProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const decoder = new TextDecoder();
  const errDone = (async () => {
    for await (const chunk of child.stderr) {
      errText += decoder.decode(chunk, { stream: true });
    }
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let url: string | undefined;
  const deadline = setTimeout(() => child.kill("SIGKILL"), 20_000);
  while (url === undefined) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
    url = /listening on (ws:\/\/\S+)/.exec(out)?.[1];
  }
  clearTimeout(deadline);
  // Keep draining stdout so the child never blocks on a full pipe.
  const outDone = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  if (url === undefined) {
    await child.status;
    await errDone;
    throw new Error(`the server did not start:\n${out}\n${errText}`);
  }
  let status: Promise<Deno.CommandStatus> | undefined;
  const stop = () =>
    status ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      const s = await child.status;
      await Promise.all([errDone, outDone]);
      return s;
    })();
  return {
    url,
    http: url.replace(/^ws/, "http"),
    child,
    stderr: () => errText,
    kill: (signal: Deno.Signal = "SIGKILL") => child.kill(signal),
    stop,
    [Symbol.asyncDispose]: async () => void await stop(),
  };
}

/**
 * Resident set size of a process, in KiB, as `ps` reports it (Deno reads
 * `/proc` only with every permission; `ps` needs `--allow-run`).
 *
 * @param pid The process.
 * @returns RSS in KiB.
 */
export async function rssKiB(pid: number): Promise<number> {
  const out = await new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).output();
  const kib = Number(new TextDecoder().decode(out.stdout).trim());
  if (!out.success || !Number.isFinite(kib) || kib <= 0) {
    throw new Error(`could not read the RSS of process ${pid} with ps`);
  }
  return kib;
}
