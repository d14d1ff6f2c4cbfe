/**
 * @module
 * The exposure event sent to the backend: its TypeScript shape and its JSON Schema (published in
 * `docs/exposure.schema.json`, which a test keeps identical).
 */

/**
 * The longest `path` an event carries; longer request paths are cut to it. A client chooses
 * the path, and every queued event holds its own copy until it is sent.
 */
export const EXPOSURE_PATH_MAX = 1024;

/** One exposure, as sent in `data.exposures` of an `edge.exposures` batch. */
export interface ExposureEvent {
  experiment: string;
  variation: string;
  /**
   * The bucketing key: the user id when logged in, else the anonymous id (`ep_uid`); under
   * `Sec-GPC: 1` always the anonymous id.
   */
  visitor: string;
  /** The logged-in user; absent for anonymous visitors and under `Sec-GPC: 1`. */
  userId?: string;
  rulesVersion: number;
  /** When the edge decided, ISO 8601 in UTC. */
  at: string;
  requestId: string;
  region: string;
  /** The device class: `mobile`, `tablet` or `desktop` (bots are never exposed). */
  device: string;
  /**
   * The request path the experiment was exposed on (no query string), cut to
   * {@linkcode EXPOSURE_PATH_MAX} characters.
   */
  path: string;
}

/** The JSON Schema (2020-12) of {@linkcode ExposureEvent}. */
export const EXPOSURE_EVENT_SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  title: "Exposure event",
  description: "One visitor seen in one variation of one experiment, the first time the edge served it " +
    "to them. Delivery is at least once: deduplicate batches by webhook-id (and, if wanted, events by " +
    "experiment + visitor).",
  type: "object",
  required: [
    "experiment",
    "variation",
    "visitor",
    "rulesVersion",
    "at",
    "requestId",
    "region",
    "device",
    "path",
  ],
  properties: {
    experiment: { type: "string", pattern: "^[A-Za-z0-9_.-]{1,64}$", description: "The experiment key" },
    variation: { type: "string", pattern: "^[A-Za-z0-9_.-]{1,64}$", description: "The variation served" },
    visitor: {
      type: "string",
      minLength: 1,
      maxLength: 256,
      description: "The bucketing key: the user id when logged in, else the anonymous id (ep_uid cookie); " +
        "under Sec-GPC: 1 always the anonymous id",
    },
    userId: {
      type: "string",
      pattern: "^[A-Za-z0-9_.:@-]{1,128}$",
      description: "The logged-in user; absent for anonymous visitors and under Sec-GPC: 1",
    },
    rulesVersion: { type: "integer", minimum: 0, description: "The rules version that decided" },
    at: { type: "string", format: "date-time", description: "When the edge decided (ISO 8601, UTC)" },
    requestId: { type: "string", minLength: 1, maxLength: 128, description: "The request's X-Request-Id" },
    region: { type: "string", description: "The region the edge resolved" },
    device: {
      enum: ["mobile", "tablet", "desktop"],
      description: "The device class (bots are never exposed)",
    },
    path: {
      type: "string",
      maxLength: EXPOSURE_PATH_MAX,
      description: `The request path (no query string), cut to its first ${EXPOSURE_PATH_MAX} characters`,
    },
  },
  additionalProperties: false,
} as const;
