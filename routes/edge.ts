/**
 * @module
 * Edge-served responses under `/_edge` — no origin round trip: the visitor's own edge context
 * for client-side rendering, and "you might also like" recommendations.
 */
import { z } from "zod";
import type { Deps } from "../lib/app/deps.ts";
import { DEFAULT_RECOMMENDATIONS, loadRecommendations, MAX_RECOMMENDATIONS } from "../lib/data/recommend.ts";
import { responseCookies } from "../lib/origin/edge_headers.ts";
import { finishResponseHeaders } from "../lib/origin/cache_headers.ts";
import { contextView, kvWithin, type Visitor, visitorFor } from "../lib/pipeline/visitor.ts";
import { invalidRequestBody } from "./validation.ts";
import type { ObservedHandler } from "./observe.ts";

const RecommendationsQuery = z.object({
  limit: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(1, "must be at least 1").max(MAX_RECOMMENDATIONS, `must be at most ${MAX_RECOMMENDATIONS}`)
    .default(DEFAULT_RECOMMENDATIONS),
});

/** The edge-served endpoints, as plain handlers (see `observe`). */
export interface EdgeHandlers {
  /** `GET /_edge/context`. */
  context: ObservedHandler;
  /** `GET /_edge/recommendations`. */
  recommendations: ObservedHandler;
}

/**
 * The edge-served endpoints. They are plain handlers, not a router: they answer on every page
 * view of a client-rendered site.
 *
 * @param deps the service's dependencies
 * @returns the handlers for `/_edge/context` and `/_edge/recommendations`
 */
export function edgeHandlers(deps: Deps): EdgeHandlers {
  return {
    async context(request, info, record) {
      const limit = limitOf(request.url);
      if (typeof limit !== "number") return limit;
      record.answeredAtEdge = true;
      const visitor = await visitorFor(request, info, record, deps);
      const recommendations = await recommendationsFor(visitor, deps, limit);
      return edgeJson(visitor, deps, { ...contextView(visitor), recommendations });
    },
    async recommendations(request, info, record) {
      const limit = limitOf(request.url);
      if (typeof limit !== "number") return limit;
      record.answeredAtEdge = true;
      const visitor = await visitorFor(request, info, record, deps);
      const items = await recommendationsFor(visitor, deps, limit);
      return edgeJson(visitor, deps, { items });
    },
  };
}

/** The `limit` query parameter, or the 400 answer naming the problem. */
function limitOf(url: string): number | Response {
  const query = url.indexOf("?");
  // The common call has no query: the default, without a validation pass.
  if (query < 0 || query === url.length - 1) return DEFAULT_RECOMMENDATIONS;
  const params: Record<string, string | string[]> = {};
  if (query >= 0) {
    const search = new URLSearchParams(url.slice(query + 1));
    // A repeated parameter stays a list (and fails validation), as the query validator had it.
    for (const name of new Set(search.keys())) {
      const values = search.getAll(name);
      params[name] = values.length === 1 ? values[0]! : values;
    }
  }
  const parsed = RecommendationsQuery.safeParse(params);
  if (parsed.success) return parsed.data.limit;
  return Response.json(invalidRequestBody(parsed.error.issues), {
    status: 400,
    headers: { "cache-control": "no-store" },
  });
}

async function recommendationsFor(visitor: Visitor, deps: Deps, limit: number) {
  const { context } = visitor;
  if (visitor.facts.gpc || context.recentViews.length === 0) return [];
  try {
    const now = deps.now();
    const items = await loadRecommendations(deps.kv, context.recentViews, {
      now,
      readRelated: (itemIds) => deps.relatedCache.read(deps.kv, itemIds, now, kvWithin(deps, "related")),
      limit,
      cartItemIds: context.cartItemIds,
    });
    return items.map((item) => ({
      itemId: item.itemId,
      score: Math.round(item.score * 1e6) / 1e6,
      // "Because you viewed …": the viewed items that contributed most, strongest first.
      because: item.because,
    }));
  } catch (error) {
    // Recommendations are a nicety: a KV fault leaves them empty rather than failing the page.
    deps.log.warn("recommendations unavailable", { error: String(error) });
    return [];
  }
}

function edgeJson(visitor: Visitor, deps: Deps, body: unknown): Response {
  const cookies = responseCookies(visitor.identity, {
    decision: visitor.decision,
    // Client-side code reads its visitor id here: keep it stable.
    navigation: true,
    secure: visitor.facts.proto === "https",
    signer: deps.stickySigner,
  });
  // Headers go straight into the response's own (a `Headers` object handed to the constructor
  // would be converted again, field by field).
  const response = new Response(JSON.stringify(body), { status: 200 });
  const { headers } = response;
  // Only the visitor's own browser may keep it, and only briefly.
  const seen = {
    contentType: "application/json; charset=utf-8",
    cacheControl: "private, max-age=5",
    vary: "Cookie",
    cdnCacheControl: false,
  };
  headers.set("content-type", seen.contentType);
  headers.set("cache-control", seen.cacheControl);
  headers.set("vary", seen.vary);
  finishResponseHeaders(headers, { decision: visitor.decision, clientHints: [], cookies, seen });
  return response;
}
