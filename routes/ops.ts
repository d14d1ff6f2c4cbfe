/**
 * @module
 * Operational endpoints under `/_edge`: liveness and readiness.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { checkReady } from "../lib/app/health.ts";
import type { AppEnv } from "./env.ts";

/** `/health` and `/ready`, mounted under `/_edge`. */
export function opsRoutes(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/health", (c) => {
    c.header("cache-control", "no-store");
    return c.json({ status: "ok" });
  });
  app.get("/ready", async (c) => {
    c.header("cache-control", "no-store");
    const report = await checkReady(deps.kv, deps.rules, { timeoutMs: 1000, deadlines: deps.deadlines });
    return c.json(report, report.ready ? 200 : 503);
  });
  return app;
}

/** The Global Privacy Control support resource; other well-known paths go to the origin. */
export function wellKnownRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/gpc.json", (c) => {
    c.header("cache-control", "public, max-age=86400");
    return c.json({ gpc: true, lastUpdate: GPC_LAST_UPDATE });
  });
  return app;
}

/** When this service's GPC behaviour last changed (the `lastUpdate` of `gpc.json`). */
const GPC_LAST_UPDATE = "2026-11-26";
