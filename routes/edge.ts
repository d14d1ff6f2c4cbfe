/**
 * @module
 * Edge-served responses under `/_edge` — no origin round trip: the visitor's own edge context
 * for client-side rendering, and "you might also like" recommendations.
 */
import { Hono } from "hono";
import { zValidator } from "@hono/zod-validator";
import { z } from "zod";
import type { Deps } from "../lib/deps.ts";
import { DEFAULT_RECOMMENDATIONS, loadRecommendations, MAX_RECOMMENDATIONS } from "../lib/recommend.ts";
import { responseCookies } from "../lib/edge_headers.ts";
import { finishResponseHeaders } from "../lib/cache_headers.ts";
import type { AppEnv } from "./env.ts";
import { contextView, resolveVisitor, type Visitor } from "./visitor.ts";
import { validationHook } from "./validation.ts";

const RecommendationsQuery = z.object({
  limit: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(1, "must be at least 1").max(MAX_RECOMMENDATIONS, `must be at most ${MAX_RECOMMENDATIONS}`)
    .default(DEFAULT_RECOMMENDATIONS),
});

/**
 * The edge-served router.
 *
 * @param deps the service's dependencies
 * @returns routes for `/context` and `/recommendations`, to be mounted under `/_edge`
 */
export function edgeRoutes(deps: Deps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.get("/context", zValidator("query", RecommendationsQuery, validationHook), async (c) => {
    const visitor = await resolveVisitor(c, deps);
    const recommendations = await recommendationsFor(visitor, deps, c.req.valid("query").limit);
    const body = { ...contextView(visitor), recommendations };
    return edgeJson(visitor, body);
  });

  app.get("/recommendations", zValidator("query", RecommendationsQuery, validationHook), async (c) => {
    const visitor = await resolveVisitor(c, deps);
    const items = await recommendationsFor(visitor, deps, c.req.valid("query").limit);
    return edgeJson(visitor, { items });
  });

  return app;
}

async function recommendationsFor(visitor: Visitor, deps: Deps, limit: number) {
  const { context } = visitor;
  if (visitor.facts.gpc || context.recentViews.length === 0) return [];
  try {
    const now = deps.now();
    const items = await loadRecommendations(deps.kv, context.recentViews, {
      now,
      readRelated: (itemIds) => deps.relatedCache.read(deps.kv, itemIds, now),
      limit,
      cartItemIds: context.cartItemIds,
    });
    return items.map((item) => ({ itemId: item.itemId, score: Math.round(item.score * 1e6) / 1e6 }));
  } catch (error) {
    // Recommendations are a nicety: a KV fault leaves them empty rather than failing the page.
    deps.log.warn("recommendations unavailable", { error: String(error) });
    return [];
  }
}

function edgeJson(visitor: Visitor, body: unknown): Response {
  const cookies = responseCookies(visitor.identity, {
    decision: visitor.decision,
    // Client-side code reads its visitor id here: keep it stable.
    navigation: true,
    secure: visitor.facts.proto === "https",
  });
  const headers = new Headers({
    "content-type": "application/json; charset=utf-8",
    // Only the visitor's own browser may keep it, and only briefly.
    "cache-control": "private, max-age=5",
    vary: "Cookie",
  });
  finishResponseHeaders(headers, { decision: visitor.decision, clientHints: [], cookies });
  return new Response(JSON.stringify(body), { status: 200, headers });
}
