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
 * Most view entries a read scans for one user: reads compact what they overgrow, so this only
 * bounds the first read of a user sent very many views of few items since the last one.
 */
const VIEWS_SCAN_MAX = 20_000;
/**
 * Entries per round trip beyond twice `RECENT_VIEWS_MAX`, so older views of the same items rarely
 * need a second one, and the first holds enough to tell whether the user needs a compaction.
 */
const VIEWS_SCAN_SLACK = 16;

/** Resolves a raw session id to its user; `undefined` when unknown, ended or expired. */
export async function readSession(kv: Deno.Kv, sessionId: string, now: number): Promise<string | undefined> {
  return (await readSessionByHash(kv, await hashSessionId(sessionId), now))?.userId;
}

/**
 * Resolves a session id's hash ({@linkcode hashSessionId}) to its user and expiry; `undefined`
 * when the session is unknown, ended, expired or older than the user's erasure.
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
 * The views in a raw value of {@linkcode keys.legacyViews} (layout 1, no longer written): the one
 * reader of that layout, for reads that merge them in and erasures that filter them.
 * @returns the stored views, or `undefined` when the value is absent or malformed
 */
export function readLegacyViews(value: unknown): LegacyViewsValue["views"] | undefined {
  return parseStored(LegacyViewsValue, value)?.views;
}

/** Options for {@linkcode readUserContext}. */
export interface ReadUserContextOptions {
  /** How many recent views to return (`RECENT_VIEWS_MAX`, default {@linkcode DEFAULT_RECENT_VIEWS_MAX}). */
  recentViewsMax?: number;
  /**
   * Told, with the tombstone's `at` (`-Infinity` without one), when the read listed views worth a
   * compaction (`lib/sync/views.ts`): over `recentViewsMax` + {@linkcode VIEWS_COMPACT_SLACK}, or erased ones.
   */
  onCompactable?: (erasedAt: number) => void;
}

/**
 * Reads what the edge knows about a user at `now` (expired values count as absent), eventually
 * consistent: one `getMany` (cart, profile, tombstone, layout 1 views) beside one bounded `list` of
 * the user's views. Recent views come newest first, none at or before an erasure.
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
  /** How many distinct items the window holds (`RECENT_VIEWS_MAX`). */
  max: number;
  /** `"eventual"` on the request path, `"strong"` before deleting. */
  consistency: Deno.KvConsistencyLevel;
}

/**
 * Lists, newest first, the part of a user's views (layout 2) a read needs: until `max` distinct
 * items, plus any more at the same `at` (KV orders item ids by UTF-8 bytes, {@linkcode recentViews}
 * by UTF-16 units). The caller applies the tombstone; malformed entries are left out.
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

/** Reads the related-item lists of several items (eventually consistent), by item id. */
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

/** Reads the rule control record (eventually consistent); empty when absent or malformed. */
export async function readRulesControl(kv: Deno.Kv): Promise<RulesControlValue> {
  const entry = await kv.get(keys.rulesControl(), { consistency: "eventual" });
  return parseStored(RulesControlValue, entry.value) ?? { entries: [] };
}

/**
 * Reads kept rule sets by version (missing or malformed ones left out). They are written in the
 * commit of the control entry that names them, so a strong read after the control finds them.
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
