/**
 * @module
 * Applies validated sync events to Deno KV so that every replica converges whatever the order
 * and multiplicity of delivery: views are written blind, one key each, and merge as a set at
 * read time (`lib/sync/views.ts`), cart/profile/related are last writer wins by
 * `version`, rule sets are kept per version with a control record merged by event order keys
 * (canary, promote, rollback; see `lib/rules/control.ts`), sessions newest `at` wins, erasure
 * filters, leaves a tombstone and compacts the user's views. Writes are grouped into atomic
 * commits within KV's limits, and every read key is re-checked by versionstamp at commit, so
 * instances applying concurrently retry instead of regressing a key.
 */
import type { z } from "zod";
import {
  compareRulesEvents,
  DEFAULT_RULES_KEEP,
  mergeRulesEvents,
  type RulesControlEvent,
} from "../rules/control.ts";
import type { Config } from "../app/config.ts";
import type { ParsedRuleSet } from "../rules/schema.ts";
import {
  CartValue,
  expireIn,
  getManyChunked,
  hashSessionId,
  keys,
  KV_COMMIT_LIMITS,
  kvKeyBytes,
  LegacyViewsValue,
  parseStored,
  ProfileValue,
  RelatedValue,
  RulesControlValue,
  SessionValue,
  TombstoneValue,
  UserSessionsValue,
} from "../data/store.ts";
import { compactViews, planViewWrites } from "./views.ts";
import {
  type CartEvent,
  type EraseEvent,
  MAX_EVENT_BYTES,
  parseSyncEvents,
  type ProfileEvent,
  type RelatedEvent,
  type SessionEndEvent,
  type SessionEvent,
  storedBytes,
  type SyncEvent,
  type ViewEvent,
} from "./schema.ts";

const DAY_MS = 86_400_000;
/** Sessions handled by one unit, so that its reads (and checks) stay far below 100. */
const SESSIONS_PER_UNIT = 40;
/** Session records an erasure ends per commit. */
const ERASE_SESSIONS_PER_COMMIT = 80;
/** Largest per-user session index; beyond it the earliest-expiring entries are dropped. */
const MAX_INDEXED_SESSIONS = 500;
const DEFAULT_MAX_ATTEMPTS = 20;
/**
 * Keys read together before deciding; their units are disjoint, so their plans can be split
 * over several atomic commits (each within the limits) and committed in parallel.
 */
const MAX_WAVE_KEYS = 2000;
/** Rule set events merged per commit: each may store a set of up to 48 KiB. */
const RULE_SETS_PER_COMMIT = 6;

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
  onApplied?: (userIds: string[]) => void;
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

/** A unit kept conflicting with concurrent writers; the batch may be retried as a whole. */
export class ApplyConflictError extends Error {
  constructor() {
    super("Sync apply kept conflicting with concurrent writers");
    this.name = "ApplyConflictError";
  }
}

/**
 * Builds {@linkcode ApplyOptions} from the service configuration.
 *
 * @param config the configuration (views, TTLs, kept rules versions)
 * @param now the current time, epoch ms
 * @param options extra options such as `onApplied`
 * @returns the apply options
 */
export function applyOptionsFromConfig(
  config:
    & Pick<Config, "recentViewsMax" | "viewTtlDays" | "cartTtlDays" | "profileTtlDays" | "tombstoneTtlDays">
    & Partial<Pick<Config, "rulesKeep">>,
  now: number,
  options: Pick<ApplyOptions, "onApplied" | "maxAttempts"> = {},
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
 * @param options clock, limits and TTLs; `onApplied` is called even when the batch throws, with
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
  const outcome: Outcome = { applied: 0, stale: 0, users: new Set(), compact: new Map() };
  try {
    await runUnits(kv, units, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, outcome);
    // After every tombstone of the batch has committed, so that erased views go too.
    if (outcome.compact.size) await compactViews(kv, outcome.compact, options);
  } finally {
    // Also when the batch fails part-way: what did commit must not be served from a stale cache.
    if (outcome.users.size && options.onApplied) options.onApplied([...outcome.users].sort());
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
  const outcome: Outcome = { applied: 0, stale: 0, users: new Set(), compact: new Map() };
  const unit = rulesUnit([event], options.rulesKeep ?? DEFAULT_RULES_KEEP, {
    skip: (control) => control.entries.some((entry) => entry.stored && entry.version >= rules.version),
  });
  await runUnits(kv, [unit], options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, outcome);
  return outcome.applied > 0 ? "stored" : "kept";
}

// --- units: one group of keys read, decided on and written together -------------------------

type Entry = Deno.KvEntryMaybe<unknown>;
type Read = (key: Deno.KvKey) => Entry;

interface Mutation {
  key: Deno.KvKey;
  /** `undefined` deletes the key. */
  value?: unknown;
  expireIn?: number;
}

interface Plan {
  mutations: Mutation[];
  applied: number;
  stale: number;
  users: string[];
  /** The unit has more to do after this plan is committed (a large erasure). */
  again?: boolean;
  /** Called once the plan is committed (or found to need no commit). */
  committed?: () => void;
  /**
   * An erased user whose stored views to compact after the batch, so that none at or before the
   * tombstone stays stored (see `lib/sync/views.ts`), with the `at` of the committed tombstone.
   */
  compact?: { userId: string; erasedAt: number };
}

type Step = { plan: Plan } | { needKeys: Deno.KvKey[] };

interface Unit {
  keys: Deno.KvKey[];
  /**
   * Keys assumed absent without reading them (an erasure tombstone is rare): the commit checks
   * that they still are, and after a failed commit they are read like the others.
   */
  assumedAbsent?: Deno.KvKey[];
  attempts: number;
  step(read: Read): Step;
}

function keyId(key: Deno.KvKey): string {
  return JSON.stringify(key);
}

function groupBy<T, K>(items: Iterable<T>, keyOf: (item: T) => K): Map<K, T[]> {
  const out = new Map<K, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const list = out.get(key);
    if (list) list.push(item);
    else out.set(key, [item]);
  }
  return out;
}

async function planUnits(events: readonly SyncEvent[], options: ApplyOptions): Promise<Unit[]> {
  const views: ViewEvent[] = [];
  const carts: CartEvent[] = [];
  const profiles: ProfileEvent[] = [];
  const erases: EraseEvent[] = [];
  const sessions: (SessionEvent & { hash: string })[] = [];
  const sessionEnds: (SessionEndEvent & { hash: string })[] = [];
  const related: RelatedEvent[] = [];
  const rules: RulesControlEvent[] = [];
  const hashes = new Map<string, Promise<string>>();
  const hashOf = (sessionId: string) => {
    let hash = hashes.get(sessionId);
    if (!hash) hashes.set(sessionId, hash = hashSessionId(sessionId));
    return hash;
  };
  for (const event of events) {
    switch (event.kind) {
      case "view":
        views.push(event);
        break;
      case "cart":
        carts.push(event);
        break;
      case "profile":
        profiles.push(event);
        break;
      case "erase":
        erases.push(event);
        break;
      case "session":
        sessions.push({ ...event, hash: await hashOf(event.sessionId) });
        break;
      case "session_end":
        sessionEnds.push({ ...event, hash: await hashOf(event.sessionId) });
        break;
      case "related":
        related.push(event);
        break;
      case "rules":
      case "rules_promote":
      case "rules_rollback":
        rules.push(event);
        break;
    }
  }
  const units: Unit[] = [];
  const userIds = new Set([...views, ...carts, ...profiles].map((event) => event.userId));
  const viewsBy = groupBy(views, (event) => event.userId);
  const cartsBy = groupBy(carts, (event) => event.userId);
  const profilesBy = groupBy(profiles, (event) => event.userId);
  const erasesBy = groupBy(erases, (event) => event.userId);
  for (const userId of userIds) {
    units.push(userDataUnit(userId, {
      views: viewsBy.get(userId) ?? [],
      carts: cartsBy.get(userId) ?? [],
      profiles: profilesBy.get(userId) ?? [],
      // The batch's own erasure of the user commits in a later wave (the units share the
      // tombstone key): its events at or before it are dropped now, so they are never readable.
      erasedAt: Math.max(...(erasesBy.get(userId) ?? []).map((event) => event.at)),
    }, options));
  }
  for (const [userId, list] of erasesBy) {
    units.push(eraseUnit(userId, list, options));
  }
  for (const [userId, list] of groupBy(sessions, (event) => event.userId)) {
    const bySession = [...groupBy(list, (event) => event.hash)];
    for (let i = 0; i < bySession.length; i += SESSIONS_PER_UNIT) {
      units.push(sessionUnit(userId, new Map(bySession.slice(i, i + SESSIONS_PER_UNIT)), options));
    }
  }
  for (const [hash, list] of groupBy(sessionEnds, (event) => event.hash)) {
    units.push(sessionEndUnit(hash, list, options));
  }
  for (const [itemId, list] of groupBy(related, (event) => event.itemId)) {
    units.push(versionedUnit(keys.related(itemId), list, RelatedValue, (event) => ({
      version: event.version,
      related: event.related,
    })));
  }
  if (rules.length) units.push(rulesUnit(rules, options.rulesKeep ?? DEFAULT_RULES_KEEP));
  return units;
}

/** Views, cart and profile of one user: each checked against the user's tombstone. */
function userDataUnit(
  userId: string,
  events: { views: ViewEvent[]; carts: CartEvent[]; profiles: ProfileEvent[]; erasedAt: number },
  options: ApplyOptions,
): Unit {
  // Views are written blind: only the tombstone is checked, assumed absent until a commit fails.
  const unitKeys: Deno.KvKey[] = [];
  if (events.carts.length) unitKeys.push(keys.cart(userId));
  if (events.profiles.length) unitKeys.push(keys.profile(userId));
  return {
    keys: unitKeys,
    assumedAbsent: [keys.erased(userId)],
    attempts: 0,
    step(read) {
      const erasedAt = Math.max(
        parseStored(TombstoneValue, read(keys.erased(userId)).value)?.at ?? -Infinity,
        events.erasedAt,
      );
      const plan: Plan = { mutations: [], applied: 0, stale: 0, users: [] };
      if (events.views.length) {
        // Not compacted here, so the writes stay blind: a read that finds more views stored than
        // it keeps has them compacted in the background (`lib/pipeline/context.ts`).
        const views = planViewWrites(userId, events.views, { ...options, erasedAt });
        plan.mutations.push(...views.mutations);
        plan.applied += views.applied;
        plan.stale += views.stale;
      }
      if (events.carts.length) {
        lastVersionWins(plan, keys.cart(userId), events.carts, erasedAt, CartValue, read, (event) => {
          const expiresAt = event.at + options.cartTtlMs;
          return {
            value: { version: event.version, at: event.at, items: event.items, expiresAt },
            expireIn: expireIn(expiresAt, options.now),
          };
        });
      }
      if (events.profiles.length) {
        lastVersionWins(
          plan,
          keys.profile(userId),
          events.profiles,
          erasedAt,
          ProfileValue,
          read,
          (event) => {
            const expiresAt = event.at + options.profileTtlMs;
            return {
              value: {
                version: event.version,
                at: event.at,
                segments: event.segments,
                attributes: event.attributes,
                expiresAt,
              },
              expireIn: expireIn(expiresAt, options.now),
            };
          },
        );
      }
      if (plan.mutations.length) plan.users.push(userId);
      return { plan };
    },
  };
}

function lastVersionWins<E extends { version: number; at?: number }, V extends { version: number }>(
  plan: Plan,
  key: Deno.KvKey,
  events: readonly E[],
  erasedAt: number,
  schema: z.ZodType<V>,
  read: Read,
  build: (event: E) => { value: V; expireIn?: number },
): void {
  let winner: E | undefined;
  for (const event of events) {
    if (event.at !== undefined && event.at <= erasedAt) continue;
    if (!winner || event.version > winner.version) winner = event;
  }
  const stored = parseStored(schema, read(key).value);
  if (!winner || (stored && stored.version >= winner.version)) {
    plan.stale += events.length;
    return;
  }
  plan.applied += 1;
  plan.stale += events.length - 1;
  plan.mutations.push({ key, ...build(winner) });
}

/** Related items: last writer wins by version, no user, no expiry. */
function versionedUnit<E extends { version: number }, V extends { version: number }>(
  key: Deno.KvKey,
  events: readonly E[],
  schema: z.ZodType<V>,
  build: (event: E) => V,
): Unit {
  return {
    keys: [key],
    attempts: 0,
    step(read) {
      const plan: Plan = { mutations: [], applied: 0, stale: 0, users: [] };
      lastVersionWins(plan, key, events, -Infinity, schema, read, (event) => ({ value: build(event) }));
      return { plan };
    },
  };
}

/**
 * Rule sets and the rule control record: merged in chunks of at most
 * {@linkcode RULE_SETS_PER_COMMIT} rule sets so that one commit stays within KV's size limit.
 * The chunks are cut in time order, the order in which the merge takes a batch, so chunking
 * changes nothing but the number of commits (a rule set that a later chunk pushes out again is
 * written and then deleted).
 */
function rulesUnit(
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
      if (options.skip?.(stored)) {
        return { plan: { mutations: [], applied: 0, stale: remaining.length, users: [] } };
      }
      let sets = 0;
      let cut = 0;
      while (cut < remaining.length) {
        const event = remaining[cut]!;
        if (event.kind === "rules" && ++sets > RULE_SETS_PER_COMMIT) break;
        cut++;
      }
      const merged = mergeRulesEvents(stored, remaining.slice(0, cut), { keep });
      const rest = remaining.slice(cut);
      // Counted once, as one merge of the whole batch counts: a rule set that a later commit of
      // the batch pushes out again is stale, as it is when the batch fits in one commit.
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
      return {
        plan: {
          mutations,
          applied: counts.applied,
          stale: counts.stale,
          users: [],
          again: rest.length > 0,
          committed: () => {
            remaining = rest;
            counted = true;
          },
        },
      };
    },
  };
}

/** Erasure of one user: filter stored data, end indexed sessions, raise the tombstone. */
function eraseUnit(userId: string, events: readonly EraseEvent[], options: ApplyOptions): Unit {
  const baseKeys = [
    keys.erased(userId),
    keys.legacyViews(userId),
    keys.cart(userId),
    keys.profile(userId),
    keys.userSessions(userId),
  ];
  const erasedAt = Math.max(...events.map((event) => event.at));
  // Sessions found newer than the erasure in an earlier pass; records only move forward, so
  // they need not be read again.
  const newer = new Set<string>();
  const unit: Unit = {
    keys: [...baseKeys],
    attempts: 0,
    step(read) {
      const readIds = new Set(unit.keys.map(keyId));
      unit.keys = [...baseKeys];
      const stored = parseStored(TombstoneValue, read(keys.erased(userId)).value);
      if (stored && stored.at >= erasedAt) {
        // Compacted anyway: a crash may have come between the tombstone and the compaction.
        const compact = { userId, erasedAt: stored.at };
        return { plan: { mutations: [], applied: 0, stale: events.length, users: [], compact } };
      }
      const storedIndex = parseStored(UserSessionsValue, read(keys.userSessions(userId)).value)?.sessions ??
        [];
      const isRead = (hash: string) => readIds.has(keyId(keys.session(hash)));
      const candidates = storedIndex.filter((entry) => !newer.has(entry.hash));
      const readNow = candidates.filter((entry) => isRead(entry.hash));
      const unread = candidates.filter((entry) => !isRead(entry.hash));
      if (unread.length && readNow.length === 0) {
        return {
          needKeys: unread.slice(0, ERASE_SESSIONS_PER_COMMIT).map((entry) => keys.session(entry.hash)),
        };
      }
      const mutations: Mutation[] = [];
      const dropped = new Set<string>();
      for (const entry of readNow) {
        const session = parseStored(SessionValue, read(keys.session(entry.hash)).value);
        if (session && !session.ended && session.userId === userId && session.at > erasedAt) {
          newer.add(entry.hash);
          continue;
        }
        dropped.add(entry.hash);
        if (!session || session.ended || session.userId !== userId) continue;
        const ended = endedMarker(session.at, options);
        mutations.push({
          key: keys.session(entry.hash),
          value: ended,
          expireIn: expireIn(ended.expiresAt, options.now),
        });
      }
      pushIndex(
        mutations,
        userId,
        storedIndex.filter((entry) => !dropped.has(entry.hash)),
        options.now,
        storedIndex,
      );
      if (unread.length) {
        // More sessions than one commit may check: end these, then come back for the rest.
        return { plan: { mutations, applied: 0, stale: 0, users: [userId], again: true } };
      }
      // Views of layout 2 are deleted by the compaction after the batch (reads already skip
      // those at or before the tombstone); the layout 1 value is filtered here.
      const views = parseStored(LegacyViewsValue, read(keys.legacyViews(userId)).value);
      if (views) {
        const kept = views.views.filter((view) => view.at > erasedAt);
        if (kept.length === 0) mutations.push({ key: keys.legacyViews(userId) });
        else if (kept.length < views.views.length) {
          const expiresAt = Math.max(...kept.map((view) => view.expiresAt));
          mutations.push({
            key: keys.legacyViews(userId),
            value: { views: kept, expiresAt },
            expireIn: expireIn(expiresAt, options.now),
          });
        }
      }
      const cart = parseStored(CartValue, read(keys.cart(userId)).value);
      if (cart && cart.at <= erasedAt) mutations.push({ key: keys.cart(userId) });
      const profile = parseStored(ProfileValue, read(keys.profile(userId)).value);
      if (profile && profile.at <= erasedAt) mutations.push({ key: keys.profile(userId) });
      const expiresAt = erasedAt + options.tombstoneTtlMs;
      mutations.push({
        key: keys.erased(userId),
        value: { at: erasedAt, expiresAt },
        expireIn: expireIn(expiresAt, options.now),
      });
      return {
        plan: {
          mutations,
          applied: 1,
          stale: events.length - 1,
          users: [userId],
          compact: { userId, erasedAt },
        },
      };
    },
  };
  return unit;
}

function endedMarker(at: number, options: ApplyOptions): SessionValue & { ended: true } {
  return { ended: true, at, expiresAt: at + options.tombstoneTtlMs };
}

/** Positive when session record `a` wins over `b`: newest `at`, then an end, then a fixed order. */
function compareSessions(a: SessionValue, b: SessionValue): number {
  if (a.at !== b.at) return a.at - b.at;
  if (a.ended !== b.ended) return a.ended ? 1 : -1;
  if (!a.ended && !b.ended && a.userId !== b.userId) return a.userId < b.userId ? -1 : 1;
  return a.expiresAt - b.expiresAt;
}

type IndexEntry = { hash: string; expiresAt: number };

/** Writes a user's session index (live entries, sorted by hash) unless it is unchanged. */
function pushIndex(
  mutations: Mutation[],
  userId: string,
  entries: readonly IndexEntry[],
  now: number,
  previous: readonly IndexEntry[],
): void {
  const live = entries.filter((entry) => entry.expiresAt > now)
    .sort((a, b) => b.expiresAt - a.expiresAt)
    .slice(0, MAX_INDEXED_SESSIONS)
    .sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  if (JSON.stringify(previous) === JSON.stringify(live)) return;
  if (live.length === 0) {
    mutations.push({ key: keys.userSessions(userId) });
    return;
  }
  const expiresAt = Math.max(...live.map((entry) => entry.expiresAt));
  mutations.push({
    key: keys.userSessions(userId),
    value: { sessions: live, expiresAt },
    expireIn: expireIn(expiresAt, now),
  });
}

/**
 * Session updates from one user's `session` events: newest `at` wins; events at or before the
 * user's tombstone end the session instead (what erasure would have done had it come later).
 */
function sessionUnit(
  userId: string,
  bySession: Map<string, (SessionEvent & { hash: string })[]>,
  options: ApplyOptions,
): Unit {
  const unit: Unit = {
    keys: [keys.erased(userId), keys.userSessions(userId), ...[...bySession.keys()].map(keys.session)],
    attempts: 0,
    step(read) {
      const erasedAt = parseStored(TombstoneValue, read(keys.erased(userId)).value)?.at ?? -Infinity;
      const readIds = new Set(unit.keys.map(keyId));
      const indexes = new Map<string, { before: IndexEntry[]; after: IndexEntry[] }>();
      const indexOf = (owner: string) => {
        let index = indexes.get(owner);
        if (!index) {
          const before = parseStored(UserSessionsValue, read(keys.userSessions(owner)).value)?.sessions ?? [];
          indexes.set(owner, index = { before, after: before });
        }
        return index;
      };
      const needKeys: Deno.KvKey[] = [];
      const mutations: Mutation[] = [];
      let applied = 0;
      let total = 0;
      for (const [hash, events] of bySession) {
        total += events.length;
        let winner: SessionValue | undefined;
        for (const event of events) {
          const candidate: SessionValue = event.at <= erasedAt
            ? endedMarker(event.at, options)
            : { ended: false, userId, at: event.at, expiresAt: event.expiresAt };
          if (!winner || compareSessions(candidate, winner) > 0) winner = candidate;
        }
        const stored = parseStored(SessionValue, read(keys.session(hash)).value);
        if (!winner || (stored && compareSessions(winner, stored) <= 0)) continue;
        if (stored && !stored.ended) {
          if (!readIds.has(keyId(keys.userSessions(stored.userId)))) {
            needKeys.push(keys.userSessions(stored.userId));
            continue;
          }
          const index = indexOf(stored.userId);
          index.after = index.after.filter((entry) => entry.hash !== hash);
        }
        if (!winner.ended) {
          const index = indexOf(userId);
          index.after = [...index.after.filter((entry) => entry.hash !== hash), {
            hash,
            expiresAt: winner.expiresAt,
          }];
        }
        applied++;
        mutations.push({
          key: keys.session(hash),
          value: winner,
          expireIn: expireIn(winner.expiresAt, options.now),
        });
      }
      if (needKeys.length) return { needKeys };
      for (const [owner, index] of indexes) {
        pushIndex(mutations, owner, index.after, options.now, index.before);
      }
      return {
        plan: {
          mutations,
          applied,
          stale: total - applied,
          users: applied ? [...new Set([userId, ...indexes.keys()])] : [],
        },
      };
    },
  };
  return unit;
}

/** One session's `session_end` events: an end marker wins when newer than the record. */
function sessionEndUnit(hash: string, events: readonly SessionEndEvent[], options: ApplyOptions): Unit {
  const at = Math.max(...events.map((event) => event.at));
  const unit: Unit = {
    keys: [keys.session(hash)],
    attempts: 0,
    step(read) {
      const marker = endedMarker(at, options);
      const stored = parseStored(SessionValue, read(keys.session(hash)).value);
      if (stored && compareSessions(marker, stored) <= 0) {
        return { plan: { mutations: [], applied: 0, stale: events.length, users: [] } };
      }
      const mutations: Mutation[] = [
        { key: keys.session(hash), value: marker, expireIn: expireIn(marker.expiresAt, options.now) },
      ];
      const users: string[] = [];
      if (stored && !stored.ended) {
        const indexKey = keys.userSessions(stored.userId);
        if (!unit.keys.some((key) => keyId(key) === keyId(indexKey))) return { needKeys: [indexKey] };
        const index = parseStored(UserSessionsValue, read(indexKey).value)?.sessions ?? [];
        pushIndex(mutations, stored.userId, index.filter((entry) => entry.hash !== hash), options.now, index);
        users.push(stored.userId);
      }
      return { plan: { mutations, applied: 1, stale: events.length - 1, users } };
    },
  };
  return unit;
}

// --- the driver: waves of disjoint units, read together, committed in packed atomics ---------

interface Outcome {
  applied: number;
  stale: number;
  users: Set<string>;
  /** Users whose views to compact once the units are done → the newest committed tombstone known. */
  compact: Map<string, number>;
}

function estimateBytes(mutation: Mutation): number {
  // The key as KV encodes it; the value generously (UTF-16 worst case) plus per-entry overhead.
  return kvKeyBytes(mutation.key) +
    (mutation.value === undefined ? 0 : JSON.stringify(mutation.value).length * 2) + 64;
}

// Adds to `outcome` as commits succeed, so that a caller sees what committed even on a throw.
async function runUnits(kv: Deno.Kv, units: Unit[], maxAttempts: number, outcome: Outcome): Promise<void> {
  let pending = units;
  while (pending.length) {
    const wave: Unit[] = [];
    const later: Unit[] = [];
    const waveKeys = new Set<string>();
    for (const unit of pending) {
      const ids = [...unit.keys, ...(unit.assumedAbsent ?? [])].map(keyId);
      if (waveKeys.size + ids.length > MAX_WAVE_KEYS || ids.some((id) => waveKeys.has(id))) {
        later.push(unit);
        continue;
      }
      wave.push(unit);
      for (const id of ids) waveKeys.add(id);
    }
    if (wave.length === 0) throw new Error("A sync unit reads more keys than one wave may hold");
    const waveKeyList = wave.flatMap((unit) => unit.keys);
    const entries = await getManyChunked(kv, waveKeyList, { consistency: "strong" });
    const byId = new Map(waveKeyList.map((key, index) => [keyId(key), entries[index]!]));
    for (const unit of wave) {
      for (const key of unit.assumedAbsent ?? []) {
        byId.set(keyId(key), { key, value: null, versionstamp: null });
      }
    }
    const read: Read = (key) => {
      const entry = byId.get(keyId(key));
      if (!entry) throw new Error(`Sync unit read an undeclared key ${keyId(key)}`);
      return entry;
    };
    const commits: {
      units: Unit[];
      plans: Plan[];
      op: Deno.AtomicOperation;
      checks: number;
      mutations: number;
      keyBytes: number;
      bytes: number;
    }[] = [];
    const settle = (plan: Plan, unit: Unit) => {
      plan.committed?.();
      outcome.applied += plan.applied;
      outcome.stale += plan.stale;
      for (const user of plan.users) outcome.users.add(user);
      if (plan.compact) {
        const { userId, erasedAt } = plan.compact;
        outcome.compact.set(userId, Math.max(erasedAt, outcome.compact.get(userId) ?? -Infinity));
      }
      if (plan.again) {
        // Progress was made, so the unit's conflict budget starts afresh.
        unit.attempts = 0;
        later.push(unit);
      }
    };
    for (const unit of wave) {
      const readKeys = [...unit.keys, ...(unit.assumedAbsent ?? [])];
      const step = unit.step(read);
      if ("needKeys" in step) {
        if (++unit.attempts >= maxAttempts * 2) throw new ApplyConflictError();
        const known = new Set(unit.keys.map(keyId));
        for (const key of step.needKeys) {
          if (!known.has(keyId(key))) {
            unit.keys.push(key);
            known.add(keyId(key));
          }
        }
        later.push(unit);
        continue;
      }
      const plan = step.plan;
      if (plan.mutations.length === 0) {
        settle(plan, unit);
        continue;
      }
      const keyBytes = plan.mutations.reduce((sum, mutation) => sum + kvKeyBytes(mutation.key), 0) +
        readKeys.reduce((sum, key) => sum + kvKeyBytes(key), 0);
      const bytes = plan.mutations.reduce((sum, mutation) => sum + estimateBytes(mutation), 0) +
        readKeys.reduce((sum, key) => sum + kvKeyBytes(key) + 32, 0);
      let commit = commits.at(-1);
      if (
        !commit || commit.checks + readKeys.length > KV_COMMIT_LIMITS.checks ||
        commit.mutations + plan.mutations.length > KV_COMMIT_LIMITS.mutations ||
        commit.keyBytes + keyBytes > KV_COMMIT_LIMITS.keyBytes ||
        commit.bytes + bytes > KV_COMMIT_LIMITS.bytes
      ) {
        commit = { units: [], plans: [], op: kv.atomic(), checks: 0, mutations: 0, keyBytes: 0, bytes: 0 };
        commits.push(commit);
      }
      commit.units.push(unit);
      commit.plans.push(plan);
      commit.checks += readKeys.length;
      commit.mutations += plan.mutations.length;
      commit.keyBytes += keyBytes;
      commit.bytes += bytes;
      for (const key of readKeys) commit.op.check({ key, versionstamp: read(key).versionstamp });
      for (const mutation of plan.mutations) {
        if (mutation.value === undefined) commit.op.delete(mutation.key);
        else {commit.op.set(
            mutation.key,
            mutation.value,
            mutation.expireIn ? { expireIn: mutation.expireIn } : {},
          );}
      }
    }
    const results = await Promise.allSettled(commits.map((commit) => commit.op.commit()));
    // Settle every commit before giving up on one: units that did commit must still be counted
    // and their users reported (cache invalidation), whichever commit failed or ran out of attempts.
    let exhausted = false;
    let failure: { reason: unknown } | undefined;
    results.forEach((settled, index) => {
      const commit = commits[index]!;
      if (settled.status === "rejected") {
        failure ??= { reason: settled.reason };
        return;
      }
      const result = settled.value;
      commit.units.forEach((unit, i) => {
        if (result.ok) {
          settle(commit.plans[i]!, unit);
          return;
        }
        unit.attempts++;
        if (unit.attempts >= maxAttempts) exhausted = true;
        if (unit.assumedAbsent) {
          unit.keys.push(...unit.assumedAbsent);
          unit.assumedAbsent = undefined;
        }
        later.push(unit);
      });
    });
    if (failure) throw failure.reason;
    if (exhausted) throw new ApplyConflictError();
    pending = later;
  }
}
