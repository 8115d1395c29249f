// Copyright the discover authors. BSD-3-Clause license.

/**
 * Benchmark 13's baseline: a bare DNS responder on UDP, `node:dgram` and
 * `dns-packet` alone, that answers `A` queries for one name with a fixed
 * set of addresses. Like the agent, it decodes every query and encodes
 * every answer (the addresses in a random order, TTL 0, authoritative);
 * any other name is `NXDOMAIN`. It is what the agent's DNS interface costs
 * at the least, without its views, names, truncation or TCP.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 bench/_dns_responder.ts NAME ADDRESS,ADDRESS,...
 * ```
 *
 * Prints `listening on udp 127.0.0.1:PORT` once it answers; SIGTERM stops
 * it.
 *
 * @module
 */

import dgram from "node:dgram";
import type { Buffer } from "node:buffer";
import dnsPacket, { type Packet } from "dns-packet";

const [name, list] = Deno.args;
if (!name || !list) {
  throw new TypeError(
    `usage: _dns_responder.ts NAME ADDRESS,ADDRESS,...: current arguments are ${
      JSON.stringify(Deno.args)
    }`,
  );
}
const wanted = name.replace(/\.$/, "").toLowerCase();
const addresses = list.split(",");
const NXDOMAIN = 3;

/** The addresses in a random order (Fisher-Yates), as the agent answers. */
function shuffled(items: readonly string[]): string[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const socket = dgram.createSocket("udp4");
socket.on("message", (message: Buffer, remote: dgram.RemoteInfo) => {
  let query: Packet;
  try {
    query = dnsPacket.decode(message);
  } catch {
    return;
  }
  if (query.type === "response") return;
  const question = query.questions?.[0];
  const hit = question !== undefined && question.type === "A" &&
    question.name.replace(/\.$/, "").toLowerCase() === wanted;
  const out = dnsPacket.encode({
    type: "response",
    id: query.id,
    flags: dnsPacket.AUTHORITATIVE_ANSWER |
      ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
      (hit ? 0 : NXDOMAIN),
    questions: query.questions,
    answers: hit
      ? shuffled(addresses).map((data) => ({
        type: "A" as const,
        class: "IN" as const,
        name: question.name,
        ttl: 0,
        data,
      }))
      : [],
  });
  socket.send(out, remote.port, remote.address);
});
socket.bind({ address: "127.0.0.1", port: 0 }, () => {
  console.log(`listening on udp 127.0.0.1:${socket.address().port}`);
});
Deno.addSignalListener("SIGTERM", () => {
  socket.close();
  Deno.exit(0);
});
