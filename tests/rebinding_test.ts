// Copyright the discover authors. BSD-3-Clause license.

/**
 * DNS rebinding against a real agent process: requests whose `Host` names
 * a host that is not the agent's (as a page of `rebind.attacker.test`
 * would send once its name points at 127.0.0.1) are refused with 403, the
 * WebSocket upgrade and every HTTP endpoint alike; IP addresses,
 * `localhost` and names allowed with `--allow-host` are served. `fetch`
 * does not let a program set `Host`, so the requests are written by hand.
 */

import assert from "node:assert/strict";
import { AGENT_RUN_ARGS } from "../tools/agent_command.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";

const encoder = new TextEncoder();

interface RawResponse {
  status: number;
  body: string;
}

/**
 * Sends one HTTP/1.x request as written and reads the status line, the
 * head and a `content-length` body (a `101` has none: the socket is closed
 * right after its head).
 */
async function send(
  agent: AgentProcess,
  request: string,
): Promise<RawResponse> {
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: Number(new URL(agent.http).port),
  });
  let closed = false;
  const close = () => {
    if (!closed) conn.close();
    closed = true;
  };
  // Generous: the agent answers within milliseconds on an idle machine.
  const timer = setTimeout(close, 10_000);
  try {
    await conn.write(encoder.encode(request));
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let text = "";
    const complete = () => {
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) return false;
      if (text.startsWith("HTTP/1.1 101")) return true;
      const length = /\r\ncontent-length: *([0-9]+)/i.exec(text.slice(0, end));
      return length !== null &&
        encoder.encode(text.slice(end + 4)).length >= Number(length[1]);
    };
    while (!complete()) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
    const status = Number(/^HTTP\/1\.[01] ([0-9]{3})/.exec(text)?.[1]);
    assert.ok(status > 0, `no HTTP response: '${text}'`);
    return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } finally {
    clearTimeout(timer);
    close();
  }
}

function get(path: string, host: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}` +
    "Connection: close\r\n\r\n";
}

function upgrade(host: string, origin?: string): string {
  return `GET / HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\n` +
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
    "Sec-WebSocket-Version: 13\r\n" +
    (origin === undefined ? "" : `Origin: ${origin}\r\n`) + "\r\n";
}

const ENDPOINTS = ["/", "/healthz", "/openrpc.json", "/client.js", "/nope"];

Deno.test("rebinding: names that are not the agent's get 403, everywhere", async () => {
  await using agent = await spawnAgent(["--log-level", "warn"]);
  const port = new URL(agent.http).port;
  const evil = `rebind.attacker.test:${port}`;

  // The attack: Host and Origin agree, as for a page of that name.
  const refused = await send(agent, upgrade(evil, `http://${evil}`));
  assert.equal(refused.status, 403);
  assert.match(refused.body, /'rebind\.attacker\.test' is not a name/);
  assert.match(refused.body, /--allow-host rebind\.attacker\.test/);
  assert.equal((await send(agent, upgrade(evil))).status, 403);
  for (const path of ENDPOINTS) {
    assert.equal((await send(agent, get(path, evil))).status, 403, path);
  }
  assert.equal(
    (await send(agent, get("/healthz", `REBIND.attacker.test.:${port}`)))
      .status,
    403,
  );
  // An absolute URL in the request line is the request's authority.
  assert.equal(
    (await send(
      agent,
      get(`http://${evil}/healthz`, `127.0.0.1:${port}`),
    )).status,
    403,
  );
  assert.match(
    agent.stderr(),
    /request refused: Host is not a name of this agent/,
  );

  // No Host (HTTP/1.0), or a malformed one: 400.
  const noHost = await send(agent, "GET /healthz HTTP/1.0\r\n\r\n");
  assert.equal(noHost.status, 400);
  assert.match(noHost.body, /no Host header/);
  assert.equal(
    (await send(agent, get("/healthz", `a@127.0.0.1:${port}`))).status,
    400,
  );
});

Deno.test("rebinding: IP addresses and localhost are served", async () => {
  await using agent = await spawnAgent(["--log-level", "warn"]);
  const port = new URL(agent.http).port;
  for (
    const host of [
      `127.0.0.1:${port}`,
      "127.0.0.1",
      `[::1]:${port}`,
      `localhost:${port}`,
      `LOCALHOST.:${port}`,
      `dashboard.localhost:${port}`,
    ]
  ) {
    const health = await send(agent, get("/healthz", host));
    assert.equal(health.status, 200, host);
    assert.equal(JSON.parse(health.body).status, "ok", host);
    assert.equal((await send(agent, get("/", host))).status, 200, host);
    assert.equal((await send(agent, get("/nope", host))).status, 404, host);
  }
  // The dashboard's own upgrade, from each of its names, and a program's.
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
    assert.equal(
      (await send(agent, upgrade(host, `http://${host}`))).status,
      101,
      host,
    );
  }
  assert.equal((await send(agent, upgrade(`[::1]:${port}`))).status, 101);
  // The Origin check still applies once the Host is admitted.
  assert.equal(
    (await send(
      agent,
      upgrade(`127.0.0.1:${port}`, "http://rebind.attacker.test"),
    )).status,
    403,
  );
});

Deno.test("rebinding: --allow-host adds a name, with or without port", async () => {
  await using agent = await spawnAgent([
    "--allow-host",
    "discover.test",
    "--allow-host",
    "a.example,B.Example",
    "--log-level",
    "warn",
  ]);
  const port = new URL(agent.http).port;
  const named = `discover.test:${port}`;
  assert.equal(
    (await send(agent, upgrade(named, `http://${named}`))).status,
    101,
  );
  for (const host of [named, "discover.test", `b.example:${port}`]) {
    assert.equal((await send(agent, get("/healthz", host))).status, 200, host);
  }
  for (const host of [`rebind.attacker.test:${port}`, `x.discover.test`]) {
    assert.equal((await send(agent, get("/healthz", host))).status, 403, host);
    assert.equal((await send(agent, upgrade(host))).status, 403, host);
  }
});

Deno.test("rebinding: a bad --allow-host is a usage error", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...AGENT_RUN_ARGS, "--allow-host", "discover.test:1111"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(
    new TextDecoder().decode(out.stderr),
    /'allowHosts' must hold .*'discover\.test:1111'/,
  );
});
