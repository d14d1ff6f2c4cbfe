/**
 * @module
 * The context stage: the logged-in user's data from the cache, else KV, else (nothing or only old
 * data) a read-through whose answer goes through the sync apply path. It never throws; on failure it
 * serves what the edge has. See docs/edge_reads.md.
 */
import { z } from "zod";
import type { Config } from "../app/config.ts";
import type { BackendClient, BackendResult, ReadThroughOutcome } from "../data/backend.ts";
import type { CachedContext, ContextCache } from "../data/context_cache.ts";
import { type UserContext } from "../data/store.ts";
import { readUserContext } from "../data/readers.ts";
import { applyBackendEvents, applyOptionsFromConfig, type ApplyResult } from "../sync/apply.ts";
import type { ApplyOptions } from "../sync/apply/unit.ts";
import { parseSyncEvents, type SyncEvent } from "../sync/schema.ts";
import { compactViews } from "../sync/views.ts";

export type ContextSource = "cache" | "kv" | "backend" | "none";

/** How a context was obtained, for logs and metrics. */
export interface ContextOutcome {
  cache: "hit" | "negative_hit" | "miss" | "bypass";
  kv: "ok" | "error" | "skipped";
  /** Of this load, or of the load that stored the cached entry. */
  backend: ReadThroughOutcome;
  reason?: "anonymous" | "gpc";
  /** KV failed and an expired cache entry was served. */
  stale: boolean;
  /** Applying the read-through answer failed; the answer was still used. */
  applyError?: boolean;
  /** Absent when the apply is deferred. */
  applied?: ApplyResult;
  /** Events not for this user, or of kinds a read-through may not write. */
  ignoredEvents?: number;
  readThroughMs?: number;
}

/** The visitor's edge context. Arrays and records are shared with the cache: never mutate. */
export interface EdgeUserContext {
  /** Newest first. */
  recentViews: readonly { readonly itemId: string; readonly at: number }[];
  /** Positive quantities, in cart order. */
  cartItemIds: readonly string[];
  segments: readonly string[];
  attributes: Readonly<Record<string, unknown>>;
  source: ContextSource;
  outcome: ContextOutcome;
}

/** Options for {@linkcode loadUserContext}. */
export interface LoadUserContextOptions {
  kv: Deno.Kv;
  /** One value per request. */
  now: number;
  config: Pick<
    Config,
    | "contextMaxAgeMs"
    | "recentViewsMax"
    | "viewTtlDays"
    | "cartTtlDays"
    | "profileTtlDays"
    | "tombstoneTtlDays"
  >;
  cache?: ContextCache;
  backend?: BackendClient;
  /** `Sec-GPC: 1`: no behavioural data is loaded or returned. */
  gpc?: boolean;
  /** Takes the read-through's KV write and views compaction off the request; without it they are awaited. */
  waitUntil?: (work: Promise<unknown>) => void;
  /** Told about a failed KV read, apply or compaction; the request carries on. */
  onError?: (stage: "kv" | "apply" | "compact", error: unknown) => void;
  /** Bounds the KV read (`KV_TIMEOUT_MS`); a read past it counts as failed. */
  kvWithin?: <T>(read: Promise<T>) => Promise<T>;
}

const EMPTY_OUTCOME: ContextOutcome = { cache: "bypass", kv: "skipped", backend: "skipped", stale: false };

/** Whether a request carries the Global Privacy Control signal: then behavioural data must not be used. */
export function gpcRequested(headers: Headers): boolean {
  return headers.get("sec-gpc")?.trim() === "1";
}

/** A copy without behavioural data; attributes go too, since they may be derived from behaviour. */
export function withoutBehaviouralData(context: EdgeUserContext): EdgeUserContext {
  return { ...context, recentViews: [], cartItemIds: [], segments: [], attributes: {} };
}

/**
 * Loads the visitor's edge context: cache → KV → read-through when the edge's data is missing or
 * older than `CONTEXT_MAX_AGE_MS`; concurrent loads of one user share one of each. Never rejects.
 *
 * @param userId the logged-in user; `undefined` for an anonymous visitor (nothing is loaded)
 * @param options KV, clock, configuration, cache, backend client, GPC
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
    // What this isolate had, while no older than the edge's data may age anyway.
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

interface Loaded extends CachedContext {
  details?: Pick<ContextOutcome, "applied" | "applyError" | "ignoredEvents" | "readThroughMs">;
}

/** Rejects only when the KV read fails. */
async function loadFromStore(
  userId: string,
  previous: CachedContext | undefined,
  options: LoadUserContextOptions,
): Promise<Loaded> {
  const { now, backend, config } = options;
  const compactions: Promise<void>[] = [];
  const read = readUserContext(options.kv, userId, now, {
    recentViewsMax: config.recentViewsMax,
    // Sync writes views blind; reads of active users keep them bounded.
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
  return await readThrough(userId, edge, base, backend, options);
}

/** Asks the backend, merges its answer with the edge's data and applies it. */
async function readThrough(
  userId: string,
  edge: UserContext,
  base: Omit<Loaded, "context" | "absent">,
  backend: BackendClient,
  options: LoadUserContextOptions,
): Promise<Loaded> {
  const { now, config } = options;
  const answer: BackendResult = await backend.fetchUserContext(userId);
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

/** Never rejects: the next read that finds the views overgrown tries again. */
function compactUserViews(userId: string, erasedAt: number, options: LoadUserContextOptions): Promise<void> {
  const work = compactViews(options.kv, new Map([[userId, erasedAt]]), {
    recentViewsMax: options.config.recentViewsMax,
  }).then(() => {}, (error) => options.onError?.("compact", error));
  options.waitUntil?.(work);
  return work;
}

/** Age counts from the newest view or this instance's last read-through, whichever is later. */
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

/** A read-through may write only that user's events and related-item lists. */
function selectEvents(events: unknown[], userId: string): { kept: unknown[]; ignored: number } {
  const kept: unknown[] = [];
  for (const event of events) {
    const head = EventHead.safeParse(event);
    // Kept, so validation rejects the answer.
    if (!head.success) kept.push(event);
    else if (head.data.kind === "related") kept.push(event);
    else if (USER_KINDS.has(head.data.kind) && head.data.userId === userId) kept.push(event);
  }
  return { kept, ignored: events.length - kept.length };
}

/** What KV will hold once the events are applied (the apply itself may be deferred). */
function mergeEvents(
  edge: UserContext,
  events: readonly SyncEvent[],
  userId: string,
  options: ApplyOptions,
): UserContext {
  const { now } = options;
  // The backend may not know of an erasure the edge holds: both count.
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
