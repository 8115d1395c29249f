// Copyright the discover authors. BSD-3-Clause license.

/**
 * A health-check target for tests: an HTTP server on a free loopback port
 * whose answer a test switches (a status, or no answer at all).
 *
 * @module
 */

/** What an HTTP health endpoint answers: a status, or nothing until shutdown. */
export type Mode = number | "hang";

/** A health endpoint on a free loopback port whose answer can be switched. */
export interface HealthServer extends AsyncDisposable {
  /** The port it listens on. */
  readonly port: number;
  /** Its health URL. */
  readonly url: string;
  /** Requests received so far. */
  readonly requests: number;
  /** Switches what it answers. */
  set(mode: Mode): void;
}

/**
 * Starts a health endpoint answering `initial` until switched.
 *
 * @param initial What it answers first.
 * @returns The endpoint; dispose of it to stop it.
 */
export function healthServer(initial: Mode = 200): HealthServer {
  let mode = initial;
  let requests = 0;
  const release = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, async () => {
    requests++;
    if (mode !== "hang") return new Response(null, { status: mode });
    // Hung: no answer until the server stops.
    await new Promise((resolve) =>
      release.signal.addEventListener("abort", resolve, { once: true })
    );
    return new Response(null, { status: 503 });
  });
  const port = server.addr.port;
  return {
    port,
    url: `http://127.0.0.1:${port}/health`,
    get requests() {
      return requests;
    },
    set(next: Mode) {
      mode = next;
    },
    async [Symbol.asyncDispose]() {
      release.abort();
      await server.shutdown();
    },
  };
}
