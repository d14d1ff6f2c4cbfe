/**
 * @module
 * A per-isolate cache of user contexts, created once in `main.ts` and passed to the context
 * stage: bounded in entries and (estimated) bytes with LRU eviction, bounded staleness, negative
 * entries for users the edge knows nothing about, invalidation when this instance applies a sync
 * for a user, coalescing of concurrent loads, and counters for metrics. A hit costs a `Map` lookup
 * and re-insertion; there are no timers.
 */
import type { UserContext } from "./store.ts";
import { estimateStringBytes, estimateValueBytes } from "../support/memory_size.ts";

/** Options for {@linkcode ContextCache}. */
export interface ContextCacheOptions {
  /** Most entries kept (`CONTEXT_CACHE_MAX_ENTRIES`), at least 1. */
  maxEntries: number;
  /** Most estimated bytes kept (`CONTEXT_CACHE_MAX_BYTES`), at least 1. */
  maxBytes: number;
  /** How long an entry is served before KV is read again (`CONTEXT_MAX_STALE_MS`); 0: never fresh. */
  maxStaleMs: number;
}

/** What the read-through of a load did: skipped, the backend's answer, or why it failed. */
export type ReadThroughOutcome =
  | "skipped"
  | "ok"
  | "unknown_user"
  | "invalid_events"
  | `failed:${string}`;

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

interface Slot {
  value: CachedContext;
  bytes: number;
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
 * `estimateValueBytes`) and a fixed overhead per entry. Heap growth measured (after full GCs)
 * for 10 000 contexts of 0, 8 and 20 recent views is within 10 % of these estimates, so
 * `maxBytes` bounds real memory; the JSON text length used before undercounted it by a third.
 *
 * @param userId the key
 * @param value the entry
 * @returns estimated bytes
 */
export function estimateEntryBytes(userId: string, value: CachedContext): number {
  return estimateStringBytes(userId) + ENTRY_OVERHEAD_BYTES + estimateValueBytes(value.context);
}

/**
 * The per-isolate user context cache. `Map` insertion order is the LRU order: a hit re-inserts
 * its entry at the young end; eviction takes from the old end.
 *
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
  #slots = new Map<string, Slot>();
  #loads = new Map<string, Load>();
  #bytes = 0;
  #hits = 0;
  #negativeHits = 0;
  #misses = 0;
  #evictions = 0;
  #invalidations = 0;
  #coalesced = 0;

  /**
   * Creates an empty cache.
   *
   * @param options bounds and staleness
   * @throws {RangeError} when a bound is not a positive integer or `maxStaleMs` is negative
   */
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
  }

  /** How long an entry is fresh, in milliseconds. */
  get maxStaleMs(): number {
    return this.#maxStaleMs;
  }

  /**
   * Looks a user up, counts a hit or a miss, and marks the entry as recently used.
   *
   * @param userId the user
   * @param now the current time, epoch ms
   * @returns the entry and whether it is fresh, or `undefined` when there is none
   */
  get(userId: string, now: number): CacheLookup | undefined {
    const slot = this.#slots.get(userId);
    if (slot === undefined) {
      this.#misses++;
      return undefined;
    }
    this.#slots.delete(userId);
    this.#slots.set(userId, slot);
    const age = now - slot.value.storedAt;
    // A clock that went backwards makes the age negative; that is not freshness.
    const fresh = age >= 0 && age < this.#maxStaleMs;
    if (fresh) {
      this.#hits++;
      if (slot.value.absent) this.#negativeHits++;
    } else {
      this.#misses++;
    }
    return { entry: slot.value, fresh };
  }

  /**
   * Returns a user's entry, fresh or not, without counting or touching the LRU order (for
   * serving stale data when KV fails).
   *
   * @param userId the user
   * @returns the entry, or `undefined`
   */
  peek(userId: string): CachedContext | undefined {
    return this.#slots.get(userId)?.value;
  }

  /**
   * Stores an entry, then evicts the least recently used entries until both bounds hold. An
   * entry larger than `maxBytes` on its own is not stored.
   *
   * @param userId the user
   * @param value the entry
   * @returns whether the entry was stored
   */
  set(userId: string, value: CachedContext): boolean {
    this.#drop(userId);
    const bytes = estimateEntryBytes(userId, value);
    if (bytes > this.#maxBytes) return false;
    this.#slots.set(userId, { value, bytes });
    this.#bytes += bytes;
    while (this.#slots.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const oldest = this.#slots.keys().next();
      if (oldest.done) break;
      this.#drop(oldest.value);
      this.#evictions++;
    }
    return true;
  }

  /**
   * Drops a user's entry, and makes a load of that user already in flight not store its
   * result (it may have read data from before the change). Call it when this instance applies
   * a sync for the user.
   *
   * @param userId the user
   * @returns whether anything was dropped or cancelled
   */
  invalidate(userId: string): boolean {
    const load = this.#loads.get(userId);
    if (load) {
      load.token.valid = false;
      this.#loads.delete(userId);
    }
    const dropped = this.#drop(userId);
    if (dropped || load) this.#invalidations++;
    return dropped || load !== undefined;
  }

  /**
   * {@linkcode ContextCache.invalidate} for several users, e.g. as `applyEvents`' `onUsersChanged`.
   *
   * @param userIds the users
   */
  invalidateMany(userIds: Iterable<string>): void {
    for (const userId of userIds) this.invalidate(userId);
  }

  /**
   * Runs `load` for a user unless a load of that user is already in flight, in which case its
   * promise is shared. The result is stored when it settles, unless the user was invalidated
   * meanwhile (the result is still returned to the callers).
   *
   * @param userId the user
   * @param load reads the user's context; must not reject (failures are part of the value)
   * @returns the loaded entry
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
    this.#slots.clear();
    this.#bytes = 0;
  }

  /**
   * Current sizes and counters.
   *
   * @returns a snapshot for metrics
   */
  stats(): ContextCacheStats {
    return {
      entries: this.#slots.size,
      bytes: this.#bytes,
      maxEntries: this.#maxEntries,
      maxBytes: this.#maxBytes,
      hits: this.#hits,
      negativeHits: this.#negativeHits,
      misses: this.#misses,
      evictions: this.#evictions,
      invalidations: this.#invalidations,
      coalesced: this.#coalesced,
    };
  }

  #drop(userId: string): boolean {
    const slot = this.#slots.get(userId);
    if (slot === undefined) return false;
    this.#slots.delete(userId);
    this.#bytes -= slot.bytes;
    return true;
  }
}
