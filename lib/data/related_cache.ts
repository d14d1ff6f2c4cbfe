/**
 * @module
 * Per-isolate cache of pushed related lists, bounded in entries, staleness and estimated bytes (a
 * list holds up to 500 items, so an entry bound alone would allow hundreds of megabytes).
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

/** Estimates the V8 heap one cached related list takes, key and overhead included. */
export function estimateRelatedEntryBytes(itemId: string, value: RelatedValue | undefined): number {
  return estimateStringBytes(itemId) + ENTRY_OVERHEAD_BYTES + estimateValueBytes(value);
}

/** Item id → its related list (or none), bounded and short-lived. */
export class RelatedCache {
  #cache: FreshCache<string, RelatedValue | undefined>;

  constructor(options: RelatedCacheOptions) {
    this.#cache = new FreshCache({ ...options, name: "Related cache", sizeOf: estimateRelatedEntryBytes });
  }

  /**
   * Reads the related lists of several items: fresh cached entries first, the rest from KV (one
   * eventually consistent batch), which are then cached.
   * @param kvWithin bounds the KV read in time (`KV_TIMEOUT_MS`); a cache hit needs none
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

  get size(): number {
    return this.#cache.size;
  }

  get bytes(): number {
    return this.#cache.bytes;
  }
}
