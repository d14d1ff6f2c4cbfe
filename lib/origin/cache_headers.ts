/**
 * @module
 * Cache correctness for personalized responses: a response that depended on who the visitor
 * is must never be stored by a shared cache and served to someone else.
 */

/** Decision inputs a shared cache can key on through `Vary` (request headers). */
const HEADER_EXPRESSIBLE: ReadonlySet<string> = new Set(["device", "network", "platform", "viewport", "dpr"]);

/** RFC 9213 and vendors' own: a CDN obeys them over `Cache-Control`, so a private response drops them. */
const CDN_CACHE_CONTROLS: readonly string[] = [
  "cdn-cache-control",
  "surrogate-control",
  "cloudflare-cdn-cache-control",
  "vercel-cdn-cache-control",
  "edge-control",
];
/** {@linkcode CDN_CACHE_CONTROLS} as a set. */
export const CDN_CACHE_CONTROL_SET: ReadonlySet<string> = new Set(CDN_CACHE_CONTROLS);

/** What a copy of the response headers already saw, so the finishing touches need no lookups. */
export interface SeenResponseHeaders {
  vary: string | null;
  cacheControl: string | null;
  contentType: string | null;
  cdnCacheControl: boolean;
}

/** Options for {@linkcode applyPersonalizedCaching}. */
export interface PersonalizedCachingOptions {
  /** Every input is a request header `Vary` can name (device and network hints). */
  shareable: boolean;
}

/**
 * Makes a personalized response safe for shared caches: the origin's choice stays when it already
 * prevents sharing, or shares with a `Vary` covering every (header-expressible) input; otherwise
 * `Cache-Control` becomes `private`. A field-qualified `private="…"` does not count as private.
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
 * Splits a `Cache-Control` value on commas outside quoted strings (`private="a, b"` is one directive).
 *
 * @param value the header value
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
  /** The edge told the origin who the visitor is: whatever it made of that, the answer is not for another. */
  toldVisitor?: boolean;
  seen?: SeenResponseHeaders;
}

/**
 * The act stage's last touch: the edge's cookies, `Vary` for the hints used, `Cache-Control` made safe
 * for a personalized answer (`private, no-store` when QA forced it), and `Accept-CH` on HTML.
 *
 * @param headers the response headers, changed in place
 * @param options the decision summary, the rules' hints, and the cookies to set
 */
export function finishResponseHeaders(headers: Headers, options: FinishResponseOptions): void {
  const { decision } = options;
  for (const cookie of options.cookies) headers.append("set-cookie", cookie);
  const seen = options.seen && { ...options.seen };
  // A cache in front of the edge never sees the `x-edge-*` headers an origin may vary on.
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
