// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: waiting for updates with a deadline, so that a missing event
 * fails the test with a clear message instead of hanging it.
 *
 * @module
 */

import type { ServiceUpdate } from "../mod.ts";

/**
 * Resolves with the next value of `iterator`, or rejects after `ms`.
 *
 * @param iterator The iterator.
 * @param ms Milliseconds to wait.
 * @returns The next value.
 */
export async function nextWithin<T>(
  iterator: AsyncIterator<T>,
  ms = 5000,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const result = await Promise.race([
      iterator.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no update within ${ms} ms`)),
          ms,
        );
      }),
    ]);
    if (result.done) throw new Error("the iterator ended");
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Collects updates until `count` arrived, or rejects after `ms`.
 *
 * @param iterator The iterator.
 * @param count How many.
 * @param ms Milliseconds to wait in all.
 * @returns The updates as `kind addr` strings.
 */
export async function collect(
  iterator: AsyncIterator<ServiceUpdate>,
  count: number,
  ms = 5000,
): Promise<string[]> {
  const out: string[] = [];
  const deadline = Date.now() + ms;
  while (out.length < count) {
    const u = await nextWithin(iterator, Math.max(1, deadline - Date.now()));
    out.push(`${u.kind} ${u.instance.addr}`);
  }
  return out;
}

/**
 * Polls `condition` (which may be async) until it holds, failing with
 * `what` after `ms`.
 *
 * @param condition The condition.
 * @param what What is awaited, for the failure message.
 * @param ms Milliseconds to wait.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A child process that registered one instance and waits to be killed. */
export interface Registrant {
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** Kills it with SIGKILL and waits for it to exit. */
  kill(): Promise<void>;
}

/**
 * Runs `_register_and_wait.ts` against `url` and resolves once it has
 * registered `service` on `port`.
 *
 * @param url The agent's URL.
 * @param service The service.
 * @param port The port.
 * @returns The running process.
 */
export async function spawnRegistrant(
  url: string,
  service: string,
  port: number,
): Promise<Registrant> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      new URL("./_register_and_wait.ts", import.meta.url).pathname,
      url,
      service,
      String(port),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("registered")) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`the registrant exited: ${out}`);
    out += value;
  }
  return {
    child,
    async kill() {
      child.kill("SIGKILL");
      await child.status;
      await lines.cancel();
    },
  };
}
