import assert from "node:assert/strict";
import {
  applyPersonalizedCaching,
  finishResponseHeaders,
  splitDirectives,
} from "../../../lib/origin/cache_headers.ts";

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

Deno.test("a field-qualified private only withholds fields, so a personalized response still becomes private", () => {
  const headers = apply({ "cache-control": 'public, max-age=300, private="x-debug"' }, [], false);
  assert.equal(headers.get("cache-control"), "private, max-age=300");
});

Deno.test("CDN-only caching headers go whenever a personalized response is not left shareable", () => {
  const cdnHeaders = {
    "cdn-cache-control": "max-age=600",
    "surrogate-control": "max-age=600",
    "cloudflare-cdn-cache-control": "max-age=600",
    "vercel-cdn-cache-control": "max-age=600",
    "edge-control": "cache-maxage=600s",
  };
  for (const cacheControl of ["public, max-age=60", "private, max-age=60", "no-store"]) {
    const headers = apply({ "cache-control": cacheControl, ...cdnHeaders }, [], false);
    for (const name of Object.keys(cdnHeaders)) {
      assert.equal(headers.get(name), null, `${name} with Cache-Control: ${cacheControl}`);
    }
  }
  // The origin's explicit shared caching, keyed on the hints the edge used, stays whole.
  const kept = apply({
    "cache-control": "public, max-age=60",
    vary: "Sec-CH-Viewport-Width",
    "cdn-cache-control": "max-age=600",
  });
  assert.equal(kept.get("cdn-cache-control"), "max-age=600");
});

Deno.test("a decision on the platform varies on User-Agent too: browsers without the hint are told apart by it", () => {
  for (const dependsOn of [["platform" as const], ["device" as const]]) {
    const headers = new Headers({ "cache-control": "public, max-age=300", vary: "Accept-Encoding" });
    finishResponseHeaders(headers, {
      decision: { personalized: true, usedHints: [], dependsOn },
      clientHints: [],
      cookies: [],
    });
    assert.deepEqual((headers.get("vary") ?? "").split(", "), ["Accept-Encoding", "user-agent"]);
    // Kept shareable only because every input is now in Vary.
    assert.equal(headers.get("cache-control"), "public, max-age=300");
  }
});

Deno.test("an origin that varies on a header the edge added personalized the response: it becomes private", () => {
  for (const vary of ["X-Edge-User", "Accept-Encoding, x-edge-segments"]) {
    const headers = new Headers({ "cache-control": "public, max-age=60", vary });
    finishResponseHeaders(headers, {
      decision: { personalized: false, usedHints: [], dependsOn: [] },
      clientHints: [],
      cookies: [],
    });
    assert.equal(headers.get("cache-control"), "private, max-age=60", vary);
  }
  const plain = new Headers({ "cache-control": "public, max-age=60", vary: "Accept-Encoding, X-Edgy" });
  finishResponseHeaders(plain, {
    decision: { personalized: false, usedHints: [], dependsOn: [] },
    clientHints: [],
    cookies: [],
  });
  assert.equal(plain.get("cache-control"), "public, max-age=60");
});

Deno.test("an answer to a request that told the origin who the visitor is becomes private, whatever Vary says", () => {
  for (
    const vary of [undefined, "Accept-Encoding", "x-edge-user, x-edge-segments, x-edge-recent-views", "*"]
  ) {
    const headers = new Headers({ "cache-control": "public, s-maxage=600, max-age=60" });
    if (vary) headers.set("vary", vary);
    headers.set("surrogate-control", "max-age=600");
    finishResponseHeaders(headers, {
      decision: { personalized: false, usedHints: [], dependsOn: [] },
      clientHints: [],
      cookies: [],
      toldVisitor: true,
    });
    assert.equal(headers.get("cache-control"), "private, max-age=60", String(vary));
    assert.equal(headers.get("surrogate-control"), null, String(vary));
  }
  // Without anything about the visitor, the origin's choice stands.
  const anonymous = new Headers({ "cache-control": "public, max-age=60" });
  finishResponseHeaders(anonymous, {
    decision: { personalized: false, usedHints: [], dependsOn: [] },
    clientHints: [],
    cookies: [],
    toldVisitor: false,
  });
  assert.equal(anonymous.get("cache-control"), "public, max-age=60");
});

Deno.test("a comma inside a quoted directive value does not split Cache-Control", () => {
  const fieldList = { "cache-control": 'private="set-cookie, x-foo", max-age=60' };
  assert.equal(apply(fieldList, [], false).get("cache-control"), "private, max-age=60");
  assert.equal(
    apply({ "cache-control": 'public, no-cache="set-cookie, x-foo", max-age=60' }, [], false).get(
      "cache-control",
    ),
    'private, no-cache="set-cookie, x-foo", max-age=60',
  );
  assert.deepEqual(splitDirectives('a="x\\", y", b, ,c="", d="unterminated, e'), [
    'a="x\\", y"',
    "b",
    'c=""',
    'd="unterminated, e',
  ]);
});
