/**
 * @module
 * A per-isolate cache of session lookups (session cookie → user), so a logged-in visitor's
 * requests do not each pay a KV read. Bounded in entries (least recently used goes first) and
 * in staleness: an entry is trusted for `maxStaleMs` (`CONTEXT_MAX_STALE_MS`), never past the
 * session's own expiry, so a session ended through sync stops working within that bound.
 */
import { FreshCache } from "./fresh_cache.ts";

/** Options for {@linkcode SessionCache}. */
export interface SessionCacheOptions {
  maxEntries: number;
  maxStaleMs: number;
}

interface Entry {
  /** Undefined: no such (live) session — cached too, so garbage cookies cost one read. */
  userId: string | undefined;
  expiresAt: number;
}

/**
 * Session cookie value → user id, bounded and short-lived. Held in memory only (KV stores
 * hashes); the values are never logged or serialised.
 */
export class SessionCache {
  #cache: FreshCache<string, Entry>;
  #generation = 0;

  /** @throws {RangeError} when a bound is not a positive integer (staleness may be 0) */
  constructor(options: SessionCacheOptions) {
    this.#cache = new FreshCache({ ...options, name: "Session cache" });
  }

  /** Looks a session cookie up: `{ userId }` while fresh (`userId` undefined for a known-absent one). */
  get(sessionId: string, now: number): { userId: string | undefined } | undefined {
    const entry = this.#cache.get(sessionId, now)?.value;
    if (!entry) return undefined;
    if (entry.userId !== undefined && entry.expiresAt <= now) {
      this.#cache.delete(sessionId);
      return undefined;
    }
    return { userId: entry.userId };
  }

  /**
   * Changes whenever sessions are invalidated: take it before a KV lookup and hand it to
   * {@linkcode set}, so that a lookup that was in flight across an invalidation is not stored.
   */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Remembers a lookup result (`undefined`: no live session). `generation` is
   * {@linkcode generation} when the lookup began: a result read before an invalidation is dropped.
   */
  set(
    sessionId: string,
    value: { userId: string; expiresAt: number } | undefined,
    now: number,
    generation: number = this.#generation,
  ): void {
    if (generation !== this.#generation) return;
    this.#cache.set(sessionId, {
      userId: value?.userId,
      expiresAt: value?.expiresAt ?? Number.POSITIVE_INFINITY,
    }, now);
  }

  /**
   * Forgets every cached session of the given users (after a sync ended a session or erased a
   * user on this instance), and every "no such session" entry (the sync may have begun one of
   * them). Linear in the cache size; syncs are rare next to requests.
   */
  invalidateUsers(userIds: Iterable<string>): void {
    const users = new Set(userIds);
    if (users.size === 0) return;
    this.#generation++;
    this.#cache.deleteWhere((entry) => entry.userId === undefined || users.has(entry.userId));
  }

  /** Number of cached sessions. */
  get size(): number {
    return this.#cache.size;
  }
}
