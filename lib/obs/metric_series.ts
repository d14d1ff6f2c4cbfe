/**
 * @module
 * The metric classes: prom-client's (loaded from its deep modules) and two leaner ones for the
 * series every request touches, registered in the same registry.
 */
import type * as PromClient from "prom-client";
// The package's index also loads its push gateway and default process metrics, unused here (see
// docs/performance.md); the deep modules have no types, hence the casts.
import RegistryModule from "prom-client/lib/registry.js";
import CounterModule from "prom-client/lib/counter.js";
import GaugeModule from "prom-client/lib/gauge.js";
import HistogramModule from "prom-client/lib/histogram.js";

export const Registry = RegistryModule as unknown as typeof PromClient.Registry;
export type Registry = PromClient.Registry;
export const Counter = CounterModule as unknown as typeof PromClient.Counter;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge = GaugeModule as unknown as typeof PromClient.Gauge;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export const Histogram = HistogramModule as unknown as typeof PromClient.Histogram;
export type Histogram<T extends string = string> = PromClient.Histogram<T>;

/** One series of a {@linkcode RequestPathHistogram}. */
interface HistogramSeries {
  labels: Record<string, string>;
  /** Observations per bucket (not cumulative); above the last bound only `count` grows. */
  buckets: Float64Array;
  sum: number;
  count: number;
}

/**
 * A histogram for the series every request touches: it finds its series by label values instead
 * of validating and hashing a label object per call, and renders exactly what prom-client's
 * histogram renders, through the same registry.
 */
export class RequestPathHistogram {
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
   * @param first the first label's value (already from a closed set)
   * @param second the second label's value, for a histogram with two labels
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
export class RequestPathCounter {
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
   * @param values the label values, in the order of the label names (already from closed sets)
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
