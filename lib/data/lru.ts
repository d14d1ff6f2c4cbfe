/**
 * @module
 * The one least-recently-used map of the edge, bounded in entries and optionally in estimated
 * bytes. `Map` keeps insertion order, so re-inserting on use makes the first key the oldest.
 */

/** Options for {@linkcode Lru}. */
export interface LruOptions {
  /** Most entries kept, at least 1 (the owner checks and names it in its own error). */
  maxEntries: number;
  /** Most estimated bytes kept; unbounded when absent. */
  maxBytes?: number;
}

interface Slot<V> {
  value: V;
  bytes: number;
}

/**
 * Key → value with LRU eviction. Reads that count as use go through {@linkcode Lru.get};
 * {@linkcode Lru.peek} leaves the order alone.
 * @example
 * ```ts
 * const lru = new Lru<string, number>({ maxEntries: 2 });
 * lru.set("a", 1); lru.set("b", 2); lru.get("a"); lru.set("c", 3);
 * lru.peek("b"); // undefined: "b" was the least recently used
 * ```
 */
export class Lru<K, V> {
  #slots = new Map<K, Slot<V>>();
  #maxEntries: number;
  #maxBytes: number;
  #bytes = 0;
  #evictions = 0;

  /** @throws {RangeError} when a bound is not a positive integer */
  constructor(options: LruOptions) {
    const { maxEntries, maxBytes = Number.POSITIVE_INFINITY } = options;
    if (!Number.isInteger(maxEntries) || maxEntries < 1 || !(maxBytes >= 1)) {
      throw new RangeError(`LRU bounds must be positive, got "${maxEntries}" entries, "${maxBytes}" bytes`);
    }
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  /** Returns a value (or `undefined`) and marks it recently used. */
  get(key: K): V | undefined {
    const slot = this.#slots.get(key);
    if (slot === undefined) return undefined;
    this.#slots.delete(key);
    this.#slots.set(key, slot);
    return slot.value;
  }

  /** Returns a value (or `undefined`) without touching the order. */
  peek(key: K): V | undefined {
    return this.#slots.get(key)?.value;
  }

  /**
   * Stores a value as the most recently used, then evicts the least recently used until both
   * bounds hold. A value larger than `maxBytes` on its own is not stored, and the old value of
   * its key is dropped all the same.
   * @param bytes the entry's estimated bytes (0 when only entries are bounded)
   * @returns whether the value was stored
   */
  set(key: K, value: V, bytes = 0): boolean {
    this.delete(key);
    if (bytes > this.#maxBytes) return false;
    this.#slots.set(key, { value, bytes });
    this.#bytes += bytes;
    while (this.#slots.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const oldest = this.#slots.keys().next();
      if (oldest.done) break;
      this.delete(oldest.value);
      this.#evictions++;
    }
    return true;
  }

  /** Drops an entry; tells whether there was one. */
  delete(key: K): boolean {
    const slot = this.#slots.get(key);
    if (slot === undefined) return false;
    this.#slots.delete(key);
    this.#bytes -= slot.bytes;
    return true;
  }

  /** Drops every entry; the eviction count is kept. */
  clear(): void {
    this.#slots.clear();
    this.#bytes = 0;
  }

  /** The entries, oldest first; deleting while iterating is safe. */
  *entries(): IterableIterator<[K, V]> {
    for (const [key, slot] of this.#slots) yield [key, slot.value];
  }

  /** Number of entries. */
  get size(): number {
    return this.#slots.size;
  }

  /** Estimated bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Entries dropped by {@linkcode Lru.set} to stay within the bounds, since creation. */
  get evictions(): number {
    return this.#evictions;
  }
}
