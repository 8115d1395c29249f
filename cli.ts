#!/usr/bin/env -S deno run --allow-net --allow-env=DISCOVER_AGENT --allow-run
// Copyright the discover authors. BSD-3-Clause license.

/**
 * `discover`, the command line of the discover client: list services and
 * their instances, watch a service change, read an agent's status, and
 * register an instance for as long as a command runs.
 *
 * ```sh
 * deno task cli -- services
 * deno task cli -- ls cache --filter zone=b
 * deno task cli -- watch cache
 * deno task cli -- register web 8080 --attr zone=b -- ./server --port 8080
 * ```
 *
 * `deno task cli -- --help` lists the commands and flags. Exit codes: 0
 * done, 1 failure (the agent cannot be reached within 5 s, or refused the
 * request), 2 usage error; `register -- COMMAND` exits with the command's
 * code. Permissions: `--allow-net` (the agent),
 * `--allow-env=DISCOVER_AGENT` and `--allow-run` (the command `register`
 * runs).
 *
 * @module
 */

import { parseCommandLine, UsageError } from "./cli/_args.ts";
import { CommandError, type Io, runCommand } from "./cli/_commands.ts";
import type { ForwardedSignal } from "./cli/_child.ts";

const encoder = new TextEncoder();

/** Writes all of `text`: a pipe may take it in parts. */
function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string) {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) {
    written += stream.writeSync(bytes.subarray(written));
  }
}

/** Reads an environment variable; one not granted reads as unset. */
function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** The process's standard streams and signals. */
function processIo(): Io {
  const signals: ForwardedSignal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM"];
  return {
    tty: Deno.stdout.isTerminal(),
    out: (line) => writeAll(Deno.stdout, `${line}\n`),
    err(line) {
      try {
        writeAll(Deno.stderr, `${line}\n`);
      } catch { /* nobody reads standard error */ }
    },
    onSignal(listener) {
      const handlers = signals.map((signal) => {
        const handler = () => listener(signal);
        Deno.addSignalListener(signal, handler);
        return [signal, handler] as const;
      });
      return () => {
        for (const [signal, handler] of handlers) {
          Deno.removeSignalListener(signal, handler);
        }
      };
    },
  };
}

/**
 * Runs `discover` with `args` and returns its exit code: 0 done, 1 the
 * agent could not be reached or refused, 2 a usage error, or the code of
 * the command `register -- COMMAND` ran. Writes to standard output and
 * error; `watch` and `register` run until SIGINT or SIGTERM.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "./cli.ts";
 * Deno.exit(await main(["ls", "cache", "--json"]));
 * ```
 *
 * @param args The arguments, without the program.
 * @returns The exit code.
 */
export async function main(args: readonly string[]): Promise<number> {
  const io = processIo();
  let command;
  try {
    command = parseCommandLine(args, { env });
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`discover: ${error.message}`);
    io.err(`Run '${error.help}' for usage.`);
    return 2;
  }
  try {
    if (command.name === "help") {
      io.out(command.text.trimEnd());
      return 0;
    }
    return await runCommand(command, io);
  } catch (error) {
    // Nobody reads the output any more (`discover ls web | head -1`).
    if (error instanceof Deno.errors.BrokenPipe) return 0;
    if (!(error instanceof CommandError)) throw error;
    io.err(`discover: ${error.message}`);
    return 1;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error("discover: unexpected error:", error);
    Deno.exit(1);
  }
}
