/**
 * @module
 * The catch-all proxy router: facts → identity → context → decide → act, each stage timed.
 * It stays thin; every stage lives in `lib/`.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/deps.ts";
import { finishResponseHeaders } from "../lib/cache_headers.ts";
import { responseCookies, setDecisionHeaders } from "../lib/edge_headers.ts";
import { ClientClosedError, EdgeError, OriginTimeoutError } from "../lib/errors.ts";
import { REGION_HEADER } from "../lib/geo.ts";
import { TRUSTED_USER_HEADER } from "../lib/identity.ts";
import {
  buildUpstreamUrl,
  downstreamResponseHeaders,
  fetchOrigin,
  upstreamRequestHeaders,
} from "../lib/upstream.ts";
import type { AppEnv } from "./env.ts";
import { contextView, resolveVisitor } from "./visitor.ts";
import { rewriteHtmlResponse } from "../lib/html_slots.ts";

/**
 * The proxy router.
 *
 * @param deps the service's dependencies
 * @returns a router that forwards every request it sees to the origin
 */
export function proxyRoutes(deps: Deps): Hono<AppEnv> {
  const { config } = deps;
  const app = new Hono<AppEnv>();
  // Trust-only request headers, never forwarded from a hop that is not trusted for them.
  const untrustedUser: ReadonlySet<string> = new Set([TRUSTED_USER_HEADER]);
  const untrustedAll: ReadonlySet<string> = new Set([
    TRUSTED_USER_HEADER,
    REGION_HEADER,
    ...config.countryHeaders,
  ]);
  const publicHosts = new Set(config.publicHosts);
  const publicHost = (host: string) =>
    publicHosts.size === 0 || publicHosts.has(host.toLowerCase()) ? host : config.publicHosts[0]!;
  app.all("*", async (c) => {
    const request = c.req.raw;
    const visitor = await resolveVisitor(c, deps);
    const { facts, identity, context, decision, rules, stages } = visitor;
    const cookies = responseCookies(identity, {
      decision,
      secure: facts.proto === "https",
      navigation: facts.navigation,
    });

    if (decision.action.type === "redirect") {
      const headers = new Headers({ location: decision.action.location, "cache-control": "no-store" });
      finishResponseHeaders(headers, { decision, clientHints: [], cookies });
      return new Response(null, { status: decision.action.status, headers });
    }

    const url = buildUpstreamUrl(
      config.originUrl,
      decision.action.path,
      decision.action.search ?? facts.search,
    );
    const headers = upstreamRequestHeaders(request.headers, {
      clientIp: facts.clientIp,
      peerIp: facts.peerIp,
      peerTrusted: facts.peerTrusted,
      proto: facts.proto,
      // The origin may build absolute URLs from X-Forwarded-Host: only known names go on.
      host: publicHost(facts.host),
      requestId: facts.requestId,
      untrusted: facts.peerTrusted ? undefined : facts.geoTrusted ? untrustedUser : untrustedAll,
    });
    setDecisionHeaders(headers, {
      facts,
      identity,
      decision,
      context: {
        recentViews: context.recentViews.map((view) => view.itemId),
        cartItemIds: context.cartItemIds,
        segments: context.segments,
      },
    });

    const started = deps.mono();
    let upstream: Response;
    try {
      upstream = await fetchOrigin(url, { method: request.method, headers, body: request.body }, {
        fetch: deps.fetch,
        timeoutMs: config.originTimeoutMs,
        signal: request.signal,
      });
    } catch (error) {
      const durationMs = deps.mono() - started;
      if (error instanceof EdgeError && !(error instanceof ClientClosedError)) {
        deps.metrics.observeOrigin({
          durationMs,
          error: error instanceof OriginTimeoutError ? "timeout" : "unavailable",
        });
      }
      throw error;
    }
    const finished = deps.mono();
    const originMs = finished - started;
    deps.tracer?.stage("act", started, finished);
    c.set("originMs", originMs);
    stages.act = originMs;
    deps.metrics.observeOrigin({ durationMs: originMs, status: upstream.status });
    const responseHeaders = downstreamResponseHeaders(upstream.headers, headers.get("accept-encoding"));
    const html = (responseHeaders.get("content-type") ?? "").toLowerCase().startsWith("text/html");
    const slots = Object.entries(decision.slots);
    const rewriteHtml = html && (slots.length > 0 || rules.htmlContext);
    // Slot content and the injected context make the page depend on more of the visitor.
    const cacheDecision = rewriteHtml
      ? {
        ...decision,
        personalized: decision.personalized || rules.htmlContext || decision.slotDependsOn.length > 0,
        dependsOn: [...new Set([...decision.dependsOn, ...decision.slotDependsOn])],
      }
      : decision;
    finishResponseHeaders(responseHeaders, {
      decision: cacheDecision,
      clientHints: rules.clientHints,
      cookies,
    });
    const response = new Response(upstream.body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: responseHeaders,
    });
    if (!rewriteHtml) return response;
    return rewriteHtmlResponse(response, {
      slots: new Map(slots),
      context: rules.htmlContext ? contextView(visitor) : undefined,
      onError: (error) =>
        deps.log.warn("html rewrite failed", { requestId: facts.requestId, error: String(error) }),
    });
  });
  return app;
}
