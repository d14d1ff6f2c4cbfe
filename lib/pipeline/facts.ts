/**
 * @module
 * The first pipeline stage: everything the edge can say about a request before any lookup —
 * method, checked path, client address, whether the hop is trusted, geo headers, request id.
 * Nothing a client sends is trusted here unless the hop is.
 */
import { checkInboundPath, requestUrlParts } from "../http/paths.ts";
import { type CidrList, clientAddress } from "../http/net.ts";
import { constantTimeEqual } from "../http/secure.ts";
import { countryFromHeaders, type GeoTrace, REGION_HEADER } from "./geo.ts";
import { classifyDevice, type DeviceInfo, type DeviceTrace, type UaCache } from "./device.ts";
import type { IpGeoDb } from "./ip_geo.ts";
import { gpcRequested } from "./context.ts";

/** Facts about one request. */
export interface Facts {
  method: string;
  /** The checked path the rules match on. */
  path: string;
  /** The query string including `?`, or empty. */
  search: string;
  /** The connection's peer address. */
  peerIp: string;
  /** The client address (peer, or resolved through a trusted `X-Forwarded-For`). */
  clientIp: string;
  /** The peer is in `TRUSTED_PROXIES`: its forwarding headers are kept. */
  peerTrusted: boolean;
  /** The peer is trusted or presented the CDN secret: its geo headers are believed. */
  geoTrusted: boolean;
  /** `http` or `https` as the client used it (from a trusted proxy, else this hop's listener). */
  proto: string;
  /** The host the client asked for (a trusted proxy's `X-Forwarded-Host`, else `Host`). */
  host: string;
  /** Country from a trusted geo header, else from the bundled IP database. */
  country: string | undefined;
  /** Where `country` came from. */
  countrySource: "header" | "ip" | undefined;
  /** Device and network class from Client Hints and the User-Agent. */
  device: DeviceInfo;
  /** The client sent `Sec-GPC: 1`: no behavioural data may be used. */
  gpc: boolean;
  /** A top-level page load (`Sec-Fetch-Dest: document`, or an HTML `Accept` without it). */
  navigation: boolean;
  /** Region from a trusted `x-geo-region` header. */
  regionHint: string | undefined;
  requestId: string;
}

/** Options for {@linkcode gatherFacts}. */
export interface GatherFactsOptions {
  trustedProxies: CidrList;
  cdnSecret: string | undefined;
  countryHeaders: readonly string[];
  /** The request id from {@linkcode requestIdFrom}. */
  requestId: string;
  /** Bounded cache of parsed User-Agents, created by the caller. */
  uaCache?: UaCache;
  /** The bundled IP → country database, when loaded. */
  ipGeo?: IpGeoDb;
  /** Told which geo header decided and why the device and network classes, for an explanation. */
  trace?: GeoTrace & DeviceTrace;
  /**
   * The scheme of the connections this process accepts (`http`: `Deno.serve` without a
   * certificate). Undefined → the request URL's, for a platform that terminates TLS and builds
   * the URL itself (Deno Deploy). Never the target's own: an absolute-form `GET https://…` sent
   * over plain HTTP does not make the hop https.
   */
  listenerScheme?: "http" | "https";
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gathers the facts of a request.
 *
 * @param request the inbound request
 * @param peerIp the connection's remote address
 * @param options trust configuration and id generator
 * @returns the facts
 * @throws {BadPathError} when the path cannot be forwarded safely
 */
export function gatherFacts(request: Request, peerIp: string, options: GatherFactsOptions): Facts {
  const url = requestUrlParts(request.url);
  const headers = request.headers;
  const peerTrusted = options.trustedProxies.has(peerIp);
  const secret = headers.get("x-edge-cdn-secret");
  const geoTrusted = peerTrusted ||
    (options.cdnSecret !== undefined && secret !== null && constantTimeEqual(secret, options.cdnSecret));
  const forwardedProto = peerTrusted ? headers.get("x-forwarded-proto")?.toLowerCase() : undefined;
  const regionHint = geoTrusted ? headers.get(REGION_HEADER)?.trim() : undefined;
  const clientIp = clientAddress(peerIp, headers.get("x-forwarded-for"), options.trustedProxies);
  const headerCountry = geoTrusted
    ? countryFromHeaders(headers, options.countryHeaders, options.trace)
    : undefined;
  const ipCountry = headerCountry ? undefined : options.ipGeo?.lookup(clientIp);
  return {
    method: request.method,
    path: checkInboundPath(url.path),
    search: url.search,
    peerIp,
    clientIp,
    peerTrusted,
    geoTrusted,
    proto: forwardedProto === "https" || forwardedProto === "http"
      ? forwardedProto
      : options.listenerScheme ?? url.scheme,
    host: (peerTrusted ? forwardedHost(headers) : undefined) ?? headers.get("host") ?? url.host,
    country: headerCountry ?? ipCountry,
    countrySource: headerCountry ? "header" : ipCountry ? "ip" : undefined,
    device: classifyDevice(headers, { uaCache: options.uaCache, trace: options.trace }),
    gpc: gpcRequested(headers),
    navigation: isNavigation(request.method, headers),
    regionHint: regionHint || undefined,
    requestId: options.requestId,
  };
}

/** The first (client-facing) host of a trusted proxy's `X-Forwarded-Host`, if it names one. */
function forwardedHost(headers: Headers): string | undefined {
  const value = headers.get("x-forwarded-host");
  if (value === null) return undefined;
  const comma = value.indexOf(",");
  return (comma < 0 ? value : value.slice(0, comma)).trim() || undefined;
}

/**
 * The request id: the client's `X-Request-Id` when it is well-formed (so traces can be
 * joined across hops), otherwise a fresh one.
 *
 * @param headers the request headers
 * @param randomId generator for a fresh id
 * @returns the id to use, echo and forward
 */
export function requestIdFrom(headers: Headers, randomId: () => string): string {
  const inbound = headers.get("x-request-id");
  return inbound && REQUEST_ID.test(inbound) ? inbound : randomId();
}

function isNavigation(method: string, headers: Headers): boolean {
  if (method !== "GET") return false;
  const dest = headers.get("sec-fetch-dest");
  if (dest !== null) return dest === "document" || dest === "iframe";
  return (headers.get("accept") ?? "").includes("text/html");
}
