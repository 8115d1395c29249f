// Copyright the discover authors. BSD-3-Clause license.

/**
 * A server process for the tests and benchmarks (an etcd member, a
 * ZooKeeper server) that can be signalled, killed and started again with
 * the same command line.
 *
 * @module
 */

/** A process started from a fixed command line, again after each kill. */
export interface RestartableProcess {
  /** Whether a process is running (started and not killed). */
  readonly running: boolean;
  /** Settles once the current process exited. */
  readonly exited: Promise<unknown>;
  /** The current process id, if running. */
  readonly pid: number | undefined;
  /** Starts the process. */
  spawn(): void;
  /** Sends a signal to the current process (`SIGSTOP`, `SIGCONT`...). */
  signal(signal: Deno.Signal): void;
  /** SIGKILL (after SIGCONT, should it be stopped); resolves once it exited. */
  kill(): Promise<void>;
}

/** Options of {@linkcode restartableProcess}. */
export interface RestartableProcessOptions {
  /** Working directory. */
  cwd?: string;
  /** Where standard error goes. @default {"null"} */
  stderr?: "null" | "inherit";
}

/**
 * A process of `command` with `args`, its output discarded.
 *
 * @example Usage
 * ```ts ignore
 * import { restartableProcess } from "./_process.ts";
 * const proc = restartableProcess("sleep", ["60"]);
 * proc.spawn();
 * await proc.kill();
 * ```
 *
 * @param command The program.
 * @param args Its arguments.
 * @param options Working directory and standard error.
 * @returns The process, not started yet.
 */
export function restartableProcess(
  command: string,
  args: string[],
  options: RestartableProcessOptions = {},
): RestartableProcess {
  let child: Deno.ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  return {
    get running(): boolean {
      return child !== undefined;
    },
    get exited(): Promise<unknown> {
      return exited;
    },
    get pid(): number | undefined {
      return child?.pid;
    },
    spawn(): void {
      child = new Deno.Command(command, {
        args,
        cwd: options.cwd,
        stdin: "null",
        stdout: "null",
        stderr: options.stderr ?? "null",
      }).spawn();
      exited = child.status;
    },
    signal(signal: Deno.Signal): void {
      child?.kill(signal);
    },
    async kill(): Promise<void> {
      if (!child) return;
      try {
        child.kill("SIGCONT");
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await exited;
      child = undefined;
    },
  };
}

/**
 * Picks a free loopback port (closed again: someone may take it first).
 *
 * @example Usage
 * ```ts ignore
 * import { freePort } from "./_process.ts";
 * const port = freePort();
 * ```
 *
 * @returns The port.
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * A new temporary directory, removed with everything in it on disposal.
 *
 * @example Usage
 * ```ts ignore
 * import { tempDir } from "./_process.ts";
 * await using dir = await tempDir("discover-data-");
 * console.log(dir.path);
 * ```
 *
 * @param prefix The start of its name.
 * @returns The directory.
 */
export async function tempDir(
  prefix: string,
): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}
