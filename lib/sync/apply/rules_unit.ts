/**
 * @module
 * The unit that merges rule set and rule control events into the stored rule versions.
 */
import { compareRulesEvents, mergeRulesEvents, type RulesControlEvent } from "../../rules/control.ts";
import { keys, parseStored, RulesControlValue } from "../../data/store.ts";
import { emptyPlan, type Mutation, type Unit } from "./unit.ts";

/** Rule set events merged per commit: each may store a set of up to 48 KiB. */
const RULE_SETS_PER_COMMIT = 6;

/**
 * Rule sets and the control record, merged in chunks that fit one commit. Cut in time order, as
 * the merge takes a batch, chunking changes nothing but the number of commits.
 */
export function rulesUnit(
  events: readonly RulesControlEvent[],
  keep: number,
  options: { skip?: (control: RulesControlValue) => boolean } = {},
): Unit {
  // In time order, as the merge takes a batch: split by version instead, a push in an early
  // commit could push out a version that a rollback in a later commit makes active again.
  let remaining = [...events].sort(compareRulesEvents);
  let counted = false;
  return {
    keys: [keys.rulesControl()],
    attempts: 0,
    step(read) {
      const stored = parseStored(RulesControlValue, read(keys.rulesControl()).value) ?? { entries: [] };
      if (options.skip?.(stored)) return { plan: emptyPlan(remaining.length) };
      const cut = chunkEnd(remaining);
      const merged = mergeRulesEvents(stored, remaining.slice(0, cut), { keep });
      const rest = remaining.slice(cut);
      // Counted once, as a merge of the whole batch would count (a set pushed out again is stale).
      const counts = counted
        ? { applied: 0, stale: 0 }
        : rest.length
        ? mergeRulesEvents(stored, remaining, { keep })
        : merged;
      const mutations: Mutation[] = [];
      for (const set of merged.put) mutations.push({ key: keys.ruleSet(set.version), value: set });
      for (const version of merged.drop) mutations.push({ key: keys.ruleSet(version) });
      if (JSON.stringify(merged.control) !== JSON.stringify(stored)) {
        mutations.push({ key: keys.rulesControl(), value: merged.control });
      }
      const committed = () => {
        remaining = rest;
        counted = true;
      };
      const { applied, stale } = counts;
      return { plan: { mutations, applied, stale, users: [], again: rest.length > 0, committed } };
    },
  };
}

/** How many of `events` (in time order) fit in one commit. */
function chunkEnd(events: readonly RulesControlEvent[]): number {
  let sets = 0;
  let cut = 0;
  while (cut < events.length) {
    if (events[cut]!.kind === "rules" && ++sets > RULE_SETS_PER_COMMIT) break;
    cut++;
  }
  return cut;
}
