// Copyright the discover authors. BSD-3-Clause license.

/**
 * The DNS server against real resolvers: `dig` (Debian's dnsutils), Node's
 * `dns.Resolver` (c-ares) and `Deno.resolveDns`, all on loopback, over a
 * server fed by an in-process memory backend whose records the tests write;
 * and an agent started with `dns` on etcd, answering what a client
 * registered through another agent.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startDns } from "../agent/dns.ts";
import { startAgent } from "../agent/mod.ts";
import { Views } from "../agent/views.ts";
import { EtcdBackend } from "../backends/etcd.ts";
import { MemoryBackend } from "../backends/memory.ts";
import { connect } from "../mod.ts";
import type { Health } from "../protocol/types.ts";
import { startEtcd } from "../tools/etcd.ts";
import { NODE, run } from "./_node.ts";
import { until } from "./_wait.ts";

interface Fixture {
  port: number;
  backend: MemoryBackend;
}

async function withDns(fn: (fixture: Fixture) => Promise<void>) {
  const backend = new MemoryBackend();
  const views = new Views(backend, { idleMs: 200 });
  await views.open();
  const dns = await startDns(views, { hostname: "127.0.0.1", port: 0 });
  try {
    await put(backend, "cache", "127.0.0.11:6379", { zone: "b" });
    await put(backend, "cache", "127.0.0.12:6379", { zone: "a" });
    await put(backend, "cache", "[::1]:6380", { zone: "b" });
    await put(backend, "cache", "127.0.0.13:6379", {}, "critical");
    await put(backend, "web", "web1.example.com:80", {});
    await fn({ port: dns.port, backend });
  } finally {
    await dns.close();
    await views.close();
    await backend.close();
  }
}

function put(
  backend: MemoryBackend,
  service: string,
  addr: string,
  attrs: Record<string, string>,
  health: Health = "passing",
) {
  return backend.put({
    service,
    addr,
    attrs,
    owner: "test",
    registeredAt: Date.now(),
    health,
  });
}

async function dig(port: number, ...args: string[]): Promise<string> {
  const { code, out } = await run("dig", [
    "@127.0.0.1",
    "-p",
    String(port),
    "+time=5",
    "+tries=1",
    ...args,
  ]);
  assert.equal(code, 0, out);
  return out;
}

async function digShort(port: number, ...args: string[]): Promise<string[]> {
  const out = await dig(port, "+short", ...args);
  return out.split("\n").filter((line) => line !== "").sort();
}

/** Runs `body` in Node with `resolver` (a dns.promises.Resolver on the server); prints its JSON result. */
async function node(port: number, body: string): Promise<unknown> {
  const script = `
    const { Resolver } = require("node:dns").promises;
    const resolver = new Resolver({ timeout: 5000, tries: 1 });
    resolver.setServers(["127.0.0.1:${port}"]);
    (async () => {
      try { console.log(JSON.stringify(await (${body}))); }
      catch (error) { console.log(JSON.stringify({ error: error.code })); }
    })();
  `;
  const { code, out } = await run(NODE, ["-e", script]);
  assert.equal(code, 0, out);
  return JSON.parse(out);
}

function nameServer(port: number) {
  return { nameServer: { ipAddr: "127.0.0.1", port } };
}

Deno.test("dns: A, AAAA and SRV through dig, Node and Deno", async () => {
  await withDns(async ({ port }) => {
    assert.deepEqual(await digShort(port, "cache.service.discover", "A"), [
      "127.0.0.11",
      "127.0.0.12",
    ]);
    assert.deepEqual(await digShort(port, "cache.service.discover", "AAAA"), [
      "::1",
    ]);
    assert.deepEqual(
      await digShort(port, "_cache._tcp.service.discover", "SRV"),
      [
        "1 1 6379 127-0-0-11.addr.discover.",
        "1 1 6379 127-0-0-12.addr.discover.",
        "1 1 6380 0000-0000-0000-0000-0000-0000-0000-0001.addr.discover.",
      ],
    );
    const full = await dig(port, "_cache._udp.service.discover", "SRV");
    assert.match(
      full,
      /127-0-0-11\.addr\.discover\.\s+0\s+IN\s+A\s+127\.0\.0\.11/,
    );
    assert.match(full, /ADDITIONAL: 4/); // 3 addresses and the OPT record

    assert.deepEqual(
      ((await node(
        port,
        `resolver.resolve4("cache.service.discover")`,
      )) as string[])
        .sort(),
      ["127.0.0.11", "127.0.0.12"],
    );
    const srv = await node(
      port,
      `resolver.resolveSrv("_cache._tcp.service.discover")`,
    ) as {
      name: string;
      port: number;
      priority: number;
      weight: number;
    }[];
    assert.deepEqual(
      srv.map((r) => `${r.priority} ${r.weight} ${r.port} ${r.name}`).sort(),
      [
        "1 1 6379 127-0-0-11.addr.discover",
        "1 1 6379 127-0-0-12.addr.discover",
        "1 1 6380 0000-0000-0000-0000-0000-0000-0000-0001.addr.discover",
      ],
    );
    assert.deepEqual(
      await node(port, `resolver.resolve4("127-0-0-12.addr.discover")`),
      ["127.0.0.12"],
    );

    assert.deepEqual(
      (await Deno.resolveDns("cache.service.discover", "A", nameServer(port)))
        .sort(),
      ["127.0.0.11", "127.0.0.12"],
    );
    assert.deepEqual(
      await Deno.resolveDns("cache.service.discover", "AAAA", nameServer(port)),
      ["::1"],
    );
    const denoSrv = await Deno.resolveDns(
      "_cache._tcp.service.discover",
      "SRV",
      nameServer(port),
    );
    assert.equal(denoSrv.length, 3);
    assert.ok(denoSrv.every((r) => r.priority === 1 && r.weight === 1));
  });
});

Deno.test("dns: the attribute filter and hostname instances", async () => {
  await withDns(async ({ port }) => {
    assert.deepEqual(
      await digShort(port, "cache.b.zone.attr.discover", "A"),
      [
        "127.0.0.11",
      ],
    );
    assert.deepEqual(
      await node(port, `resolver.resolve6("Cache.B.ZONE.Attr.Discover.")`),
      ["::1"],
    );
    assert.deepEqual(
      (await Deno.resolveDns(
        "_cache._tcp.a.zone.attr.discover",
        "SRV",
        nameServer(port),
      )).map((record) => ({ ...record })),
      [{
        priority: 1,
        weight: 1,
        port: 6379,
        target: "127-0-0-12.addr.discover.",
      }],
    );
    assert.deepEqual(await digShort(port, "web.service.discover", "A"), [
      "web1.example.com.",
    ]);
    const cname = await dig(port, "web.service.discover", "A");
    assert.match(
      cname,
      /web\.service\.discover\.\s+0\s+IN\s+CNAME\s+web1\.example\.com\./,
    );
    assert.doesNotMatch(cname, /^\S+\s+\d+\s+IN\s+A\s/m); // no A record
    assert.deepEqual(
      await digShort(port, "_web._tcp.service.discover", "SRV"),
      [
        "1 1 80 web1.example.com.",
      ],
    );
  });
});

Deno.test("dns: NXDOMAIN, NODATA and REFUSED", async () => {
  await withDns(async ({ port, backend }) => {
    const missing = await dig(port, "nope.service.discover", "A");
    assert.match(missing, /status: NXDOMAIN/);
    assert.match(
      missing,
      /AUTHORITY SECTION:\ndiscover\.\s+0\s+IN\s+SOA\s+ns\.discover\. hostmaster\.discover\. 1 3600 600 86400 0/,
    );
    assert.match(
      await dig(port, "cache.c.zone.attr.discover"),
      /status: NXDOMAIN/,
    );

    await put(backend, "v4only", "127.0.0.20:80", {});
    const nodata = await dig(port, "v4only.service.discover", "AAAA");
    assert.match(nodata, /status: NOERROR/);
    assert.match(nodata, /ANSWER: 0, AUTHORITY: 1/);

    const refused = await dig(port, "example.com", "A");
    assert.match(refused, /status: REFUSED/);

    assert.deepEqual(
      await node(port, `resolver.resolve4("nope.service.discover")`),
      {
        error: "ENOTFOUND",
      },
    );
    assert.deepEqual(
      await node(port, `resolver.resolve6("v4only.service.discover")`),
      {
        error: "ENODATA",
      },
    );
    assert.deepEqual(await node(port, `resolver.resolve4("example.com")`), {
      error: "EREFUSED",
    });
    await assert.rejects(
      Deno.resolveDns("nope.service.discover", "A", nameServer(port)),
    );
  });
});

Deno.test("dns: only passing instances are answered, and changes at the next query", async () => {
  await withDns(async ({ port, backend }) => {
    const answered = () => digShort(port, "cache.service.discover", "A");
    assert.ok(!(await answered()).includes("127.0.0.13")); // critical

    await put(backend, "cache", "127.0.0.13:6379", {}, "passing");
    await until(
      async () => (await answered()).includes("127.0.0.13"),
      "the instance that passes again is answered",
    );
    await put(backend, "cache", "127.0.0.14:6379", {});
    await until(
      async () => (await answered()).includes("127.0.0.14"),
      "a new instance is answered",
    );
    await backend.delete("cache", "127.0.0.11:6379");
    await until(
      async () => !(await answered()).includes("127.0.0.11"),
      "a removed instance is no longer answered",
    );
    await put(backend, "cache", "127.0.0.12:6379", {}, "critical");
    await until(
      async () => !(await answered()).includes("127.0.0.12"),
      "an instance that turned critical is no longer answered",
    );
    assert.deepEqual(await answered(), ["127.0.0.13", "127.0.0.14"]);
  });
});

Deno.test("dns: truncated over UDP with TC, complete over TCP", async () => {
  await withDns(async ({ port, backend }) => {
    for (let i = 0; i < 300; i++) {
      await put(backend, "big", `127.1.${i >> 8}.${i & 0xff}:80`, {});
    }
    const udp = await dig(
      port,
      "+ignore",
      "+noedns",
      "big.service.discover",
      "A",
    );
    assert.match(udp, /flags: qr aa tc rd;/);
    const count = Number(/ANSWER: (\d+),/.exec(udp)?.[1]);
    assert.ok(count > 0 && count < 300, `${count} answers over UDP`);
    assert.match(udp, /MSG SIZE {2}rcvd: (\d+)/);
    assert.ok(Number(/MSG SIZE {2}rcvd: (\d+)/.exec(udp)![1]) <= 512);

    assert.equal(
      (await digShort(port, "+tcp", "big.service.discover", "A")).length,
      300,
    );
    // Without +ignore, dig retries over TCP on TC and gets every record.
    assert.equal(
      (await digShort(port, "big.service.discover", "A")).length,
      300,
    );
    const viaNode = await node(
      port,
      `resolver.resolve4("big.service.discover")`,
    );
    assert.equal((viaNode as string[]).length, 300);
  });
});

Deno.test(
  "dns, etcd with two agents: a registration at one agent answers at the other's DNS, leader too",
  {
    sanitizeOps: false,
    sanitizeResources: false,
  },
  async () => {
    await using cluster = await startEtcd();
    const prefix = `/dns-${crypto.randomUUID().slice(0, 8)}/`;
    const agentOn = (dns?: { hostname: string; port: number }) =>
      startAgent({
        port: 0,
        advertiseHost: "127.0.0.1",
        logLevel: "error",
        ...(dns ? { dns } : {}),
        backend: new EtcdBackend({
          endpoints: cluster.endpoints,
          prefix,
          leaseTtl: 3,
        }),
      });
    await using answering = await agentOn({ hostname: "127.0.0.1", port: 0 });
    await using other = await agentOn();
    const port = answering.dnsPort!;
    await using client = await connect(other.url);
    const nx = await dig(port, "db.service.discover", "A");
    assert.match(nx, /status: NXDOMAIN/);
    await client.register("db", "127.0.0.21:5432");
    await client.register("db", "127.0.0.22:5432");
    // The first query makes the answering agent watch "db"; every query
    // after it is answered from its view, as soon as the view has the change.
    await until(
      async () =>
        (await digShort(port, "db.service.discover", "A")).length === 2,
      "both instances answered by the other agent",
    );
    assert.deepEqual(await digShort(port, "leader.db.service.discover", "A"), [
      "127.0.0.21",
    ]);
    await client.unregister("db", "127.0.0.21:5432");
    await until(
      async () =>
        (await digShort(port, "leader.db.service.discover", "A"))[0] ===
          "127.0.0.22",
      "the next oldest leads",
    );
    assert.deepEqual(await digShort(port, "db.service.discover", "A"), [
      "127.0.0.22",
    ]);
  },
);

Deno.test("dns: what the server does not do gets a plain answer: root REFUSED, AXFR and UPDATE NOTIMP", async () => {
  await withDns(async ({ port }) => {
    // dig asks with EDNS0 by default: the root is outside the zone.
    assert.match(await dig(port, ".", "NS"), /status: REFUSED/);
    // DNSSEC: the DO bit comes back (RFC 3225), with no signature.
    const dnssec = await dig(port, "+dnssec", "cache.service.discover", "A");
    assert.match(dnssec, /EDNS: version: 0, flags: do; udp: 1232/);
    assert.doesNotMatch(dnssec, /RRSIG/);
    const axfr = await dig(port, "+comments", "discover", "AXFR");
    assert.match(axfr, /status: NOTIMP/);
    assert.match(axfr, /Transfer failed/);
    const update = new Deno.Command("nsupdate", {
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = update.stdin.getWriter();
    await writer.write(
      new TextEncoder().encode(
        `server 127.0.0.1 ${port}\nzone discover\nupdate add x.discover 0 A 127.0.0.1\nsend\n`,
      ),
    );
    await writer.close();
    const { stdout, stderr } = await update.output();
    const decoder = new TextDecoder();
    assert.match(
      decoder.decode(stdout) + decoder.decode(stderr),
      /update failed: NOTIMP/,
    );
    // Pipelined over one TCP connection, every answer comes back.
    const kept = await dig(
      port,
      "+tcp",
      "+keepopen",
      "cache.service.discover",
      "nope.service.discover",
      "cache.service.discover",
    );
    assert.deepEqual(
      [...kept.matchAll(/status: (\w+)/g)].map((m) => m[1]),
      ["NOERROR", "NXDOMAIN", "NOERROR"],
    );
  });
});
