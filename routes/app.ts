/**
 * @module
 * `createApp(deps)`: the Hono application — the observe middleware (request id, timing, one
 * log line per request), the one error handler, and the routers mounted in order.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/deps.ts";
import { EdgeError, errorBody } from "../lib/errors.ts";
import { requestIdFrom } from "../lib/facts.ts";
import { ofrepRoutes } from "./ofrep.ts";
import { opsRoutes, wellKnownRoutes } from "./ops.ts";
import { proxyRoutes } from "./proxy.ts";
import { syncRoutes } from "./sync.ts";
import type { AppEnv } from "./env.ts";
import { routeClassOf } from "../lib/metrics.ts";
import { metricsRoutes } from "./metrics.ts";
import { rulesRoutes } from "./rules.ts";
import { edgeRoutes } from "./edge.ts";

/**
 * Builds the application.
 *
 * @param deps the service's dependencies
 * @returns a Hono app whose `fetch` is the request handler
 */
export function createApp(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use(async (c, next) => {
    const start = deps.mono();
    const requestId = requestIdFrom(c.req.raw.headers, deps.randomId);
    c.set("requestId", requestId);
    await next();
    const totalMs = deps.mono() - start;
    const originMs = c.get("originMs");
    const timing = originMs === undefined
      ? `edge;dur=${totalMs.toFixed(2)}`
      : `edge;dur=${(totalMs - originMs).toFixed(2)}, origin;dur=${originMs.toFixed(2)}`;
    const headers = c.res.headers;
    headers.set("x-request-id", requestId);
    const existing = headers.get("server-timing");
    headers.set("server-timing", existing ? `${existing}, ${timing}` : timing);
    const decision = c.get("decision");
    const path = c.req.path;
    const routeClass = routeClassOf(path);
    const stages = c.get("stages");
    deps.metrics.observeRequest({
      routeClass,
      status: c.res.status,
      region: decision?.region,
      durationMs: totalMs,
      stages,
      originMs,
    });
    deps.log.info("request", {
      requestId,
      method: c.req.method,
      path,
      rewrittenPath: decision?.action.type === "proxy" ? decision.action.path : undefined,
      region: decision?.region,
      status: c.res.status,
      durMs: round(totalMs),
      originMs: originMs === undefined ? undefined : round(originMs),
    });
    if (decision) {
      const facts = c.get("facts");
      const outcome = c.get("contextOutcome");
      deps.logDecision({
        requestId,
        rulesVersion: decision.rulesVersion,
        region: decision.region,
        country: decision.country,
        device: facts?.device.device,
        network: facts?.device.network,
        variants: decision.variants,
        flags: decision.flags,
        userKey: c.get("visitorKey"),
        loggedIn: c.get("loggedIn"),
        clientIp: facts?.clientIp,
        routeClass,
        matchedRoute: decision.matchedRoute,
        action: decision.action.type,
        status: c.res.status,
        cache: outcome?.cache,
        readThrough: outcome?.readThrough,
        durations: { total: totalMs, origin: originMs, ...stages },
      });
    }
  });

  app.onError((error, c) => {
    c.header("cache-control", "no-store");
    if (error instanceof EdgeError) {
      if (error.status >= 500 && error.cause !== undefined) {
        deps.log.warn("request failed", {
          requestId: c.get("requestId"),
          code: error.code,
          cause: String(error.cause),
        });
      } else if (error.status === 499) {
        deps.log.debug("client closed the request", { requestId: c.get("requestId") });
      }
      return c.json(errorBody(error.code, error.message, error.details), error.status as 400);
    }
    deps.log.error("unhandled error", {
      requestId: c.get("requestId"),
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
    return c.json(errorBody("internal", "Internal error"), 500);
  });

  app.route("/_edge", opsRoutes(deps));
  app.route("/_edge", metricsRoutes(deps, deps.metrics));
  app.route("/_edge", syncRoutes(deps));
  app.route("/_edge", rulesRoutes(deps));
  app.route("/_edge", edgeRoutes(deps));
  app.all("/_edge/*", (c) => {
    c.header("cache-control", "no-store");
    return c.json(errorBody("not_found", `No edge endpoint at "${c.req.path}"`), 404);
  });
  app.route("/.well-known", wellKnownRoutes());
  app.route("/ofrep/v1", ofrepRoutes(deps));
  app.route("/", proxyRoutes(deps));
  return app;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
