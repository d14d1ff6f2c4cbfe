import assert from "node:assert/strict";
import { applyPersonalizedCaching, finishResponseHeaders } from "../../lib/cache_headers.ts";

function apply(
  init: Record<string, string>,
  varyOn: string[] = ["sec-ch-viewport-width"],
  shareable = true,
): Headers {
  const headers = new Headers(init);
  applyPersonalizedCaching(headers, varyOn, { shareable });
  return headers;
}

Deno.test("personalized responses become private unless the origin already prevents sharing", () => {
  assert.equal(apply({}).get("cache-control"), "private");
  assert.equal(
    apply({ "cache-control": "public, max-age=60, s-maxage=300" }).get("cache-control"),
    "private, max-age=60",
  );
  assert.equal(apply({ "cache-control": "no-store" }).get("cache-control"), "no-store");
  assert.equal(apply({ "cache-control": "private, max-age=5" }).get("cache-control"), "private, max-age=5");
});

Deno.test("explicit shared caching with a Vary covering header-only inputs is kept", () => {
  const kept = apply({
    "cache-control": "public, max-age=60",
    vary: "Accept-Encoding, Sec-CH-Viewport-Width",
  });
  assert.equal(kept.get("cache-control"), "public, max-age=60");
  const partial = apply({ "cache-control": "public, max-age=60", vary: "Accept-Encoding" });
  assert.equal(partial.get("cache-control"), "private, max-age=60");
});

Deno.test("region, identity or bucket personalization is never left in shared caches, whatever Vary says", () => {
  const region = apply({ "cache-control": "public, max-age=300", vary: "*" }, [], false);
  assert.equal(region.get("cache-control"), "private, max-age=300");
  const headers = new Headers({ "cache-control": "public, max-age=300", vary: "Cookie" });
  finishResponseHeaders(headers, {
    decision: { personalized: true, usedHints: [], dependsOn: ["region"] },
    clientHints: [],
    cookies: ["ep_uid=abc; Path=/"],
  });
  assert.equal(headers.get("cache-control"), "private, max-age=300");
  const hintsOnly = new Headers({ "cache-control": "public, max-age=300", vary: "Sec-CH-Viewport-Width" });
  finishResponseHeaders(hintsOnly, {
    decision: { personalized: true, usedHints: ["Sec-CH-Viewport-Width"], dependsOn: ["viewport"] },
    clientHints: [],
    cookies: ["ep_uid=abc; Path=/"],
  });
  assert.equal(
    hintsOnly.get("cache-control"),
    "private, max-age=300",
    "a Set-Cookie response is never shared",
  );
});
