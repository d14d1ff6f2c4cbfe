/**
 * @module
 * The metrics registry: request, stage, origin, KV, cache, read-through, sync and rules metrics
 * in the Prometheus text format, on top of `prom-client`. One {@linkcode EdgeMetrics} object is
 * created in `main.ts` and handed around; every label value is drawn from a closed set so the
 * number of series stays bounded whatever the traffic (no user ids, no raw paths, regions capped
 * to the ones the rules know).
 */
import type * as PromClient from "prom-client";
// The package's index also loads its push gateway (node:http, node:https, node:zlib), cluster
// aggregation and default process metrics, none of which is used here: importing the metric
// classes alone cut prom-client's share of start-up from ~120–190 ms to ~13–50 ms. The deep
// modules have no type declarations, hence the casts to the package's own types.
import RegistryModule from "prom-client/lib/registry.js";
import CounterModule from "prom-client/lib/counter.js";
import GaugeModule from "prom-client/lib/gauge.js";
import HistogramModule from "prom-client/lib/histogram.js";
import { ROUTE_CLASSES, type RouteClass } from "../http/paths.ts";

const Registry = RegistryModule as unknown as typeof PromClient.Registry;
type Registry = PromClient.Registry;
const Counter = CounterModule as unknown as typeof PromClient.Counter;
type Counter<T extends string = string> = PromClient.Counter<T>;
const Gauge = GaugeModule as unknown as typeof PromClient.Gauge;
type Gauge<T extends string = string> = PromClient.Gauge<T>;
const Histogram = HistogramModule as unknown as typeof PromClient.Histogram;
type Histogram<T extends string = string> = PromClient.Histogram<T>;

/** One series of a {@linkcode RequestPathHistogram}. */
interface HistogramSeries {
  labels: Record<string, string>;
  /** Observations per bucket (not cumulative); above the last bound only `count` grows. */
  buckets: Float64Array;
  sum: number;
  count: number;
}

/**
 * A histogram for the series every request touches. prom-client's `observe` validates the
 * label object and hashes it on every call (a closure and a sort each time; ~0.5 µs, seven or
 * eight times per request); this one finds its series in a map by its label values and
 * renders exactly what prom-client's histogram renders, through the same registry.
 */
class RequestPathHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #labelNames: readonly [string] | readonly [string, string];
  readonly #bounds: readonly number[];
  readonly #series = new Map<string, HistogramSeries>();

  constructor(options: {
    name: string;
    help: string;
    labelNames: readonly [string] | readonly [string, string];
    buckets: readonly number[];
    registry: Registry;
  }) {
    this.name = options.name;
    this.help = options.help;
    this.#labelNames = options.labelNames;
    this.#bounds = [...options.buckets];
    options.registry.registerMetric(this as unknown as PromClient.Metric);
  }

  /**
   * Records one value.
   *
   * @param first the first label's value (already from a closed set)
   * @param second the second label's value, for a histogram with two labels
   * @param value the observation
   */
  observe(first: string, second: string, value: number): void {
    // One flat map, keyed by the label values in order.
    const key = second === "" ? first : `${first}\u0000${second}`;
    let series = this.#series.get(key);
    if (!series) {
      const labels: Record<string, string> = { [this.#labelNames[0]]: first };
      if (this.#labelNames[1] !== undefined) labels[this.#labelNames[1]] = second;
      series = { labels, buckets: new Float64Array(this.#bounds.length), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    const bounds = this.#bounds;
    // prom-client counts a value in the first bucket whose bound is at least the value.
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    if (i < bounds.length) series.buckets[i]!++;
    series.sum += value;
    series.count++;
  }

  /** Forgets every series (prom-client's `registry.resetMetrics()`). */
  reset(): void {
    this.#series.clear();
  }

  /** The series as prom-client's `get()` gives them: every label on each value. */
  get(): { name: string; help: string; type: string; values: unknown[]; aggregator: string } {
    const data = this.getForPromString();
    const values = data.values.map((value) => {
      const { labels, sharedLabels, ...rest } = value as { labels: object; sharedLabels: object };
      return { ...rest, labels: { ...labels, ...sharedLabels } };
    });
    return { ...data, values };
  }

  /** The series in the shape prom-client's registry renders (series labels shared per series). */
  getForPromString(): { name: string; help: string; type: string; values: unknown[]; aggregator: string } {
    const values: unknown[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const series of this.#series.values()) {
      let cumulative = 0;
      this.#bounds.forEach((bound, i) => {
        cumulative += series.buckets[i]!;
        values.push({
          labels: { le: bound },
          sharedLabels: series.labels,
          value: cumulative,
          metricName: bucketName,
        });
      });
      values.push({
        labels: { le: "+Inf" },
        sharedLabels: series.labels,
        value: series.count,
        metricName: bucketName,
      });
      values.push({
        labels: {},
        sharedLabels: series.labels,
        value: series.sum,
        metricName: `${this.name}_sum`,
      });
      values.push({
        labels: {},
        sharedLabels: series.labels,
        value: series.count,
        metricName: `${this.name}_count`,
      });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** A counter for the series every request touches; see {@linkcode RequestPathHistogram}. */
class RequestPathCounter {
  readonly name: string;
  readonly help: string;
  readonly type = "counter";
  readonly aggregator = "sum";
  readonly #labelNames: readonly string[];
  readonly #series = new Map<string, { labels: Record<string, string>; value: number }>();

  constructor(options: { name: string; help: string; labelNames: readonly string[]; registry: Registry }) {
    this.name = options.name;
    this.help = options.help;
    this.#labelNames = options.labelNames;
    options.registry.registerMetric(this as unknown as PromClient.Metric);
  }

  /**
   * Adds to one series (0 creates it, so that it is reported before its first event).
   *
   * @param values the label values, in the order of the label names (already from closed sets)
   * @param by how much
   */
  inc(values: readonly string[], by = 1): void {
    const key = values.length === 1 ? values[0]! : values.join("\u0000");
    let series = this.#series.get(key);
    if (!series) {
      const labels: Record<string, string> = {};
      this.#labelNames.forEach((name, i) => labels[name] = values[i]!);
      this.#series.set(key, series = { labels, value: 0 });
    }
    series.value += by;
  }

  /** Forgets every series (prom-client's `registry.resetMetrics()`). */
  reset(): void {
    this.#series.clear();
  }

  /** The series in prom-client's shape, for the registry. */
  get(): { name: string; help: string; type: string; values: unknown[]; aggregator: string } {
    const values = [...this.#series.values()].map(({ labels, value }) => ({ labels: { ...labels }, value }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** Pipeline stages timed per request, in order. */
export const STAGES = ["facts", "identity", "context", "decide", "act"] as const;
/** A pipeline stage. */
export type Stage = typeof STAGES[number];
/** Per-stage durations in milliseconds; stages that did not run are left out. */
export type StageDurations = Partial<Record<Stage, number>>;

/** Why a request to the origin failed. */
export type OriginErrorKind = "timeout" | "unavailable" | "5xx";

/** KV reads timed separately. */
export const KV_READS = ["session", "context", "related", "rules", "other"] as const;
/** What a KV read was for. */
export type KvRead = typeof KV_READS[number];

/** Outcomes of the per-isolate context cache. */
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
/** How a backend read-through ended. */
export type ReadThroughOutcome = typeof READ_THROUGH_OUTCOMES[number];
/** Read-through outcomes answered without a call to the backend: they have no latency. */
const NO_CALL_OUTCOMES: ReadonlySet<string> = new Set(["breaker_open", "busy", "skipped"]);

/** States of the read-through circuit breaker. */
export const BREAKER_STATES = ["closed", "half_open", "open"] as const;
/** A circuit breaker state. */
export type BreakerState = typeof BREAKER_STATES[number];

/** What became of exposure events (`edge_exposure_events_total{result}`). */
export const EXPOSURE_RESULTS = ["queued", "sent", "retried", "dropped"] as const;
/** One of {@linkcode EXPOSURE_RESULTS}. */
export type ExposureResult = typeof EXPOSURE_RESULTS[number];

/** Label value used when a request has no region (ops, sync). */
export const NO_REGION = "none";
/** Label value for every region the rules do not know (bounds cardinality). */
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

/** What {@linkcode EdgeMetrics.observeRequest} records. */
export interface RequestObservation {
  routeClass: RouteClass;
  /** The HTTP status sent to the client. */
  status: number;
  /** The decided region; undefined for requests that have none (ops, sync). */
  region?: string | undefined;
  /** Whole request, in milliseconds (to the response headers). */
  durationMs: number;
  /** Per-stage durations, in milliseconds. */
  stages?: StageDurations;
  /** Time spent waiting for the origin's headers, in milliseconds; the rest is the edge's own time. */
  originMs?: number | undefined;
}

/** What {@linkcode EdgeMetrics.observeOrigin} records. */
export interface OriginObservation {
  /** Time to the origin's response headers (or to the failure), in milliseconds. */
  durationMs: number;
  /** The origin's status, when it answered. */
  status?: number;
  /** Set when no response came: the timeout elapsed or the connection failed. */
  error?: "timeout" | "unavailable";
}

/** What {@linkcode EdgeMetrics.observeSync} records for one batch. */
export interface SyncObservation {
  applied?: number;
  stale?: number;
  rejected?: number;
  duplicate?: number;
  /** Whole pushes answered 429 because `SYNC_MAX_CONCURRENT` were being applied (retried later). */
  busy?: number;
  /** Whole pushes that failed on the edge's side (5xx: the store failed or timed out; retried later). */
  failed?: number;
  /** For each event, now − event time, in milliseconds. */
  lagsMs?: Iterable<number>;
}

/** What {@linkcode EdgeMetrics.observeReadThrough} records. */
export interface ReadThroughObservation {
  outcome: ReadThroughOutcome;
  /** Time spent, in milliseconds; leave out when no call was made (breaker open, skipped). */
  durationMs?: number;
}

/** The subset of a compiled rule set the metrics need (`CompiledRules` fits). */
export interface RulesInfo {
  version: number;
  regionNames: Iterable<string>;
  defaultRegion?: string;
}

/** The memory figures reported (`Deno.memoryUsage()` fits). */
export interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
}

/** Options for {@linkcode EdgeMetrics}. */
export interface EdgeMetricsOptions {
  /** Metric name prefix (default `edge_`). */
  prefix?: string;
  /** Regions known before the first {@linkcode EdgeMetrics.setRules} call. */
  regions?: Iterable<string>;
  /** Read at each scrape for the memory gauge; leave out to report no memory figures. */
  memoryUsage?: () => MemoryUsage;
  /** Labels added to every series, e.g. `{ instance: "edge-1" }`; keep them few and fixed. */
  defaultLabels?: Record<string, string>;
}

/**
 * The service's metrics. Recording is synchronous and costs a few microseconds per request
 * (`bench/metrics_bench.ts`), so it can sit on the request path; {@linkcode EdgeMetrics.render}
 * produces the exposition.
 *
 * @example
 * ```ts
 * const metrics = new EdgeMetrics({ memoryUsage: Deno.memoryUsage });
 * metrics.setRules(deps.rules.current);
 * metrics.observeRequest({ routeClass: "proxy", status: 200, region: "EU", durationMs: 3.2 });
 * const text = await metrics.render();
 * ```
 */
export class EdgeMetrics {
  /** The `Content-Type` of {@linkcode EdgeMetrics.render}'s output. */
  readonly contentType: string;
  readonly #registry: Registry;
  #regions: Set<string> = new Set();
  readonly #requests: RequestPathCounter;
  readonly #requestDuration: RequestPathHistogram;
  readonly #overhead: RequestPathHistogram;
  readonly #stageDuration: RequestPathHistogram;
  readonly #originDuration: RequestPathHistogram;
  readonly #originErrors: Counter<"kind">;
  readonly #htmlRewriteBailouts: Counter<"cap">;
  readonly #kvRead: RequestPathHistogram;
  readonly #contextCache: RequestPathCounter;
  readonly #readThrough: Counter<"outcome">;
  readonly #readThroughDuration: Histogram<"outcome">;
  readonly #breaker: Gauge<"state">;
  readonly #syncEvents: Counter<"result">;
  readonly #syncLag: Histogram<string>;
  readonly #rulesVersion: Gauge<"role">;
  readonly #cacheSize: Gauge<"unit">;
  readonly #exposures: RequestPathCounter;
  readonly #exposureEvents: RequestPathCounter;
  readonly #exposureQueue: Gauge;
  readonly #flagEvaluations: RequestPathCounter;
  readonly #srmPValue: Gauge<"experiment">;
  readonly #cacheLimit: Gauge<"unit">;
  #heapLimitBytes: number | undefined;
  readonly #collectHooks: Array<() => void | Promise<void>> = [];

  /** @param options prefix, initial regions, memory source, default labels */
  constructor(options: EdgeMetricsOptions = {}) {
    const p = options.prefix ?? "edge_";
    const registry = new Registry();
    if (options.defaultLabels) registry.setDefaultLabels(options.defaultLabels);
    this.#registry = registry;
    this.contentType = registry.contentType;
    const registers = [registry];
    if (options.regions) this.#setRegions(options.regions);

    // The series every request touches are kept outside prom-client (see RequestPathHistogram).
    this.#requests = new RequestPathCounter({
      name: `${p}requests_total`,
      help: "Requests answered, by route class, status class and region.",
      labelNames: ["route_class", "status_class", "region"],
      registry,
    });
    this.#requestDuration = new RequestPathHistogram({
      name: `${p}request_duration_seconds`,
      help: "Time from receiving a request to its response headers, by route class and region.",
      labelNames: ["route_class", "region"],
      buckets: REQUEST_BUCKETS,
      registry,
    });
    this.#overhead = new RequestPathHistogram({
      name: `${p}overhead_duration_seconds`,
      help: "The edge's own share of each request: request duration minus time waiting for the origin.",
      labelNames: ["route_class", "region"],
      buckets: STAGE_BUCKETS,
      registry,
    });
    this.#stageDuration = new RequestPathHistogram({
      name: `${p}stage_duration_seconds`,
      help: "Time spent in each pipeline stage (facts, identity, context, decide, act), by region.",
      labelNames: ["stage", "region"],
      buckets: STAGE_BUCKETS,
      registry,
    });
    this.#originDuration = new RequestPathHistogram({
      name: `${p}origin_duration_seconds`,
      help: "Time to the origin's response headers, by status class (error when none came).",
      labelNames: ["status_class"],
      buckets: REQUEST_BUCKETS,
      registry,
    });
    this.#originErrors = new Counter({
      name: `${p}origin_errors_total`,
      help: "Failed origin requests, by kind (timeout, unavailable, 5xx).",
      labelNames: ["kind"],
      registers,
    });
    this.#htmlRewriteBailouts = new Counter({
      name: `${p}html_rewrite_bailouts_total`,
      help:
        "HTML pages whose rewrite stopped at a cap (bytes: HTML_REWRITE_MAX_BYTES, time: HTML_REWRITE_MAX_MS); the rest passed through unrewritten.",
      labelNames: ["cap"],
      registers,
    });
    // Every KV read of the request path (session, context, related lists) is recorded here, so it
    // is kept outside prom-client like the other per-request series.
    this.#kvRead = new RequestPathHistogram({
      name: `${p}kv_read_duration_seconds`,
      help: "Deno KV read latency, by what was read; a read cut at KV_TIMEOUT_MS counts the time waited.",
      labelNames: ["read"],
      buckets: KV_BUCKETS,
      registry,
    });
    this.#contextCache = new RequestPathCounter({
      name: `${p}context_cache_total`,
      help: "Per-isolate context cache lookups, by result (hit, miss).",
      labelNames: ["result"],
      registry,
    });
    this.#readThrough = new Counter({
      name: `${p}read_through_total`,
      help: "Backend read-throughs, by outcome.",
      labelNames: ["outcome"],
      registers,
    });
    this.#readThroughDuration = new Histogram({
      name: `${p}read_through_duration_seconds`,
      help: "Backend read-through latency, by outcome.",
      labelNames: ["outcome"],
      buckets: [...KV_BUCKETS],
      registers,
    });
    this.#breaker = new Gauge({
      name: `${p}read_through_breaker_state`,
      help: "Read-through circuit breaker: 1 for the current state, 0 for the others.",
      labelNames: ["state"],
      registers,
    });
    this.#syncEvents = new Counter({
      name: `${p}sync_events_total`,
      help: "Sync results: applied and stale count events; rejected, duplicate and busy count whole pushes.",
      labelNames: ["result"],
      registers,
    });
    this.#syncLag = new Histogram({
      name: `${p}sync_lag_seconds`,
      help: "Sync lag of each received event: time of receipt minus the event's own time.",
      buckets: [...SYNC_LAG_BUCKETS],
      registers,
    });
    this.#rulesVersion = new Gauge({
      name: `${p}rules_version`,
      help: "Rule set version in use, by role (active, canary).",
      labelNames: ["role"],
      registers,
    });
    this.#cacheSize = new Gauge({
      name: `${p}context_cache_size`,
      help: "Per-isolate context cache size, by unit (entries, bytes).",
      labelNames: ["unit"],
      registers,
    });
    this.#exposures = new RequestPathCounter({
      name: `${p}experiment_exposures_total`,
      help: "Visitors exposed to an experiment's variation for the first time, by experiment and variation.",
      labelNames: ["experiment", "variation"],
      registry,
    });
    this.#exposureEvents = new RequestPathCounter({
      name: `${p}exposure_events_total`,
      help: "Exposure events by delivery result: queued, sent, retried (per failed attempt), dropped.",
      labelNames: ["result"],
      registry,
    });
    this.#exposureQueue = new Gauge({
      name: `${p}exposure_queue_events`,
      help: "Exposure events waiting for delivery (queued and in the batch being delivered).",
      registers,
    });
    this.#flagEvaluations = new RequestPathCounter({
      name: `${p}flag_evaluations_total`,
      help: "Flag evaluations of the request pipeline, by flag and variant.",
      labelNames: ["flag", "variant"],
      registry,
    });
    this.#srmPValue = new Gauge({
      name: `${p}experiment_srm_p_value`,
      help: "Chi-square p-value of each running experiment's exposures on this instance against its weights.",
      labelNames: ["experiment"],
      registers,
    });
    // Exported so that an alert can tell a cache full at its bound (thrashing) from one that is
    // merely cold: the bounds are configuration the scraper cannot see otherwise.
    this.#cacheLimit = new Gauge({
      name: `${p}context_cache_limit`,
      help: "Per-isolate context cache bounds, by unit (entries, bytes): CONTEXT_CACHE_MAX_*.",
      labelNames: ["unit"],
      registers,
    });
    const memoryUsage = options.memoryUsage;
    if (memoryUsage) {
      const heapLimit = () => this.#heapLimitBytes;
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

    // Series that alerts divide by or compare against exist from the start, so a quiet instance
    // reports 0 instead of nothing.
    for (const kind of ["timeout", "unavailable", "5xx"]) this.#originErrors.inc({ kind }, 0);
    for (const cap of ["bytes", "time"]) this.#htmlRewriteBailouts.inc({ cap }, 0);
    for (const result of ["hit", "miss"]) this.#contextCache.inc([result], 0);
    for (const result of ["applied", "stale", "rejected", "duplicate", "busy", "failed"]) {
      this.#syncEvents.inc({ result }, 0);
    }
    for (const result of EXPOSURE_RESULTS) this.#exposureEvents.inc([result], 0);
    this.#exposureQueue.set(0);
    this.setBreakerState("closed");
  }

  /**
   * Records one answered request: the request counter, the request and overhead histograms, and
   * each stage.
   *
   * @param observation route class, status, region, durations in milliseconds (origin included)
   */
  observeRequest(observation: RequestObservation): void {
    const routeClass = oneOf(observation.routeClass, ROUTE_CLASSES);
    const region = this.#region(observation.region);
    this.#requests.inc([routeClass, statusClass(observation.status), region]);
    this.#requestDuration.observe(routeClass, region, seconds(observation.durationMs));
    const own = observation.durationMs - (observation.originMs ?? 0);
    this.#overhead.observe(routeClass, region, seconds(own));
    const stages = observation.stages;
    if (!stages) return;
    for (const stage of STAGES) {
      const ms = stages[stage];
      if (ms !== undefined) this.#stageDuration.observe(stage, region, seconds(ms));
    }
  }

  /**
   * Records one request to the origin: its latency, and an error of kind `timeout`,
   * `unavailable` or `5xx` when it failed.
   *
   * @param observation duration in milliseconds and status, or the error
   */
  observeOrigin(observation: OriginObservation): void {
    const kind: OriginErrorKind | undefined = observation.error ??
      (observation.status !== undefined && observation.status >= 500 ? "5xx" : undefined);
    const status = observation.error || observation.status === undefined
      ? "error"
      : statusClass(observation.status);
    this.#originDuration.observe(status, "", seconds(observation.durationMs));
    if (kind) this.#originErrors.inc({ kind });
  }

  /**
   * Counts one HTML page whose rewrite stopped at a cap.
   *
   * @param cap which cap: `bytes` or `time`
   */
  countHtmlRewriteBailout(cap: "bytes" | "time"): void {
    this.#htmlRewriteBailouts.inc({ cap });
  }

  /**
   * Records one Deno KV read, whatever its end: a read that failed or was cut at its deadline
   * counts the time it was waited for, so a stalling store shows in the latency.
   *
   * @param durationMs how long the read was waited for, in milliseconds
   * @param options what was read (default `other`)
   */
  observeKvRead(durationMs: number, options: { read?: KvRead } = {}): void {
    this.#kvRead.observe(oneOf(options.read ?? "other", KV_READS, "other"), "", seconds(durationMs));
  }

  /**
   * Records one lookup in the per-isolate context cache.
   *
   * @param result `hit` or `miss`
   */
  observeContextCache(result: CacheResult): void {
    this.#contextCache.inc([result === "hit" ? "hit" : "miss"]);
  }

  /**
   * Records one backend read-through.
   *
   * @param observation the outcome and, when a call was made, its duration in milliseconds (a
   *   duration given with `breaker_open`, `busy` or `skipped`, which make no call, is ignored)
   */
  observeReadThrough(observation: ReadThroughObservation): void {
    const outcome = oneOf(observation.outcome, READ_THROUGH_OUTCOMES, "error");
    this.#readThrough.inc({ outcome });
    if (observation.durationMs !== undefined && !NO_CALL_OUTCOMES.has(outcome)) {
      this.#readThroughDuration.observe({ outcome }, seconds(observation.durationMs));
    }
  }

  /**
   * Sets the context cache size gauges, and its bounds when given.
   *
   * @param size current entries and estimated bytes; `maxEntries` and `maxBytes` are the bounds
   */
  setContextCacheSize(
    size: { entries: number; bytes: number; maxEntries?: number; maxBytes?: number },
  ): void {
    this.#cacheSize.set({ unit: "entries" }, size.entries);
    this.#cacheSize.set({ unit: "bytes" }, size.bytes);
    if (size.maxEntries !== undefined) this.#cacheLimit.set({ unit: "entries" }, size.maxEntries);
    if (size.maxBytes !== undefined) this.#cacheLimit.set({ unit: "bytes" }, size.maxBytes);
  }

  /**
   * Sets V8's heap size limit, reported as `process_memory_bytes{area="heap_limit"}` next to the
   * heap in use (only with a `memoryUsage` source), so an alert can compare the two.
   *
   * @param bytes `node:v8` `getHeapStatistics().heap_size_limit`
   */
  setHeapLimit(bytes: number): void {
    if (Number.isFinite(bytes) && bytes > 0) this.#heapLimitBytes = bytes;
  }

  /**
   * Counts a visitor's first exposure to an experiment's variation.
   *
   * @param experiment the experiment key (from the served rules)
   * @param variation the variation (from the served rules)
   */
  countExposure(experiment: string, variation: string): void {
    this.#exposures.inc([experiment, variation]);
  }

  /**
   * Counts exposure events by what became of them.
   *
   * @param result `queued`, `sent`, `retried` or `dropped`
   * @param events how many
   */
  countExposureEvents(result: ExposureResult, events: number): void {
    this.#exposureEvents.inc([oneOf(result, EXPOSURE_RESULTS, "dropped")], events);
  }

  /**
   * Sets the number of exposure events waiting for delivery.
   *
   * @param events queued and in flight
   */
  setExposureQueue(events: number): void {
    this.#exposureQueue.set(events);
  }

  /**
   * Counts one flag evaluation of the request pipeline.
   *
   * @param flag the flag key (from the served rules)
   * @param variant the variant name (from the served rules)
   */
  countFlagEvaluation(flag: string, variant: string): void {
    this.#flagEvaluations.inc([flag, variant]);
  }

  /**
   * Replaces the sample-ratio p-values: one series per experiment given, none for the others.
   *
   * @param values experiment key → p-value
   */
  setSrmPValues(values: Iterable<[string, number]>): void {
    this.#srmPValue.reset();
    for (const [experiment, pValue] of values) this.#srmPValue.set({ experiment }, pValue);
  }

  /**
   * Registers a function run at the start of every {@linkcode EdgeMetrics.render}, for values
   * cheaper to read at scrape time than to push on every change (breaker state, cache size).
   * A hook may be async (the scrape waits for it). A hook that throws is skipped for that scrape.
   *
   * @param hook reads some state and calls this object's setters
   * @example
   * ```ts
   * metrics.addCollectHook(() => metrics.setBreakerState(backend.breaker().state));
   * ```
   */
  addCollectHook(hook: () => void | Promise<void>): void {
    this.#collectHooks.push(hook);
  }

  /**
   * Sets the read-through circuit breaker's current state.
   *
   * @param state `closed`, `half_open` or `open`
   */
  setBreakerState(state: BreakerState): void {
    for (const candidate of BREAKER_STATES) {
      this.#breaker.set({ state: candidate }, candidate === state ? 1 : 0);
    }
  }

  /**
   * Records one sync batch: counts by result and the lag of each event.
   *
   * @param observation counts and lags (negative lags, from clock skew, count as 0)
   */
  observeSync(observation: SyncObservation): void {
    for (const result of ["applied", "stale", "rejected", "duplicate", "busy", "failed"] as const) {
      const n = observation[result];
      if (typeof n === "number" && n > 0) this.#syncEvents.inc({ result }, n);
    }
    if (observation.lagsMs) {
      for (const lag of observation.lagsMs) {
        if (Number.isFinite(lag)) this.#syncLag.observe(Math.max(0, lag) / 1000);
      }
    }
  }

  /**
   * Sets the rules version gauge and the regions used as label values. Call it at start-up and
   * whenever the rules change (`metrics.setRules(deps.rules.current)`).
   *
   * @param rules the version, region names and default region of the active rules
   */
  setRules(rules: RulesInfo): void {
    const names = [...rules.regionNames];
    if (rules.defaultRegion) names.push(rules.defaultRegion);
    this.#setRegions(names);
    this.setRulesVersion(rules.version);
  }

  /**
   * Sets the rules version gauge for one role; `undefined` removes the series (no canary).
   *
   * @param version the version, or undefined
   * @param options the role (default `active`)
   */
  setRulesVersion(version: number | undefined, options: { role?: "active" | "canary" } = {}): void {
    const role = options.role ?? "active";
    if (version === undefined) this.#rulesVersion.remove({ role });
    else this.#rulesVersion.set({ role }, version);
  }

  /**
   * The region label value a region is counted under: itself when the rules know it,
   * {@linkcode OTHER} when not, {@linkcode NO_REGION} when absent.
   *
   * @param region a region name or undefined
   * @returns the label value
   */
  regionLabel(region: string | undefined): string {
    return this.#region(region);
  }

  /**
   * Renders every metric in the Prometheus text format (see {@linkcode EdgeMetrics.contentType}).
   *
   * @returns the exposition text
   */
  async render(): Promise<string> {
    for (const hook of this.#collectHooks) {
      try {
        await hook();
      } catch {
        // One broken source must not take the whole scrape down.
      }
    }
    return await this.#registry.metrics();
  }

  #region(region: string | undefined): string {
    if (region === undefined || region === "") return NO_REGION;
    return this.#regions.has(region) ? region : OTHER;
  }

  #setRegions(names: Iterable<string>): void {
    // Regions from earlier rule sets stay known: their series already exist, and dropping the
    // name would only move the same traffic to "other" mid-graph.
    const next = new Set(this.#regions);
    for (const name of names) {
      if (next.size >= MAX_REGIONS) break;
      if (name !== NO_REGION && name !== OTHER && /^[A-Za-z0-9_-]{1,32}$/.test(name)) next.add(name);
    }
    this.#regions = next;
  }
}

/**
 * The status class label of an HTTP status: `1xx` … `5xx`, or `other`.
 *
 * @param status an HTTP status code
 * @returns the class label
 */
export function statusClass(status: number): string {
  if (status >= 100 && status < 600) return `${Math.floor(status / 100)}xx`;
  return OTHER;
}

function seconds(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? ms / 1000 : 0;
}

// Label values come from callers as strings; anything outside the closed set is folded into one
// value so a bug upstream cannot create unbounded series.
function oneOf(value: string, allowed: readonly string[], fallback: string = OTHER): string {
  return allowed.includes(value) ? value : fallback;
}

/**
 * Maps the context stage's read-through outcome onto the metric's bounded label set.
 *
 * @param outcome `ok`, `unknown_user`, `invalid_events`, `skipped` or `failed:<reason>`
 * @returns the label value
 */
export function readThroughLabel(outcome: string): ReadThroughOutcome {
  if (outcome === "ok" || outcome === "skipped") return outcome;
  if (outcome === "unknown_user") return "not_found";
  if (outcome === "failed:timeout") return "timeout";
  if (outcome === "failed:breaker_open") return "breaker_open";
  if (outcome === "failed:busy") return "busy";
  return "error";
}
