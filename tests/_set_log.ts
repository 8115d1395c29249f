// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: what a client set saw, one line per update.
 *
 * @module
 */

import type { ServiceSet } from "../mod.ts";

/**
 * Records every update `set` sees from now on, as `kind addr attrs`.
 *
 * @param set The set.
 * @returns The lines, growing as updates arrive.
 */
export function record(set: ServiceSet): string[] {
  const log: string[] = [];
  set.addEventListener("update", (e) => {
    log.push(
      `${e.kind} ${e.instance.addr} ${JSON.stringify(e.instance.attrs)}`,
    );
  });
  return log;
}
