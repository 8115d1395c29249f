// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: a TCP proxy in front of a loopback port, whose path can be
 * paused (the target-to-client direction stops reading, so the target's
 * sends back up) or frozen (both directions forward nothing and new
 * connections go nowhere, while every connection stays open: a half-open
 * path), or cut (every connection closed at once; new ones are accepted).
 *
 * @module
 */

/** A running proxy. */
export interface TcpProxy {
  /** The port clients connect to. */
  readonly port: number;
  /** Stops reading from the target. */
  pause(): void;
  /** Reads from the target again. */
  resume(): void;
  /** Forwards nothing either way, and parks new connections. */
  freeze(): void;
  /** Forwards again (data received while frozen is lost). */
  thaw(): void;
  /**
   * Closes every open connection, both ways, and keeps accepting new ones.
   *
   * @returns How many client connections were cut.
   */
  cut(): number;
  /** WebSocket URL of the proxy, for clients of an agent behind it. */
  readonly url: string;
  /** Closes the listener and every connection. */
  close(): void;
}

/**
 * Starts a proxy to `127.0.0.1:target`.
 *
 * @param target The port to forward to.
 * @returns The proxy.
 */
export function tcpProxy(target: number): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let conns: Deno.Conn[] = [];
  let paused = false;
  let frozen = false;
  let resumed = () => {};
  const pump = async (from: Deno.Conn, to: Deno.Conn, pausable: boolean) => {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      while (pausable && paused) {
        await new Promise<void>((resolve) => resumed = resolve);
      }
      const n = await from.read(buf).catch(() => null);
      if (n === null) break;
      if (!frozen) await to.write(buf.subarray(0, n)).catch(() => {});
    }
    if (frozen) return; // a frozen path carries no close either
    try {
      to.close();
    } catch { /* closed */ }
  };
  (async () => {
    for await (const conn of listener) {
      if (frozen) {
        conns.push(conn);
        continue;
      }
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect({ hostname: "127.0.0.1", port: target });
      } catch {
        conn.close(); // the target is down: so is the path
        continue;
      }
      conns.push(conn, upstream);
      pump(conn, upstream, false);
      pump(upstream, conn, true);
    }
  })().catch(() => {});
  const cut = () => {
    const all = conns;
    conns = [];
    for (const c of all) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    return all.length / 2;
  };
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    cut,
    pause: () => paused = true,
    resume: () => {
      paused = false;
      resumed();
    },
    freeze: () => frozen = true,
    thaw: () => frozen = false,
    close() {
      listener.close();
      cut();
    },
  };
}
