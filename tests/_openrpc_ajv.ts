// Copyright the discover authors. BSD-3-Clause license.

/**
 * Test helper: an ajv instance that knows the OpenRPC meta-schema (npm
 * `@open-rpc/meta-schema`), for validating the protocol's OpenRPC document.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Ajv } from "ajv";
import * as metaSchemaModule from "@open-rpc/meta-schema";

type Json = Record<string, unknown>;

/** `$id` of the OpenRPC meta-schema. */
export const META_ID = "https://meta.open-rpc.org/";

/**
 * An ajv that knows the OpenRPC meta-schema (under {@linkcode META_ID}).
 * The meta-schema refers to `https://meta.json-schema.tools/` for JSON
 * Schemas: that is draft-07 plus titles, so a copy of ajv's own draft-07
 * meta-schema stands in for it.
 *
 * @returns The ajv instance; add the documents to check to it.
 */
export function openrpcAjv(): Ajv {
  const ajv = new Ajv({
    strict: false,
    allErrors: true,
    validateFormats: false,
  });
  const draft07 = ajv.getSchema("http://json-schema.org/draft-07/schema")
    ?.schema as Json;
  assert.ok(draft07, "ajv has no draft-07 meta-schema");
  ajv.addMetaSchema({
    ...draft07,
    $id: "https://meta.json-schema.tools/",
    definitions: {
      ...(draft07.definitions as Json),
      JSONSchemaObject: {
        properties: { $ref: (draft07.properties as Json).$ref },
      },
    },
  });
  // Referred to both with and without the trailing slash.
  ajv.addSchema(
    { $ref: "https://meta.json-schema.tools/" },
    "https://meta.json-schema.tools",
  );
  // The package's typings declare only types; its `openrpcDocument` export
  // is the meta-schema itself.
  ajv.addSchema(
    (metaSchemaModule as unknown as { openrpcDocument: Json }).openrpcDocument,
  );
  return ajv;
}
