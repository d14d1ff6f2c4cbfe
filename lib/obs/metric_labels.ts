/**
 * @module
 * The closed label sets, buckets and label helpers of the metrics: every label value is drawn
 * from one of these, so the number of series stays bounded whatever the traffic.
 */
import type { ReadThroughOutcome } from "../data/backend.ts";

/** Pipeline stages timed per request, in order. */
export const STAGES = ["facts", "identity", "context", "decide", "act"] as const;
export type Stage = typeof STAGES[number];
/** Milliseconds; stages that did not run are left out. */
export type StageDurations = Partial<Record<Stage, number>>;

export type OriginErrorKind = "timeout" | "unavailable" | "5xx";

/** KV reads timed separately. */
export const KV_READS = ["session", "context", "related", "rules", "other"] as const;
export type KvRead = typeof KV_READS[number];

export type CacheResult = "hit" | "miss";

/** Outcomes of a backend read-through. */
export const READ_THROUGH_OUTCOMES = [
  "ok",
  "not_found",
  "timeout",
  "error",
  "breaker_open",
  "busy",
  "skipped",
] as const;
export type ReadThroughLabel = typeof READ_THROUGH_OUTCOMES[number];
/** Answered without a call to the backend: they have no latency. */
export const NO_CALL_OUTCOMES: ReadonlySet<string> = new Set(["breaker_open", "busy", "skipped"]);

export const BREAKER_STATES = ["closed", "half_open", "open"] as const;
export type BreakerState = typeof BREAKER_STATES[number];

/** What became of exposure events (`edge_exposure_events_total{result}`). */
export const EXPOSURE_RESULTS = ["queued", "sent", "retried", "dropped"] as const;
export type ExposureResult = typeof EXPOSURE_RESULTS[number];

/** For a request with no region (ops, sync). */
export const NO_REGION = "none";
/** Every region the rules do not know, to bound cardinality. */
export const OTHER = "other";
/** At most this many distinct region label values are kept; the rest count as {@linkcode OTHER}. */
export const MAX_REGIONS = 64;

/** Buckets for the whole request and the origin, in seconds (0.5 ms … 10 s). */
export const REQUEST_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];
/** Buckets for pipeline stages, in seconds (25 µs … 1 s): most stages take well under a millisecond. */
export const STAGE_BUCKETS: readonly number[] = [
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  1,
];
/** Buckets for KV reads and backend read-throughs, in seconds (0.1 ms … 2.5 s). */
export const KV_BUCKETS: readonly number[] = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];
/** Buckets for sync lag (now − event time), in seconds (50 ms … 1 h). */
export const SYNC_LAG_BUCKETS: readonly number[] = [
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
  900,
  3600,
];

/** `1xx` … `5xx`, or `other`. */
export function statusClass(status: number): string {
  if (status >= 100 && status < 600) return `${Math.floor(status / 100)}xx`;
  return OTHER;
}

/** Milliseconds as the seconds Prometheus expects; anything not a positive number counts as 0. */
export function seconds(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? ms / 1000 : 0;
}

/** Folds a value outside its closed set into `fallback`, so a bug upstream cannot create unbounded series. */
export function oneOf(value: string, allowed: readonly string[], fallback: string = OTHER): string {
  return allowed.includes(value) ? value : fallback;
}

/** Every read-through outcome onto the metric's bounded label set; the type keeps it total. */
const READ_THROUGH_LABELS: Readonly<Record<ReadThroughOutcome, ReadThroughLabel>> = {
  ok: "ok",
  skipped: "skipped",
  unknown_user: "not_found",
  invalid_events: "error",
  "failed:timeout": "timeout",
  "failed:breaker_open": "breaker_open",
  "failed:busy": "busy",
  "failed:network": "error",
  "failed:http_status": "error",
  "failed:redirect": "error",
  "failed:too_large": "error",
  "failed:invalid_body": "error",
  "failed:invalid_user_id": "error",
};

/** The context stage's read-through outcome as the metric's label. */
export function readThroughLabel(outcome: ReadThroughOutcome): ReadThroughLabel {
  return READ_THROUGH_LABELS[outcome];
}
