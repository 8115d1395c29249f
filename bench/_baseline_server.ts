// Copyright the discover authors. BSD-3-Clause license.

/**
 * The baseline: the least a WebSocket server in Deno can do, to measure the
 * agent against in the same run. Every text message is JSON:
 *
 * - `{"broadcast": TEXT}`: TEXT is sent to every other connection;
 * - `{"stream": N, "frame": TEXT}`: TEXT is sent N times to the sender;
 * - anything else with an `id` (a JSON-RPC request): answered with
 *   `{"jsonrpc":"2.0","id":ID,"result":PARAMS}`.
 *
 * Prints `listening on ws://127.0.0.1:PORT/` once it accepts connections.
 *
 * @module
 */

const sockets = new Set<WebSocket>();

function onMessage(ws: WebSocket, text: string) {
  const msg = JSON.parse(text);
  if (typeof msg.broadcast === "string") {
    for (const other of sockets) {
      if (other !== ws && other.readyState === WebSocket.OPEN) {
        other.send(msg.broadcast);
      }
    }
  } else if (typeof msg.stream === "number") {
    for (let i = 0; i < msg.stream; i++) ws.send(msg.frame);
  } else {
    ws.send(
      JSON.stringify({
        jsonrpc: "2.0",
        id: msg.id,
        result: msg.params ?? null,
      }),
    );
  }
}

Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(`listening on ws://127.0.0.1:${port}/`),
}, (req) => {
  if (req.headers.get("upgrade") !== "websocket") {
    return new Response("WebSocket only", { status: 400 });
  }
  const { socket, response } = Deno.upgradeWebSocket(req, {
    idleTimeout: Number(Deno.args[0] ?? 0),
  });
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (e) => onMessage(socket, e.data);
  return response;
});

Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
