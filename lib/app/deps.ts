/**
 * @module
 * Every side effect and shared object the service uses, created once (`createDeps` or a test) so
 * that nothing else reaches for globals.
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
import type { HtmlRewriterLoader } from "../origin/html_rewriter.ts";

/** Everything the request pipeline needs from the outside world. */
export interface Deps {
  config: Config;
  kv: Deno.Kv;
  fetch: typeof fetch;
  now: () => number;
  /** Monotonic, sub-millisecond clock for durations (the wall clock can jump). */
  mono: () => number;
  randomId: () => string;
  log: Logger;
  rules: RulesStore;
  uaCache: UaCache;
  /** The bundled IP → country database; undefined when it could not be loaded. */
  ipGeo: IpGeoDb | undefined;
  /** Per-isolate caches, each bounded in entries and staleness (contexts also in bytes). */
  sessionCache: SessionCache;
  relatedCache: RelatedCache;
  contextCache: ContextCache;
  stickySigner: StickySigner;
  /** Read-through client for the central backend; undefined without `BACKEND_URL`. */
  backend: BackendClient | undefined;
  metrics: EdgeMetrics;
  /** One timer for every origin timeout of the isolate. */
  deadlines: DeadlineSweep;
  tracer: StageTracer | undefined;
  /** Hands work that a response need not wait for to the process (awaited on shutdown). */
  waitUntil: (work: Promise<unknown>) => void;
  exposures: ExposureRecorder;
  /** The isolate's lol-html instance, replaced after a page that grew its memory. */
  htmlRewriter: HtmlRewriterLoader;
  /** Writes a sampled, redacted decision log line; returns whether this request was sampled. */
  logDecision: (inputs: DecisionLogInputs) => boolean;
}
