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
 * | `["user", userId, "views"]`          | `{ views: [{ itemId, at, expiresAt }], expiresAt }`, newest first |
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
 * Rule sets are immutable per version. The control record has one entry per kept version (and per
 * version a promote or rollback named before its rule set arrived), highest version first, holding
 * the newest activation, rollback and canary of that version as order keys `[at | null, rank,
 * version]`; which version is active and which is the canary is derived from it
 * (`lib/rules_control.ts`), so replicas agree whatever order the events came in.
 */
import { z } from "zod";
import { RuleSetSchema } from "./rules.ts";

/** Most keys `kv.getMany` accepts in one call. */
export const GET_MANY_MAX = 10;

/** Key builders of the layout above. */
export const keys = {
  views: (userId: string): Deno.KvKey => ["user", userId, "views"],
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

const Millis = z.number().int();

/** Stored recent views of one user. */
export const ViewsValue = z.object({
  views: z.array(z.object({ itemId: z.string(), at: Millis, expiresAt: Millis })),
  expiresAt: Millis,
});
/** Stored recent views of one user. */
export type ViewsValue = z.infer<typeof ViewsValue>;

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
  cart: { items: { itemId: string; qty: number }[]; version: number } | undefined;
  profile: { segments: string[]; attributes: Record<string, unknown>; version: number } | undefined;
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
 * @returns the user id and expiry, or `undefined` when the session is unknown, ended or expired
 */
export async function readSessionByHash(
  kv: Deno.Kv,
  sessionHash: string,
  now: number,
): Promise<{ userId: string; expiresAt: number } | undefined> {
  const entry = await kv.get(keys.session(sessionHash), { consistency: "eventual" });
  const session = parseStored(SessionValue, entry.value);
  if (!session || session.ended || session.expiresAt <= now) return undefined;
  return { userId: session.userId, expiresAt: session.expiresAt };
}

/**
 * Reads what the edge knows about a user with one eventually consistent `getMany`.
 *
 * @param kv the store
 * @param userId the user
 * @param now the current time, epoch ms; expired values count as absent
 * @returns recent views (newest first), cart and profile
 */
export async function readUserContext(kv: Deno.Kv, userId: string, now: number): Promise<UserContext> {
  const [views, cart, profile] = await kv.getMany<unknown[]>(
    [keys.views(userId), keys.cart(userId), keys.profile(userId)],
    { consistency: "eventual" },
  );
  const storedViews = parseStored(ViewsValue, views?.value);
  const storedCart = parseStored(CartValue, cart?.value);
  const storedProfile = parseStored(ProfileValue, profile?.value);
  return {
    recentViews: (storedViews?.views ?? []).filter((view) => view.expiresAt > now).map((view) => ({
      itemId: view.itemId,
      at: view.at,
    })),
    cart: storedCart && storedCart.expiresAt > now
      ? { items: storedCart.items, version: storedCart.version }
      : undefined,
    profile: storedProfile && storedProfile.expiresAt > now
      ? {
        segments: storedProfile.segments,
        attributes: storedProfile.attributes,
        version: storedProfile.version,
      }
      : undefined,
  };
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
