import assert from "node:assert/strict";
import {
  assignExperiment,
  compileExperiment,
  experimentApplies,
  type ExperimentContext,
} from "../../../lib/rules/experiments.ts";
import { assignVariation } from "../../../lib/rules/bucketing.ts";

const hero = compileExperiment({
  key: "hero",
  variations: ["control", "a", "b"],
  weights: [0.5, 0.25, 0.25],
  coverage: 0.5,
  seed: "hero-seed",
  hashVersion: 2,
  match: "/*",
  namespace: ["site", 0, 0.7],
  enabled: true,
});

const context: ExperimentContext = {
  region: "GLOBAL",
  country: undefined,
  device: "desktop",
  network: "fast",
  platform: undefined,
  segments: [],
  path: "/",
  loggedIn: false,
  variants: {},
  key: "",
  isBot: false,
  sticky: new Map(),
};

Deno.test("assignment equals GrowthBook's for the same key, seed, weights, coverage and namespace", () => {
  for (let i = 0; i < 1000; i++) {
    const key = `id-${i}`;
    const expected = assignVariation(key, hero.spec);
    const result = assignExperiment(hero, { ...context, key });
    assert.equal(result.inExperiment, expected.inExperiment, key);
    assert.equal(result.variation, hero.variations[expected.variationIndex], key);
    assert.equal(result.sticky, false);
  }
});

Deno.test("a sticky assignment wins over coverage and namespace, but not for bots", () => {
  const outside = Array.from({ length: 200 }, (_, i) => `id-${i}`)
    .find((key) => !assignVariation(key, hero.spec).inExperiment)!;
  const sticky = new Map([["hero", "b"]]);
  assert.deepEqual(assignExperiment(hero, { ...context, key: outside, sticky }), {
    variation: "b",
    inExperiment: true,
    sticky: true,
  });
  assert.deepEqual(assignExperiment(hero, { ...context, key: outside, sticky, isBot: true }), {
    variation: "control",
    inExperiment: false,
    sticky: false,
  });
  assert.deepEqual(assignExperiment(hero, { ...context, key: "", sticky: new Map() }), {
    variation: "control",
    inExperiment: false,
    sticky: false,
  });
});

Deno.test("an experiment's match applies only when the path is known", () => {
  const checkout = compileExperiment({
    key: "checkout",
    variations: ["control", "b"],
    coverage: 1,
    hashVersion: 2,
    match: "/checkout",
    enabled: true,
  });
  assert.equal(experimentApplies(checkout, { ...context, path: "/checkout" }), true);
  assert.equal(experimentApplies(checkout, { ...context, path: "/home" }), false);
  assert.equal(experimentApplies(checkout, { ...context, path: undefined }), true);
});
