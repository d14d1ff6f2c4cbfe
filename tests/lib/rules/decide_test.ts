import assert from "node:assert/strict";
import { decide } from "../../../lib/rules/decide.ts";
import { formatSticky, STICKY_PAYLOAD_MAX } from "../../../lib/pipeline/sticky.ts";
import type { RuleSet } from "../../../lib/rules/schema.ts";
import { parseRules } from "../../../lib/rules/compile.ts";
import { ISSUE_EXAMPLE_JSON, makeFacts, makeVisitor, REGIONS } from "./rules_fixtures.ts";

const ids = Array.from({ length: 10_000 }, (_, i) => `visitor-${i}`);

function heroRules(weights: number[], extra: Partial<RuleSet> = {}) {
  return parseRules({
    version: 1,
    regions: REGIONS,
    experiments: [{ key: "hero", variations: ["control", "a", "b"], weights, seed: "hero", hashVersion: 2 }],
    ...extra,
  });
}

Deno.test("decide splits 10,000 visitors across variations within 2 points of the weights", () => {
  const rules = parseRules(JSON.parse(ISSUE_EXAMPLE_JSON));
  const counts: Record<string, number> = { control: 0, a: 0, b: 0 };
  for (const id of ids) {
    const decision = decide({ facts: makeFacts({ path: "/home" }), visitor: makeVisitor(id) }, rules);
    const variation = decision.variants.hero;
    assert.ok(variation !== undefined, "every visitor is in the experiment at coverage 1");
    counts[variation]! += 1;
    assert.equal(decision.stickyAssignments.hero, variation);
  }
  assert.ok(Math.abs(counts.control! / ids.length - 0.5) < 0.02, JSON.stringify(counts));
  assert.ok(Math.abs(counts.a! / ids.length - 0.25) < 0.02, JSON.stringify(counts));
  assert.ok(Math.abs(counts.b! / ids.length - 0.25) < 0.02, JSON.stringify(counts));
});

Deno.test("sticky assignments survive a change of weights; new visitors follow the new weights", () => {
  const before = heroRules([0.5, 0.25, 0.25]);
  const after = heroRules([0.1, 0.1, 0.8], { version: 2 });
  let moved = 0;
  for (const id of ids.slice(0, 2000)) {
    const first = decide({ facts: makeFacts(), visitor: makeVisitor(id) }, before);
    const sticky = new Map(Object.entries(first.stickyAssignments));
    const again = decide({ facts: makeFacts(), visitor: makeVisitor(id, { sticky }) }, after);
    assert.equal(again.variants.hero, first.variants.hero);
    assert.deepEqual(again.stickyAssignments, first.stickyAssignments);
    const fresh = decide({ facts: makeFacts(), visitor: makeVisitor(id) }, after);
    if (fresh.variants.hero !== first.variants.hero) moved++;
  }
  assert.ok(moved > 0, "without the cookie the new weights would have moved some visitors");
});

Deno.test("a sticky value that is no longer a variation is replaced; other experiments' assignments are kept", () => {
  const rules = heroRules([0.5, 0.25, 0.25]);
  const sticky = new Map([["hero", "removed"], ["old-experiment", "x"]]);
  const decision = decide({ facts: makeFacts(), visitor: makeVisitor("u-1", { sticky }) }, rules);
  assert.ok(["control", "a", "b"].includes(decision.variants.hero!));
  assert.notEqual(decision.stickyAssignments.hero, "removed");
  // A canary or a push without that experiment must not erase it: a rollback finds it again.
  assert.equal(decision.stickyAssignments["old-experiment"], "x");
});

Deno.test("rules without an experiment (a canary, then a rollback) leave its visitors where they were", () => {
  const withHero = heroRules([0.5, 0.25, 0.25]);
  const canary = parseRules({ version: 2, regions: REGIONS });
  const moved = ids.slice(0, 500).filter((id) => {
    const first = decide({ facts: makeFacts(), visitor: makeVisitor(id) }, withHero);
    const during = decide(
      {
        facts: makeFacts(),
        visitor: makeVisitor(id, { sticky: new Map(Object.entries(first.stickyAssignments)) }),
      },
      canary,
    );
    // After the weights changed and the rules came back, the cookie still holds the variation.
    const after = decide({
      facts: makeFacts(),
      visitor: makeVisitor(id, { sticky: new Map(Object.entries(during.stickyAssignments)) }),
    }, heroRules([0.1, 0.1, 0.8]));
    return after.variants.hero !== first.variants.hero;
  });
  assert.deepEqual(moved, []);
});

Deno.test("kept assignments of unknown experiments never crowd out the rules' own in the cookie", () => {
  const rules = heroRules([0.5, 0.25, 0.25]);
  // 60 old experiments of 62 characters each: more than the cookie holds.
  const sticky = new Map(
    Array.from(
      { length: 60 },
      (_, i) => [`old-${String(i).padStart(2, "0")}`.padEnd(40, "x"), "v".repeat(20)],
    ),
  );
  const decision = decide({ facts: makeFacts(), visitor: makeVisitor("u-2", { sticky }) }, rules);
  const value = formatSticky(decision.stickyAssignments);
  assert.ok(value.length <= STICKY_PAYLOAD_MAX, `${value.length}`);
  assert.match(value, new RegExp(`(^|\\|)hero:${decision.stickyAssignments.hero}(\\||$)`));
  assert.ok(Object.keys(decision.stickyAssignments).length > 40, "as many old ones as fit are kept");
});

Deno.test("bots get control, are not in the experiment and get no sticky assignment", () => {
  const rules = heroRules([0, 0, 1]);
  const decision = decide({
    facts: makeFacts({ device: { device: "bot", isBot: true } }),
    visitor: makeVisitor("crawler"),
  }, rules);
  assert.deepEqual(decision.variants, {});
  assert.deepEqual(decision.stickyAssignments, {});
  assert.equal(decision.personalized, true, "exposure still depends on who the visitor is");
  const human = decide({ facts: makeFacts(), visitor: makeVisitor("crawler") }, rules);
  assert.equal(human.variants.hero, "b");
});

Deno.test("visitors outside coverage are not in the experiment; coverage 0 leaves everyone out", () => {
  const partial = parseRules({
    version: 1,
    experiments: [{ key: "hero", variations: ["control", "a"], coverage: 0.3 }],
  });
  let inCount = 0;
  for (const id of ids) {
    const decision = decide({ facts: makeFacts(), visitor: makeVisitor(id) }, partial);
    if (decision.variants.hero !== undefined) inCount++;
    else assert.deepEqual(decision.stickyAssignments, {});
  }
  assert.ok(Math.abs(inCount / ids.length - 0.3) < 0.02, String(inCount));
  const none = parseRules({
    version: 1,
    experiments: [{ key: "hero", variations: ["control", "a"], coverage: 0 }],
  });
  assert.deepEqual(decide({ facts: makeFacts(), visitor: makeVisitor("v") }, none).variants, {});
});

Deno.test("experiments sharing a namespace with disjoint ranges are mutually exclusive", () => {
  const rules = parseRules({
    version: 1,
    experiments: [
      { key: "left", variations: ["control", "x"], namespace: ["checkout", 0, 0.5] },
      { key: "right", variations: ["control", "y"], namespace: ["checkout", 0.5, 1] },
    ],
  });
  const seen = { left: 0, right: 0 };
  for (const id of ids.slice(0, 4000)) {
    const { variants } = decide({ facts: makeFacts(), visitor: makeVisitor(id) }, rules);
    assert.ok(!("left" in variants && "right" in variants), id);
    if ("left" in variants) seen.left++;
    if ("right" in variants) seen.right++;
  }
  assert.ok(seen.left > 1800 && seen.right > 1800, JSON.stringify(seen));
});

Deno.test("experiments apply only where match and when hold", () => {
  const rules = parseRules({
    version: 1,
    regions: REGIONS,
    experiments: [
      { key: "checkout", variations: ["control", "b"], weights: [0, 1], match: "/checkout*" },
      {
        key: "mobile-eu",
        variations: ["control", "m"],
        weights: [0, 1],
        when: { region: ["EU"], device: ["mobile"] },
      },
      { key: "off", variations: ["control", "x"], enabled: false },
    ],
  });
  const visitor = makeVisitor("v1");
  assert.deepEqual(decide({ facts: makeFacts({ path: "/home" }), visitor }, rules).variants, {});
  assert.deepEqual(decide({ facts: makeFacts({ path: "/checkout/pay" }), visitor }, rules).variants, {
    checkout: "b",
  });
  const euMobile = makeFacts({ path: "/home", country: "DE", device: { device: "mobile" } });
  assert.deepEqual(decide({ facts: euMobile, visitor }, rules).variants, { "mobile-eu": "m" });
});

Deno.test("routes rewrite by experiment variation; control falls through", () => {
  const rules = parseRules({
    version: 1,
    experiments: [{ key: "checkout", variations: ["control", "b"], match: "/checkout" }],
    routes: [{ match: "/checkout", experiment: "checkout", rewrite: { b: "/checkout-b" } }],
  });
  const b = decide({
    facts: makeFacts({ path: "/checkout" }),
    visitor: makeVisitor("x", { sticky: new Map([["checkout", "b"]]) }),
  }, rules);
  assert.deepEqual(b.action, { type: "proxy", path: "/checkout-b" });
  assert.equal(b.matchedRoute, "/checkout");
  const control = decide({
    facts: makeFacts({ path: "/checkout" }),
    visitor: makeVisitor("x", { sticky: new Map([["checkout", "control"]]) }),
  }, rules);
  assert.deepEqual(control.action, { type: "proxy", path: "/checkout" });
  assert.equal(control.matchedRoute, undefined);
  const bot = decide({
    facts: makeFacts({ path: "/checkout", device: { device: "bot", isBot: true } }),
    visitor: makeVisitor("x", { sticky: new Map([["checkout", "b"]]) }),
  }, rules);
  assert.deepEqual(bot.action, { type: "proxy", path: "/checkout" }, "bots are served control");
});

Deno.test("routes rewrite by device and network class, with * fallback and the splat", () => {
  const rules = parseRules({
    version: 1,
    routes: [
      {
        match: "/home",
        rewriteBy: "device",
        rewrite: { mobile: "/home-m", tablet: "/home-m", "*": "/home-d" },
      },
      {
        match: "/video/*",
        rewriteBy: "network",
        rewrite: { slow: "/lite/video/*", "save-data": "/lite/video/*" },
      },
    ],
  });
  const visitor = makeVisitor("v");
  const path = (facts: ReturnType<typeof makeFacts>) => {
    const { action } = decide({ facts, visitor }, rules);
    return action.type === "proxy" ? action.path : action.location;
  };
  assert.equal(path(makeFacts({ path: "/home", device: { device: "mobile" } })), "/home-m");
  assert.equal(path(makeFacts({ path: "/home" })), "/home-d");
  assert.equal(
    path(makeFacts({ path: "/video/a/b.mp4", device: { network: "slow" } })),
    "/lite/video/a/b.mp4",
  );
  assert.equal(
    path(makeFacts({ path: "/video/a/b.mp4", device: { network: "save-data" } })),
    "/lite/video/a/b.mp4",
  );
  assert.equal(path(makeFacts({ path: "/video/a/b.mp4" })), "/video/a/b.mp4");
  const decision = decide(
    { facts: makeFacts({ path: "/home", device: { device: "mobile" } }), visitor },
    rules,
  );
  assert.deepEqual(decision.dependsOn, ["device"]);
  assert.deepEqual(decision.usedHints, ["Sec-CH-UA-Mobile"]);
});

Deno.test("route conditions target segments, login state and country; unmatched routes fall through", () => {
  const rules = parseRules({
    version: 1,
    regions: REGIONS,
    routes: [
      { match: "/deals", when: { segment: ["vip", "gold"], loggedIn: true }, rewrite: { "*": "/deals/vip" } },
      { match: "/deals", when: { country: ["FR"] }, rewrite: { "*": "/deals/fr" } },
    ],
  });
  const path = (facts: ReturnType<typeof makeFacts>, visitor: ReturnType<typeof makeVisitor>) => {
    const { action } = decide({ facts, visitor }, rules);
    return action.type === "proxy" ? action.path : "";
  };
  const deals = makeFacts({ path: "/deals", country: "FR" });
  assert.equal(path(deals, makeVisitor("u", { loggedIn: true, segments: ["gold"] })), "/deals/vip");
  assert.equal(path(deals, makeVisitor("u", { loggedIn: false, segments: ["gold"] })), "/deals/fr");
  assert.equal(path(makeFacts({ path: "/deals" }), makeVisitor("u", { segments: ["other"] })), "/deals");
  const decision = decide({ facts: makeFacts({ path: "/deals" }), visitor: makeVisitor("u") }, rules);
  assert.deepEqual(decision.dependsOn, ["country", "segments", "loggedIn"]);
  assert.equal(decision.personalized, true);
});

Deno.test("a rewrite whose filled-in target would be unsafe is skipped", () => {
  const rules = parseRules({ version: 1, routes: [{ match: "/files/*", rewrite: { "*": "/store/*" } }] });
  const decision = decide(
    { facts: makeFacts({ path: "/files/../admin" }), visitor: makeVisitor("v") },
    rules,
  );
  assert.deepEqual(decision.action, { type: "proxy", path: "/files/../admin" });
  assert.equal(decision.matchedRoute, undefined);
  const fine = decide({ facts: makeFacts({ path: "/files/a.txt" }), visitor: makeVisitor("v") }, rules);
  assert.deepEqual(fine.action, { type: "proxy", path: "/store/a.txt" });
  assert.equal(fine.personalized, false);
  // `..;` is a dot segment for servers that cut path parameters: a splat may not make one.
  const prefixed = parseRules({
    version: 1,
    routes: [{ match: "/promo*", rewrite: { "*": "/promo-pages/*" } }],
  });
  const semi = decide(
    { facts: makeFacts({ path: "/promo..;/secret" }), visitor: makeVisitor("v") },
    prefixed,
  );
  assert.deepEqual(semi.action, { type: "proxy", path: "/promo..;/secret" });
});

Deno.test("the splat goes into the target as it is: $ sequences in a request path are not replacement patterns", () => {
  const rules = parseRules({
    version: 1,
    routes: [{ match: "/video/*", rewrite: { "*": "/lite/video/*/index" } }],
  });
  for (const splat of ["a$&b", "a$'b", "a$`b", "a$$b", "a$1b"]) {
    const decision = decide(
      { facts: makeFacts({ path: `/video/${splat}` }), visitor: makeVisitor("v") },
      rules,
    );
    assert.deepEqual(decision.action, { type: "proxy", path: `/lite/video/${splat}/index` }, splat);
  }
});

Deno.test("routes, experiments, images and slots match the path without its ; parameters", () => {
  const rules = parseRules({
    version: 1,
    routes: [
      { match: "/admin/*", redirect: { to: "/login" } },
      { match: "/shop/*", rewrite: { "*": "/store/*" } },
    ],
    experiments: [{ key: "hero", variations: ["control", "a"], coverage: 1, match: "/promo/*" }],
    images: [{ match: "/img/*.jpg", quality: { fast: 70 } }],
    slots: [{ name: "banner", when: { path: "/promo/*" }, html: "<b>sale</b>" }],
  });
  const run = (path: string) => decide({ facts: makeFacts({ path }), visitor: makeVisitor("v") }, rules);
  assert.deepEqual(run("/admin;x/y").action, { type: "redirect", location: "/login", status: 302 });
  assert.equal(run("/admin;x/y").matchedRoute, "/admin/*");
  // The splat is taken from the matched path: parameters do not go into a rewrite target.
  assert.deepEqual(run("/shop;jsessionid=1/a;b/c").action, { type: "proxy", path: "/store/a/c" });
  const promo = run("/promo;x/summer");
  assert.ok("hero" in promo.variants);
  assert.deepEqual(promo.slots, { banner: "<b>sale</b>" });
  assert.deepEqual(run("/img/a.jpg;v=2").action, { type: "proxy", path: "/img/a.jpg;v=2", search: "?q=70" });
  // Unmatched, the path goes to the origin with its parameters (a servlet's session id).
  assert.deepEqual(run("/cart;jsessionid=ABC").action, { type: "proxy", path: "/cart;jsessionid=ABC" });
});

Deno.test("names that are also Object.prototype properties are ordinary names", () => {
  const rules = parseRules({
    version: 1,
    slots: [{ name: "hasOwnProperty", html: "<b>hi</b>" }, { name: "toString", html: "<i>yo</i>" }],
  });
  const decision = decide({ facts: makeFacts(), visitor: makeVisitor("v") }, rules);
  assert.deepEqual(decision.slots, { hasOwnProperty: "<b>hi</b>", toString: "<i>yo</i>" });
});

Deno.test("image requests get width and quality parameters from viewport, DPR and network", () => {
  const rules = parseRules({
    version: 1,
    images: [
      { match: "/thumbs/*", quality: { "save-data": 30 } },
      {
        match: "/images/*",
        width: { from: "dpr-scaled", step: 100, max: 2000 },
        quality: { fast: 80, slow: 60, "save-data": 40 },
      },
    ],
  });
  const visitor = makeVisitor("v");
  const run = (facts: ReturnType<typeof makeFacts>) => decide({ facts, visitor }, rules);

  const phone = run(makeFacts({ path: "/images/hero.jpg", device: { viewportWidth: 412, dpr: 2.625 } }));
  assert.deepEqual(phone.action, { type: "proxy", path: "/images/hero.jpg", search: "?w=1100&q=80" });
  assert.deepEqual(phone.dependsOn, ["network", "viewport", "dpr"]);
  assert.deepEqual(phone.usedHints, [
    "Save-Data",
    "ECT",
    "Downlink",
    "RTT",
    "Sec-CH-Viewport-Width",
    "Viewport-Width",
    "Sec-CH-DPR",
    "DPR",
  ]);
  assert.equal(phone.personalized, true);

  const huge = run(
    makeFacts({ path: "/images/a.jpg", search: "?v=3", device: { viewportWidth: 3000, dpr: 2 } }),
  );
  assert.deepEqual(huge.action, { type: "proxy", path: "/images/a.jpg", search: "?v=3&w=2000&q=80" });

  const saveData = run(
    makeFacts({ path: "/images/a.jpg", search: "?w=200", device: { network: "save-data" } }),
  );
  assert.deepEqual(saveData.action, { type: "proxy", path: "/images/a.jpg", search: "?w=200&q=40" });

  const noHints = run(makeFacts({ path: "/thumbs/a.jpg" }));
  assert.deepEqual(noHints.action, { type: "proxy", path: "/thumbs/a.jpg" }, "no parameter, no search");
  assert.equal(noHints.personalized, true, "the absence of Save-Data also decided the outcome");

  const post = run(makeFacts({ method: "POST", path: "/images/a.jpg", device: { viewportWidth: 400 } }));
  assert.deepEqual(post.action, { type: "proxy", path: "/images/a.jpg" });
});

Deno.test("flags: region rules, rollout by visitor key, defaults", () => {
  const rules = parseRules(JSON.parse(ISSUE_EXAMPLE_JSON));
  const eu = decide({ facts: makeFacts({ country: "FR" }), visitor: makeVisitor("any") }, rules);
  assert.deepEqual(eu.flags, { "new-search": true });
  let on = 0;
  for (const id of ids) {
    const decision = decide({ facts: makeFacts({ country: "US" }), visitor: makeVisitor(id) }, rules);
    if (decision.flags["new-search"] === true) on++;
  }
  assert.ok(Math.abs(on / ids.length - 0.2) < 0.02, String(on));
  const anonymous = decide({ facts: makeFacts({ country: "US" }), visitor: makeVisitor("") }, rules);
  assert.equal(anonymous.flags["new-search"], false, "no key: the rollout cannot bucket, default");
});

Deno.test("the seed rules decide exactly as before", () => {
  const rules = parseRules({
    version: 1,
    regions: REGIONS,
    routes: [
      {
        match: "/api/products/*",
        rewrite: { EU: "/api/products/promotions/europe", "*": "/api/products/promotions/global" },
      },
      { match: "/old-sale", redirect: { to: "/sale", status: 302 } },
    ],
  });
  const visitor = makeVisitor("");
  const eu = decide({ facts: makeFacts({ path: "/api/products/list", country: "DE" }), visitor }, rules);
  assert.deepEqual(eu, {
    region: "EU",
    country: "DE",
    rulesVersion: 1,
    action: { type: "proxy", path: "/api/products/promotions/europe" },
    matchedRoute: "/api/products/*",
    personalized: true,
    variants: {},
    stickyAssignments: {},
    flags: {},
    usedHints: [],
    dependsOn: ["region"],
    slots: {},
    slotDependsOn: [],
  });
  const redirect = decide({ facts: makeFacts({ path: "/old-sale" }), visitor }, rules);
  assert.deepEqual(redirect.action, { type: "redirect", location: "/sale", status: 302 });
  assert.equal(redirect.personalized, false);
  // The query goes along: campaign parameters and coupons are not lost.
  const withQuery = decide(
    { facts: makeFacts({ path: "/old-sale", search: "?utm_source=newsletter&coupon=X" }), visitor },
    rules,
  );
  assert.deepEqual(withQuery.action, {
    type: "redirect",
    location: "/sale?utm_source=newsletter&coupon=X",
    status: 302,
  });
  const other = decide({ facts: makeFacts({ path: "/about" }), visitor }, rules);
  assert.deepEqual(other.action, { type: "proxy", path: "/about" });
  assert.equal(other.personalized, false);
});
