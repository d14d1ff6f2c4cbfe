import assert from "node:assert/strict";
import {
  assignVariation,
  chooseVariation,
  type ExperimentSpec,
  getBucketRanges,
  hash,
  inNamespace,
  namespaceHash,
  type VariationRange,
} from "../../../lib/rules/bucketing.ts";

// GrowthBook rounds ranges before comparing, since 0.2 * 0.2 is 0.04000000000000001 in floating point.
function rounded(ranges: readonly VariationRange[]): number[][] {
  return ranges.map(([start, end]) => [Math.round(start * 1e6) / 1e6, Math.round(end * 1e6) / 1e6]);
}

Deno.test("hash matches the values named in the issue", () => {
  assert.equal(hash("seed", "a", 2), 0.0505);
  assert.equal(hash("foo", "ab", 2), 0.2575);
  assert.equal(hash("b", "a", 1), 0.946);
});

Deno.test("hash matches GrowthBook's published [seed, value, version] vectors", () => {
  const vectors: [string, string, number, number][] = [
    ["", "a", 1, 0.22],
    ["", "b", 1, 0.077],
    ["b", "a", 1, 0.946],
    ["ef", "d", 1, 0.652],
    ["asdf", "8952klfjas09ujk", 1, 0.549],
    ["", "123", 1, 0.011],
    ["", '___)((*":&', 1, 0.563],
    ["seed", "a", 2, 0.0505],
    ["seed", "b", 2, 0.2696],
    ["foo", "ab", 2, 0.2575],
    ["foo", "def", 2, 0.2019],
    ["89123klj", "8952klfjas09ujkasdf", 2, 0.124],
    ["90850943850283058242805", "123", 2, 0.7516],
    ["()**(%$##$%#$#", '___)((*":&', 2, 0.0128],
  ];
  for (const [seed, value, version, expected] of vectors) {
    assert.equal(hash(seed, value, version), expected, `hash(${JSON.stringify([seed, value, version])})`);
  }
});

Deno.test("hash returns null for an unknown version", () => {
  assert.equal(hash("seed", "a", 3), null);
  assert.equal(hash("seed", "a", 0), null);
});

Deno.test("hash treats non-ASCII text as UTF-16 code units", () => {
  const value = hash("ßeed-☃", "usér-😀", 2);
  assert.ok(value !== null && value >= 0 && value < 1);
  assert.equal(hash("ßeed-☃", "usér-😀", 2), value);
});

Deno.test("getBucketRanges follows GrowthBook's cases", () => {
  assert.deepEqual(rounded(getBucketRanges(3, 0.2, [0.2, 0.3, 0.5])), [[0, 0.04], [0.2, 0.26], [0.5, 0.6]]);
  assert.deepEqual(rounded(getBucketRanges(2, 1)), [[0, 0.5], [0.5, 1]]);
  assert.deepEqual(rounded(getBucketRanges(2, 0.5)), [[0, 0.25], [0.5, 0.75]]);
  assert.deepEqual(rounded(getBucketRanges(2, 0)), [[0, 0], [0.5, 0.5]]);
  assert.deepEqual(rounded(getBucketRanges(4, 1)), [[0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1]]);
  assert.deepEqual(rounded(getBucketRanges(2, 1, [0.4, 0.6])), [[0, 0.4], [0.4, 1]]);
  assert.deepEqual(rounded(getBucketRanges(3, 1, [0.2, 0.3, 0.5])), [[0, 0.2], [0.2, 0.5], [0.5, 1]]);
  assert.deepEqual(rounded(getBucketRanges(2, undefined)), [[0, 0.5], [0.5, 1]]);
});

Deno.test("getBucketRanges clamps coverage and falls back to equal weights", () => {
  assert.deepEqual(rounded(getBucketRanges(2, -0.2)), [[0, 0], [0.5, 0.5]]);
  assert.deepEqual(rounded(getBucketRanges(2, 1.5)), [[0, 0.5], [0.5, 1]]);
  // Wrong length, and a sum far from 1.
  assert.deepEqual(rounded(getBucketRanges(2, 1, [0.4, 0.1, 0.5])), [[0, 0.5], [0.5, 1]]);
  assert.deepEqual(rounded(getBucketRanges(2, 1, [0.7, 0.6])), [[0, 0.5], [0.5, 1]]);
  // Within GrowthBook's ±0.01 tolerance the weights are kept.
  assert.deepEqual(rounded(getBucketRanges(2, 1, [0.5, 0.505])), [[0, 0.5], [0.5, 1.005]]);
  assert.deepEqual(rounded(getBucketRanges(2, 1, [Number.NaN, 1])), [[0, 0.5], [0.5, 1]]);
  assert.deepEqual(getBucketRanges(0, 1), []);
});

Deno.test("lowering coverage never moves a user to another variation", () => {
  const full = getBucketRanges(2, 1, [0.4, 0.6]);
  const tenth = getBucketRanges(2, 0.1, [0.4, 0.6]);
  for (let i = 0; i < 1000; i++) {
    const n = hash("cov", `user-${i}`, 2)!;
    const reduced = chooseVariation(n, tenth);
    if (reduced !== -1) assert.equal(reduced, chooseVariation(n, full));
  }
});

Deno.test("chooseVariation picks the range holding n, or -1", () => {
  const even: VariationRange[] = [[0, 0.5], [0.5, 1]];
  const reduced: VariationRange[] = [[0, 0.25], [0.5, 0.75]];
  const zero: VariationRange[] = [[0, 0.5], [0.5, 0.5], [0.5, 1]];
  assert.equal(chooseVariation(0.2, even), 0);
  assert.equal(chooseVariation(0.6, even), 1);
  assert.equal(chooseVariation(0.4, even), 0);
  assert.equal(chooseVariation(0.8, even), 1);
  assert.equal(chooseVariation(0, even), 0);
  assert.equal(chooseVariation(0.5, even), 1);
  assert.equal(chooseVariation(0.2, reduced), 0);
  assert.equal(chooseVariation(0.6, reduced), 1);
  assert.equal(chooseVariation(0.4, reduced), -1);
  assert.equal(chooseVariation(0.8, reduced), -1);
  assert.equal(chooseVariation(0.5, zero), 2);
});

Deno.test("inNamespace matches GrowthBook's namespace cases", () => {
  const cases: [string, string, number, number, boolean][] = [
    ["1", "namespace1", 0, 0.4, false],
    ["1", "namespace1", 0.4, 1, true],
    ["1", "namespace2", 0, 0.4, false],
    ["1", "namespace2", 0.4, 1, true],
    ["2", "namespace1", 0, 0.4, false],
    ["2", "namespace1", 0.4, 1, true],
    ["2", "namespace2", 0, 0.4, false],
    ["2", "namespace2", 0.4, 1, true],
    ["3", "namespace1", 0, 0.4, false],
    ["3", "namespace1", 0.4, 1, true],
    ["3", "namespace2", 0, 0.4, true],
    ["3", "namespace2", 0.4, 1, false],
    ["4", "namespace1", 0, 0.4, false],
    ["4", "namespace1", 0.4, 1, true],
    ["4", "namespace2", 0, 0.4, true],
    ["4", "namespace2", 0.4, 1, false],
  ];
  for (const [user, id, start, end, expected] of cases) {
    assert.equal(inNamespace(user, [id, start, end]), expected, `user ${user} in [${id}, ${start}, ${end}]`);
  }
});

Deno.test("experiments sharing a namespace with disjoint ranges are mutually exclusive", () => {
  const a: ExperimentSpec = { key: "a", numVariations: 2, hashVersion: 2, namespace: ["checkout", 0, 0.5] };
  const b: ExperimentSpec = { key: "b", numVariations: 2, hashVersion: 2, namespace: ["checkout", 0.5, 1] };
  let inA = 0;
  let inB = 0;
  for (let i = 0; i < 2000; i++) {
    const id = `user-${i}`;
    const ra = assignVariation(id, a);
    const rb = assignVariation(id, b);
    assert.ok(!(ra.inExperiment && rb.inExperiment), `${id} is in both`);
    assert.ok(ra.inExperiment || rb.inExperiment, `${id} is in neither`);
    if (ra.inExperiment) inA++;
    if (rb.inExperiment) inB++;
  }
  assert.ok(inA > 800 && inB > 800, `split ${inA}/${inB}`);
});

Deno.test("assignVariation reproduces GrowthBook's experiment results", () => {
  // "creates experiments properly" in GrowthBook's cases.json (hash version 2, seed ≠ key).
  assert.deepEqual(
    assignVariation("123", {
      key: "hello",
      seed: "feature",
      hashVersion: 2,
      numVariations: 2,
      weights: [0.1, 0.9],
      coverage: 0.99,
      namespace: ["pricing", 0, 1],
    }),
    { variationIndex: 1, inExperiment: true, hashValue: 0.5231 },
  );
  // "empty experiment rule" cases: hash version 1, seed = key, three equal variations.
  const feature: ExperimentSpec = { key: "feature", numVariations: 3 };
  assert.deepEqual(assignVariation("123", feature), {
    variationIndex: 2,
    inExperiment: true,
    hashValue: 0.863,
  });
  assert.deepEqual(assignVariation("456", feature), {
    variationIndex: 0,
    inExperiment: true,
    hashValue: 0.178,
  });
  assert.deepEqual(assignVariation("fds", feature), {
    variationIndex: 1,
    inExperiment: true,
    hashValue: 0.514,
  });
});

Deno.test("assignVariation leaves users outside coverage out, served control", () => {
  // GrowthBook's "coverage" test: key "my-test", coverage 0.4, users "1".."9".
  const exp: ExperimentSpec = { key: "my-test", numVariations: 2, coverage: 0.4 };
  const expected = [-1, 0, 0, -1, 1, -1, 0, 1, -1];
  expected.forEach((want, i) => {
    const result = assignVariation(String(i + 1), exp);
    assert.equal(result.inExperiment ? result.variationIndex : -1, want, `user ${i + 1}`);
    if (!result.inExperiment) assert.equal(result.variationIndex, 0);
  });
});

Deno.test("assignVariation with zero coverage puts nobody in the experiment", () => {
  const exp: ExperimentSpec = { key: "off", numVariations: 2, hashVersion: 2, coverage: 0 };
  for (let i = 0; i < 500; i++) assert.equal(assignVariation(`u${i}`, exp).inExperiment, false);
});

Deno.test("assignVariation refuses empty keys, single variations, unknown hash versions and namespace misses", () => {
  const out = { variationIndex: 0, inExperiment: false, hashValue: null };
  assert.deepEqual(assignVariation("", { key: "k", numVariations: 2 }), out);
  assert.deepEqual(assignVariation("u", { key: "k", numVariations: 1 }), out);
  assert.deepEqual(assignVariation("u", { key: "k", numVariations: 2, hashVersion: 99 }), out);
  assert.deepEqual(
    assignVariation("1", { key: "k", numVariations: 2, namespace: ["namespace1", 0, 0.4] }),
    out,
  );
});

Deno.test("assignVariation spreads 10,000 ids within 2 points of the weights", () => {
  const weights = [0.5, 0.25, 0.25];
  const exp: ExperimentSpec = {
    key: "hero",
    seed: "hero",
    hashVersion: 2,
    numVariations: 3,
    weights,
    coverage: 1,
  };
  const counts = [0, 0, 0];
  const total = 10_000;
  for (let i = 0; i < total; i++) {
    const result = assignVariation(`anon-${i.toString(36)}-${(i * 7919) % 10007}`, exp);
    assert.ok(result.inExperiment);
    counts[result.variationIndex]!++;
  }
  weights.forEach((w, i) => {
    const share = counts[i]! / total;
    assert.ok(Math.abs(share - w) < 0.02, `variation ${i}: ${share} vs ${w}`);
  });
});

Deno.test("assignVariation is stable for the same user", () => {
  const exp: ExperimentSpec = { key: "hero", hashVersion: 2, numVariations: 3, weights: [0.5, 0.25, 0.25] };
  for (let i = 0; i < 100; i++) {
    assert.deepEqual(assignVariation(`u${i}`, exp), assignVariation(`u${i}`, exp));
  }
});

Deno.test("assignVariation tells its trace why, with the bucket or the namespace hash", () => {
  const traced = (key: string, spec: Parameters<typeof assignVariation>[1]) => {
    const seen: [string, number | null][] = [];
    const result = assignVariation(key, spec, {
      assignment: (outcome, value) => seen.push([outcome, value]),
    });
    return { result, seen };
  };
  assert.deepEqual(traced("", { key: "k", numVariations: 2 }).seen, [["no-key", null]]);
  assert.deepEqual(traced("u", { key: "k", numVariations: 1 }).seen, [["too-few-variations", null]]);
  assert.deepEqual(traced("u", { key: "k", numVariations: 2, hashVersion: 99 }).seen, [[
    "hash-version",
    null,
  ]]);
  const ns = traced("1", { key: "k", numVariations: 2, namespace: ["namespace1", 0, 0.4] });
  assert.deepEqual(ns.seen, [["namespace", namespaceHash("1", "namespace1")]]);
  assert.ok(namespaceHash("1", "namespace1") >= 0.4);
  const bucketed = traced("123", {
    key: "hello",
    seed: "feature",
    hashVersion: 2,
    numVariations: 2,
    weights: [0.1, 0.9],
  });
  assert.deepEqual(bucketed.seen, [["bucketed", bucketed.result.hashValue]]);
  const out = traced("123", { key: "hello", seed: "feature", hashVersion: 2, numVariations: 2, coverage: 0 });
  assert.deepEqual(out.seen, [["coverage", out.result.hashValue]]);
});
