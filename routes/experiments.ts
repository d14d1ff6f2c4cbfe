/**
 * @module
 * `GET /experiments` (under `/_edge`): the sample-ratio check of every running experiment, behind
 * `RULES_TOKEN` like `/_edge/rules` (without it the endpoint does not exist).
 */
import { Hono } from "hono";
import type { Deps } from "../lib/app/deps.ts";
import { errorBody } from "../lib/http/errors.ts";
import { SRM_MIN_EXPOSURES, SRM_P_THRESHOLD } from "../lib/exposures/srm.ts";
import { bearerTokenMatches } from "../lib/http/secure.ts";
import type { AppEnv } from "./env.ts";

/** The experiments router, mounted under `/_edge`. */
export function experimentsRoutes(deps: Pick<Deps, "config" | "rules" | "exposures">): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const token = deps.config.rulesToken;
  if (token === undefined) return app;
  app.get("/experiments", async (c) => {
    c.header("cache-control", "no-store");
    if (!bearerTokenMatches(c.req.header("authorization"), token)) {
      c.header("www-authenticate", 'Bearer realm="edge-rules"');
      return c.json(errorBody("unauthorized", "A valid rules token is required"), 401);
    }
    const experiments = await deps.exposures.report({
      active: deps.rules.current,
      canary: deps.rules.canary?.rules,
    });
    return c.json({
      srmRule: { pValueBelow: SRM_P_THRESHOLD, minExposures: SRM_MIN_EXPOSURES },
      exposureEvents: { delivery: deps.exposures.delivering ? "on" : "off", waiting: deps.exposures.queued },
      experiments,
    });
  });
  return app;
}
