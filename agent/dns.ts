// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's DNS interface: an authoritative server for one zone
 * (`discover.` by default) that answers from the agent's live views, over
 * UDP and TCP on the same port. It is not a recursor: a name outside the
 * zone is `REFUSED`.
 *
 * ## Names
 *
 * With the zone `discover.`:
 *
 * - `SERVICE.service.discover.`: `A` and `AAAA` records, one per passing
 *   instance registered with an IP address. When every passing instance was
 *   registered with a hostname, the name is an alias instead: one `CNAME` to
 *   the hostname of one of them (picked at random for each answer), since a
 *   name with a `CNAME` can hold no other record. When some passing
 *   instances have IP addresses, the hostname ones are left out of `A` and
 *   `AAAA` answers (they are in the `SRV` answers).
 * - `_SERVICE._tcp.service.discover.` and `_SERVICE._udp.service.discover.`:
 *   `SRV` records (RFC 2782), one per passing instance, all with priority 1
 *   and weight 1 (every instance is as good as another: a client picks one
 *   at random, as the weight rules of RFC 2782 say for equal weights). The
 *   registry does not know the transport, so both names answer the same.
 *   The target of an instance registered with an IP address is its address
 *   name (below), with its `A` or `AAAA` record in the additional section;
 *   the target of an instance registered with a hostname is that hostname.
 * - `leader.SERVICE.service.discover.` (and
 *   `leader.SERVICE.VALUE.KEY.attr.discover.`): `A`, `AAAA` or `CNAME` of the
 *   set's leader alone: its passing instance with the lowest `created`,
 *   ties broken by address (`protocol/leader.ts`), as every agent and client
 *   derives it. A service whose name starts with `leader.` is therefore
 *   reached by DNS through its `SRV` name only.
 * - `ADDRESS.addr.discover.`: the address named by the label, for `SRV`
 *   targets: an IPv4 address with `-` for its dots (`10-0-0-1`), or an IPv6
 *   address as its eight groups of four hex digits joined by `-`
 *   (`2001-0db8-0000-0000-0000-0000-0000-0001`). Any address is answered,
 *   registered or not: the name holds it.
 * - `SERVICE.VALUE.KEY.attr.discover.` and
 *   `_SERVICE._tcp.VALUE.KEY.attr.discover.`: the same, for the instances
 *   whose attribute `KEY` is `VALUE` (`cache.b.zone.attr.discover.` for
 *   `zone=b`), read like the rest of DNS from the most specific label on
 *   the left: the service, among the instances with `b` as their `zone`.
 *
 * These names are read without ambiguity from the right: the label before
 * the zone says which kind of name it is (`service`, `attr`, `addr`); under
 * `attr` the next label is the key and the one after it the value, always
 * one label each; every label left of them is the service name, which may
 * therefore hold dots, as `SERVICE_NAME_PATTERN` allows (`eu.cache.service.`,
 * `eu.cache.b.zone.attr.`). The form `_SERVICE._tcp` is told apart from a
 * service name by its leading `_`: a service name starts with a letter or a
 * digit. Since a key and a value are one label each, a key or a value that
 * holds a dot (`ATTR_KEY_PATTERN` allows dots and `:` in keys), or that a
 * DNS label cannot hold, cannot be filtered on by DNS: use the client's
 * filter. Keys and values made of letters, digits, `-` and `_` are
 * hostname labels every resolver (glibc, c-ares, musl) passes as they are.
 *
 * DNS names are case-insensitive (RFC 4343): a service is looked up by its
 * name as the query spells it, then in lower case; the zone, the kinds and
 * attribute keys and values are compared without regard to ASCII case. Only
 * ASCII letters fold: `\u212A` (the Kelvin sign) is not `k`. A service name
 * that holds `..` or ends with `.` has no DNS name. A name with a label that
 * holds a `.` or bytes that are not UTF-8 is no name of the zone
 * (`NXDOMAIN` under it, `REFUSED` elsewhere), and its question is echoed
 * byte for byte.
 *
 * Only passing instances are answered, in a random order for every answer.
 * Answers carry the TTL given (0 by default: the view changes at any time,
 * so resolvers should not cache).
 *
 * ## Negative answers
 *
 * A service name (with its filter) that no instance has, whatever its
 * health, does not exist: `NXDOMAIN`. A name that exists but holds no
 * record of the type asked (`AAAA` of IPv4-only instances, or every
 * instance critical) is `NOERROR` with no answer. Both carry the zone's
 * `SOA` record in the authority section, whose TTL and minimum are the TTL
 * given (RFC 2308). The names `service.`, `_tcp.service.`, `_udp.service.`,
 * `addr.`, `attr.` and the one and two labels under `attr.` exist with no
 * record; the apex has only its `SOA`.
 *
 * An agent that cannot read a service (its store is unreachable and it
 * holds nothing of the service, or it watches as many services as it may)
 * answers `SERVFAIL`: a resolver then tries another server.
 *
 * ## Not supported
 *
 * - Opcodes other than QUERY (NOTIFY, UPDATE...): `NOTIMP`, by the header
 *   alone.
 * - Zone transfers (`AXFR`, `IXFR`) and `MAILB`, `MAILA`: `NOTIMP`.
 * - Classes other than `IN`: `REFUSED`.
 * - More or fewer than one question, any answer or authority record, or
 *   more than one additional record (so no TSIG or SIG(0) beside `OPT`):
 *   `FORMERR`, by the header alone, before the body is read.
 * - `NS` records: the apex has its `SOA` only; forward the zone to the
 *   agent rather than delegate it.
 * - DNSSEC: nothing is signed; the `DO` bit of a query comes back in its
 *   answer (RFC 3225), with no signature.
 * - EDNS0 options (cookies, padding, client subnet...) are read past and
 *   never answered; EDNS versions other than 0 get `BADVERS`. Every answer
 *   to a query with an `OPT` record has one, advertising
 *   {@linkcode MAX_UDP_PAYLOAD}.
 *
 * ## Transport and bounds
 *
 * A UDP answer larger than 512 bytes, or than the size the query advertises
 * with EDNS0 (at most {@linkcode MAX_UDP_PAYLOAD}), first loses its
 * additional records, then as many answers as it must, with the `TC` flag
 * set: the client retries over TCP, where answers are complete (up to the
 * 65535 bytes a TCP message can hold, and `TC` past them). A packet that
 * cannot be decoded is answered `FORMERR` with its header alone when its
 * header can be read, and ignored otherwise; a packet that is itself a
 * response is ignored. The work of an answer is bounded by its room: no
 * more records are encoded than the room could hold.
 *
 * At most {@linkcode MAX_QUERIES_IN_FLIGHT} queries are answered at once,
 * UDP and TCP together; the next are `SERVFAIL` at once (a resolver then
 * tries again or another server).
 *
 * Over TCP (RFC 7766), the queries of a connection are answered one at a
 * time, in order, pipelined or not; a client may send its FIN after its
 * queries and still gets every answer. The server reads at most
 * {@linkcode TCP_MAX_PIPELINED} queries and {@linkcode TCP_READ_AHEAD_BYTES}
 * ahead of their answers, and none while its client does not read the
 * answers written: a connection holds a few hundred KiB at the most. A
 * connection with no query to answer for {@linkcode TCP_IDLE_MS} is closed,
 * however slowly bytes of an unfinished one trickle in. At most
 * {@linkcode TCP_MAX_CONNECTIONS} are open: a new one then closes the one
 * idle the longest.
 *
 * @module
 */

import dgram from "node:dgram";
import net from "node:net";
import { Buffer } from "node:buffer";
import dnsPacket, { type Packet } from "dns-packet";
import { leaderOf } from "../protocol/leader.ts";
import type { HealthFilter, Instance } from "../protocol/types.ts";
import {
  ATTR_KEY_PATTERN,
  SERVICE_NAME_PATTERN,
} from "../protocol/validate.ts";
import { QUIET_SUMMARY_MS, QuietLog } from "../backends/quiet_log.ts";
import type { Logger } from "./log.ts";

export type {
  Attrs,
  Health,
  HealthFilter,
  Instance,
} from "../protocol/types.ts";
export type { LogFields, Logger } from "./log.ts";

/** Default zone of the DNS server. */
export const DEFAULT_DNS_DOMAIN = "discover.";
/** Default TTL of the DNS answers, in seconds. */
export const DEFAULT_DNS_TTL = 0;
/**
 * Largest UDP answer, whatever size a query advertises with EDNS0: the size
 * that avoids IP fragmentation on common paths (DNS Flag Day 2020).
 */
export const MAX_UDP_PAYLOAD = 1232;
/** Largest UDP answer to a query without EDNS0 (RFC 1035). */
export const MIN_UDP_PAYLOAD = 512;
/**
 * A TCP connection is closed when it has had no query to answer for this
 * long, in milliseconds: from its opening or its last answer, whatever
 * bytes of an unfinished query trickle in, and whether or not its client
 * reads the answers.
 */
export const TCP_IDLE_MS = 10_000;
/**
 * Most TCP connections open at once. At the bound, a new connection closes
 * the one whose last query or answer is the oldest (not one being
 * answered); when every one is being answered, the new one is closed.
 */
export const TCP_MAX_CONNECTIONS = 128;
/**
 * Most queries read from one TCP connection ahead of their answers (and at
 * most {@linkcode TCP_READ_AHEAD_BYTES} of them): past it, the connection is
 * not read until an answer is written, nor while the client does not read
 * the answers written.
 */
export const TCP_MAX_PIPELINED = 32;
/** Most bytes of queries read from one TCP connection ahead of their answers. */
export const TCP_READ_AHEAD_BYTES = 65_536;
/**
 * Most queries being answered at once, over UDP and TCP together; a query
 * past it is answered `SERVFAIL` at once.
 */
export const MAX_QUERIES_IN_FLIGHT = 512;

/**
 * Most services whose failed reads a DNS server remembers until they are
 * read again (see {@linkcode DnsOptions.log}); services past it are logged
 * as the others, and not waited for.
 */
export const MAX_FAILED_SERVICES = 1024;

/** The DO bit of an `OPT` record's flags (RFC 3225). */
const DNSSEC_OK = 0x8000;
const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

/**
 * Reads the instances of one service, whatever their health (the server
 * keeps the passing ones). An empty list means the service has no instance.
 */
export type DnsLookup = (service: string) => Promise<readonly Instance[]>;

/**
 * A DNS message, as `npm:dns-packet` decodes and encodes it: the fields
 * the server reads and writes.
 */
export interface DnsMessage {
  /** Whether it is a query or a response. */
  type?: "query" | "response";
  /** Identifier, copied from the query to its response. */
  id?: number;
  /** Header flags and codes (opcode, AA, TC, RD, RA, rcode...), without QR. */
  flags?: number;
  /** The questions (exactly one in a query the server answers). */
  questions?: DnsQuestion[];
  /** The answer section. */
  answers?: DnsRecord[];
  /** The authority section. */
  authorities?: DnsRecord[];
  /** The additional section (with the EDNS0 `OPT` record). */
  additionals?: DnsRecord[];
}

/** A question: a name and a record type (`A`, `AAAA`, `SRV`, `ANY`...). */
export interface DnsQuestion {
  /** The record type. */
  type: string;
  /** The name, without its trailing dot. */
  name: string;
  /** The class (`IN`). */
  class?: string;
}

/** A resource record (or the EDNS0 `OPT` pseudo-record). */
export interface DnsRecord {
  /** The record type. */
  type: string;
  /** The owner name. */
  name: string;
  /** Time to live, in seconds. */
  ttl?: number;
  /** The class (`IN`). */
  class?: string;
  /** The data: an address, a name, or the fields of `SRV` and `SOA`. */
  data?: unknown;
  /** `OPT` only: the largest UDP answer the sender takes. */
  udpPayloadSize?: number;
  /** `OPT` only: the EDNS version. */
  ednsVersion?: number;
  /** `OPT` only: the upper 8 bits of the response code. */
  extendedRcode?: number;
  /** `OPT` only: its flags (DO). */
  flags?: number;
  /** `OPT` only: whether DNSSEC records are wanted. */
  flag_do?: boolean;
  /** `OPT` only: its options. */
  options?: unknown[];
}

/**
 * What the DNS server reads of the agent's views (`Views` in `views.ts`
 * is one): a hold on the view of one service.
 */
export interface DnsViews {
  /**
   * Holds the view of a service, once it has its state.
   *
   * @param service The service.
   * @returns The hold; released after each read.
   */
  acquire(service: string): Promise<DnsHold>;
}

/** A hold on the view of one service; see {@linkcode DnsViews}. */
export interface DnsHold {
  /** The view. */
  readonly view: {
    /** Whether the view follows its store (else it holds its last state). */
    readonly connected: boolean;
    /** The instances of a service, by health. */
    list(service: string, filter?: { health?: HealthFilter }): Instance[];
  };
  /** Lets the view go. */
  release(): void;
}

/** Options of {@linkcode answer}. */
export interface AnswerOptions {
  /**
   * The zone, with or without its trailing dot.
   *
   * @default {"discover."}
   */
  domain?: string;
  /**
   * TTL of every record, in seconds.
   *
   * @default {0}
   */
  ttl?: number;
}

/** Options of {@linkcode startDns}. */
export interface DnsOptions extends AnswerOptions {
  /** Address to listen on (UDP and TCP). */
  hostname: string;
  /** Port to listen on (UDP and TCP); 0 picks a free one. */
  port: number;
  /**
   * Where failures go. Queries it cannot answer are a few lines of each
   * kind, then a count (see `QuietLog`) at most every 30 s. The rest of the
   * count is written once every service whose read failed (up to
   * {@linkcode MAX_FAILED_SERVICES} of them) is read again, or once a read
   * succeeds 30 s after the last failure, or when the server stops.
   * Queries refused past {@linkcode MAX_QUERIES_IN_FLIGHT} are not logged.
   *
   * @default {nothing is logged}
   */
  log?: Logger;
}

/** A running DNS server; see {@linkcode startDns}. */
export interface DnsServer {
  /** The address it listens on. */
  readonly hostname: string;
  /** The port it listens on, UDP and TCP. */
  readonly port: number;
  /** Stops listening and closes the TCP connections. */
  close(): Promise<void>;
}

/**
 * Checks a zone name and returns it in lower case without its trailing dot.
 *
 * @example Usage
 * ```ts
 * import { normalizeDomain } from "./dns.ts";
 * console.log(normalizeDomain("Discover.")); // discover
 * ```
 *
 * @param value The zone, e.g. `discover.` or `svc.example.`.
 * @returns The zone in lower case without its trailing dot.
 * @throws {TypeError} When it is not a DNS name of labels of 1 to 63
 *   characters of `A-Z a-z 0-9 - _`.
 */
export function normalizeDomain(value: string): string {
  const bare = value.endsWith(".") ? value.slice(0, -1) : value;
  if (
    bare.length === 0 || bare.length > 200 ||
    !bare.split(".").every((l) => /^[A-Za-z0-9_-]{1,63}$/.test(l))
  ) {
    throw new TypeError(
      `'domain' must be a DNS name of dot-separated labels of 1 to 63 characters of A-Z a-z 0-9 - _ (at most 200 characters, not the root): current value is ${
        JSON.stringify(value)
      }`,
    );
  }
  return bare.toLowerCase();
}

function checkTtl(ttl: number): number {
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 2_147_483_647) {
    throw new TypeError(
      `'ttl' must be an integer number of seconds from 0 to 2147483647: current value is ${ttl}`,
    );
  }
  return ttl;
}

// ---------------------------------------------------------------------------
// Addresses

type Host =
  | { kind: "A" | "AAAA"; ip: string; label: string }
  | { kind: "name"; name: string };

/** The host of an instance address, as DNS sees it. */
function hostOf(addr: string): Host | undefined {
  const colon = addr.lastIndexOf(":");
  if (colon <= 0) return undefined;
  const host = addr.slice(0, colon);
  if (host.startsWith("[") && host.endsWith("]")) {
    const groups = expandIpv6(host.slice(1, -1));
    return groups && {
      kind: "AAAA",
      ip: compactIpv6(groups),
      label: groups.join("-"),
    };
  }
  if (/^[0-9.]+$/.test(host)) {
    const parts = host.split(".");
    if (parts.length !== 4 || !parts.every(isByte)) return undefined;
    return { kind: "A", ip: host, label: parts.join("-") };
  }
  return { kind: "name", name: host.replace(/\.$/, "").toLowerCase() };
}

function isByte(part: string): boolean {
  return /^[0-9]{1,3}$/.test(part) && Number(part) <= 255;
}

/** The eight 4-digit groups of an IPv6 address (hex pieces only). */
function expandIpv6(ip: string): string[] | undefined {
  const halves = ip.toLowerCase().split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] === "" ? [] : halves[0].split(":");
  const tail = halves.length === 2 && halves[1] !== ""
    ? halves[1].split(":")
    : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...Array(missing).fill("0"), ...tail];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return undefined;
  return groups.map((g) => g.padStart(4, "0"));
}

/** The RFC 5952 form of an IPv6 address, from its eight groups. */
function compactIpv6(groups: string[]): string {
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

/** The address an `addr.` label names. */
function addressOfLabel(label: string): Host | undefined {
  const v4 = label.split("-");
  if (v4.length === 4 && v4.every(isByte)) {
    return { kind: "A", ip: v4.map(Number).join("."), label };
  }
  const v6 = label.toLowerCase().split("-");
  if (v6.length === 8 && v6.every((g) => /^[0-9a-f]{1,4}$/.test(g))) {
    return { kind: "AAAA", ip: compactIpv6(v6), label };
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Answers

/** What a query resolved to. */
interface Resolved {
  rcode: number;
  answers: DnsRecord[];
  additionals: DnsRecord[];
}

/** The zone a query is answered in. */
interface Zone {
  domain: string;
  ttl: number;
  lookup: DnsLookup;
}

/**
 * Query types the server does not implement (`NOTIMP`): zone transfers
 * (`AXFR`, `IXFR`; the zone is made from the live views and has no copy to
 * transfer) and the obsolete `MAILB` and `MAILA` (253, 254).
 */
const UNSUPPORTED_TYPES = new Set([
  "AXFR",
  "IXFR",
  "UNKNOWN_253",
  "UNKNOWN_254",
]);

const NODATA: Resolved = { rcode: RCODE.NOERROR, answers: [], additionals: [] };
const NXDOMAIN: Resolved = {
  rcode: RCODE.NXDOMAIN,
  answers: [],
  additionals: [],
};

/**
 * The names under the zone, by their last label: each resolves the labels
 * before it. A new kind of name (e.g. `leader.`) is one more entry.
 */
const NAMES: Record<
  string,
  (labels: string[], question: DnsQuestion, zone: Zone) => Promise<Resolved>
> = {
  service: resolveService,
  attr: resolveAttr,
  addr: (labels, question, zone) =>
    Promise.resolve(resolveAddr(labels, question, zone)),
};

/**
 * Answers one decoded DNS query from the instances `lookup` reads. The
 * answer is complete: {@linkcode encodeWithin} truncates it for UDP.
 *
 * @example Usage
 * ```ts
 * import { answer } from "./dns.ts";
 * const response = await answer({
 *   id: 7,
 *   questions: [{ type: "A", name: "cache.service.discover" }],
 * }, () =>
 *   Promise.resolve([{
 *     id: "cache/10.0.0.1:6379",
 *     service: "cache",
 *     addr: "10.0.0.1:6379",
 *     attrs: {},
 *     revision: 1,
 *     registeredAt: 0,
 *     created: 1,
 *     health: "passing",
 *   }]));
 * console.log(response.answers?.[0]); // { type: "A", name: ..., data: "10.0.0.1", ... }
 * ```
 *
 * @param query The query, as `dns-packet` decodes it.
 * @param lookup Reads the instances of a service.
 * @param options The zone and the TTL.
 * @returns The response.
 */
export async function answer(
  query: DnsMessage,
  lookup: DnsLookup,
  options: AnswerOptions = {},
): Promise<DnsMessage> {
  const zone: Zone = {
    domain: normalizeDomain(options.domain ?? DEFAULT_DNS_DOMAIN),
    ttl: checkTtl(options.ttl ?? DEFAULT_DNS_TTL),
    lookup,
  };
  const questions = query.questions ?? [];
  const opt = (query.additionals ?? []).find((a) => a.type === "OPT");
  const reply = (
    rcode: number,
    resolved: Partial<Resolved> = {},
  ): DnsMessage => {
    const negative = rcode === RCODE.NXDOMAIN ||
      (rcode === RCODE.NOERROR && !resolved.answers?.length);
    const additionals = [...(resolved.additionals ?? [])];
    if (opt) additionals.push(optRecord(rcode, opt));
    const authoritative = rcode === RCODE.NOERROR || rcode === RCODE.NXDOMAIN;
    return {
      type: "response",
      id: query.id ?? 0,
      flags: (authoritative ? dnsPacket.AUTHORITATIVE_ANSWER : 0) |
        ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
        (((query.flags ?? 0) >> 11 & 0xf) << 11) | (rcode & 0xf),
      questions,
      answers: resolved.answers ?? [],
      authorities: negative && questions.length === 1 ? [soa(zone)] : [],
      additionals,
    };
  };
  if (((query.flags ?? 0) >> 11 & 0xf) !== 0) return reply(RCODE.NOTIMP);
  const opts = (query.additionals ?? []).filter((a) => a.type === "OPT");
  if (opts.length > 1 || (opt && opt.name !== ".")) {
    return reply(RCODE.FORMERR); // RFC 6891 6.1.1
  }
  if (opt && opt.ednsVersion !== 0) return reply(16); // BADVERS (RFC 6891)
  if (questions.length !== 1) return reply(RCODE.FORMERR);
  const [question] = questions;
  if (question.class !== undefined && question.class !== "IN") {
    return reply(RCODE.REFUSED);
  }
  if (UNSUPPORTED_TYPES.has(question.type)) return reply(RCODE.NOTIMP);
  const name = question.name.replace(/\.$/, "");
  const lower = asciiLower(name);
  if (lower === zone.domain) {
    const wanted = wants(question, "SOA");
    return reply(RCODE.NOERROR, { answers: wanted ? [soa(zone)] : [] });
  }
  if (!lower.endsWith("." + zone.domain)) return reply(RCODE.REFUSED);
  const labels = name.slice(0, -zone.domain.length - 1).split(".");
  if (labels.some((label) => label === "")) return reply(RCODE.NXDOMAIN);
  const kind = asciiLower(labels.pop()!);
  const resolve = Object.hasOwn(NAMES, kind) ? NAMES[kind] : undefined;
  if (!resolve) return reply(RCODE.NXDOMAIN);
  const resolved = await resolve(labels, question, zone);
  return reply(resolved.rcode, resolved);
}

function soa(zone: Zone): DnsRecord {
  return {
    type: "SOA",
    name: zone.domain,
    ttl: zone.ttl,
    class: "IN",
    data: {
      mname: `ns.${zone.domain}`,
      rname: `hostmaster.${zone.domain}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: zone.ttl,
    },
  };
}

function record(
  zone: Zone,
  name: string,
  type: "A" | "AAAA" | "CNAME",
  data: string,
): DnsRecord {
  return { type, name, ttl: zone.ttl, class: "IN", data };
}

function wants(question: DnsQuestion, type: string): boolean {
  const asked: string = question.type;
  return asked === type || asked === "ANY";
}

function resolveAddr(
  labels: string[],
  question: DnsQuestion,
  zone: Zone,
): Resolved {
  if (labels.length === 0) return NODATA;
  const host = labels.length === 1 ? addressOfLabel(labels[0]) : undefined;
  if (!host || host.kind === "name") return NXDOMAIN;
  if (!wants(question, host.kind)) return NODATA;
  return {
    rcode: RCODE.NOERROR,
    answers: [record(zone, question.name, host.kind, host.ip)],
    additionals: [],
  };
}

function resolveService(
  labels: string[],
  question: DnsQuestion,
  zone: Zone,
): Promise<Resolved> {
  return resolveSet(labels, undefined, question, zone);
}

async function resolveAttr(
  labels: string[],
  question: DnsQuestion,
  zone: Zone,
): Promise<Resolved> {
  // attr.DOMAIN, KEY.attr.DOMAIN and VALUE.KEY.attr.DOMAIN hold no record
  // but have names below them.
  if (labels.length <= 2) return NODATA;
  const filter = {
    key: asciiLower(labels.at(-1)!),
    value: asciiLower(labels.at(-2)!),
  };
  if (!ATTR_KEY_PATTERN.test(filter.key)) return NXDOMAIN;
  return await resolveSet(labels.slice(0, -2), filter, question, zone);
}

/** Answers `SERVICE` or `_SERVICE._tcp` (the labels), with a filter or none. */
async function resolveSet(
  labels: string[],
  filter: { key: string; value: string } | undefined,
  question: DnsQuestion,
  zone: Zone,
): Promise<Resolved> {
  if (labels.length === 0) return NODATA; // service.DOMAIN
  const proto = asciiLower(labels.at(-1)!);
  const srv = labels[0].startsWith("_") &&
    (proto === "_tcp" || proto === "_udp");
  if (srv && labels.length === 1) return NODATA; // _tcp.service.DOMAIN
  // leader.SERVICE: the set's leader alone.
  const leader = !srv && labels.length > 1 &&
    asciiLower(labels[0]) === "leader";
  const service = srv
    ? [labels[0].slice(1), ...labels.slice(1, -1)].join(".")
    : labels.slice(leader ? 1 : 0).join(".");
  if (!SERVICE_NAME_PATTERN.test(service)) return NXDOMAIN;

  const all = await lookupService(zone.lookup, service);
  const named = filter ? all.filter((i) => hasAttr(i, filter)) : all;
  if (named.length === 0) return NXDOMAIN;
  const candidates = named.filter((i) => i.health === "passing");
  const first = leader ? leaderOf(candidates) : undefined;
  const chosen = first ? [first] : leader ? [] : candidates;
  const passing = shuffle(chosen);
  const hosts = passing.flatMap((i) => {
    const host = hostOf(i.addr);
    return host
      ? [{ host, port: Number(i.addr.slice(i.addr.lastIndexOf(":") + 1)) }]
      : [];
  });
  return srv
    ? srvAnswer(hosts, question, zone)
    : addressAnswer(hosts.map((h) => h.host), question, zone);
}

async function lookupService(
  lookup: DnsLookup,
  service: string,
): Promise<readonly Instance[]> {
  const spelled = await lookup(service);
  const lower = service.toLowerCase();
  if (spelled.length > 0 || lower === service) return spelled;
  return await lookup(lower);
}

function hasAttr(
  instance: Instance,
  filter: { key: string; value: string },
): boolean {
  return Object.entries(instance.attrs).some(([key, value]) =>
    asciiLower(key) === filter.key && asciiLower(value) === filter.value
  );
}

function asciiLower(text: string): string {
  // ASCII text: `toLowerCase` folds A-Z alone, and fast. Else A-Z alone
  // (RFC 4343: the Kelvin sign is not `k`).
  return NON_ASCII.test(text)
    ? text.replace(/[A-Z]/g, (c) => c.toLowerCase())
    : text.toLowerCase();
}

const NON_ASCII = /[\u0080-\uffff]/;

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

function addressAnswer(
  hosts: Host[],
  question: DnsQuestion,
  zone: Zone,
): Resolved {
  const ips = hosts.flatMap((h) => h.kind === "name" ? [] : [h]);
  const alias = hosts.find((h) => h.kind === "name");
  if (ips.length === 0 && alias?.kind === "name") {
    return {
      rcode: RCODE.NOERROR,
      answers: [record(zone, question.name, "CNAME", alias.name)],
      additionals: [],
    };
  }
  const seen = new Set<string>();
  const answers: DnsRecord[] = [];
  for (const host of ips) {
    if (!wants(question, host.kind)) continue;
    if (seen.has(host.ip)) continue; // one record per address, whatever the port
    seen.add(host.ip);
    answers.push(record(zone, question.name, host.kind, host.ip));
  }
  return { rcode: RCODE.NOERROR, answers, additionals: [] };
}

function srvAnswer(
  hosts: { host: Host; port: number }[],
  question: DnsQuestion,
  zone: Zone,
): Resolved {
  if (!wants(question, "SRV")) return NODATA;
  const answers: DnsRecord[] = [];
  const additionals = new Map<string, DnsRecord>();
  for (const { host, port } of hosts) {
    const target = host.kind === "name"
      ? host.name
      : `${host.label}.addr.${zone.domain}`;
    answers.push({
      type: "SRV",
      name: question.name,
      ttl: zone.ttl,
      class: "IN",
      data: { priority: 1, weight: 1, port, target },
    });
    if (host.kind !== "name" && !additionals.has(target)) {
      additionals.set(target, record(zone, target, host.kind, host.ip));
    }
  }
  return {
    rcode: RCODE.NOERROR,
    answers,
    additionals: [...additionals.values()],
  };
}

// ---------------------------------------------------------------------------
// Encoding

/**
 * Encodes a response in at most `maxBytes` bytes: whole when it fits, else
 * without its additional records (but its `OPT`), else with as many answers
 * as fit and the `TC` flag set.
 *
 * @example Usage
 * ```ts
 * import { encodeWithin } from "./dns.ts";
 * const bytes = encodeWithin({
 *   type: "response",
 *   id: 1,
 *   questions: [{ type: "A", name: "x.service.discover" }],
 *   answers: Array.from({ length: 100 }, (_, i) => ({
 *     type: "A" as const,
 *     name: "x.service.discover",
 *     data: `10.0.0.${i}`,
 *   })),
 * }, 512);
 * console.log(bytes.length <= 512); // true
 * ```
 *
 * @param response The response.
 * @param maxBytes The most bytes it may take (512 to 65535).
 * @returns The encoded response.
 */
export function encodeWithin(
  response: DnsMessage,
  maxBytes: number,
): Uint8Array {
  const encode = (message: DnsMessage) =>
    compressOwners(dnsPacket.encode(message as Packet));
  const answers = response.answers ?? [];
  const additionals = response.additionals ?? [];
  const authorities = response.authorities ?? [];
  // A record takes 12 bytes at the least (a name pointer, its type, class,
  // TTL and data length), after a 12-byte header: no more than `most`
  // records can fit, so no more are ever encoded, however many are given.
  const most = Math.floor((maxBytes - 12) / 12);
  if (answers.length + authorities.length + additionals.length <= most) {
    const whole = encode(response);
    if (whole.length <= maxBytes) return whole;
  }
  const opt = additionals.filter((a) => a.type === "OPT");
  const lean = { ...response, additionals: opt };
  if (answers.length + authorities.length + opt.length <= most) {
    const withoutExtra = encode(lean);
    if (withoutExtra.length <= maxBytes) return withoutExtra;
  }
  const cut = (n: number) =>
    encode({
      ...lean,
      flags: (response.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
      answers: answers.slice(0, n),
      authorities: [],
    });
  // Encoded once with as many answers as could fit, the answers' ends say
  // how many do, with the OPT record after them.
  const tried = Math.min(answers.length, most);
  const trial = cut(tried);
  const ends = recordEnds(trial); // the question's, then each record's
  const optBytes = trial.length - ends[tried];
  let fit = 0;
  while (fit < tried && ends[fit + 1] + optBytes <= maxBytes) fit++;
  return cut(fit);
}

/**
 * Where the question ends, then where each record ends, in a message the
 * server encoded (one question; names are labels or a pointer to the
 * question, as {@linkcode compressOwners} writes them).
 */
function recordEnds(message: Uint8Array): number[] {
  const view = new DataView(
    message.buffer,
    message.byteOffset,
    message.byteLength,
  );
  const nameEnd = (at: number) => {
    while (message[at] !== 0) {
      if (message[at] >= 0xc0) return at + 2;
      at += message[at] + 1;
    }
    return at + 1;
  };
  const records = view.getUint16(6) + view.getUint16(8) + view.getUint16(10);
  let at = nameEnd(12) + 4;
  const ends = [at];
  for (let i = 0; i < records; i++) {
    const end = nameEnd(at);
    at = end + 10 + view.getUint16(end + 8);
    ends.push(at);
  }
  return ends;
}

/**
 * Writes the owner name of every record that is the question's name as a
 * pointer to the question (RFC 1035 4.1.4): 2 bytes instead of the whole
 * name, so that a UDP answer holds twice as many `A` records. The message
 * is one `dns-packet` encoded, with no compression of its own.
 */
function compressOwners(message: Uint8Array): Uint8Array {
  const view = new DataView(
    message.buffer,
    message.byteOffset,
    message.byteLength,
  );
  if (view.getUint16(4) !== 1) return message;
  const records = view.getUint16(6) + view.getUint16(8) + view.getUint16(10);
  const nameEnd = (at: number) => {
    while (message[at] !== 0) at += message[at] + 1;
    return at + 1;
  };
  const questionEnd = nameEnd(12);
  const questionLength = questionEnd - 12;
  // A pointer takes 2 bytes: the root (1 byte) is left as it is.
  if (questionLength <= 2) return message;
  // Never longer than the message: one buffer, written in one pass.
  const out = new Uint8Array(message.length);
  let written = questionEnd + 4;
  out.set(message.subarray(0, written));
  let at = written;
  for (let i = 0; i < records; i++) {
    const end = nameEnd(at);
    let same = end - at === questionLength;
    for (let j = 0; same && j < questionLength; j++) {
      same = message[at + j] === message[12 + j];
    }
    if (same) {
      out[written++] = 0xc0;
      out[written++] = 12;
    } else {
      out.set(message.subarray(at, end), written);
      written += end - at;
    }
    const length = view.getUint16(end + 8);
    out.set(message.subarray(end, end + 10 + length), written);
    written += 10 + length;
    at = end + 10 + length;
  }
  return out.subarray(0, written);
}

/** A header-only answer to a query: its id, QR, its opcode and RD, the rcode. */
function headerOnly(bytes: Uint8Array, rcode: number): Uint8Array {
  const out = new Uint8Array(12);
  out[0] = bytes[0];
  out[1] = bytes[1];
  out[2] = 0x80 | (bytes[2] & 0x79); // QR, the opcode and RD of the query
  out[3] = rcode;
  return out;
}

/**
 * What a query's header says before its body is read: `NOTIMP` for an
 * opcode other than QUERY; `FORMERR` unless it counts one question, no
 * answer or authority record and at most one additional record (the `OPT`);
 * else `undefined`. The body is read only then, in time bounded by one name
 * and one record, whatever its size.
 */
function headerCheck(bytes: Uint8Array): number | undefined {
  if (((bytes[2] >> 3) & 0xf) !== 0) return RCODE.NOTIMP;
  const count = (at: number) => (bytes[at] << 8) | bytes[at + 1];
  if (count(4) !== 1 || count(6) !== 0 || count(8) !== 0 || count(10) > 1) {
    return RCODE.FORMERR;
  }
  return undefined;
}

/**
 * The labels of a query's question name, as bytes, and whether they are
 * plain (printable ASCII without a `.`: their text, joined by dots, is the
 * name); `undefined` when the name holds a pointer (nothing is before it to
 * point to) or runs out of the packet.
 */
function questionLabels(
  bytes: Uint8Array,
): { labels: Uint8Array[]; plain: boolean } | undefined {
  const labels: Uint8Array[] = [];
  let plain = true;
  for (let at = 12; at < bytes.length;) {
    const length = bytes[at];
    if (length === 0) return { labels, plain };
    if (length > 63 || at + 1 + length > bytes.length) return undefined;
    for (let i = at + 1; i <= at + length; i++) {
      const byte = bytes[i];
      if (byte < 0x21 || byte > 0x7e || byte === 0x2e) plain = false;
    }
    labels.push(bytes.subarray(at + 1, at + 1 + length));
    at += 1 + length;
  }
  return undefined;
}

const utf8 = new TextEncoder();

/**
 * Whether a decoded name is the name of these labels: not when a label
 * holds a `.` or bytes that are not UTF-8, which its text cannot say.
 */
function spells(labels: Uint8Array[], name: string): boolean {
  const texts = name === "." ? [] : name.replace(/\.$/, "").split(".");
  return texts.length === labels.length &&
    texts.every((text, i) => {
      const bytes = utf8.encode(text);
      return bytes.length === labels[i].length &&
        bytes.every((byte, j) => byte === labels[i][j]);
    });
}

/** Whether the name of these labels is under the zone (ASCII case aside). */
function underZone(labels: Uint8Array[], domain: string): boolean {
  const zone = domain.split(".").map((label) => utf8.encode(label));
  const tail = labels.slice(labels.length - zone.length);
  return labels.length > zone.length &&
    tail.every((label, i) =>
      label.length === zone[i].length &&
      label.every((byte, j) =>
        (byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte) === zone[i][j]
      )
    );
}

/** `message` with the wire bytes `name` as its question's name. */
function withQuestionName(message: Uint8Array, name: Uint8Array): Uint8Array {
  let end = 12;
  while (message[end] !== 0) end += message[end] + 1;
  end++;
  const out = new Uint8Array(message.length - (end - 12) + name.length);
  out.set(message.subarray(0, 12));
  out.set(name, 12);
  out.set(message.subarray(end), 12 + name.length);
  return out;
}

/** The largest UDP answer to a query. */
function udpLimit(query: DnsMessage): number {
  const opt = (query.additionals ?? []).find((a) => a.type === "OPT");
  if (!opt || opt.type !== "OPT") return MIN_UDP_PAYLOAD;
  return Math.min(
    MAX_UDP_PAYLOAD,
    Math.max(MIN_UDP_PAYLOAD, opt.udpPayloadSize ?? 0),
  );
}

// ---------------------------------------------------------------------------
// Server

/**
 * Reads a service's instances from the agent's views: holds its scope for
 * the read (the scope then stays watched for the views' idle time, so the
 * next query finds it warm). A view that cannot reach its store serves its
 * last state; when that is empty, the read fails (the server answers
 * `SERVFAIL`, not `NXDOMAIN`: the service is not known not to exist).
 *
 * @example Usage
 * ```ts
 * import { MemoryBackend } from "../backends/memory.ts";
 * import { Views } from "./views.ts";
 * import { viewsLookup } from "./dns.ts";
 * const views = new Views(new MemoryBackend(), { idleMs: 0 });
 * await views.open();
 * const lookup = viewsLookup(views);
 * console.log((await lookup("cache")).length); // 0
 * await views.close();
 * ```
 *
 * @param views The agent's views.
 * @returns The lookup.
 */
export function viewsLookup(views: DnsViews): DnsLookup {
  return async (service) => {
    const hold = await views.acquire(service);
    try {
      const instances = hold.view.list(service, { health: "any" });
      if (instances.length === 0 && !hold.view.connected) {
        // Not known to have no instance: SERVFAIL rather than NXDOMAIN.
        throw new Error(
          `the store is unreachable and the view of '${service}' is empty`,
        );
      }
      return instances;
    } finally {
      hold.release();
    }
  };
}

/**
 * Starts a DNS server over the agent's views, on UDP and TCP on one port.
 * Needs `--allow-net` for the host it listens on.
 *
 * @example Usage
 * ```ts ignore
 * import { MemoryBackend } from "../backends/memory.ts";
 * import { Views } from "./views.ts";
 * import { startDns } from "./dns.ts";
 * const views = new Views(new MemoryBackend());
 * await views.open();
 * const dns = await startDns(views, { hostname: "127.0.0.1", port: 0 });
 * console.log(dns.port); // e.g. 40123: dig @127.0.0.1 -p 40123 cache.service.discover
 * await dns.close();
 * await views.close();
 * ```
 *
 * @param views The agent's views.
 * @param options Where to listen, the zone, the TTL and the logger.
 * @returns The running server.
 */
export async function startDns(
  views: DnsViews,
  options: DnsOptions,
): Promise<DnsServer> {
  const known = ["hostname", "port", "domain", "ttl", "log"];
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(
        `'${key}' is not a known DNS option; allowed: ${known.join(", ")}`,
      );
    }
  }
  const answerOptions: AnswerOptions = {
    domain: normalizeDomain(options.domain ?? DEFAULT_DNS_DOMAIN),
    ttl: checkTtl(options.ttl ?? DEFAULT_DNS_TTL),
  };
  const log = options.log;
  // While the store cannot be read, every query for a service the agent
  // holds nothing of fails: the first lines of each kind say so, then a
  // count (see `QuietLog`). The rest of the count is written once every
  // service whose read failed is read again, or once a read succeeds
  // QUIET_SUMMARY_MS after the last failure (a service never asked for
  // again holds it back no longer), or when the server stops.
  const failures = log && new QuietLog(log);
  const unread = new Set<string>();
  let failedAt: number | undefined;
  const read = viewsLookup(views);
  const lookup: DnsLookup = async (service) => {
    let instances: readonly Instance[];
    try {
      instances = await read(service);
    } catch (error) {
      failedAt = Date.now();
      if (unread.size < MAX_FAILED_SERVICES) unread.add(service);
      throw error;
    }
    if (failedAt !== undefined) {
      unread.delete(service);
      if (unread.size === 0 || Date.now() - failedAt >= QUIET_SUMMARY_MS) {
        unread.clear();
        failedAt = undefined;
        failures?.settle();
      }
    }
    return instances;
  };
  /** Logs a query not answered: the kind of error makes the kind of line. */
  const fails = (name: string, message: string, error: unknown) => {
    failures?.warn(
      `${message} (${error instanceof Error ? error.name : "error"})`,
      { name, error },
    );
  };

  const domain = answerOptions.domain!;
  let inFlight = 0;

  const respond = async (
    bytes: Uint8Array,
    transport: "udp" | "tcp",
  ): Promise<Uint8Array | undefined> => {
    if (bytes.length < 12 || (bytes[2] & 0x80) !== 0) return undefined;
    const checked = headerCheck(bytes);
    if (checked !== undefined) return headerOnly(bytes, checked);
    const name = questionLabels(bytes);
    let decoded: DnsMessage;
    try {
      if (!name) throw new Error("a pointer in the question");
      decoded = dnsPacket.decode(Buffer.from(bytes)) as DnsMessage;
    } catch {
      return headerOnly(bytes, RCODE.FORMERR);
    }
    const head = bytes.slice(0, 3);
    // What the answer reads of the query, and nothing the query held more.
    const query: DnsMessage = {
      id: decoded.id,
      flags: decoded.flags,
      questions: decoded.questions!.map(({ type, name, class: c }) => ({
        type,
        name,
        class: c,
      })),
      additionals: (decoded.additionals ?? []).map((
        { type, name, udpPayloadSize, ednsVersion, flags },
      ) => ({ type, name, udpPayloadSize, ednsVersion, flags })),
    };
    const [question] = query.questions!;
    // A name its text cannot say (a label with a dot, or bytes that are not
    // UTF-8) is no name of the zone: a stand-in name gets its answer, and
    // the question goes back as it came.
    let asked: Uint8Array | undefined;
    const { labels, plain } = name!;
    if (!plain && !spells(labels, question.name)) {
      asked = bytes.slice(
        12,
        13 + labels.reduce((n, l) => n + 1 + l.length, 0),
      );
      question.name = underZone(labels, domain) ? `-.${domain}` : ".";
    }
    let response: DnsMessage;
    if (inFlight >= MAX_QUERIES_IN_FLIGHT) {
      response = failure(query);
    } else {
      inFlight++;
      try {
        response = await answer(query, lookup, answerOptions);
      } catch (error) {
        fails(question.name, "dns: cannot answer", error);
        response = failure(query);
      } finally {
        inFlight--;
      }
    }
    const limit = transport === "tcp" ? 65535 : udpLimit(query);
    try {
      if (!asked) return encodeWithin(response, limit);
      const standIn = question.name === "." ? 1 : question.name.length + 2;
      return withQuestionName(
        encodeWithin(response, limit - asked.length + standIn),
        asked,
      );
    } catch (error) {
      fails(question.name, "dns: cannot encode the answer", error);
      return headerOnly(head, RCODE.SERVFAIL);
    }
  };

  const { tcp, udp, port } = await listen(options.hostname, options.port);

  udp.on("message", (message: Buffer, remote: dgram.RemoteInfo) => {
    respond(message, "udp").then((out) => {
      if (out) udp.send(out, remote.port, remote.address);
    }).catch((error) => log?.debug("dns: udp", { error }));
  });
  udp.on("error", (error) => log?.warn("dns: udp socket", { error }));

  // The open connections, the one active the longest ago first.
  const connections = new Map<net.Socket, { answering: boolean }>();
  const touch = (socket: net.Socket, answering: boolean) => {
    connections.delete(socket);
    connections.set(socket, { answering });
  };
  tcp.on("connection", (socket: net.Socket) => {
    if (connections.size >= TCP_MAX_CONNECTIONS) {
      const idlest = [...connections].find(([, c]) => !c.answering)?.[0];
      if (!idlest) {
        socket.destroy();
        return;
      }
      idlest.destroy();
      connections.delete(idlest);
    }
    touch(socket, false);
    const framer = new Framer();
    const inbox: Buffer[] = [];
    let inboxBytes = 0;
    let unread: Buffer | undefined;
    let ended = false;
    let pumping = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => socket.destroy(), TCP_IDLE_MS);
    };
    // Frames what was received, up to the bounds; reads on only below them.
    const frame = () => {
      while (
        unread && inbox.length < TCP_MAX_PIPELINED &&
        inboxBytes < TCP_READ_AHEAD_BYTES
      ) {
        const { used, message } = framer.read(unread);
        unread = used < unread.length ? unread.subarray(used) : undefined;
        if (message) {
          inbox.push(message);
          inboxBytes += message.length;
        }
      }
      if (unread) socket.pause();
      else socket.resume();
    };
    // Answers the queries one at a time, in order.
    const pump = async () => {
      if (pumping) return;
      pumping = true;
      try {
        for (let message; !socket.destroyed && (message = inbox.shift());) {
          inboxBytes -= message.length;
          frame();
          clearTimeout(timer);
          touch(socket, true);
          const out = await respond(message, "tcp");
          if (socket.destroyed) break;
          touch(socket, false);
          idle();
          if (!out) continue;
          const framed = Buffer.allocUnsafe(2 + out.length);
          framed.writeUInt16BE(out.length, 0);
          framed.set(out, 2);
          if (!socket.write(framed)) await drained(socket);
        }
        if (ended && !socket.destroyed) socket.end();
      } finally {
        pumping = false;
      }
    };
    idle();
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      clearTimeout(timer);
      connections.delete(socket);
    });
    socket.on("end", () => {
      ended = true;
      pump().catch((error) => log?.debug("dns: tcp", { error }));
    });
    socket.on("data", (chunk: Buffer) => {
      unread = unread ? Buffer.concat([unread, chunk]) : chunk;
      frame();
      pump().catch((error) => log?.debug("dns: tcp", { error }));
    });
  });
  tcp.on("error", (error) => log?.warn("dns: tcp server", { error }));

  let closing: Promise<void> | undefined;
  return {
    hostname: options.hostname,
    port,
    close() {
      closing ??= (async () => {
        failures?.settle();
        for (const socket of connections.keys()) socket.destroy();
        await Promise.all([
          new Promise<void>((resolve) => udp.close(() => resolve())),
          new Promise<void>((resolve) => tcp.close(() => resolve())),
        ]);
      })();
      return closing;
    },
  };
}

/** The `SERVFAIL` answer to a query. */
function failure(query: DnsMessage): DnsMessage {
  const edns = (query.additionals ?? []).find((a) => a.type === "OPT");
  return {
    type: "response",
    id: query.id,
    flags: ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
      RCODE.SERVFAIL,
    questions: query.questions,
    additionals: edns ? [optRecord(RCODE.SERVFAIL, edns)] : [],
  };
}

/**
 * The `OPT` record of an answer to a query that had one (RFC 6891 6.1.1),
 * with the query's DO bit (RFC 3225).
 */
function optRecord(rcode: number, asked: DnsRecord): DnsRecord {
  return {
    type: "OPT",
    name: ".",
    udpPayloadSize: MAX_UDP_PAYLOAD,
    extendedRcode: rcode >> 4,
    ednsVersion: 0,
    flags: (asked.flags ?? 0) & DNSSEC_OK,
    options: [],
  };
}

/**
 * Splits a TCP stream into its messages, each after its length in 2 bytes
 * (RFC 1035 4.2.2), however the bytes are cut: a message is copied once,
 * into a buffer of its length, when its length is known.
 */
class Framer {
  #high = -1; // the first byte of a length whose second is still to come
  #message: Buffer | undefined;
  #filled = 0;

  /**
   * Reads `chunk` up to the end of one message.
   *
   * @param chunk Bytes received.
   * @returns How many bytes were read, and the message when it ended.
   */
  read(chunk: Buffer): { used: number; message?: Buffer } {
    let at = 0;
    if (!this.#message) {
      if (this.#high < 0 && chunk.length === 1) {
        this.#high = chunk[0];
        return { used: 1 };
      }
      const length = this.#high < 0
        ? chunk.readUInt16BE(0)
        : (this.#high << 8) | chunk[0];
      at = this.#high < 0 ? 2 : 1;
      this.#high = -1;
      this.#message = Buffer.allocUnsafe(length);
      this.#filled = 0;
    }
    const message = this.#message;
    const take = Math.min(message.length - this.#filled, chunk.length - at);
    chunk.copy(message, this.#filled, at, at + take);
    this.#filled += take;
    if (this.#filled < message.length) return { used: at + take };
    this.#message = undefined;
    return { used: at + take, message };
  }
}

/** Resolves when `socket` can be written again, or is closed. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}

/** Binds TCP, then UDP on the same port (trying again when 0 picked a port UDP holds). */
async function listen(
  hostname: string,
  port: number,
): Promise<{ tcp: net.Server; udp: dgram.Socket; port: number }> {
  for (let attempt = 1;; attempt++) {
    // Half-open: a client that sends its queries then its FIN still gets
    // the answers; the server closes its side after the last one.
    const tcp = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen({ host: hostname, port }, () => {
        tcp.off("error", reject);
        resolve();
      });
    });
    const bound = (tcp.address() as net.AddressInfo).port;
    const udp = dgram.createSocket(hostname.includes(":") ? "udp6" : "udp4");
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind({ address: hostname, port: bound }, () => {
          udp.off("error", reject);
          resolve();
        });
      });
      return { tcp, udp, port: bound };
    } catch (error) {
      try {
        udp.close();
      } catch {
        // never bound
      }
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      if (port !== 0 || attempt >= 10) {
        throw new Error(
          `cannot listen for DNS on UDP ${hostname}:${bound}: ${
            (error as Error).message
          }`,
        );
      }
    }
  }
}
