import assert from "node:assert/strict";
import { loadRulesFile } from "../../../lib/rules/compile.ts";
import { diffRules, formatRulesDiff } from "../../../lib/rules/diff.ts";

const load = async (name: string) =>
  (await loadRulesFile(
    new URL(`../../fixtures/rules/diff/${name}`, import.meta.url).pathname,
    Deno.readTextFile,
  ))
    .source;

Deno.test("diffRules lists what a push adds, removes and changes, field by field", async () => {
  const diff = diffRules(await load("old.json"), await load("new.json"));
  assert.deepEqual(diff.version, { old: 12, new: 13, change: "up" });
  assert.deepEqual(diff.settings, [{ field: "htmlContext", old: false, new: true }]);
  assert.deepEqual(diff.regions, {
    added: ["APAC"],
    removed: [],
    changed: [{ region: "EU", added: ["ES"], removed: ["GB"] }],
  });
  assert.deepEqual(diff.experiments.added, [{ id: "pricing", index: 2 }]);
  assert.deepEqual(diff.experiments.removed, [{ id: "legacy", index: 2 }]);
  const hero = diff.experiments.changed.find((c) => c.id === "hero")!;
  assert.deepEqual(hero.fields.map((f) => f.field), ["variations", "weights"]);
  assert.ok(hero.notes.includes('Visitors assigned "b" are bucketed again'));
  assert.deepEqual(diff.experiments.changed.find((c) => c.id === "checkout")!.fields, [
    { field: "enabled", old: true, new: false },
  ]);
  assert.deepEqual(diff.flags.changed.map((c) => c.id), ["new-search"]);
  assert.deepEqual(diff.routes.added, [{ id: "/deals", index: 2 }]);
  assert.deepEqual(diff.routes.removed, [{ id: "/home", index: 2 }]);
  assert.deepEqual(diff.routes.changed.map((c) => [c.id, c.fields.map((f) => f.field)]), [["/old-sale", [
    "redirect",
  ]]]);
  assert.equal(diff.routes.reordered, true);
  assert.deepEqual(diff.slots.changed.map((c) => c.id), ["promo"]);
  assert.equal(diff.same, false);
  const text = formatRulesDiff(diff);
  assert.match(text, /^version 12 → 13\n/);
  assert.match(text, /\n- experiment legacy \(was #2\)\n/);
  assert.match(text, /\n~ routes reordered \(the first match wins\)\n/);
});

Deno.test("diffRules of a set with itself changes nothing; the same version with other content is flagged", async () => {
  const old = await load("old.json");
  const same = diffRules(old, old);
  assert.equal(same.same, true);
  assert.equal(formatRulesDiff(same), "version 12 → 12\nNo change besides the version\n");
  const next = await load("new.json");
  const reused = formatRulesDiff(diffRules(old, { ...next, version: 12 }));
  assert.match(reused, /keeps the rule set it has; give the push a new version/);
});
