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
  /** How the current process ended, once it exited without being killed. */
  readonly status: Deno.CommandStatus | undefined;
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
  let status: Deno.CommandStatus | undefined;
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
    get status(): Deno.CommandStatus | undefined {
      return status;
    },
    spawn(): void {
      const started = new Deno.Command(command, {
        args,
        cwd: options.cwd,
        stdin: "null",
        stdout: "null",
        stderr: options.stderr ?? "null",
      }).spawn();
      child = started;
      status = undefined;
      exited = started.status.then((s) => {
        if (child === started) status = s;
        return s;
      });
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
      child = undefined;
      await exited;
    },
  };
}

// Ports handed out by this process, so that two callers never get the same
// one before either has bound it.
const handedOut = new Set<number>();

function bindable(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Picks a free loopback port for a server that a test starts (closed
 * again: someone may take it first).
 *
 * The port lies in [20000, 32768), below the ephemeral ranges that
 * kernels give the outgoing connections of every process as their local
 * ports (Linux's default starts at 32768; macOS, the BSDs and Windows
 * start at 49152), so that no connection takes it before the server binds
 * it; and it is never handed out twice by one process. When no such port
 * is free, the kernel picks one.
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
  const low = 20_000, high = 32_767;
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port) || !bindable(port)) continue;
    handedOut.add(port);
    return port;
  }
  for (;;) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
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
