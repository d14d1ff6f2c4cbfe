/**
 * @module
 * The proxy: facts → identity → context → decide → act, each stage timed. It stays thin;
 * every stage lives in `lib/`.
 */
import type { Deps } from "../lib/app/deps.ts";
import { finishResponseHeaders, type SeenResponseHeaders } from "../lib/origin/cache_headers.ts";
import { responseCookies, setDecisionHeaders } from "../lib/origin/edge_headers.ts";
import { ClientClosedError, EdgeError, OriginTimeoutError } from "../lib/http/errors.ts";
import { REGION_HEADER } from "../lib/pipeline/geo.ts";
import {
  downstreamResponseHeaders,
  headerValue,
  upstreamRequestHeaders,
  upstreamUrls,
} from "../lib/origin/upstream.ts";
import { fetchOrigin, type OriginResponse } from "../lib/origin/fetch.ts";
import { contextView, visitorFor } from "../lib/pipeline/visitor.ts";
import type { ObservedHandler, RequestRecord, ServeInfo } from "./observe.ts";
import { rewriteHtmlResponse } from "../lib/origin/html_slots.ts";

/**
 * The proxy: a plain handler rather than a router, because it serves almost every request.
 *
 * @param deps the service's dependencies
 * @returns a handler that forwards every request it is given to the origin
 */
export function proxyHandler(deps: Deps): ObservedHandler {
  const { config } = deps;
  // The user id header is the edge's to read, never the origin's (its `x-edge-user` says who is
  // logged in); geo headers are forwarded only from a hop trusted for them.
  const userHeader = config.userIdHeader === undefined ? [] : [config.userIdHeader];
  const geoTrustedDrops: ReadonlySet<string> = new Set(userHeader);
  const untrustedDrops: ReadonlySet<string> = new Set([
    ...userHeader,
    REGION_HEADER,
    ...config.countryHeaders,
  ]);
  const upstreamUrl = upstreamUrls(config.originUrl);
  const publicHosts = new Set(config.publicHosts);
  const publicHost = (host: string) =>
    publicHosts.size === 0 || publicHosts.has(host.toLowerCase()) ? host : config.publicHosts[0]!;

  async function forward(request: Request, info: ServeInfo, record: RequestRecord): Promise<Response> {
    const visitor = await visitorFor(request, info, record, deps);
    const { facts, identity, context, decision, rules, stages } = visitor;
    const cookies = responseCookies(identity, {
      decision,
      secure: facts.proto === "https",
      navigation: facts.navigation,
      signer: deps.stickySigner,
    });

    if (decision.action.type === "redirect") {
      const headers = new Headers({ location: decision.action.location, "cache-control": "no-store" });
      finishResponseHeaders(headers, { decision, clientHints: [], cookies });
      return new Response(null, { status: decision.action.status, headers });
    }

    const url = upstreamUrl(decision.action.path, decision.action.search ?? facts.search);
    const headers = upstreamRequestHeaders(request.headers, {
      clientIp: facts.clientIp,
      peerIp: facts.peerIp,
      peerTrusted: facts.peerTrusted,
      proto: facts.proto,
      // The origin may build absolute URLs from X-Forwarded-Host: only known names go on.
      host: publicHost(facts.host),
      requestId: facts.requestId,
      dropped: facts.geoTrusted ? geoTrustedDrops : untrustedDrops,
    });
    const toldVisitor = setDecisionHeaders(headers, {
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
    let upstream: OriginResponse;
    try {
      upstream = await fetchOrigin(url, { method: request.method, headers, body: request.body }, {
        fetch: deps.fetch,
        timeoutMs: config.originTimeoutMs,
        deadlines: deps.deadlines,
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
    record.originMs = originMs;
    stages.act = originMs;
    deps.metrics.observeOrigin({ durationMs: originMs, status: upstream.status });
    // Headers go straight into the response's own: passing a `Headers` object to the
    // constructor would convert every field again.
    const response = new Response(upstream.body, {
      status: upstream.status,
      statusText: upstream.statusText,
    });
    const seen: SeenResponseHeaders = {
      vary: null,
      cacheControl: null,
      contentType: null,
      cdnCacheControl: false,
    };
    const responseHeaders = downstreamResponseHeaders(
      upstream.headers,
      headerValue(headers, "accept-encoding"),
      response.headers,
      seen,
    );
    const html = (seen.contentType ?? "").toLowerCase().startsWith("text/html");
    // A page is rewritten only when there is something to insert (a slot matched, or the
    // context): others keep their validators, length and encoding, at no CPU cost. But whether
    // a slot matched depended on the visitor even when none did, so the caching accounts for the
    // slot choice on every HTML page (inputs of slots scoped to other paths are not counted).
    const slots = html ? Object.entries(decision.slots) : [];
    const rewriteHtml = html && upstream.body !== null && (slots.length > 0 || rules.htmlContext);
    // Slot content makes the page depend on more of the visitor; the injected context is the
    // visitor's own data (ids, cart, views), so such a page is never shareable.
    const cacheDecision = html && (rules.htmlContext || decision.slotDependsOn.length > 0)
      ? {
        ...decision,
        personalized: decision.personalized || rules.htmlContext || decision.slotDependsOn.length > 0,
        dependsOn: [
          ...new Set([
            ...decision.dependsOn,
            ...decision.slotDependsOn,
            ...(rules.htmlContext ? ["visitorKey" as const] : []),
          ]),
        ],
      }
      : decision;
    finishResponseHeaders(responseHeaders, {
      decision: cacheDecision,
      clientHints: rules.clientHints,
      cookies,
      toldVisitor,
      seen,
    });
    if (!rewriteHtml) return response;
    if (!(await deps.htmlRewriter.available())) {
      deps.log.warn("html rewriter unavailable; page sent as the origin made it", {
        requestId: facts.requestId,
      });
      return response;
    }
    return rewriteHtmlResponse(response, {
      rewriter: deps.htmlRewriter,
      slots: new Map(slots),
      context: rules.htmlContext ? contextView(visitor) : undefined,
      onError: (error) =>
        deps.log.warn("html rewrite failed", { requestId: facts.requestId, error: String(error) }),
      maxBytes: config.htmlRewriteMaxBytes,
      maxMs: config.htmlRewriteMaxMs,
      now: deps.mono,
      onBailout: ({ cap, bytes }) => {
        deps.metrics.countHtmlRewriteBailout(cap);
        deps.log.warn("html rewrite stopped at a cap; rest of the page sent unrewritten", {
          requestId: facts.requestId,
          path: facts.path,
          cap: cap === "bytes" ? "HTML_REWRITE_MAX_BYTES" : "HTML_REWRITE_MAX_MS",
          bytes,
        });
      },
    });
  }

  return forward;
}
