/**
 * @module
 * `createApp(deps)`: the one front door. Every request is looked up once in the edge's path
 * table (`lib/http/paths.ts`), handed to the handler the table names — the proxy, an
 * edge-served read, or the Hono routers of the edge's other endpoints — and observed the same
 * way (`observe`).
 */
import { Hono } from "hono";
import { getPath } from "hono/utils/url";
import type { Deps } from "../lib/app/deps.ts";
import { BadPathError, errorBody } from "../lib/http/errors.ts";
import {
  checkInboundPath,
  type Handler,
  requestUrlParts,
  type Route,
  routeOf,
  splitUrl,
} from "../lib/http/paths.ts";
import { requestIdFrom } from "../lib/pipeline/facts.ts";
import { ofrepRoutes } from "./ofrep.ts";
import { opsRoutes, wellKnownRoutes } from "./ops.ts";
import { proxyHandler } from "./proxy.ts";
import { syncRoutes } from "./sync.ts";
import type { AppEnv } from "./env.ts";
import { metricsRoutes } from "./metrics.ts";
import { rulesRoutes } from "./rules.ts";
import { experimentsRoutes } from "./experiments.ts";
import { edgeHandlers } from "./edge.ts";
import { errorResponse, observe, type ObservedHandler } from "./observe.ts";
import type { ServeInfo } from "../lib/http/net.ts";
import type { RequestRecord } from "../lib/obs/request_record.ts";

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

/** A raw path the proxy would not forward as it is: empty or dot segments, `%2e`, a backslash. */
const NOT_CANONICAL = /\/\/|\/\.|%2e|\\/i;

/** A spelling of one of the edge's own paths: refused, counted as the proxy's refusals are. */
const OFF_EDGE_SPELLING = { handler: "badPath", routeClass: "proxy" } as const;

/**
 * Builds the application.
 *
 * @param deps the service's dependencies
 * @returns the application
 */
export function createApp(deps: Deps): EdgeApp {
  const edge = edgeHandlers(deps);
  const routers = createRouters(deps);
  const handlers: Record<Handler | "badPath", ObservedHandler> = {
    proxy: proxyHandler(deps),
    context: edge.context,
    recommendations: edge.recommendations,
    routers: (request, info, record) =>
      Promise.resolve(routers.fetch(request, { remoteAddr: info?.remoteAddr, requestId: record.requestId })),
    badPath: () => {
      throw new BadPathError("The edge's own endpoints must be addressed without dot or empty segments");
    },
  };
  const fetch = (request: Request, info?: ServeInfo): Promise<Response> => {
    const startMs = deps.mono();
    const raw = splitUrl(request.url).path;
    // The routers match percent-encoded paths decoded, so the table is read the same way.
    const path = raw.includes("%") ? getPath(request) : raw;
    const route: Route | typeof OFF_EDGE_SPELLING =
      NOT_CANONICAL.test(raw) && offEdgeSpelling(request.url, raw)
        ? OFF_EDGE_SPELLING
        : routeOf(request.method, path);
    const record: RequestRecord = {
      requestId: requestIdFrom(request.headers, deps.randomId),
      method: request.method,
      path: route.handler === "proxy" ? raw : path,
      routeClass: route.routeClass,
      status: 0,
      startMs,
      totalMs: 0,
    };
    return observe(deps, handlers[route.handler], request, info, record);
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
 * Whether a raw path the proxy would forward in another form (dot segments, `%2e`, empty
 * segments removed) resolves into a path the edge answers itself, for any method.
 */
function offEdgeSpelling(url: string, raw: string): boolean {
  let canonical: string;
  try {
    canonical = checkInboundPath(requestUrlParts(url).path);
  } catch {
    // The proxy refuses it anyway (400).
    return false;
  }
  if (canonical === raw) return false;
  return routeOf(undefined, decodeForRouting(canonical)).handler !== "proxy";
}

/** A checked path with its remaining escapes decoded (as the routers would see it). */
function decodeForRouting(path: string): string {
  if (!path.includes("%")) return path;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

/** The edge's own endpoints other than the edge-served reads: Hono routers, and their 404s. */
function createRouters(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use((c, next) => {
    c.set("requestId", c.env?.requestId ?? "");
    return next();
  });
  app.onError((error, c) => errorResponse(deps, error, c.get("requestId")));
  app.route("/_edge", opsRoutes(deps));
  app.route("/_edge", metricsRoutes(deps, deps.metrics));
  app.route("/_edge", syncRoutes(deps));
  app.route("/_edge", rulesRoutes(deps));
  app.route("/_edge", experimentsRoutes(deps));
  app.route("/.well-known", wellKnownRoutes());
  app.route("/ofrep/v1", ofrepRoutes(deps));
  // The table sends only the edge's paths here: whatever no router matched is not there.
  app.all("*", (c) => {
    c.header("cache-control", "no-store");
    return c.json(errorBody("not_found", `No edge endpoint at "${c.req.path}"`), 404);
  });
  return app;
}
