/**
 * @module
 * Typed, eventually consistent reads of the KV layout of `store.ts`: sessions, a user's context
 * (both view layouts merged), related lists and rule sets. Values are parsed when read back; a
 * malformed one counts as absent.
 */
import {
  CartValue,
  DEFAULT_RECENT_VIEWS_MAX,
  getManyChunked,
  hashSessionId,
  keys,
  LegacyViewsValue,
  parseStored,
  parseViewEntry,
  ProfileValue,
  recentViews,
  RelatedValue,
  RulesControlValue,
  RulesValue,
  SessionValue,
  type StoredView,
  TombstoneValue,
  type UserContext,
  VIEWS_COMPACT_SLACK,
} from "./store.ts";

/**
 * Most view entries a read scans for one user. A read stops as soon as it has its window (one
 * round trip, normally), and one that lists more than `RECENT_VIEWS_MAX` +
 * {@linkcode VIEWS_COMPACT_SLACK} has them compacted, so this bound only matters for a user never
 * read since very many views of few items arrived: the first read then pages through up to this
 * many entries (still exact), and only beyond it returns the items found so far.
 */
const VIEWS_SCAN_MAX = 20_000;
/**
 * Entries a read fetches per round trip: twice `RECENT_VIEWS_MAX` plus this, so that older
 * views of the same items (until a compaction deletes them) rarely need a second round trip,
 * and the first one also holds the `RECENT_VIEWS_MAX` + {@linkcode VIEWS_COMPACT_SLACK} + 1
 * entries that tell a read whether to report the user for compaction.
 */
const VIEWS_SCAN_SLACK = 16;

/**
 * Resolves a session id to its user.
 * @param sessionId the raw session id (hashed before the read)
 * @param now the current time, epoch ms
 * @returns the user id, or `undefined` when the session is unknown, ended or expired
 */
export async function readSession(kv: Deno.Kv, sessionId: string, now: number): Promise<string | undefined> {
  return (await readSessionByHash(kv, await hashSessionId(sessionId), now))?.userId;
}

/**
 * Resolves a hashed session id to its user and the session's expiry.
 * @param sessionHash the session id's hash from {@linkcode hashSessionId}
 * @param now the current time, epoch ms
 * @returns the user id and expiry, or `undefined` when the session is unknown, ended, expired or
 *   older than the user's erasure
 */
export async function readSessionByHash(
  kv: Deno.Kv,
  sessionHash: string,
  now: number,
): Promise<{ userId: string; expiresAt: number } | undefined> {
  const entry = await kv.get(keys.session(sessionHash), { consistency: "eventual" });
  const session = parseStored(SessionValue, entry.value);
  if (!session || session.ended || session.expiresAt <= now) return undefined;
  // An erasure ends every session it is newer than, also those its apply did not reach (the
  // per-user session index keeps the latest-expiring ones only).
  const erased = await kv.get(keys.erased(session.userId), { consistency: "eventual" });
  const erasedAt = parseStored(TombstoneValue, erased.value)?.at;
  if (erasedAt !== undefined && erasedAt >= session.at) return undefined;
  return { userId: session.userId, expiresAt: session.expiresAt };
}

/**
 * The views of layout 1 (one value per user, no longer written). Reads merge them in until they
 * expire; this is the one place that reads that layout's value.
 * @param value the raw value of {@linkcode keys.legacyViews} (`null` or `undefined` when absent)
 * @returns the stored views, or none when the value is absent or malformed
 */
export function readLegacyViews(value: unknown): LegacyViewsValue["views"] {
  return parseStored(LegacyViewsValue, value)?.views ?? [];
}

/** Options for {@linkcode readUserContext}. */
export interface ReadUserContextOptions {
  /** How many recent views to return (`RECENT_VIEWS_MAX`, default {@linkcode DEFAULT_RECENT_VIEWS_MAX}). */
  recentViewsMax?: number;
  /**
   * Called before the read resolves when it listed stored views worth a compaction
   * (`compactViews` in `lib/sync/views.ts`): more than `recentViewsMax` +
   * {@linkcode VIEWS_COMPACT_SLACK} of them, or any at or before the user's tombstone. Receives
   * the tombstone's `at` (`-Infinity` without one), to compact with. With it, a read lists up to
   * that many entries (still in its first round trip), not only the ones it returns.
   */
  onCompactable?: (erasedAt: number) => void;
}

/**
 * Reads what the edge knows about a user, eventually consistent: one `getMany` (cart, profile,
 * tombstone, layout 1 views) alongside one bounded `list` of the user's views, both in parallel.
 * @param now the current time, epoch ms; expired values count as absent
 * @param options how many recent views to return, and `onCompactable` to hear of a user whose
 *   views are overdue for a compaction
 * @returns recent views (newest first, at most `recentViewsMax`, none at or before an erasure),
 *   cart and profile
 * @example
 * ```ts
 * const context = await readUserContext(kv, "u1", now, {
 *   recentViewsMax: 20,
 *   // Off the request path, as `lib/pipeline/context.ts` does.
 *   onCompactable: (erasedAt) =>
 *     waitUntil(compactViews(kv, new Map([["u1", erasedAt]]), { recentViewsMax: 20 })),
 * });
 * ```
 */
export async function readUserContext(
  kv: Deno.Kv,
  userId: string,
  now: number,
  options: ReadUserContextOptions = {},
): Promise<UserContext> {
  const max = options.recentViewsMax ?? DEFAULT_RECENT_VIEWS_MAX;
  const bound = max + VIEWS_COMPACT_SLACK;
  const [[legacy, cart, profile, erased], scan] = await Promise.all([
    kv.getMany<unknown[]>(
      [keys.legacyViews(userId), keys.cart(userId), keys.profile(userId), keys.erased(userId)],
      { consistency: "eventual" },
    ),
    scanViews(kv, userId, { max, consistency: "eventual", countTo: options.onCompactable ? bound + 1 : 0 }),
  ]);
  const erasedAt = parseStored(TombstoneValue, erased?.value)?.at ?? -Infinity;
  // Views at or before the tombstone are the oldest, so the last one seen tells of any.
  if (scan.seen > bound || scan.oldestAt <= erasedAt) options.onCompactable?.(erasedAt);
  const listed = scan.window;
  const storedCart = parseStored(CartValue, cart?.value);
  const storedProfile = parseStored(ProfileValue, profile?.value);
  return {
    recentViews: recentViews([...listed, ...readLegacyViews(legacy?.value)], {
      erasedAt,
      max,
    }).filter((view) => view.expiresAt > now).map((view) => ({ itemId: view.itemId, at: view.at })),
    cart: storedCart && storedCart.expiresAt > now
      ? { items: storedCart.items, version: storedCart.version, at: storedCart.at }
      : undefined,
    profile: storedProfile && storedProfile.expiresAt > now
      ? {
        segments: storedProfile.segments,
        attributes: storedProfile.attributes,
        version: storedProfile.version,
        at: storedProfile.at,
      }
      : undefined,
    ...(erasedAt > -Infinity ? { erasedAt } : {}),
  };
}

/** Options for {@linkcode listViewWindow}. */
export interface ListViewWindowOptions {
  /** How many distinct items the window holds (`RECENT_VIEWS_MAX`). */
  max: number;
  /** `"eventual"` on the request path, `"strong"` before deleting. */
  consistency: Deno.KvConsistencyLevel;
}

/**
 * Lists the part of a user's views (layout 2) that a read needs: newest first until `max`
 * distinct items are found, plus any more at the same `at` (KV orders item ids by UTF-8 bytes,
 * {@linkcode recentViews} by UTF-16 units), at most 20 000 entries. Older views of the same items
 * in it are entries a compaction deletes. The tombstone is applied by the caller: the views
 * after an erasure are a prefix of this order.
 * @param options window size and consistency
 * @returns the views in key order (newest first); malformed entries are left out
 */
export async function listViewWindow(
  kv: Deno.Kv,
  userId: string,
  options: ListViewWindowOptions,
): Promise<StoredView[]> {
  return (await scanViews(kv, userId, { ...options, countTo: 0 })).window;
}

/** What {@linkcode scanViews} saw of a user's views. */
interface ViewScan {
  /** The window of {@linkcode listViewWindow}. */
  window: StoredView[];
  /** Well-formed views listed: the window's and the next one, then more up to `countTo` in all. */
  seen: number;
  /** `at` of the oldest well-formed view listed (`Infinity` for none). */
  oldestAt: number;
}

/**
 * Lists the window of {@linkcode listViewWindow} and, past it, more views until `countTo` were
 * seen in all, so that a read tells a user holding more than that from one who does not.
 */
async function scanViews(
  kv: Deno.Kv,
  userId: string,
  options: ListViewWindowOptions & { countTo: number },
): Promise<ViewScan> {
  const { max } = options;
  const window: StoredView[] = [];
  const items = new Set<string>();
  let seen = 0;
  let oldestAt = Infinity;
  let inWindow = true;
  const entries = kv.list({ prefix: keys.viewsPrefix(userId) }, {
    consistency: options.consistency,
    limit: VIEWS_SCAN_MAX,
    batchSize: Math.min(2 * max + VIEWS_SCAN_SLACK, 1000),
  });
  for await (const entry of entries) {
    const view = parseViewEntry(entry);
    if (!view) continue;
    if (inWindow && items.size >= max && view.at < window.at(-1)!.at) inWindow = false;
    seen++;
    oldestAt = view.at;
    if (inWindow) {
      window.push(view);
      items.add(view.itemId);
    } else if (seen >= options.countTo) break;
  }
  return { window, seen, oldestAt };
}

/**
 * Reads the related-item lists of several items (eventually consistent).
 * @returns item id → its related items; items without a list are left out
 */
export async function readRelated(
  kv: Deno.Kv,
  itemIds: readonly string[],
): Promise<Map<string, RelatedValue>> {
  const unique = [...new Set(itemIds)];
  const entries = await getManyChunked(kv, unique.map(keys.related));
  const out = new Map<string, RelatedValue>();
  entries.forEach((entry, index) => {
    const value = parseStored(RelatedValue, entry.value);
    if (value) out.set(unique[index]!, value);
  });
  return out;
}

/**
 * Reads the rule control record (eventually consistent).
 * @returns the control record; empty when no rules were ever pushed or the value is malformed
 */
export async function readRulesControl(kv: Deno.Kv): Promise<RulesControlValue> {
  const entry = await kv.get(keys.rulesControl(), { consistency: "eventual" });
  return parseStored(RulesControlValue, entry.value) ?? { entries: [] };
}

/**
 * Reads kept rule sets by version. Sets are immutable per version and written in the same commit
 * as the control entry that names them, so a strong read after reading the control finds them.
 * @param versions the versions to read
 * @returns version → rule set JSON (validated when it arrived, parsed again here); missing or
 * malformed sets are left out — pass `rules` to `parseRules` to compile
 */
export async function readRuleSets(
  kv: Deno.Kv,
  versions: readonly number[],
): Promise<Map<number, RulesValue>> {
  const unique = [...new Set(versions)];
  const entries = await getManyChunked(kv, unique.map(keys.ruleSet), { consistency: "strong" });
  const out = new Map<number, RulesValue>();
  entries.forEach((entry, index) => {
    const value = parseStored(RulesValue, entry.value);
    if (value && value.version === unique[index]) out.set(value.version, value);
  });
  return out;
}
