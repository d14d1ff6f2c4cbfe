/**
 * @module
 * Applies validated sync events to Deno KV so that every replica converges whatever the order
 * and multiplicity of delivery: views are written blind, one key each, and merge as a set at
 * read time (`lib/sync/views.ts`), cart/profile/related are last writer wins by
 * `version`, rule sets are kept per version with a control record merged by event order keys
 * (canary, promote, rollback; see `lib/rules/control.ts`), sessions newest `at` wins, erasure
 * filters, leaves a tombstone and compacts the user's views. The batch is cut into units
 * (`apply/plan.ts`) that are read, decided and committed in waves (`apply/commit.ts`).
 */
import { DEFAULT_RULES_KEEP, type RulesControlEvent } from "../rules/control.ts";
import type { Config } from "../app/config.ts";
import type { ParsedRuleSet } from "../rules/rules.ts";
import { compactViews } from "./views.ts";
import { MAX_EVENT_BYTES, parseSyncEvents, storedBytes, type SyncEvent } from "./schema.ts";
import { emptyOutcome } from "./apply/unit.ts";
import { planUnits } from "./apply/plan.ts";
import { runUnits } from "./apply/commit.ts";
import { rulesUnit } from "./apply/rules_unit.ts";

const DAY_MS = 86_400_000;
const DEFAULT_MAX_ATTEMPTS = 20;

/** Options for {@linkcode applyEvents}. */
export interface ApplyOptions {
  /** The current time, epoch ms: turns `expiresAt` into `expireIn` and prunes expired index entries. */
  now: number;
  /** How many recent views to keep per user. */
  recentViewsMax: number;
  viewTtlMs: number;
  cartTtlMs: number;
  profileTtlMs: number;
  tombstoneTtlMs: number;
  /** Called once after the batch with every user whose stored data changed (e.g. to drop cache entries). */
  onUsersChanged?: (userIds: string[]) => void;
  /** How often a conflicting unit is re-read and retried before giving up (default 20). */
  maxAttempts?: number;
  /** How many rule set versions are kept (`RULES_KEEP`, default 10); the same on every instance. */
  rulesKeep?: number;
}

/** The outcome of applying a batch. */
export interface ApplyResult {
  /**
   * Events written. A `view` is written blind, so one delivered again (under a new webhook-id)
   * is written again, harmlessly, and counted here.
   */
  applied: number;
  /**
   * Events that changed nothing: older or equal versions, views that cannot change what reads
   * return (not the newest of their item in the batch, expired), erased users' old events.
   */
  stale: number;
}

/**
 * Builds {@linkcode ApplyOptions} from the service configuration.
 *
 * @param config the configuration (views, TTLs, kept rules versions)
 * @param now the current time, epoch ms
 * @param options extra options such as `onUsersChanged`
 * @returns the apply options
 */
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
 * Applies a validated batch. The result does not depend on the order of `events`, on
 * duplicates, or on how a stream is split into batches, provided each `version` of a key
 * always carries the same content and `at` grows with `version` (see docs/sync.md).
 *
 * @param kv the store
 * @param events validated events (from `parseSyncEvents`)
 * @param options clock, limits and TTLs; `onUsersChanged` is called even when the batch throws, with
 *   the users of the units that did commit
 * @returns how many events were applied and how many were stale
 * @throws {ApplyConflictError} when a key keeps changing under concurrent writers (units that
 *   committed before stay committed)
 * @example
 * ```ts
 * const result = await applyEvents(kv, parseSyncPayload(json), applyOptionsFromConfig(config, Date.now()));
 * ```
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

/**
 * Validates and applies events fetched from the backend by read-through, through the same
 * path as pushed events, so a read-through can never regress what a push stored.
 *
 * @param kv the store
 * @param events events of the wire contract, as received from the backend
 * @param options clock, limits and TTLs
 * @returns how many events were applied and how many were stale
 * @throws {SyncPayloadError} when any event is invalid (nothing is applied)
 * @throws {ApplyConflictError} when a key keeps changing under concurrent writers
 */
export async function applyBackendEvents(
  kv: Deno.Kv,
  events: readonly unknown[],
  options: ApplyOptions,
): Promise<ApplyResult> {
  return await applyEvents(kv, parseSyncEvents(events), options);
}

/** What {@linkcode storeStartupRules} did. */
export type StartupRulesOutcome =
  /** Stored as a kept version, as if pushed without `at`. */
  | "stored"
  /** KV already keeps this version or a newer one: nothing written. */
  | "kept"
  /** Larger than a pushed rule set may be: not storable in KV. */
  | "too-large";

/** Options for {@linkcode storeStartupRules}. */
export interface StartupRulesOptions {
  /** How many rule set versions are kept (`RULES_KEEP`); the same on every instance. */
  rulesKeep?: number;
  /** How often a conflicting commit is re-read and retried (default 20). */
  maxAttempts?: number;
}

/**
 * Stores the rule set loaded at start-up (`RULES_PATH`) as a kept version, so that a rollback
 * to it (after a canary or a push) finds it like any pushed version. It is merged exactly as a
 * `rules` event without `at` for its version would be, so it never outranks a timed activation
 * or a higher version, and instances starting together converge; nothing is written when KV
 * already keeps that version (whatever its content: the first stored wins) or a newer one.
 *
 * @param kv the store
 * @param rules the start-up rule set, validated
 * @param options kept versions and retries
 * @returns whether it was stored, already kept (or superseded), or too large to store
 * @throws {ApplyConflictError} when the control record keeps changing under concurrent writers
 */
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
