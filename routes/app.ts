/**
 * @module
 * `createApp(deps)`: the application — the proxy handler for the origin's paths, and the Hono
 * routers for the edge's own endpoints behind the observe middleware (request id, timing, one
 * log line per request) and the one error handler.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { errorBody } from "../lib/http/errors.ts";
import { requestIdFrom, requestUrlParts } from "../lib/pipeline/facts.ts";
import { BadPathError } from "../lib/http/errors.ts";
import { checkInboundPath } from "../lib/origin/upstream.ts";
import { ofrepRoutes } from "./ofrep.ts";
import { opsRoutes, wellKnownRoutes } from "./ops.ts";
import { proxyHandler } from "./proxy.ts";
import { syncRoutes } from "./sync.ts";
import type { AppEnv } from "./env.ts";
import { metricsRoutes } from "./metrics.ts";
import { rulesRoutes } from "./rules.ts";
import { experimentsRoutes } from "./experiments.ts";
import { edgeHandlers } from "./edge.ts";
import {
  errorResponse,
  observed,
  pathOf,
  recordRequest,
  type RequestRecord,
  type ServedHandler,
  type ServeInfo,
  stampResponse,
} from "./observe.ts";

/** The application: `fetch` is the request handler for `Deno.serve`. */
export interface EdgeApp {
  /** Handles one request. */
  fetch(request: Request, info?: ServeInfo): Promise<Response>;
  /**
   * Handles a request given as a URL or path and an init (for tests), like Hono's `request`.
   *
   * @param input an absolute URL, a path (resolved against `http://localhost`) or a request
   * @param init the request init
   * @param info the connection facts (e.g. `{ remoteAddr: { hostname: "10.0.0.1" } }`)
   */
  request(input: string | URL | Request, init?: RequestInit, info?: ServeInfo): Promise<Response>;
}

/**
 * Builds the application. The hot paths are plain handlers, observed the same way as the
 * routers (`observed`): the proxy for the origin's paths, and the edge-served reads
 * (`GET /_edge/context`, `GET /_edge/recommendations`). The edge's other endpoints
 * (`/_edge/*`, `/.well-known/*`, `/ofrep/*`) are Hono routers behind the observe middleware
 * and the error handler.
 *
 * @param deps the service's dependencies
 * @returns the application
 */
export function createApp(deps: Deps): EdgeApp {
  const proxy = proxyHandler(deps);
  const edge = edgeHandlers(deps);
  const context = observed(deps, edge.context);
  const recommendations = observed(deps, edge.recommendations);
  const routers = createRouters(deps, { proxy, context, recommendations });
  const offEdgeSpelling = observed(deps, () => {
    throw new BadPathError("The edge's own endpoints must be addressed without dot or empty segments");
  });
  const fetch = (request: Request, info?: ServeInfo): Promise<Response> => {
    const path = pathOf(request.url);
    // The proxy forwards a path as `URL` resolves it (dot segments, `%2e`) with empty segments
    // removed: a spelling that resolves into the edge's own paths must not reach the origin's.
    if (NOT_CANONICAL.test(path)) {
      const canonical = canonicalPath(request.url);
      if (canonical !== undefined && canonical !== path && edgeOwns(canonical)) {
        return offEdgeSpelling(request, info);
      }
    }
    if (request.method === "GET" || request.method === "HEAD") {
      if (path === "/_edge/context") return context(request, info);
      if (path === "/_edge/recommendations") return recommendations(request, info);
    }
    // Hono decodes percent-encoded paths before routing, so those go through it too.
    if (path.includes("%") || edgeOwns(path)) {
      return Promise.resolve(routers.fetch(request, info));
    }
    return proxy(request, info);
  };
  return {
    fetch,
    request(input, init, info) {
      const request = input instanceof Request ? (init ? new Request(input, init) : input) : new Request(
        typeof input === "string" && input.startsWith("/") ? `http://localhost${input}` : input,
        init,
      );
      return fetch(request, info);
    },
  };
}

/**
 * Whether the edge answers a path itself, as the routers would see it (percent-encoding decoded):
 * `/_edge` and below, `/.well-known/gpc.json`, `/ofrep/` and below.
 */
function edgeOwns(path: string): boolean {
  let decoded = path;
  if (path.includes("%")) {
    try {
      decoded = decodeURIComponent(path);
    } catch {
      // Malformed encoding: the routers would not decode it either.
    }
  }
  return decoded === "/_edge" || decoded.startsWith("/_edge/") || decoded === "/.well-known/gpc.json" ||
    decoded.startsWith("/ofrep/");
}

/** A raw path the proxy would not forward as it is: empty or dot segments, `%2e`, a backslash. */
const NOT_CANONICAL = /\/\/|\/\.|%2e|\\/i;

/** The path the proxy would forward, or `undefined` when it would refuse it (400). */
function canonicalPath(url: string): string | undefined {
  try {
    return checkInboundPath(requestUrlParts(url).path);
  } catch {
    return undefined;
  }
}

/** The plain handlers, also reachable through the routers (for paths Hono decodes first). */
interface PlainHandlers {
  proxy: ServedHandler;
  context: ServedHandler;
  recommendations: ServedHandler;
}

function createRouters(deps: Deps, plain: PlainHandlers): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use(async (c, next) => {
    const start = deps.mono();
    const requestId = requestIdFrom(c.req.raw.headers, deps.randomId);
    c.set("requestId", requestId);
    await next();
    // A plain handler observed itself.
    if (c.get("plain")) return;
    const record: RequestRecord = {
      requestId,
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      totalMs: deps.mono() - start,
    };
    stampResponse(c.res.headers, record);
    recordRequest(deps, record);
  });

  app.onError((error, c) => errorResponse(deps, error, c.get("requestId")));

  app.route("/_edge", opsRoutes(deps));
  app.route("/_edge", metricsRoutes(deps, deps.metrics));
  app.route("/_edge", syncRoutes(deps));
  app.route("/_edge", rulesRoutes(deps));
  app.route("/_edge", experimentsRoutes(deps));
  // `createApp` sends these paths to the plain handlers directly; percent-encoded spellings of
  // them (`/_edge/%63ontext`) reach them here, after Hono has decoded the path.
  app.get("/_edge/context", (c) => {
    c.set("plain", true);
    return plain.context(c.req.raw, c.env, c.get("requestId"));
  });
  app.get("/_edge/recommendations", (c) => {
    c.set("plain", true);
    return plain.recommendations(c.req.raw, c.env, c.get("requestId"));
  });
  app.all("/_edge/*", (c) => {
    c.header("cache-control", "no-store");
    return c.json(errorBody("not_found", `No edge endpoint at "${c.req.path}"`), 404);
  });
  app.route("/.well-known", wellKnownRoutes());
  app.route("/ofrep/v1", ofrepRoutes(deps));
  // Anything else under those prefixes is the origin's.
  app.all("*", (c) => {
    c.set("plain", true);
    return plain.proxy(c.req.raw, c.env, c.get("requestId"));
  });
  return app;
}
