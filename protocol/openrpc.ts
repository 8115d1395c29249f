// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The OpenRPC 1.3.2 description of the discover protocol: every method, the
 * `discover.event` notification, their params, results, errors and
 * examples. The agent serves it as the result of `rpc.discover` and at
 * `GET /openrpc.json`. The methods and the notification come from the
 * method table (`methods.ts`); this module adds the document's info,
 * servers and shared components. The prose document is
 * `protocol/README.md`.
 *
 * @module
 */

import { ErrorCode } from "./errors.ts";
import { eventNotification, methodTable } from "./methods.ts";
import { EVENT_NOTIFICATION, type OpenRpcDocument } from "./types.ts";
import {
  ADDR_PATTERN,
  ATTR_KEY_PATTERN,
  MAX_ADDR_LENGTH,
  MAX_ATTR_VALUE_LENGTH,
  MAX_ATTRS,
  MAX_ATTRS_JSON_LENGTH,
  MAX_CHECK_INTERVAL,
  MAX_CHECK_TARGET_LENGTH,
  MAX_CHECK_THRESHOLD,
  MAX_NOTE_LENGTH,
  MIN_CHECK_INTERVAL,
  SERVICE_NAME_PATTERN,
} from "./validate.ts";

function schema(name: string): { $ref: string } {
  return { $ref: `#/components/schemas/${name}` };
}

/**
 * The OpenRPC 1.3.2 document of the discover protocol. It is plain JSON data:
 * serve it with `JSON.stringify`.
 *
 * @example Usage
 * ```ts
 * import { openrpcDocument } from "./openrpc.ts";
 * const names = openrpcDocument.methods.map((m) => m.name);
 * console.log(names.includes("discover.register")); // true
 * ```
 */
export const openrpcDocument: OpenRpcDocument = {
  openrpc: "1.3.2",
  info: {
    title: "discover",
    version: "0.1.0",
    description:
      "Service discovery over JSON-RPC 2.0 on a WebSocket. Clients register instances of services, read them and subscribe to their changes. " +
      "Params are always by name (an object); a method that takes params rejects unknown fields with -32602. " +
      "Every request may also fail with -32603 (internal error), and every request but `$/ping` with -32004 (the agent is shutting down). " +
      "Envelope errors (-32700 parse error, -32600 invalid request, -32601 method not found) are listed in `components.errors`. " +
      "Registrations belong to an owner: the client id named in the connection URL (`?client=ID`, 16 to 64 characters of A-Z a-z 0-9 _ -), or the WebSocket session when it names none. " +
      "When an owner's last session ends with a clean close (a completed WebSocket closing handshake whose close frame has code 1000, 1001 or no code), its instances go down at once; after any other end (a reset or dropped connection, another close code such as 4000, the agent's idle detection) the owner is lost and its instances stay for the grace period (`ttl` in `discover.status`). " +
      "The agent pings a peer that has sent nothing for half of its idle timeout (default 5 s) and drops it, as lost, when no pong has come back by the full idle timeout. " +
      "See protocol/README.md for liveness, ordering and limits.",
    license: {
      name: "BSD-3-Clause",
      url: "https://opensource.org/licenses/BSD-3-Clause",
    },
  },
  servers: [{
    name: "local agent",
    url: "ws://127.0.0.1:1111/",
    description:
      "Default address of an agent; add `?client=ID` to name the owner of this connection's registrations. JSON-RPC 2.0 messages and batches in UTF-8 text frames.",
  }],
  methods: [
    ...Object.entries(methodTable).map(([name, spec]) => ({
      name,
      ...spec.openrpc,
    })),
    { name: EVENT_NOTIFICATION, ...eventNotification },
  ],
  components: {
    schemas: {
      ServiceName: {
        title: "ServiceName",
        description:
          "1 to 63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit (so never a `/`).",
        type: "string",
        minLength: 1,
        maxLength: 63,
        pattern: SERVICE_NAME_PATTERN.source,
      },
      Port: {
        title: "Port",
        type: "integer",
        minimum: 1,
        maximum: 65535,
      },
      Addr: {
        title: "Addr",
        description:
          "`host:port`. The host is a hostname (dot-separated labels of 1 to 63 characters of A-Z a-z 0-9 -, not starting or ending with `-`, an optional trailing dot, at most 253 characters), where a host made only of digits and dots must be a dotted-quad IPv4 address with every number from 0 to 255; or an IPv6 address in brackets (only its characters and length are checked). Then a port from 1 to 65535. " +
          "The agent canonicalises the address, so one endpoint has one address: hostnames in lower case without a trailing dot, IPv4 numbers and the port without leading zeros, IPv6 addresses as the WHATWG URL standard writes them (lower case, the longest run of zero groups compressed, an embedded IPv4 part in hex; the agent also rejects IPv6 text that standard does not parse).",
        type: "string",
        maxLength: MAX_ADDR_LENGTH,
        pattern: ADDR_PATTERN.source,
      },
      Attrs: {
        title: "Attrs",
        description:
          `Flat map of string keys to string values: at most ${MAX_ATTRS} keys of 1 to 64 characters of A-Z a-z 0-9 . _ - : starting with a letter or digit; values of at most ${MAX_ATTR_VALUE_LENGTH} UTF-16 code units; at most ${MAX_ATTRS_JSON_LENGTH} characters as JSON (JSON.stringify length).`,
        type: "object",
        maxProperties: MAX_ATTRS,
        propertyNames: { pattern: ATTR_KEY_PATTERN.source },
        additionalProperties: {
          type: "string",
          maxLength: MAX_ATTR_VALUE_LENGTH,
        },
      },
      Filter: {
        title: "Filter",
        description:
          "An instance matches when it has every listed attribute with exactly that value. `{}` matches everything.",
        type: "object",
        additionalProperties: false,
        properties: { attrs: schema("Attrs") },
      },
      Health: {
        title: "Health",
        description:
          "`passing`: able to serve. `critical`: its check fails, or its owner said so with `discover.setHealth`.",
        type: "string",
        enum: ["passing", "critical"],
      },
      HealthFilter: {
        title: "HealthFilter",
        description:
          "Which instances a read or subscription holds: `passing` (the default) or `any`.",
        type: "string",
        enum: ["passing", "any"],
      },
      Note: {
        title: "Note",
        description:
          `Why an instance is critical: at most ${MAX_NOTE_LENGTH} characters.`,
        type: "string",
        maxLength: MAX_NOTE_LENGTH,
      },
      Check: {
        title: "Check",
        description:
          "A health check the agent runs: exactly one of `http` and `tcp`.",
        type: "object",
        additionalProperties: false,
        oneOf: [{ required: ["http"] }, { required: ["tcp"] }],
        properties: {
          http: {
            description: "`http://` or `https://` URL; a 2xx status passes.",
            type: "string",
            format: "uri",
            maxLength: MAX_CHECK_TARGET_LENGTH,
          },
          tcp: {
            description: "`host:port`; an accepted connection passes.",
            $ref: "#/components/schemas/Addr",
          },
          interval: {
            description: "Seconds between runs. Default 5.",
            type: "number",
            minimum: MIN_CHECK_INTERVAL,
            maximum: MAX_CHECK_INTERVAL,
          },
          timeout: {
            description:
              "Seconds a run may take; above 0 and below `interval`. Default 2 (half the interval when that is shorter).",
            type: "number",
            exclusiveMinimum: 0,
          },
          failuresBeforeCritical: {
            description:
              "Consecutive failures that turn the instance critical. Default 1.",
            type: "integer",
            minimum: 1,
            maximum: MAX_CHECK_THRESHOLD,
          },
          successesBeforePassing: {
            description:
              "Consecutive successes that turn the instance passing. Default 1.",
            type: "integer",
            minimum: 1,
            maximum: MAX_CHECK_THRESHOLD,
          },
        },
      },
      Revision: {
        title: "Revision",
        description:
          "Position in the agent's view: one counter for all services. Revisions never decrease; changes made together share one revision. Meaningful only within its epoch.",
        type: "integer",
        minimum: 0,
      },
      Epoch: {
        title: "Epoch",
        description:
          "Names the sequence revisions belong to: a revision means something only within its epoch, and the same thing at every agent of that epoch. The memory backend starts a new epoch (a random UUID) each time the agent process starts, since its revisions start over at 0; a shared backend keeps one epoch for all its agents. Opaque: compare it, do not parse it.",
        type: "string",
        minLength: 1,
        maxLength: 64,
      },
      SubscriptionId: {
        title: "SubscriptionId",
        description: "Opaque subscription id, unique within the session.",
        type: "string",
        minLength: 1,
        maxLength: 64,
      },
      Instance: {
        title: "Instance",
        description: "One registered instance of a service.",
        type: "object",
        required: [
          "id",
          "service",
          "addr",
          "attrs",
          "revision",
          "registeredAt",
          "created",
          "health",
        ],
        properties: {
          id: {
            description: "`<service>/<addr>`.",
            type: "string",
          },
          service: schema("ServiceName"),
          addr: schema("Addr"),
          attrs: schema("Attrs"),
          revision: {
            description:
              "Revision of the instance's latest change (registration or attributes change).",
            $ref: "#/components/schemas/Revision",
          },
          registeredAt: {
            description:
              "Time of the first registration, in milliseconds since the epoch.",
            type: "integer",
            minimum: 0,
          },
          created: {
            description:
              "Revision at which this (service, addr) was first registered in its current life: a re-registration keeps it, unregistering and registering again gives a new one. The leader of a set is its instance with the lowest `created` (ties broken by `addr`); `created` is the leader's fencing token.",
            $ref: "#/components/schemas/Revision",
          },
          health: schema("Health"),
          note: {
            description: "Why the instance is critical; only then.",
            $ref: "#/components/schemas/Note",
          },
        },
      },
      ServicesResult: {
        title: "ServicesResult",
        type: "object",
        required: ["revision", "instances"],
        properties: {
          revision: schema("Revision"),
          instances: { type: "array", items: schema("Instance") },
        },
      },
      OwnersResult: {
        title: "OwnersResult",
        type: "object",
        required: ["revision", "owners"],
        properties: {
          revision: schema("Revision"),
          owners: {
            description:
              "One entry per instance of the set, sorted by address.",
            type: "array",
            items: {
              type: "object",
              required: ["addr", "owner", "client"],
              additionalProperties: false,
              properties: {
                addr: schema("Addr"),
                owner: { type: "string" },
                client: { enum: ["connected", "lost", "elsewhere"] },
                expires: { type: "integer" },
                token: { type: "string" },
              },
            },
          },
        },
      },
      CatalogResult: {
        title: "CatalogResult",
        type: "object",
        required: ["revision", "services"],
        properties: {
          revision: schema("Revision"),
          services: {
            description: "Services with at least one instance, sorted by name.",
            type: "array",
            items: {
              type: "object",
              required: ["service", "instances"],
              additionalProperties: false,
              properties: {
                service: schema("ServiceName"),
                instances: { type: "integer", minimum: 1 },
              },
            },
          },
        },
      },
      SubscribeResult: {
        title: "SubscribeResult",
        type: "object",
        required: ["subscription", "revision", "epoch", "mode"],
        properties: {
          subscription: schema("SubscriptionId"),
          revision: {
            description:
              "Revision of the agent's view when the subscription started; the `current` event carries it.",
            $ref: "#/components/schemas/Revision",
          },
          epoch: {
            description:
              "Epoch of this subscription's revisions; it applies to all its events. Keep it (in snapshot mode, once `current` arrives) and send it back with `since` when resubscribing.",
            $ref: "#/components/schemas/Epoch",
          },
          mode: {
            description:
              "`replay`: the events that follow are the changes after `since`. `snapshot`: they are the complete current state.",
            type: "string",
            enum: ["snapshot", "replay"],
          },
        },
      },
      ServiceEvent: {
        title: "ServiceEvent",
        description:
          "One subscription event. `instance` is present on `up`, `update` and `down`, absent on `snapshot`, `current` and `stale`; on `leader` it is the set's new leader, or `null` when the set has none. `snapshot` (only to a subscribe with `chunks`): `instances` holds up to 1,000 instances of a snapshot, each counting as an `up`. `stale`: the agent cannot reach its backend and serves its last known state until a `current` event follows. `leader`: the leader of the subscription's set changed; also sent once before the `current` that ends a snapshot or replay; never on a `\"*\"` subscription.",
        type: "object",
        required: ["kind", "revision"],
        properties: {
          kind: {
            type: "string",
            enum: [
              "snapshot",
              "up",
              "update",
              "down",
              "leader",
              "current",
              "stale",
            ],
          },
          revision: schema("Revision"),
          instance: {
            oneOf: [schema("Instance"), { type: "null" }],
          },
          instances: {
            type: "array",
            maxItems: 1000,
            items: schema("Instance"),
          },
        },
        if: { properties: { kind: { const: "snapshot" } } },
        then: {
          required: ["instances"],
          not: { required: ["instance"] },
        },
        else: {
          not: { required: ["instances"] },
          if: { properties: { kind: { enum: ["current", "stale"] } } },
          then: { not: { required: ["instance"] } },
          else: {
            required: ["instance"],
            if: { properties: { kind: { const: "leader" } } },
            else: { properties: { instance: schema("Instance") } },
          },
        },
      },
      Limits: {
        title: "Limits",
        description: "Limits enforced by the agent.",
        type: "object",
        required: [
          "maxFrameBytes",
          "maxBatch",
          "maxRegistrations",
          "maxSubscriptions",
          "maxSessions",
          "maxQueueBytes",
        ],
        properties: {
          maxFrameBytes: {
            description: "Largest accepted text frame, in bytes of UTF-8.",
            type: "integer",
            minimum: 1,
          },
          maxBatch: {
            description: "Most messages in one batch.",
            type: "integer",
            minimum: 1,
          },
          maxRegistrations: {
            description:
              "Most instances one owner (client id, or session without one) may hold.",
            type: "integer",
            minimum: 0,
          },
          maxSubscriptions: {
            description: "Most subscriptions one session may hold open.",
            type: "integer",
            minimum: 0,
          },
          maxSessions: {
            description:
              "Most sessions the agent accepts at once; further WebSocket upgrades get HTTP 503.",
            type: "integer",
            minimum: 1,
          },
          maxQueueBytes: {
            description:
              "Most bytes queued for a session that does not read fast enough; beyond it the agent closes the connection with code 4008 (slow consumer), and the session is lost (its instances stay for the grace TTL while the client reconnects and resumes). A subscription's initial events do not count, one subscription at a time.",
            type: "integer",
            minimum: 1,
          },
        },
      },
      LeaseResult: {
        title: "LeaseResult",
        type: "object",
        required: ["ms", "lease"],
        additionalProperties: false,
        properties: {
          ms: {
            description:
              "Milliseconds, counted from when the request was sent, during which no agent can see the caller's instances leave for a reason other than the caller's own calls: the smaller of the grace TTL and what is left of the agent's backend lease; 0 when the agent cannot vouch.",
            type: "number",
            minimum: 0,
          },
          lease: {
            description:
              "The agent's backend lease the vouch rests on (etcd: the lease id; empty without one). It changes when the lease is lost and replaced: instances written under the lost lease may have left, so a vouch under another lease than the one an instance was registered under says nothing of it.",
            type: "string",
          },
        },
      },
      StatusResult: {
        title: "StatusResult",
        type: "object",
        required: [
          "version",
          "backend",
          "connected",
          "revision",
          "epoch",
          "advertiseHost",
          "ttl",
          "limits",
          "instances",
        ],
        properties: {
          version: { description: "Agent software version.", type: "string" },
          backend: {
            description: "Backend name (`memory`, `etcd`, ...).",
            type: "string",
          },
          connected: {
            description:
              "Whether the backend is reachable; reads are served from the last known state when it is not.",
            type: "boolean",
          },
          revision: schema("Revision"),
          epoch: {
            description: "Current epoch of the agent's revisions.",
            $ref: "#/components/schemas/Epoch",
          },
          advertiseHost: {
            description: "Host used for registrations that give only a port.",
            type: "string",
          },
          ttl: {
            description:
              "Grace period, in seconds, before a lost owner's instances go down.",
            type: "number",
            minimum: 0,
          },
          limits: schema("Limits"),
          instances: {
            description:
              "The instances registered through this agent (held by its clients, or kept for their grace period), by health, and the checks it runs.",
            type: "object",
            required: ["registered", "passing", "critical", "checks"],
            additionalProperties: false,
            properties: {
              registered: { type: "integer", minimum: 0 },
              passing: { type: "integer", minimum: 0 },
              critical: { type: "integer", minimum: 0 },
              checks: { type: "integer", minimum: 0 },
            },
          },
        },
      },
    },
    errors: {
      ParseError: {
        code: ErrorCode.ParseError,
        message: "The text frame is not valid JSON.",
      },
      InvalidRequest: {
        code: ErrorCode.InvalidRequest,
        message:
          "Not a valid JSON-RPC 2.0 request; an empty batch or one over maxBatch; a binary frame; or a text frame over maxFrameBytes.",
      },
      MethodNotFound: {
        code: ErrorCode.MethodNotFound,
        message: "No such method.",
      },
      InvalidParams: {
        code: ErrorCode.InvalidParams,
        message:
          "A param is missing, unknown, of the wrong type or breaks a rule, or params were given to a method that takes none; the message names it and data.field holds its path.",
      },
      InternalError: {
        code: ErrorCode.InternalError,
        message: "An unexpected failure inside the agent.",
      },
      BackendUnavailable: {
        code: ErrorCode.BackendUnavailable,
        message:
          "The backend could not be reached or refused the change; retry later.",
      },
      NotOwner: {
        code: ErrorCode.NotOwner,
        message:
          "The instance belongs to another owner that is still connected and cannot be changed from this session.",
      },
      LimitExceeded: {
        code: ErrorCode.LimitExceeded,
        message:
          "maxRegistrations or 1,000 check runs a second (per owner), maxSubscriptions (per session) or 10,000 calls under way (per session) was reached; the message names it.",
      },
      UnknownSubscription: {
        code: ErrorCode.UnknownSubscription,
        message: "The subscription is not open on this session.",
      },
      ShuttingDown: {
        code: ErrorCode.ShuttingDown,
        message:
          "The agent is shutting down; reconnect to another agent or retry later.",
      },
      Forbidden: {
        code: ErrorCode.Forbidden,
        message:
          "The agent's access rules deny the call: authenticate (discover.authenticate) with a token whose rules grant the access it needs; also a wrong token.",
      },
    },
  },
};
