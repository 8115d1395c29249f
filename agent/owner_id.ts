// Copyright the discover authors. BSD-3-Clause license.

/**
 * The owner id stored with a client's records: a hash of its client id,
 * so that a reader of the store cannot connect as the client, bound to the
 * token name the client authenticated with (none without access rules), so
 * that a client id of one token is never another token's.
 *
 * @module
 */

import { createHash } from "node:crypto";

/**
 * The owner id of a client id's registrations.
 *
 * @example Usage
 * ```ts
 * import { clientOwnerId } from "./owner_id.ts";
 * clientOwnerId("worker-7f3a9c1e2b4d6f80"); // "c:" and 32 characters
 * clientOwnerId("worker-7f3a9c1e2b4d6f80", "deployer"); // another one
 * ```
 *
 * @param clientId The client id (`?client=`).
 * @param name The token name it authenticated with, if any.
 * @returns The owner id.
 */
export function clientOwnerId(clientId: string, name = ""): string {
  const hash = createHash("sha256").update(`${name}\n${clientId}`).digest(
    "base64url",
  );
  return `c:${hash.slice(0, 32)}`;
}
