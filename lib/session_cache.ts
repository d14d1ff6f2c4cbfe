/**
 * @module
 * A per-isolate cache of session lookups (session cookie → user), so a logged-in visitor's
 * requests do not each pay a KV read. Bounded in entries (least recently used goes first) and
 * in staleness: an entry is trusted for `maxStaleMs` (`CONTEXT_MAX_STALE_MS`), never past the
 * session's own expiry, so a session ended through sync stops working within that bound.
 */

/** Options for {@linkcode SessionCache}. */
export interface SessionCacheOptions {
  maxEntries: number;
  maxStaleMs: number;
}

interface Entry {
  /** Undefined: no such (live) session — cached too, so garbage cookies cost one read. */
  userId: string | undefined;
  expiresAt: number;
  storedAt: number;
}

/**
 * Session cookie value → user id, bounded and short-lived. Held in memory only (KV stores
 * hashes); the values are never logged or serialised.
 */
export class SessionCache {
  #entries = new Map<string, Entry>();
  #maxEntries: number;
  #maxStaleMs: number;

  /**
   * @param options entry bound and staleness bound
   * @throws {RangeError} when a bound is not a positive integer (staleness may be 0)
   */
  constructor(options: SessionCacheOptions) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new RangeError(
        `Session cache "maxEntries" must be a positive integer, got "${options.maxEntries}"`,
      );
    }
    if (!Number.isFinite(options.maxStaleMs) || options.maxStaleMs < 0) {
      throw new RangeError(`Session cache "maxStaleMs" must not be negative, got "${options.maxStaleMs}"`);
    }
    this.#maxEntries = options.maxEntries;
    this.#maxStaleMs = options.maxStaleMs;
  }

  /**
   * Looks a session up.
   *
   * @param sessionId the session cookie value
   * @param now the current time, epoch ms
   * @returns `{ userId }` (userId undefined for a known-absent session) while fresh, else undefined
   */
  get(sessionId: string, now: number): { userId: string | undefined } | undefined {
    const entry = this.#entries.get(sessionId);
    if (!entry) return undefined;
    const age = now - entry.storedAt;
    if (age < 0 || age >= this.#maxStaleMs || (entry.userId !== undefined && entry.expiresAt <= now)) {
      this.#entries.delete(sessionId);
      return undefined;
    }
    this.#entries.delete(sessionId);
    this.#entries.set(sessionId, entry);
    return { userId: entry.userId };
  }

  /**
   * Remembers a lookup result.
   *
   * @param sessionId the session cookie value
   * @param value the user and session expiry, or undefined for "no live session"
   * @param now the current time, epoch ms
   */
  set(sessionId: string, value: { userId: string; expiresAt: number } | undefined, now: number): void {
    this.#entries.delete(sessionId);
    this.#entries.set(sessionId, {
      userId: value?.userId,
      expiresAt: value?.expiresAt ?? Number.POSITIVE_INFINITY,
      storedAt: now,
    });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
  }

  /**
   * Forgets every cached session of the given users (after a sync ended a session or erased a
   * user on this instance). Linear in the cache size; syncs are rare next to requests.
   *
   * @param userIds the users
   */
  invalidateUsers(userIds: Iterable<string>): void {
    const users = new Set(userIds);
    if (users.size === 0) return;
    for (const [sessionId, entry] of this.#entries) {
      if (entry.userId !== undefined && users.has(entry.userId)) this.#entries.delete(sessionId);
    }
  }

  /** Number of cached sessions. */
  get size(): number {
    return this.#entries.size;
  }
}
