/**
 * @module
 * The one least-recently-used map of the edge, bounded in entries and optionally in estimated
 * bytes. `Map` keeps insertion order, so re-inserting on use makes the first key the oldest.
 */

/** Options for {@linkcode Lru}. */
export interface LruOptions {
  maxEntries: number;
  /** Unbounded when absent. */
  maxBytes?: number;
}

interface Slot<V> {
  value: V;
  bytes: number;
}

/** Key → value with LRU eviction; {@linkcode Lru.peek} leaves the order alone. */
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

  get(key: K): V | undefined {
    const slot = this.#slots.get(key);
    if (slot === undefined) return undefined;
    this.#slots.delete(key);
    this.#slots.set(key, slot);
    return slot.value;
  }

  peek(key: K): V | undefined {
    return this.#slots.get(key)?.value;
  }

  /**
   * Stores a value, then evicts until both bounds hold. A value larger than `maxBytes` alone is not
   * stored (false), and its key's old value is dropped all the same.
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

  delete(key: K): boolean {
    const slot = this.#slots.get(key);
    if (slot === undefined) return false;
    this.#slots.delete(key);
    this.#bytes -= slot.bytes;
    return true;
  }

  /** The eviction count is kept. */
  clear(): void {
    this.#slots.clear();
    this.#bytes = 0;
  }

  /** The entries, oldest first; deleting while iterating is safe. */
  *entries(): IterableIterator<[K, V]> {
    for (const [key, slot] of this.#slots) yield [key, slot.value];
  }

  get size(): number {
    return this.#slots.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get evictions(): number {
    return this.#evictions;
  }
}
