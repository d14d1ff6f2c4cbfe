import assert from "node:assert/strict";
import { Hono } from "hono";
import { parseConfig } from "../../lib/config.ts";
import { EdgeMetrics } from "../../lib/metrics.ts";
import { metricsRoutes } from "../../routes/metrics.ts";

const TOKEN = "metrics-token-0123456789";

function app(env: Record<string, string> = {}) {
  const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", ...env });
  const metrics = new EdgeMetrics({ regions: ["EU"] });
  return { app: new Hono().route("/_edge", metricsRoutes({ config }, metrics)), metrics };
}

Deno.test("metrics are served in the Prometheus text format without a token configured", async () => {
  const { app: server, metrics } = app();
  metrics.observeRequest({ routeClass: "proxy", status: 200, region: "EU", durationMs: 2 });
  const res = await server.request("/_edge/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  assert.equal(res.headers.get("cache-control"), "no-store");
  const text = await res.text();
  assert.match(text, /^edge_requests_total\{route_class="proxy",status_class="2xx",region="EU"\} 1$/m);
});

Deno.test("metrics require the bearer token when METRICS_TOKEN is set", async () => {
  const { app: server } = app({ METRICS_TOKEN: TOKEN });
  const attempts: Array<Record<string, string>> = [
    {},
    { authorization: `Bearer ${TOKEN}x` },
    { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
    { authorization: `Basic ${btoa(`x:${TOKEN}`)}` },
    { authorization: TOKEN },
    { authorization: "Bearer " },
    { "x-api-key": TOKEN },
  ];
  for (const headers of attempts) {
    const res = await server.request("/_edge/metrics", { headers });
    assert.equal(res.status, 401, JSON.stringify(headers));
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="edge-metrics"');
    const body = await res.json();
    assert.deepEqual(body, { error: { code: "unauthorized", message: "A valid metrics token is required" } });
  }
  for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `Bearer  ${TOKEN} `]) {
    const res = await server.request("/_edge/metrics", { headers: { authorization } });
    assert.equal(res.status, 200, authorization);
    assert.match(await res.text(), /# TYPE edge_requests_total counter/);
  }
});

Deno.test("config rejects a short METRICS_TOKEN and an out-of-range LOG_SAMPLE_RATE", () => {
  assert.throws(
    () => parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", METRICS_TOKEN: "short" }),
    /METRICS_TOKEN must be at least 16 characters/,
  );
  assert.throws(
    () => parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", LOG_SAMPLE_RATE: "1.5" }),
    /LOG_SAMPLE_RATE must be between 0 and 1 \(got "1.5"\)/,
  );
  assert.throws(
    () => parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", LOG_SAMPLE_RATE: "often" }),
    /LOG_SAMPLE_RATE must be a number/,
  );
  const defaults = parseConfig({ ORIGIN_URL: "http://127.0.0.1:9" });
  assert.equal(defaults.logSampleRate, 0.01);
  assert.equal(defaults.metricsToken, undefined);
  assert.equal(defaults.logHashKey, undefined);
  const set = parseConfig({
    ORIGIN_URL: "http://127.0.0.1:9",
    LOG_SAMPLE_RATE: "0.25",
    LOG_HASH_KEY: "0123456789abcdef-key",
  });
  assert.equal(set.logSampleRate, 0.25);
  assert.equal(set.logHashKey, "0123456789abcdef-key");
});

Deno.test("metrics move when requests flow through the app", async () => {
  const { createApp } = await import("../../routes/app.ts");
  const { makeDeps, startOrigin, SEED_RULES } = await import("../support.ts");
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: SEED_RULES });
  try {
    const app = createApp(deps);
    const peer = { remoteAddr: { hostname: "203.0.113.9" } };
    for (let i = 0; i < 3; i++) {
      await (await app.request("http://edge.test/api/products/x", {}, peer)).body?.cancel();
    }
    await (await app.request("http://edge.test/_edge/context", {}, peer)).body?.cancel();
    const text = await (await app.request("http://edge.test/_edge/metrics", {}, peer)).text();
    const proxied = text.split("\n").find((l) =>
      l.startsWith("edge_requests_total{") && l.includes('route_class="proxy"')
    );
    assert.ok(proxied, text);
    assert.match(proxied, / 3$/);
    assert.match(text, /edge_stage_duration_seconds_count\{[^}]*stage="decide"[^}]*\} [1-9]/);
    assert.match(text, /edge_origin_duration_seconds_count[^\n]* 3/);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});
