// Copyright the discover authors. BSD-3-Clause license.

/**
 * The command `discover register ... -- COMMAND` runs: started with the
 * standard streams of `discover`, given the signals `discover` receives,
 * and waited for; its exit code is the one `discover` exits with.
 *
 * @module
 */

/** A signal `discover` passes on to the command it runs. */
export type ForwardedSignal = "SIGINT" | "SIGTERM";

/** Options of {@linkcode runChild}. */
export interface RunChildOptions {
  /**
   * Subscribes to the signals to pass on; returns the unsubscribe.
   * Without it, no signal is passed on.
   */
  onSignal?: (listener: (signal: ForwardedSignal) => void) => () => void;
  /**
   * Called once the command has started, with its process id.
   */
  onStart?: (pid: number) => void;
}

/**
 * A command that could not be started; `code` is the exit code to use:
 * 127 when it is not found, 126 otherwise (as shells do).
 *
 * @example Usage
 * ```ts
 * import { StartError } from "./_child.ts";
 * const error = new StartError("srv", new Deno.errors.NotFound("no file"));
 * console.log(error.code); // 127
 * ```
 */
export class StartError extends Error {
  /** 127 (not found) or 126 (cannot be run). */
  readonly code: number;

  /**
   * Creates the error.
   *
   * @param program The program that was to run.
   * @param cause What starting it threw.
   */
  constructor(program: string, cause: unknown) {
    const code = cause instanceof Deno.errors.NotFound ? 127 : 126;
    super(
      `cannot run '${program}': ${
        code === 127
          ? "not found (give a path, or a program on PATH)"
          : (cause as Error)?.message ?? String(cause)
      }`,
      { cause },
    );
    this.name = "StartError";
    this.code = code;
  }
}

/**
 * Runs `argv` with the standard streams of this process, passing on the
 * signals `onSignal` reports, until it exits.
 *
 * @example Usage
 * ```ts ignore
 * import { runChild } from "./_child.ts";
 * const code = await runChild(["sh", "-c", "exit 3"]); // 3
 * ```
 *
 * @param argv The program and its arguments.
 * @param options Where signals come from, and a start notice.
 * @returns Its exit code; 128 plus the signal number when a signal ended it.
 * @throws {StartError} When it cannot be started.
 */
export async function runChild(
  argv: readonly string[],
  options: RunChildOptions = {},
): Promise<number> {
  const [program, ...args] = argv;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (error) {
    throw new StartError(program, error);
  }
  const off = options.onSignal?.((signal) => {
    try {
      child.kill(signal);
    } catch { /* it has exited meanwhile */ }
  });
  try {
    options.onStart?.(child.pid);
    // Deno reports a command ended by a signal with 128 plus its number.
    return (await child.status).code;
  } finally {
    off?.();
  }
}
