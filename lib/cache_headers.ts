/**
 * @module
 * Cache correctness for personalized responses: a response that depended on who the visitor
 * is must never be stored by a shared cache and served to someone else.
 */

/**
 * Makes a response safe for shared caches when it was personalized. The origin's own explicit
 * choice is kept when it already prevents sharing (`private`, `no-store`) or when it set
 * shared caching together with a `Vary` that covers every input the edge used; otherwise
 * `Cache-Control` becomes `private` (keeping the origin's max-age and other directives).
 *
 * @param headers the response headers, changed in place
 * @param varyOn the request headers the personalization depended on (lower case)
 */
export function applyPersonalizedCaching(headers: Headers, varyOn: readonly string[]): void {
  const cacheControl = headers.get("cache-control");
  const directives = (cacheControl ?? "").toLowerCase().split(",").map((d) => d.trim()).filter(Boolean);
  if (directives.some((d) => d === "private" || d === "no-store" || d.startsWith("private="))) return;
  const vary = (headers.get("vary") ?? "").toLowerCase().split(",").map((v) => v.trim());
  if (vary.includes("*")) return;
  const explicitShared = directives.some((d) => d === "public" || d.startsWith("s-maxage"));
  if (explicitShared && varyOn.length > 0 && varyOn.every((name) => vary.includes(name))) return;
  const kept = directives.filter((d) => d !== "public" && !d.startsWith("s-maxage"));
  headers.set("cache-control", ["private", ...kept].join(", "));
}
