import assert from "node:assert/strict";
import { evaluateFlag, type FlagContext } from "../../../lib/rules/flags.ts";
import { hash } from "../../../lib/rules/bucketing.ts";
import { parseRules } from "../../../lib/rules/compile.ts";
import { REGIONS } from "./rules_fixtures.ts";

const rules = parseRules({
  version: 4,
  regions: REGIONS,
  experiments: [{ key: "checkout", variations: ["control", "b"] }],
  flags: [
    { key: "static", type: "string", default: "hello" },
    { key: "off", type: "boolean", default: false, enabled: false, rules: [{ value: true }] },
    {
      key: "banner",
      type: "object",
      default: { color: "grey" },
      variants: { red: { color: "red" }, blue: { color: "blue" } },
      rules: [
        { when: { region: ["EU"] }, variant: "red" },
        { when: { device: ["mobile"] }, value: { color: "blue" } },
        { when: { network: ["slow"] }, value: { color: "green" } },
      ],
    },
    {
      key: "limit",
      type: "number",
      default: 10,
      rules: [{ when: { region: ["US"] }, rollout: 0.5, value: 20 }],
    },
    {
      key: "checkout-copy",
      type: "string",
      default: "Pay",
      rules: [{ when: { variant: { checkout: ["b"] } }, value: "Pay now" }],
    },
    {
      key: "eu-checkout-copy",
      type: "string",
      default: "Pay",
      rules: [
        { when: { region: ["EU"], variant: { checkout: ["b"] } }, value: "Jetzt zahlen" },
        { when: { region: ["US"] }, value: "Pay today" },
      ],
    },
  ],
});

const base: FlagContext = {
  region: "GLOBAL",
  country: undefined,
  device: "desktop",
  network: "fast",
  platform: undefined,
  segments: [],
  path: "/",
  loggedIn: false,
  variants: {},
  key: "user-1",
};

function evaluate(key: string, overrides: Partial<FlagContext> = {}) {
  const { inputs: _inputs, ...rest } = evaluateFlag(rules.flagsByKey.get(key)!, { ...base, ...overrides });
  return rest;
}

Deno.test("flag reasons: STATIC without rules, DISABLED, TARGETING_MATCH, DEFAULT", () => {
  assert.deepEqual(evaluate("static"), { key: "static", value: "hello", variant: "hello", reason: "STATIC" });
  assert.deepEqual(evaluate("off"), { key: "off", value: false, variant: "false", reason: "DISABLED" });
  assert.deepEqual(evaluate("banner", { region: "EU", device: "mobile" }), {
    key: "banner",
    value: { color: "red" },
    variant: "red",
    reason: "TARGETING_MATCH",
  });
  assert.deepEqual(
    evaluate("banner", { device: "mobile" }).variant,
    "blue",
    "a literal value equal to a variant",
  );
  assert.deepEqual(evaluate("banner", { network: "slow" }).variant, "rule-2");
  assert.deepEqual(evaluate("banner"), {
    key: "banner",
    value: { color: "grey" },
    variant: "default",
    reason: "DEFAULT",
  });
  assert.ok(Object.isFrozen(evaluate("banner").value), "shared values are frozen");
});

Deno.test("a rollout buckets with GrowthBook's v2 hash of flag key and targeting key", () => {
  let checked = 0;
  for (let i = 0; i < 500; i++) {
    const key = `u-${i}`;
    const expected = hash("limit", key, 2)! < 0.5;
    const result = evaluate("limit", { region: "US", key });
    assert.equal(result.value, expected ? 20 : 10, key);
    assert.equal(result.reason, expected ? "SPLIT" : "DEFAULT");
    checked++;
  }
  assert.equal(checked, 500);
  assert.equal(
    evaluate("limit", { region: "EU", key: "" }).reason,
    "DEFAULT",
    "rule not reached, no key needed",
  );
  assert.deepEqual(evaluate("limit", { region: "US", key: "" }), {
    key: "limit",
    value: 10,
    variant: "10",
    reason: "ERROR",
    errorCode: "TARGETING_KEY_MISSING",
  });
});

Deno.test("a variant condition follows the experiment variation served", () => {
  assert.deepEqual(evaluate("checkout-copy", { variants: { checkout: "b" } }).value, "Pay now");
  assert.deepEqual(evaluate("checkout-copy", { variants: { checkout: "b" } }).reason, "SPLIT");
  assert.deepEqual(evaluate("checkout-copy", { variants: { checkout: "control" } }).reason, "DEFAULT");
  assert.equal(evaluate("checkout-copy", { key: "" }).errorCode, "TARGETING_KEY_MISSING");
  // Without a key, a rule whose other conditions rule the visitor out is passed over, not an error.
  assert.equal(evaluate("eu-checkout-copy", { key: "", region: "US" }).value, "Pay today");
  assert.equal(evaluate("eu-checkout-copy", { key: "", region: "EU" }).errorCode, "TARGETING_KEY_MISSING");
});
