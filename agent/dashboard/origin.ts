// Copyright the discover authors. BSD-3-Clause license.

/**
 * Which web pages may open a WebSocket to the agent. Browsers let any page
 * connect to any WebSocket URL, `ws://127.0.0.1` included, and send the
 * page's `Origin` with the upgrade: without this check a site the user
 * merely visits could register, unregister and read services through a
 * local agent (cross-site WebSocket hijacking). Non-browser clients send no
 * `Origin` and are always accepted.
 *
 * The agent's own origin is the request URL's, which comes from the `Host`
 * header: run {@linkcode originAllowed} only on requests that `../admit.ts`
 * admitted, so that `Host` is one of the agent's names. Without that, a
 * DNS-rebinding page (its name pointed at the agent) would send a matching
 * `Host` and `Origin` and pass as the dashboard.
 *
 * @module
 */

/**
 * Turns `--allow-origin` values into origins: `*`, or `http(s)://host[:port]`
 * URLs (a path is ignored). Comma-separated lists are split.
 *
 * @example Usage
 * ```ts
 * import { parseAllowOrigins } from "./origin.ts";
 * parseAllowOrigins(["http://localhost:3000/, https://a.example"]);
 * // ["http://localhost:3000", "https://a.example"]
 * ```
 *
 * @param values The values.
 * @returns The origins, or `["*"]` when any value is `*`.
 */
export function parseAllowOrigins(values: readonly string[]): string[] {
  const origins = new Set<string>();
  for (const value of values.flatMap((v) => v.split(","))) {
    const text = value.trim();
    if (text === "") continue;
    if (text === "*") return ["*"];
    let url: URL | undefined;
    try {
      url = new URL(text);
    } catch { /* reported below */ }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      throw new TypeError(
        `'allowOrigins' must hold '*' or http(s)://host[:port] URLs: current value is '${text}'`,
      );
    }
    origins.add(url.origin);
  }
  return [...origins];
}

/**
 * Whether a WebSocket upgrade may proceed: no `Origin` (not a browser), the
 * agent's own origin (its dashboard; the request URL is built from `Host`,
 * so the request must have been admitted by its `Host` first), or a listed
 * origin.
 *
 * @example Usage
 * ```ts
 * import { originAllowed } from "./origin.ts";
 * const request = new Request("http://127.0.0.1:1111/", {
 *   headers: { origin: "http://127.0.0.1:1111" },
 * });
 * originAllowed(request, []); // true
 * ```
 *
 * @param request The upgrade request.
 * @param allowed Origins from {@linkcode parseAllowOrigins}.
 * @returns Whether it is allowed.
 */
export function originAllowed(
  request: Request,
  allowed: readonly string[],
): boolean {
  const origin = request.headers.get("origin");
  if (origin === null) return true;
  if (allowed.includes("*")) return true;
  let normalized: string;
  try {
    normalized = new URL(origin).origin; // lower case, default port dropped
  } catch {
    return false; // "null" (sandboxed pages, file: URLs) and garbage
  }
  if (normalized === "null") return false;
  return normalized === new URL(request.url).origin ||
    allowed.includes(normalized);
}
