// Copyright the discover authors. BSD-3-Clause license.

/**
 * Runs a watcher script in its own process (`_etcd_watcher.ts`, a raw
 * `etcd3` prefix watch printing the key of every put it sees;
 * `_zk_watcher.ts`, a ZooKeeper child watch printing every child created)
 * and hands each key to the benchmark as its line arrives: the baselines of
 * paths that cross processes, as the agents' do.
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
export function spawnEtcdWatcher(
  endpoint: string,
  prefix: string,
  options: EtcdWatcherOptions,
): Promise<WatcherProcess> {
  return spawnWatcher(
    new URL("./_etcd_watcher.ts", import.meta.url),
    [endpoint, prefix],
    { onKey: options.onKey, what: `the etcd watcher of ${prefix}` },
  );
}

/** Options of {@linkcode spawnWatcher}. */
export interface WatcherOptions extends EtcdWatcherOptions {
  /** What it watches, for the error of a watcher that exited early. */
  what: string;
}

/**
 * Starts a watcher script (`deno run` with network access), which prints
 * `watching` once its watch is established, then one key per line, and
 * resolves once it is watching.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnWatcher } from "./_watcher_process.ts";
 * await using watcher = await spawnWatcher(
 *   new URL("./_zk_watcher.ts", import.meta.url),
 *   ["127.0.0.1:2181", "/bench"],
 *   { onKey: (key) => console.log("created", key), what: "/bench" },
 * );
 * ```
 *
 * @param script The watcher script.
 * @param args Its arguments.
 * @param options What to do with each key, and what it watches.
 * @returns The running process.
 */
export async function spawnWatcher(
  script: URL,
  args: string[],
  options: WatcherOptions,
): Promise<WatcherProcess> {
  const { onKey } = options;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      script.pathname,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { promise: watching, resolve: ready } = Promise.withResolvers<void>();
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
      `${options.what} exited (code ${status.code}) before watching`,
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
