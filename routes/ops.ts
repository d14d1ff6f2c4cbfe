/**
 * @module
 * Operational endpoints under `/_edge`: liveness and readiness.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/deps.ts";
import { checkReady } from "../lib/health.ts";
import type { AppEnv } from "./env.ts";

/**
 * The ops router.
 *
 * @param deps the service's dependencies
 * @returns routes for `/health` and `/ready`, to be mounted under `/_edge`
 */
export function opsRoutes(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/health", (c) => {
    c.header("cache-control", "no-store");
    return c.json({ status: "ok" });
  });
  app.get("/ready", async (c) => {
    c.header("cache-control", "no-store");
    const report = await checkReady(deps.kv, deps.rules, { timeoutMs: 1000 });
    return c.json(report, report.ready ? 200 : 503);
  });
  return app;
}
