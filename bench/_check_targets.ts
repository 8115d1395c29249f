// Copyright the discover authors. BSD-3-Clause license.

/**
 * Targets of HTTP health checks for the benchmarks: one HTTP server on a
 * free loopback port that answers `GET /healthz/<n>` with 200, or with 500
 * while target `n` is set to fail, and counts the requests it answered.
 *
 * @module
 */

/** A running server of check targets. */
export interface CheckTargets extends AsyncDisposable {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** Requests answered so far (check runs that reached it). */
  readonly runs: number;
  /**
   * The check URL of target `n`.
   *
   * @param n The target.
   * @returns `http://127.0.0.1:<port>/healthz/<n>`.
   */
  url(n: number): string;
  /**
   * Makes target `n` answer 500 (`true`) or 200 (`false`) from now on.
   *
   * @param n The target.
   * @param failing Whether it fails.
   */
  setFailing(n: number, failing: boolean): void;
  /** Stops the server and waits until it has. */
  close(): Promise<void>;
}

/**
 * Starts the server; every target passes until {@linkcode CheckTargets.setFailing}.
 *
 * @example Usage
 * ```ts ignore
 * import { serveCheckTargets } from "./_check_targets.ts";
 * await using targets = serveCheckTargets();
 * targets.setFailing(7, true);
 * console.log((await fetch(targets.url(7))).status); // 500
 * ```
 *
 * @returns The running server.
 */
export function serveCheckTargets(): CheckTargets {
  const failing = new Set<number>();
  let runs = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => {
      const path = new URL(request.url).pathname;
      const match = /^\/healthz\/([0-9]+)$/.exec(path);
      if (match === null) {
        return new Response(`no target at ${path}: use /healthz/<n>\n`, {
          status: 404,
        });
      }
      runs++;
      return failing.has(Number(match[1]))
        ? new Response("failing\n", { status: 500 })
        : new Response("ok\n");
    },
  );
  const port = server.addr.port;
  let closed: Promise<void> | undefined;
  const close = () => closed ??= server.shutdown();
  return {
    port,
    get runs() {
      return runs;
    },
    url: (n) => `http://127.0.0.1:${port}/healthz/${n}`,
    setFailing(n, fail) {
      if (fail) failing.add(n);
      else failing.delete(n);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
