/**
 * Property tests of the proxy's URL handling: for any request path and query — arbitrary text,
 * unicode, percent sequences, slashes, backslashes, dots, `@` and `:` — the URL sent upstream
 * stays on the configured origin and under its path prefix, or the edge refuses with
 * `BadPathError`; nothing else is ever thrown.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { buildUpstreamUrl, upstreamUrls } from "../../../lib/origin/upstream.ts";
import { checkInboundPath } from "../../../lib/http/paths.ts";
import { BadPathError } from "../../../lib/http/errors.ts";

const ORIGINS = [
  new URL("http://origin.internal:8080"),
  new URL("https://shop.example/prefix"),
  new URL("http://127.0.0.1:3000/a/b/"),
];

/** Pieces an attacker would combine to leave the origin or the route. */
const hostile = fc.constantFrom(
  "/",
  "//",
  "\\",
  "..",
  ".",
  "%2e",
  "%2E%2e",
  "%2f",
  "%2F",
  "%5c",
  "%252e",
  "%252f",
  "%25",
  "%",
  "%zz",
  "%00",
  "%0d%0a",
  "@",
  ":",
  "evil.example",
  "127.0.0.1:9",
  "?",
  "#",
  ";",
  "..;",
  "\u3002",
  "\uff0e\uff0e",
  "\u2025",
  "\ufe52",
  "\u0000",
  "\t",
  " ",
  "\ud83d\ude00",
  "http://evil.example/",
);

const pathArb = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 60 }),
  fc.string({ unit: "binary", maxLength: 60 }),
  fc.array(fc.oneof(hostile, fc.string({ maxLength: 6 })), { maxLength: 14 }).map((parts) => parts.join("")),
  fc.array(fc.oneof(hostile, fc.string({ maxLength: 6 })), { maxLength: 14 }).map((parts) =>
    "/" + parts.join("/")
  ),
);

const searchArb = fc.oneof(
  fc.constant(""),
  fc.string({ unit: "binary", maxLength: 40 }).map((text) => `?${text}`),
  fc.array(hostile, { maxLength: 8 }).map((parts) => `?${parts.join("")}`),
);

function assertStaysOnOrigin(origin: URL, path: string, search: string): void {
  let url: URL;
  try {
    url = buildUpstreamUrl(origin, path, search);
  } catch (error) {
    assert.ok(error instanceof BadPathError, `unexpected ${String(error)}`);
    return;
  }
  assert.equal(url.origin, origin.origin);
  assert.equal(url.username, "");
  assert.equal(url.password, "");
  assert.equal(url.hash, "");
  const prefix = origin.pathname.replace(/\/$/, "");
  assert.ok(url.pathname.startsWith(`${prefix}/`), `${url.pathname} left the prefix ${prefix}`);
}

Deno.test("property: the inbound path → upstream URL pipeline never leaves the origin or its prefix", () => {
  fc.assert(
    fc.property(pathArb, searchArb, fc.constantFrom(...ORIGINS), (raw, search, origin) => {
      // As the edge sees it: a request target parsed against its own host, then checked.
      let requestUrl: URL;
      try {
        requestUrl = new URL(raw.startsWith("/") ? raw : `/${raw}`, "http://edge.local");
      } catch {
        return; // Not a request target an HTTP server would hand over.
      }
      if (requestUrl.host !== "edge.local") return; // Absolute-form: the server routes it, not us.
      let checked: string;
      try {
        checked = checkInboundPath(requestUrl.pathname);
      } catch (error) {
        assert.ok(error instanceof BadPathError, `unexpected ${String(error)}`);
        return;
      }
      assertStaysOnOrigin(origin, checked, search || requestUrl.search);
      // An accepted path carries no dot segment, raw or once/twice decoded.
      for (const segment of checked.split("/")) {
        assert.notEqual(segment, "..");
        assert.notEqual(segment, ".");
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: checkInboundPath and buildUpstreamUrl are total on raw, unnormalised strings", () => {
  fc.assert(
    fc.property(pathArb, searchArb, fc.constantFrom(...ORIGINS), (raw, search, origin) => {
      let checked: string | undefined;
      try {
        checked = checkInboundPath(raw);
      } catch (error) {
        assert.ok(error instanceof BadPathError, `unexpected ${String(error)}`);
      }
      // Even a path that skipped the inbound check (a rule target, say) cannot move the host.
      assertStaysOnOrigin(origin, checked ?? raw, search);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: upstreamUrls (remembered paths, appended queries) fetches exactly what buildUpstreamUrl builds", () => {
  const builders = new Map(ORIGINS.map((origin) => [origin, upstreamUrls(origin)]));
  fc.assert(
    fc.property(
      pathArb,
      searchArb,
      fc.constantFrom(...ORIGINS),
      fc.boolean(),
      (raw, search, origin, again) => {
        const build = builders.get(origin)!;
        const outcome = (f: () => string) => {
          try {
            return f();
          } catch (error) {
            assert.ok(error instanceof BadPathError, `unexpected ${String(error)}`);
            return "BadPathError";
          }
        };
        const expected = outcome(() => buildUpstreamUrl(origin, raw, search).href);
        // Twice when asked: the second call answers from the remembered path.
        if (again) outcome(() => build(raw, ""));
        const fast = outcome(() => build(raw, search));
        assert.equal(fast === "BadPathError" ? fast : new URL(fast).href, expected);
      },
    ),
    { numRuns: 2000 },
  );
});
