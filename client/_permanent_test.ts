// Copyright the discover authors. BSD-3-Clause license.

import assert from "node:assert/strict";
import { ErrorCode, RpcError } from "../protocol/errors.ts";
import { isPermanent, PERMANENT_CODES } from "./_permanent.ts";

Deno.test("refusals that retrying cannot fix are permanent; failures that can pass are not", () => {
  for (const code of PERMANENT_CODES) {
    assert.equal(isPermanent(new RpcError(code, "refused")), true);
  }
  for (
    const code of [
      ErrorCode.Timeout,
      ErrorCode.ConnectionClosed,
      ErrorCode.BackendUnavailable,
      ErrorCode.ShuttingDown,
      ErrorCode.NotOwner,
    ]
  ) {
    assert.equal(isPermanent(new RpcError(code, "passing")), false);
  }
  assert.equal(isPermanent(new Error("not an RpcError")), false);
  assert.equal(isPermanent(undefined), false);
});
