// Copyright the discover authors. BSD-3-Clause license.
// This module is browser-compatible: it uses Web-standard APIs only.

/**
 * The discover protocol: wire types, method names, error codes, param
 * validation, the JSON-RPC peer, the method table and the OpenRPC
 * description. The document
 * for implementers is `protocol/README.md`.
 *
 * @module
 */

export * from "./types.ts";
export * from "./errors.ts";
export * from "./validate.ts";
export * from "./instance_key.ts";
export * from "./instance_equal.ts";
export * from "./jsonrpc.ts";
export * from "./methods.ts";
export * from "./openrpc.ts";
