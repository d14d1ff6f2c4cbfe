import assert from "node:assert/strict";
import { applyPersonalizedCaching } from "../../lib/cache_headers.ts";

function apply(init: Record<string, string>, varyOn: string[] = ["x-geo-country"]): Headers {
  const headers = new Headers(init);
  applyPersonalizedCaching(headers, varyOn);
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

Deno.test("explicit shared caching with a Vary covering the inputs is kept", () => {
  const kept = apply({ "cache-control": "public, max-age=60", vary: "Accept-Encoding, X-Geo-Country" });
  assert.equal(kept.get("cache-control"), "public, max-age=60");
  const partial = apply({ "cache-control": "public, max-age=60", vary: "Accept-Encoding" });
  assert.equal(partial.get("cache-control"), "private, max-age=60");
});
