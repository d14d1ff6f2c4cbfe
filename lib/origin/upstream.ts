/**
 * @module
 * Everything between the decision and the origin's socket: the upstream URL (never leaving the
 * configured origin) and header hygiene in both directions.
 */
import { BadPathError } from "../http/errors.ts";
import { CDN_CACHE_CONTROL_SET, type SeenResponseHeaders } from "./cache_headers.ts";

/** Hop-by-hop headers (RFC 9110 §7.6.1, plus the historic proxy ones). */
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

/** Forwarding headers the edge sets itself on every request from what it believed. */
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
 * Headers only a trusted proxy may send on (`TRUSTED_PROXIES`); from anyone else they are
 * removed before the origin. Origins and their frameworks read them as facts about the client:
 * its address (rate limits, audit logs, allow-lists; nginx's `real_ip_header`), the path or
 * method to serve instead of the request's (IIS, Symfony, Spring, Rails: around every path rule
 * the edge applied, or a GET turned into a DELETE), and the host or scheme to build links with.
 */
const PROXY_ONLY: ReadonlySet<string> = new Set([
  // Client address.
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
  // Path and method overrides.
  "x-original-url",
  "x-rewrite-url",
  "x-forwarded-prefix",
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
  // Host and scheme hints.
  "x-forwarded-ssl",
  "x-forwarded-scheme",
  "x-forwarded-server",
  "x-host",
  "x-original-host",
  "front-end-https",
  "x-url-scheme",
]);

/**
 * The user id header earlier versions believed from `TRUSTED_PROXIES`: removed from every
 * request, so an origin that still reads it cannot be told a user by a client (`x-edge-user`
 * is the edge's only statement of who is logged in).
 */
const LEGACY_USER_HEADER = "x-user-id";

const HOP_BY_HOP_SET: ReadonlySet<string> = new Set(HOP_BY_HOP);
/** Request headers never copied as sent: hop-by-hop, forwarding (re-set by the edge), host, id. */
const REQUEST_DROPPED: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  ...FORWARDING,
  "host",
  "x-request-id",
  LEGACY_USER_HEADER,
]);

/**
 * Whether the edge removes or sets a request header itself, so that it cannot carry anything
 * else to the origin (for checking a configured header name such as `USER_ID_HEADER`).
 *
 * @param name a lower-case header name
 * @returns true for hop-by-hop, forwarding, client-address, override and `x-edge-*` names,
 *   `host`, `x-request-id`, and any name with an underscore; false for `x-user-id`, which is
 *   removed only so that it can never name a user unless it is `USER_ID_HEADER`
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
 * Builds the upstream URL from the configured origin, a checked path and the query, then
 * verifies that scheme, host and port are still the origin's and that the path is still under
 * the origin's path prefix.
 *
 * @param origin the configured `ORIGIN_URL` (its path, if any, is a prefix)
 * @param path a path returned by {@linkcode checkInboundPath} or a rule target
 * @param search the query string including `?`, or empty
 * @returns the URL to fetch
 * @throws {BadPathError} when the result would leave the origin or its path prefix
 * @example
 * ```ts
 * buildUpstreamUrl(new URL("http://origin:8080/shop"), "/cart", "?a=1").href;
 * // "http://origin:8080/shop/cart?a=1"
 * ```
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

/** Paths an {@linkcode upstreamUrls} builder remembers before it starts over. */
const UPSTREAM_PATHS_REMEMBERED = 4096;
/** Longest path (in UTF-16 units) an {@linkcode upstreamUrls} builder remembers. */
const UPSTREAM_PATH_REMEMBERED_MAX = 256;

/**
 * {@linkcode buildUpstreamUrl} remembered per path: the query is appended to the checked result,
 * which cannot change its origin or path; a query not in serialised form takes the full build.
 *
 * @param origin the configured `ORIGIN_URL`
 * @returns `(path, search) => href`, throwing {@linkcode BadPathError} like `buildUpstreamUrl`
 */
export function upstreamUrls(origin: URL): (path: string, search: string) => string {
  const built = new Map<string, string>();
  return (path, search) => {
    if (search !== "" && !SERIALISED_QUERY.test(search)) return buildUpstreamUrl(origin, path, search).href;
    let base = built.get(path);
    if (base === undefined) {
      base = buildUpstreamUrl(origin, path, "").href;
      // Only short paths are remembered, so the memo stays small (4096 × ~0.5 KiB at most)
      // whatever paths clients send.
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
  /** The connection's peer address. */
  peerIp: string;
  /** Whether the peer is a trusted proxy whose forwarding headers may be kept. */
  peerTrusted: boolean;
  /** `http` or `https` as the client used it (a trusted proxy's word, else this hop's). */
  proto: string;
  /** The host the client asked for, already checked against `PUBLIC_HOSTS`. */
  host: string;
  /** The request id to forward. */
  requestId: string;
  /**
   * Further request headers to drop: the configured user id header (always), and trust-only
   * headers (geo) when this hop is not trusted for them, so the origin can never mistake a
   * client's value for the edge's.
   */
  dropped?: ReadonlySet<string>;
}

/** The header names a `Connection` header lists (lower case), or undefined when there are none. */
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
 * The value of a field in a header list (the first one; names are lower case).
 *
 * @param list the header list
 * @param name a lower-case field name
 * @returns the value, or null when absent
 */
export function headerValue(list: HeaderList, name: string): string | null {
  for (const [key, value] of list) if (key === name) return value;
  return null;
}

/**
 * Builds the headers sent to the origin: hop-by-hop headers, every inbound `x-edge-*` header
 * and every name with an underscore removed first (CGI, WSGI and older Puma read `_` as `-`, so
 * `x_edge_user` would be `x-edge-user` there), client-address, override and host hints kept only
 * from a trusted peer, then the edge's own `X-Forwarded-*`, `X-Real-IP`, `Via` and
 * `X-Request-Id` set.
 * A plain list, not `Headers`: `fetch` validates its `headers` init either way.
 *
 * @param inbound the client's request headers (not changed)
 * @param info the hop facts
 * @returns a fresh list for the upstream request; the caller appends its `x-edge-*` decision headers
 */
export function upstreamRequestHeaders(inbound: Headers, info: ForwardingInfo): HeaderList {
  const listed = connectionListed(inbound.get("connection"));
  const headers: HeaderList = [];
  let forwardedFor: string | null = null;
  let via: string | null = null;
  let acceptEncoding = false;
  // One pass that copies only what may go on, instead of a copy followed by many deletes.
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
    // Iterating `Headers` combines repeated fields (set-cookie aside), so each name comes once.
    headers.push([name, value]);
  });
  // Scheme and host are what the edge believed (a trusted hop's word, the host checked against
  // PUBLIC_HOSTS), never a header passed on as sent; so is `Forwarded`, rebuilt from the same.
  headers.push(
    ["x-forwarded-for", forwardedFor ? `${forwardedFor}, ${info.peerIp}` : info.peerIp],
    ["x-forwarded-proto", info.proto],
    ["x-forwarded-host", info.host],
    ["forwarded", forwardedElement(info)],
    // As nginx's realip module does: an origin that reads it gets the client the edge resolved.
    ["x-real-ip", info.clientIp],
    ["via", via ? `${via}, ${VIA_TOKEN}` : VIA_TOKEN],
    ["x-request-id", info.requestId],
  );
  // Without an Accept-Encoding, fetch would ask for gzip itself; see downstreamResponseHeaders.
  if (!acceptEncoding) headers.push(["accept-encoding", "identity"]);
  return headers;
}

/**
 * The RFC 7239 `Forwarded` element for the client as the edge resolved it:
 * `for=198.51.100.7;host="shop.example";proto=https` (an IPv6 client as `for="[2001:db8::7]"`,
 * anything that is no address as `for=unknown`).
 *
 * @param info the hop facts
 * @returns one element
 */
function forwardedElement(info: ForwardingInfo): string {
  const ip = info.clientIp;
  const node = /^[\d.]+$/.test(ip) ? ip : /^[\da-f:.]+$/i.test(ip) ? `"[${ip}]"` : "unknown";
  const host = info.host.replace(/["\\]/g, "\\$&");
  return `for=${node};host="${host}";proto=${info.proto === "https" ? "https" : "http"}`;
}

/**
 * Builds the headers returned to the client from the origin's response headers.
 *
 * Deno's `fetch` decodes gzip and br bodies itself whenever the request's `Accept-Encoding`
 * is anything but `identity`, yet keeps `Content-Encoding` and `Content-Length`. Those two are
 * then dropped (and a strong `ETag` weakened, since the bytes changed) so the headers describe
 * the body the client gets; `Deno.serve` compresses it again for the client where it can.
 *
 * @param upstream the origin's response headers (not changed)
 * @param requestedEncoding the `Accept-Encoding` the edge sent to the origin
 * @param headers where to put them: best the empty headers of the `Response` being built, since
 *   handing a `Headers` object to the `Response` constructor converts it again, field by field
 * @param seen filled in with the copied fields `finishResponseHeaders` reads, if given
 * @returns `headers`, without hop-by-hop fields and with `Via` appended
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
