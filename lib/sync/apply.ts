/**
 * @module
 * Applies validated sync events to Deno KV so that every replica converges whatever the order and
 * multiplicity of delivery: cut into units (`apply/plan.ts`), committed in waves (`apply/commit.ts`).
 */
import { DEFAULT_RULES_KEEP, type RulesControlEvent } from "../rules/control.ts";
import type { Config } from "../app/config.ts";
import type { ParsedRuleSet } from "../rules/schema.ts";
import { compactViews } from "./views.ts";
import { MAX_EVENT_BYTES, parseSyncEvents, storedBytes, type SyncEvent } from "./schema.ts";
import { type ApplyOptions, emptyOutcome } from "./apply/unit.ts";
import { planUnits } from "./apply/plan.ts";
import { runUnits } from "./apply/commit.ts";
import { rulesUnit } from "./apply/rules_unit.ts";

const DAY_MS = 86_400_000;
const DEFAULT_MAX_ATTEMPTS = 20;

export interface ApplyResult {
  /** Events written (a view delivered again is written again, blind, and counted). */
  applied: number;
  /** Events that changed nothing: older versions, views reads would not return, erased users' old events. */
  stale: number;
}

/** Builds {@linkcode ApplyOptions} from the service configuration and the current time. */
export function applyOptionsFromConfig(
  config:
    & Pick<Config, "recentViewsMax" | "viewTtlDays" | "cartTtlDays" | "profileTtlDays" | "tombstoneTtlDays">
    & Partial<Pick<Config, "rulesKeep">>,
  now: number,
  options: Pick<ApplyOptions, "onUsersChanged" | "maxAttempts"> = {},
): ApplyOptions {
  return {
    now,
    recentViewsMax: config.recentViewsMax,
    viewTtlMs: config.viewTtlDays * DAY_MS,
    cartTtlMs: config.cartTtlDays * DAY_MS,
    profileTtlMs: config.profileTtlDays * DAY_MS,
    tombstoneTtlMs: config.tombstoneTtlDays * DAY_MS,
    rulesKeep: config.rulesKeep ?? DEFAULT_RULES_KEEP,
    ...options,
  };
}

/**
 * Applies a validated batch. The result does not depend on order, duplicates or batching, provided
 * each `version` of a key always carries the same content and `at` grows with it (docs/sync.md).
 * @throws {ApplyConflictError} when a key keeps changing under concurrent writers (what committed stays)
 */
export async function applyEvents(
  kv: Deno.Kv,
  events: readonly SyncEvent[],
  options: ApplyOptions,
): Promise<ApplyResult> {
  const units = await planUnits(events, options);
  const outcome = emptyOutcome();
  try {
    await runUnits(kv, units, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, outcome);
    // After every tombstone of the batch has committed, so that erased views go too.
    if (outcome.compact.size) await compactViews(kv, outcome.compact, options);
  } finally {
    // Also when the batch fails part-way: what did commit must not be served from a stale cache.
    if (outcome.users.size && options.onUsersChanged) options.onUsersChanged([...outcome.users].sort());
  }
  return { applied: outcome.applied, stale: outcome.stale };
}

/** Validates (all or nothing) and applies read-through events as pushed ones, so they never regress a push. */
export async function applyBackendEvents(
  kv: Deno.Kv,
  events: readonly unknown[],
  options: ApplyOptions,
): Promise<ApplyResult> {
  return await applyEvents(kv, parseSyncEvents(events), options);
}

/** What {@linkcode storeStartupRules} did: stored, already kept (or a newer version), or too large. */
export type StartupRulesOutcome = "stored" | "kept" | "too-large";

export type StartupRulesOptions = Pick<ApplyOptions, "rulesKeep" | "maxAttempts">;

/** Keeps the `RULES_PATH` rule set for rollbacks, merged as a `rules` event without `at` (so it outranks nothing). */
export async function storeStartupRules(
  kv: Deno.Kv,
  rules: ParsedRuleSet,
  options: StartupRulesOptions = {},
): Promise<StartupRulesOutcome> {
  const event: RulesControlEvent = { kind: "rules", version: rules.version, rules };
  if (storedBytes({ version: rules.version, rules }) > MAX_EVENT_BYTES) return "too-large";
  const outcome = emptyOutcome();
  const unit = rulesUnit([event], options.rulesKeep ?? DEFAULT_RULES_KEEP, {
    skip: (control) => control.entries.some((entry) => entry.stored && entry.version >= rules.version),
  });
  await runUnits(kv, [unit], options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, outcome);
  return outcome.applied > 0 ? "stored" : "kept";
}
