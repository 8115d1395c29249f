// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { GRPCUnavailableError, KVClient } from "etcd3";
import { startEtcd } from "../tools/etcd.ts";
import { tcpProxy } from "../tests/_proxy.ts";
import {
  clientOptions,
  clientPool,
  createClient,
  FLOW_CONTROL_WINDOW,
  PROBE_TIMEOUT_MS,
  probeOptions,
  RECONNECT_MAX_MS,
  watchBackoff,
  type WatchDelay,
} from "./_etcd_client.ts";

const settings = {
  endpoints: ["http://127.0.0.1:2379", "http://127.0.0.1:2380"],
  callTimeout: 1500,
};

Deno.test("clientOptions: unary calls get the deadline, streams none", () => {
  const options = clientOptions(settings);
  assert.deepEqual(options.hosts, settings.endpoints);
  assert.equal(options.dialTimeout, 1500);
  const call = options.defaultCallOptions as (
    context: { isStream: boolean },
  ) => { deadline?: number };
  const before = Date.now();
  const deadline = call({ isStream: false }).deadline!;
  assert.ok(deadline >= before + 1500 && deadline <= Date.now() + 1500);
  assert.deepEqual(call({ isStream: true }), {});
  assert.equal(options.grpcOptions?.["grpc.keepalive_time_ms"], 6000);
  assert.equal(
    options.grpcOptions?.["grpc.max_reconnect_backoff_ms"],
    RECONNECT_MAX_MS,
  );
  assert.equal(options.credentials, undefined);
  assert.equal(options.auth, undefined);
  // The watch stream reconnects as the connections do, however many
  // members (the library's own backoff grows to 30 s).
  for (const endpoints of [["http://127.0.0.1:1"], settings.endpoints]) {
    const backoff = clientOptions({ ...settings, endpoints }).faultHandling
      ?.watchBackoff as WatchDelay | undefined;
    let delay = backoff?.next();
    assert.ok(delay !== undefined);
    for (let i = 0; i < 20; i++) {
      assert.ok(delay.duration <= RECONNECT_MAX_MS);
      delay = delay.next();
    }
  }
});

Deno.test("clientOptions: a member that failed is called again at once (no circuit breaker)", async () => {
  const policy = clientOptions({
    ...settings,
    endpoints: [settings.endpoints[0]],
  })
    .faultHandling!.host!(settings.endpoints[0]) as unknown as {
      execute<T>(fn: () => Promise<T>): Promise<T>;
    };
  const unavailable = () =>
    Promise.reject(new Error("14 UNAVAILABLE: No connection established"));
  for (let i = 0; i < 5; i++) {
    await assert.rejects(policy.execute(unavailable), /UNAVAILABLE/);
  }
  // etcd is back: the next call goes to it.
  assert.equal(await policy.execute(() => Promise.resolve(42)), 42);
});

Deno.test("clientOptions: TLS files and credentials are passed on", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);
  const options = clientOptions({
    ...settings,
    tls: { ca: bytes("ca"), cert: bytes("cert"), key: bytes("key") },
    auth: { username: "u", password: "p" },
  });
  assert.equal(options.credentials?.rootCertificate.toString(), "ca");
  assert.equal(options.credentials?.certChain?.toString(), "cert");
  assert.equal(options.credentials?.privateKey?.toString(), "key");
  assert.deepEqual(options.auth, { username: "u", password: "p" });
});

Deno.test("probeOptions: one member, a short dial, no retries of its own", async () => {
  const probe = probeOptions(clientOptions(settings), settings.endpoints[1]);
  assert.deepEqual(probe.hosts, [settings.endpoints[1]]);
  assert.equal(probe.dialTimeout, PROBE_TIMEOUT_MS);
  const policy = probe.faultHandling!.host!("x");
  // deno-lint-ignore no-explicit-any
  const result = await (policy as any).execute(() => 42);
  assert.equal(result, 42);
});

Deno.test("clientPool: a call is sent again as the client's own are, or once with resend false", async () => {
  // Nothing listens there: every call fails at once with `unavailable`,
  // an error the client deems recoverable.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  // Each attempt goes through the member's policy once.
  let attempts = 0;
  const counting = {
    execute: async <T>(fn: (c: { signal: AbortSignal }) => Promise<T>) => {
      attempts++;
      return await fn({ signal: new AbortController().signal });
    },
  };
  const options = clientOptions({
    endpoints: [`http://127.0.0.1:${port}`],
    callTimeout: 1000,
  });
  const client = createClient({
    ...options,
    // deno-lint-ignore no-explicit-any
    faultHandling: { ...options.faultHandling, host: () => counting as any },
  });
  const attemptsOf = async (call: () => Promise<unknown>) => {
    attempts = 0;
    await assert.rejects(call(), GRPCUnavailableError);
    return attempts;
  };
  const txn = (kv: KVClient) => () =>
    kv.txn({ compare: [], success: [], failure: [] });
  try {
    // etcd3 sends it again up to three times (cockatiel's `maxAttempts`).
    assert.equal(await attemptsOf(txn(client.kv)), 4, "the client's own");
    assert.equal(await attemptsOf(txn(new KVClient(clientPool(client)!))), 4);
    const once = new KVClient(clientPool(client, { resend: false })!);
    assert.equal(await attemptsOf(txn(once)), 1, "not sent again");
    // The client's own calls, reads among them, are sent again still.
    assert.equal(
      await attemptsOf(() => client.kv.range({ key: Buffer.from("k") })),
      4,
    );
  } finally {
    client.close();
  }
});

Deno.test("watchBackoff: each run starts near 250 ms and never waits more than RECONNECT_MAX_MS", () => {
  const start = watchBackoff();
  for (let run = 0; run < 3; run++) {
    let delay = start.next();
    const durations: number[] = [];
    for (let i = 0; i < 12; i++) {
      durations.push(delay.duration);
      assert.equal(delay.next(), delay.next(), "one next delay per attempt");
      delay = delay.next();
    }
    assert.ok(durations[0] <= 250, `first ${durations[0]}`);
    for (const d of durations) {
      assert.ok(d >= 0 && d <= RECONNECT_MAX_MS, `${durations}`);
    }
  }
});

/**
 * etcd, a proxy in front of it that counts connections, and a client of
 * {@linkcode createClient} through the proxy; all stopped on disposal.
 */
async function proxiedEtcd() {
  const cluster = await startEtcd();
  const proxy = tcpProxy(Number(new URL(cluster.endpoints[0]).port));
  const client = createClient(
    clientOptions({
      endpoints: [`http://127.0.0.1:${proxy.port}`],
      callTimeout: 5000,
    }),
  );
  return {
    proxy,
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      proxy.close();
      await cluster[Symbol.asyncDispose]();
    },
  };
}

Deno.test("clientOptions: a connection with no call on it stays open, as etcd keeps only those that ping during calls", async () => {
  await using etcd = await proxiedEtcd();
  const { client, proxy } = etcd;
  assert.equal(await client.get("k").string(), null);
  // Pinging every 6 s without a call, the connection would get etcd's
  // GOAWAY at the fourth ping, 24 s in; on a slow machine later (then
  // this test cannot tell, but it never fails wrongly).
  await new Promise((resolve) => setTimeout(resolve, 27_000));
  assert.equal(await client.get("k").string(), null);
  assert.equal(proxy.accepted, 1, "the connection was closed and made again");
});

Deno.test("createClient: a failed call leaves the watch stream and its connection alone", async () => {
  await using etcd = await proxiedEtcd();
  const { client, proxy } = etcd;
  const watcher = await client.watch().prefix("w/").create();
  try {
    let disconnected = 0;
    const seen: string[] = [];
    watcher.on("disconnected", () => disconnected++);
    watcher.on("put", (kv) => seen.push(kv.key.toString()));
    await client.put("w/1").value("a");
    // A call whose deadline passes: an error etcd3 deems recoverable.
    await assert.rejects(
      client.get("k").options({ deadline: Date.now() - 1000 }).string(),
      /DEADLINE_EXCEEDED/,
    );
    // Past gRPC's next keep-alive ping (every 6 s during a call), which
    // ends the streams of a connection being closed.
    await new Promise((resolve) => setTimeout(resolve, 9000));
    await client.put("w/2").value("b");
    const until = Date.now() + 5000;
    while (seen.length < 2 && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(seen, ["w/1", "w/2"]);
    assert.equal(disconnected, 0, "the watch stream was lost");
    assert.equal(proxy.accepted, 1, "the connection was closed and made again");
  } finally {
    await watcher.cancel();
  }
});

Deno.test("createClient: close() still closes every connection", async () => {
  await using etcd = await proxiedEtcd();
  const { client, proxy } = etcd;
  assert.equal(await client.get("k").string(), null);
  assert.equal(proxy.connections, 1);
  client.close();
  const until = Date.now() + 5000;
  while (proxy.connections > 0 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(proxy.connections, 0, "a connection stayed open after close()");
});

/** What {@linkcode clientFrames} saw. */
interface ClientFrames {
  /** The client's settings, by id. */
  settings: Map<number, number>;
  /** Increments of the connection's window (stream 0). */
  windowUpdates: number[];
  /** Whether the client opened a stream. */
  headers: boolean;
}

/**
 * The HTTP/2 frames a client sends to a server that answers its preface
 * with an empty SETTINGS frame: its settings (id to value), its window
 * updates of the connection (stream 0), and whether it opened a stream
 * (a HEADERS frame), until `done` says enough.
 */
async function clientFrames(
  conn: Deno.Conn,
  done: (seen: ClientFrames) => boolean,
): Promise<ClientFrames> {
  const seen: ClientFrames = {
    settings: new Map(),
    windowUpdates: [],
    headers: false,
  };
  const PREFACE = 24;
  let bytes = new Uint8Array(0);
  let at = PREFACE;
  let answered = false;
  const buf = new Uint8Array(64 * 1024);
  while (!done(seen)) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("the client closed the connection");
    const more = new Uint8Array(bytes.length + n);
    more.set(bytes);
    more.set(buf.subarray(0, n), bytes.length);
    bytes = more;
    if (!answered && bytes.length >= PREFACE) {
      answered = true;
      // An empty SETTINGS frame: the client's settings take effect then.
      await conn.write(new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]));
    }
    const view = new DataView(bytes.buffer);
    while (at + 9 <= bytes.length) {
      const length = view.getUint32(at) >>> 8;
      if (at + 9 + length > bytes.length) break;
      const type = bytes[at + 3], flags = bytes[at + 4];
      const stream = view.getUint32(at + 5) & 0x7fffffff;
      const payload = at + 9;
      if (type === 4 && (flags & 1) === 0) {
        for (let p = payload; p + 6 <= payload + length; p += 6) {
          seen.settings.set(view.getUint16(p), view.getUint32(p + 2));
        }
      } else if (type === 8 && stream === 0) {
        seen.windowUpdates.push(view.getUint32(payload) & 0x7fffffff);
      } else if (type === 1) {
        seen.headers = true;
      }
      at = payload + length;
    }
  }
  return seen;
}

Deno.test("clientOptions: etcd may send a whole page of records without waiting for a window update", async () => {
  // HTTP/2 starts every connection and stream at 64 KiB, and a page of
  // 1,000 records is about 150 KiB.
  assert.ok(FLOW_CONTROL_WINDOW >= 1024 * 1024);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const client = createClient(
    clientOptions({
      endpoints: [`http://127.0.0.1:${port}`],
      callTimeout: 5000,
    }),
  );
  const call = client.get("k").string().catch(() => {});
  const conn = await listener.accept();
  try {
    const INITIAL_WINDOW_SIZE = 4;
    // The call's stream opens once the connection's settings are agreed.
    const seen = await clientFrames(conn, (s) => s.headers);
    // Each stream's window, and the connection's (65,535 bytes plus the
    // increments), before the first stream.
    assert.equal(seen.settings.get(INITIAL_WINDOW_SIZE), FLOW_CONTROL_WINDOW);
    assert.equal(
      65_535 + seen.windowUpdates.reduce((a, b) => a + b, 0),
      FLOW_CONTROL_WINDOW,
    );
  } finally {
    conn.close();
    listener.close();
    client.close();
    await call;
  }
});
