/**
 * @module
 * The identity stage: the session's user, else `USER_ID_HEADER` from a peer in `USER_ID_PROXIES`,
 * else the anonymous `ep_uid` cookie. Nothing else a client says about itself is believed.
 */
import { parseCookies } from "../http/cookies.ts";
import { STICKY_COOKIE, type StickySigner } from "./sticky.ts";
import { hashSessionId } from "../data/store.ts";
import { readSessionByHash } from "../data/readers.ts";
import type { SessionCache } from "../data/session_cache.ts";

/** The anonymous id cookie. */
export const ANON_COOKIE = "ep_uid";

const ANON_ID = /^[A-Za-z0-9_-]{16,64}$/;
/** What a user id may be, wherever it comes from: always a valid header value for the origin. */
export const USER_ID: RegExp = /^[A-Za-z0-9_.:@-]{1,128}$/;
const MAX_SESSION_ID = 256;
const NO_STICKY: ReadonlyMap<string, string> = new Map();

/** Who the visitor is. */
export interface Identity {
  /** The bucketing and targeting key: user id when logged in, else the anonymous id. */
  key: string;
  userId: string | undefined;
  source: "session" | "header" | "anonymous";
  /** Always present: logged-in visitors keep theirs for continuity. */
  anonymousId: string;
  /** Created for this request: must be set as a cookie. */
  newAnonymousId: boolean;
  /** Experiment key → variation value from the sticky cookie, when its signature held. */
  sticky: ReadonlyMap<string, string>;
  /** The sticky cookie is unsigned, forged or signed with an old secret: replace it. */
  stickyRewrite: boolean;
}

/** Options for {@linkcode resolveIdentity}. */
export interface ResolveIdentityOptions {
  kv: Deno.Kv;
  now: number;
  sessionCookie: string;
  /** `USER_ID_HEADER`, given only when the peer is in `USER_ID_PROXIES`. */
  userIdHeader?: string;
  randomId: () => string;
  sessionCache?: SessionCache;
  /** Called when the session lookup fails; the visitor is then treated as anonymous. */
  onLookupError?: (error: unknown) => void;
  /** Without it no sticky assignment is believed. */
  stickySigner?: StickySigner;
  /** Bounds the session's KV read (`KV_TIMEOUT_MS`); a read past it counts as failed. */
  kvWithin?: <T>(read: Promise<T>) => Promise<T>;
}

/**
 * Resolves the visitor's identity; never throws (a failing KV means "anonymous").
 *
 * @param headers the request headers
 * @param options KV, clock, cookie name, trust and id generator
 */
export async function resolveIdentity(headers: Headers, options: ResolveIdentityOptions): Promise<Identity> {
  const cookies = parseCookies(headers.get("cookie"));
  const cookieAnon = cookies.get(ANON_COOKIE);
  const validAnon = cookieAnon !== undefined && ANON_ID.test(cookieAnon);
  const anonymousId = validAnon ? cookieAnon : options.randomId().replace(/[^A-Za-z0-9_-]/g, "");
  // Only the edge's signature makes a sticky cookie believed: a hand-written `ep_exp=hero:b` counts as none.
  const stickyValue = cookies.get(STICKY_COOKIE);
  const verified = options.stickySigner?.verify(stickyValue, options.now);
  const base = {
    anonymousId,
    newAnonymousId: !validAnon,
    sticky: verified?.assignments ?? NO_STICKY,
    stickyRewrite: stickyValue !== undefined && stickyValue !== "" && verified?.current !== true,
  };

  const sessionId = cookies.get(options.sessionCookie);
  if (sessionId && sessionId.length <= MAX_SESSION_ID) {
    try {
      // Keyed by the cookie value so a hit costs no hashing; only the hash ever reaches KV.
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
