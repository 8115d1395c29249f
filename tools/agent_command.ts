// Copyright the discover authors. BSD-3-Clause license.

/**
 * How to run discoverd from source with the permissions it needs (the
 * etcd backend's gRPC client reads its protocol files and environment):
 * one definition for the dev setup and the tests.
 *
 * @module
 */

/**
 * The V8 flags the agent runs with (`deno task start`, `deno task compile`
 * and here): a young generation of a fixed size, two semi-spaces of 16 MiB.
 *
 * V8 otherwise shrinks the young generation whenever the agent allocates
 * little (between bursts of work) and grows it again at the next burst;
 * the memory it grows into is new to the process, and each of its pages
 * costs a page fault when first written, which on a virtual machine costs
 * several microseconds. Reading a service of 1,000 instances from etcd for
 * its first subscriber made 600 to 900 such faults in the rounds that grew
 * the young generation, and took 1.5 to 2 times as long as the rounds that
 * did not. With the size fixed, the pages are faulted once and kept: up to
 * 32 MiB of the agent's resident memory once it has been busy.
 */
export const AGENT_V8_FLAGS =
  "--min-semi-space-size=16,--max-semi-space-size=16";

/** `deno` arguments that run `agent.ts` with its permissions; append the agent's flags. */
export const AGENT_RUN_ARGS: readonly string[] = [
  "run",
  `--v8-flags=${AGENT_V8_FLAGS}`,
  "--allow-net",
  "--allow-sys",
  "--allow-read",
  "--allow-env",
  new URL("../agent.ts", import.meta.url).pathname,
];
