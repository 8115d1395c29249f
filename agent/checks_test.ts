// Copyright the discover authors. BSD-3-Clause license.

// Real HTTP servers and TCP listeners on 127.0.0.1 free ports. Time bounds
// are generous: `until` waits up to 10 s for what takes well under a second;
// timeouts of 190 ms on loopback leave room for a loaded machine, except
// where a test makes a target hang on purpose.

import assert from "node:assert/strict";
import {
  CheckPolicy,
  Checks,
  type CheckSpec,
  type HealthState,
  sameCheck,
} from "./checks.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { until } from "../tests/_wait.ts";

const NEW: HealthState = { health: "critical", note: "no check result yet" };

function spec(target: Partial<CheckSpec>): CheckSpec {
  return {
    intervalMs: 200,
    timeoutMs: 190,
    failuresBeforeCritical: 1,
    successesBeforePassing: 1,
    ...target,
  };
}

/**
 * An HTTP server whose handler answers `status()`; "hang": not until the
 * server closes.
 */
function serve(
  status: (request: Request) => number | "hang" | Promise<number>,
) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const stats = { requests: 0, inFlight: 0, maxInFlight: 0, hung: 0 };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      stats.requests++;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      try {
        const answer = await status(request);
        if (answer === "hang") {
          // Answers only when the server closes; `hung` counts these.
          stats.hung++;
          await released;
          return new Response(null, { status: 503 });
        }
        return new Response("body that is never read", { status: answer });
      } finally {
        stats.inFlight--;
      }
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    stats,
    async close() {
      release();
      await server.shutdown();
    },
  };
}

/** A TCP listener on `port` (0: a free one) that accepts and closes. */
function listenTcp(port = 0) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const accepting = (async () => {
    try {
      for await (const conn of listener) conn.close();
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await accepting;
    },
  };
}

function recorder() {
  const changes: HealthState[] = [];
  return { changes, onChange: (state: HealthState) => changes.push(state) };
}

/** Lets aborted runs settle, so that no fetch is left for the sanitizers. */
function settle(ms = 50): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * An HTTP/1.1 server on raw TCP, so that a test controls every byte and sees
 * every connection: `respond` answers one request (by its path) on the
 * connection, which then serves the next request until the client closes
 * it. `stopListening()` refuses new connections and keeps the open ones.
 */
function rawHttp(respond: (path: string, conn: Deno.Conn) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const handling = new Set<Promise<void>>();
  const stats = {
    accepted: 0,
    get open() {
      return conns.size;
    },
  };
  const handle = async (conn: Deno.Conn) => {
    const buffer = new Uint8Array(16 * 1024);
    let head = "";
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        head += decoder.decode(buffer.subarray(0, n));
        let end;
        while ((end = head.indexOf("\r\n\r\n")) >= 0) {
          const path = head.split(" ", 2)[1] ?? "/";
          head = head.slice(end + 4);
          await respond(path, conn);
        }
      }
    } catch {
      // reset by the client, or closed by close()
    }
    conns.delete(conn);
    try {
      conn.close();
    } catch {
      // already closed
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        stats.accepted++;
        conns.add(conn);
        const done = handle(conn);
        handling.add(done);
        done.finally(() => handling.delete(done));
      }
    } catch {
      // closed
    }
  })();
  let listening = true;
  const stopListening = () => {
    if (listening) listener.close();
    listening = false;
  };
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    stats,
    stopListening,
    async close() {
      stopListening();
      for (const conn of conns) conn.close();
      await accepting;
      await Promise.all(handling);
    },
  };
}

/** Writes an HTTP/1.1 response head and body. */
async function reply(conn: Deno.Conn, head: string, body = ""): Promise<void> {
  await conn.write(encoder.encode(`HTTP/1.1 ${head}\r\n\r\n${body}`));
}

/**
 * A loopback port that never answers a connection attempt: its listener
 * never accepts and its accept queue is full, so the kernel drops every new
 * SYN (a blackholed host, on loopback). `connecting()` counts the
 * connection attempts to it in flight: SYN_SENT sockets in /proc/net/tcp
 * (Linux only), read with `cat` since Deno reads /proc only with
 * --allow-all.
 */
async function unansweredPort() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const connecting = async () => {
    const { stdout } = await new Deno.Command("cat", {
      args: ["/proc/net/tcp"],
      stderr: "inherit",
    }).output();
    return decoder.decode(stdout).split("\n").slice(1).filter((line) => {
      const [, , remote, state] = line.trim().split(/\s+/);
      return remote?.endsWith(hex) && state === "02"; // SYN_SENT
    }).length;
  };
  // Fills the accept queue (the kernel's backlog + 1 connections): full
  // once a connection attempt has not completed in 500 ms.
  for (;;) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 500);
    try {
      held.push(
        await Deno.connect({
          hostname: "127.0.0.1",
          port,
          signal: controller.signal,
        }),
      );
    } catch {
      break;
    } finally {
      clearTimeout(timer);
    }
    assert.ok(held.length < 10_000, "the accept queue never filled");
  }
  return {
    port,
    connecting,
    close() {
      for (const conn of held) conn.close();
      listener.close();
    },
  };
}

Deno.test("an HTTP check follows 200 -> 500 -> 200 -> hung, one callback per change", async () => {
  let mode: "ok" | "fail" | "hang" = "ok";
  const server = serve(() =>
    mode === "ok" ? 200 : mode === "fail" ? 500 : "hang"
  );
  const checks = new Checks();
  const { changes, onChange } = recorder();
  try {
    checks.start("web/a", spec({ http: `${server.url}/health` }), {
      initial: NEW,
      onChange,
    });
    assert.deepEqual(checks.state("web/a"), NEW);
    await until(() => changes.length === 1, "passing");
    assert.deepEqual(changes, [{ health: "passing" }]);
    assert.deepEqual(checks.state("web/a"), { health: "passing" });

    mode = "fail";
    await until(() => changes.length === 2, "critical");
    assert.deepEqual(changes[1], { health: "critical", note: "HTTP 500" });
    // More failing runs: no more callbacks.
    const seen = server.stats.requests;
    await until(() => server.stats.requests >= seen + 3, "three more runs");
    assert.equal(changes.length, 2);

    mode = "ok";
    await until(() => changes.length === 3, "passing again");
    assert.deepEqual(changes[2], { health: "passing" });

    mode = "hang";
    await until(() => changes.length === 4, "critical after a timeout");
    assert.equal(changes[3].health, "critical");
    assert.match(changes[3].note!, /^timed out after 190 ms$/);
    assert.deepEqual(checks.state("web/a"), changes[3]);
    const hung = server.stats.requests;
    await until(() => server.stats.requests >= hung + 2, "two more runs");
    assert.equal(changes.length, 4);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("thresholds: failuresBeforeCritical and successesBeforePassing count consecutive results", async () => {
  // Statuses in request order; then 200 for ever.
  const script = [500, 500, 200, 500, 500, 500, 200, 500, 200, 200];
  const server = serve(() => script.shift() ?? 200);
  const log: string[] = [];
  const checks = new Checks({
    onRun: ({ ok, ms }) => {
      assert.ok(ms >= 0);
      log.push(ok ? "ok" : "fail");
    },
  });
  try {
    checks.start(
      "web/a",
      spec({
        http: server.url,
        failuresBeforeCritical: 3,
        successesBeforePassing: 2,
      }),
      {
        initial: { health: "passing" },
        onChange: (state) =>
          log.push(`${state.health}${state.note ? ` ${state.note}` : ""}`),
      },
    );
    await until(() => log.length >= 15, "twelve runs and two changes");
    assert.deepEqual(log.slice(0, 15), [
      "fail",
      "fail",
      "ok", // two failures, then a success: still passing
      "fail",
      "fail",
      "fail",
      "critical HTTP 500", // three in a row
      "ok",
      "fail",
      "ok", // one success, then a failure: still critical
      "ok",
      "passing", // two in a row
      "ok",
      "ok",
      "ok",
    ]);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("a new instance passes at its first success; a resumed passing one never flaps", async () => {
  const server = serve(() => 200);
  let runs = 0;
  const checks = new Checks({ onRun: () => runs++ });
  const fresh = recorder();
  const resumed = recorder();
  try {
    checks.start("web/new", spec({ http: server.url }), {
      initial: NEW,
      onChange: fresh.onChange,
    });
    checks.start("web/resumed", spec({ http: server.url }), {
      initial: { health: "passing" },
      onChange: resumed.onChange,
    });
    assert.equal(checks.size, 2);
    await until(() => runs >= 8, "runs of both checks");
    assert.deepEqual(fresh.changes, [{ health: "passing" }]);
    assert.deepEqual(resumed.changes, []);
    assert.deepEqual(checks.state("web/resumed"), { health: "passing" });
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("a critical instance's note is replaced once by the first failure, and not when it is the same", async () => {
  const server = serve(() => 500);
  let runs = 0;
  const checks = new Checks({ onRun: () => runs++ });
  const fresh = recorder();
  const resumed = recorder();
  try {
    checks.start("web/new", spec({ http: server.url }), {
      initial: NEW,
      onChange: fresh.onChange,
    });
    checks.start("web/resumed", spec({ http: server.url }), {
      initial: { health: "critical", note: "HTTP 500" },
      onChange: resumed.onChange,
    });
    await until(() => runs >= 8, "runs of both checks");
    assert.deepEqual(fresh.changes, [{ health: "critical", note: "HTTP 500" }]);
    assert.deepEqual(resumed.changes, []);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("a TCP check follows a listener closed and reopened on the same port", async () => {
  let listener = listenTcp();
  const port = listener.port;
  const checks = new Checks();
  const { changes, onChange } = recorder();
  try {
    checks.start("db/a", spec({ tcp: `127.0.0.1:${port}` }), {
      initial: NEW,
      onChange,
    });
    await until(() => changes.length === 1, "passing");
    await listener.close();
    await until(() => changes.length === 2, "critical");
    assert.deepEqual(changes[1], {
      health: "critical",
      note: "connection refused",
    });
    listener = listenTcp(port);
    await until(() => changes.length === 3, "passing again");
    assert.deepEqual(changes, [
      { health: "passing" },
      { health: "critical", note: "connection refused" },
      { health: "passing" },
    ]);
  } finally {
    checks.close();
    await settle();
    await listener.close();
  }
});

Deno.test("a hung target does not delay another check", async () => {
  const server = serve((request) =>
    new URL(request.url).pathname === "/hang" ? "hang" : 200
  );
  const hungRuns: boolean[] = [];
  const checks = new Checks({ maxConcurrent: 8 });
  const fast = recorder();
  try {
    // Its run stays in flight for up to 9 s.
    checks.start(
      "web/hung",
      spec({ http: `${server.url}/hang`, intervalMs: 10_000, timeoutMs: 9000 }),
      {
        initial: { health: "passing" },
        onChange: () => hungRuns.push(true),
      },
    );
    await until(() => server.stats.hung === 1, "the hung request arrives");
    checks.start("web/fast", spec({ http: `${server.url}/ok` }), {
      initial: NEW,
      onChange: fast.onChange,
    });
    await until(() => fast.changes.length === 1, "the fast check passes");
    assert.deepEqual(fast.changes, [{ health: "passing" }]);
    // The hung run is still in flight and has not reported.
    assert.equal(server.stats.hung, 1);
    assert.deepEqual(hungRuns, []);
  } finally {
    checks.close(); // aborts the hung run
    await settle();
    await server.close();
  }
});

Deno.test("maxConcurrent 1: never two runs in flight at once", async () => {
  const server = serve(async () => {
    await new Promise((resolve) => setTimeout(resolve, 30));
    return 200;
  });
  const checks = new Checks({ maxConcurrent: 1 });
  try {
    for (const name of ["a", "b"] as const) {
      checks.start(
        name,
        spec({ http: server.url, intervalMs: 60, timeoutMs: 50 }),
        {
          initial: { health: "passing" },
          onChange: () => {},
        },
      );
    }
    await until(() => server.stats.requests >= 12, "twelve runs");
    assert.equal(server.stats.maxInFlight, 1);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("maxConcurrent 1: queued runs of every check get their turn", async () => {
  const server = serve(async () => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return 200;
  });
  const checks = new Checks({ maxConcurrent: 1 });
  const a = recorder();
  const b = recorder();
  try {
    checks.start("a", spec({ http: `${server.url}/a` }), {
      initial: NEW,
      onChange: a.onChange,
    });
    checks.start("b", spec({ http: `${server.url}/b` }), {
      initial: NEW,
      onChange: b.onChange,
    });
    await until(
      () => a.changes.length === 1 && b.changes.length === 1,
      "both pass",
    );
    assert.equal(server.stats.maxInFlight, 1);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("stop(): no more requests, no callback", async () => {
  const statuses = [500, 200];
  const server = serve(() => statuses.shift() ?? 200);
  let runs = 0;
  const checks = new Checks({
    onRun: () => {
      // Stopped between runs: nothing is in flight.
      if (++runs === 2) checks.stop("web/a");
    },
  });
  const { changes, onChange } = recorder();
  try {
    checks.start(
      "web/a",
      spec({ http: server.url, intervalMs: 50, timeoutMs: 40 }),
      {
        initial: { health: "passing" },
        onChange,
      },
    );
    await until(() => runs === 2, "two runs");
    assert.equal(checks.has("web/a"), false);
    assert.equal(checks.size, 0);
    assert.equal(checks.state("web/a"), undefined);
    // The second run passed, but stop() came first: it reports nothing.
    assert.deepEqual(changes, [{ health: "critical", note: "HTTP 500" }]);
    const requests = server.stats.requests;
    assert.equal(requests, 2);
    // Six intervals later: still nothing.
    await settle(300);
    assert.equal(server.stats.requests, requests);
    assert.equal(runs, 2);
    assert.equal(changes.length, 1);
  } finally {
    checks.close();
    await server.close();
  }
});

Deno.test("stop() during a run: the run is aborted, frees its slot and reports nothing", async () => {
  const server = serve((request) =>
    new URL(request.url).pathname === "/hang" ? "hang" : 200
  );
  let runs = 0;
  const checks = new Checks({ maxConcurrent: 1, onRun: () => runs++ });
  const hung = recorder();
  const next = recorder();
  try {
    // Without the abort its run would hold the only slot for 59 s.
    checks.start(
      "web/hung",
      spec({
        http: `${server.url}/hang`,
        intervalMs: 60_000,
        timeoutMs: 59_000,
      }),
      { initial: { health: "passing" }, onChange: hung.onChange },
    );
    await until(() => server.stats.hung === 1, "the request arrives");
    checks.stop("web/hung");
    checks.start("web/next", spec({ http: `${server.url}/ok` }), {
      initial: NEW,
      onChange: next.onChange,
    });
    await until(() => next.changes.length === 1, "the next check passes");
    assert.deepEqual(next.changes, [{ health: "passing" }]);
    assert.deepEqual(hung.changes, []);
    assert.ok(runs >= 1);
    assert.equal(server.stats.hung, 1); // never answered, yet no report
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test({
  name:
    "a target that never answers a connection attempt: each run's attempt ends at its deadline, TCP and HTTP alike",
  ignore: Deno.build.os !== "linux", // counts sockets in /proc/net/tcp
  async fn() {
    const target = await unansweredPort();
    let runs = 0;
    const checks = new Checks({ onRun: () => runs++ });
    const tcp = recorder();
    const http = recorder();
    try {
      const timing = { intervalMs: 100, timeoutMs: 50 };
      checks.start(
        "db/a",
        spec({ tcp: `127.0.0.1:${target.port}`, ...timing }),
        { initial: { health: "passing" }, onChange: tcp.onChange },
      );
      checks.start(
        "web/a",
        spec({ http: `http://127.0.0.1:${target.port}/`, ...timing }),
        { initial: { health: "passing" }, onChange: http.onChange },
      );
      await until(() => runs >= 20, "twenty runs");
      // At most one attempt per check: each ends with its run, so sockets
      // do not pile up beyond the runs in flight.
      const attempts = await target.connecting();
      assert.ok(attempts <= 2, `${attempts} connection attempts in flight`);
      const timedOut = { health: "critical", note: "timed out after 50 ms" };
      assert.deepEqual(tcp.changes, [timedOut]);
      assert.deepEqual(http.changes, [timedOut]);
      checks.close();
      await until(
        async () => await target.connecting() === 0,
        "no connection attempt left after close()",
      );
    } finally {
      checks.close();
      await settle();
      target.close();
    }
  },
});

Deno.test("an HTTP check connects afresh each run: a target that stops accepting fails, though an old connection would still answer", async () => {
  const server = rawHttp((_, conn) =>
    reply(conn, "200 OK\r\ncontent-length: 2", "ok")
  );
  const checks = new Checks();
  const { changes, onChange } = recorder();
  try {
    checks.start("web/a", spec({ http: `${server.url}/health` }), {
      initial: NEW,
      onChange,
    });
    await until(() => changes.length === 1, "passing");
    // The process no longer accepts connections (its listener is gone, or
    // its accept loop is stuck), yet answers on those it has.
    server.stopListening();
    await until(() => changes.length === 2, "critical");
    assert.deepEqual(changes, [
      { health: "passing" },
      { health: "critical", note: "connection refused" },
    ]);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("stop() and close() leave no connection open to the target", async () => {
  const server = rawHttp((_, conn) =>
    reply(conn, "200 OK\r\ncontent-length: 2", "ok")
  );
  const checks = new Checks();
  const a = recorder();
  const b = recorder();
  try {
    checks.start("web/a", spec({ http: `${server.url}/a` }), {
      initial: NEW,
      onChange: a.onChange,
    });
    await until(() => a.changes.length === 1, "the first check passes");
    checks.stop("web/a");
    await until(() => server.stats.open === 0, "no connection after stop()");

    checks.start("web/b", spec({ http: `${server.url}/b` }), {
      initial: NEW,
      onChange: b.onChange,
    });
    await until(() => b.changes.length === 1, "the second check passes");
    checks.close();
    await until(() => server.stats.open === 0, "no connection after close()");
    const accepted = server.stats.accepted;
    await settle(300); // a few intervals
    assert.equal(server.stats.accepted, accepted, "no run after close()");
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("hostile HTTP targets: an endless body, a huge head, a redirect loop, silence, a slow drip", async () => {
  const server = rawHttp(async (path, conn) => {
    if (path === "/endless") {
      await reply(conn, "200 OK\r\ntransfer-encoding: chunked");
      const chunk = encoder.encode(`10000\r\n${"x".repeat(0x10000)}\r\n`);
      for (;;) await conn.write(chunk); // until the client closes
    } else if (path === "/huge-head") {
      await reply(
        conn,
        `200 OK\r\nx-filler: ${"x".repeat(1 << 20)}\r\ncontent-length: 0`,
      );
    } else if (path === "/loop") {
      await reply(conn, "302 Found\r\nlocation: /loop\r\ncontent-length: 0");
    } else if (path === "/drip") {
      // A byte every 100 ms: the head would take 4 s.
      for (const byte of encoder.encode("HTTP/1.1 200 OK\r\n\r\n")) {
        await conn.write(Uint8Array.of(byte));
        await settle(100);
      }
    } else {
      // Silence: reads until the client closes.
      while (await conn.read(new Uint8Array(1024)) !== null) { /* ignored */ }
    }
  });
  let runs = 0;
  const checks = new Checks({ onRun: () => runs++ });
  const paths = ["/endless", "/huge-head", "/loop", "/drip", "/silent"];
  try {
    for (const path of paths) {
      checks.start(path, spec({ http: `${server.url}${path}` }), {
        initial: NEW,
        onChange: () => {},
      });
    }
    await until(() => runs >= 5 * paths.length, "five runs of each check");
    // Never more connections than checks, but for ones the client has
    // closed and the server has not noticed yet.
    assert.ok(server.stats.open <= 2 * paths.length, `${server.stats.open}`);
    assert.deepEqual(checks.state("/endless"), { health: "passing" });
    assert.deepEqual(checks.state("/loop"), {
      health: "critical",
      note: "HTTP 302",
    });
    const timedOut = { health: "critical", note: "timed out after 190 ms" };
    assert.deepEqual(checks.state("/drip"), timedOut);
    assert.deepEqual(checks.state("/silent"), timedOut);
    const huge = checks.state("/huge-head")!;
    assert.equal(huge.health, "critical");
    assert.doesNotMatch(huge.note!, /timed out/);
    checks.close();
    await until(() => server.stats.open === 0, "no connection after close()");
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("a timeout's note shows the timeout as the agent was given it", async () => {
  const server = serve(() => "hang");
  const checks = new Checks();
  const { changes, onChange } = recorder();
  try {
    // What the agent passes for `timeout: 0.1048` (104.80000000000001).
    checks.start(
      "web/a",
      spec({ http: server.url, timeoutMs: 0.1048 * 1000 }),
      { initial: { health: "passing" }, onChange },
    );
    await until(() => changes.length === 1, "critical");
    assert.deepEqual(changes, [
      { health: "critical", note: "timed out after 104.8 ms" },
    ]);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("a note leaves out what differs from run to run (the agent's local port): a resumed check does not flap", async () => {
  // Answers every request with something that is not HTTP.
  const server = rawHttp(async (_, conn) => {
    await conn.write(encoder.encode("NOT HTTP AT ALL\r\n\r\n"));
  });
  let runs = 0;
  const checks = new Checks({ onRun: () => runs++ });
  const fresh = recorder();
  const resumed = recorder();
  try {
    checks.start("web/a", spec({ http: server.url }), {
      initial: NEW,
      onChange: fresh.onChange,
    });
    await until(() => fresh.changes.length === 1, "the first result");
    const [{ health, note }] = fresh.changes;
    assert.equal(health, "critical");
    assert.doesNotMatch(note!, /127\.0\.0\.1|error sending request/);
    // An agent restarted with the stored note resumes without a change.
    checks.start("web/b", spec({ http: server.url }), {
      initial: { health: "critical", note },
      onChange: resumed.onChange,
    });
    const seen = runs;
    await until(() => runs >= seen + 6, "more runs of both checks");
    assert.deepEqual(resumed.changes, []);
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("one hung target holds at most a quarter of the slots: other checks keep running", async () => {
  const hung = serve(() => "hang");
  const other = serve(() => 200);
  const checks = new Checks({ maxConcurrent: 4 });
  const fast = recorder();
  try {
    // Four instances checked at one endpoint that hangs: without a share,
    // their runs would hold all four slots for 59 s.
    for (const name of ["a", "b", "c", "d"]) {
      checks.start(
        `web/${name}`,
        spec({
          http: `${hung.url}/health`,
          intervalMs: 60_000,
          timeoutMs: 59_000,
        }),
        { initial: { health: "passing" }, onChange: () => {} },
      );
    }
    await until(() => hung.stats.hung >= 1, "a hung request arrives");
    await settle(300); // every first run is due within 100 ms
    checks.start("api/a", spec({ http: other.url }), {
      initial: NEW,
      onChange: fast.onChange,
    });
    await until(() => fast.changes.length === 1, "the other check passes");
    assert.deepEqual(fast.changes, [{ health: "passing" }]);
    assert.equal(hung.stats.hung, 1, "the hung target holds 1 slot of 4");
  } finally {
    checks.close();
    await settle();
    await hung.close();
    await other.close();
  }
});

Deno.test("start() replaces a check; close() stops all; start() after close() throws", async () => {
  const server = serve(() => 200);
  const checks = new Checks();
  const first = recorder();
  const second = recorder();
  try {
    checks.start("web/a", spec({ http: `${server.url}/1` }), {
      initial: NEW,
      onChange: first.onChange,
    });
    checks.start("web/a", spec({ http: `${server.url}/2` }), {
      initial: NEW,
      onChange: second.onChange,
    });
    assert.equal(checks.size, 1);
    await until(() => second.changes.length === 1, "the new check passes");
    assert.deepEqual(first.changes, []);
    checks.close();
    assert.equal(checks.size, 0);
    assert.throws(
      () =>
        checks.start("web/b", spec({ http: server.url }), {
          initial: NEW,
          onChange: () => {},
        }),
      /closed/,
    );
  } finally {
    checks.close();
    await settle();
    await server.close();
  }
});

Deno.test("start() refuses a check it cannot run", () => {
  const checks = new Checks();
  const options = { initial: NEW, onChange: () => {} };
  assert.throws(
    () => checks.start("a", spec({}), options),
    /exactly one of 'http' and 'tcp'/,
  );
  assert.throws(
    () =>
      checks.start("a", spec({ tcp: "127.0.0.1:1", timeoutMs: 300 }), options),
    /'timeoutMs' must be less than 'intervalMs'/,
  );
  assert.throws(
    () => checks.start("a", spec({ http: "ftp://127.0.0.1/" }), options),
    /http:\/\/ or https:\/\//,
  );
  assert.throws(
    () => checks.start("a", spec({ tcp: "::1:80" }), options),
    /host:port/,
  );
  // Longer than a timer can wait: it would fire at once, again and again.
  assert.throws(
    () =>
      checks.start(
        "a",
        spec({ tcp: "127.0.0.1:1", intervalMs: 2 ** 31, timeoutMs: 1000 }),
        options,
      ),
    /'intervalMs' must be at most 2147483647/,
  );
  assert.throws(() => new Checks({ maxConcurrent: 0 }), /maxConcurrent/);
  assert.equal(checks.size, 0);
  checks.close();
});

Deno.test("sameCheck() compares every field", () => {
  const a = spec({ http: "http://127.0.0.1:8080/health" });
  assert.equal(sameCheck(a, { ...a }), true);
  assert.equal(sameCheck(a, { ...a, intervalMs: 300 }), false);
  assert.equal(sameCheck(a, { ...a, timeoutMs: 100 }), false);
  assert.equal(sameCheck(a, { ...a, failuresBeforeCritical: 2 }), false);
  assert.equal(sameCheck(a, { ...a, successesBeforePassing: 2 }), false);
  assert.equal(sameCheck(a, { ...a, http: "http://127.0.0.1:8081/" }), false);
  assert.equal(
    sameCheck(a, spec({ tcp: "127.0.0.1:8080" })),
    false,
  );
});

function refused(fn: () => void, field: string): RpcError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof RpcError, `expected an RpcError: ${caught}`);
  assert.equal(caught.code, ErrorCode.InvalidParams);
  assert.equal(caught.code, -32602);
  assert.deepEqual(caught.data, { field });
  assert.match(caught.message, /--check-allow/);
  return caught;
}

Deno.test("CheckPolicy: the instance's own host", () => {
  const policy = new CheckPolicy({ localHosts: ["10.0.0.5", "0.0.0.0"] });
  policy.assertAllowed("10.0.0.7:8080", spec({ http: "http://10.0.0.7:9/x" }));
  policy.assertAllowed("10.0.0.7:8080", spec({ tcp: "10.0.0.7:5432" }));
  policy.assertAllowed(
    "app.example:80",
    spec({ http: "https://APP.Example.:8443/health" }),
  );
  policy.assertAllowed("app.example:80", spec({ tcp: "App.EXAMPLE.:81" }));
  const error = refused(
    () =>
      policy.assertAllowed(
        "10.0.0.7:8080",
        spec({ http: "http://10.0.0.9/health" }),
      ),
    "check.http",
  );
  assert.match(error.message, /"10\.0\.0\.9"/); // what was targeted
  assert.match(error.message, /own host \(10\.0\.0\.7\)/); // what is allowed
  assert.match(error.message, /--check-allow 10\.0\.0\.9/);
  assert.doesNotMatch(error.message, /loopback/); // not a local instance
  refused(
    () => policy.assertAllowed("10.0.0.7:8080", spec({ tcp: "10.0.0.9:80" })),
    "check.tcp",
  );
});

Deno.test("CheckPolicy: loopback only for an instance on the agent's host", () => {
  const policy = new CheckPolicy({
    localHosts: ["10.0.0.5", "Agent.Example."],
  });
  for (const addr of ["10.0.0.5:80", "agent.example:80", "127.0.0.1:80"]) {
    for (
      const target of [
        "http://127.0.0.1:9000/",
        "http://127.3.4.5/",
        "http://localhost:9000/",
        "http://LOCALHOST./",
        "http://[::1]:9000/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://0x7f000001/",
      ]
    ) policy.assertAllowed(addr, spec({ http: target }));
    policy.assertAllowed(addr, spec({ tcp: "[::1]:9000" }));
    policy.assertAllowed(addr, spec({ tcp: "localhost:9000" }));
  }
  policy.assertAllowed("[::1]:80", spec({ tcp: "127.0.0.1:9000" }));
  // A remote instance may not reach the agent's loopback, in any spelling.
  for (
    const target of [
      "http://127.0.0.1:9000/",
      "http://localhost/",
      "http://[::1]/",
      "http://0x7f.1/",
      "http://10.0.0.5/",
    ]
  ) {
    const error = refused(
      () => policy.assertAllowed("10.0.0.7:80", spec({ http: target })),
      "check.http",
    );
    assert.doesNotMatch(error.message, /a loopback host/);
  }
  const error = refused(
    () =>
      policy.assertAllowed("10.0.0.5:80", spec({ http: "http://10.0.0.9/" })),
    "check.http",
  );
  assert.match(
    error.message,
    /a loopback host \(127\.0\.0\.0\/8, ::1, localhost\)/,
  );
});

Deno.test("CheckPolicy: --check-allow hosts, and '*'", () => {
  const policy = new CheckPolicy({
    localHosts: ["10.0.0.5"],
    allow: ["Health.Internal.", "2001:DB8::1", "[2001:db8::2]", "192.0.2.1"],
  });
  const addr = "10.0.0.7:80";
  policy.assertAllowed(addr, spec({ http: "http://health.internal/x" }));
  policy.assertAllowed(addr, spec({ tcp: "HEALTH.INTERNAL:80" }));
  policy.assertAllowed(addr, spec({ http: "http://[2001:db8:0::1]:81/" }));
  policy.assertAllowed(addr, spec({ tcp: "[2001:DB8::2]:80" }));
  policy.assertAllowed(addr, spec({ tcp: "192.0.2.1:80" }));
  const error = refused(
    () => policy.assertAllowed(addr, spec({ tcp: "[2001:db8::3]:80" })),
    "check.tcp",
  );
  assert.match(error.message, /"2001:db8::3"/);
  assert.match(
    error.message,
    /--check-allow \(health\.internal, 2001:db8::1, 2001:db8::2, 192\.0\.2\.1\)/,
  );
  assert.match(error.message, /--check-allow '2001:db8::3'/);
  assert.match(error.message, /--check-allow '\*'/);

  const any = new CheckPolicy({ localHosts: [], allow: ["*"] });
  any.assertAllowed(addr, spec({ http: "http://198.51.100.1/" }));
  any.assertAllowed(addr, spec({ tcp: "[::1]:22" }));
});

Deno.test("CheckPolicy: IPv6 instances compare in canonical form", () => {
  const policy = new CheckPolicy({ localHosts: ["2001:db8::5"] });
  policy.assertAllowed(
    "[2001:db8::7]:80",
    spec({ http: "http://[2001:DB8:0:0::7]:9000/" }),
  );
  policy.assertAllowed("[2001:db8::7]:80", spec({ tcp: "[2001:db8::0:7]:22" }));
  policy.assertAllowed("[2001:db8::5]:80", spec({ tcp: "[::1]:22" }));
  refused(
    () =>
      policy.assertAllowed(
        "[2001:db8::7]:80",
        spec({ tcp: "[2001:db8::8]:22" }),
      ),
    "check.tcp",
  );
  refused(
    () => policy.assertAllowed("[2001:db8::7]:80", spec({ tcp: "[::1]:22" })),
    "check.tcp",
  );
});
