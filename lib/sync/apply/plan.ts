/**
 * @module
 * Cuts a batch into units: one per user's data, per erasure, per group of a user's sessions,
 * per ended session, per related item, and one for all rule events.
 */
import { DEFAULT_RULES_KEEP, type RulesControlEvent } from "../../rules/control.ts";
import { hashSessionId, keys, RelatedValue } from "../../data/store.ts";
import type {
  CartEvent,
  EraseEvent,
  ProfileEvent,
  RelatedEvent,
  SessionEndEvent,
  SyncEvent,
  ViewEvent,
} from "../schema.ts";
import { type ApplyOptions, groupBy, type Unit } from "./unit.ts";
import { rulesUnit } from "./rules_unit.ts";
import { eraseUnit, userDataUnit, versionedUnit } from "./user_units.ts";
import { type HashedSessionEvent, sessionEndUnit, sessionUnit } from "./session_units.ts";

/** Sessions handled by one unit, so that its reads (and checks) stay far below 100. */
const SESSIONS_PER_UNIT = 40;

interface ByKind {
  views: ViewEvent[];
  carts: CartEvent[];
  profiles: ProfileEvent[];
  erases: EraseEvent[];
  sessions: HashedSessionEvent[];
  sessionEnds: (SessionEndEvent & { hash: string })[];
  related: RelatedEvent[];
  rules: RulesControlEvent[];
}

/**
 * Cuts a validated batch into units that can be read, decided and committed independently.
 * @param events the batch
 * @param options clock, limits, TTLs and kept rule versions
 * @returns the units
 */
export async function planUnits(events: readonly SyncEvent[], options: ApplyOptions): Promise<Unit[]> {
  const by = await sortByKind(events);
  const units: Unit[] = [];
  const userIds = new Set([...by.views, ...by.carts, ...by.profiles].map((event) => event.userId));
  const viewsBy = groupBy(by.views, (event) => event.userId);
  const cartsBy = groupBy(by.carts, (event) => event.userId);
  const profilesBy = groupBy(by.profiles, (event) => event.userId);
  const erasesBy = groupBy(by.erases, (event) => event.userId);
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
  for (const [userId, list] of erasesBy) units.push(eraseUnit(userId, list, options));
  for (const [userId, list] of groupBy(by.sessions, (event) => event.userId)) {
    const bySession = [...groupBy(list, (event) => event.hash)];
    for (let i = 0; i < bySession.length; i += SESSIONS_PER_UNIT) {
      units.push(sessionUnit(userId, new Map(bySession.slice(i, i + SESSIONS_PER_UNIT)), options));
    }
  }
  for (const [hash, list] of groupBy(by.sessionEnds, (event) => event.hash)) {
    units.push(sessionEndUnit(hash, list, options));
  }
  for (const [itemId, list] of groupBy(by.related, (event) => event.itemId)) {
    const build = (event: RelatedEvent) => ({ version: event.version, related: event.related });
    units.push(versionedUnit(keys.related(itemId), list, RelatedValue, build));
  }
  if (by.rules.length) units.push(rulesUnit(by.rules, options.rulesKeep ?? DEFAULT_RULES_KEEP));
  return units;
}

async function sortByKind(events: readonly SyncEvent[]): Promise<ByKind> {
  const by: ByKind = {
    views: [],
    carts: [],
    profiles: [],
    erases: [],
    sessions: [],
    sessionEnds: [],
    related: [],
    rules: [],
  };
  const hashes = new Map<string, Promise<string>>();
  const hashOf = (sessionId: string) => {
    let hash = hashes.get(sessionId);
    if (!hash) hashes.set(sessionId, hash = hashSessionId(sessionId));
    return hash;
  };
  for (const event of events) {
    switch (event.kind) {
      case "view":
        by.views.push(event);
        break;
      case "cart":
        by.carts.push(event);
        break;
      case "profile":
        by.profiles.push(event);
        break;
      case "erase":
        by.erases.push(event);
        break;
      case "session":
        by.sessions.push({ ...event, hash: await hashOf(event.sessionId) });
        break;
      case "session_end":
        by.sessionEnds.push({ ...event, hash: await hashOf(event.sessionId) });
        break;
      case "related":
        by.related.push(event);
        break;
      case "rules":
      case "rules_promote":
      case "rules_rollback":
        by.rules.push(event);
        break;
    }
  }
  return by;
}
