/**
 * @module
 * The per-isolate caches of the request path, built from the configuration in one place (the
 * composition root and the tests both use it). Each is bounded; see the module of each cache.
 */
import type { Config } from "./config.ts";
import { ContextCache } from "./context_cache.ts";
import { DEFAULT_UA_CACHE_SIZE, UaCache } from "./device.ts";
import { RelatedCache } from "./related_cache.ts";
import { SessionCache } from "./session_cache.ts";

/** The caches `Deps` carries. */
export interface Caches {
  uaCache: UaCache;
  sessionCache: SessionCache;
  relatedCache: RelatedCache;
  contextCache: ContextCache;
}

/**
 * Creates the caches: sessions, related lists and contexts share `CONTEXT_MAX_STALE_MS` and the
 * entry bound `CONTEXT_CACHE_MAX_ENTRIES`; contexts and related lists are also bounded in
 * estimated heap bytes, each by `CONTEXT_CACHE_MAX_BYTES`. Sessions need no byte bound: an
 * entry is a cookie value of at most 256 characters and a user id (under 1 KiB).
 *
 * @param config the configuration
 * @returns fresh, empty caches
 */
export function cachesFromConfig(
  config: Pick<Config, "contextCacheMaxEntries" | "contextCacheMaxBytes" | "contextMaxStaleMs">,
): Caches {
  const bounds = { maxEntries: config.contextCacheMaxEntries, maxStaleMs: config.contextMaxStaleMs };
  return {
    uaCache: new UaCache(DEFAULT_UA_CACHE_SIZE),
    sessionCache: new SessionCache(bounds),
    relatedCache: new RelatedCache({ ...bounds, maxBytes: config.contextCacheMaxBytes }),
    contextCache: new ContextCache({ ...bounds, maxBytes: config.contextCacheMaxBytes }),
  };
}

/** What the service keeps in its heap besides the caches: code, rules, memos, requests in flight. */
export const SERVICE_HEAP_BYTES = 32 * 1024 * 1024;
/** The most a session cache entry is counted (a cookie value of ≤ 256 characters and a user id). */
const SESSION_ENTRY_BYTES = 1024;

/**
 * Checks that the caches at their bounds, with the rest of the service, fit in half of V8's heap
 * limit. `deno task start` caps the heap (`--v8-flags` in `deno.json`) so that RSS follows the
 * live data rather than the allocation rate; raising the cache bounds past the cap would make
 * garbage collection run all the time, or the process run out of memory.
 *
 * @param config the cache bounds
 * @param heapLimitBytes V8's heap size limit (`node:v8` `getHeapStatistics().heap_size_limit`)
 * @returns a message naming the settings when they do not fit, else undefined
 */
export function heapHeadroomProblem(
  config: Pick<Config, "contextCacheMaxEntries" | "contextCacheMaxBytes">,
  heapLimitBytes: number,
): string | undefined {
  // Contexts and related lists are bounded in estimated bytes each; sessions by entries.
  const caches = 2 * config.contextCacheMaxBytes + config.contextCacheMaxEntries * SESSION_ENTRY_BYTES;
  const needed = caches + SERVICE_HEAP_BYTES;
  if (needed <= heapLimitBytes / 2) return undefined;
  const mb = (bytes: number) => Math.ceil(bytes / 1048576);
  return `CONTEXT_CACHE_MAX_BYTES and CONTEXT_CACHE_MAX_ENTRIES allow ~${mb(caches)} MB of caches, ` +
    `more than half of the V8 heap limit (${mb(heapLimitBytes)} MB) leaves beside the service's own ` +
    `~${mb(SERVICE_HEAP_BYTES)} MB: raise --max-old-space-size to at least ${
      mb(2 * needed)
    } or lower the bounds`;
}
