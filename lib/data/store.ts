/**
 * @module
 * The Deno KV layout of edge data (keys, value schemas, KV's limits); the table of keys is in
 * docs/sync.md, reads in `readers.ts`. Every value that can expire stores its own `expiresAt`,
 * because KV's `expireIn` is lazy; raw session ids are never stored, only their SHA-256.
 */
import { z } from "zod";
import { RuleSetSchema } from "../rules/schema.ts";

/** Most keys `kv.getMany` accepts in one call. */
export const GET_MANY_MAX = 10;

/** `RECENT_VIEWS_MAX`'s default. */
export const DEFAULT_RECENT_VIEWS_MAX = 20;

/** Views beyond `RECENT_VIEWS_MAX` a user may hold before a read reports them for compaction. */
export const VIEWS_COMPACT_SLACK = 16;

const MIN_EXPIRE_IN_MS = 60_000;

/** The time left, or a minute for a value already expired (reads check `expiresAt` themselves). */
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

/** The size of a key as Deno KV encodes it, or a little more. */
export function kvKeyBytes(key: Deno.KvKey): number {
  let bytes = 0;
  for (const part of key) {
    if (typeof part === "string") {
      bytes += 2;
      for (let i = 0; i < part.length; i++) {
        const code = part.charCodeAt(i);
        // NUL is escaped; a surrogate pair is 4 bytes of UTF-8, 2 per unit.
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

/** Key builders of the layout. */
export const keys = {
  /** Sorts newest first, then by item id, under {@linkcode keys.viewsPrefix}. */
  view: (userId: string, itemId: string, at: number): Deno.KvKey => [
    "user",
    userId,
    "viewed",
    newestFirst(at),
    itemId,
  ],
  viewsPrefix: (userId: string): Deno.KvKey => ["user", userId, "viewed"],
  /** A `start` for `kv.list`: views at or before `at`. */
  viewsFrom: (userId: string, at: number): Deno.KvKey => ["user", userId, "viewed", newestFirst(at)],
  /** Layout 1: read and erased, no longer written. */
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

/** The user, item and `at` are in its key. */
export const ViewValue = z.object({ expiresAt: Millis });
export type ViewValue = z.infer<typeof ViewValue>;

export const LegacyViewsValue = z.object({
  views: z.array(z.object({ itemId: z.string(), at: Millis, expiresAt: Millis })),
  expiresAt: Millis,
});
export type LegacyViewsValue = z.infer<typeof LegacyViewsValue>;

export interface StoredView {
  key: Deno.KvKey;
  itemId: string;
  at: number;
  expiresAt: number;
}

export const CartValue = z.object({
  version: z.number().int(),
  at: Millis,
  items: z.array(z.object({ itemId: z.string(), qty: z.number() })),
  expiresAt: Millis,
});
export type CartValue = z.infer<typeof CartValue>;

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

export const SessionValue = z.discriminatedUnion("ended", [
  z.object({ ended: z.literal(false), userId: z.string(), at: Millis, expiresAt: Millis }),
  z.object({ ended: z.literal(true), at: Millis, expiresAt: Millis }),
]);
export type SessionValue = z.infer<typeof SessionValue>;

export const RelatedValue = z.object({
  version: z.number().int(),
  related: z.array(z.object({ itemId: z.string(), score: z.number() })),
});
export type RelatedValue = z.infer<typeof RelatedValue>;

export const RulesValue = z.object({ version: z.number().int(), rules: RuleSetSchema });
export type RulesValue = z.infer<typeof RulesValue>;

/**
 * Total order of rule control events, `[at, rank, version]`: a null `at` sorts first; `rank` breaks
 * ties as canary 0, rules 1, promote 2, rollback 3.
 */
export const RulesOrderKey = z.tuple([
  z.number().int().nullable(),
  z.number().int().min(0).max(3),
  z.number().int(),
]);
export type RulesOrderKey = z.infer<typeof RulesOrderKey>;

/** What the control record knows about one rules version; each key is the newest such event. */
export const RulesControlEntry = z.object({
  version: z.number().int(),
  stored: z.boolean(),
  activated: RulesOrderKey.nullable(),
  rolledBack: RulesOrderKey.nullable(),
  canary: z.object({ share: z.number().gt(0).lt(1), key: RulesOrderKey }).nullable(),
});
export type RulesControlEntry = z.infer<typeof RulesControlEntry>;

/** One entry per kept (or named but not yet received) version, highest first. */
export const RulesControlValue = z.object({ entries: z.array(RulesControlEntry) });
export type RulesControlValue = z.infer<typeof RulesControlValue>;

/** What the edge knows about one user. */
export interface UserContext {
  /** Newest first, expired views left out. */
  recentViews: { itemId: string; at: number }[];
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

/** Parses a stored value; a wrong shape (older layout, by hand) counts as absent, not as a failure. */
export function parseStored<T>(schema: z.ZodType<T>, value: unknown): T | undefined {
  if (value === null || value === undefined) return undefined;
  const result = schema.safeParse(value);
  return result.success ? result.data : undefined;
}

/** `kv.getMany` over any number of keys, in parallel; one entry per key in order. */
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
 * The newest view of each item after the erasure, newest first, at most `max`; expired views are
 * left for callers to filter.
 *
 * @param views stored views of one user, of either layout
 * @param options `erasedAt`: the tombstone's `at` (`-Infinity` without one); `max`: items kept
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

function compareViews(a: { itemId: string; at: number }, b: { itemId: string; at: number }): number {
  return b.at - a.at || (a.itemId < b.itemId ? -1 : a.itemId > b.itemId ? 1 : 0);
}
