/**
 * @module
 * The OpenAPI 3.1 document of `POST /_edge/sync`, served at `/_edge/openapi.json` and copied to
 * `docs/sync_openapi.json` (a test keeps the copy identical), so backends in any language can
 * integrate with an off-the-shelf Standard Webhooks library. The payload and event schemas are
 * generated from the zod schemas that validate them (`schema.ts`), so the two cannot drift.
 */
import { z } from "zod";
import { EVENT_KINDS, EVENT_SCHEMAS, MAX_EVENTS_PER_BATCH, SyncPayloadSchema } from "./schema.ts";

type JsonSchema = Record<string, unknown>;

/**
 * The JSON Schema of what a sender writes (`io: "input"`): instants as date-time strings without
 * zod's long pattern, free-form JSON values (`attributes`) as any value, refinements left out.
 */
function jsonSchemaOf(schema: z.ZodType): JsonSchema {
  const { $schema: _, $defs: _defs, ...out } = z.toJSONSchema(schema, {
    io: "input",
    unrepresentable: "any",
    override: ({ zodSchema, jsonSchema }) => {
      const def = zodSchema._zod.def;
      if (def.type === "record" && def.valueType._zod.def.type === "lazy") {
        jsonSchema.additionalProperties = {};
      }
      if (jsonSchema.format === "date-time") {
        delete jsonSchema.pattern;
        jsonSchema.description ??= "ISO 8601 with a time zone";
      }
    },
  });
  // The only definitions zod emits here are those of the JSON values replaced above.
  if (JSON.stringify(out).includes("#/$defs/")) throw new Error("A sync schema needs definitions of its own");
  return out;
}

function eventSchemas(): JsonSchema[] {
  return EVENT_KINDS.map((kind) => ({
    ...jsonSchemaOf(EVENT_SCHEMAS.get(kind)!),
    additionalProperties: true,
  }));
}

function payloadSchema(): JsonSchema {
  const payload = jsonSchemaOf(SyncPayloadSchema) as { properties: { data: JsonSchema } } & JsonSchema;
  const events = {
    type: "array",
    maxItems: MAX_EVENTS_PER_BATCH,
    items: { $ref: "#/components/schemas/Event" },
  };
  return {
    ...payload,
    properties: { ...payload.properties, data: { ...payload.properties.data, properties: { events } } },
  };
}

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
});

/** The OpenAPI document. */
export const SYNC_OPENAPI = {
  openapi: "3.1.0",
  info: {
    title: "Edge Personalizer sync",
    version: "1.0.0",
    description: "Signed pushes from the central backend into the edge's Deno KV. Requests are signed with " +
      "Standard Webhooks v1 (HMAC-SHA256 over `webhook-id.webhook-timestamp.body`, `whsec_` secrets). " +
      "Delivery is at least once: batches may be retried, duplicated and reordered; the edge converges " +
      "to the same state regardless. Within one key, a higher `version` must carry a later `at`.",
  },
  paths: {
    "/_edge/sync": {
      post: {
        operationId: "sync",
        summary: "Apply a batch of at most 1000 events, all or nothing",
        security: [{ standardWebhooks: [] }],
        parameters: [
          {
            name: "webhook-id",
            in: "header",
            required: true,
            schema: { type: "string", maxLength: 256 },
            description: 'Unique per batch; a repeated id is answered 200 {"duplicate": true}',
          },
          {
            name: "webhook-timestamp",
            in: "header",
            required: true,
            schema: { type: "string", pattern: "^[0-9]+$" },
            description: "Epoch seconds; rejected outside the tolerance (default ±300 s)",
          },
          {
            name: "webhook-signature",
            in: "header",
            required: true,
            schema: { type: "string" },
            description: "Space-separated `v1,<base64>` signatures; any one matching any secret is accepted",
          },
        ],
        requestBody: {
          required: true,
          description: "At most SYNC_MAX_BYTES (default 1 MiB)",
          content: { "application/json": { schema: { $ref: "#/components/schemas/SyncPayload" } } },
        },
        responses: {
          "200": {
            description: "Applied, or a duplicate webhook-id",
            content: {
              "application/json": {
                schema: {
                  oneOf: [
                    {
                      type: "object",
                      required: ["applied", "stale"],
                      properties: {
                        applied: { type: "integer" },
                        stale: { type: "integer" },
                        rules: {
                          description:
                            "Only for a batch with rules, rules_promote or rules_rollback events: " +
                            "the versions KV names after it (null when that could not be read)",
                          type: ["object", "null"],
                          required: ["active", "canary"],
                          properties: {
                            active: { type: ["integer", "null"] },
                            canary: {
                              type: ["object", "null"],
                              required: ["version", "share"],
                              properties: { version: { type: "integer" }, share: { type: "number" } },
                            },
                          },
                        },
                      },
                    },
                    { type: "object", required: ["duplicate"], properties: { duplicate: { const: true } } },
                  ],
                },
              },
            },
          },
          "400": errorResponse(
            "Invalid JSON, envelope or events (`invalid_json`, `invalid_payload`, `invalid_events` with " +
              "`events: [{ index, field, message }]`); nothing was applied",
          ),
          "401": errorResponse(
            "`missing_signature_headers`, `invalid_timestamp` or `invalid_signature`",
          ),
          "404": errorResponse("Sync is not configured on this edge (no SYNC_SECRETS)"),
          "409": errorResponse("`in_progress`: the same webhook-id is being applied; retry later"),
          "408": errorResponse(
            "`body_timeout`: the body took longer than SYNC_BODY_TIMEOUT_MS to arrive; `body_too_slow`: it arrived slower than SYNC_MIN_BODY_BYTES_PER_S",
          ),
          "413": errorResponse("`payload_too_large` (body) or `too_many_events` (more than 1000)"),
          "429": errorResponse(
            "`busy`: SYNC_MAX_CONCURRENT pushes are being applied, or SYNC_MAX_BYTES_IN_FLIGHT body bytes are being read; retry after the `Retry-After` seconds",
          ),
          "503": errorResponse(
            "`store_unavailable`: the store failed or took longer than SYNC_STORE_TIMEOUT_MS; retrying is safe",
          ),
        },
      },
    },
  },
  components: {
    securitySchemes: {
      standardWebhooks: {
        type: "apiKey",
        in: "header",
        name: "webhook-signature",
        description: "Standard Webhooks v1 signature (see https://www.standardwebhooks.com/)",
      },
    },
    schemas: {
      Error: {
        type: "object",
        required: ["error"],
        properties: {
          error: {
            type: "object",
            required: ["code", "message"],
            properties: { code: { type: "string" }, message: { type: "string" } },
            additionalProperties: true,
          },
        },
      },
      SyncPayload: payloadSchema(),
      Event: { oneOf: eventSchemas() },
    },
  },
};
