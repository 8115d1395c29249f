// Copyright the discover authors. BSD-3-Clause license.

/**
 * The default advertised host: the host's most public non-loopback
 * address, used for registrations that give only a port.
 *
 * @module
 */

/** One network address of the host, as `Deno.networkInterfaces` lists it. */
export interface HostAddress {
  /** `IPv4` or `IPv6`. */
  family: "IPv4" | "IPv6";
  /** The address, without brackets. */
  address: string;
}

function rank({ family, address }: HostAddress): number {
  if (family === "IPv4") {
    const [a, b] = address.split(".").map(Number);
    if (a === 127 || a === 0) return 0; // loopback, unspecified
    if (a === 169 && b === 254) return 1; // link-local
    if (
      a === 10 || (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127)
    ) return 4; // private, carrier-grade NAT
    return 6; // public
  }
  const lower = address.toLowerCase();
  if (lower === "::1" || lower === "::") return 0;
  if (
    lower.startsWith("fe8") || lower.startsWith("fe9") ||
    lower.startsWith("fea") || lower.startsWith("feb")
  ) return 1; // link-local
  if (lower.startsWith("fc") || lower.startsWith("fd")) return 3; // unique local
  return 5; // global
}

/**
 * Picks the most public address: public IPv4, then global IPv6, then
 * private IPv4, then unique-local IPv6; loopback and link-local never.
 *
 * @example Usage
 * ```ts
 * import { pickAdvertiseHost } from "./advertise.ts";
 * pickAdvertiseHost([
 *   { family: "IPv4", address: "127.0.0.1" },
 *   { family: "IPv4", address: "10.1.2.3" },
 * ]); // "10.1.2.3"
 * ```
 *
 * @param addresses The host's addresses.
 * @returns The chosen address, or `127.0.0.1` when there is none.
 */
export function pickAdvertiseHost(addresses: readonly HostAddress[]): string {
  let best: HostAddress | undefined;
  let bestRank = 1; // loopback (0) and link-local (1) are never chosen
  for (const candidate of addresses) {
    const r = rank(candidate);
    if (r > bestRank) [best, bestRank] = [candidate, r];
  }
  return best?.address ?? "127.0.0.1";
}

/**
 * The default advertised host of this machine (needs `--allow-sys=networkInterfaces`).
 *
 * @returns The host, or `127.0.0.1` when the interfaces cannot be read.
 */
export function defaultAdvertiseHost(): string {
  try {
    return pickAdvertiseHost(Deno.networkInterfaces());
  } catch {
    return "127.0.0.1";
  }
}

/**
 * Joins a host and a port, bracketing IPv6 hosts.
 *
 * @param host The host.
 * @param port The port.
 * @returns `host:port`.
 */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[")
    ? `[${host}]:${port}`
    : `${host}:${port}`;
}
