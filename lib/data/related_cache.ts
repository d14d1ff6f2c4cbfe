/**
 * @module
 * A per-isolate cache of pushed related-item lists, so "you might also like" does not read KV
 * for every request. Bounded in entries (least recently used goes first), in estimated bytes (a
 * list may hold up to 500 items, so an entry bound alone would allow hundreds of megabytes) and
 * in staleness (`CONTEXT_MAX_STALE_MS`, like user contexts); items without a list are cached as
 * absent too.
 */
import { readRelated } from "./readers.ts";
import type { RelatedValue } from "./store.ts";
import { FreshCache } from "./fresh_cache.ts";
import { estimateStringBytes, estimateValueBytes } from "../support/memory_size.ts";

/** Options for {@linkcode RelatedCache}. */
export interface RelatedCacheOptions {
  maxEntries: number;
  maxStaleMs: number;
  /** Most estimated bytes kept (`CONTEXT_CACHE_MAX_BYTES`); default: bounded by entries only. */
  maxBytes?: number;
}

/** Per-entry bytes beside the key and the list: the `Map` entry and the cache's record. */
const ENTRY_OVERHEAD_BYTES = 96;

/**
 * Estimates the V8 heap one cached related list takes, key and overhead included.
 * @param value the list, or undefined for a cached absence
 */
export function estimateRelatedEntryBytes(itemId: string, value: RelatedValue | undefined): number {
  return estimateStringBytes(itemId) + ENTRY_OVERHEAD_BYTES + estimateValueBytes(value);
}

/** Item id → its related list (or none), bounded and short-lived. */
export class RelatedCache {
  #cache: FreshCache<string, RelatedValue | undefined>;

  /**
   * @param options entry, byte and staleness bounds
   * @throws {RangeError} when `maxEntries` or `maxBytes` is not a positive integer or
   *   `maxStaleMs` is negative
   */
  constructor(options: RelatedCacheOptions) {
    this.#cache = new FreshCache({ ...options, name: "Related cache", sizeOf: estimateRelatedEntryBytes });
  }

  /**
   * Reads the related lists of several items: fresh cached entries first, the rest from KV (one
   * eventually consistent batch), which are then cached.
   * @param kvWithin bounds the KV read in time (`KV_TIMEOUT_MS`); a cache hit needs none
   * @returns item id → its related list; items without one are left out
   */
  async read(
    kv: Deno.Kv,
    itemIds: readonly string[],
    now: number,
    kvWithin?: <T>(read: Promise<T>) => Promise<T>,
  ): Promise<Map<string, RelatedValue>> {
    const out = new Map<string, RelatedValue>();
    const missing: string[] = [];
    for (const itemId of new Set(itemIds)) {
      const cached = this.#cache.get(itemId, now);
      if (!cached) missing.push(itemId);
      else if (cached.value) out.set(itemId, cached.value);
    }
    if (missing.length === 0) return out;
    const read = readRelated(kv, missing);
    const loaded = await (kvWithin ? kvWithin(read) : read);
    for (const itemId of missing) {
      const value = loaded.get(itemId);
      if (value) out.set(itemId, value);
      this.#cache.set(itemId, value, now);
    }
    return out;
  }

  /** Number of cached items. */
  get size(): number {
    return this.#cache.size;
  }

  /** Estimated bytes of the cached lists. */
  get bytes(): number {
    return this.#cache.bytes;
  }
}
