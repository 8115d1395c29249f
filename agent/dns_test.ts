// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import dnsPacket, { type Packet } from "dns-packet";
import fc from "fast-check";
import { MemoryBackend } from "../backends/memory.ts";
import type { Instance } from "../protocol/types.ts";
import {
  answer,
  type DnsHold,
  type DnsLookup,
  type DnsMessage,
  type DnsRecord,
  type DnsViews,
  encodeWithin,
  MAX_FAILED_SERVICES,
  MAX_QUERIES_IN_FLIGHT,
  MAX_UDP_PAYLOAD,
  normalizeDomain,
  startDns,
  TCP_IDLE_MS,
  TCP_MAX_CONNECTIONS,
  viewsLookup,
} from "./dns.ts";
import { Views } from "./views.ts";
import type { Logger } from "./log.ts";
import { QUIET_LINES, QUIET_SUMMARY_MS } from "../backends/quiet_log.ts";
import { until } from "../tests/_wait.ts";

const NOERROR = 0;
const FORMERR = 1;
const SERVFAIL = 2;
const NXDOMAIN = 3;
const NOTIMP = 4;
const REFUSED = 5;
const TC = dnsPacket.TRUNCATED_RESPONSE;
const AA = dnsPacket.AUTHORITATIVE_ANSWER;
const DO = 0x8000; // in the OPT record's flags (RFC 3225)

function instance(
  service: string,
  addr: string,
  more: Partial<Instance> = {},
): Instance {
  return {
    id: `${service}/${addr}`,
    service,
    addr,
    attrs: {},
    revision: 1,
    registeredAt: 0,
    created: 1,
    health: "passing",
    ...more,
  };
}

/** A lookup over a fixed list, recording the names it was asked. */
function fakeLookup(instances: Instance[]): DnsLookup & { asked: string[] } {
  const asked: string[] = [];
  const lookup = (service: string) => {
    asked.push(service);
    return Promise.resolve(instances.filter((i) => i.service === service));
  };
  return Object.assign(lookup, { asked });
}

function query(name: string, type = "A", more: DnsMessage = {}): DnsMessage {
  return {
    type: "query",
    id: 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: "IN" }],
    ...more,
  };
}

function rcode(message: DnsMessage): number {
  return (message.flags ?? 0) & 0xf;
}

function datas(records: DnsRecord[] | undefined): unknown[] {
  return (records ?? []).map((r) => r.data);
}

function sorted(values: unknown[]): unknown[] {
  return values.map((v) => JSON.stringify(v)).sort().map((v) => JSON.parse(v));
}

const CACHE = [
  instance("cache", "10.0.0.1:6379", { attrs: { zone: "b", "app.tier": "x" } }),
  instance("cache", "10.0.0.2:6379", { attrs: { zone: "a" } }),
  instance("cache", "10.0.0.3:6379", { health: "critical", note: "timeout" }),
  instance("cache", "[2001:db8::1]:6380", { attrs: { Tier: "Web" } }),
  instance("cache", "10.0.0.1:6390"), // same host, other port
];

Deno.test("answer: A and AAAA hold the passing instances, once per address", async () => {
  const lookup = fakeLookup(CACHE);
  const a = await answer(query("cache.service.discover"), lookup);
  assert.equal(rcode(a), NOERROR);
  assert.equal((a.flags ?? 0) & AA, AA);
  assert.equal(a.id, 4242);
  assert.deepEqual(sorted(datas(a.answers)), ["10.0.0.1", "10.0.0.2"]);
  assert.ok(a.answers!.every((r) => r.type === "A" && r.ttl === 0));
  assert.ok(a.answers!.every((r) => r.name === "cache.service.discover"));
  const aaaa = await answer(query("cache.service.discover", "AAAA"), lookup);
  assert.deepEqual(datas(aaaa.answers), ["2001:db8::1"]);
  const any = await answer(query("cache.service.discover", "ANY"), lookup);
  assert.equal(any.answers!.length, 3);
});

Deno.test("answer: answers come in a random order", async () => {
  const many = Array.from(
    { length: 6 },
    (_, i) => instance("web", `10.1.0.${i + 1}:80`),
  );
  const orders = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const a = await answer(query("web.service.discover"), fakeLookup(many));
    assert.equal(a.answers!.length, 6);
    orders.add(datas(a.answers).join(","));
  }
  // 40 draws of 720 orders: all equal has a probability of 720^-39.
  assert.ok(orders.size > 1, "always the same order");
});

Deno.test("answer: negative answers carry the SOA with the TTL as minimum", async () => {
  const options = { domain: "Svc.Example.", ttl: 30 };
  const none = await answer(
    query("nope.service.svc.example"),
    fakeLookup(CACHE),
    options,
  );
  assert.equal(rcode(none), NXDOMAIN);
  assert.equal(none.answers!.length, 0);
  const [soa] = none.authorities!;
  assert.equal(soa.type, "SOA");
  assert.equal(soa.name, "svc.example");
  assert.equal(soa.ttl, 30);
  assert.equal((soa.data as { minimum: number }).minimum, 30);

  const v4only = [instance("db", "10.0.0.9:5432")];
  const nodata = await answer(
    query("db.service.svc.example", "AAAA"),
    fakeLookup(v4only),
    options,
  );
  assert.equal(rcode(nodata), NOERROR);
  assert.equal(nodata.answers!.length, 0);
  assert.equal(nodata.authorities![0].type, "SOA");
  const positive = await answer(
    query("db.service.svc.example"),
    fakeLookup(v4only),
    options,
  );
  assert.equal(positive.answers![0].ttl, 30);
  assert.equal(positive.authorities!.length, 0);
});

Deno.test("answer: a service with only critical instances exists, with no record", async () => {
  const down = [instance("db", "10.0.0.9:5432", { health: "critical" })];
  for (const name of ["db.service.discover", "_db._tcp.service.discover"]) {
    for (const type of ["A", "SRV"]) {
      const a = await answer(query(name, type), fakeLookup(down));
      assert.equal(rcode(a), NOERROR, `${name} ${type}`);
      assert.equal(a.answers!.length, 0);
      assert.equal(a.authorities![0].type, "SOA");
    }
  }
});

Deno.test("answer: names outside the zone are refused, names inside are case-insensitive", async () => {
  const lookup = fakeLookup(CACHE);
  for (const name of ["example.com", "discover.example", "xdiscover", "."]) {
    assert.equal(rcode(await answer(query(name), lookup)), REFUSED, name);
  }
  const a = await answer(query("CaChE.SERVICE.Discover."), lookup);
  assert.equal(rcode(a), NOERROR);
  assert.equal(a.answers!.length, 2);
  assert.equal(a.answers![0].name, "CaChE.SERVICE.Discover.");
  assert.deepEqual(lookup.asked, ["CaChE", "cache"]);
});

Deno.test("answer: a service is found by its spelling first, then in lower case", async () => {
  const lookup = fakeLookup([instance("Api", "10.0.0.7:80")]);
  const a = await answer(query("Api.service.discover"), lookup);
  assert.deepEqual(datas(a.answers), ["10.0.0.7"]);
  assert.deepEqual(lookup.asked, ["Api"]);
});

Deno.test("answer: SRV records with priority 1, weight 1 and address targets", async () => {
  for (const proto of ["_tcp", "_udp"]) {
    const a = await answer(
      query(`_cache.${proto}.service.discover`, "SRV"),
      fakeLookup(CACHE),
    );
    assert.equal(rcode(a), NOERROR);
    assert.deepEqual(sorted(datas(a.answers)), [
      {
        priority: 1,
        weight: 1,
        port: 6379,
        target: "10-0-0-1.addr.discover",
      },
      {
        priority: 1,
        weight: 1,
        port: 6379,
        target: "10-0-0-2.addr.discover",
      },
      {
        priority: 1,
        weight: 1,
        port: 6380,
        target: "2001-0db8-0000-0000-0000-0000-0000-0001.addr.discover",
      },
      {
        priority: 1,
        weight: 1,
        port: 6390,
        target: "10-0-0-1.addr.discover",
      },
    ]);
    assert.deepEqual(
      sorted(a.additionals!.map((r) => [r.type, r.name, r.data])),
      [
        ["A", "10-0-0-1.addr.discover", "10.0.0.1"],
        ["A", "10-0-0-2.addr.discover", "10.0.0.2"],
        [
          "AAAA",
          "2001-0db8-0000-0000-0000-0000-0000-0001.addr.discover",
          "2001:db8::1",
        ],
      ],
    );
  }
  const wrongType = await answer(
    query("_cache._tcp.service.discover", "A"),
    fakeLookup(CACHE),
  );
  assert.equal(rcode(wrongType), NOERROR);
  assert.equal(wrongType.answers!.length, 0);
});

Deno.test("answer: the address names resolve the SRV targets", async () => {
  const lookup = fakeLookup([]);
  const a = await answer(query("10-0-0-1.addr.discover"), lookup);
  assert.deepEqual(datas(a.answers), ["10.0.0.1"]);
  const aaaa = await answer(
    query("2001-0DB8-0000-0000-0000-0000-0000-0001.addr.discover", "AAAA"),
    lookup,
  );
  assert.deepEqual(datas(aaaa.answers), ["2001:db8::1"]);
  const wrong = await answer(query("10-0-0-1.addr.discover", "AAAA"), lookup);
  assert.equal(rcode(wrong), NOERROR);
  assert.equal(wrong.answers!.length, 0);
  for (const name of ["10-0-0-256.addr", "x.addr", "10.0.0.1.addr"]) {
    const bad = await answer(query(`${name}.discover`), lookup);
    assert.equal(rcode(bad), NXDOMAIN, name);
  }
  assert.deepEqual(lookup.asked, []);
});

Deno.test("answer: hostname instances are a CNAME and SRV targets, never an A", async () => {
  const named = [
    instance("web", "web1.example.com:80"),
    instance("web", "web2.example.com:80"),
  ];
  for (const type of ["A", "AAAA"]) {
    const a = await answer(
      query("web.service.discover", type),
      fakeLookup(named),
    );
    assert.equal(a.answers!.length, 1);
    assert.equal(a.answers![0].type, "CNAME");
    assert.ok(
      ["web1.example.com", "web2.example.com"].includes(
        a.answers![0].data as string,
      ),
    );
  }
  const srv = await answer(
    query("_web._tcp.service.discover", "SRV"),
    fakeLookup(named),
  );
  assert.deepEqual(
    sorted(srv.answers!.map((r) => (r.data as { target: string }).target)),
    ["web1.example.com", "web2.example.com"],
  );
  assert.equal(srv.additionals!.length, 0);

  const mixed = [...named, instance("web", "10.0.0.5:80")];
  const a = await answer(query("web.service.discover"), fakeLookup(mixed));
  assert.deepEqual(
    a.answers!.map((r) => [r.type, r.data]),
    [["A", "10.0.0.5"]],
  );
});

Deno.test("answer: SERVICE.VALUE.KEY.attr filters on one attribute", async () => {
  const lookup = fakeLookup(CACHE);
  const zone = await answer(query("cache.b.zone.attr.discover"), lookup);
  assert.equal(rcode(zone), NOERROR);
  assert.deepEqual(datas(zone.answers), ["10.0.0.1"]);
  const upper = await answer(query("cache.B.ZONE.attr.discover"), lookup);
  assert.deepEqual(datas(upper.answers), ["10.0.0.1"]);
  const tier = await answer(
    query("cache.web.tier.attr.discover", "AAAA"),
    lookup,
  );
  assert.deepEqual(datas(tier.answers), ["2001:db8::1"]);
  const srv = await answer(
    query("_cache._tcp.a.zone.attr.discover", "SRV"),
    lookup,
  );
  assert.deepEqual(
    datas(srv.answers).map((d) => (d as { target: string }).target),
    ["10-0-0-2.addr.discover"],
  );
  const none = await answer(query("cache.c.zone.attr.discover"), lookup);
  assert.equal(rcode(none), NXDOMAIN);
  assert.equal(none.authorities![0].type, "SOA");
  // Only the critical instance has no zone: the name exists, with no record.
  const critical = [
    ...CACHE,
    instance("cache", "10.0.0.4:1", {
      attrs: { zone: "d" },
      health: "critical",
    }),
  ];
  const down = await answer(
    query("cache.d.zone.attr.discover"),
    fakeLookup(critical),
  );
  assert.equal(rcode(down), NOERROR);
  assert.equal(down.answers!.length, 0);
  // Names above a filtered name exist, with no record.
  for (
    const name of [
      "attr.discover",
      "zone.attr.discover",
      "b.zone.attr.discover",
      "_tcp.b.zone.attr.discover",
    ]
  ) {
    const a = await answer(query(name), lookup);
    assert.equal(rcode(a), NOERROR, name);
    assert.equal(a.answers!.length, 0, name);
  }
  assert.ok(lookup.asked.every((s) => s === "cache"), lookup.asked.join());
});

Deno.test("answer: a dotted service name is every label left of the kind", async () => {
  const lookup = fakeLookup([
    instance("eu.cache", "10.0.0.8:1", { attrs: { k: "v" } }),
    instance("eu.cache.v.k", "10.0.0.9:1"),
  ]);
  const a = await answer(query("eu.cache.service.discover"), lookup);
  assert.deepEqual(datas(a.answers), ["10.0.0.8"]);
  const srv = await answer(
    query("_eu.cache._tcp.service.discover", "SRV"),
    lookup,
  );
  assert.equal(srv.answers!.length, 1);
  // Under attr, the two labels before it are the key and the value.
  const filtered = await answer(query("eu.cache.v.k.attr.discover"), lookup);
  assert.deepEqual(datas(filtered.answers), ["10.0.0.8"]);
  // Under service, every label is the service name.
  const other = await answer(query("eu.cache.v.k.service.discover"), lookup);
  assert.deepEqual(datas(other.answers), ["10.0.0.9"]);
});

Deno.test("answer: the zone's own names", async () => {
  const lookup = fakeLookup(CACHE);
  const apex = await answer(query("discover", "SOA"), lookup);
  assert.equal(apex.answers![0].type, "SOA");
  for (
    const name of [
      "discover",
      "service.discover",
      "_tcp.service.discover",
      "_udp.service.discover",
      "addr.discover",
    ]
  ) {
    const a = await answer(query(name, "A"), lookup);
    assert.equal(rcode(a), NOERROR, name);
    assert.equal(a.answers!.length, 0, name);
    assert.equal(a.authorities![0].type, "SOA", name);
  }
  for (
    const name of ["leader.discover", "x.y.discover", "a..service.discover"]
  ) {
    assert.equal(rcode(await answer(query(name), lookup)), NXDOMAIN, name);
  }
  assert.deepEqual(lookup.asked, []);
});

Deno.test("answer: header checks: one question, QUERY opcode, IN class, EDNS0", async () => {
  const lookup = fakeLookup(CACHE);
  const two = await answer(
    query("cache.service.discover", "A", {
      questions: [
        { type: "A", name: "cache.service.discover" },
        { type: "A", name: "cache.service.discover" },
      ],
    }),
    lookup,
  );
  assert.equal(rcode(two), FORMERR);
  const zero = await answer(query("x", "A", { questions: [] }), lookup);
  assert.equal(rcode(zero), FORMERR);
  const notify = await answer(
    query("cache.service.discover", "A", { flags: 4 << 11 }),
    lookup,
  );
  assert.equal(rcode(notify), NOTIMP);
  assert.equal(((notify.flags ?? 0) >> 11) & 0xf, 4);
  const chaos = await answer(
    query("cache.service.discover", "A", {
      questions: [{ type: "TXT", name: "version.bind", class: "CH" }],
    }),
    lookup,
  );
  assert.equal(rcode(chaos), REFUSED);

  const opt = {
    type: "OPT",
    name: ".",
    udpPayloadSize: 4096,
    ednsVersion: 0,
    flags: 0,
  };
  const edns = await answer(
    query("cache.service.discover", "A", { additionals: [opt] }),
    lookup,
  );
  const echoed = edns.additionals!.find((r) => r.type === "OPT");
  assert.equal(echoed?.udpPayloadSize, MAX_UDP_PAYLOAD);
  const v1 = await answer(
    query("cache.service.discover", "A", {
      additionals: [{ ...opt, ednsVersion: 1 }],
    }),
    lookup,
  );
  assert.equal(v1.additionals!.find((r) => r.type === "OPT")?.extendedRcode, 1); // BADVERS
  assert.equal(v1.answers!.length, 0);
});

Deno.test("encodeWithin: drops the additional records, then answers with TC", () => {
  const name = "big.service.discover";
  const answers = Array.from({ length: 100 }, (_, i) => ({
    type: "SRV" as const,
    name,
    data: { priority: 1, weight: 1, port: 80, target: `t${i}.addr.discover` },
  }));
  const additionals = answers.map((a) => ({
    type: "A" as const,
    name: a.data.target,
    data: "10.0.0.1",
  }));
  const response: DnsMessage = {
    type: "response",
    id: 9,
    flags: AA,
    questions: [{ type: "SRV", name }],
    answers,
    additionals,
  };
  const whole = dnsPacket.decode(Buffer.from(encodeWithin(response, 65535)));
  assert.equal(whole.answers!.length, 100);
  assert.equal(whole.additionals!.length, 100);
  assert.equal(whole.flag_tc, false);

  const leanSize = encodeWithin({ ...response, additionals: [] }, 65535)
    .length;
  const lean = encodeWithin(response, leanSize);
  const leanPacket = dnsPacket.decode(Buffer.from(lean));
  assert.equal(lean.length, leanSize);
  assert.equal(leanPacket.answers!.length, 100);
  assert.equal(leanPacket.additionals!.length, 0);
  assert.equal(leanPacket.flag_tc, false); // RFC 2181 9: no TC for additionals

  const cut = encodeWithin(response, 512);
  const cutPacket = dnsPacket.decode(Buffer.from(cut));
  assert.ok(cut.length <= 512, `${cut.length} bytes`);
  assert.equal(cutPacket.flag_tc, true);
  assert.equal(cutPacket.flag_aa, true);
  assert.ok(cutPacket.answers!.length > 5 && cutPacket.answers!.length < 100);
  // The most that fit: one more would not.
  const oneMore = encodeWithin({
    ...response,
    flags: AA | TC,
    additionals: [],
    answers: answers.slice(0, cutPacket.answers!.length + 1),
  }, 65535);
  assert.ok(oneMore.length > 512);
});

Deno.test("normalizeDomain and the TTL are checked", async () => {
  assert.equal(normalizeDomain("Svc.Example."), "svc.example");
  for (const bad of ["", ".", "a..b", "a b.", "x".repeat(64) + "."]) {
    assert.throws(() => normalizeDomain(bad), /'domain' must be a DNS name/);
  }
  await assert.rejects(
    answer(query("x.discover"), fakeLookup([]), { ttl: -1 }),
    /'ttl' must be an integer number of seconds/,
  );
});

// ---------------------------------------------------------------------------
// Sockets

async function withServer(
  fn: (
    port: number,
    backend: MemoryBackend,
  ) => Promise<void>,
  views?: (backend: MemoryBackend) => Views,
  log?: Logger,
) {
  const backend = new MemoryBackend();
  const all = views?.(backend) ?? new Views(backend, { idleMs: 50 });
  await all.open();
  const dns = await startDns(all, {
    hostname: "127.0.0.1",
    port: 0,
    ...(log ? { log } : {}),
  });
  try {
    await fn(dns.port, backend);
  } finally {
    await dns.close();
    await all.close();
    await backend.close();
  }
}

/** Views whose reads of a service fail ("store down") while `fail` says so. */
function failingViews(fail: (service: string) => boolean) {
  return (backend: MemoryBackend) => {
    const views = new Views(backend, { idleMs: 50 });
    const acquire = views.acquire.bind(views);
    views.acquire = (scope) =>
      fail(scope) ? Promise.reject(new Error("store down")) : acquire(scope);
    return views;
  };
}

function put(backend: MemoryBackend, service: string, addr: string) {
  return backend.put({
    service,
    addr,
    attrs: {},
    owner: "test",
    registeredAt: 0,
    created: 1,
  });
}

/** Sends one UDP datagram and waits (5 s at most) for one answer. */
async function udp(
  port: number,
  bytes: Uint8Array,
  waitMs = 5000,
): Promise<Uint8Array | undefined> {
  const socket = dgram.createSocket("udp4");
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve(undefined), waitMs);
      socket.on("message", (message: Buffer) => {
        clearTimeout(timer);
        resolve(new Uint8Array(message));
      });
      socket.on("error", reject);
      socket.send(bytes, port, "127.0.0.1");
    });
  } finally {
    socket.close();
  }
}

/** Sends messages over one TCP connection and reads `count` framed answers. */
async function tcp(
  port: number,
  raw: Uint8Array,
  count: number,
): Promise<Uint8Array[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(raw);
    const out: Uint8Array[] = [];
    let buffered = new Uint8Array(0);
    const chunk = new Uint8Array(65536);
    const deadline = AbortSignal.timeout(10_000);
    while (out.length < count) {
      if (deadline.aborted) throw new Error("no TCP answer within 10 s");
      const n = await conn.read(chunk);
      if (n === null) break;
      const next = new Uint8Array(buffered.length + n);
      next.set(buffered);
      next.set(chunk.subarray(0, n), buffered.length);
      buffered = next;
      while (buffered.length >= 2) {
        const length = (buffered[0] << 8) | buffered[1];
        if (buffered.length < 2 + length) break;
        out.push(buffered.slice(2, 2 + length));
        buffered = buffered.slice(2 + length);
      }
    }
    return out;
  } finally {
    conn.close();
  }
}

function frame(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length + 2);
  out[0] = bytes.length >> 8;
  out[1] = bytes.length & 0xff;
  out.set(bytes, 2);
  return out;
}

function encodeQuery(name: string, type = "A", more: DnsMessage = {}) {
  return new Uint8Array(dnsPacket.encode(query(name, type, more) as Packet));
}

function decode(bytes: Uint8Array | undefined) {
  assert.ok(bytes, "no answer");
  return dnsPacket.decode(Buffer.from(bytes)) as DnsMessage & {
    flag_tc: boolean;
  };
}

Deno.test("startDns: answers over UDP and TCP on one port", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const overUdp = decode(
      await udp(port, encodeQuery("cache.service.discover")),
    );
    assert.deepEqual(datas(overUdp.answers), ["10.0.0.1"]);
    const [first, second] = await tcp(
      port,
      new Uint8Array([
        ...frame(encodeQuery("cache.service.discover")),
        ...frame(encodeQuery("nope.service.discover")),
      ]),
      2,
    );
    assert.deepEqual(datas(decode(first).answers), ["10.0.0.1"]);
    assert.equal(rcode(decode(second)), NXDOMAIN);
  });
});

/** A logger keeping warnings, and what it said of one message. */
function warningLog() {
  const warnings: [string, Record<string, unknown>?][] = [];
  const log: Logger = {
    debug() {},
    info() {},
    warn: (message, fields) => void warnings.push([message, fields]),
    error: (message, fields) => void warnings.push([message, fields]),
  };
  const said = (message: string) =>
    warnings.filter(([m]) => m === message).map(([, f]) => f);
  return { log, said };
}

const CANNOT_ANSWER = "dns: cannot answer (Error)";
const COUNTED = "repeated warnings not logged";

Deno.test("startDns: while reads fail, a few lines say so, then a count once the services that failed are read again", async () => {
  let fail = true;
  const { log, said } = warningLog();
  const queries = QUIET_LINES + 7;
  await withServer(
    async (port, backend) => {
      await put(backend, "cache", "10.0.0.1:6379");
      await put(backend, "web", "10.0.0.2:80");
      for (let i = 0; i < queries; i++) {
        const failed = decode(
          await udp(port, encodeQuery("cache.service.discover")),
        );
        assert.equal(rcode(failed), SERVFAIL);
        // Another service still read meanwhile ends nothing, and neither
        // does a query answered without a read (class CH: REFUSED).
        const web = decode(
          await udp(port, encodeQuery("web.service.discover")),
        );
        assert.deepEqual(datas(web.answers), ["10.0.0.2"]);
        const refused = decode(
          await udp(
            port,
            encodeQuery("cache.service.discover", "A", {
              questions: [{
                type: "A",
                name: "cache.service.discover",
                class: "CH",
              }],
            }),
          ),
        );
        assert.notEqual(rcode(refused), SERVFAIL);
      }
      // An outage under a steady stream of queries is a few lines, not one
      // line a query.
      const lines = said(CANNOT_ANSWER);
      assert.equal(lines.length, QUIET_LINES);
      assert.equal(lines[0]?.name, "cache.service.discover");
      assert.match(String(lines[0]?.error), /store down/);
      assert.deepEqual(said(COUNTED), []);
      fail = false;
      const ok = decode(await udp(port, encodeQuery("cache.service.discover")));
      assert.deepEqual(datas(ok.answers), ["10.0.0.1"]);
      // The service that failed is read: what was not logged is counted.
      assert.deepEqual(said(COUNTED).map((f) => [f?.count, f?.like]), [
        [queries - QUIET_LINES, CANNOT_ANSWER],
      ]);
      // The next outage is logged again from its first query; what it does
      // not log is counted when the server stops.
      fail = true;
      for (let i = 0; i < QUIET_LINES + 1; i++) {
        await udp(port, encodeQuery("cache.service.discover"));
      }
      assert.equal(said(CANNOT_ANSWER).length, 2 * QUIET_LINES);
      assert.equal(said(COUNTED).length, 1);
    },
    failingViews((service) => fail && service === "cache"),
    log,
  );
  assert.deepEqual(said(COUNTED).map((f) => f?.count), [
    queries - QUIET_LINES,
    1,
  ]);
});

// Waits QUIET_SUMMARY_MS (30 s) for the count; bounded by the test runner.
Deno.test("startDns: a service that failed and is not asked for again holds the count back for QUIET_SUMMARY_MS at most", async () => {
  let fail = true;
  const { log, said } = warningLog();
  await withServer(
    async (port, backend) => {
      await put(backend, "web", "10.0.0.2:80");
      for (let i = 0; i < QUIET_LINES + 2; i++) {
        await udp(port, encodeQuery("gone.service.discover"));
      }
      assert.equal(said(CANNOT_ANSWER).length, QUIET_LINES);
      fail = false;
      await udp(port, encodeQuery("web.service.discover"));
      assert.deepEqual(said(COUNTED), [], "'gone' was not read again yet");
      await new Promise((resolve) => setTimeout(resolve, QUIET_SUMMARY_MS));
      const web = decode(await udp(port, encodeQuery("web.service.discover")));
      assert.deepEqual(datas(web.answers), ["10.0.0.2"]);
      assert.deepEqual(said(COUNTED).map((f) => f?.count), [2]);
    },
    failingViews((service) => fail && service === "gone"),
    log,
  );
});

Deno.test("startDns: at most MAX_FAILED_SERVICES failed services hold the count back", async () => {
  let fail = true;
  const { log, said } = warningLog();
  const name = (i: number) => `s${i}.service.discover`;
  await withServer(
    async (port) => {
      // One service more than the bound fails.
      for (let i = 0; i <= MAX_FAILED_SERVICES; i++) {
        assert.equal(
          rcode(decode(await udp(port, encodeQuery(name(i))))),
          SERVFAIL,
        );
      }
      assert.equal(said(CANNOT_ANSWER).length, QUIET_LINES);
      fail = false;
      for (let i = 0; i < MAX_FAILED_SERVICES - 1; i++) {
        await udp(port, encodeQuery(name(i)));
      }
      assert.deepEqual(said(COUNTED), [], "one remembered service is unread");
      // The last remembered one read, the count comes: the service past the
      // bound, never read again, is not waited for.
      await udp(port, encodeQuery(name(MAX_FAILED_SERVICES - 1)));
      assert.deepEqual(said(COUNTED).map((f) => f?.count), [
        MAX_FAILED_SERVICES + 1 - QUIET_LINES,
      ]);
    },
    failingViews(() => fail),
    log,
  );
});

Deno.test("startDns: large answers are truncated over UDP and complete over TCP", async () => {
  await withServer(async (port, backend) => {
    for (let i = 0; i < 300; i++) {
      await put(backend, "big", `10.2.${i >> 8}.${i & 0xff}:80`);
    }
    const plain = await udp(port, encodeQuery("big.service.discover"));
    assert.ok(plain!.length <= 512, `${plain!.length} bytes`);
    const cut = decode(plain);
    assert.equal(cut.flag_tc, true);
    assert.ok(cut.answers!.length > 0);

    const edns = encodeQuery("big.service.discover", "A", {
      additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096 }],
    });
    const larger = await udp(port, edns);
    assert.ok(larger!.length > 512 && larger!.length <= MAX_UDP_PAYLOAD);
    assert.equal(decode(larger).flag_tc, true);

    const [whole] = await tcp(
      port,
      frame(encodeQuery("big.service.discover")),
      1,
    );
    const full = decode(whole);
    assert.equal(full.flag_tc, false);
    assert.equal(full.answers!.length, 300);
  });
});

Deno.test("startDns: a failing read is SERVFAIL, and the server goes on", async () => {
  let fail = true;
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const failed = decode(
      await udp(port, encodeQuery("cache.service.discover")),
    );
    assert.equal(rcode(failed), SERVFAIL);
    assert.equal(failed.id, 4242);
    // With EDNS0, the SERVFAIL carries an OPT record too (RFC 6891 6.1.1).
    const edns = decode(
      await udp(
        port,
        encodeQuery("cache.service.discover", "A", {
          additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232 }],
        }),
      ),
    );
    assert.equal(rcode(edns), SERVFAIL);
    assert.deepEqual(edns.additionals?.map((r) => r.type), ["OPT"]);
    fail = false;
    const ok = decode(await udp(port, encodeQuery("cache.service.discover")));
    assert.deepEqual(datas(ok.answers), ["10.0.0.1"]);
  }, failingViews(() => fail));
});

Deno.test("startDns: malformed packets never stop the server", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const valid = encodeQuery("cache.service.discover", "SRV");
    // Random bytes, valid queries cut short, and valid queries with bytes changed.
    const packet = fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 600 }),
      fc.integer({ min: 0, max: valid.length - 1 }).map((n) =>
        valid.slice(0, n)
      ),
      fc.array(
        fc.tuple(
          fc.integer({ min: 2, max: valid.length - 1 }),
          fc.integer({ min: 0, max: 255 }),
        ),
        { minLength: 1, maxLength: 8 },
      ).map((changes) => {
        const out = valid.slice();
        for (const [at, byte] of changes) out[at] = byte;
        return out;
      }),
    );
    let answered = 0;
    let formErr = 0;
    await fc.assert(
      fc.asyncProperty(packet, async (bytes) => {
        const expectAnswer = bytes.length >= 12 && (bytes[2] & 0x80) === 0;
        const reply = await udp(port, bytes, expectAnswer ? 5000 : 100);
        if (expectAnswer) {
          // Every query-shaped packet gets one answer with its id.
          assert.ok(reply, "no answer to a query-shaped packet");
          assert.equal(reply[0], bytes[0]);
          assert.equal(reply[1], bytes[1]);
          assert.equal(reply[2] & 0x80, 0x80);
          answered++;
          if ((reply[3] & 0xf) === FORMERR) formErr++;
        } else {
          assert.equal(reply, undefined, "a response or a runt was answered");
        }
      }),
      { numRuns: 300 },
    );
    assert.ok(answered > 100 && formErr > 0, `${answered} ${formErr}`);

    // Random bytes over TCP, framed or not: the server still answers after.
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.boolean(),
        async (bytes, framed) => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.write(framed ? frame(bytes) : bytes).catch(() => {});
          conn.close();
        },
      ),
      { numRuns: 50 },
    );
    const after = decode(
      await udp(port, encodeQuery("cache.service.discover")),
    );
    assert.deepEqual(datas(after.answers), ["10.0.0.1"]);
    const [overTcp] = await tcp(
      port,
      frame(encodeQuery("cache.service.discover")),
      1,
    );
    assert.deepEqual(datas(decode(overTcp).answers), ["10.0.0.1"]);
  });
});

Deno.test("viewsLookup: every instance of the service, whatever its health", async () => {
  const backend = new MemoryBackend();
  const views = new Views(backend, { idleMs: 0 });
  await views.open();
  try {
    await backend.put({
      service: "db",
      addr: "10.0.0.1:5432",
      attrs: {},
      owner: "o",
      registeredAt: 0,
      health: "critical",
    });
    await put(backend, "db", "10.0.0.2:5432");
    const lookup = viewsLookup(views);
    const found = await lookup("db");
    assert.deepEqual(
      found.map((i) => `${i.addr} ${i.health}`).sort(),
      ["10.0.0.1:5432 critical", "10.0.0.2:5432 passing"],
    );
    assert.deepEqual(await lookup("other"), []);
  } finally {
    await views.close();
    await backend.close();
  }
});

Deno.test("startDns: unknown options are refused", async () => {
  const backend = new MemoryBackend();
  const views = new Views(backend);
  await assert.rejects(
    startDns(
      views,
      {
        hostname: "127.0.0.1",
        port: 0,
        zone: "x.",
      } as unknown as Parameters<typeof startDns>[1],
    ),
    /'zone' is not a known DNS option/,
  );
  await views.close();
});

Deno.test("viewsLookup: an empty view that lost its store is a failure, not an absence", async () => {
  const held: Instance[] = [];
  let connected = false;
  let released = 0;
  const views = {
    acquire: (): Promise<DnsHold> =>
      Promise.resolve({
        view: {
          get connected() {
            return connected;
          },
          list: () => held,
        },
        release: () => released++,
      }),
  };
  const lookup = viewsLookup(views);
  await assert.rejects(lookup("db"), /the store is unreachable/);
  held.push(instance("db", "10.0.0.1:5432"));
  assert.equal((await lookup("db")).length, 1); // its last state
  held.length = 0;
  connected = true;
  assert.deepEqual(await lookup("db"), []);
  assert.equal(released, 3);
});

Deno.test("answer: leader.SERVICE is the set's leader alone: the oldest passing instance", async () => {
  const lookup = fakeLookup([
    instance("db", "10.0.0.3:5432", { created: 7, attrs: { shard: "3" } }),
    instance("db", "10.0.0.2:5432", {
      created: 2,
      attrs: { shard: "3" },
      health: "critical",
    }),
    instance("db", "10.0.0.9:5432", { created: 5 }),
    instance("db", "10.0.0.1:5432", { created: 5 }),
  ]);
  for (let i = 0; i < 5; i++) {
    const a = await answer(query("leader.db.service.discover"), lookup);
    assert.equal(rcode(a), NOERROR);
    assert.deepEqual(datas(a.answers), ["10.0.0.1"], "ties go to the address");
  }
  const shard3 = await answer(
    query("leader.db.3.shard.attr.discover"),
    lookup,
  );
  assert.deepEqual(datas(shard3.answers), ["10.0.0.3"]);
  const unknown = await answer(query("leader.nope.service.discover"), lookup);
  assert.equal(rcode(unknown), NXDOMAIN);
  const critical = fakeLookup([
    instance("db", "10.0.0.2:5432", { health: "critical" }),
  ]);
  const none = await answer(query("leader.db.service.discover"), critical);
  assert.equal(rcode(none), NOERROR);
  assert.deepEqual(none.answers, []);
});

// ---------------------------------------------------------------------------
// What one client can do to the server

/** A query header: id 0x0102, RD, the opcode, and the four section counts as given. */
function header(opcode: number, counts: number[]): Uint8Array {
  const out = new Uint8Array(12);
  out[0] = 0x01;
  out[1] = 0x02;
  out[2] = (opcode << 3) | 0x01;
  counts.forEach((count, i) => {
    out[4 + 2 * i] = count >> 8;
    out[5 + 2 * i] = count & 0xff;
  });
  return out;
}

/** A header-only answer to the query `bytes`: its id, QR, its opcode and RD, the rcode. */
function headerOnly(bytes: Uint8Array, code: number): number[] {
  return [
    bytes[0],
    bytes[1],
    0x80 | (bytes[2] & 0x79),
    code,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ];
}

/**
 * A query of `count` questions, each named by a compression pointer to the
 * name of the one before: reading them all follows count²/2 pointers.
 */
function pointerChain(count: number): Uint8Array {
  const out = new Uint8Array(12 + 5 + 6 * (count - 1));
  out.set(header(0, [count]));
  out.set([0, 0, 1, 0, 1], 12); // the root, A, IN
  for (let i = 1, at = 17, previous = 12; i < count; i++, at += 6) {
    out.set([0xc0 | (previous >> 8), previous & 0xff, 0, 1, 0, 1], at);
    previous = at;
  }
  return out;
}

/** A query for the name of these raw labels, A IN, with RD. */
function rawQuery(labels: Uint8Array[]): Uint8Array {
  const name = labels.flatMap((label) => [label.length, ...label]);
  return new Uint8Array([...header(0, [1]), ...name, 0, 0, 1, 0, 1]);
}

Deno.test("startDns: the header's counts are checked before the body is read", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const record = {
      type: "A",
      name: "cache.service.discover",
      data: "10.0.0.1",
    };
    const opt = { type: "OPT", name: ".", udpPayloadSize: 1232 };
    const question = encodeQuery("cache.service.discover").subarray(12);
    const malformed: Record<string, Uint8Array> = {
      "200 questions": encodeQuery("cache.service.discover", "A", {
        questions: Array(200).fill({
          type: "A",
          name: "cache.service.discover",
        }),
      }),
      "2,700 questions, each named by a pointer to the one before":
        pointerChain(2700),
      "a name that points to itself": new Uint8Array([
        ...header(0, [1]),
        0xc0,
        12,
        0,
        1,
        0,
        1,
      ]),
      "QDCOUNT 65535 and one question": new Uint8Array([
        ...header(0, [65535]),
        ...question,
      ]),
      "an answer record": encodeQuery("cache.service.discover", "A", {
        answers: [record],
      }),
      "an authority record": encodeQuery("cache.service.discover", "A", {
        authorities: [record],
      }),
      "two OPT records": encodeQuery("cache.service.discover", "A", {
        additionals: [opt, opt],
      }),
    };
    // Each is answered by a header alone: FORMERR, or NOTIMP for an opcode
    // other than QUERY, whatever the body holds.
    for (const opcode of [1, 2, 4, 5, 6, 15]) {
      malformed[`opcode ${opcode}`] = header(opcode, [1, 3, 2, 1]);
    }
    const seen: Record<string, string> = {};
    const expected: Record<string, string> = {};
    for (const [what, bytes] of Object.entries(malformed)) {
      const reply = await udp(port, bytes);
      const code = what.startsWith("opcode") ? NOTIMP : FORMERR;
      expected[what] = `header only, rcode ${code}`;
      seen[what] = !reply ? "no answer" : reply.length === 12 &&
          headerOnly(bytes, code).every((byte, i) => reply[i] === byte)
        ? `header only, rcode ${code}`
        : `${reply.length} bytes, rcode ${reply[3] & 0xf}`;
    }
    assert.deepEqual(seen, expected);
    const after = decode(
      await udp(port, encodeQuery("cache.service.discover")),
    );
    assert.deepEqual(datas(after.answers), ["10.0.0.1"]);
  });
});

Deno.test("startDns: the root name with EDNS0 is REFUSED like any name outside the zone", async () => {
  await withServer(async (port) => {
    const opt = { type: "OPT", name: ".", udpPayloadSize: 1232 };
    for (const type of ["NS", "A", "SOA"]) {
      const reply = decode(
        await udp(port, encodeQuery(".", type, { additionals: [opt] })),
      );
      assert.equal(rcode(reply), REFUSED, type);
      assert.deepEqual(reply.questions, [{ name: ".", type, class: "IN" }]);
      assert.equal(reply.additionals?.[0]?.type, "OPT");
    }
  });
});

Deno.test("startDns: a label with a dot or bytes that are not UTF-8 names nothing, and the question comes back as sent", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const text = (label: string) => new TextEncoder().encode(label);
    const cases: [string, Uint8Array[], number][] = [
      ["a dot in a label", [text("cache.service"), text("discover")], NXDOMAIN],
      [
        "a byte that is not UTF-8, in the zone",
        [new Uint8Array([0xff]), text("service"), text("Discover")],
        NXDOMAIN,
      ],
      [
        "a byte that is not UTF-8, out of the zone",
        [text("cache"), text("service"), new Uint8Array([0x64, 0xff])],
        REFUSED,
      ],
    ];
    for (const [what, labels, code] of cases) {
      const bytes = rawQuery(labels);
      const reply = await udp(port, bytes);
      assert.ok(reply, what);
      assert.equal(reply[3] & 0xf, code, what);
      assert.deepEqual([reply[4], reply[5], reply[6], reply[7]], [0, 1, 0, 0]);
      assert.deepEqual(
        [...reply.subarray(12, bytes.length)],
        [...bytes.subarray(12)],
        `${what}: the question is echoed byte for byte`,
      );
    }
  });
});

Deno.test("answer: only ASCII letters fold: a name with the Kelvin sign is not the zone's", async () => {
  const lookup = fakeLookup([
    instance("cache", "10.0.0.1:1", { attrs: { key: "v" } }),
  ]);
  const kube = { domain: "kube" };
  for (const name of ["cache.service.\u212Aube", "\u212Aube"]) {
    const a = await answer(query(name), lookup, kube);
    assert.equal(rcode(a), REFUSED, name);
  }
  const attr = await answer(query("cache.v.\u212Aey.attr.discover"), lookup);
  assert.equal(rcode(attr), NXDOMAIN);
});

Deno.test("answer: the DO bit of the query is copied into the OPT record, and nothing is signed", async () => {
  const lookup = fakeLookup(CACHE);
  for (const flags of [0, DO]) {
    for (const name of ["cache.service.discover", "nope.service.discover"]) {
      const a = await answer(
        query(name, "A", {
          additionals: [{
            type: "OPT",
            name: ".",
            udpPayloadSize: 1232,
            ednsVersion: 0,
            flags,
          }],
        }),
        lookup,
      );
      const opt = a.additionals!.find((r) => r.type === "OPT");
      assert.equal((opt?.flags ?? 0) & DO, flags, `${name} ${flags}`);
      assert.ok(
        [...a.answers!, ...a.authorities!].every((r) =>
          !["RRSIG", "NSEC", "NSEC3"].includes(r.type)
        ),
      );
    }
  }
});

Deno.test("answer: zone transfers and the mailbox types are not implemented", async () => {
  const lookup = fakeLookup(CACHE);
  for (const type of ["AXFR", "IXFR", "UNKNOWN_253", "UNKNOWN_254"]) {
    for (const name of ["discover", "cache.service.discover"]) {
      const a = await answer(query(name, type), lookup);
      assert.equal(rcode(a), NOTIMP, `${name} ${type}`);
      assert.deepEqual(a.answers, [], `${name} ${type}`);
    }
  }
});

Deno.test("encodeWithin: the records read depend on the room, not on how many are given", () => {
  const name = "big.service.discover";
  let reads = 0;
  const response = (count: number): DnsMessage => ({
    type: "response",
    id: 1,
    flags: AA,
    questions: [{ type: "A", name }],
    answers: Array.from({ length: count }, (_, i) => ({
      type: "A" as const,
      name,
      get data() {
        reads++;
        return `10.${i >> 16}.${(i >> 8) & 0xff}.${i & 0xff}`;
      },
    })),
  });
  const many = response(60_000);
  const cut = dnsPacket.decode(Buffer.from(encodeWithin(many, 512)));
  // A 512-byte answer holds at most 41 records: the cut reads a few times
  // that many, whatever the service holds.
  assert.ok(reads < 1_000, `${reads} record reads for 512 bytes`);
  assert.equal(cut.flag_tc, true);
  assert.ok(cut.answers!.length > 20, `${cut.answers!.length} answers`);
  reads = 0;
  const tcp = dnsPacket.decode(Buffer.from(encodeWithin(many, 65535)));
  // And a 65535-byte one at most 5,460.
  assert.ok(reads < 40_000, `${reads} record reads for 65535 bytes`);
  assert.equal(tcp.flag_tc, true);
  // More records than a header can count (65535) still make an answer.
  const most = dnsPacket.decode(
    Buffer.from(encodeWithin(response(70_000), 512)),
  );
  assert.equal(most.flag_tc, true);
  assert.ok(most.answers!.length > 20);
});

/** Reads `count` framed TCP answers from `conn`; fewer if it ends or `ms` pass. */
async function readFrames(
  conn: Deno.Conn,
  count: number,
  ms: number,
): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  let buffered = new Uint8Array(0);
  const chunk = new Uint8Array(65536);
  const deadline = Date.now() + ms;
  while (out.length < count) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(chunk).catch(() => null),
      new Promise<"late">((resolve) =>
        timer = setTimeout(() => resolve("late"), left)
      ),
    ]);
    clearTimeout(timer);
    if (n === null || n === "late") break;
    const next = new Uint8Array(buffered.length + n);
    next.set(buffered);
    next.set(chunk.subarray(0, n), buffered.length);
    buffered = next;
    while (buffered.length >= 2) {
      const length = (buffered[0] << 8) | buffered[1];
      if (buffered.length < 2 + length) break;
      out.push(buffered.slice(2, 2 + length));
      buffered = buffered.slice(2 + length);
    }
  }
  return out;
}

/** Resolves once the server closed `conn` (a read ends or fails), or rejects after `ms`. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<void> {
  const chunk = new Uint8Array(65536);
  const deadline = Date.now() + ms;
  while (true) {
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(`the connection is still open after ${ms} ms`);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(chunk).catch(() => null),
      new Promise<"late">((resolve) =>
        timer = setTimeout(() => resolve("late"), left)
      ),
    ]);
    clearTimeout(timer);
    if (n === null) return;
    if (n === "late") {
      throw new Error(`the connection is still open after ${ms} ms`);
    }
  }
}

Deno.test("startDns TCP: pipelined queries are all answered, in order, past the read-ahead bounds", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    // 200 queries (more than TCP_MAX_PIPELINED), then 4 padded to 30,000
    // bytes each with EDNS0 padding (more than TCP_READ_AHEAD_BYTES), all in
    // one write.
    const padded = {
      additionals: [{
        type: "OPT",
        name: ".",
        udpPayloadSize: 1232,
        options: [{ code: 12, length: 30_000 }],
      }],
    };
    const count = 204;
    const queries = Array.from({ length: count }, (_, id) => [
      ...frame(
        encodeQuery("cache.service.discover", "A", {
          id,
          ...(id < 200 ? {} : padded),
        }),
      ),
    ]);
    const answers = await tcp(port, new Uint8Array(queries.flat()), count);
    assert.equal(answers.length, count);
    assert.deepEqual(
      answers.map((a) => decode(a).id),
      Array.from({ length: count }, (_, id) => id),
    );
    assert.ok(answers.every((a) => datas(decode(a).answers)[0] === "10.0.0.1"));
  });
});

Deno.test("startDns TCP: a client that half-closes after its query still gets the answer", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(frame(encodeQuery("cache.service.discover")));
      await conn.closeWrite();
      const answers = await readFrames(conn, 1, 10_000);
      assert.equal(answers.length, 1);
      assert.deepEqual(datas(decode(answers[0]).answers), ["10.0.0.1"]);
      // Then the server closes its side too.
      await closedWithin(conn, 5000);
    } finally {
      conn.close();
    }
  }, (backend) => {
    // Every lookup takes 300 ms: the client's FIN comes in before the answer.
    const views = new Views(backend, { idleMs: 50 });
    const acquire = views.acquire.bind(views);
    views.acquire = async (scope) => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return acquire(scope);
    };
    return views;
  });
});

Deno.test("startDns TCP: a connection is closed TCP_IDLE_MS after its last answer, whether it trickles bytes or never reads", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    for (let i = 0; i < 1000; i++) {
      await put(backend, "big", `10.3.${i >> 8}.${i & 0xff}:80`);
    }
    // Generous: the server closes both TCP_IDLE_MS after its last answer;
    // the client that never reads first fills the socket buffers.
    const bound = TCP_IDLE_MS + 30_000;

    // One byte every 500 ms of a query that never ends.
    const trickle = async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(frame(encodeQuery("cache.service.discover")));
        assert.equal((await readFrames(conn, 1, 5000)).length, 1);
        let sending = true;
        const bytes = (async () => {
          await conn.write(new Uint8Array([0xff, 0xff]));
          while (sending) {
            await new Promise((resolve) => setTimeout(resolve, 500));
            if (sending) await conn.write(new Uint8Array([0])).catch(() => {});
          }
        })();
        try {
          await closedWithin(conn, bound);
        } finally {
          sending = false;
          await bytes.catch(() => {});
        }
      } finally {
        conn.close();
      }
    };
    // Queries for 16 KB answers, four every 50 ms, never reading one.
    const deaf = async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const four = new Uint8Array(
        Array.from({ length: 4 }, () => [
          ...frame(encodeQuery("big.service.discover")),
        ]).flat(),
      );
      const deadline = Date.now() + bound;
      try {
        while (true) {
          if (Date.now() > deadline) {
            throw new Error(
              `a client that never reads is served after ${bound} ms`,
            );
          }
          let timer: ReturnType<typeof setTimeout> | undefined;
          const wrote = await Promise.race([
            conn.write(four).then(() => true, () => false),
            new Promise<true>((resolve) =>
              timer = setTimeout(() => resolve(true), deadline - Date.now() + 1)
            ),
          ]);
          clearTimeout(timer);
          if (!wrote) return; // closed by the server
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      } finally {
        conn.close();
      }
    };
    await Promise.all([trickle(), deaf()]);
    // Others are still served.
    const [after] = await tcp(
      port,
      frame(encodeQuery("cache.service.discover")),
      1,
    );
    assert.deepEqual(datas(decode(after).answers), ["10.0.0.1"]);
  });
});

Deno.test("startDns TCP: at most TCP_MAX_CONNECTIONS; a new one closes the one idle the longest", async () => {
  await withServer(async (port, backend) => {
    await put(backend, "cache", "10.0.0.1:6379");
    const conns: Deno.Conn[] = [];
    try {
      for (let i = 0; i < TCP_MAX_CONNECTIONS; i++) {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      }
      // The second one asks something: the first is now the one idle the longest.
      await conns[1].write(frame(encodeQuery("cache.service.discover")));
      assert.equal((await readFrames(conns[1], 1, 5000)).length, 1);
      const [answer] = await tcp(
        port,
        frame(encodeQuery("cache.service.discover")),
        1,
      );
      assert.deepEqual(datas(decode(answer).answers), ["10.0.0.1"]);
      // The server makes room at once; 5 s is well below TCP_IDLE_MS.
      await closedWithin(conns[0], 5000);
      await conns[1].write(frame(encodeQuery("cache.service.discover")));
      assert.equal((await readFrames(conns[1], 1, 5000)).length, 1);
    } finally {
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
    }
  });
});

/**
 * Views whose lookups wait until `open()`: one instance of `cache` then;
 * `acquired()` counts the lookups begun.
 */
function gatedViews() {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => open = resolve);
  let acquired = 0;
  const views: DnsViews = {
    acquire: async () => {
      acquired++;
      await gate;
      return {
        view: {
          connected: true,
          list: () => [instance("cache", "10.0.0.1:1")],
        },
        release() {},
      };
    },
  };
  return { views, open: () => open(), acquired: () => acquired };
}

Deno.test("startDns: at most MAX_QUERIES_IN_FLIGHT queries wait for their answer; the next are SERVFAIL at once", async () => {
  const { views, open, acquired } = gatedViews();
  const dns = await startDns(views, { hostname: "127.0.0.1", port: 0 });
  const socket = dgram.createSocket("udp4");
  const codes = new Map<number, number>();
  socket.on("message", (message: Buffer) => {
    codes.set(message.readUInt16BE(0), message[3] & 0xf);
  });
  const send = (id: number) =>
    new Promise<void>((resolve, reject) =>
      socket.send(
        encodeQuery("cache.service.discover", "A", { id }),
        dns.port,
        "127.0.0.1",
        (error) => error ? reject(error) : resolve(),
      )
    );
  try {
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    // In batches, each waited for: no datagram is lost to a full buffer.
    for (let id = 0; id < MAX_QUERIES_IN_FLIGHT; id++) {
      await send(id);
      if (id % 64 === 63 || id === MAX_QUERIES_IN_FLIGHT - 1) {
        await until(() => acquired() === id + 1, `${id + 1} lookups waiting`);
      }
    }
    const extra = Array.from(
      { length: 8 },
      (_, i) => MAX_QUERIES_IN_FLIGHT + i,
    );
    for (const id of extra) await send(id);
    await until(
      () => extra.every((id) => codes.get(id) === SERVFAIL),
      "SERVFAIL for the queries past the bound",
    );
    assert.equal(acquired(), MAX_QUERIES_IN_FLIGHT);
    assert.equal(codes.size, extra.length);
    open();
    // The waiting queries are answered (a burst the test's socket may not
    // hold whole), and the next query is answered again.
    const next = MAX_QUERIES_IN_FLIGHT + extra.length;
    await until(async () => {
      await send(next);
      await new Promise((resolve) => setTimeout(resolve, 50));
      return codes.get(next) === NOERROR;
    }, "a query answered after the lookups went on");
    assert.ok(codes.size > extra.length + 1, `${codes.size} answers`);
    assert.ok(
      [...codes].every(([id, code]) =>
        code === (extra.includes(id) ? SERVFAIL : NOERROR)
      ),
    );
  } finally {
    open();
    socket.close();
    await dns.close();
  }
});

Deno.test("startDns TCP: when every connection is being answered, a new one is closed", async () => {
  const { views, open, acquired } = gatedViews();
  const dns = await startDns(views, { hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < TCP_MAX_CONNECTIONS; i++) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: dns.port,
      });
      conns.push(conn);
      await conn.write(frame(encodeQuery("cache.service.discover")));
    }
    await until(
      () => acquired() === TCP_MAX_CONNECTIONS,
      "every connection's query being answered",
    );
    const extra = await Deno.connect({ hostname: "127.0.0.1", port: dns.port });
    conns.push(extra);
    await closedWithin(extra, 5000);
    open();
    for (const conn of conns.slice(0, -1)) {
      assert.equal((await readFrames(conn, 1, 10_000)).length, 1);
    }
  } finally {
    open();
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // closed
      }
    }
    await dns.close();
  }
});
