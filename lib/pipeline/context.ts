/**
 * @module
 * The context stage: what the edge knows about the logged-in user, from the per-isolate cache,
 * else Deno KV (eventual), else — when the edge has nothing or only old data — a read-through to
 * the backend whose answer goes through the sync apply path. It never throws and never waits past
 * the backend timeout; on failure it serves what the edge has, or nothing. See docs/edge_reads.md.
 */
import { z } from "zod";
import type { Config } from "../app/config.ts";
import type { BackendClient, BackendResult, ReadThroughOutcome } from "../data/backend.ts";
import type { CachedContext, ContextCache } from "../data/context_cache.ts";
import { type UserContext } from "../data/store.ts";
import { readUserContext } from "../data/readers.ts";
import {
  applyBackendEvents,
  type ApplyOptions,
  applyOptionsFromConfig,
  type ApplyResult,
} from "../sync/apply.ts";
import { parseSyncEvents, type SyncEvent } from "../sync/schema.ts";
import { compactViews } from "../sync/views.ts";

/** Where the data a request used came from. */
export type ContextSource = "cache" | "kv" | "backend" | "none";

/** How a context was obtained, for logs and metrics. */
export interface ContextOutcome {
  /** `hit`/`negative_hit`: a fresh entry; `miss`: none or stale; `bypass`: no lookup needed. */
  cache: "hit" | "negative_hit" | "miss" | "bypass";
  /** `skipped` on a cache hit (or no user / GPC); `error`: the read failed. */
  kv: "ok" | "error" | "skipped";
  /** The read-through (of this load, or of the load that stored the cached entry). */
  backend: ReadThroughOutcome;
  /** Why nothing was loaded. */
  reason?: "anonymous" | "gpc";
  /** KV failed and an expired cache entry was served. */
  stale: boolean;
  /** Applying the read-through answer to KV failed (the answer was still used). */
  applyError?: boolean;
  /** The events the read-through applied and found stale (absent when the apply is deferred). */
  applied?: ApplyResult;
  /** Events of the answer that were not for this user (or of kinds a read-through may not write). */
  ignoredEvents?: number;
  /** How long this load waited for its read-through, in ms (0 when refused without a call). */
  readThroughMs?: number;
}

/** The visitor's edge context, ready for the decision stage, the origin headers and `/_edge/context`. */
export interface EdgeUserContext {
  /** Newest first. Shared with the cache: never mutate. */
  recentViews: readonly { readonly itemId: string; readonly at: number }[];
  /** Items in the cart with a positive quantity, in cart order. */
  cartItemIds: readonly string[];
  /** Profile segments. Shared with the cache: never mutate. */
  segments: readonly string[];
  /** Profile attributes. Shared with the cache: never mutate. */
  attributes: Readonly<Record<string, unknown>>;
  source: ContextSource;
  outcome: ContextOutcome;
}

/** Options for {@linkcode loadUserContext}. */
export interface LoadUserContextOptions {
  kv: Deno.Kv;
  /** The current time, epoch ms (one value per request). */
  now: number;
  /** `CONTEXT_MAX_AGE_MS`, `RECENT_VIEWS_MAX` and the TTLs of the apply path. */
  config: Pick<
    Config,
    | "contextMaxAgeMs"
    | "recentViewsMax"
    | "viewTtlDays"
    | "cartTtlDays"
    | "profileTtlDays"
    | "tombstoneTtlDays"
  >;
  /** The per-isolate cache; without it every call reads KV. */
  cache?: ContextCache;
  /** The read-through client; without it (no `BACKEND_URL`) there is no read-through. */
  backend?: BackendClient;
  /** The visitor sent `Sec-GPC: 1`: no behavioural data is loaded or returned. */
  gpc?: boolean;
  /**
   * Receives work the request need not wait for (e.g. a tracker that `main.ts` awaits on
   * shutdown): the KV write of a read-through answer, and the compaction of a user's views that
   * a KV read found overdue. Without it that work is awaited.
   */
  waitUntil?: (work: Promise<unknown>) => void;
  /** Told about a failed KV read, apply or views compaction (the request carries on). */
  onError?: (stage: "kv" | "apply" | "compact", error: unknown) => void;
  /**
   * Bounds the KV read in time (`KV_TIMEOUT_MS`): a read past it counts as failed, so a stalled
   * KV degrades the request (stale entry or empty context) instead of holding it.
   */
  kvWithin?: <T>(read: Promise<T>) => Promise<T>;
}

const EMPTY_OUTCOME: ContextOutcome = { cache: "bypass", kv: "skipped", backend: "skipped", stale: false };

/**
 * Tells whether a request carries the Global Privacy Control signal (`Sec-GPC: 1`).
 * @returns `true` when behavioural data must not be used
 */
export function gpcRequested(headers: Headers): boolean {
  return headers.get("sec-gpc")?.trim() === "1";
}

/**
 * Removes behavioural data from a context for a visitor with GPC: recent views, cart, segments
 * and profile attributes (attributes are free-form and may be derived from behaviour).
 * @returns a copy without behavioural data (source and outcome kept)
 */
export function withoutBehaviouralData(context: EdgeUserContext): EdgeUserContext {
  return { ...context, recentViews: [], cartItemIds: [], segments: [], attributes: {} };
}

/**
 * Loads the visitor's edge context: cache → KV (eventual) → read-through when the edge has no
 * data or its newest data (or this instance's last read-through) is older than
 * `CONTEXT_MAX_AGE_MS`. Concurrent loads of one user share one KV read and one read-through.
 * @param userId the logged-in user; `undefined` for an anonymous visitor (nothing is loaded)
 * @param options KV, clock, configuration, cache, backend client, GPC
 * @returns the context and how it was obtained; never rejects
 */
export async function loadUserContext(
  userId: string | undefined,
  options: LoadUserContextOptions,
): Promise<EdgeUserContext> {
  if (userId === undefined || userId === "") return emptyContext({ ...EMPTY_OUTCOME, reason: "anonymous" });
  if (options.gpc) return emptyContext({ ...EMPTY_OUTCOME, reason: "gpc" });
  const { cache, now } = options;
  const lookup = cache?.get(userId, now);
  if (lookup?.fresh) {
    const { entry } = lookup;
    return toEdgeContext(entry, "cache", {
      cache: entry.absent ? "negative_hit" : "hit",
      kv: "skipped",
      backend: entry.backend,
      stale: false,
    });
  }
  const load = () => loadFromStore(userId, lookup?.entry, options);
  let loaded: Loaded;
  try {
    loaded = cache ? await cache.coalesce(userId, load) : await load();
  } catch (error) {
    options.onError?.("kv", error);
    // What this isolate had is better than nothing while KV fails, but only for as long as the
    // edge's data may age anyway (`CONTEXT_MAX_AGE_MS`); older, the visitor gets no data.
    const kept = cache?.peek(userId);
    const stale = kept && now - kept.storedAt <= options.config.contextMaxAgeMs ? kept : undefined;
    const outcome: ContextOutcome = {
      cache: "miss",
      kv: "error",
      backend: "skipped",
      stale: stale !== undefined,
    };
    return stale ? toEdgeContext(stale, "cache", outcome) : emptyContext(outcome);
  }
  return toEdgeContext(loaded, loaded.source, {
    cache: cache ? "miss" : "bypass",
    kv: "ok",
    backend: loaded.backend,
    stale: false,
    ...loaded.details,
  });
}

/** A loaded entry and the details of the load that produced it. */
interface Loaded extends CachedContext {
  details?: Pick<ContextOutcome, "applied" | "applyError" | "ignoredEvents" | "readThroughMs">;
}

/** Reads KV and, when needed, the backend. Rejects only when the KV read fails. */
async function loadFromStore(
  userId: string,
  previous: CachedContext | undefined,
  options: LoadUserContextOptions,
): Promise<Loaded> {
  const { now, backend, config } = options;
  const compactions: Promise<void>[] = [];
  const read = readUserContext(options.kv, userId, now, {
    recentViewsMax: config.recentViewsMax,
    // Sync writes views blind; the reads of users who are active here keep their views bounded.
    onCompactable: (erasedAt) => compactions.push(compactUserViews(userId, erasedAt, options)),
  });
  const edge = await (options.kvWithin ? options.kvWithin(read) : read);
  if (!options.waitUntil) await Promise.all(compactions);
  const checkedAt = previous?.checkedAt;
  const base: Omit<Loaded, "context" | "absent"> = {
    storedAt: now,
    checkedAt,
    source: "kv",
    backend: "skipped",
  };
  if (!backend || !needsReadThrough(edge, checkedAt, now, config.contextMaxAgeMs)) {
    return { ...base, context: edge, absent: isEmpty(edge) };
  }
  const answer: BackendResult = await backend.fetchUserContext(userId);
  // Whatever the answer, the load reports how long the read-through took (for its metric).
  base.details = { readThroughMs: answer.durationMs };
  if (answer.status === "unknown_user") {
    return { ...base, context: edge, absent: isEmpty(edge), checkedAt: now, backend: "unknown_user" };
  }
  if (answer.status === "failed") {
    return { ...base, context: edge, absent: isEmpty(edge), backend: `failed:${answer.reason}` };
  }
  const { kept, ignored } = selectEvents(answer.events, userId);
  let events: SyncEvent[];
  try {
    events = parseSyncEvents(kept);
  } catch {
    return { ...base, context: edge, absent: isEmpty(edge), backend: "invalid_events" };
  }
  const applyOptions = applyOptionsFromConfig(config, now);
  const merged = mergeEvents(edge, events, userId, applyOptions);
  const details: Loaded["details"] = { ...base.details };
  if (ignored) details.ignoredEvents = ignored;
  if (kept.length) {
    // The same version-gated path as pushed events, so a read-through cannot regress a push.
    const write = applyBackendEvents(options.kv, kept, applyOptions);
    if (options.waitUntil) {
      options.waitUntil(write.catch((error) => options.onError?.("apply", error)));
    } else {
      try {
        details.applied = await write;
      } catch (error) {
        options.onError?.("apply", error);
        details.applyError = true;
      }
    }
  }
  return {
    context: merged,
    absent: isEmpty(merged),
    storedAt: now,
    checkedAt: now,
    source: "backend",
    backend: "ok",
    details,
  };
}

/**
 * Deletes the stored views of a user that no read returns, handed to `waitUntil` when there is
 * one. Never rejects: a failure is reported, and the next read that finds the views overgrown
 * tries again.
 */
function compactUserViews(userId: string, erasedAt: number, options: LoadUserContextOptions): Promise<void> {
  const work = compactViews(options.kv, new Map([[userId, erasedAt]]), {
    recentViewsMax: options.config.recentViewsMax,
  }).then(() => {}, (error) => options.onError?.("compact", error));
  options.waitUntil?.(work);
  return work;
}

/**
 * Decides whether the edge's data is missing or too old. Age counts from the newest recent
 * view or this instance's last read-through of the user, whichever is later.
 */
function needsReadThrough(edge: UserContext, checkedAt: number | undefined, now: number, maxAgeMs: number) {
  if (checkedAt !== undefined && now - checkedAt < maxAgeMs) return false;
  if (isEmpty(edge)) return true;
  const newestView = edge.recentViews[0]?.at;
  return newestView === undefined || now - newestView >= maxAgeMs;
}

function isEmpty(context: UserContext): boolean {
  return context.recentViews.length === 0 && !context.cart && !context.profile;
}

const EventHead = z.object({ kind: z.string(), userId: z.string().optional() });
const USER_KINDS = new Set(["view", "cart", "profile", "erase"]);

/**
 * Keeps the events a read-through of one user may write: that user's views, cart, profile and
 * erasure, and related-item lists. Sessions, rules and other users' events are dropped.
 */
function selectEvents(events: unknown[], userId: string): { kept: unknown[]; ignored: number } {
  const kept: unknown[] = [];
  for (const event of events) {
    const head = EventHead.safeParse(event);
    // An event that is not even an object with a kind is kept, so validation rejects the answer.
    if (!head.success) kept.push(event);
    else if (head.data.kind === "related") kept.push(event);
    else if (USER_KINDS.has(head.data.kind) && head.data.userId === userId) kept.push(event);
  }
  return { kept, ignored: events.length - kept.length };
}

/**
 * What KV will hold once the events are applied (the apply itself may be deferred): views
 * merge as a set keeping the newest per item, cart and profile by highest version, an
 * erasure — the one already in KV or one in the answer, whichever is later — drops older data
 * from both sides; expired values are left out.
 */
function mergeEvents(
  edge: UserContext,
  events: readonly SyncEvent[],
  userId: string,
  options: ApplyOptions,
): UserContext {
  const { now } = options;
  // The backend may not know of an erasure the edge already holds (or not yet): both count.
  let erasedAt = edge.erasedAt ?? -Infinity;
  for (const event of events) {
    if (event.kind === "erase" && event.userId === userId) erasedAt = Math.max(erasedAt, event.at);
  }
  const views = new Map<string, number>();
  for (const view of edge.recentViews) {
    if (view.at > erasedAt) views.set(view.itemId, Math.max(view.at, views.get(view.itemId) ?? -Infinity));
  }
  // A stored cart or profile newer than the erasure stays; one of unknown age goes with it.
  const survives = <T extends { at?: number }>(value: T | undefined): T | undefined =>
    value && (erasedAt === -Infinity || (value.at !== undefined && value.at > erasedAt)) ? value : undefined;
  let cart = survives(edge.cart);
  let profile = survives(edge.profile);
  for (const event of events) {
    if (event.kind === "related" || event.kind === "rules" || event.kind === "erase") continue;
    if (!("userId" in event) || event.userId !== userId || event.at <= erasedAt) continue;
    if (event.kind === "view" && event.at + options.viewTtlMs > now) {
      views.set(event.itemId, Math.max(event.at, views.get(event.itemId) ?? -Infinity));
    } else if (event.kind === "cart" && event.at + options.cartTtlMs > now) {
      if (!cart || event.version > cart.version) {
        cart = { items: event.items, version: event.version, at: event.at };
      }
    } else if (event.kind === "profile" && event.at + options.profileTtlMs > now) {
      if (!profile || event.version > profile.version) {
        profile = {
          segments: event.segments,
          attributes: event.attributes,
          version: event.version,
          at: event.at,
        };
      }
    }
  }
  const recentViews = [...views].map(([itemId, at]) => ({ itemId, at }))
    .sort((a, b) => b.at - a.at || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0))
    .slice(0, options.recentViewsMax);
  return { recentViews, cart, profile, ...(erasedAt > -Infinity ? { erasedAt } : {}) };
}

function toEdgeContext(
  entry: CachedContext,
  source: ContextSource,
  outcome: ContextOutcome,
): EdgeUserContext {
  const { context } = entry;
  return {
    recentViews: context.recentViews,
    cartItemIds: context.cart?.items.filter((item) => item.qty > 0).map((item) => item.itemId) ?? [],
    segments: context.profile?.segments ?? [],
    attributes: context.profile?.attributes ?? {},
    source: entry.absent ? "none" : source,
    outcome,
  };
}

function emptyContext(outcome: ContextOutcome): EdgeUserContext {
  return { recentViews: [], cartItemIds: [], segments: [], attributes: {}, source: "none", outcome };
}
