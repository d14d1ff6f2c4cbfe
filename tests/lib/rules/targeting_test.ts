import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compileCondition,
  conditionMismatch,
  type ConditionSpec,
  hintsForInputs,
  INPUT,
  inputNames,
  matchesCondition,
  PathGlob,
  type TargetingContext,
} from "../../../lib/rules/targeting.ts";

const context: TargetingContext = {
  region: "EU",
  country: "DE",
  device: "mobile",
  network: "slow",
  platform: "android",
  segments: ["returning", "vip"],
  path: "/shop/shoes",
  loggedIn: true,
  variants: { hero: "a" },
};

Deno.test("a condition holds when every field given matches, any value within a list", () => {
  const cases: [ConditionSpec, boolean][] = [
    [{}, true],
    [{ region: ["US", "EU"] }, true],
    [{ region: ["US"] }, false],
    [{ country: ["DE"], device: ["mobile", "tablet"] }, true],
    [{ country: ["DE"], device: ["desktop"] }, false],
    [{ network: ["slow", "save-data"] }, true],
    [{ network: ["fast"] }, false],
    [{ platform: ["Android"] }, true],
    [{ platform: ["iOS"] }, false],
    [{ segment: ["new", "vip"] }, true],
    [{ segment: ["new"] }, false],
    [{ path: "/shop/*" }, true],
    [{ path: ["/cart", "/shop/shoe*"] }, true],
    [{ path: "/shop" }, false],
    [{ loggedIn: true }, true],
    [{ loggedIn: false }, false],
    [{ variant: { hero: ["a", "b"] } }, true],
    [{ variant: { hero: ["control"] } }, false],
    [{ variant: { other: ["a"] } }, false],
  ];
  for (const [spec, expected] of cases) {
    assert.equal(matchesCondition(compileCondition(spec), context), expected, JSON.stringify(spec));
  }
  assert.equal(matchesCondition(undefined, context), true);
});

Deno.test("unknown attributes never match a condition that names them", () => {
  const unknown: TargetingContext = {
    ...context,
    country: undefined,
    device: undefined,
    network: undefined,
    platform: undefined,
    path: undefined,
    loggedIn: undefined,
    segments: [],
  };
  const specs: ConditionSpec[] = [
    { country: ["DE"] },
    { device: ["mobile"] },
    { path: "*" },
    { loggedIn: false },
    { segment: ["vip"] },
  ];
  for (const spec of specs) {
    assert.equal(matchesCondition(compileCondition(spec), unknown), false, JSON.stringify(spec));
  }
});

Deno.test("a condition reports the inputs it reads, and inputs map to client hints", () => {
  const condition = compileCondition({ region: ["EU"], device: ["mobile"], segment: ["vip"], path: "/x" });
  assert.deepEqual(inputNames(condition.inputs), ["region", "device", "segments"]);
  assert.deepEqual(hintsForInputs(condition.inputs), ["Sec-CH-UA-Mobile"]);
  assert.deepEqual(hintsForInputs(INPUT.viewport | INPUT.platform), [
    "Sec-CH-UA-Platform",
    "Sec-CH-Viewport-Width",
    "Viewport-Width",
  ]);
  assert.deepEqual(inputNames(0), []);
});

/** The glob semantics as a regular expression (what `PathGlob` must agree with). */
function globRegExp(glob: string): RegExp {
  const parts = glob.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join("(.*)")}$`, "s");
}

Deno.test("property: a path glob matches, and captures its first star, as the anchored greedy regular expression would", () => {
  const text = (chars: string[], maxLength: number) =>
    fc.array(fc.constantFrom(...chars), { maxLength }).map((list) => list.join(""));
  fc.assert(
    fc.property(text(["a", "b", "/", "*", "."], 8), text(["a", "b", "/", "."], 12), (glob, path) => {
      const match = globRegExp(glob).exec(path);
      const expected = match ? (match[1] ?? "") : null;
      assert.equal(new PathGlob(glob).splat(path), expected, `${glob} on ${path}`);
      assert.equal(new PathGlob(glob).test(path), match !== null);
    }),
    { numRuns: 5000 },
  );
});

Deno.test("path globs take linear time: a long path against many stars is answered at once, not after minutes", () => {
  // The regular expression this replaced took ~19 s for 8 000 characters and three stars.
  const path = "/a".repeat(50_000);
  assert.equal(new PathGlob("/*/*/*/*/*/reviews").test(path), false);
  // Greedy first star: it takes all but the last four segments.
  assert.equal(new PathGlob("/*/*/*/*/*/a").splat(path), path.slice(1, -10));
});

Deno.test("conditionMismatch names the first field that fails, in the order the condition is checked", () => {
  const cases: [ConditionSpec, string | undefined][] = [
    [{}, undefined],
    [{ region: ["EU"], device: ["mobile"] }, undefined],
    [{ region: ["US"] }, "region"],
    [{ country: ["FR"] }, "country"],
    [{ device: ["desktop"] }, "device"],
    [{ network: ["fast"] }, "network"],
    [{ platform: ["iOS"] }, "platform"],
    [{ loggedIn: false }, "loggedIn"],
    [{ segment: ["new"] }, "segment"],
    [{ path: "/cart" }, "path"],
    [{ variant: { hero: ["b"] } }, "variant"],
    [{ variant: { other: ["x"] } }, "variant"],
    // Region is checked before device.
    [{ device: ["desktop"], region: ["US"] }, "region"],
  ];
  for (const [spec, field] of cases) {
    const condition = compileCondition(spec);
    assert.equal(conditionMismatch(condition, context), field, JSON.stringify(spec));
    assert.equal(matchesCondition(condition, context), field === undefined, JSON.stringify(spec));
  }
  assert.equal(conditionMismatch(undefined, context), undefined);
});
