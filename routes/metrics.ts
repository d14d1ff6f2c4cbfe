/**
 * @module
 * `GET /metrics` (mounted under `/_edge`): the Prometheus exposition of the service's metrics,
 * behind `Authorization: Bearer <METRICS_TOKEN>` when that variable is set; without it, for
 * loopback and `TRUSTED_PROXIES` callers only unless `METRICS_PUBLIC=true` (experiment and
 * variation names in metrics are business data).
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { errorBody } from "../lib/http/errors.ts";
import type { EdgeMetrics } from "../lib/obs/metrics.ts";
import { bearerTokenMatches } from "../lib/http/secure.ts";
import { isInternalCaller } from "../lib/http/net.ts";
import type { AppEnv } from "./env.ts";
import { peerOf } from "../lib/http/net.ts";

/**
 * The metrics router.
 *
 * @param deps the service's dependencies (only `config` is read)
 * @param registry the metrics registry created in `main.ts`
 * @returns a router with `GET /metrics`, to be mounted under `/_edge`
 */
export function metricsRoutes(deps: Pick<Deps, "config">, registry: EdgeMetrics): Hono<AppEnv> {
  const { config } = deps;
  const token = config.metricsToken;
  const open = token === undefined && config.metricsPublic;
  const app = new Hono<AppEnv>();
  app.get("/metrics", async (c) => {
    c.header("cache-control", "no-store");
    if (token !== undefined && !bearerTokenMatches(c.req.header("authorization"), token)) {
      c.header("www-authenticate", 'Bearer realm="edge-metrics"');
      return c.json(errorBody("unauthorized", "A valid metrics token is required"), 401);
    }
    if (
      token === undefined && !open &&
      !isInternalCaller(peerOf(c.env), c.req.raw.headers, { trusted: config.trustedProxies })
    ) {
      c.header("www-authenticate", 'Bearer realm="edge-metrics"');
      return c.json(
        errorBody("unauthorized", "Metrics are served to loopback and trusted proxies only"),
        401,
      );
    }
    const text = await registry.render();
    return c.body(text, 200, { "content-type": registry.contentType });
  });
  return app;
}
