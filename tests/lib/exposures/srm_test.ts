import assert from "node:assert/strict";
import { effectiveWeights, ExposureTally, sampleRatioTest } from "../../../lib/exposures/srm.ts";
import { compileExperiment } from "../../../lib/rules/experiments.ts";

Deno.test("1 000 / 1 000 against 50/50 weights is not a sample ratio mismatch", async () => {
  const result = await sampleRatioTest([1000, 1000], [0.5, 0.5]);
  assert.equal(result.statistic, 0);
  assert.equal(result.pValue, 1);
  assert.equal(result.srm, false);
});

Deno.test("1 200 / 800 against 50/50 weights is flagged", async () => {
  const result = await sampleRatioTest([1200, 800], [0.5, 0.5]);
  assert.equal(result.statistic, 80);
  assert.equal(result.degreesOfFreedom, 1);
  // chi2 = 80 with 1 degree of freedom: p = erfc(sqrt(40)) = 3.744e-19, which 1 − cdf loses.
  assert.ok(
    result.pValue !== null && Math.abs(result.pValue / 3.7440973842028806e-19 - 1) < 1e-6,
    `p = ${result.pValue}`,
  );
  assert.equal(result.srm, true);
});

Deno.test("far tails keep their p-value instead of rounding to 0", async () => {
  // chi2 = 100 with 2 degrees of freedom: p = exp(−50).
  const two = await sampleRatioTest([300, 200, 100], [1, 1, 1]);
  assert.equal(two.statistic, 100);
  assert.ok(Math.abs(two.pValue! / Math.exp(-50) - 1) < 1e-9, `p = ${two.pValue}`);
  // Order is kept: a larger statistic gives a smaller, still positive, p-value.
  const further = await sampleRatioTest([1300, 700], [0.5, 0.5]);
  assert.ok(
    further.pValue! > 0 && further.pValue! < (await sampleRatioTest([1200, 800], [0.5, 0.5])).pValue!,
  );
});

Deno.test("the p-value is the chi-square upper tail (known quantiles)", async () => {
  // 3.841 is the 95 % quantile of chi-square with 1 degree of freedom, 5.991 with 2.
  const one = await sampleRatioTest([50 + Math.sqrt(3.841 * 25), 50 - Math.sqrt(3.841 * 25)], [0.5, 0.5]);
  assert.ok(Math.abs(one.pValue! - 0.05) < 1e-3, `p = ${one.pValue}`);
  // Expected 100/50/50; +d, −d/2, −d/2 give d²/100 + 2 (d/2)²/50 = d²/50 = 5.991.
  const d = Math.sqrt(5.991 * 50);
  const two = await sampleRatioTest([100 + d, 50 - d / 2, 50 - d / 2], [0.5, 0.25, 0.25]);
  assert.equal(two.degreesOfFreedom, 2);
  assert.ok(Math.abs(two.statistic! - 5.991) < 1e-9);
  assert.ok(Math.abs(two.pValue! - 0.05) < 1e-3, `p = ${two.pValue}`);
});

Deno.test("a lopsided split with fewer than 100 exposures is not flagged", async () => {
  const result = await sampleRatioTest([80, 10], [0.5, 0.5]);
  assert.ok(result.pValue! < 0.001);
  assert.equal(result.srm, false);
});

Deno.test("weights need not sum to 1, and a zero-weight variation with exposures is a mismatch", async () => {
  assert.equal((await sampleRatioTest([500, 500], [2, 2])).pValue, 1);
  const zero = await sampleRatioTest([500, 480, 20], [0.5, 0.5, 0]);
  assert.equal(zero.pValue, 0);
  assert.equal(zero.srm, true);
  assert.equal((await sampleRatioTest([500, 500, 0], [0.5, 0.5, 0])).degreesOfFreedom, 1);
});

Deno.test("nothing to test gives no p-value", async () => {
  assert.deepEqual(await sampleRatioTest([0, 0], [0.5, 0.5]), {
    total: 0,
    statistic: null,
    degreesOfFreedom: 1,
    pValue: null,
    srm: false,
  });
  assert.equal((await sampleRatioTest([10], [1])).pValue, null);
  await assert.rejects(() => sampleRatioTest([1, 2], [1]), RangeError);
});

Deno.test("effective weights follow bucketing: invalid weights mean equal ones", () => {
  const base = { key: "e", coverage: 1, hashVersion: 2 as const, match: "/*", enabled: true };
  assert.deepEqual(
    effectiveWeights(compileExperiment({ ...base, variations: ["a", "b", "c"], weights: [0.5, 0.25, 0.25] })),
    [0.5, 0.25, 0.25],
  );
  const equal = effectiveWeights(compileExperiment({ ...base, variations: ["a", "b"], weights: [0.9, 0.9] }));
  assert.deepEqual(equal, [0.5, 0.5]);
  // Coverage shrinks every range alike: the shares among bucketed visitors stay.
  assert.deepEqual(
    effectiveWeights(
      compileExperiment({ ...base, coverage: 0.2, variations: ["a", "b"], weights: [0.2, 0.8] }),
    ),
    [0.2, 0.8],
  );
});

Deno.test("the tally keeps counts per rules version, the oldest versions going first", () => {
  const tally = new ExposureTally();
  const v1 = tally.serve(1, 1000);
  v1.count("hero", "a");
  v1.count("hero", "a");
  assert.equal(tally.serve(1, 5000).since, 1000);
  assert.equal(tally.get(1)?.counts.get("hero")?.get("a"), 2);
  for (let version = 2; version <= 5; version++) tally.serve(version, version * 1000);
  assert.equal(tally.get(1), undefined);
  assert.equal(tally.get(5)?.since, 5000);
});

Deno.test("a version still being served keeps its counts while canaries come and go", () => {
  const tally = new ExposureTally();
  const active = tally.serve(1, 1000);
  active.count("hero", "a");
  // Five canaries tried one after the other; the active version is served all along.
  for (let canary = 2; canary <= 6; canary++) {
    tally.serve(canary, canary * 1000).count("hero", "b");
    tally.serve(1, canary * 1000 + 1);
  }
  assert.equal(tally.get(1)?.since, 1000);
  assert.equal(tally.get(1)?.counts.get("hero")?.get("a"), 1);
  // The canaries served longest ago went first.
  assert.equal(tally.get(2), undefined);
  assert.ok(tally.get(6));
});
