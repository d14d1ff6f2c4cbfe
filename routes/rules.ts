/**
 * @module
 * `GET /rules` (mounted under `/_edge`): which rules version is active, which is the canary and
 * with what share, and which versions are kept — as KV names them and as this instance serves
 * them. Behind `Authorization: Bearer <RULES_TOKEN>`; without `RULES_TOKEN` the endpoint does not
 * exist (404), so it is never open by accident. A KV read that fails, or takes longer than
 * `KV_TIMEOUT_MS`, answers 503 `store_unavailable`.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/deps.ts";
import { errorBody, StoreUnavailableError } from "../lib/errors.ts";
import { readStoredRulesStatus } from "../lib/rules_control.ts";
import { bearerTokenMatches } from "../lib/secure.ts";
import type { AppEnv } from "./env.ts";
import { kvWithin } from "./visitor.ts";

/**
 * The rules status router.
 *
 * @param deps the service's dependencies (`config.rulesToken`, `kv`, `rules`; `deadlines`, `mono`
 *   and `metrics` to bound and time the KV read)
 * @returns a router with `GET /rules` (absent without `RULES_TOKEN`), to be mounted under `/_edge`
 */
export function rulesRoutes(
  deps: Pick<Deps, "config" | "kv" | "rules" | "deadlines" | "mono" | "metrics">,
): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const token = deps.config.rulesToken;
  if (token === undefined) return app;
  const withinKvTimeout = kvWithin(deps, "rules");
  app.get("/rules", async (c) => {
    c.header("cache-control", "no-store");
    if (!bearerTokenMatches(c.req.header("authorization"), token)) {
      c.header("www-authenticate", 'Bearer realm="edge-rules"');
      return c.json(errorBody("unauthorized", "A valid rules token is required"), 401);
    }
    // A failing store is the store's outage, not a bug here: 503 `store_unavailable`, as sync
    // answers (the KV error goes to the log, never to the client). A hanging one too, after
    // `KV_TIMEOUT_MS`: the status is one read of the control record, like a request's reads.
    const stored = await withinKvTimeout(readStoredRulesStatus(deps.kv)).catch((error) => {
      throw new StoreUnavailableError(error);
    });
    const canary = deps.rules.canary;
    return c.json({
      active: stored.active,
      canary: stored.canary,
      kept: stored.kept,
      instance: {
        active: deps.rules.current.version,
        canary: canary ? { version: canary.rules.version, share: canary.share } : null,
        startUp: deps.rules.baseline.version,
      },
    });
  });
  return app;
}
