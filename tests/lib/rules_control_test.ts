import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compareOrderKeys,
  mergeRulesEvents,
  resolveRules,
  type RulesControlEvent,
} from "../../lib/rules_control.ts";
import type { ParsedRuleSet } from "../../lib/rules.ts";
import type { RulesControlValue } from "../../lib/store.ts";

const set = (version: number) => ({ version }) as unknown as ParsedRuleSet;
const EMPTY: RulesControlValue = { entries: [] };

function mergeAll(events: RulesControlEvent[], keep: number, chunk = events.length): RulesControlValue {
  let control = EMPTY;
  for (let i = 0; i < events.length; i += Math.max(1, chunk)) {
    control = mergeRulesEvents(control, events.slice(i, i + Math.max(1, chunk)), { keep }).control;
  }
  return control;
}

Deno.test("order keys: untimed first, then at, then rank (rollback beats promote beats rules beats canary), then version", () => {
  assert.ok(compareOrderKeys([null, 1, 9], [0, 0, 1]) < 0);
  assert.ok(compareOrderKeys([5, 3, 1], [5, 2, 9]) > 0);
  assert.ok(compareOrderKeys([5, 1, 2], [5, 1, 3]) < 0);
  assert.ok(compareOrderKeys(null, [null, 1, 1]) < 0);
  assert.equal(compareOrderKeys([1, 1, 1], [1, 1, 1]), 0);
});

Deno.test("resolving: a later rollback ends any canary; a later activation ends only a canary of the same or an older version", () => {
  const base: RulesControlEvent[] = [
    { kind: "rules", version: 10, rules: set(10), at: 1 },
    { kind: "rules", version: 12, rules: set(12), at: 2, canary: 0.1 },
  ];
  assert.deepEqual(resolveRules(mergeAll(base, 10)), {
    active: { version: 10, key: [1, 1, 10] },
    canary: { version: 12, share: 0.1 },
  });
  const olderFull = mergeAll([...base, { kind: "rules", version: 11, rules: set(11), at: 3 }], 10);
  assert.deepEqual(resolveRules(olderFull).canary, { version: 12, share: 0.1 });
  const rollback = mergeAll([...base, { kind: "rules_rollback", version: 10, at: 3 }], 10);
  assert.equal(resolveRules(rollback).canary, undefined);
  const earlierRollback = mergeAll([...base, { kind: "rules_rollback", version: 10, at: 1 }], 10);
  assert.deepEqual(resolveRules(earlierRollback).canary, { version: 12, share: 0.1 });
});

const eventArb: fc.Arbitrary<RulesControlEvent> = fc.oneof(
  fc.tuple(
    fc.integer({ min: 1, max: 12 }),
    fc.option(fc.constantFrom(0.05, 0.3), { nil: undefined }),
    fc.boolean(),
  )
    .map(([version, canary, timed]): RulesControlEvent => ({
      kind: "rules",
      version,
      rules: set(version),
      ...(timed || canary !== undefined ? { at: version * 10 } : {}),
      ...(canary === undefined ? {} : { canary }),
    })),
  fc.tuple(
    fc.constantFrom("rules_promote" as const, "rules_rollback" as const),
    fc.integer({ min: 1, max: 13 }),
    fc.nat(130),
  )
    .map(([kind, version, at]): RulesControlEvent => ({ kind, version, at })),
);

Deno.test("merging is independent of order, duplication and chunking", () => {
  fc.assert(
    fc.property(
      fc.array(eventArb, { minLength: 1, maxLength: 25 }).chain((events) =>
        fc.record({
          events: fc.constant(events),
          shuffled: fc.shuffledSubarray([...events, ...events.slice(0, 5)], {
            minLength: events.length + Math.min(5, events.length),
          }),
          keep: fc.integer({ min: 1, max: 6 }),
          chunk: fc.integer({ min: 1, max: 5 }),
        })
      ),
      ({ events, shuffled, keep, chunk }) => {
        const inOrder = mergeAll(events, keep, 1);
        assert.deepEqual(mergeAll(shuffled, keep, chunk), inOrder);
        assert.ok(inOrder.entries.filter((entry) => entry.stored).length <= keep);
      },
    ),
    { numRuns: 1000 },
  );
});
