/**
 * @module
 * The OpenAPI 3.1 document of `POST /_edge/sync`, served at `/_edge/openapi.json` and copied to
 * `docs/sync_openapi.json` (a test keeps the copy identical), so backends in any language can
 * integrate with an off-the-shelf Standard Webhooks library.
 */

import { USER_ID } from "../pipeline/identity.ts";

const isoInstant = { type: "string", format: "date-time", description: "ISO 8601 with a time zone" };
const id = { type: "string", minLength: 1, maxLength: 256 };
const userId = { type: "string", pattern: USER_ID.source };
/** An erasure takes any id, so that users stored under ids from before the alphabet can be erased. */
const erasableUserId = {
  ...id,
  description:
    "any id of 1–256 characters (well-formed Unicode), so that ids stored before the user id alphabet may still be erased",
};
const version = { type: "integer", minimum: 0 };

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
});

const event = (kind: string, properties: Record<string, unknown>, required: string[]) => ({
  type: "object",
  required: ["kind", ...required],
  properties: { kind: { const: kind }, ...properties },
  additionalProperties: true,
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
      SyncPayload: {
        type: "object",
        required: ["type", "timestamp", "data"],
        properties: {
          type: { const: "edge.sync" },
          timestamp: isoInstant,
          data: {
            type: "object",
            required: ["events"],
            properties: {
              events: { type: "array", maxItems: 1000, items: { $ref: "#/components/schemas/Event" } },
            },
          },
        },
      },
      Event: {
        oneOf: [
          event("view", { userId, itemId: id, at: isoInstant }, ["userId", "itemId", "at"]),
          event("cart", {
            userId,
            version,
            at: isoInstant,
            items: {
              type: "array",
              maxItems: 500,
              items: {
                type: "object",
                required: ["itemId", "qty"],
                properties: { itemId: id, qty: { type: "integer", minimum: 0 } },
              },
            },
          }, ["userId", "version", "at", "items"]),
          event("profile", {
            userId,
            version,
            at: isoInstant,
            segments: { type: "array", maxItems: 200, items: { type: "string", maxLength: 128 } },
            attributes: { type: "object" },
          }, ["userId", "version", "at", "segments"]),
          event(
            "session",
            {
              sessionId: { type: "string", minLength: 8 },
              userId,
              expiresAt: isoInstant,
              at: isoInstant,
            },
            ["sessionId", "userId", "expiresAt", "at"],
          ),
          event("session_end", { sessionId: { type: "string", minLength: 8 }, at: isoInstant }, [
            "sessionId",
            "at",
          ]),
          event("related", {
            itemId: id,
            version,
            related: {
              type: "array",
              maxItems: 500,
              items: {
                type: "object",
                required: ["itemId", "score"],
                properties: { itemId: id, score: { type: "number" } },
              },
            },
          }, ["itemId", "version", "related"]),
          event("erase", { userId: erasableUserId, at: isoInstant }, ["userId", "at"]),
          event("rules", {
            version,
            rules: { type: "object", description: "A rule set; its own `version`, if given, must match" },
            at: {
              ...isoInstant,
              description: "When the rule set was published; orders it against promotes and rollbacks " +
                "(without it, it sorts before every timed rules event). Required with `canary`",
            },
            canary: {
              type: "number",
              exclusiveMinimum: 0,
              exclusiveMaximum: 1,
              description: "Run this version as a canary for this share of visitors; the rest stay on the " +
                "active version. Without it the version becomes active",
            },
          }, ["version", "rules"]),
          event("rules_promote", { version, at: isoInstant }, ["version", "at"]),
          event("rules_rollback", { version, at: isoInstant }, ["version", "at"]),
        ],
      },
    },
  },
} as const;
