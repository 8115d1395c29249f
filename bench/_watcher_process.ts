// Copyright the discover authors. BSD-3-Clause license.

/**
 * Runs `_etcd_watcher.ts` (a raw `etcd3` prefix watch in its own process,
 * printing the key of every put it sees) and hands each key to the
 * benchmark as its line arrives: the baseline of a path that crosses
 * processes, as the agents' does.
 *
 * @module
 */

/** Options of {@linkcode spawnEtcdWatcher}. */
export interface EtcdWatcherOptions {
  /** Called with the key of every put, as soon as its line arrives. */
  onKey: (key: string) => void;
}

/** A running watcher process. */
export interface WatcherProcess extends AsyncDisposable {
  /** Its process id. */
  readonly pid: number;
  /** Stops it (SIGTERM) and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts a watcher of `prefix` and resolves once its watch is established.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnEtcdWatcher } from "./_watcher_process.ts";
 * await using watcher = await spawnEtcdWatcher(
 *   "http://127.0.0.1:2379",
 *   "/bench/",
 *   { onKey: (key) => console.log("put", key) },
 * );
 * ```
 *
 * @param endpoint The etcd endpoint.
 * @param prefix The key prefix to watch.
 * @param options What to do with each key.
 * @returns The running process.
 */
export async function spawnEtcdWatcher(
  endpoint: string,
  prefix: string,
  options: EtcdWatcherOptions,
): Promise<WatcherProcess> {
  const { onKey } = options;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      new URL("./_etcd_watcher.ts", import.meta.url).pathname,
      endpoint,
      prefix,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let ready!: () => void;
  const watching = new Promise<void>((resolve) => ready = resolve);
  const reading = (async () => {
    let buffered = "";
    for (;;) {
      const { value, done } = await lines.read();
      if (done) return;
      buffered += value;
      let end;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        if (line === "watching") ready();
        else onKey(line);
      }
    }
  })();
  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      await child.status;
      await reading;
    })();
  const exited = child.status.then((status) => {
    throw new Error(
      `the etcd watcher of ${prefix} exited (code ${status.code}) before watching`,
    );
  });
  try {
    await Promise.race([watching, exited]);
  } catch (error) {
    await stop();
    throw error;
  }
  exited.catch(() => {});
  return { pid: child.pid, stop, [Symbol.asyncDispose]: stop };
}
