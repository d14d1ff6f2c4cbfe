/**
 * @module
 * Per-isolate cache of user contexts, bounded in entries, estimated bytes and staleness, with
 * negative entries, invalidation on sync and coalesced loads; no timers.
 */
import type { ReadThroughOutcome } from "./backend.ts";
import type { UserContext } from "./store.ts";
import { estimateStringBytes, estimateValueBytes } from "../support/memory_size.ts";
import { Lru } from "./lru.ts";

/** Options for {@linkcode ContextCache}. */
export interface ContextCacheOptions {
  maxEntries: number;
  maxBytes: number;
  /** How long an entry is served before KV is read again (`CONTEXT_MAX_STALE_MS`); 0: never fresh. */
  maxStaleMs: number;
}

/** What is cached for one user. */
export interface CachedContext {
  context: UserContext;
  /** Negative entry: neither KV nor the backend knew the user. */
  absent: boolean;
  storedAt: number;
  /** This instance's last read-through, kept across re-reads of KV so the backend is not asked on every refresh. */
  checkedAt: number | undefined;
  source: "kv" | "backend";
  /** Of the load that stored the entry. */
  backend: ReadThroughOutcome;
}

export interface CacheLookup {
  entry: CachedContext;
  /** Younger than `maxStaleMs`: may be served without reading KV. */
  fresh: boolean;
}

export interface ContextCacheStats {
  entries: number;
  bytes: number;
  maxEntries: number;
  maxBytes: number;
  /** Negative entries included. */
  hits: number;
  negativeHits: number;
  misses: number;
  evictions: number;
  invalidations: number;
  coalesced: number;
}

interface Load {
  promise: Promise<CachedContext>;
  /** `valid` is cleared by `invalidate`: the load read data from before a sync and must not be stored. */
  token: { valid: boolean };
}

const ENTRY_OVERHEAD_BYTES = 144;

/** Estimates an entry's heap (key, context field by field, overhead) so `maxBytes` bounds memory. */
export function estimateEntryBytes(userId: string, value: CachedContext): number {
  return estimateStringBytes(userId) + ENTRY_OVERHEAD_BYTES + estimateValueBytes(value.context);
}

/** An {@linkcode Lru} of users with freshness, negative entries, invalidation and coalesced loads. */
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

  get maxStaleMs(): number {
    return this.#maxStaleMs;
  }

  /** Counts a hit or a miss and marks the entry used. */
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

  set(userId: string, value: CachedContext): boolean {
    return this.#lru.set(userId, value, estimateEntryBytes(userId, value));
  }

  /** Drops a user's entry, and keeps a load in flight from storing data read before this sync. */
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
   * Shares a load of a user already in flight; stores the result unless the user was invalidated
   * meanwhile. `load` must not reject: failures are part of the value.
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

  clear(): void {
    for (const load of this.#loads.values()) load.token.valid = false;
    this.#loads.clear();
    this.#lru.clear();
  }

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
