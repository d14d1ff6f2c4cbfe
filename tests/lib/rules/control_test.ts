import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compareOrderKeys,
  mergeRulesEvents,
  resolveRules,
  type RulesControlEvent,
} from "../../../lib/rules/control.ts";
import type { ParsedRuleSet } from "../../../lib/rules/schema.ts";
import type { RulesControlValue } from "../../../lib/data/store.ts";

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

const keyOf = (event: RulesControlEvent) =>
  [
    event.at ?? null,
    event.kind === "rules" ? (event.canary !== undefined && event.at !== undefined ? 0 : 1) : event.kind ===
        "rules_promote"
      ? 2
      : 3,
    event.version,
  ] as const;
const byTime = (a: RulesControlEvent, b: RulesControlEvent) => compareOrderKeys([...keyOf(a)], [...keyOf(b)]);

Deno.test("merging one batch is independent of the order and duplication of its events", () => {
  fc.assert(
    fc.property(
      fc.array(eventArb, { minLength: 1, maxLength: 25 }).chain((events) =>
        fc.record({
          events: fc.constant(events),
          shuffled: fc.shuffledSubarray([...events, ...events.slice(0, 5)], {
            minLength: events.length + Math.min(5, events.length),
          }),
          keep: fc.integer({ min: 1, max: 6 }),
        })
      ),
      ({ events, shuffled, keep }) => {
        const once = mergeAll(events, keep);
        assert.deepEqual(mergeAll(shuffled, keep), once);
        // The `keep` highest stored versions, plus at most the pinned active and canary.
        assert.ok(once.entries.filter((entry) => entry.stored).length <= keep + 2);
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("events delivered in time order converge whatever the batching, re-delivery and order within a batch", () => {
  fc.assert(
    fc.property(
      fc.array(eventArb, { minLength: 1, maxLength: 25 }).chain((events) =>
        fc.record({
          events: fc.constant(events),
          cuts: fc.array(fc.integer({ min: 0, max: events.length }), { maxLength: 6 }),
          redeliver: fc.array(fc.tuple(fc.nat(events.length - 1), fc.nat(events.length)), { maxLength: 6 }),
          keep: fc.integer({ min: 1, max: 6 }),
          seed: fc.integer(),
        })
      ),
      ({ events, cuts, redeliver, keep, seed }) => {
        const sorted = [...events].sort(byTime);
        const bounds = [...new Set([0, ...cuts, sorted.length])].sort((a, b) => a - b);
        const batches = bounds.slice(1).map((end, i) => sorted.slice(bounds[i], end));
        // An event already delivered comes again in a later batch.
        for (const [index, batch] of redeliver) {
          const at = sorted.indexOf(sorted[index]!);
          const target = batches.findIndex((_, i) => bounds[i + 1]! > at);
          batches[Math.min(batches.length - 1, Math.max(target, target + (batch % 3)))]!.push(sorted[index]!);
        }
        let control = EMPTY;
        let turn = seed;
        for (const batch of batches) {
          // Reversed or rotated: the order inside a batch does not matter.
          const inBatch = turn++ % 2 === 0 ? [...batch].reverse() : batch;
          const merged = mergeRulesEvents(control, inBatch, { keep });
          const { active, canary } = resolveRules(merged.control);
          for (const pinned of [active?.version, canary?.version]) {
            if (pinned !== undefined) assert.ok(!merged.drop.includes(pinned), `pinned ${pinned} dropped`);
          }
          control = merged.control;
        }
        assert.deepEqual(control, mergeAll(events, keep));
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("a push after a rollback keeps the rolled-back-to version: keep 3, v1..v3, rollback to v1, v4 as a 5% canary", () => {
  const events: RulesControlEvent[] = [
    { kind: "rules", version: 1, rules: set(1), at: 1 },
    { kind: "rules", version: 2, rules: set(2), at: 2 },
    { kind: "rules", version: 3, rules: set(3), at: 3 },
    { kind: "rules_rollback", version: 1, at: 4 },
    { kind: "rules", version: 4, rules: set(4), at: 5, canary: 0.05 },
  ];
  let control = EMPTY;
  const dropped: number[] = [];
  for (const event of events) {
    const merged = mergeRulesEvents(control, [event], { keep: 3 });
    dropped.push(...merged.drop);
    control = merged.control;
  }
  assert.deepEqual(resolveRules(control), {
    active: { version: 1, key: [4, 3, 1] },
    canary: { version: 4, share: 0.05 },
  });
  assert.deepEqual(dropped, [], "the active v1 is kept beside the 3 highest versions");
  assert.deepEqual(control.entries.filter((entry) => entry.stored).map((entry) => entry.version), [
    4,
    3,
    2,
    1,
  ]);
  assert.deepEqual(mergeAll([...events].reverse(), 3), control, "one batch, any order: the same");
  // Promoting the canary unpins v1, which the next merge then lets go.
  const promoted = mergeRulesEvents(control, [{ kind: "rules_promote", version: 4, at: 6 }], { keep: 3 });
  assert.deepEqual(promoted.drop, [1]);
  assert.equal(resolveRules(promoted.control).active?.version, 4);
});

const historyArb = fc.record({
  keep: fc.integer({ min: 1, max: 5 }),
  before: fc.integer({ min: 1, max: 8 }),
  back: fc.nat(7),
  pushes: fc.array(fc.option(fc.constantFrom(0.05, 0.5), { nil: undefined }), { minLength: 1, maxLength: 8 }),
  chunk: fc.integer({ min: 1, max: 4 }),
});

Deno.test("rollback then pushes: the rolled-back-to version stays active until a full push, and stays kept while pinned", () => {
  fc.assert(
    fc.property(historyArb, ({ keep, before, back, pushes, chunk }) => {
      const events: RulesControlEvent[] = [];
      let at = 0;
      for (let version = 1; version <= before; version++) {
        events.push({ kind: "rules", version, rules: set(version), at: ++at });
      }
      // Roll back to a version that is still kept.
      const target = Math.max(1, before - (back % keep));
      events.push({ kind: "rules_rollback", version: target, at: ++at });
      let active = target;
      let canary: { version: number; share: number } | undefined;
      pushes.forEach((share, index) => {
        const version = before + 1 + index;
        if (share === undefined) {
          events.push({ kind: "rules", version, rules: set(version), at: ++at });
          active = version;
          canary = undefined;
        } else {
          events.push({ kind: "rules", version, rules: set(version), at: ++at, canary: share });
          canary = { version, share };
        }
      });
      const control = mergeAll(events, keep, chunk);
      const resolved = resolveRules(control);
      assert.equal(resolved.active?.version, active);
      assert.deepEqual(resolved.canary, canary);
      const stored = control.entries.filter((entry) => entry.stored).map((entry) => entry.version);
      assert.ok(stored.includes(active));
      if (canary) assert.ok(stored.includes(canary.version));
      assert.ok(stored.length <= keep + 2);
      assert.deepEqual(mergeAll(fcShuffle(events), keep), control, "one batch in any order");
    }),
    { numRuns: 500 },
  );
});

function fcShuffle<T>(items: readonly T[]): T[] {
  // A fixed permutation (interleaved from both ends) is enough: the batch is sorted by time.
  const out: T[] = [];
  for (let i = 0, j = items.length - 1; i <= j; i++, j--) {
    out.push(items[j]!);
    if (i !== j) out.push(items[i]!);
  }
  return out;
}
