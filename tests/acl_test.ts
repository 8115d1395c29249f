// Copyright the discover authors. BSD-3-Clause license.

/**
 * Tokens and rules end to end (`--acl`): what each access level may do on
 * each method, the all-services subscription and the catalog showing only
 * what a token may read, wrong tokens slowed, an admin's force-deregister,
 * instances bound to the token that registered them, and rules loaded again
 * (in-process, and on SIGHUP) taking rights away at once; and, on etcd
 * with two agents, a client id under another token refused at either.
 *
 * Waits are 10 s at most, generous for a busy 2-core machine.
 */

import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import { startAgent } from "../agent/mod.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { connect } from "../mod.ts";
import { spawnAgent } from "../tools/agent_process.ts";
import { startEtcd } from "../tools/etcd.ts";
import { openRaw } from "./_raw_socket.ts";
import { until } from "./_wait.ts";
import { tokenHash } from "./_tokens.ts";

const TOKENS = {
  reader: "reader-token-0123456789abcdef",
  writer: "writer-token-0123456789abcdef",
  other: "other-writer-token-0123456789",
  admin: "admin-token-0123456789abcdefgh",
};

/** Writes the rules: `names` are the tokens present (all by default). */
async function writeRules(
  path: string,
  names: (keyof typeof TOKENS)[] = ["reader", "writer", "other", "admin"],
) {
  const rules: Record<keyof typeof TOKENS, unknown[]> = {
    reader: [{ service: "db-*", access: "read" }],
    writer: [{ service: "db-*", access: "write" }],
    other: [{ service: "db-*", access: "write" }],
    admin: [{ service: "*", access: "admin" }],
  };
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      default: "deny",
      tokens: await Promise.all(names.map(async (name) => ({
        name,
        sha256: await tokenHash(TOKENS[name]),
        rules: rules[name],
      }))),
    }),
  );
}

const isCode = (code: number) => (error: unknown) =>
  error instanceof RpcError && error.code === code;

async function withRules(
  fn: (
    agent: { url: string; reloadAcl(): Promise<void> },
    path: string,
  ) => Promise<void>,
) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/acl.json`;
  await writeRules(path);
  try {
    await using agent = await startAgent({
      port: 0,
      advertiseHost: "127.0.0.1",
      logLevel: "error",
      acl: path,
    });
    await fn(agent, path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("acl: each access level on each method", async () => {
  await withRules(async (agent) => {
    await using nobody = await connect(agent.url);
    await assert.rejects(
      nobody.register("db-1", 5432),
      isCode(ErrorCode.Forbidden),
    );
    await assert.rejects(nobody.lookup("db-1"), isCode(ErrorCode.Forbidden));
    await assert.rejects(nobody.owners("db-1"), isCode(ErrorCode.Forbidden));
    await assert.rejects(
      nobody.services("db-1"),
      isCode(ErrorCode.Forbidden),
    );
    assert.equal((await nobody.status()).backend, "memory");

    await using writer = await connect(agent.url, { token: TOKENS.writer });
    const db = await writer.register("db-1", 5432);
    await writer.setHealth("db-1", 5432, "critical", { note: "draining" });
    await writer.setHealth("db-1", 5432, "passing");
    await assert.rejects(
      writer.register("web", 80),
      (e) =>
        isCode(ErrorCode.Forbidden)(e) &&
        /needs write access to 'web'.*token 'writer'/.test(
          (e as Error).message,
        ),
    );
    assert.equal((await writer.lookup("db-1"))[0].addr, db.addr);

    await using reader = await connect(agent.url, { token: TOKENS.reader });
    assert.equal((await reader.lookup("db-1")).length, 1);
    assert.equal((await reader.leader("db-1"))?.addr, db.addr);
    const [owned] = (await reader.owners("db-1")).owners;
    assert.deepEqual([owned.addr, owned.client, owned.token], [
      db.addr,
      "connected",
      "writer",
    ]);
    await assert.rejects(
      reader.register("db-2", 5432),
      isCode(ErrorCode.Forbidden),
    );
    await assert.rejects(
      reader.unregister("db-1", 5432),
      isCode(ErrorCode.Forbidden),
    );

    await using admin = await connect(agent.url, { token: TOKENS.admin });
    await admin.register("web", 80);
    // The catalog and "*" show what the token may read, no more.
    assert.deepEqual(
      (await reader.catalog()).services.map((s) => s.service),
      ["db-1"],
    );
    assert.deepEqual(
      (await admin.catalog()).services.map((s) => s.service),
      ["db-1", "web"],
    );
    await using everything = await reader.services("*");
    assert.deepEqual(everything.online().map((i) => i.service), ["db-1"]);
    await admin.register("web", 81);
    await writer.register("db-3", 5432);
    await until(
      () => everything.online().length === 2,
      "db-3 reaches the reader's set of every service",
    );
    assert.deepEqual(
      everything.online().map((i) => i.service).sort(),
      ["db-1", "db-3"],
    );
  });
});

Deno.test("acl: wrong tokens are refused and slowed per address; a session may present another token", async () => {
  await withRules(async (agent) => {
    await assert.rejects(
      connect(agent.url, { token: "not-a-token-of-the-rules" }),
      isCode(ErrorCode.Forbidden),
    );
    // Rotation: a session presents another token and has its rights.
    await using rotating = await openRaw(agent.url);
    const first = await rotating.call("discover.authenticate", {
      token: TOKENS.reader,
    });
    assert.deepEqual(first.result, { name: "reader" });
    const denied = await rotating.call("discover.register", {
      service: "db-9",
      port: 9,
    });
    assert.equal((denied.error as { code: number }).code, ErrorCode.Forbidden);
    const second = await rotating.call("discover.authenticate", {
      token: TOKENS.writer,
    });
    assert.deepEqual(second.result, { name: "writer" });
    const allowed = await rotating.call("discover.register", {
      service: "db-9",
      port: 9,
    });
    assert.ok(allowed.result, JSON.stringify(allowed));
    // Wrong tokens from one address: after a burst, refused until later
    // (a right one too: the address waits).
    await using raw = await openRaw(agent.url);
    const codes: number[] = [];
    for (let i = 0; i < 7; i++) {
      const r = await raw.call("discover.authenticate", {
        token: `wrong-${i}`,
      });
      codes.push((r.error as { code: number }).code);
    }
    assert.ok(codes.slice(0, 4).every((c) => c === ErrorCode.Forbidden));
    assert.equal(codes.at(-1), ErrorCode.LimitExceeded, String(codes));
  });
});

/** Presents `tokens` in one batch of `discover.authenticate` calls; the answers. */
async function authenticateBatch(
  url: string,
  tokens: string[],
): Promise<{ result?: { name: string }; error?: { code: number } }[]> {
  await using raw = await openRaw(url);
  raw.send(JSON.stringify(tokens.map((token, id) => ({
    jsonrpc: "2.0",
    id,
    method: "discover.authenticate",
    params: { token },
  }))));
  return await raw.next() as { result?: { name: string } }[];
}

Deno.test("acl: wrong tokens sent together in one batch are slowed like tokens sent one by one", async () => {
  await withRules(async (agent) => {
    // Every call of a batch starts before any has been checked; the
    // attempts of one address are checked one at a time, so only the
    // burst (5) is checked.
    const answers = await authenticateBatch(
      agent.url,
      Array.from({ length: 40 }, (_, i) => `wrong-${i}`),
    );
    const codes = answers.map((a) => a.error!.code);
    assert.equal(codes.length, 40);
    assert.equal(
      codes.filter((c) => c === ErrorCode.Forbidden).length,
      5,
      String(codes),
    );
    assert.equal(
      codes.filter((c) => c === ErrorCode.LimitExceeded).length,
      35,
      String(codes),
    );
    // A right token from the same address waits too.
    await using raw = await openRaw(agent.url);
    const right = await raw.call("discover.authenticate", {
      token: TOKENS.reader,
    });
    assert.equal(
      (right.error as { code: number }).code,
      ErrorCode.LimitExceeded,
    );
  });
});

Deno.test("acl: right tokens sent together from one address all pass", async () => {
  await withRules(async (agent) => {
    // Clients of one host that connect at once (say, after a restart of
    // their agent) all authenticate, however many: only wrong tokens count.
    const answers = await authenticateBatch(
      agent.url,
      Array.from(
        { length: 40 },
        (_, i) => i % 2 === 0 ? TOKENS.reader : TOKENS.writer,
      ),
    );
    assert.deepEqual(
      answers.map((a) => a.result?.name),
      Array.from({ length: 40 }, (_, i) => i % 2 === 0 ? "reader" : "writer"),
    );
    const clients = await Promise.all(
      Array.from(
        { length: 12 },
        () => connect(agent.url, { token: TOKENS.reader }),
      ),
    );
    await Promise.all(clients.map((c) => c.close()));
  });
});

Deno.test("acl: an admin force-deregisters; instances stay with the token that registered them", async () => {
  await withRules(async (agent) => {
    await using writer = await connect(agent.url, {
      token: TOKENS.writer,
      clientId: "writer-client-0123456789",
    });
    await writer.register("db-1", "127.0.0.9:5432");
    // Another token with the same client id is another owner.
    await using other = await connect(agent.url, {
      token: TOKENS.other,
      clientId: "writer-client-0123456789",
    });
    await assert.rejects(
      other.register("db-1", "127.0.0.9:5432"),
      isCode(ErrorCode.NotOwner),
    );
    await assert.rejects(
      other.unregister("db-1", "127.0.0.9:5432"),
      isCode(ErrorCode.NotOwner),
    );
    await using raw = await openRaw(agent.url);
    await raw.call("discover.authenticate", { token: TOKENS.writer });
    const refused = await raw.call("discover.unregister", {
      service: "db-1",
      addr: "127.0.0.9:5432",
      force: true,
    });
    assert.equal((refused.error as { code: number }).code, ErrorCode.Forbidden);
    await raw.call("discover.authenticate", { token: TOKENS.admin });
    const forced = await raw.call("discover.unregister", {
      service: "db-1",
      addr: "127.0.0.9:5432",
      force: true,
    });
    assert.equal(forced.result, true, JSON.stringify(forced));
    assert.deepEqual(await other.lookup("db-1"), []);
  });
});

Deno.test("acl: rules loaded again take rights away at once; subscriptions see the services go", async () => {
  await withRules(async (agent, path) => {
    await using writer = await connect(agent.url, { token: TOKENS.writer });
    await writer.register("db-1", 5432);
    await using reader = await connect(agent.url, { token: TOKENS.reader });
    await using set = await reader.services("db-1");
    assert.equal(set.online().length, 1);
    await writeRules(path, ["writer", "admin"]);
    await agent.reloadAcl();
    await until(() => set.online().length === 0, "the reader's set empties");
    await assert.rejects(reader.lookup("db-1"), isCode(ErrorCode.Forbidden));
    await writeRules(path);
    await agent.reloadAcl();
    // Its token is back with the same hash, but it was gone: presenting it
    // again gives the rights back (the client does so on reconnection).
    await assert.rejects(reader.lookup("db-1"), isCode(ErrorCode.Forbidden));
    await Deno.writeTextFile(path, "{not json");
    await assert.rejects(agent.reloadAcl());
    assert.equal((await writer.lookup("db-1")).length, 1, "the rules stay");
  });
});

Deno.test("acl: discoverd reads its rules again on SIGHUP", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/acl.json`;
  await writeRules(path);
  try {
    await using agent = await spawnAgent(["--acl", path]);
    await using writer = await connect(agent.url, { token: TOKENS.writer });
    await writer.register("db-1", 5432);
    await writeRules(path, ["reader", "admin"]);
    agent.kill("SIGHUP");
    await until(
      async () =>
        await writer.lookup("db-1").then(
          () => false,
          (e) => isCode(ErrorCode.Forbidden)(e),
        ),
      "the writer loses its rights",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("acl: the command line presents $DISCOVER_TOKEN", async () => {
  await withRules(async (agent) => {
    await using writer = await connect(agent.url, { token: TOKENS.writer });
    await writer.register("db-1", "127.0.0.7:5432");
    const cli = async (token?: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "cli.ts",
          "--agent",
          agent.url,
          "--json",
          "ls",
          "db-1",
        ],
        env: token === undefined ? {} : { DISCOVER_TOKEN: token },
        clearEnv: true,
        cwd: new URL("..", import.meta.url),
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = (b: Uint8Array) => new TextDecoder().decode(b);
      return { code: out.code, out: text(out.stdout), err: text(out.stderr) };
    };
    const refused = await cli();
    assert.equal(refused.code, 1, refused.err);
    assert.match(refused.err, /needs read access to 'db-1'/);
    const listed = await cli(TOKENS.reader);
    assert.equal(listed.code, 0, listed.err);
    assert.deepEqual(
      JSON.parse(listed.out).map((i: { addr: string }) => i.addr),
      ["127.0.0.7:5432"],
    );
  });
});

Deno.test(
  "acl, etcd with two agents: a client id under another token is another owner at every agent",
  {
    sanitizeOps: false,
    sanitizeResources: false,
  },
  async () => {
    await using cluster = await startEtcd();
    const dir = await Deno.makeTempDir();
    const path = `${dir}/acl.json`;
    await writeRules(path);
    const prefix = `/acl-${crypto.randomUUID().slice(0, 8)}/`;
    const agentOn = () =>
      startAgent({
        port: 0,
        advertiseHost: "127.0.0.1",
        logLevel: "error",
        acl: path,
        backend: new EtcdBackend({
          endpoints: cluster.endpoints,
          prefix,
          leaseTtl: 3,
        }),
      });
    try {
      await using a = await agentOn();
      await using b = await agentOn();
      const clientId = "shared-client-id-0123456789";
      await using writer = await connect(a.url, {
        token: TOKENS.writer,
        clientId,
        reconnect: false,
      });
      await writer.register("db-1", "127.0.0.8:5432");
      await using other = await connect(b.url, {
        token: TOKENS.other,
        clientId,
      });
      await assert.rejects(
        other.register("db-1", "127.0.0.8:5432"),
        isCode(ErrorCode.NotOwner),
      );
      // The same token and client id is the same owner, at the other agent too.
      await using again = await connect(b.url, {
        token: TOKENS.writer,
        clientId,
      });
      const moved = await again.register("db-1", "127.0.0.8:5432", {
        attrs: { moved: "yes" },
      });
      assert.deepEqual(moved.attrs, { moved: "yes" });
      // etcd holds a hash, not the client id.
      const etcd = new Etcd3({ hosts: cluster.endpoints });
      try {
        const value = await etcd.get(`${prefix}instances/db-1/127.0.0.8:5432`)
          .string();
        assert.ok(value && !value.includes(clientId), value ?? "no record");
      } finally {
        etcd.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
