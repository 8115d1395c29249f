// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The discover client: register services with a discover agent and watch
 * them come and go. Runs unchanged in Deno, Node.js and browsers.
 *
 * ```ts ignore
 * import { connect } from "@discover/discover";
 *
 * await using client = await connect("ws://127.0.0.1:1111");
 * await client.register("cache", 9876, { attrs: { id: "cache1" } });
 *
 * await using queues = await client.services("queue", { filter: { zone: "b" } });
 * for (const q of queues.online()) console.log(q.addr, q.attrs);
 * for await (const u of queues) console.log(u.kind, u.instance.addr);
 * ```
 *
 * @module
 */

export {
  type CallOptions,
  Client,
  type ClientEventMap,
  connect,
  type ConnectionState,
  type ConnectOptions,
  type ReconnectOptions,
  type RegisterOptions,
  type Registration,
  type RegistrationState,
  RestoreErrorEvent,
  type ServicesOptions,
  type SetHealthOptions,
  type Target,
  type UnregisterOptions,
  type WebSocketConstructor,
} from "./client/client.ts";
export {
  Campaign,
  CampaignEndedError,
  type CampaignEventMap,
  type CampaignOptions,
  CLOCK_RATE_MARGIN,
  DeposedEvent,
  type DeposedReason,
  ElectedEvent,
  TIMER_MARGIN_MS,
} from "./client/campaign.ts";
export {
  LeaderEvent,
  MAX_OFFLINE,
  ServiceSet,
  type ServiceSetEventMap,
  type ServiceUpdate,
  ServiceUpdateEvent,
  type UpdatesOptions,
} from "./client/service_set.ts";
export { ErrorCode, type ErrorObject, RpcError } from "./protocol/errors.ts";
export { leaderOf, precedes, type Ranked } from "./protocol/leader.ts";
export type {
  Attrs,
  CatalogEntry,
  CatalogResult,
  Check,
  EventKind,
  Health,
  HealthFilter,
  Instance,
  InstanceCounts,
  InstanceOwner,
  LeaseResult,
  Limits,
  OwnersResult,
  ServiceEvent,
  StatusResult,
} from "./protocol/types.ts";
