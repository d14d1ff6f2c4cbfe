/**
 * @module
 * The per-isolate cache of user contexts: an LRU bounded in entries and estimated bytes, with
 * bounded staleness, negative entries, invalidation when this instance applies a sync for a user,
 * coalesced loads and counters for metrics. There are no timers.
 */
import type { ReadThroughOutcome } from "./backend.ts";
import type { UserContext } from "./store.ts";
import { estimateStringBytes, estimateValueBytes } from "../support/memory_size.ts";
import { Lru } from "./lru.ts";

/** Options for {@linkcode ContextCache}. */
export interface ContextCacheOptions {
  /** Most entries kept (`CONTEXT_CACHE_MAX_ENTRIES`), at least 1. */
  maxEntries: number;
  /** Most estimated bytes kept (`CONTEXT_CACHE_MAX_BYTES`), at least 1. */
  maxBytes: number;
  /** How long an entry is served before KV is read again (`CONTEXT_MAX_STALE_MS`); 0: never fresh. */
  maxStaleMs: number;
}

/** What is cached for one user. */
export interface CachedContext {
  /** What the edge knows; empty for a negative entry. */
  context: UserContext;
  /** Negative entry: neither KV nor the backend knew the user when it was stored. */
  absent: boolean;
  /** When the entry was stored, epoch ms; it is fresh until `storedAt + maxStaleMs`. */
  storedAt: number;
  /**
   * When this instance last completed a read-through for the user (data or 404), epoch ms;
   * kept across re-reads of KV so the backend is not asked again on every refresh.
   */
  checkedAt: number | undefined;
  /** Where the data came from: KV alone, or KV merged with a read-through answer. */
  source: "kv" | "backend";
  /** What the read-through of the load that stored the entry did. */
  backend: ReadThroughOutcome;
}

/** A lookup's answer. */
export interface CacheLookup {
  entry: CachedContext;
  /** Younger than `maxStaleMs`: may be served without reading KV. */
  fresh: boolean;
}

/** Counters and sizes for metrics. */
export interface ContextCacheStats {
  entries: number;
  bytes: number;
  maxEntries: number;
  maxBytes: number;
  /** Lookups answered by a fresh entry (negative entries included). */
  hits: number;
  /** Hits on negative entries. */
  negativeHits: number;
  /** Lookups that found no entry or only a stale one. */
  misses: number;
  /** Entries dropped to stay within the bounds. */
  evictions: number;
  /** Entries dropped by {@linkcode ContextCache.invalidate}. */
  invalidations: number;
  /** Concurrent loads that joined one already in flight. */
  coalesced: number;
}

interface Load {
  promise: Promise<CachedContext>;
  /** `valid` is cleared by `invalidate`: the load read data from before a sync and must not be stored. */
  token: { valid: boolean };
}

/**
 * Per-entry bytes beside the key and the context: the `Map` entry (with its share of the
 * table's spare capacity), the slot, the {@linkcode CachedContext} object and its two
 * timestamps (boxed numbers).
 */
const ENTRY_OVERHEAD_BYTES = 144;

/**
 * Estimates the V8 heap an entry takes: the key, the context (walked field by field, see
 * `estimateValueBytes`) and a fixed overhead, so `maxBytes` bounds real memory.
 */
export function estimateEntryBytes(userId: string, value: CachedContext): number {
  return estimateStringBytes(userId) + ENTRY_OVERHEAD_BYTES + estimateValueBytes(value.context);
}

/**
 * The per-isolate user context cache, an {@linkcode Lru} of users with freshness, negative
 * entries, invalidation and coalesced loads on top.
 * @example
 * ```ts
 * const cache = new ContextCache({ maxEntries: 10_000, maxBytes: 8 << 20, maxStaleMs: 2000 });
 * cache.set("u1", { context, absent: false, storedAt: now, checkedAt: undefined, source: "kv", backend: "skipped" });
 * cache.get("u1", now)?.fresh; // true
 * ```
 */
export class ContextCache {
  #maxEntries: number;
  #maxBytes: number;
  #maxStaleMs: number;
  #lru: Lru<string, CachedContext>;
  #loads = new Map<string, Load>();
  #hits = 0;
  #negativeHits = 0;
  #misses = 0;
  #invalidations = 0;
  #coalesced = 0;

  /** @throws {RangeError} when a bound is not a positive integer or `maxStaleMs` is negative */
  constructor(options: ContextCacheOptions) {
    for (const name of ["maxEntries", "maxBytes"] as const) {
      if (!Number.isInteger(options[name]) || options[name] < 1) {
        throw new RangeError(`Context cache "${name}" must be a positive integer, got "${options[name]}"`);
      }
    }
    if (!Number.isFinite(options.maxStaleMs) || options.maxStaleMs < 0) {
      throw new RangeError(`Context cache "maxStaleMs" must not be negative, got "${options.maxStaleMs}"`);
    }
    this.#maxEntries = options.maxEntries;
    this.#maxBytes = options.maxBytes;
    this.#maxStaleMs = options.maxStaleMs;
    this.#lru = new Lru({ maxEntries: options.maxEntries, maxBytes: options.maxBytes });
  }

  /** How long an entry is fresh, in milliseconds. */
  get maxStaleMs(): number {
    return this.#maxStaleMs;
  }

  /** Looks a user up (entry and freshness, or `undefined`), counts a hit or a miss, marks it used. */
  get(userId: string, now: number): CacheLookup | undefined {
    const entry = this.#lru.get(userId);
    if (entry === undefined) {
      this.#misses++;
      return undefined;
    }
    const age = now - entry.storedAt;
    // A clock that went backwards makes the age negative; that is not freshness.
    const fresh = age >= 0 && age < this.#maxStaleMs;
    if (fresh) {
      this.#hits++;
      if (entry.absent) this.#negativeHits++;
    } else {
      this.#misses++;
    }
    return { entry, fresh };
  }

  /** A user's entry, fresh or not, without counting or touching the order: stale data for a failing KV. */
  peek(userId: string): CachedContext | undefined {
    return this.#lru.peek(userId);
  }

  /** Stores an entry (not one larger than `maxBytes` alone), evicting the least recently used. */
  set(userId: string, value: CachedContext): boolean {
    return this.#lru.set(userId, value, estimateEntryBytes(userId, value));
  }

  /**
   * Drops a user's entry, and makes a load of that user already in flight not store its
   * result (it may have read data from before the change). Call it when this instance applies
   * a sync for the user.
   * @returns whether anything was dropped or cancelled
   */
  invalidate(userId: string): boolean {
    const load = this.#loads.get(userId);
    if (load) {
      load.token.valid = false;
      this.#loads.delete(userId);
    }
    const dropped = this.#lru.delete(userId);
    if (dropped || load) this.#invalidations++;
    return dropped || load !== undefined;
  }

  /** {@linkcode ContextCache.invalidate} for several users, e.g. as `applyEvents`' `onUsersChanged`. */
  invalidateMany(userIds: Iterable<string>): void {
    for (const userId of userIds) this.invalidate(userId);
  }

  /**
   * Runs `load` for a user unless a load of that user is already in flight, in which case its
   * promise is shared. The result is stored when it settles, unless the user was invalidated
   * meanwhile (the result is still returned to the callers).
   * @param load reads the user's context; must not reject (failures are part of the value)
   */
  coalesce(userId: string, load: () => Promise<CachedContext>): Promise<CachedContext> {
    const running = this.#loads.get(userId);
    if (running) {
      this.#coalesced++;
      return running.promise;
    }
    const token = { valid: true };
    const promise = load().then((value) => {
      if (token.valid) this.set(userId, value);
      return value;
    }).finally(() => {
      if (this.#loads.get(userId)?.token === token) this.#loads.delete(userId);
    });
    this.#loads.set(userId, { token, promise });
    return promise;
  }

  /** Drops every entry (counters are kept). */
  clear(): void {
    for (const load of this.#loads.values()) load.token.valid = false;
    this.#loads.clear();
    this.#lru.clear();
  }

  /** Current sizes and counters, for metrics. */
  stats(): ContextCacheStats {
    return {
      entries: this.#lru.size,
      bytes: this.#lru.bytes,
      maxEntries: this.#maxEntries,
      maxBytes: this.#maxBytes,
      hits: this.#hits,
      negativeHits: this.#negativeHits,
      misses: this.#misses,
      evictions: this.#lru.evictions,
      invalidations: this.#invalidations,
      coalesced: this.#coalesced,
    };
  }
}
