// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: a bare WebSocket peer that sends frames as given and
 * collects what comes back, for checking the wire protocol itself.
 *
 * @module
 */

/** A raw WebSocket connection to an agent. */
export interface RawSocket extends AsyncDisposable {
  /** The socket. */
  readonly socket: WebSocket;
  /** Sends a text frame, or a binary frame for bytes. */
  send(data: string | Uint8Array): void;
  /** Sends a value as a JSON text frame. */
  sendJson(value: unknown): void;
  /** Resolves with the next frame parsed as JSON; rejects after `ms` milliseconds. */
  next(ms?: number): Promise<unknown>;
  /** Collects every frame that arrives within `ms` milliseconds. */
  drain(ms: number): Promise<unknown[]>;
  /** Sends a request and resolves with the response that has its id. */
  call(method: string, params?: unknown): Promise<Record<string, unknown>>;
  /** Resolves when the socket closes, with the close event. */
  readonly closed: Promise<CloseEvent>;
  /** Closes with `code` (default 1000) and waits for the close. */
  close(code?: number): Promise<void>;
}

/**
 * Opens a raw connection.
 *
 * @param url The agent's URL.
 * @returns The open connection.
 */
export async function openRaw(url: string): Promise<RawSocket> {
  const socket = new WebSocket(url);
  const frames: unknown[] = [];
  let wake: (() => void) | undefined;
  socket.addEventListener("message", (event) => {
    frames.push(JSON.parse(event.data as string));
    wake?.();
  });
  const closed = new Promise<CloseEvent>((resolve) =>
    socket.addEventListener("close", resolve, { once: true })
  );
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener("open", () => resolve(), { once: true });
    socket.addEventListener(
      "error",
      () => reject(new Error(`cannot open ${url}`)),
      {
        once: true,
      },
    );
  });
  let nextId = 1_000_000;
  const next = async (ms = 5000) => {
    const deadline = Date.now() + ms;
    while (frames.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => (clearTimeout(timer), resolve());
      });
      wake = undefined;
    }
    return frames.shift();
  };
  const raw: RawSocket = {
    socket,
    closed,
    send: (data) => socket.send(data),
    sendJson: (value) => socket.send(JSON.stringify(value)),
    next,
    drain: async (ms) => {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return frames.splice(0);
    },
    call: async (method, params) => {
      const id = nextId++;
      raw.sendJson({ jsonrpc: "2.0", id, method, params });
      const skipped: unknown[] = [];
      try {
        for (;;) {
          const frame = await next() as Record<string, unknown>;
          if (frame?.id === id) return frame;
          skipped.push(frame);
        }
      } finally {
        frames.unshift(...skipped);
      }
    },
    close: async (code = 1000) => {
      if (socket.readyState === WebSocket.OPEN) socket.close(code);
      await closed;
    },
    [Symbol.asyncDispose]: () => raw.close(),
  };
  return raw;
}
