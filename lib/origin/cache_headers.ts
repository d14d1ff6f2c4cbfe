/**
 * @module
 * Cache correctness for personalized responses: a response that depended on who the visitor
 * is must never be stored by a shared cache and served to someone else.
 */

/** Decision inputs a shared cache can key on through `Vary` (request headers). */
const HEADER_EXPRESSIBLE: ReadonlySet<string> = new Set(["device", "network", "platform", "viewport", "dpr"]);

/**
 * Response headers that set a CDN's caching apart from `Cache-Control` (RFC 9213 and vendors'
 * own). A CDN that honours one gives it precedence over `Cache-Control`, so a response made
 * private must not carry them.
 */
const CDN_CACHE_CONTROLS: readonly string[] = [
  "cdn-cache-control",
  "surrogate-control",
  "cloudflare-cdn-cache-control",
  "vercel-cdn-cache-control",
  "edge-control",
];
/** {@linkcode CDN_CACHE_CONTROLS} as a set, for a copy loop that notes whether one is present. */
export const CDN_CACHE_CONTROL_SET: ReadonlySet<string> = new Set(CDN_CACHE_CONTROLS);

/**
 * What a copy of the response headers already saw (`get` would read the same values), so the
 * finishing touches need no lookups of their own.
 */
export interface SeenResponseHeaders {
  vary: string | null;
  cacheControl: string | null;
  contentType: string | null;
  /** One of the CDN-only caching headers is present. */
  cdnCacheControl: boolean;
}

/** Options for {@linkcode applyPersonalizedCaching}. */
export interface PersonalizedCachingOptions {
  /**
   * The inputs could all be expressed as request headers in `Vary` (device and network hints);
   * region, identity, segments and experiment buckets never can.
   */
  shareable: boolean;
}

/**
 * Makes a response safe for shared caches when it was personalized. The origin's own explicit
 * choice is kept when it already prevents sharing (a bare `private`, `no-store`), or when it set
 * shared caching together with a `Vary` that covers every input the edge used and every one of
 * those inputs is a request header; otherwise `Cache-Control` becomes `private` (keeping the
 * origin's max-age and other directives). A field-qualified `private="…"` withholds only those
 * fields, so it does not count. Either way the CDN-only caching headers (`CDN-Cache-Control`,
 * `Surrogate-Control`, …) go, since a CDN would obey them over `Cache-Control`.
 *
 * @param headers the response headers, changed in place
 * @param varyOn the request headers the personalization depended on (lower case)
 * @param options whether the inputs are expressible in `Vary` at all
 */
export function applyPersonalizedCaching(
  headers: Headers,
  varyOn: readonly string[],
  options: PersonalizedCachingOptions = { shareable: false },
  seen?: SeenResponseHeaders,
): void {
  const cacheControl = seen ? seen.cacheControl : headers.get("cache-control");
  const directives = splitDirectives((cacheControl ?? "").toLowerCase());
  const vary = ((seen ? seen.vary : headers.get("vary")) ?? "").toLowerCase().split(",").map((v) => v.trim());
  const explicitShared = directives.some((d) => d === "public" || d.startsWith("s-maxage"));
  if (
    options.shareable && explicitShared && varyOn.length > 0 &&
    (vary.includes("*") || varyOn.every((name) => vary.includes(name)))
  ) return;
  if (seen?.cdnCacheControl !== false) { for (const name of CDN_CACHE_CONTROLS) headers.delete(name); }
  if (directives.some((d) => d === "private" || d === "no-store")) return;
  const kept = directives.filter((d) =>
    d !== "public" && !d.startsWith("s-maxage") && !d.startsWith("private=")
  );
  headers.set("cache-control", ["private", ...kept].join(", "));
}

/**
 * Splits a `Cache-Control` value into its directives: on commas, except inside a quoted string
 * (`private="set-cookie, x-foo"` is one directive; a backslash escapes the next character in it).
 *
 * @param value the header value
 * @returns the trimmed, non-empty directives as written
 */
export function splitDirectives(value: string): string[] {
  const directives: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const char = value[i];
    if (quoted && char === "\\") i++;
    else if (char === '"') quoted = !quoted;
    else if (char === "," && !quoted) {
      directives.push(value.slice(start, i));
      start = i + 1;
    }
  }
  directives.push(value.slice(start));
  return directives.map((d) => d.trim()).filter(Boolean);
}

/** Options for {@linkcode finishResponseHeaders}. */
export interface FinishResponseOptions {
  /** The decision's `personalized`, `usedHints`, `dependsOn` and `forced`. */
  decision: {
    personalized: boolean;
    usedHints: readonly string[];
    dependsOn: readonly string[];
    forced?: boolean;
  };
  /** Every client hint the active rules use (advertised with `Accept-CH` on HTML). */
  clientHints: readonly string[];
  /** `Set-Cookie` values the edge adds. */
  cookies: readonly string[];
  /**
   * The edge told the origin who the visitor is (`x-edge-user`, recent views, cart items or
   * segments): whatever the origin made of it, the answer is not for another visitor.
   */
  toldVisitor?: boolean;
  /** What the caller saw while building `headers` (it replaces lookups; absent → looked up). */
  seen?: SeenResponseHeaders;
}

/**
 * The act stage's last touch on a response: the edge's cookies, `Vary` for the client hints
 * the outcome used, `Cache-Control` made safe when the response was personalized, sets a
 * cookie or answers a request that told the origin who the visitor is (`private, no-store`
 * when QA forced it: no cache may keep a forced page), and `Accept-CH` on HTML so browsers send
 * the hints the rules use next time. An origin's `Vary` on the `x-edge-*` headers does not keep
 * such an answer shareable: caches in front of the edge never see those request headers, so
 * they would key every visitor alike.
 *
 * @param headers the response headers, changed in place
 * @param options the decision summary, the rules' hints, and the cookies to set
 */
export function finishResponseHeaders(headers: Headers, options: FinishResponseOptions): void {
  const { decision } = options;
  for (const cookie of options.cookies) headers.append("set-cookie", cookie);
  // Copied, since `Vary` changes below.
  const seen = options.seen && { ...options.seen };
  // An origin that varies on a header the edge added (`x-edge-user`, …) personalized the response on
  // what the edge knows of the visitor: a cache in front of the edge never sees that header.
  const originVary = seen ? seen.vary : headers.get("vary");
  const variesOnEdge = originVary !== null && /(^|,)\s*x-edge-/i.test(originVary);
  const varyOn = decision.usedHints.map((h) => h.toLowerCase());
  // The device class, and the platform when `Sec-CH-UA-Platform` is absent, come from `User-Agent`.
  if (decision.dependsOn.includes("device") || decision.dependsOn.includes("platform")) {
    varyOn.push("user-agent");
  }
  if (varyOn.length) {
    const vary = addVary(headers, varyOn, originVary);
    if (seen) seen.vary = vary;
  }
  const toldVisitor = options.toldVisitor === true;
  if (decision.personalized || options.cookies.length || variesOnEdge || toldVisitor) {
    // A response that sets the edge's cookies is never shareable; otherwise only outcomes that
    // depended on request headers alone (device and network hints) may stay in shared caches.
    const shareable = options.cookies.length === 0 && !variesOnEdge && !toldVisitor &&
      decision.dependsOn.every((input) => HEADER_EXPRESSIBLE.has(input));
    applyPersonalizedCaching(headers, varyOn, { shareable }, seen);
  }
  if (decision.forced) {
    if (seen?.cdnCacheControl !== false) { for (const name of CDN_CACHE_CONTROLS) headers.delete(name); }
    headers.set("cache-control", "private, no-store");
  }
  if (
    options.clientHints.length &&
    ((seen ? seen.contentType : headers.get("content-type")) ?? "").toLowerCase().startsWith("text/html")
  ) {
    headers.set("accept-ch", options.clientHints.join(", "));
  }
}

/** Adds names to `Vary`, given its current value; returns the new value. */
function addVary(headers: Headers, names: readonly string[], current: string | null): string | null {
  const existing = (current ?? "").split(",").map((v) => v.trim()).filter(Boolean);
  if (existing.includes("*")) return current;
  const lower = new Set(existing.map((v) => v.toLowerCase()));
  for (const name of names) {
    if (!lower.has(name)) {
      existing.push(name);
      lower.add(name);
    }
  }
  const vary = existing.join(", ");
  headers.set("vary", vary);
  return vary;
}
