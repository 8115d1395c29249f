// Copyright the discover authors. BSD-3-Clause license.

/**
 * Backends: where an agent keeps registrations. See
 * {@linkcode Backend} for the interface a new store implements.
 *
 * @module
 */

export * from "./backend.ts";
export { MemoryBackend } from "./memory.ts";
