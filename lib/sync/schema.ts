/**
 * @module
 * The wire contract of `POST /_edge/sync`: zod schemas of the envelope and of every event kind
 * (unknown extra fields are accepted and dropped), and validation that reports every invalid
 * event by index and field so that a batch is applied whole or not at all.
 */
import { exceedsJsonDepth, MAX_JSON_DEPTH } from "../support/json_limits.ts";
import { z } from "zod";
import { EdgeError } from "../http/errors.ts";
import { reservedKeyProblems, RuleSetSchema, rulesIssueMessage } from "../rules/schema.ts";
import { parseRules, RulesError } from "../rules/compile.ts";
import { USER_ID } from "../pipeline/identity.ts";
import { bytesPerChar } from "../support/memory_size.ts";

/** Most events one batch may carry. */
export const MAX_EVENTS_PER_BATCH = 1000;

/** Largest stored size ({@linkcode storedBytes}) of a cart, profile, related or rules event: well under KV's 64 KiB. */
export const MAX_EVENT_BYTES = 48 * 1024;

/**
 * An upper bound of a JSON value's size as Deno KV stores it (V8's serialisation): a string
 * takes one byte a character when every character is Latin-1, else two (so one "€" doubles the
 * whole string's cost, which UTF-8 JSON would hide), plus a few bytes of framing per value.
 * @param value a JSON value
 * @returns the bound, in bytes
 */
export function storedBytes(value: unknown): number {
  if (typeof value === "string") return bytesPerChar(value) * value.length + 6;
  if (typeof value === "number") return 9;
  if (value === null || typeof value !== "object") return 1;
  let bytes = 6;
  if (Array.isArray(value)) {
    for (const item of value) bytes += storedBytes(item);
    return bytes;
  }
  for (const [key, item] of Object.entries(value)) bytes += storedBytes(key) + storedBytes(item);
  return bytes;
}

const wellFormed = (value: string) => value.isWellFormed();
const NOT_WELL_FORMED = "must be well-formed Unicode (no lone surrogates)";
/** Item ids: any well-formed text (they reach the origin percent-encoded). */
const Id = z.string().min(1, "must not be empty").max(256, "must be at most 256 characters")
  .refine(wellFormed, NOT_WELL_FORMED);
/** User ids: the identity stage's alphabet, since the origin gets them as `x-edge-user` as they are. */
const UserId = z.string().regex(USER_ID, "must be 1–128 characters of A–Z, a–z, 0–9, _ . : @ -");
/** Any {@linkcode Id} (the rule before {@linkcode UserId}), so users stored before the alphabet can be erased. */
const ErasableUserId = Id.meta({
  description:
    "any id of 1–256 characters (well-formed Unicode), so that ids stored before the user id alphabet may still be erased",
});
const Version = z.number().int("must be a whole number").nonnegative("must not be negative").max(
  Number.MAX_SAFE_INTEGER,
);
const Instant = z.iso.datetime({ offset: true, error: "must be an ISO 8601 date-time with a time zone" })
  .transform((value) => Date.parse(value));

const ViewEvent = z.object({ kind: z.literal("view"), userId: UserId, itemId: Id, at: Instant });
const CartEvent = z.object({
  kind: z.literal("cart"),
  userId: UserId,
  version: Version,
  at: Instant,
  items: z.array(z.object({ itemId: Id, qty: z.number().int().nonnegative().max(1_000_000) })).max(500),
});
const ProfileEvent = z.object({
  kind: z.literal("profile"),
  userId: UserId,
  version: Version,
  at: Instant,
  segments: z.array(z.string().min(1).max(128).refine(wellFormed, NOT_WELL_FORMED)).max(200),
  attributes: z.record(z.string().max(128), z.json()).default({}),
});
const SessionEvent = z.object({
  kind: z.literal("session"),
  sessionId: z.string().min(8, "must be at least 8 characters").max(1024),
  userId: UserId,
  expiresAt: Instant,
  at: Instant,
});
const SessionEndEvent = z.object({
  kind: z.literal("session_end"),
  sessionId: z.string().min(8, "must be at least 8 characters").max(1024),
  at: Instant,
});
const RelatedEvent = z.object({
  kind: z.literal("related"),
  itemId: Id,
  version: Version,
  related: z.array(z.object({ itemId: Id, score: z.number() })).max(500),
});
const EraseEvent = z.object({ kind: z.literal("erase"), userId: ErasableUserId, at: Instant });
const RulesEvent = z.object({
  kind: z.literal("rules"),
  version: Version,
  // Taken as it is (a record schema would drop a "__proto__" key before it could be refused).
  rules: z.custom<Record<string, unknown>>(
    (value) => typeof value === "object" && value !== null && !Array.isArray(value),
    { message: "must be an object" },
  ).meta({ type: "object", description: "A rule set; its own `version`, if given, must match" }),
  at: Instant.optional().meta({
    description: "When the rule set was published; orders it against promotes and rollbacks " +
      "(without it, it sorts before every timed rules event). Required with `canary`",
  }),
  canary: z.number({ error: "must be a number" }).gt(0, "must be greater than 0").lt(1, "must be less than 1")
    .optional().meta({
      description: "Run this version as a canary for this share of visitors; the rest stay on the " +
        "active version. Without it the version becomes active",
    }),
}).transform((event, ctx) => {
  if (event.canary !== undefined && event.at === undefined) {
    ctx.addIssue({ code: "custom", path: ["at"], message: 'is required with "canary"' });
    return z.NEVER;
  }
  const reserved = reservedKeyProblems(event.rules);
  if (reserved.length) {
    for (const { path, message } of reserved) {
      ctx.addIssue({ code: "custom", path: ["rules", ...path.map(String)], message });
    }
    return z.NEVER;
  }
  // The rule set's own version may be left out; when given it must match the event's.
  const candidate = { ...event.rules, version: event.rules.version ?? event.version };
  const parsed = RuleSetSchema.safeParse(candidate);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      ctx.addIssue({
        code: "custom",
        path: ["rules", ...issue.path.map(String)],
        message: rulesIssueMessage(issue),
      });
    }
    return z.NEVER;
  }
  if (parsed.data.version !== event.version) {
    ctx.addIssue({
      code: "custom",
      path: ["rules", "version"],
      message: 'must equal the event\'s "version"',
    });
    return z.NEVER;
  }
  try {
    // The full validation of a rules file (cross-references included): what fails here is
    // answered 400 and never stored, so it can never become active or canary.
    parseRules(parsed.data, "rules");
  } catch (error) {
    if (!(error instanceof RulesError)) throw error;
    for (const problem of error.problems) ctx.addIssue({ code: "custom", path: ["rules"], message: problem });
    return z.NEVER;
  }
  return {
    kind: event.kind,
    version: event.version,
    rules: parsed.data,
    at: event.at,
    canary: event.canary,
  };
});
const RulesPromoteEvent = z.object({ kind: z.literal("rules_promote"), version: Version, at: Instant });
const RulesRollbackEvent = z.object({ kind: z.literal("rules_rollback"), version: Version, at: Instant });

/** Event kinds of the wire contract. */
export const EVENT_KINDS = [
  "view",
  "cart",
  "profile",
  "session",
  "session_end",
  "related",
  "erase",
  "rules",
  "rules_promote",
  "rules_rollback",
] as const;

/** A validated view event (`at` in epoch ms). */
export type ViewEvent = z.output<typeof ViewEvent>;
/** A validated cart event. */
export type CartEvent = z.output<typeof CartEvent>;
/** A validated profile event. */
export type ProfileEvent = z.output<typeof ProfileEvent>;
/** A validated session event (`at`, `expiresAt` in epoch ms). */
export type SessionEvent = z.output<typeof SessionEvent>;
/** A validated session-end event. */
export type SessionEndEvent = z.output<typeof SessionEndEvent>;
/** A validated related-items event. */
export type RelatedEvent = z.output<typeof RelatedEvent>;
/** A validated erasure event. */
export type EraseEvent = z.output<typeof EraseEvent>;
/** A validated rules event; `rules` has passed `parseRules`; `at` in epoch ms when given. */
export type RulesEvent = z.output<typeof RulesEvent>;
/** A validated promote event: makes a kept rules version active. */
export type RulesPromoteEvent = z.output<typeof RulesPromoteEvent>;
/** A validated rollback event: makes a kept rules version active and ends the canary. */
export type RulesRollbackEvent = z.output<typeof RulesRollbackEvent>;
/** Any validated event; instants are epoch milliseconds. */
export type SyncEvent =
  | ViewEvent
  | CartEvent
  | ProfileEvent
  | SessionEvent
  | SessionEndEvent
  | RelatedEvent
  | EraseEvent
  | RulesEvent
  | RulesPromoteEvent
  | RulesRollbackEvent;

/** The schema of each event kind, in the order of {@linkcode EVENT_KINDS}. */
export const EVENT_SCHEMAS = new Map<string, z.ZodType<SyncEvent>>([
  ["view", ViewEvent],
  ["cart", CartEvent],
  ["profile", ProfileEvent],
  ["session", SessionEvent],
  ["session_end", SessionEndEvent],
  ["related", RelatedEvent],
  ["erase", EraseEvent],
  ["rules", RulesEvent],
  ["rules_promote", RulesPromoteEvent],
  ["rules_rollback", RulesRollbackEvent],
]);

/** The envelope around a batch; `events` are validated one by one. */
export const SyncPayloadSchema = z.object({
  type: z.literal("edge.sync", { error: 'must be "edge.sync"' }),
  timestamp: z.iso.datetime({ offset: true, error: "must be an ISO 8601 date-time with a time zone" }),
  data: z.object({ events: z.array(z.unknown()) }),
});

/** One problem with one event of a batch. */
export interface EventProblem {
  /** Position of the event in `data.events`. */
  index: number;
  /** Dotted path of the offending field inside the event, or `(event)`. */
  field: string;
  message: string;
}

/** The batch is not acceptable; nothing of it may be applied. */
export class SyncPayloadError extends EdgeError {
  constructor(status: number, code: string, message: string, details?: Record<string, unknown>) {
    super(status, code, message, details);
    this.name = "SyncPayloadError";
  }
}

/**
 * Validates one event.
 * @param input the event as received
 * @returns the event, or the problems found (with index 0; callers set the real index)
 */
export function parseSyncEvent(
  input: unknown,
): { event: SyncEvent } | { problems: Omit<EventProblem, "index">[] } {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return { problems: [{ field: "(event)", message: "must be an object" }] };
  }
  const kind = "kind" in input ? input.kind : undefined;
  const schema = typeof kind === "string" ? EVENT_SCHEMAS.get(kind) : undefined;
  if (!schema) return { problems: [{ field: "kind", message: `must be one of ${EVENT_KINDS.join(", ")}` }] };
  // Checked first: the recursive schemas (attributes, rules) would overflow the stack.
  if (exceedsJsonDepth(input)) {
    return {
      problems: [{ field: "(event)", message: `must not be nested more than ${MAX_JSON_DEPTH} levels deep` }],
    };
  }
  const result = schema.safeParse(input);
  if (!result.success) {
    return {
      problems: result.error.issues.map((issue) => ({
        field: issue.path.length ? issue.path.join(".") : "(event)",
        message: issue.message,
      })),
    };
  }
  const event = result.data;
  if (
    event.kind === "cart" || event.kind === "profile" || event.kind === "related" || event.kind === "rules"
  ) {
    if (storedBytes(event) > MAX_EVENT_BYTES) {
      return {
        problems: [{
          field: "(event)",
          message:
            `must be at most ${MAX_EVENT_BYTES} bytes as stored (text beyond Latin-1 counts two bytes a ` +
            "character)",
        }],
      };
    }
  }
  return { event };
}

/**
 * Validates a list of events as one all-or-nothing batch.
 * @param events the events as received
 * @returns the validated events, in order
 * @throws {SyncPayloadError} 413 `too_many_events` above {@linkcode MAX_EVENTS_PER_BATCH};
 * 400 `invalid_events` listing every problem of every invalid event
 */
export function parseSyncEvents(events: readonly unknown[]): SyncEvent[] {
  if (events.length > MAX_EVENTS_PER_BATCH) {
    throw new SyncPayloadError(
      413,
      "too_many_events",
      `A batch may carry at most ${MAX_EVENTS_PER_BATCH} events`,
      { maxEvents: MAX_EVENTS_PER_BATCH },
    );
  }
  const valid: SyncEvent[] = [];
  const problems: EventProblem[] = [];
  events.forEach((input, index) => {
    const result = parseSyncEvent(input);
    if ("event" in result) valid.push(result.event);
    else for (const problem of result.problems) problems.push({ index, ...problem });
  });
  if (problems.length) {
    const count = new Set(problems.map((problem) => problem.index)).size;
    throw new SyncPayloadError(
      400,
      "invalid_events",
      `${count} of ${events.length} events are invalid; nothing was applied`,
      { events: problems },
    );
  }
  return valid;
}

/**
 * Validates a whole sync payload (already parsed from JSON).
 * @param input the payload
 * @returns the validated events
 * @throws {SyncPayloadError} 400 `invalid_payload` for a bad envelope, else as {@linkcode parseSyncEvents}
 */
export function parseSyncPayload(input: unknown): SyncEvent[] {
  const envelope = SyncPayloadSchema.safeParse(input);
  if (!envelope.success) {
    throw new SyncPayloadError(400, "invalid_payload", "The payload is not an edge.sync envelope", {
      problems: envelope.error.issues.map((issue) => ({
        field: issue.path.length ? issue.path.join(".") : "(payload)",
        message: issue.message,
      })),
    });
  }
  return parseSyncEvents(envelope.data.data.events);
}
