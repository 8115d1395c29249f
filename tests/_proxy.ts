// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: a TCP proxy in front of a loopback port, for fault tests.
 * Its path can be
 *
 * - paused: the target-to-client direction stops reading, so the target's
 *   sends back up in the proxy and the kernel's buffers, as behind a client
 *   that reads nothing (the client-to-target direction still flows); once
 *   resumed, the client gets every byte;
 * - held: the target-to-client direction reads on but passes nothing on
 *   until released (a pause lets through the one read already waiting; a
 *   hold holds every byte read after it): answers that come late, while
 *   requests still reach the target;
 * - cut: every connection is closed at once (both ends see it end);
 * - frozen: nothing moves either way, and new connections wait, while every
 *   connection stays open: a half-open path. Bytes are not lost: they wait
 *   in the proxy and the kernel's buffers, as TCP retransmission would
 *   deliver them once the path is back. Thawing either resumes every
 *   connection as it was, or resets them all (a path that comes back
 *   without its connection state, as behind a restarted NAT);
 * - refused: every connection is cut and new ones are closed at once,
 *   until it admits them again;
 * - moved: new connections go to another port.
 *
 * It can also show each connection's bytes toward the target to an
 * observer (`TcpProxyOptions.observe`), to check what a client sends.
 *
 * A target that refuses a connection (a process that is down) closes the
 * accepted one, and the proxy keeps accepting.
 *
 * @module
 */

/** What {@linkcode TcpProxy.thaw} does with the connections. */
export type ThawMode = "resume" | "reset";

/** A running proxy. */
export interface TcpProxy {
  /** The port clients connect to. */
  readonly port: number;
  /** `ws://127.0.0.1:<port>`, for WebSocket clients. */
  readonly url: string;
  /** The port new connections are forwarded to. */
  target: number;
  /** Whether the path is frozen. */
  readonly frozen: boolean;
  /** Number of open connections. */
  readonly connections: number;
  /** Number of connections accepted since the start (closed ones too). */
  readonly accepted: number;
  /**
   * Stops reading from the target, on every connection and new ones: the
   * target's sends back up until `resume`.
   */
  pause(): void;
  /** Reads from the target again after `pause`. */
  resume(): void;
  /**
   * Holds what the target sends from now on, on every connection and new
   * ones, until `release` (the client-to-target direction still flows).
   */
  hold(): void;
  /** Passes on what was held, in order, and carries on. */
  release(): void;
  /** Closes every open connection; returns how many there were. */
  cut(): number;
  /** Stops everything on the path, new connections included. */
  freeze(): void;
  /**
   * Lets the path carry again: the connections as they were (`"resume"`,
   * the default: what was held is delivered), or reset (`"reset"`: every
   * connection is closed).
   */
  thaw(mode?: ThawMode): void;
  /** Cuts every connection and closes new ones at once, until `admit`. */
  refuse(): void;
  /** Accepts new connections again after `refuse`. */
  admit(): void;
  /** Closes the listener and every connection. */
  close(): void;
  /** Same as `close`. */
  [Symbol.dispose](): void;
}

/** Options of {@linkcode tcpProxy}. */
export interface TcpProxyOptions {
  /**
   * Sees the bytes each connection sends toward the target, in order,
   * before they are forwarded; `connection` numbers the connections from
   * 1 in the order they were accepted.
   */
  observe?(bytes: Uint8Array, connection: number): void;
}

/**
 * Starts a proxy to `127.0.0.1:target`.
 *
 * @param target The port to forward to.
 * @param options What to show an observer.
 * @returns The proxy.
 */
export function tcpProxy(
  target: number,
  options: TcpProxyOptions = {},
): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const links = new Set<() => void>();
  let accepted = 0;
  let frozen = false;
  let refused = false;
  let closed = false;
  let frozenGate: PromiseWithResolvers<void> | undefined;
  let pausedGate: PromiseWithResolvers<void> | undefined;
  let heldGate: PromiseWithResolvers<void> | undefined;
  const open = () => frozenGate?.promise ?? Promise.resolve();
  const reading = () => pausedGate?.promise ?? Promise.resolve();
  const closeAll = () => {
    const all = [...links];
    links.clear();
    for (const end of all) end();
    return all.length;
  };

  const link = async (conn: Deno.Conn, connection: number) => {
    let upstream: Deno.Conn | undefined;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      links.delete(end);
      for (const c of [conn, upstream]) {
        try {
          c?.close();
        } catch { /* closed */ }
      }
    };
    links.add(end);
    try {
      await open(); // a frozen path holds new connections
      if (ended || refused) return end();
      upstream = await Deno.connect({
        hostname: "127.0.0.1",
        port: proxy.target,
      });
      if (ended) return end();
    } catch {
      return end(); // the target is down: the client sees its connection end
    }
    const pump = async (
      from: Deno.Conn,
      to: Deno.Conn,
      pausable: boolean,
      observe?: (bytes: Uint8Array) => void,
    ) => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          await open();
          if (pausable) await reading(); // a paused path reads nothing
          const n = await from.read(buf);
          await open(); // a frozen path carries nothing, not even a close
          if (n === null) break;
          if (pausable) await heldGate?.promise; // a held path passes nothing on
          observe?.(buf.slice(0, n));
          for (let sent = 0; sent < n;) {
            sent += await to.write(buf.subarray(sent, n));
          }
        }
      } catch { /* closed */ }
      end();
    };
    const observe = options.observe;
    void pump(
      conn,
      upstream,
      false,
      observe && ((bytes) => observe(bytes, connection)),
    );
    void pump(upstream, conn, true);
  };

  (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        if (closed) return;
        continue;
      }
      if (refused || closed) {
        try {
          conn.close();
        } catch { /* closed */ }
        continue;
      }
      accepted++;
      void link(conn, accepted);
    }
  })();

  const proxy: TcpProxy = {
    port,
    url: `ws://127.0.0.1:${port}`,
    target,
    get frozen() {
      return frozen;
    },
    get connections() {
      return links.size;
    },
    get accepted() {
      return accepted;
    },
    pause() {
      pausedGate ??= Promise.withResolvers<void>();
    },
    resume() {
      const g = pausedGate;
      pausedGate = undefined;
      g?.resolve();
    },
    hold() {
      heldGate ??= Promise.withResolvers<void>();
    },
    release() {
      const g = heldGate;
      heldGate = undefined;
      g?.resolve();
    },
    cut: closeAll,
    freeze() {
      if (frozen) return;
      frozen = true;
      frozenGate = Promise.withResolvers<void>();
    },
    thaw(mode = "resume") {
      if (!frozen) return;
      frozen = false;
      if (mode === "reset") closeAll();
      const g = frozenGate;
      frozenGate = undefined;
      g?.resolve();
    },
    refuse() {
      refused = true;
      closeAll();
    },
    admit() {
      if (!closed) refused = false;
    },
    close() {
      closed = refused = true;
      try {
        listener.close();
      } catch { /* closed */ }
      closeAll();
      proxy.thaw("reset");
      proxy.resume();
      proxy.release();
    },
    [Symbol.dispose]() {
      proxy.close();
    },
  };
  return proxy;
}
