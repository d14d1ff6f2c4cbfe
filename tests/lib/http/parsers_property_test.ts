/**
 * Property tests: every parser of client-controlled header bytes is total. Cookies, the sticky
 * assignment cookie, Client Hints and the User-Agent, the client address from `X-Forwarded-For`,
 * the request id and the whole facts stage accept any bytes a `Headers` object can hold and
 * answer with a value (or, for the path, a `BadPathError`) — never another exception.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseCookies } from "../../../lib/http/cookies.ts";
import { parseSticky } from "../../../lib/pipeline/sticky.ts";
import { StickySigner } from "../../../lib/pipeline/sticky.ts";
import { CidrList, clientAddress } from "../../../lib/http/net.ts";
import { classifyDevice, UaCache } from "../../../lib/pipeline/device.ts";
import { gatherFacts, requestIdFrom } from "../../../lib/pipeline/facts.ts";
import { requestUrlParts, splitUrl } from "../../../lib/http/paths.ts";
import { DEFAULT_COUNTRY_HEADERS } from "../../../lib/pipeline/geo.ts";
import { BadPathError } from "../../../lib/http/errors.ts";

/** Any bytes as a latin-1 string: what an HTTP/1.1 header value can carry. */
const bytes = fc.uint8Array({ maxLength: 300 }).map((array) => String.fromCharCode(...array));
/** Header-value-shaped text, including the separators parsers split on. */
const headerish = fc.oneof(
  bytes,
  fc.string({ unit: "grapheme", maxLength: 120 }),
  fc.array(
    fc.oneof(
      fc.constantFrom(
        ";",
        "=",
        ",",
        "|",
        ":",
        '"',
        "%",
        "%zz",
        "%E0%A4%A",
        " ",
        "\t",
        "?1",
        "?0",
        "1.2.3.4",
        "::1",
      ),
      fc.string({ maxLength: 8 }),
    ),
    { maxLength: 30 },
  ).map((parts) => parts.join("")),
);

/** Builds headers from arbitrary values, keeping those `Headers` itself accepts (as a server would). */
function headersFrom(entries: [string, string][]): Headers {
  const headers = new Headers();
  for (const [name, value] of entries) {
    try {
      headers.append(name, value);
    } catch {
      // Not a header an HTTP parser would have handed over.
    }
  }
  return headers;
}

const HEADER_NAMES = [
  "cookie",
  "user-agent",
  "sec-ch-ua-mobile",
  "sec-ch-ua-platform",
  "sec-ch-viewport-width",
  "viewport-width",
  "sec-ch-dpr",
  "dpr",
  "device-memory",
  "sec-ch-device-memory",
  "save-data",
  "ect",
  "downlink",
  "rtt",
  "sec-gpc",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-edge-cdn-secret",
  "x-geo-region",
  "x-request-id",
  "host",
  ...DEFAULT_COUNTRY_HEADERS,
];
const headerEntries = fc.array(fc.tuple(fc.constantFrom(...HEADER_NAMES), headerish), { maxLength: 12 });

Deno.test("property: parseCookies is total and bounded on arbitrary bytes", () => {
  fc.assert(
    fc.property(fc.oneof(headerish, fc.constant(null)), (header) => {
      const cookies = parseCookies(header);
      assert.ok(cookies instanceof Map);
      assert.ok(cookies.size <= 100);
      for (const [name, value] of cookies) {
        assert.equal(typeof name, "string");
        assert.equal(typeof value, "string");
        assert.ok(name.length > 0);
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: parseSticky is total, bounded, and keeps only well-formed assignments", () => {
  fc.assert(
    fc.property(fc.oneof(headerish, fc.constant(undefined)), (value) => {
      const sticky = parseSticky(value);
      assert.ok(sticky.size <= 32);
      for (const [key, variation] of sticky) {
        assert.match(key, /^[A-Za-z0-9_.-]{1,64}$/);
        assert.match(variation, /^[A-Za-z0-9_.-]{1,64}$/);
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: a sticky value the edge did not sign never verifies, whatever its bytes", () => {
  const signer = new StickySigner(["property-sticky-secret-0123"]);
  const signature = signer.sign("hero:b").slice("hero:b".length);
  fc.assert(
    fc.property(fc.oneof(headerish, fc.constant(undefined)), fc.boolean(), (value, withSignature) => {
      // With a real signature appended to another value too: it binds the value it was made for.
      const sent = withSignature && value !== undefined && value !== "hero:b" ? value + signature : value;
      assert.equal(signer.verify(sent, 0), undefined);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: classifyDevice is total on arbitrary Client Hints and User-Agents", () => {
  const uaCache = new UaCache(50);
  fc.assert(
    fc.property(headerEntries, (entries) => {
      const info = classifyDevice(headersFrom(entries), { uaCache });
      assert.ok(["mobile", "tablet", "desktop", "bot"].includes(info.device));
      assert.ok(["slow", "fast", "save-data"].includes(info.network));
      for (const n of [info.viewportWidth, info.dpr, info.deviceMemory]) {
        if (n !== undefined) assert.ok(Number.isFinite(n) && n > 0);
      }
    }),
    { numRuns: 1000 },
  );
});

Deno.test("property: clientAddress is total, and an untrusted peer's X-Forwarded-For is ignored", () => {
  const trusted = new CidrList(["10.0.0.0/8", "::1/128", "127.0.0.1/32"]);
  const peer = fc.oneof(
    fc.constantFrom("10.1.2.3", "127.0.0.1", "::1", "203.0.113.9", "::ffff:10.0.0.1"),
    headerish,
  );
  fc.assert(
    fc.property(peer, fc.oneof(headerish, fc.constant(null)), (peerIp, forwardedFor) => {
      const client = clientAddress(peerIp, forwardedFor, trusted);
      assert.equal(typeof client, "string");
      if (!trusted.has(peerIp)) assert.equal(client, clientAddress(peerIp, null, trusted));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: requestIdFrom only ever echoes a well-formed id", () => {
  fc.assert(
    fc.property(headerish, (value) => {
      const id = requestIdFrom(headersFrom([["x-request-id", value]]), () => "fresh");
      assert.ok(id === "fresh" || /^[A-Za-z0-9._:-]{1,128}$/.test(id));
    }),
    { numRuns: 1000 },
  );
});

Deno.test("property: gatherFacts is total on arbitrary headers; an untrusted hop's geo is never believed", () => {
  const trustedProxies = new CidrList(["10.0.0.0/8"]);
  const uaCache = new UaCache(50);
  fc.assert(
    fc.property(
      headerEntries,
      fc.constantFrom("203.0.113.7", "10.0.0.5"),
      fc.string({ unit: "grapheme", maxLength: 30 }),
      (entries, peerIp, path) => {
        let request: Request;
        try {
          request = new Request(new URL(`/${path}`, "http://edge.local"), { headers: headersFrom(entries) });
        } catch {
          return;
        }
        try {
          const facts = gatherFacts(request, peerIp, {
            trustedProxies,
            cdnSecret: "cdn-secret-0123456789",
            countryHeaders: DEFAULT_COUNTRY_HEADERS,
            requestId: "r1",
            uaCache,
          });
          if (
            peerIp === "203.0.113.7" && request.headers.get("x-edge-cdn-secret") !== "cdn-secret-0123456789"
          ) {
            assert.equal(facts.geoTrusted, false);
            assert.equal(facts.countrySource, undefined, "no geo header and no IP database");
            assert.equal(facts.regionHint, undefined);
            assert.equal(facts.clientIp, "203.0.113.7");
          }
          assert.ok(facts.proto === "http" || facts.proto === "https");
        } catch (error) {
          assert.ok(error instanceof BadPathError, `unexpected ${String(error)}`);
        }
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("property: splitUrl cuts scheme, host, path and query out of a serialised URL exactly as URL does", () => {
  fc.assert(
    fc.property(fc.webUrl({ withQueryParameters: true, withFragments: true }), fc.string(), (raw, extra) => {
      let url: URL;
      try {
        url = new URL(raw + encodeURI(extra).replace(/#/g, ""));
      } catch {
        return;
      }
      const parts = splitUrl(url.href);
      assert.equal(parts.scheme, url.protocol.slice(0, -1));
      assert.equal(parts.host, url.host);
      assert.equal(parts.path, url.pathname);
      assert.equal(parts.search, url.search);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: requestUrlParts of a raw request URL (dot segments, backslashes, anything) equals URL's parts", () => {
  const piece = fc.oneof(
    fc.constantFrom(
      "/",
      "..",
      ".",
      "%2e",
      "%2F",
      "\\",
      "?",
      "#",
      "a",
      "é",
      " ",
      "\t",
      "'",
      '"',
      "<",
      "|",
      "[",
      "//",
    ),
    fc.string({ maxLength: 5 }),
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
      const raw = `http://edge.local/${pieces.join("")}`;
      let url: URL;
      try {
        url = new URL(raw);
      } catch {
        return;
      }
      const parts = requestUrlParts(raw);
      assert.equal(parts.scheme, url.protocol.slice(0, -1));
      assert.equal(parts.host, url.host);
      assert.equal(parts.path, url.pathname);
      assert.equal(parts.search, url.search);
    }),
    { numRuns: 3000 },
  );
});
