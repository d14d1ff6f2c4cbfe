import assert from "node:assert/strict";
import { createApp, type EdgeApp } from "../../routes/app.ts";
import type { Deps } from "../../lib/app/deps.ts";
import type { RuleSet } from "../../lib/rules/schema.ts";
import { EXPOSURE_EVENT_SCHEMA } from "../../lib/exposures/events.ts";
import { answered, makeDeps, startOrigin, type TestOrigin } from "../support.ts";
import { type ExposureReceiver, startExposureReceiver, TEST_EXPOSURES_SECRET } from "../exposure_receiver.ts";

const BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " +
  "Chrome/124.0.0.0 Safari/537.36";
const CURL = "curl/8.5.0";
const TRUSTED = { remoteAddr: { hostname: "127.0.0.1" } };
const PEER = { remoteAddr: { hostname: "203.0.113.9" } };
const RULES_TOKEN = "rules-token-0123456789";

const RULES: RuleSet = {
  version: 4,
  defaultRegion: "GLOBAL",
  regions: { EU: ["DE"] },
  routes: [{ match: "/old-sale", redirect: { to: "/sale", status: 302 } }],
  experiments: [
    { key: "hero", variations: ["control", "a", "b"], seed: "hero", match: "/*" },
    // Half of the visitors are outside coverage, and it is exposed on /api/ paths only.
    {
      key: "checkout",
      variations: ["control", "one-page"],
      coverage: 0.5,
      seed: "checkout",
      match: "/api/*",
    },
    { key: "off", variations: ["control", "x"], match: "/*", enabled: false },
  ],
  flags: [
    { key: "new-search", type: "boolean", default: false, rules: [{ rollout: 0.5, value: true }] },
    {
      key: "theme",
      type: "string",
      default: "light",
      variants: { light: "light", dark: "dark" },
      rules: [{ when: { region: ["EU"] }, variant: "dark" }],
    },
  ],
};

interface Setup {
  app: EdgeApp;
  deps: Deps;
  origin: TestOrigin;
  receiver: ExposureReceiver;
}

async function withService(
  fn: (setup: Setup) => Promise<void>,
  options: { env?: Record<string, string>; rules?: RuleSet; delivery?: boolean } = {},
): Promise<void> {
  const origin = startOrigin();
  const receiver = startExposureReceiver();
  const delivery = options.delivery ?? true;
  const deps = await makeDeps(origin.url, {
    env: {
      TRUSTED_PROXIES: "127.0.0.1/32",
      // The trusted hop also plays the login proxy that names the user.
      USER_ID_HEADER: "x-user-id",
      USER_ID_PROXIES: "127.0.0.1/32",
      RULES_TOKEN,
      ...(delivery
        ? { EXPOSURES_URL: receiver.url, EXPOSURES_SECRET: TEST_EXPOSURES_SECRET, EXPOSURES_FLUSH_MS: "20" }
        : {}),
      ...options.env,
    },
    rules: options.rules ?? RULES,
    // Real time: the receiver checks webhook-timestamp against its own clock.
    now: Date.now,
  });
  try {
    await fn({ app: createApp(deps), deps, origin, receiver });
  } finally {
    await deps.exposures.flush();
    deps.kv.close();
    await receiver.close();
    await origin.close();
  }
}

/** A browser's cookie jar: keeps what the edge sets and sends it back. */
class Browser {
  readonly cookies = new Map<string, string>();
  constructor(readonly userAgent = BROWSER, readonly extra: Record<string, string> = {}) {}

  async get(app: EdgeApp, path: string, info = PEER): Promise<Response> {
    const headers: Record<string, string> = { "user-agent": this.userAgent, ...this.extra };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await app.request(`http://edge.test${path}`, { headers, redirect: "manual" }, info);
    await res.body?.cancel();
    for (const cookie of res.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const eq = pair!.indexOf("=");
      const value = pair!.slice(eq + 1);
      if (/max-age=0/i.test(cookie)) this.cookies.delete(pair!.slice(0, eq));
      else this.cookies.set(pair!.slice(0, eq), value);
    }
    return res;
  }
}

function variantsSeen(header: string | null): Map<string, string> {
  return new Map(
    (header ?? "").split(",").filter(Boolean).map((pair) => pair.split("=") as [string, string]),
  );
}

async function metricsText(app: EdgeApp): Promise<string> {
  return await (await app.request("/_edge/metrics", {}, { remoteAddr: { hostname: "127.0.0.1" } })).text();
}

function metricValue(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("each browser visitor gives exactly one exposure per experiment it is in, with the variation the origin saw", async () => {
  await withService(async ({ app, deps, origin, receiver }) => {
    const visitors = Array.from({ length: 40 }, () => new Browser());
    for (const visitor of visitors) {
      for (const path of ["/", "/api/cart", "/api/cart", "/products/1", "/"]) await visitor.get(app, path);
    }
    await deps.exposures.flush();
    const seen = new Map<string, Map<string, string>>();
    for (const request of origin.seen) {
      const visitor = request.headers.get("x-edge-visitor")!;
      const variants = seen.get(visitor) ?? new Map();
      for (const [key, value] of variantsSeen(request.headers.get("x-edge-variants"))) {
        // The origin never sees two variations of one experiment for one visitor.
        assert.equal(variants.get(key) ?? value, value);
        variants.set(key, value);
      }
      seen.set(visitor, variants);
    }
    const expected = [...seen].flatMap(([visitor, variants]) =>
      [...variants].map(([experiment, variation]) => `${visitor} ${experiment} ${variation}`)
    ).sort();
    const got = receiver.exposures().map((e) => `${e.visitor} ${e.experiment} ${e.variation}`).sort();
    assert.deepEqual(got, expected);
    assert.ok(receiver.attempts.length > 0 && receiver.attempts.every((attempt) => attempt.verified));
    // Every visitor is in hero; coverage 0.5 leaves some outside checkout, and they have none.
    assert.equal(got.filter((line) => line.includes(" hero ")).length, 40);
    const checkout = got.filter((line) => line.includes(" checkout ")).length;
    assert.ok(checkout > 5 && checkout < 35, `checkout exposures: ${checkout}`);
    assert.ok(!got.some((line) => line.includes(" off ")));
    for (const event of receiver.exposures()) {
      assert.equal(event.rulesVersion, 4);
      assert.equal(event.region, "GLOBAL");
      assert.equal(event.device, "desktop");
      assert.equal(event.userId, undefined);
      assert.ok(event.experiment === "hero" ? event.path === "/" : event.path === "/api/cart");
      assert.ok(!Number.isNaN(Date.parse(event.at)));
      assert.match(event.requestId, /^id-/);
    }
    const text = await metricsText(app);
    const heroTotal = ["control", "a", "b"].reduce(
      (sum, v) =>
        sum + (metricValue(text, `edge_experiment_exposures_total{experiment="hero",variation="${v}"}`) ?? 0),
      0,
    );
    assert.equal(heroTotal, 40);
    assert.equal(metricValue(text, 'edge_exposure_events_total{result="queued"}'), got.length);
    assert.equal(metricValue(text, 'edge_exposure_events_total{result="sent"}'), got.length);
    assert.equal(metricValue(text, 'edge_exposure_events_total{result="dropped"}'), 0);
    assert.equal(metricValue(text, "edge_exposure_queue_events"), 0);
  });
});

Deno.test("exposure events follow the published JSON Schema", async () => {
  await withService(async ({ app, deps, receiver }) => {
    await new Browser(BROWSER, { "x-user-id": "user-7" }).get(app, "/api/x", TRUSTED);
    await new Browser().get(app, "/api/x");
    await deps.exposures.flush();
    const events = receiver.exposures();
    assert.ok(events.length >= 2);
    const schema = EXPOSURE_EVENT_SCHEMA;
    for (const event of events) {
      for (const name of schema.required) assert.ok(name in event, `${name} is present`);
      for (const [name, value] of Object.entries(event)) {
        const property = schema.properties[name as keyof typeof schema.properties];
        assert.ok(property, `${name} is in the schema`);
        if ("type" in property) {
          const type = property.type === "integer" && Number.isInteger(value) ? "integer" : typeof value;
          assert.equal(type, property.type, `${name} is a ${property.type}`);
        }
        if ("pattern" in property) assert.match(String(value), new RegExp(property.pattern));
        if ("enum" in property) assert.ok((property.enum as readonly string[]).includes(String(value)));
      }
    }
  });
});

Deno.test("an exposure's path is cut to the schema's bound: a client's long path cannot grow the buffer", async () => {
  await withService(async ({ app, deps, receiver }) => {
    // The longest path the edge forwards (8 192 characters), on an experiment that matches everything.
    const long = "/" + "p".repeat(8191);
    assert.equal((await new Browser().get(app, long)).status, 200);
    await deps.exposures.flush();
    const [event] = receiver.exposures();
    assert.equal(event!.path, long.slice(0, EXPOSURE_EVENT_SCHEMA.properties.path.maxLength));
    assert.equal(EXPOSURE_EVENT_SCHEMA.properties.path.maxLength, 1024);
  });
});

Deno.test("bots give no exposures, and neither do experiments a path does not match", async () => {
  await withService(async ({ app, deps, receiver, origin }) => {
    const bot = new Browser(CURL);
    for (let i = 0; i < 5; i++) await bot.get(app, "/api/cart");
    const crawler = new Browser("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    await crawler.get(app, "/");
    // hero everywhere, but checkout only on /api/*.
    const visitor = new Browser();
    await visitor.get(app, "/about");
    await deps.exposures.flush();
    assert.equal(origin.seen.filter((r) => r.headers.get("x-edge-variants") === null).length, 6);
    assert.deepEqual(receiver.exposures().map((e) => e.experiment), ["hero"]);
    assert.equal(metricValue(await metricsText(app), 'edge_exposure_events_total{result="queued"}'), 1);
  });
});

Deno.test("visitors outside an experiment's namespace give no exposure", async () => {
  const rules: RuleSet = {
    version: 5,
    experiments: [{ key: "ns", variations: ["control", "x"], match: "/*", namespace: ["pricing", 0, 0.4] }],
  };
  await withService(async ({ app, deps, receiver, origin }) => {
    for (let i = 0; i < 30; i++) await new Browser().get(app, "/");
    await deps.exposures.flush();
    const inside = origin.seen.filter((r) => r.headers.get("x-edge-variants") !== null).length;
    assert.ok(inside > 0 && inside < 30, `in the namespace: ${inside}`);
    assert.equal(receiver.exposures().length, inside);
  }, { rules });
});

Deno.test("requests that race before the sticky cookie comes back give one exposure", async () => {
  await withService(async ({ app, deps, receiver }) => {
    const headers = { "user-agent": BROWSER, cookie: "ep_uid=racingvisitor0000001" };
    const responses = await Promise.all(
      Array.from({ length: 4 }, () => app.request("http://edge.test/", { headers }, PEER)),
    );
    for (const res of responses) await res.body?.cancel();
    await deps.exposures.flush();
    assert.deepEqual(receiver.exposures().map((e) => [e.visitor, e.experiment]), [[
      "racingvisitor0000001",
      "hero",
    ]]);
  });
});

Deno.test("an assignment the sticky cookie records is no new exposure on another instance", async () => {
  await withService(async (first) => {
    const visitor = new Browser();
    await visitor.get(first.app, "/api/cart");
    await first.deps.exposures.flush();
    const exposed = first.receiver.exposures().length;
    assert.ok(exposed >= 1);
    assert.ok(visitor.cookies.has("ep_exp"));
    // A second isolate (its own recent-exposure set) sees the visitor's cookie.
    await withService(async (second) => {
      for (const path of ["/", "/api/cart"]) await visitor.get(second.app, path);
      await second.deps.exposures.flush();
      assert.equal(second.receiver.exposures().length, 0);
      assert.ok(second.origin.seen.every((r) => r.headers.get("x-edge-variants")?.includes("hero=")));
    });
  });
});

Deno.test("a logged-in visitor's exposure names the user, except under Sec-GPC: 1", async () => {
  await withService(async ({ app, deps, receiver }) => {
    const user = new Browser(BROWSER, { "x-user-id": "user-42" });
    await user.get(app, "/", TRUSTED);
    const private_ = new Browser(BROWSER, { "x-user-id": "user-43", "sec-gpc": "1" });
    await private_.get(app, "/", TRUSTED);
    await deps.exposures.flush();
    const [first, second] = receiver.exposures();
    assert.equal(first!.userId, "user-42");
    assert.equal(first!.visitor, "user-42");
    assert.equal(second!.userId, undefined);
    assert.ok(!JSON.stringify(second).includes("user-43"));
    assert.equal(second!.visitor, private_.cookies.get("ep_uid"));
  });
});

Deno.test("redirects, /_edge/context and /_edge/recommendations expose too", async () => {
  await withService(async ({ app, deps, receiver, origin }) => {
    const a = new Browser();
    assert.equal((await a.get(app, "/old-sale")).status, 302);
    const b = new Browser();
    assert.equal((await b.get(app, "/_edge/context")).status, 200);
    const c = new Browser();
    assert.equal((await c.get(app, "/_edge/recommendations")).status, 200);
    // Their cookies now record the assignment: no second exposure.
    for (const browser of [a, b, c]) await browser.get(app, "/old-sale");
    await deps.exposures.flush();
    assert.equal(origin.seen.length, 0);
    assert.deepEqual(receiver.exposures().map((e) => [e.path, e.experiment]), [
      ["/old-sale", "hero"],
      ["/_edge/context", "hero"],
      ["/_edge/recommendations", "hero"],
    ]);
  });
});

Deno.test("a backend that does not answer holds no visitor's request", async () => {
  // Holds every delivery until the end of the test.
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let held = 0;
  const stalls = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    held++;
    await request.body?.cancel();
    await released;
    return new Response(null, { status: 204 });
  });
  try {
    await withService(async ({ app, deps }) => {
      for (let i = 0; i < 10; i++) {
        const res = await answered(new Browser().get(app, "/"), 2000);
        assert.equal(res.status, 200);
      }
      assert.equal(held, 1, "one delivery attempt is under way");
      assert.ok(deps.exposures.queued >= 9);
      release();
    }, {
      env: { EXPOSURES_URL: `http://127.0.0.1:${stalls.addr.port}/`, EXPOSURES_BATCH_MAX: "1" },
    });
  } finally {
    release();
    await stalls.shutdown();
  }
});

Deno.test("with EXPOSURES_URL unset nothing is queued, but exposures are still counted", async () => {
  await withService(async ({ app, deps, receiver }) => {
    for (let i = 0; i < 5; i++) await new Browser().get(app, "/");
    await deps.exposures.flush();
    assert.equal(deps.exposures.delivering, false);
    assert.equal(receiver.attempts.length, 0);
    const text = await metricsText(app);
    assert.equal(metricValue(text, 'edge_exposure_events_total{result="queued"}'), 0);
    const hero = ["control", "a", "b"].reduce(
      (sum, v) =>
        sum + (metricValue(text, `edge_experiment_exposures_total{experiment="hero",variation="${v}"}`) ?? 0),
      0,
    );
    assert.equal(hero, 5);
  }, { delivery: false });
});

Deno.test("flag evaluations are counted by flag and variant", async () => {
  await withService(async ({ app }) => {
    for (let i = 0; i < 10; i++) await new Browser().get(app, "/");
    await new Browser(BROWSER, { "x-geo-country": "DE" }).get(app, "/", TRUSTED);
    const text = await metricsText(app);
    const rollout =
      (metricValue(text, 'edge_flag_evaluations_total{flag="new-search",variant="true"}') ?? 0) +
      (metricValue(text, 'edge_flag_evaluations_total{flag="new-search",variant="false"}') ?? 0);
    assert.equal(rollout, 11);
    assert.equal(metricValue(text, 'edge_flag_evaluations_total{flag="theme",variant="light"}'), 10);
    assert.equal(metricValue(text, 'edge_flag_evaluations_total{flag="theme",variant="dark"}'), 1);
  });
});

Deno.test("GET /_edge/experiments needs RULES_TOKEN, and is absent without it", async () => {
  await withService(async ({ app }) => {
    const res = await app.request("/_edge/experiments");
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, "unauthorized");
    const wrong = await app.request("/_edge/experiments", { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  });
  await withService(async ({ app }) => {
    const res = await app.request("/_edge/experiments", {
      headers: { authorization: `Bearer ${RULES_TOKEN}` },
    });
    assert.equal(res.status, 404);
    await res.body?.cancel();
  }, { env: { RULES_TOKEN: "" } });
});

Deno.test("2 000 real visitors of a 50/50 experiment are not flagged; the p-value is a gauge", async () => {
  const rules: RuleSet = {
    version: 9,
    experiments: [{ key: "split", variations: ["control", "treatment"], weights: [0.5, 0.5], match: "/*" }],
  };
  await withService(async ({ app }) => {
    for (let i = 0; i < 2000; i++) await new Browser().get(app, "/_edge/context");
    const res = await app.request("/_edge/experiments", {
      headers: { authorization: `Bearer ${RULES_TOKEN}` },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("cache-control"), "no-store");
    const body = await res.json();
    assert.deepEqual(body.exposureEvents, { delivery: "off", waiting: 0 });
    assert.equal(body.experiments.length, 1);
    const [split] = body.experiments;
    assert.equal(split.key, "split");
    assert.equal(split.rulesVersion, 9);
    assert.equal(split.role, "active");
    assert.equal(split.total, 2000);
    assert.deepEqual(split.variations.map((v: { weight: number }) => v.weight), [0.5, 0.5]);
    assert.equal(
      split.variations.reduce((sum: number, v: { exposures: number }) => sum + v.exposures, 0),
      2000,
    );
    assert.ok(split.pValue > 0.001, `p = ${split.pValue}`);
    assert.equal(split.srm, false);
    const gauge = metricValue(await metricsText(app), 'edge_experiment_srm_p_value{experiment="split"}');
    assert.equal(gauge, split.pValue);
  }, { rules, delivery: false });
});

Deno.test("a variation QA forces is no exposure: no event, no SRM count, no metric, no flag evaluation", async () => {
  const QA_TOKEN = "qa-token-0123456789abcdef";
  await withService(async ({ app, deps, receiver, origin }) => {
    const tester = new Browser(BROWSER, {
      "x-edge-qa": QA_TOKEN,
      "x-edge-qa-variants": "hero=b,off=x",
      "x-edge-qa-flags": "new-search=true",
    });
    for (const path of ["/", "/api/cart", "/_edge/context"]) {
      assert.equal((await tester.get(app, path)).status, 200);
    }
    await deps.exposures.flush();
    assert.ok(origin.seen.every((r) => r.headers.get("x-edge-variants")?.includes("hero=b")));
    assert.deepEqual(receiver.exposures(), []);
    const report = await app.request("/_edge/experiments", {
      headers: { authorization: `Bearer ${RULES_TOKEN}` },
    });
    const body = await report.json();
    const counted = body.experiments.flatMap((e: { variations: { exposures: number }[] }) =>
      e.variations.map((v) => v.exposures)
    );
    assert.ok(counted.every((n: number) => n === 0), `SRM tally: ${counted}`);
    const text = await metricsText(app);
    assert.equal(
      metricValue(text, 'edge_experiment_exposures_total{experiment="hero",variation="b"}'),
      undefined,
    );
    assert.doesNotMatch(text, /edge_flag_evaluations_total\{flag="new-search"/);

    // The same visitor without the QA headers is bucketed, and that is an exposure as usual.
    const visitor = new Browser();
    visitor.cookies.set("ep_uid", tester.cookies.get("ep_uid")!);
    await visitor.get(app, "/");
    await deps.exposures.flush();
    assert.deepEqual(receiver.exposures().map((e) => e.experiment), ["hero"]);
  }, { env: { QA_TOKEN } });
});
