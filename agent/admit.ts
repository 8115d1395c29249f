// Copyright the discover authors. BSD-3-Clause license.

/**
 * Admission at the agent's edge: which names the agent answers to. Runs
 * first for every HTTP request, the WebSocket upgrade included.
 *
 * DNS rebinding: a page at `http://rebind.attacker.test:1111/` whose name
 * the attacker's DNS first points at the attacker's server, then at
 * `127.0.0.1`, reaches a local agent as a same-origin page: its requests
 * carry `Host: rebind.attacker.test:1111` and a matching `Origin`, so the
 * Origin check alone lets it in. A browser always sends the name it
 * resolved in `Host`, so the agent accepts a request only when `Host` is
 * one of its own names:
 *
 * - an IP address (`127.0.0.1:1111`, `[::1]:1111`): nothing to rebind;
 * - `localhost` and names under it (`app.localhost`): RFC 6761 reserves
 *   them for loopback, public DNS never delegates them and browsers
 *   resolve them to loopback themselves, so no attacker can point them
 *   elsewhere;
 * - names allowed with `--allow-host` (`startAgent({ allowHosts })`), which
 *   also lists the agent's listen and advertise hosts when they are names.
 *
 * Names compare case-insensitively, a trailing dot ignored, with any port.
 * Other names get `403`; a request without `Host` (HTTP/1.0 clients,
 * HTTP/2 without TLS) or with a malformed one gets `400`: the agent cannot
 * tell which name it was reached by. Browsers always send `Host`.
 *
 * @module
 */

/** Options of {@linkcode admit}. */
export interface AdmitOptions {
  /**
   * Names the agent answers to besides IP addresses and `localhost`, from
   * {@linkcode parseAllowHosts}; `"*"`: any name.
   */
  allowHosts: readonly string[];
}

const IPV4 =
  /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;
const LABEL = "[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?";
const NAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
/** `host[:port]`: a bracketed IPv6 address or a name/IPv4 address. */
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[^\s:[\]@/\\?#%]+)(?::([0-9]{1,5}))?$/;

/** What a host (no port) is: an IP address, a DNS name, or neither. */
type Host = { ip: true } | { ip: false; name: string };

function ipv6(text: string): boolean {
  try {
    return new URL(`http://[${text}]/`).hostname.startsWith("[");
  } catch {
    return false;
  }
}

/** Classifies a host without port; `[v6]` only when `bracketed`. */
function classify(text: string, bracketed: boolean): Host | undefined {
  if (text.startsWith("[") && text.endsWith("]")) {
    return bracketed && ipv6(text.slice(1, -1)) ? { ip: true } : undefined;
  }
  if (!bracketed && text.includes(":")) {
    return ipv6(text) ? { ip: true } : undefined;
  }
  const name = text.toLowerCase().replace(/\.$/, "");
  if (IPV4.test(name)) return { ip: true };
  if (name.length > 253 || !NAME.test(name)) return undefined;
  return { ip: false, name };
}

/**
 * Turns `--allow-host` values into names: host names (no scheme, no port),
 * or `*` for any name. Comma-separated lists are split; IP addresses are
 * accepted and dropped, since they are always allowed.
 *
 * @example Usage
 * ```ts
 * import { parseAllowHosts } from "./admit.ts";
 * parseAllowHosts(["Discover.Example., agent.internal", "127.0.0.1"]);
 * // ["discover.example", "agent.internal"]
 * ```
 *
 * @param values The values.
 * @returns The lower-case names without trailing dot, or `["*"]` when any
 * value is `*`.
 */
export function parseAllowHosts(values: readonly string[]): string[] {
  const names = new Set<string>();
  for (const value of values.flatMap((v) => v.split(","))) {
    const text = value.trim();
    if (text === "") continue;
    if (text === "*") return ["*"];
    const host = classify(text, true) ?? classify(text, false);
    if (!host) {
      throw new TypeError(
        `'allowHosts' must hold '*', host names or IP addresses, without scheme or port: current value is '${text}'`,
      );
    }
    if (!host.ip) names.add(host.name);
  }
  return [...names];
}

/** The name in a `Host` value, or why it is refused. */
function check(
  host: string,
  allowHosts: readonly string[],
): "ok" | "malformed" | string {
  const match = HOST_PORT.exec(host);
  if (!match || (match[2] !== undefined && Number(match[2]) > 65535)) {
    return "malformed";
  }
  const parsed = classify(match[1], true);
  if (!parsed) return "malformed";
  if (parsed.ip || allowHosts.includes("*")) return "ok";
  const { name } = parsed;
  if (name === "localhost" || name.endsWith(".localhost")) return "ok";
  return allowHosts.includes(name) ? "ok" : name;
}

function refuse(status: number, text: string): Response {
  return new Response(`${text}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/**
 * Checks that a request was addressed to one of the agent's names (its
 * `Host` header, and the authority of its URL when the request line gave an
 * absolute URL). Call it before anything else reads the request.
 *
 * @example Usage
 * ```ts
 * import { admit } from "./admit.ts";
 * const request = new Request("http://rebind.attacker.test:1111/", {
 *   headers: { host: "rebind.attacker.test:1111" },
 * });
 * admit(request, { allowHosts: [] })?.status; // 403
 * ```
 *
 * @param request The request.
 * @param options The names allowed besides IP addresses and `localhost`.
 * @returns `undefined` when admitted, else the response to send: `403` for
 * a name that is not the agent's, `400` for a missing or malformed `Host`.
 */
export function admit(
  request: Request,
  options: AdmitOptions,
): Response | undefined {
  const host = request.headers.get("host");
  if (host === null) {
    return refuse(
      400,
      "bad request: no Host header; send the address or name this agent was reached by (HTTP/1.1 requires Host)",
    );
  }
  let authority: string;
  try {
    authority = new URL(request.url).host;
  } catch {
    authority = host; // a Host the URL parser refuses is malformed below
  }
  for (const value of authority === host ? [host] : [host, authority]) {
    const verdict = check(value, options.allowHosts);
    if (verdict === "ok") continue;
    if (verdict === "malformed") {
      return refuse(
        400,
        `bad request: Host '${value}' is not host[:port] (an IP address, [IPv6 address] or name)`,
      );
    }
    return refuse(
      403,
      `forbidden: '${verdict}' is not a name of this agent, and a page reached through another name may be a DNS rebinding attack; use its IP address or localhost, or start it with --allow-host ${verdict} to accept this name`,
    );
  }
  return undefined;
}
