// Copyright the discover authors. BSD-3-Clause license.

/**
 * Writes whose answer comes late: etcd applied the write, but its answer
 * was held on the way back past the call's deadline. The write's outcome
 * is then unknown to the agent, and it must say so (an error), never
 * answer as if the write had not been made: a registration that etcd
 * stored is not another owner's, an instance that etcd removed was not
 * "not registered".
 *
 * Timings: every etcd call has a deadline of {@linkcode CALL_TIMEOUT_MS}
 * (1 s). etcd's answers are held for {@linkcode HOLD_MS} (1.5 s) from the
 * call: past the first deadline, so the call is given up (or sent again),
 * and half a deadline before a second one would end. The hold is shorter
 * than gRPC's keep-alive timeout (2 s, `_etcd_client.ts`), so a keep-alive
 * ping answered late never closes the connection. Waits for etcd and the
 * watch allow 10 s.
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import { connect, RpcError } from "../mod.ts";
import { startAgent } from "../agent/mod.ts";
import { OwnerConflictError } from "../backends/backend.ts";
import { openWatching } from "../backends/backend_suite.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { startEtcd } from "../tools/etcd.ts";
import { type TcpProxy, tcpProxy } from "./_proxy.ts";
import { until } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
/** Deadline of every etcd call of the backends under test, in ms. */
const CALL_TIMEOUT_MS = 1000;
/** How long etcd's answers are held from the call, in ms. */
const HOLD_MS = 1500;

// One etcd for this module; every test gets its own key prefix.
const cluster = await startEtcd();
const etcdPort = Number(new URL(cluster.endpoints[0]).port);
const prefix = () => `/late-${crypto.randomUUID().slice(0, 8)}/`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What a call came to: its value, or what it rejected with. */
type Outcome<T> = { value: T } | { error: unknown };

function outcome<T>(promise: Promise<T>): Promise<Outcome<T>> {
  return promise.then((value) => ({ value }), (error) => ({ error }));
}

/**
 * Runs `calls` with etcd's answers held until {@linkcode HOLD_MS} after
 * they were made, once `applied` says etcd has made them; their outcomes.
 */
async function withLateAnswers<T>(
  holder: TcpProxy,
  calls: () => Promise<T>[],
  applied: () => Promise<boolean>,
): Promise<Outcome<T>[]> {
  holder.hold();
  try {
    const started = Date.now();
    const outcomes = Promise.all(calls().map(outcome));
    await until(applied, "etcd applies the writes");
    await sleep(started + HOLD_MS - Date.now());
    holder.release();
    return await outcomes;
  } finally {
    holder.release();
  }
}

const record = (addr: string, owner = "o1") => ({
  service: "svc",
  addr,
  attrs: { a: "1" },
  owner,
  registeredAt: 1,
});

/** What {@linkcode withLateBackend} gives its test. */
interface LateBackend {
  holder: TcpProxy;
  /** A client straight to etcd, to see what it holds. */
  etcd: Etcd3;
  backend: EtcdBackend;
  /** The revision of each removal the backend's watch delivered, by address. */
  deletes: Map<string, number>;
  /** The etcd key of an instance of `svc`. */
  key(addr: string): string;
}

/**
 * Runs `fn` with a backend that reaches etcd through a proxy that can
 * hold etcd's answers, watching every service, once its watch shows `records` (of
 * `svc`, written with `ifOwner: null`); closes everything after.
 */
async function withLateBackend(
  records: string[],
  fn: (late: LateBackend) => Promise<void>,
): Promise<void> {
  using holder = tcpProxy(etcdPort);
  const p = prefix();
  const etcd = new Etcd3({ hosts: cluster.endpoints });
  const backend = new EtcdBackend({
    endpoints: [`http://127.0.0.1:${holder.port}`],
    prefix: p,
    callTimeout: CALL_TIMEOUT_MS,
  });
  const deletes = new Map<string, number>();
  try {
    await openWatching(backend, {
      reset: () => {},
      status: () => {},
      changes: (changes) => {
        for (const c of changes) {
          if (c.type === "delete") deletes.set(c.addr, c.revision);
        }
      },
    });
    for (const addr of records) {
      await backend.put(record(addr), { ifOwner: null });
    }
    await until(
      () => records.every((addr) => backend.version("svc", addr) !== undefined),
      "the watch shows the records",
    );
    const key = (addr: string) => `${p}instances/svc/${addr}`;
    await fn({ holder, etcd, backend, deletes, key });
  } finally {
    etcd.close();
    await backend.close();
  }
}

/** The record etcd holds at `key`: its owner and mod revision, if any. */
async function stored(etcd: Etcd3, key: string) {
  const kv = (await etcd.get(key).exec()).kvs[0];
  return kv && {
    owner: JSON.parse(kv.value.toString()).owner as string,
    modRevision: Number(kv.mod_revision),
  };
}

/**
 * What a caller may be told of a removal etcd made: its revision, or an
 * error that leaves the outcome open; never that there was nothing to
 * remove, nor an owner conflict.
 */
function assertRemoved(
  result: Outcome<number | undefined>,
  revision: number | undefined,
  what: string,
) {
  if ("value" in result) {
    assert.notEqual(
      result.value,
      undefined,
      `${what}: etcd removed the record, but the backend answered that there was none`,
    );
    assert.equal(result.value, revision, `${what}: the removal's revision`);
  } else {
    assert.ok(
      !(result.error instanceof OwnerConflictError),
      `${what}: etcd removed the record, but the backend answered ${result.error}`,
    );
  }
}

Deno.test({
  ...etcdTest,
  name:
    "etcd backend, answer late: a conditional delete etcd applied is not answered as 'no record'",
  fn: () =>
    withLateBackend(
      ["h:1"],
      async ({ holder, etcd, backend, deletes, key }) => {
        const [result] = await withLateAnswers(
          holder,
          () => [backend.delete("svc", "h:1", { ifOwner: "o1" })],
          async () => (await stored(etcd, key("h:1"))) === undefined,
        );
        assert.equal(
          await stored(etcd, key("h:1")),
          undefined,
          "etcd removed it",
        );
        await until(() => deletes.has("h:1"), "the watch shows the removal");
        assertRemoved(result, deletes.get("h:1"), "delete ifOwner");
      },
    ),
});

Deno.test({
  ...etcdTest,
  name:
    "etcd backend, answer late: writes of one transaction etcd applied are not answered as conflicts or 'no record'",
  fn: () =>
    withLateBackend(
      ["h:3", "h:4"],
      async ({ holder, etcd, backend, deletes, key }) => {
        // Made in one turn: they go to etcd in one transaction.
        const [created, removed, gone] = await withLateAnswers<
          number | undefined
        >(
          holder,
          () => [
            backend.put(record("h:2"), { ifOwner: null }),
            backend.delete("svc", "h:3", { ifOwner: "o1" }),
            backend.delete("svc", "h:4"),
          ],
          async () =>
            (await stored(etcd, key("h:2"))) !== undefined &&
            (await stored(etcd, key("h:3"))) === undefined &&
            (await stored(etcd, key("h:4"))) === undefined,
        );
        const now = await stored(etcd, key("h:2"));
        assert.equal(now?.owner, "o1", "etcd stored the registration");
        if ("value" in created) {
          assert.equal(created.value, now.modRevision, "the put's revision");
        } else {
          assert.ok(
            !(created.error instanceof OwnerConflictError),
            `put ifOwner null: etcd stored it, but the backend answered ${created.error}`,
          );
        }
        await until(
          () => deletes.has("h:3") && deletes.has("h:4"),
          "the watch shows the removals",
        );
        assertRemoved(removed, deletes.get("h:3"), "delete ifOwner");
        assertRemoved(gone, deletes.get("h:4"), "unconditional delete");
      },
    ),
});

Deno.test({
  ...etcdTest,
  name:
    "agent on etcd, answer late: an unregister etcd applied is not answered 'nothing removed'",
  async fn() {
    using holder = tcpProxy(etcdPort);
    const p = prefix();
    const etcd = new Etcd3({ hosts: cluster.endpoints });
    await using agent = await startAgent({
      port: 0,
      advertiseHost: "127.0.0.1",
      logLevel: "error",
      backend: new EtcdBackend({
        endpoints: [`http://127.0.0.1:${holder.port}`],
        prefix: p,
        callTimeout: CALL_TIMEOUT_MS,
      }),
    });
    await using client = await connect(agent.url, { requestTimeout: 10_000 });
    try {
      await client.register("web", "10.0.0.1:80");
      const key = `${p}instances/web/10.0.0.1:80`;
      assert.ok(await stored(etcd, key), "registered");
      const [result] = await withLateAnswers(
        holder,
        () => [client.unregister("web", "10.0.0.1:80")],
        async () => (await stored(etcd, key)) === undefined,
      );
      assert.equal(await stored(etcd, key), undefined, "etcd removed it");
      // `true`, or an error saying the outcome is not known; `false` says
      // there was no instance to remove.
      if ("value" in result) {
        assert.equal(result.value, true, "the instance etcd removed");
      } else {
        assert.ok(result.error instanceof RpcError, String(result.error));
      }
    } finally {
      etcd.close();
    }
  },
});

Deno.test({
  ...etcdTest,
  name: "etcd, answer late: stop the module's etcd",
  async fn() {
    await cluster.stop();
  },
});
