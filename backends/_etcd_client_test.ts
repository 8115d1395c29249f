// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import {
  clientOptions,
  PROBE_TIMEOUT_MS,
  probeOptions,
  RECONNECT_MAX_MS,
  watchBackoff,
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
