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
  encodeWithin,
  MAX_UDP_PAYLOAD,
  normalizeDomain,
  startDns,
  viewsLookup,
} from "./dns.ts";
import { Views } from "./views.ts";

const NOERROR = 0;
const FORMERR = 1;
const SERVFAIL = 2;
const NXDOMAIN = 3;
const NOTIMP = 4;
const REFUSED = 5;
const TC = dnsPacket.TRUNCATED_RESPONSE;
const AA = dnsPacket.AUTHORITATIVE_ANSWER;

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
) {
  const backend = new MemoryBackend();
  const all = views?.(backend) ?? new Views(backend, { idleMs: 50 });
  await all.open();
  const dns = await startDns(all, { hostname: "127.0.0.1", port: 0 });
  try {
    await fn(dns.port, backend);
  } finally {
    await dns.close();
    await all.close();
    await backend.close();
  }
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
    fail = false;
    const ok = decode(await udp(port, encodeQuery("cache.service.discover")));
    assert.deepEqual(datas(ok.answers), ["10.0.0.1"]);
  }, (backend) => {
    const views = new Views(backend, { idleMs: 50 });
    const acquire = views.acquire.bind(views);
    views.acquire = (scope) =>
      fail ? Promise.reject(new Error("store down")) : acquire(scope);
    return views;
  });
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
