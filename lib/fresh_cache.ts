/**
 * @module
 * A small per-isolate map with two bounds: a number of entries (the least recently used goes
 * first) and an age after which an entry is no longer served. The building block of the session
 * and related-list caches.
 */

/** Options for {@linkcode FreshCache}. */
export interface FreshCacheOptions {
  /** Most entries kept, at least 1. */
  maxEntries: number;
  /** How long an entry is served after it was stored, in milliseconds (0: never). */
  maxStaleMs: number;
  /** Names the cache in error messages. */
  name: string;
}

/** Key → value, bounded in entries and in age. */
export class FreshCache<K, V> {
  #entries = new Map<K, { value: V; storedAt: number }>();
  #maxEntries: number;
  #maxStaleMs: number;

  /**
   * @param options the bounds
   * @throws {RangeError} when `maxEntries` is not a positive integer or `maxStaleMs` is negative
   */
  constructor(options: FreshCacheOptions) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new RangeError(
        `${options.name} "maxEntries" must be a positive integer, got "${options.maxEntries}"`,
      );
    }
    if (!Number.isFinite(options.maxStaleMs) || options.maxStaleMs < 0) {
      throw new RangeError(`${options.name} "maxStaleMs" must not be negative, got "${options.maxStaleMs}"`);
    }
    this.#maxEntries = options.maxEntries;
    this.#maxStaleMs = options.maxStaleMs;
  }

  /**
   * Returns a fresh entry and marks it recently used; a stale one is dropped.
   *
   * @param key the key
   * @param now the current time, epoch ms (a clock that went backwards counts as stale)
   * @returns `{ value }`, or `undefined` when there is no fresh entry
   */
  get(key: K, now: number): { value: V } | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    const age = now - entry.storedAt;
    if (age < 0 || age >= this.#maxStaleMs) return undefined;
    this.#entries.set(key, entry);
    return { value: entry.value };
  }

  /**
   * Stores an entry, evicting the least recently used beyond the bound.
   *
   * @param key the key
   * @param value the value
   * @param now the current time, epoch ms
   */
  set(key: K, value: V, now: number): void {
    this.#entries.delete(key);
    this.#entries.set(key, { value, storedAt: now });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
  }

  /**
   * Drops an entry.
   *
   * @param key the key
   */
  delete(key: K): void {
    this.#entries.delete(key);
  }

  /**
   * Drops every entry whose value matches.
   *
   * @param matches the predicate
   */
  deleteWhere(matches: (value: V) => boolean): void {
    for (const [key, entry] of this.#entries) if (matches(entry.value)) this.#entries.delete(key);
  }

  /** Number of entries (fresh or not). */
  get size(): number {
    return this.#entries.size;
  }
}
