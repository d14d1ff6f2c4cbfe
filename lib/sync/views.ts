/**
 * @module
 * Views in the per-view KV layout (layout 2, `lib/data/store.ts`): sync writes each view blind under
 * its own key, and a compaction deletes the views of a user that a read can no longer return
 * (docs/sync.md, "Views: one key per view"), so that ordinary writes never need to read.
 */
import {
  expireIn,
  keys,
  KV_COMMIT_LIMITS,
  kvKeyBytes,
  parseViewEntry,
  recentViews,
  type StoredView,
} from "../data/store.ts";
import type { ViewEvent } from "./schema.ts";

const COMPACT_USERS_AT_ONCE = 16;
const COMPACT_LIST_BATCH = 500;

/** Options for {@linkcode planViewWrites}. */
export interface ViewWriteOptions {
  now: number;
  recentViewsMax: number;
  viewTtlMs: number;
}

/** The blind writes of one user's views of one batch. */
export interface ViewWrites {
  mutations: { key: Deno.KvKey; value: { expiresAt: number }; expireIn: number }[];
  applied: number;
  /** Erased, expired, or not the newest. */
  stale: number;
}

/**
 * Plans the blind writes of one user's views of a batch: the newest view of each item after the
 * erasure (`erasedAt`, which the commit must check) and unexpired, at most `recentViewsMax` items.
 */
export function planViewWrites(
  userId: string,
  events: readonly ViewEvent[],
  options: ViewWriteOptions & { erasedAt: number },
): ViewWrites {
  const { now, viewTtlMs } = options;
  const candidates = events.filter((event) => event.at > options.erasedAt && event.at + viewTtlMs > now);
  const written = recentViews(candidates, { erasedAt: options.erasedAt, max: options.recentViewsMax });
  const mutations = written.map((view) => {
    const expiresAt = view.at + viewTtlMs;
    return {
      key: keys.view(userId, view.itemId, view.at),
      value: { expiresAt },
      expireIn: expireIn(expiresAt, now),
    };
  });
  return { mutations, applied: written.length, stale: events.length - written.length };
}

/**
 * Deletes, for each user (→ the `at` of a committed tombstone, or `-Infinity`), every stored view a
 * read can never return. Needs no checks, so it may run beside writers and other compactions.
 * @throws Error when a deletion commit fails
 */
export async function compactViews(
  kv: Deno.Kv,
  users: ReadonlyMap<string, number>,
  options: { recentViewsMax: number },
): Promise<number> {
  const deletions = new Deletions(kv);
  const listed: PromiseSettledResult<unknown>[] = [];
  const all = [...users];
  // A batch may erase up to 1000 users: their listings run a few at a time, not all at once.
  for (let i = 0; i < all.length; i += COMPACT_USERS_AT_ONCE) {
    listed.push(
      ...await Promise.allSettled(
        all.slice(i, i + COMPACT_USERS_AT_ONCE).map(([userId, erasedAt]) =>
          Promise.all([
            deleteUnreachable(kv, userId, { erasedAt, max: options.recentViewsMax, deletions }),
            erasedAt === -Infinity ? undefined : deleteErased(kv, userId, { erasedAt, deletions }),
          ])
        ),
      ),
    );
  }
  // Commits already started are awaited even when a listing failed.
  const count = await deletions.flush();
  for (const result of listed) if (result.status === "rejected") throw result.reason;
  return count;
}

/** Deletions of a compaction, packed into atomic commits within KV's limits as they come. */
class Deletions {
  #kv: Deno.Kv;
  #op: Deno.AtomicOperation;
  #count = 0;
  #bytes = 0;
  #total = 0;
  #commits: Promise<Deno.KvCommitResult | Deno.KvCommitError>[] = [];

  constructor(kv: Deno.Kv) {
    this.#kv = kv;
    this.#op = kv.atomic();
  }

  add(key: Deno.KvKey): void {
    // A delete's size is its key: KV's 80 KiB key total binds long before its 800 KiB total.
    const size = kvKeyBytes(key);
    if (this.#count === KV_COMMIT_LIMITS.mutations || this.#bytes + size > KV_COMMIT_LIMITS.keyBytes) {
      this.#commit();
    }
    this.#op.delete(key);
    this.#count++;
    this.#bytes += size;
    this.#total++;
  }

  async flush(): Promise<number> {
    if (this.#count) this.#commit();
    for (const result of await Promise.all(this.#commits)) {
      // Without checks a commit only fails on a KV error, which `commit()` throws.
      if (!result.ok) throw new Error("Cannot commit the deletions of a views compaction");
    }
    return this.#total;
  }

  #commit(): void {
    const commit = this.#op.commit();
    // Awaited in `flush`; this keeps a failure before then from counting as unhandled.
    commit.catch(() => {});
    this.#commits.push(commit);
    this.#op = this.#kv.atomic();
    this.#count = 0;
    this.#bytes = 0;
  }
}

/**
 * Deletes a user's views after `erasedAt` that no read can return. Key order is newest first, so
 * once `max` items have a view newer than an entry, it and every later one are beyond them. Why
 * this is safe without checks: docs/sync.md, "Views: one key per view".
 */
async function deleteUnreachable(
  kv: Deno.Kv,
  userId: string,
  options: { erasedAt: number; max: number; deletions: Deletions },
): Promise<void> {
  const { max, deletions } = options;
  const prefix = keys.viewsPrefix(userId);
  // Keys hold `-at`: the views at or before the erasure are the rest of the prefix.
  const selector = options.erasedAt === -Infinity
    ? { prefix }
    : { prefix, end: keys.viewsFrom(userId, options.erasedAt) };
  /** The newest view of each item met so far that may still rank among the first `max`. */
  const newest: StoredView[] = [];
  const items = new Set<string>();
  for await (const entry of kv.list(selector, { consistency: "strong", batchSize: COMPACT_LIST_BATCH })) {
    const view = parseViewEntry(entry);
    // Reads skip a malformed entry; it is not this layout's to delete (but see `deleteErased`).
    if (!view) continue;
    const dominated = items.has(view.itemId) || (newest.length >= max && view.at < newest[max - 1]!.at);
    if (dominated) {
      deletions.add(view.key);
      continue;
    }
    newest.push(view);
    items.add(view.itemId);
  }
  // Views at the `at` of the last kept item: KV orders their item ids by UTF-8 bytes, reads by
  // UTF-16 units, so rank them as reads do.
  const kept = new Set(recentViews(newest, { erasedAt: -Infinity, max }));
  for (const view of newest) if (!kept.has(view)) deletions.add(view.key);
}

/** Deletes a user's views at or before `erasedAt`, and malformed entries among them. */
async function deleteErased(
  kv: Deno.Kv,
  userId: string,
  options: { erasedAt: number; deletions: Deletions },
): Promise<void> {
  const { erasedAt, deletions } = options;
  const entries = kv.list({ prefix: keys.viewsPrefix(userId), start: keys.viewsFrom(userId, erasedAt) }, {
    consistency: "strong",
    batchSize: COMPACT_LIST_BATCH,
  });
  for await (const entry of entries) {
    const view = parseViewEntry(entry);
    if (!view || view.at <= erasedAt) deletions.add(entry.key);
  }
}
