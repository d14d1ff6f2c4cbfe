/**
 * @module
 * Request paths: cutting a URL, the canonical path the edge forwards and routes on (dot
 * segments and encoded separators refused), and the one table of the paths the edge answers
 * itself, with the route class each is counted under.
 */
import { BadPathError } from "./errors.ts";

// A path and a query `URL` would leave as they are.
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@\/]*$/;
const DOT_SEGMENT = /(?:^|\/)\.{1,2}(?:\/|$)/;
const PLAIN_QUERY = /^(?:\?[\x21\x24-\x26\x28-\x3b\x3d\x3f-\x7e]*)?$/;

/**
 * The parts of a request URL as `URL` would give them: `Deno.serve` keeps the raw target, so the
 * rare URL that `URL` would change is parsed, the rest only cut.
 *
 * @param href the request URL
 */
export function requestUrlParts(
  href: string,
): { scheme: string; host: string; path: string; search: string } {
  const parts = splitUrl(href);
  if (PLAIN_PATH.test(parts.path) && !DOT_SEGMENT.test(parts.path) && PLAIN_QUERY.test(parts.search)) {
    return parts;
  }
  const url = new URL(href);
  return { scheme: url.protocol.slice(0, -1), host: url.host, path: url.pathname, search: url.search };
}

/**
 * Cuts scheme, host (without credentials), path and query out of a URL string without normalising it.
 *
 * @param href an absolute URL
 */
export function splitUrl(href: string): { scheme: string; host: string; path: string; search: string } {
  const colon = href.indexOf(":");
  const hostStart = href.startsWith("//", colon + 1) ? colon + 3 : colon + 1;
  let pathStart = href.indexOf("/", hostStart);
  const query = href.indexOf("?", hostStart);
  const hash = href.indexOf("#", hostStart);
  const end = hash < 0 ? href.length : hash;
  if (pathStart < 0 || (query >= 0 && query < pathStart)) pathStart = query >= 0 ? query : end;
  const pathEnd = query >= 0 && query < end ? query : end;
  // Just "?" is empty, as `URL.search` has it.
  const search = query >= 0 && query < end && end - query > 1 ? href.slice(query, end) : "";
  const authority = href.slice(hostStart, pathStart);
  return {
    scheme: href.slice(0, colon),
    host: authority.slice(authority.lastIndexOf("@") + 1),
    path: pathStart < pathEnd ? href.slice(pathStart, pathEnd) : "/",
    search,
  };
}

/**
 * The canonical path the edge forwards and routes on: slashes collapsed, percent-encoding normalised;
 * encoded separators, dot segments (even double encoded) and control characters refused, since an
 * origin that decodes them could be led outside the route the rules matched.
 *
 * @param pathname the path of the request URL (already WHATWG-normalised)
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
          // Not double encoding: nothing an origin would decode.
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
  return path.includes("%") ? normalisePercentEncoding(path) : path;
}

const ESCAPE = /%([0-9A-Fa-f]{2})/g;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * Percent-encoding in RFC 3986 §6.2.2 normal form: one spelling for the rules to match.
 *
 * @param path a path (or glob) whose escapes are `%` and two hex digits
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
 * The path the rules' globs match: `;` parameters cut, as Tomcat and Jetty do before mapping.
 *
 * @param path a checked inbound path
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
 */
export function isDotSegment(segment: string): boolean {
  const name = segment.includes(";") ? segment.slice(0, segment.indexOf(";")) : segment;
  return name === "." || name === "..";
}

/** Route classes a request is counted under. */
export const ROUTE_CLASSES = ["proxy", "edge", "sync", "ofrep", "ops"] as const;
export type RouteClass = typeof ROUTE_CLASSES[number];

/** Who answers: the proxy, one of the edge-served reads, or the edge's routers (Hono). */
export type Handler = "proxy" | "context" | "recommendations" | "routers";

export interface Route {
  readonly handler: Handler;
  readonly routeClass: RouteClass;
}

interface EdgePath extends Route {
  /** The path, or with `tree` the root of the paths below it (`/_edge` covers `/_edge/x`). */
  readonly path: string;
  readonly tree?: boolean;
  /** Only `GET` and `HEAD` are the edge's; other methods go on down the table. */
  readonly readOnly?: boolean;
}

/** First match wins; the routers answer unknown paths in a tree with 404, never the proxy. */
const EDGE_PATHS: readonly EdgePath[] = [
  { path: "/_edge/context", readOnly: true, handler: "context", routeClass: "edge" },
  { path: "/_edge/recommendations", readOnly: true, handler: "recommendations", routeClass: "edge" },
  { path: "/_edge/sync", handler: "routers", routeClass: "sync" },
  { path: "/_edge/health", handler: "routers", routeClass: "ops" },
  { path: "/_edge/ready", handler: "routers", routeClass: "ops" },
  { path: "/_edge/metrics", handler: "routers", routeClass: "ops" },
  { path: "/_edge", tree: true, handler: "routers", routeClass: "edge" },
  { path: "/.well-known/gpc.json", readOnly: true, handler: "routers", routeClass: "ops" },
  { path: "/ofrep/v1", tree: true, handler: "routers", routeClass: "ofrep" },
];

const PROXY: Route = { handler: "proxy", routeClass: "proxy" };

/**
 * The route of a request: the proxy's for every path the edge does not answer.
 *
 * @param method the request method; undefined for "any method"
 * @param path the request path, percent-encoding decoded as the routers decode it
 */
export function routeOf(method: string | undefined, path: string): Route {
  // Almost every request is the origin's: one character rules most of them out.
  if (path.charCodeAt(1) !== 95 && path.charCodeAt(1) !== 46 && path.charCodeAt(1) !== 111) return PROXY;
  const readOnly = method === undefined || method === "GET" || method === "HEAD";
  for (const entry of EDGE_PATHS) {
    if (entry.readOnly && !readOnly) continue;
    if (
      path === entry.path ||
      (entry.tree && path.startsWith(entry.path) && path.charCodeAt(entry.path.length) === 47)
    ) {
      return entry;
    }
  }
  return PROXY;
}

/** @param path the request path, taken as a `GET` */
export function routeClassOf(path: string): RouteClass {
  return routeOf("GET", path).routeClass;
}
