import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps, stallingReads, startOrigin } from "../support.ts";
import { applyBackendEvents, applyOptionsFromConfig } from "../../lib/sync/apply.ts";
import type { Deps } from "../../lib/app/deps.ts";
import { openIpGeoDb } from "../../lib/pipeline/ip_geo.ts";

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const PEER = { remoteAddr: { hostname: "203.0.113.9" } };
const iso = (ms: number) => new Date(ms).toISOString();

async function seed(deps: Deps) {
  await applyBackendEvents(deps.kv, [
    {
      kind: "session",
      sessionId: "sess-alice",
      userId: "alice",
      expiresAt: iso(NOW + 3_600_000),
      at: iso(NOW - 5000),
    },
    {
      kind: "session",
      sessionId: "sess-bob",
      userId: "bob",
      expiresAt: iso(NOW + 3_600_000),
      at: iso(NOW - 5000),
    },
    { kind: "view", userId: "alice", itemId: "p1", at: iso(NOW - 60_000) },
    { kind: "view", userId: "alice", itemId: "p2", at: iso(NOW - 1000) },
    { kind: "cart", userId: "alice", version: 1, at: iso(NOW - 500), items: [{ itemId: "p9", qty: 1 }] },
    { kind: "profile", userId: "alice", version: 1, at: iso(NOW - 500), segments: ["vip"], attributes: {} },
    { kind: "view", userId: "bob", itemId: "p7", at: iso(NOW - 1000) },
    {
      kind: "related",
      itemId: "p2",
      version: 1,
      related: [{ itemId: "p3", score: 0.9 }, { itemId: "p9", score: 0.8 }, { itemId: "p1", score: 0.7 }, {
        itemId: "p4",
        score: 0.5,
      }],
    },
    { kind: "related", itemId: "p1", version: 1, related: [{ itemId: "p4", score: 0.9 }] },
  ], applyOptionsFromConfig(deps.config, NOW));
}

async function withApp(fn: (app: ReturnType<typeof createApp>) => Promise<void>) {
  const deps = await makeDeps("http://127.0.0.1:9", { now: () => NOW });
  try {
    await seed(deps);
    await fn(createApp(deps));
  } finally {
    deps.kv.close();
  }
}

Deno.test("/_edge/context shows each visitor only their own context", async () => {
  await withApp(async (app) => {
    const alice = await app.request("/_edge/context", { headers: { cookie: "sid=sess-alice" } }, PEER);
    assert.equal(alice.status, 200);
    assert.match(alice.headers.get("cache-control") ?? "", /^private/);
    const a = await alice.json();
    assert.equal(a.visitor.userId, "alice");
    assert.deepEqual(a.recentViews, ["p2", "p1"]);
    assert.deepEqual(a.cartItemIds, ["p9"]);
    assert.deepEqual(a.segments, ["vip"]);
    const bob = await (await app.request("/_edge/context", { headers: { cookie: "sid=sess-bob" } }, PEER))
      .json();
    assert.equal(bob.visitor.userId, "bob");
    assert.deepEqual(bob.recentViews, ["p7"]);
    assert.deepEqual(bob.cartItemIds, []);
    // No query parameter or header lets a visitor ask for someone else.
    const probe =
      await (await app.request("/_edge/context?userId=alice", { headers: { "x-user-id": "alice" } }, PEER))
        .json();
    assert.equal(probe.visitor.userId, null);
    assert.deepEqual(probe.recentViews, []);
  });
});

Deno.test("/_edge/recommendations scores related items, excluding cart and viewed items", async () => {
  await withApp(async (app) => {
    const res = await app.request(
      "/_edge/recommendations?limit=5",
      { headers: { cookie: "sid=sess-alice" } },
      PEER,
    );
    assert.equal(res.status, 200);
    const { items } = await res.json();
    const ids = items.map((i: { itemId: string }) => i.itemId);
    assert.deepEqual(ids, ["p4", "p3"]);
    // "Because you viewed …": the contributing views, strongest first.
    assert.deepEqual(items.map((i: { because: string[] }) => i.because), [["p1", "p2"], ["p2"]]);
    const again = await (await app.request("/_edge/recommendations?limit=5", {
      headers: { cookie: "sid=sess-alice" },
    }, PEER)).json();
    assert.deepEqual(again.items, items);
    const none = await (await app.request("/_edge/recommendations", {}, PEER)).json();
    assert.deepEqual(none, { items: [] });
  });
});

Deno.test("/_edge/recommendations rejects a bad limit with the house error body", async () => {
  await withApp(async (app) => {
    for (const limit of ["0", "51", "abc", "2.5", "2&limit=3"]) {
      const res = await app.request(`/_edge/recommendations?limit=${limit}`, {}, PEER);
      assert.equal(res.status, 400, limit);
      assert.equal(res.headers.get("cache-control"), "no-store");
      const body = await res.json();
      assert.equal(body.error.code, "invalid_request");
      assert.equal(body.error.fields[0].field, "limit");
    }
  });
});

Deno.test("the edge-served reads answer under percent-encoded spellings of their paths, as before", async () => {
  await withApp(async (app) => {
    const context = await app.request("/_edge/%63ontext", {}, PEER);
    assert.equal(context.status, 200);
    assert.ok(context.headers.get("x-request-id"));
    assert.equal(typeof (await context.json()).region, "string");
    const encoded = await app.request("/_edge/%72ecommendations?limit=2", {}, PEER);
    assert.equal(encoded.status, 200);
    assert.ok(Array.isArray((await encoded.json()).items));
  });
});

Deno.test("/_edge/context under Sec-GPC: 1 carries no behavioural data", async () => {
  await withApp(async (app) => {
    const res = await app.request(
      "/_edge/context",
      { headers: { cookie: "sid=sess-alice", "sec-gpc": "1" } },
      PEER,
    );
    const body = await res.json();
    assert.equal(body.gpc, true);
    assert.equal(body.visitor.userId, "alice");
    assert.deepEqual(body.recentViews, []);
    assert.deepEqual(body.segments, []);
    assert.deepEqual(body.recommendations, []);
  });
});

Deno.test("a KV that stalls holds an edge read no longer than KV_TIMEOUT_MS: the visitor gets a safe answer", async () => {
  const deps = await makeDeps("http://127.0.0.1:9", { now: () => NOW, env: { KV_TIMEOUT_MS: "50" } });
  const realKv = deps.kv;
  try {
    await seed(deps);
    const app = createApp({ ...deps, kv: stallingReads(realKv) });
    for (const path of ["/_edge/context", "/_edge/recommendations"]) {
      const started = performance.now();
      const res = await app.request(path, { headers: { cookie: "sid=sess-alice" } }, PEER);
      assert.equal(res.status, 200, path);
      const body = await res.json();
      assert.ok(performance.now() - started < 1000, `${path} answered in time`);
      // The session could not be read: an anonymous answer, never another visitor's data.
      if (path === "/_edge/context") assert.deepEqual([body.visitor.userId, body.recentViews], [null, []]);
      else assert.deepEqual(body, { items: [] });
    }
  } finally {
    realKv.close();
  }
});

Deno.test("decision logs of /_edge/context and /_edge/recommendations say the edge answered, not proxy", async () => {
  const origin = startOrigin();
  const lines: string[] = [];
  const deps = await makeDeps(origin.url, {
    now: () => NOW,
    logLines: lines,
    env: { LOG_SAMPLE_RATE: "1" },
    rules: { version: 3, routes: [{ match: "/*", rewrite: { "*": "/site/*" } }] },
  });
  try {
    const app = createApp(deps);
    for (const path of ["/_edge/context", "/_edge/recommendations", "/page"]) {
      const res = await app.request(path, { headers: { cookie: "sid=sess-alice" } }, PEER);
      assert.equal(res.status, 200, path);
      await res.body?.cancel();
    }
    const decisions = lines.map((line) => JSON.parse(line)).filter((entry) => entry.kind === "decision");
    const requests = lines.map((line) => JSON.parse(line)).filter((entry) => entry.msg === "request");
    assert.deepEqual(decisions.map((entry) => [entry.action, entry.route]), [
      ["edge", undefined],
      ["edge", undefined],
      ["proxy", "/*"],
    ]);
    assert.deepEqual(requests.map((entry) => entry.rewrittenPath), [undefined, undefined, "/site/page"]);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("/_edge/context says where the country came from: a trusted header, the IP database, or nowhere", async () => {
  const ipGeo = openIpGeoDb(Deno.openSync);
  const deps = await makeDeps("http://127.0.0.1:9", {
    now: () => NOW,
    ipGeo,
    env: { TRUSTED_PROXIES: "127.0.0.1/32" },
    rules: { version: 1, regions: { EU: ["DE"] } },
  });
  try {
    const app = createApp(deps);
    const loopback = { remoteAddr: { hostname: "127.0.0.1" } };
    const context = async (headers: Record<string, string>, peer = loopback) =>
      await (await app.request("/_edge/context", { headers }, peer)).json();
    const header = await context({ "x-geo-country": "DE" });
    assert.deepEqual([header.region, header.country, header.countrySource], ["EU", "DE", "header"]);
    const ip = await context({ "x-forwarded-for": "130.149.7.201" });
    assert.deepEqual([ip.region, ip.country, ip.countrySource], ["EU", "DE", "ip"]);
    const none = await context({});
    assert.deepEqual([none.region, none.country, none.countrySource], ["GLOBAL", null, null]);
    // From a peer that is not a trusted proxy, neither header counts.
    const untrusted = await context({ "x-geo-country": "DE", "x-forwarded-for": "130.149.7.201" }, PEER);
    assert.notEqual(untrusted.countrySource, "header");
    assert.notEqual(untrusted.country, "DE");
  } finally {
    deps.kv.close();
  }
});
