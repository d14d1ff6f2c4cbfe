import assert from "node:assert/strict";
import { Hono } from "hono";
import { parseConfig } from "../../lib/app/config.ts";
import { EdgeMetrics } from "../../lib/obs/metrics.ts";
import { metricsRoutes } from "../../routes/metrics.ts";

const TOKEN = "metrics-token-0123456789";

function app(env: Record<string, string> = {}) {
  const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", ...env });
  const metrics = new EdgeMetrics({ regions: ["EU"] });
  return { app: new Hono().route("/_edge", metricsRoutes({ config }, metrics)), metrics };
}

const LOOPBACK = { remoteAddr: { hostname: "127.0.0.1" } };

Deno.test("metrics are served in the Prometheus text format without a token configured", async () => {
  const { app: server, metrics } = app();
  metrics.observeRequest({ routeClass: "proxy", status: 200, region: "EU", durationMs: 2 });
  const res = await server.request("/_edge/metrics", {}, LOOPBACK);
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

Deno.test("without METRICS_TOKEN, metrics answer only loopback and trusted proxies unless METRICS_PUBLIC", async () => {
  const peer = (hostname: string) => ({ remoteAddr: { hostname } });
  const cases: [
    env: Record<string, string>,
    info: ReturnType<typeof peer> | undefined,
    headers: Record<string, string>,
    status: number,
  ][] = [
    [{}, peer("203.0.113.9"), {}, 401],
    [{}, undefined, {}, 401],
    [{}, peer("10.0.0.5"), {}, 401],
    [{}, peer("127.0.0.1"), {}, 200],
    [{}, peer("127.8.9.10"), {}, 200],
    [{}, peer("::1"), {}, 200],
    [{}, peer("::ffff:127.0.0.1"), {}, 200],
    // A proxy on loopback that is not trusted forwards for the internet (the nginx template).
    [{}, peer("127.0.0.1"), { "x-forwarded-for": "203.0.113.9" }, 401],
    [{}, peer("127.0.0.1"), { forwarded: "for=203.0.113.9" }, 401],
    [{ TRUSTED_PROXIES: "10.0.0.0/8" }, peer("10.0.0.5"), {}, 200],
    // Through a trusted proxy, the client it forwards for decides.
    [{ TRUSTED_PROXIES: "10.0.0.0/8" }, peer("10.0.0.5"), { "x-forwarded-for": "203.0.113.9" }, 401],
    [{ TRUSTED_PROXIES: "10.0.0.0/8" }, peer("10.0.0.5"), { "x-forwarded-for": "10.1.2.3" }, 200],
    [{ TRUSTED_PROXIES: "127.0.0.1/32" }, peer("127.0.0.1"), { "x-forwarded-for": "203.0.113.9" }, 401],
    [{ METRICS_PUBLIC: "true" }, peer("203.0.113.9"), {}, 200],
    [{ METRICS_PUBLIC: "true" }, undefined, {}, 200],
    [{ METRICS_PUBLIC: "false" }, peer("203.0.113.9"), {}, 401],
    // A token, once set, is what decides, for every peer.
    [{ METRICS_TOKEN: TOKEN, METRICS_PUBLIC: "true" }, peer("203.0.113.9"), {}, 401],
    [{ METRICS_TOKEN: TOKEN }, peer("203.0.113.9"), { authorization: `Bearer ${TOKEN}` }, 200],
  ];
  for (const [env, info, headers, status] of cases) {
    const label = JSON.stringify({ env, info, headers });
    const res = await app(env).app.request("/_edge/metrics", { headers }, info);
    assert.equal(res.status, status, label);
    assert.equal(res.headers.get("cache-control"), "no-store", label);
    if (status === 401) {
      const body = await res.json();
      assert.equal(body.error.code, "unauthorized", label);
      assert.equal(typeof body.error.message, "string", label);
      assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"], label);
    } else {
      assert.match(await res.text(), /# TYPE edge_requests_total counter/, label);
    }
  }
  assert.throws(
    () => parseConfig({ ORIGIN_URL: "http://127.0.0.1:9", METRICS_PUBLIC: "yes" }),
    /METRICS_PUBLIC must be "true" or "false" \(got "yes"\)/,
  );
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
    const text = await (await app.request("http://edge.test/_edge/metrics", {}, {
      remoteAddr: { hostname: "127.0.0.1" },
    })).text();
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

/** Sums the samples of one series family whose labels include `labels`. */
function sampled(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const has = Object.entries(labels).every(([k, v]) => (m[2] ?? "").split(",").includes(`${k}="${v}"`));
    if (has) sum += Number(m[3]);
  }
  return sum;
}

/** Reads taken longer than 25 ms: the stalled ones, when `KV_TIMEOUT_MS` is 50. */
function slowReads(text: string, read: string): number {
  return sampled(text, "edge_kv_read_duration_seconds_count", { read }) -
    sampled(text, "edge_kv_read_duration_seconds_bucket", { read, le: "0.025" });
}

Deno.test("every KV read of the request path is timed, stalled and failed reads included", async () => {
  const { createApp } = await import("../../routes/app.ts");
  const { failingReads, makeDeps, stallingReads } = await import("../support.ts");
  const { applyBackendEvents, applyOptionsFromConfig } = await import("../../lib/sync/apply.ts");
  const now = Date.UTC(2026, 10, 26, 12, 0, 0);
  const deps = await makeDeps("http://127.0.0.1:9", {
    now: () => now,
    env: { USER_ID_HEADER: "x-user-id", USER_ID_PROXIES: "10.0.0.0/8", KV_TIMEOUT_MS: "50" },
  });
  const real = deps.kv;
  try {
    await applyBackendEvents(real, [
      { kind: "view", userId: "u1", itemId: "p1", at: new Date(now - 1000).toISOString() },
      { kind: "related", itemId: "p1", version: 1, related: [{ itemId: "p2", score: 0.9 }] },
    ], applyOptionsFromConfig(deps.config, now));
    const app = createApp(deps);
    const peer = { remoteAddr: { hostname: "10.0.0.1" } };
    const get = async (path: string, user: string, sid: string) => {
      const res = await app.request(`http://edge.test${path}`, {
        headers: { "x-user-id": user, cookie: `sid=${sid}-0123456789` },
      }, peer);
      assert.equal(res.status, 200, path);
      await res.body?.cancel();
    };
    // Healthy: a session lookup, a context read and the related lists of the recommendations.
    await get("/_edge/recommendations", "u1", "healthy");
    let text = await deps.metrics.render();
    for (const read of ["session", "context", "related"]) {
      assert.equal(sampled(text, "edge_kv_read_duration_seconds_count", { read }), 1, read);
    }
    // KV hangs: every read is cut at KV_TIMEOUT_MS, and counted with the time waited.
    deps.kv = stallingReads(real);
    for (let i = 0; i < 3; i++) await get("/_edge/context", `stalled-${i}`, `stalled-${i}`);
    text = await deps.metrics.render();
    assert.equal(slowReads(text, "session"), 3, text);
    assert.equal(slowReads(text, "context"), 3, text);
    // KV fails: the failed reads are counted too.
    deps.kv = failingReads(real);
    await get("/_edge/context", "failed", "failed");
    text = await deps.metrics.render();
    assert.equal(sampled(text, "edge_kv_read_duration_seconds_count", { read: "session" }), 5);
    assert.equal(sampled(text, "edge_kv_read_duration_seconds_count", { read: "context" }), 5);
  } finally {
    real.close();
  }
});

Deno.test("a read-through is timed, and counted once: a cache hit reusing its answer is no second read-through", async () => {
  const { createApp } = await import("../../routes/app.ts");
  const { makeDeps } = await import("../support.ts");
  const backend = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
    if (!new URL(request.url).pathname.includes("/u1/")) return new Response(null, { status: 404 });
    return Response.json({
      events: [{ kind: "view", userId: "u1", itemId: "p1", at: "2026-11-26T11:59:00Z" }],
    });
  });
  const deps = await makeDeps("http://127.0.0.1:9", {
    env: {
      USER_ID_HEADER: "x-user-id",
      USER_ID_PROXIES: "10.0.0.0/8",
      BACKEND_URL: `http://127.0.0.1:${backend.addr.port}`,
      BACKEND_TOKEN: "backend-token-0123456789",
    },
  });
  try {
    const app = createApp(deps);
    const peer = { remoteAddr: { hostname: "10.0.0.1" } };
    // The second request for u1 is served from the per-isolate cache (same clock).
    for (const user of ["u1", "u1", "ghost"]) {
      const res = await app.request(
        "http://edge.test/_edge/context",
        { headers: { "x-user-id": user } },
        peer,
      );
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    const text = await deps.metrics.render();
    assert.equal(sampled(text, "edge_context_cache_total", { result: "hit" }), 1, text);
    assert.equal(sampled(text, "edge_read_through_total", { outcome: "ok" }), 1, text);
    assert.equal(sampled(text, "edge_read_through_total", { outcome: "not_found" }), 1, text);
    assert.equal(sampled(text, "edge_read_through_duration_seconds_count", { outcome: "ok" }), 1, text);
    assert.equal(sampled(text, "edge_read_through_duration_seconds_count", { outcome: "not_found" }), 1);
  } finally {
    deps.kv.close();
    await backend.shutdown();
  }
});
