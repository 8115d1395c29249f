// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import type { BackendChange } from "../backends/backend.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { CheckPolicy } from "./checks.ts";
import { createLogger } from "./log.ts";
import { DEFAULT_LIMITS } from "./mod.ts";
import type { Owner, Registry } from "./registry.ts";
import {
  INITIAL_FRAME_CHARS,
  InitialFrames,
  KEPT_INITIAL_CHARS,
  Session,
} from "./session.ts";
import { type Subscriber, View } from "./view.ts";
import type { Views } from "./views.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/**
 * A WebSocket whose send queue only drains when the test reads it, like a
 * client that reads when it is told to.
 */
class FakeSocket {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  closedWith: number | undefined;
  #unread: string[] = [];

  send(text: string) {
    this.#unread.push(text);
    this.bufferedAmount += text.length;
  }

  close(code: number) {
    this.closedWith = code;
    this.readyState = WebSocket.CLOSING;
  }

  /** Reads everything queued so far. */
  read(): Json[] {
    this.bufferedAmount = 0;
    return this.#unread.splice(0).map((text) => JSON.parse(text));
  }
}

const MAX_QUEUE_BYTES = 10_000;
/** Long enough for a busy machine to run the test's steps within it. */
const IDLE_TIMEOUT_S = 1;

/**
 * A session over a view of 20 instances with 1,000-byte attributes. The
 * agent shuts down once `agent.shuttingDown` is set.
 */
function setup(
  agent = { shuttingDown: false },
  registry: Partial<Registry> = {},
) {
  const view = new View();
  view.reset({ revision: 0, epoch: "e", records: [] });
  view.status(true);
  view.changes(Array.from({ length: 20 }, (_, i) => ({
    type: "put" as const,
    revision: i + 1,
    record: {
      service: "big",
      addr: `10.0.0.${i}:80`,
      attrs: { pad: "x".repeat(1000) },
      owner: "o",
      registeredAt: 0,
    },
  })));
  // The subscribers the session holds in the view: what it must give back.
  const subscribers = new Set<Subscriber>();
  const subscribe = view.subscribe.bind(view);
  const unsubscribe = view.unsubscribe.bind(view);
  view.subscribe = (s) => (subscribers.add(s), subscribe(s));
  view.unsubscribe = (s) => (subscribers.delete(s), unsubscribe(s));
  const socket = new FakeSocket();
  // Every scope is the one view; holds are counted.
  const holds = { open: 0 };
  const views = {
    acquire: () => {
      holds.open++;
      let released = false;
      return Promise.resolve({
        view,
        release: () => void (released || (released = true, holds.open--)),
      });
    },
    stateAt: () => Promise.resolve(undefined),
    get connected() {
      return view.connected;
    },
    get revision() {
      return view.revision;
    },
    get epoch() {
      return view.epoch;
    },
  } as unknown as Views;
  const session = new Session(
    {
      views,
      registry: { detach() {}, ...registry } as unknown as Registry,
      backendName: "memory",
      advertiseHost: "127.0.0.1",
      checkPolicy: new CheckPolicy({ localHosts: ["127.0.0.1"] }),
      ttl: 10,
      limits: { ...DEFAULT_LIMITS, maxQueueBytes: MAX_QUEUE_BYTES },
      idleTimeout: IDLE_TIMEOUT_S,
      log: createLogger("error"),
      shuttingDown: () => agent.shuttingDown,
    },
    socket as unknown as WebSocket,
    {} as Owner,
    "1",
  );
  let id = 0;
  const request = (service = "big") =>
    ({
      jsonrpc: "2.0",
      id: ++id,
      method: "discover.subscribe",
      params: { service },
    }) as const;
  return { view, socket, session, subscribers, holds, subscribe: request };
}

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits up to `ms` (generous: timers on a busy machine run late). */
async function until(condition: () => boolean, what: string, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await tick(5);
  }
}

const snapshotOf = (frames: Json[], subscription: string) =>
  frames.filter((f) =>
    f.method === "discover.event" && f.params.subscription === subscription
  ).map((f) => f.params.result.kind);

Deno.test("a snapshot larger than maxQueueBytes is sent whole; the next subscribe waits until it is read", async () => {
  const { socket, session, subscribers, holds, subscribe } = setup();
  for (let i = 0; i < 3; i++) session.receive(JSON.stringify(subscribe()));
  await tick(50);
  // The first snapshot alone is over the limit: the others wait for it.
  assert.ok(socket.bufferedAmount > MAX_QUEUE_BYTES, "over the limit");
  let frames = socket.read();
  assert.deepEqual(frames.filter((f) => f.id).map((f) => f.id), [1]);
  const first = snapshotOf(frames, "1");
  assert.equal(first.length, 22); // 20 up, leader, current
  assert.equal(first.at(-1), "current");
  // Once read, the next one goes, and so on.
  for (const id of [2, 3]) {
    await until(() => socket.bufferedAmount > 0, `subscribe ${id}`);
    frames = socket.read();
    assert.deepEqual(frames.filter((f) => f.id).map((f) => f.id), [id]);
    assert.equal(snapshotOf(frames, String(id)).length, 22);
  }
  assert.equal(socket.closedWith, undefined, "a reader is never dropped");
  assert.equal(subscribers.size, 3);
  session.closed(true);
  assert.equal(subscribers.size, 0, "closing gives every subscription back");
  assert.equal(holds.open, 0, "closing lets every service's view go");
});

Deno.test("a client that reads nothing holds one snapshot beyond the limit, then is dropped with 4008", async () => {
  const { socket, session, subscribers, holds, subscribe } = setup();
  const snapshot = 21 * 1100; // 20 events of about 1,100 bytes, and current
  for (let i = 0; i < 40; i++) session.receive(JSON.stringify(subscribe()));
  await tick(100);
  // Without the bound, the 40 snapshots (about 880,000 bytes) would be
  // queued at once.
  assert.ok(
    socket.bufferedAmount <= 2 * MAX_QUEUE_BYTES + snapshot,
    `${socket.bufferedAmount} bytes queued`,
  );
  assert.equal(socket.closedWith, undefined);
  // Nothing read for the idle timeout while subscribes wait: dropped.
  await until(() => socket.closedWith !== undefined, "the drop", 10_000);
  assert.equal(socket.closedWith, 4008);
  assert.equal(subscribers.size, 0, "the drop gives every subscription back");
  await until(() => session.inflight === 0, "the waiting calls end");
  assert.equal(holds.open, 0, "the waiting subscribes let their views go");
});

Deno.test("a slow reader that keeps reading is not dropped while it drains", async () => {
  const { socket, session, subscribers, subscribe } = setup();
  session.receive(JSON.stringify(subscribe()));
  session.receive(JSON.stringify(subscribe()));
  await tick(20);
  // Reads 100 bytes every 20 ms: draining the first snapshot down to the
  // limit takes more than 2.5 s, longer than the idle timeout.
  const started = Date.now();
  while (subscribers.size < 2) {
    assert.ok(Date.now() - started < 20_000, "the second subscription");
    assert.equal(socket.closedWith, undefined, "dropped while reading");
    socket.bufferedAmount = Math.max(0, socket.bufferedAmount - 100);
    await tick(20);
  }
  assert.ok(Date.now() - started > IDLE_TIMEOUT_S * 1000 * 2);
  assert.equal(socket.closedWith, undefined);
  session.closed(true);
});

Deno.test("in one batch, initial events beyond the limit go to one subscription; the others get -32002", async () => {
  const { socket, session, subscribe } = setup();
  session.receive(JSON.stringify([
    subscribe(),
    subscribe(),
    subscribe("empty"),
  ]));
  await until(() => socket.bufferedAmount > 0, "the batch response");
  const frames = socket.read();
  const [first, second, small] = frames[0];
  assert.equal(first.result.subscription, "1");
  assert.equal(second.error.code, ErrorCode.LimitExceeded);
  assert.match(second.error.message, /maxQueueBytes \(10000\)/);
  assert.match(second.error.message, /separate message/);
  // Even a small snapshot: the first one already takes the queue over.
  assert.equal(small.error.code, ErrorCode.LimitExceeded);
  assert.equal(snapshotOf(frames, "1").length, 22);
  // Read, the same subscribe in its own message succeeds.
  session.receive(JSON.stringify(subscribe()));
  await until(() => socket.bufferedAmount > 0, "the retry");
  assert.ok(socket.read().some((f) => f.result?.subscription === "2"));
  assert.equal(socket.closedWith, undefined);
  session.closed(true);
});

Deno.test("subscribes that wait count against maxSubscriptions", async () => {
  const { socket, session, subscribe } = setup();
  session.receive(JSON.stringify(subscribe()));
  await tick(20);
  for (let i = 0; i < DEFAULT_LIMITS.maxSubscriptions - 1; i++) {
    session.receive(JSON.stringify(subscribe()));
  }
  await tick(20);
  const before = socket.bufferedAmount;
  session.receive(JSON.stringify(subscribe()));
  await until(() => socket.bufferedAmount > before, "the refusal");
  const refusal = socket.read().find((f) => f.error);
  assert.equal(refusal.error.code, ErrorCode.LimitExceeded);
  assert.match(refusal.error.message, /1000 subscriptions/);
  session.closed(true);
  await until(() => session.inflight === 0, "the waiting calls end");
});

Deno.test("while the agent shuts down, every method but $/ping gets -32004", async () => {
  const agent = { shuttingDown: false };
  const { socket, session } = setup(agent);
  const requests = [
    { method: "discover.services", params: { service: "big" } },
    { method: "discover.subscribe", params: { service: "big" } },
    { method: "discover.status" },
    { method: "discover.catalog" },
    { method: "discover.owned" },
    { method: "rpc.discover" },
    { method: "discover.register", params: { service: "big", port: 80 } },
    { method: "$/ping" },
  ].map((request, i) => ({ jsonrpc: "2.0", id: i + 1, ...request }));
  agent.shuttingDown = true;
  session.receive(JSON.stringify(requests));
  await until(() => socket.bufferedAmount > 0, "the batch response");
  const [responses] = socket.read();
  assert.equal(responses.length, requests.length);
  for (const response of responses.slice(0, -1)) {
    assert.equal(response.error?.code, ErrorCode.ShuttingDown, response.id);
    assert.match(response.error.message, /shutting down/);
  }
  assert.deepEqual(responses.at(-1), {
    jsonrpc: "2.0",
    id: requests.length,
    result: "pong",
  });
  session.closed(true);
});

Deno.test("register/unregister keep arrival order per instance; other instances do not wait", async () => {
  const log: string[] = [];
  const gates = new Map<string, () => void>();
  const call = (what: string, addr: string) => {
    log.push(`start ${what} ${addr}`);
    return new Promise<void>((resolve) =>
      gates.set(`${what} ${addr}`, () => {
        log.push(`end ${what} ${addr}`);
        resolve();
      })
    );
  };
  const { socket, session } = setup({ shuttingDown: false }, {
    register: async (_owner, { addr }) => {
      await call("register", addr);
      return {} as never;
    },
    unregister: async (_owner, { addr }) => {
      await call("unregister", addr);
      return true;
    },
  });
  const rpc = (id: number, method: string, addr: string) => ({
    jsonrpc: "2.0",
    id,
    method,
    params: { service: "web", addr },
  });
  session.receive(JSON.stringify([
    rpc(1, "discover.register", "10.0.0.1:80"),
    rpc(2, "discover.unregister", "10.0.0.1:80"),
    rpc(3, "discover.register", "10.0.0.2:80"),
  ]));
  await until(() => gates.size === 2, "two instances under way");
  // The second instance did not wait for the first; the first's unregister
  // waits for its register.
  assert.deepEqual(log, [
    "start register 10.0.0.1:80",
    "start register 10.0.0.2:80",
  ]);
  gates.get("register 10.0.0.2:80")!();
  gates.get("register 10.0.0.1:80")!();
  await until(() => gates.has("unregister 10.0.0.1:80"), "the unregister");
  assert.deepEqual(log.slice(2), [
    "end register 10.0.0.2:80",
    "end register 10.0.0.1:80",
    "start unregister 10.0.0.1:80",
  ]);
  gates.get("unregister 10.0.0.1:80")!();
  await until(() => socket.bufferedAmount > 0, "the batch response");
  const [responses] = socket.read();
  assert.deepEqual(responses.map((r: Json) => r.id), [1, 2, 3]);
  session.closed(true);
});

Deno.test("with batch, the initial events arrive in order as batch frames of at most 1,000 notifications and about INITIAL_FRAME_CHARS; later events one per frame", async () => {
  const { view, socket, session } = setup();
  view.changes(Array.from({ length: 1000 }, (_, i) => ({
    type: "put" as const,
    revision: 21 + i,
    record: {
      service: "big",
      addr: `10.1.${i >> 8}.${i & 255}:80`,
      attrs: {},
      owner: "o",
      registeredAt: 0,
    },
  })));
  session.receive(JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "discover.subscribe",
    params: { service: "big", batch: true },
  }));
  await until(() => socket.bufferedAmount > 0, "the snapshot");
  await tick(20);
  const frames = socket.read();
  assert.equal(frames[0].id, 1, "the response comes first, alone");
  const batches = frames.slice(1);
  assert.ok(batches.length > 1, "a snapshot this large takes several frames");
  for (const b of batches) {
    assert.ok(Array.isArray(b));
    assert.ok(b.length <= 1000);
    // The frame closes with the notification that crosses the length.
    const text = JSON.stringify(b);
    const last = JSON.stringify(b[b.length - 1]);
    assert.ok(text.length - last.length - 1 < INITIAL_FRAME_CHARS);
  }
  const kinds = batches.flat().map((n: Json) => n.params.result.kind);
  assert.equal(kinds.length, 1022); // 1,020 up, leader, current
  assert.ok(kinds.slice(0, 1020).every((k: string) => k === "up"));
  assert.deepEqual(kinds.slice(1020), ["leader", "current"]);

  view.changes([{
    type: "delete",
    revision: 2000,
    service: "big",
    addr: "10.0.0.1:80",
  }]);
  const later = socket.read();
  assert.equal(later.length, 1);
  assert.equal(Array.isArray(later[0]), false);
  assert.equal(later[0].params.result.kind, "down");
  session.closed(true);
});

for (const size of [3000, 300]) {
  Deno.test(
    `initial frames of ${size} instances (${
      size > 1000 ? "made twice" : "made once, kept"
    }) are counted exactly: the length reserved is the length sent, whatever the text and numbers`,
    () => {
      initialFramesCase(size);
    },
  );
}

function initialFramesCase(size: number) {
  const view = new View();
  view.reset({ revision: 0, epoch: "e", records: [] });
  const numbers = [
    0,
    -0,
    -7,
    1.5,
    1767225600000,
    123456789012345680000,
    1e21,
    -1e21,
    Number.MAX_VALUE,
    5e-324,
    NaN,
    Infinity,
  ];
  view.changes(Array.from({ length: size }, (_, i): BackendChange => ({
    type: "put",
    revision: 1 + i,
    record: {
      service: "odd",
      addr: i % 7 === 0 ? `h"\\\u0001é-${i}:1` : `10.2.${i >> 8}.${i & 255}:80`,
      attrs: i % 5 === 0 ? { text: 'say "hi"\\ \n é ✓ \u2028' } : { zone: "a" },
      owner: "o",
      registeredAt: numbers[i % numbers.length],
      created: numbers[(i + 3) % numbers.length],
      health: i % 11 === 0 ? "critical" : "passing",
      ...(i % 22 === 0 ? { note: 'down: "timeout"' } : {}),
    },
  })));
  const events = [
    ...view.list("odd", { health: "any" }).map((instance) =>
      JSON.stringify({ kind: "up", revision: view.revision, instance })
    ),
    `{"kind":"current","revision":${view.revision}}`,
  ];
  const prefix =
    '{"jsonrpc":"2.0","method":"discover.event","params":{"result":';
  for (
    const [batch, chunks] of [[true, false], [false, false], [true, true], [
      false,
      true,
    ]]
  ) {
    const mode = `batch: ${batch}, chunks: ${chunks}`;
    const initial = new InitialFrames(prefix, batch, { chunks });
    const snapshot = view.capture("odd", { health: "any" });
    let writes = 0;
    initial.addSnapshot({
      revision: snapshot.revision,
      size: snapshot.size,
      write(writer) {
        writes++;
        snapshot.write(writer);
      },
      writeInstances(writer) {
        writes++;
        snapshot.writeInstances(writer);
      },
    });
    initial.add(events.at(-1)!);
    initial.count();
    const frames: string[] = [];
    const sent = initial.write((frame) => frames.push(frame));
    // A small snapshot's frames are made once, while counting.
    assert.equal(writes, initial.bytes > KEPT_INITIAL_CHARS ? 2 : 1, mode);
    if (!chunks) assert.equal(writes, size > 1000 ? 2 : 1, mode);
    const length = frames.reduce((sum, frame) => sum + frame.length, 0);
    assert.equal(initial.bytes, length, mode);
    assert.equal(sent, length);
    // The frames carry the events, in order, as the client reads them; a
    // `snapshot` event's instances count as `up` events.
    const notifications: Json[] = frames.flatMap((frame) => JSON.parse(frame));
    // Notifications, as the metric of events sent counts them.
    assert.equal(initial.events, notifications.length, mode);
    if (!chunks) assert.equal(initial.events, events.length, mode);
    assert.deepEqual(
      notifications.flatMap((n: Json) =>
        n.params.result.kind === "snapshot"
          ? n.params.result.instances.map((instance: Json) =>
            JSON.stringify({
              kind: "up",
              revision: n.params.result.revision,
              instance,
            })
          )
          : [JSON.stringify(n.params.result)]
      ),
      events,
      mode,
    );
    if (chunks) {
      const pieces = notifications.filter((n: Json) =>
        n.params.result.kind === "snapshot"
      );
      // Of about INITIAL_FRAME_CHARS: several for 3,000 instances.
      assert.ok(pieces.length >= (size > 1000 ? 2 : 1), mode);
      for (const frame of frames.slice(0, pieces.length)) {
        const { instances } = JSON.parse(frame).params.result;
        assert.ok(instances.length <= 1000, mode);
        const last = JSON.stringify(instances.at(-1));
        assert.ok(frame.length - last.length - 1 < INITIAL_FRAME_CHARS, mode);
      }
      // The event after the snapshot: one batch frame, or a frame of its own.
      assert.equal(frames.length, pieces.length + 1, mode);
    } else if (batch) {
      assert.ok(frames.length > 1);
      for (const frame of frames) {
        const notes = JSON.parse(frame);
        assert.ok(notes.length <= 1000);
        const last = JSON.stringify(notes.at(-1));
        assert.ok(frame.length - last.length - 1 < INITIAL_FRAME_CHARS);
      }
    } else {
      assert.equal(frames.length, events.length);
    }
  }
}

Deno.test("a subscribe's snapshot is its revision's state: changes applied before its response is sent follow its current", async () => {
  let release = () => {};
  const { view, socket, session } = setup({ shuttingDown: false }, {
    register: () =>
      new Promise((resolve) => release = () => resolve({} as never)),
  });
  // The batch's response waits for the registration.
  session.receive(JSON.stringify([
    {
      jsonrpc: "2.0",
      id: 1,
      method: "discover.subscribe",
      params: { service: "big", batch: true },
    },
    {
      jsonrpc: "2.0",
      id: 2,
      method: "discover.register",
      params: { service: "other", addr: "10.9.9.9:80" },
    },
  ]));
  await tick(20);
  assert.equal(socket.bufferedAmount, 0, "no response yet");
  const revision = view.revision;
  view.changes([
    {
      type: "delete",
      revision: revision + 1,
      service: "big",
      addr: "10.0.0.3:80",
    },
    {
      type: "put",
      revision: revision + 2,
      record: {
        service: "big",
        addr: "10.0.0.99:80",
        attrs: {},
        owner: "o",
        registeredAt: 0,
      },
    },
  ]);
  release();
  await until(() => socket.bufferedAmount > 0, "the batch response");
  const [responses, ...rest] = socket.read();
  assert.equal(responses[0].result.revision, revision);
  const events = rest.flat().map((n: Json) => n.params.result);
  const ups = events.filter((e: Json) => e.kind === "up").slice(0, 20);
  assert.ok(ups.every((e: Json) => e.revision === revision));
  const addrs = ups.map((e: Json) => e.instance.addr);
  assert.ok(addrs.includes("10.0.0.3:80"), "removed after: in the snapshot");
  assert.ok(!addrs.includes("10.0.0.99:80"), "added after: not in it");
  assert.deepEqual(
    events.slice(20).map((e: Json) => `${e.kind} ${e.instance?.addr ?? ""}`),
    ["leader 10.0.0.0:80", "current ", "down 10.0.0.3:80", "up 10.0.0.99:80"],
  );
  session.closed(true);
});
