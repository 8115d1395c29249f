// Copyright the discover authors. BSD-3-Clause license.

/**
 * The agent's HTTP side: every request is first admitted by its `Host`
 * (`admit.ts`: only the agent's own names, against DNS rebinding); then
 * WebSocket upgrades at `/` become sessions (browser pages only from
 * allowed origins); a plain `GET /` gets the dashboard, `/client.js` the
 * browser client, and `/healthz`, `/openrpc.json` and `/metrics`
 * (Prometheus text, `metrics.ts`) answer plain HTTP.
 * Given a certificate and its key, the agent serves `https://` and
 * `wss://` only: a plain request to its port fails its TLS handshake.
 *
 * @module
 */

import { openrpcDocument } from "../protocol/openrpc.ts";
import { CLIENT_ID_PATTERN, CLIENT_ID_RULE } from "../protocol/validate.ts";
import { admit } from "./admit.ts";
import { CLIENT_JS } from "./dashboard/_client_bundle.ts";
import { originAllowed } from "./dashboard/origin.ts";
import { DASHBOARD_HTML } from "./dashboard/page.ts";
import type { Acl } from "./acl.ts";
import { clientOwnerId } from "./owner_id.ts";
import type { Logger } from "./log.ts";
import type { Registry } from "./registry.ts";
import { Session, type SessionContext } from "./session.ts";

/** A certificate chain and its private key, PEM text. */
export interface TlsPem {
  /**
   * The agent's certificate first, then any intermediate CA certificates
   * (`-----BEGIN CERTIFICATE-----`); clients name the agent by one of its
   * subject alternative names.
   */
  cert: string;
  /** The private key of the first certificate (PKCS#8, RSA or EC). */
  key: string;
}

/**
 * Checks that the runtime's TLS library reads `tls` as a certificate chain
 * and the private key of its first certificate, as serving it would, but
 * without listening.
 *
 * @example Usage
 * ```ts ignore
 * import { checkTls } from "./server.ts";
 * const tls = checkTls({
 *   cert: await Deno.readTextFile("agent.pem"),
 *   key: await Deno.readTextFile("agent.key"),
 * });
 * ```
 *
 * @param tls The certificate chain and key.
 * @returns A copy of `tls`.
 * @throws {TypeError} Naming what is wrong, without the key's text.
 */
export function checkTls(tls: TlsPem): TlsPem {
  if (typeof tls?.cert !== "string" || typeof tls?.key !== "string") {
    throw new TypeError(
      `'tls' must be { cert, key }, both PEM text: current value has a cert of type ${typeof tls
        ?.cert} and a key of type ${typeof tls?.key}`,
    );
  }
  try {
    // Parses both and matches the key to the certificate, as serving
    // would, without listening anywhere (a client presents the same pair).
    Deno.createHttpClient({ cert: tls.cert, key: tls.key }).close();
  } catch (error) {
    throw new TypeError(
      `'tls' must hold a PEM certificate chain in 'cert' and the private key of its first certificate in 'key': ${
        (error as Error).message
      }`,
      { cause: error },
    );
  }
  return { cert: tls.cert, key: tls.key };
}

/**
 * The request as admission sees it over TLS. Browsers speak HTTP/2 there,
 * which names the host in `:authority` (the request URL's host) instead of
 * a `Host` header; that name is the one checked then. (A WebSocket
 * upgrade is HTTP/1.1, with `Host`.) Admission reads only `Host` and the
 * URL.
 */
function withAuthority(request: Request): Request {
  if (request.headers.has("host")) return request;
  return new Request(request.url, {
    headers: { host: new URL(request.url).host },
  });
}

/** Options of {@linkcode SessionServer}. */
export interface SessionServerOptions {
  /** Seconds after which a silent peer that answers no ping is dropped; it is pinged at half of this. */
  idleTimeout: number;
  /** Identifies this agent in owner ids of anonymous sessions. */
  agentId: string;
  /**
   * Most sessions from one remote address at once, so that one host
   * cannot take all of `maxSessions`.
   *
   * @default {1000}
   */
  maxSessionsPerAddress?: number;
  /**
   * Origins of other web pages that may connect (`*`: any); see
   * `dashboard/origin.ts`.
   */
  allowOrigins: readonly string[];
  /**
   * Names the agent answers to besides IP addresses and `localhost` (`*`:
   * any); see `admit.ts`.
   */
  allowHosts: readonly string[];
  /**
   * The certificate and key to serve `https://` and `wss://` with, checked
   * when the server is created.
   *
   * @default {none: plain http:// and ws://}
   */
  tls?: TlsPem;
}

/** The log fields of a session that names no client id: one object for all. */
const NO_FIELDS: Readonly<Record<string, never>> = Object.freeze({});

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Accepts connections and keeps the open sessions. */
export class SessionServer {
  readonly #context: SessionContext;
  readonly #registry: Registry;
  readonly #options: SessionServerOptions;
  readonly #tls: TlsPem | undefined;
  readonly #sockets = new Map<WebSocket, Session>();
  /** Open sessions by remote address. */
  readonly #perAddress = new Map<string, number>();
  #nextSession = 1;
  #closing = false;

  /**
   * Creates the server's request handler state.
   *
   * @param context What the sessions share.
   * @param options Idle timeout, agent id, admission and TLS.
   * @throws {TypeError} When `options.tls` is not a certificate chain and
   *   its key.
   */
  constructor(context: SessionContext, options: SessionServerOptions) {
    this.#tls = options.tls === undefined ? undefined : checkTls(options.tls);
    this.#context = context;
    this.#registry = context.registry;
    this.#options = options;
  }

  /**
   * The certificate and key to give `Deno.serve` (spread into its options),
   * or `undefined` for plain HTTP.
   */
  get tls(): TlsPem | undefined {
    return this.#tls;
  }

  /** Number of open sessions. */
  get sessions(): number {
    return this.#sockets.size;
  }

  /**
   * The access rules were loaded again: every session's subscriptions
   * follow what it may read now.
   *
   * @param previous The rules before.
   */
  reauthorized(previous: Acl): void {
    for (const session of this.#sockets.values()) {
      session.reauthorized(previous);
    }
  }

  /** Bytes waiting in the send queues of every open session. */
  get queuedBytes(): number {
    let bytes = 0;
    for (const session of this.#sockets.values()) bytes += session.queued;
    return bytes;
  }

  get #log(): Logger {
    return this.#context.log;
  }

  /**
   * Answers one HTTP request.
   *
   * @param request The request.
   * @returns The response.
   */
  handle = (
    request: Request,
    info?: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> => {
    // First: a request addressed to a name that is not the agent's may come
    // from a DNS-rebinding page. Once admitted, the URL's origin (built
    // from Host) is one of the agent's own, as the Origin check expects.
    const remote = (info?.remoteAddr as Deno.NetAddr | undefined)?.hostname ??
      "";
    const refused = admit(
      this.#tls ? withAuthority(request) : request,
      this.#options,
    );
    if (refused) {
      this.#log.warn(
        refused.status === 403
          ? "request refused: Host is not a name of this agent"
          : "request refused: no or malformed Host",
        {
          host: request.headers.get("host"),
          remote,
        },
      );
      return refused;
    }
    const url = new URL(request.url);
    const upgrade =
      request.headers.get("upgrade")?.toLowerCase() === "websocket";
    if (url.pathname === "/" && upgrade) {
      return this.#upgrade(request, url, remote);
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed: use GET\n", { status: 405 });
    }
    switch (url.pathname) {
      case "/":
        return new Response(DASHBOARD_HTML, {
          headers: {
            "content-type": "text/html; charset=utf-8",
            "x-frame-options": "DENY",
          },
        });
      case "/client.js":
        // Public code: any page may import it (connecting is what the
        // Origin check guards).
        return new Response(CLIENT_JS, {
          headers: {
            "content-type": "text/javascript; charset=utf-8",
            "access-control-allow-origin": "*",
          },
        });
      case "/healthz": {
        // 503 while the backend is unreachable: the agent still serves its
        // last known state, but a load balancer should prefer another one.
        const connected = this.#context.views.connected;
        return json({
          status: connected ? "ok" : "backend unreachable",
          backend: this.#context.backendName,
          connected,
          revision: this.#context.views.revision,
          epoch: this.#context.views.epoch,
          sessions: this.sessions,
          // Services watched now, in use or idle ("*" counts as one).
          watches: this.#context.views.size,
          tls: this.#tls !== undefined,
        }, connected ? 200 : 503);
      }
      case "/openrpc.json":
        return json(openrpcDocument);
      case "/metrics": {
        const metrics = this.#context.metrics;
        if (metrics === undefined) {
          return new Response("not found: /metrics (metrics are off)\n", {
            status: 404,
          });
        }
        return metrics.text().then((text) =>
          new Response(text, {
            headers: { "content-type": metrics.contentType },
          })
        );
      }
      default:
        return new Response(`not found: ${url.pathname}\n`, { status: 404 });
    }
  };

  /**
   * Closes every session with 1001 (going away), after giving the requests
   * under way up to `drainMs` to finish. Their registrations are left to
   * the backend: a restarted agent's clients re-register.
   *
   * @param drainMs Longest wait for requests under way.
   */
  async closeAll(drainMs = 2000): Promise<void> {
    this.#closing = true;
    // Flush first: requests already being handled get their responses
    // (new ones are refused with -32004 meanwhile), within a bound.
    const deadline = Date.now() + drainMs;
    while (
      Date.now() < deadline &&
      [...this.#sockets.values()].some((session) => session.inflight > 0)
    ) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    for (const [socket, session] of this.#sockets) {
      try {
        socket.close(1001, "agent shutting down");
      } catch { /* already closing */ }
      session.closed(false);
    }
    this.#sockets.clear();
    this.#perAddress.clear();
  }

  /** Every session by remote address, for the per-address cap. */
  #count(remote: string, delta: number): void {
    const n = (this.#perAddress.get(remote) ?? 0) + delta;
    if (n > 0) this.#perAddress.set(remote, n);
    else this.#perAddress.delete(remote);
  }

  #upgrade(request: Request, url: URL, remote: string): Response {
    const { limits } = this.#context;
    if (this.#closing) {
      return new Response("the agent is shutting down\n", { status: 503 });
    }
    if (this.#sockets.size >= limits.maxSessions) {
      this.#log.warn("session refused: maxSessions reached", {
        remote,
        maxSessions: limits.maxSessions,
      });
      return new Response(
        `too many sessions: this agent holds its limit of ${limits.maxSessions}; retry later or use another agent\n`,
        { status: 503, headers: { "retry-after": "1" } },
      );
    }
    const perAddress = this.#options.maxSessionsPerAddress ?? 1000;
    if ((this.#perAddress.get(remote) ?? 0) >= perAddress) {
      this.#log.warn("session refused: maxSessionsPerAddress reached", {
        remote,
        maxSessionsPerAddress: perAddress,
      });
      return new Response(
        `too many sessions from ${remote}: this agent takes at most ${perAddress} from one address; retry later\n`,
        { status: 503, headers: { "retry-after": "1" } },
      );
    }
    const clientId = url.searchParams.get("client");
    if (clientId !== null && !CLIENT_ID_PATTERN.test(clientId)) {
      return new Response(
        `bad request: 'client' must be ${CLIENT_ID_RULE}\n`,
        { status: 400 },
      );
    }
    if (request.method !== "GET") {
      return new Response("method not allowed: WebSocket upgrades use GET\n", {
        status: 405,
      });
    }
    if (!originAllowed(request, this.#options.allowOrigins)) {
      const origin = request.headers.get("origin");
      this.#log.warn("session refused: origin not allowed", {
        origin,
        remote,
      });
      return new Response(
        `forbidden: web pages from origin '${origin}' may not connect to this agent; start it with --allow-origin ${origin} to allow them\n`,
        { status: 403 },
      );
    }
    let upgraded: Deno.WebSocketUpgrade;
    try {
      upgraded = Deno.upgradeWebSocket(request, {
        idleTimeout: this.#options.idleTimeout,
      });
    } catch (error) {
      return new Response(
        `bad request: not a valid WebSocket upgrade (${
          (error as Error).message
        })\n`,
        { status: 400 },
      );
    }
    const { socket, response } = upgraded;
    const sessionId = String(this.#nextSession++);
    // Logged as its first 8 characters: the whole id acts as a credential.
    const shownClient = clientId === null
      ? NO_FIELDS
      : { client: `${clientId.slice(0, 8)}…` };
    const ownerId = clientId === null
      ? `s:${this.#options.agentId}:${sessionId}`
      : clientOwnerId(clientId);
    let session: Session | undefined;
    // Removed once it has run: a listener costs a few hundred bytes for as
    // long as the socket is open.
    socket.addEventListener("open", () => {
      session = new Session(
        this.#context,
        socket,
        this.#registry.attach(ownerId),
        sessionId,
        {
          remote,
          ...(clientId === null
            ? {}
            : { ownerFor: (name: string) => clientOwnerId(clientId, name) }),
        },
      );
      this.#sockets.set(socket, session);
      this.#count(remote, 1);
      this.#log.info("session opened", {
        session: sessionId,
        remote,
        ...shownClient,
        owner: ownerId,
      });
    }, { once: true });
    socket.addEventListener("message", (event) => session?.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (!session || !this.#sockets.delete(socket)) return;
      this.#count(remote, -1);
      // Clean: the client sent a close frame meaning "done" (1000, 1001, or
      // none, 1005). A dropped TCP connection (1006) or Deno's idle timeout
      // (1001 but not wasClean) means the session was lost.
      const clean = event.wasClean &&
        (event.code === 1000 || event.code === 1001 || event.code === 1005);
      this.#log.info("session closed", {
        session: sessionId,
        remote,
        ...shownClient,
        code: event.code,
        clean,
      });
      session.closed(clean);
    });
    // No "error" listener: a close event follows every error event, and
    // the runtime does nothing more with an error nobody listens to.
    return response;
  }
}
