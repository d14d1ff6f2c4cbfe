/**
 * @module
 * `GET /metrics` (mounted under `/_edge`): the Prometheus exposition of the service's metrics,
 * behind `Authorization: Bearer <METRICS_TOKEN>` when that variable is set.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/deps.ts";
import { errorBody } from "../lib/errors.ts";
import type { EdgeMetrics } from "../lib/metrics.ts";
import { bearerTokenMatches } from "../lib/secure.ts";
import type { AppEnv } from "./env.ts";

/**
 * The metrics router.
 *
 * @param deps the service's dependencies (only `config.metricsToken` is read)
 * @param registry the metrics registry created in `main.ts`
 * @returns a router with `GET /metrics`, to be mounted under `/_edge`
 */
export function metricsRoutes(deps: Pick<Deps, "config">, registry: EdgeMetrics): Hono<AppEnv> {
  const token = deps.config.metricsToken;
  const app = new Hono<AppEnv>();
  app.get("/metrics", async (c) => {
    c.header("cache-control", "no-store");
    if (token !== undefined && !bearerTokenMatches(c.req.header("authorization"), token)) {
      c.header("www-authenticate", 'Bearer realm="edge-metrics"');
      return c.json(errorBody("unauthorized", "A valid metrics token is required"), 401);
    }
    const text = await registry.render();
    return c.body(text, 200, { "content-type": registry.contentType });
  });
  return app;
}
