/**
 * @module
 * Per-isolate cache of session lookups, so a logged-in visitor's requests do not each read KV. An
 * entry is trusted for `maxStaleMs`, never past the session's expiry: an ended session stops in time.
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

  /** Taken before a KV lookup and handed to {@linkcode set}: a lookup spanning an invalidation is dropped. */
  get generation(): number {
    return this.#generation;
  }

  /** Remembers a lookup (`undefined`: no live session) unless an invalidation came after `generation`. */
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
   * Forgets the given users' sessions and every "no such session" entry (the sync may have begun
   * one). Linear in the cache size; syncs are rare next to requests.
   */
  invalidateUsers(userIds: Iterable<string>): void {
    const users = new Set(userIds);
    if (users.size === 0) return;
    this.#generation++;
    this.#cache.deleteWhere((entry) => entry.userId === undefined || users.has(entry.userId));
  }

  get size(): number {
    return this.#cache.size;
  }
}
