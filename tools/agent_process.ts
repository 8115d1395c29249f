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
 * Where a server says it listens, on standard output: `listening on
 * ws://...` (a plain line, or the agent's at `--log-level warn` and above),
 * the URL whole: up to the white space after it, which a chunk may not hold yet.
 */
const LISTENING_OUT = [/listening on (wss?:\/\/\S+)\s/];
/**
 * The agent's `listening` log record on standard error, text or JSON (not
 * any line with a URL: with `--inspect`, Deno says where its debugger
 * listens there too).
 */
const LISTENING_ERR = [
  / listening url=(wss?:\/\/\S+)\s/,
  /"message":"listening","url":"(wss?:\/\/[^"]+)"/,
];

/**
 * Starts `deno` with `args`, a program that says `listening on ws://...`
 * (or logs the agent's `listening` record) on standard output or error
 * once it accepts connections, and resolves then.
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
  let out = "";
  const { promise: said, resolve: say } = Promise.withResolvers<
    string | undefined
  >();
  let found = false;
  const look = (text: string, patterns: RegExp[]) => {
    for (const pattern of patterns) {
      const url = found ? undefined : pattern.exec(text)?.[1];
      if (url !== undefined) {
        found = true;
        say(url);
      }
    }
  };
  // Both streams are read to the end, so the child never blocks on a
  // full pipe; only the first 64 KiB of standard output are kept.
  const errDone = (async () => {
    for await (
      const text of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      errText += text;
      // Only the start of the log says where the server listens.
      if (!found) look(errText, LISTENING_ERR);
    }
  })();
  const outDone = (async () => {
    for await (
      const text of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      if (out.length < 64 * 1024) out += text;
      if (!found) look(out, LISTENING_OUT);
    }
  })();
  const deadline = setTimeout(() => child.kill("SIGKILL"), 20_000);
  // Exited without saying it listens: undefined.
  void child.status.then(() => Promise.all([errDone, outDone])).then(() =>
    say(undefined)
  );
  const url = await said;
  clearTimeout(deadline);
  if (url === undefined) {
    await child.status;
    await Promise.all([errDone, outDone]);
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
