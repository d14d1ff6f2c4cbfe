/**
 * @module
 * The Deno KV layout of edge data written by sync and read by the request pipeline, the zod
 * schemas of every stored value (values are parsed when read back), and typed read helpers.
 *
 * Keys (every value that can expire stores its own `expiresAt`, epoch ms, because KV's
 * `expireIn` is lazy; reads treat an expired value as absent):
 *
 * | key                                  | value                                                      |
 * | ------------------------------------ | ---------------------------------------------------------- |
 * | `["user", userId, "viewed", -at, itemId]` | `{ expiresAt }`: one view, written blind (layout 2; see below) |
 * | `["user", userId, "views"]`          | legacy (layout 1, read-only): `{ views: [{ itemId, at, expiresAt }], expiresAt }` |
 * | `["user", userId, "cart"]`           | `{ version, at, items: [{ itemId, qty }], expiresAt }`     |
 * | `["user", userId, "profile"]`        | `{ version, at, segments, attributes, expiresAt }`         |
 * | `["user", userId, "sessions"]`       | `{ sessions: [{ hash, expiresAt }], expiresAt }`: active sessions, for erasure |
 * | `["erased", userId]`                 | `{ at, expiresAt }`: erasure tombstone                     |
 * | `["session", sha256hex(sessionId)]`  | `{ userId, at, expiresAt, ended: false }` or `{ at, expiresAt, ended: true }` |
 * | `["related", itemId]`                | `{ version, related: [{ itemId, score }] }`                |
 * | `["rules", "set", version]`          | `{ version, rules }`: a kept rule set (the `RULES_KEEP` highest versions) |
 * | `["rules", "control"]`               | `{ entries: [{ version, stored, activated, rolledBack, canary }] }`: rule control record |
 * | `["webhook", webhookId]`             | `{ status: "pending" \| "done", expiresAt }`: idempotency  |
 *
 * Raw session ids are never stored: only the SHA-256 hex digest of the id.
 *
 * Views (layout 2) have one key per (user, `at`, item), so sync writes them without reading. The
 * key holds `-at`, so a user's views list newest first and, at equal `at`, by item id — the order
 * of recent views. A read takes the first view of each item (its newest) until it has
 * `RECENT_VIEWS_MAX` items, skipping views at or before the user's erasure tombstone. A
 * compaction (`lib/sync/views.ts`) deletes every view a read cannot return — older views of an
 * item, views beyond the newest `RECENT_VIEWS_MAX` items, erased views: sync runs it for the
 * users it erases, and the context stage for a user whose read reports more than
 * `RECENT_VIEWS_MAX` + {@linkcode VIEWS_COMPACT_SLACK} views stored (`onCompactable`). What is
 * left expires with KV's `expireIn`. The single-value key of layout 1 is no longer written but still
 * merged into reads (and filtered by erasure) until it expires, at most `VIEW_TTL_DAYS` after the
 * upgrade.
 *
 * Rule sets are immutable per version. The control record has one entry per kept version (and per
 * version a promote or rollback named before its rule set arrived), highest version first, holding
 * the newest activation, rollback and canary of that version as order keys `[at | null, rank,
 * version]`; which version is active and which is the canary is derived from it
 * (`lib/rules/control.ts`), so replicas agree whatever order the events came in.
 */
import { z } from "zod";
import { RuleSetSchema } from "../rules/schema.ts";

/** Most keys `kv.getMany` accepts in one call. */
export const GET_MANY_MAX = 10;

/** Recent views returned per user when the caller does not say (`RECENT_VIEWS_MAX`'s default). */
export const DEFAULT_RECENT_VIEWS_MAX = 20;

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
 * Views beyond `RECENT_VIEWS_MAX` a user may hold before a read reports them for compaction
 * ({@linkcode ReadUserContextOptions.onCompactable}): a user who is read holds at most about
 * `RECENT_VIEWS_MAX` + this many view entries, and each compaction deletes more than this many.
 */
export const VIEWS_COMPACT_SLACK = 16;

/** `expireIn` of a value whose own `expiresAt` has passed: reads already ignore it. */
const MIN_EXPIRE_IN_MS = 60_000;

/**
 * The `expireIn` for a value that carries its own `expiresAt` (KV's expiry is lazy, so reads
 * check `expiresAt` themselves): the time left, or a minute for a value already expired.
 *
 * @param expiresAt when the value expires, epoch ms
 * @param now the current time, epoch ms
 * @returns milliseconds for KV's `expireIn`
 */
export function expireIn(expiresAt: number, now: number): number {
  return Math.max(expiresAt - now, MIN_EXPIRE_IN_MS);
}

/**
 * Deno KV's limits for one atomic commit, with headroom: checks and mutations by count; the
 * encoded size of every key checked or written (KV allows 80 KiB in total); keys plus values
 * (800 KiB).
 */
export const KV_COMMIT_LIMITS = {
  checks: 100,
  mutations: 1000,
  keyBytes: 72 * 1024,
  bytes: 760 * 1024,
} as const;

/**
 * The size of a key as Deno KV encodes it, or a little more: a string part is its UTF-8 bytes
 * (a NUL byte counts twice, as KV escapes it) plus a type tag and a terminator; a number nine
 * bytes; a bigint or a byte array its length, doubled for escaping, plus two.
 *
 * @param key a KV key
 * @returns bytes
 */
export function kvKeyBytes(key: Deno.KvKey): number {
  let bytes = 0;
  for (const part of key) {
    if (typeof part === "string") {
      bytes += 2;
      for (let i = 0; i < part.length; i++) {
        const code = part.charCodeAt(i);
        // A surrogate pair is 4 bytes of UTF-8 (2 per unit); other BMP characters up to 3.
        bytes += code === 0
          ? 2
          : code < 0x80
          ? 1
          : code < 0x800
          ? 2
          : code >= 0xd800 && code <= 0xdfff
          ? 2
          : 3;
      }
    } else if (typeof part === "number") bytes += 9;
    else if (typeof part === "bigint") bytes += 2 + 2 * Math.ceil(part.toString(16).length / 2) + 1;
    else if (part instanceof Uint8Array) bytes += 2 + 2 * part.byteLength;
    else bytes += 1;
  }
  return bytes;
}

/** Key builders of the layout above. */
export const keys = {
  /** One view (layout 2): sorts newest first, then by item id, under {@linkcode keys.viewsPrefix}. */
  view: (userId: string, itemId: string, at: number): Deno.KvKey => [
    "user",
    userId,
    "viewed",
    newestFirst(at),
    itemId,
  ],
  /** Prefix of a user's views (layout 2). */
  viewsPrefix: (userId: string): Deno.KvKey => ["user", userId, "viewed"],
  /** Where a user's views at or before `at` start (layout 2): a `start` for `kv.list`. */
  viewsFrom: (userId: string, at: number): Deno.KvKey => ["user", userId, "viewed", newestFirst(at)],
  /** A user's views in one value (layout 1): read and erased, no longer written. */
  legacyViews: (userId: string): Deno.KvKey => ["user", userId, "views"],
  cart: (userId: string): Deno.KvKey => ["user", userId, "cart"],
  profile: (userId: string): Deno.KvKey => ["user", userId, "profile"],
  userSessions: (userId: string): Deno.KvKey => ["user", userId, "sessions"],
  erased: (userId: string): Deno.KvKey => ["erased", userId],
  session: (sessionHash: string): Deno.KvKey => ["session", sessionHash],
  related: (itemId: string): Deno.KvKey => ["related", itemId],
  ruleSet: (version: number): Deno.KvKey => ["rules", "set", version],
  rulesControl: (): Deno.KvKey => ["rules", "control"],
  webhook: (webhookId: string): Deno.KvKey => ["webhook", webhookId],
};

/** `-at` without a negative zero, which KV would order apart from `0`. */
function newestFirst(at: number): number {
  return at === 0 ? 0 : -at;
}

const Millis = z.number().int();

/** One stored view (layout 2); the user, item and `at` are in its key. */
export const ViewValue = z.object({ expiresAt: Millis });
/** One stored view (layout 2). */
export type ViewValue = z.infer<typeof ViewValue>;

/** A user's recent views in one value (layout 1, no longer written). */
export const LegacyViewsValue = z.object({
  views: z.array(z.object({ itemId: z.string(), at: Millis, expiresAt: Millis })),
  expiresAt: Millis,
});
/** A user's recent views in one value (layout 1). */
export type LegacyViewsValue = z.infer<typeof LegacyViewsValue>;

/** A view as stored, with its key. */
export interface StoredView {
  key: Deno.KvKey;
  itemId: string;
  at: number;
  expiresAt: number;
}

/** Stored cart of one user. */
export const CartValue = z.object({
  version: z.number().int(),
  at: Millis,
  items: z.array(z.object({ itemId: z.string(), qty: z.number() })),
  expiresAt: Millis,
});
/** Stored cart of one user. */
export type CartValue = z.infer<typeof CartValue>;

/** Stored profile of one user. */
export const ProfileValue = z.object({
  version: z.number().int(),
  at: Millis,
  segments: z.array(z.string()),
  attributes: z.record(z.string(), z.unknown()),
  expiresAt: Millis,
});
/** Stored profile of one user. */
export type ProfileValue = z.infer<typeof ProfileValue>;

/** Index of a user's active sessions (hashes only), so that erasure can end them. */
export const UserSessionsValue = z.object({
  sessions: z.array(z.object({ hash: z.string(), expiresAt: Millis })),
  expiresAt: Millis,
});
/** Index of a user's active sessions. */
export type UserSessionsValue = z.infer<typeof UserSessionsValue>;

/** Erasure tombstone: user events at or before `at` are dropped. */
export const TombstoneValue = z.object({ at: Millis, expiresAt: Millis });
/** Erasure tombstone. */
export type TombstoneValue = z.infer<typeof TombstoneValue>;

/** A session record: active (bound to a user) or ended. */
export const SessionValue = z.discriminatedUnion("ended", [
  z.object({ ended: z.literal(false), userId: z.string(), at: Millis, expiresAt: Millis }),
  z.object({ ended: z.literal(true), at: Millis, expiresAt: Millis }),
]);
/** A session record. */
export type SessionValue = z.infer<typeof SessionValue>;

/** Related items of one item. */
export const RelatedValue = z.object({
  version: z.number().int(),
  related: z.array(z.object({ itemId: z.string(), score: z.number() })),
});
/** Related items of one item. */
export type RelatedValue = z.infer<typeof RelatedValue>;

/** A kept rule set, stored under its version. */
export const RulesValue = z.object({ version: z.number().int(), rules: RuleSetSchema });
/** A kept rule set, stored under its version. */
export type RulesValue = z.infer<typeof RulesValue>;

/**
 * Total order of rule control events: `[at, rank, version]`, compared left to right. `at` is the
 * event's time in epoch ms, or `null` for a `rules` event without `at` (which sorts before every
 * timed event); `rank` breaks ties at equal `at`: canary 0, rules 1, promote 2, rollback 3.
 */
export const RulesOrderKey = z.tuple([
  z.number().int().nullable(),
  z.number().int().min(0).max(3),
  z.number().int(),
]);
/** Total order of rule control events. */
export type RulesOrderKey = z.infer<typeof RulesOrderKey>;

/** What the control record knows about one rules version. */
export const RulesControlEntry = z.object({
  version: z.number().int(),
  /** The rule set is kept under `["rules", "set", version]`. */
  stored: z.boolean(),
  /** Newest event that made this version active (`rules` without canary, promote, rollback). */
  activated: RulesOrderKey.nullable(),
  /** Newest rollback to this version. */
  rolledBack: RulesOrderKey.nullable(),
  /** Newest canary of this version. */
  canary: z.object({ share: z.number().gt(0).lt(1), key: RulesOrderKey }).nullable(),
});
/** What the control record knows about one rules version. */
export type RulesControlEntry = z.infer<typeof RulesControlEntry>;

/** The rule control record: one entry per kept (or named but not yet received) version, highest first. */
export const RulesControlValue = z.object({ entries: z.array(RulesControlEntry) });
/** The rule control record. */
export type RulesControlValue = z.infer<typeof RulesControlValue>;

/** What the edge knows about one user. */
export interface UserContext {
  /** Newest first, expired views left out. */
  recentViews: { itemId: string; at: number }[];
  /** `at`: the event time of the stored cart (absent when not known). */
  cart: { items: { itemId: string; qty: number }[]; version: number; at?: number } | undefined;
  profile:
    | { segments: string[]; attributes: Record<string, unknown>; version: number; at?: number }
    | undefined;
  /** The user's erasure tombstone, when there is one: older data is gone and must stay so. */
  erasedAt?: number;
}

/**
 * Hashes a session id for use in a key, so the raw id (a bearer credential) is never stored.
 *
 * @param sessionId the raw session id
 * @returns the lower-case hex SHA-256 digest
 */
export async function hashSessionId(sessionId: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(sessionId));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Parses a stored value, treating a value of the wrong shape as absent (it was written by an
 * older layout or by hand) rather than failing the request.
 *
 * @param schema the value's schema
 * @param value the raw value from KV (`null` when absent)
 * @returns the parsed value, or `undefined`
 */
export function parseStored<T>(schema: z.ZodType<T>, value: unknown): T | undefined {
  if (value === null || value === undefined) return undefined;
  const result = schema.safeParse(value);
  return result.success ? result.data : undefined;
}

/**
 * Reads many keys with `kv.getMany`, at most {@linkcode GET_MANY_MAX} per call, in parallel.
 *
 * @param kv the store
 * @param keyList the keys to read
 * @param options `consistency`: `"strong"` before a versionstamp-checked write, `"eventual"`
 * (the default) on the request path
 * @returns one entry per key, in order
 */
export async function getManyChunked(
  kv: Deno.Kv,
  keyList: readonly Deno.KvKey[],
  options: { consistency?: Deno.KvConsistencyLevel } = {},
): Promise<Deno.KvEntryMaybe<unknown>[]> {
  const consistency = options.consistency ?? "eventual";
  const calls: Promise<Deno.KvEntryMaybe<unknown>[]>[] = [];
  for (let i = 0; i < keyList.length; i += GET_MANY_MAX) {
    calls.push(kv.getMany<unknown[]>(keyList.slice(i, i + GET_MANY_MAX), { consistency }));
  }
  return (await Promise.all(calls)).flat();
}

/**
 * Resolves a session id to its user.
 *
 * @param kv the store
 * @param sessionId the raw session id (hashed before the read)
 * @param now the current time, epoch ms
 * @returns the user id, or `undefined` when the session is unknown, ended or expired
 */
export async function readSession(kv: Deno.Kv, sessionId: string, now: number): Promise<string | undefined> {
  return (await readSessionByHash(kv, await hashSessionId(sessionId), now))?.userId;
}

/**
 * Resolves a hashed session id to its user and the session's expiry.
 *
 * @param kv the store
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
 * Parses a listed entry of the view layout (layout 2).
 *
 * @param entry an entry listed under {@linkcode keys.viewsPrefix}
 * @returns the view, or `undefined` when the key or value has the wrong shape
 */
export function parseViewEntry(entry: Deno.KvEntry<unknown>): StoredView | undefined {
  const [, , , negativeAt, itemId] = entry.key;
  if (entry.key.length !== 5 || typeof negativeAt !== "number" || !Number.isInteger(negativeAt)) {
    return undefined;
  }
  if (typeof itemId !== "string") return undefined;
  const value = parseStored(ViewValue, entry.value);
  if (!value) return undefined;
  return { key: entry.key, itemId, at: newestFirst(negativeAt), expiresAt: value.expiresAt };
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
 *
 * @param kv the store
 * @param userId the user
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
    recentViews: recentViews([...listed, ...parseStored(LegacyViewsValue, legacy?.value)?.views ?? []], {
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
 *
 * @param kv the store
 * @param userId the user
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
 * A user's recent views from stored views in any order: the newest view of each item after the
 * erasure, newest first (ties by item id), the first `max` items. Expired views are not
 * removed here (they would be the oldest anyway): callers filter them.
 *
 * @param views stored views of one user, of either layout
 * @param options `erasedAt`: the tombstone's `at` (`-Infinity` without one); `max`: items kept
 * @returns the recent views, newest first
 */
export function recentViews<V extends { itemId: string; at: number }>(
  views: Iterable<V>,
  options: { erasedAt: number; max: number },
): V[] {
  const newest = new Map<string, V>();
  for (const view of views) {
    if (view.at <= options.erasedAt) continue;
    const known = newest.get(view.itemId);
    if (!known || known.at < view.at) newest.set(view.itemId, view);
  }
  return [...newest.values()].sort(compareViews).slice(0, options.max);
}

/** Order of recent views, which is also the key order of layout 2: newest first, then by item id. */
function compareViews(a: { itemId: string; at: number }, b: { itemId: string; at: number }): number {
  return b.at - a.at || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0);
}

/**
 * Reads the related-item lists of several items (eventually consistent).
 *
 * @param kv the store
 * @param itemIds the items
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
 *
 * @param kv the store
 * @returns the control record; empty when no rules were ever pushed or the value is malformed
 */
export async function readRulesControl(kv: Deno.Kv): Promise<RulesControlValue> {
  const entry = await kv.get(keys.rulesControl(), { consistency: "eventual" });
  return parseStored(RulesControlValue, entry.value) ?? { entries: [] };
}

/**
 * Reads kept rule sets by version. Sets are immutable per version and written in the same commit
 * as the control entry that names them, so a strong read after reading the control finds them.
 *
 * @param kv the store
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
