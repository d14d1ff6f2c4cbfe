/**
 * @module
 * Everything between the decision and the origin's socket: the upstream URL (never leaving the
 * configured origin) and header hygiene in both directions.
 */
import { BadPathError } from "../http/errors.ts";
import { CDN_CACHE_CONTROL_SET, type SeenResponseHeaders } from "./cache_headers.ts";

// RFC 9110 §7.6.1, plus the historic proxy ones.
const HOP_BY_HOP = [
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
];

const FORWARDING = [
  "forwarded",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-port",
  "x-real-ip",
  "via",
];

/**
 * Headers only a trusted proxy may send on: origins read them as the client's address, the path or
 * method to serve instead (around every path rule the edge applied), or the host and scheme for links.
 */
const PROXY_ONLY: ReadonlySet<string> = new Set([
  "true-client-ip",
  "cf-connecting-ip",
  "cf-connecting-ipv6",
  "fastly-client-ip",
  "x-client-ip",
  "x-cluster-client-ip",
  "x-original-forwarded-for",
  "cloudfront-viewer-address",
  "client-ip",
  "forwarded-for",
  "x-forwarded",
  "x-original-url",
  "x-rewrite-url",
  "x-forwarded-prefix",
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
  "x-forwarded-ssl",
  "x-forwarded-scheme",
  "x-forwarded-server",
  "x-host",
  "x-original-host",
  "front-end-https",
  "x-url-scheme",
]);

/** Believed by earlier versions: removed so a client cannot name a user to an origin that still reads it. */
const LEGACY_USER_HEADER = "x-user-id";

const HOP_BY_HOP_SET: ReadonlySet<string> = new Set(HOP_BY_HOP);
const REQUEST_DROPPED: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  ...FORWARDING,
  "host",
  "x-request-id",
  LEGACY_USER_HEADER,
]);

/**
 * Whether the edge removes or sets a request header itself (for checking a configured name such as
 * `USER_ID_HEADER`); false for `x-user-id`, which is removed only unless it is `USER_ID_HEADER`.
 *
 * @param name a lower-case header name
 */
export function isEdgeManagedHeader(name: string): boolean {
  if (name === LEGACY_USER_HEADER) return false;
  return REQUEST_DROPPED.has(name) || PROXY_ONLY.has(name) || name.startsWith("x-edge-") ||
    name.includes("_");
}

/** Content codings Deno's `fetch` decodes by itself (unless asked for `identity`); not `x-gzip` or `deflate`. */
export const DECODED_BY_FETCH: ReadonlySet<string> = new Set(["gzip", "br"]);

/** The token this service adds to `Via`. */
export const VIA_TOKEN = "1.1 edge-personalizer";
/**
 * The upstream URL for a checked path and query, verified to stay on the origin and under its path prefix.
 *
 * @param origin the configured `ORIGIN_URL` (its path, if any, is a prefix)
 * @param path a path returned by {@linkcode checkInboundPath} or a rule target
 * @param search the query string including `?`, or empty
 * @throws {BadPathError} when the result would leave the origin or its path prefix
 */
export function buildUpstreamUrl(origin: URL, path: string, search: string): URL {
  const url = new URL(origin.href);
  const prefix = url.pathname.endsWith("/") ? url.pathname.slice(0, -1) : url.pathname;
  // Assigning `pathname` can never change the host, unlike resolving a relative reference.
  url.pathname = prefix + (path.startsWith("/") ? path : `/${path}`);
  url.search = search;
  url.hash = "";
  // Dot segments in `path` would be resolved by the setter and could climb out of the prefix.
  if (
    url.origin !== origin.origin || url.username || url.password || !url.pathname.startsWith(`${prefix}/`)
  ) {
    throw new BadPathError("The request path cannot be forwarded");
  }
  return url;
}

/** A query as a parsed URL serialises it: nothing a parser would encode, strip or end at. */
const SERIALISED_QUERY = /^\?[\x21-\x22\x24-\x7e]*$/;

const UPSTREAM_PATHS_REMEMBERED = 4096;
const UPSTREAM_PATH_REMEMBERED_MAX = 256;

/**
 * {@linkcode buildUpstreamUrl} remembered per path: appending a serialised query cannot change the
 * checked origin or path. The returned function throws {@linkcode BadPathError} like `buildUpstreamUrl`.
 *
 * @param origin the configured `ORIGIN_URL`
 */
export function upstreamUrls(origin: URL): (path: string, search: string) => string {
  const built = new Map<string, string>();
  return (path, search) => {
    if (search !== "" && !SERIALISED_QUERY.test(search)) return buildUpstreamUrl(origin, path, search).href;
    let base = built.get(path);
    if (base === undefined) {
      base = buildUpstreamUrl(origin, path, "").href;
      // Only short paths, so the memo stays small whatever paths clients send.
      if (path.length <= UPSTREAM_PATH_REMEMBERED_MAX) {
        if (built.size >= UPSTREAM_PATHS_REMEMBERED) built.clear();
        built.set(path, base);
      }
    }
    return base + search;
  };
}

/** What the edge knows about the hop when it rewrites forwarding headers. */
export interface ForwardingInfo {
  /** The canonical client address (see `clientAddress`). */
  clientIp: string;
  peerIp: string;
  /** Whether the peer is a trusted proxy whose forwarding headers may be kept. */
  peerTrusted: boolean;
  /** As the client used it: a trusted proxy's word, else this hop's. */
  proto: string;
  /** Already checked against `PUBLIC_HOSTS`. */
  host: string;
  requestId: string;
  /** The user id header, and trust-only (geo) headers from an untrusted hop: never the edge's word. */
  dropped?: ReadonlySet<string>;
}

function connectionListed(connection: string | null): Set<string> | undefined {
  if (!connection) return undefined;
  const names = new Set<string>();
  for (const name of connection.split(",")) {
    const trimmed = name.trim().toLowerCase();
    if (trimmed && /^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(trimmed)) names.add(trimmed);
  }
  return names;
}

/** Header fields as name/value pairs, as they are handed to `fetch`. */
export type HeaderList = [name: string, value: string][];

/**
 * The first value of a field in a header list, or null.
 *
 * @param list the header list
 * @param name a lower-case field name
 */
export function headerValue(list: HeaderList, name: string): string | null {
  for (const [key, value] of list) if (key === name) return value;
  return null;
}

/**
 * The headers sent to the origin: hop-by-hop, inbound `x-edge-*` and underscored names removed (CGI
 * and WSGI read `_` as `-`), proxy-only hints kept only from a trusted peer, the edge's forwarding set.
 * A plain list, not `Headers`: `fetch` validates its `headers` init either way.
 *
 * @param inbound the client's request headers (not changed)
 * @param info the hop facts
 * @returns a fresh list; the caller appends its `x-edge-*` decision headers
 */
export function upstreamRequestHeaders(inbound: Headers, info: ForwardingInfo): HeaderList {
  const listed = connectionListed(inbound.get("connection"));
  const headers: HeaderList = [];
  let forwardedFor: string | null = null;
  let via: string | null = null;
  let acceptEncoding = false;
  inbound.forEach((value, name) => {
    if (
      REQUEST_DROPPED.has(name) || name.startsWith("x-edge-") || name.includes("_") || listed?.has(name) ||
      info.dropped?.has(name) || (!info.peerTrusted && PROXY_ONLY.has(name))
    ) {
      if (info.peerTrusted) {
        if (name === "x-forwarded-for") forwardedFor = value;
        else if (name === "via") via = value;
      }
      return;
    }
    if (name === "accept-encoding") acceptEncoding = true;
    headers.push([name, value]);
  });
  headers.push(
    ["x-forwarded-for", forwardedFor ? `${forwardedFor}, ${info.peerIp}` : info.peerIp],
    ["x-forwarded-proto", info.proto],
    ["x-forwarded-host", info.host],
    ["forwarded", forwardedElement(info)],
    ["x-real-ip", info.clientIp],
    ["via", via ? `${via}, ${VIA_TOKEN}` : VIA_TOKEN],
    ["x-request-id", info.requestId],
  );
  // Without an Accept-Encoding, fetch would ask for gzip itself; see downstreamResponseHeaders.
  if (!acceptEncoding) headers.push(["accept-encoding", "identity"]);
  return headers;
}

/** RFC 7239: `for=198.51.100.7;host="shop.example";proto=https`, IPv6 as `for="[2001:db8::7]"`. */
function forwardedElement(info: ForwardingInfo): string {
  const ip = info.clientIp;
  const node = /^[\d.]+$/.test(ip) ? ip : /^[\da-f:.]+$/i.test(ip) ? `"[${ip}]"` : "unknown";
  const host = info.host.replace(/["\\]/g, "\\$&");
  return `for=${node};host="${host}";proto=${info.proto === "https" ? "https" : "http"}`;
}

/**
 * The headers returned to the client. Deno's `fetch` decodes gzip and br yet keeps `Content-Encoding`
 * and `Content-Length`, so those are dropped (and a strong `ETag` weakened) to describe the body sent.
 *
 * @param upstream the origin's response headers (not changed)
 * @param requestedEncoding the `Accept-Encoding` the edge sent to the origin
 * @param headers where to put them: best the `Response`'s own, which the constructor would not copy again
 * @param seen filled in with the copied fields `finishResponseHeaders` reads, if given
 */
export function downstreamResponseHeaders(
  upstream: Headers,
  requestedEncoding: string | null,
  headers: Headers = new Headers(),
  seen?: SeenResponseHeaders,
): Headers {
  const listed = connectionListed(upstream.get("connection"));
  const decoded = requestedEncoding?.trim().toLowerCase() !== "identity" &&
    DECODED_BY_FETCH.has(upstream.get("content-encoding")?.trim().toLowerCase() ?? "");
  let via: string | null = null;
  upstream.forEach((value, name) => {
    if (HOP_BY_HOP_SET.has(name) || listed?.has(name)) return;
    if (name === "via") {
      via = value;
      return;
    }
    if (decoded) {
      if (name === "content-encoding" || name === "content-length") return;
      if (name === "etag" && !value.startsWith("W/")) {
        headers.append(name, `W/${value}`);
        return;
      }
    }
    if (seen) noteSeen(seen, name, value);
    headers.append(name, value);
  });
  headers.set("via", via ? `${via}, ${VIA_TOKEN}` : VIA_TOKEN);
  return headers;
}

function noteSeen(seen: SeenResponseHeaders, name: string, value: string): void {
  if (name === "vary") seen.vary = value;
  else if (name === "cache-control") seen.cacheControl = value;
  else if (name === "content-type") seen.contentType = value;
  else if (CDN_CACHE_CONTROL_SET.has(name)) seen.cdnCacheControl = true;
}
