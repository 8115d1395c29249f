// Copyright the discover authors. BSD-3-Clause license.

/**
 * The etcd backend against a real etcd that serves its clients over TLS,
 * requires client certificates (`--client-cert-auth`) and has
 * authentication enabled: a `root` user, and a `discover` user whose role
 * may read and write the prefix `/discover/` only. An agent process started
 * with `--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-username` and the
 * password in `DISCOVER_ETCD_PASSWORD` serves registrations and
 * subscriptions; etcd refuses that user any key outside the prefix; an
 * agent given a wrong password, or a prefix outside the user's role, says
 * so; without `--etcd-username`, etcd takes the client certificate's
 * common name as the user.
 *
 * The endpoints name the members `localhost` (`tools/etcd.ts`): Deno's
 * TLS refuses an IP address as a TLS server name, which the gRPC client
 * sends for an IP endpoint.
 *
 * Bounds: etcd starts within 20 s on an idle machine; the agent logs a
 * refused login on its first attempt, which the test allows 20 s for.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Etcd3, EtcdPermissionDeniedError } from "etcd3";
import { connect } from "../mod.ts";
import { ETCD_PASSWORD_ENV } from "../backends/etcd_descriptor.ts";
import { type AgentProcess, spawnAgent } from "../tools/agent_process.ts";
import { type EtcdCluster, startEtcd } from "../tools/etcd.ts";
import { createTestCa, type Leaf, type TestCa } from "./_tls.ts";
import { nextWithin } from "./_wait.ts";

const etcdTest = { sanitizeOps: false, sanitizeResources: false };
const PREFIX = "/discover/";
const ROOT_PASSWORD = `root-${crypto.randomUUID()}`;
const PASSWORD = `discover-${crypto.randomUUID()}`;

/** etcd over TLS with client certificates, and its users. */
interface SecureEtcd extends AsyncDisposable {
  readonly ca: TestCa;
  readonly cluster: EtcdCluster;
  /** The client certificate of the `discover` user. */
  readonly discover: Leaf;
  /** A client as `user`, presenting `leaf`. */
  client(leaf: Leaf, auth?: { username: string; password: string }): Etcd3;
}

async function startSecureEtcd(): Promise<SecureEtcd> {
  const ca = await createTestCa();
  try {
    const server = await ca.issue("etcd");
    const root = await ca.issue("root");
    const discover = await ca.issue("discover");
    const cluster = await startEtcd(1, {
      tls: {
        caFile: ca.caFile,
        certFile: server.certFile,
        keyFile: server.keyFile,
        clientCertFile: root.certFile,
        clientKeyFile: root.keyFile,
      },
    });
    const { endpoints } = cluster;
    const client = (
      leaf: Leaf,
      auth?: { username: string; password: string },
    ) =>
      new Etcd3({
        hosts: endpoints,
        credentials: {
          rootCertificate: Buffer.from(ca.ca),
          certChain: Buffer.from(leaf.cert),
          privateKey: Buffer.from(leaf.key),
        },
        auth,
        dialTimeout: 5000,
      });
    // Authentication on: etcd wants a root user with the root role first.
    const admin = client(root);
    try {
      await admin.user("root").create(ROOT_PASSWORD);
      await admin.role("root").create();
      await admin.user("root").addRole("root");
      await admin.role("discover").create();
      await admin.role("discover").grant({
        permission: "Readwrite",
        range: admin.range({ prefix: PREFIX }),
      });
      await admin.user("discover").create(PASSWORD);
      await admin.user("discover").addRole("discover");
      await admin.auth.authEnable();
    } finally {
      admin.close();
    }
    const stop = async () => {
      await cluster.stop();
      await ca.remove();
    };
    return {
      ca,
      cluster,
      discover,
      client,
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    await ca.remove();
    throw error;
  }
}

/**
 * An agent on `etcd` with the `discover` user's client certificate, and
 * that user's password unless it is `undefined` (then etcd takes the
 * certificate's common name as the user). The password reaches it in the
 * environment, as in production (set in this process only while the agent
 * is spawned, which inherits it).
 */
async function spawnSecureAgent(
  etcd: SecureEtcd,
  password: string | undefined,
  prefix = PREFIX,
  extra: string[] = [],
): Promise<AgentProcess> {
  const args = [
    ...extra,
    "--backend",
    "etcd",
    "--etcd-endpoints",
    etcd.cluster.endpoints.join(","),
    "--etcd-prefix",
    prefix,
    "--etcd-ca",
    etcd.ca.caFile,
    "--etcd-cert",
    etcd.discover.certFile,
    "--etcd-key",
    etcd.discover.keyFile,
  ];
  if (password === undefined) return await spawnAgent(args);
  const before = Deno.env.get(ETCD_PASSWORD_ENV);
  Deno.env.set(ETCD_PASSWORD_ENV, password);
  try {
    return await spawnAgent([...args, "--etcd-username", "discover"]);
  } finally {
    if (before === undefined) Deno.env.delete(ETCD_PASSWORD_ENV);
    else Deno.env.set(ETCD_PASSWORD_ENV, before);
  }
}

/** Waits until the agent's standard error matches `pattern`. */
async function logged(agent: AgentProcess, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!pattern.test(agent.stderr()) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.match(agent.stderr(), pattern);
}

Deno.test({
  ...etcdTest,
  name:
    "etcd over TLS with client certificates and auth: an agent limited to its prefix serves",
  async fn(t) {
    await using etcd = await startSecureEtcd();

    await t.step("the agent registers and subscribes", async () => {
      await using agent = await spawnSecureAgent(etcd, PASSWORD);
      const health = await fetch(`${agent.http}healthz`);
      assert.equal(health.status, 200);
      assert.equal((await health.json()).connected, true);

      await using watcher = await connect(agent.url);
      await using publisher = await connect(agent.url);
      const set = await watcher.services("secure");
      const updates = set.updates();
      await publisher.register("secure", 7000, { attrs: { tls: "yes" } });
      const up = await nextWithin(updates);
      assert.equal(up.kind, "up");
      assert.equal(up.instance.addr, "127.0.0.1:7000");
      assert.deepEqual(up.instance.attrs, { tls: "yes" });

      // The record is in etcd, under the prefix, for that user to read.
      const user = etcd.client(etcd.discover, {
        username: "discover",
        password: PASSWORD,
      });
      try {
        const keys = await user.getAll().prefix(`${PREFIX}instances/secure/`)
          .keys();
        assert.deepEqual(keys, [`${PREFIX}instances/secure/127.0.0.1:7000`]);
      } finally {
        user.close();
      }

      assert.equal(await publisher.unregister("secure", 7000), true);
      assert.equal((await nextWithin(updates)).kind, "down");
    });

    await t.step("etcd refuses the user keys outside the prefix", async () => {
      const user = etcd.client(etcd.discover, {
        username: "discover",
        password: PASSWORD,
      });
      try {
        await user.put(`${PREFIX}probe`).value("1");
        await assert.rejects(
          () => user.put("/elsewhere/probe").value("1").exec(),
          EtcdPermissionDeniedError,
        );
        await assert.rejects(
          () => user.get("/elsewhere/probe").exec(),
          EtcdPermissionDeniedError,
        );
      } finally {
        user.close();
      }
    });

    await t.step("a wrong password is reported by the agent", async () => {
      await using agent = await spawnSecureAgent(etcd, "not-the-password");
      const health = await fetch(`${agent.http}healthz`);
      assert.equal(health.status, 503);
      assert.equal((await health.json()).connected, false);
      await logged(
        agent,
        /could not connect \(authentication failed: check the user name and password\)/,
      );
    });

    await t.step(
      "an agent on a prefix outside the user's role is refused, and says so",
      async () => {
        // Its lease is renewed every second: a lease says nothing of the
        // keys the agent may read.
        await using agent = await spawnSecureAgent(
          etcd,
          PASSWORD,
          "/elsewhere/",
          ["--etcd-lease-ttl", "3"],
        );
        assert.equal((await fetch(`${agent.http}healthz`)).status, 503);
        await logged(
          agent,
          /could not connect \(permission denied for this user\)/,
        );
        await new Promise((resolve) => setTimeout(resolve, 3000));
        const health = await fetch(`${agent.http}healthz`);
        assert.equal(health.status, 503);
        assert.equal((await health.json()).connected, false);
      },
    );

    await t.step(
      "without --etcd-username, etcd takes the certificate's name as the user",
      async () => {
        await using agent = await spawnSecureAgent(etcd, undefined);
        assert.equal((await fetch(`${agent.http}healthz`)).status, 200);
        await using client = await connect(agent.url);
        await client.register("secure-by-cert", 7001);
        const [instance] = await client.lookup("secure-by-cert");
        assert.equal(instance.addr, "127.0.0.1:7001");
      },
    );
  },
});
