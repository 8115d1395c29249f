// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * Errors that retrying on the same agent cannot fix: the client gives up
 * what it was restoring (a set, a registration), and a campaign whose set
 * is refused so ends.
 *
 * @module
 */

import { ErrorCode, RpcError } from "../protocol/errors.ts";

/** Codes of errors that retrying on the same agent cannot fix. */
export const PERMANENT_CODES: ReadonlySet<number> = new Set([
  ErrorCode.InvalidRequest,
  ErrorCode.MethodNotFound,
  ErrorCode.InvalidParams,
  ErrorCode.LimitExceeded,
]);

/**
 * Whether retrying on the same agent cannot fix `error`.
 *
 * @example Usage
 * ```ts
 * import { isPermanent } from "./_permanent.ts";
 * import { ErrorCode, RpcError } from "../protocol/errors.ts";
 * console.log(isPermanent(new RpcError(ErrorCode.InvalidParams, "bad"))); // true
 * ```
 *
 * @param error What a request was rejected with.
 * @returns `true` for an {@linkcode RpcError} with one of {@linkcode PERMANENT_CODES}.
 */
export function isPermanent(error: unknown): boolean {
  return error instanceof RpcError && PERMANENT_CODES.has(error.code);
}
