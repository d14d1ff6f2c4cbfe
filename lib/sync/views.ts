/**
 * @module
 * Views in the per-view KV layout (layout 2, see `lib/store.ts`): sync writes each view under
 * its own key without reading anything, and now and then compacts a user's views: it deletes
 * the older views of the items a read scans (so reads stay one short round trip) and, after an
 * erasure, every view at or before it. Views that fall beyond the newest `RECENT_VIEWS_MAX`
 * items are left to expire (`expireIn`): deleting them too would cost a listing and a deletion
 * per view written, more than the write itself.
 */
import { keys, listViewWindow, parseViewEntry, recentViews } from "../store.ts";
import type { ViewEvent } from "./schema.ts";

/**
 * A user is compacted after about this many views written (chosen by a hash of each view, so
 * without reading), or when one batch writes this many of theirs: a read then scans about
 * `RECENT_VIEWS_MAX` entries plus the re-views since the last compaction.
 */
export const DEFAULT_COMPACT_EVERY = 64;

/** Deletions per atomic commit of a compaction: KV allows 1000 mutations and 800 KiB. */
const DELETES_PER_COMMIT = 1000;
const DELETE_BYTES_PER_COMMIT = 700 * 1024;
/** Entries fetched per round trip when listing a user's erased views. */
const ERASED_LIST_BATCH = 500;
/** `expireIn` floor, as for the other values: reads already ignore an expired view. */
const MIN_EXPIRE_IN_MS = 60_000;

/** Options for {@linkcode planViewWrites}. */
export interface ViewWriteOptions {
  /** The current time, epoch ms. */
  now: number;
  /** How many recent views a user keeps. */
  recentViewsMax: number;
  /** How long a view is kept after it happened. */
  viewTtlMs: number;
  /** See {@linkcode DEFAULT_COMPACT_EVERY}. */
  compactEvery?: number;
}

/** The blind writes of one user's views of one batch. */
export interface ViewWrites {
  mutations: { key: Deno.KvKey; value: { expiresAt: number }; expireIn: number }[];
  /** Views written. */
  applied: number;
  /** Views that cannot change what reads return: erased, expired, or not the newest. */
  stale: number;
  /** The user's views should be compacted once the writes are committed. */
  compact: boolean;
}

/**
 * Plans the writes of one user's views of a batch: the newest view of each item after the
 * erasure and not yet expired, at most `recentViewsMax` items (an item beyond the batch's own
 * newest ones can never be among the user's). Nothing is read, so a view already stored is
 * written (and counted applied) again; the write is idempotent.
 *
 * @param userId the user
 * @param events the user's view events of the batch
 * @param options clock, limits and TTL, and `erasedAt`: the user's tombstone (`-Infinity` when
 *   none); the commit must check that the tombstone is still what was assumed
 * @returns the mutations and counts
 */
export function planViewWrites(
  userId: string,
  events: readonly ViewEvent[],
  options: ViewWriteOptions & { erasedAt: number },
): ViewWrites {
  const { now, viewTtlMs } = options;
  const candidates = events.filter((event) => event.at > options.erasedAt && event.at + viewTtlMs > now);
  const written = recentViews(candidates, { erasedAt: options.erasedAt, max: options.recentViewsMax });
  const every = options.compactEvery ?? DEFAULT_COMPACT_EVERY;
  const mutations = written.map((view) => {
    const expiresAt = view.at + viewTtlMs;
    return {
      key: keys.view(userId, view.itemId, view.at),
      value: { expiresAt },
      expireIn: Math.max(expiresAt - now, MIN_EXPIRE_IN_MS),
    };
  });
  return {
    mutations,
    applied: written.length,
    stale: events.length - written.length,
    compact: written.length >= every ||
      written.some((view) => hash32(`${userId}\u0000${view.itemId}\u0000${view.at}`) % every === 0),
  };
}

/**
 * Deletes, for each user, the views a read scans but skips — older views of the same items
 * among the newest `recentViewsMax` items — and every view at or before the given erasure.
 * It deletes only entries it listed that a newer view of the same item dominates, or that are
 * erased, so it needs no checks and may run beside writers and other compactions.
 *
 * The tombstone is not read: `erasedAt` must be that of a committed tombstone (or `-Infinity`);
 * after a newer one, the views it erases are left to the compaction of that erasure.
 *
 * @param kv the store
 * @param users user id → `at` of the user's committed tombstone, `-Infinity` when none
 * @param options `recentViewsMax`: how many items a read returns
 * @returns how many entries were deleted
 */
export async function compactViews(
  kv: Deno.Kv,
  users: ReadonlyMap<string, number>,
  options: { recentViewsMax: number },
): Promise<number> {
  const doomed = (await Promise.all(
    [...users].map(([userId, erasedAt]) => doomedViews(kv, userId, erasedAt, options.recentViewsMax)),
  )).flat();
  const commits: Promise<Deno.KvCommitResult | Deno.KvCommitError>[] = [];
  let op = kv.atomic();
  let count = 0;
  let bytes = 0;
  for (const key of doomed) {
    const size = JSON.stringify(key).length * 3 + 32;
    if (count === DELETES_PER_COMMIT || bytes + size > DELETE_BYTES_PER_COMMIT) {
      commits.push(op.commit());
      op = kv.atomic();
      count = 0;
      bytes = 0;
    }
    op.delete(key);
    count++;
    bytes += size;
  }
  if (count) commits.push(op.commit());
  for (const result of await Promise.all(commits)) {
    // Without checks a commit only fails on a KV error, which `commit()` throws.
    if (!result.ok) throw new Error("Cannot commit the deletions of a views compaction");
  }
  return doomed.length;
}

async function doomedViews(
  kv: Deno.Kv,
  userId: string,
  erasedAt: number,
  max: number,
): Promise<Deno.KvKey[]> {
  const [window, erased] = await Promise.all([
    listViewWindow(kv, userId, { max, consistency: "strong" }),
    erasedAt === -Infinity ? [] : Array.fromAsync(
      // Keys hold `-at`: the views at or before the erasure are the rest of the prefix.
      kv.list({ prefix: keys.viewsPrefix(userId), start: keys.viewsFrom(userId, erasedAt) }, {
        consistency: "strong",
        batchSize: ERASED_LIST_BATCH,
      }),
    ),
  ]);
  const doomed = new Map<string, Deno.KvKey>();
  // In key order the first view of an item is its newest; the later ones are dominated.
  const seen = new Set<string>();
  for (const view of window) {
    if (seen.has(view.itemId)) doomed.set(JSON.stringify(view.key), view.key);
    seen.add(view.itemId);
  }
  for (const entry of erased) {
    const view = parseViewEntry(entry);
    if (!view || view.at <= erasedAt) doomed.set(JSON.stringify(entry.key), entry.key);
  }
  return [...doomed.values()];
}

/** FNV-1a: a cheap, stable spread of views over compaction turns (not for security). */
function hash32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
