/**
 * @module
 * Per-request cost of observability: what the pipeline would record for one request (request,
 * stages, origin, KV, cache) and the decision-log sampling check, against a bare baseline; plus
 * the scrape and a sampled entry. Run with `deno task bench bench/metrics_bench.ts`.
 */
import { EdgeMetrics } from "../lib/obs/metrics.ts";
import { decisionLogEntry, type DecisionLogInputs, shouldSample } from "../lib/obs/decision_log.ts";

const metrics = new EdgeMetrics({ memoryUsage: Deno.memoryUsage });
metrics.setRules({ version: 1, regionNames: ["EU", "US", "APAC"], defaultRegion: "GLOBAL" });
const REGIONS = ["EU", "US", "APAC", "GLOBAL"];
const STATUSES = [200, 200, 200, 304, 404, 502];
const STAGES = { facts: 0.02, identity: 0.05, context: 0.3, decide: 0.01, act: 2.5 };
const REQUEST_IDS = Array.from({ length: 1024 }, () => crypto.randomUUID());
let i = 0;

// Fill the registry with realistic series first, so the bench measures steady state.
for (let n = 0; n < 10_000; n++) {
  metrics.observeRequest({
    routeClass: "proxy",
    status: STATUSES[n % STATUSES.length]!,
    region: REGIONS[n % REGIONS.length],
    durationMs: n % 50,
    stages: STAGES,
  });
}

Deno.bench("baseline: pick the request's values", { group: "per request", baseline: true }, () => {
  i++;
  const region = REGIONS[i & 3];
  const status = STATUSES[i % STATUSES.length];
  if (region === undefined || status === undefined) throw new Error("unreachable");
});

Deno.bench("observeRequest with five stages", { group: "per request" }, () => {
  i++;
  metrics.observeRequest({
    routeClass: "proxy",
    status: STATUSES[i % STATUSES.length]!,
    region: REGIONS[i & 3],
    durationMs: 3.1,
    stages: STAGES,
  });
});

Deno.bench("everything one proxied request records", { group: "per request" }, () => {
  i++;
  const region = REGIONS[i & 3];
  metrics.observeContextCache(i & 1 ? "hit" : "miss");
  metrics.observeKvRead(0.4, { read: "context" });
  metrics.observeOrigin({ durationMs: 2.4, status: 200 });
  metrics.observeRequest({
    routeClass: "proxy",
    status: STATUSES[i % STATUSES.length]!,
    region,
    durationMs: 3.1,
    stages: STAGES,
  });
  shouldSample(REQUEST_IDS[i & 1023]!, 0.01);
});

Deno.bench("shouldSample (every request)", { group: "decision log" }, () => {
  i++;
  shouldSample(REQUEST_IDS[i & 1023]!, 0.01);
});

const INPUTS: DecisionLogInputs = {
  requestId: REQUEST_IDS[0]!,
  rulesVersion: 4,
  region: "EU",
  country: "DE",
  device: "mobile",
  network: "fast",
  variants: { "checkout-button": "green", "hero": "b" },
  flags: { "new-nav": true, "banner": "summer" },
  userKey: "user-8812",
  loggedIn: true,
  clientIp: "203.0.113.77",
  routeClass: "proxy",
  matchedRoute: "/api/products/*",
  action: "proxy",
  status: 200,
  cache: "hit",
  readThrough: "skipped",
  durations: { total: 3.1, ...STAGES, origin: 2.4 },
};

Deno.bench("decisionLogEntry (sampled requests only)", { group: "decision log" }, () => {
  decisionLogEntry(INPUTS, { hashKey: "bench-hash-key-0123456789" });
});

Deno.bench("render (one scrape)", async () => {
  await metrics.render();
});
