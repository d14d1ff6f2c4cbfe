import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { hash } from "../../lib/rules/bucketing.ts";
import type { RuleSet } from "../../lib/rules/schema.ts";
import { parseRules } from "../../lib/rules/compile.ts";
import { isCanaryVisitor } from "../../lib/rules/store.ts";
import { makeDeps, startOrigin, stickyCookie } from "../support.ts";
import { applyBackendEvents, applyOptionsFromConfig } from "../../lib/sync/apply.ts";

const RULES: RuleSet = {
  version: 7,
  defaultRegion: "GLOBAL",
  regions: { EU: ["DE", "FR", "GB"], US: ["US"] },
  experiments: [{ key: "checkout", variations: ["control", "b"], weights: [0, 1] }],
  flags: [
    {
      key: "new-search",
      type: "boolean",
      default: false,
      rules: [{ when: { region: ["EU"] }, value: true }, { rollout: 0.2, value: true }],
    },
    { key: "greeting", type: "string", default: "Hello", variants: { de: "Hallo" }, rules: [] },
    {
      key: "mobile-layout",
      type: "string",
      default: "wide",
      rules: [{ when: { device: ["mobile"] }, value: "narrow" }],
    },
    {
      key: "checkout-copy",
      type: "string",
      default: "Pay",
      rules: [{ when: { variant: { checkout: ["b"] } }, value: "Pay now" }],
    },
  ],
};

async function withOfrep(
  fn: (app: ReturnType<typeof createApp>, origin: ReturnType<typeof startOrigin>) => Promise<void>,
  env: Record<string, string> = {},
) {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: RULES, env });
  try {
    await fn(createApp(deps), origin);
  } finally {
    deps.kv.close();
    await origin.close();
  }
}

function post(
  app: ReturnType<typeof createApp>,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
) {
  return app.request(`http://edge.test/ofrep/v1${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

Deno.test("ofrep evaluates one flag: country → region through the rules, OFREP reason and variant", async () => {
  await withOfrep(async (app, origin) => {
    const res = await post(app, "/evaluate/flags/new-search", {
      context: { targetingKey: "u1", country: "de" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.deepEqual(await res.json(), {
      key: "new-search",
      value: true,
      reason: "TARGETING_MATCH",
      variant: "true",
      metadata: { rulesVersion: 7 },
    });
    const regionGiven = await post(app, "/evaluate/flags/new-search", {
      context: { targetingKey: "u1", region: "EU" },
    });
    assert.equal((await regionGiven.json()).value, true);
    const fixed = await post(app, "/evaluate/flags/greeting", {});
    assert.deepEqual(await fixed.json(), {
      key: "greeting",
      value: "Hello",
      reason: "STATIC",
      variant: "Hello",
      metadata: { rulesVersion: 7 },
    });
    const mobile = await post(app, "/evaluate/flags/mobile-layout", { context: { device: "mobile" } });
    assert.equal((await mobile.json()).value, "narrow");
    assert.equal(origin.seen.length, 0, "OFREP never reaches the origin");
  });
});

const SERVICE_KEY = { OFREP_API_KEYS: "service-key-0123456789" };
const AS_SERVICE = { authorization: "Bearer service-key-0123456789" };

/** What open OFREP says when the caller has no visitor key: the body's key would not help. */
function openKeyMissing(flag: string): string {
  return `Flag "${flag}" needs a visitor key. Open OFREP (no OFREP_API_KEYS) evaluates for the caller ` +
    `itself and ignores "targetingKey" in the body: call it with the caller's session cookie or the ` +
    `"ep_uid" cookie the edge sets on every page, or configure OFREP_API_KEYS to evaluate for the ` +
    `"targetingKey" you send`;
}

Deno.test("open ofrep says the body's targetingKey is ignored when the caller has no key, and what to do", async () => {
  await withOfrep(async (app) => {
    // Not in the EU: the rollout rule is reached, and it needs a key to bucket.
    const res = await post(app, "/evaluate/flags/new-search", {
      context: { targetingKey: "u1", country: "US" },
    });
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.errorCode, "TARGETING_KEY_MISSING");
    assert.equal(body.errorDetails, openKeyMissing("new-search"));
    assert.doesNotMatch(body.errorDetails, /needs "targetingKey" in the context/);
    // The advice holds: the caller's own ep_uid cookie is a key.
    const own = await post(app, "/evaluate/flags/new-search", { context: { country: "US" } }, {
      cookie: "ep_uid=caller0123456789abcd",
    });
    assert.equal(own.status, 200);
    const bulk =
      await (await post(app, "/evaluate/flags", { context: { targetingKey: "u1", country: "US" } }))
        .json();
    assert.equal(bulk.flags[0].errorDetails, openKeyMissing("new-search"));
  });
});

Deno.test("ofrep with API keys asks for targetingKey in the context when one is needed", async () => {
  await withOfrep(async (app) => {
    const res = await post(app, "/evaluate/flags/new-search", { context: { country: "US" } }, AS_SERVICE);
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), {
      key: "new-search",
      errorCode: "TARGETING_KEY_MISSING",
      errorDetails: 'Flag "new-search" needs "targetingKey" in the context',
    });
  }, SERVICE_KEY);
});

Deno.test("ofrep rollouts bucket the targeting key like the edge does (SPLIT or DEFAULT)", async () => {
  await withOfrep(async (app) => {
    for (const key of ["a", "b", "c", "d", "e", "f", "g", "h"]) {
      const res = await post(app, "/evaluate/flags/new-search", {
        context: { targetingKey: key, country: "US" },
      }, AS_SERVICE);
      const body = await res.json();
      const inRollout = hash("new-search", key, 2)! < 0.2;
      assert.equal(body.value, inRollout, key);
      assert.equal(body.reason, inRollout ? "SPLIT" : "DEFAULT", key);
    }
    const variant = await post(
      app,
      "/evaluate/flags/checkout-copy",
      { context: { targetingKey: "x" } },
      AS_SERVICE,
    );
    assert.deepEqual((await variant.json()).value, "Pay now", "experiments are assigned from targetingKey");
  }, SERVICE_KEY);
});

Deno.test("ofrep answers every error case with the OFREP shape", async () => {
  await withOfrep(async (app) => {
    const notFound = await post(app, "/evaluate/flags/nope", { context: { targetingKey: "u1" } });
    assert.equal(notFound.status, 404);
    assert.deepEqual(await notFound.json(), {
      key: "nope",
      errorCode: "FLAG_NOT_FOUND",
      errorDetails: 'No flag with key "nope"',
    });

    const missingKey = await post(app, "/evaluate/flags/new-search", { context: { country: "US" } });
    assert.equal(missingKey.status, 400);
    assert.deepEqual(await missingKey.json(), {
      key: "new-search",
      errorCode: "TARGETING_KEY_MISSING",
      errorDetails: openKeyMissing("new-search"),
    });

    const invalid = await post(app, "/evaluate/flags/new-search", {
      context: { targetingKey: 5, device: "toaster" },
    });
    assert.equal(invalid.status, 400);
    const invalidBody = await invalid.json();
    assert.equal(invalidBody.key, "new-search");
    assert.equal(invalidBody.errorCode, "INVALID_CONTEXT");
    assert.match(invalidBody.errorDetails, /"context\.targetingKey"/);
    assert.match(invalidBody.errorDetails, /"context\.device"/);

    const notObject = await post(app, "/evaluate/flags/new-search", { context: "EU" });
    assert.equal((await notObject.json()).errorCode, "INVALID_CONTEXT");

    const parse = await post(app, "/evaluate/flags/new-search", "{not json");
    assert.equal(parse.status, 400);
    assert.deepEqual(await parse.json(), {
      key: "new-search",
      errorCode: "PARSE_ERROR",
      errorDetails: "The request body is not valid JSON",
    });

    const bulkParse = await post(app, "/evaluate/flags", "[1,2]");
    assert.equal(bulkParse.status, 400);
    assert.deepEqual(await bulkParse.json(), {
      errorCode: "PARSE_ERROR",
      errorDetails: "The request body must be a JSON object",
    });
    const bulkInvalid = await post(app, "/evaluate/flags", { context: { segments: "vip" } });
    assert.equal(bulkInvalid.status, 400);
    assert.equal((await bulkInvalid.json()).errorCode, "INVALID_CONTEXT");

    const tooLarge = await post(app, "/evaluate/flags", { context: { pad: "x".repeat(70_000) } });
    assert.equal(tooLarge.status, 413);
    assert.equal((await tooLarge.json()).error.code, "payload_too_large");

    const wrongMethod = await app.request("http://edge.test/ofrep/v1/evaluate/flags");
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get("allow"), "POST");
    const unknownPath = await post(app, "/configuration", {});
    assert.equal(unknownPath.status, 404);
    assert.equal((await unknownPath.json()).error.code, "not_found");
  });
});

Deno.test("ofrep bulk evaluates every flag, per-flag failures inline, with an ETag and 304", async () => {
  await withOfrep(async (app) => {
    const res = await post(app, "/evaluate/flags", { context: { country: "US" } });
    assert.equal(res.status, 200);
    const etag = res.headers.get("etag");
    assert.match(etag ?? "", /^"[A-Za-z0-9_-]{27}"$/);
    assert.equal(res.headers.get("cache-control"), "private, no-cache");
    const body = await res.json();
    assert.deepEqual(body.flags.map((f: { key: string }) => f.key), [
      "new-search",
      "greeting",
      "mobile-layout",
      "checkout-copy",
    ]);
    assert.deepEqual(body.flags[0], {
      key: "new-search",
      errorCode: "TARGETING_KEY_MISSING",
      errorDetails: openKeyMissing("new-search"),
    });
    assert.equal(body.flags[1].value, "Hello");

    const same = await post(app, "/evaluate/flags", { context: { country: "US" } }, {
      "if-none-match": etag!,
    });
    assert.equal(same.status, 304);
    assert.equal(same.headers.get("etag"), etag);
    assert.equal(await same.text(), "");

    const listed = await post(app, "/evaluate/flags", { context: { country: "US" } }, {
      "if-none-match": `"other", W/${etag}`,
    });
    assert.equal(listed.status, 304);

    // `*` does not say the client holds this answer: it gets the evaluation, with the ETag.
    const any = await post(app, "/evaluate/flags", { context: { country: "US" } }, { "if-none-match": "*" });
    assert.equal(any.status, 200);
    assert.equal(any.headers.get("etag"), etag);
    assert.equal((await any.json()).flags.length, 4);
    const anyOrListed = await post(app, "/evaluate/flags", { context: { country: "US" } }, {
      "if-none-match": `*, ${etag}`,
    });
    assert.equal(anyOrListed.status, 304, "a listed tag still matches next to *");

    const changed = await post(app, "/evaluate/flags", { context: { country: "DE", targetingKey: "u" } }, {
      "if-none-match": etag!,
    });
    assert.equal(changed.status, 200);
    assert.notEqual(changed.headers.get("etag"), etag);
    assert.equal((await changed.json()).flags[0].value, true);

    const empty = await app.request("http://edge.test/ofrep/v1/evaluate/flags", { method: "POST" });
    assert.equal(empty.status, 200, "an empty body is an empty context");
  });
});

Deno.test("ofrep API keys: Bearer or X-API-Key, 401 when missing or wrong", async () => {
  await withOfrep(async (app) => {
    const path = "/evaluate/flags/greeting";
    const none = await post(app, path, {});
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="ofrep"');
    assert.deepEqual(await none.json(), {
      error: { code: "unauthorized", message: "A valid API key is required" },
    });
    assert.equal((await post(app, path, {}, { authorization: "Bearer wrong" })).status, 401);
    assert.equal((await post(app, path, {}, { "x-api-key": "key-one-0123456789-x" })).status, 401);
    assert.equal(
      (await post(app, path, {}, { authorization: `Basic ${btoa("key-one-0123456789")}` })).status,
      401,
    );
    assert.equal((await post(app, path, {}, { authorization: "Bearer key-two-0123456789" })).status, 200);
    assert.equal((await post(app, path, {}, { authorization: "bearer key-one-0123456789" })).status, 200);
    assert.equal((await post(app, path, {}, { "x-api-key": "key-one-0123456789" })).status, 200);
    assert.equal((await post(app, "/evaluate/flags", {}, { "x-api-key": "key-two-0123456789" })).status, 200);
  }, { OFREP_API_KEYS: "key-one-0123456789, key-two-0123456789" });
});

Deno.test("ofrep needs no key when none is configured", async () => {
  await withOfrep(async (app) => {
    assert.equal((await post(app, "/evaluate/flags/greeting", {})).status, 200);
  });
});

Deno.test("ofrep evaluates a rules canary's visitors against the canary, as the proxy does", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: RULES, env: SERVICE_KEY });
  try {
    const canaryRules = parseRules({
      ...RULES,
      version: 8,
      flags: (RULES.flags ?? []).map((flag) =>
        flag.key === "greeting" ? { ...flag, default: "Howdy" } : flag
      ),
    });
    deps.rules.set({ active: deps.rules.current, canary: { rules: canaryRules, share: 0.5 } });
    const canary = { version: 8, share: 0.5 };
    const visitors = Array.from({ length: 40 }, (_, i) => `visitor-${i}`);
    const inCanary = visitors.find((key) => isCanaryVisitor(key, canary))!;
    const outside = visitors.find((key) => !isCanaryVisitor(key, canary))!;
    assert.equal(deps.rules.rulesFor(inCanary).version, 8, "the proxy's choice for this visitor");
    const app = createApp(deps);
    const greeting = async (context: Record<string, unknown>) => {
      const res = await post(app, "/evaluate/flags/greeting", { context }, AS_SERVICE);
      assert.equal(res.status, 200);
      return await res.json();
    };
    assert.deepEqual(await greeting({ targetingKey: inCanary }), {
      key: "greeting",
      value: "Howdy",
      reason: "STATIC",
      variant: "Howdy",
      metadata: { rulesVersion: 8 },
    });
    const active = await greeting({ targetingKey: outside });
    assert.deepEqual([active.value, active.metadata.rulesVersion], ["Hello", 7]);
    const anonymous = await greeting({});
    assert.deepEqual(
      [anonymous.value, anonymous.metadata.rulesVersion],
      ["Hello", 7],
      "no key: the active rules",
    );

    const bulk = async (targetingKey: string) => {
      const res = await post(app, "/evaluate/flags", { context: { targetingKey } }, AS_SERVICE);
      assert.equal(res.status, 200);
      const body = await res.json();
      return {
        etag: res.headers.get("etag"),
        greeting: body.flags.find((f: { key: string }) => f.key === "greeting"),
      };
    };
    const bulkCanary = await bulk(inCanary);
    const bulkActive = await bulk(outside);
    assert.equal(bulkCanary.greeting.value, "Howdy");
    assert.equal(bulkActive.greeting.value, "Hello");
    assert.notEqual(bulkCanary.etag, bulkActive.etag);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("open ofrep evaluates for the caller itself: the body cannot claim another identity or segments", async () => {
  const rules: RuleSet = {
    version: 1,
    flags: [
      {
        key: "vip-coupon",
        type: "string",
        default: "",
        rules: [{ when: { segment: ["vip"], loggedIn: true }, value: "VIP-50-OFF" }],
      },
      { key: "beta", type: "boolean", default: false, rules: [{ rollout: 0.5, value: true }] },
    ],
  };
  const now = Date.UTC(2026, 10, 26, 12);
  const at = new Date(now - 1000).toISOString();
  for (const env of [{}, SERVICE_KEY]) {
    const deps = await makeDeps("http://127.0.0.1:9", { rules, env, now: () => now });
    try {
      await applyBackendEvents(deps.kv, [
        {
          kind: "session",
          sessionId: "sess-alice",
          userId: "alice",
          expiresAt: new Date(now + 3_600_000).toISOString(),
          at,
        },
        { kind: "profile", userId: "alice", version: 1, at, segments: ["vip"], attributes: {} },
      ], applyOptionsFromConfig(deps.config, now));
      const app = createApp(deps);
      const service = "OFREP_API_KEYS" in env ? AS_SERVICE : {};
      const flag = async (
        key: string,
        context: Record<string, unknown>,
        headers: Record<string, string> = {},
      ) => {
        const res = await post(app, `/evaluate/flags/${key}`, { context }, { ...service, ...headers });
        return { status: res.status, body: await res.json() };
      };
      const claim = { targetingKey: "alice", loggedIn: true, segments: ["vip"] };
      if ("OFREP_API_KEYS" in env) {
        // A service with a key evaluates for whom it says.
        assert.equal((await flag("vip-coupon", claim)).body.value, "VIP-50-OFF");
        continue;
      }
      // Open: an anonymous caller claiming Alice's identity gets the anonymous answer…
      assert.equal((await flag("vip-coupon", claim)).body.value, "");
      // …and Alice, with her own session, gets hers without claiming anything.
      assert.equal((await flag("vip-coupon", {}, { cookie: "sid=sess-alice" })).body.value, "VIP-50-OFF");
      // Rollouts bucket the caller's own visitor id, not the claimed key.
      const anonId = "caller0123456789abcd";
      const own = await flag("beta", { targetingKey: "someone-else" }, { cookie: `ep_uid=${anonId}` });
      assert.equal(own.body.value, hash("beta", anonId, 2)! < 0.5);
      // A caller without a visitor id yet has no key to bucket…
      const none = await flag("beta", { targetingKey: "someone-else" });
      assert.deepEqual([none.status, none.body.errorCode], [400, "TARGETING_KEY_MISSING"]);
      // …unless it is logged in: then its user id is the key, as on the proxy.
      const alice = await flag("beta", { targetingKey: "someone-else" }, { cookie: "sid=sess-alice" });
      assert.equal(alice.body.value, hash("beta", "alice", 2)! < 0.5);
      // Under Sec-GPC: 1 the caller's segments are not used.
      const gpc = await flag("vip-coupon", {}, { cookie: "sid=sess-alice", "sec-gpc": "1" });
      assert.equal(gpc.body.value, "");
      // A user id header from a peer that is not a trusted proxy names nobody.
      assert.equal((await flag("vip-coupon", {}, { "x-user-id": "alice" })).body.value, "");
    } finally {
      deps.kv.close();
    }
  }
});

Deno.test("open ofrep keeps the caller's sticky experiment assignment, as the proxy does; keyed ofrep reads none", async () => {
  // The visitor was assigned "b" before the weights changed: new visitors now get control.
  const rules: RuleSet = {
    version: 1,
    experiments: [{ key: "checkout", variations: ["control", "b"], weights: [1, 0] }],
    flags: [{
      key: "checkout-copy",
      type: "string",
      default: "Pay",
      rules: [{ when: { variant: { checkout: ["b"] } }, value: "Pay now" }],
    }],
  };
  const cookie = `ep_uid=visitor00000000000001; ${stickyCookie("checkout:b")}`;
  for (const env of [{}, SERVICE_KEY]) {
    const deps = await makeDeps("http://127.0.0.1:9", { rules, env });
    try {
      const app = createApp(deps);
      if ("OFREP_API_KEYS" in env) {
        // A service names the user in the body; the request's own cookies are not the user's.
        const one = await post(app, "/evaluate/flags/checkout-copy", {
          context: { targetingKey: "visitor00000000000001" },
        }, { ...AS_SERVICE, cookie });
        assert.equal((await one.json()).value, "Pay");
        continue;
      }
      const context = await app.request("http://edge.test/_edge/context", { headers: { cookie } });
      assert.equal(
        (await context.json()).flags["checkout-copy"],
        "Pay now",
        "the proxy keeps the assignment",
      );
      const one = await post(app, "/evaluate/flags/checkout-copy", {}, { cookie });
      assert.deepEqual([one.status, (await one.json()).value], [200, "Pay now"]);
      const bulk = await post(app, "/evaluate/flags", {}, { cookie });
      assert.equal((await bulk.json()).flags[0].value, "Pay now");
      // A sticky entry that is no longer a variation is ignored, as on the proxy.
      const stale = await post(app, "/evaluate/flags/checkout-copy", {}, {
        cookie: `ep_uid=visitor00000000000001; ${stickyCookie("checkout:gone")}`,
      });
      assert.equal((await stale.json()).value, "Pay");
      const fresh = await post(app, "/evaluate/flags/checkout-copy", {}, {
        cookie: "ep_uid=visitor00000000000001",
      });
      assert.equal((await fresh.json()).value, "Pay");
    } finally {
      deps.kv.close();
    }
  }
});

Deno.test("open ofrep ignores a sticky cookie the edge did not sign, as the proxy does", async () => {
  const rules: RuleSet = {
    version: 1,
    experiments: [{ key: "checkout", variations: ["control", "b"], weights: [1, 0] }],
    flags: [{
      key: "checkout-copy",
      type: "string",
      default: "Pay",
      rules: [{ when: { variant: { checkout: ["b"] } }, value: "Pay now" }],
    }],
  };
  const deps = await makeDeps("http://127.0.0.1:9", { rules });
  try {
    const app = createApp(deps);
    const signed = stickyCookie("checkout:b");
    const forged = [
      // Written by hand, signed with another secret, and a signed value with an assignment added.
      "ep_exp=checkout%3Ab",
      stickyCookie("checkout:b", "another-secret-0123456789"),
      signed.replace(".", "%7Cother%3Ab."),
    ];
    for (const sticky of forged) {
      const cookie = `ep_uid=visitor00000000000001; ${sticky}`;
      const one = await post(app, "/evaluate/flags/checkout-copy", {}, { cookie });
      assert.deepEqual([one.status, (await one.json()).value], [200, "Pay"], sticky);
      const bulk = await post(app, "/evaluate/flags", {}, { cookie });
      assert.equal((await bulk.json()).flags[0].value, "Pay", sticky);
    }
    const one = await post(app, "/evaluate/flags/checkout-copy", {}, {
      cookie: `ep_uid=visitor00000000000001; ${signed}`,
    });
    assert.equal((await one.json()).value, "Pay now", "the signed cookie is honoured");
  } finally {
    deps.kv.close();
  }
});

Deno.test("ofrep: a caller gone mid-body is a client close, not a server error", async () => {
  await withOfrep(async (app) => {
    const broken = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"context":'));
        controller.error(new Error("connection reset"));
      },
    });
    const res = await app.request("http://edge.test/ofrep/v1/evaluate/flags", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: broken,
      duplex: "half",
    } as RequestInit);
    assert.equal(res.status, 499);
    await res.body?.cancel();
  });
});

Deno.test("ofrep reads a context path as the proxy reads a request path: escapes normalised, ; parameters cut", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, {
    rules: {
      version: 1,
      flags: [{
        key: "admin-tools",
        type: "boolean",
        default: false,
        rules: [{ when: { path: "/admin/*" }, value: true }],
      }],
    },
  });
  try {
    const app = createApp(deps);
    for (
      const [path, value] of [["/admin/x", true], ["/%61dmin/x", true], ["/admin;x/y", true], [
        "/shop",
        false,
      ]]
    ) {
      const res = await post(app, "/evaluate/flags/admin-tools", { context: { path } });
      assert.equal(res.status, 200, String(path));
      assert.equal((await res.json()).value, value, String(path));
    }
  } finally {
    deps.kv.close();
    await origin.close();
  }
});
