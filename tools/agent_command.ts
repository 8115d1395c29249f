// Copyright the discover authors. BSD-3-Clause license.

/**
 * How to run discoverd from source with the permissions it needs (the
 * etcd backend's gRPC client reads its protocol files and environment):
 * one definition for the dev setup and the tests.
 *
 * @module
 */

/** `deno` arguments that run `agent.ts` with its permissions; append the agent's flags. */
export const AGENT_RUN_ARGS: readonly string[] = [
  "run",
  "--allow-net",
  "--allow-sys",
  "--allow-read",
  "--allow-env",
  new URL("../agent.ts", import.meta.url).pathname,
];
