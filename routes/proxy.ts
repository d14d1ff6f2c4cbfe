/**
 * @module
 * The catch-all proxy router: facts → decide → act. It stays thin; every step lives in `lib/`.
 */
import { Hono } from "hono";
import type { Deps } from "../lib/deps.ts";
import { gatherFacts } from "../lib/facts.ts";
import { decide } from "../lib/decide.ts";
import { applyPersonalizedCaching } from "../lib/cache_headers.ts";
import {
  buildUpstreamUrl,
  downstreamResponseHeaders,
  fetchOrigin,
  upstreamRequestHeaders,
} from "../lib/upstream.ts";
import type { AppEnv } from "./env.ts";

/**
 * The proxy router.
 *
 * @param deps the service's dependencies
 * @returns a router that forwards every request it sees to the origin
 */
export function proxyRoutes(deps: Deps): Hono<AppEnv> {
  const { config } = deps;
  const app = new Hono<AppEnv>();
  app.all("*", async (c) => {
    const request = c.req.raw;
    const facts = gatherFacts(request, c.env?.remoteAddr?.hostname ?? "0.0.0.0", {
      trustedProxies: config.trustedProxies,
      cdnSecret: config.cdnSecret,
      countryHeaders: config.countryHeaders,
      requestId: c.get("requestId"),
      uaCache: deps.uaCache,
      ipGeo: deps.ipGeo,
    });
    const visitor = { key: "", loggedIn: false, segments: [], attributes: {}, sticky: new Map() };
    const decision = decide({ facts, visitor }, deps.rules.current);
    c.set("decision", decision);
    const varyOn = decision.personalized ? ["x-edge-region"] : [];

    if (decision.action.type === "redirect") {
      const headers = new Headers({ location: decision.action.location, "cache-control": "no-store" });
      return new Response(null, { status: decision.action.status, headers });
    }

    const url = buildUpstreamUrl(config.originUrl, decision.action.path, facts.search);
    const headers = upstreamRequestHeaders(request.headers, {
      clientIp: facts.clientIp,
      peerIp: facts.peerIp,
      peerTrusted: facts.peerTrusted,
      proto: facts.proto,
      host: facts.host,
      requestId: facts.requestId,
    });
    headers.set("x-edge-region", decision.region);
    if (decision.country) headers.set("x-edge-country", decision.country);
    headers.set("x-edge-client-ip", facts.clientIp);
    headers.set("x-edge-rules-version", String(decision.rulesVersion));

    const started = deps.mono();
    const upstream = await fetchOrigin(url, { method: request.method, headers, body: request.body }, {
      fetch: deps.fetch,
      timeoutMs: config.originTimeoutMs,
      signal: request.signal,
    });
    c.set("originMs", deps.mono() - started);
    const responseHeaders = downstreamResponseHeaders(upstream.headers);
    if (decision.personalized) applyPersonalizedCaching(responseHeaders, varyOn);
    return new Response(upstream.body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: responseHeaders,
    });
  });
  return app;
}
