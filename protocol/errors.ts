// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * JSON-RPC error codes used by discover, and the error class that carries
 * them on both sides of a connection.
 *
 * @module
 */

/** Error codes: the JSON-RPC 2.0 standard ones and discover's own (-32000 down). */
export const ErrorCode = {
  /** The text frame is not valid JSON. */
  ParseError: -32700,
  /** Not a valid JSON-RPC 2.0 request; a frame whose JSON repeats a key in an object; an empty or too large batch; a binary or oversized frame. */
  InvalidRequest: -32600,
  /** No such method. */
  MethodNotFound: -32601,
  /** A param is missing, of the wrong type, or breaks a rule; the message names it. */
  InvalidParams: -32602,
  /** An unexpected failure inside the agent. */
  InternalError: -32603,
  /** The backend could not be reached or refused the change; retry later. */
  BackendUnavailable: -32000,
  /** The instance is registered by another live session and cannot be changed from this one. */
  NotOwner: -32001,
  /** A per-session or per-agent limit was reached; the message names the limit. */
  LimitExceeded: -32002,
  /** The subscription is not open on this session. */
  UnknownSubscription: -32003,
  /** The agent is shutting down; reconnect to another agent or retry later. */
  ShuttingDown: -32004,
  /** The request did not get a response in time (raised by clients, never sent by the agent). */
  Timeout: -32005,
  /** The connection closed before the response arrived (raised by clients, never sent by the agent). */
  ConnectionClosed: -32006,
  /**
   * The agent's access rules deny the call to this session: it has not
   * authenticated (`discover.authenticate`), or its token's rules do not
   * grant the access the call needs; also a wrong token.
   */
  Forbidden: -32007,
} as const;

/** The JSON-RPC 2.0 error object. */
export interface ErrorObject {
  /** Error code, see {@linkcode ErrorCode}. */
  code: number;
  /** Human-readable message: what was wrong and what to do. */
  message: string;
  /** Optional extra data. */
  data?: unknown;
}

/**
 * An error carrying a JSON-RPC error code. The agent turns it into an error
 * response; the client rejects a request's promise with it.
 *
 * @example Usage
 * ```ts
 * import { ErrorCode, RpcError } from "./errors.ts";
 * const err = new RpcError(ErrorCode.InvalidParams, "'service' is required");
 * console.log(err.code, err.message);
 * ```
 */
export class RpcError extends Error {
  /** The JSON-RPC error code. */
  readonly code: number;
  /** Optional extra data sent with the error. */
  readonly data?: unknown;

  /**
   * Creates an error.
   *
   * @param code The JSON-RPC error code.
   * @param message What was wrong and what to do.
   * @param data Optional extra data.
   */
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.data = data;
  }

  /**
   * The error as a JSON-RPC error object.
   *
   * @returns The error object to put in a response.
   */
  toJSON(): ErrorObject {
    return this.data === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, data: this.data };
  }
}

/**
 * Shorthand for an invalid-params error that names the field and the rule.
 *
 * @example Usage
 * ```ts
 * import { invalidParams } from "./errors.ts";
 * throw invalidParams("port", "must be an integer from 1 to 65535", 0);
 * ```
 *
 * @param field The offending field, as a path (`attrs.zone`).
 * @param rule The rule it broke.
 * @param value The value it had, shown in the message when given.
 * @returns The error to throw.
 */
export function invalidParams(
  field: string,
  rule: string,
  value?: unknown,
): RpcError {
  const shown = value === undefined ? "" : `: got ${describeValue(value)}`;
  return new RpcError(
    ErrorCode.InvalidParams,
    `'${field}' ${rule}${shown}`,
    { field },
  );
}

/**
 * A bad value as an error message shows it: a short string quoted, a long
 * one by its length (it may be a secret pasted in the wrong place), and
 * objects by their kind.
 *
 * @example Usage
 * ```ts
 * import { describeValue } from "./errors.ts";
 * describeValue("allow"); // '"allow"'
 * describeValue(["a"]); // "an array"
 * ```
 *
 * @param value The value.
 * @returns How to show it.
 */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") {
    return value.length > 40
      ? `a string of ${value.length} characters`
      : JSON.stringify(value);
  }
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}
