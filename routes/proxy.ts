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
  type HeaderList,
  headerValue,
  upstreamRequestHeaders,
  upstreamUrls,
} from "../lib/origin/upstream.ts";
import { fetchOrigin, type OriginResponse } from "../lib/origin/fetch.ts";
import { contextView, type Visitor, visitorFor } from "../lib/pipeline/visitor.ts";
import type { Decision } from "../lib/rules/decision.ts";
import type { ObservedHandler } from "./observe.ts";
import type { ServeInfo } from "../lib/http/net.ts";
import type { RequestRecord } from "../lib/obs/request_record.ts";
import { rewriteHtmlResponse } from "../lib/origin/html_slots.ts";

/**
 * The proxy: a plain handler rather than a router, because it serves almost every request.
 *
 * @param deps the service's dependencies
 * @returns a handler that forwards every request it is given to the origin
 */
export function proxyHandler(deps: Deps): ObservedHandler {
  const { config } = deps;
  // The user id header is the edge's to read, never the origin's; geo headers go on only from a
  // hop trusted for them.
  const userHeader = config.userIdHeader === undefined ? [] : [config.userIdHeader];
  const publicHosts = new Set(config.publicHosts);
  const proxy: Proxy = {
    deps,
    upstreamUrl: upstreamUrls(config.originUrl),
    geoTrustedDrops: new Set(userHeader),
    untrustedDrops: new Set([...userHeader, REGION_HEADER, ...config.countryHeaders]),
    // The origin may build absolute URLs from X-Forwarded-Host: only known names go on.
    publicHost: (host) =>
      publicHosts.size === 0 || publicHosts.has(host.toLowerCase()) ? host : config.publicHosts[0]!,
  };
  return (request, info, record) => forward(proxy, request, info, record);
}

/** What {@linkcode proxyHandler} works out once, for every request. */
interface Proxy {
  deps: Deps;
  upstreamUrl: (path: string, search: string) => string;
  geoTrustedDrops: ReadonlySet<string>;
  untrustedDrops: ReadonlySet<string>;
  publicHost: (host: string) => string;
}

async function forward(
  proxy: Proxy,
  request: Request,
  info: ServeInfo,
  record: RequestRecord,
): Promise<Response> {
  const { deps } = proxy;
  const visitor = await visitorFor(request, info, record, deps);
  const { facts, identity, decision } = visitor;
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
  const url = proxy.upstreamUrl(decision.action.path, decision.action.search ?? facts.search);
  const { headers, toldVisitor } = originRequestHeaders(proxy, request, visitor);
  const upstream = await callOrigin(deps, url, { method: request.method, headers, body: request.body }, {
    signal: request.signal,
    record,
    stages: visitor.stages,
  });
  // Headers go straight into the response's own: the constructor would convert a `Headers` again.
  const response = new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText });
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
  // A page is rewritten only when there is something to insert; others keep validators, length
  // and encoding. Whether a slot matched depended on the visitor, so caching counts it on every page.
  const slots = html ? Object.entries(decision.slots) : [];
  const rewriteHtml = html && upstream.body !== null && (slots.length > 0 || visitor.rules.htmlContext);
  finishResponseHeaders(responseHeaders, {
    decision: html ? pageCacheDecision(visitor) : decision,
    clientHints: visitor.rules.clientHints,
    cookies,
    toldVisitor,
    seen,
  });
  return rewriteHtml ? await rewritePage(deps, response, visitor, slots) : response;
}

/** The upstream request headers with the decision's `x-edge-*` set, and whether they name the visitor. */
function originRequestHeaders(
  proxy: Proxy,
  request: Request,
  visitor: Visitor,
): { headers: HeaderList; toldVisitor: boolean } {
  const { facts, identity, decision, context } = visitor;
  const headers = upstreamRequestHeaders(request.headers, {
    clientIp: facts.clientIp,
    peerIp: facts.peerIp,
    peerTrusted: facts.peerTrusted,
    proto: facts.proto,
    host: proxy.publicHost(facts.host),
    requestId: facts.requestId,
    dropped: facts.geoTrusted ? proxy.geoTrustedDrops : proxy.untrustedDrops,
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
  return { headers, toldVisitor };
}

/** The origin call, timed as the act stage and counted in the origin metrics. */
async function callOrigin(
  deps: Deps,
  url: string,
  init: { method: string; headers: HeaderList; body: ReadableStream<Uint8Array> | null },
  options: { signal: AbortSignal; record: RequestRecord; stages: Record<string, number> },
): Promise<OriginResponse> {
  const started = deps.mono();
  let upstream: OriginResponse;
  try {
    upstream = await fetchOrigin(url, init, {
      fetch: deps.fetch,
      timeoutMs: deps.config.originTimeoutMs,
      deadlines: deps.deadlines,
      signal: options.signal,
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
  options.record.originMs = originMs;
  options.stages.act = originMs;
  deps.metrics.observeOrigin({ durationMs: originMs, status: upstream.status });
  return upstream;
}

/**
 * The decision as an HTML page's caching sees it: slot content makes the page depend on more of the
 * visitor, and the injected context is the visitor's own data, so such a page is never shareable.
 */
function pageCacheDecision({ decision, rules }: Visitor): Decision {
  if (!rules.htmlContext && decision.slotDependsOn.length === 0) return decision;
  return {
    ...decision,
    personalized: true,
    dependsOn: [
      ...new Set([
        ...decision.dependsOn,
        ...decision.slotDependsOn,
        ...(rules.htmlContext ? ["visitorKey" as const] : []),
      ]),
    ],
  };
}

async function rewritePage(
  deps: Deps,
  response: Response,
  visitor: Visitor,
  slots: [string, string][],
): Promise<Response> {
  const { facts, rules } = visitor;
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
    maxBytes: deps.config.htmlRewriteMaxBytes,
    maxMs: deps.config.htmlRewriteMaxMs,
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
