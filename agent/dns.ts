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
 * name as the query spells it, then in lower case; attribute keys and values
 * are compared without regard to ASCII case. A service name that holds
 * `..` or ends with `.` has no DNS name.
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
 * ## Transport
 *
 * A UDP answer larger than 512 bytes, or than the size the query advertises
 * with EDNS0 (at most {@linkcode MAX_UDP_PAYLOAD}), first loses its
 * additional records, then as many answers as it must, with the `TC` flag
 * set: the client retries over TCP, where answers are complete (up to the
 * 65535 bytes a TCP message can hold). A packet that cannot be decoded is
 * answered `FORMERR` when its header can be read, and ignored otherwise; a
 * packet that is itself a response is ignored.
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
/** A TCP connection with no query for this long is closed, in milliseconds. */
export const TCP_IDLE_MS = 10_000;

const TCP_MAX_PENDING = 32;
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
   * Where failures go.
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
    if (opt) {
      additionals.push({
        type: "OPT",
        name: ".",
        udpPayloadSize: MAX_UDP_PAYLOAD,
        extendedRcode: rcode >> 4,
        ednsVersion: 0,
        flags: 0,
        flag_do: false,
        options: [],
      });
    }
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
  if (opt && opt.ednsVersion !== 0) return reply(16); // BADVERS (RFC 6891)
  if (questions.length !== 1) return reply(RCODE.FORMERR);
  const [question] = questions;
  if (question.class !== undefined && question.class !== "IN") {
    return reply(RCODE.REFUSED);
  }
  const name = question.name.replace(/\.$/, "");
  const lower = name.toLowerCase();
  if (lower === zone.domain) {
    const wanted = wants(question, "SOA");
    return reply(RCODE.NOERROR, { answers: wanted ? [soa(zone)] : [] });
  }
  if (!lower.endsWith("." + zone.domain)) return reply(RCODE.REFUSED);
  const labels = name.slice(0, -zone.domain.length - 1).split(".");
  if (labels.some((label) => label === "")) return reply(RCODE.NXDOMAIN);
  const kind = labels.pop()!.toLowerCase();
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
    key: labels.at(-1)!.toLowerCase(),
    value: labels.at(-2)!.toLowerCase(),
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
  const proto = labels.at(-1)!.toLowerCase();
  const srv = labels[0].startsWith("_") &&
    (proto === "_tcp" || proto === "_udp");
  if (srv && labels.length === 1) return NODATA; // _tcp.service.DOMAIN
  // leader.SERVICE: the set's leader alone.
  const leader = !srv && labels.length > 1 &&
    labels[0].toLowerCase() === "leader";
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
    key.toLowerCase() === filter.key &&
    asciiLower(value) === filter.value
  );
}

function asciiLower(text: string): string {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

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
  const whole = encode(response);
  if (whole.length <= maxBytes) return whole;
  const opt = (response.additionals ?? []).filter((a) => a.type === "OPT");
  const lean = { ...response, additionals: opt };
  const withoutExtra = encode(lean);
  if (withoutExtra.length <= maxBytes) return withoutExtra;
  const answers = response.answers ?? [];
  const cut = (n: number) =>
    encode({
      ...lean,
      flags: (response.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
      answers: answers.slice(0, n),
      authorities: [],
    });
  let low = 0; // fits
  let high = answers.length; // does not fit
  while (high - low > 1) {
    const mid = (low + high) >> 1;
    if (cut(mid).length <= maxBytes) low = mid;
    else high = mid;
  }
  return cut(low);
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

/** A header-only answer to a packet that could not be decoded. */
function formErr(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(12);
  out[0] = bytes[0];
  out[1] = bytes[1];
  out[2] = 0x80 | (bytes[2] & 0x79); // QR, the opcode and RD of the query
  out[3] = RCODE.FORMERR;
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
  const lookup = viewsLookup(views);
  const log = options.log;

  const respond = async (
    bytes: Uint8Array,
    transport: "udp" | "tcp",
  ): Promise<Uint8Array | undefined> => {
    if (bytes.length < 12 || (bytes[2] & 0x80) !== 0) return undefined;
    let query: DnsMessage;
    try {
      query = dnsPacket.decode(Buffer.from(bytes)) as DnsMessage;
    } catch {
      return formErr(bytes);
    }
    let response: DnsMessage;
    try {
      response = await answer(query, lookup, answerOptions);
    } catch (error) {
      log?.warn("dns: cannot answer", {
        name: query.questions?.[0]?.name,
        error,
      });
      response = {
        type: "response",
        id: query.id,
        flags: ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
          RCODE.SERVFAIL,
        questions: query.questions,
      };
    }
    const limit = transport === "tcp" ? 65535 : udpLimit(query);
    try {
      return encodeWithin(response, limit);
    } catch (error) {
      log?.warn("dns: cannot encode the answer", { error });
      const failed = formErr(bytes);
      failed[3] = RCODE.SERVFAIL;
      return failed;
    }
  };

  const { tcp, udp, port } = await listen(options.hostname, options.port);

  udp.on("message", (message: Buffer, remote: dgram.RemoteInfo) => {
    respond(message, "udp").then((out) => {
      if (out) udp.send(out, remote.port, remote.address);
    }).catch((error) => log?.debug("dns: udp", { error }));
  });
  udp.on("error", (error) => log?.warn("dns: udp socket", { error }));

  const connections = new Set<net.Socket>();
  tcp.on("connection", (socket: net.Socket) => {
    connections.add(socket);
    let buffered = Buffer.alloc(0);
    let pending = 0;
    let chain = Promise.resolve();
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on("error", () => socket.destroy());
    socket.on("close", () => connections.delete(socket));
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const message = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        if (++pending > TCP_MAX_PENDING) {
          socket.destroy(); // a client that sends without reading
          return;
        }
        chain = chain.then(async () => {
          const out = await respond(message, "tcp");
          pending--;
          if (!out || socket.destroyed) return;
          const frame = Buffer.alloc(2 + out.length);
          frame.writeUInt16BE(out.length, 0);
          frame.set(out, 2);
          socket.write(frame);
        }).catch((error) => log?.debug("dns: tcp", { error }));
      }
    });
  });
  tcp.on("error", (error) => log?.warn("dns: tcp server", { error }));

  let closing: Promise<void> | undefined;
  return {
    hostname: options.hostname,
    port,
    close() {
      closing ??= (async () => {
        for (const socket of connections) socket.destroy();
        await Promise.all([
          new Promise<void>((resolve) => udp.close(() => resolve())),
          new Promise<void>((resolve) => tcp.close(() => resolve())),
        ]);
      })();
      return closing;
    },
  };
}

/** Binds TCP, then UDP on the same port (trying again when 0 picked a port UDP holds). */
async function listen(
  hostname: string,
  port: number,
): Promise<{ tcp: net.Server; udp: dgram.Socket; port: number }> {
  for (let attempt = 1;; attempt++) {
    const tcp = net.createServer();
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
