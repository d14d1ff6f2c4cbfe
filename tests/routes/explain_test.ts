import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { createLogger } from "../../lib/obs/log.ts";
import type { RuleSet } from "../../lib/rules/schema.ts";
import { assignVariation, namespaceHash } from "../../lib/rules/bucketing.ts";
import { canaryHash } from "../../lib/rules/store.ts";
import { followRulesInKv } from "../../lib/rules/follower.ts";
import { sign } from "../../lib/sync/verify.ts";
import type { Explanation } from "../../lib/rules/explanation.ts";
import { makeDeps, startOrigin } from "../support.ts";

const TOKEN = "rules-token-0123456789";
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW_SEC = Date.UTC(2026, 10, 26, 12, 0, 0) / 1000;
const ORIGIN = "http://127.0.0.1:9";
const PROXY = { remoteAddr: { hostname: "127.0.0.1" } };
const RULES: RuleSet = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/rules/explain.json", import.meta.url)),
);
const CANARY_RULES = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/rules/explain_canary.json", import.meta.url)),
);
const ENV = {
  RULES_TOKEN: TOKEN,
  TRUSTED_PROXIES: "127.0.0.1/32",
  SYNC_SECRETS: SECRET,
  LOG_SAMPLE_RATE: "1",
};
const auth = { authorization: `Bearer ${TOKEN}` };
const DESKTOP_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36";

const hero = { key: "hero", numVariations: 3, hashVersion: 2, coverage: 0.5 };
/** An anonymous id (the `ep_uid` alphabet) for which `pick` holds. */
function visitorWhere(pick: (key: string) => boolean): string {
  for (let i = 0; i < 10_000; i++) {
    const key = `visitor-${String(i).padStart(8, "0")}`;
    if (pick(key)) return key;
  }
  throw new Error("no such visitor");
}

async function withApp(
  fn: (ctx: {
    app: ReturnType<typeof createApp>;
    deps: Awaited<ReturnType<typeof makeDeps>>;
    logLines: string[];
  }) => Promise<void>,
  env: Record<string, string> = ENV,
): Promise<void> {
  const logLines: string[] = [];
  const deps = await makeDeps(ORIGIN, { env, rules: RULES, logLines });
  try {
    await fn({ app: createApp(deps), deps, logLines });
  } finally {
    deps.kv.close();
  }
}

async function explainGet(
  app: ReturnType<typeof createApp>,
  query: Record<string, string | string[]>,
): Promise<{ res: Response; body: Explanation }> {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const v of Array.isArray(value) ? value : [value]) params.append(name, v);
  }
  const res = await app.request(`http://edge.test/_edge/explain?${params}`, { headers: auth }, PROXY);
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal(res.headers.get("cache-control"), "no-store");
  // Explaining changes nothing: no anonymous id, no sticky assignment.
  assert.equal(res.headers.get("set-cookie"), null);
  return { res, body: await res.json() };
}

async function syncRequest(id: string, events: unknown[]): Promise<Request> {
  const body = JSON.stringify({ type: "edge.sync", timestamp: "2026-11-26T12:00:00Z", data: { events } });
  return new Request("http://edge.test/_edge/sync", {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(NOW_SEC),
      "webhook-signature": await sign(SECRET, { id, timestamp: NOW_SEC, body }),
    },
  });
}

Deno.test("GET and POST /_edge/explain do not exist without RULES_TOKEN", async () => {
  await withApp(async ({ app }) => {
    for (const method of ["GET", "POST"]) {
      const res = await app.request("/_edge/explain", {
        method,
        headers: auth,
        body: method === "POST" ? "{}" : null,
      });
      assert.equal(res.status, 404);
      assert.equal((await res.json()).error.code, "not_found");
    }
  }, { TRUSTED_PROXIES: "127.0.0.1/32" });
});

Deno.test("/_edge/explain answers 401 with the house error body without the right bearer token", async () => {
  await withApp(async ({ app }) => {
    const attempts: Record<string, string>[] = [
      {},
      { authorization: "Bearer rules-token-0123456788" },
      { authorization: TOKEN },
    ];
    for (const headers of attempts) {
      for (const method of ["GET", "POST"]) {
        const res = await app.request("/_edge/explain?path=/checkout", {
          method,
          headers,
          body: method === "POST" ? "{}" : null,
        });
        assert.equal(res.status, 401);
        assert.equal(res.headers.get("cache-control"), "no-store");
        assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer /);
        assert.deepEqual(await res.json(), {
          error: { code: "unauthorized", message: "A valid rules token is required" },
        });
      }
    }
  });
});

Deno.test("explain: a matched route, with the country from a trusted CDN header and the region from it", async () => {
  await withApp(async ({ app }) => {
    const { body } = await explainGet(app, {
      path: "/api/products/42?sort=price",
      header: ["cf-ipcountry: DE", `user-agent: ${DESKTOP_UA}`],
      cookie: "ep_uid=visitor-00000001",
    });
    assert.deepEqual(body.request, { method: "GET", path: "/api/products/42", search: "?sort=price" });
    assert.deepEqual(body.facts.country, {
      value: "DE",
      source: "header",
      header: "cf-ipcountry",
      why: 'Trusted geo header "cf-ipcountry"',
    });
    assert.deepEqual(body.facts.region, {
      value: "EU",
      source: "country",
      why: "Country DE is in regions.EU",
    });
    assert.equal(body.facts.device.reason, "user-agent");
    const route = body.routes[0]!;
    assert.equal(route.matched, true);
    assert.equal(route.key, "EU");
    assert.equal(route.target, "/api/eu/42");
    assert.deepEqual(body.routes.slice(1).map((r) => r.reason), [
      "not-reached",
      "not-reached",
      "not-reached",
      "not-reached",
    ]);
    assert.deepEqual(body.decision.action, { type: "proxy", path: "/api/eu/42" });
    assert.equal(body.decision.matchedRoute, "/api/products/*");
    assert.deepEqual(body.rules, {
      version: 7,
      role: "active",
      activeVersion: 7,
      canary: null,
      why: "Active rules version 7; no canary runs",
    });
    assert.equal(body.identity.source, "anonymous");
    assert.equal(body.identity.key, "visitor-00000001");
  });
});

Deno.test("explain: a visitor out of coverage is served control, with the hash and every variation's range", async () => {
  await withApp(async ({ app }) => {
    const key = visitorWhere((k) => {
      const a = assignVariation(k, hero);
      return !a.inExperiment && a.hashValue !== null;
    });
    const { body } = await explainGet(app, { path: "/", cookie: `ep_uid=${key}` });
    const entry = body.experiments.find((e) => e.key === "hero")!;
    assert.equal(entry.reason, "coverage");
    assert.equal(entry.matched, true);
    assert.equal(entry.inExperiment, false);
    assert.equal(entry.variation, "control");
    assert.equal(entry.hashValue, assignVariation(key, hero).hashValue);
    assert.deepEqual(entry.ranges, {
      control: [0, 0.166667],
      a: [0.333333, 0.5],
      b: [0.666667, 0.833333],
    });
    assert.equal(body.decision.variants.hero, undefined);
    assert.equal(body.decision.stickyAssignments.hero, undefined);
  });
});

Deno.test("explain: a bot is served control and is in no experiment; the device says why", async () => {
  await withApp(async ({ app }) => {
    const { body } = await explainGet(app, {
      path: "/checkout",
      header: "User-Agent: Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    });
    assert.equal(body.facts.bot, true);
    assert.equal(body.facts.device.value, "bot");
    assert.equal(body.facts.device.reason, "bot-user-agent");
    for (const key of ["hero", "checkout"]) {
      const entry = body.experiments.find((e) => e.key === key)!;
      assert.equal(entry.reason, "bot");
      assert.equal(entry.inExperiment, false);
      assert.equal(entry.variation, "control");
    }
    assert.deepEqual(body.decision.variants, {});
    // No ep_uid: the key is a fresh id, which a real request would set and explaining does not.
    assert.equal(body.identity.newAnonymousId, true);
  });
});

Deno.test("explain: a namespace miss gives the visitor's namespace hash and the range", async () => {
  await withApp(async ({ app }) => {
    const key = visitorWhere((k) => namespaceHash(k, "shop") >= 0.5);
    const { body } = await explainGet(app, { path: "/checkout", cookie: `ep_uid=${key}` });
    const entry = body.experiments.find((e) => e.key === "checkout")!;
    assert.equal(entry.reason, "namespace");
    assert.equal(entry.inExperiment, false);
    assert.deepEqual(entry.namespace, { id: "shop", range: [0, 0.5], hashValue: namespaceHash(key, "shop") });
    assert.match(entry.why, /outside "shop" \[0, 0\.5\)/);
    // The route keyed by the experiment takes its fallback.
    assert.equal(body.routes[2]!.key, "*");
    const pay = body.flags.find((f) => f.key === "pay-label")!;
    assert.equal(pay.rules[0]!.field, "variant");
    assert.match(pay.rules[0]!.why, /served "control"/);
  });
});

Deno.test("explain (POST JSON): a when mismatch names the field that failed", async () => {
  await withApp(async ({ app }) => {
    const res = await app.request("http://edge.test/_edge/explain", {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({
        path: "/deals",
        headers: { "cf-ipcountry": "FR", "user-agent": DESKTOP_UA },
        cookies: { ep_uid: "visitor-00000002" },
      }),
    }, PROXY);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("set-cookie"), null);
    const body: Explanation = await res.json();
    const deals = body.routes[1]!;
    assert.equal(deals.reason, "when");
    assert.equal(deals.field, "device");
    assert.equal(deals.why, 'when.device wants ["mobile"]; the visitor\'s device is "desktop"');
    const banner = body.experiments.find((e) => e.key === "eu-banner")!;
    assert.equal(banner.matched, true);
    const us = await (await app.request("http://edge.test/_edge/explain", {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ path: "/deals", headers: { "cf-ipcountry": "US" } }),
    }, PROXY)).json() as Explanation;
    const missed = us.experiments.find((e) => e.key === "eu-banner")!;
    assert.equal(missed.reason, "when");
    assert.equal(missed.field, "region");
    assert.equal(us.routes[1]!.field, "region");
  });
});

Deno.test("explain: a sticky cookie the proxy set is kept, and explaining sets no new one", async () => {
  const origin = startOrigin();
  const logLines: string[] = [];
  const deps = await makeDeps(origin.url, { env: ENV, rules: RULES, logLines });
  try {
    const app = createApp(deps);
    const key = visitorWhere((k) => assignVariation(k, hero).inExperiment);
    const page = await app.request("http://edge.test/home", { headers: { cookie: `ep_uid=${key}` } }, PROXY);
    await page.body?.cancel();
    const sticky = (page.headers.get("set-cookie") ?? "").match(/ep_exp=([^;]*)/)?.[1];
    assert.ok(sticky, "the proxy set a sticky cookie");
    const decisionLines = () => logLines.filter((line) => line.includes('"decision"')).length;
    const before = decisionLines();
    assert.ok(before > 0, "the proxied page logged its decision");

    const { body } = await explainGet(app, { path: "/home", cookie: [`ep_uid=${key}`, `ep_exp=${sticky}`] });
    const entry = body.experiments.find((e) => e.key === "hero")!;
    assert.equal(entry.reason, "sticky");
    assert.equal(entry.sticky?.valid, true);
    assert.ok(decodeURIComponent(sticky).includes(`hero:${entry.variation}`), sticky);
    assert.equal(body.decision.stickyAssignments.hero, entry.variation);
    assert.match(entry.why, /still a variation: kept/);
    assert.equal(decisionLines(), before, "explaining logs no decision");
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("explain: a canary visitor is decided by the canary version, with its hash and share", async () => {
  const stop = new AbortController();
  const log = createLogger("silent", { now: () => 0 });
  await withApp(async ({ app, deps }) => {
    const following = followRulesInKv(deps.kv, deps.rules, { pollMs: 60_000, log, signal: stop.signal });
    try {
      const res = await app.request(
        await syncRequest("msg_canary", [{
          kind: "rules",
          version: 8,
          at: "2026-11-26T11:59:00Z",
          canary: 0.5,
          rules: CANARY_RULES,
        }]),
      );
      const applied = await res.json();
      assert.deepEqual([applied.applied, applied.stale, applied.rules.canary], [1, 0, {
        share: 0.5,
        version: 8,
      }]);
      const deadline = performance.now() + 1000;
      while (deps.rules.canary === undefined && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const inCanary = visitorWhere((k) => canaryHash(k, 8) < 0.5);
      const { body } = await explainGet(app, { path: "/checkout", cookie: `ep_uid=${inCanary}` });
      assert.deepEqual(body.rules, {
        version: 8,
        role: "canary",
        activeVersion: 7,
        canary: { version: 8, share: 0.5, hashValue: canaryHash(inCanary, 8), inCanary: true },
        why: `Canary version 8: the visitor's canary hash ${canaryHash(inCanary, 8)} is below its share 0.5`,
      });
      assert.deepEqual(body.decision.action, { type: "proxy", path: "/checkout-v8" });
      assert.equal(body.decision.rulesVersion, 8);
      assert.deepEqual(body.experiments.map((e) => e.key), ["hero"]);

      const outside = visitorWhere((k) => canaryHash(k, 8) >= 0.5);
      const active = (await explainGet(app, { path: "/checkout", cookie: `ep_uid=${outside}` })).body;
      assert.equal(active.rules.role, "active");
      assert.equal(active.rules.canary?.inCanary, false);
      assert.equal(active.decision.rulesVersion, 7);
    } finally {
      stop.abort();
      await following;
    }
  });
});

Deno.test("explain: a logged-in visitor's context comes from KV, then from this instance's cache", async () => {
  await withApp(async ({ app }) => {
    const res = await app.request(
      await syncRequest("msg_user", [
        {
          kind: "session",
          sessionId: "sess-0123456789",
          userId: "u42",
          expiresAt: "2030-01-01T00:00:00Z",
          at: "2026-11-26T11:00:00Z",
        },
        {
          kind: "profile",
          userId: "u42",
          version: 1,
          at: "2026-11-26T11:00:00Z",
          segments: ["vip"],
          attributes: { tier: "gold" },
        },
      ]),
    );
    assert.deepEqual(await res.json(), { applied: 2, stale: 0 });
    const query = { path: "/", cookie: "sid=sess-0123456789" };
    const first = (await explainGet(app, query)).body;
    assert.equal(first.identity.source, "session");
    assert.equal(first.identity.key, "u42");
    assert.equal(first.context.source, "kv");
    assert.deepEqual(first.context.segments, ["vip"]);
    assert.deepEqual(first.context.attributes, ["tier"]);
    assert.deepEqual(first.flags.find((f) => f.key === "vip-deals")!.value, true);
    const second = (await explainGet(app, query)).body;
    assert.equal(second.context.source, "cache");
    assert.equal(second.context.cache, "hit");
    // The described request's own identity only: the session cookie is never echoed.
    assert.ok(!JSON.stringify(second).includes("sess-0123456789"));
  });
});

Deno.test("explain with no description explains the calling request itself, without its token", async () => {
  await withApp(async ({ app }) => {
    const res = await app.request("http://edge.test/_edge/explain", {
      headers: { ...auth, "cf-ipcountry": "US", cookie: "ep_uid=visitor-00000003", "sec-gpc": "1" },
    }, PROXY);
    assert.equal(res.status, 200);
    const body: Explanation = await res.json();
    assert.equal(body.request.path, "/");
    assert.equal(body.facts.country.value, "US");
    assert.equal(body.facts.gpc, true);
    assert.equal(body.identity.key, "visitor-00000003");
  });
});

Deno.test("explaining records no exposure and counts no flag evaluation", async () => {
  await withApp(async ({ app, deps }) => {
    // Visitors in hero (and in checkout's namespace half), as a proxied request would expose them.
    const inHero = visitorWhere((key) => assignVariation(key, hero).inExperiment);
    for (const path of ["/", "/checkout"]) {
      const { body } = await explainGet(app, {
        path,
        header: `user-agent: ${DESKTOP_UA}`,
        cookie: `ep_uid=${inHero}`,
      });
      assert.ok(body.decision.variants.hero !== undefined, "the explained visitor is in hero");
    }
    const text = await deps.metrics.render();
    assert.doesNotMatch(text, /^edge_experiment_exposures_total\{/m);
    assert.doesNotMatch(text, /^edge_flag_evaluations_total\{/m);
    const report = await deps.exposures.report({ active: deps.rules.current });
    assert.ok(report.every((experiment) => experiment.total === 0));
  });
});

Deno.test("explain answers text with format=text, and 400 for a bad description, path or body", async () => {
  await withApp(async ({ app }) => {
    const text = await app.request("/_edge/explain?format=text&path=/old-sale", { headers: auth }, PROXY);
    assert.equal(text.status, 200);
    assert.match(text.headers.get("content-type") ?? "", /^text\/plain/);
    assert.match(await text.text(), /✓ #3 \/old-sale +Redirect 301 to "\/sale"/);

    const bad = async (url: string, init: RequestInit = {}) => {
      const res = await app.request(url, { ...init, headers: { ...auth, ...init.headers } }, PROXY);
      assert.equal(res.status, 400);
      return (await res.json()).error;
    };
    const badMethod = await bad("/_edge/explain?path=/&method=TRACE");
    assert.equal(badMethod.code, "invalid_request");
    assert.equal(badMethod.fields[0].field, "method");
    assert.equal((await bad("/_edge/explain?path=nope")).fields[0].field, "path");
    assert.equal((await bad("/_edge/explain?format=yaml")).code, "invalid_request");
    assert.equal((await bad("/_edge/explain?path=/a%252fb")).code, "bad_path");
    assert.equal((await bad("/_edge/explain", { method: "POST", body: "{nope" })).code, "invalid_json");
    const unknown = await bad("/_edge/explain", { method: "POST", body: JSON.stringify({ pth: "/" }) });
    assert.equal(unknown.code, "invalid_request");
    assert.equal(
      (await bad("/_edge/explain", { method: "POST", body: JSON.stringify({ peer: "10.0.0/8" }) }))
        .fields[0].field,
      "peer",
    );
  });
});
