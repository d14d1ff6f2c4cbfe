/**
 * @module
 * The act stage's header work: the `x-edge-*` headers that tell the origin what the edge
 * decided, and the cookies the response must carry for the visitor's identity and stickiness.
 */
import type { Decision } from "../rules/decision.ts";
import type { Facts } from "../pipeline/facts.ts";
import { ANON_COOKIE, type Identity, USER_ID } from "../pipeline/identity.ts";
import { formatSticky, STICKY_COOKIE } from "../pipeline/sticky.ts";
import { serializeCookie } from "../http/cookies.ts";
import type { HeaderList } from "./upstream.ts";
import type { StickySigner } from "../pipeline/sticky.ts";

const ONE_YEAR_SECONDS = 365 * 24 * 60 * 60;
/** Longest list header value (recent views, cart items, segments) sent to the origin. */
export const MAX_LIST_HEADER = 1024;

/** Behavioural data for the origin (left out entirely under GPC). */
export interface OriginContext {
  recentViews: readonly string[];
  cartItemIds: readonly string[];
  segments: readonly string[];
}

/**
 * Sets the `x-edge-*` request headers, after every inbound one was stripped, and tells whether
 * they name the visitor, which makes the answer private.
 *
 * @param headers the upstream request headers, changed in place
 * @param inputs the facts, identity, decision and (optional) behavioural context
 */
export function setDecisionHeaders(
  headers: HeaderList,
  inputs: { facts: Facts; identity: Identity; decision: Decision; context?: OriginContext },
): boolean {
  const { facts, identity, decision, context } = inputs;
  headers.push(["x-edge-region", decision.region]);
  if (decision.country) headers.push(["x-edge-country", decision.country]);
  headers.push(["x-edge-device", facts.device.device]);
  headers.push(["x-edge-network", facts.device.network]);
  headers.push(["x-edge-client-ip", facts.clientIp]);
  headers.push(["x-edge-rules-version", String(decision.rulesVersion)]);
  headers.push(["x-edge-visitor", identity.anonymousId]);
  const before = headers.length;
  // A user id stored before ids were checked could make `fetch` refuse the whole request.
  if (identity.userId && USER_ID.test(identity.userId)) headers.push(["x-edge-user", identity.userId]);
  let told = headers.length > before;
  if (facts.gpc) headers.push(["x-edge-gpc", "1"]);
  const variants = Object.entries(decision.variants ?? {});
  if (variants.length) headers.push(["x-edge-variants", variants.map(([k, v]) => `${k}=${v}`).join(",")]);
  const flags = Object.entries(decision.flags ?? {});
  if (flags.length) {
    headers.push(["x-edge-flags", flags.map(([k, v]) => `${k}=${encodeFlagValue(v)}`).join(",")]);
  }
  if (context && !facts.gpc) {
    const listed = headers.length;
    setList(headers, "x-edge-recent-views", context.recentViews);
    setList(headers, "x-edge-cart-items", context.cartItemIds);
    setList(headers, "x-edge-segments", context.segments);
    told ||= headers.length > listed;
  }
  return told;
}

function sameAssignments(
  wanted: Readonly<Record<string, string>>,
  current: ReadonlyMap<string, string>,
): boolean {
  let count = 0;
  for (const key in wanted) {
    if (current.get(key) !== wanted[key]) return false;
    count++;
  }
  return count === current.size;
}

function encodeFlagValue(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return percentEncode(text ?? "null");
}

/** `encodeURIComponent`, total: a lone surrogate (which it refuses) becomes U+FFFD first. */
function percentEncode(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return encodeURIComponent(text.toWellFormed());
  }
}

function setList(headers: HeaderList, name: string, items: readonly string[]): void {
  if (!items.length) return;
  let out = "";
  for (const item of items) {
    const encoded = percentEncode(item);
    const next = out ? `${out},${encoded}` : encoded;
    if (next.length > MAX_LIST_HEADER) break;
    out = next;
  }
  if (out) headers.push([name, out]);
}

/**
 * The `Set-Cookie` values the response needs: a new anonymous id, the sticky assignments when changed.
 *
 * @param identity the visitor's identity
 * @param inputs the decision, https or not, page navigation or not, and the sticky cookie's signer
 */
export function responseCookies(
  identity: Identity,
  inputs: { decision: Decision; secure: boolean; navigation: boolean; signer: StickySigner },
): string[] {
  const cookies: string[] = [];
  const options = { maxAgeSeconds: ONE_YEAR_SECONDS, secure: inputs.secure, sameSite: "Lax" as const };
  // Never for a plain asset, so cookieless asset responses stay cacheable.
  if (identity.newAnonymousId && (inputs.navigation || inputs.decision.dependsOn.includes("visitorKey"))) {
    cookies.push(serializeCookie(ANON_COOKIE, identity.anonymousId, options));
  }
  const sticky = inputs.decision.stickyAssignments;
  // Compared without formatting; a cookie not believed (or signed with an old secret) is replaced.
  if (sticky && (identity.stickyRewrite || !sameAssignments(sticky, identity.sticky))) {
    const wanted = formatSticky(sticky);
    if (identity.stickyRewrite || wanted !== formatSticky(Object.fromEntries(identity.sticky))) {
      cookies.push(
        wanted
          ? serializeCookie(STICKY_COOKIE, inputs.signer.sign(wanted), options)
          : serializeCookie(STICKY_COOKIE, "", { ...options, maxAgeSeconds: 0 }),
      );
    }
  }
  return cookies;
}
