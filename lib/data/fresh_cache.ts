/**
 * @module
 * A per-isolate LRU whose entries are served only while young: the building block of the session
 * and related-list caches.
 */
import { Lru } from "./lru.ts";

/** Options for {@linkcode FreshCache}. */
export interface FreshCacheOptions<K = unknown, V = unknown> {
  maxEntries: number;
  /** How long an entry is served after it was stored (0: never). */
  maxStaleMs: number;
  /** For error messages. */
  name: string;
  /** Requires `sizeOf`. */
  maxBytes?: number;
  /** Heap bytes of one entry, key and overhead included. */
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

  /** A fresh entry, marked used; a stale one (or a clock gone backwards) is dropped. */
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

  /** See {@linkcode Lru.set}. */
  set(key: K, value: V, now: number): boolean {
    return this.#lru.set(key, { value, storedAt: now }, this.#sizeOf?.(key, value) ?? 0);
  }

  delete(key: K): void {
    this.#lru.delete(key);
  }

  deleteWhere(matches: (value: V) => boolean): void {
    for (const [key, entry] of this.#lru.entries()) if (matches(entry.value)) this.#lru.delete(key);
  }

  /** Fresh or not. */
  get size(): number {
    return this.#lru.size;
  }

  get bytes(): number {
    return this.#lru.bytes;
  }
}
