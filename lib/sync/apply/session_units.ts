/**
 * @module
 * The units that write sessions: a record per session (newest `at` wins, an end marker over a
 * live record at the same `at`) and each user's index of live sessions, kept in step with it.
 */
import {
  expireIn,
  keys,
  parseStored,
  SessionValue,
  TombstoneValue,
  UserSessionsValue,
} from "../../data/store.ts";
import type { SessionEndEvent, SessionEvent } from "../schema.ts";
import { type ApplyOptions, emptyPlan, keyId, type Mutation, type Read, type Unit } from "./unit.ts";

/** Largest per-user session index; beyond it the earliest-expiring entries are dropped. */
const MAX_INDEXED_SESSIONS = 500;

/** One entry of a user's session index. */
export type IndexEntry = { hash: string; expiresAt: number };

/** A `session` event with the hash its record is stored under. */
export type HashedSessionEvent = SessionEvent & { hash: string };

/**
 * @param at when the session ended
 * @param options the tombstone TTL, for how long the marker is kept
 * @returns the record of an ended session
 */
export function endedMarker(at: number, options: ApplyOptions): SessionValue & { ended: true } {
  return { ended: true, at, expiresAt: at + options.tombstoneTtlMs };
}

/** Positive when session record `a` wins over `b`: newest `at`, then an end, then a fixed order. */
function compareSessions(a: SessionValue, b: SessionValue): number {
  if (a.at !== b.at) return a.at - b.at;
  if (a.ended !== b.ended) return a.ended ? 1 : -1;
  if (!a.ended && !b.ended && a.userId !== b.userId) return a.userId < b.userId ? -1 : 1;
  return a.expiresAt - b.expiresAt;
}

/**
 * Writes a user's session index (live entries, sorted by hash) unless it is unchanged.
 * @param mutations where the write goes
 * @param userId the index's user
 * @param entries the entries it should hold
 * @param now the current time, epoch ms
 * @param previous the entries it holds now
 */
export function pushIndex(
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

/** The winning record among one session's events; at or before the tombstone, an end marker. */
function winningRecord(
  userId: string,
  events: readonly HashedSessionEvent[],
  erasedAt: number,
  options: ApplyOptions,
): SessionValue | undefined {
  let winner: SessionValue | undefined;
  for (const event of events) {
    const candidate: SessionValue = event.at <= erasedAt
      ? endedMarker(event.at, options)
      : { ended: false, userId, at: event.at, expiresAt: event.expiresAt };
    if (!winner || compareSessions(candidate, winner) > 0) winner = candidate;
  }
  return winner;
}

/**
 * Session updates from one user's `session` events: newest `at` wins; events at or before the
 * user's tombstone end the session instead (what erasure would have done had it come later).
 * @param bySession the user's events by session hash
 */
export function sessionUnit(
  userId: string,
  bySession: Map<string, HashedSessionEvent[]>,
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
        const winner = winningRecord(userId, events, erasedAt, options);
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
          const entry = { hash, expiresAt: winner.expiresAt };
          index.after = [...index.after.filter((other) => other.hash !== hash), entry];
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
      const users = applied ? [...new Set([userId, ...indexes.keys()])] : [];
      return { plan: { mutations, applied, stale: total - applied, users } };
    },
  };
  return unit;
}

/**
 * One session's `session_end` events: an end marker wins when newer than the record.
 * @param hash the session's hash
 * @param events its `session_end` events of the batch
 */
export function sessionEndUnit(
  hash: string,
  events: readonly SessionEndEvent[],
  options: ApplyOptions,
): Unit {
  const at = Math.max(...events.map((event) => event.at));
  const unit: Unit = {
    keys: [keys.session(hash)],
    attempts: 0,
    step(read: Read) {
      const marker = endedMarker(at, options);
      const stored = parseStored(SessionValue, read(keys.session(hash)).value);
      if (stored && compareSessions(marker, stored) <= 0) return { plan: emptyPlan(events.length) };
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
