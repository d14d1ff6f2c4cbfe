import assert from "node:assert/strict";
import { isCanaryVisitor, RulesStore } from "../../../lib/rules/store.ts";
import { parseRules } from "../../../lib/rules/compile.ts";

Deno.test("the canary share holds within tolerance over 10,000 visitors and is stable per visitor", () => {
  const ids = Array.from({ length: 10_000 }, (_, i) => `anon-${i.toString(36)}-${(i * 7919) % 10007}`);
  for (const share of [0.05, 0.2, 0.5]) {
    const count = ids.filter((id) => isCanaryVisitor(id, { version: 12, share })).length;
    assert.ok(Math.abs(count / ids.length - share) < 0.01, `share ${share}: ${count} of 10,000`);
  }
  const store = new RulesStore(parseRules({ version: 11 }));
  store.set({ active: store.current, canary: { rules: parseRules({ version: 12 }), share: 0.05 } });
  const first = ids.map((id) => store.rulesFor(id).version);
  assert.deepEqual(
    ids.map((id) => store.rulesFor(id).version),
    first,
    "the same visitor always gets the same rules",
  );
  const inCanary = ids.filter((_, i) => first[i] === 12);
  assert.ok(Math.abs(inCanary.length - 500) < 100);
  // Widening the canary keeps everyone who was in it.
  store.set({ active: store.current, canary: { rules: store.canary!.rules, share: 0.2 } });
  assert.ok(inCanary.every((id) => store.rulesFor(id).version === 12));
  // Another canary version draws other visitors.
  const other = ids.filter((id) => isCanaryVisitor(id, { version: 13, share: 0.05 }));
  const overlap = other.filter((id) => isCanaryVisitor(id, { version: 12, share: 0.05 })).length;
  assert.ok(overlap < 100, `overlap ${overlap}`);
});

Deno.test("onChange fires for a new active version and for canary changes; current stays the active rules", () => {
  const store = new RulesStore(parseRules({ version: 1 }));
  const seen: string[] = [];
  store.onChange((rules, state) => seen.push(`${rules.version}/${state.canary?.rules.version ?? "-"}`));
  const canary = { rules: parseRules({ version: 2 }), share: 0.1 };
  assert.equal(store.set({ active: store.current, canary }), true);
  assert.equal(store.set({ active: store.current, canary }), false);
  assert.equal(store.current.version, 1);
  assert.equal(store.offer(parseRules({ version: 3 })), true);
  assert.equal(store.offer(parseRules({ version: 2 })), false);
  assert.deepEqual(seen, ["1/2", "3/2"]);
});
