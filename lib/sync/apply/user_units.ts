/**
 * @module
 * The units that write a user's data and related items: views (blind), cart and profile (last
 * writer wins by `version`, checked against the user's tombstone), related items, and erasure.
 */
import type { z } from "zod";
import {
  CartValue,
  expireIn,
  keys,
  parseStored,
  ProfileValue,
  SessionValue,
  TombstoneValue,
  UserSessionsValue,
} from "../../data/store.ts";
import { readLegacyViews } from "../../data/readers.ts";
import { planViewWrites } from "../views.ts";
import type { CartEvent, EraseEvent, ProfileEvent, ViewEvent } from "../schema.ts";
import {
  type ApplyOptions,
  emptyPlan,
  keyId,
  type Mutation,
  type Plan,
  type Read,
  type Unit,
} from "./unit.ts";
import { endedMarker, type IndexEntry, pushIndex } from "./session_units.ts";

/** Session records an erasure ends per commit. */
const ERASE_SESSIONS_PER_COMMIT = 80;

/** A user's events of one batch for {@linkcode userDataUnit}. */
export interface UserEvents {
  views: ViewEvent[];
  carts: CartEvent[];
  profiles: ProfileEvent[];
  /** The batch's own latest erasure of the user (`-Infinity` when none). */
  erasedAt: number;
}

/**
 * Views, cart and profile of one user: each checked against the user's tombstone.
 * @param events the user's events of the batch
 */
export function userDataUnit(userId: string, events: UserEvents, options: ApplyOptions): Unit {
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
      const plan = emptyPlan();
      if (events.views.length) {
        // Not compacted here, so the writes stay blind: a read that finds more views stored than
        // it keeps has them compacted in the background (`lib/pipeline/context.ts`).
        const views = planViewWrites(userId, events.views, { ...options, erasedAt });
        plan.mutations.push(...views.mutations);
        plan.applied += views.applied;
        plan.stale += views.stale;
      }
      if (events.carts.length) planCart(plan, userId, events.carts, erasedAt, read, options);
      if (events.profiles.length) planProfile(plan, userId, events.profiles, erasedAt, read, options);
      if (plan.mutations.length) plan.users.push(userId);
      return { plan };
    },
  };
}

function planCart(
  plan: Plan,
  userId: string,
  carts: readonly CartEvent[],
  erasedAt: number,
  read: Read,
  options: ApplyOptions,
): void {
  lastVersionWins(plan, keys.cart(userId), carts, erasedAt, CartValue, read, (event) => {
    const expiresAt = event.at + options.cartTtlMs;
    return {
      value: { version: event.version, at: event.at, items: event.items, expiresAt },
      expireIn: expireIn(expiresAt, options.now),
    };
  });
}

function planProfile(
  plan: Plan,
  userId: string,
  profiles: readonly ProfileEvent[],
  erasedAt: number,
  read: Read,
  options: ApplyOptions,
): void {
  lastVersionWins(plan, keys.profile(userId), profiles, erasedAt, ProfileValue, read, (event) => {
    const expiresAt = event.at + options.profileTtlMs;
    const { version, at, segments, attributes } = event;
    return {
      value: { version, at, segments, attributes, expiresAt },
      expireIn: expireIn(expiresAt, options.now),
    };
  });
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

/**
 * Related items: last writer wins by version, no user, no expiry.
 * @param key the item's key
 * @param events the item's events of the batch
 * @param schema the stored value's schema
 * @param build the stored value of the winning event
 */
export function versionedUnit<E extends { version: number }, V extends { version: number }>(
  key: Deno.KvKey,
  events: readonly E[],
  schema: z.ZodType<V>,
  build: (event: E) => V,
): Unit {
  return {
    keys: [key],
    attempts: 0,
    step(read) {
      const plan = emptyPlan();
      lastVersionWins(plan, key, events, -Infinity, schema, read, (event) => ({ value: build(event) }));
      return { plan };
    },
  };
}

/**
 * Erasure of one user: filter stored data, end indexed sessions, raise the tombstone. A user
 * with more sessions than one commit may check is erased over several commits.
 * @param events the user's erasures of the batch
 */
export function eraseUnit(userId: string, events: readonly EraseEvent[], options: ApplyOptions): Unit {
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
        return { plan: { ...emptyPlan(events.length), compact: { userId, erasedAt: stored.at } } };
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
      const ending = { userId, erasedAt, newer, options };
      endErasedSessions(mutations, readNow, storedIndex, read, ending);
      if (unread.length) {
        // More sessions than one commit may check: end these, then come back for the rest.
        return { plan: { mutations, applied: 0, stale: 0, users: [userId], again: true } };
      }
      eraseStoredData(mutations, userId, erasedAt, read, options);
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

/** Ends the read sessions of an erased user that are not newer than the erasure, and re-indexes. */
function endErasedSessions(
  mutations: Mutation[],
  readNow: readonly IndexEntry[],
  storedIndex: readonly IndexEntry[],
  read: Read,
  ending: { userId: string; erasedAt: number; newer: Set<string>; options: ApplyOptions },
): void {
  const { userId, erasedAt, newer, options } = ending;
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
  const kept = storedIndex.filter((entry) => !dropped.has(entry.hash));
  pushIndex(mutations, userId, kept, options.now, storedIndex);
}

/** Filters the erased user's stored views (layout 1), cart and profile, and raises the tombstone. */
function eraseStoredData(
  mutations: Mutation[],
  userId: string,
  erasedAt: number,
  read: Read,
  options: ApplyOptions,
): void {
  // Views of layout 2 are deleted by the compaction after the batch (reads already skip
  // those at or before the tombstone); the layout 1 value is filtered here.
  const views = readLegacyViews(read(keys.legacyViews(userId)).value);
  if (views) {
    const kept = views.filter((view) => view.at > erasedAt);
    if (kept.length === 0) mutations.push({ key: keys.legacyViews(userId) });
    else if (kept.length < views.length) {
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
}
