/**
 * @module
 * The service's metrics in the Prometheus text format: one {@linkcode EdgeMetrics} object is
 * created in `main.ts` and handed around. Label values come from the closed sets of
 * `metric_labels.ts`; the families are declared in `metric_families.ts`.
 */
import {
  BREAKER_STATES,
  type BreakerState,
  type CacheResult,
  EXPOSURE_RESULTS,
  type ExposureResult,
  KV_READS,
  type KvRead,
  MAX_REGIONS,
  NO_CALL_OUTCOMES,
  NO_REGION,
  oneOf,
  type OriginErrorKind,
  OTHER,
  READ_THROUGH_OUTCOMES,
  type ReadThroughLabel,
  seconds,
  type StageDurations,
  STAGES,
  statusClass,
} from "./metric_labels.ts";
import { ROUTE_CLASSES, type RouteClass } from "../http/paths.ts";
import { createMetricFamilies, type MemoryUsage, type MetricFamilies } from "./metric_families.ts";
import { Registry } from "./metric_series.ts";

const SYNC_RESULTS = ["applied", "stale", "rejected", "duplicate", "busy", "failed"] as const;

/** What {@linkcode EdgeMetrics.observeRequest} records. */
export interface RequestObservation {
  routeClass: RouteClass;
  status: number;
  /** Undefined for requests that have none (ops, sync). */
  region?: string | undefined;
  /** To the response headers. */
  durationMs: number;
  stages?: StageDurations;
  /** Waiting for the origin's headers; the rest is the edge's own time. */
  originMs?: number | undefined;
}

/** What {@linkcode EdgeMetrics.observeOrigin} records. */
export interface OriginObservation {
  /** To the origin's response headers, or to the failure. */
  durationMs: number;
  status?: number;
  /** Set when no response came. */
  error?: "timeout" | "unavailable";
}

/** What {@linkcode EdgeMetrics.observeSync} records for one batch. */
export interface SyncObservation {
  applied?: number;
  stale?: number;
  rejected?: number;
  duplicate?: number;
  /** Whole pushes answered 429 (`SYNC_MAX_CONCURRENT`). */
  busy?: number;
  /** Whole pushes that failed on the edge's side (5xx). */
  failed?: number;
  /** For each event, now − event time. */
  lagsMs?: Iterable<number>;
}

/** What {@linkcode EdgeMetrics.observeReadThrough} records. */
export interface ReadThroughObservation {
  outcome: ReadThroughLabel;
  /** Left out when no call was made. */
  durationMs?: number;
}

/** The subset of a compiled rule set the metrics need (`CompiledRules` fits). */
export interface RulesInfo {
  version: number;
  regionNames: Iterable<string>;
  defaultRegion?: string;
}

/** Options for {@linkcode EdgeMetrics}. */
export interface EdgeMetricsOptions {
  /** Default `edge_`. */
  prefix?: string;
  /** Regions known before the first {@linkcode EdgeMetrics.setRules} call. */
  regions?: Iterable<string>;
  /** Read at each scrape; without it no memory figures. */
  memoryUsage?: () => MemoryUsage;
  /** Added to every series; keep them few and fixed. */
  defaultLabels?: Record<string, string>;
}

/** The service's metrics: recording is synchronous and cheap enough for the request path. */
export class EdgeMetrics {
  readonly contentType: string;
  readonly #registry: Registry;
  readonly #m: MetricFamilies;
  #regions: Set<string> = new Set();
  #heapLimitBytes: number | undefined;
  readonly #collectHooks: Array<() => void | Promise<void>> = [];

  /** @param options prefix, initial regions, memory source, default labels */
  constructor(options: EdgeMetricsOptions = {}) {
    const registry = new Registry();
    if (options.defaultLabels) registry.setDefaultLabels(options.defaultLabels);
    this.#registry = registry;
    this.contentType = registry.contentType;
    if (options.regions) this.#setRegions(options.regions);
    this.#m = createMetricFamilies(registry, {
      prefix: options.prefix ?? "edge_",
      memoryUsage: options.memoryUsage,
      heapLimit: () => this.#heapLimitBytes,
    });
    // Series alerts divide by exist from the start, so a quiet instance reports 0, not nothing.
    const m = this.#m;
    for (const kind of ["timeout", "unavailable", "5xx"]) m.originErrors.inc({ kind }, 0);
    for (const cap of ["bytes", "time"]) m.htmlRewriteBailouts.inc({ cap }, 0);
    for (const result of ["hit", "miss"]) m.contextCache.inc([result], 0);
    for (const result of SYNC_RESULTS) m.syncEvents.inc({ result }, 0);
    for (const result of EXPOSURE_RESULTS) m.exposureEvents.inc([result], 0);
    m.exposureQueue.set(0);
    this.setBreakerState("closed");
  }

  observeRequest(observation: RequestObservation): void {
    const routeClass = oneOf(observation.routeClass, ROUTE_CLASSES);
    const region = this.#region(observation.region);
    this.#m.requests.inc([routeClass, statusClass(observation.status), region]);
    this.#m.requestDuration.observe(routeClass, region, seconds(observation.durationMs));
    const own = observation.durationMs - (observation.originMs ?? 0);
    this.#m.overhead.observe(routeClass, region, seconds(own));
    const stages = observation.stages;
    if (!stages) return;
    for (const stage of STAGES) {
      const ms = stages[stage];
      if (ms !== undefined) this.#m.stageDuration.observe(stage, region, seconds(ms));
    }
  }

  observeOrigin(observation: OriginObservation): void {
    const kind: OriginErrorKind | undefined = observation.error ??
      (observation.status !== undefined && observation.status >= 500 ? "5xx" : undefined);
    const status = observation.error || observation.status === undefined
      ? "error"
      : statusClass(observation.status);
    this.#m.originDuration.observe(status, "", seconds(observation.durationMs));
    if (kind) this.#m.originErrors.inc({ kind });
  }

  countHtmlRewriteBailout(cap: "bytes" | "time"): void {
    this.#m.htmlRewriteBailouts.inc({ cap });
  }

  /** Failed and cut reads count too, so a stalling store shows in the latency. */
  observeKvRead(durationMs: number, options: { read?: KvRead } = {}): void {
    this.#m.kvRead.observe(oneOf(options.read ?? "other", KV_READS, "other"), "", seconds(durationMs));
  }

  observeContextCache(result: CacheResult): void {
    this.#m.contextCache.inc([result === "hit" ? "hit" : "miss"]);
  }

  /** Records one read-through; a duration given with an outcome that made no call is ignored. */
  observeReadThrough(observation: ReadThroughObservation): void {
    const outcome = oneOf(observation.outcome, READ_THROUGH_OUTCOMES, "error");
    this.#m.readThrough.inc({ outcome });
    if (observation.durationMs !== undefined && !NO_CALL_OUTCOMES.has(outcome)) {
      this.#m.readThroughDuration.observe({ outcome }, seconds(observation.durationMs));
    }
  }

  setContextCacheSize(
    size: { entries: number; bytes: number; maxEntries?: number; maxBytes?: number },
  ): void {
    this.#m.cacheSize.set({ unit: "entries" }, size.entries);
    this.#m.cacheSize.set({ unit: "bytes" }, size.bytes);
    if (size.maxEntries !== undefined) this.#m.cacheLimit.set({ unit: "entries" }, size.maxEntries);
    if (size.maxBytes !== undefined) this.#m.cacheLimit.set({ unit: "bytes" }, size.maxBytes);
  }

  /** V8's `heap_size_limit`, reported beside the heap in use for alerts to compare. */
  setHeapLimit(bytes: number): void {
    if (Number.isFinite(bytes) && bytes > 0) this.#heapLimitBytes = bytes;
  }

  /** A visitor's first exposure; keys come from the served rules. */
  countExposure(experiment: string, variation: string): void {
    this.#m.exposures.inc([experiment, variation]);
  }

  countExposureEvents(result: ExposureResult, events: number): void {
    this.#m.exposureEvents.inc([oneOf(result, EXPOSURE_RESULTS, "dropped")], events);
  }

  /** Queued and in flight. */
  setExposureQueue(events: number): void {
    this.#m.exposureQueue.set(events);
  }

  countFlagEvaluation(flag: string, variant: string): void {
    this.#m.flagEvaluations.inc([flag, variant]);
  }

  /** Replaces the sample-ratio p-values: one series per experiment given. */
  setSrmPValues(values: Iterable<[string, number]>): void {
    this.#m.srmPValue.reset();
    for (const [experiment, pValue] of values) this.#m.srmPValue.set({ experiment }, pValue);
  }

  /** Runs at every scrape, for values cheaper to read then than to push; one that throws is skipped. */
  addCollectHook(hook: () => void | Promise<void>): void {
    this.#collectHooks.push(hook);
  }

  setBreakerState(state: BreakerState): void {
    for (const candidate of BREAKER_STATES) {
      this.#m.breaker.set({ state: candidate }, candidate === state ? 1 : 0);
    }
  }

  /** Negative lags count as 0. */
  observeSync(observation: SyncObservation): void {
    for (const result of SYNC_RESULTS) {
      const n = observation[result];
      if (typeof n === "number" && n > 0) this.#m.syncEvents.inc({ result }, n);
    }
    if (observation.lagsMs) {
      for (const lag of observation.lagsMs) {
        if (Number.isFinite(lag)) this.#m.syncLag.observe(Math.max(0, lag) / 1000);
      }
    }
  }

  /** The rules version gauge and the regions used as label values; call whenever the rules change. */
  setRules(rules: RulesInfo): void {
    const names = [...rules.regionNames];
    if (rules.defaultRegion) names.push(rules.defaultRegion);
    this.#setRegions(names);
    this.setRulesVersion(rules.version);
  }

  /** `undefined` removes the series. */
  setRulesVersion(version: number | undefined, options: { role?: "active" | "canary" } = {}): void {
    const role = options.role ?? "active";
    if (version === undefined) this.#m.rulesVersion.remove({ role });
    else this.#m.rulesVersion.set({ role }, version);
  }

  /** Itself when the rules know it, {@linkcode OTHER} when not, {@linkcode NO_REGION} when absent. */
  regionLabel(region: string | undefined): string {
    return this.#region(region);
  }

  /** Renders every metric in the Prometheus text format (see {@linkcode EdgeMetrics.contentType}). */
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
    // Earlier rule sets' regions stay: dropping one would move its traffic to "other" mid-graph.
    const next = new Set(this.#regions);
    for (const name of names) {
      if (next.size >= MAX_REGIONS) break;
      if (name !== NO_REGION && name !== OTHER && /^[A-Za-z0-9_-]{1,32}$/.test(name)) next.add(name);
    }
    this.#regions = next;
  }
}
