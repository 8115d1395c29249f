// Copyright the discover authors. BSD-3-Clause license.

/**
 * How to run discoverd from source with the permissions it needs (the
 * etcd backend's gRPC client reads its protocol files and environment):
 * one definition for the dev setup and the tests.
 *
 * @module
 */

/**
 * The V8 flags discoverd runs with, in `deno task start`, `deno task
 * compile` and {@linkcode AGENT_RUN_ARGS}: a young generation of 16 MiB
 * from the start (V8 begins at 1 MiB and grows it only after scavenges).
 * A burst such as a first subscriber's snapshot of 1,000 instances then
 * runs without a scavenge at every few hundred kilobytes; pages are
 * taken only when used, so an idle agent's RSS does not change.
 */
export const AGENT_V8_FLAGS = "--v8-flags=--min-semi-space-size=16";

/** `deno` arguments that run `agent.ts` with its permissions; append the agent's flags. */
export const AGENT_RUN_ARGS: readonly string[] = [
  "run",
  AGENT_V8_FLAGS,
  "--allow-net",
  "--allow-sys",
  "--allow-read",
  "--allow-env",
  new URL("../agent.ts", import.meta.url).pathname,
];
