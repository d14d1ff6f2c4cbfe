/**
 * @module
 * The identity stage: who the visitor is. In order: the logged-in user (session cookie looked
 * up in KV by its hash), the `USER_ID_HEADER` from a peer in `USER_ID_PROXIES`, else a
 * first-party anonymous id cookie (`ep_uid`), created when absent. Nothing else a client says
 * about itself is believed.
 */
import { parseCookies } from "../http/cookies.ts";
import { STICKY_COOKIE, type StickySigner } from "./sticky.ts";
import { hashSessionId } from "../data/store.ts";
import { readSessionByHash } from "../data/readers.ts";
import type { SessionCache } from "../data/session_cache.ts";

/** The anonymous id cookie. */
export const ANON_COOKIE = "ep_uid";

const ANON_ID = /^[A-Za-z0-9_-]{16,64}$/;
/**
 * What a user id may be, wherever it comes from (a trusted header, a pushed session or event):
 * 1–128 of `A–Z a–z 0–9 _ . : @ -`, so it is always a valid header value for the origin.
 */
export const USER_ID: RegExp = /^[A-Za-z0-9_.:@-]{1,128}$/;
const MAX_SESSION_ID = 256;
const NO_STICKY: ReadonlyMap<string, string> = new Map();

/** Who the visitor is. */
export interface Identity {
  /** The bucketing and targeting key: user id when logged in, else the anonymous id. */
  key: string;
  /** The logged-in user, if any. */
  userId: string | undefined;
  /** Where the user id came from. */
  source: "session" | "header" | "anonymous";
  /** The anonymous id (always present: logged-in visitors keep theirs for continuity). */
  anonymousId: string;
  /** The anonymous id was created for this request and must be set as a cookie. */
  newAnonymousId: boolean;
  /** Experiment key → variation value from the sticky cookie, when its signature held. */
  sticky: ReadonlyMap<string, string>;
  /**
   * The request carried a sticky cookie the edge should replace whatever the decision: unsigned,
   * forged, or signed with a secret that is no longer the first.
   */
  stickyRewrite: boolean;
}

/** Options for {@linkcode resolveIdentity}. */
export interface ResolveIdentityOptions {
  kv: Deno.Kv;
  now: number;
  sessionCookie: string;
  /**
   * The header that names the user (`USER_ID_HEADER`), given only when the connected peer is in
   * `USER_ID_PROXIES`; undefined → no header names a user.
   */
  userIdHeader?: string;
  randomId: () => string;
  /** Per-isolate cache of session lookups; without it every logged-in request reads KV. */
  sessionCache?: SessionCache;
  /** Called when the session lookup fails; the visitor is then treated as anonymous. */
  onLookupError?: (error: unknown) => void;
  /** Verifies the sticky cookie; without it no sticky assignment is believed. */
  stickySigner?: StickySigner;
  /** Bounds the session's KV read in time (`KV_TIMEOUT_MS`); a read past it counts as failed. */
  kvWithin?: <T>(read: Promise<T>) => Promise<T>;
}

/**
 * Resolves the visitor's identity.
 *
 * @param headers the request headers
 * @param options KV, clock, cookie name, trust and id generator
 * @returns the identity (never throws: a failing KV means "anonymous")
 */
export async function resolveIdentity(headers: Headers, options: ResolveIdentityOptions): Promise<Identity> {
  const cookies = parseCookies(headers.get("cookie"));
  const cookieAnon = cookies.get(ANON_COOKIE);
  const validAnon = cookieAnon !== undefined && ANON_ID.test(cookieAnon);
  const anonymousId = validAnon ? cookieAnon : options.randomId().replace(/[^A-Za-z0-9_-]/g, "");
  // A sticky cookie is believed only with the edge's signature: a visitor who writes
  // `ep_exp=hero:b` is bucketed as if it had no cookie (and gets a signed one for that bucket).
  const stickyValue = cookies.get(STICKY_COOKIE);
  const verified = options.stickySigner?.verify(stickyValue, options.now);
  const base = {
    anonymousId,
    newAnonymousId: !validAnon,
    sticky: verified?.assignments ?? NO_STICKY,
    stickyRewrite: stickyValue !== undefined && stickyValue !== "" && verified?.current !== true,
  };

  const sessionId = cookies.get(options.sessionCookie);
  // Real session ids are short; a long value is never looked up (it would only cost a KV read
  // and cache memory).
  if (sessionId && sessionId.length <= MAX_SESSION_ID) {
    try {
      // The in-memory cache is keyed by the cookie value itself so a hit costs no hashing; only
      // the hash ever reaches KV (and nothing of either is logged).
      const cached = options.sessionCache?.get(sessionId, options.now);
      let userId = cached?.userId;
      if (!cached) {
        // A sync applied here while the lookup is in flight must not see its result cached.
        const generation = options.sessionCache?.generation;
        const read = readSessionByHash(options.kv, await hashSessionId(sessionId), options.now);
        const session = await (options.kvWithin ? options.kvWithin(read) : read);
        options.sessionCache?.set(sessionId, session, options.now, generation);
        userId = session?.userId;
      }
      if (userId) return { ...base, key: userId, userId, source: "session" };
    } catch (error) {
      options.onLookupError?.(error);
    }
  }
  if (options.userIdHeader !== undefined) {
    const headerUser = headers.get(options.userIdHeader)?.trim();
    if (headerUser && USER_ID.test(headerUser)) {
      return { ...base, key: headerUser, userId: headerUser, source: "header" };
    }
  }
  return { ...base, key: anonymousId, userId: undefined, source: "anonymous" };
}
