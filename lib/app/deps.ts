/**
 * @module
 * The `Deps` object: every side effect and shared object the service uses, created once in
 * `main.ts` (or a test) and handed to `createApp`. Nothing else reaches for globals.
 */
import type { Config } from "./config.ts";
import type { Logger } from "../obs/log.ts";
import type { RulesStore } from "../rules/store.ts";
import type { UaCache } from "../pipeline/device.ts";
import type { IpGeoDb } from "../pipeline/ip_geo.ts";
import type { ContextCache } from "../data/context_cache.ts";
import type { SessionCache } from "../data/session_cache.ts";
import type { RelatedCache } from "../data/related_cache.ts";
import type { BackendClient } from "../data/backend.ts";
import type { EdgeMetrics } from "../obs/metrics.ts";
import type { StageTracer } from "../obs/tracing.ts";
import type { DecisionLogInputs } from "../obs/decision_log.ts";
import type { DeadlineSweep } from "../support/deadlines.ts";
import type { ExposureRecorder } from "../exposures/recorder.ts";
import type { StickySigner } from "../pipeline/sticky.ts";

/** Everything the request pipeline needs from the outside world. */
export interface Deps {
  config: Config;
  kv: Deno.Kv;
  /** Used for every request to the origin. */
  fetch: typeof fetch;
  /** Wall clock, epoch milliseconds. */
  now: () => number;
  /** Monotonic clock in milliseconds with sub-millisecond precision, for durations. */
  mono: () => number;
  /** Random identifiers (request ids). */
  randomId: () => string;
  log: Logger;
  rules: RulesStore;
  /** Bounded cache of parsed User-Agent strings. */
  uaCache: UaCache;
  /** The bundled IP → country database; undefined when it could not be loaded. */
  ipGeo: IpGeoDb | undefined;
  /** Per-isolate cache of session lookups (bounded entries and staleness). */
  sessionCache: SessionCache;
  /** Per-isolate cache of pushed related-item lists (bounded entries and staleness). */
  relatedCache: RelatedCache;
  /** Per-isolate cache of user contexts (bounded entries, bytes and staleness). */
  contextCache: ContextCache;
  /** Signs and verifies the sticky-assignment cookie (`STICKY_SECRET`), with its memo of verified values. */
  stickySigner: StickySigner;
  /** Read-through client for the central backend; undefined without `BACKEND_URL`. */
  backend: BackendClient | undefined;
  metrics: EdgeMetrics;
  /** One timer for every origin timeout of the isolate. */
  deadlines: DeadlineSweep;
  /** Records pipeline stages as OpenTelemetry spans; undefined when tracing is off. */
  tracer: StageTracer | undefined;
  /** Hands work that a response need not wait for to the process (awaited on shutdown). */
  waitUntil: (work: Promise<unknown>) => void;
  /** Records what each decided request exposed the visitor to (and queues exposure events). */
  exposures: ExposureRecorder;
  /** Writes a sampled, redacted decision log line; returns whether this request was sampled. */
  logDecision: (inputs: DecisionLogInputs) => boolean;
}
