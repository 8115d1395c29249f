// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Wire shapes of the discover protocol: the params and results of every
 * method and the `discover.event` notification. See `protocol/README.md`.
 *
 * @module
 */

/** Attributes of an instance: a flat map of string keys to string values. */
export type Attrs = Record<string, string>;

/**
 * Health of an instance: `passing` (able to serve) or `critical` (its check
 * fails, or its owner said so with `discover.setHealth`).
 */
export type Health = "passing" | "critical";

/**
 * Which instances a read or a subscription holds: `passing` (the default)
 * only instances able to serve, `any` every instance whatever its health.
 */
export type HealthFilter = "passing" | "any";

/** One registered instance of a service, as the agent reports it. */
export interface Instance {
  /** Stable identifier of the instance: `<service>/<addr>`. */
  id: string;
  /** Service name. */
  service: string;
  /** Address as `host:port` (IPv6 hosts in brackets: `[::1]:80`). */
  addr: string;
  /** Attributes given at registration (or the latest re-registration). */
  attrs: Attrs;
  /** Revision of the instance's latest change (register or attrs change). */
  revision: number;
  /** Time the instance was first registered, in milliseconds since the epoch. */
  registeredAt: number;
  /**
   * Revision at which this (service, addr) was first registered in its
   * current life: a re-registration keeps it, unregistering and registering
   * again gives a new one. The leader of a set is its instance with the
   * lowest `created` (ties broken by `addr`), and `created` is its fencing
   * token (`protocol/leader.ts`).
   */
  created: number;
  /**
   * Whether the instance can serve. An instance registered with a check
   * starts `critical` and passes once its check does.
   */
  health: Health;
  /** Why the instance is `critical` (a status code, refused, timeout...); only then. */
  note?: string;
}

/**
 * A health check the agent runs for an instance it registered: exactly one
 * of `http` and `tcp`, and how often and how patiently to run it.
 */
export interface Check {
  /** `http://` or `https://` URL; any 2xx status passes, anything else fails. */
  http?: string;
  /** `host:port` to open a TCP connection to; a connection passes. */
  tcp?: string;
  /** Seconds between runs (fractions allowed). @default {5} */
  interval?: number;
  /** Seconds a run may take, less than `interval` (fractions allowed). @default {2} */
  timeout?: number;
  /** Consecutive failures that turn a passing instance critical. @default {1} */
  failuresBeforeCritical?: number;
  /** Consecutive successes that turn a critical instance passing. @default {1} */
  successesBeforePassing?: number;
}

/** Params of `discover.register`: either `port` or `addr` must be given. */
export interface RegisterParams {
  /** Service name. */
  service: string;
  /** Port on the agent's advertised host. */
  port?: number;
  /** Full `host:port` address. */
  addr?: string;
  /** Attributes; replaces the previous attributes on re-registration. */
  attrs?: Attrs;
  /** A health check the agent runs; replaces the previous one on re-registration. */
  check?: Check;
}

/** Params of `discover.setHealth`: either `port` or `addr` must be given. */
export interface SetHealthParams {
  /** Service name. */
  service: string;
  /** Port on the agent's advertised host. */
  port?: number;
  /** Full `host:port` address. */
  addr?: string;
  /** The health the owner reports. */
  health: Health;
  /** Why, when `critical` (at most 256 characters). */
  note?: string;
}

/** Params of `discover.unregister`: either `port` or `addr` must be given. */
export interface UnregisterParams {
  /** Service name. */
  service: string;
  /** Port on the agent's advertised host. */
  port?: number;
  /** Full `host:port` address. */
  addr?: string;
  /**
   * Removes the instance whoever holds it, connected or not: needs `admin`
   * access to the service (and an agent with access rules).
   */
  force?: boolean;
}

/** Params of `discover.authenticate`. */
export interface AuthenticateParams {
  /** The token (at most 4096 characters); never logged, never stored. */
  token: string;
}

/** Result of `discover.authenticate`. */
export interface AuthenticateResult {
  /** The name of the token in the agent's access rules. */
  name: string;
}

/** A filter on instances, applied by the agent. */
export interface Filter {
  /** Every listed attribute must be present with exactly this value. */
  attrs?: Attrs;
}

/** Params of `discover.leader`. */
export interface LeaderParams {
  /** Service name. */
  service: string;
  /** Optional filter. */
  filter?: Filter;
  /** Which instances by health. @default {"passing"} */
  health?: HealthFilter;
}

/**
 * Whose an instance is, as `discover.owners` tells it: for operators (the
 * dashboard's owner column), never a credential.
 */
export interface InstanceOwner {
  /** The instance's address. */
  addr: string;
  /**
   * Its owner: `c:` and the first 8 characters of the hash stored for a
   * client id (the id itself is never shown), or `s:AGENT:SESSION` for a
   * session that connected without a client id.
   */
  owner: string;
  /**
   * The owner's connection, as the answering agent knows it: `connected`
   * (a session of it is open here), `lost` (its last session here ended
   * without closing: the instance stays until `expires` unless the client
   * comes back), or `elsewhere` (not held through this agent: another
   * agent's client, or one that moved).
   */
  client: "connected" | "lost" | "elsewhere";
  /** With `lost`: when the instance goes, in milliseconds since the epoch. */
  expires?: number;
  /** The token name the owner authenticated with, when this agent knows it. */
  token?: string;
}

/** Result of `discover.owners`. */
export interface OwnersResult {
  /** Revision of the agent's view at the read. */
  revision: number;
  /** One entry per instance of the set, sorted by address. */
  owners: InstanceOwner[];
}

/** Params of `discover.services`. */
export interface ServicesParams {
  /** Service name. */
  service: string;
  /** Optional filter. */
  filter?: Filter;
  /** Which instances by health. @default {"passing"} */
  health?: HealthFilter;
}

/** Result of `discover.services`. */
export interface ServicesResult {
  /** Revision of the agent's view when the read was made. */
  revision: number;
  /** Instances matching the filter. */
  instances: Instance[];
}

/**
 * The `service` of `discover.subscribe` that means every service: the
 * subscription gets the instances of all services, present and future.
 */
export const ALL_SERVICES = "*";

/** Params of `discover.subscribe`. */
export interface SubscribeParams {
  /** Service name, or {@linkcode ALL_SERVICES} (`"*"`) for every service. */
  service: string;
  /** Optional filter. */
  filter?: Filter;
  /**
   * Which instances by health: with `passing` an instance that turns
   * critical leaves the set (`down`) and comes back (`up`) when it passes
   * again; with `any` a health change is an `update`.
   *
   * @default {"passing"}
   */
  health?: HealthFilter;
  /**
   * Asks for a replay: the agent replays every event whose revision is
   * greater than `since`. Send the revision of the last event you applied
   * minus one (several events can share a revision), together with the
   * epoch of the subscription; when that would be below 0, omit `since` (a
   * snapshot).
   */
  since?: number;
  /**
   * Epoch the `since` revision belongs to (from an earlier subscribe result
   * or `discover.status`). When it is not the agent's current epoch the
   * agent sends a snapshot: revisions of different epochs are unrelated.
   */
  epoch?: string;
  /**
   * Whether the initial events (the snapshot or the replay, the leader and
   * `current`) may arrive in JSON-RPC batches: frames that hold a JSON
   * array of up to {@linkcode MAX_INITIAL_BATCH} `discover.event`
   * notifications, in order. One frame instead of one per instance makes a
   * large snapshot much cheaper to send and to receive. Later events keep
   * arriving one per frame.
   *
   * @default {false}
   */
  batch?: boolean;
  /**
   * Whether a snapshot may arrive as `snapshot` events, each carrying many
   * of its instances (`ServiceEvent.instances`, up to
   * {@linkcode MAX_INITIAL_BATCH}) instead of one `up` event per instance:
   * the same state in about 40 % fewer characters, and one notification to
   * handle instead of hundreds. A replay and every later event are
   * unchanged.
   *
   * @default {false}
   */
  chunks?: boolean;
}

/** Most notifications in one batch frame of a subscription's initial events. */
export const MAX_INITIAL_BATCH = 1000;

/** Result of `discover.subscribe`. */
export interface SubscribeResult {
  /** Subscription identifier, unique within the session. */
  subscription: string;
  /** Revision of the agent's view when the subscription started. */
  revision: number;
  /**
   * Epoch of the revisions of this subscription; it applies to all its
   * events. Send it back with `since`. In snapshot mode, store it together
   * with the revision only at `current`.
   */
  epoch: string;
  /**
   * `"replay"` when the events that follow are the changes after `since`;
   * `"snapshot"` when they are the full current state (always without
   * `since`, and with a `since` the agent no longer has history for).
   */
  mode: "snapshot" | "replay";
}

/** Params of `discover.unsubscribe`. */
export interface UnsubscribeParams {
  /** Subscription identifier returned by `discover.subscribe`. */
  subscription: string;
}

/**
 * Kinds of subscription events. `snapshot`: instances of a snapshot, many
 * in one event (only to a subscribe with `chunks`); each counts as an `up`.
 * `current`: the subscriber now holds the
 * agent's state at `revision` (end of a snapshot or replay, and again when
 * the agent reaches its backend after `stale`). `stale`: the agent cannot
 * reach its backend; it keeps serving its last known state, which may be
 * out of date, until `current` follows. `leader`: the leader of the
 * subscription's set changed (also sent once before `current` at the end of
 * a snapshot or replay; never on a `"*"` subscription).
 */
export type EventKind =
  | "snapshot"
  | "up"
  | "update"
  | "down"
  | "leader"
  | "current"
  | "stale";

/** One subscription event. */
export interface ServiceEvent {
  /** What happened. */
  kind: EventKind;
  /** Revision at which it happened (the view's revision for `current`). */
  revision: number;
  /**
   * The instance (absent on `snapshot`, `current` and `stale`); on
   * `leader`, the set's new leader, or `null` when the set has none.
   */
  instance?: Instance | null;
  /** On `snapshot` only: instances of the snapshot, in the set from now on. */
  instances?: Instance[];
}

/** Params of the `discover.event` notification. */
export interface EventParams {
  /** Subscription the event belongs to. */
  subscription: string;
  /** The event. */
  result: ServiceEvent;
}

/** One service of the catalog. */
export interface CatalogEntry {
  /** Service name. */
  service: string;
  /** Number of its instances (always at least 1). */
  instances: number;
}

/** Result of `discover.catalog`. */
export interface CatalogResult {
  /** Revision of the agent's view when the read was made. */
  revision: number;
  /** The services that have instances, sorted by name. */
  services: CatalogEntry[];
}

/** Result of `discover.status`. */
export interface StatusResult {
  /** Agent software version. */
  version: string;
  /** Backend name (`memory`, `etcd`, ...). */
  backend: string;
  /** Whether the backend is reachable; results are served from the last known state when not. */
  connected: boolean;
  /** Current revision of the agent's view. */
  revision: number;
  /**
   * Identifies the sequence the revisions belong to. It changes when the
   * backend starts a new sequence (a restarted agent on the memory backend);
   * a `since` from another epoch gets a snapshot.
   */
  epoch: string;
  /** Host used for registrations that give only a port. */
  advertiseHost: string;
  /** Grace period, in seconds, before a lost session's instances go down. */
  ttl: number;
  /** Limits enforced by the agent. */
  limits: Limits;
  /** The instances registered through this agent, by health. */
  instances: InstanceCounts;
}

/** Result of `discover.lease`. */
export interface LeaseResult {
  /**
   * Milliseconds, counted from when the request was sent, during which no
   * agent can see the caller's instances leave for a reason other than the
   * caller's own calls: the smaller of the agent's grace TTL and what is
   * left of its backend lease. 0 when the agent cannot vouch at all.
   */
  ms: number;
  /**
   * The agent's backend lease the vouch rests on (etcd: the lease id; ""
   * without one). It changes when the lease is lost and replaced: the
   * instances written under the lost one may have left (and come back in
   * a new life), so a vouch under another lease than the one an instance
   * was registered under says nothing of it.
   */
  lease: string;
}

/** The instances registered through one agent, counted by health. */
export interface InstanceCounts {
  /** Instances its clients hold (registered, or kept for their grace period). */
  registered: number;
  /** Of those, the passing ones. */
  passing: number;
  /** Of those, the critical ones. */
  critical: number;
  /** Health checks the agent runs. */
  checks: number;
}

/** Limits enforced by the agent on each session. */
export interface Limits {
  /** Largest accepted text frame, in bytes (UTF-8). */
  maxFrameBytes: number;
  /** Most requests in one batch. */
  maxBatch: number;
  /** Most instances one owner (client id, or session without one) may hold. */
  maxRegistrations: number;
  /** Most subscriptions one session may hold open. */
  maxSubscriptions: number;
  /** Most sessions one agent accepts at once. */
  maxSessions: number;
  /**
   * Most bytes queued for one session that is not reading: beyond it the
   * agent closes the connection with code 4008 (slow consumer).
   */
  maxQueueBytes: number;
}

/** The top level of an OpenRPC 1.3.2 document: the result of `rpc.discover`. */
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

/** Wire name of the notification that carries subscription events. */
export const EVENT_NOTIFICATION = "discover.event";

/**
 * The params and result of every method, by wire name: the type half of the
 * method table (`protocol/methods.ts` holds the runtime half: validators and
 * OpenRPC entries). Params `undefined` means the method takes none.
 */
export interface MethodTypes {
  /** Registers an instance, or replaces the attributes of one the caller owns. */
  "discover.register": { params: RegisterParams; result: Instance };
  /** Sets the health of an instance the caller owns, as its owner sees it. */
  "discover.setHealth": { params: SetHealthParams; result: Instance };
  /** Presents a token: the session gets the access its rules grant. */
  "discover.authenticate": {
    params: AuthenticateParams;
    result: AuthenticateResult;
  };
  /** Removes an instance the caller owns; `false` when there was none. */
  "discover.unregister": { params: UnregisterParams; result: boolean };
  /** Reads the leader of a set once: the instance, or `null` when the set is empty. */
  "discover.leader": { params: LeaderParams; result: Instance | null };
  /** Reads the instances of a service once. */
  "discover.services": { params: ServicesParams; result: ServicesResult };
  /** Reads whose the instances of a set are, and whether their clients are connected. */
  "discover.owners": { params: ServicesParams; result: OwnersResult };
  /**
   * Reads the instances the caller owns (its client id's, or its session's
   * when it connected without one), sorted by `id`.
   */
  "discover.owned": { params: undefined; result: ServicesResult };
  /** Reads the services that have instances. */
  "discover.catalog": { params: undefined; result: CatalogResult };
  /** Opens a subscription. */
  "discover.subscribe": { params: SubscribeParams; result: SubscribeResult };
  /** Closes a subscription. */
  "discover.unsubscribe": { params: UnsubscribeParams; result: boolean };
  /** The agent's status. */
  "discover.status": { params: undefined; result: StatusResult };
  /** How long the agent vouches for the caller's instances (leader election). */
  "discover.lease": { params: undefined; result: LeaseResult };
  /** The OpenRPC document. */
  "rpc.discover": { params: undefined; result: OpenRpcDocument };
  /** Liveness check. */
  "$/ping": { params: undefined; result: "pong" };
}

/** Name of a method of the protocol. */
export type MethodName = keyof MethodTypes;

/** The params of method `M`. */
export type ParamsOf<M extends MethodName> = MethodTypes[M]["params"];

/** The result of method `M`. */
export type ResultOf<M extends MethodName> = MethodTypes[M]["result"];
