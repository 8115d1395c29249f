// Copyright the discover authors. BSD-3-Clause license.

/**
 * What each `discover` command does, through the client module: one
 * connection per run, a bounded wait for it and for every request, and
 * the exit code.
 *
 * @module
 */

import {
  type Client,
  connect,
  ErrorCode,
  type LeaderEvent,
  RpcError,
  type ServiceSet,
  type ServiceUpdateEvent,
  type Target,
} from "../mod.ts";
import type { Check, HealthFilter } from "../protocol/types.ts";
import {
  AGENT_ENV,
  type Command,
  DEFAULT_AGENT,
  ExitCode,
  TIMEOUT_MS,
} from "./_args.ts";
import { type ForwardedSignal, runChild, StartError } from "./_child.ts";
import {
  formatAttrs,
  formatInstances,
  formatServices,
  formatStatus,
  formatUpdate,
  type OwnersByAddr,
  sortInstances,
  type WatchEvent,
} from "./_format.ts";

/** Where a command writes, and how it hears of SIGINT and SIGTERM. */
export interface Io {
  /**
   * Writes one line to standard output. Throws `Deno.errors.BrokenPipe`
   * once nobody reads it any more.
   */
  out(line: string): void;
  /** Writes one line to standard error. */
  err(line: string): void;
  /** Whether standard output is a terminal. */
  readonly tty: boolean;
  /**
   * Calls `listener` on SIGINT and SIGTERM, instead of ending the process,
   * until the returned function is called.
   */
  onSignal(listener: (signal: ForwardedSignal) => void): () => void;
}

/**
 * A command failed: the agent could not be reached, or refused. The
 * message says what was being done and why it failed.
 *
 * @example Usage
 * ```ts
 * import { CommandError } from "./_commands.ts";
 * const error = new CommandError("reading the catalog failed: timeout");
 * console.log(error.message);
 * ```
 */
export class CommandError extends Error {
  /**
   * Creates the error.
   *
   * @param message What failed, and why.
   * @param options The cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CommandError";
  }
}

/** Signal numbers, the same on Linux and macOS, for 128 + N exit codes. */
const SIGNAL_NUMBERS: Record<ForwardedSignal, number> = {
  SIGINT: 2,
  SIGTERM: 15,
};

function reason(error: unknown): string {
  if (error instanceof RpcError) return `${error.message} (${error.code})`;
  return error instanceof Error ? error.message : String(error);
}

function failed(what: string, error: unknown): CommandError {
  return new CommandError(`${what} failed: ${reason(error)}`, {
    cause: error,
  });
}

/** Connects (presenting the token, if any), or fails with a message naming the URL and where it came from. */
async function open(
  { agent, token }: { agent: string; token?: string },
): Promise<Client> {
  try {
    return await connect(agent, {
      connectTimeout: TIMEOUT_MS,
      requestTimeout: TIMEOUT_MS,
      ...(token === undefined ? {} : { token }),
    });
  } catch (error) {
    throw new CommandError(
      `${
        error instanceof Error ? error.message : String(error)
      } (the agent's address comes from --agent URL, else $${AGENT_ENV}, else ${DEFAULT_AGENT})`,
      { cause: error },
    );
  }
}

/** A target in messages. */
function where(target: Target): string {
  return typeof target === "number"
    ? `port ${target} of the agent's advertised host`
    : target;
}

/** The options of `lookup` and `services`: the filter and health given, if any. */
function readOptions(
  command: { filter: Readonly<Record<string, string>>; health: HealthFilter },
) {
  return {
    ...(Object.keys(command.filter).length > 0
      ? { filter: { ...command.filter } }
      : {}),
    // "passing" is the agent's default: not sent.
    ...(command.health === "any" ? { health: command.health } : {}),
  };
}

/** A check in messages: `GET URL every 5 s` or `a TCP connection to ADDR every 5 s`. */
function describeCheck(check: Check): string {
  const what = check.http !== undefined
    ? `GET ${check.http}`
    : `a TCP connection to ${check.tcp}`;
  return `${what} every ${check.interval ?? 5} s`;
}

/** A command that does something: every one but `help`. */
export type Runnable = Exclude<Command, { name: "help" }>;

/**
 * Runs a command and says how it ended.
 *
 * @example Usage
 * ```ts ignore
 * import { parseCommandLine } from "./_args.ts";
 * import { runCommand } from "./_commands.ts";
 * const command = parseCommandLine(["services"]);
 * if (command.name !== "help") await runCommand(command, io);
 * ```
 *
 * @param command The command, from `parseCommandLine`.
 * @param io Where to write, and the signals.
 * @returns The exit code.
 * @throws {CommandError} When the agent cannot be reached or refuses
 *   (exit code 1).
 */
export async function runCommand(
  command: Runnable,
  io: Io,
): Promise<number> {
  switch (command.name) {
    case "services":
      return await oneShot(command, async (client) => {
        const catalog = await client.catalog().catch((error) => {
          throw failed("reading the services", error);
        });
        for (const line of formatServices(catalog, { ...command, ...io })) {
          io.out(line);
        }
        return ExitCode.Ok;
      });
    case "ls":
      return await oneShot(command, async (client) => {
        const [instances, owners] = await Promise.all([
          client.lookup(command.service, readOptions(command)).catch(
            (error) => {
              throw failed(
                `reading the instances of ${command.service}`,
                error,
              );
            },
          ),
          readOwners(client, command),
        ]);
        const options = {
          ...command,
          tty: io.tty,
          now: Date.now(),
          ...(owners ? { owners } : {}),
        };
        for (const line of formatInstances(instances, options)) io.out(line);
        return ExitCode.Ok;
      });
    case "status":
      return await oneShot(command, async (client) => {
        const status = await client.status().catch((error) => {
          throw failed("reading the agent's status", error);
        });
        for (const line of formatStatus(status, { ...command, ...io })) {
          io.out(line);
        }
        return ExitCode.Ok;
      });
    case "unregister":
      return await oneShot(command, async (client) => {
        const { service, target } = command;
        const removed = await client.unregister(service, target).catch(
          (error) => {
            throw failed(`unregistering ${service} at ${where(target)}`, error);
          },
        );
        if (!removed) {
          io.err(
            `discover: ${service} has no instance at ${
              where(target)
            }: nothing to unregister`,
          );
          return ExitCode.Failure;
        }
        io.out(
          command.json
            ? JSON.stringify({
              service,
              ...(typeof target === "number"
                ? { port: target }
                : { addr: target }),
              removed,
            })
            : `unregistered ${service} ${target}`,
        );
        return ExitCode.Ok;
      });
    case "watch":
      return await watch(command, io);
    case "register":
      return await register(command, io);
  }
}

/**
 * The owners of the instances `ls` lists, by address; `undefined` from an
 * agent that does not know `discover.owners` (an older version), whose
 * instances are listed without.
 */
async function readOwners(
  client: Client,
  command: Extract<Runnable, { name: "ls" | "watch" }>,
): Promise<OwnersByAddr | undefined> {
  try {
    const { owners } = await client.owners(
      command.service,
      readOptions(command),
    );
    return new Map(owners.map((o) => [o.addr, o]));
  } catch (error) {
    if (error instanceof RpcError && error.code === ErrorCode.MethodNotFound) {
      return undefined;
    }
    throw failed(`reading the owners of ${command.service}`, error);
  }
}

/**
 * The changes of a set and of its leader, in the order they happen, from
 * the moment of the call (so that nothing is missed between the state read
 * then and the first change), until the set closes or `signal` aborts.
 */
function follow(
  set: ServiceSet,
  signal: AbortSignal,
): AsyncIterableIterator<WatchEvent> {
  const queue: WatchEvent[] = [];
  let wake = Promise.withResolvers<void>();
  const push = (event?: WatchEvent) => {
    if (event) queue.push(event);
    wake.resolve();
  };
  const onUpdate = ({ kind, instance, revision }: ServiceUpdateEvent) =>
    push({ kind, instance, revision });
  const onLeader = ({ instance, revision }: LeaderEvent) =>
    push({ kind: "leader", instance, revision });
  const onEnd = () => push();
  const listening = new AbortController();
  const options = { signal: listening.signal };
  set.addEventListener("update", onUpdate, options);
  set.addEventListener("leader", onLeader, options);
  set.addEventListener("close", onEnd, options);
  signal.addEventListener("abort", onEnd, options);
  const stop = () => listening.abort();
  const iterator: AsyncIterableIterator<WatchEvent> = {
    async next() {
      for (;;) {
        if (signal.aborted || (set.closed && queue.length === 0)) {
          stop();
          return { value: undefined, done: true };
        }
        const value = queue.shift();
        if (value) return { value, done: false };
        await wake.promise;
        wake = Promise.withResolvers<void>();
      }
    },
    return() {
      stop();
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}

/** Connects, runs `body`, and closes the connection whatever happens. */
async function oneShot(
  globals: { agent: string; token?: string },
  body: (client: Client) => Promise<number>,
): Promise<number> {
  const client = await open(globals);
  try {
    return await body(client);
  } finally {
    await client.close();
  }
}

/**
 * `discover watch`: the instances as `up` and the leader, then every
 * change of either, until a signal.
 */
async function watch(
  command: Extract<Runnable, { name: "ls" | "watch" }>,
  io: Io,
): Promise<number> {
  const client = await open(command);
  const stop = new AbortController();
  const off = io.onSignal(() => stop.abort());
  let set: ServiceSet | undefined;
  try {
    set = await client.services(command.service, readOptions(command))
      .catch((error) => {
        throw failed(`subscribing to ${command.service}`, error);
      });
    let outOfSync = false;
    set.addEventListener("disconnect", () => {
      outOfSync = true;
      io.err(
        `discover: out of sync with the agent at ${client.url} (the connection is lost, or the agent cannot reach its backend); reconnecting, the changes follow once it is back`,
      );
    });
    set.addEventListener("sync", () => {
      if (!outOfSync) return;
      outOfSync = false;
      io.err(`discover: in sync with the agent at ${client.url} again`);
    });
    const options = { ...command, tty: io.tty };
    const show = (update: WatchEvent) =>
      io.out(formatUpdate(update, { ...options, now: new Date() }));
    // Taken together, before any other event can be applied: nothing is
    // missed between the state and the first change.
    const changes = follow(set, stop.signal);
    const revision = set.revision;
    const leader = set.leader();
    try {
      for (const instance of sortInstances(set.online())) {
        show({ kind: "up", instance, revision });
      }
      if (leader) show({ kind: "leader", instance: leader, revision });
      for await (const change of changes) show(change);
    } catch (error) {
      if (error instanceof Deno.errors.BrokenPipe) return ExitCode.Ok;
      throw error;
    }
    if (stop.signal.aborted) return ExitCode.Ok;
    io.err(
      `discover: the subscription to ${command.service} ended: the agent refused to resume it after a reconnection`,
    );
    return ExitCode.Failure;
  } finally {
    off();
    await set?.close();
    await client.close();
  }
}

/**
 * `discover register`: registers, then waits for a signal, or runs the
 * command and waits for it; unregisters at the end.
 */
async function register(
  command: Extract<Runnable, { name: "register" }>,
  io: Io,
): Promise<number> {
  const { service, target, attrs, check, run } = command;
  const client = await open(command);
  const stopped = Promise.withResolvers<void>();
  let signalled: ForwardedSignal | undefined;
  let off = io.onSignal((signal) => {
    signalled ??= signal;
    stopped.resolve();
  });
  let addr = where(target);
  try {
    const instance = await client.register(service, target, {
      attrs,
      ...(check ? { check } : {}),
    })
      .catch((error) => {
        throw failed(`registering ${service} at ${where(target)}`, error);
      });
    addr = instance.addr;
    client.addEventListener("disconnect", () =>
      io.err(
        `discover: lost the agent at ${client.url}; reconnecting, to register ${service} at ${addr} again`,
      ));
    client.addEventListener("reconnect", () => {
      const state = client.registrations()[0]?.state;
      const now = state === "registered"
        ? "registered again"
        : state === "restoring"
        ? "not registered yet: retrying"
        : "given up";
      io.err(
        `discover: reconnected to the agent at ${client.url}; ${service} at ${addr} is ${now}`,
      );
    });
    const shown = `${service} ${addr}${
      Object.keys(instance.attrs).length > 0
        ? ` ${formatAttrs(instance.attrs)}`
        : ""
    }`;
    if (check) {
      io.err(
        `discover: the agent checks ${service} at ${addr} (${
          describeCheck(check)
        }); it is ${
          instance.health === "passing"
            ? "passing"
            : "critical until a check passes"
        }`,
      );
    }
    if (run === undefined) {
      try {
        io.out(
          command.json ? JSON.stringify(instance) : `registered ${shown}`,
        );
      } catch (error) {
        if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
      }
      // Given up after a reconnection (the client's own message says why).
      const givenUp = Promise.withResolvers<void>();
      client.addEventListener("error", (event) => {
        if (event.permanent && event.registration) givenUp.resolve();
      });
      await Promise.race([stopped.promise, givenUp.promise]);
      return signalled === undefined ? ExitCode.Failure : ExitCode.Ok;
    }
    // A signal that came while registering: the command is not started.
    if (signalled !== undefined) return 128 + SIGNAL_NUMBERS[signalled];
    off();
    off = () => {};
    io.err(`discover: registered ${shown}; running ${run[0]}`);
    try {
      const code = await runChild(run, { onSignal: io.onSignal });
      io.err(
        `discover: ${
          run[0]
        } exited with ${code}; unregistering ${service} at ${addr}`,
      );
      return code;
    } catch (error) {
      if (!(error instanceof StartError)) throw error;
      io.err(`discover: ${error.message}`);
      return error.code;
    }
  } finally {
    off();
    await client.close();
  }
}
