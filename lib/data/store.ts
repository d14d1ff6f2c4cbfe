/**
 * @module
 * The Deno KV layout of edge data written by sync and read by the request pipeline: keys, the zod
 * schemas of every stored value, and Deno KV's limits. The reads are in `readers.ts`.
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
 * How views are read and compacted, and how the rule control record orders events:
 * docs/kv_layout.md.
 */
import { z } from "zod";
import { RuleSetSchema } from "../rules/schema.ts";

/** Most keys `kv.getMany` accepts in one call. */
export const GET_MANY_MAX = 10;

/** Recent views returned per user when the caller does not say (`RECENT_VIEWS_MAX`'s default). */
export const DEFAULT_RECENT_VIEWS_MAX = 20;

/**
 * Views beyond `RECENT_VIEWS_MAX` a user may hold before a read reports them for compaction, so a
 * user who is read holds about `RECENT_VIEWS_MAX` + this many, and a compaction deletes more.
 */
export const VIEWS_COMPACT_SLACK = 16;

/** `expireIn` of a value whose own `expiresAt` has passed: reads already ignore it. */
const MIN_EXPIRE_IN_MS = 60_000;

/**
 * The `expireIn` for a value that carries its own `expiresAt` (KV's expiry is lazy, so reads
 * check `expiresAt` themselves): the time left, or a minute for a value already expired.
 */
export function expireIn(expiresAt: number, now: number): number {
  return Math.max(expiresAt - now, MIN_EXPIRE_IN_MS);
}

/** Deno KV's limits for one atomic commit, with headroom (KV allows 80 KiB of keys, 800 KiB in all). */
export const KV_COMMIT_LIMITS = {
  checks: 100,
  mutations: 1000,
  keyBytes: 72 * 1024,
  bytes: 760 * 1024,
} as const;

/**
 * The size of a key as Deno KV encodes it, or a little more: a string part is its UTF-8 bytes
 * (NUL counts twice, escaped) plus a tag and a terminator; a number nine bytes; a bigint or a
 * byte array its length, doubled for escaping, plus two.
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
export type ViewValue = z.infer<typeof ViewValue>;

/** A user's recent views in one value (layout 1, no longer written). */
export const LegacyViewsValue = z.object({
  views: z.array(z.object({ itemId: z.string(), at: Millis, expiresAt: Millis })),
  expiresAt: Millis,
});
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
export type CartValue = z.infer<typeof CartValue>;

/** Stored profile of one user. */
export const ProfileValue = z.object({
  version: z.number().int(),
  at: Millis,
  segments: z.array(z.string()),
  attributes: z.record(z.string(), z.unknown()),
  expiresAt: Millis,
});
export type ProfileValue = z.infer<typeof ProfileValue>;

/** Index of a user's active sessions (hashes only), so that erasure can end them. */
export const UserSessionsValue = z.object({
  sessions: z.array(z.object({ hash: z.string(), expiresAt: Millis })),
  expiresAt: Millis,
});
export type UserSessionsValue = z.infer<typeof UserSessionsValue>;

/** Erasure tombstone: user events at or before `at` are dropped. */
export const TombstoneValue = z.object({ at: Millis, expiresAt: Millis });
export type TombstoneValue = z.infer<typeof TombstoneValue>;

/** A session record: active (bound to a user) or ended. */
export const SessionValue = z.discriminatedUnion("ended", [
  z.object({ ended: z.literal(false), userId: z.string(), at: Millis, expiresAt: Millis }),
  z.object({ ended: z.literal(true), at: Millis, expiresAt: Millis }),
]);
export type SessionValue = z.infer<typeof SessionValue>;

/** Related items of one item. */
export const RelatedValue = z.object({
  version: z.number().int(),
  related: z.array(z.object({ itemId: z.string(), score: z.number() })),
});
export type RelatedValue = z.infer<typeof RelatedValue>;

/** A kept rule set, stored under its version. */
export const RulesValue = z.object({ version: z.number().int(), rules: RuleSetSchema });
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
export type RulesControlEntry = z.infer<typeof RulesControlEntry>;

/** The rule control record: one entry per kept (or named but not yet received) version, highest first. */
export const RulesControlValue = z.object({ entries: z.array(RulesControlEntry) });
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

/** The lower-case hex SHA-256 of a session id: the raw id, a bearer credential, is never stored. */
export async function hashSessionId(sessionId: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(sessionId));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Parses a stored value, treating a value of the wrong shape as absent (it was written by an
 * older layout or by hand) rather than failing the request.
 */
export function parseStored<T>(schema: z.ZodType<T>, value: unknown): T | undefined {
  if (value === null || value === undefined) return undefined;
  const result = schema.safeParse(value);
  return result.success ? result.data : undefined;
}

/**
 * Reads many keys with `kv.getMany`, at most {@linkcode GET_MANY_MAX} per call, in parallel, and
 * returns one entry per key in order. Consistency is `"eventual"` unless `"strong"` is asked (before a
 * versionstamp-checked write).
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

/** Parses an entry listed under {@linkcode keys.viewsPrefix}; `undefined` when malformed. */
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

/**
 * A user's recent views from stored views in any order: the newest view of each item after the
 * erasure, newest first (ties by item id), the first `max` items. Expired views are not
 * removed here (they would be the oldest anyway): callers filter them.
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
