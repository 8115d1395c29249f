// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The method table of the discover protocol: for every method, the
 * validator of its params and its OpenRPC entry (description, params,
 * result, errors, examples), and the entry of the `discover.event`
 * notification. `MethodTypes` in `types.ts` holds the type half:
 * the params and result of each method, by name.
 *
 * The compiler links the halves: {@linkcode methodTable} must have exactly
 * one entry per method of `MethodTypes`, whose validator returns that
 * method's params and whose examples are made of its params and results;
 * a {@linkcode MethodHandlers} map (the agent's) must answer every method
 * with its result. The OpenRPC document (`openrpc.ts`) lists the table's
 * methods, so a method is described if and only if it is in the table.
 *
 * Adding a method: its params and result in `MethodTypes`, its entry here,
 * its handler in the agent's session.
 *
 * @module
 */

import { ErrorCode, RpcError } from "./errors.ts";
import { instanceKey } from "./instance_key.ts";
import type { CallContext, RequestHandler } from "./jsonrpc.ts";
import type { EventParams, MethodName, ParamsOf, ResultOf } from "./types.ts";
import {
  validateAuthenticate,
  validateLeader,
  validateNoParams,
  validateRegister,
  validateServices,
  validateSetHealth,
  validateSubscribe,
  validateUnregister,
  validateUnsubscribe,
} from "./validate.ts";

/** A JSON object, as OpenRPC schemas are. */
export type JsonObject = { [key: string]: unknown };

/** A `$ref` to a schema or an error of the OpenRPC document's `components`. */
export interface Ref {
  /** JSON pointer into the document: `#/components/schemas/Instance`. */
  $ref: string;
}

/**
 * An OpenRPC content descriptor: one param of a method, or its result.
 * `N` is the param's name (a field of the method's params).
 */
export interface ContentDescriptor<N extends string = string> {
  /** The param's name (by-name params), or a name for the result. */
  name: N;
  /** What it is. */
  description?: string;
  /** Whether a param must be given. */
  required?: boolean;
  /** Its JSON Schema, or a {@linkcode Ref} to one. */
  schema: JsonObject;
}

/** The names of the fields of params `P` (none when the method takes none). */
export type ParamName<P> = P extends object ? keyof P & string : never;

/** One param of an example: a field of `P` and a value it may hold. */
export type ExampleParam<P> = P extends object ? {
    [K in keyof P & string]-?: { name: K; value: Exclude<P[K], undefined> };
  }[keyof P & string]
  : never;

/** An OpenRPC example pairing of a method with params `P` and result `R`. */
export interface MethodExample<P, R> {
  /** Name of the example. */
  name: string;
  /** What it shows. */
  description?: string;
  /** The params, by name. */
  params: ExampleParam<P>[];
  /** The result. */
  result: { name: string; value: R };
}

/**
 * The OpenRPC method object of a method with params `P` and result `R`,
 * without its `name` (the key of the table).
 */
export interface OpenRpcMethod<P, R> {
  /** One line. */
  summary: string;
  /** The rules. */
  description: string;
  /** Groups: `registration`, `discovery`, `meta`, `notification`. */
  tags: { name: string }[];
  /** Params are always by name. */
  paramStructure: "by-name";
  /** Every field of the params. */
  params: ContentDescriptor<ParamName<P>>[];
  /** The result. */
  result: ContentDescriptor;
  /** The errors the method may answer with, as {@linkcode Ref}s. */
  errors: Ref[];
  /** Examples, checked against the method's types. */
  examples: MethodExample<P, R>[];
}

/** The OpenRPC entry of a notification with params `P`: no result. */
export interface OpenRpcNotification<P>
  extends Omit<OpenRpcMethod<P, never>, "result" | "errors" | "examples"> {
  /** Examples of the notification's params. */
  examples: Omit<MethodExample<P, never>, "result">[];
}

/**
 * One entry of the method table: how to check the params of a method with
 * params `P` and result `R`, and how the OpenRPC document describes it.
 * The runtime half of a vscode-jsonrpc style `RequestType<P, R>`.
 */
export interface MethodSpec<P, R> {
  /**
   * Checks raw params (`undefined` when the request has none) and returns
   * them typed, canonicalised where the protocol says so (addresses), with
   * defaults filled in (`attrs`).
   *
   * @throws {RpcError} -32602 naming the bad field and the rule.
   */
  validate: (params: unknown) => P;
  /** The method's OpenRPC entry, without its name. */
  openrpc: OpenRpcMethod<P, R>;
}

/**
 * The method table's type: one {@linkcode MethodSpec} per method of
 * `MethodTypes`, no more, no less.
 */
export type MethodTable = {
  readonly [M in MethodName]: MethodSpec<ParamsOf<M>, ResultOf<M>>;
};

function schema(name: string): { $ref: string } {
  return { $ref: `#/components/schemas/${name}` };
}

function error(name: keyof typeof ErrorCode): { $ref: string } {
  return { $ref: `#/components/errors/${name}` };
}

/** The rule for `since`, as the subscribe method and its param state it. */
const SINCE_RULE =
  "The agent replays every event whose revision is greater than `since`: send the revision of the last event you applied minus one (several events can share a revision), together with the epoch of the subscription; when that would be below 0, omit `since` (a snapshot).";

/** What a client does with events it may already hold (after a resume). */
const DUPLICATE_RULE =
  "Events can repeat after a resume: ignore an `up`/`update` whose instance revision is equal to or lower than the one you hold, and a `down` for an instance you do not hold.";

/** Which epoch events belong to, and when a snapshot counts. */
const EPOCH_RULE =
  "The result's `epoch` applies to all the subscription's events. In snapshot mode, the `up` events count only at `current`: then replace what you held with them (an instance you held that is not among them is gone; one that is takes the snapshot's instance, even with a lower `revision`) and store the revision of `current` together with the epoch.";

// Example data, the same story as the transcript in protocol/README.md.
const HOST = "192.0.2.10";
const REGISTERED_AT = 1767225600000;
const OURS = {
  id: instanceKey("cache", `${HOST}:6379`),
  service: "cache",
  addr: `${HOST}:6379`,
};
const ours42 = {
  ...OURS,
  attrs: { zone: "b" },
  revision: 42,
  registeredAt: REGISTERED_AT,
  created: 42,
  health: "passing" as const,
};
const ours43 = {
  ...ours42,
  attrs: { zone: "b", role: "primary" },
  revision: 43,
};
const ours44 = {
  ...ours42,
  attrs: { zone: "b", role: "replica" },
  revision: 44,
};
const other17 = {
  id: instanceKey("cache", "192.0.2.11:6379"),
  service: "cache",
  addr: "192.0.2.11:6379",
  attrs: { zone: "b" },
  revision: 17,
  registeredAt: 1767225000000,
  created: 17,
  health: "passing" as const,
};
// Epoch of the example agent (a memory backend: a random UUID per process),
// and the epoch of some other agent, for the example of a mismatch.
const EPOCH = "3f1c2a9e-6b1d-4c53-9a51-0f6f3b8e2d47";
const OTHER_EPOCH = "9b2d7c41-0e5f-4a38-8c16-5d3e7f9a1b20";
const limits = {
  maxFrameBytes: 1048576,
  maxBatch: 1000,
  maxRegistrations: 1000,
  maxSubscriptions: 1000,
  maxSessions: 50000,
  maxQueueBytes: 16777216,
};

const service: ContentDescriptor<"service"> = {
  name: "service",
  description: "Service name.",
  required: true,
  schema: schema("ServiceName"),
};
const serviceOrAll: ContentDescriptor<"service"> = {
  name: "service",
  description:
    'Service name, or `"*"` for every service: the subscription then gets the instances of all services, present and future (each instance names its `service`); a filter still applies.',
  required: true,
  schema: {
    oneOf: [schema("ServiceName"), { type: "string", const: "*" }],
  },
};
const port: ContentDescriptor<"port"> = {
  name: "port",
  description:
    "Port on the agent's advertised host (`advertiseHost` in `discover.status`). Give exactly one of `port` and `addr`.",
  schema: schema("Port"),
};
const addr: ContentDescriptor<"addr"> = {
  name: "addr",
  description:
    "Full `host:port` address; the agent canonicalises it (hostnames in lower case without a trailing dot, IPv4 numbers and the port without leading zeros, IPv6 in the WHATWG URL form: lower case, zeros compressed). Give exactly one of `port` and `addr`.",
  schema: schema("Addr"),
};
const filter: ContentDescriptor<"filter"> = {
  name: "filter",
  description:
    "Only instances that have every listed attribute with exactly that value. Absent: every instance of the service.",
  schema: schema("Filter"),
};
const healthFilter: ContentDescriptor<"health"> = {
  name: "health",
  description:
    '`"passing"` (the default): only instances able to serve; an instance that turns critical leaves (`down`) and comes back (`up`) when it passes again. `"any"`: every instance, and a health change is an `update`.',
  schema: schema("HealthFilter"),
};
const subscription: ContentDescriptor<"subscription"> = {
  name: "subscription",
  description: "Subscription id returned by `discover.subscribe`.",
  required: true,
  schema: schema("SubscriptionId"),
};

/**
 * The method table: for every method of the protocol, its validator and
 * its OpenRPC entry. `openrpc.ts` builds the document's method list from
 * it; the agent dispatches through it ({@linkcode dispatcher}).
 *
 * @example Usage
 * ```ts
 * import { methodTable } from "./methods.ts";
 * const params = methodTable["discover.register"].validate({
 *   service: "cache",
 *   addr: "Cache-1.Example:6379",
 * });
 * console.log(params.addr); // "cache-1.example:6379"
 * ```
 */
export const methodTable: MethodTable = {
  "discover.register": {
    validate: validateRegister,
    openrpc: {
      summary:
        "Registers an instance of a service, or replaces its attributes.",
      description:
        "Give `service` and exactly one of `port` and `addr`. The instance `<service>/<addr>` then belongs to this session's owner (its client id, or the session itself). " +
        "Registering it again from the same owner replaces its attributes: an `update` event if they changed, nothing (and the same revision) if they are identical. " +
        "If it belongs to another owner that is still connected: -32001. " +
        "If it belongs to a lost owner (disconnected, within its grace period), this session takes it over without a down/up flap (an `update` if the attributes differ). " +
        "An owner holds at most `maxRegistrations` instances: -32002 beyond. " +
        "Health: a new instance is `passing`, or `critical` until its first check passes when it has a `check`; re-registering keeps the health it has (an agent restarted within the grace TTL resumes its checks without a flap).",
      tags: [{ name: "registration" }],
      paramStructure: "by-name",
      params: [
        service,
        port,
        addr,
        {
          name: "attrs",
          description:
            "Attributes; replace the previous ones on re-registration. Default `{}`.",
          schema: schema("Attrs"),
        },
        {
          name: "check",
          description:
            "A health check this agent runs while it holds the instance: `http` (2xx passes) or `tcp` (a connection passes), every `interval` seconds (default 5) with a deadline of `timeout` seconds (default 2, below `interval`); `failuresBeforeCritical` consecutive failures (default 1) turn the instance critical, `successesBeforePassing` consecutive successes (default 1) passing again. " +
            "A new instance with a check starts `critical` (note `no check result yet`) and joins passing sets at its first passing result. The target must be the instance's own host, or loopback for an instance on the agent's host, unless the agent's `--check-allow` widens it: -32602 otherwise. Replaces the previous check on re-registration; without `check`, a re-registration removes it.",
          schema: schema("Check"),
        },
      ],
      result: {
        name: "instance",
        description: "The instance as registered.",
        schema: schema("Instance"),
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("NotOwner"),
        error("LimitExceeded"),
        error("BackendUnavailable"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "register by port",
          description:
            "The agent's advertised host is 192.0.2.10, so the address is 192.0.2.10:6379.",
          params: [
            { name: "service", value: "cache" },
            { name: "port", value: 6379 },
            { name: "attrs", value: { zone: "b" } },
          ],
          result: { name: "instance", value: ours42 },
        },
        {
          name: "re-register with new attributes",
          description:
            "Same session, same instance: the attributes are replaced, `registeredAt` is kept.",
          params: [
            { name: "service", value: "cache" },
            { name: "port", value: 6379 },
            { name: "attrs", value: { zone: "b", role: "primary" } },
          ],
          result: { name: "instance", value: ours43 },
        },
        {
          name: "register by address",
          description:
            "The address is canonicalised: the host in lower case (a trailing dot would also be removed).",
          params: [
            { name: "service", value: "cache" },
            { name: "addr", value: "Cache-2.Example.NET:6379" },
          ],
          result: {
            name: "instance",
            value: {
              id: "cache/cache-2.example.net:6379",
              service: "cache",
              addr: "cache-2.example.net:6379",
              attrs: {},
              revision: 46,
              registeredAt: 1767225700000,
              created: 46,
              health: "passing",
            },
          },
        },
      ],
    },
  },
  "discover.setHealth": {
    validate: validateSetHealth,
    openrpc: {
      summary: "Sets the health of an instance of this session's owner.",
      description:
        "Give `service`, exactly one of `port` and `addr`, `health` (`passing` or `critical`) and, when critical, an optional `note` (at most 256 characters). The owner's own report, kept by the agent without any periodic write; it is combined with the instance's check, if any: the instance is critical while either says so. " +
        "The backend is written only when the instance's health or note changes. An instance of another owner: -32001; an instance that is not registered: -32602.",
      tags: [{ name: "registration" }],
      paramStructure: "by-name",
      params: [
        service,
        port,
        addr,
        {
          name: "health",
          description: "The health the owner reports.",
          required: true,
          schema: schema("Health"),
        },
        {
          name: "note",
          description: "Why, when `critical`.",
          schema: schema("Note"),
        },
      ],
      result: {
        name: "instance",
        description: "The instance with its health as it is now.",
        schema: schema("Instance"),
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("NotOwner"),
        error("BackendUnavailable"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "report critical",
          params: [
            { name: "service", value: "cache" },
            { name: "port", value: 6379 },
            { name: "health", value: "critical" },
            { name: "note", value: "disk full" },
          ],
          result: {
            name: "instance",
            value: {
              ...ours44,
              revision: 47,
              health: "critical",
              note: "disk full",
            },
          },
        },
      ],
    },
  },
  "discover.authenticate": {
    validate: validateAuthenticate,
    openrpc: {
      summary: "Presents a token: the session gets the access its rules grant.",
      description:
        "Only meaningful on an agent started with access rules (`--acl FILE`); without them every session may do everything and any token is refused with -32007. " +
        "The token is compared, by its SHA-256 hash and in constant time, with the tokens of the rules; a match gives the session that token's access from the next call on, and the result names the token. It may be called again to present another token (rotation); a wrong token leaves the session's access as it was and gets -32007. " +
        "Wrong tokens are slowed per remote address: after a burst of 5, one more attempt a second (-32002 with the wait). The token is never logged and never sent in a URL: a browser presents it with this method, like any client.",
      tags: [{ name: "meta" }],
      paramStructure: "by-name",
      params: [{
        name: "token",
        description: "The token, 1 to 4096 characters.",
        required: true,
        schema: { type: "string", minLength: 1, maxLength: 4096 },
      }],
      result: {
        name: "authenticated",
        description: "The token's name in the access rules.",
        schema: {
          type: "object",
          required: ["name"],
          additionalProperties: false,
          properties: { name: { type: "string" } },
        },
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("LimitExceeded"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "authenticate",
          params: [{
            name: "token",
            value: "9c6a1f0e5d2b4a7c8e3f1a6b0d9c2e4f",
          }],
          result: { name: "authenticated", value: { name: "deployer" } },
        },
      ],
    },
  },
  "discover.unregister": {
    validate: validateUnregister,
    openrpc: {
      summary: "Removes an instance of this session's owner.",
      description:
        "Give `service` and exactly one of `port` and `addr`. Returns `true` if the instance was removed (subscribers get a `down` event), `false` if there was no such instance. " +
        "An instance of another owner that is still connected: -32001. An instance of a lost owner is removed (taken over).",
      tags: [{ name: "registration" }],
      paramStructure: "by-name",
      params: [service, port, addr, {
        name: "force",
        description:
          "Removes the instance whoever holds it, connected or not. Needs `admin` access to the service on an agent with access rules (-32007 otherwise); the removal is logged with the session's token name.",
        schema: { type: "boolean" },
      }],
      result: {
        name: "removed",
        description: "Whether an instance was removed.",
        schema: { type: "boolean" },
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("NotOwner"),
        error("BackendUnavailable"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "unregister",
          params: [
            { name: "service", value: "cache" },
            { name: "port", value: 6379 },
          ],
          result: { name: "removed", value: true },
        },
        {
          name: "unregister an unknown instance",
          params: [
            { name: "service", value: "cache" },
            { name: "addr", value: "192.0.2.99:6379" },
          ],
          result: { name: "removed", value: false },
        },
      ],
    },
  },
  "discover.services": {
    validate: validateServices,
    openrpc: {
      summary: "Reads the instances of a service.",
      description:
        "A one-shot read of the agent's current view, optionally filtered by attributes. When the backend is unreachable the agent answers from its last known state (`connected` is false in `discover.status`).",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [service, filter, healthFilter],
      result: {
        name: "services",
        description: "The view's revision and the matching instances.",
        schema: schema("ServicesResult"),
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "services with a filter",
          params: [
            { name: "service", value: "cache" },
            { name: "filter", value: { attrs: { zone: "b" } } },
          ],
          result: {
            name: "services",
            value: { revision: 45, instances: [other17] },
          },
        },
      ],
    },
  },
  "discover.leader": {
    validate: validateLeader,
    openrpc: {
      summary: "Reads the leader of a set.",
      description:
        "The leader of the set that `discover.services` with the same params would read: its instance with the lowest `created` revision, ties broken by the lower `addr`; `null` when the set is empty. Every agent derives the same leader from the same instances, with no extra writes, and a later leader of the same set always has a greater `created`: it is the leader's fencing token. A one-shot read: subscribe to follow `leader` events.",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [service, filter, healthFilter],
      result: {
        name: "leader",
        description: "The leader, or `null`.",
        schema: { oneOf: [schema("Instance"), { type: "null" }] },
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "leader of a service",
          description:
            "192.0.2.11:6379 was registered at revision 17, before 192.0.2.10:6379 (42).",
          params: [{ name: "service", value: "cache" }],
          result: { name: "leader", value: other17 },
        },
      ],
    },
  },
  "discover.owners": {
    validate: validateServices,
    openrpc: {
      summary: "Reads whose the instances of a set are.",
      description:
        "For operators: the owner of each instance of the set that `discover.services` with the same params would read, sorted by address. " +
        "`owner` is `c:` and the first 8 characters of the hash stored for a client id (never the id), or `s:AGENT:SESSION` for a session without one. " +
        "`client` says what the answering agent knows of the owner: `connected` (a session of it is open here), `lost` (its last session here ended without closing: the instance goes at `expires`, milliseconds since the epoch, unless the client comes back), `elsewhere` (held through another agent). " +
        "`token` is the token name the owner authenticated with, when this agent knows it.",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [service, filter, healthFilter],
      result: {
        name: "owners",
        description: "The revision of the read and the owners.",
        schema: schema("OwnersResult"),
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "owners",
          params: [{ name: "service", value: "cache" }],
          result: {
            name: "owners",
            value: {
              revision: 44,
              owners: [{
                addr: "192.0.2.10:6379",
                owner: "c:Q2hhbmdl",
                client: "lost",
                expires: 1767225600000,
              }],
            },
          },
        },
      ],
    },
  },
  "discover.catalog": {
    validate: validateNoParams,
    openrpc: {
      summary: "Lists the services that have instances.",
      description:
        "Takes no params: omit them or send `{}` or `[]`; anything else gets -32602. Returns every service with at least one instance, sorted by name, with its number of instances, read from the agent's current view. " +
        'To follow the catalog live, subscribe with `service` `"*"` (every service) instead of polling.',
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [],
      result: {
        name: "catalog",
        description: "The revision of the read and the services.",
        schema: schema("CatalogResult"),
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "catalog",
          params: [],
          result: {
            name: "catalog",
            value: {
              revision: 45,
              services: [{ service: "cache", instances: 1 }],
            },
          },
        },
      ],
    },
  },
  "discover.owned": {
    validate: validateNoParams,
    openrpc: {
      summary: "Reads the instances the caller owns.",
      description:
        "Takes no params: omit them or send `{}` or `[]`; anything else gets -32602. " +
        "Returns, sorted by `id`, the instances of the agent's view whose owner is the caller: its client id (`?client=`), shared by every session that connects with it, or the session itself when it connected without one. " +
        "This is the agent's side of what a client believes it registered: after a reconnection, it shows which registrations are back. An instance another owner took over is not listed.",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [],
      result: {
        name: "owned",
        description: "The view's revision and the caller's instances.",
        schema: schema("ServicesResult"),
      },
      errors: [
        error("InvalidParams"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "owned",
          params: [],
          result: {
            name: "owned",
            value: { revision: 44, instances: [ours44] },
          },
        },
      ],
    },
  },
  "discover.subscribe": {
    validate: validateSubscribe,
    openrpc: {
      summary: "Subscribes to the instances of a service, or of every service.",
      description:
        "The response is always sent before any event of the subscription; events arrive as `discover.event` notifications. " +
        "Revisions belong to an epoch, returned in the result: send it back as `epoch` together with `since` when resubscribing (an absent `epoch` is taken to be the agent's current one). " +
        "Mode `snapshot` (no `since`; or `epoch` differs from the agent's current epoch; or the agent no longer holds the history after `since`; or `since` is ahead of the agent's revision): one `up` event per matching instance (with `chunks`, `snapshot` events of many instances each), each with the snapshot revision, then `current`, then live events. A snapshot is the complete state. " +
        "Mode `replay` (`since` given, its epoch is the agent's, and the history after it is available): the events after `since` that concern the subscription, in order with their original revisions, then `current`, then live events. An old `since` or a foreign `epoch` is never an error: it gets a snapshot. " +
        "With a filter, an attrs change that makes an instance match gives `up`, one that makes it stop matching gives `down` (with the new attributes), one that keeps it matching gives `update`. " +
        "Health is part of the filter: with `health` `passing` (the default) an instance that turns critical gives `down` and one that passes again `up`; with `any` a health change gives `update`. " +
        `Applying and resuming (protocol/README.md, section 5). ${EPOCH_RULE} ${SINCE_RULE} ${DUPLICATE_RULE} ` +
        "A session holds at most `maxSubscriptions` subscriptions: -32002 beyond. A subscribe that finds the send queue over `maxQueueBytes` is answered once the client has read it below; in a batch, a subscribe after one whose initial events took the queue beyond `maxQueueBytes` gets -32002.",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [
        serviceOrAll,
        filter,
        healthFilter,
        {
          name: "since",
          description: `Asks for a replay. ${SINCE_RULE}`,
          schema: {
            type: "integer",
            minimum: 0,
            maximum: Number.MAX_SAFE_INTEGER,
          },
        },
        {
          name: "epoch",
          description:
            "Epoch the `since` revision belongs to: the `epoch` of the result of the subscription that `since` comes from. When it is not the agent's current epoch the agent sends a snapshot; when it is absent the agent assumes its own epoch. Has no effect without `since`.",
          schema: schema("Epoch"),
        },
        {
          name: "batch",
          description:
            "When true, the initial events (the snapshot or the replay, the leader and `current`) may arrive as JSON-RPC batch frames: JSON arrays of up to 1,000 `discover.event` notifications, in order. Later events arrive one per frame. Default false.",
          schema: { type: "boolean" },
        },
        {
          name: "chunks",
          description:
            "When true, a snapshot may arrive as `snapshot` events, each with up to 1,000 of its instances in `instances`, instead of one `up` event per instance. A replay and later events are unchanged. Default false.",
          schema: { type: "boolean" },
        },
      ],
      result: {
        name: "subscribed",
        description: "Subscription id, revision, epoch and mode.",
        schema: schema("SubscribeResult"),
      },
      errors: [
        error("InvalidParams"),
        error("Forbidden"),
        error("LimitExceeded"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "subscribe (snapshot)",
          description:
            "Followed by `up` events for 192.0.2.11:6379 and 192.0.2.10:6379 at revision 43, then `current` at 43.",
          params: [{ name: "service", value: "cache" }],
          result: {
            name: "subscribed",
            value: {
              subscription: "1",
              revision: 43,
              epoch: EPOCH,
              mode: "snapshot",
            },
          },
        },
        {
          name: "subscribe (replay)",
          description:
            "After a reconnect: the last event the client applied was `current` at 43 (the end of its snapshot), so it sends `since` 42 with the epoch of that subscription. Followed by `update` at 43 (its instance revision 43 is not above the one the client holds: ignored), `update` at 44, `down` at 45, then `current` at 45.",
          params: [
            { name: "service", value: "cache" },
            { name: "since", value: 42 },
            { name: "epoch", value: EPOCH },
          ],
          result: {
            name: "subscribed",
            value: {
              subscription: "1",
              revision: 45,
              epoch: EPOCH,
              mode: "replay",
            },
          },
        },
        {
          name: "subscribe to every service",
          description:
            '`service` `"*"`: followed by one `up` event per instance of any service (here 192.0.2.11:6379 of `cache`) at 45, then `current` at 45, then the changes of every service, including services that appear later.',
          params: [{ name: "service", value: "*" }],
          result: {
            name: "subscribed",
            value: {
              subscription: "2",
              revision: 45,
              epoch: EPOCH,
              mode: "snapshot",
            },
          },
        },
        {
          name: "subscribe (snapshot, in chunks)",
          description:
            "With `chunks`: followed by one `snapshot` event at 45 whose `instances` hold 192.0.2.11:6379 (up to 1,000 instances an event), then `leader` and `current` at 45.",
          params: [
            { name: "service", value: "cache" },
            { name: "chunks", value: true },
          ],
          result: {
            name: "subscribed",
            value: {
              subscription: "3",
              revision: 45,
              epoch: EPOCH,
              mode: "snapshot",
            },
          },
        },
        {
          name: "subscribe (another epoch)",
          description:
            "The `since` comes from another epoch (the client had applied up to 43 of this agent before it restarted): a snapshot, followed by one `up` event at 45 for 192.0.2.11:6379, then `current` at 45.",
          params: [
            { name: "service", value: "cache" },
            { name: "since", value: 42 },
            { name: "epoch", value: OTHER_EPOCH },
          ],
          result: {
            name: "subscribed",
            value: {
              subscription: "1",
              revision: 45,
              epoch: EPOCH,
              mode: "snapshot",
            },
          },
        },
      ],
    },
  },
  "discover.unsubscribe": {
    validate: validateUnsubscribe,
    openrpc: {
      summary: "Closes a subscription.",
      description:
        "Returns `true`; no event of the subscription follows the response. An id that is not open on this session: -32003.",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [subscription],
      result: {
        name: "closed",
        description: "Always `true`.",
        schema: { type: "boolean", const: true },
      },
      errors: [
        error("InvalidParams"),
        error("UnknownSubscription"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "unsubscribe",
          params: [{ name: "subscription", value: "1" }],
          result: { name: "closed", value: true },
        },
      ],
    },
  },
  "discover.status": {
    validate: validateNoParams,
    openrpc: {
      summary:
        "Reports the agent's version, backend, revision, epoch and limits.",
      description:
        "Takes no params: omit them or send `{}` or `[]`; anything else gets -32602.",
      tags: [{ name: "meta" }],
      paramStructure: "by-name",
      params: [],
      result: {
        name: "status",
        description: "The agent's status.",
        schema: schema("StatusResult"),
      },
      errors: [
        error("InvalidParams"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "status",
          params: [],
          result: {
            name: "status",
            value: {
              version: "0.1.0",
              backend: "memory",
              connected: true,
              revision: 41,
              epoch: EPOCH,
              advertiseHost: HOST,
              ttl: 10,
              limits,
              instances: { registered: 1, passing: 1, critical: 0, checks: 1 },
            },
          },
        },
      ],
    },
  },
  "discover.lease": {
    validate: validateNoParams,
    openrpc: {
      summary:
        "Says how long the agent vouches that the caller's instances stay.",
      description:
        "Takes no params: omit them or send `{}` or `[]`; anything else gets -32602. " +
        "Returns `ms`: for that many milliseconds, counted from when the client sent the request, no agent can see the caller's instances leave for a reason other than the caller's own calls (an instance with a health check may still turn critical): the smaller of the grace TTL and what is left of the agent's backend lease (an etcd lease renewed at time T, with TTL L, cannot expire before T + L); 0 when the agent cannot vouch (its lease is past due); and `lease`, the backend lease it rests on (etcd: the lease id; empty without one), which changes when the lease is lost and replaced: instances written under the lost one may have left, so a client compares it with the `lease` answered just before it registered. " +
        "A client that campaigns for leadership believes it leads only until its latest answered `discover.lease` runs out.",
      tags: [{ name: "meta" }],
      paramStructure: "by-name",
      params: [],
      result: {
        name: "lease",
        description: "How long the agent vouches, in milliseconds.",
        schema: schema("LeaseResult"),
      },
      errors: [
        error("InvalidParams"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "lease",
          params: [],
          result: {
            name: "lease",
            value: { ms: 9000, lease: "7587887049330127115" },
          },
        },
      ],
    },
  },
  "rpc.discover": {
    validate: validateNoParams,
    openrpc: {
      summary: "Returns this OpenRPC document.",
      description:
        "Takes no params: omit them or send `{}` or `[]`; anything else gets -32602. The same document is served at `GET /openrpc.json`.",
      tags: [{ name: "meta" }],
      paramStructure: "by-name",
      params: [],
      result: {
        name: "openrpcDocument",
        description: "The OpenRPC document.",
        schema: { $ref: "https://meta.open-rpc.org/" },
      },
      errors: [
        error("InvalidParams"),
        error("ShuttingDown"),
        error("InternalError"),
      ],
      examples: [
        {
          name: "rpc.discover",
          description: "Abbreviated: the real result is this whole document.",
          params: [],
          result: {
            name: "openrpcDocument",
            value: {
              openrpc: "1.3.2",
              info: { title: "discover", version: "0.1.0" },
              servers: [],
              methods: [],
              components: {},
            },
          },
        },
      ],
    },
  },
  "$/ping": {
    validate: validateNoParams,
    openrpc: {
      summary: "Answers `pong`.",
      description:
        "Takes no params: omit them or send `{}` or `[]`; anything else gets -32602. Answered even while the agent shuts down. Clients send it periodically (every 2 s) and treat the connection as dead when no response arrives within 5 s.",
      tags: [{ name: "meta" }],
      paramStructure: "by-name",
      params: [],
      result: {
        name: "pong",
        description: "The string `pong`.",
        schema: { type: "string", const: "pong" },
      },
      errors: [
        error("InvalidParams"),
        error("InternalError"),
      ],
      examples: [
        { name: "ping", params: [], result: { name: "pong", value: "pong" } },
      ],
    },
  },
};

/**
 * The OpenRPC entry of the `discover.event` notification, which the agent
 * sends and clients receive.
 *
 * @example Usage
 * ```ts
 * import { eventNotification } from "./methods.ts";
 * console.log(eventNotification.summary);
 * ```
 */
export const eventNotification: OpenRpcNotification<EventParams> = {
  summary: "Notification: one event of a subscription (agent to client).",
  description:
    "Sent by the agent to the client as a JSON-RPC notification: it has no id and gets no response. Clients never send it. " +
    "OpenRPC has no notification type, so it is described as a method without a result. " +
    "Within a subscription, event revisions never decrease; several events can share a revision (changes made together share one). " +
    `${DUPLICATE_RULE} ` +
    "`up`, `update`: the instance as it is now (its `revision` is the event's, except in a snapshot where the event carries the snapshot revision). " +
    "`down`: the last known instance. `current`: no instance; the client now holds the state at `revision`. " +
    "`snapshot` (only to a subscribe with `chunks`): no `instance`; `instances` holds instances of the snapshot, each as an `up` event would carry it.",
  tags: [{ name: "notification" }],
  paramStructure: "by-name",
  params: [
    subscription,
    {
      name: "result",
      description: "The event.",
      required: true,
      schema: schema("ServiceEvent"),
    },
  ],
  examples: [
    {
      name: "snapshot (instances of a snapshot at revision 43, with chunks)",
      params: [
        { name: "subscription", value: "1" },
        {
          name: "result",
          value: { kind: "snapshot", revision: 43, instances: [other17] },
        },
      ],
    },
    {
      name: "up (in a snapshot at revision 43)",
      params: [
        { name: "subscription", value: "1" },
        {
          name: "result",
          value: { kind: "up", revision: 43, instance: other17 },
        },
      ],
    },
    {
      name: "leader (before current, at the end of the snapshot)",
      params: [
        { name: "subscription", value: "1" },
        {
          name: "result",
          value: { kind: "leader", revision: 43, instance: other17 },
        },
      ],
    },
    {
      name: "current",
      params: [
        { name: "subscription", value: "1" },
        { name: "result", value: { kind: "current", revision: 43 } },
      ],
    },
    {
      name: "update",
      params: [
        { name: "subscription", value: "1" },
        {
          name: "result",
          value: { kind: "update", revision: 44, instance: ours44 },
        },
      ],
    },
    {
      name: "down",
      params: [
        { name: "subscription", value: "1" },
        {
          name: "result",
          value: { kind: "down", revision: 45, instance: ours44 },
        },
      ],
    },
  ],
};

/** A handler of method `M`: its checked params in, its result out. */
export type MethodHandler<M extends MethodName> = (
  params: ParamsOf<M>,
  call: CallContext,
) => ResultOf<M> | Promise<ResultOf<M>>;

/**
 * A handler for every method: a map missing one, or whose handler takes or
 * returns the wrong type, does not compile.
 */
export type MethodHandlers = { readonly [M in MethodName]: MethodHandler<M> };

/**
 * Answers requests with `handlers`: looks the method up in
 * {@linkcode methodTable} (an unknown name gets -32601), checks the params
 * with its validator (-32602), and calls its handler with the checked
 * params.
 *
 * @example Usage
 * ```ts ignore
 * import { JsonRpcPeer } from "./jsonrpc.ts";
 * import { dispatcher, type MethodHandlers } from "./methods.ts";
 * declare const handlers: MethodHandlers;
 * const peer = new JsonRpcPeer({
 *   send: (text) => socket.send(text),
 *   onRequest: dispatcher(handlers),
 * });
 * ```
 *
 * @param handlers A handler for every method.
 * @returns The request handler of a `JsonRpcPeer` (its `onRequest`).
 */
export function dispatcher(handlers: MethodHandlers): RequestHandler {
  return (method, params, call) => {
    if (!Object.hasOwn(methodTable, method)) {
      throw new RpcError(
        ErrorCode.MethodNotFound,
        `method not found: '${
          method.slice(0, 100)
        }'; see rpc.discover for the methods`,
      );
    }
    const answer = <M extends MethodName>(name: M) =>
      handlers[name](methodTable[name].validate(params), call);
    return answer(method as MethodName);
  };
}
