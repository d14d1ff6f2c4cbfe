import assert from "node:assert/strict";
import { type RuleSet, RuleSetSchema } from "../../../lib/rules/schema.ts";
import { parseRules, RulesError } from "../../../lib/rules/compile.ts";
import { ISSUE_EXAMPLE_JSON, makeFacts, makeVisitor, REGIONS } from "./rules_fixtures.ts";
import { decide } from "../../../lib/rules/decide.ts";
import { formatSticky, STICKY_COOKIE, StickySigner } from "../../../lib/pipeline/sticky.ts";
import { serializeCookie } from "../../../lib/http/cookies.ts";

function problemsOf(input: unknown): string[] {
  try {
    parseRules(input, 'rules file "x.json"');
  } catch (error) {
    assert.ok(error instanceof RulesError);
    assert.match(error.message, /^Cannot parse rules file "x\.json": /);
    return error.problems;
  }
  assert.fail("expected a RulesError");
}

const base = { version: 1, regions: REGIONS } satisfies RuleSet;

Deno.test("the issue's example rule set parses and compiles", () => {
  const rules = parseRules(JSON.parse(ISSUE_EXAMPLE_JSON));
  assert.equal(rules.version, 1);
  assert.equal(rules.countryRegion.get("DE"), "EU");
  assert.equal(rules.routes.length, 2);
  assert.equal(rules.experiments[0]!.key, "hero");
  assert.deepEqual(rules.experiments[0]!.spec.weights, [0.5, 0.25, 0.25]);
  assert.equal(rules.flagsByKey.get("new-search")!.rules.length, 2);
  assert.deepEqual(rules.clientHints, []);
});

Deno.test("the full rule language parses: conditions, device/network/variant rewrites, namespaces, images", () => {
  const rules = parseRules({
    ...base,
    routes: [
      { match: "/checkout", experiment: "checkout", rewrite: { b: "/checkout-b" } },
      { match: "/home", rewriteBy: "device", rewrite: { mobile: "/home-m", "*": "/home" } },
      { match: "/video/*", rewriteBy: "network", rewrite: { slow: "/video-lite/*" } },
      { match: "/deals", when: { segment: ["vip"], loggedIn: true }, rewrite: { "*": "/deals/vip" } },
    ],
    experiments: [
      { key: "checkout", variations: ["a", "b"], namespace: ["shop", 0, 0.5], match: ["/checkout", "/cart"] },
      {
        key: "pricing",
        variations: ["control", "x"],
        namespace: ["shop", 0.5, 1],
        when: { device: ["mobile"] },
      },
    ],
    flags: [
      {
        key: "banner",
        type: "string",
        default: "none",
        variants: { eu: "europe", mobile: "small" },
        rules: [
          { when: { region: ["EU"], platform: ["Android"] }, variant: "eu" },
          { when: { variant: { checkout: ["b"] } }, value: "checkout-b" },
        ],
      },
      { key: "limits", type: "object", default: { max: 3 }, rules: [] },
      { key: "ratio", type: "number", default: 0.5, enabled: false },
    ],
    images: [{
      match: "/images/*",
      width: { from: "dpr-scaled", max: 2000 },
      quality: { fast: 80, slow: 60, "save-data": 40 },
    }],
  });
  assert.equal(rules.routes[0]!.action.type, "rewrite");
  assert.deepEqual(
    rules.clientHints,
    [
      "Sec-CH-UA-Mobile",
      "Save-Data",
      "ECT",
      "Downlink",
      "RTT",
      "Sec-CH-UA-Platform",
      "Sec-CH-Viewport-Width",
      "Viewport-Width",
      "Sec-CH-DPR",
      "DPR",
    ],
  );
});

Deno.test("rule validation names the field: weights, uniqueness, namespaces", () => {
  const problems = problemsOf({
    ...base,
    experiments: [
      { key: "hero", variations: ["control", "a", "b"], weights: [0.5, 0.5] },
      { key: "hero", variations: ["control", "a"], weights: [0.5, 0.6] },
      { key: "dup", variations: ["x", "x"] },
      { key: "ns", variations: ["x", "y"], namespace: ["n", 0.6, 0.4] },
      { key: "ns2", variations: ["x", "y"], namespace: ["n", 0, 1.5] },
    ],
  });
  assert.deepEqual(problems, [
    '"experiments.4.namespace.2" Too big: expected number to be <=1',
    '"experiments.0.weights" must have one weight per variation (3), got 2',
    '"experiments.1.key" repeats experiment key "hero"',
    '"experiments.1.weights" must sum to 1, got 1.1',
    '"experiments.2.variations" must be unique',
    '"experiments.3.namespace" must have a start below its end',
  ]);
});

Deno.test("rule validation checks flag values against the flag type and variants", () => {
  const problems = problemsOf({
    ...base,
    flags: [
      { key: "a", type: "boolean", default: "no", rules: [{ value: 1 }] },
      { key: "a", type: "number", default: 1, rules: [{ variant: "nope" }, { value: 2, variant: "x" }] },
      { key: "o", type: "object", default: [], variants: { x: null } },
      { key: "p", type: "string", default: "x", variants: { a: "A" }, rules: [{ variant: "toString" }] },
    ],
  });
  assert.deepEqual(problems, [
    '"flags.0.default" must be of type boolean',
    '"flags.0.rules.0.value" must be of type boolean',
    '"flags.1.key" repeats flag key "a"',
    '"flags.1.rules.0.variant" names unknown variant "nope"',
    '"flags.1.rules.1" must have exactly one of "value" or "variant"',
    '"flags.2.default" must be of type object',
    '"flags.2.variants.x" must be of type object',
    '"flags.3.rules.0.variant" names unknown variant "toString"',
  ]);
});

Deno.test("rule validation checks rewrite keys and conditions against regions, classes and experiments", () => {
  const problems = problemsOf({
    ...base,
    experiments: [{ key: "checkout", variations: ["control", "b"], when: { variant: { checkout: ["b"] } } }],
    routes: [
      { match: "/a", rewrite: { EUR: "/a-eu" } },
      { match: "/b", rewriteBy: "device", rewrite: { phone: "/b-m" } },
      { match: "/c", rewriteBy: "network", rewrite: { "3g": "/c" } },
      { match: "/d", experiment: "checkout", rewrite: { c: "/d-c" } },
      { match: "/e", experiment: "missing", rewrite: { b: "/e" } },
      { match: "/f", when: { region: ["MARS"], variant: { checkout: ["z"] } }, rewrite: { "*": "/f" } },
    ],
  });
  assert.deepEqual(problems, [
    '"experiments.0.when.variant" is not allowed here (experiments cannot depend on other experiments)',
    '"routes.0.rewrite.EUR" names unknown region "EUR"',
    '"routes.1.rewrite.phone" names unknown device class "phone"',
    '"routes.2.rewrite.3g" names unknown network class "3g"',
    '"routes.3.rewrite.c" names unknown variation "c" of experiment "checkout"',
    '"routes.4.experiment" names unknown experiment "missing"',
    '"routes.5.when.region.0" names unknown region "MARS"',
    '"routes.5.when.variant.checkout.0" names unknown variation "z" of experiment "checkout"',
  ]);
});

Deno.test("rule validation rejects unsafe targets, misspelt condition fields and ambiguous routes", () => {
  const problems = problemsOf({
    ...base,
    routes: [
      { match: "/a", rewrite: { "*": "//evil.example/x" } },
      { match: "/b", when: { regoin: ["EU"] }, rewrite: { "*": "/b" } },
      { match: "/c", rewrite: { "*": "/c" }, redirect: { to: "/d" } },
      { match: "/d", redirect: { to: "/e" }, rewriteBy: "device" },
    ],
    images: [{ match: "/img/*" }],
  });
  assert.equal(problems.length, 5, problems.join("\n"));
  assert.match(problems[0]!, /^"routes\.0\.rewrite\.\*" must be a path starting with "\/"/);
  assert.match(problems[1]!, /^"routes\.1\.when" Unrecognized key: "regoin"/);
  assert.equal(problems[2], '"routes.2" must have exactly one of "rewrite" or "redirect"');
  assert.equal(problems[3], '"routes.3" "rewriteBy" and "experiment" need "rewrite"');
  assert.equal(problems[4], '"images.0" must have "width" or "quality"');
});

Deno.test("rules stay backward compatible: defaults and the existing route fields", () => {
  const parsed = RuleSetSchema.parse({ version: 3, routes: [{ match: "/x", redirect: { to: "/y" } }] });
  assert.equal(parsed.defaultRegion, "GLOBAL");
  assert.deepEqual(parsed.experiments, []);
  assert.deepEqual(parsed.flags, []);
  assert.deepEqual(parsed.images, []);
  assert.equal(parsed.routes[0]!.redirect!.status, 302);
  assert.deepEqual(problemsOf({ version: 1, regions: { EU: ["DE"], DACH: ["DE"] } }), [
    '"regions" puts "DE" in both "EU" and "DACH"',
  ]);
});

Deno.test("an editor's $schema key is accepted", () => {
  const rules = parseRules({ $schema: "./docs/rules.schema.json", version: 1 });
  assert.equal(rules.version, 1);
});

Deno.test("a rule set whose experiments would not all fit in the sticky cookie is refused", () => {
  const long = (i: number) => ({
    key: `experiment-${String(i).padStart(2, "0")}`.padEnd(64, "k"),
    variations: ["a".repeat(64), "b".repeat(64)],
  });
  // 134 characters each as sent (":" and "|" are percent-encoded): 28 fit in the 3756 that 3800
  // leaves beside the signature, 29 do not.
  const fits = parseRules({ ...base, experiments: Array.from({ length: 28 }, (_, i) => long(i)) });
  assert.equal(fits.experiments.length, 28);
  const problems = problemsOf({ ...base, experiments: Array.from({ length: 29 }, (_, i) => long(i)) });
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /^"experiments" need 3886 characters of sticky cookie/);
  // The largest rule set accepted gives a cookie browsers keep: name and value under 4096 bytes.
  const decision = decide({ facts: makeFacts(), visitor: makeVisitor("v-1") }, fits);
  assert.equal(Object.keys(decision.stickyAssignments).length, 28);
  const value = formatSticky(decision.stickyAssignments);
  assert.equal(value.split("|").length, 28, "every assignment is in the cookie");
  const signed = new StickySigner(["rules-test-sticky-secret"]).sign(value);
  const nameValue = serializeCookie(STICKY_COOKIE, signed, { maxAgeSeconds: 1, secure: true }).split(";")[0]!;
  assert.ok(nameValue.length <= 4096 - 100, `${nameValue.length} bytes`);
});

Deno.test("a glob no normalised request path can match is refused: ; parameters, unreserved or lower-case escapes", () => {
  const problems = problemsOf({
    ...base,
    routes: [{ match: "/%61dmin/*", redirect: { to: "/login" } }, {
      match: "/cart;jsessionid=*",
      redirect: { to: "/c" },
    }],
    experiments: [{ key: "hero", variations: ["a", "b"], match: ["/caf%c3%a9/*"] }],
    slots: [{ name: "s", when: { path: "/x;y" }, html: "" }],
  });
  assert.deepEqual(problems, [
    '"routes.0.match" must spell percent-encoding as request paths are matched: "/admin/*"',
    '"routes.1.match" must not contain ";" (path parameters are cut from request paths before matching)',
    '"experiments.0.match.0" must spell percent-encoding as request paths are matched: "/caf%C3%A9/*"',
    '"slots.0.when.path" must not contain ";" (path parameters are cut from request paths before matching)',
  ]);
  assert.equal(
    parseRules({ ...base, routes: [{ match: "/caf%C3%A9/*", redirect: { to: "/c" } }] }).routes.length,
    1,
  );
});

Deno.test("reserved names are refused naming the field: __proto__ in any map, constructor and prototype as any name", () => {
  const RESERVED = 'is a reserved name ("__proto__", "constructor" and "prototype" cannot name anything)';
  // As a rules file is read: JSON.parse keeps "__proto__" as an ordinary key, which zod would drop.
  const file = (text: string) => problemsOf(JSON.parse(text));
  assert.deepEqual(file('{"version":1,"regions":{"__proto__":["DE"],"EU":["FR"]}}'), [
    `"regions.__proto__" ${RESERVED}`,
  ]);
  assert.deepEqual(file('{"version":1,"__proto__":{"routes":[]}}'), [`"__proto__" ${RESERVED}`]);
  assert.deepEqual(
    file(
      '{"version":1,"routes":[{"match":"/a","rewrite":{"__proto__":"/b","*":"/c"}}],' +
        '"flags":[{"key":"f","type":"object","default":{"__proto__":{"x":1}},"variants":{"__proto__":{}}}]}',
    ),
    [
      `"routes.0.rewrite.__proto__" ${RESERVED}`,
      `"flags.0.default.__proto__" ${RESERVED}`,
      `"flags.0.variants.__proto__" ${RESERVED}`,
    ],
  );
  const problems = problemsOf({
    version: 1,
    regions: { constructor: ["DE"], prototype: ["FR"] },
    routes: [{ match: "/a", rewrite: { constructor: "/b" } }],
    experiments: [{ key: "constructor", variations: ["prototype", "b"] }],
    flags: [{ key: "prototype", type: "string", default: "x", variants: { constructor: "y" } }],
    slots: [{ name: "constructor", html: "" }],
  });
  assert.deepEqual(problems, [
    `"regions.constructor" ${RESERVED}`,
    `"regions.prototype" ${RESERVED}`,
    `"routes.0.rewrite.constructor" ${RESERVED}`,
    `"experiments.0.key" ${RESERVED}`,
    `"experiments.0.variations.0" ${RESERVED}`,
    `"flags.0.key" ${RESERVED}`,
    `"flags.0.variants.constructor" ${RESERVED}`,
    `"slots.0.name" ${RESERVED}`,
  ]);
  // In a flag's JSON value only "__proto__" (which would vanish) is refused; other keys are data.
  const value = parseRules({
    version: 1,
    flags: [{ key: "f", type: "object", default: { constructor: 1 } }],
  });
  assert.deepEqual(value.flagsByKey.get("f")!.defaultValue, { constructor: 1 });
});

Deno.test("a misspelt top-level key is refused naming it, not dropped", () => {
  assert.deepEqual(problemsOf({ ...base, experiements: [{ key: "hero", variations: ["a", "b"] }] }), [
    '"(root)" Unrecognized key: "experiements"',
  ]);
  assert.deepEqual(problemsOf({ ...base, slotz: [], htmlcontext: true }), [
    '"(root)" Unrecognized keys: "slotz", "htmlcontext"',
  ]);
});
