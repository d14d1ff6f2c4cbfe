/**
 * @module
 * The metric families of `EdgeMetrics`, with their names, help texts, labels and
 * buckets: what a scraper sees.
 */
import { KV_BUCKETS, REQUEST_BUCKETS, STAGE_BUCKETS, SYNC_LAG_BUCKETS } from "./metric_labels.ts";
import {
  Counter,
  Gauge,
  Histogram,
  type Registry,
  RequestPathCounter,
  RequestPathHistogram,
} from "./metric_series.ts";

/** The memory figures reported (`Deno.memoryUsage()` fits). */
export interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
}

/** Options for {@linkcode createMetricFamilies}. */
export interface MetricFamiliesOptions {
  /** Metric name prefix. */
  prefix: string;
  /** Read at each scrape for the memory gauge; without it there is none. */
  memoryUsage?: () => MemoryUsage;
  /** V8's heap limit, when known, reported beside the memory figures. */
  heapLimit: () => number | undefined;
}

/** The families, created and registered by {@linkcode createMetricFamilies}. */
export type MetricFamilies = ReturnType<typeof createMetricFamilies>;

/**
 * Creates every metric family in a registry, in exposition order. The series every request touches
 * use the request-path classes of `metric_series.ts`; the rest are prom-client's. It is longer than
 * ~60 lines because it is one declaration per family: the exposition's schema in one place.
 */
export function createMetricFamilies(registry: Registry, options: MetricFamiliesOptions) {
  const p = options.prefix;
  const registers = [registry];
  const families = {
    requests: new RequestPathCounter({
      name: `${p}requests_total`,
      help: "Requests answered, by route class, status class and region.",
      labelNames: ["route_class", "status_class", "region"],
      registry,
    }),
    requestDuration: new RequestPathHistogram({
      name: `${p}request_duration_seconds`,
      help: "Time from receiving a request to its response headers, by route class and region.",
      labelNames: ["route_class", "region"],
      buckets: REQUEST_BUCKETS,
      registry,
    }),
    overhead: new RequestPathHistogram({
      name: `${p}overhead_duration_seconds`,
      help: "The edge's own share of each request: request duration minus time waiting for the origin.",
      labelNames: ["route_class", "region"],
      buckets: STAGE_BUCKETS,
      registry,
    }),
    stageDuration: new RequestPathHistogram({
      name: `${p}stage_duration_seconds`,
      help: "Time spent in each pipeline stage (facts, identity, context, decide, act), by region.",
      labelNames: ["stage", "region"],
      buckets: STAGE_BUCKETS,
      registry,
    }),
    originDuration: new RequestPathHistogram({
      name: `${p}origin_duration_seconds`,
      help: "Time to the origin's response headers, by status class (error when none came).",
      labelNames: ["status_class"],
      buckets: REQUEST_BUCKETS,
      registry,
    }),
    originErrors: new Counter({
      name: `${p}origin_errors_total`,
      help: "Failed origin requests, by kind (timeout, unavailable, 5xx).",
      labelNames: ["kind"],
      registers,
    }),
    htmlRewriteBailouts: new Counter({
      name: `${p}html_rewrite_bailouts_total`,
      help:
        "HTML pages whose rewrite stopped at a cap (bytes: HTML_REWRITE_MAX_BYTES, time: HTML_REWRITE_MAX_MS); the rest passed through unrewritten.",
      labelNames: ["cap"],
      registers,
    }),
    // Every KV read of the request path (session, context, related lists) is recorded here, so it
    // is kept outside prom-client like the other per-request series.
    kvRead: new RequestPathHistogram({
      name: `${p}kv_read_duration_seconds`,
      help: "Deno KV read latency, by what was read; a read cut at KV_TIMEOUT_MS counts the time waited.",
      labelNames: ["read"],
      buckets: KV_BUCKETS,
      registry,
    }),
    contextCache: new RequestPathCounter({
      name: `${p}context_cache_total`,
      help: "Per-isolate context cache lookups, by result (hit, miss).",
      labelNames: ["result"],
      registry,
    }),
    readThrough: new Counter({
      name: `${p}read_through_total`,
      help: "Backend read-throughs, by outcome.",
      labelNames: ["outcome"],
      registers,
    }),
    readThroughDuration: new Histogram({
      name: `${p}read_through_duration_seconds`,
      help: "Backend read-through latency, by outcome.",
      labelNames: ["outcome"],
      buckets: [...KV_BUCKETS],
      registers,
    }),
    breaker: new Gauge({
      name: `${p}read_through_breaker_state`,
      help: "Read-through circuit breaker: 1 for the current state, 0 for the others.",
      labelNames: ["state"],
      registers,
    }),
    syncEvents: new Counter({
      name: `${p}sync_events_total`,
      help: "Sync results: applied and stale count events; rejected, duplicate and busy count whole pushes.",
      labelNames: ["result"],
      registers,
    }),
    syncLag: new Histogram({
      name: `${p}sync_lag_seconds`,
      help: "Sync lag of each received event: time of receipt minus the event's own time.",
      buckets: [...SYNC_LAG_BUCKETS],
      registers,
    }),
    rulesVersion: new Gauge({
      name: `${p}rules_version`,
      help: "Rule set version in use, by role (active, canary).",
      labelNames: ["role"],
      registers,
    }),
    cacheSize: new Gauge({
      name: `${p}context_cache_size`,
      help: "Per-isolate context cache size, by unit (entries, bytes).",
      labelNames: ["unit"],
      registers,
    }),
    exposures: new RequestPathCounter({
      name: `${p}experiment_exposures_total`,
      help: "Visitors exposed to an experiment's variation for the first time, by experiment and variation.",
      labelNames: ["experiment", "variation"],
      registry,
    }),
    exposureEvents: new RequestPathCounter({
      name: `${p}exposure_events_total`,
      help: "Exposure events by delivery result: queued, sent, retried (per failed attempt), dropped.",
      labelNames: ["result"],
      registry,
    }),
    exposureQueue: new Gauge({
      name: `${p}exposure_queue_events`,
      help: "Exposure events waiting for delivery (queued and in the batch being delivered).",
      registers,
    }),
    flagEvaluations: new RequestPathCounter({
      name: `${p}flag_evaluations_total`,
      help: "Flag evaluations of the request pipeline, by flag and variant.",
      labelNames: ["flag", "variant"],
      registry,
    }),
    srmPValue: new Gauge({
      name: `${p}experiment_srm_p_value`,
      help: "Chi-square p-value of each running experiment's exposures on this instance against its weights.",
      labelNames: ["experiment"],
      registers,
    }),
    // Exported so that an alert can tell a cache full at its bound (thrashing) from one that is
    // merely cold: the bounds are configuration the scraper cannot see otherwise.
    cacheLimit: new Gauge({
      name: `${p}context_cache_limit`,
      help: "Per-isolate context cache bounds, by unit (entries, bytes): CONTEXT_CACHE_MAX_*.",
      labelNames: ["unit"],
      registers,
    }),
  };
  if (options.memoryUsage) registerMemoryGauge(registers, p, options.memoryUsage, options.heapLimit);
  return families;
}

function registerMemoryGauge(
  registers: Registry[],
  p: string,
  memoryUsage: () => MemoryUsage,
  heapLimit: () => number | undefined,
): void {
  new Gauge({
    name: `${p}process_memory_bytes`,
    help: "Process memory at scrape time, by area (rss, heap_total, heap_used, external, heap_limit).",
    labelNames: ["area"],
    registers,
    collect() {
      try {
        const usage = memoryUsage();
        this.set({ area: "rss" }, usage.rss);
        this.set({ area: "heap_total" }, usage.heapTotal);
        this.set({ area: "heap_used" }, usage.heapUsed);
        this.set({ area: "external" }, usage.external);
      } catch {
        // A host without memory figures leaves the gauge empty rather than failing the scrape.
      }
      const limit = heapLimit();
      if (limit !== undefined) this.set({ area: "heap_limit" }, limit);
    },
  });
}
