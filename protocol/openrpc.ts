// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The OpenRPC 1.3.2 description of the discover protocol: every method, the
 * `discover.event` notification, their params, results, errors and
 * examples. The agent serves it as the result of `rpc.discover` and at
 * `GET /openrpc.json`. The prose document is `protocol/README.md`.
 *
 * @module
 */

import { ErrorCode } from "./errors.ts";
import { Methods } from "./types.ts";
import {
  ATTR_KEY_PATTERN,
  MAX_ADDR_LENGTH,
  MAX_ATTR_VALUE_LENGTH,
  MAX_ATTRS,
  MAX_ATTRS_JSON_LENGTH,
  SERVICE_NAME_PATTERN,
} from "./validate.ts";

/** The top level of an OpenRPC 1.3.2 document, as {@linkcode openrpcDocument} fills it. */
export interface OpenRpcDocument {
  /** Version of the OpenRPC specification the document follows. */
  openrpc: "1.3.2";
  /** Title, version, description and license of the API. */
  info: Record<string, unknown>;
  /** Where an agent listens by default. */
  servers: Record<string, unknown>[];
  /** Every method, and the `discover.event` notification. */
  methods: Record<string, unknown>[];
  /** Shared schemas (`components.schemas`) and errors (`components.errors`), referenced with `$ref`. */
  components: Record<string, Record<string, unknown>>;
}

// One number of a dotted-quad IPv4 address: 0 to 255, leading zeros allowed
// (validate.ts compares the number, and drops the zeros).
const IPV4_NUMBER = "0*(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

// Pattern of `host:port`, the same rule as `validateAddr` in validate.ts:
// a bracketed IPv6 address, or a hostname of at most 253 characters that,
// when made only of digits and dots, must be a dotted-quad IPv4 address with
// every number from 0 to 255; then 1 to 5 digits worth 1 to 65535.
const ADDR_PATTERN = "^(?:\\[(?=[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45}\\]" +
  `|(?:(?=(?:${IPV4_NUMBER}\\.){3}${IPV4_NUMBER}:)|(?![0-9.]+:))` +
  "(?=[^:]{1,253}:)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?" +
  "(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\.?)" +
  ":(?=[0-9]{1,5}$)0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}" +
  "|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";

function schema(name: string): { $ref: string } {
  return { $ref: `#/components/schemas/${name}` };
}

function error(name: keyof typeof ErrorCode): { $ref: string } {
  return { $ref: `#/components/errors/${name}` };
}

// Example data, the same story as the transcript in protocol/README.md.
const HOST = "192.0.2.10";
const REGISTERED_AT = 1767225600000;
const OURS = {
  id: `cache/${HOST}:6379`,
  service: "cache",
  addr: `${HOST}:6379`,
};
const ours42 = {
  ...OURS,
  attrs: { zone: "b" },
  revision: 42,
  registeredAt: REGISTERED_AT,
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
  id: "cache/192.0.2.11:6379",
  service: "cache",
  addr: "192.0.2.11:6379",
  attrs: { zone: "b" },
  revision: 17,
  registeredAt: 1767225000000,
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

const service = {
  name: "service",
  description: "Service name.",
  required: true,
  schema: schema("ServiceName"),
};
const serviceOrAll = {
  name: "service",
  description:
    'Service name, or `"*"` for every service: the subscription then gets the instances of all services, present and future (each instance names its `service`); a filter still applies.',
  required: true,
  schema: {
    oneOf: [schema("ServiceName"), { type: "string", const: "*" }],
  },
};
const port = {
  name: "port",
  description:
    "Port on the agent's advertised host (`advertiseHost` in `discover.status`). Give exactly one of `port` and `addr`.",
  schema: schema("Port"),
};
const addr = {
  name: "addr",
  description:
    "Full `host:port` address; the agent canonicalises it (hostnames in lower case without a trailing dot, IPv4 numbers and the port without leading zeros, IPv6 in the WHATWG URL form: lower case, zeros compressed). Give exactly one of `port` and `addr`.",
  schema: schema("Addr"),
};
const filter = {
  name: "filter",
  description:
    "Only instances that have every listed attribute with exactly that value. Absent: every instance of the service.",
  schema: schema("Filter"),
};
const subscription = {
  name: "subscription",
  description: "Subscription id returned by `discover.subscribe`.",
  required: true,
  schema: schema("SubscriptionId"),
};

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
      "Registrations belong to an owner: the client id named in the connection URL (`?client=ID`, 1 to 64 characters of A-Z a-z 0-9 _ -), or the WebSocket session when it names none. " +
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
    {
      name: Methods.register,
      summary:
        "Registers an instance of a service, or replaces its attributes.",
      description:
        "Give `service` and exactly one of `port` and `addr`. The instance `<service>/<addr>` then belongs to this session's owner (its client id, or the session itself). " +
        "Registering it again from the same owner replaces its attributes: an `update` event if they changed, nothing (and the same revision) if they are identical. " +
        "If it belongs to another owner that is still connected: -32001. " +
        "If it belongs to a lost owner (disconnected, within its grace period), this session takes it over without a down/up flap (an `update` if the attributes differ). " +
        "An owner holds at most `maxRegistrations` instances: -32002 beyond.",
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
      ],
      result: {
        name: "instance",
        description: "The instance as registered.",
        schema: schema("Instance"),
      },
      errors: [
        error("InvalidParams"),
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
            },
          },
        },
      ],
    },
    {
      name: Methods.unregister,
      summary: "Removes an instance of this session's owner.",
      description:
        "Give `service` and exactly one of `port` and `addr`. Returns `true` if the instance was removed (subscribers get a `down` event), `false` if there was no such instance. " +
        "An instance of another owner that is still connected: -32001. An instance of a lost owner is removed (taken over).",
      tags: [{ name: "registration" }],
      paramStructure: "by-name",
      params: [service, port, addr],
      result: {
        name: "removed",
        description: "Whether an instance was removed.",
        schema: { type: "boolean" },
      },
      errors: [
        error("InvalidParams"),
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
    {
      name: Methods.services,
      summary: "Reads the instances of a service.",
      description:
        "A one-shot read of the agent's current view, optionally filtered by attributes. When the backend is unreachable the agent answers from its last known state (`connected` is false in `discover.status`).",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [service, filter],
      result: {
        name: "services",
        description: "The view's revision and the matching instances.",
        schema: schema("ServicesResult"),
      },
      errors: [
        error("InvalidParams"),
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
    {
      name: Methods.catalog,
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
    {
      name: Methods.subscribe,
      summary: "Subscribes to the instances of a service, or of every service.",
      description:
        "The response is always sent before any event of the subscription; events arrive as `discover.event` notifications. " +
        "Revisions belong to an epoch, returned in the result: send it back as `epoch` together with `since` when resubscribing (an absent `epoch` is taken to be the agent's current one). " +
        "Mode `snapshot` (no `since`; or `epoch` differs from the agent's current epoch; or the agent no longer holds the history after `since`; or `since` is ahead of the agent's revision): one `up` event per matching instance, each with the snapshot revision, then `current`, then live events. A snapshot is the complete state: instances the client held that are not in it are gone. " +
        "Mode `replay` (`since` given, its epoch is the agent's, and the history after it is available): the events after `since` that concern the subscription, in order with their original revisions, then `current`, then live events. An old `since` or a foreign `epoch` is never an error: it gets a snapshot. " +
        "With a filter, an attrs change that makes an instance match gives `up`, one that makes it stop matching gives `down` (with the new attributes), one that keeps it matching gives `update`. " +
        "A session holds at most `maxSubscriptions` subscriptions: -32002 beyond. A subscribe that finds the send queue over `maxQueueBytes` is answered once the client has read it below; in a batch, a subscribe after one whose initial events took the queue beyond `maxQueueBytes` gets -32002.",
      tags: [{ name: "discovery" }],
      paramStructure: "by-name",
      params: [
        serviceOrAll,
        filter,
        {
          name: "since",
          description:
            "Revision of the last event the client has applied: asks for a replay of what came after it.",
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
      ],
      result: {
        name: "subscribed",
        description: "Subscription id, revision, epoch and mode.",
        schema: schema("SubscribeResult"),
      },
      errors: [
        error("InvalidParams"),
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
            "After a reconnect, with the revision and epoch the client last had. Followed by `update` at 44, `down` at 45, then `current` at 45.",
          params: [
            { name: "service", value: "cache" },
            { name: "since", value: 43 },
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
          name: "subscribe (another epoch)",
          description:
            "The `since` comes from another epoch (for example from this agent before it restarted): a snapshot, followed by one `up` event at 45 for 192.0.2.11:6379, then `current` at 45.",
          params: [
            { name: "service", value: "cache" },
            { name: "since", value: 43 },
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
    {
      name: Methods.unsubscribe,
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
    {
      name: Methods.status,
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
            },
          },
        },
      ],
    },
    {
      name: Methods.discover,
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
              methods: [],
            },
          },
        },
      ],
    },
    {
      name: Methods.ping,
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
    {
      name: Methods.event,
      summary: "Notification: one event of a subscription (agent to client).",
      description:
        "Sent by the agent to the client as a JSON-RPC notification: it has no id and gets no response. Clients never send it. " +
        "OpenRPC has no notification type, so it is described as a method without a result. " +
        "Within a subscription, event revisions never decrease. " +
        "`up`, `update`: the instance as it is now (its `revision` is the event's, except in a snapshot where the event carries the snapshot revision). " +
        "`down`: the last known instance. `current`: no instance; the client now holds the state at `revision`.",
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
    },
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
        pattern: ADDR_PATTERN,
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
      Revision: {
        title: "Revision",
        description:
          "Position in the agent's view: one counter for all services, strictly increasing with every change. Meaningful only within its epoch.",
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
              "Epoch of this subscription's revisions: keep it and send it back with `since` when resubscribing.",
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
          "One subscription event. `instance` is present on `up`, `update` and `down`, absent on `current` and `stale`. `stale`: the agent cannot reach its backend and serves its last known state until a `current` event follows.",
        type: "object",
        required: ["kind", "revision"],
        properties: {
          kind: {
            type: "string",
            enum: ["up", "update", "down", "current", "stale"],
          },
          revision: schema("Revision"),
          instance: schema("Instance"),
        },
        if: { properties: { kind: { enum: ["current", "stale"] } } },
        then: { not: { required: ["instance"] } },
        else: { required: ["instance"] },
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
          "maxRegistrations (per owner) or maxSubscriptions (per session) was reached; the message names it.",
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
    },
  },
};
