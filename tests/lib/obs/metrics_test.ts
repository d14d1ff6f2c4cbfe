import assert from "node:assert/strict";
import { EdgeMetrics } from "../../../lib/obs/metrics.ts";
import { MAX_REGIONS, readThroughLabel, statusClass } from "../../../lib/obs/metric_labels.ts";
import { routeClassOf } from "../../../lib/http/paths.ts";

/** One sample line of the exposition. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed exposition: samples plus the declared type of each metric family. */
interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
  help: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

// A strict parser for the subset of the Prometheus text format (0.0.4) the registry emits:
// HELP/TYPE comments, samples with optional labels, escaped label values, no timestamps.
function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const [index, line] of text.split("\n").entries()) {
    if (line === "") continue;
    const where = `line ${index + 1}: ${JSON.stringify(line)}`;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      assert.ok(m, `bad comment, ${where}`);
      const [, keyword, name, rest] = m;
      assert.match(name!, NAME, where);
      if (keyword === "TYPE") {
        assert.ok(["counter", "gauge", "histogram", "summary", "untyped"].includes(rest!), where);
        assert.ok(!types.has(name!), `duplicate TYPE, ${where}`);
        types.set(name!, rest!);
      } else {
        help.set(name!, rest!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `bad sample, ${where}`);
    const labels: Record<string, string> = {};
    let rest = m[3] ?? "";
    while (rest !== "") {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/.exec(rest);
      assert.ok(lm, `bad labels, ${where}`);
      assert.ok(!(lm[1]! in labels), `duplicate label, ${where}`);
      labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      rest = rest.slice(lm[0].length);
    }
    const raw = m[4]!;
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    assert.ok(raw === "NaN" || !Number.isNaN(value), `bad value, ${where}`);
    samples.push({ name: m[1]!, labels, value });
  }
  // Every sample belongs to a declared family (histograms own _bucket, _sum and _count).
  for (const sample of samples) {
    const family = sample.name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(types.has(sample.name) || types.get(family) === "histogram", `undeclared ${sample.name}`);
  }
  return { samples, types, help };
}

function value(expo: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = expo.samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  if (found.length === 0) return undefined;
  return found.reduce((sum, s) => sum + s.value, 0);
}

async function scrape(metrics: EdgeMetrics): Promise<Exposition> {
  return parseExposition(await metrics.render());
}

Deno.test("the exposition parses and declares every metric family", async () => {
  const metrics = new EdgeMetrics({
    regions: ["EU"],
    memoryUsage: () => ({ rss: 50e6, heapTotal: 20e6, heapUsed: 10e6, external: 1e6 }),
  });
  metrics.observeRequest({
    routeClass: "proxy",
    status: 200,
    region: "EU",
    durationMs: 4,
    stages: { facts: 0.1, identity: 0.2, context: 0.3, decide: 0.05, act: 3 },
  });
  metrics.observeOrigin({ durationMs: 3, status: 200 });
  metrics.observeKvRead(0.8, { read: "context" });
  metrics.observeReadThrough({ outcome: "ok", durationMs: 20 });
  metrics.setContextCacheSize({ entries: 3, bytes: 900, maxEntries: 10, maxBytes: 4096 });
  metrics.setHeapLimit(256e6);
  metrics.observeSync({ applied: 1, lagsMs: [250] });
  metrics.setRulesVersion(7);
  const expo = await scrape(metrics);
  assert.deepEqual(Object.fromEntries(expo.types), {
    edge_requests_total: "counter",
    edge_request_duration_seconds: "histogram",
    edge_overhead_duration_seconds: "histogram",
    edge_stage_duration_seconds: "histogram",
    edge_origin_duration_seconds: "histogram",
    edge_origin_errors_total: "counter",
    edge_html_rewrite_bailouts_total: "counter",
    edge_kv_read_duration_seconds: "histogram",
    edge_context_cache_total: "counter",
    edge_read_through_total: "counter",
    edge_read_through_duration_seconds: "histogram",
    edge_read_through_breaker_state: "gauge",
    edge_sync_events_total: "counter",
    edge_sync_lag_seconds: "histogram",
    edge_rules_version: "gauge",
    edge_context_cache_size: "gauge",
    edge_experiment_exposures_total: "counter",
    edge_exposure_events_total: "counter",
    edge_exposure_queue_events: "gauge",
    edge_flag_evaluations_total: "counter",
    edge_experiment_srm_p_value: "gauge",
    edge_context_cache_limit: "gauge",
    edge_process_memory_bytes: "gauge",
  });
  for (const name of expo.types.keys()) assert.ok(expo.help.get(name), `${name} has help text`);
  assert.equal(value(expo, "edge_process_memory_bytes", { area: "rss" }), 50e6);
  assert.equal(value(expo, "edge_process_memory_bytes", { area: "heap_limit" }), 256e6);
  assert.equal(value(expo, "edge_context_cache_size", { unit: "entries" }), 3);
  assert.equal(value(expo, "edge_context_cache_limit", { unit: "entries" }), 10);
  assert.equal(value(expo, "edge_context_cache_limit", { unit: "bytes" }), 4096);
  assert.equal(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8");
});

Deno.test("request metrics move with each observed request", async () => {
  const metrics = new EdgeMetrics();
  metrics.setRules({ version: 3, regionNames: new Set(["EU", "US"]), defaultRegion: "GLOBAL" });
  const before = await scrape(metrics);
  assert.equal(value(before, "edge_requests_total"), undefined);

  for (let i = 0; i < 3; i++) {
    metrics.observeRequest({
      routeClass: "proxy",
      status: 200,
      region: "EU",
      durationMs: 2,
      stages: { facts: 0.04, decide: 0.01, act: 1.5 },
    });
  }
  metrics.observeRequest({ routeClass: "proxy", status: 502, region: "US", durationMs: 30, originMs: 29.5 });
  metrics.observeRequest({ routeClass: "ops", status: 200, durationMs: 0.3 });

  const after = await scrape(metrics);
  assert.equal(
    value(after, "edge_requests_total", { route_class: "proxy", status_class: "2xx", region: "EU" }),
    3,
  );
  assert.equal(
    value(after, "edge_requests_total", { route_class: "proxy", status_class: "5xx", region: "US" }),
    1,
  );
  assert.equal(value(after, "edge_requests_total", { route_class: "ops", region: "none" }), 1);
  assert.equal(value(after, "edge_request_duration_seconds_count", { route_class: "proxy" }), 4);
  assert.equal(
    value(after, "edge_request_duration_seconds_sum", { route_class: "proxy", region: "EU" }),
    0.006,
  );
  // 2 ms falls in the 2.5 ms bucket but not in the 1 ms one.
  const bucket = (le: string) =>
    value(after, "edge_request_duration_seconds_bucket", { route_class: "proxy", region: "EU", le });
  assert.equal(bucket("0.001"), 0);
  assert.equal(bucket("0.0025"), 3);
  assert.equal(bucket("+Inf"), 3);
  // The edge's own share: 30 ms − 29.5 ms at the origin = 0.5 ms.
  assert.equal(value(after, "edge_overhead_duration_seconds_sum", { region: "US" }), 0.0005);
  assert.equal(value(after, "edge_overhead_duration_seconds_count", { route_class: "proxy" }), 4);
  assert.equal(value(after, "edge_stage_duration_seconds_count", { stage: "facts", region: "EU" }), 3);
  assert.equal(value(after, "edge_stage_duration_seconds_count", { stage: "identity" }), undefined);
  assert.equal(value(after, "edge_stage_duration_seconds_count", { stage: "act" }), 3);
  assert.equal(value(after, "edge_rules_version", { role: "active" }), 3);
});

Deno.test("region labels are capped to the regions the rules know", async () => {
  const metrics = new EdgeMetrics();
  metrics.setRules({ version: 1, regionNames: ["EU"], defaultRegion: "GLOBAL" });
  for (const region of ["EU", "GLOBAL", "Mars", "user-123", "/some/path", ""]) {
    metrics.observeRequest({ routeClass: "proxy", status: 200, region, durationMs: 1 });
  }
  const expo = await scrape(metrics);
  const regions = new Set(
    expo.samples.filter((s) => s.name === "edge_requests_total").map((s) => s.labels.region),
  );
  assert.deepEqual([...regions].sort(), ["EU", "GLOBAL", "none", "other"]);
  assert.equal(value(expo, "edge_requests_total", { region: "other" }), 3);

  // A rules update with a new region makes it a label value; the earlier ones stay.
  metrics.setRules({ version: 2, regionNames: ["APAC"], defaultRegion: "GLOBAL" });
  metrics.observeRequest({ routeClass: "proxy", status: 200, region: "APAC", durationMs: 1 });
  metrics.observeRequest({ routeClass: "proxy", status: 200, region: "EU", durationMs: 1 });
  const later = await scrape(metrics);
  assert.equal(value(later, "edge_requests_total", { region: "APAC" }), 1);
  assert.equal(value(later, "edge_requests_total", { region: "EU" }), 2);
  assert.equal(value(later, "edge_rules_version", { role: "active" }), 2);
});

Deno.test("at most MAX_REGIONS region names become label values", async () => {
  const metrics = new EdgeMetrics();
  const names = Array.from({ length: MAX_REGIONS + 10 }, (_, i) => `R${i}`);
  metrics.setRules({ version: 1, regionNames: names });
  for (const region of names) {
    metrics.observeRequest({ routeClass: "proxy", status: 200, region, durationMs: 1 });
  }
  const expo = await scrape(metrics);
  const series = expo.samples.filter((s) => s.name === "edge_requests_total");
  assert.equal(series.length, MAX_REGIONS + 1);
  assert.equal(value(expo, "edge_requests_total", { region: "other" }), 10);
});

Deno.test("unknown route classes and outcomes are folded into one label value", async () => {
  const metrics = new EdgeMetrics();
  // Callers may pass anything at run time; the label sets stay closed.
  const loose = metrics as unknown as {
    observeRequest(o: unknown): void;
    observeReadThrough(o: unknown): void;
    observeKvRead(ms: number, o: unknown): void;
  };
  loose.observeRequest({ routeClass: "/users/42", status: 200, durationMs: 1 });
  loose.observeReadThrough({ outcome: "weird" });
  loose.observeKvRead(1, { read: "user:42" });
  const expo = await scrape(metrics);
  assert.equal(value(expo, "edge_requests_total", { route_class: "other" }), 1);
  assert.equal(value(expo, "edge_read_through_total", { outcome: "error" }), 1);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_count", { read: "other" }), 1);
  assert.ok(!(await metrics.render()).includes("42"));
});

Deno.test("origin latency and errors are recorded by kind", async () => {
  const metrics = new EdgeMetrics();
  const start = await scrape(metrics);
  for (const kind of ["timeout", "unavailable", "5xx"]) {
    assert.equal(value(start, "edge_origin_errors_total", { kind }), 0, `${kind} starts at 0`);
  }
  metrics.observeOrigin({ durationMs: 12, status: 200 });
  metrics.observeOrigin({ durationMs: 40, status: 503 });
  metrics.observeOrigin({ durationMs: 10_000, error: "timeout" });
  metrics.observeOrigin({ durationMs: 1, error: "unavailable" });
  metrics.observeOrigin({ durationMs: 2, error: "unavailable" });
  const expo = await scrape(metrics);
  assert.equal(value(expo, "edge_origin_errors_total", { kind: "timeout" }), 1);
  assert.equal(value(expo, "edge_origin_errors_total", { kind: "unavailable" }), 2);
  assert.equal(value(expo, "edge_origin_errors_total", { kind: "5xx" }), 1);
  assert.equal(value(expo, "edge_origin_duration_seconds_count", { status_class: "2xx" }), 1);
  assert.equal(value(expo, "edge_origin_duration_seconds_count", { status_class: "5xx" }), 1);
  assert.equal(value(expo, "edge_origin_duration_seconds_count", { status_class: "error" }), 3);
});

Deno.test("cache, read-through, breaker and KV metrics move", async () => {
  const metrics = new EdgeMetrics();
  metrics.observeContextCache("hit");
  metrics.observeContextCache("hit");
  metrics.observeContextCache("miss");
  metrics.observeReadThrough({ outcome: "ok", durationMs: 30 });
  metrics.observeReadThrough({ outcome: "breaker_open" });
  metrics.observeKvRead(0.5, { read: "session" });
  metrics.observeKvRead(1.5);
  let breaker: "closed" | "open" = "closed";
  metrics.addCollectHook(() => metrics.setBreakerState(breaker));
  metrics.addCollectHook(() => {
    throw new Error("a broken source");
  });
  breaker = "open";
  const expo = await scrape(metrics);
  assert.equal(value(expo, "edge_context_cache_total", { result: "hit" }), 2);
  assert.equal(value(expo, "edge_context_cache_total", { result: "miss" }), 1);
  assert.equal(value(expo, "edge_read_through_total", { outcome: "ok" }), 1);
  assert.equal(value(expo, "edge_read_through_total", { outcome: "breaker_open" }), 1);
  assert.equal(value(expo, "edge_read_through_duration_seconds_count"), 1);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_count", { read: "session" }), 1);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_count", { read: "other" }), 1);
  assert.equal(value(expo, "edge_read_through_breaker_state", { state: "open" }), 1);
  assert.equal(value(expo, "edge_read_through_breaker_state", { state: "closed" }), 0);
  assert.equal(value(expo, "edge_read_through_breaker_state", { state: "half_open" }), 0);
});

Deno.test("read-through latency is kept only for calls made; KV reads land in their buckets", async () => {
  const metrics = new EdgeMetrics();
  metrics.observeReadThrough({ outcome: "timeout", durationMs: 300 });
  // Refused or skipped without a call: counted, but they have no latency.
  metrics.observeReadThrough({ outcome: "breaker_open", durationMs: 0 });
  metrics.observeReadThrough({ outcome: "busy", durationMs: 0 });
  metrics.observeKvRead(0.2, { read: "context" });
  metrics.observeKvRead(262, { read: "context" });
  const expo = await scrape(metrics);
  assert.equal(value(expo, "edge_read_through_total", { outcome: "busy" }), 1);
  assert.equal(value(expo, "edge_read_through_duration_seconds_count"), 1);
  assert.equal(value(expo, "edge_read_through_duration_seconds_count", { outcome: "timeout" }), 1);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_count", { read: "context" }), 2);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_bucket", { read: "context", le: "0.00025" }), 1);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_bucket", { read: "context", le: "0.25" }), 1);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_bucket", { read: "context", le: "0.5" }), 2);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_bucket", { read: "context", le: "+Inf" }), 2);
  assert.equal(value(expo, "edge_kv_read_duration_seconds_sum", { read: "context" }), 0.2622);
});

Deno.test("sync events are counted by result and lag lands in the histogram", async () => {
  const metrics = new EdgeMetrics();
  metrics.observeSync({ applied: 3, stale: 1, rejected: 2, duplicate: 0, lagsMs: [40, 800, 120_000, -5] });
  metrics.observeSync({ duplicate: 1 });
  const expo = await scrape(metrics);
  assert.equal(value(expo, "edge_sync_events_total", { result: "applied" }), 3);
  assert.equal(value(expo, "edge_sync_events_total", { result: "stale" }), 1);
  assert.equal(value(expo, "edge_sync_events_total", { result: "rejected" }), 2);
  assert.equal(value(expo, "edge_sync_events_total", { result: "duplicate" }), 1);
  assert.equal(value(expo, "edge_sync_lag_seconds_count"), 4);
  // Negative lag (clock skew) counts as 0; 40 ms and 0 are under 50 ms, 800 ms under 1 s.
  assert.equal(value(expo, "edge_sync_lag_seconds_bucket", { le: "0.05" }), 2);
  assert.equal(value(expo, "edge_sync_lag_seconds_bucket", { le: "1" }), 3);
  assert.equal(value(expo, "edge_sync_lag_seconds_bucket", { le: "60" }), 3);
  assert.equal(value(expo, "edge_sync_lag_seconds_bucket", { le: "300" }), 4);
  assert.equal(value(expo, "edge_sync_lag_seconds_sum"), 120.84);
});

Deno.test("a canary rules version appears and disappears", async () => {
  const metrics = new EdgeMetrics();
  metrics.setRulesVersion(4);
  metrics.setRulesVersion(5, { role: "canary" });
  let expo = await scrape(metrics);
  assert.equal(value(expo, "edge_rules_version", { role: "active" }), 4);
  assert.equal(value(expo, "edge_rules_version", { role: "canary" }), 5);
  metrics.setRulesVersion(undefined, { role: "canary" });
  expo = await scrape(metrics);
  assert.equal(value(expo, "edge_rules_version", { role: "canary" }), undefined);
});

Deno.test("default labels are added to every series", async () => {
  const metrics = new EdgeMetrics({ defaultLabels: { instance: "edge-1" } });
  metrics.observeRequest({ routeClass: "sync", status: 204, durationMs: 1 });
  const expo = await scrape(metrics);
  assert.ok(expo.samples.length > 0);
  for (const sample of expo.samples) assert.equal(sample.labels.instance, "edge-1", sample.name);
});

Deno.test("statusClass maps codes to classes", () => {
  assert.equal(statusClass(101), "1xx");
  assert.equal(statusClass(204), "2xx");
  assert.equal(statusClass(308), "3xx");
  assert.equal(statusClass(404), "4xx");
  assert.equal(statusClass(599), "5xx");
  assert.equal(statusClass(0), "other");
  assert.equal(statusClass(700), "other");
});

Deno.test("read-through outcomes map onto the bounded label set, busy apart from errors", () => {
  assert.equal(readThroughLabel("failed:busy"), "busy");
  assert.equal(readThroughLabel("failed:breaker_open"), "breaker_open");
  assert.equal(readThroughLabel("failed:timeout"), "timeout");
  assert.equal(readThroughLabel("failed:http_status"), "error");
  assert.equal(readThroughLabel("unknown_user"), "not_found");
});

Deno.test("routeClassOf counts what the edge answers itself apart from proxied traffic", () => {
  for (const path of ["/_edge/health", "/_edge/ready", "/_edge/metrics", "/.well-known/gpc.json"]) {
    assert.equal(routeClassOf(path), "ops", path);
  }
  // Other well-known resources are the origin's: the edge proxies them.
  for (const path of ["/", "/echo/x", "/.well-known/security.txt", "/.well-known/gpc.json/x", "/_edgy"]) {
    assert.equal(routeClassOf(path), "proxy", path);
  }
  assert.equal(routeClassOf("/_edge/sync"), "sync");
  assert.equal(routeClassOf("/ofrep/v1/evaluate/flags"), "ofrep");
  for (const path of ["/_edge/context", "/_edge/recommendations", "/_edge/rules", "/_edge/openapi.json"]) {
    assert.equal(routeClassOf(path), "edge", path);
  }
});
