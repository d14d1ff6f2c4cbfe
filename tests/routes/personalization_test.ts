import assert from "node:assert/strict";
import { createApp } from "../../routes/app.ts";
import { makeDeps, startOrigin, stickyCookie, TEST_STICKY_SECRET } from "../support.ts";
import { StickySigner } from "../../lib/pipeline/sticky.ts";
import { parseCookies } from "../../lib/http/cookies.ts";
import { loadIpGeoDb } from "../../lib/pipeline/ip_geo.ts";
import { hashSessionId, keys } from "../../lib/data/store.ts";
import type { RuleSet } from "../../lib/rules/schema.ts";
import { parseRules } from "../../lib/rules/compile.ts";

const RULES: RuleSet = {
  version: 3,
  defaultRegion: "GLOBAL",
  regions: { EU: ["DE", "FR", "NL"], US: ["US"] },
  routes: [
    {
      match: "/api/products/*",
      rewrite: { EU: "/api/products/promotions/europe", "*": "/api/products/promotions/global" },
    },
  ],
  experiments: [
    { key: "hero", variations: ["control", "a", "b"], weights: [0.5, 0.25, 0.25], seed: "hero", match: "/*" },
  ],
  flags: [
    {
      key: "new-search",
      type: "boolean",
      default: false,
      rules: [{ when: { region: ["EU"] }, value: true }],
    },
  ],
  images: [{ match: "/images/*", width: { from: "viewport" } }],
};

const PEER = { remoteAddr: { hostname: "203.0.113.9" } };
const ipGeo = await loadIpGeoDb(Deno.readFile);

async function withApp(
  fn: (
    ctx: { app: ReturnType<typeof createApp>; origin: ReturnType<typeof startOrigin>; kv: Deno.Kv },
  ) => Promise<void>,
  respond?: Parameters<typeof startOrigin>[0],
) {
  const origin = startOrigin(respond);
  const deps = await makeDeps(origin.url, { env: { TRUSTED_PROXIES: "10.0.0.0/8" }, rules: RULES, ipGeo });
  try {
    await fn({ app: createApp(deps), origin, kv: deps.kv });
  } finally {
    deps.kv.close();
    await origin.close();
  }
}

function setCookies(res: Response): string[] {
  return res.headers.getSetCookie();
}

/** The `ep_exp` value a response set (percent-decoded), or undefined. */
function stickySet(res: Response): string | undefined {
  const cookie = setCookies(res).find((c) => c.startsWith("ep_exp="));
  return cookie === undefined ? undefined : parseCookies(cookie.split(";")[0]!).get("ep_exp");
}

/** The hero experiment with other weights, as a newer version (a push that changed them). */
function heroWeights(version: number, weights: number[]) {
  return parseRules({ ...RULES, version, experiments: [{ ...RULES.experiments![0]!, weights }] });
}

const VISITOR = "ep_uid=visitor-abcdefghijklmnop";

Deno.test("a new visitor gets ep_uid and a sticky assignment; the origin sees variants and flags", async () => {
  await withApp(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/page", {}, PEER);
    await res.body?.cancel();
    const cookies = setCookies(res);
    const uid = cookies.find((c) => c.startsWith("ep_uid="));
    assert.ok(uid);
    assert.match(uid, /Max-Age=31536000/);
    assert.match(uid, /SameSite=Lax/);
    assert.doesNotMatch(uid, /Secure/);
    const sticky = cookies.find((c) => c.startsWith("ep_exp="));
    assert.ok(sticky);
    const seen = origin.seen[0]!.headers;
    assert.match(seen.get("x-edge-variants") ?? "", /^hero=(control|a|b)$/);
    assert.equal(seen.get("x-edge-flags"), "new-search=false");
    assert.equal(seen.get("x-edge-device"), "desktop");
    assert.match(res.headers.get("cache-control") ?? "", /private/);
  });
});

Deno.test("a returning visitor keeps its id and variation, and is not sent cookies again", async () => {
  await withApp(async ({ app, origin }) => {
    const first = await app.request("http://edge.test/page", {}, PEER);
    await first.body?.cancel();
    const jar = setCookies(first).map((c) => c.split(";")[0]).join("; ");
    const variant = origin.seen[0]!.headers.get("x-edge-variants");
    for (let i = 0; i < 3; i++) {
      const again = await app.request("http://edge.test/other", { headers: { cookie: jar } }, PEER);
      await again.body?.cancel();
      assert.deepEqual(setCookies(again), [], jar);
      assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), variant);
    }
  });
});

Deno.test("https from a trusted proxy marks the cookies Secure", async () => {
  await withApp(async ({ app }) => {
    const res = await app.request("http://edge.test/page", { headers: { "x-forwarded-proto": "https" } }, {
      remoteAddr: { hostname: "10.1.1.1" },
    });
    await res.body?.cancel();
    assert.ok(setCookies(res).every((c) => /; Secure/.test(c)));
  });
});

Deno.test("bots get the control variation and no sticky assignment", async () => {
  await withApp(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/page", {
      headers: { "user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)" },
    }, PEER);
    await res.body?.cancel();
    assert.equal(origin.seen[0]!.headers.get("x-edge-device"), "bot");
    assert.equal(origin.seen[0]!.headers.get("x-edge-variants"), null);
    assert.ok(!setCookies(res).some((c) => c.startsWith("ep_exp=")));
  });
});

Deno.test("the first trusted country header present decides: a CDN's 'no country' does not let the client's header through", async () => {
  await withApp(async ({ app, origin }) => {
    for (const unknown of ["T1", "XX", "garbage"]) {
      const res = await app.request("http://edge.test/api/products/x", {
        // Behind Cloudflare (trusted) the client adds its own x-geo-country, which Cloudflare passes on.
        headers: { "cf-ipcountry": unknown, "x-geo-country": "US", "x-forwarded-for": "193.0.6.139" },
      }, { remoteAddr: { hostname: "10.0.0.2" } });
      await res.body?.cancel();
      // Not the client's US: the trusted client address's country from the IP database.
      assert.equal(origin.seen.at(-1)!.headers.get("x-edge-country"), "NL", unknown);
    }
  });
});

Deno.test("geo comes from the bundled IP database for untrusted peers (IPv4 and IPv6)", async () => {
  await withApp(async ({ app, origin }) => {
    const cases: [string, string, string][] = [
      ["193.0.6.139", "NL", "/api/products/promotions/europe"],
      ["8.8.8.8", "US", "/api/products/promotions/global"],
      ["2a01:e0c:1::1", "FR", "/api/products/promotions/europe"],
    ];
    for (const [ip, country, path] of cases) {
      const res = await app.request(
        "http://edge.test/api/products/x",
        { headers: { "cf-ipcountry": "JP" } },
        {
          remoteAddr: { hostname: ip },
        },
      );
      await res.body?.cancel();
      const seen = origin.seen.at(-1)!;
      assert.equal(seen.headers.get("x-edge-country"), country, ip);
      assert.equal(seen.path, path, ip);
    }
    // A trusted proxy's forwarded chain names the client.
    const res = await app.request("http://edge.test/api/products/x", {
      headers: { "x-forwarded-for": "193.0.6.139" },
    }, { remoteAddr: { hostname: "10.0.0.2" } });
    await res.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-country"), "NL");
  });
});

Deno.test("a logged-in session names the user to the origin; a forged user header does not", async () => {
  await withApp(async ({ app, origin, kv }) => {
    await kv.set(keys.session(await hashSessionId("tok-123")), {
      ended: false,
      userId: "u42",
      at: 0,
      expiresAt: Date.UTC(2030, 0, 1),
    });
    const res = await app.request("http://edge.test/page", { headers: { cookie: "sid=tok-123" } }, PEER);
    await res.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-user"), "u42");
    const forged = await app.request("http://edge.test/page", { headers: { "x-user-id": "admin" } }, PEER);
    await forged.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-user"), null);
  });
});

Deno.test("HTML responses advertise Accept-CH for the hints the rules use; images get width parameters", async () => {
  await withApp(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/", {}, PEER);
    await res.body?.cancel();
    assert.match(res.headers.get("accept-ch") ?? "", /Sec-CH-Viewport-Width/);
    const img = await app.request("http://edge.test/images/hero.jpg", {
      headers: { "sec-ch-viewport-width": "412" },
    }, PEER);
    await img.body?.cancel();
    assert.match(origin.seen.at(-1)!.search, /w=\d+/);
    assert.match(img.headers.get("vary") ?? "", /sec-ch-viewport-width/i);
  }, () => new Response("<html></html>", { headers: { "content-type": "text/html; charset=utf-8" } }));
});

Deno.test("with Sec-GPC: 1 the origin is told and gets no behavioural headers", async () => {
  await withApp(async ({ app, origin }) => {
    const res = await app.request("http://edge.test/page", { headers: { "sec-gpc": "1" } }, PEER);
    await res.body?.cancel();
    const seen = origin.seen.at(-1)!.headers;
    assert.equal(seen.get("x-edge-gpc"), "1");
    assert.equal(seen.get("x-edge-recent-views"), null);
    assert.equal(seen.get("x-edge-segments"), null);
  });
});

Deno.test("while a rules canary runs, responses are private even when the rules say nothing personal", async () => {
  const origin = startOrigin(() =>
    new Response("home", { headers: { "cache-control": "public, max-age=300" } })
  );
  const deps = await makeDeps(origin.url, { rules: { version: 1 } });
  try {
    const app = createApp(deps);
    const cookie = "ep_uid=abcdefghijklmnop0001";
    const before = await app.request("http://edge.test/home", { headers: { cookie } }, PEER);
    await before.body?.cancel();
    assert.equal(before.headers.get("cache-control"), "public, max-age=300");
    deps.rules.set({
      active: deps.rules.current,
      canary: {
        rules: parseRules({ version: 2, routes: [{ match: "/home", rewrite: { "*": "/home-v2" } }] }),
        share: 0.5,
      },
    });
    const during = await app.request("http://edge.test/home", { headers: { cookie } }, PEER);
    await during.body?.cancel();
    assert.match(during.headers.get("cache-control") ?? "", /^private/);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a cookieless asset request gets no ep_uid (stays cacheable); a page navigation does", async () => {
  const origin = startOrigin(() => new Response("x", { headers: { "cache-control": "public, max-age=60" } }));
  const deps = await makeDeps(origin.url, { rules: { version: 1 } });
  try {
    const app = createApp(deps);
    const asset = await app.request("http://edge.test/logo.png", {
      headers: { accept: "image/avif,image/*", "sec-fetch-dest": "image" },
    }, PEER);
    await asset.body?.cancel();
    assert.deepEqual(asset.headers.getSetCookie(), []);
    assert.equal(asset.headers.get("cache-control"), "public, max-age=60");
    const page = await app.request("http://edge.test/", { headers: { "sec-fetch-dest": "document" } }, PEER);
    await page.body?.cancel();
    assert.ok(page.headers.getSetCookie().some((c) => c.startsWith("ep_uid=")));
    assert.match(page.headers.get("cache-control") ?? "", /^private/);
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("a hand-written ep_exp is ignored: the visitor is bucketed by hash, and the new signed cookie records that bucket", async () => {
  await withApp(async ({ app, origin }) => {
    const plain = await app.request("http://edge.test/page", { headers: { cookie: VISITOR } }, PEER);
    await plain.body?.cancel();
    const bucket = /^hero=(\w+)$/.exec(origin.seen.at(-1)!.headers.get("x-edge-variants") ?? "")![1]!;
    const signer = new StickySigner([TEST_STICKY_SECRET]);
    for (const chosen of ["control", "a", "b"].filter((v) => v !== bucket)) {
      const res = await app.request("http://edge.test/page", {
        headers: { cookie: `${VISITOR}; ep_exp=hero%3A${chosen}` },
      }, PEER);
      await res.body?.cancel();
      assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), `hero=${bucket}`, chosen);
      const written = stickySet(res);
      assert.ok(written?.startsWith(`hero:${bucket}.`), written);
      assert.deepEqual([...signer.verify(written, 0)!.assignments], [["hero", bucket]]);
    }
  });
});

Deno.test("the sticky cookie the edge set is honoured on the next request, after the weights changed", async () => {
  const origin = startOrigin();
  const deps = await makeDeps(origin.url, { rules: RULES, ipGeo });
  try {
    const app = createApp(deps);
    deps.rules.offer(heroWeights(4, [0, 0, 1]));
    const first = await app.request("http://edge.test/page", { headers: { cookie: VISITOR } }, PEER);
    await first.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=b");
    const jar = setCookies(first).map((c) => c.split(";")[0]).join("; ");
    assert.match(jar, /ep_exp=hero%3Ab\.[A-Za-z0-9_-]{43}/);
    // Everyone new now gets control; the visitor keeps b through the cookie of response 1.
    deps.rules.offer(heroWeights(5, [1, 0, 0]));
    const second = await app.request("http://edge.test/page", { headers: { cookie: jar } }, PEER);
    await second.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=b");
    assert.equal(stickySet(second), undefined, "nothing to rewrite");
    const without = await app.request("http://edge.test/page", { headers: { cookie: VISITOR } }, PEER);
    await without.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=control");

    // A tampered value or signature is ignored like no cookie: hashed to control, and replaced.
    const signed = parseCookies(jar).get("ep_exp")!;
    const tampered = [
      signed.replace("hero:b", "hero:a"),
      signed.replace(/.$/, (c) => (c === "A" ? "B" : "A")),
      signed.replace(".", "|pricing:a."),
      signed.slice(0, signed.indexOf(".")),
    ];
    for (const value of tampered) {
      const res = await app.request("http://edge.test/page", {
        headers: { cookie: `${VISITOR}; ep_exp=${encodeURIComponent(value)}` },
      }, PEER);
      await res.body?.cancel();
      assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=control", value);
      assert.ok(stickySet(res)?.startsWith("hero:control."), value);
    }
  } finally {
    deps.kv.close();
    await origin.close();
  }
});

Deno.test("STICKY_SECRET rotation: a cookie signed with the old secret, listed second, is honoured and signed again with the new one", async () => {
  const origin = startOrigin();
  const oldSecret = "sticky-old-secret-0123456789";
  const newSecret = "sticky-new-secret-0123456789";
  const rules = { ...RULES, experiments: [{ ...RULES.experiments![0]!, weights: [1, 0, 0] }] };
  const during = await makeDeps(origin.url, { rules, env: { STICKY_SECRET: `${newSecret}, ${oldSecret}` } });
  const after = await makeDeps(origin.url, { rules, env: { STICKY_SECRET: newSecret } });
  try {
    const cookie = `${VISITOR}; ${stickyCookie("hero:b", oldSecret)}`;
    const res = await createApp(during).request("http://edge.test/page", { headers: { cookie } }, PEER);
    await res.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=b");
    const resigned = stickySet(res);
    assert.deepEqual([...new StickySigner([newSecret]).verify(resigned, 0)!.assignments], [["hero", "b"]]);
    // Once the old secret is dropped, its cookies are no longer believed.
    const late = await createApp(after).request("http://edge.test/page", { headers: { cookie } }, PEER);
    await late.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=control");
  } finally {
    during.kv.close();
    after.kv.close();
    await origin.close();
  }
});

Deno.test("a forged sticky cookie is cleared where no experiment applies", async () => {
  await withApp(async ({ app }) => {
    const res = await app.request("http://edge.test/page", {
      headers: {
        cookie: `${VISITOR}; ep_exp=hero%3Ab`,
        "user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
      },
    }, PEER);
    await res.body?.cancel();
    const cleared = setCookies(res).find((c) => c.startsWith("ep_exp="));
    assert.match(cleared ?? "", /^ep_exp=; .*Max-Age=0/);
  });
});

const QA_TOKEN = "qa-token-0123456789abcdef";
/** hero: everyone control by hash, so a forced "b" can only come from forcing. */
const QA_RULES: RuleSet = { ...RULES, experiments: [{ ...RULES.experiments![0]!, weights: [1, 0, 0] }] };
const FORCE = {
  "x-edge-qa": QA_TOKEN,
  "x-edge-qa-variants": "hero=b",
  "x-edge-qa-flags": "new-search=true",
};

async function withQa(
  env: Record<string, string>,
  fn: (
    ctx: { app: ReturnType<typeof createApp>; origin: ReturnType<typeof startOrigin>; logLines: string[] },
  ) => Promise<void>,
) {
  const origin = startOrigin();
  const logLines: string[] = [];
  // Every decision logged, so the test sees what a forced one says.
  const deps = await makeDeps(origin.url, {
    env: { LOG_SAMPLE_RATE: "1", ...env },
    rules: QA_RULES,
    ipGeo,
    logLines,
  });
  try {
    await fn({ app: createApp(deps), origin, logLines });
  } finally {
    deps.kv.close();
    await origin.close();
  }
}

Deno.test("QA forcing with the token: forced variation and flag, private no-store, the forced variation never in the cookie", async () => {
  await withQa({ QA_TOKEN }, async ({ app, origin, logLines }) => {
    // A new visitor: forced into b, yet no sticky cookie records b (nobody was assigned it).
    const res = await app.request("http://edge.test/page", {
      headers: { cookie: VISITOR, ...FORCE },
    }, PEER);
    await res.body?.cancel();
    const seen = origin.seen.at(-1)!.headers;
    assert.equal(seen.get("x-edge-variants"), "hero=b");
    assert.equal(seen.get("x-edge-flags"), "new-search=true");
    assert.equal(res.headers.get("cache-control"), "private, no-store");
    assert.equal(stickySet(res), undefined);
    // The QA headers, the token first of all, never reach the origin.
    for (const name of ["x-edge-qa", "x-edge-qa-variants", "x-edge-qa-flags"]) {
      assert.equal(seen.get(name), null);
    }

    // A visitor assigned control keeps control in its cookie; without the headers it is served control again.
    const cookie = `${VISITOR}; ${stickyCookie("hero:control")}`;
    const forced = await app.request("http://edge.test/page", { headers: { cookie, ...FORCE } }, PEER);
    await forced.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=b");
    assert.equal(stickySet(forced), undefined);
    const after = await app.request("http://edge.test/page", { headers: { cookie } }, PEER);
    await after.body?.cancel();
    assert.equal(origin.seen.at(-1)!.headers.get("x-edge-variants"), "hero=control");
    assert.doesNotMatch(after.headers.get("cache-control") ?? "", /no-store/);

    // The edge-served context shows the forced outcome, and is not stored either.
    const context = await app.request(
      "http://edge.test/_edge/context",
      { headers: { cookie, ...FORCE } },
      PEER,
    );
    const body = await context.json();
    assert.deepEqual([body.variants, body.flags["new-search"], body.qa], [{ hero: "b" }, true, true]);
    assert.equal(context.headers.get("cache-control"), "private, no-store");
    const plain = await app.request("http://edge.test/_edge/context", { headers: { cookie } }, PEER);
    assert.equal((await plain.json()).qa, undefined, "said only when QA forced");

    // Decision logs mark forced decisions and never carry the token.
    const decisions = logLines.map((line) => JSON.parse(line)).filter((entry) => entry.msg === "decision");
    assert.deepEqual(decisions.map((entry) => entry.qa), [true, true, undefined, true, undefined]);
    assert.ok(logLines.every((line) => !line.includes(QA_TOKEN)), "the token is never logged");
  });
});

Deno.test("QA forcing does nothing without QA_TOKEN configured, or with a wrong token", async () => {
  const wrong = { ...FORCE, "x-edge-qa": "wrong-token-0123456789ab" };
  for (
    const [env, headers] of [[{}, FORCE], [{ QA_TOKEN }, wrong], [{ QA_TOKEN }, {
      ...FORCE,
      "x-edge-qa": "",
    }]] as const
  ) {
    await withQa(env, async ({ app, origin }) => {
      const res = await app.request(
        "http://edge.test/page",
        { headers: { cookie: VISITOR, ...headers } },
        PEER,
      );
      await res.body?.cancel();
      const seen = origin.seen.at(-1)!.headers;
      assert.equal(seen.get("x-edge-variants"), "hero=control");
      assert.equal(seen.get("x-edge-flags"), "new-search=false");
      assert.doesNotMatch(res.headers.get("cache-control") ?? "", /no-store/);
      assert.ok(stickySet(res)?.startsWith("hero:control."), "bucketed as usual");
      assert.equal(seen.get("x-edge-qa"), null);
    });
  }
});

Deno.test("QA forcing with the token and an unknown experiment, variation or flag answers 400 naming it", async () => {
  await withQa({ QA_TOKEN }, async ({ app, origin }) => {
    for (
      const [headers, message] of [
        [
          { "x-edge-qa-variants": "hero=z" },
          '"x-edge-qa-variants" entry "hero=z": "z" is not a variation of experiment "hero"',
        ],
        [
          { "x-edge-qa-variants": "ghost=b" },
          '"x-edge-qa-variants" entry "ghost=b": the rules have no experiment "ghost"',
        ],
        [
          { "x-edge-qa-flags": "ghost=true" },
          '"x-edge-qa-flags" entry "ghost=true": the rules have no flag "ghost"',
        ],
      ] as const
    ) {
      for (const path of ["/page", "/_edge/context"]) {
        const res = await app.request(`http://edge.test${path}`, { headers: { ...FORCE, ...headers } }, PEER);
        assert.equal(res.status, 400);
        assert.deepEqual(await res.json(), { error: { code: "invalid_qa_override", message } });
      }
    }
    assert.equal(origin.seen.length, 0);
  });
});
