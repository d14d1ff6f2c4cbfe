/**
 * @module
 * The OpenAPI 3.1 description of the webhook the edge sends: `POST {EXPOSURES_URL}` with a
 * signed batch of exposure events, for a backend to implement the receiving end in any language
 * with an off-the-shelf Standard Webhooks library. Written to `docs/exposures_openapi.json`
 * (with the event schema in `docs/exposure.schema.json`) by `deno task exposures:schema`; a test
 * keeps the files identical.
 */
import { EXPOSURE_EVENT_SCHEMA } from "./events.ts";
import { EXPOSURES_EVENT_TYPE } from "./sender.ts";

const { $schema: _, ...eventSchema } = EXPOSURE_EVENT_SCHEMA;

/** The OpenAPI document of the outbound exposures webhook. */
export const EXPOSURES_OPENAPI = {
  openapi: "3.1.0",
  info: {
    title: "Edge Personalizer exposure events",
    version: "1.0.0",
    description:
      "Batches of exposure events the edge posts to EXPOSURES_URL, signed with Standard Webhooks " +
      "v1 (HMAC-SHA256 over `webhook-id.webhook-timestamp.body` with the EXPOSURES_SECRET `whsec_` secret). " +
      "Delivery is at least once: a batch that got no 2xx is sent again with the same webhook-id and body " +
      "(a new webhook-timestamp and signature), so deduplicate by webhook-id. Each instance (and each " +
      "`deno serve --parallel` worker) sends its own batches; their order is not guaranteed.",
  },
  webhooks: {
    exposures: {
      post: {
        operationId: "receiveExposures",
        summary: "Receive a batch of exposure events",
        security: [{ standardWebhooks: [] }],
        parameters: [
          {
            name: "webhook-id",
            in: "header",
            required: true,
            schema: { type: "string", pattern: "^msg_" },
            description: "Unique per batch and kept across retries: the idempotency key",
          },
          {
            name: "webhook-timestamp",
            in: "header",
            required: true,
            schema: { type: "string", pattern: "^[0-9]+$" },
            description:
              "Epoch seconds of this attempt; reject it outside your tolerance (Standard Webhooks: 5 min)",
          },
          {
            name: "webhook-signature",
            in: "header",
            required: true,
            schema: { type: "string" },
            description: "`v1,<base64>`",
          },
        ],
        requestBody: {
          required: true,
          description: "At most EXPOSURES_BATCH_MAX events (default 500)",
          content: { "application/json": { schema: { $ref: "#/components/schemas/ExposureBatch" } } },
        },
        responses: {
          "2XX": {
            description: "Taken (also for a webhook-id already received): the batch is not sent again",
          },
          "408": { description: "Retried later with the same webhook-id" },
          "429": { description: "Retried later (after Retry-After, at most 5 s) with the same webhook-id" },
          "5XX": { description: "Retried later (after Retry-After, at most 5 s) with the same webhook-id" },
          default: {
            description: "Any other answer (3xx, other 4xx) drops the batch; the edge logs an error",
          },
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
      ExposureBatch: {
        type: "object",
        required: ["type", "timestamp", "data"],
        properties: {
          type: { const: EXPOSURES_EVENT_TYPE },
          timestamp: { type: "string", format: "date-time", description: "When the batch was made" },
          data: {
            type: "object",
            required: ["exposures"],
            properties: {
              exposures: {
                type: "array",
                minItems: 1,
                maxItems: 10_000,
                items: { $ref: "#/components/schemas/Exposure" },
              },
            },
          },
        },
      },
      Exposure: eventSchema,
    },
  },
} as const;
