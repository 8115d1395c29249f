// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: an agent logger that keeps, for every session that ends,
 * whether the agent saw it close cleanly, and says nothing else.
 *
 * @module
 */

import type { Logger } from "../agent/log.ts";

/**
 * A silent logger and the list it fills: `clean` of each "session closed"
 * record, in order.
 *
 * @returns The logger for `startAgent({logger})` and the list.
 */
export function sessionCloses(): { logger: Logger; closes: unknown[] } {
  const closes: unknown[] = [];
  const logger: Logger = {
    debug() {},
    info(message, fields) {
      if (message === "session closed") closes.push(fields?.clean);
    },
    warn() {},
    error() {},
  };
  return { logger, closes };
}
