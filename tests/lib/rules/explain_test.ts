import assert from "node:assert/strict";
import { decide, decideForVisitor } from "../../../lib/rules/decide.ts";
import { type CompiledRules, parseRules } from "../../../lib/rules/compile.ts";
import { RulesStore } from "../../../lib/rules/store.ts";
import type { Facts } from "../../../lib/pipeline/facts.ts";
import type { Identity } from "../../../lib/pipeline/identity.ts";
import type { EdgeUserContext } from "../../../lib/pipeline/context.ts";
import { ExplainCollector } from "../../../lib/rules/explain.ts";
import type { Explanation } from "../../../lib/rules/explanation.ts";
import { describeMismatch, formatExplanation } from "../../../lib/rules/explain_text.ts";
import { compileCondition } from "../../../lib/rules/targeting.ts";
import { ISSUE_EXAMPLE_JSON, makeFacts } from "./rules_fixtures.ts";

const FIXTURE = new URL("../../fixtures/rules/explain.json", import.meta.url);
const CANARY = new URL("../../fixtures/rules/explain_canary.json", import.meta.url);
const rules = parseRules(JSON.parse(await Deno.readTextFile(FIXTURE)));
const canary = parseRules(JSON.parse(await Deno.readTextFile(CANARY)));

interface Visitor {
  key: string;
  loggedIn?: boolean;
  segments?: string[];
  sticky?: Record<string, string>;
}

function identityOf(visitor: Visitor): Identity {
  return {
    key: visitor.key,
    userId: visitor.loggedIn ? visitor.key : undefined,
    source: visitor.loggedIn ? "header" : "anonymous",
    anonymousId: visitor.key,
    newAnonymousId: false,
    sticky: new Map(Object.entries(visitor.sticky ?? {})),
    stickyRewrite: false,
  };
}

function contextOf(visitor: Visitor): EdgeUserContext {
  return {
    recentViews: [],
    cartItemIds: [],
    segments: visitor.segments ?? [],
    attributes: {},
    source: "none",
    outcome: { cache: "bypass", kv: "skipped", backend: "skipped", stale: false },
  };
}

function explain(facts: Facts, visitor: Visitor, store: RulesStore = new RulesStore(rules)) {
  return new ExplainCollector().explain({
    request: new Request(`https://shop.example${facts.path}${facts.search}`, { method: facts.method }),
    facts,
    identity: identityOf(visitor),
    context: contextOf(visitor),
    rules: store,
    sessionCookie: "sid",
    ipGeoLoaded: false,
  });
}

function decideFor(facts: Facts, visitor: Visitor, compiled: CompiledRules) {
  const identity = identityOf(visitor);
  return decide({
    facts,
    visitor: {
      key: identity.key,
      loggedIn: identity.userId !== undefined,
      segments: visitor.segments ?? [],
      attributes: {},
      sticky: identity.sticky,
    },
  }, compiled);
}

const PATHS = [
  "/",
  "/checkout",
  "/cart",
  "/deals",
  "/api/products/42",
  "/old-sale",
  "/images/a.jpg",
  "/home",
];
const COUNTRIES = [undefined, "DE", "US", "JP"];
const DEVICES = [
  { device: "desktop" as const, isBot: false, network: "fast" as const },
  { device: "mobile" as const, isBot: false, network: "slow" as const, viewportWidth: 390, dpr: 3 },
  { device: "tablet" as const, isBot: false, network: "save-data" as const },
  { device: "bot" as const, isBot: true, network: "fast" as const },
];
const VISITORS: Visitor[] = [
  ...Array.from({ length: 12 }, (_, i) => ({ key: `visitor-${i}-0123456789` })),
  { key: "", sticky: {} },
  { key: "user-1", loggedIn: true, segments: ["vip"] },
  { key: "visitor-sticky-012345", sticky: { hero: "a", checkout: "b", gone: "x" } },
  { key: "visitor-badsticky-0123", sticky: { hero: "nope" } },
];

Deno.test("the explained decision equals decide()'s for a table of requests, visitors and rule sets", () => {
  const ruleSets = [rules, canary, parseRules(JSON.parse(ISSUE_EXAMPLE_JSON))];
  let compared = 0;
  for (const compiled of ruleSets) {
    const store = new RulesStore(compiled);
    for (const path of PATHS) {
      for (const country of COUNTRIES) {
        for (const device of DEVICES) {
          for (const method of ["GET", "POST"]) {
            const facts = makeFacts({
              path,
              country,
              device,
              method,
              search: path === "/images/a.jpg" ? "?x=1" : "",
            });
            for (const visitor of VISITORS) {
              const { decision, explanation } = explain(facts, visitor, store);
              assert.deepEqual(
                decision,
                decideFor(facts, visitor, compiled),
                `${path} ${country} ${visitor.key}`,
              );
              assert.deepEqual(explanation.decision, decision);
              compared++;
            }
          }
        }
      }
    }
  }
  assert.equal(compared, 3 * PATHS.length * COUNTRIES.length * DEVICES.length * 2 * VISITORS.length);
});

Deno.test("with a canary running, the explained decision equals the pipeline's decideForVisitor", () => {
  const store = new RulesStore(rules);
  store.set({ active: rules, canary: { rules: canary, share: 0.5 } });
  const roles = new Set<string>();
  for (const path of PATHS) {
    for (const visitor of VISITORS) {
      const facts = makeFacts({ path, country: "DE" });
      const { decision, explanation } = explain(facts, visitor, store);
      const identity = identityOf(visitor);
      const expected = decideForVisitor({
        facts,
        visitor: {
          key: identity.key,
          loggedIn: !!visitor.loggedIn,
          segments: visitor.segments ?? [],
          attributes: {},
          sticky: identity.sticky,
        },
      }, store).decision;
      assert.deepEqual(decision, expected);
      roles.add(explanation.rules.role);
      assert.equal(explanation.rules.version, decision.rulesVersion);
    }
  }
  assert.deepEqual([...roles].sort(), ["active", "canary"]);
});

Deno.test("every rule of every kind appears in the explanation, in rule order", () => {
  const { explanation } = explain(makeFacts({ path: "/checkout" }), { key: "visitor-0-0123456789" });
  assert.deepEqual(explanation.experiments.map((e) => e.key), ["hero", "checkout", "eu-banner", "retired"]);
  assert.deepEqual(explanation.routes.map((r) => r.index), [0, 1, 2, 3, 4]);
  assert.deepEqual(explanation.routes.map((r) => r.considered), [true, true, true, false, false]);
  assert.deepEqual(explanation.flags.map((f) => f.key), ["new-search", "pay-label", "vip-deals"]);
  assert.deepEqual(explanation.slots.map((s) => s.index), [0, 1, 2]);
  assert.equal(explanation.images.length, 1);
  assert.equal(explanation.experiments.find((e) => e.key === "retired")!.reason, "disabled");
});

Deno.test("a flag rule's rollout hash and a variant condition's failure are explained", () => {
  const { explanation } = explain(makeFacts({ path: "/" }), { key: "visitor-3-0123456789" });
  const search = explanation.flags.find((f) => f.key === "new-search")!;
  assert.equal(search.rules[0]!.field, "region");
  assert.equal(typeof search.rules[1]!.hashValue, "number");
  assert.ok(["rollout", "matched"].includes(search.rules[1]!.outcome));
  const pay = explanation.flags.find((f) => f.key === "pay-label")!;
  assert.equal(pay.rules[0]!.field, "variant");
  assert.match(pay.rules[0]!.why, /not exposed to "checkout"/);
});

Deno.test("a redirect leaves the image rules unconsidered, and says so", () => {
  const { explanation } = explain(makeFacts({ path: "/old-sale", search: "?utm=1" }), {
    key: "visitor-1-0123456789",
  });
  assert.deepEqual(explanation.decision.action, { type: "redirect", location: "/sale?utm=1", status: 301 });
  assert.equal(explanation.routes[3]!.reason, "matched");
  assert.equal(explanation.images[0]!.reason, "not-proxied");
  assert.match(explanation.images[0]!.why, /redirected/);
});

Deno.test("describeMismatch names what the field wants and what the visitor has", () => {
  const context = {
    region: "US",
    country: undefined,
    device: "desktop" as const,
    network: "fast" as const,
    platform: undefined,
    segments: [],
    path: "/a",
    loggedIn: false,
    variants: { hero: "a" },
  };
  assert.equal(
    describeMismatch("region", compileCondition({ region: ["EU"] }), context),
    `when.region wants ["EU"]; the visitor's region is "US"`,
  );
  assert.equal(
    describeMismatch("country", compileCondition({ country: ["FR"] }), context),
    `when.country wants ["FR"]; the visitor's country is unknown`,
  );
  assert.equal(
    describeMismatch("variant", compileCondition({ variant: { hero: ["b"] } }), context),
    `when.variant wants hero in ["b"]; the visitor is served "a"`,
  );
  assert.equal(
    describeMismatch("segment", compileCondition({ segment: ["vip"] }), context),
    `when.segment wants one of ["vip"]; the visitor has no segments`,
  );
});

Deno.test("the text format has a line per fact and per rule", () => {
  const { explanation } = explain(makeFacts({ path: "/deals", country: "DE" }), {
    key: "visitor-2-0123456789",
  });
  const text = formatExplanation(explanation);
  assert.match(text, /^GET \/deals\n/);
  assert.match(text, /region {5}EU — Country DE is in regions\.EU/);
  assert.match(text, /✗ #1 \/deals +when\.device wants \["mobile"\]; the visitor's device is "desktop"/);
  const lines = text.split("\n");
  for (const section of ["Facts", "Experiments", "Routes", "Images", "Flags", "Slots", "Decision"]) {
    assert.ok(lines.includes(section), section);
  }
  const explained: Explanation = explanation;
  assert.equal(lines.filter((line) => /^ {2}[✓✗·] #\d/.test(line)).length, explained.routes.length + 1 + 3);
});
