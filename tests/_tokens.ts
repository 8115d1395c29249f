// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: tokens as an access rules file (`--acl`) stores them.
 *
 * @module
 */

/**
 * The SHA-256 of a token as 64 lowercase hex digits: its `sha256` in an
 * access rules file.
 *
 * @param token The token.
 * @returns The hex digest.
 */
export async function tokenHash(token: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(token),
  );
  return Array.from(
    new Uint8Array(digest),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
}
