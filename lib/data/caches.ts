/**
 * @module
 * The per-isolate caches of the request path, built from the configuration in one place (the
 * composition root and the tests both use it). Each is bounded; see the module of each cache.
 */
import type { Config } from "../app/config.ts";
import { ContextCache } from "./context_cache.ts";
import { DEFAULT_UA_CACHE_SIZE, UaCache } from "../pipeline/device.ts";
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
/** What one queued exposure event is counted (ids, time and path as strings; docs/performance.md). */
const EXPOSURE_EVENT_BYTES = 512;
/** Heap a body being parsed holds per byte of its size: the text, the parsed JSON and the validated copy. */
const PARSED_BODY_FACTOR = 6;

/**
 * Checks the heap budget against V8's heap limit. `deno task start` caps the heap (`--v8-flags` in
 * `deno.json`) so that RSS follows the live data rather than the allocation rate; bounds past
 * the cap would make garbage collection run all the time, or the process run out of memory.
 * Two budgets: what stays (the caches at their bounds, a full exposure buffer and the service itself) must fit in half
 * the limit, and with the most that bursts can add (`SYNC_MAX_CONCURRENT` pushes of
 * `SYNC_MAX_BYTES` and `BACKEND_MAX_CONCURRENT` read-through answers being parsed) in 80 %.
 * @param config the cache bounds and the bounds of concurrent parsing
 * @param heapLimitBytes V8's heap size limit (`node:v8` `getHeapStatistics().heap_size_limit`)
 * @param backendMaxBytes the largest read-through answer read (when a backend is configured)
 * @returns a message naming the settings when they do not fit, else undefined
 */
export function heapHeadroomProblem(
  config: Pick<
    Config,
    | "contextCacheMaxEntries"
    | "contextCacheMaxBytes"
    | "syncMaxConcurrent"
    | "syncMaxBytes"
    | "backendUrl"
    | "backendMaxConcurrent"
    | "exposuresUrl"
    | "exposuresBufferMax"
  >,
  heapLimitBytes: number,
  backendMaxBytes: number,
): string | undefined {
  const mb = (bytes: number) => Math.ceil(bytes / 1048576);
  // Contexts and related lists are bounded in estimated bytes each; sessions by entries.
  const caches = 2 * config.contextCacheMaxBytes + config.contextCacheMaxEntries * SESSION_ENTRY_BYTES;
  // Queued exposure events stay in the heap while the backend is slow or down.
  const exposures = config.exposuresUrl ? config.exposuresBufferMax * EXPOSURE_EVENT_BYTES : 0;
  const steady = caches + exposures + SERVICE_HEAP_BYTES;
  if (steady > heapLimitBytes / 2) {
    const queued = exposures ? ` and EXPOSURES_BUFFER_MAX ~${mb(exposures)} MB of exposure events` : "";
    return `CONTEXT_CACHE_MAX_BYTES and CONTEXT_CACHE_MAX_ENTRIES allow ~${
      mb(caches)
    } MB of caches${queued}, ` +
      `more than half of the V8 heap limit (${mb(heapLimitBytes)} MB) leaves beside the service's own ` +
      `~${mb(SERVICE_HEAP_BYTES)} MB: raise --max-old-space-size to at least ${
        mb(2 * steady)
      } or lower the bounds`;
  }
  const bursts = PARSED_BODY_FACTOR * (config.syncMaxConcurrent * config.syncMaxBytes +
    (config.backendUrl ? config.backendMaxConcurrent * backendMaxBytes : 0));
  if (steady + bursts > 0.8 * heapLimitBytes) {
    return `SYNC_MAX_CONCURRENT × SYNC_MAX_BYTES and BACKEND_MAX_CONCURRENT allow ~${
      mb(bursts)
    } MB of bodies ` +
      `being parsed at once, beside ~${mb(steady)} MB of caches and service: more than 80 % of the V8 heap ` +
      `limit (${mb(heapLimitBytes)} MB). Raise --max-old-space-size to at least ${
        mb((steady + bursts) / 0.8)
      } or lower the bounds`;
  }
  return undefined;
}
