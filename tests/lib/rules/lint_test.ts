import assert from "node:assert/strict";
import { loadRulesFile, parseRules } from "../../../lib/rules/compile.ts";
import { type LintFinding, lintRules } from "../../../lib/rules/lint.ts";
import { globCovers, globsDisjoint } from "../../../lib/rules/glob_relations.ts";

const fixture = (name: string) =>
  loadRulesFile(new URL(`../../fixtures/rules/lint/${name}`, import.meta.url).pathname, Deno.readTextFile);
const found = (findings: LintFinding[]) => findings.map((f) => `${f.severity} ${f.code} ${f.path}`);

Deno.test("lint finds routes and image rules an earlier one always answers for, and nothing it cannot prove", async () => {
  const findings = lintRules(await fixture("unreachable_routes.json"));
  assert.deepEqual(found(findings), [
    "warning unreachable-route routes.1",
    "warning unreachable-route routes.7",
    "warning edge-path routes.8",
    "warning unreachable-image images.1",
  ]);
  assert.match(findings[0]!.message, /routes\.0 \("\/shop\/\*"\) answers every path it matches/);
  // Not reported: "/p/1" after "/p/*" whose target takes the splat (a filled-in target can be
  // refused), "/img/*.png" after a route with a `when`.
});

Deno.test("lint finds empty variations, empty and overlapping namespaces, and references never served", async () => {
  const findings = lintRules(await fixture("experiments.json"));
  assert.deepEqual(found(findings), [
    "warning reference-never-served routes.1.experiment",
    "warning reference-never-served routes.2.when.variant.retired",
    "warning empty-variation experiments.0.weights",
    "warning empty-variation experiments.1.weights",
    "warning empty-variation experiments.2.coverage",
    "warning namespace-overlap experiments.4.namespace",
    "warning empty-namespace experiments.6.namespace",
    "note unreferenced-experiment experiments.0",
    "note unreferenced-experiment experiments.1",
    "note unreferenced-experiment experiments.2",
    "note unreferenced-experiment experiments.6",
  ]);
  const byPath = new Map(findings.map((f) => [`${f.code} ${f.path}`, f.message]));
  assert.match(
    byPath.get("empty-variation experiments.0.weights")!,
    /"b" of experiment "hero" gets no visitor: its weight is 0/,
  );
  assert.match(byPath.get("empty-variation experiments.1.weights")!, /"rare" .* holds no hash value/);
  assert.match(
    byPath.get("namespace-overlap experiments.4.namespace")!,
    /visitors in \[0\.5, 0\.6\) can be in both/,
  );
  assert.match(byPath.get("reference-never-served routes.1.experiment")!, /never on "\/cart"/);
});

Deno.test("lint finds flag rules never reached, unused flag variants and slots no page can match", async () => {
  const findings = lintRules(await fixture("flags_slots.json"));
  assert.deepEqual(found(findings), [
    "warning unreachable-flag-rule flags.0.rules.2",
    "warning unused-flag-variant flags.0.variants.spring",
    "warning unreachable-flag-rule flags.1.rules.0.rollout",
    "warning unreachable-slot slots.1",
    "warning unreachable-slot slots.4",
    "warning edge-path slots.5",
  ]);
});

Deno.test("the demo rules and the docs' example lint without warnings", async () => {
  const demo = await loadRulesFile("tools/demo_rules.json", Deno.readTextFile);
  assert.deepEqual(lintRules(demo).filter((f) => f.severity === "warning"), []);
  const docs = await Deno.readTextFile("docs/rules.md");
  const example = JSON.parse(
    docs.slice(docs.indexOf("```json\n") + 8, docs.indexOf("\n```", docs.indexOf("```json\n"))),
  );
  assert.deepEqual(lintRules(parseRules(example)).filter((f) => f.severity === "warning"), []);
});

Deno.test("globCovers and globsDisjoint only claim what holds for every path", () => {
  assert.equal(globCovers("*", "/a/*"), true);
  assert.equal(globCovers("/a/*", "/a/b/*"), true);
  assert.equal(globCovers("/a/*", "/a/b"), true);
  assert.equal(globCovers("/*.json", "/api/*.json"), true);
  assert.equal(globCovers("/a/*", "/ab/*"), false);
  assert.equal(globCovers("/a/*/c", "/a/b/c"), true);
  // Multi-star outer globs are only compared with literals: unproven otherwise.
  assert.equal(globCovers("/a/*/c/*", "/a/b/c/*"), false);
  assert.equal(globsDisjoint("/cart", "/basket/*"), true);
  assert.equal(globsDisjoint("/a/*.png", "/a/*.jpg"), true);
  assert.equal(globsDisjoint("/a/*", "/*/b"), false);
  assert.equal(globsDisjoint("*", "/x"), false);
});
