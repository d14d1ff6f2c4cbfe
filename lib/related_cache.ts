/**
 * @module
 * A per-isolate cache of pushed related-item lists, so "you might also like" does not read KV
 * for every request. Bounded in entries (least recently used goes first) and in staleness
 * (`CONTEXT_MAX_STALE_MS`, like user contexts); items without a list are cached as absent too.
 */
import { readRelated, type RelatedValue } from "./store.ts";

/** Options for {@linkcode RelatedCache}. */
export interface RelatedCacheOptions {
  maxEntries: number;
  maxStaleMs: number;
}

interface Entry {
  value: RelatedValue | undefined;
  storedAt: number;
}

/** Item id → its related list (or none), bounded and short-lived. */
export class RelatedCache {
  #entries = new Map<string, Entry>();
  #maxEntries: number;
  #maxStaleMs: number;

  /**
   * @param options entry bound and staleness bound
   * @throws {RangeError} when `maxEntries` is not a positive integer or `maxStaleMs` is negative
   */
  constructor(options: RelatedCacheOptions) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new RangeError(
        `Related cache "maxEntries" must be a positive integer, got "${options.maxEntries}"`,
      );
    }
    if (!Number.isFinite(options.maxStaleMs) || options.maxStaleMs < 0) {
      throw new RangeError(`Related cache "maxStaleMs" must not be negative, got "${options.maxStaleMs}"`);
    }
    this.#maxEntries = options.maxEntries;
    this.#maxStaleMs = options.maxStaleMs;
  }

  /**
   * Reads the related lists of several items: fresh cached entries first, the rest from KV (one
   * eventually consistent batch), which are then cached.
   *
   * @param kv the store
   * @param itemIds the items
   * @param now the current time, epoch ms
   * @returns item id → its related list; items without one are left out
   */
  async read(kv: Deno.Kv, itemIds: readonly string[], now: number): Promise<Map<string, RelatedValue>> {
    const out = new Map<string, RelatedValue>();
    const missing: string[] = [];
    for (const itemId of new Set(itemIds)) {
      const entry = this.#entries.get(itemId);
      const age = entry ? now - entry.storedAt : -1;
      if (entry && age >= 0 && age < this.#maxStaleMs) {
        this.#entries.delete(itemId);
        this.#entries.set(itemId, entry);
        if (entry.value) out.set(itemId, entry.value);
      } else {
        missing.push(itemId);
      }
    }
    if (missing.length === 0) return out;
    const loaded = await readRelated(kv, missing);
    for (const itemId of missing) {
      const value = loaded.get(itemId);
      if (value) out.set(itemId, value);
      this.#entries.delete(itemId);
      this.#entries.set(itemId, { value, storedAt: now });
    }
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    return out;
  }

  /** Number of cached items. */
  get size(): number {
    return this.#entries.size;
  }
}
