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
