/**
 * @module
 * Typed, eventually consistent reads of the KV layout of `store.ts`; a malformed value counts as absent.
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

// Reads compact what they overgrow, so this bounds only a first read after very many views.
const VIEWS_SCAN_MAX = 20_000;
// So one round trip usually covers the window and tells whether a compaction is due.
const VIEWS_SCAN_SLACK = 16;

/** Resolves a raw session id to its user; `undefined` when unknown, ended or expired. */
export async function readSession(kv: Deno.Kv, sessionId: string, now: number): Promise<string | undefined> {
  return (await readSessionByHash(kv, await hashSessionId(sessionId), now))?.userId;
}

/** A session hash's user and expiry; `undefined` when unknown, ended, expired or older than an erasure. */
export async function readSessionByHash(
  kv: Deno.Kv,
  sessionHash: string,
  now: number,
): Promise<{ userId: string; expiresAt: number } | undefined> {
  const entry = await kv.get(keys.session(sessionHash), { consistency: "eventual" });
  const session = parseStored(SessionValue, entry.value);
  if (!session || session.ended || session.expiresAt <= now) return undefined;
  // Also ends sessions the erasure's apply did not reach (the index keeps only the latest-expiring).
  const erased = await kv.get(keys.erased(session.userId), { consistency: "eventual" });
  const erasedAt = parseStored(TombstoneValue, erased.value)?.at;
  if (erasedAt !== undefined && erasedAt >= session.at) return undefined;
  return { userId: session.userId, expiresAt: session.expiresAt };
}

/** The one reader of layout 1 ({@linkcode keys.legacyViews}); `undefined` when absent or malformed. */
export function readLegacyViews(value: unknown): LegacyViewsValue["views"] | undefined {
  return parseStored(LegacyViewsValue, value)?.views;
}

/** Options for {@linkcode readUserContext}. */
export interface ReadUserContextOptions {
  /** `RECENT_VIEWS_MAX`. */
  recentViewsMax?: number;
  /** Told, with the tombstone's `at`, when the read listed views worth a compaction. */
  onCompactable?: (erasedAt: number) => void;
}

/** What the edge knows about a user at `now`: one `getMany` beside one bounded `list` of views. */
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
    recentViews: recentViews([...listed, ...readLegacyViews(legacy?.value) ?? []], {
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
  /** Distinct items. */
  max: number;
  /** `"strong"` before deleting. */
  consistency: Deno.KvConsistencyLevel;
}

/**
 * A user's newest views until `max` distinct items, plus any more at the same `at` (KV orders ids by
 * UTF-8 bytes, {@linkcode recentViews} by UTF-16 units). The caller applies the tombstone.
 */
export async function listViewWindow(
  kv: Deno.Kv,
  userId: string,
  options: ListViewWindowOptions,
): Promise<StoredView[]> {
  return (await scanViews(kv, userId, { ...options, countTo: 0 })).window;
}

interface ViewScan {
  window: StoredView[];
  seen: number;
  oldestAt: number;
}

// Past the window, counts on to `countTo`, so a read tells a user holding more than that.
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

/** Related-item lists, by item id. */
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

/** Empty when absent or malformed. */
export async function readRulesControl(kv: Deno.Kv): Promise<RulesControlValue> {
  const entry = await kv.get(keys.rulesControl(), { consistency: "eventual" });
  return parseStored(RulesControlValue, entry.value) ?? { entries: [] };
}

/** Written in the commit of the control entry that names them, so a strong read after it finds them. */
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
