/**
 * @module
 * A small per-isolate map with two bounds: a number of entries (the least recently used goes
 * first) and an age after which an entry is no longer served, and optionally a third: estimated
 * bytes. The building block of the session and related-list caches.
 */
import { Lru } from "./lru.ts";

/** Options for {@linkcode FreshCache}. */
export interface FreshCacheOptions<K = unknown, V = unknown> {
  /** Most entries kept, at least 1. */
  maxEntries: number;
  /** How long an entry is served after it was stored, in milliseconds (0: never). */
  maxStaleMs: number;
  /** Names the cache in error messages. */
  name: string;
  /** Most estimated bytes kept, at least 1; requires `sizeOf`. Without it, bytes are not bounded. */
  maxBytes?: number;
  /** Estimates the heap bytes of one entry, key and per-entry overhead included. */
  sizeOf?: (key: K, value: V) => number;
}

interface Entry<V> {
  value: V;
  storedAt: number;
}

/** Key → value, bounded in entries, in age and, when asked, in estimated bytes. */
export class FreshCache<K, V> {
  #lru: Lru<K, Entry<V>>;
  #maxStaleMs: number;
  #sizeOf: ((key: K, value: V) => number) | undefined;

  /**
   * @throws {RangeError} when `maxEntries` or `maxBytes` is not a positive integer, `maxStaleMs`
   *   is negative, or `maxBytes` comes without `sizeOf`
   */
  constructor(options: FreshCacheOptions<K, V>) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new RangeError(
        `${options.name} "maxEntries" must be a positive integer, got "${options.maxEntries}"`,
      );
    }
    if (!Number.isFinite(options.maxStaleMs) || options.maxStaleMs < 0) {
      throw new RangeError(`${options.name} "maxStaleMs" must not be negative, got "${options.maxStaleMs}"`);
    }
    if (options.maxBytes !== undefined) {
      if (!Number.isInteger(options.maxBytes) || options.maxBytes < 1) {
        throw new RangeError(
          `${options.name} "maxBytes" must be a positive integer, got "${options.maxBytes}"`,
        );
      }
      if (!options.sizeOf) throw new RangeError(`${options.name} "maxBytes" needs "sizeOf"`);
    }
    this.#lru = new Lru({ maxEntries: options.maxEntries, maxBytes: options.maxBytes });
    this.#maxStaleMs = options.maxStaleMs;
    this.#sizeOf = options.maxBytes === undefined ? undefined : options.sizeOf;
  }

  /**
   * Returns a fresh entry and marks it recently used; a stale one is dropped.
   * @param now the current time, epoch ms (a clock that went backwards counts as stale)
   * @returns `{ value }`, or `undefined` when there is no fresh entry
   */
  get(key: K, now: number): { value: V } | undefined {
    const entry = this.#lru.get(key);
    if (!entry) return undefined;
    const age = now - entry.storedAt;
    if (age < 0 || age >= this.#maxStaleMs) {
      this.#lru.delete(key);
      return undefined;
    }
    return { value: entry.value };
  }

  /**
   * Stores an entry, evicting the least recently used beyond the bounds. An entry larger than
   * `maxBytes` on its own is not stored (and replaces nothing: the old entry is dropped).
   * @returns whether the entry was stored
   */
  set(key: K, value: V, now: number): boolean {
    return this.#lru.set(key, { value, storedAt: now }, this.#sizeOf?.(key, value) ?? 0);
  }

  /** Drops an entry. */
  delete(key: K): void {
    this.#lru.delete(key);
  }

  /** Drops every entry whose value matches. */
  deleteWhere(matches: (value: V) => boolean): void {
    for (const [key, entry] of this.#lru.entries()) if (matches(entry.value)) this.#lru.delete(key);
  }

  /** Number of entries (fresh or not). */
  get size(): number {
    return this.#lru.size;
  }

  /** Estimated bytes of the entries held (0 without `sizeOf`). */
  get bytes(): number {
    return this.#lru.bytes;
  }
}
