/**
 * @module
 * Everything between the decision and the origin: checking the inbound path, building the
 * upstream URL (never leaving the configured origin), header hygiene in both directions, and
 * the streamed, time-limited `fetch` itself.
 */
import {
  BadPathError,
  ClientClosedError,
  OriginBodyTimeoutError,
  OriginTimeoutError,
  OriginUnavailableError,
} from "../http/errors.ts";
import type { DeadlineSweep } from "../support/deadlines.ts";

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
 * Checks an inbound URL path and returns it in the form the edge forwards and routes on.
 * Repeated slashes are collapsed and percent-encoding is normalised (RFC 3986 §6.2.2: escaped
 * unreserved characters decoded, the hex digits of the others upper-cased), so `/%61dmin` is
 * `/admin` for the rules as for the origin. Encoded slashes or backslashes, dot segments (plain,
 * encoded or double encoded) and control characters are refused, because an origin that decodes
 * them could be led outside the route the rules matched.
 *
 * @param pathname the path of the request URL (already WHATWG-normalised)
 * @returns the path to forward and route on
 * @throws {BadPathError} when the path cannot be forwarded safely
 * @example
 * ```ts
 * checkInboundPath("/%61dmin//x%2dy"); // "/admin/x-y"
 * ```
 */
export function checkInboundPath(pathname: string): string {
  if (!pathname.startsWith("/")) throw new BadPathError('The request path must start with "/"');
  if (pathname.length > 8192) throw new BadPathError("The request path is too long");
  if (pathname.includes("\\")) throw new BadPathError("The request path must not contain a backslash");
  const path = pathname.replace(/\/{2,}/g, "/");
  if (path.includes("%")) {
    for (const segment of path.split("/")) {
      if (!segment.includes("%")) continue;
      let once: string;
      try {
        once = decodeURIComponent(segment);
      } catch {
        throw new BadPathError("The request path has malformed percent-encoding");
      }
      checkDecodedSegment(once);
      if (once.includes("%")) {
        let twice = once;
        try {
          twice = decodeURIComponent(once);
        } catch {
          // Not valid double encoding: the origin will not decode it into anything dangerous.
        }
        checkDecodedSegment(twice);
      }
    }
  }
  for (const segment of path.split("/")) {
    if (isDotSegment(segment)) {
      throw new BadPathError("The request path must not contain dot segments");
    }
  }
  // Every escape is well-formed here: each segment holding one decoded above.
  return path.includes("%") ? normalisePercentEncoding(path) : path;
}

const ESCAPE = /%([0-9A-Fa-f]{2})/g;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * Percent-encoding in its normal form (RFC 3986 §6.2.2.1–2): escaped unreserved characters
 * (`A-Z a-z 0-9 - . _ ~`) decoded, every other escape with upper-case hex digits. Equivalent for
 * every server, and one spelling for the rules to match.
 *
 * @param path a path (or glob) whose escapes are `%` and two hex digits
 * @returns the same path in normal form
 * @example
 * ```ts
 * normalisePercentEncoding("/%61dmin/caf%c3%a9"); // "/admin/caf%C3%A9"
 * ```
 */
export function normalisePercentEncoding(path: string): string {
  return path.replace(ESCAPE, (escape, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : escape.toUpperCase();
  });
}

/**
 * The path the rules' globs match: an inbound path (from {@linkcode checkInboundPath}) with the
 * `;` parameters of each segment cut, as Tomcat and Jetty do before mapping a request
 * (`/admin;x/y` is served as `/admin/y`), and as {@linkcode isDotSegment} reads a segment.
 *
 * @param path a checked inbound path
 * @returns the path without segment parameters, repeated slashes collapsed
 * @example
 * ```ts
 * pathForRules("/admin;x/y;jsessionid=1"); // "/admin/y"
 * ```
 */
export function pathForRules(path: string): string {
  if (!path.includes(";")) return path;
  return path.replace(/;[^/]*/g, "").replace(/\/{2,}/g, "/");
}

function checkDecodedSegment(segment: string): void {
  if (segment.includes("/") || segment.includes("\\")) {
    throw new BadPathError("The request path must not contain encoded slashes");
  }
  if (isDotSegment(segment)) {
    throw new BadPathError("The request path must not contain dot segments");
  }
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(segment)) {
    throw new BadPathError("The request path must not contain control characters");
  }
}

/**
 * `.` or `..`, also with a `;` path parameter, which some servers (Tomcat) strip before resolving.
 *
 * @param segment one path segment
 * @returns whether a server could resolve it as a dot segment
 */
export function isDotSegment(segment: string): boolean {
  const name = segment.includes(";") ? segment.slice(0, segment.indexOf(";")) : segment;
  return name === "." || name === "..";
}

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
 * A faster {@linkcode buildUpstreamUrl} for the request path: each distinct path is built and
 * checked once (two URL parses), and the query is appended to the remembered result, which
 * cannot change its origin or path. A query that is not already in serialised form (a leading
 * `?`, then printable ASCII without `#`, as a parsed request URL gives it) goes through the
 * full build.
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

/** Header fields as name/value pairs, the cheapest form to hand to `fetch`. */
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
 *
 * It returns a plain list rather than a `Headers` object: `fetch` converts and validates its
 * `headers` init either way, and a `Headers` built field by field costs that work twice.
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
  // `forEach`, not `for…of`: Deno's `Headers` iterator costs over 1 µs per field.
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
 * @returns `headers`, without hop-by-hop fields and with `Via` appended
 */
export function downstreamResponseHeaders(
  upstream: Headers,
  requestedEncoding: string | null,
  headers: Headers = new Headers(),
): Headers {
  const listed = connectionListed(upstream.get("connection"));
  const decoded = requestedEncoding?.trim().toLowerCase() !== "identity" &&
    DECODED_BY_FETCH.has(upstream.get("content-encoding")?.trim().toLowerCase() ?? "");
  let via: string | null = null;
  // `forEach`, not `for…of`: Deno's `Headers` iterator costs over 1 µs per field.
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
    headers.append(name, value);
  });
  headers.set("via", via ? `${via}, ${VIA_TOKEN}` : VIA_TOKEN);
  return headers;
}

/** Options for {@linkcode fetchOrigin}. */
export interface FetchOriginOptions {
  /** The fetch implementation (from `Deps`). */
  fetch: typeof fetch;
  /** How long to wait for the response headers. */
  timeoutMs: number;
  /**
   * Longest silence of the origin while the body is being read and the client is waiting for
   * more (default: `timeoutMs`). See {@linkcode guardBodyIdle}; a small body read whole (see
   * {@linkcode BUFFERED_BODY_MAX}) must arrive completely within this time.
   */
  bodyIdleTimeoutMs?: number;
  /** Aborts the upstream request, e.g. when the client goes away. */
  signal?: AbortSignal;
  /** Told when the body idle timeout cut a response off (for a log line or a metric). */
  onBodyIdle?: () => void;
  /** Where the timeouts are armed (`Deps.deadlines`). */
  deadlines: DeadlineSweep;
}

/** What the origin answered: status, headers, and the body read whole or guarded as a stream. */
export interface OriginResponse {
  status: number;
  statusText: string;
  /** The origin's response headers (immutable; see {@linkcode downstreamResponseHeaders}). */
  headers: Headers;
  /**
   * The bytes, when the body was small and read at once; a stream guarded by the idle timeout
   * otherwise; null when the answer has no body.
   */
  body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null;
}

/** Statuses whose responses never carry a body. */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * Bodies up to this many bytes (by an uncompressed `Content-Length`) are "small": they are read
 * whole, in one native read, before the response starts, within `bodyIdleTimeoutMs` in total.
 * A JS stream per response (the idle guard) cost more than the rest of the proxy path; for a
 * small body the wait is short, and a stall becomes a clean 504 instead of a cut-off body.
 * (Aborting the fetch does not stop a body `Deno.serve` pipes natively, so passing it through
 * unguarded is not an option.) Larger or unsized bodies stream through the idle guard, so time
 * to first byte never waits for a big page and a slow but steady origin is never cut off.
 */
export const BUFFERED_BODY_MAX = 64 * 1024;

/**
 * Sends a request to the origin with the body streamed, redirects not followed, a timeout on
 * the response headers, and then a limit on the body, so a stalled origin never holds the
 * client's and the origin's connections forever:
 * - a small body (a `Content-Length` of at most {@linkcode BUFFERED_BODY_MAX}, not compressed)
 *   is read whole and must arrive within `bodyIdleTimeoutMs` in total, else the answer is 504;
 * - any other body streams for as long as it takes, but an origin that goes silent mid-body for
 *   longer than `bodyIdleTimeoutMs` while the client waits is cut off (the body stream errors,
 *   the client connection is closed, and the upstream connection is released).
 *
 * @param url the upstream URL from {@linkcode buildUpstreamUrl} or {@linkcode upstreamUrls}
 * @param init method, headers and body of the upstream request
 * @param options fetch, timeouts, client signal
 * @returns the origin's answer
 * @throws {OriginTimeoutError} when no headers (or a small body) arrive in time
 * @throws {OriginUnavailableError} when the connection fails
 * @throws {ClientClosedError} when the client went away first
 */
export async function fetchOrigin(
  url: URL | string,
  init: { method: string; headers: HeadersInit; body: ReadableStream<Uint8Array> | null },
  options: FetchOriginOptions,
): Promise<OriginResponse> {
  const { deadlines } = options;
  // A client already gone (while the visitor was resolved) is not worth an origin call.
  if (options.signal?.aborted) throw new ClientClosedError();
  const controller = new AbortController();
  let timedOut = false;
  const expire = () => {
    timedOut = true;
    controller.abort();
  };
  const cancelDeadline = deadlines.arm(options.timeoutMs, expire);
  // Cheaper than AbortSignal.any on every request: the client's abort is forwarded by hand.
  options.signal?.addEventListener("abort", () => controller.abort(options.signal?.reason), { once: true });
  const hasBody = init.body !== null && init.method !== "GET" && init.method !== "HEAD";
  const failure = () => {
    if (options.signal?.aborted) return new ClientClosedError();
    if (timedOut) return new OriginTimeoutError(options.timeoutMs);
    return new OriginUnavailableError();
  };
  let response: Response;
  try {
    response = await options.fetch(url, {
      method: init.method,
      headers: init.headers,
      body: hasBody ? init.body : undefined,
      redirect: "manual",
      signal: controller.signal,
      // Required for a streamed request body.
      ...(hasBody ? { duplex: "half" } : {}),
    } as RequestInit);
  } catch {
    throw failure();
  } finally {
    cancelDeadline();
  }
  // An HTTP status outside 200–599 cannot be passed on (a `Response` refuses it): a bad gateway.
  if (response.status < 200 || response.status > 599) {
    response.body?.cancel().catch(() => {});
    throw new OriginUnavailableError(`the origin answered with status ${response.status}`);
  }
  const answer: OriginResponse = {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
    body: null,
  };
  if (!response.body || NULL_BODY_STATUSES.has(response.status) || init.method === "HEAD") {
    response.body?.cancel().catch(() => {});
    return answer;
  }
  const idleMs = options.bodyIdleTimeoutMs ?? options.timeoutMs;
  if (isSmallBody(response.headers)) {
    // One native read of the whole body (`bytes()`), not a JS stream per response.
    const cancel = deadlines.arm(idleMs, expire);
    try {
      answer.body = await response.bytes();
      return answer;
    } catch {
      if (timedOut && !options.signal?.aborted) {
        options.onBodyIdle?.();
        throw new OriginTimeoutError(idleMs);
      }
      throw failure();
    } finally {
      cancel();
    }
  }
  answer.body = guardBodyIdle(response.body, {
    idleMs,
    // Aborting the fetch releases the upstream connection at once.
    onIdle: () => {
      controller.abort();
      options.onBodyIdle?.();
    },
  });
  return answer;
}

/** Whether a body is small, sized and uncompressed (so reading it whole is bounded). */
function isSmallBody(headers: Headers): boolean {
  const length = headers.get("content-length");
  if (length === null || !/^\d{1,6}$/.test(length) || Number(length) > BUFFERED_BODY_MAX) return false;
  const encoding = headers.get("content-encoding");
  return encoding === null || encoding.trim().toLowerCase() === "identity";
}

/** Options for {@linkcode guardBodyIdle}. */
export interface GuardBodyIdleOptions {
  /** Longest wait for the next chunk while the consumer is waiting, in milliseconds. */
  idleMs: number;
  /** Called once when the idle timeout fires (before the stream errors). */
  onIdle?: () => void;
}

/**
 * Wraps a body so that it errors with {@linkcode OriginBodyTimeoutError} when the source sends
 * nothing for `idleMs` while the consumer is waiting for a chunk. The clock runs only during a
 * pending read (the wrapper has no queue of its own), so a slow *client* — backpressure — never
 * trips it: only a silent *origin* does. Every timer is cleared when the stream ends, errors or
 * is cancelled.
 *
 * @param body the source stream
 * @param options the idle timeout and a hook
 * @returns a stream with the same chunks
 * @example
 * ```ts
 * const guarded = guardBodyIdle(response.body!, { idleMs: 10_000 });
 * ```
 */
export function guardBodyIdle(
  body: ReadableStream<Uint8Array>,
  options: GuardBodyIdleOptions,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const { idleMs } = options;
  // One timer per stream, not per chunk: it is armed when a read starts waiting and, when it
  // fires, re-arms itself for the remainder if the wait began later than it was armed for.
  let timer: ReturnType<typeof setTimeout> | undefined;
  let waitingSince = -1;
  let controllerRef: ReadableStreamDefaultController<Uint8Array> | undefined;
  let done = false;
  const check = () => {
    timer = undefined;
    if (done || waitingSince < 0) return;
    const waited = performance.now() - waitingSince;
    if (waited < idleMs) {
      timer = setTimeout(check, idleMs - waited);
      return;
    }
    done = true;
    const error = new OriginBodyTimeoutError(idleMs);
    // `Deno.serve` prints the error that ends a response body to stderr: keep it to one line.
    error.stack = `${error.name}: ${error.message}; the client connection was closed`;
    options.onIdle?.();
    controllerRef?.error(error);
    reader.cancel(error).catch(() => {});
  };
  const finish = () => {
    done = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controllerRef = controller;
    },
    async pull(controller) {
      waitingSince = performance.now();
      if (timer === undefined) timer = setTimeout(check, idleMs);
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        if (!done) {
          finish();
          controller.error(error);
        }
        return;
      }
      waitingSince = -1;
      if (done) return;
      if (result.done) {
        finish();
        controller.close();
      } else {
        controller.enqueue(result.value);
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
